//! The channel between one request's Python thread and nginx's event loop.
//!
//! The Python side ([`PyResponder`]) pushes the response head, body chunks and finally the outcome;
//! the event loop takes them in batches. The queue is bounded in bytes: when the client reads
//! slowly the event loop stops taking, the queue fills, and `write()` blocks the Python thread
//! (never the event loop), so a generator producing a gigabyte holds at most about
//! [`HIGH_WATER`] bytes here plus what nginx has in flight.
//!
//! Ownership: the Python thread never touches nginx memory. The event loop's per-request state
//! points back here through an `Arc`; when nginx frees the request (finished, client gone,
//! timeout) its pool cleanup calls [`Exchange::close`], after which `write()` fails and pyhost
//! calls the iterable's `close()`.
//!
//! Request timeouts: pyhost's watchdog posts [`Msg::TimedOut`] ([`Exchange::time_out`]) when the
//! request's Python thread is stuck past its timeout; the event loop then answers for it.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use pyhost::{Head, Outcome, Responder};

use super::wake::Notifier;

/// Bytes of body the queue holds before `write()` waits for the event loop to take them.
pub const HIGH_WATER: usize = 256 * 1024;

/// The response head, owned.
#[derive(Debug)]
pub struct HeadMsg {
    pub status: u16,
    pub status_line: Vec<u8>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the Python side sends, in order: one `Head`, any number of `Data`/`File`, one `Done`.
#[derive(Debug)]
pub enum Msg {
    Head(HeadMsg),
    Data(Vec<u8>),
    /// `wsgi.file_wrapper`: `len` bytes of our own duplicate of the app's file from `offset`,
    /// sent by nginx with sendfile(2).
    File {
        file: std::fs::File,
        offset: u64,
        len: u64,
    },
    Done(Outcome),
    /// WebSocket: the app's close frame (encoded); nothing may follow it on the wire.
    WsClose(Vec<u8>),
    /// WebSocket: the app caught up with its messages; read the client again.
    Resume,
    /// From pyhost's watchdog, not the app: the request's thread is stuck past its timeout
    /// (it may still send, but the event loop no longer waits for it).
    TimedOut,
}

struct State {
    msgs: VecDeque<Msg>,
    /// Body bytes in `msgs`.
    queued: usize,
    /// The exchange is on the notifier's ready list (or the event loop will look at it anyway):
    /// pushes need not wake the event loop again.
    scheduled: bool,
    /// nginx is done with the request: pushes fail, waiting writers wake up.
    gone: bool,
    /// A Python thread waits for space: only then must `take`/`close` notify (a notify is a
    /// system call even when nobody waits, and `take` runs several times per request).
    writer_waiting: bool,
    /// ASGI: the connection's handle on the loop thread, told when a sender paused at
    /// [`HIGH_WATER`] may go on (`take`) and when the client is gone (`close`).
    asgi: Option<pyhost::asgi::Handle>,
    /// ASGI: `push_nowait` answered "over high water": the next `take` resumes the sender.
    paused: bool,
    /// `Msg::Done` was queued: the response is over (for ASGI, pyhost sends it when the last
    /// body message went out, even if the app's task goes on with background work). Nobody is
    /// left to resume, and a disconnect would wake the loop thread for nothing: pyhost answers
    /// any later `receive()` with `http.disconnect` itself, and none can be waiting for body
    /// here (nginx buffered the whole body before the app started, so `read_body` never
    /// answers `Pending`).
    app_done: bool,
}

/// Shared by the Python thread and the event loop for one request.
pub struct Exchange {
    state: Mutex<State>,
    /// Signalled when the event loop takes messages or the request goes away.
    space: Condvar,
    /// Event-loop only: the request's event-loop state (`embedded::Stream`) while nginx keeps the
    /// request alive, null
    /// afterwards. Written and read on the event-loop thread only, so `Relaxed` suffices; it is an
    /// atomic just to make `Exchange` `Sync`.
    stream: AtomicPtr<c_void>,
    /// A Python thread took the job (set before it runs the app): the event loop leaves the
    /// request's timeout to pyhost's watchdog from then on.
    taken: AtomicBool,
}

impl Exchange {
    pub fn new() -> Arc<Exchange> {
        Arc::new(Exchange {
            state: Mutex::new(State {
                msgs: VecDeque::new(),
                queued: 0,
                scheduled: false,
                gone: false,
                writer_waiting: false,
                asgi: None,
                paused: false,
                app_done: false,
            }),
            space: Condvar::new(),
            stream: AtomicPtr::new(std::ptr::null_mut()),
            taken: AtomicBool::new(false),
        })
    }

