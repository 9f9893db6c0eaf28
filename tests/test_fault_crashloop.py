"""Issue 10, case 4: a crash-looping app (`os._exit(3)` at import, tests/apps/exit_at_import.py).

Daemon mode: while a group has no live worker, a request gets a fast 503 (at once, or after
queue-timeout when one is set, never nginx's 300 s read timeout), and the reason is in the log.
nginx embedded: the dying import must not make nginx's master respawn the worker in a tight loop
(a fork storm); the worker backs off, answers 500/503 for that app and keeps serving the other
locations.

Interface assumed (DESIGN.md): "a group with no live worker answers 503 at once"; queue-timeout
bounds the wait when set. No new directive.
"""

import re
import time

import pytest

from fault_common import (Clock, apache_logs, apache_site, app_dir, lch, nginx_daemon, nginx_embedded,  # noqa: F401
                          ok, reference, timed_get, uwsgi_worker)
from harness.faults import children, wait_for

SCRIPTS = ("faults.py", "exit_at_import.py")


@pytest.mark.parametrize("queue_timeout", [None, 3])
def test_nginx_daemon_crash_loop_answers_503_fast(lch, queue_timeout):
    """While no worker lives, the group's supervisor answers 503 itself (RW052). Before the fix:
    no answer within 12 s (nginx's 504 after 300 s), with or without queue-timeout=3. mod_wsgi
    4.9 (reference below) imports lazily: every request kills a daemon and gets 500 at once."""
    d = app_dir(lch, SCRIPTS)
    options = "processes=1 threads=2" + (f" queue-timeout={queue_timeout}" if queue_timeout else "")
    nginx = nginx_daemon(lch, d, options, script="exit_at_import.py", wait=False)
    # Time the answer from when the first worker has died (a loaded machine can take seconds to
    # start Python): the claim is "503 at once while no worker lives".
    assert wait_for(lambda: "exited with status 3" in nginx.error_log_text(), timeout=30)
    bound = (queue_timeout or 0) + 3
    status, elapsed = timed_get(nginx.url("/app/hello"), bound + 1)
    assert status == 503 and elapsed < bound, f"{status} after {elapsed:.1f}s"
    log = nginx.error_log_text()
    assert "exited with status 3" in log
    assert "RW052 no live worker (last: worker" in log


def test_apache_daemon_crash_loop_answers_503_fast(lch):
    """queue-timeout=3: 503 within 6 s. Before the fix: no answer within 12 s (the request
    connected to the group's socket and waited for a worker until Timeout: 502 after 30 s here,
    62 s with Debian's default Timeout 60 in the issue)."""
    d = app_dir(lch, SCRIPTS)
    options = "processes=1 threads=2 queue-timeout=3 display-name=%{GROUP}"
    apache = apache_site(lch, d, options, script="exit_at_import.py", wait=False)
    assert wait_for(lambda: "exited with status 3" in apache_logs(apache), timeout=30)
    bound = 6
    status, elapsed = timed_get(apache.url("/app/hello"), bound + 1)
    assert status == 503 and elapsed < bound, f"{status} after {elapsed:.1f}s"
    assert "exited with status 3" in apache_logs(apache)


def test_worker_crash_loop_behind_stock_nginx_answers_503_fast(lch):
    """rwsgi-worker behind stock nginx `uwsgi_pass`, --queue-timeout 3: 503 within 6 s, with
    Retry-After. Before the fix the connection stayed in the backlog until nginx's
    uwsgi_read_timeout (60 s)."""
    d = app_dir(lch, SCRIPTS)
    w = lch.worker(d.script("exit_at_import.py"), processes=1, threads=2,
                   extra_args=["--queue-timeout", "3"])
    front = lch.front_end("nginx", w)
    time.sleep(1)
    status, elapsed = timed_get(front.url("/app/hello"), 7)
    assert status == 503 and elapsed < 6, f"{status} after {elapsed:.1f}s"


def worker_starts(nginx) -> int:
    return len(re.findall(r"start worker process \d+", nginx.error_log_text()))


