"""ngx_http_wsgi_module in embedded mode, through Debian's real /usr/sbin/nginx (or the nginx that
RWSGI_NGINX_BIN names, see harness/paths.py).

Each behaviour is one small WSGI app written next to the server's prefix (world-readable: the
workers run as nobody) and one assertion. `rwsgi_nginx()` is the local helper the other
test_nginx_module_* files import: the shared harness's Nginx class does the config and process
handling; this adds `load_module`, the `env` line for the test state dir and the app directory.

Most tests use ONE worker process on purpose: the event-loop claims ("a slow app does not delay
a static location") are only meaningful when both requests land on the same event loop.
"""

import os
import re
import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest
import requests

from harness import paths
from harness.nginx import Nginx

MODULE = paths.NGINX_MODULE


def module_path() -> Path:
    if not MODULE.exists():
        pytest.fail(f"{MODULE} missing: run cargo build --release")
    return paths.public_module(MODULE)


def write_app(directory: Path, name: str, source: str) -> Path:
    path = Path(directory) / name
    path.write_text(textwrap.dedent(source))
    path.chmod(0o644)
    return path


def make_nginx(launcher, server: str, http: str = "", *, workers: int = 1, main: str = "",
               state_dir=None, temp_path=True, module=None, **kw) -> Nginx:
    """An nginx (not started) with the module loaded; `state_dir` is passed to the apps'
    environment through nginx's `env` directive (workers get an empty environment otherwise)."""
    prefix = launcher._prefix("nginx-wsgi")
    env_main = ""
    if state_dir is not None:
        env_main = f"env RWSGI_TEST_STATE_DIR={state_dir};"
    # Daemon mode's temp files for buffered responses stay in the prefix (the default is the
    # system's uwsgi temp directory, which nginx would create and chown as it starts).
    if temp_path and "wsgi_temp_path" not in http:
        http = f"wsgi_temp_path {prefix}/tmp/wsgi;\n{http}"
    nginx = Nginx(prefix, server=server, http=http, load_module=module or module_path(),
                  worker_processes=workers, main=main + "\n" + env_main, **kw)
    return nginx


def rwsgi_nginx(launcher, server: str, http: str = "", **kw) -> Nginx:
    """A started nginx with the module loaded (see make_nginx)."""
    nginx = make_nginx(launcher, server, http, **kw)
    launcher.started.append(nginx)
    nginx.start()
    return nginx


def app_dir(launcher) -> Path:
    d = launcher._prefix("apps")
    d.chmod(0o755)
    return d


HELLO = """
    import os, threading
    def application(environ, start_response):
        body = ("hello pid=%d script=%s path=%s" % (os.getpid(), environ["SCRIPT_NAME"],
                                                    environ["PATH_INFO"])).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
"""

TOOLS = """
    import hashlib, json, os, threading, time

    STATE = os.environ.get("RWSGI_TEST_STATE_DIR", "/tmp")

    def note(name, text):
        with open(os.path.join(STATE, name), "a") as f:
            f.write(text + "\\n")

    def application(environ, start_response):
        path = environ["PATH_INFO"]
        q = dict(p.split("=", 1) for p in environ["QUERY_STRING"].split("&") if "=" in p)
        if path == "/sleep":
            t0 = time.monotonic()
            time.sleep(float(q.get("s", "1")))
            body = json.dumps({"thread": threading.get_ident(), "t0": t0,
                               "t1": time.monotonic()}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        if path == "/echo":
            data = environ["wsgi.input"].read()
            start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                      ("X-Body-Sha256", hashlib.sha256(data).hexdigest()),
                                      ("X-Content-Length", environ.get("CONTENT_LENGTH", "-"))])
            return [data]
        if path == "/stream":
            # Each chunk is produced only after the previous one had time to reach the client.
            gap = float(q.get("gap", "0.4"))
            def gen():
                for i in range(3):
                    yield ("chunk%d %.3f\\n" % (i, time.time())).encode()
                    time.sleep(gap)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return gen()
        if path == "/endless":
            # A huge generator: counts what it produced, records close() (backpressure test).
            token = q["token"]
            size = 64 * 1024
            class Gen:
                def __init__(self):
                    self.n = 0
                def __iter__(self):
                    chunk = b"x" * size
                    while self.n < 16384:          # 1 GiB in 64 KiB chunks
                        self.n += 1
                        if self.n % 16 == 0:
                            with open(os.path.join(STATE, "produced-" + token), "w") as f:
                                f.write(str(self.n * size))
                        yield chunk
                def close(self):
                    note("closed-" + token, str(self.n * size))
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return Gen()
        if path == "/headers":
            start_response("201 Created", [("Content-Type", "text/x-test"),
                                           ("X-One", "1"), ("Set-Cookie", "a=1"),
                                           ("Set-Cookie", "b=2"), ("Server", "app-server")])
            return [b"made"]
        if path == "/status":
            start_response(q.get("line", "299 Custom Reason").replace("+", " "), [])
            return [b""]
        if path == "/file":
            size = int(q.get("size", "1000000"))
            name = os.path.join(STATE, "file-%d" % size)
            if not os.path.exists(name):
                with open(name + ".tmp", "wb") as f:
                    f.write(bytes(range(256)) * (size // 256) + b"z" * (size % 256))
                os.replace(name + ".tmp", name)
            start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                      ("Content-Length", str(size))])
            return environ["wsgi.file_wrapper"](open(name, "rb"), 65536)
        if path == "/environ":
            body = json.dumps({k: v for k, v in environ.items() if isinstance(v, str)}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no route " + path.encode()]
"""


