"""A plain ASGI 3 app (no framework: it runs on any interpreter) that misbehaves on request, for
the ASGI fault tests (tests/test_fault_asgi.py):

    /hello              200 "hello"
    /pid                {"pid": N}: which process served it
    /sleep?s=N          `await asyncio.sleep(N)`: a slow request the loop can cancel
    /swallow?s=N        the same, but it catches CancelledError and sleeps on (an app that
                        ignores the cancel must still be answered at its timeout)
    /stream?n=N         a first chunk, then `await asyncio.sleep(600)`: a response started and
                        never finished
    /block?s=N          `time.sleep(N)`: synchronous code that blocks the event loop itself
    /headers            how many headers the app got
"""

import asyncio
import json
import os
import time
from urllib.parse import parse_qs


def _arg(scope, name, default):
    values = parse_qs(scope.get("query_string", b"").decode()).get(name)
    return float(values[0]) if values else default


async def _answer(send, body: bytes, ctype=b"text/plain"):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", ctype)]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"].rsplit("/", 1)[-1]
    if path == "pid":
        return await _answer(send, json.dumps({"pid": os.getpid()}).encode(), b"application/json")
    if path == "sleep":
        await asyncio.sleep(_arg(scope, "s", 600))
    elif path == "swallow":
        try:
            await asyncio.sleep(_arg(scope, "s", 600))
        except asyncio.CancelledError:
            await asyncio.sleep(_arg(scope, "s", 600))
    elif path == "stream":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first chunk\n", "more_body": True})
        await asyncio.sleep(600)
        await send({"type": "http.response.body", "body": b"never\n"})
        return
    elif path == "block":
        time.sleep(_arg(scope, "s", 600))
    elif path == "headers":
        return await _answer(send, str(len(scope["headers"])).encode())
    await _answer(send, b"hello")
