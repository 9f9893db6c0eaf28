//! One connection on the loop thread: the Python object whose bound methods are the app's
//! `receive` and `send`, the state both share, and the end of the app's task.
//!
//! `receive()` and `send()` return a complete awaitable (awaitable.rs) when they can answer at
//! once, and otherwise an asyncio future that the pump resolves when the transport's event
//! arrives (a body chunk, a disconnect, a resume, a WebSocket message). The HTTP and WebSocket
//! message handling is in http.rs and websocket.rs; this file holds what they share.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::awaitable::{ready, ready_none};
use super::deadline::Deadlines;
use super::inbox::Event;
use super::{http, websocket, Flow, Kind, Transport, VarSource, WsMessage};
use crate::log::{format_exception, ErrorLog, Level};
use crate::Outcome;

/// The HTTP response, as far as the app got.
pub(crate) enum Response {
    /// No `http.response.start` yet.
    Idle,
    /// Started; the head goes out with the first body message.
    Started {
        status: u16,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Head sent; body bytes sent so far and the Content-Length the app declared.
    Streaming {
        sent: u64,
        length: Option<u64>,
        bodiless: bool,
    },
    /// The last body message was sent (or the response failed): the outcome for the transport.
    Done(Outcome),
}

/// A WebSocket's handshake state.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum WsState {
    /// `websocket.connect` not yet received by the app.
    Fresh,
    /// The app got `websocket.connect`; no accept or close yet.
    Connecting,
    Accepted,
    /// Closed by the app (close sent) or by the client (disconnect delivered or pending).
    Closed,
}

#[pyclass(module = "rwsgi", name = "Connection")]
pub(crate) struct Conn {
    id: u64,
    pub(crate) kind: Kind,
    /// The request's variables until the app's task starts (the scope is built from them).
    /// (Behind a Mutex only to make the class Sync, as pyo3 requires; reached with
    /// `get_mut`, which never locks.)
    vars: Mutex<Option<Box<dyn VarSource>>>,
    /// The pump's `_forget`, called with `id` when the task is done.
    forget: Py<PyAny>,
    /// None once `finish` was called. (A Mutex for Sync only, as `vars`.)
    transport: Mutex<Option<Box<dyn Transport>>>,
    pub(crate) log: Arc<dyn ErrorLog>,
    event_loop: Py<PyAny>,
    pub(crate) head_request: bool,
    // receive side
    /// The last body chunk went to the app.
    pub(crate) body_done: bool,
    /// The transport answered Pending: it owes one `Event::Body`.
    pub(crate) body_owed: bool,
    /// A body chunk that arrived while nobody waited (the waiting receive was cancelled).
    pub(crate) early_body: Option<(Vec<u8>, bool)>,
    /// The client is gone.
    pub(crate) disconnected: bool,
    /// The future a `receive()` waits on.
    recv_waiter: Option<Py<PyAny>>,
    // send side
    pub(crate) response: Response,
    /// The transport answered Paused: `send()`s wait for `Event::Resume`.
    pub(crate) paused: bool,
    send_waiter: Option<Py<PyAny>>,
    // WebSocket
    pub(crate) ws: WsState,
    pub(crate) ws_queue: VecDeque<WsMessage>,
    /// The client's close (code, reason), delivered as `websocket.disconnect` once the queue is
    /// empty.
    pub(crate) ws_closed: Option<(u16, String)>,
    pub(crate) backlog: Arc<AtomicUsize>,
    /// Set by the task's done callback: the connection is over for the host.
    pub(crate) finished: bool,
    /// The app's task, once it runs (cancelled at the request timeout).
    pub(crate) task: Option<Py<PyAny>>,
    /// The request timeout's `loop.call_later` handle, while armed.
    timer: Option<Py<PyAny>>,
    deadlines: Arc<Deadlines>,
    /// The request timeout cancelled the task.
    timed_out: bool,
    /// `METHOD URI`, for the timeout's log line.
    what: String,
}

/// The body of the 500 and 503 the host answers itself.
pub(crate) const ERROR_500: &[u8] = b"500 Internal Server Error\n";
pub(crate) const ERROR_503: &[u8] = b"503 Service Unavailable\n";

