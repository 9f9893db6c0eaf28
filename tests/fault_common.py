"""What the fault tests (tests/test_fault_*.py, issue 10) share: a per-test launcher with a short
prefix (unix socket paths are limited to 107 bytes), the fault app deployed in each mode, and
mod_wsgi / uWSGI started the same way for the reference measurements.

Reference tests (`@reference`) run the same fault against Debian's mod_wsgi 4.9 or uWSGI 2.0 and
assert what those do; they document the anchors the product is compared with. They are skipped
unless RWSGI_TEST_REFERENCE=1 (they cost time and test other people's code); the measured values
are written next to each test and in docs/failure-modes.md.
"""

import itertools
import os
import re
import time

import pytest
import requests

from harness import paths
from harness.faults import MOD_WSGI, AppDir, wait_for
from test_apache_module_embedded import make_apache
from test_nginx_module_embedded import rwsgi_nginx

reference = pytest.mark.skipif(not os.environ.get("RWSGI_TEST_REFERENCE"),
                               reason="reference measurement (mod_wsgi/uWSGI): RWSGI_TEST_REFERENCE=1")

_n = itertools.count(1)


@pytest.fixture
def lch(new_launcher):
    """A Launcher for one test, under a short directory name; everything stops after the test."""
    launcher = new_launcher(f"f{os.getpid() % 100}{next(_n)}")
    yield launcher
    # An Apache child blocked on a daemon group (the deadlocks and hangs these tests provoke)
    # holds up httpd's stop for its whole stop timeout, and so does a worker's graceful stop:
    # the test is over, so Apache's children and groups and the workers go with SIGKILL first.
    import signal
    from harness.apache import Apache
    from harness.faults import kill, proc_table
    from harness.worker import Worker
    for server in launcher.started:
        if isinstance(server, Apache) and server.process.alive():
            table = proc_table()
            tree, todo = [], [server.process.pid]
            while todo:
                parent = todo.pop()
                kids = [p for p, (pp, _, _) in table.items() if pp == parent]
                tree += kids
                todo += kids
            for pid in tree:
                kill(pid, signal.SIGKILL)
        elif isinstance(server, Worker):
            server.process.stop(signal.SIGKILL)
    launcher.stop_all()


def app_dir(lch, scripts=("faults.py",)) -> AppDir:
    return AppDir(lch._prefix("apps"), scripts)


def group_name() -> str:
    # Unique per test run: tests find a group's processes by name (comm is cut at 15 bytes).
    return f"g{os.getpid() % 1000}x{next(_n)}"


