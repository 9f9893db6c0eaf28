//! Spreading client connections over the nginx workers that host Python.
//!
//! With `accept_mutex off` (nginx's default) on Linux, every worker waits for new connections on
//! the same listening socket with `EPOLLEXCLUSIVE`, and the kernel wakes the first worker in line
//! of those waiting in `epoll_wait`. nginx moves a worker to the back of the line after every
//! 16th accept (`ngx_reorder_accept_events`, 1.21.6+). That is enough where a worker's event loop
//! is busy while the worker is: a busy worker is not waiting, so the next one is woken. A worker
//! that hosts Python is different. Its event loop hands requests to the Python threads and
//! waits again at once, so it looks idle while its Python threads keep its core busy. Clients
//! that open their connections one after another (a connection pool, a browser, wrk) got 15 of
//! 16 connections on one worker, and half the machine served them
//! (bench/results/2026-12-04-connection-split.md). A burst that arrives all at once goes wherever
//! the first worker to run drains the backlog: under load the other worker, woken too, often
//! gets no core before the backlog is empty.
//!
//! So in a worker that hosts Python, the HTTP listening sockets' handler does two things after
//! nginx's own (`ngx_http_init_connection`):
//! - **Turns.** It moves this worker to the back of the line (an `EPOLL_CTL_DEL` and
//!   `EPOLL_CTL_ADD` of the listening socket, the call pair nginx's own reorder makes), so
//!   connections arriving one after another go round the waiting workers.
//! - **Counts.** Every worker counts the connections it takes in the current burst in a shared
//!   table (seats.rs; a burst ends after a gap of [`super::seats::BURST_GAP_MS`]). A worker
//!   [`super::seats::SURPLUS`] ahead of another live worker of its configuration stops
//!   accepting (its listening sockets leave its epoll set): the backlog is left to the others.
//!   It looks again every [`PAUSE_MS`] and accepts again once the others have caught up, or
//!   after [`MAX_PAUSE_MS`] in any case. Each worker's event loop also beats in the table
//!   every [`super::seats::BEAT_MS`]; a sibling that stopped beating (a stuck event loop) is
//!   not counted after [`super::seats::STALE_MS`], and a worker that is stopping frees its seat
//!   at its next beat, so neither holds the others back for long. Two workers cannot both be
//!   ahead of each other, so one of them accepts again at its next look.
//!
//! Both only pay when connections are reused: the worker keeps a moving average of how long its
//! connections live, and below [`LONG_LIVED_MS`] (one quick request per connection, no
//! keep-alive) it leaves accepting to nginx. Such connections even out by themselves (measured:
//! Django without keep-alive, both workers equally busy in every round with nginx alone), and
//! for them the pauses cost 8-10 us of CPU per request and the turns 3-8 us (hello world).
//!
//! A connection that arrives while a worker's socket is out of its epoll set waits in the
//! socket's backlog and wakes another worker, or this one when the socket is added back (the
//! add reports a pending connection at once). A socket nginx itself took out (out of
//! descriptors) is left for nginx to put back, and one that cannot be put back is retried at
//! the next look. Listening sockets with `reuseport` (one per worker: nothing to share),
//! `accept_mutex on` (no `EPOLLEXCLUSIVE`; the mutex decides), `worker_processes 1` and
//! `master_process off` are left as nginx runs them; with `timer_resolution` set, workers take
//! turns but never pause (their 1 ms looks would wait for the resolution's period).

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::OnceLock;

use ngx::core::{CoreModuleMainConf, NgxCoreModule};
use ngx::ffi::{
    ngx_add_timer, ngx_connection_t, ngx_current_msec, ngx_cycle, ngx_cycle_t, ngx_event_actions,
    ngx_event_t, ngx_exiting, ngx_http_init_connection, ngx_listening_t, ngx_msec_t,
    ngx_pool_cleanup_add, ngx_process, ngx_use_exclusive_accept, NGX_DISABLE_EVENT, NGX_OK,
    NGX_PROCESS_WORKER,
};

use super::imports::{alive, now_ms};
use super::seats::Seats;

