//! Daemon mode, worker side: forward a request to its `wsgi_daemon_process` group over uwsgi,
//! with nginx's own upstream machinery (non-blocking connect, request body streamed from memory
//! or the temp file, response streamed to the client unbuffered, timeouts, error logging).
//!
//! We supply only the protocol hooks, as nginx's own uwsgi module does: `create_request` (the
//! uwsgi packet from the `uwsgi` crate's encoder, followed by the body buffers), and
//! `process_header` (the worker's `HTTP/1.1 NNN reason` head, parsed by the `uwsgi` crate). The
//! body then passes through nginx's default non-buffered filter until the worker closes.

use std::ffi::{c_char, c_void};
use std::ptr::NonNull;
use std::time::Duration;

use ngx::ffi::{
    ngx_alloc_chain_link, ngx_array_create, ngx_array_push, ngx_array_t, ngx_buf_t,
    ngx_conf_merge_path_value, ngx_conf_t, ngx_event_pipe_copy_input_filter, ngx_event_pipe_t,
    ngx_hash_find, ngx_hash_init_t, ngx_hash_key, ngx_http_read_client_request_body,
    ngx_http_request_t, ngx_http_upstream_conf_t, ngx_http_upstream_create,
    ngx_http_upstream_header_t, ngx_http_upstream_hide_headers_hash, ngx_http_upstream_init,
    ngx_http_upstream_non_buffered_filter, ngx_http_upstream_resolved_t, ngx_int_t, ngx_list_push,
    ngx_palloc, ngx_path_init_t, ngx_path_t, ngx_pcalloc, ngx_pnalloc, ngx_str_t, ngx_table_elt_t,
    NGX_AGAIN, NGX_CONF_BITMASK_SET, NGX_ERROR, NGX_HTTP_INTERNAL_SERVER_ERROR,
    NGX_HTTP_SERVICE_UNAVAILABLE, NGX_HTTP_SPECIAL_RESPONSE, NGX_HTTP_UPSTREAM_FT_OFF,
    NGX_HTTP_UPSTREAM_INVALID_HEADER, NGX_HTTP_UWSGI_TEMP_PATH, NGX_LOG_ERR, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpUpstreamModule};

use supervisor::SocketSpec;
use uwsgi::contract::{self, FrontEndVars, PathInfoForm};

use crate::conf::{DaemonGroup, MainConf, Mount};
use crate::log::log_request;
use crate::request::Vars;
use crate::upstream::{HeaderList, Upstream};
use crate::WsgiModule;

/// Headers of one response the parser accepts.
const MAX_HEADERS: usize = 128;

/// Headers nginx's uwsgi module hides from the client by default (they steer nginx, not the
/// browser); `wsgi_hide_header` adds to them, `wsgi_pass_header` lets one through.
static HIDE: [&[u8]; 6] = [
    b"Status",
    b"X-Accel-Expires",
    b"X-Accel-Redirect",
    b"X-Accel-Limit-Rate",
    b"X-Accel-Buffering",
    b"X-Accel-Charset",
];

/// The read timeout when `wsgi_read_timeout` is not set: the group kills a request at its
/// request-timeout itself, so nginx waits a little longer than that; without one, allow slow
/// apps (300 s, where the uwsgi module's default is 60 s: docs/nginx/wsgi_read_timeout.md).
fn default_read_timeout(group: &DaemonGroup) -> Duration {
    group
        .options
        .request_timeout
        .map_or(Duration::from_secs(300), |t| {
            t.saturating_add(Duration::from_secs(10))
        })
}

fn msec(d: Duration) -> ngx::ffi::ngx_msec_t {
    d.as_millis()
        .try_into()
        .unwrap_or(ngx::ffi::ngx_msec_t::MAX)
}

/// `init_process` of a worker: when the configuration runs daemon groups, whose workers share
/// this machine's cores with nginx's, the worker's event thread takes their scheduling policy
/// (`SCHED_BATCH` unless `RWSGI_SCHED=normal`), so that relaying a response does not preempt the
/// Python thread on its core (docs/scheduling.md, "nginx workers in front of daemon groups").
/// A worker that hosts embedded Python gets the policy when Python starts; this changes nothing
/// there.
///
/// # Safety
/// `cycle` is the worker's live cycle.
pub unsafe fn schedule_worker(cycle: *mut ngx::ffi::ngx_cycle_t) {
    // SAFETY: the caller's contract.
    let Some(main) = WsgiModule::main_conf(unsafe { &*cycle }) else {
        return; // no http block
    };
    // A group no location uses is not started (RW-NG033): nothing shares the cores then.
    if main.groups.iter().any(|g| !g.apps.is_empty()) {
        pyhost::prefer_batch_for_forwarding();
    }
}

