//! The fixed layout of the shared region: a header, then tables of group, app and process slots.
//!
//! Everything in it is an atomic or a label written once before its slot is published, so an
//! all-zero region is a valid empty one and any process that maps it can read and update it
//! without locks. The layout never changes size at run time: the memory file holding it is
//! sealed at its size (`shm`), nginx's master keeps it across reloads, and a daemon group kept
//! across a reload still writes into the mapping it inherited or mapped.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::histogram::BUCKETS;

/// Apps (mount point + process group) the region can count separately.
pub const MAX_APPS: usize = 128;
/// Process groups (daemon groups, and `""` for embedded mode).
pub const MAX_GROUPS: usize = 32;
/// Processes (server workers, supervisors, daemon workers) alive at once.
pub const MAX_PROCS: usize = 512;
/// Copies of each app's counters: a process adds to copy `slot % STRIPES`, so processes seldom
/// share a cache line; a scrape adds the copies up.
pub const STRIPES: usize = 8;
/// Longest label kept (longer ones are cut at a UTF-8 boundary).
pub const LABEL_MAX: usize = 120;

/// "RWSGIMT1": the region's first bytes once initialised (format version 1).
pub const MAGIC: u64 = u64::from_le_bytes(*b"RWSGIMT1");

/// Slot states ([`SlotHead::state`], [`ProcSlot::state`]).
pub(crate) const FREE: u32 = 0;
pub(crate) const CLAIMING: u32 = 1;
pub(crate) const READY: u32 = 2;

/// A label written once by the process that claims its slot, before the slot becomes `READY`.
#[repr(C)]
pub(crate) struct Label {
    len: AtomicU32,
    bytes: UnsafeCell<[u8; LABEL_MAX]>,
}

impl Label {
    /// # Safety
    /// The caller holds the slot in `CLAIMING` state (it is the only writer, and no reader
    /// looks at the label until the slot is `READY`).
    pub(crate) unsafe fn set(&self, s: &str) {
        let mut n = s.len().min(LABEL_MAX);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        // SAFETY: exclusive access (contract); the copy stays within the array.
        unsafe { (&mut *self.bytes.get())[..n].copy_from_slice(&s.as_bytes()[..n]) };
        self.len.store(n as u32, Ordering::Relaxed);
    }

    /// # Safety
    /// The caller saw the slot `READY` with an Acquire load: the label no longer changes.
    pub(crate) unsafe fn get(&self) -> &str {
        let n = (self.len.load(Ordering::Relaxed) as usize).min(LABEL_MAX);
        // SAFETY: written once before READY (contract), never again.
        let bytes = unsafe { &(&*self.bytes.get())[..n] };
        // set() only stores whole UTF-8 prefixes of a str; a corrupt region still yields text.
        std::str::from_utf8(bytes).unwrap_or("?")
    }
}

/// The identity of a group or app slot: claimed once, never freed (a label that comes back
/// after a reload finds its counters again).
#[repr(C)]
pub(crate) struct SlotHead {
    pub(crate) state: AtomicU32,
    pub(crate) hash: AtomicU32,
    /// Apps: the index of their group slot.
    pub(crate) group: AtomicU32,
    /// The configuration generation that last registered the slot; older ones are not shown.
    pub(crate) generation: AtomicU64,
    pub(crate) label: Label,
}

/// Non-cumulative histogram buckets (the last one is +Inf) and the sum of observations.
#[repr(C)]
pub(crate) struct Hist {
    pub(crate) buckets: [AtomicU64; BUCKETS],
    pub(crate) sum_ns: AtomicU64,
}

/// One copy of an app's counters.
#[repr(C, align(64))]
pub(crate) struct AppStripe {
    /// Responses by status class 1xx..5xx.
    pub(crate) requests: [AtomicU64; 5],
    pub(crate) duration: Hist,
    pub(crate) queue: Hist,
    pub(crate) gil_wait_ns: AtomicU64,
    pub(crate) exceptions: AtomicU64,
    pub(crate) client_aborts: AtomicU64,
    pub(crate) body_in: AtomicU64,
    pub(crate) body_out: AtomicU64,
}

#[repr(C, align(64))]
pub(crate) struct AppSlot {
    pub(crate) head: SlotHead,
    pub(crate) stripes: [AppStripe; STRIPES],
}

/// Why a daemon worker was replaced ([`GroupSlot::respawns`] index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Respawn {
    /// It died without being asked to (a crash, a kill from outside, an exit in the app).
    Crash = 0,
    /// It served `maximum-requests` and was recycled.
    MaximumRequests = 1,
    /// The supervisor killed it: a request ran past `request-timeout`.
    RequestTimeout = 2,
    /// A rolling restart (SIGHUP to the group) or the server's reload replaced it.
    Reload = 3,
}

impl Respawn {
    pub const ALL: [Respawn; 4] = [
        Respawn::Crash,
        Respawn::MaximumRequests,
        Respawn::RequestTimeout,
        Respawn::Reload,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Respawn::Crash => "crash",
            Respawn::MaximumRequests => "maximum-requests",
            Respawn::RequestTimeout => "request-timeout",
            Respawn::Reload => "reload",
        }
    }
}