/// `NGX_READ_EVENT` and `NGX_EXCLUSIVE_EVENT` of nginx's epoll module (macros bindgen cannot
/// carry): what `ngx_event_process_init` passes when it adds a listening socket.
const READ_EVENT: isize = (libc::EPOLLIN | libc::EPOLLRDHUP) as isize;
const EXCLUSIVE_EVENT: usize = libc::EPOLLEXCLUSIVE as u32 as usize;

/// How often a worker that stopped accepting looks at the counts again.
pub const PAUSE_MS: ngx_msec_t = 1;
/// The longest a worker stops accepting at a time.
pub const MAX_PAUSE_MS: ngx_msec_t = 10;

/// Connections that live at least this long on average (keep-alive, WebSocket, slow requests)
/// are balanced; shorter ones (one quick request each) even out by themselves.
pub const LONG_LIVED_MS: ngx_msec_t = 50;
/// A lifetime counts at most this much in the average, so that one connection held for an hour
/// does not outweigh the next hundred.
const LIFETIME_CAP_MS: ngx_msec_t = 8 * LONG_LIVED_MS;

/// This worker's place in the shared table.
struct Seat {
    seats: Seats,
    slot: usize,
    generation: u32,
    pid: i32,
}

static SEAT: OnceLock<Seat> = OnceLock::new();
/// The pause timer (leaked, process-long), once [`install`] took a socket over.
static TIMER: AtomicPtr<ngx_event_t> = AtomicPtr::new(std::ptr::null_mut());
/// When the current pause began (`ngx_current_msec`); read and written on the event loop only.
static PAUSED_AT: AtomicUsize = AtomicUsize::new(0);
/// A pause is due at the timer's next run (event loop only; see [`want_pause`]).
static PAUSE_DUE: AtomicBool = AtomicBool::new(false);
/// Eight times the average lifetime of this worker's closed connections (ms; a moving average
/// weighing the last one 1/8, kept times 8 so that it does not round down), event loop only;
/// long until connections say otherwise, so that the first burst after a start is balanced.
static LIFETIME_MS_X8: AtomicUsize = AtomicUsize::new(8 * LIFETIME_CAP_MS);
/// Whether this worker may pause at all: not with `timer_resolution`, under which nginx's
/// timers run only at its period, so a 1 ms look could take that long.
static PAUSES: AtomicBool = AtomicBool::new(true);

/// Takes over the handler of this worker's shared HTTP listening sockets (see the file
/// comment) and claims its seat; returns how many sockets it took over (0: nginx's own
/// accepting suits this configuration).
///
/// # Safety
/// `cycle` is the worker's cycle, in `init_process` after the event module's (which decides
/// `EPOLLEXCLUSIVE`), before the event loop accepts anything; `slot` is `ngx_process_slot`.
pub unsafe fn install(cycle: *mut ngx_cycle_t, slot: usize, generation: u32) -> usize {
    // SAFETY: set by ngx_event_process_init, which ran before us, and by nginx before
    // init_process; read on the event-loop thread. With `master_process off` there is one
    // process whatever worker_processes says, and nothing to share.
    let (exclusive, role) = unsafe { (ngx_use_exclusive_accept, ngx_process) };
    if exclusive == 0 || role != NGX_PROCESS_WORKER as usize {
        return 0;
    }
    // SAFETY: the caller passes the worker's live cycle; its listening array holds `nelts`
    // entries and nothing else touches it during init_process.
    let listening = unsafe { listening_of(cycle) };
    let http: unsafe extern "C" fn(*mut ngx_connection_t) = ngx_http_init_connection;
    let mut taken = 0;
    for ls in listening {
        // Only http{}'s own TCP sockets (stream{} and mail{} have handlers of their own; a QUIC
        // socket is UDP and reuseport, and nginx calls its handler per QUIC connection).
        if ls.type_ == libc::SOCK_STREAM
            && ls.reuseport() == 0
            && ls.handler.is_some_and(|h| std::ptr::fn_addr_eq(h, http))
        {
            ls.handler = Some(accepted);
            taken += 1;
        }
    }
    if taken == 0 {
        return 0;
    }
    // SAFETY: init_process runs on the event loop; the cycle's log lives as long as the worker.
    let timer = unsafe { super::timer::leaked(Some(tick), (*cycle).log) };
    TIMER.store(timer, Ordering::Relaxed);
    // SAFETY: the caller passes the live cycle.
    let resolution = NgxCoreModule::main_conf(unsafe { &*cycle }).map_or(0, |c| c.timer_resolution);
    PAUSES.store(resolution == 0, Ordering::Relaxed);
    if let Some(seats) = Seats::shared() {
        let pid = std::process::id() as i32;
        if seats.claim(slot, pid, generation, now_ms()) {
            let _ = SEAT.set(Seat {
                seats,
                slot,
                generation,
                pid,
            });
            // SAFETY: as for the pause timer.
            let beat = unsafe { super::timer::leaked(Some(beat), (*cycle).log) };
            // SAFETY: the leaked event, on the event loop.
            unsafe { ngx_add_timer(beat, super::seats::BEAT_MS as ngx_msec_t) };
        }
    }
    taken
}