def ok(url, timeout=5.0):
    try:
        return requests.get(url, timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


# --- nginx -----------------------------------------------------------------------------------

def nginx_daemon(lch, d: AppDir, options="processes=1 threads=4", *, script="faults.py",
                 http="", server="", wait=True, **kw):
    """nginx with the app at /app/ in daemon group `nginx.group_name`."""
    name = group_name()
    srv = f"""
        client_max_body_size 1g;
        location /app/ {{ wsgi_script {d.script(script)}; wsgi_process_group {name}; }}
        location /static {{ return 200 "static\\n"; }}
        {server}
    """
    nginx = rwsgi_nginx(lch, srv, f"wsgi_daemon_process {name} {options};\n{http}", **kw)
    nginx.group_name = name
    if wait:
        assert wait_for(lambda: ok(nginx.url("/app/hello")), 20), "the daemon group never answered"
    return nginx


def nginx_embedded(lch, d: AppDir, *, script="faults.py", http="wsgi_threads 2;", server="",
                   wait=True, **kw):
    srv = f"""
        client_max_body_size 1g;
        location /app/ {{ wsgi_script {d.script(script)}; }}
        location /static {{ return 200 "static\\n"; }}
        {server}
    """
    nginx = rwsgi_nginx(lch, srv, http, **kw)
    if wait:
        assert wait_for(lambda: ok(nginx.url("/app/hello")), 20), "embedded app never answered"
    return nginx


def nginx_supervisors(nginx) -> list:
    """The group's supervisor(s): "nginx: wsgi daemon group NAME", each the child of the group's
    keeper ("nginx: wsgi keeper NAME"), a child of nginx's master; all named after the group."""
    from harness.faults import children
    name = f"wsgi:{nginx.group_name}"[:15]
    return sorted(s for k in children(nginx.process.pid, name) for s in children(k, name))


def nginx_workers(nginx) -> list:
    from harness.faults import children
    return children(nginx.process.pid, "nginx")


# --- Apache ----------------------------------------------------------------------------------

def apache_site(lch, d: AppDir, daemon: str = None, *, script="faults.py", extra="",
                module=None, wait=True, **kw):
    """Apache with the app at /app: embedded (daemon=None) or in group `web` with the
    WSGIDaemonProcess options `daemon`. module: None = mod_rwsgi, "mod_wsgi" = Debian's mod_wsgi
    with the same configuration (the migration test's way of running it)."""
    group = ""
    if daemon is not None:
        group = f"WSGIDaemonProcess web {daemon}\nWSGIProcessGroup web\nWSGISocketPrefix {d.path}/s"
    config = f"""
        WSGIScriptAlias /app {d.script(script)}
        WSGIApplicationGroup %{{GLOBAL}}
        <Directory {d.path}>
            Require all granted
        </Directory>
        {group}
        {extra}
    """
    load = None
    if module == "mod_wsgi":
        if not MOD_WSGI.exists():
            pytest.fail(f"{MOD_WSGI} missing: install libapache2-mod-wsgi-py3")
        load = [f"LoadModule wsgi_module {MOD_WSGI}"]
    apache = make_apache(lch, config, load_lines=load, **kw)
    lch.started.append(apache)
    apache.start()
    if wait:
        assert wait_for(lambda: ok(apache.url("/app/hello")), 30), "the app never answered"
    return apache


def apache_logs(apache) -> str:
    return apache.error_log_text() + apache.process.log_text()


def _named(pid: int, name: str) -> bool:
    """A process called `name` by its comm (mod_rwsgi sets it) or its argv[0] (mod_wsgi does)."""
    from pathlib import Path
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    return comm == name or argv0.strip() == name


def apache_group(apache):
    """(supervisor pid, worker pids) of group `web` (display-name=%{GROUP}: "(wsgi:web)"). mod_rwsgi
    has one supervisor, a child of the parent, whose children are the workers; mod_wsgi's daemons
    are the parent's children themselves: (None, their pids)."""
    from harness.faults import children
    found = [p for p in children(apache.process.pid) if _named(p, "(wsgi:web)")]
    if len(found) == 1:
        kids = [p for p in children(found[0]) if _named(p, "(wsgi:web)")]
        if kids:
            return found[0], kids
    return None, found


def uwsgi_worker(lch, script, **kw):
    """Debian's uWSGI in place of rwsgi-worker (the harness's RWSGI_TEST_WORKER=uwsgi switch,
    for one worker), started and registered with `lch`."""
    from harness.worker import Worker
    os.environ["RWSGI_TEST_WORKER"] = "uwsgi"
    try:
        w = Worker(lch._prefix("uwsgi"), script, **kw)
    finally:
        del os.environ["RWSGI_TEST_WORKER"]
    lch.started.append(w)
    w.start()
    return w


# --- timing ----------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.t0 = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.t0


def count_lines(text: str, pattern: str) -> int:
    return len(re.findall(pattern, text))


def timed_get(url, timeout=12):
    """(status or the exception's class name, seconds it took)."""
    clock = Clock()
    try:
        r = requests.get(url, timeout=timeout)
        return r.status_code, clock()
    except requests.RequestException as e:
        return type(e).__name__, clock()


__all__ = ["lch", "reference", "app_dir", "nginx_daemon", "nginx_embedded", "apache_site",
           "apache_logs", "apache_group", "nginx_supervisors", "nginx_workers", "ok", "Clock",
           "count_lines", "group_name", "paths", "timed_get", "uwsgi_worker"]
