//! Running one request: environ, the app call, the iterable loop, `close()`, errors.

use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::time::Instant;

use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyIterator, PyList, PyTuple, PyType};

use crate::cpu_sample;
use crate::environ;
use crate::filewrapper::FileWrapper;
use crate::input::InputState;
use crate::interrupt;
use crate::log::{format_exception, ErrorLog, Level};
use crate::request_stats;
use crate::response::{ResponseState, SendError};
use crate::scope::{Scope, SendSlice};
use crate::start_response::StartResponse;
use crate::stats::{self, Field};
use crate::watchdog::{self, Ended, Watch};
use crate::wsgi_errors::Errors;
use crate::wsgi_input::Input;
use crate::{admit, gil, App, Body, Outcome, Request, Responder, TIMEOUT_BODY};

const ERROR_BODY: &[u8] = b"500 Internal Server Error\n";

/// Closes the scope when `handle` leaves, whatever the path (unwinding included).
struct CloseOnDrop<'a>(&'a Scope);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Run one request through the application. See the crate docs for the GIL policy.
///
/// Threads that serve many requests should hold a [`crate::register_thread`] guard for their
/// whole life: without it every call creates and destroys a Python thread state, which costs time
/// and loses the app's `threading.local()` data between requests.
pub fn handle(
    app: &App,
    req: &Request<'_>,
    body: &mut dyn Body,
    out: &mut dyn Responder,
    log: &dyn ErrorLog,
) -> Outcome {
    request_stats::begin();
    if !crate::is_initialized() {
        log.log(
            Level::Error,
            "RW-PY002 request received before Python was initialised",
        );
        return answer_500(out);
    }
    let input = InputState::new(environ::content_length(req));
    let response = ResponseState::new(environ::is_head(req));
    // SAFETY: the CloseOnDrop guard below closes the scope before this function returns or
    // unwinds, i.e. before the borrows of body/out/log end; and we do not touch body/out directly
    // while it is open.
    let scope = Arc::new(unsafe { Scope::open(body, out, log, input, response) });
    let _close = CloseOnDrop(&scope);
    // Into Python only when admitted (admit.rs); a thread holding a permit already goes on.
    let admitted = admit::ForRequest::enter();
    // The request timeout counts from here (the wait for admission is not the app's time), and
    // the watch ends (the watchdog done with req's borrows) before the scope closes.
    let watch = watchdog::begin(req);
    let account = Account::start();
    let next = gil::attach(|py| run(py, app, req, &scope));
    account.end();
    // Done with Python: a thread admitted for this request alone lets the next one in before
    // sending the copied-out body, so that its wake-up overlaps this send instead of leaving
    // the GIL idle (a thread holding a Permit across requests keeps it).
    drop(admitted);
    let outcome = match next {
        Next::Done(outcome) => outcome,
        Next::Send(body) => send_copied(&scope, &body),
    };
    if let Some(watch) = watch {
        end_watch(watch, req, log);
    }
    outcome
}

/// After a request with a timeout: an exception raised for it that has not landed yet must not
/// hit the thread's next request.
fn end_watch(watch: Watch, req: &Request<'_>, log: &dyn ErrorLog) {
    let ident = watch.ident();
    match watch.end() {
        Ended::Finished => {}
        Ended::Interrupted => interrupt::clear_pending(ident),
        Ended::Abandoned => {
            interrupt::clear_pending(ident);
            log.log(
                Level::Info,
                &format!(
                    "RW-PY043 the thread of request {} came back after all; the server had already answered for it",
                    watchdog::describe(req)
                ),
            );
        }
    }
}

/// What one admitted request cost, for the stats and the admission controller. The thread's CPU
/// clock is a system call, so only some requests read it (`cpu_sample`): `cpu` holds the
/// reading at the start and how many times the request's CPU counts.
struct Account {
    at: Instant,
    cpu: Option<(u64, u64)>,
}

impl Account {
    fn start() -> Account {
        Account {
            at: Instant::now(),
            cpu: cpu_sample::start().map(|weight| (gil::thread_cpu_ns(), weight)),
        }
    }

