//! The content handler of every `wsgi_script` location: the one visible branch between modes.

use std::panic::{catch_unwind, AssertUnwindSafe};

use ngx::ffi::{ngx_http_request_t, ngx_int_t, NGX_HTTP_INTERNAL_SERVER_ERROR};
use ngx::http::HttpModuleLocationConf;

use crate::{daemon, embedded, WsgiModule};

/// `clcf->handler` of locations with `wsgi_script` (set by the directive).
///
/// # Safety
/// Called by nginx in the content phase with a live request.
pub unsafe extern "C" fn wsgi_content_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: nginx passes a live request.
        let Some(lc) = WsgiModule::location_conf(unsafe { &*r }) else {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        };
        // SAFETY: r is live (contract).
        unsafe { crate::metrics::begin(r, lc) };
        match lc.group {
            // SAFETY: r is live (contract).
            Some(group) => unsafe { daemon::forward(r, group) },
            // SAFETY: r is live (contract).
            None => unsafe { embedded::run(r) },
        }
    }));
    result.unwrap_or(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t)
}