@pytest.fixture(scope="module")
def tools(launcher, state_dir):
    d = app_dir(launcher)
    app = write_app(d, "tools.py", TOOLS)
    server = f"""
        client_max_body_size 64m;
        client_body_buffer_size 16k;
        location /app/ {{ wsgi_script {app}; }}
        location = /exact {{ wsgi_script {app}; }}
        location ~ ^/regex/ {{ wsgi_script {app}; }}
        location /static {{ return 200 "static\\n"; }}
    """
    nginx = rwsgi_nginx(launcher, server, "wsgi_threads 4;", state_dir=state_dir)
    return nginx


def test_module_signature_matches_the_stock_binary():
    """The module was built for exactly this nginx: same version and module signature."""
    binary = paths.NGINX_BIN.read_bytes()
    ours = MODULE.read_bytes()
    sig = re.search(rb"\d+,\d+,\d+,[01]{30,}", binary)
    assert sig, f"no module signature in {paths.NGINX_BIN}"
    assert sig.group(0) in ours, f"signature {sig.group(0)!r} not in {MODULE}"


def test_nginx_t_loads_the_module(launcher):
    nginx = make_nginx(launcher, "location / { return 204; }")
    out = nginx.check_config()
    assert "test is successful" in out


def test_hello(launcher):
    d = app_dir(launcher)
    app = write_app(d, "hello.py", HELLO)
    nginx = rwsgi_nginx(launcher, f"location /hello {{ wsgi_script {app}; }}")
    r = requests.get(nginx.url("/hello/world"), timeout=10)
    assert r.status_code == 200, nginx.error_log_text()
    assert r.text.startswith("hello pid=")
    assert "script=/hello path=/world" in r.text
    assert r.headers["Content-Length"] == str(len(r.content))
    assert r.headers["Content-Type"] == "text/plain"
    # The app runs inside an nginx worker process, not in a separate daemon.
    pid = int(r.text.split("pid=")[1].split()[0])
    assert Path(f"/proc/{pid}/exe").resolve() == paths.NGINX_BIN.resolve()


def test_mounts(tools):
    env = requests.get(tools.url("/app/a/b%20c?x=1"), timeout=10)
    env = requests.get(tools.url("/app/environ"), timeout=10).json()
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/environ")
    env = requests.get(tools.url("/regex/environ"), timeout=10)
    assert env.status_code == 404  # PATH_INFO is the whole URI for a regex location
    assert "no route '/regex/environ'" in env.text or "/regex/environ" in env.text
    r = requests.get(tools.url("/exact"), timeout=10)
    assert "no route" in r.text  # SCRIPT_NAME=/exact, PATH_INFO=""


def test_environ_basics(tools):
    env = requests.get(tools.url("/app/environ?a=1&b=%20"), headers={"X-Custom": "v"},
                       timeout=10).json()
    assert env["REQUEST_METHOD"] == "GET"
    assert env["QUERY_STRING"] == "a=1&b=%20"
    assert env["REQUEST_URI"] == "/app/environ?a=1&b=%20"
    assert env["SERVER_PORT"] == str(tools.port)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["HTTP_X_CUSTOM"] == "v"
    assert env["wsgi.url_scheme"] == "http"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"


