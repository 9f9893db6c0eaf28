//! Embedded mode: import attempts remembered across nginx worker processes, so that an app whose
//! import kills its process does not turn nginx into a fork storm.
//!
//! An app that calls `os._exit()` at import (or crashes in a C extension, or is OOM-killed while
//! it imports) takes the whole worker with it; nothing in that process can catch it. nginx's
//! master respawns a worker that dies at once, and the new one imports again: hundreds of worker
//! starts a second (issue 10, case 4). What survives the dead worker is memory the master shared
//! with all its workers before it forked them: this [`Ledger`] (an anonymous shared mapping made
//! in the master's `init_module`, kept across reloads).
//!
//! - Each worker has a record at its nginx process slot (`ngx_process_slot`, which nginx reuses
//!   for the worker it respawns in place of a dead one): the apps it is importing right now.
//!   A worker clears the entry when the import returns (success, or a Python exception: the
//!   process survived that, and the request got its 500 with the traceback).
//! - A new worker first looks at its slot: an entry left by a dead predecessor means that import
//!   killed it. The app's record counts the death and sets the next allowed try:
//!   1 s after the first death, doubling up to 60 s ([`backoff`]). Deaths of imports that started
//!   before the last counted one (several workers importing at once) count once.
//! - Until then no worker imports that app: its requests get 503 with Retry-After, the worker and
//!   its other locations serve on. After it, one worker (the first to ask) tries again; a
//!   success or a Python exception clears the record.
//!
//! Plain Rust over atomics, unit-tested without nginx; `worker.rs` and `stream.rs` use it.

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// nginx's `NGX_MAX_PROCESSES`: process slots are below it.
const SLOTS: usize = 1024;
/// Apps (script + callable) remembered; beyond this, new apps are not protected.
const APPS: usize = 256;
/// Imports one worker records at the same time (its Python threads may import several apps).
const PER_SLOT: usize = 4;

const FIRST_WAIT: Duration = Duration::from_secs(1);
const MAX_WAIT: Duration = Duration::from_secs(60);

/// How long no worker imports an app after its `deaths`-th death in a row.
pub fn backoff(deaths: u32) -> Duration {
    FIRST_WAIT
        .saturating_mul(1 << deaths.saturating_sub(1).min(16))
        .min(MAX_WAIT)
}

/// The key of an app in the ledger: its script and callable (the same in every worker and
/// across reloads), never 0 (the free mark).
pub fn key(script: &[u8], callable: &[u8]) -> u64 {
    // FNV-1a: stable across processes and builds, unlike std's randomly keyed hashers.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in script.iter().chain(&[0]).chain(callable) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// What one worker process is importing.
#[repr(C)]
struct Slot {
    pid: AtomicI32,
    keys: [AtomicU64; PER_SLOT],
    /// When each import started (monotonic ms).
    started: [AtomicU64; PER_SLOT],
}

/// One app's history of deadly imports.
#[repr(C)]
struct AppRecord {
    key: AtomicU64,
    deaths: AtomicU32,
    /// When the last death was counted (monotonic ms).
    counted_at: AtomicU64,
    /// No import before this (monotonic ms).
    next_try: AtomicU64,
}

#[repr(C)]
struct Table {
    slots: [Slot; SLOTS],
    apps: [AppRecord; APPS],
}

/// The shared table. All-zero bytes are its empty state.
#[derive(Clone, Copy)]
pub struct Ledger {
    table: &'static Table,
}

/// A death found at a worker's start.
#[derive(Debug, PartialEq, Eq)]
pub struct Death {
    pub key: u64,
    pub pid: i32,
    /// Deaths of this app in a row, this one included.
    pub deaths: u32,
    /// How long from now no worker imports it.
    pub wait: Duration,
}

/// What [`Ledger::admit`] allows.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Go on: the app never killed a worker (or it was forgiven).
    Free,
    /// Go on, as the one worker trying again after `deaths` deaths.
    Retry { deaths: u32 },
    /// Do not import: 503 for this long.
    Wait(Duration),
}

static SHARED: OnceLock<Ledger> = OnceLock::new();

impl Ledger {
    /// The ledger the master made ([`Ledger::create_shared`]), in any of its workers.
    pub fn shared() -> Option<Ledger> {
        SHARED.get().copied()
    }

