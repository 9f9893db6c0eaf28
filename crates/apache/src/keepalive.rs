//! A finished keep-alive connection stays on its request thread for a moment when its child has
//! no idle thread, so that httpd's event MPM does not close it under load.
//!
//! After a response, the event MPM checks once, without waiting, whether the client's next
//! request is already there. If not, it hands the connection to its listener thread, which waits
//! for the request and then asks for an idle request thread. With none idle, the listener closes
//! that connection, request unanswered, and every other keep-alive connection of the child too
//! (event.c: "the client can re-connect to a different process"). So with more client
//! connections than threads, a fast response is punished: the client has not answered it yet
//! when httpd checks, and its next request finds every thread busy.
//!
//! mod_wsgi escapes this by accident: its request thread stays busy after the response (in daemon
//! mode it waits for the daemon to close the socket), so the next request is usually there by the
//! time httpd checks. Here the thread waits on purpose, and only when it would otherwise hand the
//! connection to a listener with no thread to give it: the response is complete and flushed, the
//! connection is kept alive, the MPM is asynchronous, no other thread of this child is idle, and
//! the next request is not already there (a pipelining client's, read ahead by httpd).
//! The wait ends as soon as the client sends (httpd's check then finds the request and this
//! thread serves it) or after [`WINDOW`]. Only the thread waits: no CPU is spent.

use std::ffi::{c_int, CStr};
use std::sync::OnceLock;
use std::time::Duration;

use crate::ffi::*;

/// The request note Output sets once the whole response has been written to the client.
const DELIVERED: &CStr = c"rwsgi-delivered";

/// Output::finish: the response went out whole (its Content-Length reached, flushed).
pub(crate) fn note_delivered(r: &request_rec) {
    // SAFETY: r->notes is the request's live table; both strings are static.
    unsafe { apr_table_setn(r.notes, DELIVERED.as_ptr(), c"1".as_ptr()) };
}

/// The handler, before anything else registers a request-pool cleanup: the wait runs as a
/// cleanup of the request pool, so after httpd logged the request (`%D` in the access log does
/// not count it) and after the metrics' own cleanup (registered later, run earlier) recorded its
/// duration; httpd checks for the next request right after the pool is gone.
pub(crate) fn arm(r: &request_rec) {
    if !r.main.is_null() || !async_mpm() {
        return; // a subrequest's pool goes long before the response ends
    }
    // SAFETY: r lives in r->pool, so it is valid whenever the pool's cleanups run; the cleanup
    // is plain C-ABI and runs once.
    unsafe {
        apr_pool_cleanup_register(
            r.pool,
            (r as *const request_rec).cast(),
            Some(request_freed),
            Some(apr_pool_cleanup_null),
        )
    };
}

/// # Safety
/// Called by APR while it destroys the request pool, with the request_rec [`arm`] registered
/// (its memory and tables are freed only after every cleanup ran).
unsafe extern "C" fn request_freed(data: *mut std::ffi::c_void) -> apr_status_t {
    // SAFETY: see the function's contract.
    let _ = std::panic::catch_unwind(|| hold(unsafe { &*data.cast::<request_rec>() }));
    APR_SUCCESS as apr_status_t
}

/// Waits up to [`WINDOW`] for the client's next request when handing the connection back could
/// get it closed (see the module docs).
fn hold(r: &request_rec) {
    // SAFETY: r->notes is the request's table, valid until the pool's memory goes.
    if unsafe { apr_table_get(r.notes, DELIVERED.as_ptr()) }.is_null() {
        return;
    }
    // SAFETY: the connection outlives its requests.
    let c = unsafe { &*r.connection };
    if c.keepalive != ap_conn_keepalive_e_AP_CONN_KEEPALIVE || c.aborted != 0 || !c.master.is_null()
    {
        return;
    }
    // A stopping child closes its keep-alive connections anyway.
    if mpm_query(AP_MPMQ_MPM_STATE) == AP_MPMQ_STOPPING as c_int || idle_threads() != Some(0) {
        return;
    }
    if !next_request_missing(r.connection) {
        return;
    }
    // SAFETY: the connection is live; its socket lives as long as it does.
    let sock = unsafe { ap_get_conn_socket(r.connection) };
    if sock.is_null() {
        return;
    }
    let mut fd: apr_os_sock_t = -1;
    // SAFETY: sock is the live connection socket; apr_os_sock_get writes one int through fd.
    if unsafe { apr_os_sock_get(&mut fd, sock) } != APR_SUCCESS as apr_status_t {
        return;
    }
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: WINDOW.as_secs() as libc::time_t,
        tv_nsec: WINDOW.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd and timespec for the duration of the call; no signal mask change.
    unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
}

/// httpd's own check (`ap_check_pipeline`, one byte, without waiting) found nothing yet: no
/// request already read into the input filters by a pipelining client, none on the socket, and
/// the connection is still up. Anything else needs no wait.
fn next_request_missing(c: *mut conn_rec) -> bool {
    const KEY: &CStr = c"rwsgi-keepalive-brigade";
    // SAFETY: c and its pool are live; the brigade lives in the connection's pool and is reused
    // for every request of the connection (as httpd keeps its own after-request brigade), and
    // left empty.
    unsafe {
        let mut bb: *mut std::ffi::c_void = std::ptr::null_mut();
        apr_pool_userdata_get(&mut bb, KEY.as_ptr(), (*c).pool);
        if bb.is_null() {
            bb = apr_brigade_create((*c).pool, (*c).bucket_alloc).cast();
            apr_pool_userdata_setn(bb, KEY.as_ptr(), None, (*c).pool);
        }
        let bb = bb.cast::<apr_bucket_brigade>();
        let rv = ap_check_pipeline(c, bb, 0);
        apr_brigade_cleanup(bb.cast());
        rv == libc::EAGAIN as apr_status_t
    }
}

/// How long the thread waits at most: a client on the same host or LAN (nginx in front, a load
/// balancer, a benchmark) answers well within it; one that takes longer costs this thread no
/// more than this, and only while its child has no idle thread anyway.
const WINDOW: Duration = Duration::from_millis(1);

/// The event MPM (and any other that hands keep-alive connections to a listener).
fn async_mpm() -> bool {
    static ASYNC: OnceLock<bool> = OnceLock::new();
    *ASYNC.get_or_init(|| mpm_query(AP_MPMQ_IS_ASYNC) != 0)
}

/// This child's request threads waiting for work.
fn idle_threads() -> Option<usize> {
    Some(
        crate::scoreboard::thread_states()?
            .filter(|&status| status == SERVER_READY)
            .count(),
    )
}
