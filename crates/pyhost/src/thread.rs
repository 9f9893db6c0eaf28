//! The threads a server process runs Python on: spawned with the server's signals blocked, and
//! each given a long-lived Python thread state.
//!
//! Signals: nginx's reload and quit, httpd's graceful restart and the daemon worker's TERM are
//! process-directed, so the kernel may deliver them to any thread that does not block them. The
//! server waits for them on one thread (nginx's event loop in `epoll_wait`, httpd's listener);
//! delivered to a Python thread instead, a signal goes unnoticed until that thread wakes for
//! another reason. Threads we add to a server process therefore start with every signal blocked
//! but the faults, which must still reach the faulting thread (nginx's own thread pool does the
//! same). [`spawn_with_signals_blocked`] is that, once.
//!
//! Thread states: `Python::attach` on a thread that Python does not know creates a thread state and destroys it
//! again when it detaches. Per request that costs an allocation and, worse, throws away the
//! thread's `threading.local()` data (Django keeps its database connections there). A worker thread
//! that serves many requests registers once; every `handle()` on it then reuses the same state.

use std::io;
use std::marker::PhantomData;
use std::thread::{Builder, JoinHandle};

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

/// Spawns a thread (named, sized, ... by `builder`) with every signal blocked except the faults
/// (SIGILL, SIGFPE, SIGSEGV, SIGBUS), so the server's signals keep going to the thread that
/// waits for them (module docs). The calling thread's own mask is unchanged when this returns.
pub fn spawn_with_signals_blocked<F, T>(builder: Builder, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // A new thread starts with the mask of the thread that creates it: block in the caller around
    // the spawn (blocking inside the new thread would leave a window before it runs).
    // SAFETY: sigset_t is plain data; sigfillset/sigdelset/pthread_sigmask only write the sets we
    // pass, and the caller's mask is restored right after the spawn.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        for sig in [libc::SIGILL, libc::SIGFPE, libc::SIGSEGV, libc::SIGBUS] {
            libc::sigdelset(&mut all, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        old
    };
    let spawned = builder.spawn(f);
    // SAFETY: restores the calling thread's own mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    spawned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn this_thread_blocks(sig: libc::c_int) -> bool {
        // SAFETY: reads the current mask into a local set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut set);
            libc::sigismember(&set, sig) == 1
        }
    }

    /// Which of `signals` the calling thread blocks.
    fn blocked(signals: &[libc::c_int]) -> Vec<bool> {
        signals.iter().map(|&s| this_thread_blocks(s)).collect()
    }

    #[test]
    fn spawned_threads_block_the_servers_signals_but_not_faults() {
        // What nginx, httpd and the daemon worker wait for on their own thread.
        let server = [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGWINCH,
            libc::SIGCHLD,
            libc::SIGALRM,
            libc::SIGIO,
            libc::SIGPIPE,
        ];
        let faults = [libc::SIGILL, libc::SIGFPE, libc::SIGSEGV, libc::SIGBUS];
        let handle =
            spawn_with_signals_blocked(Builder::new().name("pyhost-sigtest".into()), move || {
                (blocked(&server), blocked(&faults))
            })
            .expect("spawn");
        let (server_blocked, faults_blocked) = handle.join().expect("thread");
        assert_eq!(server_blocked, vec![true; server.len()], "{server:?}");
        assert_eq!(faults_blocked, vec![false; faults.len()], "{faults:?}");
        assert!(
            !this_thread_blocks(libc::SIGTERM),
            "the caller's mask must be restored"
        );
    }
}