    /// Makes the shared ledger, once per master (before any worker forks; later calls, on
    /// reloads, keep the first one). `None` if the mapping fails: imports are then unguarded.
    pub fn create_shared() -> Option<Ledger> {
        if let Some(l) = SHARED.get() {
            return Some(*l);
        }
        // SAFETY: all-zero is the table's empty state, and it holds only atomics.
        let table = unsafe { super::shared_map::zeroed::<Table>() }?;
        let ledger = Ledger { table };
        Some(*SHARED.get_or_init(|| ledger))
    }

    /// A private ledger (tests).
    #[cfg(test)]
    fn private() -> Ledger {
        // SAFETY: as in create_shared.
        let table = unsafe { super::shared_map::private_zeroed::<Table>() };
        Ledger { table }
    }

    /// At a worker's start in process slot `slot`: what its dead predecessor in that slot was
    /// importing killed it. Counts those deaths and claims the slot for `pid`.
    pub fn worker_started(
        &self,
        slot: usize,
        pid: i32,
        now_ms: u64,
        alive: impl Fn(i32) -> bool,
    ) -> Vec<Death> {
        let Some(s) = self.table.slots.get(slot) else {
            return Vec::new();
        };
        let before = s.pid.swap(pid, Ordering::AcqRel);
        let mut deaths = Vec::new();
        for (k, started) in s.keys.iter().zip(&s.started) {
            let key = k.swap(0, Ordering::AcqRel);
            if key == 0 || before == 0 || before == pid || alive(before) {
                continue;
            }
            let started = started.load(Ordering::Acquire);
            if let Some(death) = self.count_death(key, before, started, now_ms) {
                deaths.push(death);
            }
        }
        deaths
    }

    fn count_death(&self, key: u64, pid: i32, started: u64, now_ms: u64) -> Option<Death> {
        let rec = self.record(key)?;
        let counted = rec.counted_at.load(Ordering::Acquire);
        // An import that started before the last counted death belongs to that round.
        let new_round = started > counted
            && rec
                .counted_at
                .compare_exchange(counted, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        let deaths = if new_round {
            let d = rec.deaths.fetch_add(1, Ordering::AcqRel) + 1;
            rec.next_try
                .store(now_ms + backoff(d).as_millis() as u64, Ordering::Release);
            d
        } else {
            rec.deaths.load(Ordering::Acquire)
        };
        let wait = rec.next_try.load(Ordering::Acquire).saturating_sub(now_ms);
        Some(Death {
            key,
            pid,
            deaths,
            wait: Duration::from_millis(wait),
        })
    }

    /// May this worker import app `key` now?
    pub fn admit(&self, key: u64, now_ms: u64) -> Admit {
        let Some(rec) = self.find(key) else {
            return Admit::Free;
        };
        let deaths = rec.deaths.load(Ordering::Acquire);
        if deaths == 0 {
            return Admit::Free;
        }
        let next = rec.next_try.load(Ordering::Acquire);
        if now_ms < next {
            return Admit::Wait(Duration::from_millis(next - now_ms));
        }
        // The first worker to get here tries; the others wait as if it had died again.
        let hold = now_ms + backoff(deaths + 1).as_millis() as u64;
        match rec
            .next_try
            .compare_exchange(next, hold, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Admit::Retry { deaths },
            Err(now_next) => Admit::Wait(Duration::from_millis(now_next.saturating_sub(now_ms))),
        }
    }

    /// Notes that this worker (slot `slot`) starts importing `key`; the returned guard clears
    /// the note when the import returns (the process survived it).
    pub fn begin(&self, slot: usize, key: u64, now_ms: u64) -> Importing {
        let mut at = None;
        if let Some(s) = self.table.slots.get(slot) {
            for (i, k) in s.keys.iter().enumerate() {
                if k.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    s.started[i].store(now_ms, Ordering::Release);
                    at = Some((slot, i));
                    break;
                }
            }
        }
        Importing {
            ledger: *self,
            at,
            key,
        }
    }

    /// The import of `key` returned in a live process: it does not kill workers (any more).
    pub fn survived(&self, key: u64) {
        if let Some(rec) = self.find(key) {
            rec.deaths.store(0, Ordering::Release);
            rec.next_try.store(0, Ordering::Release);
        }
    }

