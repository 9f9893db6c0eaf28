"""Issue 10's faults for ASGI apps (issue 15): request timeouts, an app whose import kills the
nginx worker, and a request with too many headers for a daemon worker, the way they happen,
against the real nginx and Apache.

Interface (docs/nginx/wsgi_request_timeout.md, wsgi_daemon_process.md, docs/failure-modes.md):
  - `wsgi_request_timeout` applies to `wsgi_interface asgi` locations, and `request-timeout=` /
    `--request-timeout` to `interface=asgi` groups and workers.
  - At the timeout the request's task is cancelled on the loop: 504 if nothing was sent, else the
    response is cut; `RW-PY045` logs where the task waited; the process serves on.
  - A coroutine that blocks the loop in synchronous code cannot be cancelled: when the loop does
    not come back within the grace (a tenth of the timeout, 2-10 s), the request is answered
    without the loop (`RW-PY046`; nginx embedded `RW-NG040`, then the worker exits gracefully,
    `RW-NG042`; a daemon worker `RW043` and is replaced).
  - nginx embedded: an ASGI app whose import kills the worker is held back with the same
    back-off as a WSGI app (`RW-NG061`/`RW-NG062`: 503 with Retry-After).
  - A daemon worker answers 431 to a packet with more vars than it takes (`RW030`).

The peers, for the same faults: mod_wsgi has no ASGI. uvicorn has no request timeout (the task
runs until it ends or the client leaves; behind nginx, `proxy_read_timeout` answers 504 after
60 s while the task keeps running) and takes any number of headers (h11's limit is the header
block's size); a blocking coroutine stalls its whole worker until it returns. granian has no
per-request timeout by design (emmett-framework/granian#177, wontfix). Neither imports in a
process that a crash at import would take down with other apps: each runs its own workers, and
uvicorn's and granian's supervisors respawn a worker that dies at once in a loop.
"""

import socket
import time

import pytest
import requests

from fault_common import (app_dir, apache_logs, apache_site, lch, nginx_daemon, nginx_embedded,  # noqa: F401
                          nginx_workers, ok, timed_get)
from harness.faults import alive, wait_for
from test_fault_crashloop import statuses_for, worker_starts
from test_fault_too_large import get as raw_get, many_headers

SCRIPTS = ("asgi_faults.py", "exit_at_import.py")
WHERE = 'asgi_faults.py", line'


def asgi_location(d, timeout="2s"):
    return f"""
        location /app/ {{
            wsgi_interface asgi;
            wsgi_script {d.script('asgi_faults.py')};
            wsgi_callable app;
            wsgi_request_timeout {timeout};
        }}"""


def nginx_embedded_asgi(lch, d, timeout="2s", extra=""):
    """nginx with the ASGI fault app at /app/ on its worker's loop (one worker), `/static`
    nginx's own."""
    server = f"""
        {asgi_location(d, timeout)}
        location /static {{ return 200 "static\\n"; }}
        {extra}"""
    from test_nginx_module_embedded import rwsgi_nginx
    nginx = rwsgi_nginx(lch, server, "")
    assert wait_for(lambda: ok(nginx.url("/app/hello")), 20), nginx.error_log_text()[-2000:]
    return nginx


def nginx_daemon_asgi(lch, d, options="processes=1 interface=asgi request-timeout=2"):
    return nginx_daemon(lch, d, options, script="asgi_faults.py",
                        server="wsgi_callable app;", http="")


def pid_of(url) -> int:
    return requests.get(url, timeout=10).json()["pid"]


def times_out_in_place(server, path, log_text):
    """GET `path`: 504 within 6 s (the timeout is 2 s), RW-PY045 logged, and the same process
    serves the next request: only the task was cancelled."""
    before = pid_of(server.url("/app/pid"))
    status, took = timed_get(server.url(path), 10)
    print(f"{path}: {status} after {took:.1f}s")
    assert status == 504 and took < 6, (status, took)
    assert "RW-PY045" in log_text()
    assert pid_of(server.url("/app/pid")) == before


def read_stream(url, timeout=15):
    """(status, bytes read, how it ended: "complete" or the exception's class name)."""
    got = b""
    try:
        with requests.get(url, stream=True, timeout=timeout) as r:
            for chunk in r.iter_content(None):
                got += chunk
            return r.status_code, got, "complete"
    except requests.RequestException as e:
        return None, got, type(e).__name__


