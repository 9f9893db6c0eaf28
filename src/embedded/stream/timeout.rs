//! The shutdown guard timer of an in-flight request, and `wsgi_request_timeout` on the event
//! loop's side (the other half is pyhost's watchdog, which interrupts the Python thread): the
//! request's deadline while it waits for a thread, kept by the guard, and the answer for a
//! request whose thread is stuck in C code ([`Msg::TimedOut`](super::Msg::TimedOut)).

use std::panic::{catch_unwind, AssertUnwindSafe};

use ngx::ffi::{
    ngx_add_timer, ngx_event_t, ngx_http_run_posted_requests, ngx_int_t, ngx_log_t, ngx_msec_t,
    NGX_ERROR, NGX_HTTP_GATEWAY_TIME_OUT, NGX_LOG_ERR,
};

use std::time::Duration;

use super::{finalize, Stream, GUARD_PERIOD_MS};
use crate::conf::{AppRef, LocConf};
use crate::log::log_request;

/// nginx's cached clock (ms), on the event-loop thread.
fn now() -> ngx_msec_t {
    // SAFETY: a plain read of nginx's clock global, on the event-loop thread that updates it.
    unsafe { ngx::ffi::ngx_current_msec }
}

/// The location's request timeout for this app (for pyhost's watchdog, or its ASGI loop), and
/// the deadline it sets on the event loop for a WSGI request still waiting for a thread. An ASGI
/// request never waits for a thread: the loop takes it at once, and pyhost times it out
/// (cancelling its task, or taking it over when the loop is blocked: docs/nginx/
/// wsgi_request_timeout.md).
pub(super) fn limits(app: &AppRef, lc: &LocConf) -> (Option<Duration>, Option<ngx_msec_t>) {
    let timeout = lc.request_timeout();
    let deadline = match app {
        AppRef::Wsgi(_) => timeout.map(|t| now() + t.as_millis() as ngx_msec_t),
        AppRef::Asgi(_) => None,
    };
    (timeout, deadline)
}

/// Arms the request's shutdown guard (see [`Stream::guard`]) for the first time.
///
/// # Safety
/// `stream` is the request's Stream in its pool, where it no longer moves; `log` is its
/// connection's log.
pub(super) unsafe fn arm_guard(stream: *mut Stream, log: *mut ngx_log_t) {
    // SAFETY: contract; the guard event is armed only now, and its Drop deletes the timer.
    unsafe {
        let s = &mut *stream;
        s.guard.handler = Some(guard_handler);
        s.guard.log = log;
        s.guard.data = stream.cast();
        ngx_add_timer(&mut s.guard, guard_delay(s, now()));
    }
}

/// When the guard fires next: its period, or the deadline of a request no thread has taken.
fn guard_delay(s: &Stream, now: ngx_msec_t) -> ngx_msec_t {
    match s.deadline {
        Some(due) if !s.exchange.is_taken() => due.saturating_sub(now).clamp(1, GUARD_PERIOD_MS),
        _ => GUARD_PERIOD_MS,
    }
}

/// The shutdown guard (see [`Stream::guard`]): re-arms itself; a request still waiting for a
/// Python thread at its deadline is answered 504 (every thread is busy, and it could not finish
/// within its timeout any more).
///
/// # Safety
/// Called by nginx's timer with `ev` = the `guard` event of a live [`Stream`] (its `Drop`
/// deletes the timer before the Stream goes away).
unsafe extern "C" fn guard_handler(ev: *mut ngx_event_t) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: ev is the guard event inside a live Stream (see the contract); its data
        // points at that Stream.
        let s = unsafe { &mut *(*ev).data.cast::<Stream>() };
        let now = now();
        let waited_too_long = s.deadline.is_some_and(|due| now >= due) && !s.exchange.is_taken();
        if !waited_too_long {
            // SAFETY: ev is live (see above) and not in the timer tree (it just fired).
            unsafe { ngx_add_timer(ev, guard_delay(s, now)) };
            return;
        }
        // SAFETY: s.r is live while s exists; its connection outlives the request.
        let c = unsafe {
            log_request(
                s.r,
                NGX_LOG_ERR as _,
                "wsgi: RW-NG041 the request waited for a free Python thread (all wsgi_threads \
                 busy) until its wsgi_request_timeout: answered 504",
            );
            (*s.r).connection
        };
        finalize(s, NGX_HTTP_GATEWAY_TIME_OUT as ngx_int_t);
        // As nginx's own timer handlers do after finalising.
        // SAFETY: c belongs to nginx's connection array, valid for the worker's lifetime.
        unsafe { ngx_http_run_posted_requests(c) };
    }));
}

/// pyhost took the request over: its Python thread is stuck in C code past the timeout, or
/// (ASGI) a coroutine blocks the asyncio loop past it. Answer 504 if nothing was sent, else cut
/// the response; the thread (or the loop) is abandoned (it finds the exchange closed if it ever
/// comes back) and the worker retires (`worker::retire_if_asked`, run by `on_wakeup`).
pub(super) fn timed_out(s: &mut Stream) {
    let (rc, what) = match s.header_rc {
        None => (NGX_HTTP_GATEWAY_TIME_OUT as ngx_int_t, "answered 504"),
        Some(_) => (NGX_ERROR as ngx_int_t, "its response is cut"),
    };
    let stuck = if s.exchange.is_asgi() {
        "a coroutine blocks the asyncio loop"
    } else {
        "the request's Python thread is stuck in C code"
    };
    // SAFETY: s.r is live while s exists.
    unsafe {
        log_request(
            s.r,
            NGX_LOG_ERR as _,
            &format!("wsgi: RW-NG040 {stuck} past wsgi_request_timeout: {what}"),
        )
    };
    finalize(s, rc);
}
