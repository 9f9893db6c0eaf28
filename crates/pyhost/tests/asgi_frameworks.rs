//! Real frameworks from PyPI (pinned in scripts/requirements-test.txt) through the ASGI host:
//! Starlette and FastAPI, with their lifespan, streaming responses, request bodies,
//! FileResponse (pathsend) and WebSockets, on uvloop (installed in build/venv, so `Auto` picks
//! it).

mod asgi_support;

use asgi_support::*;
use pyhost::asgi::{AsgiConfig, Kind, WsMessage};
use pyhost::Outcome;

const STARLETTE: &str = r#"
import contextlib, os
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse, FileResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute

@contextlib.asynccontextmanager
async def lifespan(app):
    yield {"greeting": "hello from lifespan"}

async def hello(request):
    return JSONResponse({"message": request.state.greeting, "path": request.url.path,
                         "root": request.scope["root_path"]})

async def echo(request):
    body = await request.body()
    return PlainTextResponse(body[::-1])

async def stream(request):
    async def gen():
        for i in range(5):
            yield f"part{i};"
    return StreamingResponse(gen(), media_type="text/plain")

async def file(request):
    path = os.path.join(os.path.dirname(__file__), "static.txt")
    with open(path, "w") as f:
        f.write("static " * 100)
    return FileResponse(path)

async def ws(websocket):
    await websocket.accept(subprotocol="chat")
    while True:
        msg = await websocket.receive()
        if msg["type"] == "websocket.disconnect":
            return
        if msg.get("text") == "close":
            await websocket.close(code=4000)
            return
        await websocket.send_text("echo:" + msg.get("text", ""))

app = Starlette(routes=[Route("/hello", hello), Route("/echo", echo, methods=["POST"]),
                        Route("/stream", stream), Route("/file", file),
                        WebSocketRoute("/ws", ws)],
                lifespan=lifespan)
"#;

fn starlette() -> Host {
    host_with("starlette_app", STARLETTE, AsgiConfig::default())
}

fn get(h: &Host, path: &str) -> std::sync::Arc<Shared> {
    let (t, shared) = TestTransport::new(&[]);
    submit(
        h,
        Kind::Http,
        vars(
            "GET",
            path,
            &[
                ("SCRIPT_NAME", "/mount"),
                ("PATH_INFO", &path["/mount".len()..]),
            ],
        ),
        t,
    );
    drop(shared.finished());
    shared
}

#[test]
fn starlette_json_with_lifespan_state() {
    let h = starlette();
    assert!(h.log.has("(uvloop)"), "{}", h.log.all());
    let r = get(&h, "/mount/hello");
    let rec = r.lock();
    assert_eq!(rec.status, Some(200), "{}", h.log.all());
    assert_eq!(
        rec.text(),
        r#"{"message":"hello from lifespan","path":"/mount/hello","root":"/mount"}"#
    );
    assert_eq!(
        rec.header("content-type").as_deref(),
        Some("application/json")
    );
    drop(rec);
    assert!(h.host.stop());
}

#[test]
fn starlette_request_body_and_streaming() {
    let h = starlette();
    let (t, shared) = TestTransport::new(&[b"abc", b"def"]);
    submit(
        &h,
        Kind::Http,
        vars(
            "POST",
            "/mount/echo",
            &[
                ("SCRIPT_NAME", "/mount"),
                ("PATH_INFO", "/echo"),
                ("CONTENT_LENGTH", "6"),
            ],
        ),
        t,
    );
    assert_eq!(shared.finished().text(), "fedcba");
    let r = get(&h, "/mount/stream");
    let rec = r.lock();
    assert_eq!(rec.text(), "part0;part1;part2;part3;part4;");
    assert!(
        rec.body_calls >= 5,
        "streamed chunk by chunk: {}",
        rec.body_calls
    );
    assert_eq!(rec.outcome, Some(Outcome::Complete));
    drop(rec);
    assert!(h.host.stop());
}

#[test]
fn starlette_file_response_goes_through_pathsend() {
    let h = starlette();
    let r = get(&h, "/mount/file");
    let rec = r.lock();
    assert_eq!(rec.status, Some(200), "{}", h.log.all());
    assert_eq!(rec.body.len(), 700);
    assert_eq!(
        rec.file_calls, 1,
        "Starlette uses pathsend when the scope offers it"
    );
    drop(rec);
    assert!(h.host.stop());
}

