//! What the host measured while it ran the last request on this thread, for the transport's
//! metrics: the time spent waiting for the GIL at the host's attach points (`gil.rs`) and the
//! Python exceptions that reached the host. Thread-local: [`crate::handle`] resets it when it
//! starts, the transport reads it with [`last_request_stats`] after `handle` returns, on the same
//! thread. No atomics and no shared state on the request path.

use std::cell::Cell;
use std::time::Duration;

/// Measurements of one request (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestStats {
    /// Time waited to take the GIL at the host's attach points.
    pub gil_wait: Duration,
    /// Exceptions from loading the app, calling it, iterating its response or `close()`.
    pub exceptions: u32,
}

thread_local! {
    static CURRENT: Cell<RequestStats> = const {
        Cell::new(RequestStats { gil_wait: Duration::ZERO, exceptions: 0 })
    };
}

/// A request starts on this thread.
pub(crate) fn begin() {
    CURRENT.with(|c| c.set(RequestStats::default()));
}

pub(crate) fn gil_waited(d: Duration) {
    CURRENT.with(|c| {
        let mut s = c.get();
        s.gil_wait += d;
        c.set(s);
    });
}

/// An exception reached the host (it is logged with its traceback).
pub(crate) fn exception() {
    CURRENT.with(|c| {
        let mut s = c.get();
        s.exceptions += 1;
        c.set(s);
    });
}

/// The measurements of the last [`crate::handle`] call on this thread.
pub fn last_request_stats() -> RequestStats {
    CURRENT.with(Cell::get)
}
