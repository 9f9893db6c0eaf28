"""Client connections spread over the nginx workers that host Python (src/embedded/balance.rs).

With nginx's defaults on Linux (`accept_mutex off`, so `EPOLLEXCLUSIVE`), the kernel wakes the
first worker in line of those waiting, and nginx moves a worker to the back only every 16th
accept. A worker that hosts Python waits in its event loop even while its Python threads are
busy, so clients arriving one after another all landed on one worker: 15 of 16 connections, and
half the machine served them (bench/results/2026-12-04-connection-split.md); a burst arriving
at once went to whichever worker ran first. The tests open keep-alive connections the way a
connection pool or wrk fills up (one after another, or all at once) and ask each which worker
it reached. Before the change: 15/1 for the first, 16/0 or 15/1 in most bursts.

mod_wsgi: httpd's children accept only while they have an idle thread, so a busy child leaves new
connections to the others; nginx's own balancing counts connections, not busy Python threads.
"""

import os
import signal
import socket
import time
from collections import Counter

import pytest

from test_nginx_module_embedded import app_dir, rwsgi_nginx, worker_pids, write_app

APP = """
    import os

    def application(environ, start_response):
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
"""

ASGI_APP = """
    import os

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = str(os.getpid()).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
"""


def worker_of(sock: socket.socket, path: str) -> int:
    """Sends one keep-alive GET on `sock` and returns the pid in the answer."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), head
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(4096)
    return int(body)


def spread(nginx, path: str, connections: int = 16, gap: float = 0.005,
           hold: float = 0.0) -> Counter:
    """Opens `connections` connections, `gap` seconds apart, asks each which worker holds it,
    and closes them after `hold` seconds; {pid: connections}."""
    socks = []
    try:
        for _ in range(connections):
            socks.append(socket.create_connection(("127.0.0.1", nginx.port), timeout=20))
            if gap:
                time.sleep(gap)
        counts = Counter(worker_of(s, path) for s in socks)
        time.sleep(hold)
        return counts
    finally:
        for s in socks:
            s.close()


def warm(nginx, path: str, workers: int, hold: float = 0.0):
    """Waits until every worker answers (Python started in each), so the bursts measure only
    the accept order; `hold` is how long the connections stay open (what the workers learn
    about their clients' connections)."""
    seen = set()
    deadline = time.monotonic() + 30
    while len(seen) < workers and time.monotonic() < deadline:
        seen.update(spread(nginx, path, connections=8, gap=0, hold=hold))
    assert len(seen) == workers, seen


def assert_even(counts: Counter, workers: int, connections: int = 16):
    # An even split is 8/8; nginx's every-16th reorder alone gives 15/1. Allow a few
    # connections of skew for a worker that was not waiting at that moment (a loaded CI machine).
    assert len(counts) == workers and min(counts.values()) >= connections // workers - 3, counts


def pid_app(launcher, kind: str) -> str:
    """The location of the pid app as WSGI or ASGI."""
    d = app_dir(launcher)
    if kind == "wsgi":
        return f"location /pid {{ wsgi_script {write_app(d, 'pid.py', APP)}; }}"
    app = write_app(d, "pid_asgi.py", ASGI_APP)
    return f"location /pid {{ wsgi_script {app}; wsgi_callable app; wsgi_interface asgi; }}"


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_connections_arriving_one_after_another_take_turns(launcher, kind):
    # Keep-alive clients arriving 5 ms apart: each accept sends the worker to the back of the
    # kernel's line, so the next connection goes to the other one.
    nginx = rwsgi_nginx(launcher, pid_app(launcher, kind), "wsgi_threads 4;", workers=2)
    warm(nginx, "/pid", 2, hold=0.3)
    for _ in range(3):
        time.sleep(0.2)
        assert_even(spread(nginx, "/pid", hold=0.3), 2)


def test_a_burst_of_long_lived_connections_is_shared(launcher):
    # Connections held open (keep-alive clients): a worker two ahead of the other stops
    # accepting until it catches up, so a burst arriving at once is shared too.
    nginx = rwsgi_nginx(launcher, pid_app(launcher, "wsgi"), "wsgi_threads 4;", workers=2)
    warm(nginx, "/pid", 2, hold=0.3)
    for _ in range(3):
        time.sleep(0.2)  # until nginx has seen the last burst's connections close
        assert_even(spread(nginx, "/pid", gap=0, hold=0.3), 2)


def test_three_workers_share_a_burst(launcher):
    app = write_app(app_dir(launcher), "pid.py", APP)
    nginx = rwsgi_nginx(launcher, f"location /pid {{ wsgi_script {app}; }}", "wsgi_threads 2;",
                        workers=3)
    warm(nginx, "/pid", 3, hold=0.3)
    time.sleep(0.2)
    counts = spread(nginx, "/pid", connections=18, gap=0, hold=0.3)
    assert len(counts) == 3 and min(counts.values()) >= 3, counts


def test_with_timer_resolution_workers_still_take_turns(launcher):
    # timer_resolution makes nginx run timers only at its period, so workers never pause (a
    # 1 ms look could take 10 ms); turns alone still spread arrivals a few ms apart.
    nginx = rwsgi_nginx(launcher, pid_app(launcher, "wsgi"), "wsgi_threads 4;", workers=2,
                        main="timer_resolution 10ms;")
    warm(nginx, "/pid", 2, hold=0.3)
    time.sleep(0.2)
    assert_even(spread(nginx, "/pid", hold=0.3), 2)


def test_reuseport_and_accept_mutex_configs_serve(launcher):
    # Neither shares one socket with EPOLLEXCLUSIVE, so balance.rs leaves them to nginx.
    app = write_app(app_dir(launcher), "pid.py", APP)
    for events, listen in (("accept_mutex on;", ""), ("", " reuseport")):
        nginx = rwsgi_nginx(launcher, f"location /pid {{ wsgi_script {app}; }}",
                            "wsgi_threads 2;", workers=2, events=events, listen_extra=listen)
        warm(nginx, "/pid", 2)


SLOW_APP = """
    import os, time

    def application(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            time.sleep(1.5)
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
"""


def test_after_a_reload_the_new_workers_share_a_burst(launcher):
    # The old generation, still finishing slow requests, is not counted: the new workers share
    # a burst between them, the old requests complete, and nothing is logged as an alert (a
    # listening socket deleted from an epoll set it had left would be).
    # mod_wsgi: httpd's graceful restart; its new children accept only with idle threads.
    app = write_app(app_dir(launcher), "slow.py", SLOW_APP)
    nginx = rwsgi_nginx(launcher, f"location / {{ wsgi_script {app}; }}", "wsgi_threads 4;",
                        workers=2)
    warm(nginx, "/pid", 2, hold=0.3)
    old = set(worker_pids(nginx))
    slow = [socket.create_connection(("127.0.0.1", nginx.port), timeout=20) for _ in range(4)]
    for s in slow:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
    time.sleep(0.2)
    nginx.reload()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (set(worker_pids(nginx)) - old):
        time.sleep(0.05)
    new = set(worker_pids(nginx)) - old
    assert len(new) == 2, (old, worker_pids(nginx))
    # Until the old workers have closed their listening sockets and both new ones answer.
    seen = Counter()
    while time.monotonic() < deadline and set(seen) != new:
        seen = spread(nginx, "/pid", connections=8, gap=0, hold=0.3)
    assert set(seen) == new, (seen, new)
    time.sleep(0.2)
    counts = spread(nginx, "/pid", gap=0, hold=0.3)
    assert set(counts) == new, (counts, new)
    assert_even(counts, 2)
    for s in slow:
        assert worker_of(s, "/slow") in old
        s.close()
    assert "[alert]" not in nginx.error_log_text()


def test_a_killed_workers_successor_takes_its_place(launcher):
    # kill -9 leaves the dead worker's count behind; nginx respawns it in the same process slot,
    # and the new worker starts from nothing, so the next burst is shared.
    # mod_wsgi: httpd replaces a killed child; its connections are simply gone.
    app = write_app(app_dir(launcher), "pid.py", APP)
    nginx = rwsgi_nginx(launcher, f"location /pid {{ wsgi_script {app}; }}", "wsgi_threads 4;",
                        workers=2)
    warm(nginx, "/pid", 2, hold=0.3)
    held = []
    for _ in range(12):
        s = socket.create_connection(("127.0.0.1", nginx.port), timeout=20)
        held.append((s, worker_of(s, "/pid")))
    victim = Counter(pid for _, pid in held).most_common(1)[0][0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(set(worker_pids(nginx)) - {victim}) < 2:
        time.sleep(0.05)
    for s, _ in held:
        s.close()
    warm(nginx, "/pid", 2, hold=0.3)
    time.sleep(0.2)
    counts = spread(nginx, "/pid", gap=0, hold=0.3)
    assert victim not in counts
    assert_even(counts, 2)
