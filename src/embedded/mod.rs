//! Embedded mode: the app runs inside the nginx worker process, on a pool of Python threads, and
//! the event loop never waits for Python.
//!
//! The hand-off between nginx's event loop and the Python threads, one concern per file:
//! - `stream`: the event-loop side of one request: read the body, queue the job, stream the
//!   response to the client as it arrives, with backpressure;
//! - `worker`: per worker process: the interpreter, the loaded apps and the Python threads that
//!   run the jobs;
//! - `dispatch`: the job queue from the event loop to the Python threads;
//! - `exchange`: the per-request channel back (response head, chunks, outcome), bounded in bytes;
//! - `wake`: the eventfd that wakes the event loop when an exchange has news;
//! - `body`: `wsgi.input` over the body nginx read (memory and temp-file segments);
//! - `head`: the response head into nginx's `headers_out`; `timer`: process-long timer events;
//! - `balance`: client connections spread over the workers that host Python (nginx's
//!   `EPOLLEXCLUSIVE` accept would give a burst of them to one worker); `seats`: each worker's
//!   count of connections, shared by all of them (`shared_map`: the mappings both tables live in);
//! - `ws`: the client's WebSocket frames to the app (the `websocket` crate's session);
//! - `asgi`: the transport of an ASGI request: the worker's asyncio loop answers through the
//!   same exchange, without ever blocking;
//! - `imports`: import attempts shared by all workers, so an app whose import kills its worker
//!   is retried with back-off instead of in a fork storm; `gate`: one worker's side of it for a
//!   table of apps (the WSGI apps, and the ASGI apps the asyncio loop imports).
//!
//! `body`, `dispatch`, `exchange`, `imports` and `wake` are plain Rust, unit-tested without
//! nginx; `stream` and `worker` call into nginx and are exercised end to end (tests/test_nginx_module_*.py).

mod body;
mod dispatch;
mod exchange;
pub mod imports;
pub mod seats;
mod shared_map;
#[cfg(not(test))]
mod timer;
mod wake;

mod ws;

#[cfg(not(test))]
mod asgi;
#[cfg(not(test))]
mod balance;
#[cfg(not(test))]
mod gate;
#[cfg(not(test))]
mod head;
#[cfg(not(test))]
mod stream;
#[cfg(not(test))]
mod worker;

#[cfg(not(test))]
pub use balance::leave as leave_seat;
#[cfg(not(test))]
pub use stream::run;
#[cfg(not(test))]
pub use worker::{python_threads, stop};

/// `init_process`: starts embedded mode in this worker if any location needs it, with the
/// event-loop side's handler for the wake-up eventfd.
///
/// # Safety
/// `cycle` is the worker's cycle, called on the event-loop thread.
#[cfg(not(test))]
pub unsafe fn start(cycle: *mut ngx::ffi::ngx_cycle_t) -> Result<(), String> {
    // SAFETY: the caller's contract is worker::start's.
    unsafe { worker::start(cycle, stream::on_wakeup) }
}
