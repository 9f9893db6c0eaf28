//! `Borrowed`: a handle the transport lends to `handle()` for one request (its `Body`,
//! `Responder` and `ErrorLog`), kept as a raw pointer so that the request's reference-counted
//! Python objects can reach it. Only the scope (scope.rs) decides when it is live.

/// Raw handles borrowed from `handle()`'s caller, valid while the scope is live.
pub(crate) struct Borrowed<T: ?Sized>(pub(crate) *mut T);

// SAFETY: a Borrowed pointer is only dereferenced while its scope is live, under the scope's
// mutex, and handle() (the borrow's owner) blocks until the scope is closed; so at most one
// thread uses the pointee at a time and never after the borrow ends. The transports' Body and
// Responder types are only required to be usable from the thread running handle() or a thread
// it waits for, which this discipline guarantees.
unsafe impl<T: ?Sized> Send for Borrowed<T> {}
