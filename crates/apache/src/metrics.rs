//! Metrics in Apache httpd (crates/metrics): the shared mapping that holds the counters, what
//! each child and each request records, and the `rwsgi-metrics` handler.
//!
//! - **The mapping** is made once, by the parent in its first `post_config`, and kept in the
//!   process pool's userdata: that pool outlives graceful and hard restarts, while this DSO and
//!   its statics are unloaded and loaded again. Every child and every daemon group's supervisor
//!   is forked from the parent afterwards, so all of them share it; restarts keep the counters.
//! - **`post_config`** (each real configuration pass, before `supervise.rs` forks the groups)
//!   registers the groups and the embedded aliases, and counts the workers a restart replaces.
//! - **A request** for `wsgi-script`: [`begin`] counts it active and registers a cleanup on the
//!   request pool that records the final status (after internal redirects), duration, bytes
//!   and client abort, however the request ended.
//! - **`SetHandler rwsgi-metrics`** ([`serve`]) answers GET/HEAD with the scrape (OpenMetrics
//!   when `Accept` asks for it); `Require` and the other access modules apply before it, as for
//!   mod_status.

use std::ffi::{c_int, c_void};
use std::time::Duration;

use ::metrics::{AppId, BuildInfo, Finished, Format, Region, Respawn, Role};

use crate::conf::{DirConf, ProcessGroup};
use crate::ffi::*;
use crate::log::log_server;
use crate::server_conf;

/// Where the parent keeps the region's address (the process pool survives restarts).
const USERDATA_KEY: &std::ffi::CStr = c"mod_rwsgi.metrics";
/// Where it keeps the region's memory file (its descriptor + 1), for daemon groups that exec
/// rwsgi-worker: a restart unloads and reloads this module, and its statics start again.
const USERDATA_FD_KEY: &std::ffi::CStr = c"mod_rwsgi.metrics_fd";

/// The region of this server: found in the process pool, or created and put there.
///
/// # Safety
/// `process_pool` is httpd's process pool; call in the single-threaded parent.
unsafe fn region_of(process_pool: *mut apr_pool_t) -> Option<&'static Region> {
    let mut data: *mut c_void = std::ptr::null_mut();
    // SAFETY: userdata lookup on the live process pool.
    unsafe { apr_pool_userdata_get(&mut data, USERDATA_KEY.as_ptr(), process_pool) };
    if !data.is_null() {
        // SAFETY: stored below: a region in a shared mapping that is never unmapped.
        let region = unsafe { &*data.cast::<Region>() };
        let mut fd: *mut c_void = std::ptr::null_mut();
        // SAFETY: userdata lookup on the live process pool.
        unsafe { apr_pool_userdata_get(&mut fd, USERDATA_FD_KEY.as_ptr(), process_pool) };
        if !fd.is_null() {
            // SAFETY: stored below: the region's memory file, open for the parent's life.
            unsafe { ::metrics::shm::known(region, fd as usize as i32 - 1) };
        }
        return Some(region);
    }
    let region = ::metrics::shm::create().ok()?;
    if let Some(fd) = ::metrics::shm::fd_of(region) {
        // SAFETY: a plain number stored as a pointer; the cleanup does nothing.
        unsafe {
            apr_pool_userdata_set(
                (fd as usize + 1) as *const c_void,
                USERDATA_FD_KEY.as_ptr(),
                Some(apr_pool_cleanup_null),
                process_pool,
            )
        };
    }
    // SAFETY: the region lives for the rest of the process (never unmapped); the cleanup does
    // nothing, so no code of this DSO runs when the pool goes.
    unsafe {
        apr_pool_userdata_set(
            (region as *const Region).cast(),
            USERDATA_KEY.as_ptr(),
            Some(apr_pool_cleanup_null),
            process_pool,
        )
    };
    Some(region)
}

/// The `post_config` hook (runs before supervise.rs's, which forks the daemon groups).
///
/// # Safety
/// Called by httpd in the single-threaded parent with the live main server_rec.
pub(crate) unsafe extern "C" fn post_config(
    _pconf: *mut apr_pool_t,
    _plog: *mut apr_pool_t,
    _ptemp: *mut apr_pool_t,
    s: *mut server_rec,
) -> c_int {
    // SAFETY: as httpd passes them (contract).
    let _ = std::panic::catch_unwind(|| unsafe { register(s) });
    OK_
}