#[test]
fn starlette_websocket_echo_and_close() {
    let h = starlette();
    let (t, shared) = TestTransport::new(&[]);
    let handle = submit(
        &h,
        Kind::WebSocket,
        vars(
            "GET",
            "/mount/ws",
            &[
                ("SCRIPT_NAME", "/mount"),
                ("PATH_INFO", "/ws"),
                ("HTTP_SEC_WEBSOCKET_PROTOCOL", "chat, other"),
            ],
        ),
        t,
    );
    drop(shared.wait("accept", |r| r.status.is_some()));
    {
        let rec = shared.lock();
        assert_eq!(rec.status, Some(101));
        assert_eq!(
            rec.header("sec-websocket-protocol").as_deref(),
            Some("chat")
        );
    }
    for i in 0..100 {
        handle.ws_message(WsMessage::Text(format!("m{i}")));
    }
    drop(shared.wait("100 echoes", |r| r.ws_sent.len() == 100));
    assert_eq!(shared.lock().ws_sent[99], Ok("echo:m99".to_string()));
    handle.ws_message(WsMessage::Text("close".into()));
    let rec = shared.finished();
    assert_eq!(rec.ws_closed, Some((4000, String::new())));
    drop(rec);
    assert!(h.host.stop());
}

const FASTAPI: &str = r#"
import asyncio, contextlib
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

@contextlib.asynccontextmanager
async def lifespan(app):
    app.state.items = {}
    yield

app = FastAPI(lifespan=lifespan)

class Item(BaseModel):
    name: str
    price: float

@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None):
    await asyncio.sleep(0.001)
    return {"item_id": item_id, "q": q}

@app.post("/items")
async def create_item(item: Item):
    app.state.items[item.name] = item
    return {"created": item.name, "count": len(app.state.items)}

@app.websocket("/ws")
async def ws(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_bytes()
            await websocket.send_bytes(data * 2)
    except WebSocketDisconnect as e:
        app.state.items["ws_closed"] = e.code
"#;

#[test]
fn fastapi_path_query_validation_and_body() {
    let h = host_with("fastapi_app", FASTAPI, AsgiConfig::default());
    let (t, shared) = TestTransport::new(&[]);
    submit(
        &h,
        Kind::Http,
        vars("GET", "/items/42", &[("QUERY_STRING", "q=x")]),
        t,
    );
    let rec = shared.finished();
    assert_eq!(rec.text(), r#"{"item_id":42,"q":"x"}"#, "{}", h.log.all());
    drop(rec);
    // Validation error from pydantic: 422.
    let r = request(&h, "GET", "/items/notanint", &[]);
    assert_eq!(r.lock().status, Some(422));
    let body: &[u8] = br#"{"name": "widget", "price": 2.5}"#;
    let (t, shared) = TestTransport::new(&[body]);
    submit(
        &h,
        Kind::Http,
        vars(
            "POST",
            "/items",
            &[
                ("CONTENT_TYPE", "application/json"),
                ("CONTENT_LENGTH", &body.len().to_string()),
            ],
        ),
        t,
    );
    assert_eq!(
        shared.finished().text(),
        r#"{"created":"widget","count":1}"#
    );
    let r = request(&h, "GET", "/nowhere", &[]);
    assert_eq!(r.lock().status, Some(404));
    assert!(h.host.stop());
}

#[test]
fn fastapi_websocket_binary_and_client_close() {
    let h = host_with("fastapi_ws", FASTAPI, AsgiConfig::default());
    let (t, shared) = TestTransport::new(&[]);
    let handle = submit(&h, Kind::WebSocket, vars("GET", "/ws", &[]), t);
    drop(shared.wait("accept", |r| r.status == Some(101)));
    handle.ws_message(WsMessage::Binary(vec![1, 2, 3]));
    drop(shared.wait("echo", |r| r.ws_sent.len() == 1));
    assert_eq!(shared.lock().ws_sent[0], Err(vec![1, 2, 3, 1, 2, 3]));
    handle.ws_closed(1000, String::new());
    let rec = shared.finished();
    assert_eq!(rec.outcome, Some(Outcome::Complete));
    drop(rec);
    assert!(h.host.stop());
}
