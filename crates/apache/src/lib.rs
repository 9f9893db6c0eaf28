//! mod_rwsgi: an Apache httpd 2.4 module hosting Python WSGI applications, a drop-in for
//! mod_wsgi's core directives (`LoadModule rwsgi_module .../mod_rwsgi.so`).
//!
//! Layout (the nginx module, src/, has the same files for the same jobs):
//! - `lib` (this file): the module record httpd looks up, `register_hooks`, the config
//!   create/merge callbacks and the whole-configuration check;
//! - `ffi`: generated httpd/APR bindings and the helpers C macros would provide;
//! - `conf`: typed directive values and their merge rule; `directives`: httpd's command table;
//! - `handler`: URL mapping (`WSGIScriptAlias`) and the response handler, the one visible branch
//!   between the modes;
//! - `request`: what both modes share: the CGI vars, the request body, the response output;
//! - `embedded`: embedded mode, Python in the Apache child (pyhost); `timeout`: its request
//!   timeout's last resort, for a request thread stuck in C code;
//! - `daemon`: daemon mode, forwarding a request to its group over uwsgi, with `spool` (the
//!   request body read whole first) and `backend` (the connection to the group: the request
//!   sent while the response is read);
//! - `supervise`: daemon mode in the parent: starting and restarting the groups;
//! - `keepalive`: a finished keep-alive connection kept on its thread for a moment while its
//!   child has no idle thread (the event MPM would close it); `scoreboard`: this child's row of
//!   httpd's scoreboard, read by it and `timeout`;
//! - `metrics`: the counters' shared mapping, what a request records, `SetHandler rwsgi-metrics`;
//! - `log`: httpd's error log, for a request, a server and pyhost.
//!
//! lib.rs names the other files' hooks and they reach their configuration through its module
//! record (`module_ptr`), as a C module's hooks name its `module`; apart from that, no file
//! imports a file that imports it back.
//!
//! httpd calls `register_hooks` once per configuration pass, in the parent, and unloads and
//! reloads this DSO between passes, so nothing process-wide is set up there: Python starts in
//! `child_init`, in each child.

mod backend;
mod conf;
mod daemon;
mod directives;
mod embedded;
mod ffi;
mod handler;
mod keepalive;
mod log;
mod metrics;
mod request;
mod scoreboard;
mod spool;
mod supervise;
mod timeout;

use std::ffi::{c_char, c_int, c_void};
use std::ptr::{addr_of_mut, null, null_mut};

use conf::{DirConf, ServerConf};
use ffi::*;
use log::log_server;

/// The module record httpd looks up by the name given to `LoadModule` (`rwsgi_module`).
/// `static mut` because httpd writes `module_index`, `next` and `dynamic_load_handle`.
/// The first fields are STANDARD20_MODULE_STUFF, spelled out.
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut rwsgi_module: module = module {
    version: MODULE_MAGIC_NUMBER_MAJOR as c_int,
    minor_version: MODULE_MAGIC_NUMBER_MINOR as c_int,
    module_index: -1,
    name: c"mod_rwsgi.c".as_ptr(),
    dynamic_load_handle: null_mut(),
    next: null_mut(),
    magic: MODULE_MAGIC_COOKIE as _,
    rewrite_args: None,
    create_dir_config: Some(create_dir_config),
    merge_dir_config: Some(merge_dir_config),
    create_server_config: Some(create_server_config),
    merge_server_config: Some(merge_server_config),
    // SAFETY: not an unsafe operation; httpd only reads the table through this pointer.
    cmds: &directives::COMMANDS.0 as *const command_rec,
    register_hooks: Some(register_hooks),
    flags: 0,
};

/// Pointer to our module record, for ap_get_module_config and logging.
pub(crate) fn module_ptr() -> *mut module {
    addr_of_mut!(rwsgi_module)
}

/// Our index in httpd's per-module config vectors (APLOG_MODULE_INDEX).
pub(crate) fn module_index() -> c_int {
    // SAFETY: httpd sets module_index once while loading, before any hook runs; reading an i32.
    unsafe { (*module_ptr()).module_index }
}

/// Null-terminated module-name lists for hook ordering, as httpd expects.
#[repr(transparent)]
struct NameList<const N: usize>([*const c_char; N]);
// SAFETY: immutable pointers to 'static C strings.
unsafe impl<const N: usize> Sync for NameList<N> {}

/// WSGIScriptAlias runs after mod_alias's Alias (so a plain Alias on the same prefix wins, as
/// with mod_wsgi) and before mod_userdir / mod_vhost_alias.
static TRANSLATE_AFTER: NameList<2> = NameList([c"mod_alias.c".as_ptr(), null()]);
static TRANSLATE_BEFORE: NameList<3> = NameList([
    c"mod_userdir.c".as_ptr(),
    c"mod_vhost_alias.c".as_ptr(),
    null(),
]);