#[repr(C, align(64))]
pub(crate) struct GroupSlot {
    pub(crate) head: SlotHead,
    pub(crate) respawns: [AtomicU64; 4],
    pub(crate) request_timeouts: AtomicU64,
}

/// What a process does ([`ProcSlot::role`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// An nginx worker or Apache child: takes the requests (and runs embedded apps).
    Server = 1,
    /// A daemon group's supervisor.
    Supervisor = 2,
    /// A daemon worker process (rwsgi-worker's workers too).
    Worker = 3,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Server, Role::Supervisor, Role::Worker];

    pub(crate) fn from_u32(v: u32) -> Option<Role> {
        Role::ALL.into_iter().find(|r| *r as u32 == v)
    }

    /// The `role` label value.
    pub fn label(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Supervisor => "supervisor",
            Role::Worker => "worker",
        }
    }
}

/// One live process. Only that process writes the gauges; a scrape checks through /proc that
/// the pid still is the process that claimed the slot (pid and start time), so a process killed
/// with SIGKILL stops counting at once and its slot is taken over later.
#[repr(C, align(64))]
pub(crate) struct ProcSlot {
    pub(crate) state: AtomicU32,
    pub(crate) pid: AtomicU32,
    /// Start time of the process in clock ticks after boot (/proc/PID/stat field 22).
    pub(crate) start: AtomicU64,
    /// Index of its group slot, or `NO_GROUP`.
    pub(crate) group: AtomicU32,
    pub(crate) role: AtomicU32,
    /// Python request threads, and how many run a request now.
    pub(crate) threads: AtomicU32,
    pub(crate) busy: AtomicU32,
    /// Requests this process has in progress, per app slot.
    pub(crate) active: [AtomicU32; MAX_APPS],
}

pub(crate) const NO_GROUP: u32 = u32::MAX;

#[repr(C, align(64))]
pub(crate) struct Header {
    pub(crate) magic: AtomicU64,
    pub(crate) size: AtomicU64,
    /// When the region was created, in milliseconds since the Unix epoch.
    pub(crate) start_ms: AtomicU64,
    pub(crate) generation: AtomicU64,
}

/// The whole shared region. Create it with [`crate::shm::create`] or place it in memory the
/// server provides ([`Region::init_in`]); then [`crate::attach`] it.
#[repr(C)]
pub struct Region {
    pub(crate) header: Header,
    pub(crate) groups: [GroupSlot; MAX_GROUPS],
    pub(crate) apps: [AppSlot; MAX_APPS],
    pub(crate) procs: [ProcSlot; MAX_PROCS],
}

// SAFETY: all shared state is atomics, and labels are only written while their slot is
// exclusively claimed (see Label).
unsafe impl Sync for Region {}

/// Bytes of a [`Region`].
pub const REGION_SIZE: usize = std::mem::size_of::<Region>();

// The region must stay small enough to map in every server, and slot indexes fit their types.
const _: () = assert!(REGION_SIZE < 2 << 20);
const _: () = assert!(MAX_APPS <= u16::MAX as usize);
const _: () = assert!(MAX_GROUPS <= u16::MAX as usize);
const _: () = assert!(std::mem::align_of::<Region>() <= 4096);

impl Region {
    /// Initialises the region in `mem` (at least [`REGION_SIZE`] bytes, suitably aligned) unless
    /// it already holds one of this layout (the same memory seen again after a reload), and
    /// returns it.
    ///
    /// # Safety
    /// `mem` is valid for reads and writes of [`REGION_SIZE`] bytes for the rest of the
    /// process (shared memory that is never unmapped), aligned to 64 bytes, and nothing else
    /// writes it except through the returned `Region`.
    pub unsafe fn init_in(mem: *mut u8) -> &'static Region {
        let region = mem.cast::<Region>();
        // SAFETY: header fields are atomics at the start of the memory (contract); reading them
        // from a fresh mapping reads zeroes or leftovers, either of which is a valid u64.
        let header = unsafe { &(*region).header };
        let known = header.magic.load(Ordering::Acquire) == MAGIC
            && header.size.load(Ordering::Relaxed) == REGION_SIZE as u64;
        if !known {
            // SAFETY: the memory is ours to write (contract); all zero is a valid Region.
            unsafe { std::ptr::write_bytes(mem, 0, REGION_SIZE) };
            header.size.store(REGION_SIZE as u64, Ordering::Relaxed);
            header.start_ms.store(now_ms(), Ordering::Relaxed);
            header.magic.store(MAGIC, Ordering::Release);
        }
        // SAFETY: initialised above or before; lives as long as the memory (contract).
        unsafe { &*region }
    }

    /// When the counters started, in seconds since the Unix epoch.
    pub fn start_time(&self) -> f64 {
        self.header.start_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Starts a new configuration generation (the server's master/parent, once per configuration
    /// load, before it registers the configuration's groups and apps). Only slots registered in
    /// the current generation are shown.
    pub fn new_generation(&self) -> u64 {
        self.header.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The current configuration generation.
    pub fn generation(&self) -> u64 {
        self.header.generation.load(Ordering::Acquire)
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
