"""A real Starlette app for the ASGI end-to-end tests (served with wsgi_python_home build/venv):
lifespan with state, JSON, request bodies (upload digest), a streamed response, an event stream
that records the client's disconnect, a FileResponse (pathsend), asyncio.sleep, WebSockets.

Records go to $RWSGI_TEST_STATE_DIR (one file per kind and token), as tests/apps/conformance.py.
"""

import asyncio
import contextlib
import hashlib
import os

from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect

STATE = os.environ.get("RWSGI_TEST_STATE_DIR", "/tmp")
HERE = os.path.dirname(os.path.abspath(__file__))


def record(kind, token, text=""):
    # 0666: the same record may be written by processes of several users (root-run workers,
    # www-data daemon groups) in one test session.
    fd = os.open(os.path.join(STATE, f"asgi-{kind}-{token}"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.fchmod(fd, 0o666) if os.fstat(fd).st_uid == os.geteuid() else None
    with os.fdopen(fd, "a") as f:
        f.write(text + "\n")


@contextlib.asynccontextmanager
async def lifespan(app):
    record("lifespan", "startup", str(os.getpid()))
    yield {"started_by": os.getpid(), "loop": type(asyncio.get_running_loop()).__module__}
    record("lifespan", "shutdown", str(os.getpid()))


async def hello(request):
    return JSONResponse({
        "message": "hello",
        "pid": os.getpid(),
        "path": request.url.path,
        "root_path": request.scope["root_path"],
        "query": dict(request.query_params),
        "client": request.client.host if request.client else None,
        "started_by": request.state.started_by,
        "loop": request.state.loop,
        "http_version": request.scope["http_version"],
    })


async def upload(request):
    digest = hashlib.sha256()
    size = 0
    chunks = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
        chunks += 1
    return JSONResponse({"size": size, "sha256": digest.hexdigest(), "chunks": chunks})


async def stream(request):
    n = int(request.query_params.get("n", "5"))
    delay = float(request.query_params.get("delay", "0.1"))

    async def lines():
        for i in range(n):
            yield f"line {i}\n"
            await asyncio.sleep(delay)

    # As streaming apps do behind nginx: a buffering uwsgi_pass would hold the lines back.
    return StreamingResponse(lines(), media_type="text/plain",
                             headers={"X-Accel-Buffering": "no"})


async def big(request):
    """`size` bytes in 64 KiB chunks; with `token`, records how far it got (back-pressure) and
    that it was stopped when the client went away."""
    size = int(request.query_params.get("size", str(1 << 20)))
    token = request.query_params.get("token")

    async def chunks():
        block = b"x" * 65536
        sent = 0
        try:
            while sent < size:
                piece = block[: min(len(block), size - sent)]
                sent += len(piece)
                if token:
                    with open(os.path.join(STATE, f"asgi-produced-{token}"), "w") as f:
                        f.write(str(sent))
                yield piece
        finally:
            if token:
                record("stopped", token)

    return StreamingResponse(chunks(), media_type="application/octet-stream")


async def events(request):
    """An event stream that runs until the client goes away, then records that it noticed."""
    token = request.query_params["token"]

    async def gen():
        try:
            i = 0
            while True:
                yield f"data: {i}\n\n"
                i += 1
                await asyncio.sleep(0.05)
        finally:
            record("disconnect", token)

    return StreamingResponse(gen(), media_type="text/event-stream",
                             headers={"X-Accel-Buffering": "no"})


async def sleep(request):
    await asyncio.sleep(float(request.query_params.get("s", "0.01")))
    return PlainTextResponse("slept")


async def file(request):
    path = os.path.join(STATE, "asgi-static.bin")
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(bytes(range(256)) * 4096)
    return FileResponse(path, media_type="application/octet-stream")


async def boom(request):
    raise RuntimeError("boom from starlette")


async def ws_echo(websocket):
    await websocket.accept()
    try:
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                record("ws-closed", websocket.query_params.get("token", "-"), str(msg.get("code")))
                return
            if msg.get("text") is not None:
                await websocket.send_text(msg["text"])
            else:
                await websocket.send_bytes(msg["bytes"])
    except WebSocketDisconnect as e:
        record("ws-closed", websocket.query_params.get("token", "-"), str(e.code))


app = Starlette(
    routes=[
        Route("/", hello),
        Route("/upload", upload, methods=["POST"]),
        Route("/stream", stream),
        Route("/big", big),
        Route("/events", events),
        Route("/sleep", sleep),
        Route("/file", file),
        Route("/boom", boom),
        WebSocketRoute("/ws", ws_echo),
    ],
    lifespan=lifespan,
)
