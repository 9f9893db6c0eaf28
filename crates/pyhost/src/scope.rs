//! The per-request bridge between Python objects and the transport's borrowed handles.
//!
//! `handle()` borrows the transport's `Body`, `Responder` and `ErrorLog` for one call, while the
//! Python objects of that request (`wsgi.input`, `start_response`, `write`, `wsgi.errors`) are
//! reference-counted and may outlive it (an app can stash `environ`). A `Scope` holds the borrows
//! as raw pointers together with a `live` flag; `handle()` closes the scope before it returns, and
//! every access checks the flag under the same lock, so no pointer is used after the borrow ends.
//!
//! Lock discipline: nobody holds a scope lock while calling into Python or acquiring the GIL.
//! Paths that do I/O take the lock with the GIL released (see `run::detached`).

use std::sync::{Mutex, MutexGuard};

use crate::input::InputState;
use crate::log::{ErrorLog, Level};
use crate::response::ResponseState;
use crate::{Body, Responder};

/// Raw handles borrowed from `handle()`'s caller, valid while the scope is live.
pub(crate) struct Borrowed<T: ?Sized>(pub(crate) *mut T);

// SAFETY: a Borrowed pointer is only dereferenced while its scope is live, under the scope's
// mutex, and handle() (the borrow's owner) blocks until the scope is closed; so at most one
// thread uses the pointee at a time and never after the borrow ends. The transports' Body and
// Responder types are only required to be usable from the thread running handle() or a thread
// it waits for, which this discipline guarantees.
unsafe impl<T: ?Sized> Send for Borrowed<T> {}

pub(crate) struct InputSide {
    pub(crate) body: Option<Borrowed<dyn Body + 'static>>,
    pub(crate) state: InputState,
}

pub(crate) struct OutputSide {
    pub(crate) out: Option<Borrowed<dyn Responder + 'static>>,
    pub(crate) state: ResponseState,
}

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
            None => crate::log::StderrLog.log(level, msg),
        }
    }
}

impl InputSide {
    /// The live body, or None after the request ended.
    pub(crate) fn body(&mut self) -> Option<&mut (dyn Body + 'static)> {
        // SAFETY: Some only while the scope is live (see Scope::close); the &mut self borrow of
        // the locked InputSide makes this the only reference to the body.
        self.body.as_mut().map(|b| unsafe { &mut *b.0 })
    }
}

impl OutputSide {
    /// The live responder, or None after the request ended.
    pub(crate) fn out(&mut self) -> Option<&mut (dyn Responder + 'static)> {
        // SAFETY: as for InputSide::body.
        self.out.as_mut().map(|o| unsafe { &mut *o.0 })
    }
}
