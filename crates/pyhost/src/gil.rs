//! The host's attach points: taking the GIL (timed) and letting it go around a wait.
//!
//! Every place where pyhost takes the GIL for a request goes through [`attach`] or [`detach`],
//! so the time a request thread waits for the GIL there is measured (one clock read pair per
//! take) and added to the request's [`crate::RequestStats`]. Waits inside the application (its
//! own I/O, sleeps, C extensions that release the GIL) are not seen here.

use std::time::Instant;

use pyo3::marker::Ungil;
use pyo3::prelude::*;

use crate::request_stats;

/// `Python::attach`, with the wait for the GIL counted.
pub(crate) fn attach<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    let asked = Instant::now();
    Python::attach(|py| {
        request_stats::gil_waited(asked.elapsed());
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
    request_stats::gil_waited(asked.elapsed());
    result
}
