//! Spreading new connections over the workers that host Python.
//!
//! With `accept_mutex off` (nginx's default) on Linux, every worker waits for new connections on
//! the same listening socket with `EPOLLEXCLUSIVE`, and the kernel wakes the worker that added the
//! socket to its epoll set first, of those waiting in `epoll_wait`. nginx moves a worker to the
//! back of that line after every 16th accept (`ngx_reorder_accept_events`, 1.21.6+), which is
//! enough when a worker's event loop is busy while its worker is: a busy worker is not waiting,
//! so the next one is woken. A worker that hosts Python is different. Its event loop only hands
//! requests to the Python threads and waits again at once, so it looks idle while its Python
//! threads keep its core busy, and it takes the next 15 connections too. A client opening 16
//! keep-alive connections at once (a browser, a connection pool, wrk) then gets 15 on one worker
//! and 1 on the other, and half the machine serves it (bench/results/2026-12-04-connection-split.md).
//!
//! So in a worker that hosts Python, every accepted HTTP connection moves the worker to the back
//! of the line (a `EPOLL_CTL_DEL` and `EPOLL_CTL_ADD` of the listening socket, as nginx's own
//! reorder does): a burst of connections goes round the waiting workers in turn. A connection that
//! arrives between the two calls waits in the socket's backlog and wakes another worker, or this
//! one as soon as the socket is added back (the add reports a pending connection at once).
//!
//! Listening sockets with `reuseport` (one socket per worker, nothing to share) and `accept_mutex
//! on` (no `EPOLLEXCLUSIVE`: the mutex decides) are left as they are.

use ngx::ffi::{
    ngx_connection_t, ngx_cycle_t, ngx_event_actions, ngx_http_init_connection, ngx_listening_t,
    ngx_use_exclusive_accept, NGX_DISABLE_EVENT, NGX_OK,
};

/// `NGX_READ_EVENT` and `NGX_EXCLUSIVE_EVENT` of nginx's epoll module (macros bindgen cannot
/// carry): what `ngx_event_process_init` passes when it adds a listening socket.
const READ_EVENT: isize = (libc::EPOLLIN | libc::EPOLLRDHUP) as isize;
const EXCLUSIVE_EVENT: usize = libc::EPOLLEXCLUSIVE as u32 as usize;

/// Has every HTTP listening socket of this worker's cycle call [`accepted`] for its new
/// connections; returns how many it took over.
///
/// # Safety
/// `cycle` is the worker's cycle, in `init_process`, before the event loop accepts anything.
pub unsafe fn install(cycle: *mut ngx_cycle_t) -> usize {
    // SAFETY: the caller passes the worker's live cycle; its listening array holds `nelts`
    // entries and nothing else touches it during init_process.
    let listening = unsafe {
        let array = &(*cycle).listening;
        if array.elts.is_null() {
            return 0;
        }
        std::slice::from_raw_parts_mut(array.elts.cast::<ngx_listening_t>(), array.nelts)
    };
    let http: unsafe extern "C" fn(*mut ngx_connection_t) = ngx_http_init_connection;
    let mut taken = 0;
    for ls in listening {
        // Only http{}'s own sockets (stream{} and mail{} have handlers of their own), and only
        // once: the handler then is ours.
        if ls.handler.is_some_and(|h| std::ptr::fn_addr_eq(h, http)) {
            ls.handler = Some(accepted);
            taken += 1;
        }
    }
    taken
}

/// The handler of a listening socket taken over by [`install`]: nginx's own, then this worker
/// goes to the back of the line for the next connection.
extern "C" fn accepted(c: *mut ngx_connection_t) {
    // SAFETY: nginx calls a listening socket's handler on the event loop with the connection it
    // has just accepted; `listening` points into the cycle, which outlives the connection. It is
    // read first: ngx_http_init_connection may close and free `c`.
    let ls = unsafe { (*c).listening };
    // SAFETY: what nginx would have called with the same connection.
    unsafe { ngx_http_init_connection(c) };
    // SAFETY: `ls` is the cycle's listening socket this connection came from, on its event loop.
    unsafe { requeue(ls) };
}

/// Moves this worker to the back of the kernel's line of waiters on `ls`.
///
/// # Safety
/// `ls` is a listening socket of the running cycle; called on the event-loop thread.
unsafe fn requeue(ls: *mut ngx_listening_t) {
    // SAFETY: nginx's globals, set once by ngx_event_process_init before any accept; read on the
    // event-loop thread that owns them. `ls` is valid (caller's contract).
    let (exclusive, ls) = unsafe { (ngx_use_exclusive_accept, &*ls) };
    if exclusive == 0 || ls.reuseport() != 0 || ls.connection.is_null() {
        return;
    }
    // SAFETY: as above; the actions are the epoll module's, set at process init.
    let (Some(del), Some(add)) = (unsafe { ngx_event_actions.del }, unsafe {
        ngx_event_actions.add
    }) else {
        return;
    };
    // SAFETY: the listening connection and its read event live as long as the cycle; this is the
    // call pair ngx_reorder_accept_events makes. The epoll module logs a failed epoll_ctl itself.
    unsafe {
        let rev = (*ls.connection).read;
        if del(rev, READ_EVENT, NGX_DISABLE_EVENT as usize) == NGX_OK as isize {
            add(rev, READ_EVENT, EXCLUSIVE_EVENT);
        }
    }
}
