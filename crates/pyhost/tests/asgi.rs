//! The ASGI host against a real embedded CPython and asyncio loop: raw ASGI apps exercising the
//! protocol through a recording transport. Cases ported from uvicorn's and asgiref's suites
//! name the test they follow (uvicorn `tests/protocols/test_http.py`, `tests/test_lifespan.py`;
//! asgiref `tests/test_compatibility.py`); they are written our way against our transport.

mod asgi_support;

use std::sync::Arc;
use std::time::Duration;

use asgi_support::*;
use pyhost::asgi::{AsgiConfig, Kind, LoopKind};
use pyhost::Outcome;

const HELLO: &str = r#"
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Hello, world"})
"#;

#[test]
fn hello_world_gets_a_content_length() {
    let h = host("hello", HELLO);
    let r = request(&h, "GET", "/", &[]);
    let rec = r.lock();
    assert_eq!(rec.outcome, Some(Outcome::Complete));
    assert_eq!(rec.status, Some(200));
    assert_eq!(rec.status_line, b"200 OK");
    assert_eq!(rec.header("content-type").as_deref(), Some("text/plain"));
    // One body message with more_body=False: its length is the whole body's.
    assert_eq!(rec.header("content-length").as_deref(), Some("12"));
    assert_eq!(rec.text(), "Hello, world");
    assert_eq!(rec.finish_calls, 1);
    drop(rec);
    assert!(h.host.stop());
}

#[test]
fn hello_world_on_uvloop() {
    let h = host_with(
        "hello_uvloop",
        HELLO,
        AsgiConfig {
            loop_kind: LoopKind::Uvloop,
            ..AsgiConfig::default()
        },
    );
    assert!(
        h.log.has("RW-PY017 ASGI event loop started (uvloop)"),
        "{}",
        h.log.all()
    );
    let r = request(&h, "GET", "/", &[]);
    assert_eq!(r.lock().text(), "Hello, world");
    assert!(h.host.stop());
}

const SCOPE_APP: &str = r#"
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    lines = [f"{k}={scope[k]!r}" for k in sorted(scope) if k not in ("headers", "state", "extensions")]
    lines += [f"header={k!r}:{v!r}" for k, v in scope["headers"]]
    lines.append(f"state={type(scope['state']).__name__}")
    lines += [f"extension={e}" for e in sorted(scope["extensions"])]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": "\n".join(lines).encode()})
"#;

#[test]
fn scope_is_built_from_the_cgi_variables_with_the_environ_filters() {
    let h = host("scope", SCOPE_APP);
    let (t, shared) = TestTransport::new(&[]);
    let v = vars(
        "POST",
        "/caf\u{e9}/x",
        &[
            ("SCRIPT_NAME", "/mount"),
            ("PATH_INFO", "/caf\u{e9}/x"),
            ("REQUEST_URI", "/mount/caf%C3%A9/x?a=1"),
            ("QUERY_STRING", "a=1"),
            ("CONTENT_TYPE", "text/plain"),
            ("CONTENT_LENGTH", "0"),
            ("HTTP_CONTENT_TYPE", "text/plain"),
            ("HTTP_PROXY", "http://evil"),
            ("HTTP_X_FORWARDED_FOR", "10.0.0.1"),
            ("UWSGI_FILE", "/tmp/evil.py"),
            ("HTTPS", "on"),
            ("SERVER_PROTOCOL", "HTTP/1.0"),
        ],
    );
    submit(&h, Kind::Http, v, t);
    let rec = shared.finished();
    let text = rec.text();
    let lines: Vec<&str> = text.lines().collect();
    for want in [
        "type='http'",
        "method='POST'",
        "scheme='https'",
        // uvicorn test_http10_request: http_version follows the request line.
        "http_version='1.0'",
        // uvicorn test_root_path / test_raw_path: path holds the mount prefix, raw_path is
        // the path as sent.
        "root_path='/mount'",
        "path='/mount/caf\u{e9}/x'",
        "raw_path=b'/mount/caf%C3%A9/x'",
        "query_string=b'a=1'",
        "client=('127.0.0.1', 5555)",
        "server=('localhost', 80)",
        "asgi={'version': '3.0', 'spec_version': '2.5'}",
        "header=b'x-forwarded-for':b'10.0.0.1'",
        "header=b'content-type':b'text/plain'",
        "header=b'host':b'localhost'",
        "state=dict",
        "extension=http.response.pathsend",
        "extension=http.response.zerocopysend",
    ] {
        assert!(lines.contains(&want), "{want} missing from\n{text}");
    }
    // httpoxy, uWSGI's code-loading vars and nginx's duplicate Content-* never become headers.
    assert!(!text.contains("b'proxy'"), "{text}");
    assert!(!text.contains("uwsgi"), "{text}");
    assert_eq!(text.matches("b'content-type'").count(), 1, "{text}");
    assert!(!text.contains("trailers"), "{text}");
    drop(rec);
    h.host.stop();
}

