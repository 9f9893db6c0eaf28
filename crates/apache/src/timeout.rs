//! Embedded mode's request timeout (`WSGIRequestTimeout`, `request-timeout=`): what the Apache
//! child does when pyhost's watchdog reports a request whose thread is stuck in C code.
//!
//! pyhost does the rest, as in every mode: at the timeout it logs the request's Python stack and
//! raises `RequestTimeout` in the thread; Python code stops and httpd answers 504. Only a thread
//! that does not come back reaches this file. That thread is httpd's own request thread, the
//! only one allowed to write to its connection (output filters, mod_ssl), so no 504 can be sent
//! for it from here. Instead:
//!
//! 1. its client connection is shut down ([`CloseConnection`]): the client is released at once
//!    (it sees the connection closed) and the thread, if it waits on that connection, wakes up;
//! 2. the child is made to exit without its stuck thread, once nothing else runs in it. httpd
//!    offers a module no way to stop one child gracefully, so the child keeps serving with one
//!    thread fewer until httpd stops it (graceful restart, MaxConnectionsPerChild, idle-child
//!    maintenance, which would otherwise wait for ever to join the stuck thread); then, as soon
//!    as its other threads are gone, [`watch_exit`] ends the process. With a non-threaded MPM
//!    (prefork) the stuck thread was the child's only one: it exits at once.

use std::ffi::c_int;
use std::sync::{Once, OnceLock};
use std::time::Duration;

use pyhost::Stuck;

use crate::ffi::*;
use crate::log::HttpdLog;

/// The child's main server log, for lines written from pyhost's threads (set in child_init).
static SERVER_LOG: OnceLock<HttpdLog> = OnceLock::new();

/// child_init: where the watchdog's lines go (the main server_rec lives as long as the child).
pub(crate) fn set_server_log(s: *const server_rec) {
    let _ = SERVER_LOG.set(HttpdLog::Server(s));
}

/// The log pyhost's watchdog writes to, once child_init ran.
pub(crate) fn server_log() -> Option<&'static HttpdLog> {
    SERVER_LOG.get()
}

/// pyhost's last resort for a request stuck in C past its timeout (module docs).
pub(crate) struct CloseConnection {
    pub(crate) r: *const request_rec,
    /// The MPM runs several request threads per child.
    pub(crate) threaded: bool,
}

// SAFETY: pyhost calls `stuck` while the request's thread is still inside `handle`, so the
// request and its connection are alive; the hook only reads `r->connection` and the
// connection's socket, which the stuck thread does not change.
unsafe impl Sync for CloseConnection {}

impl Stuck for CloseConnection {
    fn timed_out(&self) {
        // Embedded mode's group is "" (crates/metrics); a lookup by name, once per timeout.
        ::metrics::request_timed_out_in("");
    }

    fn stuck(&self) {
        // SAFETY: see the Sync impl: r and its connection are alive.
        let what = unsafe { shut_down(self.r) };
        if let Some(log) = SERVER_LOG.get() {
            pyhost::ErrorLog::log(
                log,
                pyhost::Level::Error,
                &format!(
                    "RW-AP040 a request thread is stuck in C code past its request timeout: {what}; \
                     this child exits once httpd stops it and its other threads are done"
                ),
            );
        }
        watch_exit(self.threaded);
    }
}

/// Shuts the request's client connection down; says what was done.
///
/// # Safety
/// `r` and its connection are alive.
unsafe fn shut_down(r: *const request_rec) -> &'static str {
    // SAFETY: contract.
    let c = unsafe { (*r).connection };
    // SAFETY: c is alive (contract).
    if !unsafe { (*c).master }.is_null() {
        // An HTTP/2 stream: the socket carries the client's other streams too.
        return "an HTTP/2 stream, so its connection stays open";
    }
    let mut fd: apr_os_sock_t = -1;
    // SAFETY: c is alive; ap_get_conn_socket reads its core config; apr_os_sock_get writes
    // the descriptor through a valid pointer.
    let got = unsafe {
        let sock = ap_get_conn_socket(c);
        !sock.is_null() && apr_os_sock_get(&mut fd, sock) == APR_SUCCESS as apr_status_t
    };
    if !got || fd < 0 {
        return "its connection could not be closed";
    }
    // SAFETY: fd is the connection's open socket; shutdown does not close it (httpd does).
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    "its client connection is closed"
}

/// Starts, once per child, the thread that ends the child when only stuck threads are left.
fn watch_exit(threaded: bool) {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let _ = pyhost::spawn_with_signals_blocked(
            std::thread::Builder::new()
                .name("rwsgi-exit".into())
                .stack_size(64 * 1024),
            move || loop {
                std::thread::sleep(Duration::from_millis(250));
                let stuck = pyhost::stuck_threads();
                if stuck > 0 && (!threaded || (stopping() && busy_threads() <= Some(stuck))) {
                    exit_child(stuck);
                }
            },
        );
    });
}

/// httpd is stopping this child (graceful restart or stop, MaxConnectionsPerChild, surplus
/// idle child): it accepts nothing new, so ending it cuts no request once its threads are done.
fn stopping() -> bool {
    mpm_query(AP_MPMQ_MPM_STATE) == AP_MPMQ_STOPPING as c_int
}

/// Request threads of this child that have not exited yet (httpd's scoreboard); None when the
/// scoreboard cannot tell.
fn busy_threads() -> Option<usize> {
    Some(
        crate::scoreboard::thread_states()?
            .filter(|&status| status != SERVER_DEAD)
            .count(),
    )
}

fn exit_child(stuck: usize) {
    if let Some(log) = SERVER_LOG.get() {
        pyhost::ErrorLog::log(
            log,
            pyhost::Level::Warn,
            &format!(
                "RW-AP041 this child exits now, leaving {stuck} request thread(s) stuck in C code \
                 behind (nothing else runs in it)"
            ),
        );
    }
    // SAFETY: ending the process is always sound; nothing runs in it but the stuck threads
    // (and, with prefork, the one stuck request).
    unsafe { libc::_exit(0) };
}