pub(crate) fn client_gone() -> PyErr {
    // Spec 2.4: send() on a closed connection raises. Starlette and FastAPI treat OSError as
    // the client having gone.
    PyOSError::new_err("the client disconnected")
}

impl Conn {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        kind: Kind,
        vars: Box<dyn VarSource>,
        transport: Box<dyn Transport>,
        log: Arc<dyn ErrorLog>,
        event_loop: Py<PyAny>,
        forget: Py<PyAny>,
        head_request: bool,
        backlog: Arc<AtomicUsize>,
        deadlines: Arc<Deadlines>,
    ) -> Conn {
        Conn {
            id,
            kind,
            vars: Mutex::new(Some(vars)),
            forget,
            transport: Mutex::new(Some(transport)),
            log,
            event_loop,
            head_request,
            body_done: false,
            body_owed: false,
            early_body: None,
            disconnected: false,
            recv_waiter: None,
            response: Response::Idle,
            paused: false,
            send_waiter: None,
            ws: WsState::Fresh,
            ws_queue: VecDeque::new(),
            ws_closed: None,
            backlog,
            finished: false,
            task: None,
            timer: None,
            deadlines,
            timed_out: false,
            what: String::new(),
        }
    }

    /// Arms the request timeout: `_timeout` runs at `due` (deadline.rs, step 1).
    pub(crate) fn arm_timeout(me: &Py<Conn>, py: Python<'_>, due: Instant, what: String) {
        let b = me.bind(py);
        b.borrow_mut().what = what;
        let delay = due.saturating_duration_since(Instant::now()).as_secs_f64();
        let armed = b.getattr(intern!(py, "_timeout")).and_then(|cb| {
            let lp = b.borrow().event_loop.clone_ref(py);
            lp.bind(py)
                .call_method1(intern!(py, "call_later"), (delay, cb))
        });
        match armed {
            Ok(handle) => b.borrow_mut().timer = Some(handle.unbind()),
            Err(e) => {
                let c = b.borrow();
                // Untimed, then: the monitor must not take it over either.
                c.deadlines.remove(c.id);
                c.log(
                    Level::Error,
                    &format!("RW-PY016 cannot arm the request timeout: {e}"),
                );
            }
        }
    }

    /// The request no longer has a timeout: its response is complete, or it became a WebSocket
    /// (a conversation, not a request: the timeout covers its handshake only).
    pub(crate) fn disarm(&mut self) {
        if let Some(timer) = self.timer.take() {
            self.deadlines.remove(self.id);
            Python::attach(|py| {
                let _ = timer.bind(py).call_method0(intern!(py, "cancel"));
            });
        }
    }

    pub(crate) fn transport(&mut self) -> Option<&mut (dyn Transport + 'static)> {
        self.transport
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref_mut()
    }

    /// The request's variables, once (when the app's task starts).
    pub(crate) fn take_vars(&mut self) -> Option<Box<dyn VarSource>> {
        self.vars
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// A new future on the loop, for a `receive()`/`send()` that must wait.
    fn future<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.event_loop
            .bind(py)
            .call_method0(intern!(py, "create_future"))
    }

    /// `receive()` must wait: park a future for the pump to resolve.
    pub(crate) fn wait_receive<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let fut = self.future(py)?;
        if let Some(old) = self.recv_waiter.replace(fut.clone().unbind()) {
            // Two receive() calls waiting at once: the older one is answered with the same
            // error a second concurrent reader gets from any stream.
            if !is_done(py, old.bind(py)) {
                let _ = old.bind(py).call_method1(
                    intern!(py, "set_exception"),
                    (
                        PyRuntimeError::new_err("another receive() is already waiting")
                            .into_value(py),
                    ),
                );
            }
        }
        Ok(fut)
    }

    /// `send()` must wait for the transport to drain.
    pub(crate) fn wait_send<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let fut = self.future(py)?;
        self.send_waiter = Some(fut.clone().unbind());
        Ok(fut)
    }

    /// Completes the waiting `receive()` with `value`. False: nobody waits (or the waiter was
    /// cancelled), so the caller keeps the data for the next `receive()`.
    pub(crate) fn answer_receive(&mut self, py: Python<'_>, value: Bound<'_, PyAny>) -> bool {
        let Some(fut) = self.recv_waiter.take() else {
            return false;
        };
        resolve(py, fut.bind(py), Ok(value))
    }

    pub(crate) fn has_receiver(&self, py: Python<'_>) -> bool {
        self.recv_waiter
            .as_ref()
            .is_some_and(|f| !is_done(py, f.bind(py)))
    }

    /// Completes a paused `send()`: `None`, or the error that the client is gone.
    fn answer_send(&mut self, py: Python<'_>, gone: bool) {
        if let Some(fut) = self.send_waiter.take() {
            let value = if gone {
                Err(client_gone())
            } else {
                Ok(py.None().into_bound(py))
            };
            resolve(py, fut.bind(py), value);
        }
    }

    /// An event from the transport (the pump routes it here).
    pub(crate) fn on_event(&mut self, py: Python<'_>, event: Event) {
        match event {
            Event::Body { chunk, more } => http::on_body(self, py, chunk, more),
            Event::Disconnect => self.on_disconnect(py),
            Event::Resume => {
                self.paused = false;
                self.answer_send(py, false);
            }
            Event::WsMessage(msg) => websocket::on_message(self, py, msg),
            Event::WsClosed { code, reason } => websocket::on_closed(self, py, code, reason),
            Event::GoingAway => websocket::going_away(self, py),
            Event::New(_) | Event::Stop | Event::Watch(_) | Event::Unwatch(_) => {}
        }
    }

    /// What a transport answered to a body chunk or message: Ok(true) when `send()` must wait
    /// for a resume; the client-gone error when the transport failed.
    pub(crate) fn flow(&mut self, result: Option<std::io::Result<Flow>>) -> PyResult<bool> {
        match result {
            Some(Ok(Flow::Ready)) => Ok(self.paused),
            Some(Ok(Flow::Paused)) => {
                self.paused = true;
                Ok(true)
            }
            Some(Err(_)) | None => {
                self.disconnected = true;
                Err(client_gone())
            }
        }
    }

    pub(crate) fn on_disconnect(&mut self, py: Python<'_>) {
        if self.disconnected {
            return;
        }
        self.disconnected = true;
        self.answer_send(py, true);
        match self.kind {
            Kind::Http => http::deliver_disconnect(self, py),
            Kind::WebSocket => websocket::on_closed(self, py, 1006, String::new()),
        }
    }

    /// Ends the connection for the transport (once).
    pub(crate) fn finish(&mut self, outcome: Outcome) {
        self.disarm();
        let transport = self.transport.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(mut t) = transport.take() {
            t.finish(outcome);
        }
    }

    pub(crate) fn log(&self, level: Level, msg: &str) {
        self.log.log(level, msg);
    }

    /// Answers a plain-text error (500, 503) when nothing was sent yet, and finishes.
    pub(crate) fn answer_error(&mut self, status: u16, body: &[u8]) -> Outcome {
        self.answer_plain(status, body, None, Outcome::Failed)
    }

    /// A plain-text answer of the host's own (with `Retry-After` when given), and finishes
    /// with `outcome` (or ClientGone when the transport could not take it).
    pub(crate) fn answer_plain(
        &mut self,
        status: u16,
        body: &[u8],
        retry_after: Option<u64>,
        outcome: Outcome,
    ) -> Outcome {
        let outcome = match self.transport() {
            Some(t) => {
                let mut headers = vec![
                    (
                        b"content-type".to_vec(),
                        b"text/plain; charset=utf-8".to_vec(),
                    ),
                    (
                        b"content-length".to_vec(),
                        body.len().to_string().into_bytes(),
                    ),
                ];
                if let Some(secs) = retry_after {
                    headers.push((b"retry-after".to_vec(), secs.to_string().into_bytes()));
                }
                let line = super::message::status_line(status);
                let head = crate::Head {
                    status,
                    status_line: &line,
                    headers: &headers,
                };
                match t.head(&head).and_then(|()| t.body(body)) {
                    Ok(_) => outcome,
                    Err(_) => Outcome::ClientGone,
                }
            }
            None => Outcome::ClientGone,
        };
        self.finish(outcome);
        outcome
    }

    /// The request timeout (deadline.rs, step 1): answer 504 if nothing was sent yet, else cut
    /// the response; the app's `send()`s fail from now on (as after a disconnect), and its task
    /// is cancelled. `ours` is false when the timeout monitor already answered for it (the loop
    /// came back late): then only the task is cancelled.
    fn time_out(&mut self, py: Python<'_>, ours: bool) {
        self.timed_out = true;
        let stack = self
            .task
            .as_ref()
            .map(|t| task_stack(py, t.bind(py)))
            .unwrap_or_default();
        let answer = match self.response {
            _ if !ours => "the server had answered for it (RW-PY046)",
            Response::Idle | Response::Started { .. } => "answered 504",
            _ => "its response is cut",
        };
        self.log(
            Level::Error,
            &format!(
                "RW-PY045 ASGI request {} passed its request timeout: its task is cancelled,                  {answer}; where it waited:\n{stack}",
                self.what
            ),
        );
        if ours {
            match self.response {
                Response::Idle | Response::Started { .. } => {
                    self.answer_plain(504, crate::TIMEOUT_BODY, None, Outcome::TimedOut);
                }
                _ => self.finish(Outcome::Aborted),
            }
        } else {
            self.finish(Outcome::Aborted);
        }
        self.response = Response::Done(Outcome::TimedOut);
        // Like a client that left: a paused send() raises, a waiting receive() hears
        // http.disconnect (for an app that catches CancelledError and goes on).
        self.on_disconnect(py);
        if let Some(task) = &self.task {
            let _ = task.bind(py).call_method0(intern!(py, "cancel"));
        }
    }
}

