//! httpd's error log: for a request (client and request line added by httpd), for a server, and
//! the same two as pyhost's [`ErrorLog`] for the app's messages and tracebacks.

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

/// Pointer wrapper for the loggers pyhost requires to be Send + Sync.
pub(crate) struct RequestLog(pub(crate) *const request_rec);
// SAFETY: pyhost only uses the logger during handle(), on the request's own thread, while the
// request is live; ap_log_rerror itself is thread-safe.
unsafe impl Send for RequestLog {}
// SAFETY: as above.
unsafe impl Sync for RequestLog {}

impl ErrorLog for RequestLog {
    fn log(&self, level: Level, msg: &str) {
        // SAFETY: the request outlives handle() (see the Send note).
        unsafe { log_request(self.0, apache_level(level), msg) };
    }
}

pub(crate) struct ServerLog(pub(crate) *const server_rec);
// SAFETY: used only during child_init on the calling thread; ap_log_error is thread-safe.
unsafe impl Send for ServerLog {}
// SAFETY: as above.
unsafe impl Sync for ServerLog {}

impl ErrorLog for ServerLog {
    fn log(&self, level: Level, msg: &str) {
        // SAFETY: the main server_rec lives for the generation.
        unsafe { log_server(self.0, apache_level(level), msg) };
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