/// # Safety
/// As [`post_config`].
unsafe fn register(s: *mut server_rec) {
    // The first pass at start-up only checks the configuration (supervise.rs starts nothing
    // then either).
    // SAFETY: ap_state_query only reads httpd's state.
    if unsafe { ap_state_query(AP_SQ_MAIN_STATE as c_int) } == AP_SQ_MS_CREATE_PRE_CONFIG as c_int {
        return;
    }
    // SAFETY: contract.
    let Some(region) = (unsafe { region_of((*(*s).process).pool) }) else {
        // SAFETY: s is live.
        unsafe { log_server(s, APLOG_WARNING, "RW-AP070 cannot map the metrics region") };
        return;
    };
    ::metrics::attach(region);
    let mut groups = Vec::new();
    let mut aliases = Vec::new();
    let mut server = s;
    while !server.is_null() {
        // SAFETY: the vhost list is live for this configuration pass.
        if let Some(conf) = unsafe { server_conf(server) } {
            groups.extend(
                conf.daemons
                    .iter()
                    .map(|d| (d.name.clone(), d.options.processes)),
            );
            aliases.extend(
                conf.aliases
                    .iter()
                    .map(|a| (a.url.clone(), a.options.process_group.clone())),
            );
        }
        // SAFETY: as above.
        server = unsafe { (*server).next };
    }
    // A restart replaces every group's workers (the new generation starts, the old drains).
    let last = region.generation();
    for (name, processes) in &groups {
        if region.group_generation(name) == Some(last) {
            if let Some(g) = region.register_group(name) {
                ::metrics::respawned(g, Respawn::Reload, u64::from(*processes));
            }
        }
    }
    region.new_generation();
    let embedded = region.register_group("");
    for (name, _) in &groups {
        region.register_group(name);
    }
    // Aliases known to run embedded show from the start; the others register on first use.
    for (url, group) in aliases {
        let embedded_alias = match group {
            Some(ProcessGroup::Embedded) => true,
            None => groups.is_empty(),
            Some(ProcessGroup::Daemon(_)) => false,
        };
        if let (true, Some(g)) = (embedded_alias, embedded) {
            region.register_app(::metrics::mount_label(&url), g);
        }
    }
}

/// The `child_init` hook (after embedded.rs's): the child's process slot, freed when the child
/// pool goes (a child that crashes is noticed through /proc).
///
/// # Safety
/// Called by httpd in each new child with its pool.
pub(crate) unsafe extern "C" fn child_init(pchild: *mut apr_pool_t, _s: *mut server_rec) {
    // The region's memory file (the mapping stays): only the parent hands it on, and nothing an
    // app in this child runs should reach it. The number stays recorded in the process pool,
    // which is the parent's.
    let _ = std::panic::catch_unwind(::metrics::shm::close_files);
    let Some(region) = ::metrics::region() else {
        return;
    };
    let threads = if crate::embedded::python_available() {
        let mut n: c_int = 0;
        // SAFETY: ap_mpm_query writes one int.
        let rv = unsafe { ap_mpm_query(AP_MPMQ_MAX_THREADS as c_int, &mut n) };
        if rv == APR_SUCCESS as apr_status_t {
            u32::try_from(n.max(1)).unwrap_or(1)
        } else {
            1
        }
    } else {
        0
    };
    region.register_process(Role::Server, region.register_group(""), threads);
    // SAFETY: a cleanup on the child's own pool; it runs once, in this process, at exit.
    unsafe {
        apr_pool_cleanup_register(
            pchild,
            std::ptr::null(),
            Some(release),
            Some(apr_pool_cleanup_null),
        )
    };
}

unsafe extern "C" fn release(_data: *mut c_void) -> apr_status_t {
    if let Some(region) = ::metrics::region() {
        region.release_process();
    }
    APR_SUCCESS as apr_status_t
}

/// The request's app slot: its mount (the alias URL, or the script's URL under SetHandler) in
/// its process group.
fn app_of(r: &request_rec, alias_url: Option<&str>, conf: &DirConf) -> Option<AppId> {
    let region = ::metrics::region()?;
    let group = match &conf.process_group {
        Some(ProcessGroup::Daemon(name)) => name.as_str(),
        _ => "",
    };
    let group = region.register_group(group)?;
    match alias_url {
        Some(url) => region.register_app(::metrics::mount_label(url), group),
        None => {
            // SAFETY: uri and path_info are NULL or NUL-terminated strings of the request.
            let (uri, path_info) = unsafe { (cstr_bytes(r.uri), cstr_bytes(r.path_info)) };
            let script = uri.strip_suffix(path_info).unwrap_or(uri);
            let script = String::from_utf8_lossy(script);
            region.register_app(::metrics::mount_label(&script), group)
        }
    }
}