/// Where a task waits: each coroutine of its `await` chain, outermost first, as traceback lines.
fn task_stack(py: Python<'_>, task: &Bound<'_, PyAny>) -> String {
    let mut out = String::new();
    let mut obj = task.call_method0(intern!(py, "get_coro")).ok();
    for _ in 0..64 {
        let Some(o) = obj.take().filter(|o| !o.is_none()) else {
            break;
        };
        let frame = o
            .getattr(intern!(py, "cr_frame"))
            .or_else(|_| o.getattr(intern!(py, "gi_frame")))
            .ok()
            .filter(|f| !f.is_none());
        if let Some(f) = frame {
            let line = f.getattr(intern!(py, "f_lineno")).map(|l| l.to_string());
            let code = f.getattr(intern!(py, "f_code"));
            let file = code
                .as_ref()
                .ok()
                .and_then(|c| c.getattr("co_filename").ok());
            let name = code.as_ref().ok().and_then(|c| c.getattr("co_name").ok());
            out.push_str(&format!(
                "  File \"{}\", line {}, in {}\n",
                file.map(|f| f.to_string()).unwrap_or_default(),
                line.unwrap_or_default(),
                name.map(|n| n.to_string()).unwrap_or_default()
            ));
        }
        obj = o
            .getattr(intern!(py, "cr_await"))
            .or_else(|_| o.getattr(intern!(py, "gi_yieldfrom")))
            .ok();
    }
    if out.is_empty() {
        out.push_str("  (no Python frame: the task had not started)\n");
    }
    out
}

