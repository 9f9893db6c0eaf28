//! Admission: how many request threads of this process may be in Python at once.
//!
//! A transport's request threads take a [`Permit`] before they take work ([`admit`]) and give it
//! back when the limit drops below the number held ([`Permit::over_limit`]). Threads without a
//! permit wait here, in order, instead of in the GIL's queue. A thread that calls
//! [`crate::handle`] without holding a permit (Apache's threads, which httpd hands a request
//! before we see them) is admitted for that one request inside `handle`.
//!
//! The limit itself comes from [`crate::control`]: the policy lives there; this file is the
//! waiting room, and applies the controller's changes.

use std::cell::Cell;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::control::{self, Setting};
use crate::stats::{self, Field};

/// How long the first waiting thread sleeps before it asks for the demand again and lets the
/// controller look (so that a limit too low for requests blocked outside Python is raised even
/// when none of them ends)...
pub(crate) const WAIT_TICK: Duration = Duration::from_millis(5);
/// ... and while no work was waiting at the last look.
pub(crate) const IDLE_TICK: Duration = Duration::from_millis(50);

/// What a thread waiting for admission has in front of it, as its transport sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Demand {
    /// Nothing waits for a thread right now.
    Idle,
    /// Work waits for a thread (a queued job, a pending connection).
    Waiting,
    /// The thread should stop waiting (the process is stopping).
    Stop,
}

struct Waiter {
    thread: Thread,
    granted: AtomicBool,
}

struct State {
    limit: usize,
    held: usize,
    waiters: VecDeque<Arc<Waiter>>,
}

/// The waiting room of one process.
pub(crate) struct Gate {
    state: Mutex<State>,
    /// A waiting thread saw work waiting for a thread since the controller last looked.
    work_seen: AtomicBool,
}

impl Gate {
    pub(crate) const fn new(limit: usize) -> Gate {
        Gate {
            state: Mutex::new(State {
                limit,
                held: 0,
                waiters: VecDeque::new(),
            }),
            work_seen: AtomicBool::new(false),
        }
    }

