"""A WSGI script whose import kills the process (`os._exit(3)`): a crash-looping app.

Nothing in the importing process can catch this (no exception is raised, the process is gone),
so the server must contain it from outside: a daemon group with no live worker answers 503 at
once, and an nginx worker is not respawned in a tight loop (issue 10, case 4).
"""

import os

os._exit(3)


def application(environ, start_response):  # never reached
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"unreachable"]