def test_post_echo_small_large_and_chunked(tools):
    import hashlib
    for size in (0, 10, 100_000, 5_000_000):     # memory and temp-file bodies
        data = os.urandom(size)
        r = requests.post(tools.url("/app/echo"), data=data, timeout=30)
        assert r.status_code == 200
        assert r.content == data
        assert r.headers["X-Content-Length"] == str(size)
    # A chunked request body (no Content-Length): nginx de-chunks it, CONTENT_LENGTH is its size.
    data = os.urandom(300_000)
    r = requests.post(tools.url("/app/echo"), data=iter([data[:1000], data[1000:]]), timeout=30)
    assert r.status_code == 200
    assert r.headers["X-Body-Sha256"] == hashlib.sha256(data).hexdigest()
    assert r.headers["X-Content-Length"] == str(len(data))


def test_streaming_chunks_arrive_as_produced(tools):
    with requests.get(tools.url("/app/stream?gap=0.5"), stream=True, timeout=10) as r:
        assert r.headers.get("Transfer-Encoding") == "chunked"
        arrivals = []
        for line in r.iter_lines():
            arrivals.append((time.time(), line))
    assert [line.split()[0] for _, line in arrivals] == [b"chunk0", b"chunk1", b"chunk2"]
    # chunk0 reached us long before chunk2 was even produced (the app sleeps 0.5 s in between).
    produced_last = float(arrivals[-1][1].split()[1])
    assert arrivals[0][0] < produced_last - 0.5


def test_headers_status_and_head(tools):
    r = requests.get(tools.url("/app/headers"), timeout=10)
    assert r.status_code == 201
    assert r.headers["Content-Type"] == "text/x-test"
    assert r.headers["X-One"] == "1"
    assert r.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]
    assert r.headers["Server"] == "app-server"  # the app's, not nginx's added twice
    assert r.content == b"made"
    h = requests.head(tools.url("/app/headers"), timeout=10)
    assert h.status_code == 201 and h.content == b""
    raw = socket.create_connection(("127.0.0.1", tools.port), timeout=10)
    raw.sendall(b"GET /app/status?line=299+Custom+Reason HTTP/1.0\r\nHost: x\r\n\r\n")
    head = raw.recv(4096).split(b"\r\n")[0]
    raw.close()
    assert head == b"HTTP/1.1 299 Custom Reason"


def test_slow_app_does_not_delay_static_location(tools):
    """One nginx worker: while its Python threads sleep, its event loop keeps serving."""
    results = []
    t = threading.Thread(target=lambda: results.append(
        requests.get(tools.url("/app/sleep?s=1.5"), timeout=10)))
    t.start()
    time.sleep(0.2)  # the sleeping request is inside the app now
    t0 = time.monotonic()
    r = requests.get(tools.url("/static"), timeout=10)
    static_time = time.monotonic() - t0
    t.join()
    assert r.text == "static\n"
    # Far below the app's 1.5 s (the margin is for a loaded CI machine, not for waiting).
    assert static_time < 0.5, f"static location took {static_time:.3f}s behind a sleeping app"
    assert results and results[0].status_code == 200


