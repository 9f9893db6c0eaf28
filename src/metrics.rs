//! Metrics in nginx (crates/metrics): the shared region that holds the counters, what each worker
//! and each request records, and the `wsgi_metrics` endpoint.
//!
//! - **The region** (fixed size) is mapped by the master from a memory file
//!   (`metrics::shm::create`) in the first `init_module` whose `http` block uses the module,
//!   before the daemon groups' supervisors are forked, so the workers, the supervisors and their
//!   daemon workers all share one mapping; a supervisor that `exec`s `rwsgi-worker` is handed the
//!   file and maps it again. The master keeps it across reloads (and with it the counters); a
//!   daemon group kept across the reload still writes into it.
//! - **`init_module`** (master) registers the configuration's groups and apps and keeps their
//!   slots in `MainConf`, which the workers inherit.
//! - **A request** of a `wsgi_script` location: [`begin`] counts it active and adds a cleanup to
//!   the request pool that records the end (status, duration, bytes, client abort) however the
//!   request ends, also after an internal redirect to an `error_page`. Embedded jobs carry the
//!   app's slot to the Python thread ([`app_id`]), which records its own side.
//! - **`wsgi_metrics`** answers GET/HEAD with the scrape, in OpenMetrics when the `Accept`
//!   header asks for it; nginx's `allow`/`deny`/`auth_*` apply before it.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{AppId, BuildInfo, Finished, Format, Region, Role};
use ngx::ffi::{
    ngx_buf_t, ngx_chain_t, ngx_conf_t, ngx_create_temp_buf, ngx_cycle_t,
    ngx_http_discard_request_body, ngx_http_output_filter, ngx_http_request_t,
    ngx_http_send_header, ngx_int_t, ngx_list_part_t, ngx_pool_cleanup_add, ngx_str_t,
    ngx_table_elt_t, NGINX_VER, NGX_ERROR, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED, NGX_HTTP_OK, NGX_LOG_ALERT, NGX_OK,
};
use ngx::http::HttpModuleMainConf;

use crate::conf::{LocConf, MainConf};
use crate::WsgiModule;

/// This configuration wants the region (set in `postconfiguration`, read in `init_module`).
static WANTED: AtomicBool = AtomicBool::new(false);

/// The region, made by the master the first time a configuration wants it and kept for the
/// master's life (the module stays loaded across reloads, and so do its counters).
static REGION: OnceLock<&'static Region> = OnceLock::new();

/// `postconfiguration`: notes whether the `http` block uses the module at all.
///
/// # Safety
/// `cf` is the valid `ngx_conf_t` nginx passes to `postconfiguration`.
pub unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    let wanted = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: cf is valid for the duration of the call (contract).
        let cf = unsafe { &*cf };
        WsgiModule::main_conf(cf).is_some_and(|main| {
            !main.metric_apps.is_empty() || !main.groups.is_empty() || main.metrics_endpoint
        })
    }));
    match wanted {
        Ok(wanted) => {
            WANTED.store(wanted, Ordering::Relaxed);
            NGX_OK as ngx_int_t
        }
        Err(_) => NGX_ERROR as ngx_int_t,
    }
}

/// The region, mapped now if this is the first configuration that wants it; `None` (with an
/// `[alert]` line: nginx runs on without counters) when it cannot be mapped.
///
/// # Safety
/// `cycle` is the cycle being initialised, on nginx's main thread.
unsafe fn region_for(cycle: *mut ngx_cycle_t) -> Option<&'static Region> {
    if let Some(region) = REGION.get() {
        return Some(region);
    }
    match ::metrics::shm::create() {
        Ok(region) => Some(*REGION.get_or_init(|| region)),
        Err(e) => {
            let msg = format!("wsgi: RW-NG070 cannot map the metrics region: {e}");
            // SAFETY: the cycle and its log are valid (contract).
            unsafe { ngx::log::log_error(NGX_LOG_ALERT as usize, (*cycle).log, 0, msg.as_bytes()) };
            None
        }
    }
}

