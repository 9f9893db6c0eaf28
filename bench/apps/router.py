"""The one WSGI app every benchmarked server runs (bench/README.md).

It dispatches on PATH_INFO so that every configuration serves identical Python code and the
harness needs a single mount per server. Every response sets Content-Length, so no server has
to fall back to chunked encoding or close-delimited bodies, and a short or long body is a bug.

    /hello      13 bytes, the per-request overhead of the server
    /64k        65,536 bytes, the response write path
    /echo       POST: reads CONTENT_LENGTH bytes with wsgi.input.read(n), answers the count
    /sleep10ms  time.sleep(0.01): I/O-bound; throughput is bounded by processes x threads
    /django     a Django view rendering a template from a small SQLite query (apps/djangobench)
    /flask/api  a Flask JSON API: 10 rows of the same SQLite table, serialised (apps/flaskbench)
    /flask/page a Flask/Jinja page: a template with a base layout over 50 in-memory rows
    /stream     a streamed download: a generator of 64 KiB chunks, 1 GiB (?mib=N for N MiB)

Django and Flask are imported on the first request that needs them, so the other routes measure
the bare server. They come from the bench venv (build/bench-venv, made by bench/run), added to
sys.path here so that every server, whatever Python environment it starts with, runs the same
framework code.
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
_import_lock = threading.Lock()
_frameworks = {}


def _framework(name, load):
    """The WSGI app of a framework, imported (once) on first use."""
    app = _frameworks.get(name)
    if app is None:
        with _import_lock:
            app = _frameworks.get(name)
            if app is None:
                if APPS_DIR not in sys.path:
                    sys.path.insert(0, APPS_DIR)
                if os.path.isdir(BENCH_VENV_SITE):
                    site.addsitedir(BENCH_VENV_SITE)
                app = _frameworks[name] = load()
    return app


def _load_django():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangobench.settings")
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def _load_flask():
    from flaskbench import app

    return app


def _django(environ, start_response):
    return _framework("django", _load_django)(environ, start_response)


def _flask(environ, start_response):
    return _framework("flask", _load_flask)(environ, start_response)


def _callgrind_mark(call):
    """bench/profile's markers: under `valgrind --tool=callgrind --zero-before=sched_get_priority_min
    --dump-before=sched_get_priority_max`, these two libc calls (which nothing else makes) zero
    and dump the counters of the process that serves them, so the measured requests are exactly
    the ones between the two marker requests, in any server."""

    def handler(environ, start_response):
        call(0)
        return _respond(start_response, b"marked\n")

    return handler


ROUTES = {
    "/hello": _hello,
    "/64k": _body64k,
    "/echo": _echo,
    "/sleep10ms": _sleep10ms,
    "/django": _django,
    "/flask/api": _flask,
    "/flask/page": _flask,
    "/stream": _stream,
    "/callgrind/zero": _callgrind_mark(os.sched_get_priority_min),
    "/callgrind/dump": _callgrind_mark(os.sched_get_priority_max),
}


def application(environ, start_response):
    handler = ROUTES.get(environ.get("PATH_INFO", ""))
    if handler is None:
        return _respond(start_response, b"not found\n", "404 Not Found")
    return handler(environ, start_response)