def test_sleeping_requests_overlap_across_the_pool(tools):
    """wsgi_threads 4: four 1-second requests take about 1 s together, not 4 s."""
    out = []
    def one():
        out.append(requests.get(tools.url("/app/sleep?s=1"), timeout=10))
    threads = [threading.Thread(target=one) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    assert all(r.status_code == 200 for r in out)
    assert len({r.json()["thread"] for r in out}) == 4
    assert elapsed < 2.5, f"4 x 1 s requests took {elapsed:.2f}s on 4 threads (serial: 4 s)"


def worker_pids(nginx) -> list:
    master = nginx.process.pid
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_client_backpressure_bounds_memory_and_close_is_called(tools, state_dir):
    """A 1 GiB generator to a client that does not read: the generator is held back (it has
    produced only a few hundred KiB beyond what the sockets buffer), the worker's memory stays
    flat, and when the client goes away the iterable's close() is called."""
    token = f"bp{time.monotonic_ns()}"
    (pid,) = worker_pids(tools)
    before = rss_kib(pid)
    s = socket.create_connection(("127.0.0.1", tools.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.sendall(f"GET /app/endless?token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    s.recv(1024)  # the head and a little body, then stop reading
    produced = state_dir / f"produced-{token}"
    time.sleep(2.0)
    first = int(produced.read_text())
    time.sleep(1.0)
    second = int(produced.read_text())
    grown = rss_kib(pid) - before
    print(f"backpressure: generator produced {second} bytes, worker RSS grew {grown} KiB")
    assert second == first, "the generator kept running while the client was not reading"
    assert second < 32 * 1024 * 1024, f"generator got {second} bytes ahead of a stalled client"
    assert grown < 40 * 1024, f"worker RSS grew by {grown} KiB"
    s.close()
    closed = state_dir / f"closed-{token}"
    deadline = time.monotonic() + 5
    while not closed.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert closed.exists(), "close() was not called after the client went away"
    # The worker is fine afterwards.
    assert requests.get(tools.url("/static"), timeout=5).text == "static\n"


def test_slow_reader_receives_everything(tools):
    """Backpressure must not lose data: a client reading slowly gets all bytes in order."""
    s = socket.create_connection(("127.0.0.1", tools.port), timeout=20)
    s.sendall(b"GET /app/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\nConnection: close\r\n\r\n")
    payload = bytes(range(256)) * (3_000_000 // 256) + b"\0" * (3_000_000 % 256)
    s.sendall(payload)
    data = b""
    while True:
        chunk = s.recv(32 * 1024)
        if not chunk:
            break
        data += chunk
        if len(data) < 1_000_000:
            time.sleep(0.001)
    s.close()
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding: chunked" in head
    assert dechunk(body) == payload


def dechunk(data: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end], 16)
        if size == 0:
            return bytes(out)
        out += data[end + 2:end + 2 + size]
        pos = end + 2 + size + 2


def test_nginx_t_does_not_import_the_app(launcher, state_dir):
    d = app_dir(launcher)
    marker = state_dir / f"imported-{time.monotonic_ns()}"
    app = write_app(d, "marker.py", f"""
        open({str(marker)!r}, "a").write("imported\\n")
        def application(environ, start_response):
            start_response("200 OK", [])
            return [b"ok"]
    """)
    nginx = make_nginx(launcher, f"location / {{ wsgi_script {app}; }}")
    nginx.check_config()
    assert not marker.exists(), "nginx -t imported the app"
    launcher.started.append(nginx)
    nginx.start()
    assert requests.get(nginx.url("/"), timeout=10).text == "ok"
    assert marker.exists()


def test_reload_keeps_serving(launcher):
    d = app_dir(launcher)
    app = write_app(d, "hello.py", HELLO)
    nginx = rwsgi_nginx(launcher, f"location / {{ wsgi_script {app}; }}")
    first = requests.get(nginx.url("/"), timeout=10).text
    old = worker_pids(nginx)
    nginx.reload()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and set(worker_pids(nginx)) & set(old):
        time.sleep(0.1)
    second = requests.get(nginx.url("/"), timeout=10).text
    assert first.split()[0] == second.split()[0] == "hello"
    assert first.split()[1] != second.split()[1], "expected a new worker after reload"


def test_app_import_error_is_500_and_logged(launcher):
    d = app_dir(launcher)
    app = write_app(d, "broken.py", "raise RuntimeError('broken at import')\n")
    nginx = rwsgi_nginx(launcher, f"location / {{ wsgi_script {app}; }}")
    r = requests.get(nginx.url("/"), timeout=10)
    assert r.status_code == 500
    deadline = time.monotonic() + 5
    while "broken at import" not in nginx.error_log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "broken at import" in nginx.error_log_text()
    # The worker survives and serves the next request the same way.
    assert requests.get(nginx.url("/"), timeout=10).status_code == 500


def test_graceful_quit_finishes_inflight_request(launcher):
    """SIGQUIT (graceful stop) waits for a request that is still inside the app."""
    d = app_dir(launcher)
    app = write_app(d, "tools.py", TOOLS)
    nginx = rwsgi_nginx(launcher, f"location / {{ wsgi_script {app}; }}")
    out = []
    t = threading.Thread(target=lambda: out.append(requests.get(nginx.url("/sleep?s=1"), timeout=10)))
    t.start()
    time.sleep(0.3)
    import signal
    nginx.process.send_signal(signal.SIGQUIT)
    t.join()
    assert out and out[0].status_code == 200
    nginx.process.proc.wait(10)


def test_file_wrapper_is_sent_with_sendfile(launcher, state_dir):
    """wsgi.file_wrapper over a real file: the file region goes to nginx as a file buffer (our
    duplicate of the app's descriptor), so with `sendfile on` nginx sends it with sendfile(2)
    (its debug log names each call; with sendfile off nginx's copy filter reads it, as for static
    files); the bytes are right."""
    d = app_dir(launcher)
    app = write_app(d, "tools.py", TOOLS)
    nginx = rwsgi_nginx(launcher, f"location / {{ wsgi_script {app}; }}", "sendfile on;",
                        state_dir=state_dir, log_level="debug")
    size = 5_000_003
    r = requests.get(nginx.url(f"/file?size={size}"), timeout=30)
    assert r.status_code == 200
    assert r.content == bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    assert "sendfile: @0" in nginx.error_log_text()
