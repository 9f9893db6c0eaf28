//! HTTP on a connection (ASGI HTTP spec 2.5): `http.request` / `http.disconnect` out of
//! `receive()`, `http.response.*` into `send()`, and what happens when the app's task ends.
//!
//! Rules, as uvicorn and the spec have them: the body arrives in chunks as the app asks for
//! them; once it is all delivered, `receive()` waits for the client to go away (or for the
//! response to end) and then says `http.disconnect`; a `send()` after the client left raises
//! `OSError`; a response must start before its body and not continue after its last body
//! message. Content-Length is the app's promise: bytes past it are not sent, a body that ends
//! short is cut (the transport closes the connection), as in WSGI mode (RW-PY005).

use std::fs::File;
use std::io::{self, Read, Seek};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes};

use super::conn::{client_gone, ready_message, Conn, Response, ERROR_500};
use super::message::{status_line, Bytes, Msg};
use super::BodyRead;
use crate::log::Level;
use crate::{Head, Outcome};

const SHORT_BODY: &str =
    "RW-PY005 response body shorter than its Content-Length; closing the connection";

/// `receive()` on an HTTP connection.
pub(crate) fn receive<'py>(c: &mut Conn, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
    if c.disconnected {
        return disconnect_message(py);
    }
    if !c.body_done {
        if let Some((chunk, more)) = c.early_body.take() {
            return request_message(c, py, chunk, more);
        }
        if !c.body_owed {
            match c.transport().map(|t| t.read_body()) {
                Some(BodyRead::Data { chunk, more }) => return request_message(c, py, chunk, more),
                Some(BodyRead::Pending) => c.body_owed = true,
                None => return disconnect_message(py),
            }
        }
        return c.wait_receive(py);
    }
    if matches!(c.response, Response::Done(_)) {
        return disconnect_message(py);
    }
    // The body is all read and the response still runs: wait for the client to go away (the
    // way Starlette's StreamingResponse watches for a disconnect).
    c.wait_receive(py)
}

fn request_dict<'py>(
    c: &mut Conn,
    py: Python<'py>,
    chunk: Vec<u8>,
    more: bool,
) -> PyResult<Bound<'py, PyAny>> {
    if !more {
        c.body_done = true;
    }
    Ok(super::conn::message(
        py,
        intern!(py, "http.request"),
        &[
            (intern!(py, "body"), PyBytes::new(py, &chunk).into_any()),
            (
                intern!(py, "more_body"),
                PyBool::new(py, more).to_owned().into_any(),
            ),
        ],
    )?
    .into_any())
}

fn request_message<'py>(
    c: &mut Conn,
    py: Python<'py>,
    chunk: Vec<u8>,
    more: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let msg = request_dict(c, py, chunk, more)?;
    super::awaitable::ready(py, msg)
}

fn disconnect_message(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    ready_message(py, intern!(py, "http.disconnect"), &[])
}

/// The body chunk the transport owed.
pub(crate) fn on_body(c: &mut Conn, py: Python<'_>, chunk: Vec<u8>, more: bool) {
    c.body_owed = false;
    if c.has_receiver(py) {
        let body_done = c.body_done;
        if let Ok(msg) = request_dict(c, py, chunk.clone(), more) {
            if c.answer_receive(py, msg) {
                return;
            }
        }
        // Not taken after all: undo and keep the chunk for the next receive().
        c.body_done = body_done;
    }
    c.early_body = Some((chunk, more));
}

/// The client left: a waiting `receive()` learns it now.
pub(crate) fn deliver_disconnect(c: &mut Conn, py: Python<'_>) {
    if let Ok(msg) = super::conn::message(py, intern!(py, "http.disconnect"), &[]) {
        c.answer_receive(py, msg.into_any());
    }
}

