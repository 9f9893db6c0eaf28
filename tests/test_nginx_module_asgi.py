"""ASGI apps in ngx_http_wsgi_module through the real nginx: Starlette, FastAPI and Django
(ASGI) from build/venv, embedded (`wsgi_interface asgi;`, the worker's asyncio loop).

What is checked: the apps answer (JSON, bodies, streaming, files through sendfile, errors as
500 with the traceback in nginx's error log), lifespan runs once per worker before the first
request and shuts down at stop/reload, a client that goes away reaches the app as
http.disconnect, and the event loop of nginx keeps serving while the app sleeps.
"""

import hashlib
import os
import socket
import time

import pytest
import requests

from harness.stack import Stack
from test_nginx_module_embedded import rwsgi_nginx


MODES = ["embedded", "daemon"]


def embedded_asgi(new_launcher, state_dir, name, script, venv, callable_="app", python_path=(),
                  workers=1, mode="embedded"):
    """nginx serving `script` at /app as ASGI: in the worker's own loop (`wsgi_interface
    asgi`), or in a daemon group with `interface=asgi` (one process, its loop driving the
    sockets)."""
    lch = new_launcher(f"nginx-asgi-{name}-{mode}")
    http = f"wsgi_python_home {venv};\n"
    for p in python_path:
        http += f"wsgi_python_path {p};\n"
    where = "wsgi_interface asgi;"
    if mode == "daemon":
        http += "wsgi_daemon_process g interface=asgi graceful-timeout=10;\n"
        where = "wsgi_process_group g;"
    server = f"""
        client_max_body_size 64m;
        location /app {{
            {where}
            wsgi_script {script};
            wsgi_callable {callable_};
        }}
        location /static {{ return 200 "static\\n"; }}
    """
    # The group's workers inherit the nginx master's environment (the `env` directive is for
    # nginx's own workers): the state dir is put there for the start only, so that it does not
    # leak into the servers later tests start.
    saved = os.environ.pop("RWSGI_TEST_STATE_DIR", None)
    if mode == "daemon" and state_dir is not None:
        os.environ["RWSGI_TEST_STATE_DIR"] = str(state_dir)
    try:
        nginx = rwsgi_nginx(lch, server, http, workers=workers, state_dir=state_dir)
    finally:
        os.environ.pop("RWSGI_TEST_STATE_DIR", None)
        if saved is not None:
            os.environ["RWSGI_TEST_STATE_DIR"] = saved
    stack = Stack(f"nginx-{mode}-asgi", nginx, "/app", logs=[nginx.error_log_text])
    if mode == "daemon":
        wait_until(lambda: ready(stack), "the ASGI daemon group")
    return lch, stack


def ready(stack):
    try:
        return stack.get("/").status_code == 200
    except requests.RequestException:
        return False


def starlette_stacks(request, new_launcher, apps, venv, state_dir, name="starlette"):
    """The Starlette app in the mode `request.param` names (a fixture body other modules
    reuse under their own launcher name)."""
    lch, stack = embedded_asgi(new_launcher, state_dir, name,
                               apps / "asgi" / "starlette_app.py", venv, mode=request.param)
    yield stack
    lch.stop_all()


@pytest.fixture(scope="module", params=MODES)
def starlette_stack(request, new_launcher, apps, venv, state_dir):
    yield from starlette_stacks(request, new_launcher, apps, venv, state_dir)


def records(state_dir, kind, token):
    path = state_dir / f"asgi-{kind}-{token}"
    return path.read_text().splitlines() if path.exists() else []