    fn end(self) {
        let admitted = self.at.elapsed();
        stats::add(Field::Requests, 1);
        stats::add_duration(Field::AdmittedNs, admitted);
        if let Some((start, weight)) = self.cpu {
            let used = gil::thread_cpu_ns().saturating_sub(start);
            stats::add(Field::CpuNs, used.saturating_mul(weight));
        }
        cpu_sample::end(admitted);
        admit::request_done();
    }
}

/// What is left once Python is done with a request.
enum Next {
    Done(Outcome),
    /// A small list/tuple response, copied out to be sent after the GIL is released: the request
    /// then takes the GIL once, not twice (under load every extra take waits for another thread).
    Send(Vec<u8>),
}

/// Largest list/tuple response copied out instead of sent from Python's own buffers.
const COPY_LIMIT: usize = 64 * 1024;

fn run(py: Python<'_>, app: &App, req: &Request<'_>, scope: &Arc<Scope>) -> Next {
    match call_app(py, app, req, scope).map(|it| bare_body(py, it)) {
        Ok(iterable) => match copy_small_sequence(scope, &iterable) {
            Some(body) => Next::Send(body),
            None => Next::Done(respond(py, scope, &iterable)),
        },
        Err(outcome) => Next::Done(outcome),
    }
}

/// An extension for apps written for uWSGI, which sends a bare `bytes` returned by the app as
/// the body: `bytes` or `bytearray` becomes a one-item tuple, the whole body (PEP 3333 would
/// iterate it and fail on the first int). A `str` stays an error: its encoding is the app's to
/// choose.
fn bare_body<'py>(py: Python<'py>, iterable: Bound<'py, PyAny>) -> Bound<'py, PyAny> {
    let body = if iterable.is_instance_of::<PyBytes>() {
        iterable.clone()
    } else if let Ok(array) = iterable.cast::<PyByteArray>() {
        PyBytes::new(py, &array.to_vec()).into_any()
    } else {
        return iterable;
    };
    match PyTuple::new(py, [body]) {
        Ok(tuple) => tuple.into_any(),
        Err(_) => iterable,
    }
}

/// The body of an exact list or tuple of bytes under COPY_LIMIT, once start_response was
/// called. Such a response has no close() (builtins have none) and iterating it runs no Python
/// code, so nothing is reordered by sending it after the GIL is released. None: take the
/// general path (which also reports every error).
fn copy_small_sequence(scope: &Scope, iterable: &Bound<'_, PyAny>) -> Option<Vec<u8>> {
    let items: Vec<Bound<'_, PyAny>> = if let Ok(list) = iterable.cast_exact::<PyList>() {
        list.iter().collect()
    } else if let Ok(tuple) = iterable.cast_exact::<PyTuple>() {
        tuple.iter().collect()
    } else {
        return None;
    };
    if !scope.lock_output().started() {
        return None;
    }
    let mut body = Vec::new();
    for item in &items {
        let bytes = item.cast_exact::<PyBytes>().ok()?.as_bytes();
        if body.len() + bytes.len() > COPY_LIMIT {
            return None;
        }
        body.extend_from_slice(bytes);
    }
    Some(body)
}

/// Send a copied-out body and finish, without the GIL.
fn send_copied(scope: &Scope, body: &[u8]) -> Outcome {
    let result = {
        let mut side = scope.lock_output();
        side.send(body)
            .and_then(|()| side.ensure_head())
            .map(|()| side.short_body())
    };
    match result {
        Ok(false) => Outcome::Complete,
        Ok(true) => {
            scope.log(Level::Error, SHORT_BODY);
            Outcome::Aborted
        }
        Err(SendError::Gone(_)) => Outcome::ClientGone,
        // copy_small_sequence checked that start_response was called.
        Err(SendError::NotStarted) => Outcome::Aborted,
    }
}

const SHORT_BODY: &str =
    "RW-PY005 response body shorter than its Content-Length; closing the connection";

