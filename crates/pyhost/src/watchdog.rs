//! Request timeouts: one slot per request thread, one watchdog thread per process that looks at
//! the slots a few times a second, and one interrupter thread that does the Python part
//! (interrupt.rs) when the watchdog asks.
//!
//! What a request pays: when it has a [`crate::Timeout`], [`begin`] stores a pointer to the
//! request and its timeout into the calling thread's slot and publishes "running" with one
//! atomic store; [`Watch::end`] takes it back with one compare-and-swap. No clock read (the
//! watchdog notes when it first sees a request running, so a timeout fires between `after` and
//! `after` + two ticks), no allocation, no lock. A request without a timeout pays nothing.
//!
//! The watchdog never takes the GIL. At a request's deadline it asks the interrupter thread
//! (interrupt.rs) to log the request's Python stack and raise `RequestTimeout` in its thread
//! (step 1). Pure Python code stops at its next bytecode and pyhost answers 504 (run.rs). A
//! thread still not back [`interrupt_grace`] later is stuck in C code (a blocking call that never
//! returns to Python), where no exception can reach it: the watchdog then hands the request to
//! the transport ([`crate::Stuck::stuck`]), which answers the client and has its process
//! replaced once the other requests are done (step 2). The two threads are separate so that an
//! extension holding the GIL for ever (the interrupter then waits for it) cannot stop step 2.
//!
//! A slot's state word is `seq << 3 | kind`; `seq` numbers the owner's requests, so the watchdog
//! never acts on a request that already ended. Only the owner leaves `INTERRUPTED`/`ABANDONED`
//! and only the watchdog leaves `RUNNING`/`BUSY`:
//!
//! ```text
//!   IDLE --begin--> RUNNING --deadline--> BUSY --> INTERRUPTED --grace--> BUSY --> ABANDONED
//!    ^                 |                               |                            |
//!    +------end--------+---------------end-------------+-------------end------------+
//! ```
//!
//! `BUSY` means the watchdog is reading what the request borrows (its URI, its `Stuck`): `end`
//! waits it out, so `handle` never returns (and ends those borrows) while the watchdog uses them.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once, OnceLock};
use std::time::{Duration, Instant};

use pyo3::Python;

use crate::interrupt;
use crate::log::{ErrorLog, Level};
use crate::Request;

/// How often the watchdog looks at the slots.
const TICK: Duration = Duration::from_millis(200);
/// Bounds of the time an interrupted thread gets to come back before it counts as stuck.
const GRACE_MIN: Duration = Duration::from_secs(2);
const GRACE_MAX: Duration = Duration::from_secs(10);

/// How long a thread interrupted at its request's timeout `after` may take to come back before
/// the transport takes the request over: a tenth of the timeout, 2 s at least, 10 s at most.
/// Python code stops within milliseconds of the interrupt; a blocking C call that returns to
/// Python now and then (a read with a timeout, a short sleep in a loop) needs longer.
pub fn interrupt_grace(after: Duration) -> Duration {
    (after / 10).clamp(GRACE_MIN, GRACE_MAX)
}

/// Requests whose thread did not come back from the interrupt and that the transport took
/// over, in this process, while those threads are still away. A transport that exits its
/// process once its other requests are done waits for every thread but these.
pub fn stuck_threads() -> usize {
    STUCK.load(Ordering::Acquire)
}

static STUCK: AtomicUsize = AtomicUsize::new(0);

const IDLE: u64 = 0;
const RUNNING: u64 = 1;
const BUSY: u64 = 2;
const INTERRUPTED: u64 = 3;
const ABANDONED: u64 = 4;
const KIND_BITS: u32 = 3;
const KIND_MASK: u64 = (1 << KIND_BITS) - 1;

fn word(seq: u64, kind: u64) -> u64 {
    (seq << KIND_BITS) | kind
}

fn kind_of(word: u64) -> u64 {
    word & KIND_MASK
}

fn seq_of(word: u64) -> u64 {
    word >> KIND_BITS
}

/// One request thread's slot.
pub(crate) struct Slot {
    state: AtomicU64,
    /// The running request's timeout in ms; written by the owner before it publishes RUNNING.
    timeout_ms: AtomicU64,
    /// The running request, lifetime erased. Written by the owner only while the slot is IDLE;
    /// read by the watchdog only while it holds BUSY (module docs).
    request: UnsafeCell<*const Request<'static>>,
    /// The owner's Python thread id (`threading.get_ident()`), where the exception goes.
    ident: std::ffi::c_ulong,
    /// Watchdog only: the request it last saw running, and when (ms since [`epoch`]).
    seen_seq: AtomicU64,
    seen_at: AtomicU64,
}

