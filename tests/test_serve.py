"""`rwsgi serve`, started as a user starts it: the real binary runs the real nginx with the module
(Debian's, or the pair RWSGI_NGINX_BIN / RWSGI_NGINX_MODULE name), real Flask and Django apps
from build/venv, static files served by nginx, daemon mode, --reload-on-change picking up an
edited file, and Ctrl-C (SIGINT to the process group, as a terminal sends it) leaving nothing.
Every generated configuration is also checked with `nginx -t` on its own.

mod_wsgi-express (the model) execs httpd in place of itself, so there is no parent left to stop
or to die; `rwsgi serve` stays nginx's parent to print, reload and clean up, and these tests
check that being a parent loses nothing (no process left after Ctrl-C, SIGTERM or SIGKILL).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from harness import paths
from harness.serve import comm, descendants, wait_gone

VERSIONED_APP = """\
import os
import time

VERSION = 1


def application(environ, start_response):
    if environ["PATH_INFO"] == "/sleep":
        time.sleep(float(environ["QUERY_STRING"] or "1"))
    body = f"version={VERSION} pid={os.getpid()}\\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def write(path: Path, text: str, mode=0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    path.write_text(text)
    path.chmod(mode)
    return path


def site_dir(launcher, name="site") -> Path:
    d = launcher._prefix(name)
    write(d / "static" / "hello.txt", "static hello\n")
    return d


def get(serve, path, **kw):
    kw.setdefault("timeout", 15)
    return requests.get(serve.url(path), **kw)


def assert_static_from_nginx(serve, path):
    """The file came from nginx's static handler (ETag, byte ranges), not from the app."""
    r = get(serve, path)
    assert r.status_code == 200, r.text
    assert r.text == "static hello\n"
    assert r.headers["Server"] == "nginx"
    assert r.headers.get("Accept-Ranges") == "bytes" and "ETag" in r.headers
    r = get(serve, path, headers={"Range": "bytes=7-11"})
    assert (r.status_code, r.text) == (206, "hello")


def wait_until_served(serve, within=15):
    """Until / answers 200 (after a process was replaced)."""
    deadline = time.monotonic() + within
    while get(serve, "/").status_code != 200:
        assert time.monotonic() < deadline, serve.log_text()
        time.sleep(0.2)


def python_pid(r) -> int:
    return int(r.text.split("pid=")[1].split()[0])


# ---- real apps ---------------------------------------------------------------------------------

def test_flask_embedded_with_static_files(launcher_fn, apps, venv):
    d = site_dir(launcher_fn)
    serve = launcher_fn.serve([apps / "flask_app" / "app.py", "--python-home", venv,
                               "--static", f"/static={d / 'static'}", "--threads", "4",
                               "--access-log"], cwd=d)
    serve.check_config()
    r = get(serve, "/")
    assert r.status_code == 200 and "rwsgi flask test" in r.text
    info = get(serve, "/info").json()
    assert info["prefix"] == str(venv)
    # Embedded: the app runs inside nginx's worker process.
    assert comm(info["pid"]) == "nginx"
    r = requests.post(serve.url("/form"), data={"name": "n", "colour": "blue"}, timeout=10)
    assert r.json()["colour"] == "blue"
    assert_static_from_nginx(serve, "/static/hello.txt")
    assert get(serve, "/error").status_code == 500
    # The traceback and the access log reach the terminal (here: rwsgi serve's output). nginx
    # writes an access line after the response went out, so it may trail the client a moment.
    lines = ("RuntimeError: flask test error route", '"GET /static/hello.txt HTTP/1.1" 200',
             '"GET /error HTTP/1.1" 500')
    deadline = time.monotonic() + 5
    while not all(line in serve.log_text() for line in lines) and time.monotonic() < deadline:
        time.sleep(0.1)
    text = serve.log_text()
    assert all(line in text for line in lines), text


def test_django_project_is_one_line(launcher_fn, apps, venv):
    """The README's line, `rwsgi serve --module mysite.wsgi --static /static=./static`, run in
    the project directory with the virtualenv activated (VIRTUAL_ENV, as `. venv/bin/activate`
    sets it)."""
    project = launcher_fn._prefix("django")
    shutil.copytree(apps / "django_project", project, dirs_exist_ok=True)
    write(project / "static" / "hello.txt", "static hello\n")
    serve = launcher_fn.serve(["--module", "testsite.wsgi", "--static", "/static=./static"],
                              cwd=project, env={"VIRTUAL_ENV": str(venv)})
    serve.check_config()
    assert f"python home {venv}" in serve.log_text()
    r = get(serve, "/")
    assert r.status_code == 200, r.text
    info = get(serve, "/info").json()
    assert info["prefix"] == str(venv), info
    assert_static_from_nginx(serve, "/static/hello.txt")
    shim = (serve.run_dir / "app" / "rwsgi_module_app.py").read_text()
    assert 'import_module("testsite.wsgi")' in shim