/// Load the app, build environ, call it. Err: the outcome of a failure already answered.
fn call_app<'py>(
    py: Python<'py>,
    app: &App,
    req: &Request<'_>,
    scope: &Arc<Scope>,
) -> Result<Bound<'py, PyAny>, Outcome> {
    let callable = match app.get(py) {
        Ok(c) => c,
        Err(e) if interrupt::is_timeout(py, &e) => return Err(timed_out(py, scope)),
        Err(e) => {
            request_stats::exception();
            scope.log(Level::Error, &app.load_error_message(py, &e));
            return Err(send_500(py, scope));
        }
    };
    let result = (|| -> PyResult<Bound<'_, PyAny>> {
        let input = Bound::new(py, Input::new(scope.clone()))?;
        let errors = Bound::new(py, Errors::new(scope.clone()))?;
        let env = environ::build(py, req, input.as_any(), errors.as_any())?;
        let start_response = Bound::new(py, StartResponse::new(scope.clone()))?;
        callable.call1((env, start_response))
    })();
    result.map_err(|e| fail(py, scope, &e))
}

/// Send the iterable's chunks and call its close().
fn respond(py: Python<'_>, scope: &Scope, iterable: &Bound<'_, PyAny>) -> Outcome {
    let outcome = consume(py, scope, iterable);
    // PEP 3333: close() exactly once, whatever happened while iterating.
    let outcome = match call_close(py, iterable) {
        Ok(()) => outcome,
        Err(e) if interrupt::is_timeout(py, &e) => {
            scope.log(Level::Error, TIMED_OUT_IN_CLOSE);
            outcome
        }
        Err(e) => {
            request_stats::exception();
            scope.log(
                Level::Error,
                &format!(
                    "RW-PY004 exception in close() of the response iterable:\n{}",
                    format_exception(py, &e)
                ),
            );
            if outcome == Outcome::Complete && !scope.lock_output().head_sent() {
                send_500(py, scope)
            } else {
                outcome
            }
        }
    };
    outcome
}

fn call_close(py: Python<'_>, iterable: &Bound<'_, PyAny>) -> PyResult<()> {
    // Builtin lists and tuples have no close(); asking would build and discard an
    // AttributeError on every such response.
    if iterable.is_exact_instance_of::<PyList>() || iterable.is_exact_instance_of::<PyTuple>() {
        return Ok(());
    }
    if iterable.hasattr(intern!(py, "close"))? {
        iterable.call_method0(intern!(py, "close"))?;
    }
    Ok(())
}

/// Iterate the response and send it. Does not call close().
fn consume(py: Python<'_>, scope: &Scope, iterable: &Bound<'_, PyAny>) -> Outcome {
    if let Ok(wrapper) = iterable.cast::<FileWrapper>() {
        match send_wrapped_file(py, scope, &wrapper.borrow()) {
            Ok(Some(outcome)) => return outcome,
            Ok(None) => {}
            Err(e) => return fail(py, scope, &e),
        }
    }
    let iter = match iterable.try_iter() {
        Ok(it) => it,
        Err(e) => return fail(py, scope, &e),
    };
    if is_eager(py, &iter) {
        return send_existing_chunks(py, scope, iter);
    }
    for item in iter {
        let bytes = match item.and_then(|i| as_bytes(&i)) {
            Ok(b) => b,
            Err(e) => return fail(py, scope, &e),
        };
        match scope.emit(py, &bytes) {
            Ok(()) => {}
            Err(SendError::Gone(_)) => return Outcome::ClientGone,
            Err(e @ SendError::NotStarted) => return fail(py, scope, &e.into_pyerr()),
        }
    }
    finish(py, scope)
}

/// A chunk of the response body, which PEP 3333 requires to be bytes.
fn as_bytes<'py>(item: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    match item.cast::<PyBytes>() {
        Ok(b) => Ok(b.clone()),
        Err(_) => {
            let kind = item
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            Err(PyTypeError::new_err(format!(
                "WSGI response iterable yielded {kind}, expected bytes"
            )))
        }
    }
}

