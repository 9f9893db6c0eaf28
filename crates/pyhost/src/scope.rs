//! The per-request bridge between Python objects and the transport's borrowed handles.
//!
//! `handle()` borrows the transport's `Body`, `Responder` and `ErrorLog` for one call, while the
//! Python objects of that request (`wsgi.input`, `start_response`, `write`, `wsgi.errors`) are
//! reference-counted and may outlive it (an app can stash `environ`). A `Scope` holds the borrows
//! as raw pointers together with a `live` flag; `handle()` closes the scope before it returns, and
//! every access checks the flag under the same lock, so no pointer is used after the borrow ends.
//!
//! Lock discipline: nobody holds a scope lock while calling into Python or acquiring the GIL.
//! Paths that do I/O take the lock with the GIL released (`Scope::emit`, and run.rs).

use std::sync::{Mutex, MutexGuard};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::borrowed::Borrowed;
use crate::input::{InputSide, InputState};
use crate::log::{ErrorLog, Level, StderrLog};
use crate::response::{OutputSide, ResponseState, SendError};
use crate::{Body, Responder};

pub(crate) struct Scope {
    pub(crate) input: Mutex<InputSide>,
    pub(crate) output: Mutex<OutputSide>,
    log: Mutex<Option<Borrowed<dyn ErrorLog + 'static>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a scope lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Scope {
    /// Open a scope over the caller's handles.
    ///
    /// # Safety
    /// The caller must call [`Scope::close`] before any of the three borrows ends, and must not
    /// use `body`/`out` itself while the scope is open.
    pub(crate) unsafe fn open(
        body: &mut dyn Body,
        out: &mut dyn Responder,
        log: &dyn ErrorLog,
        input: InputState,
        response: ResponseState,
    ) -> Scope {
        // SAFETY: lifetime erasure only: the transmute widens the trait object's lifetime bound
        // to 'static; the caller guarantees close() runs before the borrow ends, after which the
        // pointer is never dereferenced.
        let body: *mut (dyn Body + 'static) = unsafe { std::mem::transmute(body) };
        // SAFETY: as above.
        let out: *mut (dyn Responder + 'static) = unsafe { std::mem::transmute(out) };
        // SAFETY: as above.
        let log: *const (dyn ErrorLog + 'static) = unsafe { std::mem::transmute(log) };
        Scope {
            input: Mutex::new(InputSide {
                body: Some(Borrowed(body)),
                state: input,
            }),
            output: Mutex::new(OutputSide {
                out: Some(Borrowed(out)),
                state: response,
            }),
            log: Mutex::new(Some(Borrowed(log as *mut _))),
        }
    }

    /// End the borrows. After this, input reads return EOF, writes fail, and logs go to stderr.
    pub(crate) fn close(&self) {
        lock(&self.input).body = None;
        lock(&self.output).out = None;
        *lock(&self.log) = None;
    }

    pub(crate) fn lock_input(&self) -> MutexGuard<'_, InputSide> {
        lock(&self.input)
    }

    pub(crate) fn lock_output(&self) -> MutexGuard<'_, OutputSide> {
        lock(&self.output)
    }

    /// Log through the transport while the request runs; to stderr after it ended.
    pub(crate) fn log(&self, level: Level, msg: &str) {
        let guard = lock(&self.log);
        match guard.as_ref() {
            // SAFETY: the pointer is live while it is Some (close() clears it under this lock
            // before the borrow ends), and ErrorLog is Sync, so a shared call is sound.
            Some(log) => unsafe { (*log.0).log(level, msg) },
            None => StderrLog.log(level, msg),
        }
    }

    /// Send one body chunk from Python, with the GIL released for the transport's write (the
    /// `write()` callable and the iterable loop both send this way).
    pub(crate) fn emit(&self, py: Python<'_>, bytes: &Bound<'_, PyBytes>) -> Result<(), SendError> {
        let data = bytes.as_bytes();
        if data.is_empty() {
            return Ok(());
        }
        let slice = SendSlice(data.as_ptr(), data.len());
        crate::gil::detach(py, move || self.lock_output().send(slice.get()))
    }
}

/// A byte slice that crosses into a `detach` closure.
pub(crate) struct SendSlice(pub(crate) *const u8, pub(crate) usize);

// SAFETY: the slice points into an immutable Python bytes object that the caller keeps alive (it
// holds a reference across the detach call); nothing writes to it meanwhile.
unsafe impl Send for SendSlice {}

impl SendSlice {
    pub(crate) fn get(&self) -> &[u8] {
        // SAFETY: see the Send impl: pointer and length come from a live &[u8].
        unsafe { std::slice::from_raw_parts(self.0, self.1) }
    }
}