def test_embedded_request_timeout(launcher_fn):
    """--request-timeout without --daemon: wsgi_request_timeout in the generated config. A
    request sleeping in C past it gets 504 (the worker is replaced; the next request works)."""
    d = site_dir(launcher_fn)
    app = write(d / "app.py", VERSIONED_APP)
    serve = launcher_fn.serve([app, "--request-timeout", "1"], cwd=d)
    serve.check_config()
    t0 = time.monotonic()
    r = get(serve, "/sleep?8", timeout=20)
    assert r.status_code == 504 and time.monotonic() - t0 < 6, (r.status_code, r.text)
    wait_until_served(serve)


def test_daemon_mode_and_request_timeout(launcher_fn):
    d = site_dir(launcher_fn)
    app = write(d / "app.py", VERSIONED_APP)
    serve = launcher_fn.serve([app, "--daemon", "--processes", "2", "--threads", "2",
                               "--request-timeout", "1", "--static", "/static=static"], cwd=d)
    serve.check_config()
    r = get(serve, "/")
    assert r.status_code == 200 and r.text.startswith("version=1")
    # Daemon mode: the app runs in the group's processes, children of the supervisor.
    assert comm(python_pid(r)) == "wsgi:rwsgi"
    assert python_pid(r) in descendants(serve.master_pid)
    assert_static_from_nginx(serve, "/static/hello.txt")
    t0 = time.monotonic()
    r = get(serve, "/sleep?5", timeout=20)
    assert r.status_code == 504 and time.monotonic() - t0 < 4.5, (r.status_code, r.text)
    # The group replaced the stuck process and serves again.
    wait_until_served(serve)


# ---- --reload-on-change --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["embedded", "daemon"])
def test_reload_on_change_picks_up_an_edited_file(launcher_fn, mode):
    """Editing the app restarts the Python side; nginx's master and listening socket stay, and
    requests sent all along (new connections, as browsers open them after an edit) all succeed."""
    d = site_dir(launcher_fn)
    app = write(d / "app.py", VERSIONED_APP)
    args = [app, "--reload-on-change", "--processes", "2"] + (["--daemon"] if mode == "daemon" else [])
    serve = launcher_fn.serve(args, cwd=d)
    assert "reloading on change: 1 .py files" in serve.log_text()
    assert get(serve, "/").text.startswith("version=1")
    failures, seen, stop = [], [], threading.Event()

    def traffic():
        while not stop.is_set():
            try:
                r = get(serve, "/", headers={"Connection": "close"}, timeout=10)
                seen.append(r.text.split()[0]) if r.status_code == 200 else failures.append(r.status_code)
            except requests.RequestException as e:
                failures.append(repr(e))
            time.sleep(0.02)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        time.sleep(1.1)  # a different mtime second than the first load
        write(d / "app.py", VERSIONED_APP.replace("VERSION = 1", "VERSION = 2"))
        deadline = time.monotonic() + 20
        while "version=2" not in seen:
            assert time.monotonic() < deadline, f"no reload; log:\n{serve.log_text()}"
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        t.join()
    assert "app.py changed" in serve.log_text()
    assert failures == [], failures
    assert int((serve.run_dir / "nginx.pid").read_text()) == serve.master_pid
    assert seen[-1] == "version=2"


# ---- stopping leaves nothing --------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["embedded", "daemon"])
def test_ctrl_c_leaves_no_process_and_no_files(launcher_fn, mode):
    d = site_dir(launcher_fn)
    app = write(d / "app.py", VERSIONED_APP)
    serve = launcher_fn.serve([app] + (["--daemon"] if mode == "daemon" else []), cwd=d)
    assert get(serve, "/").status_code == 200
    ours = descendants(serve.process.pid)
    assert serve.master_pid in ours and len(ours) >= (4 if mode == "daemon" else 2), ours
    assert serve.interrupt() == 0, serve.log_text()
    wait_gone(ours, timeout=5)  # rwsgi serve only exits after the last of them
    assert not serve.run_dir.exists()
    assert "stopped; nothing left running" in serve.log_text()
    with pytest.raises(requests.ConnectionError):
        get(serve, "/", timeout=2)


