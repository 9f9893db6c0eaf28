"""The fault app: one WSGI script whose routes (on PATH_INFO, relative to the mount) play the parts
of issue 10's faults: long streams, stuck and spinning requests, big responses that ignore the
request body, and a counter of how often the app really ran.

What the client cannot see is recorded under the state directory: `$RWSGI_TEST_STATE_DIR` when set,
else `state/` next to this file (the tests copy the script into a directory that has one, mode
0777, so it works for nginx's `nobody` and Apache's `www-data` alike). Only the standard library.

Routes (query parameters in brackets):
  /hello                      "Hello, World!" with Content-Length
  /pid                        {"pid": ..., "thread": ...}
  /stream [n=20, gap=0.25]    n lines "chunk I", one every `gap` seconds (no Content-Length)
  /count  token [sleep=0]     appends "pid" to <state>/count-<token> before sleeping: one line per
                              time the app really ran (a request run twice shows two lines)
  /spin   token               records like /count, then loops in pure Python forever
  /sleep  [s=600, token]      time.sleep(s) (a C call: an injected exception cannot end it early)
  /big    [mb=10, cl=1]       mb MiB without reading the request body; cl=0: no Content-Length
  /drain                      reads the body in 64 KiB pieces; answers the byte count
  /environ                    the str values of environ as JSON
"""

import json
import os
import threading
import time
from urllib.parse import parse_qs

STATE = os.environ.get("RWSGI_TEST_STATE_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "state")
_lock = threading.Lock()


def record(kind, token, line):
    with _lock, open(os.path.join(STATE, f"{kind}-{token}"), "a") as f:
        f.write(line + "\n")


def text(start_response, body, status="200 OK"):
    body = body.encode() if isinstance(body, str) else body
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def stream(n, gap):
    for i in range(n):
        yield ("chunk %d\n" % i).encode()
        if i + 1 < n:
            time.sleep(gap)


def big(total, piece=256 * 1024):
    block = b"x" * piece
    sent = 0
    while sent < total:
        n = min(piece, total - sent)
        yield block[:n]
        sent += n


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/pid":
        body = json.dumps({"pid": os.getpid(), "thread": threading.get_ident()})
        return text(start_response, body)
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return stream(int(q.get("n", "20")), float(q.get("gap", "0.25")))
    if path == "/count":
        record("count", q["token"], str(os.getpid()))
        time.sleep(float(q.get("sleep", "0")))
        return text(start_response, "counted")
    if path == "/spin":
        record("count", q["token"], str(os.getpid()))
        n = 0
        while True:  # pure Python: an exception injected into this thread ends it
            n += 1
    if path == "/sleep":
        if "token" in q:
            record("count", q["token"], str(os.getpid()))
        time.sleep(float(q.get("s", "600")))
        return text(start_response, "slept")
    if path == "/big":
        total = int(float(q.get("mb", "10")) * (1 << 20))
        headers = [("Content-Type", "application/octet-stream")]
        if q.get("cl", "1") == "1":
            headers.append(("Content-Length", str(total)))
        start_response("200 OK", headers)
        return big(total)
    if path == "/drain":
        stream_in = environ["wsgi.input"]
        n = 0
        while True:
            piece = stream_in.read(65536)
            if not piece:
                break
            n += len(piece)
        return text(start_response, str(n))
    if path == "/environ":
        body = json.dumps({k: v for k, v in environ.items() if isinstance(v, str)})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body.encode()]
    return text(start_response, "Hello, World!")