/// The `ngx_http_upstream_conf_t` of a daemon location, made once at configuration time from the
/// location's merged [`Upstream`] settings.
///
/// # Safety
/// `cf` is the valid configuration of the merge step.
pub unsafe fn make_upstream_conf(
    cf: *mut ngx_conf_t,
    main: &mut MainConf,
    group: usize,
    settings: &Upstream,
) -> Result<NonNull<c_void>, String> {
    let Some(g) = main.groups.get(group) else {
        return Err("internal error: unknown process group".to_string());
    };
    let v = settings.resolve(default_read_timeout(g))?;
    // SAFETY: cf is valid (contract); the conf lives in the configuration pool, zeroed first (the
    // C modules' create_loc_conf starts from ngx_pcalloc as well).
    unsafe {
        let pool = (*cf).pool;
        let u = ngx_pcalloc(pool, std::mem::size_of::<ngx_http_upstream_conf_t>())
            .cast::<ngx_http_upstream_conf_t>();
        if u.is_null() {
            return Err("out of memory".to_string());
        }
        let c = &mut *u;
        c.connect_timeout = msec(v.connect_timeout);
        c.send_timeout = msec(v.send_timeout);
        c.read_timeout = msec(v.read_timeout);
        c.buffer_size = v.buffer_size;
        c.bufs.num = v.buffers.0 as _;
        c.bufs.size = v.buffers.1;
        c.busy_buffers_size = v.busy_buffers_size;
        c.temp_file_write_size = v.temp_file_write_size;
        c.max_temp_file_size = v.max_temp_file_size as _;
        // One socket per group: no next server to try (docs/nginx/wsgi_next_upstream.md).
        c.next_upstream = (NGX_CONF_BITMASK_SET | NGX_HTTP_UPSTREAM_FT_OFF) as _;
        c.buffering = v.buffering.into();
        c.request_buffering = v.request_buffering.into();
        c.intercept_errors = v.intercept_errors.into();
        // The app may turn buffering on or off per response with X-Accel-Buffering, as with the
        // uwsgi module.
        c.set_change_buffering(1);
        // Keep sending the body after the response head went to the client (daemon_send.rs).
        c.set_preserve_output(1);
        c.pass_request_headers = 1;
        c.pass_request_body = 1;
        c.module = ngx_str_t {
            len: 4,
            data: c"wsgi".as_ptr().cast_mut().cast(),
        };
        c.temp_path = temp_path(cf, main, settings)?;
        header_lists(cf, c, settings)?;
        NonNull::new(u.cast()).ok_or_else(|| "out of memory".to_string())
    }
}

/// Where buffered responses that outgrow memory go: `wsgi_temp_path`, else the uwsgi module's
/// compiled-in directory (Debian: /var/lib/nginx/uwsgi; rwsgi's daemons speak uwsgi, and temp
/// file names never collide), registered with nginx once so it exists and belongs to the worker
/// user at start-up.
///
/// # Safety
/// `cf` is the valid configuration of the merge step.
unsafe fn temp_path(
    cf: *mut ngx_conf_t,
    main: &mut MainConf,
    settings: &Upstream,
) -> Result<*mut ngx_path_t, String> {
    if let Some(at) = &settings.temp_path {
        return Ok(at.value.as_ptr().cast());
    }
    if let Some(p) = main.default_temp_path {
        return Ok(p.as_ptr().cast());
    }
    let name = NGX_HTTP_UWSGI_TEMP_PATH.to_bytes();
    let mut init = ngx_path_init_t {
        name: ngx_str_t {
            len: name.len(),
            data: name.as_ptr().cast_mut(),
        },
        // The uwsgi module's levels for the same directory: nginx refuses one default path
        // with two sets of levels.
        level: [1, 2, 0],
    };
    let mut path: *mut ngx_path_t = std::ptr::null_mut();
    // SAFETY: cf is valid; nginx allocates the path in the configuration pool and registers it.
    let rc = unsafe { ngx_conf_merge_path_value(cf, &mut path, std::ptr::null_mut(), &mut init) };
    match NonNull::new(path) {
        Some(p) if rc.is_null() => {
            main.default_temp_path = Some(p.cast());
            Ok(path)
        }
        _ => Err("cannot set up the temporary directory for buffered responses".to_string()),
    }
}