// SAFETY: `request` is the only non-Sync field; its accesses are ordered by the state word
// (written only while IDLE by the owner, read only under BUSY by the watchdog, and the owner
// waits out BUSY before it writes again), and the Request it points at is only read.
unsafe impl Sync for Slot {}
// SAFETY: as above; the pointer is never dereferenced outside that protocol.
unsafe impl Send for Slot {}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: AtomicU64::new(word(0, IDLE)),
            timeout_ms: AtomicU64::new(0),
            request: UnsafeCell::new(std::ptr::null()),
            // SAFETY: PyThread_get_thread_ident is pthread_self; it needs neither the GIL nor
            // an initialised interpreter.
            ident: unsafe { pyo3::ffi::PyThread_get_thread_ident() },
            seen_seq: AtomicU64::new(0),
            seen_at: AtomicU64::new(0),
        }
    }

    /// Interrupter, under the GIL: is request `seq` still in this thread (interrupted, not ended)?
    fn still_running(&self, seq: u64) -> bool {
        let w = self.state.load(Ordering::Acquire);
        seq_of(w) == seq && matches!(kind_of(w), INTERRUPTED | ABANDONED | BUSY)
    }
}

/// Every slot of the process, for the watchdog. Locked when a thread registers or exits, and
/// once per tick by the watchdog (to copy the list): never on a request.
static SLOTS: Mutex<Vec<Arc<Slot>>> = Mutex::new(Vec::new());

fn slots() -> MutexGuard<'static, Vec<Arc<Slot>>> {
    SLOTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A thread's slot, in the registry while the thread lives.
struct Registered(Arc<Slot>);

impl Registered {
    fn new() -> Registered {
        let slot = Arc::new(Slot::new());
        slots().push(Arc::clone(&slot));
        Registered(slot)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        slots().retain(|s| !Arc::ptr_eq(s, &self.0));
    }
}

thread_local! {
    static MINE: Registered = Registered::new();
}

/// The process's clock origin for the watchdog's milliseconds.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The watch over the request running on this thread; [`Watch::end`] (or dropping it, if
/// `handle` unwinds) ends it. Not `Send`: it belongs to the thread whose slot it uses.
pub(crate) struct Watch {
    slot: *const Slot,
    seq: u64,
    _not_send: PhantomData<*mut ()>,
}

/// How a watched request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Before its timeout.
    Finished,
    /// After the interrupt, within the grace: an exception may still be pending for the thread.
    Interrupted,
    /// After the transport took it over: the thread came back late.
    Abandoned,
}