/// `init_module` (master, and for `nginx -t`/`-s`): registers this configuration's groups and
/// apps, before the daemon groups are forked.
///
/// # Safety
/// `cycle` is the cycle being initialised, on nginx's main thread.
pub unsafe fn init_module(cycle: *mut ngx_cycle_t) {
    if !WANTED.load(Ordering::Relaxed) {
        ::metrics::detach();
        return;
    }
    // SAFETY: contract.
    let Some(region) = (unsafe { region_for(cycle) }) else {
        return;
    };
    ::metrics::attach(region);
    // SAFETY: contract.
    let Some(main) = WsgiModule::main_conf_mut(unsafe { &*cycle }) else {
        return;
    };
    region.new_generation();
    register(region, main);
}

fn register(region: &Region, main: &mut MainConf) {
    for g in &main.groups {
        region.register_group(&g.name);
    }
    main.metric_ids = main
        .metric_apps
        .iter()
        .map(|(mount, group)| region.register_app(mount, region.register_group(group)?))
        .collect();
}

/// A reload changed daemon group `old`: its workers are all replaced (counted as respawns
/// for `reload`, as a rolling restart's are).
pub fn group_restarted(old: &supervisor::GroupConfig) {
    if let Some(g) = ::metrics::region().and_then(|r| r.register_group(&old.name)) {
        ::metrics::respawned(g, ::metrics::Respawn::Reload, u64::from(old.processes));
    }
}

/// `init_process` (each worker): claims the worker's process slot; `python_threads` is how
/// many Python request threads it runs (0 without embedded apps).
pub fn init_process(python_threads: usize) {
    // SAFETY: reading nginx's process-role global on the main thread.
    let role = unsafe { ngx::ffi::ngx_process } as u32;
    if role != ngx::ffi::NGX_PROCESS_WORKER && role != ngx::ffi::NGX_PROCESS_SINGLE {
        return; // cache manager and loader run no requests
    }
    if let Some(region) = ::metrics::region() {
        let embedded = region.register_group("");
        let threads = u32::try_from(python_threads).unwrap_or(u32::MAX);
        region.register_process(Role::Server, embedded, threads);
    }
}

/// `exit_process`: frees the worker's process slot.
pub fn exit_process() {
    if let Some(region) = ::metrics::region() {
        region.release_process();
    }
}

/// The metrics slot of the app `lc` serves.
pub fn app_id(r: &ngx_http_request_t, lc: &LocConf) -> Option<AppId> {
    let main = WsgiModule::main_conf(r)?;
    *main.metric_ids.get(lc.metrics?)?
}

/// What the pool cleanup needs when the request ends.
struct Pending {
    r: *mut ngx_http_request_t,
    app: AppId,
}

/// The content handler took a request of a `wsgi_script` location: count it active, and its
/// end when nginx frees the request.
///
/// # Safety
/// `r` is the live request of the content handler.
pub unsafe fn begin(r: *mut ngx_http_request_t, lc: &LocConf) {
    // SAFETY: r is live (contract).
    let Some(app) = app_id(unsafe { &*r }, lc) else {
        return;
    };
    // SAFETY: the request pool lives until nginx frees the request; the cleanup runs then,
    // after the log phase, while r and its connection are still valid.
    let cln = unsafe { ngx_pool_cleanup_add((*r).pool, std::mem::size_of::<Pending>()) };
    if cln.is_null() {
        return;
    }
    ::metrics::request_started(app);
    // SAFETY: cln->data is room for one Pending (asked for above).
    unsafe {
        (*cln).data.cast::<Pending>().write(Pending { r, app });
        (*cln).handler = Some(request_ended);
    }
}

/// The request pool's cleanup: what the request came to, as nginx's access log sees it.
///
/// # Safety
/// Called by nginx while it destroys the request pool, with the `Pending` written by [`begin`].
unsafe extern "C" fn request_ended(data: *mut c_void) {
    let _ = catch_unwind(|| {
        // SAFETY: data is our Pending in the pool being destroyed; the request struct (also pool
        // memory) and its connection are still valid while the cleanups run.
        let (p, r) = unsafe {
            let p = &*data.cast::<Pending>();
            (p, &*p.r)
        };
        // SAFETY: as above.
        let c = unsafe { &*r.connection };
        let status = if r.err_status != 0 {
            r.err_status
        } else {
            r.headers_out.status
        };
        let is_main = std::ptr::eq(r, r.main);
        let body_out = if is_main {
            u64::try_from(c.sent - r.header_size as i64).unwrap_or(0)
        } else {
            0
        };
        let done = Finished {
            status: u16::try_from(status).unwrap_or(0),
            duration: since(r.start_sec, r.start_msec),
            body_in: u64::try_from(r.headers_in.content_length_n).unwrap_or(0),
            body_out,
            client_aborted: c.error() != 0 || status == 499,
        };
        ::metrics::request_finished(p.app, &done);
    });
}

