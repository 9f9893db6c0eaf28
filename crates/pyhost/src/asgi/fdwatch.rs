//! Descriptors watched by the loop, for transports that do their socket I/O on the loop thread
//! itself (the daemon worker: its listening socket and its front-end connections), as uvicorn
//! does, but with the protocol handled in Rust: the loop calls an [`FdHandler`] when its
//! descriptor is readable or writable, and the handler reads, writes and submits connections
//! without a thread of its own or a queue between threads.
//!
//! Everything here runs on the loop thread: the handler is called from the loop's callbacks, and
//! a [`Waker`] (how a connection's `Transport` asks to be told when its socket can take more) is
//! only ever used from `Transport` methods, which the host calls on the loop thread too.

use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::prelude::*;

use super::deadline::Timeout;
use super::inbox::{Handle, Inbox};
use super::{Kind, Transport, VarSource};

/// Called on the loop thread when the watched descriptor is ready.
pub trait FdHandler: Send + 'static {
    fn ready(&mut self, io: &mut Io<'_>, readable: bool, writable: bool);
}

/// A descriptor to watch, as queued by `AsgiHost::watch`.
pub(crate) struct NewWatch {
    pub(crate) fd: RawFd,
    pub(crate) handler: Box<dyn FdHandler>,
    pub(crate) read: bool,
    pub(crate) write: bool,
}

/// What a watch is registered for with the loop.
#[derive(Default)]
struct Interest {
    read: bool,
    write: bool,
    closed: bool,
}

/// Shared by the watch object the loop calls and the wakers handed out.
struct Shared {
    fd: RawFd,
    handler: Mutex<Option<Box<dyn FdHandler>>>,
    interest: Mutex<Interest>,
    event_loop: Py<PyAny>,
    inbox: Arc<Inbox>,
    /// The Python object the loop's callbacks are bound to; dropped at close (it refers back
    /// to this struct, so keeping it would keep both alive).
    object: Mutex<Option<Py<Watch>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Registers or unregisters the reader/writer callbacks to match `read`/`write`.
    fn set(&self, py: Python<'_>, read: Option<bool>, write: Option<bool>) {
        let mut interest = lock(&self.interest);
        if interest.closed {
            return;
        }
        let object = lock(&self.object).as_ref().map(|o| o.clone_ref(py));
        let Some(object) = object else { return };
        let lp = self.event_loop.bind(py);
        let obj = object.bind(py);
        let update = |want: Option<bool>, have: &mut bool, add: &str, remove: &str, cb: &str| {
            let Some(want) = want else { return };
            if want == *have {
                return;
            }
            let result = if want {
                obj.getattr(cb)
                    .and_then(|f| lp.call_method1(add, (self.fd, f)))
            } else {
                lp.call_method1(remove, (self.fd,))
            };
            if result.is_ok() {
                *have = want;
            }
        };
        update(
            read,
            &mut interest.read,
            "add_reader",
            "remove_reader",
            "_readable",
        );
        update(
            write,
            &mut interest.write,
            "add_writer",
            "remove_writer",
            "_writable",
        );
    }

    /// Stops watching for good and lets go of the handler (and with it the descriptor it owns).
    fn close(&self, py: Python<'_>) {
        self.set(py, Some(false), Some(false));
        lock(&self.interest).closed = true;
        *lock(&self.object) = None;
        // The handler may be running (it closed itself): `dispatch` drops it afterwards.
        if let Ok(mut h) = self.handler.try_lock() {
            h.take();
        }
    }

    fn closed(&self) -> bool {
        lock(&self.interest).closed
    }
}

/// The object whose bound methods the loop calls.
#[pyclass(module = "rwsgi", name = "Watch")]
pub(crate) struct Watch {
    shared: Arc<Shared>,
}

