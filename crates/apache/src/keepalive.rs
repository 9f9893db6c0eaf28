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
//! connection is kept alive, the MPM is asynchronous, and no other thread of this child is idle.
//! A plain-HTTP connection whose next request httpd has read ahead already (pipelining) is not
//! waited for; on TLS connections the wait only polls the socket, so that mod_ssl's input side is
//! never entered from inside the output filters, where the wait runs.
//! The wait ends as soon as the client sends (httpd's check then finds the request and this
//! thread serves it) or after [`WINDOW`]; after a wait in vain, the connection's next
//! [`SKIP_AFTER_MISS`] responses are handed back at once. Only the thread waits: no CPU is spent.

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
/// get it closed (see the module docs), unless the connection's last wait was in vain.
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
    // Only while httpd still runs the request (its pool freed by the end-of-request bucket in
    // ap_process_request_after_handler, right before httpd's own check for the next request).
    // When the core output filter set the end of the response aside (bytes left unflushed), the
    // pool goes later, in the MPM's write completion or lingering close: httpd has checked
    // already, and waiting there would only hold the thread.
    // SAFETY: c->cs is NULL or the MPM's connection state, live with the connection.
    if unsafe { c.cs.as_ref() }.is_none_or(|cs| cs.state != conn_state_e_CONN_STATE_HANDLER) {
        return;
    }
    // A stopping child closes its keep-alive connections anyway.
    if mpm_query(AP_MPMQ_MPM_STATE) == AP_MPMQ_STOPPING as c_int || has_idle_thread() != Some(false)
    {
        return;
    }
    let pace = pace(r.connection);
    if pace.get() > 0 {
        pace.set(pace.get() - 1);
        return;
    }
    if next_request_buffered(r.connection) {
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
    if unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) } == 0 {
        pace.set(SKIP_AFTER_MISS);
    }
}

/// A plain-HTTP connection whose next request httpd has read ahead already (a pipelining
/// client), or that is no longer usable: no wait. Checked with httpd's own `ap_check_pipeline`,
/// one byte without waiting, which httpd calls right after us and which then finds the same
/// bytes in its input buffer (we run in CONN_STATE_HANDLER, before that check). Not on TLS
/// connections: the wait runs inside the output filters, and mod_ssl's input side would be
/// entered from there; those wait out the window instead.
fn next_request_buffered(c: *mut conn_rec) -> bool {
    const KEY: &CStr = c"rwsgi-keepalive-brigade";
    // SAFETY: c and its pool are live; the brigade lives in the connection's pool and is reused
    // for every request of the connection (as httpd keeps its own after-request brigade), and
    // is left empty.
    unsafe {
        if ap_ssl_conn_is_ssl(c) != 0 {
            return false;
        }
        let mut bb: *mut std::ffi::c_void = std::ptr::null_mut();
        apr_pool_userdata_get(&mut bb, KEY.as_ptr(), (*c).pool);
        if bb.is_null() {
            bb = apr_brigade_create((*c).pool, (*c).bucket_alloc).cast();
            apr_pool_userdata_setn(bb, KEY.as_ptr(), None, (*c).pool);
        }
        let bb = bb.cast::<apr_bucket_brigade>();
        let rv = ap_check_pipeline(c, bb, 0);
        apr_brigade_cleanup(bb.cast());
        rv != libc::EAGAIN as apr_status_t
    }
}

/// How long the thread waits at most. A client on the same host or LAN (nginx in front, a load
/// balancer, a benchmark) answers within it even on a machine whose cores are all busy (where
/// its answer can wait a scheduler slice or two: 1 ms missed 2-12% of them with two busy loops
/// beside the test). One that does not costs its thread this much, and then waits no more for
/// the next [`SKIP_AFTER_MISS`] responses on its connection.
const WINDOW: Duration = Duration::from_millis(5);

/// Responses without the wait after one that waited in vain: a client that pauses (a browser
/// between pages) costs a thread at most one window in this many responses.
const SKIP_AFTER_MISS: u8 = 8;

/// The connection's count of responses still to send without the wait (in its pool, made at
/// its first wait).
fn pace<'c>(c: *mut conn_rec) -> &'c std::cell::Cell<u8> {
    const KEY: &CStr = c"rwsgi-keepalive-pace";
    // SAFETY: c and its pool are live; the cell lives in the connection's pool (so as long as
    // the connection, and only this request's thread uses the connection at a time); the key
    // is static.
    unsafe {
        let mut data: *mut std::ffi::c_void = std::ptr::null_mut();
        apr_pool_userdata_get(&mut data, KEY.as_ptr(), (*c).pool);
        if data.is_null() {
            data = pool_box((*c).pool, std::cell::Cell::new(0u8)).cast();
            apr_pool_userdata_setn(data, KEY.as_ptr(), None, (*c).pool);
        }
        &*data.cast::<std::cell::Cell<u8>>()
    }
}

/// The event MPM (and any other that hands keep-alive connections to a listener).
fn async_mpm() -> bool {
    static ASYNC: OnceLock<bool> = OnceLock::new();
    *ASYNC.get_or_init(|| mpm_query(AP_MPMQ_IS_ASYNC) != 0)
}

/// Whether a request thread of this child waits for work (stops at the first one found: this
/// runs after every keep-alive response).
fn has_idle_thread() -> Option<bool> {
    Some(crate::scoreboard::thread_states()?.any(|status| status == SERVER_READY))
}
