//! Embedded mode, event-loop side: hand a request to a Python thread and stream its response.
//!
//! The flow for one request, all on nginx's event-loop thread except step 3:
//! 1. [`run`] (content phase) asks nginx's body reader for the whole body (memory or temp file,
//!    chunked bodies de-chunked) and returns `NGX_DONE`; the body reader's reference on the
//!    request (`r->main->count`) is ours from then on.
//! 2. [`body_ready`] builds the CGI vars, copies/dups the body ([`super::body`]), allocates the
//!    request's [`Stream`] in the request pool and queues a job for the Python threads.
//! 3. A Python thread runs the app; the response arrives as [`Msg`]s in the [`Exchange`], and an
//!    eventfd wakes the event loop ([`on_wakeup`]).
//! 4. [`pump`] sends the head and the chunks as they come (`ngx_http_output_filter`). When the
//!    client cannot take more, it stops taking from the exchange (whose bounded queue then blocks
//!    the Python thread) and waits for the connection's write event ([`write_handler`]).
//! 5. On `Done` the last buffer is sent and the request finalised, which releases our reference.
//!
//! If nginx ends the request first (client gone, timeout), the pool cleanup ([`Stream`]'s `Drop`)
//! closes the exchange: the Python thread's next write fails and pyhost calls `close()`.
//!
//! `wsgi_request_timeout`: once a Python thread runs the request, pyhost's watchdog enforces it
//! (an exception, and pyhost's own 504); a thread stuck in C code is reported here as
//! [`Msg::TimedOut`] ([`timed_out`]: 504 or a cut response, then the worker retires). A request
//! still waiting for a free thread at its timeout gets 504 from the guard timer
//! ([`guard_handler`]): it could not finish in time anyway.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use ngx::core::Pool;
use ngx::ffi::{
    add_to_ngx_table, ngx_add_timer, ngx_alloc_chain_link, ngx_buf_t, ngx_chain_t, ngx_del_timer,
    ngx_event_t, ngx_http_finalize_request, ngx_http_output_filter,
    ngx_http_read_client_request_body, ngx_http_request_t, ngx_http_run_posted_requests,
    ngx_http_send_special, ngx_int_t, ngx_list_push, ngx_msec_t, ngx_pcalloc, ngx_str_t,
    ngx_table_elt_t, NGX_AGAIN, NGX_DONE, NGX_ERROR, NGX_HTTP_FLUSH,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_LAST, NGX_HTTP_REQUEST_TIME_OUT,
    NGX_HTTP_SERVICE_UNAVAILABLE, NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_ERR, NGX_LOG_INFO, NGX_OK,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, NgxHttpCoreModule};
use pyhost::Outcome;

mod timeout;
use timeout::{arm_guard, timed_out};

use pyhost::asgi::Kind;

use super::asgi::AsgiTransport;
use super::body::collect_body;
use super::exchange::{Exchange, HeadMsg, Msg};
use super::head::send_head;
use super::worker::{self, Job};
use super::ws::WsSide;
use crate::conf::AppRef;
use crate::log::log_request;
use crate::request::{cgi_vars, request_header};
use crate::WsgiModule;
use websocket::handshake::{check as handshake, Handshake};

/// How often the shutdown guard timer of an in-flight request fires (it re-arms itself, and
/// checks the request's deadline while it waits for a Python thread).
const GUARD_PERIOD_MS: ngx_msec_t = 60_000;

