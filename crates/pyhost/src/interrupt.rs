//! Request timeouts, the Python side: the `RequestTimeout` exception, the stack of the thread
//! that ran out of time, and the injection (watchdog.rs decides when, and calls these on its
//! interrupter thread).
//!
//! Under the GIL the interrupter checks that the request is still in its thread and formats that
//! thread's Python stack (`sys._current_frames()` + `traceback.format_stack`: what the thread
//! was doing at the timeout, as mod_wsgi's stack dumps show); once that is logged it raises
//! `RequestTimeout` there with `PyThreadState_SetAsyncExc`, as mod_wsgi 6's
//! `interrupt-timeout` does. The exception derives from `BaseException`, so `except
//! Exception:` in the app does not swallow it.
//!
//! An exception can still be pending when the request ends on its own between the check and
//! its next bytecode; the request's thread clears it ([`clear_pending`]) before it serves again.
//! Both sides run under the GIL, so the exception never reaches the thread's next request.

use pyo3::exceptions::PyBaseException;
use pyo3::ffi;
use pyo3::prelude::*;

pyo3::create_exception!(
    rwsgi,
    RequestTimeout,
    PyBaseException,
    "Raised by rwsgi in a request's thread when the request passes its request timeout."
);

/// Raises `RequestTimeout` in thread `ident` (at its next bytecode).
pub(crate) fn raise_in(py: Python<'_>, ident: std::ffi::c_ulong) {
    let exc = py.get_type::<RequestTimeout>();
    // SAFETY: we hold the GIL; the type object lives in a static type cell for the whole
    // process, and SetAsyncExc takes its own reference. A stale id would only make the call
    // return 0 (no thread found); the caller checked under this GIL hold that the thread is
    // still running the request.
    unsafe {
        ffi::PyThreadState_SetAsyncExc(ident as std::ffi::c_long, exc.as_ptr());
    }
}

/// The Python stack of thread `ident`, as `traceback.format_stack` prints it.
pub(crate) fn stack_of(py: Python<'_>, ident: std::ffi::c_ulong) -> String {
    format_stack(py, ident).unwrap_or_else(|e| format!("  (no Python stack: {e})"))
}

fn format_stack(py: Python<'_>, ident: std::ffi::c_ulong) -> PyResult<String> {
    let frames = py.import("sys")?.call_method0("_current_frames")?;
    let Some(frame) = frames.get_item(ident).ok() else {
        return Ok("  (the thread has no Python frame: it is in C code)".to_string());
    };
    let lines: Vec<String> = py
        .import("traceback")?
        .call_method1("format_stack", (frame,))?
        .extract()?;
    Ok(lines.concat().trim_end().to_string())
}

/// The request's own thread, after a request that was interrupted: drops an exception that was
/// raised for it but has not reached a bytecode yet.
pub(crate) fn clear_pending(ident: std::ffi::c_ulong) {
    crate::gil::attach(|_py| {
        // SAFETY: we hold the GIL; a null exception clears the pending one of thread `ident`
        // (this very thread), which is all this call does.
        unsafe { ffi::PyThreadState_SetAsyncExc(ident as std::ffi::c_long, std::ptr::null_mut()) };
    });
}

/// Is `err` the exception the watchdog raised?
pub(crate) fn is_timeout(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<RequestTimeout>(py)
}