/// The hidden headers' hash: the uwsgi module's defaults ([`HIDE`]), plus `wsgi_hide_header`,
/// minus `wsgi_pass_header`, built by nginx's own function.
///
/// # Safety
/// `cf` is the valid configuration of the merge step and `c` lives in its pool.
unsafe fn header_lists(
    cf: *mut ngx_conf_t,
    c: &mut ngx_http_upstream_conf_t,
    settings: &Upstream,
) -> Result<(), String> {
    let unset = usize::MAX as *mut ngx_array_t; // NGX_CONF_UNSET_PTR
                                                // SAFETY: pool allocations of plain C data, checked.
    unsafe {
        let pool = (*cf).pool;
        let prev = ngx_pcalloc(pool, std::mem::size_of::<ngx_http_upstream_conf_t>())
            .cast::<ngx_http_upstream_conf_t>();
        if prev.is_null() {
            return Err("out of memory".to_string());
        }
        // Inheritance is already settled (upstream.rs): nothing comes from `prev`.
        (*prev).hide_headers = unset;
        (*prev).pass_headers = unset;
        let list = |names: &HeaderList| match names {
            None => Ok(unset),
            Some(at) => str_array(pool, at.value.iter().map(Vec::as_slice)),
        };
        c.hide_headers = list(&settings.hide_headers)?;
        c.pass_headers = list(&settings.pass_headers)?;
        let defaults = str_array(pool, HIDE.iter().copied())?;
        // ngx_http_upstream_hide_headers_hash wants a ngx_str_t list ending with an empty one.
        let terminator = ngx_array_push(defaults);
        if terminator.is_null() {
            return Err("out of memory".to_string());
        }
        *terminator.cast::<ngx_str_t>() = ngx_str_t {
            len: 0,
            data: std::ptr::null_mut(),
        };
        let mut hash: ngx_hash_init_t = std::mem::zeroed();
        hash.max_size = 512;
        hash.bucket_size = 64;
        hash.name = c"wsgi_hide_headers_hash".as_ptr().cast_mut();
        let names = (*defaults).elts.cast::<ngx_str_t>();
        if ngx_http_upstream_hide_headers_hash(cf, c, prev, names, &mut hash) != NGX_OK as ngx_int_t
        {
            return Err("cannot build the hidden headers table".to_string());
        }
    }
    Ok(())
}

/// An `ngx_array_t` of `ngx_str_t` in `pool`, pointing at NUL-terminated copies of `names` in
/// the pool (nginx compares header names with `ngx_strcasecmp`, which reads to the NUL).
///
/// # Safety
/// `pool` is a live pool.
unsafe fn str_array<'a>(
    pool: *mut ngx::ffi::ngx_pool_t,
    names: impl Iterator<Item = &'a [u8]>,
) -> Result<*mut ngx_array_t, String> {
    let oom = || "out of memory".to_string();
    // SAFETY: pool allocations, checked.
    unsafe {
        let a = ngx_array_create(pool, 8, std::mem::size_of::<ngx_str_t>());
        if a.is_null() {
            return Err(oom());
        }
        for name in names {
            let data = ngx_pnalloc(pool, name.len() + 1).cast::<u8>();
            let slot = ngx_array_push(a).cast::<ngx_str_t>();
            if data.is_null() || slot.is_null() {
                return Err(oom());
            }
            std::ptr::copy_nonoverlapping(name.as_ptr(), data, name.len());
            *data.add(name.len()) = 0;
            *slot = ngx_str_t {
                len: name.len(),
                data,
            };
        }
        Ok(a)
    }
}

/// Content phase for a location with `wsgi_process_group`.
///
/// # Safety
/// `r` is the live request of the content phase.
pub unsafe fn forward(r: *mut ngx_http_request_t, group: usize) -> ngx_int_t {
    let internal = NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    // SAFETY: r is live (contract).
    let req = unsafe { &mut *r };
    let (Some(lc), Some(main)) = (WsgiModule::location_conf(req), WsgiModule::main_conf(req))
    else {
        return internal;
    };
    let (Some(conf), Some(g)) = (lc.upstream, main.groups.get(group)) else {
        return internal;
    };
    // A group whose socket file is missing is not running at all (it failed to start, or was
    // removed): say so and answer 503, rather than nginx's generic 502 for a failed connect.
    // A group whose workers are restarting keeps its socket, and requests queue in its backlog.
    if let Some(SocketSpec::Unix(path)) = &g.options.socket {
        if !socket_seen(group, path) {
            let msg = format!(
                "wsgi: RW-NG020 daemon process group \"{}\" cannot be reached: its socket {} does not exist \
                 (the group is not running; its start-up errors are in nginx's error output)",
                g.name,
                path.display()
            );
            // SAFETY: r is live.
            unsafe { log_request(r, NGX_LOG_ERR as _, &msg) };
            return NGX_HTTP_SERVICE_UNAVAILABLE as ngx_int_t;
        }
    }
    // A request whose vars cannot reach the daemon: 431 now, before its body is read.
    // SAFETY: r is live.
    if let Some(e) = unsafe { too_large(req) } {
        let msg = format!(
            "wsgi: RW-NG021 request too large for daemon process group \"{}\": {e}; answered 431",
            g.name
        );
        // SAFETY: r is live.
        unsafe { log_request(r, NGX_LOG_ERR as _, &msg) };
        // SAFETY: r is live, in its content phase, nothing sent yet.
        return unsafe { send_431(r) };
    }
    // SAFETY: r is live; ngx_http_upstream_create allocates r->upstream from the request pool.
    if unsafe { ngx_http_upstream_create(r) } != NGX_OK as ngx_int_t {
        return internal;
    }
    // SAFETY: r is live and has its upstream now; the conf was made by make_upstream_conf.
    if unsafe { set_up(req, conf.cast(), g) }.is_none() {
        return internal;
    }
    // SAFETY: r is live and has its upstream.
    if unsafe { crate::daemon_send::install(r) }.is_none() {
        return internal;
    }
    // SAFETY: r is live; nginx calls ngx_http_upstream_init once the body is read, holding the
    // reader's reference on the request for the upstream's lifetime.
    let rc = unsafe { ngx_http_read_client_request_body(r, Some(ngx_http_upstream_init)) };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return rc;
    }
    ngx::ffi::NGX_DONE as ngx_int_t
}