/// `send()` on an HTTP connection. Ok(true): the transport paused, the caller waits.
pub(crate) fn send(c: &mut Conn, py: Python<'_>, msg: Msg<'_>) -> PyResult<bool> {
    if c.disconnected {
        return Err(client_gone());
    }
    match msg {
        Msg::Start {
            status,
            headers,
            trailers,
        } => {
            if !matches!(c.response, Response::Idle) {
                return Err(PyRuntimeError::new_err(
                    "http.response.start sent twice (the response already started)",
                ));
            }
            if trailers {
                // Refused, not ignored: an app that asks for trailers (gRPC) must not believe
                // they were sent.
                return Err(PyRuntimeError::new_err(
                    "this server does not support HTTP trailers (the http.response.trailers \
                     extension is not in scope[\"extensions\"])",
                ));
            }
            c.response = Response::Started { status, headers };
            Ok(false)
        }
        Msg::Body { body, more } => send_body(c, &body, more),
        Msg::PathSend { path } => {
            let file = File::open(&path)
                .map_err(|e| PyOSError::new_err(format!("http.response.pathsend {path:?}: {e}")))?;
            send_file(c, py, &file, None, None, false)
        }
        Msg::ZeroCopy {
            file,
            offset,
            count,
            more,
        } => {
            let fd: i32 = file.call_method0(intern!(py, "fileno"))?.extract()?;
            // SAFETY: fd belongs to the app's file object, which `file` keeps alive for this
            // call; ManuallyDrop makes sure we never close it.
            let f = ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
            send_file(c, py, &f, offset, count, more)
        }
        Msg::Trailers => Err(PyRuntimeError::new_err(
            "http.response.trailers: this server does not support HTTP trailers",
        )),
        other => Err(PyRuntimeError::new_err(format!(
            "unexpected ASGI message {:?} on an http connection",
            msg_name(&other)
        ))),
    }
}

fn msg_name(m: &Msg<'_>) -> String {
    match m {
        Msg::Unknown(t) => t.clone(),
        Msg::WsAccept { .. } => "websocket.accept".into(),
        Msg::WsSend { .. } => "websocket.send".into(),
        Msg::WsClose { .. } => "websocket.close".into(),
        Msg::StartupComplete => "lifespan.startup.complete".into(),
        Msg::StartupFailed(_) => "lifespan.startup.failed".into(),
        Msg::ShutdownComplete => "lifespan.shutdown.complete".into(),
        Msg::ShutdownFailed(_) => "lifespan.shutdown.failed".into(),
        _ => "?".into(),
    }
}

fn bodiless(status: u16, head_request: bool) -> bool {
    head_request || status < 200 || status == 204 || status == 304
}

/// Sends the head if it has not gone out. `whole`: the length of the entire body, when this
/// message is the first and last one (so a response without Content-Length still gets one).
fn ensure_head(c: &mut Conn, whole: Option<u64>) -> PyResult<()> {
    let (status, mut headers) = match std::mem::replace(&mut c.response, Response::Idle) {
        Response::Started { status, headers } => (status, headers),
        Response::Idle => {
            return Err(PyRuntimeError::new_err(
                "http.response.body sent before http.response.start",
            ))
        }
        Response::Done(o) => {
            c.response = Response::Done(o);
            return Err(PyRuntimeError::new_err(
                "ASGI message sent after the response was complete",
            ));
        }
        streaming => {
            c.response = streaming;
            return Ok(());
        }
    };
    let mut length = None;
    for (name, value) in &headers {
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "invalid Content-Length {:?}",
                        String::from_utf8_lossy(value)
                    ))
                })?;
            length = Some(n);
        }
    }
    let bodiless = bodiless(status, c.head_request);
    if let (None, Some(n), false) = (length, whole, bodiless) {
        headers.push((b"content-length".to_vec(), n.to_string().into_bytes()));
        length = Some(n);
    }
    let line = status_line(status);
    let head = Head {
        status,
        status_line: &line,
        headers: &headers,
    };
    c.response = Response::Streaming {
        sent: 0,
        length,
        bodiless,
    };
    match c.transport().map(|t| t.head(&head)) {
        Some(Ok(())) => Ok(()),
        _ => {
            c.disconnected = true;
            Err(client_gone())
        }
    }
}

/// Bytes the body may still carry (Content-Length), and whether nothing may be sent at all.
fn room(c: &Conn) -> (Option<u64>, bool) {
    match &c.response {
        Response::Streaming {
            sent,
            length,
            bodiless,
        } => (length.map(|l| l.saturating_sub(*sent)), *bodiless),
        _ => (None, false),
    }
}

fn record(c: &mut Conn, n: u64) {
    if let Response::Streaming { sent, .. } = &mut c.response {
        *sent += n;
    }
}

/// After the last body message: Complete, or Aborted when Content-Length was not met.
fn complete(c: &mut Conn, py: Python<'_>) {
    let short = matches!(&c.response, Response::Streaming { sent, length: Some(l), bodiless: false } if sent < l);
    let outcome = if short {
        c.log(Level::Error, SHORT_BODY);
        Outcome::Aborted
    } else {
        Outcome::Complete
    };
    c.response = Response::Done(outcome);
    // The response is whole: the transport ends it now (nginx finalises the request, the
    // connection goes back to keep-alive) even if the app's task goes on, as Starlette's and
    // FastAPI's background tasks do after the response; the host still waits for the task when
    // it stops.
    c.finish(outcome);
    // A receive() waiting for the end of the response learns it is over.
    if c.body_done {
        deliver_disconnect(c, py);
    }
}

