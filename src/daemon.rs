//! Daemon mode: forwarding a request to a `wsgi_daemon_process` group over uwsgi.

use ngx::ffi::{ngx_http_request_t, ngx_int_t, NGX_HTTP_SERVICE_UNAVAILABLE, NGX_LOG_ERR};

/// Content phase for a location with `wsgi_process_group`.
///
/// Daemon groups are parsed and checked by `nginx -t`, but starting and reaching them is not
/// implemented in this build yet: answer 503 and say so in the error log (never silently).
///
/// # Safety
/// `r` is the live request of the content phase.
pub unsafe fn forward(r: *mut ngx_http_request_t, group: usize) -> ngx_int_t {
    // SAFETY: a live request has a live connection and log.
    unsafe {
        let log = (*(*r).connection).log;
        if NGX_LOG_ERR as usize <= (*log).log_level {
            let msg = format!(
                "wsgi: daemon process group #{group}: daemon mode is not available in this build"
            );
            ngx::log::log_error(NGX_LOG_ERR as usize, log, 0, msg.as_bytes());
        }
    }
    NGX_HTTP_SERVICE_UNAVAILABLE as ngx_int_t
}