thread_local! {
    /// Per group: the event-loop time (`ngx_current_msec`) at which its socket file was last
    /// seen to exist. Read and written on the worker's event-loop thread only.
    static SOCKET_SEEN: std::cell::RefCell<Vec<ngx::ffi::ngx_msec_t>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether group `group`'s unix socket file exists. A file seen within the current
/// millisecond of nginx's clock (which moves once per event-loop turn) is not looked up again:
/// under load a worker forwards many requests per turn, and each lookup is a `statx` path walk
/// on top of the one `connect` does. A missing file is looked up on every request, so a group
/// that comes back is seen at once.
fn socket_seen(group: usize, path: &std::path::Path) -> bool {
    // SAFETY: nginx's clock, written only by this (the event-loop) thread in ngx_time_update.
    let now = unsafe { ngx::ffi::ngx_current_msec };
    let fresh =
        SOCKET_SEEN.with_borrow(|seen| seen.get(group).is_some_and(|&t| t == now && t != 0));
    if fresh {
        return true;
    }
    let exists = path.exists();
    SOCKET_SEEN.with_borrow_mut(|seen| {
        if seen.len() <= group {
            seen.resize(group + 1, 0);
        }
        seen[group] = if exists { now } else { 0 };
    });
    exists
}

/// `431 Request Header Fields Too Large`, sent here because nginx's own error responses have
/// no reason phrase for 431 (its table stops at 429, and an error status clears ours).
///
/// # Safety
/// `r` is live, in its content phase, and nothing has been sent for it.
unsafe fn send_431(r: *mut ngx_http_request_t) -> ngx_int_t {
    static STATUS: &[u8] = b"431 Request Header Fields Too Large";
    static BODY: &[u8] = b"431 Request Header Fields Too Large\n";
    // SAFETY: r is live (contract); the buffer and chain live in its pool, the data is static.
    unsafe {
        let req = &mut *r;
        if ngx::ffi::ngx_http_discard_request_body(r) != NGX_OK as ngx_int_t {
            req.set_keepalive(0);
        }
        let out = &mut req.headers_out;
        out.status = 431;
        out.status_line = ngx_str_t {
            len: STATUS.len(),
            data: STATUS.as_ptr().cast_mut(),
        };
        out.content_length_n = BODY.len() as _;
        out.content_type = ngx_str_t {
            len: 10,
            data: c"text/plain".as_ptr().cast_mut().cast(),
        };
        out.content_type_len = 10;
        let rc = ngx::ffi::ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || req.header_only() != 0 {
            return rc;
        }
        let b = ngx_pcalloc(req.pool, std::mem::size_of::<ngx_buf_t>()).cast::<ngx_buf_t>();
        let cl = ngx_alloc_chain_link(req.pool);
        if b.is_null() || cl.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        (*b).pos = BODY.as_ptr().cast_mut();
        (*b).last = (*b).pos.add(BODY.len());
        (*b).set_memory(1);
        (*b).set_last_buf(1);
        (*b).set_last_in_chain(1);
        (*cl).buf = b;
        (*cl).next = std::ptr::null_mut();
        ngx::ffi::ngx_http_output_filter(r, cl)
    }
}

/// Why the request's uwsgi vars cannot be sent to a daemon, if they cannot: the encoder's own
/// limits (a vars block of at most 65,535 bytes, a field of at most 65,535, at most
/// `uwsgi::MAX_VARS` vars), checked with the vars [`build_request`] sends ([`packet_vars`]) and
/// the longest possible CONTENT_LENGTH. Requests whose head is small enough that they cannot
/// reach a limit skip the encoding.
///
/// # Safety
/// `r` is live, in its content phase.
unsafe fn too_large(r: &mut ngx_http_request_t) -> Option<uwsgi::Error> {
    // Every var's value comes from the request head (the URI is in at most four of them: the
    // path twice, the query, the raw URI) or is short (addresses, ports, names, the secret);
    // each header adds "HTTP_" and the two length fields of its name and value. wsgi_param
    // values are the operator's: a location with many or long ones is always checked.
    // SAFETY: the header list of a live request.
    let headers = unsafe { list_len(&r.headers_in.headers.part) };
    let params = WsgiModule::location_conf(r)
        .and_then(|lc| lc.params.as_ref())
        .map_or(0, Vec::len);
    let head = usize::try_from(r.request_length).unwrap_or(usize::MAX);
    let bound = head
        .saturating_mul(4)
        .saturating_add(headers.saturating_mul(9))
        .saturating_add(8192);
    if bound <= uwsgi::MAX_VARS_BLOCK && headers + params < 256 && params < 16 {
        return None;
    }
    // SAFETY: r is live (contract).
    let vars = unsafe { packet_vars(r, u64::MAX) }.ok()?;
    let mut packet = Vec::new();
    uwsgi::encode_request(0, 0, vars.pairs(), &mut packet).err()
}

/// Elements in an `ngx_list_t` (from its first part).
///
/// # Safety
/// `part` is the first part of a live list.
unsafe fn list_len(mut part: *const ngx::ffi::ngx_list_part_t) -> usize {
    let mut n = 0;
    while !part.is_null() {
        // SAFETY: a live list's parts (contract).
        let p = unsafe { &*part };
        n += p.nelts;
        part = p.next;
    }
    n
}

/// The upstream's hooks, settings and address, as the uwsgi module's handler sets them up.
///
/// # Safety
/// `r` is live with a fresh `r->upstream`; `conf` is the location's upstream conf.
unsafe fn set_up(
    r: &mut ngx_http_request_t,
    conf: NonNull<ngx_http_upstream_conf_t>,
    g: &DaemonGroup,
) -> Option<()> {
    // SAFETY: contract.
    let u = unsafe { &mut *r.upstream };
    // SAFETY: the conf lives in the configuration pool, longer than any request.
    let c = unsafe { conf.as_ref() };
    u.conf = conf.as_ptr();
    u.output.tag = forward as *mut c_void;
    // "uwsgi://" as the uwsgi module: the log lines nginx writes for this upstream (timeouts,
    // refused connects) read the same as for uwsgi_pass.
    u.schema = ngx_str_t {
        len: 8,
        data: c"uwsgi://".as_ptr().cast_mut().cast(),
    };
    u.create_request = Some(create_request);
    u.reinit_request = Some(reinit_request);
    u.process_header = Some(process_header);
    u.abort_request = Some(abort_request);
    u.finalize_request = Some(finalize_request);
    u.set_buffering(u32::from(c.buffering != 0));
    // The buffered path (wsgi_buffering on, or X-Accel-Buffering: yes from the app) reads through
    // nginx's event pipe; the unbuffered one through its default filter.
    // SAFETY: request-pool allocation of a plain C struct, checked.
    let pipe = unsafe { ngx_pcalloc(r.pool, std::mem::size_of::<ngx_event_pipe_t>()) }
        .cast::<ngx_event_pipe_t>();
    // SAFETY: checked non-null; zeroed is the state nginx expects before it fills the rest.
    let p = unsafe { pipe.as_mut() }?;
    p.input_filter = Some(ngx_event_pipe_copy_input_filter);
    p.input_ctx = (r as *mut ngx_http_request_t).cast();
    u.pipe = pipe;
    u.input_filter_init = Some(input_filter_init);
    u.input_filter = Some(ngx_http_upstream_non_buffered_filter);
    u.input_filter_ctx = (r as *mut ngx_http_request_t).cast();
    // wsgi_request_buffering off: the body streams to the worker as it arrives. uwsgi states
    // CONTENT_LENGTH up front, so a chunked body is still read whole first (as uwsgi_pass does).
    if c.request_buffering == 0 && r.headers_in.chunked() == 0 {
        r.set_request_body_no_buffering(1);
    }
    // SAFETY: r is live; the address lives in the request pool.
    u.resolved = unsafe { resolved(r, g) }?;
    Some(())
}

/// `u->input_filter_init`: where the body ends, for the buffered path too (the unbuffered one
/// reads `u->length`, set by `process_header`).
///
/// # Safety
/// Called by nginx's upstream module with the request as `data`.
unsafe extern "C" fn input_filter_init(data: *mut c_void) -> ngx_int_t {
    // SAFETY: data is the request we registered as the filter context; it has an upstream.
    let u = unsafe { &mut *(*data.cast::<ngx_http_request_t>()).upstream };
    if !u.pipe.is_null() {
        // SAFETY: allocated with the upstream in set_up.
        unsafe { (*u.pipe).length = u.length };
    }
    NGX_OK as ngx_int_t
}

/// The group's address as nginx's upstream wants it.
///
/// # Safety
/// `r` is live.
unsafe fn resolved(
    r: &mut ngx_http_request_t,
    g: &DaemonGroup,
) -> Option<*mut ngx_http_upstream_resolved_t> {
    let pool = r.pool;
    // SAFETY: pool allocations of plain C structs, checked; the request pool outlives the upstream.
    unsafe {
        let res = ngx_pcalloc(pool, std::mem::size_of::<ngx_http_upstream_resolved_t>())
            .cast::<ngx_http_upstream_resolved_t>();
        if res.is_null() {
            return None;
        }
        // nginx insists on a port for a non-unix address ("no port in upstream").
        (*res).port = g.resolved.map_or(0, |a| a.port());
        let (sa, len, name): (*mut libc::sockaddr, usize, String) =
            match (&g.options.socket, g.resolved) {
                (Some(SocketSpec::Unix(path)), _) => {
                    let sun = ngx_pcalloc(pool, std::mem::size_of::<libc::sockaddr_un>())
                        .cast::<libc::sockaddr_un>();
                    if sun.is_null() {
                        return None;
                    }
                    (*sun).sun_family = libc::AF_UNIX as _;
                    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
                    if bytes.len() >= (*sun).sun_path.len() {
                        return None;
                    }
                    for (i, b) in bytes.iter().enumerate() {
                        (*sun).sun_path[i] = *b as c_char;
                    }
                    (
                        sun.cast(),
                        std::mem::size_of::<libc::sockaddr_un>(),
                        format!("unix:{}", path.display()),
                    )
                }
                (Some(SocketSpec::Tcp(_)), Some(addr)) => {
                    let (storage, len) = sockaddr_of(addr);
                    let p = ngx_pcalloc(pool, len).cast::<u8>();
                    if p.is_null() {
                        return None;
                    }
                    std::ptr::copy_nonoverlapping(
                        (&storage as *const libc::sockaddr_storage).cast::<u8>(),
                        p,
                        len,
                    );
                    (p.cast(), len, addr.to_string())
                }
                _ => return None,
            };
        let name = ngx_str_t::from_bytes(pool, name.as_bytes())?;
        (*res).sockaddr = sa.cast();
        (*res).socklen = len as _;
        (*res).naddrs = 1;
        (*res).host = name;
        (*res).name = name;
        Some(res)
    }
}

fn sockaddr_of(addr: std::net::SocketAddr) -> (libc::sockaddr_storage, usize) {
    // SAFETY: an all-zero sockaddr_storage is valid; we fill the family-specific prefix.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        std::net::SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut st as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as _;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            (st, std::mem::size_of::<libc::sockaddr_in>())
        }
        std::net::SocketAddr::V6(a) => {
            // SAFETY: as above for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut st as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as _;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            (st, std::mem::size_of::<libc::sockaddr_in6>())
        }
    }
}