def statuses_for(nginx, paths, seconds=6) -> dict:
    """GETs each of `paths` in turn, every 0.2 s for `seconds`: path -> statuses."""
    clock = Clock()
    seen = {p: [] for p in paths}
    while clock() < seconds:
        for p in paths:
            seen[p].append(timed_get(nginx.url(p), 3)[0])
        time.sleep(0.2)
    return seen


def test_nginx_embedded_crash_loop_is_not_a_fork_storm(lch):
    """One nginx worker; /bad runs the crashing script, /app/ a good one, /static is nginx's own.
    Over 6 s: at most 4 worker starts (a back-off between import attempts), the good locations
    answer 200 and /bad answers 500/503 while the worker backs off.

    Measured on main: 118-462 worker starts in 6 s, depending on the machine's load (791 in 10 s
    in the issue), and about every other request to the worker fails. Apache embedded:
    see the next test. mod_wsgi imports on the first request, so there it is one dead child per
    request (reference below)."""
    d = app_dir(lch, SCRIPTS)
    nginx = nginx_embedded(lch, d, server=f"location /bad {{ wsgi_script {d.script('exit_at_import.py')}; }}",
                           wait=False)
    seen = statuses_for(nginx, ["/static", "/app/hello", "/bad"])
    good, bad = seen["/static"] + seen["/app/hello"], seen["/bad"]
    starts = worker_starts(nginx)
    seen = f"{starts} worker starts in 6 s; good: {good}; bad: {bad}"
    print(seen)
    assert starts <= 4, seen
    assert sum(1 for s in good if s != 200) <= 2, seen
    assert any(s in (500, 503) for s in bad), seen


def test_nginx_embedded_crash_loop_answers_503_then_recovers_when_the_app_is_fixed(lch):
    """While the back-off holds, the app answers 503 with Retry-After (the worker lives); once the
    script is fixed, the next import attempt succeeds and the app answers 200, no reload needed.
    mod_wsgi has no back-off: each request retries the import (and kills a process)."""
    d = app_dir(lch, SCRIPTS)
    nginx = nginx_embedded(lch, d, server=f"location /bad {{ wsgi_script {d.script('exit_at_import.py')}; }}",
                           wait=False)
    import requests

    def held_back():
        try:
            r = requests.get(nginx.url("/bad"), timeout=5)
        except requests.RequestException:
            return None  # this request was the retry that killed its worker
        return [r] if r.status_code == 503 else None  # (a 503 Response is falsy)
    (r,) = wait_for(held_back, 10) or [None]
    assert r is not None, "no 503 while the import is held back"
    assert int(r.headers["Retry-After"]) >= 1
    assert "RW-NG061" in nginx.error_log_text()
    d.script("exit_at_import.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'fixed']\n")
    fixed = wait_for(lambda: ok(nginx.url("/bad"), timeout=3), 20, interval=0.2)
    assert fixed, nginx.error_log_text()[-3000:]
    assert requests.get(nginx.url("/bad"), timeout=5).text == "fixed"


def test_nginx_embedded_python_start_that_kills_the_worker_is_held_back(lch):
    """The same when starting Python itself kills the worker: a virtualenv with a .pth file that
    calls os._exit(3) (any code that runs at interpreter start-up could). The
    worker started after such a death does not start Python for a while: embedded locations
    answer 503, nginx's own locations 200; when the wait is over it exits gracefully and the
    next worker tries again: two worker starts per back-off period (1 s, 2 s, 4 s...), so at
    most 6 in 6 s. Without this: the same fork storm as an import."""
    import subprocess
    d = app_dir(lch, SCRIPTS)
    venv = d.path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "exit.pth").write_text("import os; os._exit(3)\n")
    for p in [venv, *venv.rglob("*")]:
        if not p.is_symlink():  # bin/python3 -> /usr/bin/python3: never chmod through it
            p.chmod(0o755 if p.is_dir() or p.parent.name == "bin" else 0o644)
    nginx = nginx_embedded(lch, d, http=f"wsgi_threads 2;\nwsgi_python_home {venv};", wait=False)
    seen = statuses_for(nginx, ["/app/hello", "/static"])
    app, static = seen["/app/hello"], seen["/static"]
    starts = worker_starts(nginx)
    seen = f"{starts} worker starts in 6 s; app: {app}; static: {static}"
    print(seen)
    assert starts <= 6, seen
    assert sum(1 for s in static if s != 200) <= 2, seen
    assert 503 in app, seen
    assert "RW-NG061 starting Python killed worker" in nginx.error_log_text()


