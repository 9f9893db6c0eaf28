//! Request timeouts for ASGI apps, in two steps.
//!
//! 1. On the loop: a request submitted with a [`Timeout`] gets a `loop.call_later` timer when
//!    the loop takes it (conn.rs `_timeout`). At the deadline the app's task is cancelled
//!    (`task.cancel()`: the `await` it waits in raises `CancelledError`), the client gets 504 if
//!    nothing was sent yet or sees the response cut, and the loop serves on. This is the natural
//!    timeout of an event loop (asyncio's own `asyncio.timeout()`), and costs the loop one timer
//!    per request; no thread is interrupted.
//! 2. Off the loop: a coroutine that blocks the loop in synchronous code (`time.sleep`, a
//!    blocking socket call, a CPU loop) cannot be cancelled, and while it blocks nothing else on
//!    the loop runs either, its own timer included. [`Deadlines`] notices that from its own
//!    thread: an entry still there [`interrupt_grace`] after its deadline means the loop did not
//!    come back to run the timer. The monitor then calls the transport's
//!    [`Timeout::take_over`], which answers the client without the loop (504, or cuts the
//!    response) and retires the process once its other requests are done (a daemon worker is
//!    replaced, an nginx worker exits gracefully): the loop may never come back.
//!
//! An entry is removed by whoever acts first: the loop's timer (step 1), the end of the response
//! (no timeout any more: background work after a complete response is not timed, as the
//! request is over), or the monitor (step 2). The monitor thread starts with the first timed
//! request and looks five times a second; requests without a timeout cost nothing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::log::{ErrorLog, Level};
use crate::watchdog::interrupt_grace;

/// How often the monitor looks for deadlines the loop missed.
const TICK: Duration = Duration::from_millis(200);

/// A request's timeout, given with [`crate::asgi::AsgiHost::submit`].
pub struct Timeout {
    /// From the submit to the cancel.
    pub after: Duration,
    /// Step 2 (module docs): called once, on the monitor thread, when the loop did not come back
    /// to time the request out itself. Answer the client without the loop (504 if nothing was
    /// sent, else cut the response) and have this process replaced once its other requests are
    /// done. Must not block and must not take the GIL (the loop thread may hold it for ever).
    pub take_over: Box<dyn FnOnce() + Send>,
}

struct Entry {
    /// The deadline plus the grace: past this, the loop missed the timer.
    overdue: Instant,
    after: Duration,
    /// `METHOD URI`, for the log.
    what: String,
    take_over: Box<dyn FnOnce() + Send>,
}

/// The deadlines of the requests in flight that have one (module docs).
pub(crate) struct Deadlines {
    entries: Mutex<HashMap<u64, Entry>>,
    /// Requests the monitor took over, until the loop hears of it (`taken_over`).
    taken: Mutex<HashSet<u64>>,
    /// `taken`'s size, so that a send() asks without a lock while nothing was taken over.
    taken_count: AtomicUsize,
    log: Arc<dyn ErrorLog>,
    monitor: OnceLock<()>,
}

impl Deadlines {
    pub(crate) fn new(log: Arc<dyn ErrorLog>) -> Arc<Deadlines> {
        Arc::new(Deadlines {
            entries: Mutex::new(HashMap::new()),
            taken: Mutex::new(HashSet::new()),
            taken_count: AtomicUsize::new(0),
            log,
            monitor: OnceLock::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // Every update is one insert or remove: a panic cannot leave the map half done.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes connection `id`'s deadline (at its submit, on the transport's thread); returns the
    /// deadline for the loop's timer.
    pub(crate) fn add(self: &Arc<Self>, id: u64, timeout: Timeout, what: String) -> Instant {
        let due = Instant::now() + timeout.after;
        let entry = Entry {
            overdue: due + interrupt_grace(timeout.after),
            after: timeout.after,
            what,
            take_over: timeout.take_over,
        };
        self.lock().insert(id, entry);
        self.monitor.get_or_init(|| self.start_monitor());
        due
    }

    /// Forgets connection `id`'s deadline. True if it was still there: the caller acts on the
    /// timeout; false: nothing to do, or the monitor already took the request over.
    pub(crate) fn remove(&self, id: u64) -> bool {
        self.taken_over(id);
        self.lock().remove(&id).is_some()
    }

    /// True once if the monitor took connection `id` over: the loop came back from whatever
    /// blocked it, and the app must not answer any more (its transport already did).
    pub(crate) fn taken_over(&self, id: u64) -> bool {
        if self.taken_count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let removed = self
            .taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if removed {
            self.taken_count.fetch_sub(1, Ordering::AcqRel);
        }
        removed
    }

    fn start_monitor(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        let builder = std::thread::Builder::new().name("rwsgi-asgi-timeout".into());
        let started = crate::spawn_with_signals_blocked(builder, move || {
            while let Some(d) = me.upgrade() {
                d.take_over_overdue();
                drop(d);
                std::thread::sleep(TICK);
            }
        });
        if let Err(e) = started {
            self.log.log(
                Level::Error,
                &format!(
                    "RW-PY044 cannot start the ASGI timeout monitor thread ({e}): a request \
                     that blocks the asyncio loop past its timeout is not taken over"
                ),
            );
        }
    }

    /// The monitor's look: every entry past its deadline and grace is a request whose timer
    /// the loop did not run: the loop is blocked.
    fn take_over_overdue(&self) {
        let now = Instant::now();
        let overdue: Vec<(u64, Entry)> = {
            let mut map = self.lock();
            let ids: Vec<u64> = map
                .iter()
                .filter(|(_, e)| now >= e.overdue)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| map.remove(&id).map(|e| (id, e)))
                .collect()
        };
        for (id, e) in overdue {
            if self
                .taken
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id)
            {
                self.taken_count.fetch_add(1, Ordering::AcqRel);
            }
            self.log.log(
                Level::Error,
                &format!(
                    "RW-PY046 ASGI request {} passed its request timeout ({}s) and the asyncio \
                     loop did not come back to cancel it within {:.1}s: a coroutine blocks the \
                     loop in synchronous code (time.sleep, a blocking call, a CPU loop); the \
                     server takes the request over",
                    e.what,
                    e.after.as_secs_f64(),
                    interrupt_grace(e.after).as_secs_f64()
                ),
            );
            (e.take_over)();
        }
    }
}