/// The event-loop state of one request, allocated in the request pool (the pool's cleanup runs
/// `Drop`). Reached from the request's module ctx and from the exchange.
pub struct Stream {
    r: *mut ngx_http_request_t,
    exchange: Arc<Exchange>,
    /// Set once the head went out: the rc of `ngx_http_send_header`.
    header_rc: Option<ngx_int_t>,
    /// The body must not be sent (HEAD, 304/204, or the header filter said so): drop chunks.
    discard: bool,
    /// The client connection is full: wait for its write event before taking more messages.
    blocked: bool,
    /// We called `ngx_http_finalize_request`: nothing more may be done with this request.
    finished: bool,
    /// Chunks handed to nginx and not yet sent; the data must outlive nginx's use of the buffer.
    inflight: VecDeque<(Piece, *mut ngx_chain_t)>,
    /// Spent chain links + buffers, reused so the pool does not grow with the response size.
    free: Vec<*mut ngx_chain_t>,
    /// A non-cancelable timer: while it is armed a gracefully stopping worker waits for this
    /// request (nginx exits once only cancelable timers are left).
    guard: ngx_event_t,
    /// `wsgi_request_timeout`: when (`ngx_current_msec`) the request is due, if it has one.
    deadline: Option<ngx_msec_t>,
    /// A WebSocket handshake: the `Sec-WebSocket-Accept` value for the app's 101.
    ws_accept: Option<String>,
    /// An upgraded WebSocket connection's reading side.
    ws: Option<Box<WsSide>>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        // The request is being freed: nothing of it may be used any more.
        self.exchange.close();
        if self.guard.timer_set() != 0 {
            // SAFETY: guard was armed by us with ngx_add_timer and is still in the timer tree.
            unsafe { ngx_del_timer(&mut self.guard) };
        }
    }
}

