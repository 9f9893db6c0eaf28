"""WebSockets through the real nginx: the Starlette app's echo endpoint
(tests/apps/asgi/starlette_app.py), embedded (`wsgi_interface asgi`: nginx does the upgrade,
the module parses the frames) and in an `interface=asgi` daemon group (nginx's upgrade tunnel
carries the frames to the worker, which parses them). The client is the `websockets` package.
"""

import contextlib
import os
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from test_nginx_module_asgi import (
    MODES, embedded_asgi, pid_alive, starlette_stacks, wait_records, wait_until,
)


@pytest.fixture(scope="module", params=MODES)
def starlette_stack(request, new_launcher, apps, venv, state_dir):
    """test_nginx_module_asgi's Starlette stacks (embedded and daemon), under our own name."""
    yield from starlette_stacks(request, new_launcher, apps, venv, state_dir, name="ws")


def ws_url(stack, path):
    return f"ws://127.0.0.1:{stack.port}/app{path}"


def test_ten_thousand_messages_echo_in_order(starlette_stack):
    with connect(ws_url(starlette_stack, "/ws"), max_size=None) as ws:
        for i in range(10_000):
            ws.send(f"message {i}")
            assert ws.recv(timeout=10) == f"message {i}"
        # Binary, and sizes across the 16-bit and 64-bit length forms.
        for size in (0, 125, 126, 65535, 65536, 1 << 20):
            data = os.urandom(size)
            ws.send(data)
            assert ws.recv(timeout=10) == data


def test_pipelined_messages_and_unicode(starlette_stack):
    with connect(ws_url(starlette_stack, "/ws")) as ws:
        texts = [f"héllo wörld {i} ✓" for i in range(2000)]
        sender = threading.Thread(target=lambda: [ws.send(t) for t in texts])
        sender.start()
        got = [ws.recv(timeout=10) for _ in texts]
        sender.join()
        assert got == texts


def test_client_close_reaches_the_app(starlette_stack, state_dir):
    token = f"cc{time.monotonic_ns()}"
    with connect(ws_url(starlette_stack, f"/ws?token={token}")) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
        ws.close(code=4321, reason="bye")
    assert wait_records(state_dir, "ws-closed", token) == ["4321"]


def test_client_vanishing_is_1006_for_the_app(starlette_stack, state_dir):
    token = f"gone{time.monotonic_ns()}"
    with connect(ws_url(starlette_stack, f"/ws?token={token}")) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
        ws.socket.shutdown(2)   # no close frame: the TCP connection just ends
    assert wait_records(state_dir, "ws-closed", token) == ["1006"]


def test_ping_is_answered(starlette_stack):
    with connect(ws_url(starlette_stack, "/ws")) as ws:
        pong = ws.ping(b"are you there")
        assert pong.wait(timeout=5)


def test_http_routes_still_answer_next_to_websockets(starlette_stack):
    with connect(ws_url(starlette_stack, "/ws")) as ws:
        ws.send("x")
        assert ws.recv(timeout=5) == "x"
        assert starlette_stack.get("/").status_code == 200


def test_a_route_without_websocket_denies_the_handshake(starlette_stack):
    """Starlette closes a handshake it has no WebSocket route for before accepting: 403."""
    with pytest.raises(InvalidStatus) as e:
        connect(ws_url(starlette_stack, "/"))
    assert e.value.response.status_code == 403


def children(pid):
    import subprocess
    out = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(pid)],
                         capture_output=True, text=True).stdout
    return [(int(p), c.strip()) for p, c in (line.split(None, 1) for line in out.splitlines())]


def test_reload_closes_open_websockets_with_1001_and_serves_new_ones(
        new_launcher, apps, venv, state_dir):
    """A reload while WebSockets are open (embedded: `nginx -s reload`; daemon: the group's
    rolling restart, SIGHUP): each open one is closed cleanly with 1001 (going away), a new
    one reaches the new generation, and the old process exits (no orphan)."""
    for mode in MODES:
        lch, stack = embedded_asgi(new_launcher, state_dir, "ws-reload",
                                   apps / "asgi" / "starlette_app.py", venv, mode=mode)
        try:
            old_pid = stack.get("/").json()["pid"]
            exits = contextlib.ExitStack()
            open_ws = [exits.enter_context(connect(ws_url(stack, "/ws"))) for _ in range(3)]
            for ws in open_ws:
                ws.send("before")
                assert ws.recv(timeout=5) == "before"
            if mode == "embedded":
                stack.server.reload()
            else:
                (sup,) = [p for p, c in children(stack.server.process.pid) if c.startswith("wsgi:")]
                os.kill(sup, 1)
            for ws in open_ws:
                with pytest.raises(ConnectionClosed) as e:
                    ws.recv(timeout=15)
                assert e.value.rcvd is not None and e.value.rcvd.code == 1001, mode
            exits.close()
            wait_until(lambda: stack.get("/").json()["pid"] != old_pid, "the new generation")
            with connect(ws_url(stack, "/ws")) as ws:
                ws.send("after")
                assert ws.recv(timeout=5) == "after"
            wait_until(lambda: not pid_alive(old_pid), f"the old {mode} process to exit")
        finally:
            lch.stop_all()
