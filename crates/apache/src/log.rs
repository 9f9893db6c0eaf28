//! httpd's error log: for a request (client and request line added by httpd), for a server, and
//! both as pyhost's [`ErrorLog`] ([`HttpdLog`]) for the app's messages and tracebacks.

use std::ffi::{c_char, c_int};

use pyhost::{ErrorLog, Level};

use crate::ffi::*;
use crate::module_index;

/// Writes one message to the error log in the context of request `r` (client address etc.).
///
/// # Safety
/// `r` must be a live request_rec.
pub(crate) unsafe fn log_request(r: *const request_rec, level: u32, message: &str) {
    let text = std::ffi::CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // SAFETY: "%s" with one NUL-terminated argument; httpd copies the text.
    unsafe {
        ap_log_rerror_(
            c"mod_rwsgi".as_ptr(),
            0,
            module_index(),
            level as c_int,
            0,
            r,
            c"%s".as_ptr() as *const c_char,
            text.as_ptr(),
        )
    };
}

/// Writes one message to httpd's error log for server `s` (at httpd's level filtering).
///
/// # Safety
/// `s` must be NULL or a live server_rec.
pub(crate) unsafe fn log_server(s: *const server_rec, level: u32, message: &str) {
    let text = std::ffi::CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // SAFETY: "%s" with one NUL-terminated argument; httpd copies the text.
    unsafe {
        ap_log_error_(
            c"mod_rwsgi".as_ptr(),
            0,
            module_index(),
            level as c_int,
            0,
            s,
            c"%s".as_ptr(),
            text.as_ptr(),
        )
    };
}

/// pyhost's [`ErrorLog`] over httpd's: lines about a request carry its client and request line.
/// A pointer wrapper, because pyhost requires its loggers to be Send + Sync.
pub(crate) enum HttpdLog {
    /// During `pyhost::handle`, on the request's own thread, while the request is live.
    Request(*const request_rec),
    /// The main server_rec, from `child_init` on: it lives as long as the child, and
    /// ap_log_error may be called from any thread (pyhost's watchdog logs through it).
    Server(*const server_rec),
}
// SAFETY: each variant is used only as its comment says, while what it points at is live
// (Request: on the request's own thread); ap_log_rerror and ap_log_error themselves are
// thread-safe.
unsafe impl Send for HttpdLog {}
// SAFETY: as above.
unsafe impl Sync for HttpdLog {}

impl ErrorLog for HttpdLog {
    fn log(&self, level: Level, msg: &str) {
        let level = apache_level(level);
        match *self {
            // SAFETY: the request outlives handle() (see the variant).
            HttpdLog::Request(r) => unsafe { log_request(r, level, msg) },
            // SAFETY: the main server_rec lives for the generation.
            HttpdLog::Server(s) => unsafe { log_server(s, level, msg) },
        }
    }
}

fn apache_level(level: Level) -> u32 {
    match level {
        Level::Error => APLOG_ERR,
        Level::Warn => APLOG_WARNING,
        Level::Info => APLOG_INFO,
        Level::Debug => APLOG_DEBUG,
    }
}