/// Content phase for an embedded location: read the body, then [`body_ready`].
///
/// # Safety
/// `r` is the request nginx passed to the content handler.
pub unsafe fn run(r: *mut ngx_http_request_t) -> ngx_int_t {
    let Some(worker) = worker::get() else {
        // init_process did not start embedded mode here (it logged why).
        // SAFETY: r is valid (contract).
        unsafe {
            log_request(
                r,
                NGX_LOG_ERR as _,
                "wsgi: RW-NG010 embedded mode is not running in this worker",
            )
        };
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    if let Some(err) = &worker.python_error {
        // SAFETY: r is valid (contract).
        unsafe { log_request(r, NGX_LOG_ERR as _, err) };
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    // An import (or Python's start) that killed a worker lately is not tried again yet: 503
    // for that app only (the worker logged why, imports.rs).
    // SAFETY: r is valid (contract).
    let app = WsgiModule::location_conf(unsafe { &*r }).and_then(|lc| match lc.app {
        Some(AppRef::Wsgi(i)) => Some(i),
        _ => None,
    });
    let held = worker.start_held().or_else(|| {
        let app = app?;
        let wait = worker.unavailable(app)?;
        worker.tell_held_back(app, wait);
        Some(wait)
    });
    if let Some(wait) = held {
        // SAFETY: r is valid (contract).
        return unsafe { unavailable(r, wait) };
    }
    // SAFETY: r is valid; body_ready is called (now or later) on the event loop with r alive,
    // and the reader takes a reference on the request (r->main->count) that we keep.
    let rc = unsafe { ngx_http_read_client_request_body(r, Some(body_ready)) };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return rc;
    }
    NGX_DONE as ngx_int_t
}

/// `503 Service Unavailable` with `Retry-After` (whole seconds, at least 1).
///
/// # Safety
/// `r` is a live request whose response has not started.
unsafe fn unavailable(r: *mut ngx_http_request_t, wait: std::time::Duration) -> ngx_int_t {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let value = secs.max(1).to_string();
    // SAFETY: r is live (contract); its headers list and pool are valid.
    unsafe {
        let out = &mut (*r).headers_out;
        let h = ngx_list_push(&mut out.headers).cast::<ngx_table_elt_t>();
        if !h.is_null() {
            let _ = add_to_ngx_table(h, (*r).pool, b"Retry-After", value.as_bytes());
        }
    }
    NGX_HTTP_SERVICE_UNAVAILABLE as ngx_int_t
}

/// The body reader's completion handler.
///
/// # Safety
/// Called by nginx (`ngx_http_read_client_request_body`) with the live request whose body has
/// been read, on the event-loop thread; the body reader's reference on it is ours.
unsafe extern "C" fn body_ready(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls this with the live request whose body was read.
    let result = catch_unwind(AssertUnwindSafe(|| unsafe { start_job(r) }));
    let rc = match result {
        Ok(Ok(())) => return,
        Ok(Err(msg)) => {
            // SAFETY: r is live (we have not finalised it).
            unsafe { log_request(r, NGX_LOG_ERR as _, &msg) };
            NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t
        }
        Err(_) => NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
    };
    // SAFETY: r is live; this releases the body reader's reference.
    unsafe { ngx_http_finalize_request(r, rc) };
}

/// Builds the job for a Python thread and the request's [`Stream`].
///
/// # Safety
/// `r` is live, on the event-loop thread, and its body has been read.
unsafe fn start_job(r: *mut ngx_http_request_t) -> Result<(), String> {
    let worker = worker::get().ok_or("wsgi: RW-NG010 embedded mode is not running")?;
    // SAFETY: r is live (contract).
    let req = unsafe { &mut *r };
    let lc = WsgiModule::location_conf(req).ok_or("wsgi: RW-NG090 no location configuration")?;
    let app = lc
        .app
        .ok_or("wsgi: RW-NG090 location has no embedded app")?;
    if matches!(app, AppRef::Asgi(_)) && worker.asgi.is_none() {
        return Err("wsgi: RW-NG007 the asyncio loop is not running in this worker".to_string());
    }
    let handshake = match app {
        // SAFETY: r is live (contract).
        AppRef::Asgi(_) => unsafe { websocket_handshake(req) },
        AppRef::Wsgi(_) => Handshake::No,
    };
    if let Handshake::Bad(status) = handshake {
        // SAFETY: r is live; this releases the body reader's reference.
        unsafe { ngx_http_finalize_request(r, status as ngx_int_t) };
        return Ok(());
    }
    // SAFETY: r is live and its body complete (contract).
    let body = unsafe { collect_body(req) }
        .map_err(|e| format!("wsgi: RW-NG011 cannot read the request body: {e}"))?;
    // SAFETY: as above.
    let vars = unsafe { cgi_vars(req, lc, body.len()) };
    if req.connection.is_null() {
        return Err("wsgi: RW-NG090 request without a connection".to_string());
    }

    let exchange = Exchange::new();
    let (timeout, deadline) = timeout::limits(&app, lc);
    // SAFETY: r is live (contract).
    let stream = unsafe { attach_stream(req, &exchange, deadline) }?;
    let metrics = crate::metrics::app_id(req, lc);
    match app {
        AppRef::Wsgi(app) => worker.submit(Job {
            app,
            vars,
            body,
            exchange,
            metrics,
            queued: metrics.map(|_| std::time::Instant::now()),
            timeout,
        }),
        AppRef::Asgi(app) => {
            let host = worker
                .asgi
                .as_ref()
                .ok_or("wsgi: RW-NG007 the asyncio loop is not running in this worker")?;
            // The handle goes into the exchange before the loop can see the request, so a
            // pause or a disconnect always finds it.
            let handle = host.handle();
            exchange.set_asgi(handle.clone());
            // Watch the client while the app runs: a close becomes http.disconnect.
            req.read_event_handler = Some(read_handler);
            let kind = match handshake {
                Handshake::Yes(accept) => {
                    // SAFETY: stream is our pool allocation, live while the request is.
                    unsafe {
                        (*stream).ws_accept = Some(accept);
                        (*stream).ws = Some(Box::new(WsSide::new(handle.clone())));
                    }
                    Kind::WebSocket
                }
                Handshake::No | Handshake::Bad(_) => Kind::Http,
            };
            let timeout = timeout.map(|after| worker.asgi_timeout(after, &exchange));
            let transport = AsgiTransport::new(exchange, &worker.notifier, body);
            host.submit(
                &handle,
                app,
                kind,
                Box::new(vars),
                Box::new(transport),
                timeout,
            );
        }
    }
    Ok(())
}

/// Allocates the request's [`Stream`] in its pool, links it to the exchange and to `r->ctx`,
/// takes over the write event and arms the shutdown guard.
///
/// # Safety
/// `req` is a live request whose body is complete, on the event-loop thread.
unsafe fn attach_stream(
    req: &mut ngx_http_request_t,
    exchange: &Arc<Exchange>,
    deadline: Option<ngx_msec_t>,
) -> Result<*mut Stream, String> {
    // SAFETY: an all-zero ngx_event_t is its valid "unused" state (nginx callocs events).
    let guard: ngx_event_t = unsafe { std::mem::zeroed() };
    let stream = Stream {
        r: req,
        exchange: Arc::clone(exchange),
        header_rc: None,
        discard: false,
        blocked: false,
        finished: false,
        inflight: VecDeque::new(),
        free: Vec::new(),
        guard,
        deadline,
        ws_accept: None,
        ws: None,
    };
    // SAFETY: the request pool lives until the request is freed; `allocate` registers a cleanup
    // that drops the Stream then, after which nginx no longer calls our handlers for r.
    let stream = unsafe { Pool::from_ngx_pool(req.pool) }.allocate(stream);
    if stream.is_null() {
        return Err("wsgi: RW-NG091 out of memory".to_string());
    }
    exchange.set_stream(stream.cast());
    // SAFETY: r->ctx has one slot per http module; ours is at our ctx_index.
    unsafe { *req.ctx.add(WsgiModule::module().ctx_index) = stream.cast::<c_void>() };
    req.write_event_handler = Some(write_handler);
    // SAFETY: stream is pool memory that no longer moves; the connection of a live request is
    // valid (start_job checked it is not null).
    unsafe { arm_guard(stream, (*req.connection).log) };
    Ok(stream)
}

/// The client connection's read event while an ASGI app runs (`r->read_event_handler`): a
/// client that closes its connection ends the request (499), which tells the app through
/// `http.disconnect`. nginx's upstream module watches its clients the same way
/// (`ngx_http_upstream_check_broken_connection`); without it nginx would notice only at the next
/// write, and an app waiting for a disconnect (a long poll, an event stream) never would.
///
/// # Safety
/// Called by nginx with a live request, on the event-loop thread.
unsafe extern "C" fn read_handler(r: *mut ngx_http_request_t) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: nginx calls the read handler with a live request.
        let req = unsafe { &mut *r };
        // SAFETY: req is live.
        let Some(stream) = (unsafe { ctx(req) }) else {
            return;
        };
        // HTTP/2 streams share the connection: its read events are not this request's.
        if req.http_version >= ngx::ffi::NGX_HTTP_VERSION_20 as usize {
            return;
        }
        // SAFETY: the connection of a live request is valid.
        let fd = unsafe { (*req.connection).fd };
        let mut byte = 0u8;
        // SAFETY: peeks at most one byte into a live local; never consumes input.
        let n = unsafe { libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK) };
        let err = std::io::Error::last_os_error().raw_os_error();
        let closed = n == 0 || (n < 0 && err != Some(libc::EAGAIN) && err != Some(libc::EINTR));
        if closed {
            // SAFETY: r is live.
            unsafe {
                log_request(
                    r,
                    NGX_LOG_INFO as _,
                    "client prematurely closed connection while the ASGI app ran",
                );
                (*req.connection).set_error(1);
            }
            finalize(
                stream,
                ngx::ffi::NGX_HTTP_CLIENT_CLOSED_REQUEST as ngx_int_t,
            );
        }
    }));
}

