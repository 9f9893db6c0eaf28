"""PEP 3333 conformance app: one WSGI script whose routes (on PATH_INFO) each exercise one rule.

The tests in tests/test_conformance.py call these routes through a front end and check what the
client receives. Server-side facts the client cannot see (close() calls, what reached
wsgi.errors) are recorded in files under $RWSGI_TEST_STATE_DIR and read back through /record.

Only the standard library is used, so the app runs under any Python the server embeds.
"""

import hashlib
import io
import json
import os
import sys
import tempfile
import threading
import time
from urllib.parse import parse_qs

STATE_DIR = os.environ.get("RWSGI_TEST_STATE_DIR") or os.path.join(
    tempfile.gettempdir(), "rwsgi-test-state")
_lock = threading.Lock()

# Headers and statuses start_response must refuse (PEP 3333 + RFC 9110 field syntax).
BAD_HEADERS = {
    "value_cr": ("200 OK", [("X-Bad", "a\rb")]),
    "value_lf": ("200 OK", [("X-Bad", "a\nX-Injected: 1")]),
    "value_crlf": ("200 OK", [("X-Bad", "a\r\nX-Injected: 1")]),
    "value_nul": ("200 OK", [("X-Bad", "a\x00b")]),
    "value_ctl": ("200 OK", [("X-Bad", "a\x07b")]),
    "value_del": ("200 OK", [("X-Bad", "a\x7fb")]),
    "value_nonlatin1": ("200 OK", [("X-Bad", "euro \u20ac")]),
    "value_bytes": ("200 OK", [("X-Bad", b"bytes")]),
    "name_space": ("200 OK", [("X Bad", "v")]),
    "name_colon": ("200 OK", [("X-Bad:", "v")]),
    "name_empty": ("200 OK", [("", "v")]),
    "name_lf": ("200 OK", [("X-Bad\nX-Injected", "v")]),
    "name_bytes": ("200 OK", [(b"X-Bad", "v")]),
    "not_a_tuple": ("200 OK", [("X-Bad", "v", "extra")]),
    "status_crlf": ("200 OK\r\nX-Injected: 1", []),
    "status_nodigits": ("OK", []),
    "status_short": ("20 OK", []),
    "status_long": ("2000 OK", []),
    "status_letters": ("2x0 OK", []),
    "status_bytes": (b"200 OK", []),
    "status_nul": ("200 O\x00K", []),
}


def record(kind, token, line="1"):
    """Append a line to STATE_DIR/<kind>-<token>.log (one line per event)."""
    os.makedirs(STATE_DIR, exist_ok=True)
    with _lock, open(os.path.join(STATE_DIR, f"{kind}-{token}.log"), "a") as f:
        f.write(line + "\n")


