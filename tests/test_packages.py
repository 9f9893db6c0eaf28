"""The Debian packages of scripts/build-debs.sh, installed on this machine the way an admin does
it: `dpkg -i`, the module enabled (nginx: by the package, as Debian's libnginx-mod-* are; Apache:
`a2enmod rwsgi`, after `a2dismod wsgi`: the two must not be enabled together), the SYSTEM nginx
and Apache started with their packaged configurations plus one site file each on a free
127.0.0.1 port, the conformance suite passed through both, then both stopped (by the pid they
wrote) and the packages purged, leaving nothing behind: no file of theirs, no enabled link, and
/etc/nginx, /etc/apache2 and Apache's module state exactly as they were.

The machine is shared: see harness/system.py for the lock, the recorded temporary changes
(the packaged default sites listen on port 80: nginx's default site link and Apache's
ports.conf are set aside while the servers run) and the checks that nothing else is touched.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

import test_conformance as _suite
from harness import paths, system
from harness.ports import free_port, wait_until
from harness.procs import wait_pid_gone
from harness.serve import descendants
from harness.stack import Stack

PACKAGES = ["libnginx-mod-http-wsgi", "libapache2-mod-rwsgi", "rwsgi-worker"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="installs packages: needs root")

# ---- the packages --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def debs(rwsgi_tmp):
    """build-debs.sh from the current release build; it fails on any lintian error or warning."""
    out = rwsgi_tmp / "debs"
    r = subprocess.run(["bash", paths.ROOT / "scripts" / "build-debs.sh", out],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    found = {p.name.split("_")[0]: p for p in out.glob("*.deb")}
    assert sorted(found) == sorted(PACKAGES), found
    return found


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", deb, name], capture_output=True, text=True).stdout.strip()


class Installed:
    """The three packages installed, plus what must be put back afterwards."""

    def __init__(self, debs):
        self.debs = debs
        self.changes = system.Changes()
        self.before = system.snapshot()
        self.wsgi_marker = system.module_marker("wsgi")
        self.install_output = ""
        self.refused = None
        self.enabled_before = None
        self.files = {}
        self.purged = False

    def install(self):
        if not system.POLICY_RC_D.exists():
            # Maintainer scripts restart apache2/nginx through invoke-rc.d; the standard Debian
            # way to keep them from starting the services (on port 80) is a policy-rc.d saying no.
            self.changes.create(system.POLICY_RC_D, "#!/bin/sh\nexit 101\n", mode=0o755)
        r = system.dpkg("-i", *[self.debs[p] for p in PACKAGES])
        self.install_output = r.stdout + r.stderr
        assert r.returncode == 0, self.install_output
        for p in PACKAGES:
            listing = subprocess.run(["dpkg", "-L", p], capture_output=True, text=True).stdout
            self.files[p] = [Path(line) for line in listing.splitlines() if line.strip()]

    def enable_rwsgi(self):
        """What an admin switching from mod_wsgi does: a2enmod rwsgi (refused while wsgi is
        enabled), a2dismod wsgi, a2enmod rwsgi."""
        self.refused = system.a2("a2enmod", "rwsgi")
        self.enabled_before = Path("/etc/apache2/mods-enabled/rwsgi.load").exists()
        if self.wsgi_marker and self.wsgi_marker[0] == "enabled":
            r = system.a2("a2dismod", "-q", "wsgi")
            assert r.returncode == 0, r.stdout + r.stderr
        r = system.a2("a2enmod", "-q", "rwsgi")
        assert r.returncode == 0, r.stdout + r.stderr

    def purge(self):
        if self.purged:
            return
        r = system.dpkg("--purge", *PACKAGES)
        assert r.returncode == 0, r.stdout + r.stderr
        self.purged = True
        # mod_wsgi back to how it was (the test disabled it to enable rwsgi).
        if self.wsgi_marker and self.wsgi_marker[0] == "enabled" and \
                not Path("/etc/apache2/mods-enabled/wsgi.load").exists():
            maint = ["-m"] if self.wsgi_marker[1] == "maint" else []
            system.a2("a2enmod", "-q", *maint, "wsgi")
        system.remove_new_empty_dirs(Path("/var/lib/apache2"), self.before)

    def restore(self):
        try:
            if not self.purged and any(system.known_to_dpkg(p) for p in PACKAGES):
                self.purge()
        finally:
            self.changes.undo()


@pytest.fixture(scope="module")
def installed(debs):
    with system.Lock():
        system.undo_leftovers()
        for name, pidfile in (("nginx", "/run/nginx.pid"), ("apache2", "/run/apache2/apache2.pid")):
            pid = system.pid_from(pidfile)
            if pid:
                pytest.fail(f"the system {name} is running (pid {pid}): this test starts and stops "
                            "it itself, and does not touch one it did not start")
        for p in PACKAGES:
            assert not system.known_to_dpkg(p), f"{p} is installed already; purge it first"
        inst = Installed(debs)
        try:
            inst.install()
            inst.enable_rwsgi()
            yield inst
        finally:
            inst.restore()


def test_packages_depend_on_the_abi_of_debians_servers(debs):
    """apt pairs the nginx module only with an nginx of the ABI it was built for, the Apache
    module only with Apache's module API; what Debian's packages Provide is what we Depend on."""
    nginx_dep = field(debs["libnginx-mod-http-wsgi"], "Depends")
    abi = re.search(r"nginx-abi-[\w.-]+", nginx_dep).group(0)
    assert abi == "nginx-abi-1.22.1-7"
    provides = subprocess.run(["dpkg-query", "-W", "-f=${Provides}", "nginx"],
                              capture_output=True, text=True).stdout
    assert abi in provides, provides
    apache_dep = field(debs["libapache2-mod-rwsgi"], "Depends")
    api = re.search(r"apache2-api-\d+", apache_dep).group(0)
    assert api in subprocess.run(["dpkg-query", "-W", "-f=${Provides}", "apache2-bin"],
                                 capture_output=True, text=True).stdout


def test_packages_depend_on_the_python_they_link(debs):
    """The modules link libpython3.11.so.1.0 (dh_shlibdeps finds it); rwsgi-worker has the static
    interpreter core linked in (docs/building.md, "Which libpython"): it needs the standard
    library of at least the version it was built from, not the shared library, and names the
    source it embeds."""
    dev = subprocess.run(["dpkg-query", "-W", "-f=${source:Package} ${source:Version}",
                          "libpython3.11-dev"], capture_output=True, text=True).stdout.split()
    for name in ("libnginx-mod-http-wsgi", "libapache2-mod-rwsgi"):
        assert re.search(r"(^|, )libpython3\.11 \(", field(debs[name], "Depends")), name
    worker_dep = field(debs["rwsgi-worker"], "Depends")
    assert f"libpython3.11-stdlib (>= {dev[1]})" in worker_dep
    assert not re.search(r"(^|, )libpython3\.11 \(", worker_dep), worker_dep
    assert field(debs["rwsgi-worker"], "Built-Using") == f"{dev[0]} (= {dev[1]})"


def test_nginx_module_is_enabled_as_debian_does(installed):
    link = Path("/etc/nginx/modules-enabled/50-mod-http-wsgi.conf")
    assert link.is_symlink()
    assert os.readlink(link) == "/usr/share/nginx/modules-available/mod-http-wsgi.conf"
    assert link.read_text() == "load_module modules/ngx_http_wsgi_module.so;\n"
    assert Path("/usr/lib/nginx/modules/ngx_http_wsgi_module.so").is_file()
    r = subprocess.run(["/usr/sbin/nginx", "-t"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_apache_module_refuses_to_be_enabled_with_mod_wsgi(installed):
    """mod_wsgi is enabled on this machine (scripts/setup.sh installs it for comparisons): the
    package installs but does not enable rwsgi and says why; a2enmod rwsgi refuses; after
    a2dismod wsgi it works (the `installed` fixture does those steps). The other way round
    (a2enmod wsgi knows nothing of us), Apache's own config test fails with our sentence."""
    assert installed.wsgi_marker and installed.wsgi_marker[0] == "enabled", \
        f"expected mod_wsgi enabled (setup.sh installs libapache2-mod-wsgi-py3): {installed.wsgi_marker}"
    assert "not enabled: mod_wsgi (wsgi) is enabled" in installed.install_output
    assert not installed.enabled_before
    refused = installed.refused
    assert refused.returncode != 0
    assert "Module wsgi is enabled - cannot proceed due to conflicts" in refused.stdout + refused.stderr
    assert Path("/etc/apache2/mods-enabled/rwsgi.load").is_symlink()
    assert Path("/etc/apache2/mods-enabled/rwsgi.conf").is_symlink()
    # Both at once: a2enmod wsgi succeeds (its .load declares nothing), configtest does not.
    assert system.a2("a2enmod", "-q", "wsgi").returncode == 0
    try:
        r = subprocess.run(["apache2ctl", "configtest"], capture_output=True, text=True)
        assert r.returncode != 0
        assert "mod_wsgi (wsgi) and mod_rwsgi (rwsgi) are both enabled" in r.stderr
    finally:
        assert system.a2("a2dismod", "-q", "wsgi").returncode == 0
    r = subprocess.run(["apache2ctl", "configtest"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---- the system servers ------------------------------------------------------------------------

# The conformance suite against them (the `stack` fixture below). Defined here, between the
# install tests and the purge test, because pytest runs a module's tests in definition order.
for _name in dir(_suite):
    if _name.startswith("test_"):
        globals()[_name] = getattr(_suite, _name)


RUNNING = []  # SystemServers started and not yet stopped


class SystemServer:
    """The packaged nginx or Apache, started as its init script does, on a site file's port."""

    def __init__(self, kind: str, port: int, error_log: Path, pidfile: Path):
        self.kind, self.port, self.pidfile = kind, port, Path(pidfile)
        self.error_log = Path(error_log)
        self.log_start = self.error_log.stat().st_size if self.error_log.exists() else 0
        self.pid = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def error_log_text(self) -> str:
        with open(self.error_log, "rb") as f:
            f.seek(self.log_start)
            return f.read().decode(errors="replace")

    def started(self, timeout: float = 30):
        wait_until(lambda: system.pid_from(self.pidfile), timeout, what=f"{self.pidfile}")
        self.pid = system.pid_from(self.pidfile)
        RUNNING.append(self)
        wait_until(lambda: _listening(self.port), timeout, what=f"{self.kind} on {self.port}")
        return self

    def stop(self):
        """SIGTERM to the pid it wrote (both servers: fast shutdown), then wait for it and for
        every process it started."""
        if self.pid is None:
            return
        family = descendants(self.pid) | {self.pid}
        os.kill(self.pid, signal.SIGTERM)
        for pid in family:
            wait_pid_gone(pid, timeout=30)
        self.pid = None
        RUNNING.remove(self)


def _listening(port) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
        return True
    except requests.ConnectionError:
        return False


def conformance_entry(directory: Path, apps: Path, state_dir: Path) -> Path:
    """A WSGI script that gives the conformance app its state directory: the system servers
    pass no environment of ours to their workers."""
    path = directory / "conformance_entry.py"
    path.write_text(
        "import importlib.util, os, sys\n"
        f"os.environ['RWSGI_TEST_STATE_DIR'] = {str(state_dir)!r}\n"
        f"spec = importlib.util.spec_from_file_location('rwsgi_conformance', {str(apps / 'conformance.py')!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules[spec.name] = module\n"
        "spec.loader.exec_module(module)\n"
        "application = module.application\n")
    path.chmod(0o644)
    return path


def start_system_nginx(installed, entry: Path) -> SystemServer:
    port = free_port()
    installed.changes.remove_link("/etc/nginx/sites-enabled/default")  # listens on port 80
    installed.changes.create("/etc/nginx/sites-enabled/rwsgi-package-test", f"""\
# rwsgi package test (tests/test_packages.py); removed when the test ends.
wsgi_threads 4;
server {{
    listen 127.0.0.1:{port};
    server_name localhost;
    client_max_body_size 64m;
    location /app {{
        wsgi_script {entry};
    }}
}}
""")
    r = subprocess.run(["/usr/sbin/nginx", "-t"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    server = SystemServer("nginx", port, Path("/var/log/nginx/error.log"), Path("/run/nginx.pid"))
    # As /etc/init.d/nginx starts it: the binary daemonises itself with /etc/nginx/nginx.conf.
    subprocess.run(["/usr/sbin/nginx"], check=True, capture_output=True, timeout=30)
    return server.started()


def start_system_apache(installed, entry: Path) -> SystemServer:
    port = free_port()
    ports = Path("/etc/apache2/ports.conf")
    # ports.conf says Listen 80 (and 443 with SSL): set aside while this test's Apache runs.
    installed.changes.replace_file(ports, "# rwsgi package test: Listen lines set aside, "
                                          "restored when the test ends.\n")
    installed.changes.create("/etc/apache2/sites-enabled/rwsgi-package-test.conf", f"""\
# rwsgi package test (tests/test_packages.py); removed when the test ends.
Listen 127.0.0.1:{port}
<VirtualHost 127.0.0.1:{port}>
    ServerName localhost
    WSGIScriptAlias /app {entry}
    <Directory {entry.parent}>
        Require all granted
    </Directory>
</VirtualHost>
""")
    r = subprocess.run(["apache2ctl", "configtest"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    server = SystemServer("apache", port, Path("/var/log/apache2/error.log"),
                          Path("/run/apache2/apache2.pid"))
    # apache2ctl start hands over to systemctl when systemd is PID 1; this variable makes it start
    # apache2 itself (-k start, as the sysvinit script does), so the test owns what it stops.
    subprocess.run(["apache2ctl", "start"], check=True, capture_output=True, timeout=30,
                   env={**os.environ, "APACHE_STARTED_BY_SYSTEMD": "1"})
    return server.started()


@pytest.fixture(scope="module", params=["system-nginx", "system-apache"])
def stack(request, installed, apps, state_dir, rwsgi_tmp):
    entry_dir = rwsgi_tmp / "system-entry"
    entry_dir.mkdir(exist_ok=True)
    entry_dir.chmod(0o755)
    entry = conformance_entry(entry_dir, apps, state_dir)
    start = start_system_nginx if request.param == "system-nginx" else start_system_apache
    server = start(installed, entry)
    try:
        yield Stack(request.param, server, "/app", logs=[server.error_log_text])
    finally:
        server.stop()
        installed.changes.undo()


# ---- the other package -----------------------------------------------------------------------------

def test_rwsgi_serve_from_the_package_uses_the_packaged_module(installed, rwsgi_tmp):
    app_dir = rwsgi_tmp / "packaged-serve"
    app_dir.mkdir()
    app_dir.chmod(0o755)
    app = app_dir / "app.py"
    app.write_text((paths.ROOT / "examples" / "hello" / "app.py").read_text())
    app.chmod(0o644)
    port = free_port()
    proc = subprocess.Popen(["/usr/bin/rwsgi", "serve", app, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        wait_until(lambda: _listening(port), 30, alive=lambda: proc.poll() is None,
                   what="rwsgi serve")
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).text.startswith("Hello from rwsgi")
        conf = next(Path("/tmp").glob(f"rwsgi-serve-{port}-*/nginx.conf")).read_text()
        assert 'load_module "/usr/lib/nginx/modules/ngx_http_wsgi_module.so";' in conf
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out = proc.communicate(timeout=40)[0]
    assert proc.returncode == 0, out
    assert "stopped; nothing left running" in out


def test_worker_unit_template_is_valid(installed):
    """systemd is not running here, so the unit cannot be started; `systemd-analyze verify`
    checks its syntax and the binary it runs (the man page it names is checked as a file: `man`
    need not be installed)."""
    unit = Path("/lib/systemd/system/rwsgi-worker@.service")
    assert unit.is_file()
    assert "Documentation=man:rwsgi-worker(1)" in unit.read_text()
    assert Path("/usr/share/man/man1/rwsgi-worker.1.gz").is_file()
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", "rwsgi-worker@site.service"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    text = unit.read_text()
    for line in ("EnvironmentFile=/etc/rwsgi/%i.conf", "NoNewPrivileges=yes", "ProtectSystem=full",
                 "PrivateTmp=yes", "SystemCallFilter=@system-service"):
        assert line in text


def environment_file(text: str) -> dict:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (comments, outer quotes)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def test_worker_unit_serves_django_as_the_unit_runs_it(installed, apps, venv, rwsgi_tmp):
    """What the unit does, without systemd: ExecStart=/usr/bin/rwsgi-worker $RWSGI_WORKER_OPTIONS
    (an options file in the example's format, the variable split on whitespace as systemd does),
    User/Group=www-data, NoNewPrivileges=yes, CapabilityBoundingSet= (empty), the socket in a
    www-data-owned runtime directory, ExecReload (SIGHUP) and the stop (SIGTERM to the main
    process). The Django project answers through the socket all along. (ProtectSystem, PrivateTmp
    and the system call filter need systemd itself; `systemd-analyze verify` above checks them.)"""
    import pwd
    from harness import uwsgi_client
    unit = Path("/lib/systemd/system/rwsgi-worker@.service").read_text()
    example = Path("/usr/share/doc/rwsgi-worker/examples/site.conf").read_text()
    assert "RWSGI_WORKER_OPTIONS=" in example
    www = pwd.getpwnam("www-data")
    run_dir = rwsgi_tmp / "run-rwsgi-site"  # RuntimeDirectory=rwsgi/%i, owned by User=
    run_dir.mkdir()
    os.chown(run_dir, www.pw_uid, www.pw_gid)
    project = apps / "django_project"
    options_file = rwsgi_tmp / "site.conf"
    options_file.write_text(
        "# like /usr/share/doc/rwsgi-worker/examples/site.conf\n"
        f'RWSGI_WORKER_OPTIONS="--socket unix:{run_dir}/app.sock --script {project}/testsite/wsgi.py '
        f'--python-home {venv} --python-path {project} --processes 2 --threads 4"\n')
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).split()
    assert exec_start == ["/usr/bin/rwsgi-worker", "$RWSGI_WORKER_OPTIONS"]
    argv = [exec_start[0]] + environment_file(options_file.read_text())["RWSGI_WORKER_OPTIONS"].split()
    assert re.search(r"^User=www-data$", unit, re.M) and re.search(r"^CapabilityBoundingSet=$", unit, re.M)
    worker = subprocess.Popen(
        ["setpriv", "--reuid=www-data", "--regid=www-data", "--init-groups", "--no-new-privs",
         "--bounding-set=-all", "--inh-caps=-all", *argv],
        stdout=subprocess.DEVNULL, stderr=open(rwsgi_tmp / "unit-worker.log", "wb"))
    sock = str(run_dir / "app.sock")
    try:
        wait_until(lambda: Path(sock).exists(), 30, alive=lambda: worker.poll() is None,
                   what="the worker's socket")
        status = Path(f"/proc/{worker.pid}/status").read_text()
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M) and re.search(r"^CapBnd:\s+0+$", status, re.M)
        r = uwsgi_client.get(sock, "/")
        assert r.status == 200, (rwsgi_tmp / "unit-worker.log").read_text()
        worker.send_signal(signal.SIGHUP)  # ExecReload: rolling restart
        time.sleep(1)
        assert uwsgi_client.get(sock, "/info").status == 200
    finally:
        worker.send_signal(signal.SIGTERM)  # KillMode=mixed: SIGTERM to the main process
        assert worker.wait(30) == 0, (rwsgi_tmp / "unit-worker.log").read_text()


# ---- purge ----------------------------------------------------------------------------------------

def test_purge_leaves_nothing_behind(installed):
    """Runs last (file order). pytest keeps the last `stack` (Apache) until the module ends, so
    it is stopped here, by its pid, as the stack fixture would."""
    for server in list(RUNNING):
        server.stop()
    for pidfile in ("/run/nginx.pid", "/run/apache2/apache2.pid"):
        assert system.pid_from(pidfile) is None, f"{pidfile}: a server is still running"
    system.a2("a2dismod", "-q", "rwsgi")  # as an admin would before removing the module
    installed.purge()
    installed.changes.undo()
    for p in PACKAGES:
        assert not system.known_to_dpkg(p), f"{p} still known to dpkg"
    left = [f for files in installed.files.values() for f in files
            if (f.exists() or f.is_symlink()) and not f.is_dir()]
    assert left == [], left
    for d in ("/usr/share/nginx/modules-available", "/etc/rwsgi"):
        if str(d) not in installed.before:
            assert not Path(d).exists(), f"{d} was created and left behind"
    assert not list(Path("/etc/nginx/modules-enabled").glob("*wsgi*"))
    assert not list(Path("/etc/apache2/mods-enabled").glob("rwsgi*"))
    changed = system.diff(installed.before, system.snapshot())
    assert changed == [], "\n".join(changed)
