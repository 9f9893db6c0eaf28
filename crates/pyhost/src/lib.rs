//! pyhost: the WSGI host shared by every transport of rwsgi.
//!
//! This is the only crate that touches pyo3. It knows nothing about sockets, nginx or Apache: a
//! transport hands it the CGI-style variables of one request, a [`Body`] to read the request body
//! from and a [`Responder`] to send the response through, and [`handle`] runs the WSGI application
//! (PEP 3333) between them.
//!
//! GIL policy, written once here: [`handle`] attaches to the interpreter while Python code runs
//! (building environ, calling the app, taking the next chunk of the iterable) and detaches around
//! every wait: [`Body::read`], [`Responder::start`], [`Responder::write`] and
//! [`Responder::send_file`] are always called with the GIL released, so a slow client or a slow
//! upload never stalls the other Python threads of the process.
//!
//! Files, in layers: each file uses only files of the layers above it in this list (and the
//! crate root's types), so no two files import each other.
//!
//! 1. Leaves: `log` (the [`ErrorLog`] trait, traceback formatting), `init` (the interpreter),
//!    `request_stats` (GIL wait and exceptions of the thread's last request),
//!    `borrowed` (the raw handle a scope keeps of the transport's borrows), `filewrapper`
//!    (`wsgi.file_wrapper`), `stats` (the host's counters).
//! 2. Process: `thread` (threads with the server's signals blocked, long-lived thread states),
//!    `memory` (malloc arenas and the trimmer thread), `app` (loading a script), `gil` (the
//!    timed attach points), `control` (the admission policy) then `admit` (the waiting room that
//!    applies it), `process` (the per-process start-up every transport shares: [`initialize`],
//!    [`ProcessApps`]), `interrupt` (request timeouts' Python side: the `RequestTimeout`
//!    exception, the stack, the injection) then `watchdog` (the per-thread slots, the watchdog
//!    and interrupter threads).
//! 3. One request's state, no Python objects: `input` (the body buffer), `response` (head
//!    validation, lazy head, Content-Length), `environ` (the environ dict).
//! 4. `scope`: ties the two sides and the log to one `handle()` call and ends the borrows.
//! 5. The Python objects a request hands the app, each holding the scope: `wsgi_input`,
//!    `start_response` (and `write`), `wsgi_errors`.
//! 6. `run`: [`handle`], the request from the app call to `close()`.
//!
//! The objects of layer 5 and the state of layer 3 were once one file per concern (the state
//! machine and its Python object together), which made every such file and `scope` import each
//! other; split by role, the dependencies point one way.

mod admit;
mod app;
pub mod asgi;
mod borrowed;
mod control;
mod cpu_sample;
mod environ;
mod filewrapper;
mod gil;
mod init;
mod input;
mod interrupt;
mod log;
mod memory;
mod process;
mod request_stats;
mod response;
mod run;
mod sched;
mod scope;
mod start_response;
mod stats;
mod thread;
mod watchdog;
mod wsgi_errors;
mod wsgi_input;

pub use admit::{admit, Demand, Permit};
pub use app::{App, AppSource, AppSpec};
pub use environ::http_header_var;
pub use init::{
    interpreter_file, is_initialized, mapped_file, python_version, Error, PythonConfig,
};
pub use log::{ErrorLog, Level, StderrLog};
pub use process::{initialize, initialize_with, ProcessApps};
pub use request_stats::{last_request_stats, RequestStats};
pub use run::{answer_500, handle};
pub use sched::{prefer_batch_for_forwarding, Scheduling};
pub use stats::{stats, Stats, FIELD_NAMES as STATS_FIELDS, STATS_DIR_ENV};
pub use thread::{register_thread, spawn_with_signals_blocked, PythonThread};
pub use watchdog::{interrupt_grace, stuck_threads};

/// The values of `wsgi.multithread`, `wsgi.multiprocess` and `wsgi.run_once` for this transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mode {
    pub multithread: bool,
    pub multiprocess: bool,
    pub run_once: bool,
}

impl Mode {
    /// The mode of a pool of `processes` processes with `threads` request threads each, each
    /// serving many requests (so never `run_once`).
    pub fn pool(processes: usize, threads: usize) -> Mode {
        Mode {
            multithread: threads > 1,
            multiprocess: processes > 1,
            run_once: false,
        }
    }
}

/// One request as the transport sees it: CGI/WSGI variables exactly as the transport has them
/// (`REQUEST_METHOD`, `PATH_INFO` already percent-decoded, `HTTP_*`, ...). pyhost drops
/// `HTTP_PROXY` (httpoxy), `HTTP_CONTENT_TYPE` and `HTTP_CONTENT_LENGTH` (they are `CONTENT_*`)
/// and leaves `SCRIPT_NAME`/`PATH_INFO` as given: mount-prefix handling is the transport's job.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub vars: &'a [(&'a [u8], &'a [u8])],
    pub mode: Mode,
    /// The request timeout (`wsgi_request_timeout`, `WSGIRequestTimeout`, a daemon group's
    /// `request-timeout=`); `None`: the request may run for ever.
    pub timeout: Option<Timeout<'a>>,
}