const ECHO: &str = r#"
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    chunks = []
    while True:
        m = await receive()
        assert m["type"] == "http.request", m
        chunks.append(m["body"])
        if not m.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"|".join(chunks)})
"#;

#[test]
fn the_body_arrives_in_the_transports_chunks() {
    let h = host("echo", ECHO);
    let r = request(&h, "POST", "/", &[b"one", b"two", b"three"]);
    let rec = r.lock();
    assert_eq!(rec.text(), "one|two|three");
    // One read per receive(): the app pulls the body, nothing is read ahead (back-pressure).
    assert_eq!(rec.reads, 3);
    drop(rec);
    h.host.stop();
}

#[test]
fn a_pending_body_is_delivered_when_the_transport_feeds_it() {
    let h = host("echo_pending", ECHO);
    let (mut t, shared) = TestTransport::new(&[]);
    t.pending_body = true;
    let handle = submit(&h, Kind::Http, vars("POST", "/", &[]), t);
    drop(shared.wait("first read", |r| r.reads == 1));
    handle.body(b"late".to_vec(), false);
    let rec = shared.finished();
    assert_eq!(rec.text(), "late");
    drop(rec);
    h.host.stop();
}

/// uvicorn test_early_disconnect: a client that goes away while the app waits in receive()
/// delivers http.disconnect; and (spec 2.4) a send() afterwards raises.
#[test]
fn disconnect_reaches_a_waiting_receive_and_send_then_raises() {
    let h = host(
        "disconnect",
        r#"
import asyncio
seen = []
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    if scope["path"] == "/report":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": repr(seen).encode()})
        return
    m = await receive()
    seen.append(m["type"])
    m = await receive()          # body done: waits for the client to go away
    seen.append(m["type"])
    try:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})
    except OSError as e:
        seen.append("OSError")
"#,
    );
    let (t, shared) = TestTransport::new(&[b"body"]);
    let handle = submit(&h, Kind::Http, vars("POST", "/", &[]), t);
    drop(shared.wait("body read", |r| r.reads == 1));
    std::thread::sleep(Duration::from_millis(50));
    assert!(shared.lock().outcome.is_none(), "the app must still wait");
    handle.disconnect();
    let rec = shared.finished();
    assert_eq!(rec.outcome, Some(Outcome::ClientGone));
    assert_eq!(rec.status, None, "nothing is sent to a client that left");
    drop(rec);
    let r = request(&h, "GET", "/report", &[]);
    assert_eq!(
        r.lock().text(),
        "['http.request', 'http.disconnect', 'OSError']"
    );
    h.host.stop();
}

/// uvicorn test_read_after_response: receive() after the response is complete says
/// http.disconnect at once.
#[test]
fn receive_after_the_response_says_disconnect() {
    let h = host(
        "read_after",
        r#"
seen = []
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    if scope["path"] == "/report":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": repr(seen).encode()})
        return
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done"})
    seen.append(await receive())
"#,
    );
    let r = request(&h, "POST", "/", &[b"b"]);
    assert_eq!(r.lock().text(), "done");
    std::thread::sleep(Duration::from_millis(50));
    let r = request(&h, "GET", "/report", &[]);
    assert_eq!(r.lock().text(), "[{'type': 'http.disconnect'}]");
    h.host.stop();
}

/// Streaming with back-pressure: every send() waits while the transport is paused, and goes on
/// when it resumes (uvicorn's flow control, pause_writing/resume_writing).
#[test]
fn a_paused_transport_holds_send_until_resume() {
    let h = host(
        "stream",
        r#"
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for i in range(3):
        await send({"type": "http.response.body", "body": b"chunk%d;" % i, "more_body": True})
    await send({"type": "http.response.body", "body": b"end"})
"#,
    );
    let (mut t, shared) = TestTransport::new(&[]);
    t.pause = true;
    let handle = submit(&h, Kind::Http, vars("GET", "/", &[]), t);
    for n in 1..=3 {
        drop(shared.wait("a chunk", |r| r.body_calls == n));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(shared.lock().body_calls, n, "send() must wait for resume");
        handle.resume();
    }
    let rec = shared.finished();
    assert_eq!(rec.text(), "chunk0;chunk1;chunk2;end");
    assert_eq!(
        rec.header("content-length"),
        None,
        "a streamed body has no length"
    );
    assert_eq!(rec.outcome, Some(Outcome::Complete));
    drop(rec);
    h.host.stop();
}