/// `u->create_request`: the uwsgi packet, then the request body buffers.
///
/// # Safety
/// Called by nginx's upstream module with the live request whose upstream [`forward`] set up,
/// on the event-loop thread.
unsafe extern "C" fn create_request(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls this with the live request whose upstream we set up.
    let rc = std::panic::catch_unwind(|| unsafe { build_request(&mut *r) });
    match rc {
        Ok(Ok(())) => NGX_OK as ngx_int_t,
        Ok(Err(msg)) => {
            // SAFETY: r is live.
            unsafe { log_request(r, NGX_LOG_ERR as _, &msg) };
            NGX_ERROR as ngx_int_t
        }
        Err(_) => NGX_ERROR as ngx_int_t,
    }
}

/// # Safety
/// `r` is live and has an upstream.
unsafe fn build_request(r: &mut ngx_http_request_t) -> Result<(), String> {
    let body_len = if r.request_body_no_buffering() != 0 {
        // wsgi_request_buffering off: the body is still arriving; nginx has checked that it is
        // framed by Content-Length (never chunked here).
        u64::try_from(r.headers_in.content_length_n).unwrap_or(0)
    } else {
        // SAFETY: r is live; the body has been read (upstream init runs after the body reader).
        unsafe { body_length(r) }
    };
    // SAFETY: r is live.
    let vars = unsafe { packet_vars(r, body_len) }?;
    let mut packet = Vec::with_capacity(2048);
    uwsgi::encode_request(0, 0, vars.pairs(), &mut packet).map_err(|e| {
        format!("wsgi: RW-NG021 cannot encode the request for the daemon group: {e}")
    })?;
    // SAFETY: r->upstream is set (we are its create_request hook); allocations are checked.
    unsafe { chain_packet(r, &packet) }?;
    // SAFETY: r is live and daemon_send::install ran for it (forward).
    unsafe { crate::daemon_send::start(r, packet.len() as u64 + body_len) };
    Ok(())
}

