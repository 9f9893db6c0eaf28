"""The one WSGI app every benchmarked server runs (bench/README.md).

It dispatches on PATH_INFO so that every configuration serves identical Python code and the
harness needs a single mount per server. Every response sets Content-Length, so no server has
to fall back to chunked encoding or close-delimited bodies, and a short or long body is a bug.

    /hello      13 bytes, the per-request overhead of the server
    /64k        65,536 bytes, the response write path
    /echo       POST: reads CONTENT_LENGTH bytes with wsgi.input.read(n), answers the count
    /sleep10ms  time.sleep(0.01): I/O-bound; throughput is bounded by processes x threads
    /django     a Django view rendering a template from a small SQLite query (apps/djangobench)
    /stream     a streamed download: a generator of 64 KiB chunks, 1 GiB (?mib=N for N MiB)

Django is imported on the first /django request only, so the other routes measure the bare
server. It comes from the bench venv (build/bench-venv, made by bench/run), added to sys.path
here so that every server, whatever Python environment it starts with, runs the same Django.
"""

import os
import site
import sys
import threading
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


CHUNK_64K = b"x" * 65536
STREAM_DEFAULT_MIB = 1024


def _stream(environ, start_response):
    try:
        mib = int(environ.get("QUERY_STRING", "").partition("mib=")[2] or STREAM_DEFAULT_MIB)
    except ValueError:
        return _respond(start_response, b"bad mib\n", "400 Bad Request")
    chunks = mib * 16
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(chunks * 65536))],
    )
    return (CHUNK_64K for _ in range(chunks))


APPS_DIR = os.path.dirname(os.path.abspath(__file__))
BENCH_VENV_SITE = os.path.join(
    os.path.dirname(os.path.dirname(APPS_DIR)), "build", "bench-venv", "lib",
    f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages",
)
_django_lock = threading.Lock()
_django_app = None


def _django(environ, start_response):
    global _django_app
    if _django_app is None:
        with _django_lock:
            if _django_app is None:
                if APPS_DIR not in sys.path:
                    sys.path.insert(0, APPS_DIR)
                if os.path.isdir(BENCH_VENV_SITE):
                    site.addsitedir(BENCH_VENV_SITE)
                os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangobench.settings")
                from django.core.wsgi import get_wsgi_application

                _django_app = get_wsgi_application()
    return _django_app(environ, start_response)


ROUTES = {
    "/hello": _hello,
    "/64k": _body64k,
    "/echo": _echo,
    "/sleep10ms": _sleep10ms,
    "/django": _django,
    "/stream": _stream,
}


def application(environ, start_response):
    handler = ROUTES.get(environ.get("PATH_INFO", ""))
    if handler is None:
        return _respond(start_response, b"not found\n", "404 Not Found")
    return handler(environ, start_response)