/// Time since nginx's start time of a request, on nginx's cached clock (updated once per event
/// loop iteration, millisecond resolution): what `$request_time` shows, without a clock read.
fn since(sec: i64, msec: usize) -> Duration {
    let ms = |sec: i64, msec: usize| u64::try_from(sec).unwrap_or(0) * 1000 + msec as u64;
    // SAFETY: nginx's cached time is set before any request and only replaced (never freed) by
    // the event-loop thread, which is this one: the pointer and the slot it names are valid.
    let now = unsafe { ngx::ffi::ngx_cached_time.as_ref() }.map(|t| ms(t.sec, t.msec));
    Duration::from_millis(now.unwrap_or(0).saturating_sub(ms(sec, msec)))
}

/// The content handler of a `wsgi_metrics` location.
///
/// # Safety
/// Called by nginx in the content phase with a live request.
pub unsafe extern "C" fn metrics_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is live (contract).
    catch_unwind(AssertUnwindSafe(|| unsafe { answer(r) }))
        .unwrap_or(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t)
}

/// # Safety
/// `r` is live, in the content phase.
unsafe fn answer(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: contract.
    let req = unsafe { &mut *r };
    if req.method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as usize == 0 {
        return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
    }
    // SAFETY: r is live.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    // SAFETY: r is live; its header list is nginx's.
    let format = Format::from_accept(unsafe { header(req, b"accept") });
    let build = BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        python: pyhost::python_version(),
        server: NGINX_VER.to_string_lossy().into_owned(),
    };
    let body = ::metrics::scrape(&build, format);
    let internal = NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    req.headers_out.status = NGX_HTTP_OK as usize;
    req.headers_out.content_length_n = body.len() as i64;
    let content_type = format.content_type();
    // SAFETY: pool copy, lives as long as the request.
    let Some(ct) = (unsafe { ngx_str_t::from_bytes(req.pool, content_type.as_bytes()) }) else {
        return internal;
    };
    req.headers_out.content_type = ct;
    req.headers_out.content_type_len = content_type.len();
    req.headers_out.content_type_lowcase = std::ptr::null_mut();
    // SAFETY: r is live; the header filters run now.
    let rc = unsafe { ngx_http_send_header(r) };
    if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || req.header_only() != 0 {
        return rc;
    }
    // SAFETY: the pool lives as long as the request; the buffer is checked.
    let b: *mut ngx_buf_t = unsafe { ngx_create_temp_buf(req.pool, body.len().max(1)) };
    if b.is_null() {
        return internal;
    }
    // SAFETY: a fresh temp buffer of at least body.len() bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(body.as_ptr(), (*b).pos, body.len());
        (*b).last = (*b).pos.add(body.len());
        (*b).set_last_buf(if std::ptr::eq(r, req.main) { 1 } else { 0 });
        (*b).set_last_in_chain(1);
    }
    let mut out = ngx_chain_t {
        buf: b,
        next: std::ptr::null_mut(),
    };
    // SAFETY: r is live; the chain lives across the call (nginx copies what it keeps).
    unsafe { ngx_http_output_filter(r, &mut out) }
}

/// The value of request header `name` (lowercase), empty if absent.
///
/// # Safety
/// `r` is live.
unsafe fn header<'a>(r: &'a ngx_http_request_t, name: &[u8]) -> &'a [u8] {
    let mut part: *const ngx_list_part_t = &r.headers_in.headers.part;
    while !part.is_null() {
        // SAFETY: nginx's header list: `nelts` table elements per part, parts linked by next.
        let (elts, n, next) = unsafe {
            let p = &*part;
            (p.elts.cast::<ngx_table_elt_t>(), p.nelts, p.next)
        };
        for i in 0..n {
            // SAFETY: i < nelts.
            let h = unsafe { &*elts.add(i) };
            if h.key.as_bytes().eq_ignore_ascii_case(name) {
                return h.value.as_bytes();
            }
        }
        part = next;
    }
    &[]
}
