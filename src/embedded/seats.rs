//! How many connections each nginx worker that hosts Python has taken in the current burst,
//! shared by all of them, so that a worker ahead of the others leaves the next connections of
//! the burst to them (balance.rs).
//!
//! A burst is a run of accepts less than [`BURST_GAP_MS`] apart, in one worker: a client
//! opening its connections at once (a pool filling up, a browser, wrk). The counts start
//! again after a gap, so what the workers held before (connections still closing, requests
//! still queued for Python from an earlier load) does not skew the next burst: counting open
//! connections did, and a run right after a 64-connection warm-up split 12/4. They also start
//! again at every whole [`WINDOW_MS`] of the monotonic clock (the same instant in every
//! worker), so that under steady arrivals, which never leave a gap, a difference that built up
//! while balancing was off does not last.
//!
//! One seat per nginx process slot (`ngx_process_slot`), in an anonymous shared mapping the
//! master makes in `init_module` (kept across reloads, like imports.rs's ledger). A worker
//! claims its seat when it starts serving and frees it when it exits. Each configuration the
//! master loads is a generation: workers compare themselves only with workers of their own, so
//! the old generation draining after a reload is not counted, and a seat left by a worker that
//! was killed is dropped when its pid is found gone. A worker also beats every
//! [`BEAT_MS`] from its event loop: one whose last beat is older than [`STALE_MS`] (its event
//! loop is stuck) is not counted, so the others do not wait for it.
//!
//! Plain Rust over atomics, unit-tested without nginx. Reads race with updates; that is fine for
//! what the numbers decide (whether to let another worker take the next connection).

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// nginx's `NGX_MAX_PROCESSES`: process slots are below it.
const SLOTS: usize = 1024;

/// A worker this many connections of the burst ahead of another one lets it take the next.
pub const SURPLUS: u32 = 2;
/// Accepts further apart than this (ms) start a new burst.
pub const BURST_GAP_MS: u64 = 100;
/// Counts start again at every multiple of this (ms) of the monotonic clock.
pub const WINDOW_MS: u64 = 1000;
/// How often a worker's event loop beats.
pub const BEAT_MS: u64 = 100;
/// A worker whose last beat is older than this is not counted.
pub const STALE_MS: u64 = 500;

#[repr(C)]
struct Seat {
    /// The worker's pid; 0: free.
    pid: AtomicI32,
    /// The configuration generation it serves.
    generation: AtomicU32,
    /// Connections it accepted in its current burst.
    burst: AtomicU32,
    /// When it last accepted one (monotonic ms).
    last: AtomicU64,
    /// Its event loop's last beat (monotonic ms).
    beat: AtomicU64,
}

/// The window `now` (monotonic ms) falls in.
fn window(now: u64) -> u64 {
    now / WINDOW_MS
}

#[repr(C)]
struct Table {
    seats: [Seat; SLOTS],
    /// One past the highest slot ever claimed: how far [`Seats::surplus`] looks.
    high: AtomicUsize,
}

/// The shared table. All-zero bytes are its empty state.
#[derive(Clone, Copy)]
pub struct Seats {
    table: &'static Table,
}

static SHARED: OnceLock<Seats> = OnceLock::new();
/// The master's count of configurations loaded (process memory: each worker inherits the value
/// its own configuration was given, through the main conf).
static GENERATIONS: AtomicU32 = AtomicU32::new(0);

/// A new generation number, in the master's `init_module` (never 0).
pub fn next_generation() -> u32 {
    GENERATIONS
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(1)
        .max(1)
}

impl Seat {
    /// Its count in the burst going on at `now` (0 if its last accept is older than the gap or
    /// in an earlier window).
    fn in_burst(&self, now: u64) -> u32 {
        let last = self.last.load(Ordering::Relaxed);
        if now.saturating_sub(last) > BURST_GAP_MS || window(last) != window(now) {
            0
        } else {
            self.burst.load(Ordering::Relaxed)
        }
    }
}

impl Seats {
    /// The table the master made, in any of its workers.
    pub fn shared() -> Option<Seats> {
        SHARED.get().copied()
    }