/// The uwsgi vars of the request, as sent with CONTENT_LENGTH `body_len`: the CGI vars and
/// wsgi_param's, then the contract's.
///
/// # Safety
/// `r` is live.
unsafe fn packet_vars(r: &mut ngx_http_request_t, body_len: u64) -> Result<Vars, String> {
    let lc = WsgiModule::location_conf(r).ok_or("no location configuration")?;
    // SAFETY: r is live.
    let mut vars = unsafe { crate::request::cgi_vars(r, lc, body_len) };
    // The contract's vars (uwsgi::contract): when nginx received the request, for the group's
    // queue-timeout; the abort mark (daemon_send.rs); PATH_INFO in CGI's split form; and
    // the app's mount when SCRIPT_NAME is not it (a wsgi_param, a rewritten URI).
    let start_us = u64::try_from(r.start_sec).unwrap_or(0) * 1_000_000 + r.start_msec as u64 * 1000;
    for (k, v) in FrontEndVars::new(start_us, PathInfoForm::Split).pairs() {
        vars.add(k, v);
    }
    let mount = match &lc.mount {
        Some(Mount::Prefix(prefix)) => prefix.as_slice(),
        _ => b"",
    };
    if vars.get(b"SCRIPT_NAME") != Some(mount) {
        vars.add(contract::APP_MOUNT, mount);
    }
    // The group's secret: its workers refuse packets without it (uwsgi::contract::SECRET).
    let main = WsgiModule::main_conf(r).ok_or("no main configuration")?;
    if let Some(secret) = lc.group.and_then(|i| main.groups.get(i)?.secret.as_ref()) {
        vars.add(uwsgi::contract::SECRET, secret.as_bytes());
    }
    Ok(vars)
}