/// A request's timeout, and what the transport does when interrupting it is not enough.
///
/// When the request has run for `after`, pyhost's watchdog logs the Python stack of its thread
/// and raises `RequestTimeout` (a `BaseException`, so `except Exception:` does not swallow it)
/// in that thread. Python code stops at its next bytecode, pyhost answers `504` (or cuts a
/// response already started: [`Outcome::TimedOut`], [`Outcome::Aborted`]) and the thread serves
/// again. A thread that has not come back [`interrupt_grace`] later is stuck in C code (a
/// blocking call that never returns to Python): the watchdog then calls [`Stuck::stuck`], and
/// the transport answers the client itself and arranges for its process to be replaced.
#[derive(Clone, Copy)]
pub struct Timeout<'a> {
    pub after: std::time::Duration,
    /// Where the watchdog writes its lines (the stack at the timeout...): a log that outlives
    /// the request, since the watchdog writes from its own thread.
    pub log: &'static dyn ErrorLog,
    /// What to do when the thread does not come back.
    pub stuck: &'a dyn Stuck,
}

impl std::fmt::Debug for Timeout<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeout")
            .field("after", &self.after)
            .finish()
    }
}

/// The body of pyhost's 504 (text/plain), for a transport that answers a timed-out request
/// itself ([`Stuck`]) and should say the same.
pub const TIMEOUT_BODY: &[u8] = b"504 Gateway Timeout: the application did not answer in time\n";

/// The transport's last resort for a request whose thread did not come back from the interrupt.
pub trait Stuck: Sync {
    /// Called once, on pyhost's watchdog thread, while the request's own thread is still inside
    /// [`handle`] (which does not return before this does, so everything the request borrows is
    /// still alive). Answer the client if nothing was sent yet (504), else cut the response, and
    /// make sure the stuck thread can no longer write to it; then let the process be replaced
    /// once its other requests are done. Must not block and must not take the GIL.
    fn stuck(&self);
    /// Called once per request that passes its timeout, on pyhost's watchdog thread, before the
    /// interrupt (whatever happens next: a 504, a cut response, or [`stuck`](Self::stuck)), for
    /// the transport's bookkeeping (the metrics count request timeouts here). The request's
    /// borrows are alive, as for `stuck`. Must not block and must not take the GIL.
    fn timed_out(&self) {}
}

/// The source of `wsgi.input`. Called without the GIL. `Ok(0)` means the body has ended; the
/// transport bounds the stream to the request body (CONTENT_LENGTH or the de-chunked length).
pub trait Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
}

/// An empty request body, for transports that know there is none.
pub struct NoBody;

impl Body for NoBody {
    fn read(&mut self, _buf: &mut [u8]) -> std::io::Result<usize> {
        Ok(0)
    }
}

/// The response head, validated: `status_line` is what the app passed to `start_response`
/// (e.g. `b"200 OK"`), `status` its numeric code, and no header holds a control character.
#[derive(Debug)]
pub struct Head<'a> {
    pub status: u16,
    pub status_line: &'a [u8],
    pub headers: &'a [(Vec<u8>, Vec<u8>)],
}

/// Where the response goes. Every method is called without the GIL.
pub trait Responder {
    /// Called exactly once, before the first body byte (or at the end for an empty body).
    fn start(&mut self, head: &Head<'_>) -> std::io::Result<()>;
    /// Send one chunk of the body. An error means the client is gone: pyhost stops iterating and
    /// calls the iterable's `close()`.
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()>;
    /// The `wsgi.file_wrapper` fast path: send `len` bytes of `file` from `offset` (sendfile).
    /// `None` means this transport cannot; pyhost then reads the file and calls [`write`](Self::write).
    fn send_file(
        &mut self,
        _file: &std::fs::File,
        _offset: u64,
        _len: u64,
    ) -> Option<std::io::Result<u64>> {
        None
    }
}

/// How a request ended, for the transport's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The response was sent whole.
    Complete,
    /// A write failed (the client went away); the iterable's `close()` was called.
    ClientGone,
    /// The app failed before the head was sent; pyhost sent a 500 itself and logged the traceback.
    Failed,
    /// Something failed after the head went out (an exception, or a body shorter than its
    /// Content-Length, or the request timeout): the response is incomplete and the caller must
    /// close the connection.
    Aborted,
    /// The request passed its [`Timeout`] before the head went out: pyhost sent a 504 itself
    /// (and logged the stack at the timeout).
    TimedOut,
}
