"""Issue 10, case 9: root by number. uid 0 and gid 0 are refused at configuration time in every
spelling, for both servers and rwsgi-worker, never at start (where the group then fails to start
and every request gets 503 forever) and never accepted (workers running with gid 0).

Interface assumed (no new option): `user=`/`group=` of `wsgi_daemon_process` and
`WSGIDaemonProcess`, and rwsgi-worker's `--user`/`--group`, refuse
  - a numeric id that is 0 however written (`0`, `00`, `+0`),
  - a numeric id that is not a valid id (`-1`, `4294967295` = (uid_t)-1, which setuid(2) reads
    as "no change"),
  - a name that resolves to uid/gid 0 (`root`, group `root`),
with `nginx -t` / `apache2 -t` failing and naming the file, the line and the option. A name that
does not resolve stays a start-up error (RW-AP012 / RW-NG032), as today: the account may be
created later.
"""

import subprocess

import pytest

from fault_common import app_dir, lch, paths, reference  # noqa: F401
from test_apache_module_embedded import config_test, make_apache
from test_nginx_module_embedded import make_nginx

SPELLINGS = ["user=0", "user=00", "user=+0", "user=-1", "user=4294967295", "user=root",
             "user=nobody group=0", "user=nobody group=00", "user=nobody group=root"]


def nginx_config_test(lch, options):
    d = app_dir(lch)
    nginx = make_nginx(lch, f"location /app/ {{ wsgi_script {d.script()}; wsgi_process_group g; }}",
                       f"wsgi_daemon_process g processes=1 threads=1 {options};")
    try:
        nginx.check_config()
        return 0, "", nginx
    except RuntimeError as e:
        return 1, str(e), nginx


@pytest.mark.parametrize("options", SPELLINGS)
def test_nginx_refuses_root_by_number_at_config_time(lch, options):
    """Before the fix only user=root and user=+0 failed `nginx -t`; user=0/00/-1/4294967295
    passed (the group then failed at start: 503 for every request) and group=0/00/root passed and
    the workers ran with gid 0."""
    rc, err, nginx = nginx_config_test(lch, options)
    assert rc != 0, f"`nginx -t` accepted {options}"
    key = options.split()[-1].split("=")[0]
    assert f'"{key}"' in err or f"{key}=" in err, err
    assert f"{nginx.conf_path}:" in err, "the error must name the file and line"


@pytest.mark.parametrize("options", SPELLINGS)
def test_apache_refuses_root_by_number_at_config_time(lch, options):
    d = app_dir(lch)
    config = f"""
        WSGIDaemonProcess web processes=1 threads=1 {options.replace('nobody', 'www-data')}
        WSGIScriptAlias /app {d.script()} process-group=web
        <Directory {d.path}>
            Require all granted
        </Directory>
    """
    apache = make_apache(lch, config)
    rc, err = config_test(apache)
    assert rc != 0, f"`apache2 -t` accepted {options}"
    key = options.split()[-1].split("=")[0]
    assert key in err and f"of {apache.conf_path}" in err, err


def run_worker(lch, *args):
    d = app_dir(lch)
    prefix = lch._prefix("worker")
    r = subprocess.run([str(paths.WORKER_BIN), "--socket", f"unix:{prefix}/w.sock", "--script", str(d.script()),
                        "--processes", "1", "--threads", "1", *args],
                       capture_output=True, text=True, timeout=10)
    return r.returncode, r.stdout + r.stderr


def test_worker_refuses_uid_0_at_start(lch):
    """rwsgi-worker --user 0 / 00: refused before anything starts (true on main: the supervisor
    resolves the user first)."""
    for user in ("0", "00"):
        rc, out = run_worker(lch, "--user", user)
        assert rc != 0 and "root" in out, out


def test_worker_refuses_gid_0_at_start(lch):
    """rwsgi-worker --user nobody --group 0 (or root): refused at start with a message naming the
    group. Before the fix it started and its workers ran with gid 0."""
    for group in ("0", "root"):
        d = app_dir(lch)
        prefix = lch._prefix("worker")
        p = subprocess.Popen([str(paths.WORKER_BIN), "--socket", f"unix:{prefix}/w.sock", "--script",
                              str(d.script()), "--processes", "1", "--threads", "1", "--user", "nobody",
                              "--group", group], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            rc = p.wait(5)
        except subprocess.TimeoutExpired:
            p.terminate()
            p.wait(10)
            pytest.fail(f"rwsgi-worker --group {group} started")
        assert rc != 0 and "group" in p.stdout.read()


@reference
@pytest.mark.parametrize("options, refused", [("user=0", True), ("user=root", True),
                                              ("user=www-data group=root", False)])
def test_reference_mod_wsgi_root_options(lch, options, refused):
    """mod_wsgi 4.9 resolves user= at config time. Measured: user=0 fails `apache2 -t` ("bad user
    name 0": a number must be written #0), user=root fails ("WSGI process blocked from running as
    root."), group=root PASSES: its daemons run with gid 0."""
    d = app_dir(lch)
    config = f"""
        WSGIDaemonProcess web processes=1 threads=1 {options}
        WSGIScriptAlias /app {d.script()} process-group=web
    """
    apache = make_apache(lch, config, load_lines=[f"LoadModule wsgi_module {paths.APACHE_MODULES / 'mod_wsgi.so'}"])
    rc, err = config_test(apache)
    print(f"mod_wsgi {options}: rc={rc} {err.strip()}")
    assert (rc != 0) == refused
