//! WebSocket on a connection (ASGI WebSocket spec 2.5). The transport did the handshake checks
//! and does the framing; here are the events: `websocket.connect` first, then the client's
//! messages in order, then one `websocket.disconnect`; `accept`, `send` and `close` from the app.
//!
//! A `websocket.close` before `accept` denies the handshake: the transport answers 403 (the
//! spec's rule when the denial-response extension is not offered). An exception before accept is
//! a 500, after it a close with 1011 (internal error), as uvicorn does.

use std::sync::atomic::Ordering;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyString};

use super::conn::{client_gone, message, ready_message, Conn, WsState, ERROR_500};
use super::inbox::WS_BACKLOG_LIMIT;
use super::message::{status_line, Msg};
use super::{WsMessage, WsOut};
use crate::{Head, Outcome};

/// `receive()` on a WebSocket.
pub(crate) fn receive<'py>(c: &mut Conn, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
    if c.ws == WsState::Fresh {
        c.ws = WsState::Connecting;
        return ready_message(py, intern!(py, "websocket.connect"), &[]);
    }
    if let Some(msg) = next_event(c, py)? {
        return super::awaitable::ready(py, msg);
    }
    c.wait_receive(py)
}

/// The next message for the app, if there is one: a client message, else the disconnect.
fn next_event<'py>(c: &mut Conn, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
    if let Some(msg) = c.ws_queue.pop_front() {
        let len = match &msg {
            WsMessage::Text(t) => t.len(),
            WsMessage::Binary(b) => b.len(),
        };
        let before = c.backlog.fetch_sub(len, Ordering::Relaxed);
        if before >= WS_BACKLOG_LIMIT && before - len < WS_BACKLOG_LIMIT {
            if let Some(t) = c.transport() {
                t.ws_resume_reading();
            }
        }
        let (key, value) = match msg {
            WsMessage::Text(t) => (intern!(py, "text"), PyString::new(py, &t).into_any()),
            WsMessage::Binary(b) => (intern!(py, "bytes"), PyBytes::new(py, &b).into_any()),
        };
        return Ok(Some(
            message(py, intern!(py, "websocket.receive"), &[(key, value)])?.into_any(),
        ));
    }
    if let Some((code, reason)) = &c.ws_closed {
        let msg = disconnect(py, *code, reason)?;
        return Ok(Some(msg));
    }
    Ok(None)
}

fn disconnect<'py>(py: Python<'py>, code: u16, reason: &str) -> PyResult<Bound<'py, PyAny>> {
    Ok(message(
        py,
        intern!(py, "websocket.disconnect"),
        &[
            (intern!(py, "code"), PyInt::new(py, code).into_any()),
            (intern!(py, "reason"), PyString::new(py, reason).into_any()),
        ],
    )?
    .into_any())
}

/// A message from the client.
pub(crate) fn on_message(c: &mut Conn, py: Python<'_>, msg: WsMessage) {
    c.ws_queue.push_back(msg);
    wake_receiver(c, py);
}

fn wake_receiver(c: &mut Conn, py: Python<'_>) {
    if c.ws == WsState::Fresh || !c.has_receiver(py) {
        return;
    }
    if let Ok(Some(msg)) = next_event(c, py) {
        // A message taken off the queue for a waiter that turns out to be cancelled is lost,
        // but a task is only cancelled when the app gives up on the connection.
        c.answer_receive(py, msg);
    }
}

/// The client closed (or the connection ended: 1006).
pub(crate) fn on_closed(c: &mut Conn, py: Python<'_>, code: u16, reason: String) {
    if c.ws_closed.is_none() {
        c.ws_closed = Some((code, reason));
    }
    c.disconnected = true;
    if c.ws == WsState::Accepted || c.ws == WsState::Connecting {
        c.ws = WsState::Closed;
    }
    wake_receiver(c, py);
}