/// The heartbeat timer: notes in the table that this worker's event loop runs; once the worker
/// is stopping (reload, quit, a stuck request's retirement), frees its seat instead and stops.
extern "C" fn beat(ev: *mut ngx_event_t) {
    let Some(s) = SEAT.get() else {
        return;
    };
    // SAFETY: nginx's flag, read on its event loop (timers run there).
    if unsafe { ngx_exiting } != 0 {
        s.seats.release(s.slot, s.pid);
        return;
    }
    s.seats.beat(s.slot, now_ms());
    // SAFETY: the leaked event (install), on the event loop.
    unsafe { ngx_add_timer(ev, super::seats::BEAT_MS as ngx_msec_t) };
}

/// `exit_process`: this worker's seat is free.
pub fn leave() {
    if let Some(s) = SEAT.get() {
        s.seats.release(s.slot, s.pid);
    }
}

/// The listening sockets of `cycle`.
///
/// # Safety
/// `cycle` is live; on the event-loop thread, which alone changes its listening array.
unsafe fn listening_of<'a>(cycle: *mut ngx_cycle_t) -> &'a mut [ngx_listening_t] {
    // SAFETY: the caller's contract; an empty array has null elts.
    unsafe {
        let array = &(*cycle).listening;
        if array.elts.is_null() || array.nelts == 0 {
            return &mut [];
        }
        std::slice::from_raw_parts_mut(array.elts.cast::<ngx_listening_t>(), array.nelts)
    }
}

/// The handler of a listening socket taken over by [`install`].
extern "C" fn accepted(c: *mut ngx_connection_t) {
    // SAFETY: nginx calls a listening socket's handler on the event loop with the connection it
    // has just accepted, its pool made; `listening` points into the cycle, which outlives the
    // connection. They are read first: ngx_http_init_connection may close and free `c`.
    let (ls, pool, start) = unsafe { ((*c).listening, (*c).pool, (*c).start_time) };
    // SAFETY: the pool lives until the connection closes, when nginx runs its cleanups; the
    // record's data is room for the connection's start time.
    let cleanup = unsafe { ngx_pool_cleanup_add(pool, std::mem::size_of::<ngx_msec_t>()) };
    if !cleanup.is_null() {
        // SAFETY: a fresh cleanup record of that pool, its data allocated and aligned for a
        // ngx_msec_t.
        unsafe {
            (*cleanup).data.cast::<ngx_msec_t>().write(start);
            (*cleanup).handler = Some(closed);
        }
    }
    // SAFETY: what nginx would have called with the same connection.
    unsafe { ngx_http_init_connection(c) };
    if !long_lived() {
        return; // short connections even out by themselves (see the file comment)
    }
    let now = now_ms();
    if let Some(s) = SEAT.get() {
        s.seats.accepted(s.slot, now);
    }
    if PAUSES.load(Ordering::Relaxed) && surplus() {
        // SAFETY: on the event loop of the running cycle.
        unsafe { want_pause() };
    } else {
        // SAFETY: `ls` is the running cycle's listening socket this connection came from.
        unsafe { requeue(ls) };
    }
}