/// Starts watching `req` on this thread, if it has a timeout. Starts the watchdog on first use.
pub(crate) fn begin(req: &Request<'_>) -> Option<Watch> {
    let timeout = req.timeout.as_ref()?;
    if timeout.after.is_zero() {
        return None;
    }
    start(timeout.log);
    let slot = MINE.try_with(|r| Arc::as_ptr(&r.0)).ok()?;
    // SAFETY: the thread-local lives until this thread exits, and the Watch (not Send) is
    // dropped before `handle` returns on this thread.
    let s = unsafe { &*slot };
    // Only the owner changes seq, so a relaxed read of our own word is current.
    let seq = seq_of(s.state.load(Ordering::Relaxed)) + 1;
    // SAFETY: the slot is IDLE (the previous Watch ended it), so the watchdog does not read
    // `request` now; the Release store below publishes the pointer before RUNNING.
    unsafe { *s.request.get() = (req as *const Request<'_>).cast() };
    s.timeout_ms
        .store(ms(timeout.after).max(1), Ordering::Relaxed);
    s.state.store(word(seq, RUNNING), Ordering::Release);
    Some(Watch {
        slot,
        seq,
        _not_send: PhantomData,
    })
}

impl Watch {
    fn slot(&self) -> &Slot {
        // SAFETY: see `begin`: the slot outlives the Watch, which stays on its thread.
        unsafe { &*self.slot }
    }

    /// This thread's Python id.
    pub(crate) fn ident(&self) -> std::ffi::c_ulong {
        self.slot().ident
    }

    /// Ends the watch: back to IDLE, once the watchdog is not using the request any more.
    pub(crate) fn end(self) -> Ended {
        let ended = self.release();
        std::mem::forget(self);
        ended
    }

    fn release(&self) -> Ended {
        let slot = self.slot();
        loop {
            let w = slot.state.load(Ordering::Acquire);
            let ended = match kind_of(w) {
                RUNNING | IDLE => Ended::Finished,
                INTERRUPTED => Ended::Interrupted,
                ABANDONED => Ended::Abandoned,
                _ => {
                    // BUSY: the watchdog reads what this request borrows; it takes microseconds
                    // (never the GIL, which this thread does not hold here).
                    std::thread::yield_now();
                    continue;
                }
            };
            let idle = word(self.seq, IDLE);
            if slot
                .state
                .compare_exchange(w, idle, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if ended == Ended::Abandoned {
                    STUCK.fetch_sub(1, Ordering::AcqRel);
                }
                return ended;
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Only on unwinding (end() forgets the Watch): the borrows end now, wait out the watchdog.
        let _ = self.release();
    }
}

/// Starts the watchdog and the interrupter, once per process. A thread that cannot be started
/// is logged once; the process then serves without enforcing timeouts.
fn start(log: &'static dyn ErrorLog) {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        epoch();
        let spawn = |name: &str, f: fn()| {
            crate::thread::spawn_with_signals_blocked(
                std::thread::Builder::new()
                    .name(name.into())
                    .stack_size(256 * 1024),
                f,
            )
        };
        for (name, f) in [
            ("rwsgi-watchdog", run as fn()),
            ("rwsgi-interrupt", run_interrupter as fn()),
        ] {
            if let Err(e) = spawn(name, f) {
                log.log(
                    Level::Error,
                    &format!("RW-PY044 cannot start the {name} thread ({e}): request timeouts are not enforced in this process"),
                );
            }
        }
    });
}

/// The watchdog thread.
fn run() {
    loop {
        std::thread::sleep(TICK);
        let list: Vec<Arc<Slot>> = slots().clone();
        let now = now_ms();
        for slot in &list {
            inspect(slot, now);
        }
    }
}

fn inspect(slot: &Arc<Slot>, now: u64) {
    let w = slot.state.load(Ordering::Acquire);
    let (seq, kind) = (seq_of(w), kind_of(w));
    if !matches!(kind, RUNNING | INTERRUPTED) {
        return;
    }
    if slot.seen_seq.load(Ordering::Relaxed) != seq {
        slot.seen_seq.store(seq, Ordering::Relaxed);
        slot.seen_at.store(now, Ordering::Relaxed);
        return;
    }
    let ran = now.saturating_sub(slot.seen_at.load(Ordering::Relaxed));
    let timeout = slot.timeout_ms.load(Ordering::Relaxed);
    match kind {
        RUNNING if ran >= timeout => interrupt(slot, w, ran),
        INTERRUPTED if ran >= timeout + ms(interrupt_grace(Duration::from_millis(timeout))) => {
            abandon(slot, w, ran)
        }
        _ => {}
    }
}

/// Takes BUSY on request `w`; false if it ended or moved on meanwhile.
fn claim(slot: &Slot, w: u64) -> bool {
    slot.state
        .compare_exchange(
            w,
            word(seq_of(w), BUSY),
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
}

/// Step 1: the request passed its timeout.
fn interrupt(slot: &Arc<Slot>, w: u64, ran: u64) {
    if !claim(slot, w) {
        return;
    }
    // SAFETY: we hold BUSY for this request: its thread cannot leave `handle` (Watch::end waits
    // for us), so the Request and what it borrows are alive; we only read them.
    let req = unsafe { &**slot.request.get() };
    let job = req.timeout.map(|t| Job {
        slot: Arc::clone(slot),
        seq: seq_of(w),
        what: describe(req),
        ran: Duration::from_millis(ran),
        after: t.after,
        log: t.log,
    });
    slot.state
        .store(word(seq_of(w), INTERRUPTED), Ordering::Release);
    if let Some(job) = job {
        QUEUE
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(job);
        QUEUE.ready.notify_one();
    }
}

/// One request for the interrupter.
struct Job {
    slot: Arc<Slot>,
    seq: u64,
    /// `METHOD URI`, for the log line.
    what: String,
    ran: Duration,
    after: Duration,
    log: &'static dyn ErrorLog,
}

struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
}

static QUEUE: Queue = Queue {
    jobs: Mutex::new(VecDeque::new()),
    ready: Condvar::new(),
};

/// The interrupter thread: the GIL side of step 1, on a thread of its own so that a GIL held
/// for ever by some extension stalls only this, never the watchdog's step 2.
fn run_interrupter() {
    // One Python thread state for good: attaching again and again is then cheap.
    let _python = crate::register_thread();
    loop {
        let job = {
            let mut jobs = QUEUE.jobs.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(job) = jobs.pop_front() {
                    break job;
                }
                jobs = QUEUE.ready.wait(jobs).unwrap_or_else(|e| e.into_inner());
            }
        };
        // The stack first, then its log line (I/O, without the GIL), then the exception: so
        // the line is in the log before the request's own 504 line and before its client has
        // the answer. A request that ended meanwhile is left alone at either step.
        let ident = job.slot.ident;
        // Python::attach, not gil::attach: this is no request thread, and its waits for the
        // GIL are not the requests' (stats.rs).
        let stack = Python::attach(|py| {
            job.slot
                .still_running(job.seq)
                .then(|| interrupt::stack_of(py, ident))
        });
        let Some(stack) = stack else { continue };
        job.log.log(
            Level::Error,
            &format!(
                "RW-PY040 request {} timed out after {:.1}s (request timeout {}s): raising RequestTimeout in its thread; its Python stack at the timeout:\n{stack}",
                job.what,
                job.ran.as_secs_f64(),
                job.after.as_secs_f64()
            ),
        );
        Python::attach(|py| {
            if job.slot.still_running(job.seq) {
                interrupt::raise_in(py, ident);
            }
        });
    }
}

/// Step 2: the thread did not come back within the grace; the transport takes over.
fn abandon(slot: &Arc<Slot>, w: u64, ran: u64) {
    if !claim(slot, w) {
        return;
    }
    STUCK.fetch_add(1, Ordering::AcqRel);
    // SAFETY: as in `interrupt`: BUSY keeps the request and its borrows alive.
    let req = unsafe { &**slot.request.get() };
    if let Some(t) = req.timeout {
        t.log.log(
            Level::Error,
            &format!(
                "RW-PY042 request {} did not come back {:.1}s after its timeout (it is stuck in C code: a blocking call that does not return to Python): the server takes the request over",
                describe(req),
                Duration::from_millis(ran).saturating_sub(t.after).as_secs_f64()
            ),
        );
        // A panic in the transport's hook must not take the watchdog down.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| t.stuck.stuck()));
    }
    slot.state
        .store(word(seq_of(w), ABANDONED), Ordering::Release);
}

/// `METHOD URI` of a request, for log lines: at most 200 characters, control characters escaped.
pub(crate) fn describe(req: &Request<'_>) -> String {
    let var = |name: &[u8]| {
        req.vars
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
            .unwrap_or_default()
    };
    let uri = match var(b"REQUEST_URI") {
        b"" => var(b"PATH_INFO"),
        uri => uri,
    };
    let mut out = String::from_utf8_lossy(var(b"REQUEST_METHOD")).into_owned();
    out.push(' ');
    for c in String::from_utf8_lossy(uri).chars().take(200) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_is_a_tenth_within_bounds() {
        assert_eq!(interrupt_grace(Duration::from_secs(2)), GRACE_MIN);
        assert_eq!(
            interrupt_grace(Duration::from_secs(60)),
            Duration::from_secs(6)
        );
        assert_eq!(interrupt_grace(Duration::from_secs(3600)), GRACE_MAX);
    }

    #[test]
    fn state_words_keep_seq_and_kind_apart() {
        let w = word(41, INTERRUPTED);
        assert_eq!((seq_of(w), kind_of(w)), (41, INTERRUPTED));
        assert_eq!(kind_of(word(u64::MAX >> KIND_BITS, ABANDONED)), ABANDONED);
    }

    #[test]
    fn descriptions_escape_control_characters() {
        let vars: [(&[u8], &[u8]); 2] = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/a\nb")];
        let req = Request {
            vars: &vars,
            mode: crate::Mode::default(),
            timeout: None,
        };
        assert_eq!(describe(&req), "GET /a\\nb");
    }
}
