"""Run inside the interpreter under test by bench/floor: one benchmark app called directly, with
no server, so its CPU per request is the floor every server's CPU per request sits on.

    python floor_driver.py WORKLOAD WARMUP N

WSGI workloads call apps/router.py's `application` with an environ like a server's, iterate the
body and close it (PEP 3333); ASGI ones await apps/asgi_app.py's FastAPI app with a scope like a
server's under uvloop, one request after another. Prints one JSON line: the workload, the
interpreter, N and the process's CPU (user+system) per request over the N requests after WARMUP.
"""

import io
import json
import os
import sys
import time

APPS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "apps")
sys.path.insert(0, APPS)

WSGI_PATHS = {"hello": "/hello", "django": "/django", "flask-api": "/flask/api",
              "flask-page": "/flask/page"}
ASGI_PATHS = {"asgi-hello": "/hello"}


def wsgi_request(path):
    import router  # adds build/bench-venv's site-packages, as under every server

    base = {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "HTTP_HOST": "127.0.0.1:8080",
        "HTTP_ACCEPT": "*/*", "CONTENT_LENGTH": "", "CONTENT_TYPE": "",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
    }
    statuses = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    def one():
        environ = dict(base)
        environ["wsgi.input"] = io.BytesIO(b"")
        body = router.application(environ, start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        if not statuses.pop().startswith("200"):
            sys.exit(f"{path}: not 200")

    return one


def asgi_runner(path):
    venv = os.path.join(os.path.dirname(os.path.dirname(APPS)), "build", "bench-venv", "lib",
                        f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")
    sys.path.insert(1, venv)
    import uvloop
    from asgi_app import app

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
        "root_path": "", "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8080"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080), "state": {},
    }
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive():
        return request

    async def one():
        sent = []

        async def send(message):
            sent.append(message)

        await app(dict(scope), receive, send)
        if sent[0]["status"] != 200:
            sys.exit(f"{path}: not 200")

    def run(warmup, n):
        async def main():
            for _ in range(warmup):
                await one()
            start = time.process_time()
            for _ in range(n):
                await one()
            return time.process_time() - start

        return uvloop.run(main())

    return run


def main():
    workload, warmup, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if workload in WSGI_PATHS:
        one = wsgi_request(WSGI_PATHS[workload])
        for _ in range(warmup):
            one()
        start = time.process_time()
        for _ in range(n):
            one()
        spent = time.process_time() - start
    elif workload in ASGI_PATHS:
        spent = asgi_runner(ASGI_PATHS[workload])(warmup, n)
    else:
        sys.exit(f"unknown workload {workload!r}")
    print(json.dumps({"workload": workload, "python": sys.executable, "requests": n,
                      "cpu_us": spent / n * 1e6}))


if __name__ == "__main__":
    main()