    /// Python side: a thread starts on this request.
    pub fn mark_taken(&self) {
        self.taken.store(true, Ordering::Release);
    }

    /// Event loop: has a Python thread started on this request?
    pub fn is_taken(&self) -> bool {
        self.taken.load(Ordering::Acquire)
    }

    /// pyhost's watchdog: the request's thread is stuck past its timeout. Tells the event loop
    /// (which answers 504 or cuts the response); if nginx is already done with the request, the
    /// event loop is woken all the same, since it also retires the worker.
    pub fn time_out(self: &Arc<Self>, notifier: &Notifier<Arc<Exchange>>) {
        if self.push(Msg::TimedOut, false, notifier).is_err() {
            notifier.schedule(Arc::clone(self));
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State inconsistent (every update is a
        // single push/pop plus counters), so a poisoned lock is still usable.
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Event loop: takes every queued message and frees the queue's space.
    pub fn take(&self) -> VecDeque<Msg> {
        let mut st = self.lock();
        st.scheduled = false;
        st.queued = 0;
        let msgs = std::mem::take(&mut st.msgs);
        let waiting = std::mem::take(&mut st.writer_waiting);
        let resume = if std::mem::take(&mut st.paused) && !st.app_done {
            st.asgi.clone()
        } else {
            None
        };
        drop(st);
        if waiting {
            self.space.notify_all();
        }
        if let Some(handle) = resume {
            handle.resume();
        }
        msgs
    }

    /// Is this an ASGI request (its handle set)?
    pub fn is_asgi(&self) -> bool {
        self.lock().asgi.is_some()
    }

    /// Event loop, before the ASGI connection is submitted: the handle to resume and
    /// disconnect it through.
    pub fn set_asgi(&self, handle: pyhost::asgi::Handle) {
        self.lock().asgi = Some(handle);
    }

    /// Event loop: nginx has freed (or is freeing) the request. Drops queued data, makes further
    /// pushes fail and wakes a writer blocked on backpressure.
    pub fn close(&self) {
        self.stream.store(std::ptr::null_mut(), Ordering::Relaxed);
        let mut st = self.lock();
        st.gone = true;
        st.msgs.clear();
        st.queued = 0;
        let waiting = std::mem::take(&mut st.writer_waiting);
        // The usual end of an ASGI request (its response complete) is not a disconnect.
        let asgi = st.asgi.take().filter(|_| !st.app_done);
        drop(st);
        if waiting {
            self.space.notify_all();
        }
        if let Some(handle) = asgi {
            handle.disconnect();
        }
    }

    /// True once nginx is done with the request (so running the app is pointless).
    pub fn is_gone(&self) -> bool {
        self.lock().gone
    }

    /// Event loop: attach the request's event-loop state.
    pub fn set_stream(&self, stream: *mut c_void) {
        self.stream.store(stream, Ordering::Relaxed);
    }

    /// Event loop: the request's event-loop state, or null when nginx has freed the request.
    pub fn stream(&self) -> *mut c_void {
        self.stream.load(Ordering::Relaxed)
    }

    /// Python side: queue `msg`, waiting for space first when `bounded`. Ok(true) when the queue
    /// is at or over [`HIGH_WATER`] afterwards; Err when the client is gone.
    fn push(
        self: &Arc<Self>,
        msg: Msg,
        bounded: bool,
        notifier: &Notifier<Arc<Exchange>>,
    ) -> io::Result<bool> {
        let len = match &msg {
            Msg::Data(d) => d.len(),
            _ => 0,
        };
        let mut st = self.lock();
        // Backpressure: wait while the queue is full. One chunk is always accepted into an
        // empty queue, however large, so progress never depends on chunk sizes.
        while bounded && !st.gone && st.queued >= HIGH_WATER {
            // Set on every round: a take() clears it, and a writer that wakes to a still-full
            // queue (a spurious wake-up) must be notified next time too.
            st.writer_waiting = true;
            st = match self.space.wait(st) {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
        }
        if st.gone {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "client connection closed",
            ));
        }
        st.app_done |= matches!(msg, Msg::Done(_));
        st.msgs.push_back(msg);
        st.queued += len;
        let over = st.queued >= HIGH_WATER;
        if !bounded {
            // An ASGI sender never waits here: it pauses, and `take` resumes it.
            st.paused |= over;
        }
        let wake = !std::mem::replace(&mut st.scheduled, true);
        drop(st);
        if wake {
            notifier.schedule(Arc::clone(self));
        }
        Ok(over)
    }

    /// ASGI loop thread: queue `msg` without waiting (the loop serves every other connection
    /// meanwhile). Ok(true): the queue holds [`HIGH_WATER`] bytes or more, so the sender must
    /// pause; the next `take` resumes it through the handle. Err when the client is gone.
    pub fn push_nowait(
        self: &Arc<Self>,
        msg: Msg,
        notifier: &Notifier<Arc<Exchange>>,
    ) -> io::Result<bool> {
        self.push(msg, false, notifier)
    }
}

/// The [`Responder`] pyhost writes the response to, on a Python thread.
pub struct PyResponder {
    exchange: Arc<Exchange>,
    notifier: &'static Notifier<Arc<Exchange>>,
}

impl PyResponder {
    pub fn new(exchange: Arc<Exchange>, notifier: &'static Notifier<Arc<Exchange>>) -> PyResponder {
        PyResponder { exchange, notifier }
    }

    /// Tells the event loop the app is done (after `pyhost::handle` returned).
    pub fn finish(self, outcome: Outcome) {
        // Err = the request is gone; nobody is left to tell.
        let _ = self.exchange.push(Msg::Done(outcome), false, self.notifier);
    }
}

impl Responder for PyResponder {
    fn start(&mut self, head: &Head<'_>) -> io::Result<()> {
        let msg = Msg::Head(HeadMsg {
            status: head.status,
            status_line: head.status_line.to_vec(),
            headers: head.headers.to_vec(),
        });
        self.exchange.push(msg, false, self.notifier).map(|_| ())
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.exchange
            .push(Msg::Data(chunk.to_vec()), true, self.notifier)
            .map(|_| ())
    }

    /// The sendfile fast path: nginx sends the file itself, no bytes cross the queue. The
    /// descriptor is duplicated, so the app may close its file as soon as this returns.
    fn send_file(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: u64,
    ) -> Option<io::Result<u64>> {
        let dup = match file.try_clone() {
            Ok(f) => f,
            Err(_) => return None, // pyhost falls back to read + write
        };
        let msg = Msg::File {
            file: dup,
            offset,
            len,
        };
        Some(self.exchange.push(msg, true, self.notifier).map(|_| len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;
    use std::time::Duration;

    fn notifier() -> &'static Notifier<Arc<Exchange>> {
        static N: OnceLock<Notifier<Arc<Exchange>>> = OnceLock::new();
        N.get_or_init(|| Notifier::new().unwrap())
    }

    #[test]
    fn writer_blocks_at_high_water_until_the_event_loop_takes() {
        let ex = Exchange::new();
        let mut out = PyResponder::new(Arc::clone(&ex), notifier());
        out.write(&vec![0u8; HIGH_WATER]).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            out.write(b"more").unwrap();
            tx.send(()).unwrap();
            out
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "write must block"
        );
        let first = ex.take();
        assert_eq!(first.len(), 1);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("write resumes after take");
        let out = writer.join().unwrap();
        out.finish(Outcome::Complete);
        let rest = ex.take();
        assert!(matches!(rest[0], Msg::Data(ref d) if d == b"more"));
        assert!(matches!(rest[1], Msg::Done(Outcome::Complete)));
    }

    #[test]
    fn close_fails_a_blocked_writer() {
        let ex = Exchange::new();
        let mut out = PyResponder::new(Arc::clone(&ex), notifier());
        out.write(&vec![0u8; HIGH_WATER]).unwrap();
        let writer = std::thread::spawn(move || out.write(b"x").is_err());
        std::thread::sleep(Duration::from_millis(50));
        ex.close();
        assert!(writer.join().unwrap(), "write after close must fail");
        assert!(ex.is_gone());
    }

    #[test]
    fn a_timeout_reaches_the_event_loop_even_after_close() {
        // A notifier of its own: the shared one sees the other tests' pushes.
        let n = &Notifier::new().unwrap();
        let ex = Exchange::new();
        ex.time_out(n);
        assert_eq!(n.take().len(), 1, "the event loop is woken");
        assert!(matches!(ex.take().pop_front(), Some(Msg::TimedOut)));
        // Once nginx is done with the request there is nothing to answer, but the event loop
        // must still wake up: it retires the worker.
        ex.close();
        ex.time_out(n);
        assert_eq!(n.take().len(), 1);
        assert!(ex.take().is_empty());
    }

    #[test]
    fn only_the_first_push_schedules() {
        let ex = Exchange::new();
        let n = notifier();
        let _ = n.take();
        let mut out = PyResponder::new(Arc::clone(&ex), n);
        out.write(b"a").unwrap();
        out.write(b"b").unwrap();
        assert_eq!(n.take().len(), 1);
        assert_eq!(ex.take().len(), 2);
        out.write(b"c").unwrap();
        assert_eq!(n.take().len(), 1);
    }
}