static LIST_ITERATOR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TUPLE_ITERATOR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// True for iterators over a list or tuple: every chunk already exists, so taking them all
/// before sending delays nothing. (Django's HttpResponse iterates its content list this way.)
fn is_eager(py: Python<'_>, iter: &Bound<'_, PyIterator>) -> bool {
    let ty = iter.get_type();
    let of = |cell: &PyOnceLock<Py<PyType>>, empty: Bound<'_, PyAny>| {
        cell.get_or_try_init(py, || empty.try_iter().map(|i| i.get_type().unbind()))
            .is_ok_and(|t| ty.is(t.bind(py)))
    };
    of(&LIST_ITERATOR, PyList::empty(py).into_any())
        || of(&TUPLE_ITERATOR, PyTuple::empty(py).into_any())
}

/// Send chunks that all exist already, and finish, in one release of the GIL: under load every
/// release is a hand-off to another request thread that we then wait to get back.
fn send_existing_chunks(py: Python<'_>, scope: &Scope, iter: Bound<'_, PyIterator>) -> Outcome {
    let mut chunks = Vec::new();
    for item in iter {
        match item.and_then(|i| as_bytes(&i)) {
            Ok(b) => chunks.push(b),
            Err(e) => {
                // Send what came before the bad item, as the streaming path would have.
                return match send_all(py, scope, &chunks, false) {
                    Ok(_) => fail(py, scope, &e),
                    Err(SendError::Gone(_)) => Outcome::ClientGone,
                    Err(e @ SendError::NotStarted) => fail(py, scope, &e.into_pyerr()),
                };
            }
        }
    }
    let result = send_all(py, scope, &chunks, true);
    finished(py, scope, result)
}

