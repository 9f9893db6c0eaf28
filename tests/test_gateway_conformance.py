"""The PEP 3333 conformance suite (tests/test_conformance.py) through the other two gateway
protocols: rwsgi-worker with `--socket scgi:...` behind Debian's nginx (`scgi_pass`, stock
`scgi_params`) and Apache (`mod_proxy_scgi`), and with `--socket fcgi:...` behind nginx
(`fastcgi_pass`, stock `fastcgi_params`) and Apache (`mod_proxy_fcgi`). The assertions are
imported unchanged; only the `stack` fixture differs.

The front ends send the stock params, where SCRIPT_NAME is the whole path (FastCGI, both Apache
modules) or absent (nginx's scgi_params) and PATH_INFO is never sent: the worker is started with
`--mount /app`, which splits the path as the app expects (docs/rwsgi-worker.md, "SCGI and
FastCGI"). TCP sockets, so an aborted response is a reset the front end can see.

Where a front end cannot do what a test asks, the test is skipped here with the reason (never
silently): see FRONT_END_LIMITS.
"""

import hashlib

import pytest
import requests

import test_conformance as _suite
from harness import suite
from harness.frontends import GATEWAY_FRONT_ENDS
from harness.stack import Stack

# Tests a front end cannot pass as written, by front end, with the reason. Each is replaced by a
# test below that asserts what the front end does instead (the property that matters still
# holds: a response is never passed off as complete, a body never exceeds its length).
_MOD_PROXY_RESET = (
    "Apache's mod_proxy_scgi passes the response head on with the body still unread in a socket "
    "bucket; when the worker's reset reaches httpd before that bucket is read, httpd answers 500 "
    "instead of a cut 200 (timing-dependent): test_aborted_response_never_looks_complete accepts "
    "either")
_HTTPD_FRAMES = (
    "httpd's mod_proxy_scgi and mod_proxy_fcgi read the app's Content-Length from the CGI head "
    "but frame the body themselves (chunked unless the whole body came in one read), so the client "
    "may see no Content-Length: test_file_wrapper_body_is_cut_at_content_length checks the body")
FRONT_END_LIMITS = {
    "apache-scgi": {
        "test_input_chunked_request":
            "Apache's mod_proxy_scgi answers 411 Length Required to a chunked request body "
            "itself (SCGI puts CONTENT_LENGTH first; httpd does not buffer to learn it)",
        "test_exc_info_after_headers_reraises_and_aborts": _MOD_PROXY_RESET,
        "test_exception_after_headers_aborts": _MOD_PROXY_RESET,
        "test_exception_after_headers_without_length_aborts": _MOD_PROXY_RESET,
        "test_content_length_shorter_body_closes": _MOD_PROXY_RESET,
        "test_str_chunk_after_bytes_aborts": _MOD_PROXY_RESET,
        "test_file_wrapper_honours_content_length": _HTTPD_FRAMES,
    },
    "apache-fcgi": {
        "test_file_wrapper_honours_content_length": _HTTPD_FRAMES,
    },
}


suite.reuse(globals(), FRONT_END_LIMITS)


@pytest.fixture(scope="module", params=list(GATEWAY_FRONT_ENDS))
def stack(request, new_launcher, apps):
    kind = request.param
    lch = new_launcher(f"gateway-conformance-{kind}")
    try:
        worker = lch.worker(apps / "conformance.py", processes=_suite.WORKER_PROCESSES,
                            threads=_suite.WORKER_THREADS, protocol=GATEWAY_FRONT_ENDS[kind],
                            mount="/app")
        server = lch.front_end(kind, worker)
        logs = [worker.log_text, server.error_log_text]
        yield Stack(kind, server, "/app", logs=logs)
    finally:
        lch.stop_all()


# ---- what the protocols add ---------------------------------------------------------------

def test_large_chunked_upload(stack):
    """A chunked upload through every front end that takes one: nginx buffers it and sends
    CONTENT_LENGTH; Apache's mod_proxy_fcgi streams one over its 16 KiB prefetch without any
    length, and the worker ends wsgi.input at the empty STDIN record."""
    if stack.kind == "apache-scgi":
        pytest.skip(FRONT_END_LIMITS["apache-scgi"]["test_input_chunked_request"])
    data = bytes(range(256)) * 12_000  # ~3 MB

    def gen():
        for i in range(0, len(data), 65_536):
            yield data[i:i + 65_536]
    r = requests.post(stack.url("/input/read"), data=gen(), timeout=30)
    assert r.status_code == 200, r.text[:300]
    assert r.json() == {"len": len(data), "sha256": hashlib.sha256(data).hexdigest(), "again": 0}
    if stack.kind == "apache-fcgi":
        env = requests.post(stack.url("/environ"), data=gen(), timeout=30).json()
        assert "CONTENT_LENGTH" not in env, "mod_proxy_fcgi sent a length after all"
        assert env["HTTP_TRANSFER_ENCODING"]["value"] == "chunked"