fn send_body(c: &mut Conn, body: &Bytes<'_>, more: bool) -> PyResult<bool> {
    let py = match body {
        Bytes::Bytes(b) => b.py(),
        Bytes::Array(a) => a.py(),
    };
    let data = body.to_cow();
    let whole =
        (!more && matches!(c.response, Response::Started { .. })).then_some(data.len() as u64);
    ensure_head(c, whole)?;
    let (room, bodiless) = room(c);
    let mut chunk: &[u8] = &data;
    if bodiless {
        chunk = &[];
    } else if let Some(room) = room {
        chunk = &chunk[..chunk.len().min(room as usize)];
    }
    let mut waits = c.paused;
    if !chunk.is_empty() {
        let result = c.transport().map(|t| t.body(chunk));
        waits = c.flow(result)?;
        record(c, chunk.len() as u64);
    }
    if !more {
        complete(c, py);
        // Nothing follows the last message: the app need not wait for the client to drain.
        return Ok(false);
    }
    Ok(waits)
}

/// pathsend / zerocopysend: the transport's sendfile, or read + body where it has none.
fn send_file(
    c: &mut Conn,
    py: Python<'_>,
    file: &File,
    offset: Option<u64>,
    count: Option<u64>,
    more: bool,
) -> PyResult<bool> {
    let meta = file
        .metadata()
        .map_err(|e| PyOSError::new_err(format!("cannot stat the file to send: {e}")))?;
    if !meta.is_file() {
        return Err(PyValueError::new_err(
            "only a regular file can be sent this way",
        ));
    }
    let offset = match offset {
        Some(o) => o,
        None => (&*file).stream_position().unwrap_or(0),
    };
    let mut len = meta.len().saturating_sub(offset);
    if let Some(n) = count {
        len = len.min(n);
    }
    let whole = (!more && matches!(c.response, Response::Started { .. })).then_some(len);
    ensure_head(c, whole)?;
    let (room, bodiless) = room(c);
    if bodiless {
        len = 0;
    } else if let Some(room) = room {
        len = len.min(room);
    }
    let mut waits = c.paused;
    if len > 0 {
        let sent = c.transport().and_then(|t| t.file(file, offset, len));
        waits = match sent {
            Some(result) => c.flow(Some(result))?,
            None => copy_file(c, file, offset, len)?,
        };
        record(c, len);
    }
    if !more {
        complete(c, py);
        return Ok(false);
    }
    Ok(waits)
}

/// For transports without sendfile: the file's bytes through `body()`, 64 KiB at a time.
fn copy_file(c: &mut Conn, file: &File, offset: u64, len: u64) -> PyResult<bool> {
    let mut f = file;
    f.seek(io::SeekFrom::Start(offset))
        .map_err(|e| PyOSError::new_err(format!("reading the file to send: {e}")))?;
    let mut left = len;
    let mut buf = vec![0u8; 64 * 1024];
    let mut waits = false;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = f
            .read(&mut buf[..want])
            .map_err(|e| PyOSError::new_err(format!("reading the file to send: {e}")))?;
        if n == 0 {
            break;
        }
        let result = c.transport().map(|t| t.body(&buf[..n]));
        waits = c.flow(result)?;
        left -= n as u64;
    }
    Ok(waits)
}

/// The app's task ended (`error`: it raised, already logged).
pub(crate) fn done(c: &mut Conn, error: bool) {
    let outcome = match std::mem::replace(&mut c.response, Response::Done(Outcome::Aborted)) {
        Response::Done(outcome) => outcome,
        _ if c.disconnected => Outcome::ClientGone,
        Response::Idle | Response::Started { .. } => {
            if !error {
                c.log(
                    Level::Error,
                    "RW-PY015 ASGI application returned without sending a response",
                );
            }
            c.answer_error(500, ERROR_500);
            return;
        }
        Response::Streaming { .. } => {
            if !error {
                c.log(
                    Level::Error,
                    "RW-PY015 ASGI application returned before its last http.response.body \
                     (more_body=False); closing the connection",
                );
            }
            Outcome::Aborted
        }
    };
    c.finish(outcome);
}