def query(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def json_response(start_response, data, status="200 OK"):
    body = json.dumps(data, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def text_response(start_response, text, status="200 OK"):
    body = text.encode() if isinstance(text, str) else text
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class Tracked:
    """An iterable with close(): each close() call is recorded under its token."""

    def __init__(self, token, chunks, fail_at=None, delay=0.0, limit_s=20.0):
        self.token, self.chunks, self.fail_at, self.delay, self.limit_s = token, chunks, fail_at, delay, limit_s

    def __iter__(self):
        start = time.monotonic()
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError(f"conformance: failure inside the iterable {self.token}")
            if self.delay:
                time.sleep(self.delay)
            if time.monotonic() - start > self.limit_s:
                return
            yield chunk

    def close(self):
        record("close", self.token)


# ---- routes ------------------------------------------------------------------------------------

def r_environ(environ, start_response):
    """Every CGI/WSGI key with its type; str values verbatim, PATH_INFO also as latin-1 hex."""
    out = {}
    for key, value in environ.items():
        if isinstance(value, str):
            out[key] = {"type": "str", "value": value}
        elif isinstance(value, (bool, int)):
            out[key] = {"type": type(value).__name__, "value": value}
        elif isinstance(value, tuple):
            out[key] = {"type": "tuple", "value": list(value)}
        else:
            out[key] = {"type": type(value).__name__}
    for key in ("PATH_INFO", "SCRIPT_NAME", "QUERY_STRING", "REQUEST_URI"):
        if isinstance(environ.get(key), str):
            try:
                out[key]["latin1_hex"] = environ[key].encode("latin-1").hex()
            except UnicodeEncodeError:
                out[key]["latin1_hex"] = None  # not a "bytes as latin-1" native string
    inp, err = environ["wsgi.input"], environ["wsgi.errors"]
    out["_input_methods"] = sorted(m for m in ("read", "readline", "readlines", "__iter__")
                                   if callable(getattr(inp, m, None)))
    out["_errors_methods"] = sorted(m for m in ("write", "writelines", "flush")
                                    if callable(getattr(err, m, None)))
    out["_file_wrapper_callable"] = callable(environ.get("wsgi.file_wrapper"))
    return json_response(start_response, out)


def _digest(data):
    return {"len": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def r_input_read(environ, start_response):
    data = environ["wsgi.input"].read()
    again = environ["wsgi.input"].read()  # at end of body: b""
    return json_response(start_response, dict(_digest(data), again=len(again)))


def r_input_read_n(environ, start_response):
    """read(n) until EOF; hashes as it goes so the app itself never holds the body."""
    n = int(query(environ).get("n", "1000"))
    digest, total, reads = hashlib.sha256(), 0, 0
    while True:
        chunk = environ["wsgi.input"].read(n)
        assert isinstance(chunk, bytes)
        if not chunk:
            break
        if len(chunk) > n:
            return text_response(start_response, f"read({n}) returned {len(chunk)} bytes", "500 Bad Read")
        digest.update(chunk)
        total += len(chunk)
        reads += 1
    return json_response(start_response, {"len": total, "sha256": digest.hexdigest(), "reads": reads})


def r_input_read_none(environ, start_response):
    """read(None) and read(-1) mean "everything" (io.RawIOBase convention, WSGI servers accept)."""
    q = query(environ)
    arg = None if q.get("arg", "none") == "none" else int(q["arg"])
    data = environ["wsgi.input"].read(arg)
    return json_response(start_response, _digest(data))


def r_input_readline(environ, start_response):
    size = query(environ).get("size")
    lines = []
    while True:
        line = environ["wsgi.input"].readline(int(size)) if size else environ["wsgi.input"].readline()
        if not line:
            break
        lines.append(line.decode("latin-1"))
    return json_response(start_response, {"lines": lines})


def r_input_readlines(environ, start_response):
    hint = query(environ).get("hint")
    lines = environ["wsgi.input"].readlines(int(hint)) if hint else environ["wsgi.input"].readlines()
    rest = environ["wsgi.input"].read()
    return json_response(start_response, {"lines": [l.decode("latin-1") for l in lines],
                                          "rest": rest.decode("latin-1")})


def r_input_iter(environ, start_response):
    lines = [line.decode("latin-1") for line in environ["wsgi.input"]]
    return json_response(start_response, {"lines": lines})


def r_input_ignore(environ, start_response):
    """Never touches wsgi.input: the server must drain/discard the body itself."""
    return text_response(start_response, "ignored")


def r_errors(environ, start_response):
    marker = query(environ).get("marker", "no-marker")
    errors = environ["wsgi.errors"]
    errors.write(f"conformance wsgi.errors write {marker}\n")
    errors.writelines([f"conformance wsgi.errors writelines {marker}\n"])
    errors.flush()
    print(f"conformance stderr print {marker}", file=sys.stderr, flush=True)
    return text_response(start_response, "logged")


def r_exc_info_before(environ, start_response):
    """exc_info before any body byte: the second start_response replaces the first."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
    try:
        raise ValueError("conformance: replaced by exc_info")
    except ValueError:
        start_response("503 Replaced", [("Content-Type", "text/plain"), ("X-Replaced", "1")], sys.exc_info())
    return [b"replaced body"]


def r_exc_info_twice_without(environ, start_response):
    """A second start_response WITHOUT exc_info is an error (PEP 3333): caught and reported."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        start_response("200 OK", [("Content-Type", "text/plain")])
    except Exception as e:  # expected: AssertionError/RuntimeError/...
        return [f"raised {type(e).__name__}".encode()]
    return [b"no error"]


def r_exc_info_after(environ, start_response):
    """exc_info after the head went out: start_response must re-raise; the response is aborted."""
    token = query(environ).get("token", "none")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])

    def body():
        yield b"first part;"
        try:
            raise KeyError(f"conformance exc_info after headers {token}")
        except KeyError:
            start_response("500 Too Late", [("Content-Type", "text/plain")], sys.exc_info())
        record("exc_info_after_not_reraised", token)
        yield b"SHOULD NOT BE SENT"
    return body()


def r_bad_header(environ, start_response):
    """Uncaught: the invalid start_response call must raise, so the server answers 500."""
    status, headers = BAD_HEADERS[query(environ)["kind"]]
    start_response(status, headers)
    return [b"SHOULD NOT BE SENT"]


def r_bad_header_caught(environ, start_response):
    """The error is raised inside start_response itself, where the app can catch it."""
    status, headers = BAD_HEADERS[query(environ)["kind"]]
    try:
        start_response(status, headers)
    except Exception as e:
        return text_response(start_response, f"raised {type(e).__name__}")
    return [b"not raised"]


def r_ok_header_values(environ, start_response):
    """Values that ARE legal: latin-1 (not just ASCII), tab inside, empty value, many headers."""
    headers = [("Content-Type", "text/plain"), ("X-Latin1", "caf\u00e9"), ("X-Empty", ""),
               ("X-Tab", "a\tb")]
    headers += [(f"X-Many-{i}", str(i)) for i in range(50)]
    headers += [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
    start_response("200 OK", headers)
    return [b"ok"]


def r_status(environ, start_response):
    code = query(environ).get("code", "200")
    reason = query(environ).get("reason", "Custom Reason")
    start_response(f"{code} {reason}", [("Content-Type", "text/plain")])
    return [] if code in ("204", "304") else [f"status {code}".encode()]


def r_write(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"one;")
    write(b"two;")
    return [b"three;", b"four"]


def r_write_only(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written")
    return []


def r_stream(environ, start_response):
    """A generator that pauses between chunks: the first must reach the client before the last
    is produced (X-Accel-Buffering: no asks nginx not to buffer, as streaming apps do)."""
    q = query(environ)
    n, delay = int(q.get("n", "3")), float(q.get("delay", "1.0"))
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Accel-Buffering", "no")])

    def gen():
        for i in range(n):
            if i:
                time.sleep(delay)
            yield f"chunk {i} at {time.time():.3f}\n".encode()
    return gen()


def r_empty_chunks(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"", b"a", b"", b"b", b""]


def r_big(environ, start_response):
    size = int(query(environ).get("size", str(1 << 20)))
    block = bytes(range(256)) * 256  # 64 KiB
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])

    def gen():
        left = size
        while left:
            yield block[:min(left, len(block))]
            left -= min(left, len(block))
    return gen()


def r_str_body(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Tracked(query(environ).get("token", "none"), ["a str, not bytes"])


def r_bare_body(environ, start_response):
    """An app written for uWSGI: the body returned as a bare bytes / bytearray (an extension)."""
    kind = query(environ).get("kind", "bytes")
    body = b"bare body " + kind.encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return bytearray(body) if kind == "bytearray" else body


def r_str_body_later(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
    return Tracked(query(environ).get("token", "none"), [b"bytes first;", "then a str"])


def r_close(environ, start_response):
    """close() must be called exactly once: plain iteration, error, write() + iterable."""
    q = query(environ)
    token, mode = q.get("token", "none"), q.get("mode", "normal")
    if mode == "normal":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Tracked(token, [b"a", b"b", b"c"])
    if mode == "error":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        return Tracked(token, [b"a", b"b", b"c"], fail_at=1)
    if mode == "error_first":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Tracked(token, [b"a"], fail_at=0)
    if mode == "write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"w;")
        return Tracked(token, [b"a"])
    if mode == "slow":  # long enough for the client to go away in the middle
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("X-Accel-Buffering", "no")])
        return Tracked(token, [b"x" * 65536] * 2000, delay=0.01, limit_s=15)
    if mode == "content_length_short":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return Tracked(token, [b"a", b"b", b"c", b"d"])
    raise ValueError(mode)


def r_record(environ, start_response):
    """How many events of `kind` were recorded for `token` (read back by the tests)."""
    q = query(environ)
    path = os.path.join(STATE_DIR, f"{q['kind']}-{q['token']}.log")
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    return json_response(start_response, {"count": len(lines), "lines": lines})


def r_content_length_longer(environ, start_response):
    """Declares 5 bytes, produces 10: the client must get exactly 5."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"01234", b"56789"]


def r_content_length_shorter(environ, start_response):
    """Declares 10 bytes, produces 5: the server must close the connection (client sees a short read)."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"01234"]


def r_exception_before(environ, start_response):
    token = query(environ).get("token", "none")
    raise RuntimeError(f"conformance exception before headers {token}")


def r_exception_after(environ, start_response):
    token = query(environ).get("token", "none")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])

    def gen():
        yield b"partial;"
        raise RuntimeError(f"conformance exception after headers {token}")
    return gen()