fn is_done(py: Python<'_>, fut: &Bound<'_, PyAny>) -> bool {
    fut.call_method0(intern!(py, "done"))
        .and_then(|d| d.is_truthy())
        .unwrap_or(true)
}

/// Sets a future's result or exception unless it is already done (cancelled). True if set.
fn resolve(py: Python<'_>, fut: &Bound<'_, PyAny>, value: PyResult<Bound<'_, PyAny>>) -> bool {
    if is_done(py, fut) {
        return false;
    }
    let set = match value {
        Ok(v) => fut.call_method1(intern!(py, "set_result"), (v,)),
        Err(e) => fut.call_method1(intern!(py, "set_exception"), (e.into_value(py),)),
    };
    set.is_ok()
}

#[pymethods]
impl Conn {
    /// The app's `receive`.
    fn receive<'py>(mut slf: PyRefMut<'py, Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match slf.kind {
            Kind::Http => http::receive(&mut slf, py),
            Kind::WebSocket => websocket::receive(&mut slf, py),
        }
    }

    /// The app's `send`.
    fn send<'py>(
        mut slf: PyRefMut<'py, Self>,
        py: Python<'py>,
        message: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let msg = super::message::parse(&message)?;
        if slf.timer.is_some() && slf.deadlines.taken_over(slf.id) {
            // The loop was blocked past the timeout and the monitor answered for the request:
            // this send comes too late (deadline.rs, step 2).
            slf.time_out(py, false);
            return Err(client_gone());
        }
        let waits = match slf.kind {
            Kind::Http => http::send(&mut slf, py, msg)?,
            Kind::WebSocket => websocket::send(&mut slf, py, msg)?,
        };
        if waits {
            slf.wait_send(py)
        } else {
            ready_none(py)
        }
    }

    /// The request timeout's timer (see [`Conn::time_out`]).
    fn _timeout(mut slf: PyRefMut<'_, Self>, py: Python<'_>) {
        slf.timer = None;
        let ours = slf.deadlines.remove(slf.id);
        let over = slf.finished
            || matches!(slf.response, Response::Done(_))
            || slf.ws == WsState::Accepted;
        if !over {
            slf.time_out(py, ours);
        }
    }

    /// The task's done callback: log what went wrong and end the connection.
    fn _done(mut slf: PyRefMut<'_, Self>, py: Python<'_>, task: Bound<'_, PyAny>) {
        if slf.timer.is_some() && slf.deadlines.taken_over(slf.id) {
            // The loop was blocked past the timeout, the monitor answered, and the app ended
            // before its timer ran: nothing more goes to the client (no RW-PY015 500).
            slf.time_out(py, false);
        }
        slf.finished = true;
        let error = task_error(py, &task);
        match &error {
            // Whatever the cancel made of the task (CancelledError turned into another error,
            // the OSError of a send() after the timeout): the timeout line said it all.
            Some(_) if slf.timed_out => {}
            // The OSError our send() raised because the client left, let through by the app:
            // the client's doing, not a bug to log with a traceback (uvicorn drops such sends
            // silently instead of raising).
            Some(e) if slf.disconnected && e.is_instance_of::<PyOSError>(py) => slf.log(
                Level::Info,
                "RW-PY018 the client went away while the ASGI app was answering",
            ),
            Some(e) => slf.log(
                Level::Error,
                &format!(
                    "RW-PY010 exception in ASGI application:\n{}",
                    format_exception(py, e)
                ),
            ),
            None => {}
        }
        // Nobody will receive() or send() any more. The task goes too: it holds its exception,
        // whose frames hold this connection (its receive and send), a cycle the garbage collector
        // cannot see through a Rust field; and an async generator the app left unfinished is
        // finalised (its `finally:` runs) only once nothing holds those frames.
        slf.recv_waiter = None;
        slf.send_waiter = None;
        slf.task = None;
        match slf.kind {
            Kind::Http => http::done(&mut slf, error.is_some()),
            Kind::WebSocket => websocket::done(&mut slf, error.is_some()),
        }
        let (forget, id) = (slf.forget.clone_ref(py), slf.id);
        drop(slf);
        if let Err(e) = forget.bind(py).call1((id,)) {
            e.print(py);
        }
    }
}