    /// Makes the shared table, once per master (before any worker forks; later calls, on
    /// reloads, keep the first one). `None` if the mapping fails: workers then balance by
    /// turns only.
    pub fn create_shared() -> Option<Seats> {
        if let Some(s) = SHARED.get() {
            return Some(*s);
        }
        // SAFETY: all-zero is the table's empty state, and it holds only atomics.
        let table = unsafe { super::shared_map::zeroed::<Table>() }?;
        Some(*SHARED.get_or_init(|| Seats { table }))
    }

    /// A private table (tests).
    #[cfg(test)]
    fn private() -> Seats {
        // SAFETY: as in create_shared.
        let table = unsafe { super::shared_map::private_zeroed::<Table>() };
        Seats { table }
    }

    /// Worker `pid` of `generation` takes seat `slot`, in no burst yet. `false` if `slot` is out
    /// of range (the worker then only takes turns).
    pub fn claim(&self, slot: usize, pid: i32, generation: u32, now: u64) -> bool {
        let Some(seat) = self.table.seats.get(slot) else {
            return false;
        };
        seat.pid.store(0, Ordering::Release);
        seat.burst.store(0, Ordering::Relaxed);
        seat.last.store(0, Ordering::Relaxed);
        seat.beat.store(now, Ordering::Relaxed);
        seat.generation.store(generation, Ordering::Relaxed);
        seat.pid.store(pid, Ordering::Release);
        self.table.high.fetch_max(slot + 1, Ordering::Relaxed);
        true
    }