/// The server is going away: the app hears 1001 and the client gets a close frame 1001.
pub(crate) fn going_away(c: &mut Conn, py: Python<'_>) {
    match c.ws {
        WsState::Accepted => {
            if let Some(t) = c.transport() {
                t.ws_close(1001, "server shutting down");
            }
        }
        // A handshake the app has not answered yet: refused, the client retries elsewhere.
        WsState::Fresh | WsState::Connecting => {
            c.answer_error(503, super::conn::ERROR_503);
        }
        WsState::Closed => {}
    }
    on_closed(c, py, 1001, String::new());
}

/// `send()` on a WebSocket. Ok(true): the transport paused, the caller waits.
pub(crate) fn send(c: &mut Conn, _py: Python<'_>, msg: Msg<'_>) -> PyResult<bool> {
    match (msg, c.ws) {
        (_, WsState::Closed) if c.disconnected => Err(client_gone()),
        (_, WsState::Closed) => Err(PyRuntimeError::new_err(
            "ASGI message sent after websocket.close",
        )),
        (_, _) if c.disconnected => Err(client_gone()),
        // The app may answer the handshake without reading websocket.connect first (Starlette
        // denies unknown routes that way).
        (
            Msg::WsAccept {
                subprotocol,
                mut headers,
            },
            WsState::Fresh | WsState::Connecting,
        ) => {
            if let Some(p) = subprotocol {
                headers.push((b"sec-websocket-protocol".to_vec(), p.into_bytes()));
            }
            let line = status_line(101);
            let head = Head {
                status: 101,
                status_line: &line,
                headers: &headers,
            };
            c.ws = WsState::Accepted;
            // A WebSocket lives as long as its conversation: the request timeout covered the
            // handshake only.
            c.disarm();
            match c.transport().map(|t| t.head(&head)) {
                Some(Ok(())) => Ok(false),
                _ => {
                    c.disconnected = true;
                    Err(client_gone())
                }
            }
        }
        (Msg::WsClose { .. }, WsState::Fresh | WsState::Connecting) => {
            deny(c);
            Ok(false)
        }
        (Msg::WsSend { bytes, text }, WsState::Accepted) => {
            let result = match (&bytes, &text) {
                (Some(b), None) => {
                    let data = b.to_cow();
                    c.transport().map(|t| t.ws_send(&WsOut::Binary(&data)))
                }
                (None, Some(t)) => {
                    let s = t.to_cow()?;
                    c.transport().map(|tr| tr.ws_send(&WsOut::Text(&s)))
                }
                _ => {
                    return Err(PyValueError::new_err(
                        "websocket.send needs exactly one of \"bytes\" and \"text\"",
                    ))
                }
            };
            c.flow(result)
        }
        (Msg::WsClose { code, reason }, WsState::Accepted) => {
            if let Some(t) = c.transport() {
                t.ws_close(code, &reason);
            }
            c.ws = WsState::Closed;
            Ok(false)
        }
        (Msg::WsSend { .. }, _) => Err(PyRuntimeError::new_err(
            "websocket.send before websocket.accept",
        )),
        (Msg::WsAccept { .. }, _) => Err(PyRuntimeError::new_err("websocket.accept sent twice")),
        (other, _) => Err(PyRuntimeError::new_err(format!(
            "unexpected ASGI message {} on a websocket connection",
            match other {
                Msg::Unknown(t) => t,
                _ => "of an http or lifespan type".to_string(),
            }
        ))),
    }
}

/// Refuses the handshake: 403, as the spec says for a close before accept.
fn deny(c: &mut Conn) {
    c.ws = WsState::Closed;
    c.answer_error(403, b"403 Forbidden\n");
}

/// The app's task ended (`error`: it raised, already logged).
pub(crate) fn done(c: &mut Conn, error: bool) {
    match c.ws {
        WsState::Fresh | WsState::Connecting if error => {
            c.answer_error(500, ERROR_500);
        }
        WsState::Fresh | WsState::Connecting => deny(c),
        WsState::Accepted => {
            if let Some(t) = c.transport() {
                t.ws_close(if error { 1011 } else { 1000 }, "");
            }
            c.finish(Outcome::Complete);
        }
        WsState::Closed => c.finish(Outcome::Complete),
    }
}
