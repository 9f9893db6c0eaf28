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

use std::collections::VecDeque;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use ngx::core::Pool;
use ngx::ffi::{
    add_to_ngx_table, ngx_add_timer, ngx_alloc_chain_link, ngx_buf_t, ngx_chain_t, ngx_del_timer,
    ngx_event_t, ngx_http_finalize_request, ngx_http_output_filter,
    ngx_http_read_client_request_body, ngx_http_request_t, ngx_http_run_posted_requests,
    ngx_http_send_header, ngx_http_send_special, ngx_int_t, ngx_list_push, ngx_pcalloc, ngx_str_t,
    ngx_table_elt_t, NGX_DONE, NGX_ERROR, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_LAST,
    NGX_HTTP_REQUEST_TIME_OUT, NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_ERR, NGX_LOG_INFO, NGX_OK,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, NgxHttpCoreModule};
use pyhost::Outcome;

use super::body::collect_body;
use super::exchange::{Exchange, HeadMsg, Msg};
use super::worker::{self, Job};
use crate::log::log_request;
use crate::request::cgi_vars;
use crate::WsgiModule;

/// How often the shutdown guard timer of an in-flight request fires (it only re-arms itself).
const GUARD_PERIOD_MS: usize = 60_000;

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
    // SAFETY: r is valid; body_ready is called (now or later) on the event loop with r alive,
    // and the reader takes a reference on the request (r->main->count) that we keep.
    let rc = unsafe { ngx_http_read_client_request_body(r, Some(body_ready)) };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return rc;
    }
    NGX_DONE as ngx_int_t
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
    // SAFETY: r is live and its body complete (contract).
    let body = unsafe { collect_body(req) }
        .map_err(|e| format!("wsgi: RW-NG011 cannot read the request body: {e}"))?;
    // SAFETY: as above.
    let vars = unsafe { cgi_vars(req, lc, body.len()) };
    if req.connection.is_null() {
        return Err("wsgi: RW-NG090 request without a connection".to_string());
    }

    let exchange = Exchange::new();
    // SAFETY: an all-zero ngx_event_t is its valid "unused" state (nginx callocs events).
    let guard: ngx_event_t = unsafe { std::mem::zeroed() };
    let stream = Stream {
        r,
        exchange: Arc::clone(&exchange),
        header_rc: None,
        discard: false,
        blocked: false,
        finished: false,
        inflight: VecDeque::new(),
        free: Vec::new(),
        guard,
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
    // SAFETY: stream is pool memory that no longer moves; the guard event is armed only now.
    unsafe {
        let s = &mut *stream;
        s.guard.handler = Some(guard_handler);
        s.guard.log = (*req.connection).log;
        s.guard.data = stream.cast();
        ngx_add_timer(&mut s.guard, GUARD_PERIOD_MS as _);
    }
    let metrics = crate::metrics::app_id(req, lc);
    worker.submit(Job {
        app,
        vars,
        body,
        exchange,
        metrics,
        queued: metrics.map(|_| std::time::Instant::now()),
    });
    Ok(())
}

/// Re-arms the shutdown guard (see [`Stream::guard`]).
///
/// # Safety
/// Called by nginx's timer with `ev` = the `guard` event of a live [`Stream`] (its `Drop`
/// deletes the timer before the Stream goes away).
unsafe extern "C" fn guard_handler(ev: *mut ngx_event_t) {
    // SAFETY: ev is the guard event inside a live Stream (Drop deletes the timer before the
    // Stream goes away).
    unsafe { ngx_add_timer(ev, GUARD_PERIOD_MS as _) };
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
        for msg in msgs {
            match msg {
                Msg::Head(head) => {
                    // SAFETY: s.r is live.
                    if let Err(rc) = unsafe { send_head(s, &head) } {
                        return finalize(s, rc);
                    }
                }
                Msg::Data(data) if !s.discard => chunks.push(Piece::Memory(data)),
                Msg::File { file, offset, len } if !s.discard => {
                    chunks.push(Piece::File { file, offset, len })
                }
                Msg::Data(_) | Msg::File { .. } => {}
                Msg::Done(o) => outcome = Some(o),
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
        // The response (or pyhost's own 500) is complete: the last buffer ends it.
        (Outcome::Complete | Outcome::Failed, Some(header_rc)) if s.discard => header_rc,
        // SAFETY: s.r is live.
        (Outcome::Complete | Outcome::Failed, Some(_)) => unsafe {
            ngx_http_send_special(s.r, NGX_HTTP_LAST as _)
        },
        // The head never went out (cannot happen with pyhost's contract): a plain 500.
        (Outcome::Complete | Outcome::Failed, None) => NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
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

/// Sets the status and headers from the app and sends the head.
///
/// # Safety
/// `s.r` is live.
unsafe fn send_head(s: &mut Stream, head: &HeadMsg) -> Result<(), ngx_int_t> {
    let internal = NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    // SAFETY: contract.
    let r = unsafe { &mut *s.r };
    let out = &mut r.headers_out;
    out.status = head.status as _;
    // SAFETY: the pool copies live as long as the request.
    out.status_line =
        unsafe { ngx_str_t::from_bytes(r.pool, &head.status_line) }.ok_or(internal)?;
    for (name, value) in &head.headers {
        // SAFETY: as above.
        unsafe { add_header(r, name, value) }.ok_or(internal)?;
    }
    // SAFETY: r is live; the header filters run now.
    let rc = unsafe { ngx_http_send_header(r) };
    if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t {
        return Err(rc);
    }
    s.header_rc = Some(rc);
    if r.header_only() != 0 {
        s.discard = true;
    }
    Ok(())
}

/// Adds one response header, mapping those nginx tracks separately.
///
/// # Safety
/// `r` is live.
unsafe fn add_header(r: &mut ngx_http_request_t, name: &[u8], value: &[u8]) -> Option<()> {
    let out = &mut r.headers_out;
    if name.eq_ignore_ascii_case(b"content-type") {
        // SAFETY: pool copy, lives as long as the request.
        out.content_type = unsafe { ngx_str_t::from_bytes(r.pool, value) }?;
        out.content_type_len = value.len();
        out.content_type_lowcase = std::ptr::null_mut();
        return Some(());
    }
    if name.eq_ignore_ascii_case(b"content-length") {
        // pyhost validated the header; nginx writes Content-Length from content_length_n.
        let n = std::str::from_utf8(value)
            .ok()?
            .trim()
            .parse::<i64>()
            .ok()?;
        out.content_length_n = n as _;
        return Some(());
    }
    // Hop-by-hop headers (PEP 3333 forbids them from apps): nginx owns the connection framing.
    for hop in [
        &b"connection"[..],
        b"keep-alive",
        b"transfer-encoding",
        b"upgrade",
    ] {
        if name.eq_ignore_ascii_case(hop) {
            return Some(());
        }
    }
    // SAFETY: headers is the live list of the request; push returns uninitialised room or null.
    let h = unsafe { ngx_list_push(&mut out.headers) }.cast::<ngx_table_elt_t>();
    if h.is_null() {
        return None;
    }
    // SAFETY: h points at a fresh element; the helper fills key, value, lowcase_key and hash.
    unsafe { add_to_ngx_table(h, r.pool, name, value) }?;
    // nginx adds its own Server/Date unless the pointer is set; gzip must not re-encode.
    if name.eq_ignore_ascii_case(b"server") {
        out.server = h;
    } else if name.eq_ignore_ascii_case(b"date") {
        out.date = h;
    } else if name.eq_ignore_ascii_case(b"content-encoding") {
        out.content_encoding = h;
    }
    Some(())
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
