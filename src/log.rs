//! nginx's error log: a request's line ([`log_request`], on the event loop) and pyhost's log
//! ([`NgxLog`], from any thread).
//!
//! Python threads log through the cycle's `ngx_log_t`, as nginx's own thread-pool threads do:
//! `ngx_log_error_core` formats into a stack buffer and issues one `write(2)` per line, which is
//! safe from any thread. We never use a request's or connection's log from a Python thread: the
//! request may already be freed by then.

#[cfg(not(test))]
use ngx::ffi::{
    ngx_http_request_t, ngx_log_t, ngx_uint_t, NGX_LOG_DEBUG, NGX_LOG_ERR, NGX_LOG_INFO,
    NGX_LOG_WARN,
};
#[cfg(not(test))]
use pyhost::{ErrorLog, Level};

/// Room for the message in nginx's `NGX_MAX_ERROR_STR` (2048) buffer after the time, level, pid
/// and connection prefix nginx adds; longer messages (tracebacks) are split at line ends.
const PIECE: usize = 1800;

/// The worker's cycle log.
#[cfg(not(test))]
pub struct NgxLog {
    log: *mut ngx_log_t,
}

#[cfg(not(test))]
// SAFETY: the pointer is the cycle log of this worker process, which lives until the process
// exits; ngx_log_error_core only reads it and writes to its file descriptor (see module docs).
unsafe impl Send for NgxLog {}
#[cfg(not(test))]
// SAFETY: as above; concurrent readers of an immutable ngx_log_t are fine.
unsafe impl Sync for NgxLog {}

#[cfg(not(test))]
impl NgxLog {
    /// # Safety
    /// `log` must stay valid for the rest of the process (the worker's cycle log).
    pub unsafe fn new(log: *mut ngx_log_t) -> NgxLog {
        NgxLog { log }
    }

    /// Logs `msg` at nginx level `level` from any thread.
    pub fn write(&self, level: ngx_uint_t, msg: &str) {
        // SAFETY: self.log is valid for the process lifetime (constructor contract).
        if level > unsafe { (*self.log).log_level } {
            return;
        }
        for piece in pieces(msg) {
            // SAFETY: valid log (as above); the slice outlives the call.
            unsafe { ngx::log::log_error(level, self.log, 0, piece.as_bytes()) };
        }
    }
}

#[cfg(not(test))]
impl ErrorLog for NgxLog {
    fn log(&self, level: Level, msg: &str) {
        let level = match level {
            Level::Error => NGX_LOG_ERR,
            Level::Warn => NGX_LOG_WARN,
            Level::Info => NGX_LOG_INFO,
            Level::Debug => NGX_LOG_DEBUG,
        };
        self.write(level as ngx_uint_t, msg);
    }
}

/// Logs through the request's connection log (adds client and request to the line).
///
/// # Safety
/// `r` is live.
#[cfg(not(test))]
pub unsafe fn log_request(r: *mut ngx_http_request_t, level: ngx_uint_t, msg: &str) {
    // SAFETY: a live request has a live connection and log.
    unsafe {
        let log = (*(*r).connection).log;
        if level <= (*log).log_level {
            ngx::log::log_error(level, log, 0, msg.as_bytes());
        }
    }
}

/// Splits `msg` into pieces of at most [`PIECE`] bytes, preferring line ends, on char boundaries.
fn pieces(msg: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = msg.trim_end();
    while rest.len() > PIECE {
        let mut cut = PIECE;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(nl) = rest[..cut].rfind('\n') {
            if nl > 0 {
                cut = nl;
            }
        }
        out.push(&rest[..cut]);
        rest = rest[cut..].trim_start_matches('\n');
    }
    out.push(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_split_at_line_ends() {
        let line = "x".repeat(1000);
        let msg = format!("{line}\n{line}\n{line}");
        let p = pieces(&msg);
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|s| s.len() == 1000));
        let long = "é".repeat(2000);
        let p = pieces(&long);
        assert!(p.iter().all(|s| s.len() <= PIECE));
        assert_eq!(p.concat(), long);
    }
}
