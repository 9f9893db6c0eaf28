//! WebSocket events through the host (ASGI WebSocket spec 2.5): handshake, denial, errors,
//! the client's close, the server going away, and receive back-pressure. Cases follow uvicorn's
//! `tests/protocols/test_websocket.py` where it has one (named per test).

mod asgi_support;

use asgi_support::*;
use pyhost::asgi::{Kind, WsMessage, WS_BACKLOG_LIMIT};
use pyhost::Outcome;

fn ws(h: &Host) -> (pyhost::asgi::Handle, std::sync::Arc<Shared>) {
    let (t, shared) = TestTransport::new(&[]);
    let handle = submit(h, Kind::WebSocket, vars("GET", "/ws", &[]), t);
    (handle, shared)
}

/// uvicorn test_close_connection / test_reject_connection: a close before accept is a 403.
#[test]
fn close_before_accept_denies_with_403() {
    let h = host(
        "deny",
        r#"
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.close"})
"#,
    );
    let (_handle, shared) = ws(&h);
    let rec = shared.finished();
    assert_eq!(rec.status, Some(403));
    assert_eq!(rec.ws_closed, None);
    drop(rec);
    h.host.stop();
}

/// uvicorn test_asgi_return_value / test_app_close: an exception before accept is a 500,
/// after it a close with 1011.
#[test]
fn exceptions_are_500_before_accept_and_1011_after() {
    let h = host(
        "ws_raise",
        r#"
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    await receive()
    if scope["path"] == "/late":
        await send({"type": "websocket.accept"})
    raise RuntimeError("boom")
"#,
    );
    let (_h1, early) = ws(&h);
    assert_eq!(early.finished().status, Some(500));
    let (t, late) = TestTransport::new(&[]);
    submit(&h, Kind::WebSocket, vars("GET", "/late", &[]), t);
    let rec = late.finished();
    assert_eq!(rec.status, Some(101));
    assert_eq!(rec.ws_closed.as_ref().map(|c| c.0), Some(1011));
    drop(rec);
    assert!(h.log.has("RW-PY010"), "{}", h.log.all());
    h.host.stop();
}

const RECORDER: &str = r#"
seen = []
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": repr(seen).encode()})
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            seen.append(("disconnect", m["code"]))
            try:
                await send({"type": "websocket.send", "text": "too late"})
            except OSError:
                seen.append("OSError")
            return
        seen.append(m.get("text"))
"#;

/// uvicorn test_client_close: the client's close reaches the app as websocket.disconnect with
/// its code, after every message sent before it; a send() afterwards raises (spec 2.4).
#[test]
fn client_close_arrives_after_the_messages_and_send_then_raises() {
    let h = host("ws_client_close", RECORDER);
    let (handle, shared) = ws(&h);
    drop(shared.wait("accept", |r| r.status == Some(101)));
    handle.ws_message(WsMessage::Text("a".into()));
    handle.ws_message(WsMessage::Text("b".into()));
    handle.ws_closed(1001, "bye".into());
    assert_eq!(shared.finished().outcome, Some(Outcome::Complete));
    let r = request(&h, "GET", "/report", &[]);
    assert_eq!(
        r.lock().text(),
        "['a', 'b', ('disconnect', 1001), 'OSError']"
    );
    h.host.stop();
}

/// The server going away (nginx reload, worker stop): the app hears 1001 and the client gets a
/// close frame 1001.
#[test]
fn going_away_closes_with_1001() {
    let h = host("ws_going_away", RECORDER);
    let (_handle, shared) = ws(&h);
    drop(shared.wait("accept", |r| r.status == Some(101)));
    h.host.going_away();
    let rec = shared.finished();
    assert_eq!(rec.ws_closed.as_ref().map(|c| c.0), Some(1001));
    drop(rec);
    let r = request(&h, "GET", "/report", &[]);
    assert_eq!(r.lock().text(), "[('disconnect', 1001), 'OSError']");
    h.host.stop();
}

/// A transport stops reading while the app has WS_BACKLOG_LIMIT bytes it has not received,
/// and is told to read again once the app caught up.
#[test]
fn receive_back_pressure_tells_the_transport_to_resume() {
    let h = host(
        "ws_backlog",
        r#"
import asyncio
gate = asyncio.Event()
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    await receive()
    await send({"type": "websocket.accept"})
    await asyncio.sleep(0.3)          # a slow consumer: messages pile up meanwhile
    total = 0
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            return
        total += len(m["bytes"])
        if total >= 2 * 1024 * 1024:
            await send({"type": "websocket.send", "text": str(total)})
"#,
    );
    let (handle, shared) = ws(&h);
    drop(shared.wait("accept", |r| r.status == Some(101)));
    let chunk = vec![0u8; 256 * 1024];
    let mut sent = 0;
    while !handle.ws_backlogged() {
        handle.ws_message(WsMessage::Binary(chunk.clone()));
        sent += chunk.len();
    }
    assert_eq!(sent, WS_BACKLOG_LIMIT);
    drop(shared.wait("resume", |r| r.resume_reading == 1));
    assert!(!handle.ws_backlogged());
    for _ in 0..4 {
        handle.ws_message(WsMessage::Binary(chunk.clone()));
    }
    drop(shared.wait("the app's total", |r| !r.ws_sent.is_empty()));
    assert_eq!(shared.lock().ws_sent[0], Ok((2 * 1024 * 1024).to_string()));
    handle.ws_closed(1000, String::new());
    drop(shared.finished());
    h.host.stop();
}

#[test]
fn protocol_errors_raise_in_the_app() {
    let h = host(
        "ws_errors",
        r#"
seen = []
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": repr(seen).encode()})
        return
    await receive()
    for bad in ({"type": "websocket.send", "text": "early"},
                {"type": "http.response.start", "status": 200}):
        try:
            await send(bad)
        except RuntimeError as e:
            seen.append(str(e)[:40])
    await send({"type": "websocket.accept"})
    try:
        await send({"type": "websocket.send", "text": "x", "bytes": b"y"})
    except ValueError as e:
        seen.append("both")
    await send({"type": "websocket.close", "code": 1000})
    try:
        await send({"type": "websocket.send", "text": "after"})
    except RuntimeError as e:
        seen.append("after close")
"#,
    );
    let (_handle, shared) = ws(&h);
    drop(shared.finished());
    let r = request(&h, "GET", "/report", &[]);
    assert_eq!(
        r.lock().text(),
        "['websocket.send before websocket.accept', 'unexpected ASGI message of an http or li', 'both', 'after close']"
    );
    h.host.stop();
}
