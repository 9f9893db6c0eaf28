"""A WSGI app that answers while it still reads the request body (full duplex), for the nginx
daemon's sending side (src/daemon_send.rs): the body must keep flowing after the response head
went to the client, and an app that fails after reading it all must reach the client as a cut
response, not a complete one.

Routes:
  /echo    streams the body back piece by piece as it reads it (no Content-Length)
  /abort   sends "start", reads the whole body, sends "read N", then raises: an aborted response
"""


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    body = environ["wsgi.input"]
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    if path == "/echo":
        return echo(body)
    return abort(body)


def echo(body):
    while True:
        piece = body.read(65536)
        if not piece:
            return
        yield piece


def abort(body):
    yield b"start\n"
    n = 0
    while True:
        piece = body.read(65536)
        if not piece:
            break
        n += len(piece)
    yield b"read %d\n" % n
    raise RuntimeError("the app fails after its body was read")
