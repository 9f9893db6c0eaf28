"""The example app served by scripts/run-example.sh (inside nginx) and scripts/run-worker-example.sh: a plain WSGI hello world."""

import platform
import sys


def application(environ, start_response):
    body = (
        "Hello from rwsgi!\n\n"
        f"Python {platform.python_version()} ({sys.executable})\n"
        f"SCRIPT_NAME={environ.get('SCRIPT_NAME')!r} PATH_INFO={environ.get('PATH_INFO')!r}\n"
        f"wsgi.multithread={environ['wsgi.multithread']} "
        f"wsgi.multiprocess={environ['wsgi.multiprocess']}\n"
    ).encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]
