//! How many client connections each nginx worker that hosts Python holds, shared by all of them,
//! so that a worker far ahead of the others leaves the next connections to them (balance.rs).
//!
//! One seat per nginx process slot (`ngx_process_slot`), in an anonymous shared mapping the
//! master makes in `init_module` (kept across reloads, like imports.rs's ledger). A worker
//! claims its seat when it starts serving, counts its connections in it, and frees it when it
//! exits. Each configuration the master loads is a generation: workers compare themselves only
//! with workers of their own, so the old generation draining after a reload is not counted, and
//! a seat left by a worker that was killed is dropped when its pid is found gone.
//!
//! Plain Rust over atomics, unit-tested without nginx. Reads race with updates; that is fine for
//! what the numbers decide (whether to let another worker take the next connection).

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// nginx's `NGX_MAX_PROCESSES`: process slots are below it.
const SLOTS: usize = 1024;

/// A worker this many connections ahead of the least loaded other one lets it take the next.
pub const SURPLUS: u32 = 2;

#[repr(C)]
struct Seat {
    /// The worker's pid; 0: free.
    pid: AtomicI32,
    /// The configuration generation it serves.
    generation: AtomicU32,
    /// Its open client connections.
    conns: AtomicU32,
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

    /// Worker `pid` of `generation` takes seat `slot`, with no connections yet. `false` if
    /// `slot` is out of range (the worker then only takes turns).
    pub fn claim(&self, slot: usize, pid: i32, generation: u32) -> bool {
        let Some(seat) = self.table.seats.get(slot) else {
            return false;
        };
        seat.pid.store(0, Ordering::Release);
        seat.conns.store(0, Ordering::Relaxed);
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

    /// The worker in `slot` accepted a connection.
    pub fn opened(&self, slot: usize) {
        if let Some(seat) = self.table.seats.get(slot) {
            seat.conns.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One of its connections closed.
    pub fn closed(&self, slot: usize) {
        if let Some(seat) = self.table.seats.get(slot) {
            let _ = seat
                .conns
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Whether the worker in `slot` holds [`SURPLUS`] or more connections than another live
    /// worker of `generation`. `alive` is asked only about a worker that would make the answer
    /// yes; a seat whose worker is gone is freed.
    pub fn surplus(&self, slot: usize, generation: u32, alive: &dyn Fn(i32) -> bool) -> bool {
        let Some(me) = self.table.seats.get(slot) else {
            return false;
        };
        let mine = me.conns.load(Ordering::Relaxed);
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
                || seat.conns.load(Ordering::Relaxed).saturating_add(SURPLUS) > mine
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

    /// Connections the worker in `slot` holds.
    #[cfg(test)]
    fn conns(&self, slot: usize) -> u32 {
        self.table
            .seats
            .get(slot)
            .map_or(0, |s| s.conns.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(_: i32) -> bool {
        true
    }

    fn open(s: &Seats, slot: usize, n: u32) {
        for _ in 0..n {
            s.opened(slot);
        }
    }

    #[test]
    fn a_worker_two_ahead_of_a_live_sibling_has_a_surplus() {
        let s = Seats::private();
        assert!(s.claim(0, 100, 7) && s.claim(1, 101, 7));
        open(&s, 0, 1);
        assert!(!s.surplus(0, 7, &live), "one ahead: take it");
        open(&s, 0, 1);
        assert!(s.surplus(0, 7, &live), "two ahead");
        assert!(!s.surplus(1, 7, &live), "the one behind never waits");
        open(&s, 1, 1);
        assert!(!s.surplus(0, 7, &live));
        s.closed(1);
        s.closed(1); // never below zero
        assert_eq!(s.conns(1), 0);
    }

    #[test]
    fn alone_other_generations_and_free_seats_do_not_count() {
        let s = Seats::private();
        s.claim(3, 100, 2);
        open(&s, 3, 50);
        assert!(!s.surplus(3, 2, &live), "the only worker");
        s.claim(4, 200, 1); // the old generation, draining after a reload
        assert!(!s.surplus(3, 2, &live));
        s.claim(5, 300, 2);
        s.release(5, 999); // not its pid: kept
        assert!(s.surplus(3, 2, &live));
        s.release(5, 300);
        assert!(!s.surplus(3, 2, &live));
    }

    #[test]
    fn a_dead_workers_seat_is_freed_when_found() {
        let s = Seats::private();
        s.claim(0, 100, 1);
        s.claim(1, 101, 1); // killed with -9: never released
        open(&s, 0, 5);
        let asked = std::cell::Cell::new(0);
        let dead = |pid: i32| {
            asked.set(pid);
            false
        };
        assert!(!s.surplus(0, 1, &dead));
        assert_eq!(asked.get(), 101);
        asked.set(0);
        assert!(!s.surplus(0, 1, &dead));
        assert_eq!(asked.get(), 0, "the seat was freed: not asked again");
    }

    #[test]
    fn a_new_claim_starts_from_nothing_and_slots_out_of_range_are_refused() {
        let s = Seats::private();
        s.claim(2, 100, 1);
        open(&s, 2, 9);
        s.claim(2, 150, 1); // respawned in the same slot
        assert_eq!(s.conns(2), 0);
        assert!(!s.claim(SLOTS, 1, 1));
        s.opened(SLOTS);
        assert!(!s.surplus(SLOTS, 1, &live));
    }

    #[test]
    fn generations_are_never_zero_and_change() {
        let a = next_generation();
        let b = next_generation();
        assert!(a != 0 && b != 0 && a != b);
    }
}