impl Watch {
    /// Creates the watch for `new` and registers it with the loop.
    pub(crate) fn start(
        py: Python<'_>,
        event_loop: &Py<PyAny>,
        inbox: &Arc<Inbox>,
        new: NewWatch,
    ) -> PyResult<Py<Watch>> {
        let shared = Arc::new(Shared {
            fd: new.fd,
            handler: Mutex::new(Some(new.handler)),
            interest: Mutex::new(Interest::default()),
            event_loop: event_loop.clone_ref(py),
            inbox: Arc::clone(inbox),
            object: Mutex::new(None),
        });
        let object = Py::new(
            py,
            Watch {
                shared: Arc::clone(&shared),
            },
        )?;
        *lock(&shared.object) = Some(object.clone_ref(py));
        shared.set(py, Some(new.read), Some(new.write));
        Ok(object)
    }

    /// Stops watching and drops the handler (`AsgiHost::unwatch`).
    pub(crate) fn close(&self, py: Python<'_>) {
        self.shared.close(py);
    }

    fn dispatch(&self, py: Python<'_>, readable: bool, writable: bool) {
        let taken = lock(&self.shared.handler).take();
        let Some(mut handler) = taken else { return };
        let mut io = Io {
            py,
            shared: &self.shared,
        };
        handler.ready(&mut io, readable, writable);
        if !self.shared.closed() {
            *lock(&self.shared.handler) = Some(handler);
        }
    }
}

#[pymethods]
impl Watch {
    fn _readable(&self, py: Python<'_>) {
        self.dispatch(py, true, false);
    }

    fn _writable(&self, py: Python<'_>) {
        self.dispatch(py, false, true);
    }
}

/// What a handler can do while it runs.
pub struct Io<'a> {
    py: Python<'a>,
    shared: &'a Arc<Shared>,
}

impl Io<'_> {
    /// Watch (or stop watching) for readability.
    pub fn watch_read(&mut self, on: bool) {
        self.shared.set(self.py, Some(on), None);
    }

    /// Watch (or stop watching) for writability.
    pub fn watch_write(&mut self, on: bool) {
        self.shared.set(self.py, None, Some(on));
    }

    /// Stop watching for good; the handler is dropped when it returns.
    pub fn close(&mut self) {
        self.shared.close(self.py);
    }

    /// A handle on this watch for the handler's transport (see [`Waker`]).
    pub fn waker(&self) -> Waker {
        Waker {
            shared: Arc::clone(self.shared),
        }
    }

    /// Watches another descriptor (an accepted connection) from now on.
    pub fn spawn(&mut self, fd: RawFd, handler: Box<dyn FdHandler>, read: bool, write: bool) {
        let new = NewWatch {
            fd,
            handler,
            read,
            write,
        };
        // A registration that fails (the loop refuses the fd) drops the handler, which closes
        // the connection it owns.
        let _ = Watch::start(self.py, &self.shared.event_loop, &self.shared.inbox, new);
    }

    /// A handle for the next connection (`AsgiHost::handle`).
    pub fn handle(&self) -> Handle {
        self.shared.inbox.handle()
    }

    /// Submits a connection (`AsgiHost::submit`).
    pub fn submit(
        &self,
        handle: &Handle,
        app: usize,
        kind: Kind,
        vars: Box<dyn VarSource>,
        transport: Box<dyn Transport>,
        timeout: Option<Timeout>,
    ) {
        self.shared
            .inbox
            .submit(handle, app, kind, vars, transport, timeout);
    }
}

/// How a transport that writes to a watched socket asks the loop to call its handler when the
/// socket can take more (or to stop reading it). Use only on the loop thread: from
/// `Transport` methods or the handler itself.
#[derive(Clone)]
pub struct Waker {
    shared: Arc<Shared>,
}

impl Waker {
    pub fn watch_write(&self, on: bool) {
        Python::attach(|py| self.shared.set(py, None, Some(on)));
    }

    pub fn watch_read(&self, on: bool) {
        Python::attach(|py| self.shared.set(py, Some(on), None));
    }

    /// Stop watching for good and drop the handler.
    pub fn close(&self) {
        Python::attach(|py| self.shared.close(py));
    }
}