/// Sets `u->request_bufs` to the packet followed by the body's buffers.
///
/// # Safety
/// `r` is live with its upstream (its `create_request` hook is running).
unsafe fn chain_packet(r: &mut ngx_http_request_t, packet: &[u8]) -> Result<(), String> {
    // SAFETY: contract; allocations are checked.
    unsafe {
        let u = &mut *r.upstream;
        let pool = r.pool;
        let b = ngx::ffi::ngx_create_temp_buf(pool, packet.len());
        let head = ngx_alloc_chain_link(pool);
        if b.is_null() || head.is_null() {
            return Err("out of memory".to_string());
        }
        std::ptr::copy_nonoverlapping(packet.as_ptr(), (*b).last, packet.len());
        (*b).last = (*b).last.add(packet.len());
        (*head).buf = b;
        (*head).next = std::ptr::null_mut();
        // The body follows as nginx's own buffers (memory or temp file, sent with sendfile),
        // copied shallowly because the upstream may resend them on a retry. Unbuffered
        // (wsgi_request_buffering off), nginx appends the body itself as it arrives, the part
        // read so far included: the packet goes alone, as the uwsgi module sends it.
        let mut tail = head;
        let mut body = if r.request_body_no_buffering() != 0 {
            std::ptr::null_mut()
        } else {
            u.request_bufs
        };
        while !body.is_null() {
            let nb = ngx_palloc(pool, std::mem::size_of::<ngx_buf_t>()).cast::<ngx_buf_t>();
            let cl = ngx_alloc_chain_link(pool);
            if nb.is_null() || cl.is_null() {
                return Err("out of memory".to_string());
            }
            *nb = *(*body).buf;
            (*cl).buf = nb;
            (*cl).next = std::ptr::null_mut();
            (*tail).next = cl;
            tail = cl;
            body = (*body).next;
        }
        u.request_bufs = head;
    }
    Ok(())
}

/// Bytes in the read request body (memory and temp-file buffers).
///
/// # Safety
/// `r` is live and its body was read.
unsafe fn body_length(r: &ngx_http_request_t) -> u64 {
    if r.request_body.is_null() {
        return 0;
    }
    let mut n = 0u64;
    // SAFETY: the body chain is valid once read.
    let mut cl = unsafe { (*r.request_body).bufs };
    while !cl.is_null() {
        // SAFETY: as above.
        let b = unsafe { &*(*cl).buf };
        if b.in_file() != 0 {
            n += (b.file_last - b.file_pos).max(0) as u64;
        } else if !b.pos.is_null() {
            // SAFETY: pos..last delimit the buffer's content.
            n += unsafe { b.last.offset_from(b.pos) }.max(0) as u64;
        }
        // SAFETY: as above.
        cl = unsafe { (*cl).next };
    }
    n
}

/// `u->reinit_request`: before a retry on another connection.
///
/// # Safety
/// Called by nginx's upstream module with the live request whose upstream [`forward`] set up.
unsafe extern "C" fn reinit_request(r: *mut ngx_http_request_t) -> ngx_int_t {
    // process_header keeps no state between calls; the sending side starts over.
    // SAFETY: nginx passes the live request whose upstream forward set up.
    unsafe { crate::daemon_send::restart(r) };
    NGX_OK as ngx_int_t
}

/// `u->abort_request`: nothing of ours to release.
///
/// # Safety
/// Called by nginx's upstream module with a live request; it is not read.
unsafe extern "C" fn abort_request(_r: *mut ngx_http_request_t) {}

/// `u->finalize_request`: nothing of ours to release (the pool frees what we allocated).
///
/// # Safety
/// Called by nginx's upstream module with a live request; it is not read.
unsafe extern "C" fn finalize_request(_r: *mut ngx_http_request_t, _rc: ngx_int_t) {}

/// `u->process_header`: parse the worker's response head from `u->buffer`.
///
/// # Safety
/// Called by nginx's upstream module with the live request, whose `u->buffer` holds what the
/// worker has sent so far, on the event-loop thread.
unsafe extern "C" fn process_header(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls this with the live request and its upstream buffer.
    let rc = std::panic::catch_unwind(|| unsafe { parse_head(&mut *r) });
    rc.unwrap_or(NGX_ERROR as ngx_int_t)
}

