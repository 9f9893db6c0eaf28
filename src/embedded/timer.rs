//! Process-long timer events that belong to no connection (the exit watch, balance.rs's pause
//! timer).

use ngx::ffi::{ngx_connection_t, ngx_event_handler_pt, ngx_event_t, ngx_log_t};

/// A leaked, cancelable (it never holds back a worker that is stopping) timer event with
/// `handler`. Its `data` points at a leaked connection whose `fd` is -1: nginx's debug log
/// reads `((ngx_connection_t *) ev->data)->fd` whenever a timer is added, deleted or fires
/// (`ngx_event_ident`), so a NULL `data` would crash a `--with-debug` nginx logging at `debug`.
/// nginx's cache manager does the same with a fake connection of its own.
///
/// # Safety
/// On the event-loop thread; `log` lives as long as the worker.
pub unsafe fn leaked(handler: ngx_event_handler_pt, log: *mut ngx_log_t) -> *mut ngx_event_t {
    // SAFETY: all-zero is a valid ngx_connection_t and ngx_event_t (integers, null pointers,
    // None handlers); both are leaked, so they live as long as the process.
    let (ident, ev) = unsafe {
        (
            Box::leak(Box::new(std::mem::zeroed::<ngx_connection_t>())),
            Box::leak(Box::new(std::mem::zeroed::<ngx_event_t>())),
        )
    };
    ident.fd = -1;
    ev.data = (ident as *mut ngx_connection_t).cast();
    ev.handler = handler;
    ev.log = log;
    ev.set_cancelable(1);
    ev
}