def r_exception_after_no_length(environ, start_response):
    """As above without Content-Length: only the transport can tell the client it was cut."""
    token = query(environ).get("token", "none")
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        yield b"partial;"
        time.sleep(0.1)
        raise RuntimeError(f"conformance exception after headers {token}")
    return gen()


def r_exception_in_start(environ, start_response):
    """Raised by the iterable's first next() before any start_response call."""
    def gen():
        raise RuntimeError("conformance exception in generator before start_response")
        yield b""
    return gen()


def r_file_wrapper(environ, start_response):
    """wsgi.file_wrapper over a real file (sendfile-able) or a file-like without fileno()."""
    q = query(environ)
    size, kind, token = int(q.get("size", "100000")), q.get("kind", "file"), q.get("token", "none")
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    headers = [("Content-Type", "application/octet-stream")]
    if "cl" in q:
        headers.append(("Content-Length", q["cl"]))
    start_response("200 OK", headers)
    if kind == "file":
        f = tempfile.TemporaryFile(dir=STATE_DIR if os.path.isdir(STATE_DIR) else None)
        f.write(data)
        f.seek(0)
    else:
        f = io.BytesIO(data)
    original_close = f.close

    def close():
        record("close", token)
        original_close()
    try:
        f.close = close
    except AttributeError:  # built-in file objects refuse new attributes: wrap instead
        f = _ClosingFile(f, token)
    return environ["wsgi.file_wrapper"](f, 8192)