/// # Safety
/// `r` is live with an upstream whose buffer holds what the worker sent so far.
unsafe fn parse_head(r: &mut ngx_http_request_t) -> ngx_int_t {
    let invalid = NGX_HTTP_UPSTREAM_INVALID_HEADER as ngx_int_t;
    // SAFETY: contract.
    let u = unsafe { &mut *r.upstream };
    // SAFETY: pos..last is the received part of the upstream buffer.
    let data = unsafe {
        std::slice::from_raw_parts(
            u.buffer.pos,
            u.buffer.last.offset_from(u.buffer.pos) as usize,
        )
    };
    let mut storage = [uwsgi::EMPTY_VAR; MAX_HEADERS];
    let mut head = uwsgi::ResponseHead::new(&mut storage);
    let used = match head.parse(data) {
        Ok(uwsgi::Status::Complete(n)) => n,
        Ok(uwsgi::Status::Partial) => {
            if u.buffer.last == u.buffer.end {
                // SAFETY: r is live.
                unsafe {
                    log_request(
                        r,
                        NGX_LOG_ERR as _,
                        "wsgi: RW-NG022 the daemon's response head is larger than its buffer",
                    )
                };
                return invalid;
            }
            return NGX_AGAIN as ngx_int_t;
        }
        Err(e) => {
            // SAFETY: r is live.
            unsafe {
                log_request(
                    r,
                    NGX_LOG_ERR as _,
                    &format!("wsgi: RW-NG022 invalid response head from the daemon group: {e}"),
                )
            };
            return invalid;
        }
    };
    let Some(umcf) = NgxHttpUpstreamModule::main_conf(r) else {
        return NGX_ERROR as ngx_int_t;
    };
    let pool = r.pool;
    let status_line = format!("{} {}", head.status, String::from_utf8_lossy(head.reason));
    // SAFETY: pool copy for the request's lifetime.
    let Some(line) = (unsafe { ngx_str_t::from_bytes(pool, status_line.as_bytes()) }) else {
        return NGX_ERROR as ngx_int_t;
    };
    u.headers_in.status_n = head.status as _;
    u.headers_in.status_line = line;
    for h in head.headers.iter() {
        // SAFETY: r is live; umcf is the upstream module's main conf.
        if unsafe { add_upstream_header(r, &umcf.headers_in_hash, h.key, h.value) }.is_none() {
            return NGX_ERROR as ngx_int_t;
        }
    }
    // SAFETY: `used` <= data.len(), so pos stays within the buffer.
    u.buffer.pos = unsafe { u.buffer.pos.add(used) };
    if head.status == 101 {
        // A WebSocket the worker accepted: nginx's upgrade tunnel carries the frames both ways
        // (what the stock uwsgi module does for a 101 when the client asked to upgrade). No
        // abort mark: after a 101 every byte belongs to the WebSocket.
        if !r.headers_in.upgrade.is_null() {
            u.set_upgrade(1);
        }
        u.set_keepalive(0);
        u.length = -1;
        return NGX_OK as ngx_int_t;
    }
    u.length = match head.status {
        // No body whatever the headers say (nginx's proxy module does the same).
        204 | 304 => 0,
        // A body shorter than its Content-Length then ends as an error, not as a whole response.
        _ if u.headers_in.content_length_n >= 0 => u.headers_in.content_length_n,
        // Otherwise only the worker's close ends the body (and the abort mark is due).
        _ => -1,
    };
    // SAFETY: r is live with its upstream connected (the head came through it).
    unsafe { crate::daemon_send::head_received(r, u.length == -1) };
    NGX_OK as ngx_int_t
}

/// Appends one header to `u->headers_in` (key, value and lowercase key NUL-terminated, as
/// nginx's own parsers leave them) and runs nginx's handler for the headers it tracks.
///
/// # Safety
/// `r` is live with an upstream.
unsafe fn add_upstream_header(
    r: &mut ngx_http_request_t,
    hash: &ngx::ffi::ngx_hash_t,
    key: &[u8],
    value: &[u8],
) -> Option<()> {
    // SAFETY: contract; allocations are checked.
    unsafe {
        let u = &mut *r.upstream;
        let h = ngx_list_push(&mut u.headers_in.headers).cast::<ngx_table_elt_t>();
        let mem = ngx_pnalloc(r.pool, key.len() + 1 + value.len() + 1 + key.len()).cast::<u8>();
        if h.is_null() || mem.is_null() {
            return None;
        }
        std::ptr::copy_nonoverlapping(key.as_ptr(), mem, key.len());
        *mem.add(key.len()) = 0;
        let v = mem.add(key.len() + 1);
        std::ptr::copy_nonoverlapping(value.as_ptr(), v, value.len());
        *v.add(value.len()) = 0;
        let low = v.add(value.len() + 1);
        for (i, c) in key.iter().enumerate() {
            *low.add(i) = c.to_ascii_lowercase();
        }
        (*h).key = ngx_str_t {
            len: key.len(),
            data: mem,
        };
        (*h).value = ngx_str_t {
            len: value.len(),
            data: v,
        };
        (*h).lowcase_key = low;
        (*h).hash = ngx_hash_key(low, key.len());
        let hh = ngx_hash_find(hash as *const _ as *mut _, (*h).hash, low, key.len())
            .cast::<ngx_http_upstream_header_t>();
        if let Some(hh) = hh.as_ref() {
            if let Some(handler) = hh.handler {
                if handler(r, h, hh.offset) != NGX_OK as ngx_int_t {
                    return None;
                }
            }
        }
    }
    Some(())
}
