//! Shared memory between the supervisor and its workers: per worker slot, a "ready" flag and, per
//! request thread, the start time of the request it is running.
//!
//! The supervisor maps it (anonymous, shared) before forking, so every worker sees the same pages.
//! Workers write, the supervisor only reads: it uses the flags to pace rolling restarts and the
//! start times to enforce request-timeout without any message passing on the request path (one
//! relaxed atomic store at the start and one at the end of each request).

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// Worker states in cell 0 of a row.
const STARTING: u64 = 0;
const READY: u64 = 1;
const RETIRING: u64 = 2;
/// Retiring because a request's thread is stuck in C code past request-timeout (conn.rs).
const RETIRING_STUCK: u64 = 3;

/// The shared table: `slots` rows of `1 + threads` cells.
pub struct Scoreboard {
    cells: NonNull<AtomicU64>,
    slots: usize,
    threads: usize,
}

// SAFETY: the table is only accessed through atomics, and the mapping lives as long as the value.
unsafe impl Send for Scoreboard {}
// SAFETY: as above: shared access goes through AtomicU64 only.
unsafe impl Sync for Scoreboard {}

impl Scoreboard {
    /// Maps a zeroed table for `slots` workers of `threads` threads each.
    pub fn new(slots: usize, threads: usize) -> io::Result<Scoreboard> {
        let len = slots * (1 + threads) * std::mem::size_of::<AtomicU64>();
        // SAFETY: an anonymous shared mapping with no address hint; the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let cells = NonNull::new(ptr.cast::<AtomicU64>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Scoreboard {
            cells,
            slots,
            threads,
        })
    }

    /// Number of worker slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Out-of-range indexes give `None` (callers then skip the bookkeeping; never a panic).
    fn cell(&self, slot: usize, index: usize) -> Option<&AtomicU64> {
        if slot >= self.slots || index > self.threads {
            return None;
        }
        // SAFETY: the index is in bounds (checked above); the mapping is page aligned, zero
        // initialised (a valid AtomicU64) and lives as long as self.
        Some(unsafe { &*self.cells.as_ptr().add(slot * (1 + self.threads) + index) })
    }

    /// Supervisor, before forking a worker into `slot`: clears what the previous occupant left.
    pub fn reset(&self, slot: usize) {
        for i in 0..=self.threads {
            if let Some(c) = self.cell(slot, i) {
                c.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Worker: it has loaded the app and its threads accept requests.
    pub fn set_ready(&self, slot: usize) {
        if let Some(c) = self.cell(slot, 0) {
            // Never downgrade a worker that already announced it is retiring.
            let _ = c.compare_exchange(STARTING, READY, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Supervisor: is the worker in `slot` ready (and not retiring)?
    pub fn is_ready(&self, slot: usize) -> bool {
        self.cell(slot, 0)
            .is_some_and(|c| c.load(Ordering::Acquire) == READY)
    }

    /// Worker: it stopped accepting (maximum-requests) and exits once its requests are done, so
    /// the supervisor can start the replacement right away instead of after the exit.
    pub fn set_retiring(&self, slot: usize) {
        if let Some(c) = self.cell(slot, 0) {
            // Not over RETIRING_STUCK: the stuck request is why it goes.
            c.fetch_max(RETIRING, Ordering::AcqRel);
        }
    }

    /// Worker: as [`set_retiring`](Self::set_retiring), because one of its request threads is
    /// stuck in C code past request-timeout (the metrics count that respawn as a timeout's).
    pub fn set_retiring_stuck(&self, slot: usize) {
        if let Some(c) = self.cell(slot, 0) {
            c.store(RETIRING_STUCK, Ordering::Release);
        }
    }

    /// Supervisor: has the worker in `slot` announced that it is retiring (for either reason)?
    pub fn is_retiring(&self, slot: usize) -> bool {
        self.cell(slot, 0)
            .is_some_and(|c| matches!(c.load(Ordering::Acquire), RETIRING | RETIRING_STUCK))
    }

    /// Supervisor: is it retiring because a request got stuck past request-timeout?
    pub fn is_retiring_stuck(&self, slot: usize) -> bool {
        self.cell(slot, 0)
            .is_some_and(|c| c.load(Ordering::Acquire) == RETIRING_STUCK)
    }

    /// Worker thread: a request started at `now_ms` (CLOCK_MONOTONIC), or 0 = idle.
    pub fn set_busy(&self, slot: usize, thread: usize, now_ms: u64) {
        if let Some(c) = self.cell(slot, 1 + thread) {
            c.store(now_ms, Ordering::Relaxed);
        }
    }

    /// Supervisor: the oldest running request of the worker in `slot` (thread, start in ms).
    pub fn oldest_request(&self, slot: usize) -> Option<(usize, u64)> {
        (0..self.threads)
            .filter_map(|t| {
                let start = self.cell(slot, 1 + t)?.load(Ordering::Relaxed);
                (start != 0).then_some((t, start))
            })
            .min_by_key(|&(_, start)| start)
    }
}

impl Drop for Scoreboard {
    fn drop(&mut self) {
        let len = self.slots * (1 + self.threads) * std::mem::size_of::<AtomicU64>();
        // SAFETY: unmaps exactly the mapping created in new(); no references outlive self.
        unsafe { libc::munmap(self.cells.as_ptr().cast(), len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_with_a_forked_child() {
        let board = Scoreboard::new(2, 3).unwrap();
        // SAFETY: the test process forks a child that only touches the mapping and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            board.set_ready(1);
            board.set_busy(1, 2, 42);
            board.set_busy(1, 0, 50);
            // SAFETY: leave the child immediately, without running the test harness's exit code.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for the child we just forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(board.is_ready(1));
        assert!(!board.is_ready(0));
        assert_eq!(board.oldest_request(1), Some((2, 42)));
        assert_eq!(board.oldest_request(0), None);
        board.set_retiring(1);
        assert!(board.is_retiring(1) && !board.is_ready(1));
        assert!(!board.is_retiring_stuck(1));
        board.set_retiring_stuck(0);
        board.set_retiring(0);
        assert!(
            board.is_retiring(0) && board.is_retiring_stuck(0),
            "the stuck reason stays"
        );
        board.set_ready(1);
        assert!(board.is_retiring(1), "ready never overrides retiring");
        board.reset(1);
        assert!(!board.is_ready(1) && !board.is_retiring(1));
        assert_eq!(board.oldest_request(1), None);
    }
}