/// The exception the task ended with, if any (a cancelled task counts as none).
fn task_error(py: Python<'_>, task: &Bound<'_, PyAny>) -> Option<PyErr> {
    if task
        .call_method0(intern!(py, "cancelled"))
        .and_then(|c| c.is_truthy())
        .unwrap_or(false)
    {
        return None;
    }
    match task.call_method0(intern!(py, "exception")) {
        Ok(e) if e.is_none() => None,
        Ok(e) => Some(PyErr::from_value(e)),
        Err(e) => Some(e),
    }
}

/// `{"type": ty}` plus `extra` items, as a complete awaitable.
pub(crate) fn ready_message<'py>(
    py: Python<'py>,
    ty: &Bound<'py, pyo3::types::PyString>,
    extra: &[(&Bound<'py, pyo3::types::PyString>, Bound<'py, PyAny>)],
) -> PyResult<Bound<'py, PyAny>> {
    ready(py, message(py, ty, extra)?.into_any())
}

/// `{"type": ty}` plus `extra` items.
pub(crate) fn message<'py>(
    py: Python<'py>,
    ty: &Bound<'py, pyo3::types::PyString>,
    extra: &[(&Bound<'py, pyo3::types::PyString>, Bound<'py, PyAny>)],
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), ty)?;
    for (k, v) in extra {
        d.set_item(*k, v)?;
    }
    Ok(d)
}