/// A client connection of this worker closed (its pool's cleanup, on the event loop, with the
/// connection's start time): its lifetime goes into the average.
extern "C" fn closed(data: *mut std::ffi::c_void) {
    // SAFETY: `data` is the record's room, where accepted() wrote the start time; nginx's
    // clock is read on its thread.
    let lived = unsafe { ngx_current_msec.wrapping_sub(data.cast::<ngx_msec_t>().read()) };
    let x8 = LIFETIME_MS_X8.load(Ordering::Relaxed);
    LIFETIME_MS_X8.store(x8 - x8 / 8 + lived.min(LIFETIME_CAP_MS), Ordering::Relaxed);
}

/// Whether this worker's connections live long enough, on average, for balancing to pay.
fn long_lived() -> bool {
    LIFETIME_MS_X8.load(Ordering::Relaxed) >= 8 * LONG_LIVED_MS
}

/// Whether this worker has taken enough more of the current burst than a live sibling to leave
/// it the next connection.
fn surplus() -> bool {
    SEAT.get()
        .is_some_and(|s| s.seats.surplus(s.slot, s.generation, now_ms(), &alive))
}

/// The shared HTTP listening sockets taken over by [`install`] in the running cycle (none once
/// a stopping worker has closed them: nginx empties the array).
///
/// # Safety
/// On the event-loop thread.
unsafe fn taken<'a>() -> impl Iterator<Item = &'a mut ngx_listening_t> {
    let ours: extern "C" fn(*mut ngx_connection_t) = accepted;
    // SAFETY: ngx_cycle is the running cycle (caller's contract).
    unsafe { listening_of(ngx_cycle) }
        .iter_mut()
        .filter(move |ls| {
            !ls.connection.is_null() && ls.handler.is_some_and(|h| std::ptr::fn_addr_eq(h, ours))
        })
}

/// Has the timer pause accepting at once, once nginx's accept handler has returned: it may still
/// reorder the socket (`ngx_reorder_accept_events` deletes it from the epoll set without
/// asking whether it is there, and logs an alert when it is not). A timer of 0 ms runs in the
/// same turn of the event loop, after the events.
///
/// # Safety
/// On the event-loop thread.
unsafe fn want_pause() {
    let timer = TIMER.load(Ordering::Relaxed);
    if timer.is_null()
        || PAUSED_AT.load(Ordering::Relaxed) != 0
        || PAUSE_DUE.load(Ordering::Relaxed)
    {
        return;
    }
    PAUSE_DUE.store(true, Ordering::Relaxed);
    // SAFETY: the leaked timer event (install), on the event loop.
    unsafe { ngx_add_timer(timer, 0) };
}

/// Takes this worker's shared sockets out of its epoll set and arms the timer that looks again.
///
/// # Safety
/// On the event-loop thread, outside nginx's accept handler.
unsafe fn pause() {
    let timer = TIMER.load(Ordering::Relaxed);
    if timer.is_null() {
        return;
    }
    // SAFETY: the epoll module's actions, set at process init; each listening connection and
    // its read event live while the socket is open (taken() skips closed ones). This is the call
    // nginx makes to stop accepting (ngx_disable_accept_events).
    unsafe {
        let Some(del) = ngx_event_actions.del else {
            return;
        };
        for ls in taken() {
            let rev = (*ls.connection).read;
            if (*rev).active() != 0 {
                del(rev, READ_EVENT, NGX_DISABLE_EVENT as usize);
            }
        }
    }
    // SAFETY: on the event loop (caller's contract).
    unsafe { retry_later() };
}

