//! Long-lived Python thread states for the transports' worker threads.
//!
//! `Python::attach` on a thread that Python does not know creates a thread state and destroys it
//! again when it detaches. Per request that costs an allocation and, worse, throws away the
//! thread's `threading.local()` data (Django keeps its database connections there). A worker thread
//! that serves many requests registers once; every `handle()` on it then reuses the same state.

use std::marker::PhantomData;

use pyo3::ffi;

/// Keeps this thread's Python thread state alive until dropped. Not `Send`: it belongs to the
/// thread that created it.
pub struct PythonThread {
    gstate: ffi::PyGILState_STATE,
    tstate: *mut ffi::PyThreadState,
    _not_send: PhantomData<*mut ()>,
}

/// Register the calling thread with the interpreter for as long as the guard lives.
/// Returns `None` when Python is not initialised.
pub fn register_thread() -> Option<PythonThread> {
    if !crate::is_initialized() {
        return None;
    }
    // SAFETY: the interpreter is initialised (checked above). PyGILState_Ensure attaches this
    // thread (creating its thread state) and PyEval_SaveThread detaches again while keeping the
    // state registered, so later attaches on this thread find it. Drop undoes both in reverse
    // order on the same thread (the guard is !Send).
    unsafe {
        let gstate = ffi::PyGILState_Ensure();
        let tstate = ffi::PyEval_SaveThread();
        Some(PythonThread {
            gstate,
            tstate,
            _not_send: PhantomData,
        })
    }
}

impl Drop for PythonThread {
    fn drop(&mut self) {
        // SAFETY: we are on the thread that registered (the guard is !Send), currently detached;
        // restoring the saved state and releasing the GILState pairs the calls in register_thread.
        unsafe {
            ffi::PyEval_RestoreThread(self.tstate);
            ffi::PyGILState_Release(self.gstate);
        }
    }
}