    /// Whether work waited for a thread since the last call (the controller's window).
    pub(crate) fn take_work_seen(&self) -> bool {
        self.work_seen.swap(false, Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update under this lock is a few integer stores: a panic cannot leave it torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take a permit, waiting in line if the limit is reached. `demand` says whether work is
    /// waiting for a thread (the controller only raises the limit for work that exists), or
    /// that the caller should stop waiting: then false, and no permit was taken.
    pub(crate) fn enter(&self, demand: &dyn Fn() -> Demand) -> bool {
        let waiter = {
            let mut st = self.lock();
            if st.waiters.is_empty() && st.held < st.limit {
                st.held += 1;
                stats::set(Field::InPython, st.held as u64);
                return true;
            }
            let w = Arc::new(Waiter {
                thread: std::thread::current(),
                granted: AtomicBool::new(false),
            });
            st.waiters.push_back(Arc::clone(&w));
            w
        };
        let mut last = demand();
        if last == Demand::Waiting {
            self.work_seen.store(true, Ordering::Relaxed);
        }
        let start = Instant::now();
        loop {
            // Only the first in line keeps an eye on the demand (and lets the controller look):
            // the others sleep until they are first or granted, so a long line costs nothing.
            if self.is_first(&waiter) {
                std::thread::park_timeout(if last == Demand::Idle {
                    IDLE_TICK
                } else {
                    WAIT_TICK
                });
            } else {
                std::thread::park();
            }
            if waiter.granted.load(Ordering::Acquire) {
                break;
            }
            if !self.is_first(&waiter) {
                continue;
            }
            last = demand();
            if last == Demand::Stop && self.withdraw(&waiter) {
                return false;
            }
            if last == Demand::Waiting {
                self.work_seen.store(true, Ordering::Relaxed);
            }
            if let Some((_, limit)) = control::on_wait(last == Demand::Waiting) {
                self.set_limit(limit);
            }
        }
        stats::add(Field::AdmitWaits, 1);
        stats::add_duration(Field::AdmitWaitNs, start.elapsed());
        true
    }

    fn is_first(&self, waiter: &Arc<Waiter>) -> bool {
        self.lock()
            .waiters
            .front()
            .is_some_and(|w| Arc::ptr_eq(w, waiter))
    }

    /// Take a waiter out of line; false if it was granted a permit meanwhile (it then holds one).
    fn withdraw(&self, waiter: &Arc<Waiter>) -> bool {
        let mut st = self.lock();
        if waiter.granted.load(Ordering::Acquire) {
            return false;
        }
        st.waiters.retain(|w| !Arc::ptr_eq(w, waiter));
        let next = st.waiters.front().map(|w| w.thread.clone());
        drop(st);
        // The next in line takes over the watch.
        wake_all(next.into_iter().collect());
        true
    }

    /// Give a permit back; the first waiter in line gets it if the limit allows.
    pub(crate) fn leave(&self) {
        let mut st = self.lock();
        st.held = st.held.saturating_sub(1);
        let wake = grant(&mut st);
        drop(st);
        wake_all(wake);
    }

    /// True if more permits are held than the limit allows now.
    pub(crate) fn over_limit(&self) -> bool {
        let st = self.lock();
        st.held > st.limit
    }

    pub(crate) fn set_limit(&self, limit: usize) {
        let mut st = self.lock();
        st.limit = limit.max(1);
        stats::set(Field::Limit, st.limit as u64);
        let wake = grant(&mut st);
        drop(st);
        wake_all(wake);
    }

    /// (permits held, threads waiting for one).
    pub(crate) fn occupancy(&self) -> (usize, usize) {
        let st = self.lock();
        (st.held, st.waiters.len())
    }
}

/// Hand permits to the waiters at the front while the limit allows; returns whom to wake.
fn grant(st: &mut State) -> Vec<Thread> {
    let mut wake = Vec::new();
    while st.held < st.limit {
        let Some(w) = st.waiters.pop_front() else {
            break;
        };
        st.held += 1;
        w.granted.store(true, Ordering::Release);
        wake.push(w.thread.clone());
    }
    if !wake.is_empty() {
        // Whoever is first in line now takes over the watch (see Gate::enter).
        if let Some(first) = st.waiters.front() {
            wake.push(first.thread.clone());
        }
    }
    stats::set(Field::InPython, st.held as u64);
    wake
}

fn wake_all(threads: Vec<Thread>) {
    for t in threads {
        t.unpark();
    }
}

/// The process's gate. Unlimited until the controller sets a limit.
pub(crate) static GATE: Gate = Gate::new(usize::MAX);

/// Once per process, from `initialize`: the limit `RWSGI_ADMISSION` fixes, or the controller.
pub(crate) fn init() {
    match control::init() {
        Setting::Fixed(n) => GATE.set_limit(n),
        Setting::Off | Setting::Adaptive => stats::set(Field::Limit, 0),
    }
}

/// A request ended (run.rs): the controller may close its window and change the limit.
pub(crate) fn request_done() {
    let gate = || {
        let (held, waiting) = GATE.occupancy();
        (held, waiting, GATE.take_work_seen())
    };
    if let Some((_, limit)) = control::on_request(&gate) {
        GATE.set_limit(limit);
    }
}

thread_local! {
    /// Whether this thread holds a long-lived permit (see [`admit`]).
    static HOLDS: Cell<bool> = const { Cell::new(false) };
}

/// A request thread's admission into Python. Not `Send`: it belongs to the thread that waited.
pub struct Permit {
    _not_send: PhantomData<*mut ()>,
}

/// Wait until this thread may take work into Python, and hold that right until the [`Permit`]
/// is dropped. `demand` is asked every few milliseconds while the thread waits: whether work
/// waits for a thread right now (a job queued, a connection pending), which the controller needs
/// to raise the limit, or whether to give up (None is returned then). Call it before taking the
/// next request; while held, every [`crate::handle`] on this thread runs without waiting again.
pub fn admit(demand: &dyn Fn() -> Demand) -> Option<Permit> {
    if !GATE.enter(demand) {
        return None;
    }
    HOLDS.with(|h| h.set(true));
    Some(Permit {
        _not_send: PhantomData,
    })
}

impl Permit {
    /// True when the limit was lowered below the permits held: drop this one (after the
    /// request in hand) and call [`admit`] again, so that the extra thread waits here.
    pub fn over_limit(&self) -> bool {
        GATE.over_limit()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        HOLDS.with(|h| h.set(false));
        GATE.leave();
    }
}

/// Admission for one request inside `handle`, unless the thread holds a [`Permit`] already.
pub(crate) struct ForRequest(bool);

impl ForRequest {
    pub(crate) fn enter() -> ForRequest {
        if HOLDS.with(Cell::get) {
            return ForRequest(false);
        }
        GATE.enter(&|| Demand::Waiting);
        ForRequest(true)
    }
}

impl Drop for ForRequest {
    fn drop(&mut self) {
        if self.0 {
            GATE.leave();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn waiters_get_permits_in_order_as_they_are_released() {
        let gate = Arc::new(Gate::new(1));
        gate.enter(&|| Demand::Idle);
        let order = Arc::new(Mutex::new(Vec::new()));
        let started = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for i in 0..3 {
            let (g, order, started) = (gate.clone(), order.clone(), started.clone());
            handles.push(std::thread::spawn(move || {
                started.fetch_add(1, Ordering::SeqCst);
                g.enter(&|| Demand::Idle);
                order.lock().unwrap().push(i);
                g.leave();
            }));
            // Queue them one after the other.
            while gate.occupancy().1 < i + 1 {
                std::thread::yield_now();
            }
        }
        assert_eq!(gate.occupancy(), (1, 3));
        gate.leave();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
        assert_eq!(gate.occupancy(), (0, 0));
    }

    #[test]
    fn a_waiter_told_to_stop_leaves_the_line_without_a_permit() {
        let gate = Arc::new(Gate::new(1));
        gate.enter(&|| Demand::Idle);
        let g2 = gate.clone();
        let t = std::thread::spawn(move || g2.enter(&|| Demand::Stop));
        assert!(!t.join().unwrap());
        assert_eq!(gate.occupancy(), (1, 0));
    }

    #[test]
    fn raising_the_limit_admits_waiters_at_once() {
        let gate = Arc::new(Gate::new(1));
        gate.enter(&|| Demand::Idle);
        let g2 = gate.clone();
        let t = std::thread::spawn(move || g2.enter(&|| Demand::Idle));
        while gate.occupancy().1 < 1 {
            std::thread::yield_now();
        }
        gate.set_limit(2);
        t.join().unwrap();
        assert_eq!(gate.occupancy(), (2, 0));
        assert!(!gate.over_limit());
        gate.set_limit(1);
        assert!(gate.over_limit());
    }
}