/// The eventfd's read handler: service every request a Python thread has news for.
///
/// # Safety
/// Called by nginx's event loop.
pub unsafe extern "C" fn on_wakeup(_ev: *mut ngx_event_t) {
    let Some(worker) = worker::get() else { return };
    for exchange in worker.notifier.take() {
        let stream = exchange.stream().cast::<Stream>();
        if stream.is_null() {
            continue; // nginx already freed this request
        }
        // SAFETY: a non-null stream pointer means the request is alive (the pool cleanup nulls
        // it, on this same thread), so stream and its request are valid here.
        let c = unsafe { (*(*stream).r).connection };
        // SAFETY: as above.
        let _ = catch_unwind(AssertUnwindSafe(|| unsafe { pump(&mut *stream) }));
        // Requests posted by finalisation (e.g. the terminate handler) run now, as nginx's own
        // handlers do; the connection struct outlives the request (c->destroyed is checked).
        // SAFETY: c belongs to nginx's connection array, valid for the worker's lifetime.
        unsafe { ngx_http_run_posted_requests(c) };
    }
    let _ = catch_unwind(worker::retire_if_asked);
}

/// The client connection's write event while we stream (`r->write_event_handler`).
///
/// # Safety
/// Called by nginx with a live request (`r->write_event_handler`), on the event-loop thread.
unsafe extern "C" fn write_handler(r: *mut ngx_http_request_t) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: nginx calls the write handler with a live request.
        let req = unsafe { &mut *r };
        // SAFETY: req is live.
        let Some(stream) = (unsafe { ctx(req) }) else {
            return;
        };
        // SAFETY: the connection of a live request is valid.
        let wev = unsafe { (*req.connection).write };
        // SAFETY: as above.
        if unsafe { (*wev).timedout() } != 0 {
            // SAFETY: as above.
            unsafe {
                log_request(r, NGX_LOG_INFO as _, "client timed out");
                (*req.connection).set_timedout(1);
            }
            finalize(stream, NGX_HTTP_REQUEST_TIME_OUT as ngx_int_t);
            return;
        }
        pump(stream);
    }));
}