/// A disconnect while send() is paused fails that send() with OSError.
#[test]
fn disconnect_fails_a_paused_send() {
    let h = host(
        "paused_gone",
        r#"
seen = []
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    if scope["path"] == "/report":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": repr(seen).encode()})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    try:
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
    except OSError:
        seen.append("OSError")
"#,
    );
    let (mut t, shared) = TestTransport::new(&[]);
    t.pause = true;
    let handle = submit(&h, Kind::Http, vars("GET", "/", &[]), t);
    drop(shared.wait("the chunk", |r| r.body_calls == 1));
    handle.disconnect();
    assert_eq!(shared.finished().outcome, Some(Outcome::ClientGone));
    let r = request(&h, "GET", "/report", &[]);
    assert_eq!(r.lock().text(), "['OSError']");
    h.host.stop();
}

fn app_error(name: &str, body: &str) -> (Arc<Shared>, Host) {
    let src = format!(
        "async def app(scope, receive, send):\n    if scope['type'] == 'lifespan':\n        return\n{body}"
    );
    let h = host(name, &src);
    let r = request(&h, "GET", "/", &[]);
    (r, h)
}

/// uvicorn test_app_exception: an exception before the response is a 500, traceback logged.
#[test]
fn exception_before_the_response_is_a_500_with_the_traceback() {
    let (r, h) = app_error("raise", "    raise ValueError('boom')\n");
    let rec = r.lock();
    assert_eq!(rec.status, Some(500));
    assert_eq!(rec.text(), "500 Internal Server Error\n");
    assert_eq!(rec.outcome, Some(Outcome::Failed));
    assert!(
        h.log.has("RW-PY010 exception in ASGI application"),
        "{}",
        h.log.all()
    );
    assert!(h.log.has("ValueError: boom"), "{}", h.log.all());
    assert!(h.log.has("Traceback"), "{}", h.log.all());
    drop(rec);
    h.host.stop();
}

/// uvicorn test_exception_during_response: after the head, the response is cut, not a 500.
#[test]
fn exception_during_the_response_cuts_it() {
    let (r, h) = app_error(
        "raise_late",
        "    await send({'type': 'http.response.start', 'status': 200})\n    await send({'type': 'http.response.body', 'body': b'1', 'more_body': True})\n    raise ValueError('late')\n",
    );
    let rec = r.lock();
    assert_eq!(rec.status, Some(200));
    assert_eq!(rec.text(), "1");
    assert_eq!(rec.outcome, Some(Outcome::Aborted));
    drop(rec);
    h.host.stop();
}

/// uvicorn test_no_response_returned / test_missing_start_message: 500.
#[test]
fn no_response_or_no_start_is_a_500() {
    let (r, h) = app_error("no_response", "    pass\n");
    assert_eq!(r.lock().status, Some(500));
    assert!(h.log.has("RW-PY015"), "{}", h.log.all());
    h.host.stop();
    let (r, h) = app_error(
        "no_start",
        "    await send({'type': 'http.response.body', 'body': b''})\n",
    );
    assert_eq!(r.lock().status, Some(500));
    assert!(h.log.has("before http.response.start"), "{}", h.log.all());
    h.host.stop();
}

/// uvicorn test_partial_response_returned: a start without the last body cuts the response.
#[test]
fn returning_mid_response_cuts_it() {
    let (r, h) = app_error(
        "partial",
        "    await send({'type': 'http.response.start', 'status': 200})\n    await send({'type': 'http.response.body', 'body': b'x', 'more_body': True})\n",
    );
    assert_eq!(r.lock().outcome, Some(Outcome::Aborted));
    assert!(h.log.has("RW-PY015"), "{}", h.log.all());
    h.host.stop();
}

/// uvicorn test_duplicate_start_message and test_message_after_body_complete: the app gets an
/// error; the response already complete stays complete.
#[test]
fn out_of_order_messages_raise_in_the_app() {
    let (r, h) = app_error(
        "dup_start",
        "    await send({'type': 'http.response.start', 'status': 200})\n    await send({'type': 'http.response.start', 'status': 200})\n",
    );
    assert_eq!(r.lock().status, Some(500));
    assert!(h.log.has("sent twice"), "{}", h.log.all());
    h.host.stop();
    let (r, h) = app_error(
        "after_complete",
        "    await send({'type': 'http.response.start', 'status': 200})\n    await send({'type': 'http.response.body', 'body': b'ok'})\n    await send({'type': 'http.response.body', 'body': b'more'})\n",
    );
    let rec = r.lock();
    assert_eq!(rec.text(), "ok");
    assert_eq!(rec.outcome, Some(Outcome::Complete));
    assert!(
        h.log.wait("after the response was complete"),
        "{}",
        h.log.all()
    );
    drop(rec);
    h.host.stop();
}

