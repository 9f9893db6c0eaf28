//! Waking nginx's event loop from Python threads.
//!
//! An `eventfd` is registered with the worker's event loop like a connection (nginx's own
//! `ngx_notify` does the same for thread pools, but it has a single handler slot that `aio
//! threads` would overwrite, so we keep our own descriptor). Python threads put what has news (a
//! request's exchange) on a ready list and write to the eventfd only when the list goes from
//! empty to non-empty; the event-loop handler drains the counter and takes the whole list at
//! once, so a burst of chunks costs one wake-up. The list is generic over its items, so this file
//! knows nothing of the exchange that uses it.

use std::io;
use std::os::fd::RawFd;
use std::sync::Mutex;

/// The ready list shared by the Python threads (producers) and the event loop (consumer).
pub struct Notifier<T> {
    /// Non-blocking eventfd; stays open until the process exits (see [`Notifier::new`]).
    fd: RawFd,
    ready: Mutex<Ready<T>>,
}

struct Ready<T> {
    items: Vec<T>,
    /// True from the write to the eventfd until the event loop takes the list: later producers
    /// only append.
    signalled: bool,
}

impl<T> Notifier<T> {
    /// Creates the eventfd.
    ///
    /// The descriptor is deliberately never closed: a Python thread that is still running when the
    /// worker exits may write to it, and a closed number could by then name another file.
    pub fn new() -> io::Result<Notifier<T>> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Notifier {
            fd,
            ready: Mutex::new(Ready {
                items: Vec::new(),
                signalled: false,
            }),
        })
    }

    /// The descriptor to register with the event loop.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Called from any thread: `item` has news for the event loop.
    pub fn schedule(&self, item: T) {
        let must_signal = {
            let mut ready = match self.ready.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            ready.items.push(item);
            !std::mem::replace(&mut ready.signalled, true)
        };
        if must_signal {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd. EAGAIN (counter saturated)
            // cannot lose a wake-up: the counter is then already non-zero.
            unsafe { libc::write(self.fd, (&one as *const u64).cast(), 8) };
        }
    }

    /// Event loop: resets the eventfd and takes every item scheduled so far.
    pub fn take(&self) -> Vec<T> {
        let mut counter: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our non-blocking eventfd; EAGAIN is fine.
        unsafe { libc::read(self.fd, (&mut counter as *mut u64).cast(), 8) };
        let mut ready = match self.ready.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Reset under the lock: a producer that appends after this point signals again.
        ready.signalled = false;
        std::mem::take(&mut ready.items)
    }
}