/// Is this request a WebSocket handshake (ASGI locations only)?
///
/// # Safety
/// `r` is live.
unsafe fn websocket_handshake(r: &ngx_http_request_t) -> Handshake {
    let value = |h: *mut ngx_table_elt_t| {
        // SAFETY: a non-null header pointer of a live request points into its pool.
        unsafe { h.as_ref() }.map(|h| h.value.as_bytes())
    };
    let upgrade = value(r.headers_in.upgrade);
    if upgrade.is_none() {
        return Handshake::No;
    }
    handshake(
        r.method == ngx::ffi::NGX_HTTP_GET as usize,
        r.http_version == ngx::ffi::NGX_HTTP_VERSION_11 as usize,
        upgrade,
        // nginx 1.22 keeps only the Connection type, not a pointer to the header.
        // SAFETY: r is live (contract).
        unsafe { request_header(r, b"connection") },
        // SAFETY: r is live (contract).
        unsafe { request_header(r, b"sec-websocket-version") },
        // SAFETY: as above.
        unsafe { request_header(r, b"sec-websocket-key") },
    )
}

/// Sends the response head; a 101 (the app's `websocket.accept`) gets the handshake's headers
/// and turns the connection into a WebSocket.
fn start_response(s: &mut Stream, mut head: HeadMsg) -> Result<(), ngx_int_t> {
    let upgrade = head.status == 101;
    if upgrade {
        let Some(accept) = s.ws_accept.take() else {
            return Err(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
        };
        head.headers
            .push((b"Upgrade".to_vec(), b"websocket".to_vec()));
        head.headers
            .push((b"Sec-WebSocket-Accept".to_vec(), accept.into_bytes()));
    } else {
        // A denied handshake is a plain response: no frames will follow.
        s.ws = None;
    }
    // SAFETY: s.r is live while s exists.
    let rc = unsafe { send_head(s.r, &head) }?;
    s.header_rc = Some(rc);
    // SAFETY: as above.
    let r = unsafe { &mut *s.r };
    if r.header_only() != 0 && !upgrade {
        s.discard = true;
    }
    if upgrade {
        // As nginx's upstream module does for its upgrade tunnel: no keep-alive after it, no
        // Nagle delay on the frames, and the client's bytes are ours from now on.
        r.set_keepalive(0);
        // SAFETY: the connection of a live request.
        unsafe { ngx::ffi::ngx_tcp_nodelay(r.connection) };
        r.read_event_handler = Some(ws_read_handler);
        // The head alone is the whole answer: flush it now (nginx holds a header without body).
        // SAFETY: r is live; after_output looks at what nginx still holds.
        match unsafe { after_output(s, ngx_http_send_special(s.r, NGX_HTTP_FLUSH as _)) } {
            Sent::Error => return Err(NGX_ERROR as ngx_int_t),
            Sent::Blocked => s.blocked = true,
            Sent::Done => {}
        }
        ws_read(s);
    }
    Ok(())
}

/// The client's side of an upgraded connection (`r->read_event_handler`).
///
/// # Safety
/// Called by nginx with a live request, on the event-loop thread.
unsafe extern "C" fn ws_read_handler(r: *mut ngx_http_request_t) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: nginx calls the read handler with a live request.
        if let Some(s) = unsafe { ctx(&*r) } {
            ws_read(s);
        }
    }));
}

