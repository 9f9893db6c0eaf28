//! Counters of the host's own work: requests, GIL waits, admission, per process.
//!
//! Every counter is a relaxed atomic that the request path bumps with one `fetch_add` (a clock
//! read pair measures each wait); [`stats`] returns a snapshot, for a metrics endpoint or a test.
//!
//! For the benchmark the same counters can be read from outside the process, exactly and at any
//! moment: when `RWSGI_STATS_DIR` is set in the environment, [`export`] (called by `initialize`)
//! places them in a shared mapping of the file `<dir>/pyhost-<pid>.stats` instead of process
//! memory, so a reader sees the live values with no dump, no signal and no periodic write. The
//! file is `MAGIC` followed by [`FIELDS`] little-endian `u64`s in the order of [`FIELD_NAMES`]
//! (bench/harness/procs.py reads it). Without the variable nothing is created.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::time::Duration;

/// First 8 bytes of a stats file (format version 1).
pub const MAGIC: &[u8; 8] = b"RWSGIST1";

/// The counters, in file order.
pub const FIELD_NAMES: [&str; FIELDS] = [
    "requests",
    "gil_waits",
    "gil_wait_ns",
    "admitted_ns",
    "cpu_ns",
    "admit_waits",
    "admit_wait_ns",
    "limit",
    "in_python",
    "limit_raised",
    "limit_lowered",
];
/// Number of counters.
pub const FIELDS: usize = 11;

/// A snapshot of the counters of this process (all monotonic totals unless noted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests run through [`crate::handle`].
    pub requests: u64,
    /// Times a request thread took the GIL at one of the host's attach points (the start of a
    /// request, and after each release around a body read or a response write)...
    pub gil_waits: u64,
    /// ... and the nanoseconds it waited for it there, in total. Waits inside the application
    /// (its own I/O, sleeps, C extensions that release the GIL) are not seen here.
    pub gil_wait_ns: u64,
    /// Nanoseconds requests spent admitted (from admission to the end of the request), summed.
    pub admitted_ns: u64,
    /// CPU nanoseconds the request threads used while admitted, summed: an unbiased estimate,
    /// since only some requests read their thread's CPU clock (`cpu_sample`), and each such
    /// reading counts for the requests that did not.
    pub cpu_ns: u64,
    /// Requests (or idle request threads) that had to wait for admission...
    pub admit_waits: u64,
    /// ... and the nanoseconds they waited, in total.
    pub admit_wait_ns: u64,
    /// Gauge: the current admission limit (requests allowed into Python at once).
    pub limit: u64,
    /// Gauge: request threads admitted right now.
    pub in_python: u64,
    /// Times the admission controller raised / lowered the limit.
    pub limit_raised: u64,
    pub limit_lowered: u64,
}

/// The counters' storage: one cache line per group would be overkill; they are updated a few
/// times per request.
#[repr(C)]
pub(crate) struct Counters {
    pub(crate) v: [AtomicU64; FIELDS],
}

#[derive(Clone, Copy)]
pub(crate) enum Field {
    Requests = 0,
    GilWaits,
    GilWaitNs,
    AdmittedNs,
    CpuNs,
    AdmitWaits,
    AdmitWaitNs,
    Limit,
    InPython,
    LimitRaised,
    LimitLowered,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
static LOCAL: Counters = Counters { v: [ZERO; FIELDS] };
/// Where the counters live: LOCAL, or the shared mapping of the stats file.
static COUNTERS: AtomicPtr<Counters> = AtomicPtr::new(std::ptr::null_mut());

fn counters() -> &'static Counters {
    let p = COUNTERS.load(Ordering::Acquire);
    if p.is_null() {
        &LOCAL
    } else {
        // SAFETY: a non-null pointer is a leaked, never-unmapped mapping of at least
        // size_of::<Counters>() bytes, page aligned (see export).
        unsafe { &*p }
    }
}

pub(crate) fn add(field: Field, n: u64) {
    counters().v[field as usize].fetch_add(n, Ordering::Relaxed);
}

pub(crate) fn set(field: Field, n: u64) {
    counters().v[field as usize].store(n, Ordering::Relaxed);
}

pub(crate) fn add_duration(field: Field, d: Duration) {
    add(field, u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
}

/// One wait for the GIL at a host attach point.
pub(crate) fn gil_waited(d: Duration) {
    add(Field::GilWaits, 1);
    add_duration(Field::GilWaitNs, d);
}

/// The counters of this process now.
pub fn stats() -> Stats {
    let c = counters();
    let g = |f: Field| c.v[f as usize].load(Ordering::Relaxed);
    Stats {
        requests: g(Field::Requests),
        gil_waits: g(Field::GilWaits),
        gil_wait_ns: g(Field::GilWaitNs),
        admitted_ns: g(Field::AdmittedNs),
        cpu_ns: g(Field::CpuNs),
        admit_waits: g(Field::AdmitWaits),
        admit_wait_ns: g(Field::AdmitWaitNs),
        limit: g(Field::Limit),
        in_python: g(Field::InPython),
        limit_raised: g(Field::LimitRaised),
        limit_lowered: g(Field::LimitLowered),
    }
}

/// The environment variable naming the directory for stats files.
pub const STATS_DIR_ENV: &str = "RWSGI_STATS_DIR";

/// If `RWSGI_STATS_DIR` is set, move the counters into `<dir>/pyhost-<pid>.stats`. Called once
/// per process, before any request. A failure is returned for the caller to log; the counters
/// then stay in process memory.
pub(crate) fn export() -> Result<(), String> {
    let Some(dir) = std::env::var_os(STATS_DIR_ENV) else {
        return Ok(());
    };
    if !COUNTERS.load(Ordering::Acquire).is_null() {
        return Ok(());
    }
    let path = Path::new(&dir).join(format!("pyhost-{}.stats", std::process::id()));
    map_file(&path).map_err(|e| format!("{STATS_DIR_ENV}: {}: {e}", path.display()))
}

fn map_file(path: &Path) -> std::io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let len = MAGIC.len() + FIELDS * 8;
    // SAFETY: plain syscalls on a path we own; results checked. The mapping is never unmapped
    // (leaked for the life of the process), so the 'static reference made in counters() stays
    // valid; MAP_SHARED makes the stores visible to readers of the file.
    unsafe {
        let fd = libc::open(
            c_path.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::ftruncate(fd, len as libc::off_t) != 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        libc::close(fd);
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        std::ptr::copy_nonoverlapping(MAGIC.as_ptr(), p.cast::<u8>(), MAGIC.len());
        // The counters follow the 8-byte magic: 8-byte aligned, as AtomicU64 needs.
        let counters = p.cast::<u8>().add(MAGIC.len()).cast::<Counters>();
        // Carry over what was counted before (the limit gauge is set at start-up).
        for (i, v) in LOCAL.v.iter().enumerate() {
            (*counters).v[i].store(v.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        COUNTERS.store(counters, Ordering::Release);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_fields() {
        assert_eq!(FIELD_NAMES.len(), FIELDS);
        assert_eq!(Field::LimitLowered as usize, FIELDS - 1);
    }

    #[test]
    fn exported_counters_are_readable_from_the_file() {
        let dir = std::env::temp_dir().join(format!("pyhost-stats-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.stats");
        map_file(&path).unwrap();
        add(Field::Requests, 3);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], MAGIC);
        let requests = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
        assert_eq!(requests, stats().requests);
        assert!(requests >= 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
