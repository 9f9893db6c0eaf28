//! The way into the loop thread: a queue of events under a mutex and an eventfd the loop watches
//! (`loop.add_reader`). A producer writes the eventfd only when the queue goes from empty to
//! non-empty, so a burst of requests and events costs the loop one wake-up; the loop takes the
//! whole queue at once. This is the nginx module's ready-list pattern (src/wake.rs) in the other
//! direction, and NGINX Unit's port descriptor idea (one fd per loop, not one
//! `call_soon_threadsafe` per event).

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::deadline::{Deadlines, Timeout};
use super::{Kind, Transport, VarSource, WsMessage};
use crate::log::ErrorLog;

/// A new connection for an app.
pub(crate) struct NewConn {
    pub(crate) app: usize,
    pub(crate) kind: Kind,
    pub(crate) vars: Box<dyn VarSource>,
    pub(crate) transport: Box<dyn Transport>,
    /// Shared with the transport's [`Handle`] (WebSocket receive back-pressure).
    pub(crate) backlog: Arc<AtomicUsize>,
    /// The request's deadline and `METHOD URI`, when it has a timeout (deadline.rs).
    pub(crate) due: Option<(Instant, String)>,
}

/// What a transport (or the host) tells the loop thread.
pub(crate) enum Event {
    New(Box<NewConn>),
    /// The request body chunk the transport owed after answering `BodyRead::Pending`.
    Body {
        chunk: Vec<u8>,
        more: bool,
    },
    /// The client went away (or the transport gave up on it).
    Disconnect,
    /// The transport's output queue drained: a paused `send()` may complete.
    Resume,
    /// A WebSocket message from the client.
    WsMessage(WsMessage),
    /// The client closed the WebSocket (close frame, or the connection ended).
    WsClosed {
        code: u16,
        reason: String,
    },
    /// The process is going away: close every WebSocket with 1001.
    GoingAway,
    /// Stop the loop: lifespan shutdown (bounded by the host's timeout), then `loop.stop()`.
    Stop,
    /// Watch a descriptor on the loop (`AsgiHost::watch`).
    Watch(Box<super::fdwatch::NewWatch>),
    /// Stop watching a descriptor given to `AsgiHost::watch`, and drop its handler.
    Unwatch(std::os::fd::RawFd),
}

struct Queue {
    events: Vec<(u64, Event)>,
    /// The eventfd was written since the loop last took the queue.
    signalled: bool,
}

pub(crate) struct Inbox {
    /// Non-blocking eventfd; never closed (a transport thread may still write after the loop
    /// ended, and a closed number could name another file by then).
    fd: RawFd,
    queue: Mutex<Queue>,
    next_id: AtomicU64,
    pub(crate) deadlines: Arc<Deadlines>,
}