/// Reads what the client sent: frames decoded (ws.rs), messages to the app, pongs and the
/// close reply written back. Stops while the app has a backlog of unreceived messages
/// (`Msg::Resume` calls again) and after the client's close or EOF.
fn ws_read(s: &mut Stream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let Some(ws) = s.ws.as_mut() else { return };
        if s.finished || ws.session.done_reading || ws.handle.ws_backlogged() {
            return;
        }
        // SAFETY: s.r is live while s exists.
        let (r, c) = unsafe { (&mut *s.r, &mut *(*s.r).connection) };
        let reaction = match early_bytes(r) {
            // Frames the client sent right behind its handshake, already read by nginx.
            Some(bytes) => ws.received(&bytes),
            None => {
                let Some(recv) = c.recv else { return };
                // SAFETY: c is the request's live connection; buf is a writable local.
                let n = unsafe { recv(c, buf.as_mut_ptr(), buf.len()) };
                if n == NGX_AGAIN as isize {
                    // SAFETY: the connection's read event, re-armed as nginx's handlers do.
                    unsafe { ngx::ffi::ngx_handle_read_event(c.read, 0) };
                    return;
                }
                if n <= 0 {
                    // EOF or an error without a close frame: the app hears 1006.
                    ws.eof();
                    return;
                }
                ws.received(&buf[..n as usize])
            }
        };
        if !reaction.replies.is_empty() {
            // SAFETY: s.r is live and the 101 head was sent.
            match unsafe { send_chunks(s, vec![Piece::Memory(reaction.replies)]) } {
                Sent::Error => return finalize(s, NGX_ERROR as ngx_int_t),
                Sent::Blocked => {
                    s.blocked = true;
                    // SAFETY: s.r is live.
                    unsafe { wait_for_client(s) };
                }
                Sent::Done => {}
            }
        }
        if reaction.end {
            return;
        }
    }
}

/// Bytes nginx read past the handshake request (the client's first frames), taken once.
fn early_bytes(r: &mut ngx_http_request_t) -> Option<Vec<u8>> {
    // SAFETY: header_in is the request's header buffer (or null); pos..last is unread data.
    let b = unsafe { r.header_in.as_mut() }?;
    if b.pos.is_null() || b.pos >= b.last {
        return None;
    }
    // SAFETY: pos..last lies inside the buffer (nginx's invariant for a buffer's content).
    let bytes =
        unsafe { std::slice::from_raw_parts(b.pos, b.last.offset_from(b.pos) as usize) }.to_vec();
    b.pos = b.last;
    Some(bytes)
}

/// Our Stream from the request's module ctx.
///
/// # Safety
/// `r` is live.
unsafe fn ctx(r: &ngx_http_request_t) -> Option<&'static mut Stream> {
    // SAFETY: the ctx slot of this module holds our Stream (or null before start_job).
    unsafe {
        let p = *r.ctx.add(WsgiModule::module().ctx_index);
        p.cast::<Stream>().as_mut()
    }
}