def test_sigkill_of_rwsgi_serve_still_stops_nginx_and_the_group(launcher_fn):
    """If `rwsgi serve` itself is killed (-9, the OOM killer), nginx gets SIGTERM (its parent-death
    signal) and the daemon group follows nginx's master: nothing keeps the port."""
    d = site_dir(launcher_fn)
    app = write(d / "app.py", VERSIONED_APP)
    serve = launcher_fn.serve([app, "--daemon"], cwd=d)
    assert get(serve, "/").status_code == 200
    ours = descendants(serve.process.pid)
    os.kill(serve.process.pid, signal.SIGKILL)
    serve.process.proc.wait(10)
    wait_gone(ours, timeout=30)
    shutil.rmtree(serve.run_dir, ignore_errors=True)  # only a clean stop can remove it


# ---- --setup-only ---------------------------------------------------------------------------------

def test_setup_only_writes_a_config_and_nginxctl(launcher_fn, free_port):
    d = site_dir(launcher_fn)
    app = write(d / "app.py", VERSIONED_APP)
    # Short: the daemon group's unix socket lives there (107 bytes of path at most).
    target = Path(tempfile.mkdtemp(prefix="rwsgi-setup-")) / "server"
    target.parent.chmod(0o755)  # nginx's workers (www-data) must reach the socket in it
    port = free_port()
    r = subprocess.run([paths.SERVE_BIN, "serve", app, "--daemon", "--setup-only", target,
                        "--port", str(port), "--access-log", "--nginx", paths.NGINX_BIN,
                        "--nginx-module", paths.NGINX_MODULE],
                       capture_output=True, text=True, timeout=60, cwd=d)
    assert r.returncode == 0, r.stderr
    assert "nginxctl start" in r.stdout
    ctl = target / "nginxctl"
    assert subprocess.run([ctl, "configtest"], capture_output=True).returncode == 0
    subprocess.run([ctl, "start"], check=True, timeout=30, capture_output=True)
    pid = None
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                resp = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
                if resp.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, (target / "logs" / "error.log").read_text()
            time.sleep(0.2)
        pid = int((target / "nginx.pid").read_text())
        assert resp.text.startswith("version=1")
        subprocess.run([ctl, "reload"], check=True, timeout=30, capture_output=True)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
        group = descendants(pid)
        subprocess.run([ctl, "stop"], check=True, timeout=30, capture_output=True)
        wait_gone({pid} | group, timeout=30)
        assert 'GET / HTTP/1.1" 200' in (target / "logs" / "access.log").read_text()
    finally:
        if pid and Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGTERM)
        shutil.rmtree(target.parent, ignore_errors=True)


# ---- mistakes: one sentence, before nginx starts ---------------------------------------------------

def run_serve(args, cwd, timeout=30):
    return subprocess.run([paths.SERVE_BIN, "serve", *map(str, args), "--nginx", paths.NGINX_BIN,
                           "--nginx-module", paths.NGINX_MODULE],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_mistakes_are_one_sentence(launcher_fn, free_port):
    d = site_dir(launcher_fn)
    app = write(d / "app.py", VERSIONED_APP)
    hidden = d / "private"
    write(hidden / "app.py", VERSIONED_APP)
    hidden.chmod(0o700)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    cases = [
        ([app, "--port", str(busy.getsockname()[1])], 1, "pick another port"),
        (["--module", "nosuch.wsgi", "--port", str(free_port())], 1, "no module named nosuch.wsgi"),
        ([d / "missing.py"], 1, "does not exist"),
        ([app, "--static", "/s=./nothere"], 1, "--static /s"),
        ([app, "--daemon", "--setup-only", d / ("x" * 100)], 1, "choose a shorter directory"),
        (["--module", "json.nosuch", "--port", str(free_port())], 1, "no module named json.nosuch"),
    ]
    if os.geteuid() == 0:
        cases.append(([hidden / "app.py", "--port", str(free_port())], 1, "www-data cannot read"))
        cases.append(([app, "--setup-only", hidden / "srv"], 1, "www-data cannot read"))
    try:
        for args, rc, needle in cases:
            r = run_serve(args, d)
            assert (r.returncode, needle in r.stderr) == (rc, True), (args, r.returncode, r.stderr)
            assert r.stderr.count("\n") == 1, r.stderr  # one sentence, not a traceback
    finally:
        busy.close()
