//! URL mapping and the response handler.
//!
//! `translate_name` maps a `WSGIScriptAlias` URL onto the script exactly as mod_wsgi does:
//! `r->filename` becomes the script path followed by the rest of the URI, and httpd's own
//! directory walk then splits off `r->path_info`. So `<Directory>` access control, AcceptPathInfo
//! and SCRIPT_NAME/PATH_INFO all behave as they do under mod_wsgi.
//!
//! `handler` then chooses the mode, one visible branch: daemon group or embedded.

use std::ffi::c_int;

use crate::conf::{alias_match_len, Alias, DirConf, ProcessGroup};
use crate::ffi::*;
use crate::log::log_request;
use crate::{daemon, embedded, keepalive, module_ptr, server_conf};

/// The handler names mod_wsgi answers to (`SetHandler wsgi-script` works too).
const HANDLER_NAMES: [&[u8]; 2] = [b"wsgi-script", b"application/x-httpd-wsgi"];

/// What translate_name found, stashed in r->request_config for the handler.
struct Matched {
    /// Points into the server's ServerConf, which lives for the configuration generation.
    alias: *const Alias,
}

/// The `translate_name` hook: maps a `WSGIScriptAlias` URL onto its script (see [`translate`]).
///
/// # Safety
/// Called by httpd with a live request_rec, on the request's thread, for the duration of the
/// hook.
pub(crate) unsafe extern "C" fn translate_name(r: *mut request_rec) -> c_int {
    // SAFETY: httpd passes a live request_rec for the duration of the hook.
    std::panic::catch_unwind(|| unsafe { translate(&mut *r) })
        .unwrap_or(HTTP_INTERNAL_SERVER_ERROR as c_int)
}

/// # Safety
/// `r` must be the live request of the current hook call.
unsafe fn translate(r: &mut request_rec) -> c_int {
    // SAFETY: r->server is live for the request.
    let Some(conf) = (unsafe { server_conf(r.server) }) else {
        return DECLINED_;
    };
    if conf.aliases.is_empty() {
        return DECLINED_;
    }
    // SAFETY: r->uri is httpd's NUL-terminated, already %-decoded path.
    let uri = unsafe { cstr_bytes(r.uri) };
    if !uri.is_empty() && uri[0] != b'/' {
        return DECLINED_;
    }
    for alias in &conf.aliases {
        let Some(matched) = alias_match_len(alias.url.as_bytes(), uri) else {
            continue;
        };
        // For "/", the whole URI is path info (SCRIPT_NAME ""); otherwise the rest after the match.
        let rest = if alias.url == "/" {
            uri
        } else {
            &uri[matched..]
        };
        let mut filename = alias.script.as_os_str().as_encoded_bytes().to_vec();
        filename.extend_from_slice(rest);
        // SAFETY: r->pool lives as long as the request; handler names are 'static C strings.
        unsafe {
            r.filename = pool_str(r.pool, &filename);
            r.handler = c"wsgi-script".as_ptr();
            let stash = pool_box(
                r.pool,
                Matched {
                    alias: alias as *const Alias,
                },
            );
            ap_set_module_config(r.request_config, module_ptr(), stash.cast());
        }
        return OK_;
    }
    DECLINED_
}

/// The `handler` hook: runs a `wsgi-script` request in its mode (see [`handle`]).
///
/// # Safety
/// Called by httpd with a live request_rec, used only on this thread during the call.
pub(crate) unsafe extern "C" fn handler(r: *mut request_rec) -> c_int {
    // SAFETY: httpd passes a live request_rec, used only on this thread during the call.
    match std::panic::catch_unwind(|| unsafe { handle(&mut *r) }) {
        Ok(status) => status,
        Err(_) => {
            // SAFETY: r is still live; logging only reads it.
            unsafe {
                log_request(
                    r,
                    APLOG_ERR,
                    "mod_rwsgi: internal error (panic) while handling the request",
                )
            };
            HTTP_INTERNAL_SERVER_ERROR as c_int
        }
    }
}

/// # Safety
/// `r` must be the live request of the current handler call.
unsafe fn handle(r: &mut request_rec) -> c_int {
    // SAFETY: r->handler is NULL or a NUL-terminated string.
    let name = unsafe { cstr_bytes(r.handler) };
    if name == b"rwsgi-metrics" {
        return crate::metrics::serve(r);
    }
    if !HANDLER_NAMES.contains(&name) {
        return DECLINED_;
    }
    // SAFETY: request_config slot is ours; set by translate() or still NULL.
    let matched = unsafe {
        ap_get_module_config(r.request_config, module_ptr())
            .cast::<Matched>()
            .as_ref()
    };
    // SAFETY: the alias lives in the server config for this generation (see Matched).
    let alias = matched.and_then(|m| unsafe { m.alias.as_ref() });

    // A script reached through SetHandler (not an alias) needs Options ExecCGI, as in mod_wsgi.
    // SAFETY: ap_allow_options only reads r.
    if alias.is_none() && unsafe { ap_allow_options(r) } & OPT_EXECCGI as c_int == 0 {
        // SAFETY: r is live.
        unsafe {
            log_request(
                r,
                APLOG_ERR,
                &script_error(r, "Options ExecCGI is off in this directory"),
            )
        };
        return HTTP_FORBIDDEN as c_int;
    }
    if r.finfo.filetype == apr_filetype_e_APR_NOFILE {
        // SAFETY: r is live.
        unsafe {
            log_request(
                r,
                APLOG_ERR,
                &script_error(r, "target WSGI script not found or unable to stat"),
            )
        };
        return HTTP_NOT_FOUND as c_int;
    }
    if r.finfo.filetype == apr_filetype_e_APR_DIR {
        // SAFETY: r is live.
        unsafe {
            log_request(
                r,
                APLOG_ERR,
                &script_error(r, "attempt to invoke a directory as a WSGI application"),
            )
        };
        return HTTP_FORBIDDEN as c_int;
    }
    // SAFETY: path_info is NULL or NUL-terminated.
    let path_info = unsafe { cstr_bytes(r.path_info) };
    if r.used_path_info == AP_REQ_REJECT_PATH_INFO as c_int && !path_info.is_empty() {
        return HTTP_NOT_FOUND as c_int;
    }

    // SAFETY: per_dir_config holds the merged DirConf for this request's location.
    let dir = unsafe {
        ap_get_module_config(r.per_dir_config, module_ptr())
            .cast::<DirConf>()
            .as_ref()
    };
    let base = dir.cloned().unwrap_or_default();
    let conf = match alias {
        Some(a) => base.with_alias(a),
        None => base,
    };
    keepalive::arm(r); // before metrics::begin: its cleanup then runs after the metrics' one
    let app = crate::metrics::begin(r, alias.map(|a| a.url.as_str()), &conf);
    match conf.process_group {
        Some(ProcessGroup::Daemon(ref group)) => daemon::forward(r, &conf, group),
        Some(ProcessGroup::Embedded) | None => embedded::run(r, &conf, app),
    }
}

fn script_error(r: &request_rec, what: &str) -> String {
    // SAFETY: r->filename is NULL or NUL-terminated.
    let file = unsafe { cstr_bytes(r.filename) };
    format!("{what}: {}", String::from_utf8_lossy(file))
}