/// Send `chunks`; with `finish`, also the head of an empty body. Ok(short body?).
fn send_all(
    py: Python<'_>,
    scope: &Scope,
    chunks: &[Bound<'_, PyBytes>],
    finish: bool,
) -> Result<bool, SendError> {
    let slices: Vec<SendSlice> = chunks
        .iter()
        .map(|b| b.as_bytes())
        .filter(|b| !b.is_empty())
        .map(|b| SendSlice(b.as_ptr(), b.len()))
        .collect();
    if slices.is_empty() && !finish {
        return Ok(false);
    }
    gil::detach(py, move || {
        let mut side = scope.lock_output();
        for s in &slices {
            side.send(s.get())?;
        }
        if finish {
            side.ensure_head()?;
        }
        Ok(side.short_body())
    })
}

/// After the last chunk: send the head of an empty body, and check Content-Length was met.
fn finish(py: Python<'_>, scope: &Scope) -> Outcome {
    let sent = {
        let side = scope.lock_output();
        side.head_sent().then(|| side.short_body())
    };
    let result = match sent {
        // Nothing left to send: no need to release the GIL.
        Some(short) => Ok(short),
        None => gil::detach(py, || {
            let mut side = scope.lock_output();
            side.ensure_head().map(|()| side.short_body())
        }),
    };
    finished(py, scope, result)
}

fn finished(py: Python<'_>, scope: &Scope, result: Result<bool, SendError>) -> Outcome {
    match result {
        Ok(false) => Outcome::Complete,
        Ok(true) => {
            scope.log(Level::Error, SHORT_BODY);
            Outcome::Aborted
        }
        Err(SendError::Gone(_)) => Outcome::ClientGone,
        Err(e @ SendError::NotStarted) => fail(py, scope, &e.into_pyerr()),
    }
}

/// The sendfile fast path. Ok(None) = not applicable here, iterate instead.
fn send_wrapped_file(
    py: Python<'_>,
    scope: &Scope,
    wrapper: &FileWrapper,
) -> PyResult<Option<Outcome>> {
    let filelike = wrapper.filelike.bind(py);
    if !filelike.hasattr(intern!(py, "fileno"))? {
        return Ok(None);
    }
    let Ok(fd) = filelike
        .call_method0(intern!(py, "fileno"))
        .and_then(|f| f.extract::<i32>())
    else {
        return Ok(None);
    };
    let offset: u64 = match filelike
        .call_method0(intern!(py, "tell"))
        .and_then(|t| t.extract())
    {
        Ok(o) => o,
        Err(_) => return Ok(None),
    };
    let result = gil::detach(py, || {
        // SAFETY: fd belongs to the Python file object, which the caller keeps alive for this
        // call; ManuallyDrop makes sure we never close it.
        let file = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        let meta = file.metadata().ok().filter(|m| m.is_file())?;
        let mut side = scope.lock_output();
        let mut len = meta.len().saturating_sub(offset);
        if let Some(room) = side.room() {
            len = len.min(room);
        }
        if let Err(e) = side.ensure_head() {
            return Some(Err(e));
        }
        if len == 0 {
            return Some(Ok(()));
        }
        let out = side.out()?;
        match out.send_file(&file, offset, len)? {
            Ok(n) => {
                side.record_sent(n);
                Some(Ok(()))
            }
            Err(e) => {
                side.mark_gone();
                Some(Err(SendError::Gone(e)))
            }
        }
    });
    match result {
        None => Ok(None),
        Some(Ok(())) => Ok(Some(finish(py, scope))),
        Some(Err(SendError::Gone(_))) => Ok(Some(Outcome::ClientGone)),
        Some(Err(e)) => Err(e.into_pyerr()),
    }
}

/// An exception from the app: log it; a 500 if the head has not gone out, else abort.
fn fail(py: Python<'_>, scope: &Scope, err: &PyErr) -> Outcome {
    if interrupt::is_timeout(py, err) {
        return timed_out(py, scope);
    }
    request_stats::exception();
    scope.log(
        Level::Error,
        &format!(
            "RW-PY003 exception in WSGI application:\n{}",
            format_exception(py, err)
        ),
    );
    if scope.lock_output().head_sent() {
        Outcome::Aborted
    } else {
        send_500(py, scope)
    }
}

const TIMED_OUT_IN_CLOSE: &str = "RW-PY041 the request timeout interrupted the response iterable's close() (the stack is in the RW-PY040 line before)";

/// The request timeout's exception reached pyhost (the watchdog logged the stack, RW-PY040):
/// a 504 if the head has not gone out, else the response is cut.
fn timed_out(py: Python<'_>, scope: &Scope) -> Outcome {
    if scope.lock_output().head_sent() {
        scope.log(
            Level::Error,
            "RW-PY041 the request was stopped by its timeout after its response had started: the response is cut",
        );
        return Outcome::Aborted;
    }
    scope.log(
        Level::Error,
        "RW-PY041 the request was stopped by its timeout (stack in the RW-PY040 line before): answered 504",
    );
    match send_error(py, scope, 504, b"504 Gateway Timeout", TIMEOUT_BODY) {
        Outcome::Failed => Outcome::TimedOut,
        other => other,
    }
}

fn send_500(py: Python<'_>, scope: &Scope) -> Outcome {
    send_error(py, scope, 500, b"500 Internal Server Error", ERROR_BODY)
}

/// pyhost's own error response (Outcome::Failed), unless the head already went out.
fn send_error(py: Python<'_>, scope: &Scope, status: u16, line: &[u8], body: &[u8]) -> Outcome {
    gil::detach(py, || {
        let mut side = scope.lock_output();
        if side.head_sent() {
            return Outcome::Aborted;
        }
        side.set_error_response(status, line, body.len());
        match side.send(body) {
            Ok(()) => Outcome::Failed,
            Err(_) => Outcome::ClientGone,
        }
    })
}

/// The 500 for when there is no interpreter to run anything.
/// A plain `500 Internal Server Error` without running anything (for a transport that already
/// logged why: Python not started, the script failed to load).
pub fn answer_500(out: &mut dyn Responder) -> Outcome {
    let len = ERROR_BODY.len().to_string().into_bytes();
    let headers = [
        (
            b"Content-Type".to_vec(),
            b"text/plain; charset=utf-8".to_vec(),
        ),
        (b"Content-Length".to_vec(), len),
    ];
    let head = crate::Head {
        status: 500,
        status_line: b"500 Internal Server Error",
        headers: &headers,
    };
    match out.start(&head).and_then(|()| out.write(ERROR_BODY)) {
        Ok(()) => Outcome::Failed,
        Err(_) => Outcome::ClientGone,
    }
}
