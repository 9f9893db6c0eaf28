"""The one WSGI app every benchmarked server runs (bench/README.md).

It dispatches on PATH_INFO so that every configuration serves identical Python code and the
harness needs a single mount per server. Every response sets Content-Length, so no server has
to fall back to chunked encoding or close-delimited bodies, and a short or long body is a bug.

    /hello      13 bytes, the per-request overhead of the server
    /64k        65,536 bytes, the response write path
    /echo       POST: reads CONTENT_LENGTH bytes with wsgi.input.read(n), answers the count
    /sleep10ms  time.sleep(0.01): I/O-bound; throughput is bounded by processes x threads
"""

import time

HELLO = b"Hello World!\n"
BODY_64K = (b"0123456789abcdef" * 4096)[:65536]
SLEPT = b"slept 10 ms\n"


def _respond(start_response, body, status="200 OK"):
    start_response(
        status,
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _echo(environ, start_response):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _respond(start_response, b"bad Content-Length\n", "400 Bad Request")
    # One read of the whole declared length: the server must hand over the full body
    # (PEP 3333 lets read(n) return less only at end of input).
    data = environ["wsgi.input"].read(length)
    return _respond(start_response, str(len(data)).encode("ascii"))


def _hello(environ, start_response):
    return _respond(start_response, HELLO)


def _body64k(environ, start_response):
    return _respond(start_response, BODY_64K)


def _sleep10ms(environ, start_response):
    time.sleep(0.01)
    return _respond(start_response, SLEPT)


ROUTES = {
    "/hello": _hello,
    "/64k": _body64k,
    "/echo": _echo,
    "/sleep10ms": _sleep10ms,
}


def application(environ, start_response):
    handler = ROUTES.get(environ.get("PATH_INFO", ""))
    if handler is None:
        return _respond(start_response, b"not found\n", "404 Not Found")
    return handler(environ, start_response)