class _ClosingFile:
    def __init__(self, f, token):
        self._f, self._token = f, token

    def read(self, *a):
        return self._f.read(*a)

    def fileno(self):
        return self._f.fileno()

    def tell(self):
        return self._f.tell()

    def seek(self, *a):
        return self._f.seek(*a)

    def close(self):
        record("close", self._token)
        self._f.close()


def r_pid(environ, start_response):
    return json_response(start_response, {"pid": os.getpid(), "thread": threading.get_ident()})


def r_sleep(environ, start_response):
    time.sleep(float(query(environ).get("s", "0.5")))
    return json_response(start_response, {"pid": os.getpid()})


def r_crash(environ, start_response):
    """The worker process dies in the middle of a request (after the head went out)."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])

    def gen():
        yield b"about to die;"
        os._exit(3)
    return gen()


def r_crash_before(environ, start_response):
    os._exit(3)


def r_echo(environ, start_response):
    body = environ["wsgi.input"].read()
    ct = environ.get("CONTENT_TYPE", "application/octet-stream") or "application/octet-stream"
    start_response("200 OK", [("Content-Type", ct), ("Content-Length", str(len(body)))])
    return [body]


ROUTES = {
    "/environ": r_environ,
    "/input/read": r_input_read,
    "/input/read_n": r_input_read_n,
    "/input/read_none": r_input_read_none,
    "/input/readline": r_input_readline,
    "/input/readlines": r_input_readlines,
    "/input/iter": r_input_iter,
    "/input/ignore": r_input_ignore,
    "/errors": r_errors,
    "/exc_info/before": r_exc_info_before,
    "/exc_info/twice_without": r_exc_info_twice_without,
    "/exc_info/after": r_exc_info_after,
    "/headers/bad": r_bad_header,
    "/headers/bad_caught": r_bad_header_caught,
    "/headers/ok": r_ok_header_values,
    "/status": r_status,
    "/write": r_write,
    "/write_only": r_write_only,
    "/stream": r_stream,
    "/empty_chunks": r_empty_chunks,
    "/big": r_big,
    "/str_body": r_str_body,
    "/str_body_later": r_str_body_later,
    "/bare_body": r_bare_body,
    "/close": r_close,
    "/record": r_record,
    "/content_length/longer": r_content_length_longer,
    "/content_length/shorter": r_content_length_shorter,
    "/exception/before": r_exception_before,
    "/exception/after": r_exception_after,
    "/exception/after_no_length": r_exception_after_no_length,
    "/exception/in_generator": r_exception_in_start,
    "/file_wrapper": r_file_wrapper,
    "/pid": r_pid,
    "/sleep": r_sleep,
    "/crash": r_crash,
    "/crash_before": r_crash_before,
    "/echo": r_echo,
}


def application(environ, start_response):
    handler = ROUTES.get(environ.get("PATH_INFO", ""))
    if handler is None:
        # Any unknown path (including percent-decoded test paths) answers with its environ.
        if environ.get("PATH_INFO", "").startswith("/environ"):
            return r_environ(environ, start_response)
        return text_response(start_response, f"no route {environ.get('PATH_INFO')!r}", "404 Not Found")
    return handler(environ, start_response)
