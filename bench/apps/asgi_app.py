"""The one ASGI app every benchmarked ASGI server runs (bench/README.md, "ASGI"): FastAPI, so
the numbers include what a FastAPI user pays (routing, validation of the return value, JSON).

    /hello      {"message":"Hello World!"}, the per-request overhead of server + framework
    /64k        65,536 bytes, the response write path
    /sleep10ms  await asyncio.sleep(0.01): concurrency on one event loop per process
    /ws         WebSocket echo (text)

Every server loads it from build/bench-venv (python-home, --python-home or the venv's own
interpreter), so all of them import the same FastAPI and use uvloop.
"""

import asyncio

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import Response

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