/// uvicorn test_response_header_splitting: CR/LF in a header never reaches the client.
#[test]
fn header_injection_is_refused() {
    let (r, h) = app_error(
        "splitting",
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'key', b'value\\r\\nCookie: smuggled=value')]})\n    await send({'type': 'http.response.body', 'body': b''})\n",
    );
    let rec = r.lock();
    assert_eq!(rec.status, Some(500));
    assert!(!format!("{:?}", rec.headers).contains("smuggled"));
    assert!(h.log.has("control character"), "{}", h.log.all());
    drop(rec);
    h.host.stop();
}

#[test]
fn hop_by_hop_headers_are_dropped_not_sent() {
    let (r, h) = app_error(
        "hop",
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'connection', b'close'), (b'x-ok', b'1')]})\n    await send({'type': 'http.response.body', 'body': b'k'})\n",
    );
    let rec = r.lock();
    assert_eq!(rec.header("connection"), None);
    assert_eq!(rec.header("x-ok").as_deref(), Some("1"));
    drop(rec);
    h.host.stop();
}

#[test]
fn trailers_are_refused_cleanly() {
    let (r, h) = app_error(
        "trailers",
        "    await send({'type': 'http.response.start', 'status': 200, 'trailers': True})\n",
    );
    assert_eq!(r.lock().status, Some(500));
    assert!(
        h.log.has("does not support HTTP trailers"),
        "{}",
        h.log.all()
    );
    h.host.stop();
}

#[test]
fn content_length_is_the_apps_promise() {
    let (r, h) = app_error(
        "cl_short",
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-length', b'10')]})\n    await send({'type': 'http.response.body', 'body': b'short'})\n",
    );
    assert_eq!(r.lock().outcome, Some(Outcome::Aborted));
    assert!(h.log.has("RW-PY005"), "{}", h.log.all());
    h.host.stop();
    let (r, h) = app_error(
        "cl_long",
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-length', b'3')]})\n    await send({'type': 'http.response.body', 'body': b'toolong'})\n",
    );
    let rec = r.lock();
    assert_eq!(rec.text(), "too");
    assert_eq!(rec.outcome, Some(Outcome::Complete));
    drop(rec);
    h.host.stop();
}

#[test]
fn head_requests_send_no_body() {
    let h = host("head", HELLO);
    let r = request(&h, "HEAD", "/", &[]);
    let rec = r.lock();
    assert_eq!(rec.status, Some(200));
    assert!(rec.body.is_empty());
    assert_eq!(rec.outcome, Some(Outcome::Complete));
    drop(rec);
    h.host.stop();
}

const FILES: &str = r#"
import os
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    path = os.path.join(os.path.dirname(__file__), "data.txt")
    with open(path, "wb") as f:
        f.write(b"0123456789" * 100)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    if scope["path"] == "/pathsend":
        await send({"type": "http.response.pathsend", "path": path})
    else:
        with open(path, "rb") as f:
            await send({"type": "http.response.zerocopysend", "file": f, "offset": 5, "count": 20,
                        "more_body": True})
            await send({"type": "http.response.body", "body": b"!"})
"#;

#[test]
fn pathsend_and_zerocopysend_use_the_transports_sendfile() {
    let h = host("files", FILES);
    let r = request(&h, "GET", "/pathsend", &[]);
    let rec = r.lock();
    assert_eq!(rec.body.len(), 1000);
    assert_eq!(rec.file_calls, 1);
    assert_eq!(rec.header("content-length").as_deref(), Some("1000"));
    drop(rec);
    let r = request(&h, "GET", "/zerocopy", &[]);
    let rec = r.lock();
    assert_eq!(rec.text(), "56789012345678901234!");
    assert_eq!(rec.file_calls, 1);
    drop(rec);
    h.host.stop();
}

#[test]
fn files_are_copied_where_the_transport_has_no_sendfile() {
    let h = host("files_copy", FILES);
    let (mut t, shared) = TestTransport::new(&[]);
    t.files = false;
    submit(&h, Kind::Http, vars("GET", "/pathsend", &[]), t);
    let rec = shared.finished();
    assert_eq!(rec.body.len(), 1000);
    assert_eq!(rec.file_calls, 0);
    drop(rec);
    h.host.stop();
}

/// asgiref test_compatibility: a double-callable (ASGI 2) app is served too.
#[test]
fn asgi2_double_callable_apps_are_served() {
    let h = host(
        "asgi2",
        r#"
class app:
    def __init__(self, scope):
        self.scope = scope
    async def __call__(self, receive, send):
        if self.scope["type"] == "lifespan":
            return
        await send({"type": "http.response.start", "status": 201})
        await send({"type": "http.response.body", "body": b"two"})
"#,
    );
    let r = request(&h, "GET", "/", &[]);
    assert_eq!(r.lock().status, Some(201));
    assert_eq!(r.lock().text(), "two");
    h.host.stop();
}
