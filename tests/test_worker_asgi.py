"""ASGI in daemon mode behind the other front ends: rwsgi-worker `--interface asgi` behind stock
nginx (`uwsgi_pass`) and Apache (`mod_proxy_uwsgi`), and mod_rwsgi's `WSGIDaemonProcess ...
interface=asgi`. The nginx module's own daemon groups are in test_nginx_module_asgi.py.

The Starlette app (tests/apps/asgi/starlette_app.py) answers JSON, takes an upload in chunks,
streams, and records the client's disconnect; the same assertions hold behind every front end.
"""

import hashlib
import os
import time

import pytest
import requests

from harness.frontends import FRONT_ENDS
from harness.stack import Stack
from test_apache_module_embedded import rwsgi_apache
from test_nginx_module_asgi import wait_until


@pytest.fixture(scope="module", params=FRONT_ENDS)
def stack(request, new_launcher, apps, venv):
    lch = new_launcher(f"worker-asgi-{request.param}")
    worker = lch.worker(apps / "asgi" / "starlette_app.py", callable="app", mount="/app",
                        processes=2, python_home=venv, extra_args=["--interface", "asgi"])
    server = lch.front_end(request.param, worker)
    stack = Stack(request.param, server, "/app", logs=[worker.log_text])
    wait_until(lambda: stack.get("/").status_code == 200, "the worker")
    yield stack
    lch.stop_all()


@pytest.fixture(scope="module")
def apache_group(new_launcher, apps, venv, state_dir):
    lch = new_launcher("apache-daemon-asgi")
    # httpd starts with a small fixed environment: a wrapper gives the app its state dir.
    d = lch._prefix("apps")
    d.chmod(0o755)
    script = d / "starlette_wrapper.py"
    script.write_text(
        "import os, runpy\n"
        f"os.environ['RWSGI_TEST_STATE_DIR'] = {str(state_dir)!r}\n"
        f"app = runpy.run_path({str(apps / 'asgi' / 'starlette_app.py')!r})['app']\n")
    script.chmod(0o644)
    config = f"""
        WSGIScriptAlias /app {script}
        <Directory {script.parent}>
            Require all granted
        </Directory>
        WSGIDaemonProcess asgi processes=1 interface=asgi python-home={venv}
        WSGIProcessGroup asgi
        WSGICallableObject app
    """
    apache = rwsgi_apache(lch, config)
    stack = Stack("apache-daemon-asgi", apache, "/app",
                  logs=[apache.error_log_text, apache.process.log_text])
    wait_until(lambda: stack.get("/").status_code == 200, "the ASGI group")
    yield stack
    lch.stop_all()


def check_app(stack):
    data = stack.get("/?x=1").json()
    assert data["path"] == "/app/" and data["root_path"] == "/app"
    assert data["query"] == {"x": "1"}
    assert data["started_by"] == data["pid"], "lifespan startup ran in the serving process"
    payload = os.urandom(2 * 1024 * 1024 + 5)
    got = stack.post("/upload", data=payload).json()
    assert got["size"] == len(payload)
    assert got["sha256"] == hashlib.sha256(payload).hexdigest()
    r = stack.get("/big?size=5000000")
    assert r.status_code == 200 and len(r.content) == 5_000_000
    r = stack.get("/file")
    assert r.content == bytes(range(256)) * 4096
    assert stack.get("/boom").status_code == 500


def test_worker_behind_stock_front_ends(stack):
    check_app(stack)
    start = time.monotonic()
    with requests.get(stack.url("/stream?n=4&delay=0.3"), stream=True, timeout=10) as r:
        lines = r.iter_lines()
        next(lines)
        first_at = time.monotonic() - start
        assert len(list(lines)) == 3
    assert first_at < 0.9, f"first line after {first_at:.2f}s: not streamed"


def test_apache_daemon_group_interface_asgi(apache_group):
    check_app(apache_group)


def test_websocket_through_stock_uwsgi_pass(stack):
    """nginx's stock uwsgi module turns a 101 into its upgrade tunnel when the client asked to
    upgrade, so the worker's WebSockets work behind plain `uwsgi_pass` too. Apache's
    mod_proxy_uwsgi has no tunnel: the handshake is not answered with a 101 there."""
    from websockets.exceptions import InvalidHandshake
    from websockets.sync.client import connect
    url = f"ws://127.0.0.1:{stack.port}/app/ws"
    if stack.kind == "apache":
        # httpd drops the 101's Connection header: the client refuses the handshake.
        with pytest.raises(InvalidHandshake):
            connect(url, open_timeout=5)
        return
    with connect(url) as ws:
        for i in range(1000):
            ws.send(f"m{i}")
            assert ws.recv(timeout=5) == f"m{i}"


def test_apache_group_refuses_websocket_handshakes(apache_group):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect
    with pytest.raises(InvalidStatus) as e:
        connect(f"ws://127.0.0.1:{apache_group.port}/app/ws", open_timeout=5)
    assert e.value.response.status_code == 501
    assert "RW-AP019" in apache_group.wait_log("RW-AP019")