/// The pause timer: starts a pause that is due (if the surplus is still there); during one,
/// accepts again once this worker no longer has a surplus, or the pause is long enough, and
/// otherwise looks again in [`PAUSE_MS`].
extern "C" fn tick(timer: *mut ngx_event_t) {
    // SAFETY: nginx's globals, read on the event-loop thread that owns them.
    let (exiting, now) = unsafe { (ngx_exiting, ngx_current_msec) };
    if exiting != 0 {
        return; // its listening sockets are closed
    }
    if PAUSE_DUE.swap(false, Ordering::Relaxed) {
        if surplus() {
            // SAFETY: nginx runs timers on the event loop, outside the accept handler.
            unsafe { pause() };
        }
        return;
    }
    let since = PAUSED_AT.load(Ordering::Relaxed);
    if since == 0 {
        return; // not paused (armed by a pause that was no longer due)
    }
    if surplus() && now.saturating_sub(since) < MAX_PAUSE_MS {
        // SAFETY: the leaked timer event, on the event loop.
        unsafe { ngx_add_timer(timer, PAUSE_MS) };
        return;
    }
    // SAFETY: on the event loop (nginx runs timers there).
    unsafe { accept_again() };
}

/// Ends a pause: this worker's shared sockets go back into its epoll set.
///
/// # Safety
/// On the event-loop thread.
unsafe fn accept_again() {
    // SAFETY: nginx's flag, read on its thread.
    if unsafe { ngx_exiting } != 0 {
        return; // its listening sockets are closed
    }
    let mut failed = false;
    // SAFETY: as in pause(); the call ngx_event_process_init makes for these sockets. A socket
    // whose read event has a timer was taken out by nginx itself, out of descriptors
    // (ngx_event_accept's EMFILE back-off): nginx puts it back when that timer runs.
    unsafe {
        let Some(add) = ngx_event_actions.add else {
            return;
        };
        for ls in taken() {
            let rev = (*ls.connection).read;
            if (*rev).active() == 0
                && (*rev).timer_set() == 0
                && add(rev, READ_EVENT, EXCLUSIVE_EVENT) != NGX_OK as isize
            {
                failed = true;
            }
        }
    }
    if failed {
        // SAFETY: on the event loop (caller's contract).
        unsafe { retry_later() };
    } else {
        PAUSED_AT.store(0, Ordering::Relaxed);
    }
}

/// A socket could not be put back into the epoll set (the epoll module has logged why): stay
/// paused and try again at the next look, rather than leave it out for good.
///
/// # Safety
/// On the event-loop thread.
unsafe fn retry_later() {
    let timer = TIMER.load(Ordering::Relaxed);
    if timer.is_null() {
        return;
    }
    // SAFETY: nginx's clock, read on its thread; the leaked timer event (install).
    unsafe {
        if PAUSED_AT.load(Ordering::Relaxed) == 0 {
            PAUSED_AT.store(ngx_current_msec.max(1), Ordering::Relaxed);
        }
        if (*timer).timer_set() == 0 {
            ngx_add_timer(timer, PAUSE_MS);
        }
    }
}

/// Moves this worker to the back of the kernel's line of waiters on `ls`.
///
/// # Safety
/// `ls` is a listening socket of the running cycle; called on the event-loop thread.
unsafe fn requeue(ls: *mut ngx_listening_t) {
    // SAFETY: `ls` is valid (caller's contract); the actions are the epoll module's, set at
    // process init.
    let (ls, del, add) = unsafe { (&*ls, ngx_event_actions.del, ngx_event_actions.add) };
    let (Some(del), Some(add)) = (del, add) else {
        return;
    };
    if ls.connection.is_null() {
        return;
    }
    // SAFETY: the listening connection and its read event live as long as the socket; this is
    // the call pair ngx_reorder_accept_events makes. The epoll module logs a failed epoll_ctl.
    let out = unsafe {
        let rev = (*ls.connection).read;
        (*rev).active() != 0
            && del(rev, READ_EVENT, NGX_DISABLE_EVENT as usize) == NGX_OK as isize
            && add(rev, READ_EVENT, EXCLUSIVE_EVENT) != NGX_OK as isize
    };
    if out {
        // SAFETY: on the event loop (caller's contract).
        unsafe { retry_later() };
    }
}