impl Inbox {
    pub(crate) fn new(log: Arc<dyn ErrorLog>) -> io::Result<Arc<Inbox>> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new(Inbox {
            fd,
            queue: Mutex::new(Queue {
                events: Vec::new(),
                signalled: false,
            }),
            next_id: AtomicU64::new(1),
            deadlines: Deadlines::new(log),
        }))
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Every update under this lock is a push or a take: a panic cannot leave it half done.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A handle for the next connection (see `AsgiHost::handle`).
    pub(crate) fn handle(self: &Arc<Self>) -> Handle {
        Handle {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            inbox: Arc::clone(self),
            backlog: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Queues connection `handle` for app `app` (see `AsgiHost::submit`).
    pub(crate) fn submit(
        self: &Arc<Self>,
        handle: &Handle,
        app: usize,
        kind: Kind,
        vars: Box<dyn VarSource>,
        transport: Box<dyn Transport>,
        timeout: Option<Timeout>,
    ) {
        let due = timeout.map(|t| {
            let what = request_line(&*vars);
            (self.deadlines.add(handle.id, t, what.clone()), what)
        });
        self.push(
            handle.id,
            Event::New(Box::new(NewConn {
                app,
                kind,
                vars,
                transport,
                backlog: Arc::clone(&handle.backlog),
                due,
            })),
        );
    }

    pub(crate) fn push(&self, id: u64, event: Event) {
        let signal = {
            let mut q = self.lock();
            q.events.push((id, event));
            !std::mem::replace(&mut q.signalled, true)
        };
        if signal {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd. EAGAIN (counter saturated)
            // loses nothing: the counter is then non-zero and the loop will wake.
            unsafe { libc::write(self.fd, (&one as *const u64).cast(), 8) };
        }
    }

    /// Loop thread: resets the eventfd and takes every event queued so far, in order.
    pub(crate) fn take(&self) -> Vec<(u64, Event)> {
        let mut counter: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our non-blocking eventfd; EAGAIN is fine.
        unsafe { libc::read(self.fd, (&mut counter as *mut u64).cast(), 8) };
        let mut q = self.lock();
        // Reset under the lock: a producer that pushes after this point signals again.
        q.signalled = false;
        std::mem::take(&mut q.events)
    }
}

/// `METHOD URI` of a request, for the log lines about its timeout.
fn request_line(vars: &dyn VarSource) -> String {
    let pairs = vars.pairs();
    let var = |name: &[u8]| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    format!("{} {}", var(b"REQUEST_METHOD"), var(b"REQUEST_URI"))
}

/// A transport's handle on one connection it submitted: what happens on the client's side goes
/// to the app through it. Cheap to clone; usable from any thread; harmless after the app is done
/// (events for a finished connection are dropped).
#[derive(Clone)]
pub struct Handle {
    pub(crate) id: u64,
    pub(crate) inbox: Arc<Inbox>,
    /// Bytes of WebSocket messages delivered and not yet received by the app.
    pub(crate) backlog: Arc<AtomicUsize>,
}

/// WebSocket receive back-pressure: a transport stops reading its client while the app has this
/// many bytes of messages it has not received, and reads again when the host calls
/// [`super::Transport::ws_resume_reading`].
pub const WS_BACKLOG_LIMIT: usize = 1 << 20;

impl Handle {
    /// The body chunk owed after [`super::Transport::read_body`] answered `Pending`.
    pub fn body(&self, chunk: Vec<u8>, more: bool) {
        self.inbox.push(self.id, Event::Body { chunk, more });
    }

    /// The client is gone: a waiting `receive()` gets `http.disconnect` (or
    /// `websocket.disconnect` with 1006), later `send()`s raise `OSError`.
    pub fn disconnect(&self) {
        self.inbox.push(self.id, Event::Disconnect);
    }

    /// The transport's output drained below its high-water mark after it answered `Paused`.
    pub fn resume(&self) {
        self.inbox.push(self.id, Event::Resume);
    }

    /// A complete WebSocket message from the client.
    pub fn ws_message(&self, msg: WsMessage) {
        let len = match &msg {
            WsMessage::Text(t) => t.len(),
            WsMessage::Binary(b) => b.len(),
        };
        self.backlog.fetch_add(len, Ordering::Relaxed);
        self.inbox.push(self.id, Event::WsMessage(msg));
    }

    /// What a transport's `websocket::Session` says the app must hear.
    pub fn ws_deliver(&self, delivery: websocket::Delivery) {
        match delivery {
            websocket::Delivery::Text(t) => self.ws_message(WsMessage::Text(t)),
            websocket::Delivery::Binary(b) => self.ws_message(WsMessage::Binary(b)),
            websocket::Delivery::Closed(code, reason) => self.ws_closed(code, reason),
        }
    }

    /// True while the app has [`WS_BACKLOG_LIMIT`] bytes of messages or more that it has not
    /// received: stop reading the client until `ws_resume_reading`.
    pub fn ws_backlogged(&self) -> bool {
        self.backlog.load(Ordering::Relaxed) >= WS_BACKLOG_LIMIT
    }

    /// The client closed the WebSocket (`code` 1005 when its close frame had none, 1006 when
    /// the connection ended without one).
    pub fn ws_closed(&self, code: u16, reason: String) {
        self.inbox.push(self.id, Event::WsClosed { code, reason });
    }
}