/// Moves the response forward as far as the client allows.
fn pump(s: &mut Stream) {
    loop {
        if s.finished {
            return;
        }
        if s.blocked {
            // SAFETY: s.r is live while s exists (the pool owns s).
            match unsafe { flush(s) } {
                Sent::Error => return finalize(s, NGX_ERROR as ngx_int_t),
                Sent::Blocked => {
                    // Re-arm every time: the write filter may have left the event "ready"
                    // (send limit reached) and then hit EAGAIN, and an edge-triggered event
                    // that was never added would not fire.
                    // SAFETY: s.r is live.
                    unsafe { wait_for_client(s) };
                    return;
                }
                Sent::Done => {
                    s.blocked = false;
                    // SAFETY: s.r is live; the send timeout only applies while we wait for
                    // the client, not while the app computes.
                    unsafe {
                        let wev = (*(*s.r).connection).write;
                        if (*wev).timer_set() != 0 {
                            ngx_del_timer(wev);
                        }
                    }
                }
            }
        }
        let msgs = s.exchange.take();
        if msgs.is_empty() {
            return;
        }
        let mut chunks = Vec::new();
        let mut outcome = None;
        let mut read_again = false;
        for msg in msgs {
            match msg {
                Msg::Head(head) => {
                    if let Err(rc) = start_response(s, head) {
                        return finalize(s, rc);
                    }
                }
                // Nothing follows a close frame on a WebSocket.
                Msg::Data(_) if s.ws.as_ref().is_some_and(|w| w.session.close_sent) => {}
                Msg::Data(data) if !s.discard => chunks.push(Piece::Memory(data)),
                Msg::File { file, offset, len } if !s.discard => {
                    chunks.push(Piece::File { file, offset, len })
                }
                Msg::Data(_) | Msg::File { .. } => {}
                Msg::WsClose(frame) => {
                    if let Some(ws) = s.ws.as_mut().filter(|w| !w.session.close_sent) {
                        ws.session.close_sent = true;
                        chunks.push(Piece::Memory(frame));
                    }
                }
                Msg::Resume => read_again = true,
                Msg::Done(o) => outcome = Some(o),
                Msg::TimedOut => return timed_out(s),
            }
        }
        if !chunks.is_empty() {
            // SAFETY: s.r is live.
            match unsafe { send_chunks(s, chunks) } {
                Sent::Error => return finalize(s, NGX_ERROR as ngx_int_t),
                Sent::Blocked => s.blocked = true,
                Sent::Done => {}
            }
        }
        if let Some(outcome) = outcome {
            return finish(s, outcome);
        }
        if read_again {
            ws_read(s);
            if s.finished {
                return;
            }
        }
        if s.blocked {
            // SAFETY: s.r is live.
            unsafe { wait_for_client(s) };
            return;
        }
    }
}

/// The app is done: end the response (nginx flushes what is still buffered, then finalises).
fn finish(s: &mut Stream, outcome: Outcome) {
    let rc = match (outcome, s.header_rc) {
        // The response (or pyhost's own 500 or 504) is complete: the last buffer ends it.
        (Outcome::Complete | Outcome::Failed | Outcome::TimedOut, Some(header_rc)) if s.discard => {
            header_rc
        }
        // SAFETY: s.r is live.
        (Outcome::Complete | Outcome::Failed | Outcome::TimedOut, Some(_)) => unsafe {
            ngx_http_send_special(s.r, NGX_HTTP_LAST as _)
        },
        // The head never went out (cannot happen with pyhost's contract): a plain 500.
        (Outcome::Complete | Outcome::Failed | Outcome::TimedOut, None) => {
            NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t
        }
        // Cut response (or the client already went away): close the connection so the client
        // sees it is incomplete.
        (Outcome::Aborted | Outcome::ClientGone, _) => NGX_ERROR as ngx_int_t,
    };
    finalize(s, rc);
}

/// Finalises the request once. `s` must not be used afterwards (the pool may be gone).
fn finalize(s: &mut Stream, rc: ngx_int_t) {
    if s.finished {
        return;
    }
    s.finished = true;
    let r = s.r;
    // SAFETY: r is live until this call; we release the body reader's reference with it.
    unsafe { ngx_http_finalize_request(r, rc) };
}

enum Sent {
    Done,
    Blocked,
    Error,
}

/// One piece of body handed to nginx: bytes we own, or a file region (sendfile).
enum Piece {
    Memory(Vec<u8>),
    File {
        file: std::fs::File,
        offset: u64,
        len: u64,
    },
}