def wait_records(state_dir, kind, token, n=1, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = records(state_dir, kind, token)
        if len(got) >= n:
            return got
        time.sleep(0.05)
    raise AssertionError(f"no {kind}/{token} record after {timeout}s")


# ---- Starlette -----------------------------------------------------------------------------

def test_starlette_json_lifespan_state_and_scope(starlette_stack):
    r = starlette_stack.get("/?a=1")
    assert r.status_code == 200, starlette_stack.log_text()[-3000:]
    data = r.json()
    assert data["message"] == "hello"
    assert data["path"] == "/app/" and data["root_path"] == "/app"
    assert data["query"] == {"a": "1"}
    assert data["client"] == "127.0.0.1"
    # The lifespan ran in this worker, on the loop that serves the request (uvloop is installed).
    assert data["started_by"] == data["pid"]
    assert data["loop"] == "uvloop"
    assert data["http_version"] == "1.1"
    assert r.headers["content-type"] == "application/json"
    if starlette_stack.kind == "nginx-embedded-asgi":
        assert "RW-NG006" in starlette_stack.log_text()
    else:
        assert "RW022 worker ready: ASGI, one event loop" in starlette_stack.log_text()


def test_starlette_upload_arrives_in_chunks(starlette_stack):
    payload = os.urandom(3 * 1024 * 1024 + 17)
    r = starlette_stack.post("/upload", data=payload)
    assert r.status_code == 200
    got = r.json()
    assert got["size"] == len(payload)
    assert got["sha256"] == hashlib.sha256(payload).hexdigest()
    # 64 KiB per http.request message: never the whole body at once.
    assert got["chunks"] >= len(payload) // 65536


def test_starlette_streams_as_produced(starlette_stack):
    start = time.monotonic()
    with requests.get(starlette_stack.url("/stream?n=5&delay=0.3"), stream=True, timeout=10) as r:
        lines = r.iter_lines()
        first = next(lines)
        first_at = time.monotonic() - start
        rest = list(lines)
    assert first == b"line 0" and len(rest) == 4
    assert first_at < 0.6 * 4, f"first line after {first_at:.2f}s: not streamed"


def test_starlette_large_streamed_body(starlette_stack):
    r = starlette_stack.get("/big?size=10485760")
    assert r.status_code == 200 and len(r.content) == 10485760


def test_starlette_file_response_is_sent_whole(starlette_stack):
    r = starlette_stack.get("/file")
    assert r.status_code == 200
    assert r.content == bytes(range(256)) * 4096
    assert r.headers["content-length"] == str(256 * 4096)


def test_starlette_exception_is_500_with_traceback(starlette_stack):
    r = starlette_stack.get("/boom")
    assert r.status_code == 500
    text = starlette_stack.wait_log("boom from starlette")
    assert "RuntimeError" in text


def test_event_loop_serves_while_the_app_sleeps(starlette_stack):
    """200 concurrent 0.5 s sleeps on one worker, one asyncio loop: all done in about 0.5 s,
    and a static location answers meanwhile (nginx never waits for Python)."""
    import concurrent.futures as cf
    with cf.ThreadPoolExecutor(64) as pool:
        start = time.monotonic()
        futs = [pool.submit(starlette_stack.get, "/sleep?s=0.5") for _ in range(200)]
        static = requests.get(starlette_stack.server.url("/static"), timeout=5)
        results = [f.result() for f in futs]
        elapsed = time.monotonic() - start
    assert static.status_code == 200
    assert all(r.status_code == 200 and r.text == "slept" for r in results)
    # Not a timing assertion on speed: 200 sleeps of 0.5 s in sequence would take 100 s.
    assert elapsed < 30


def test_client_disconnect_reaches_the_app(starlette_stack, state_dir):
    """uvicorn test_early_disconnect, through nginx: the client of an endless event stream goes
    away; nginx notices (read event) and the app's receive() says http.disconnect, which ends
    Starlette's StreamingResponse (its finally: records it)."""
    token = f"sse-{time.monotonic_ns()}"
    s = socket.create_connection(("127.0.0.1", starlette_stack.port), timeout=5)
    s.sendall(f"GET /app/events?token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    got = s.recv(4096)
    assert b"200 OK" in got and b"text/event-stream" in got
    s.close()
    wait_records(state_dir, "disconnect", token)


# ---- FastAPI -------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=MODES)
def fastapi_stack(request, new_launcher, apps, venv, state_dir):
    lch, stack = embedded_asgi(new_launcher, state_dir, "fastapi",
                               apps / "asgi" / "fastapi_app.py", venv, mode=request.param)
    yield stack
    lch.stop_all()


def test_fastapi_routes_validation_and_body(fastapi_stack, state_dir):
    assert fastapi_stack.get("/").json()["hello"] == "fastapi"
    assert fastapi_stack.get("/items/7?q=x&limit=3").json() == {"item_id": 7, "q": "x", "limit": 3}
    r = fastapi_stack.get("/items/seven")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "item_id"]
    name = f"widget{time.monotonic_ns()}"
    r = fastapi_stack.post("/items", json={"name": name, "price": 2.5, "tags": ["a"]})
    assert r.status_code == 201 and r.json()["created"] == name
    assert fastapi_stack.post("/items", json={"name": name, "price": 1}).status_code == 409
    # The background task runs after the response, on the same loop.
    wait_records(state_dir, "fastapi-bg", name)
    assert fastapi_stack.get("/nowhere").status_code == 404


# ---- Django (ASGI) -------------------------------------------------------------------------

import test_frameworks as _frameworks  # noqa: E402

# All of the Django suite but streaming: under ASGI, Django reads a StreamingHttpResponse's
# synchronous generator to the end before sending it (its warning says so), whatever the server.
for _name in dir(_frameworks):
    if _name.startswith("test_django") and _name != "test_django_streamed_response":
        globals()[_name] = getattr(_frameworks, _name)


@pytest.fixture(scope="module", params=MODES)
def django_stack(request, new_launcher, apps, venv, state_dir):
    project = apps / "django_project"
    # No state dir: Django's SQLite file there may belong to another user by now (rwsgi-worker
    # runs as root in other test files); its default, like the WSGI Django stacks' one.
    lch, stack = embedded_asgi(new_launcher, None, "django",
                               project / "testsite" / "asgi.py", venv,
                               callable_="application", python_path=[project], mode=request.param)
    yield stack
    lch.stop_all()


def test_django_without_lifespan_is_served_and_says_so(django_stack):
    assert django_stack.get("/").status_code == 200
    text = django_stack.wait_log("RW-PY012")
    assert "not lifespan" in text


# ---- Lifespan and reload -------------------------------------------------------------------

def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def wait_until(cond, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_reload_during_streaming_lifespan_per_generation(launcher_fn, apps, venv, state_dir):
    """A reload while a response streams: the old worker finishes it whole, then runs its
    lifespan shutdown and exits (no orphan); the new worker ran its startup before serving and
    serves new requests; nginx's stop runs the new worker's shutdown (lifespan spec: once per
    loop)."""
    lch, stack = embedded_asgi(lambda name: launcher_fn, state_dir, "reload",
                               apps / "asgi" / "starlette_app.py", venv)
    old_pid = stack.get("/").json()["pid"]
    assert str(old_pid) in records(state_dir, "lifespan", "startup")
    streamed = {}

    def stream():
        with requests.get(stack.url("/stream?n=10&delay=0.2"), stream=True, timeout=30) as r:
            streamed["lines"] = list(r.iter_lines())

    t = __import__("threading").Thread(target=stream)
    t.start()
    time.sleep(0.5)
    stack.server.reload()
    wait_until(lambda: stack.get("/").json()["pid"] != old_pid, "the new generation")
    new_pid = stack.get("/").json()["pid"]
    assert str(new_pid) in records(state_dir, "lifespan", "startup")
    t.join(30)
    assert streamed["lines"] == [f"line {i}".encode() for i in range(10)]
    wait_until(lambda: str(old_pid) in records(state_dir, "lifespan", "shutdown"),
               "the old worker's lifespan shutdown")
    wait_until(lambda: not pid_alive(old_pid), "the old worker to exit")
    assert str(new_pid) not in records(state_dir, "lifespan", "shutdown")
    stack.server.stop()
    wait_until(lambda: str(new_pid) in records(state_dir, "lifespan", "shutdown"),
               "the new worker's lifespan shutdown at stop")


def test_failed_startup_answers_503_with_the_reason_logged(launcher_fn, venv, state_dir):
    d = launcher_fn._prefix("apps")
    d.chmod(0o755)
    app = d / "failing.py"
    app.write_text(
        "async def app(scope, receive, send):\n"
        "    assert scope['type'] == 'lifespan'\n"
        "    await receive()\n"
        "    await send({'type': 'lifespan.startup.failed', 'message': 'no database today'})\n")
    app.chmod(0o644)
    lch, stack = embedded_asgi(lambda name: launcher_fn, state_dir, "failing", app, venv)
    r = stack.get("/")
    assert r.status_code == 503
    text = stack.wait_log("RW-PY011")
    assert "no database today" in text


def test_slow_client_pauses_send_and_memory_stays_flat(starlette_stack, state_dir):
    """Back-pressure from the client to the app: a 1 GiB streamed response to a client that
    stops reading. The app's send() waits (the generator stops producing), the worker's memory
    stays flat, and when the client leaves the generator is stopped (http.disconnect)."""
    from test_nginx_module_embedded import rss_kib
    pid = starlette_stack.get("/").json()["pid"]
    before = rss_kib(pid)
    token = f"bp{time.monotonic_ns()}"
    s = socket.create_connection(("127.0.0.1", starlette_stack.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.sendall(f"GET /app/big?size={1 << 30}&token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    s.recv(1024)
    produced = state_dir / f"asgi-produced-{token}"
    time.sleep(2.0)
    first = int(produced.read_text())
    time.sleep(1.0)
    second = int(produced.read_text())
    grown = rss_kib(pid) - before
    print(f"asgi backpressure: produced {second} bytes, worker RSS grew {grown} KiB")
    assert second == first, "the app kept producing while the client was not reading"
    assert second < 32 * 1024 * 1024
    assert grown < 40 * 1024, f"worker RSS grew by {grown} KiB"
    s.close()
    wait_records(state_dir, "stopped", token)
    assert starlette_stack.get("/").status_code == 200