    /// The worker in `slot` (`pid`) exits: its seat is free.
    pub fn release(&self, slot: usize, pid: i32) {
        if let Some(seat) = self.table.seats.get(slot) {
            let _ = seat
                .pid
                .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// The event loop of the worker in `slot` runs, at `now`.
    pub fn beat(&self, slot: usize, now: u64) {
        if let Some(seat) = self.table.seats.get(slot) {
            seat.beat.store(now, Ordering::Relaxed);
        }
    }

    /// The worker in `slot` accepted a connection at `now` (monotonic ms): one more in its
    /// burst, or the first of a new one.
    pub fn accepted(&self, slot: usize, now: u64) {
        if let Some(seat) = self.table.seats.get(slot) {
            let n = seat.in_burst(now);
            seat.burst.store(n.saturating_add(1), Ordering::Relaxed);
            seat.last.store(now, Ordering::Relaxed);
        }
    }

    /// Whether the worker in `slot` has taken [`SURPLUS`] or more connections of the burst
    /// going on at `now` than another live worker of `generation` whose event loop beats. `alive` is asked only about
    /// a worker that would make the answer yes; a seat whose worker is gone is freed.
    pub fn surplus(
        &self,
        slot: usize,
        generation: u32,
        now: u64,
        alive: &dyn Fn(i32) -> bool,
    ) -> bool {
        let Some(me) = self.table.seats.get(slot) else {
            return false;
        };
        let mine = me.in_burst(now);
        if mine < SURPLUS {
            return false;
        }
        let high = self.table.high.load(Ordering::Relaxed).min(SLOTS);
        for (i, seat) in self.table.seats[..high].iter().enumerate() {
            if i == slot {
                continue;
            }
            let pid = seat.pid.load(Ordering::Acquire);
            if pid == 0
                || seat.generation.load(Ordering::Relaxed) != generation
                || now.saturating_sub(seat.beat.load(Ordering::Relaxed)) > STALE_MS
                || seat.in_burst(now).saturating_add(SURPLUS) > mine
            {
                continue;
            }
            if alive(pid) {
                return true;
            }
            self.release(i, pid);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(_: i32) -> bool {
        true
    }

    /// When the tests' workers claim their seats (their beats).
    const T0: u64 = 0;

    fn take(s: &Seats, slot: usize, n: u32, now: u64) {
        for _ in 0..n {
            s.accepted(slot, now);
        }
    }

    #[test]
    fn a_worker_two_ahead_in_a_burst_has_a_surplus() {
        const T0: u64 = 1000;
        let s = Seats::private();
        assert!(s.claim(0, 100, 7, T0) && s.claim(1, 101, 7, T0));
        take(&s, 0, 1, 1000);
        assert!(!s.surplus(0, 7, 1000, &live), "one ahead: take it");
        take(&s, 0, 1, 1001);
        assert!(s.surplus(0, 7, 1001, &live), "two ahead");
        assert!(!s.surplus(1, 7, 1001, &live), "the one behind never waits");
        take(&s, 1, 1, 1002);
        assert!(!s.surplus(0, 7, 1002, &live));
    }

    #[test]
    fn a_gap_starts_a_new_burst() {
        const T0: u64 = 1000;
        let s = Seats::private();
        s.claim(0, 100, 1, T0);
        s.claim(1, 101, 1, T0);
        take(&s, 0, 30, 1000); // an earlier load, all on worker 0
        let later = 1000 + BURST_GAP_MS + 1;
        take(&s, 0, 1, later);
        assert!(!s.surplus(0, 1, later, &live), "the old count is gone");
        take(&s, 0, 1, later);
        assert!(s.surplus(0, 1, later, &live), "two of the new burst");
        // Worker 1's old burst does not count for it either.
        take(&s, 1, 5, 1000);
        assert!(s.surplus(0, 1, later, &live));
    }

    #[test]
    fn counts_start_again_in_each_window() {
        let s = Seats::private();
        s.claim(0, 100, 1, T0);
        s.claim(1, 101, 1, T0);
        // Steady arrivals 50 ms apart, all to worker 0 (balancing was off): no gap ends it...
        let mut now = 5 * WINDOW_MS + 100;
        while now < 6 * WINDOW_MS {
            s.accepted(0, now);
            now += 50;
        }
        take(&s, 1, 1, now - 50);
        s.beat(0, now - 50);
        s.beat(1, now - 50);
        assert!(s.surplus(0, 1, now - 50, &live));
        // ... but the next window starts both from nothing.
        s.accepted(1, now);
        s.accepted(0, now);
        assert!(!s.surplus(0, 1, now, &live));
    }

    #[test]
    fn a_worker_whose_event_loop_stopped_beating_is_not_waited_for() {
        let s = Seats::private();
        s.claim(0, 100, 1, T0);
        s.claim(1, 101, 1, T0);
        let now = T0 + STALE_MS;
        take(&s, 0, 3, now);
        s.beat(0, now);
        assert!(s.surplus(0, 1, now, &live), "beat at T0: still counted");
        let now = T0 + STALE_MS + 1;
        take(&s, 0, 1, now);
        assert!(!s.surplus(0, 1, now, &live), "stuck since T0: not counted");
        s.beat(1, now);
        assert!(s.surplus(0, 1, now, &live), "beating again: counted");
    }

    #[test]
    fn alone_other_generations_and_free_seats_do_not_count() {
        let s = Seats::private();
        s.claim(3, 100, 2, T0);
        take(&s, 3, 50, 10);
        assert!(!s.surplus(3, 2, 10, &live), "the only worker");
        s.claim(4, 200, 1, T0); // the old generation, draining after a reload
        assert!(!s.surplus(3, 2, 10, &live));
        s.claim(5, 300, 2, T0);
        s.release(5, 999); // not its pid: kept
        assert!(s.surplus(3, 2, 10, &live));
        s.release(5, 300);
        assert!(!s.surplus(3, 2, 10, &live));
    }

    #[test]
    fn a_dead_workers_seat_is_freed_when_found() {
        let s = Seats::private();
        s.claim(0, 100, 1, T0);
        s.claim(1, 101, 1, T0); // killed with -9: never released
        take(&s, 0, 5, 10);
        let asked = std::cell::Cell::new(0);
        let dead = |pid: i32| {
            asked.set(pid);
            false
        };
        assert!(!s.surplus(0, 1, 10, &dead));
        assert_eq!(asked.get(), 101);
        asked.set(0);
        assert!(!s.surplus(0, 1, 10, &dead));
        assert_eq!(asked.get(), 0, "the seat was freed: not asked again");
    }

    #[test]
    fn a_new_claim_starts_from_nothing_and_slots_out_of_range_are_refused() {
        let s = Seats::private();
        s.claim(2, 100, 1, T0);
        s.claim(3, 101, 1, T0);
        take(&s, 2, 9, 10);
        s.claim(2, 150, 1, T0); // respawned in the same slot
        take(&s, 3, 2, 10);
        assert!(s.surplus(3, 1, 10, &live), "the successor starts at 0");
        assert!(!s.claim(SLOTS, 1, 1, T0));
        s.accepted(SLOTS, 10);
        assert!(!s.surplus(SLOTS, 1, 10, &live));
    }

    #[test]
    fn generations_are_never_zero_and_change() {
        let a = next_generation();
        let b = next_generation();
        assert!(a != 0 && b != 0 && a != b);
    }
}