# --- request timeout: the task is cancelled ----------------------------------------------------

def test_nginx_embedded_asgi_request_timeout_cancels_the_task_and_answers_504(lch):
    """`await asyncio.sleep(600)` with `wsgi_request_timeout 2s`: 504 in about 2 s, the line says
    where the task waited, and the same worker (pid) serves the next request: only the task was
    cancelled. On main before: `nginx -t` refused the directive beside `wsgi_interface asgi`, and
    without it the request waited 600 s. uvicorn / granian: no request timeout (module doc)."""
    d = app_dir(lch, SCRIPTS)
    nginx = nginx_embedded_asgi(lch, d)
    times_out_in_place(nginx, "/app/sleep?s=600", nginx.error_log_text)
    log = nginx.error_log_text()
    assert "RW-PY045 ASGI request GET /app/sleep?s=600 passed its request timeout" in log, log[-2000:]
    assert WHERE in log, "the task's stack is not logged"
    # An app that catches the CancelledError and goes on is answered all the same.
    times_out_in_place(nginx, "/app/swallow?s=600", nginx.error_log_text)


def test_nginx_embedded_asgi_started_response_past_its_timeout_is_cut(lch):
    """A streaming response that stops after its first chunk: at the timeout the client sees the
    response fail (chunked encoding never terminated), never a short body taken as complete."""
    d = app_dir(lch, SCRIPTS)
    nginx = nginx_embedded_asgi(lch, d)
    status, got, end = read_stream(nginx.url("/app/stream"))
    assert got == b"first chunk\n" and end != "complete", (status, got, end)
    assert "its response is cut" in nginx.error_log_text()
    assert timed_get(nginx.url("/app/hello"), 5)[0] == 200


def test_nginx_daemon_asgi_request_timeout_answers_504_and_worker_survives(lch):
    """The same in a daemon group with `interface=asgi request-timeout=2` (on main before: the
    option was ignored for ASGI groups and the request waited 600 s)."""
    d = app_dir(lch, SCRIPTS)
    nginx = nginx_daemon_asgi(lch, d)
    times_out_in_place(nginx, "/app/sleep?s=600", nginx.error_log_text)
    status, got, end = read_stream(nginx.url("/app/stream"))
    assert got == b"first chunk\n" and end != "complete", (status, got, end)


def test_apache_daemon_asgi_request_timeout_answers_504(lch):
    """Apache's `WSGIDaemonProcess ... interface=asgi request-timeout=2`: the worker answers 504,
    the GET runs once and the worker serves on."""
    d = app_dir(lch, SCRIPTS)
    apache = apache_site(lch, d, "processes=1 interface=asgi request-timeout=2", script="asgi_faults.py",
                         extra="WSGICallableObject app")
    times_out_in_place(apache, "/app/sleep?s=600", lambda: apache_logs(apache))


# --- request timeout: a coroutine blocks the loop ---------------------------------------------

def test_nginx_embedded_asgi_blocked_loop_answers_504_and_worker_is_replaced(lch):
    """`time.sleep(600)` inside the coroutine blocks the worker's asyncio loop: no cancel reaches
    it. After the grace (2 s) nginx's event loop answers 504 itself (RW-PY046, RW-NG040), the
    worker exits gracefully (RW-NG042) and a new one serves; the old one does not linger.
    uvicorn: the worker stalls (every request on it) until the sleep returns."""
    d = app_dir(lch, SCRIPTS)
    nginx = nginx_embedded_asgi(lch, d)
    (old,) = nginx_workers(nginx)
    status, took = timed_get(nginx.url("/app/block?s=600"), 12)
    print(f"block: {status} after {took:.1f}s")
    assert status == 504 and took < 9, (status, took)
    log = nginx.error_log_text()
    assert "RW-PY046" in log and "RW-NG040 a coroutine blocks the asyncio loop" in log, log[-2000:]
    assert wait_for(lambda: "RW-NG042" in nginx.error_log_text(), 5)
    assert wait_for(lambda: timed_get(nginx.url("/app/hello"), 2)[0] == 200, 15)
    assert old not in nginx_workers(nginx)
    assert wait_for(lambda: not alive(old), 20), "the worker with the blocked loop never exits"