    fn find(&self, key: u64) -> Option<&'static AppRecord> {
        self.table
            .apps
            .iter()
            .find(|r| r.key.load(Ordering::Acquire) == key)
    }

    /// The record of `key`, claiming a free one if it has none.
    fn record(&self, key: u64) -> Option<&'static AppRecord> {
        self.find(key).or_else(|| {
            self.table.apps.iter().find(|r| {
                match r
                    .key
                    .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => true,
                    Err(other) => other == key,
                }
            })
        })
    }
}

/// An import in progress in this worker ([`Ledger::begin`]); dropping it clears the note.
pub struct Importing {
    ledger: Ledger,
    at: Option<(usize, usize)>,
    key: u64,
}

impl Drop for Importing {
    fn drop(&mut self) {
        if let Some((slot, i)) = self.at {
            let _ = self.ledger.table.slots[slot].keys[i].compare_exchange(
                self.key,
                0,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }
}

/// Milliseconds on the system-wide monotonic clock (the same in every process).
pub fn now_ms() -> u64 {
    // SAFETY: an all-zero timespec is valid; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// True while process `pid` exists (nginx's master reaps dead workers promptly).
pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEAD: fn(i32) -> bool = |_| false;

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute() {
        let secs: Vec<u64> = (1..=8).map(|d| backoff(d).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_WAIT);
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(key(b"/a.py", b"app"), key(b"/a.py", b"app"));
        assert_ne!(key(b"/a.py", b"app"), key(b"/a.pya", b"pp"));
        assert_ne!(key(b"", b""), 0);
    }

    #[test]
    fn an_import_that_returns_leaves_nothing_behind() {
        let l = Ledger::private();
        let k = key(b"/good.py", b"application");
        assert_eq!(l.worker_started(3, 100, 0, DEAD), []);
        drop(l.begin(3, k, 10));
        l.survived(k);
        assert_eq!(
            l.worker_started(3, 101, 20, DEAD),
            [],
            "nothing left in the slot"
        );
        assert_eq!(l.admit(k, 30), Admit::Free);
    }

    #[test]
    fn a_deadly_import_backs_off_and_one_worker_retries() {
        let l = Ledger::private();
        let k = key(b"/bad.py", b"application");
        assert_eq!(l.worker_started(0, 100, 0, DEAD), []);
        assert_eq!(l.admit(k, 5), Admit::Free);
        std::mem::forget(l.begin(0, k, 5)); // the process dies inside the import
                                            // nginx respawns the worker in the same slot.
        let deaths = l.worker_started(0, 101, 1000, DEAD);
        assert_eq!(
            deaths,
            [Death {
                key: k,
                pid: 100,
                deaths: 1,
                wait: Duration::from_secs(1)
            }]
        );
        assert_eq!(l.admit(k, 1500), Admit::Wait(Duration::from_millis(500)));
        // After the wait one worker tries; the others keep waiting.
        assert_eq!(l.admit(k, 2000), Admit::Retry { deaths: 1 });
        assert!(matches!(l.admit(k, 2001), Admit::Wait(_)));
        std::mem::forget(l.begin(0, k, 2000)); // it died again
        let deaths = l.worker_started(0, 102, 2100, DEAD);
        assert_eq!(
            (deaths[0].deaths, deaths[0].wait),
            (2, Duration::from_secs(2))
        );
        // Fixed: the next try succeeds and clears the record.
        assert_eq!(l.admit(k, 4100), Admit::Retry { deaths: 2 });
        drop(l.begin(0, k, 4100));
        l.survived(k);
        assert_eq!(l.admit(k, 4200), Admit::Free);
    }

    #[test]
    fn workers_dying_in_the_same_round_count_once() {
        let l = Ledger::private();
        let k = key(b"/bad.py", b"application");
        for slot in 0..4 {
            l.worker_started(slot, 100 + slot as i32, 0, DEAD);
            std::mem::forget(l.begin(slot, k, 10));
        }
        let counted: Vec<u32> = (0..4)
            .map(|slot| l.worker_started(slot, 200 + slot as i32, 50, DEAD)[0].deaths)
            .collect();
        assert_eq!(counted, [1, 1, 1, 1]);
    }

    #[test]
    fn a_live_predecessor_or_a_reused_pid_is_no_death() {
        let l = Ledger::private();
        let k = key(b"/x.py", b"application");
        l.worker_started(1, 100, 0, DEAD);
        std::mem::forget(l.begin(1, k, 1));
        assert_eq!(l.worker_started(1, 101, 2, |_| true), []);
        assert_eq!(l.admit(k, 3), Admit::Free);
    }
}
