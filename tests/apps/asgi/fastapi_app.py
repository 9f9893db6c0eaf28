"""A real FastAPI app for the ASGI end-to-end tests: path and query parameters, pydantic
validation (422), a JSON body, dependency injection, lifespan state, a background task, and a
WebSocket that echoes bytes."""

import asyncio
import contextlib
import os

from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

STATE = os.environ.get("RWSGI_TEST_STATE_DIR", "/tmp")


@contextlib.asynccontextmanager
async def lifespan(app):
    app.state.items = {}
    app.state.pid = os.getpid()
    yield


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


def common(limit: int = 10):
    return {"limit": limit}


@app.get("/")
async def root():
    return {"hello": "fastapi", "pid": app.state.pid}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None, params: dict = Depends(common)):
    return {"item_id": item_id, "q": q, **params}


@app.post("/items", status_code=201)
async def create_item(item: Item, tasks: BackgroundTasks):
    if item.name in app.state.items:
        raise HTTPException(status_code=409, detail="exists")
    app.state.items[item.name] = item
    tasks.add_task(note_created, item.name)
    return {"created": item.name, "total": len(app.state.items)}


async def note_created(name):
    await asyncio.sleep(0.01)
    with open(os.path.join(STATE, f"asgi-fastapi-bg-{name}"), "w") as f:
        f.write("done\n")


@app.get("/sleep")
async def sleep(ms: int = 10):
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}


@app.websocket("/ws")
async def ws(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_bytes()
            await websocket.send_bytes(data)
    except WebSocketDisconnect:
        pass