def test_apache_scgi_refuses_chunked_bodies_itself(stack):
    """The limit FRONT_END_LIMITS states, shown: Apache answers 411 itself."""
    if stack.kind != "apache-scgi":
        pytest.skip("only Apache's mod_proxy_scgi refuses chunked bodies")
    r = requests.post(stack.url("/input/read"), data=iter([b"a", b"b"]), timeout=10)
    assert r.status_code == 411, r.text[:300]


# The app's routes that fail after the head went out, and the body each may have sent first.
ABORTING = {
    "/exc_info/after?token=": b"first part;",
    "/exception/after?token=": b"partial;",
    "/exception/after_no_length?token=": b"partial;",
    "/content_length/shorter?token=": b"01234",
    "/str_body_later?token=": b"bytes first;",
}


@pytest.mark.parametrize("route", list(ABORTING))
def test_aborted_response_never_looks_complete(stack, route):
    """Every way a response can fail after its head: the client sees it cut (a 200 that ends
    early), or, where the front end answers before it read the body (mod_proxy_scgi, see
    _MOD_PROXY_RESET), a 500; never a response that looks whole."""
    resp = stack.raw("GET", route + _suite.token())
    if resp.status == 500 and stack.kind == "apache-scgi":
        return
    assert resp.status == 200, resp.raw[:300]
    assert ABORTING[route].startswith(resp.body), resp.raw[:300]
    assert resp.truncated, f"an aborted response looked complete: {resp.raw!r}"


def test_file_wrapper_body_is_cut_at_content_length(stack):
    """The app's Content-Length bounds a wsgi.file_wrapper body through every front end (the
    FastCGI worker copies the file into STDOUT records instead of sendfile)."""
    t = _suite.token()
    resp = stack.raw("GET", f"/file_wrapper?kind=file&size=100000&cl=1000&token={t}")
    assert resp.status == 200
    assert resp.body == (bytes(range(256)) * 4)[:1000]
    assert resp.content_length in (1000, None), "httpd may frame it, never with another length"
    assert stack.wait_record("close", t) == 1



# ---- the same endings over a unix socket ----------------------------------------------------
# A unix socket has no reset. FastCGI says "aborted" there with a record the front end refuses
# (crates/supervisor/src/proto/fastcgi.rs, abort_record); SCGI, whose body ends at EOF, has no
# way to say it at all, so only a Content-Length the body falls short of can tell the client.

_SCGI_EOF = ("SCGI ends a body at EOF and a unix socket cannot reset: without a Content-Length "
             "an aborted response looks complete (use TCP, where the worker resets, or FastCGI)")
UNIX_LIMITS = {
    "nginx-scgi": {"/exception/after_no_length?token=": _SCGI_EOF},
    "apache-scgi": {route: _SCGI_EOF + "; Apache's mod_proxy_scgi even replaces the app's "
                    "Content-Length with the length it received" for route in ABORTING},
}


@pytest.fixture(scope="module", params=list(GATEWAY_FRONT_ENDS))
def unix_stack(request, new_launcher, apps):
    kind = request.param
    lch = new_launcher(f"gateway-unix-{kind}")
    try:
        worker = lch.worker(apps / "conformance.py", processes=1, threads=2, socket="unix",
                            protocol=GATEWAY_FRONT_ENDS[kind], mount="/app")
        server = lch.front_end(kind, worker)
        yield Stack(kind, server, "/app", logs=[worker.log_text, server.error_log_text])
    finally:
        lch.stop_all()


@pytest.mark.parametrize("route", list(ABORTING))
def test_unix_socket_aborts_never_look_complete(unix_stack, route):
    """Over a unix socket too, an aborted response is cut. nginx's fastcgi module, meeting the
    worker's abort record, drops the response it had not sent yet (its output waits for 1460
    bytes, `postpone_output`) and closes the client's connection: no response, never a whole
    one."""
    reason = UNIX_LIMITS.get(unix_stack.kind, {}).get(route)
    if reason:
        pytest.skip(reason)
    resp = unix_stack.raw("GET", route + _suite.token())
    if unix_stack.kind == "nginx-fcgi" and resp.raw == b"":
        assert "unsupported FastCGI protocol version: 0" in unix_stack.log_text()
        return
    assert resp.status == 200, resp.raw[:300]
    assert ABORTING[route].startswith(resp.body), resp.raw[:300]
    assert resp.truncated, f"an aborted response looked complete: {resp.raw!r}"


def test_unix_socket_complete_responses_stay_whole(unix_stack):
    """The clean side: complete responses without a length, many of them, none cut."""
    for _ in range(20):
        resp = unix_stack.raw("GET", "/stream?n=3&delay=0")
        assert resp.status == 200 and not resp.truncated, resp.raw[-200:]
        assert resp.body.count(b"chunk ") == 3
