"""Daemon mode's upstream knobs through Debian's real nginx, observed end to end: the read and
send timeouts (504 and the log line nginx's uwsgi module writes), response buffering with a
client that stops reading, the app's X-Accel-Buffering, request buffering, intercepted errors
and hidden/passed headers.

mod_wsgi's daemon mode has none of these as knobs: its socket-timeout (default: httpd's Timeout)
is the one timeout, and responses always stream through Apache.
"""

import os
import re
import socket
import time

import pytest
import requests

from harness import http
from test_nginx_module_daemon import wait_for
from test_nginx_module_embedded import app_dir, rwsgi_nginx, write_app

APP = """
    import os, time

    def note(q, name, text):
        # The daemon's processes do not get nginx's `env`: the test names its state directory.
        with open(os.path.join(q["dir"], name), "w") as f:
            f.write(text)

    def application(environ, start_response):
        path = environ["PATH_INFO"]
        q = dict(p.split("=", 1) for p in environ["QUERY_STRING"].split("&") if "=" in p)
        if path == "/sleep":
            time.sleep(float(q.get("s", "1")))
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"slept"]
        if path == "/produce":
            # size MiB in 64 KiB chunks; records how far it got and when close() ran.
            token, total = q["token"], int(q.get("mib", "32")) * 16
            headers = [("Content-Type", "application/octet-stream")]
            if "accel" in q:
                headers.append(("X-Accel-Buffering", q["accel"]))
            start_response("200 OK", headers)
            class Body:
                n = 0
                def __iter__(self):
                    chunk = b"x" * 65536
                    while self.n < total:
                        self.n += 1
                        note(q, "produced-" + token, str(self.n))
                        yield chunk
                def close(self):
                    note(q, "closed-" + token, str(self.n))
            return Body()
        if path == "/stream_in":
            # Reads the first bytes of the body as soon as they arrive, and says so.
            token = q["token"]
            first = environ["wsgi.input"].read(10)
            note(q, "started-" + token, first.decode())
            rest = environ["wsgi.input"].read()
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [first + rest]
        if path == "/ignore_body":
            time.sleep(float(q.get("s", "3")))
            start_response("200 OK", [])
            return [b"never read"]
        if path == "/headers":
            start_response("200 OK", [("X-Secret", "internal"), ("X-Visible", "yes"),
                                      ("X-Accel-Expires", "10"), ("X-Powered-By", "app")])
            return [b"headers"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"the app's own 404"]
"""


@pytest.fixture(scope="module")
def site(launcher, state_dir):
    app = write_app(app_dir(launcher), "upstream.py", APP)
    loc = lambda prefix, extra="": (  # noqa: E731
        f"location {prefix} {{ wsgi_script {app}; wsgi_process_group up; {extra} }}")
    server = "\n".join([
        loc("/plain/"),
        loc("/timeout/", "wsgi_read_timeout 1s; wsgi_send_timeout 1s;"),
        loc("/buffered/", "wsgi_buffering on;"),
        loc("/stream-body/", "wsgi_request_buffering off;"),
        loc("/intercept/", "wsgi_intercept_errors on; error_page 404 /custom404;"),
        loc("/headers/", "wsgi_hide_header X-Secret; wsgi_pass_header X-Accel-Expires;"),
        'location = /custom404 { internal; return 404 "the site\'s custom 404\\n"; }',
    ])
    # http-level knobs reach every daemon location that sets none of its own.
    http = "wsgi_daemon_process up processes=1 threads=8;\nwsgi_hide_header X-Powered-By;"
    nginx = rwsgi_nginx(launcher, "client_max_body_size 64m;\n" + server, http,
                        state_dir=state_dir)
    wait_for(lambda: requests.get(nginx.url("/plain/sleep?s=0"), timeout=5).status_code == 200,
             what="the daemon group")
    return nginx


def read_state(state_dir, name):
    try:
        return (state_dir / name).read_text()
    except FileNotFoundError:
        return None


def timed_out_line(text: str, what: str) -> str:
    """nginx's "upstream timed out" line, without the parts that differ between runs."""
    lines = [ln for ln in text.splitlines() if "upstream timed out" in ln and what in ln]
    assert lines, text[-2000:]
    line = re.sub(r"^.*?\*\d+ ", "", lines[-1])
    line = re.sub(r'upstream: "uwsgi://[^"]*"', 'upstream: "uwsgi://ADDR"', line)
    return re.sub(r'host: "[^"]*"', 'host: "HOST"', line)


def test_read_timeout_is_504_with_the_uwsgi_modules_log_line(site, launcher, apps):
    # The app answers 200 after 4 s; nginx gives up after wsgi_read_timeout (1 s).
    r = requests.get(site.url("/timeout/sleep?s=4"), timeout=10)
    assert r.status_code == 504
    ours = timed_out_line(site.error_log_text(), "reading response header")
    # The same request through stock uwsgi_pass to rwsgi-worker, with uwsgi_read_timeout.
    worker = launcher.worker(write_app(app_dir(launcher), "upstream.py", APP), processes=1,
                             threads=2)
    stock = launcher.front_end("nginx", worker, mount="/timeout",
                               extra_location="uwsgi_read_timeout 1s;")
    assert requests.get(stock.url("/timeout/sleep?s=4"), timeout=10).status_code == 504
    theirs = timed_out_line(stock.error_log_text(), "reading response header")
    assert ours == theirs
    assert ours.startswith("upstream timed out (110: Connection timed out) while reading "
                           "response header from upstream, client: 127.0.0.1, server: localhost, "
                           'request: "GET /timeout/sleep?s=4 HTTP/1.1", upstream: "uwsgi://ADDR"')