def test_apache_embedded_crash_loop_is_contained(lch):
    """Apache embedded, the same two scripts: a request to /bad kills its child (nothing in the
    process can catch os._exit); httpd's parent restarts children at its own pace, and the good
    app and other URLs keep answering. Already true on main. Measured: the /bad client sees the
    connection closed without a response; 3 new children in 6 s (7 in 10 s in the issue), and
    /app/hello waits up to ~1 s for the replacement child but always gets 200."""
    d = app_dir(lch, SCRIPTS)
    apache = apache_site(lch, d, extra=f"WSGIScriptAlias /bad {d.script('exit_at_import.py')}")
    clock = Clock()
    good, bad, pids = [], [], set(children(apache.process.pid))
    first = set(pids)
    while clock() < 6:
        good.append(timed_get(apache.url("/app/hello"), 5)[0])
        pids |= set(children(apache.process.pid))  # the child that served it
        bad.append(timed_get(apache.url("/bad"), 5)[0])
        time.sleep(0.2)
    print(f"Apache embedded crash loop: {len(pids - first)} new children in 6 s; /bad got {set(bad)}")
    assert sum(1 for s in good if s != 200) <= 2, good


@reference
def test_reference_mod_wsgi_daemon_crash_loop(lch):
    """mod_wsgi 4.9 daemon, the same script: the import runs on the first request (lazy), kills
    the daemon, the request gets 500 at once ("Truncated or oversized response headers received
    from daemon process"); the next request waits for the restarted daemon and fails the same way.
    Measured: 500 in ~0.1 s, then 500 in ~1 s per request."""
    d = app_dir(lch, SCRIPTS)
    apache = apache_site(lch, d, "processes=1 threads=2 display-name=%{GROUP}", module="mod_wsgi",
                         script="exit_at_import.py", wait=False)
    results = [timed_get(apache.url("/app/hello")) for _ in range(3)]
    print(f"mod_wsgi daemon crash loop: {results}")
    assert all(s == 500 and t < 5 for s, t in results)


@reference
def test_reference_mod_wsgi_embedded_crash_loop(lch):
    """mod_wsgi 4.9 embedded: each request to the script kills its Apache child; the client sees
    the connection closed, no response. Measured: ConnectionError at once."""
    d = app_dir(lch, SCRIPTS)
    apache = apache_site(lch, d, module="mod_wsgi", script="exit_at_import.py", wait=False)
    results = [timed_get(apache.url("/app/hello")) for _ in range(3)]
    print(f"mod_wsgi embedded crash loop: {results}")
    assert all(s == "ConnectionError" for s, _ in results)


@reference
def test_reference_uwsgi_crash_loop_behind_nginx(lch):
    """Debian's uWSGI 2.0 (--lazy-apps, --master), the same script behind stock nginx. Measured:
    uWSGI's master respawns workers as they die, the request waits in the backlog: no answer in
    12 s (nginx's uwsgi_read_timeout, 60 s, would end it)."""
    d = app_dir(lch, SCRIPTS)
    w = uwsgi_worker(lch, d.script("exit_at_import.py"), processes=1, threads=2)
    time.sleep(1)
    front = lch.front_end("nginx", w)
    status, elapsed = timed_get(front.url("/app/hello"))
    print(f"uWSGI crash loop: {status} after {elapsed:.1f}s")
    assert status == "ReadTimeout"
