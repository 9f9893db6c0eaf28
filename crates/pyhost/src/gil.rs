//! The host's attach points: taking the GIL (timed, for [`crate::stats`] and the request's
//! [`crate::RequestStats`]) and letting it go around a wait.
//!
//! Every place where pyhost takes the GIL goes through [`attach`] or [`detach`], so the time a
//! request thread waits for the GIL there is measured (one clock read pair per take).

use std::time::Instant;

use pyo3::marker::Ungil;
use pyo3::prelude::*;

use crate::{request_stats, stats};

/// `Python::attach`, with the wait for the GIL counted.
pub(crate) fn attach<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    let asked = Instant::now();
    Python::attach(|py| {
        waited(asked.elapsed());
        f(py)
    })
}

/// `py.detach(f)`: run `f` with the GIL released, then take it back; the wait to take it back is
/// counted.
pub(crate) fn detach<T, F>(py: Python<'_>, f: F) -> T
where
    F: Ungil + Send + FnOnce() -> T,
    T: Ungil + Send,
{
    let (result, asked) = py.detach(move || {
        let r = f();
        (r, Instant::now())
    });
    waited(asked.elapsed());
    result
}

/// One wait for the GIL: the process's totals and the request's own.
fn waited(d: std::time::Duration) {
    stats::gil_waited(d);
    request_stats::gil_waited(d);
}

/// CPU time this thread has used, in nanoseconds (0 if the clock cannot be read).
pub(crate) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which ts is.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}
