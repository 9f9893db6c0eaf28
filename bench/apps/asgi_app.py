"""The one ASGI app every benchmarked ASGI server runs (bench/README.md, "ASGI"): FastAPI, so
the numbers include what a FastAPI user pays (routing, validation of the return value, JSON).

    /hello      {"message":"Hello World!"}, the per-request overhead of server + framework
    /64k        65,536 bytes, the response write path
    /sleep10ms  await asyncio.sleep(0.01): concurrency on one event loop per process
    /ws         WebSocket echo (text)
    /callgrind/zero, /callgrind/dump   bench/profile's markers (as in apps/router.py)

Every server loads it from build/bench-venv (python-home, --python-home or the venv's own
interpreter), so all of them import the same FastAPI and use uvloop.
"""

import asyncio
import os

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, Response

BODY_64K = (b"0123456789abcdef" * 4096)[:65536]
SLEPT = b"slept 10 ms\n"

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/hello")
async def hello():
    return {"message": "Hello World!"}


@app.get("/64k")
async def body64k():
    return Response(BODY_64K, media_type="text/plain")


@app.get("/sleep10ms")
async def sleep10ms():
    await asyncio.sleep(0.01)
    return Response(SLEPT, media_type="text/plain")


@app.websocket("/ws")
async def ws(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


@app.get("/callgrind/{what}")
async def callgrind_mark(what: str):
    """bench/profile's markers: under `valgrind --tool=callgrind --zero-before=sched_get_priority_min
    --dump-before=sched_get_priority_max`, these libc calls (which nothing else makes) zero and
    dump the counters of the process that serves them (see apps/router.py)."""
    if what == "zero":
        os.sched_get_priority_min(0)
    elif what == "dump":
        os.sched_get_priority_max(0)
    else:
        return PlainTextResponse("not found\n", status_code=404)
    return PlainTextResponse("marked\n")