/// Registers our hooks with httpd (once per configuration pass, in the parent).
///
/// # Safety
/// Called by httpd while loading the module; the pool is not used.
unsafe extern "C" fn register_hooks(_pool: *mut apr_pool_t) {
    let middle = APR_HOOK_MIDDLE as c_int;
    // SAFETY: registering static callbacks and static, null-terminated name lists.
    unsafe {
        ap_hook_translate_name(
            Some(handler::translate_name),
            TRANSLATE_AFTER.0.as_ptr(),
            TRANSLATE_BEFORE.0.as_ptr(),
            middle,
        );
        ap_hook_handler(Some(handler::handler), null(), null(), middle);
        ap_hook_check_config(Some(check_config), null(), null(), middle);
        // The metrics region exists before supervise.rs forks the daemon groups, and a child
        // claims its metrics slot once embedded.rs knows whether Python runs in it.
        let (first, last) = (APR_HOOK_FIRST as c_int, APR_HOOK_LAST as c_int);
        ap_hook_post_config(Some(metrics::post_config), null(), null(), first);
        ap_hook_post_config(Some(supervise::post_config), null(), null(), middle);
        ap_hook_child_init(Some(embedded::child_init), null(), null(), middle);
        ap_hook_child_init(Some(metrics::child_init), null(), null(), last);
    }
}

/// `create_dir_config`: an empty [`DirConf`] owned by `pool`.
///
/// # Safety
/// Called by httpd with a live pool that owns the per-directory config.
unsafe extern "C" fn create_dir_config(pool: *mut apr_pool_t, _dir: *mut c_char) -> *mut c_void {
    // SAFETY: httpd passes a live pool that owns the per-dir config.
    unsafe { pool_box(pool, DirConf::default()).cast() }
}

/// `merge_dir_config`: the inner scope's values win ([`DirConf::merge`]).
///
/// # Safety
/// Called by httpd with a live pool and two configs made by `create_dir_config` or this
/// function, in pools that outlive `pool`.
unsafe extern "C" fn merge_dir_config(
    pool: *mut apr_pool_t,
    base: *mut c_void,
    add: *mut c_void,
) -> *mut c_void {
    // SAFETY: both were made by create_dir_config/merge_dir_config and live in pools that
    // outlive `pool`; the result is owned by `pool`.
    unsafe {
        let merged = DirConf::merge(&*base.cast::<DirConf>(), &*add.cast::<DirConf>());
        pool_box(pool, merged).cast()
    }
}

/// `create_server_config`: an empty [`ServerConf`] owned by `pool`.
///
/// # Safety
/// Called by httpd with a live pool (pconf) that owns the server config.
unsafe extern "C" fn create_server_config(
    pool: *mut apr_pool_t,
    _s: *mut server_rec,
) -> *mut c_void {
    // SAFETY: httpd passes a live pool (pconf) that owns the server config.
    unsafe { pool_box(pool, ServerConf::default()).cast() }
}

/// `merge_server_config`: a virtual host over the main server ([`ServerConf::merge`]).
///
/// # Safety
/// Called by httpd with a live pool and two configs made by `create_server_config` or this
/// function, in pools that outlive `pool`.
unsafe extern "C" fn merge_server_config(
    pool: *mut apr_pool_t,
    base: *mut c_void,
    add: *mut c_void,
) -> *mut c_void {
    // SAFETY: as merge_dir_config, for ServerConf.
    unsafe {
        let merged = ServerConf::merge(&*base.cast::<ServerConf>(), &*add.cast::<ServerConf>());
        pool_box(pool, merged).cast()
    }
}

/// The ServerConf of `s`.
///
/// # Safety
/// `s` must be a live server_rec of the current configuration generation.
pub(crate) unsafe fn server_conf<'a>(s: *const server_rec) -> Option<&'a ServerConf> {
    // SAFETY: module_config holds our create/merge_server_config result for this server.
    unsafe {
        ap_get_module_config((*s).module_config, module_ptr())
            .cast::<ServerConf>()
            .as_ref()
    }
}

/// Cross-directive checks that need the whole configuration; runs for `apachectl -t` too.
///
/// # Safety
/// Called by httpd in the parent with the live main server_rec (the head of the virtual host
/// list); the pools are not used.
unsafe extern "C" fn check_config(
    _pconf: *mut apr_pool_t,
    _plog: *mut apr_pool_t,
    _ptemp: *mut apr_pool_t,
    s: *mut server_rec,
) -> c_int {
    let result = std::panic::catch_unwind(|| {
        // SAFETY: httpd passes the main server_rec; the vhost list hangs off it.
        unsafe { supervise::validate(s) }
    });
    let problem = match result {
        Ok(Ok(())) => return OK_,
        Ok(Err(message)) => message,
        Err(_) => "mod_rwsgi: internal error while checking the configuration".to_owned(),
    };
    // SAFETY: s is the live main server.
    unsafe { log_server(s, APLOG_ERR | APLOG_STARTUP, &problem) };
    HTTP_INTERNAL_SERVER_ERROR as c_int
}