def test_send_timeout_when_the_app_never_reads_the_body(site):
    """The app ignores an 8 MiB body; once the socket buffers are full nginx waits
    wsgi_send_timeout (1 s here) and answers 504."""
    r = requests.post(site.url("/timeout/ignore_body?s=5"), data=os.urandom(8 << 20), timeout=15)
    assert r.status_code == 504
    timed_out_line(site.error_log_text(), "sending request to upstream")


class StalledClient:
    """A client that sends a request, reads the head and then stops reading."""

    def __init__(self, port, path):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        self.received = self.sock.recv(1024)

    def read_all(self) -> int:
        """The rest of the response; returns the length of its (de-chunked) body."""
        chunks = [self.received]
        while data := self.sock.recv(1 << 20):
            chunks.append(data)
        self.sock.close()
        resp = http.RawResponse(b"".join(chunks), 0.0)
        assert not resp.truncated
        return len(resp.body)


def wait_until_stable(read, settle=1.0, timeout=30.0):
    """The value `read()` returns once it stops changing for `settle` seconds."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= settle:
            break
    return last


@pytest.mark.parametrize("path,accel,buffered", [
    ("/plain/", None, False),
    ("/buffered/", None, True),
    # The app's X-Accel-Buffering turns buffering on or off per response (as with uwsgi_pass).
    ("/plain/", "yes", True),
    ("/buffered/", "no", False),
])
def test_buffering_frees_the_app_from_a_slow_client(site, state_dir, path, accel, buffered):
    token = f"b{abs(hash((path, accel))) % 10**8}{int(time.time() * 1000) % 10**6}"
    client = StalledClient(site.port, f"{path}produce?token={token}&mib=32&dir={state_dir}"
                           + ("" if accel is None else f"&accel={accel}"))
    assert b" 200 " in client.received.split(b"\r\n")[0], client.received
    closed = lambda: read_state(state_dir, f"closed-{token}")  # noqa: E731
    if buffered:
        # nginx takes all 32 MiB (memory, then its temp file): the app finishes while the client
        # has read nothing.
        wait_for(closed, timeout=30, what="the app to finish into nginx's buffers")
    else:
        # Streamed: the app waits for the client, a few MiB of socket buffers ahead of it.
        produced = wait_until_stable(lambda: read_state(state_dir, f"produced-{token}"))
        assert closed() is None and int(produced or 0) < 32 * 16, produced
    assert client.read_all() == 32 << 20
    wait_for(lambda: read_state(state_dir, f"closed-{token}"), what="close()")
    if buffered:
        assert "an upstream response is buffered to a temporary file" in site.error_log_text()


def test_request_buffering_off_streams_the_body_to_the_app(site, state_dir):
    for path, streamed in (("/stream-body/", True), ("/plain/", False)):
        token = f"s{int(time.time() * 1e6) % 10**9}"
        with socket.create_connection(("127.0.0.1", site.port), timeout=15) as s:
            s.sendall(f"POST {path}stream_in?token={token}&dir={state_dir} HTTP/1.1\r\nHost: x\r\n"
                      f"Content-Length: 20\r\nConnection: close\r\n\r\n0123456789".encode())
            started = lambda: read_state(state_dir, f"started-{token}")  # noqa: E731
            if streamed:
                wait_for(started, what="the app to see the first bytes of the body")
            else:
                time.sleep(1.5)  # long enough for a body streamed to the app to reach it
                assert started() is None, "the app ran before nginx had the whole body"
            s.sendall(b"abcdefghij")
            resp = b""
            while chunk := s.recv(65536):
                resp += chunk
        assert http.RawResponse(resp, 0.0).body == b"0123456789abcdefghij", resp[-200:]
        assert started() == "0123456789"


def test_intercept_errors_hands_the_status_to_error_page(site):
    r = requests.get(site.url("/intercept/missing"), timeout=10)
    assert (r.status_code, r.text) == (404, "the site's custom 404\n")
    r = requests.get(site.url("/plain/missing"), timeout=10)
    assert (r.status_code, r.text) == (404, "the app's own 404")


def test_hide_and_pass_header(site):
    r = requests.get(site.url("/headers/headers"), timeout=10)
    assert r.status_code == 200
    assert "X-Secret" not in r.headers and r.headers["X-Visible"] == "yes"
    assert r.headers["X-Accel-Expires"] == "10"
    # A location with its own wsgi_hide_header list does not inherit http's (nginx's rule) ...
    assert r.headers["X-Powered-By"] == "app"
    # ... one without inherits it; X-Accel-* stay hidden by default.
    r = requests.get(site.url("/plain/headers"), timeout=10)
    assert "X-Powered-By" not in r.headers and "X-Accel-Expires" not in r.headers
    assert r.headers["X-Secret"] == "internal"
