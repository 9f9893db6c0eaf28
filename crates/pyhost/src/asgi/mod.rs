//! The ASGI host: ASGI 3.0 apps (HTTP spec 2.5, lifespan 2.0, WebSocket) on one asyncio loop per
//! process, fed by any transport (the nginx event loop, a daemon worker's sockets, tests).
//!
//! A transport hands [`AsgiHost::submit`] one connection at a time: its CGI variables (the same
//! ones a WSGI app's environ is built from), whether it is HTTP or a WebSocket handshake, and a
//! [`Transport`] that the host calls on the loop thread to deliver the response. The transport
//! then feeds what happens on its side (body chunks, the client going away, its output queue
//! draining, WebSocket messages) through the [`Handle`] that `submit` returned. Nothing here
//! blocks: the loop thread must keep serving every other connection.
//!
//! Files, in layers (each uses only those above it):
//! 1. `inbox`: the queue + eventfd between the transports' threads and the loop thread.
//! 2. `scope`: the `http` / `websocket` scope from CGI variables; `message`: what the app sends,
//!    parsed and checked in Rust; `awaitable`: the awaitable that is already complete.
//! 3. `conn`: one connection's `receive`/`send` and what HTTP and WebSocket share; `http` and
//!    `websocket`: each protocol's messages and end of task.
//! 4. `lifespan`: startup/shutdown per app; `pump`: the loop thread's add_reader callback, which
//!    turns inbox events into tasks and resolved futures, and keeps each app's readiness.
//! 5. `host`: starting and stopping the loop thread; `fdwatch`: descriptors the loop watches for
//!    transports that do their socket I/O on the loop thread (the daemon worker); `deadline`:
//!    request timeouts (the task cancelled on the loop, or the request taken over from another
//!    thread when the loop is blocked).

mod awaitable;
mod conn;
mod deadline;
mod fdwatch;
mod host;
mod http;
mod inbox;
mod lifespan;
mod message;
mod pump;
mod scope;
mod websocket;

use std::io;

pub use deadline::Timeout;
pub use fdwatch::{FdHandler, Io, Waker};
pub use host::{AsgiConfig, AsgiHost, LoopKind};
pub use inbox::{Handle, WS_BACKLOG_LIMIT};

use crate::{Head, Outcome};

/// What a connection is, from the client's request: the scope `type` the app gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Http,
    /// A valid WebSocket handshake (the transport checked `Upgrade`, version and key).
    WebSocket,
}

/// The CGI variables of one request, owned by the host until the scope is built. Implemented
/// by each transport over the storage it already has.
pub trait VarSource: Send + 'static {
    /// Every (name, value) pair, in the transport's order.
    fn pairs(&self) -> Vec<(&[u8], &[u8])>;
}

impl VarSource for Vec<(Vec<u8>, Vec<u8>)> {
    fn pairs(&self) -> Vec<(&[u8], &[u8])> {
        self.iter().map(|(k, v)| (&k[..], &v[..])).collect()
    }
}

/// The answer to [`Transport::read_body`].
#[derive(Debug, PartialEq, Eq)]
pub enum BodyRead {
    /// The next chunk; `more` is false on the last one (which may be empty).
    Data { chunk: Vec<u8>, more: bool },
    /// Not here yet: the transport calls [`Handle::body`] once when it is.
    Pending,
}

/// Whether the transport takes more output now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Ready,
    /// Over the transport's high-water mark: the app's `send()` waits until the transport calls
    /// [`Handle::resume`].
    Paused,
}

/// A WebSocket message from the client, already reassembled and checked by the transport
/// (text is valid UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    Text(String),
    Binary(Vec<u8>),
}

/// Where one connection's output goes. Every method is called on the loop thread, with the GIL
/// held, and must return at once: queue the data, never wait for the client.
pub trait Transport: Send + 'static {
    /// The app waits in `receive()` for the request body: the next chunk, or `Pending`.
    fn read_body(&mut self) -> BodyRead;
    /// The response head, validated (hop-by-hop headers refused, CR/LF/NUL refused). Called once,
    /// with the first body message (or the end of an empty body). For a WebSocket it is the
    /// `101 Switching Protocols` answer to `websocket.accept`, or the denial (403 + body).
    fn head(&mut self, head: &Head<'_>) -> io::Result<()>;
    /// One chunk of the response body.
    fn body(&mut self, chunk: &[u8]) -> io::Result<Flow>;
    /// `len` bytes of `file` from `offset` (pathsend, zerocopysend). `None`: this transport
    /// cannot; the host then reads the file and calls [`body`](Self::body).
    fn file(&mut self, _file: &std::fs::File, _offset: u64, _len: u64) -> Option<io::Result<Flow>> {
        None
    }
    /// One WebSocket message to the client (after the 101 head).
    fn ws_send(&mut self, _msg: &WsOut<'_>) -> io::Result<Flow> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// The app received enough WebSocket messages to bring its backlog under
    /// [`WS_BACKLOG_LIMIT`]: read the client again.
    fn ws_resume_reading(&mut self) {}
    /// Close the WebSocket with this code and reason (the app's `websocket.close`, or 1011 after
    /// an exception). The transport sends the close frame and ends the connection.
    fn ws_close(&mut self, _code: u16, _reason: &str) {}
    /// The app is done with the connection; called exactly once, last.
    fn finish(&mut self, outcome: Outcome);
}

/// How a transport watches the imports of its apps on the loop (nginx: so that an import that
/// kills the worker process holds that app back in the next worker instead of a fork storm).
pub trait ImportGate: Send + Sync {
    /// Before app `app` is imported: `Some(wait)` to hold it back for that long. Its requests
    /// are answered 503 with `Retry-After` meanwhile, and the next request after it tries again.
    fn admit(&self, app: usize) -> Option<std::time::Duration>;
    /// Runs `import` (the import of app `app`), noting it so that a process it kills is known.
    fn watch(&self, app: usize, import: &mut dyn FnMut());
}

/// A WebSocket message from the app.
#[derive(Debug, PartialEq, Eq)]
pub enum WsOut<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}