/// What the request pool's cleanup needs.
struct Pending {
    r: *mut request_rec,
    app: AppId,
}

/// The handler took a `wsgi-script` request: count it active, and its end when httpd frees it.
/// Returns the app's slot (for the Python side, in embedded mode).
pub(crate) fn begin(r: &mut request_rec, alias_url: Option<&str>, conf: &DirConf) -> Option<AppId> {
    let app = app_of(r, alias_url, conf)?;
    ::metrics::request_started(app);
    let pending = Pending { r, app };
    // SAFETY: the Pending lives in the request pool; the cleanup runs once when httpd destroys
    // that pool, after the response is done, while the request_rec (pool memory) is valid.
    unsafe {
        let p = pool_box(r.pool, pending);
        apr_pool_cleanup_register(
            r.pool,
            p.cast(),
            Some(request_ended),
            Some(apr_pool_cleanup_null),
        );
    }
    Some(app)
}

/// # Safety
/// Called by APR while it destroys the request pool, with the Pending registered by [`begin`].
unsafe extern "C" fn request_ended(data: *mut c_void) -> apr_status_t {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: our Pending and the request_rec, both memory of the pool being destroyed,
        // which APR frees only after every cleanup ran.
        let (p, r) = unsafe {
            let p = &*data.cast::<Pending>();
            (p, &*p.r)
        };
        // The status and body the client got are the last internal redirect's (mod_log_config's
        // %>s and %B).
        let mut last = r;
        while !last.next.is_null() {
            // SAFETY: the redirect chain lives in the same pool.
            last = unsafe { &*last.next };
        }
        // SAFETY: apr_time_now only reads the clock.
        let now = unsafe { apr_time_now() };
        // SAFETY: the connection outlives its requests.
        let aborted = unsafe { r.connection.as_ref() }.is_some_and(|c| c.aborted != 0);
        let done = Finished {
            status: u16::try_from(last.status).unwrap_or(0),
            duration: Duration::from_micros(u64::try_from(now - r.request_time).unwrap_or(0)),
            body_in: u64::try_from(r.read_length).unwrap_or(0),
            body_out: u64::try_from(last.bytes_sent).unwrap_or(0),
            client_aborted: aborted,
        };
        ::metrics::request_finished(p.app, &done);
    });
    APR_SUCCESS as apr_status_t
}

/// The `rwsgi-metrics` handler: the scrape, for GET and HEAD.
pub(crate) fn serve(r: &mut request_rec) -> c_int {
    if r.method_number != M_GET as c_int {
        r.allowed |= 1 << M_GET;
        return HTTP_METHOD_NOT_ALLOWED as c_int;
    }
    // SAFETY: r is the live request of the handler call.
    let rc = unsafe { ap_discard_request_body(r) };
    if rc != OK_ {
        return rc;
    }
    // SAFETY: headers_in is the request's live table; the value is copied below.
    let accept = unsafe { cstr_bytes(apr_table_get(r.headers_in, c"Accept".as_ptr())) };
    let format = Format::from_accept(accept);
    let build = BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        python: pyhost::python_version(),
        server: server_version(),
    };
    let body = ::metrics::scrape(&build, format);
    // SAFETY: r is live; httpd copies nothing, so the type string goes into the request pool.
    unsafe {
        ap_set_content_type(r, pool_str(r.pool, format.content_type().as_bytes()));
        ap_set_content_length(r, body.len() as apr_off_t);
        if r.header_only == 0 {
            ap_rwrite(body.as_ptr().cast(), body.len() as c_int, r);
        }
    }
    OK_
}

/// `Apache/2.4.62`: the product and version, whatever ServerTokens says.
fn server_version() -> String {
    // SAFETY: a static string of httpd's.
    let full = unsafe { cstr_bytes(ap_get_server_description()) };
    let full = String::from_utf8_lossy(full);
    full.split_whitespace()
        .next()
        .unwrap_or("Apache")
        .to_owned()
}