def test_nginx_daemon_asgi_blocked_loop_answers_504_and_worker_is_replaced(lch):
    """The daemon worker's loop blocked: pyhost's monitor thread writes the 504 on the request's
    connection (RW-PY046, RW043), the worker retires and the supervisor starts a new one, which
    serves; the old one exits."""
    d = app_dir(lch, SCRIPTS)
    nginx = nginx_daemon_asgi(lch, d, "processes=1 interface=asgi request-timeout=2 graceful-timeout=3")
    old = pid_of(nginx.url("/app/pid"))
    status, took = timed_get(nginx.url("/app/block?s=600"), 12)
    print(f"block: {status} after {took:.1f}s")
    assert status == 504 and took < 9, (status, took)
    log = nginx.error_log_text()
    assert "RW-PY046" in log and "RW043" in log, log[-2000:]
    assert wait_for(lambda: ok(nginx.url("/app/hello"), 2), 15)
    assert pid_of(nginx.url("/app/pid")) != old
    assert wait_for(lambda: not alive(old), 20), "the worker with the blocked loop never exits"


# --- import that kills the nginx worker ---------------------------------------------------------

def test_nginx_embedded_asgi_crash_at_import_is_not_a_fork_storm(lch):
    """An ASGI app whose import calls `os._exit(3)` (the asyncio loop imports it when the worker
    starts): the next worker holds that app back (RW-NG061), answers it 503 with Retry-After, and
    serves nginx's own locations; at most 4 worker starts in 6 s. Once the script is fixed, the
    next try imports it and it answers 200, no reload. On main before: a fork storm (the WSGI
    path had the back-off, the ASGI one had none)."""
    d = app_dir(lch, SCRIPTS)
    server = f"""
        location /bad {{
            wsgi_interface asgi;
            wsgi_script {d.script('exit_at_import.py')};
            wsgi_callable app;
        }}
        location /static {{ return 200 "static\\n"; }}"""
    from test_nginx_module_embedded import rwsgi_nginx
    nginx = rwsgi_nginx(lch, server, "")
    seen = statuses_for(nginx, ["/static", "/bad"])
    starts = worker_starts(nginx)
    summary = f"{starts} worker starts in 6 s; static: {seen['/static']}; bad: {seen['/bad']}"
    print(summary)
    assert starts <= 4, summary
    assert sum(1 for s in seen["/static"] if s != 200) <= 2, summary
    assert 503 in seen["/bad"], summary
    assert "RW-NG061 importing" in nginx.error_log_text()

    def held_back():
        try:
            r = requests.get(nginx.url("/bad"), timeout=5)
        except requests.RequestException:
            return None  # the retry that killed its worker
        return [r] if r.status_code == 503 else None
    (r,) = wait_for(held_back, 10) or [None]
    assert r is not None and int(r.headers["Retry-After"]) >= 1
    d.script("exit_at_import.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'fixed'})\n")
    assert wait_for(lambda: ok(nginx.url("/bad"), timeout=3), 90, interval=0.5), \
        nginx.error_log_text()[-3000:]
    assert requests.get(nginx.url("/bad"), timeout=5).text == "fixed"


# --- too many headers for a daemon worker -------------------------------------------------------

@pytest.mark.parametrize("headers", [600])
def test_asgi_worker_answers_431_to_too_many_headers(lch, headers):
    """rwsgi-worker `--interface asgi` behind stock nginx (`uwsgi_pass` sends the 600 headers:
    our own front ends refuse them before sending, RW-NG021/RW-AP015): the worker answers 431
    (RW030) without running the app, as its WSGI threads do; the connection then serves the
    next request normally. On main before: the ASGI worker closed the connection unanswered
    (502 from nginx). uvicorn: 200 (no count limit); granian: 200."""
    d = app_dir(lch, SCRIPTS)
    w = lch.worker(d.script("asgi_faults.py"), callable="app", mount="/app", processes=1,
                   extra_args=["--interface", "asgi"])
    nginx = lch.front_end("nginx", w, http="large_client_header_buffers 4 128k;")
    assert wait_for(lambda: ok(nginx.url("/app/hello")), 20)
    r = raw_get(nginx.port, "/app/headers", many_headers())
    assert r.status == 431, r.status_line
    assert "RW030 answering 431" in w.log_text()
    assert raw_get(nginx.port, "/app/headers", {"X-A": "1"}).status == 200