/// Hands `chunks` to nginx as one chain, flushed.
///
/// # Safety
/// `s.r` is live and the head was sent.
unsafe fn send_chunks(s: &mut Stream, chunks: Vec<Piece>) -> Sent {
    // SAFETY: contract.
    let (pool, log) = unsafe { ((*s.r).pool, (*(*s.r).connection).log) };
    let mut head: *mut ngx_chain_t = std::ptr::null_mut();
    let mut tail: *mut *mut ngx_chain_t = &mut head;
    let count = chunks.len();
    for (i, piece) in chunks.into_iter().enumerate() {
        let link = match s.free.pop() {
            Some(l) => l,
            // SAFETY: pool is live; both allocations are checked.
            None => unsafe {
                let l = ngx_alloc_chain_link(pool);
                if l.is_null() {
                    return Sent::Error;
                }
                (*l).buf = ngx_pcalloc(pool, std::mem::size_of::<ngx_buf_t>()).cast();
                if (*l).buf.is_null() {
                    return Sent::Error;
                }
                l
            },
        };
        // SAFETY: link and its buf are ours (fresh or spent); a Vec's heap data and a File's
        // descriptor do not move when they are moved into `inflight`, where they stay until
        // nginx has consumed the buffer.
        unsafe {
            let b = &mut *(*link).buf;
            *b = std::mem::zeroed();
            match &piece {
                Piece::Memory(data) => {
                    let start = data.as_ptr().cast_mut();
                    b.start = start;
                    b.pos = start;
                    b.last = start.add(data.len());
                    b.end = b.last;
                    b.set_memory(1);
                }
                Piece::File { file, offset, len } => {
                    let f = ngx_pcalloc(pool, std::mem::size_of::<ngx::ffi::ngx_file_t>())
                        .cast::<ngx::ffi::ngx_file_t>();
                    if f.is_null() {
                        return Sent::Error;
                    }
                    (*f).fd = std::os::fd::AsRawFd::as_raw_fd(file);
                    (*f).name = ngx_str_t {
                        len: 17,
                        data: c"wsgi.file_wrapper".as_ptr().cast_mut().cast(),
                    };
                    (*f).log = log;
                    b.file = f;
                    b.file_pos = *offset as _;
                    b.file_last = (*offset + *len) as _;
                    b.set_in_file(1);
                }
            }
            b.tag = write_handler as *mut c_void;
            // Flush at the end of each batch: streamed output goes out as it is produced
            // instead of waiting for postpone_output bytes.
            b.set_flush((i + 1 == count) as u32);
            (*link).next = std::ptr::null_mut();
            *tail = link;
            tail = &mut (*link).next;
        }
        s.inflight.push_back((piece, link));
    }
    // SAFETY: s.r is live; head is a well-formed chain of our buffers.
    let rc = unsafe { ngx_http_output_filter(s.r, head) };
    // SAFETY: as above.
    unsafe { after_output(s, rc) }
}

/// Retries sending what nginx still holds.
///
/// # Safety
/// `s.r` is live.
unsafe fn flush(s: &mut Stream) -> Sent {
    // SAFETY: contract; a null chain means "continue sending what is buffered".
    let rc = unsafe { ngx_http_output_filter(s.r, std::ptr::null_mut()) };
    // SAFETY: as above.
    unsafe { after_output(s, rc) }
}

/// Frees the chunks nginx has fully sent and tells whether the connection is still backed up.
///
/// # Safety
/// `s.r` is live.
unsafe fn after_output(s: &mut Stream, rc: ngx_int_t) -> Sent {
    while let Some((_, link)) = s.inflight.front() {
        // SAFETY: our links and buffers live in the request pool.
        let b = unsafe { &*(**link).buf };
        let left = if b.in_file() != 0 {
            b.file_pos != b.file_last
        } else {
            b.pos != b.last
        };
        if left {
            break;
        }
        if let Some((_, link)) = s.inflight.pop_front() {
            s.free.push(link);
        }
    }
    if rc == NGX_ERROR as ngx_int_t {
        return Sent::Error;
    }
    // SAFETY: s.r and its connection are live.
    let backed_up = unsafe {
        let r = &*s.r;
        r.buffered() != 0
            || !r.postponed.is_null()
            || (std::ptr::eq(r, r.main) && (*r.connection).buffered() != 0)
    };
    if backed_up {
        Sent::Blocked
    } else {
        Sent::Done
    }
}

/// Arms the connection's write event (and the send timeout), as nginx's own writer does.
///
/// # Safety
/// `s.r` is live.
unsafe fn wait_for_client(s: &mut Stream) {
    // SAFETY: contract.
    unsafe {
        let r = &mut *s.r;
        let c = r.connection;
        let wev = (*c).write;
        let Some(clcf) = NgxHttpCoreModule::location_conf(&*r.main) else {
            return;
        };
        if (*wev).delayed() == 0 {
            ngx_add_timer(wev, clcf.send_timeout);
        }
        if ngx::ffi::ngx_handle_write_event(wev, clcf.send_lowat) != NGX_OK as ngx_int_t {
            finalize(s, NGX_ERROR as ngx_int_t);
        }
    }
}
