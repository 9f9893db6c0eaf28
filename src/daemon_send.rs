//! Daemon mode, worker side: sending the request to the group (the uwsgi packet, the body, then
//! the abort mark) while the response comes back.
//!
//! nginx's upstream stops sending a request body once it has passed the response head to the
//! client, unless the upstream conf says `preserve_output` (as its gRPC module does). Our
//! locations say it (daemon.rs), for two reasons:
//! - an app may stream its response while it still reads the body (full duplex): cutting the
//!   body off would leave it waiting for bytes that never come;
//! - an app that does not read the body: the worker discards it while it answers and after (the
//!   worker's side of case 6, docs/failure-modes.md), and a response without Content-Length
//!   needs the abort mark (`uwsgi::contract`, "Aborted responses"), which must follow the whole
//!   body: the worker tells a complete end from an aborted one by reading it, or leaving it
//!   unread, only once everything before it was read.
//!
//! So the upstream's output goes through [`send_to_daemon`], which counts what is handed to
//! nginx's chain writer: once the packet and the whole body are out, and a head without
//! Content-Length has come back (before or after that), it sends the mark (again on the next
//! write event if the socket was full).
//!
//! A framed response is judged by its length (nginx's own check); there a write that fails
//! after the head (the worker answered, then stopped reading) ends the sending quietly, and what
//! the worker sent is still read. A response without Content-Length is judged by how the worker
//! ends it: a clean end (it half-closes, then discards what is left of the request) or a reset;
//! a write failing under it is the reset seen from the other side, and fails it.

use std::ffi::c_void;

use ngx::ffi::{
    ngx_chain_t, ngx_chain_writer, ngx_http_request_t, ngx_http_upstream_t, ngx_int_t, ngx_pcalloc,
    NGX_ERROR, NGX_OK,
};
use ngx::http::HttpModule;
use uwsgi::contract::ABORT_MARK_BYTE;

use crate::WsgiModule;

/// What the output filter keeps for one daemon request (in the request's module ctx).
#[derive(Default)]
struct Sending {
    /// Bytes of the request (packet + body) handed to the chain writer so far.
    handed: u64,
    /// Bytes of the whole request: the packet and CONTENT_LENGTH.
    total: u64,
    /// Everything is out, or nothing more will be (the worker stopped reading).
    done: bool,
    /// The response head came back.
    head: bool,
    /// A head without Content-Length came back: the mark follows the body.
    mark_due: bool,
    mark_sent: bool,
}

/// Sets the request up for [`send_to_daemon`] (before `ngx_http_upstream_init`).
///
/// # Safety
/// `r` is live and has its upstream.
pub unsafe fn install(r: *mut ngx_http_request_t) -> Option<()> {
    // SAFETY: r is live with an upstream (contract); the state is plain data in the request
    // pool (zeroed is its default), reached through our module ctx slot, which daemon requests
    // do not otherwise use.
    unsafe {
        let st = ngx_pcalloc((*r).pool, std::mem::size_of::<Sending>()).cast::<Sending>();
        if st.is_null() {
            return None;
        }
        st.write(Sending::default());
        *(*r).ctx.add(WsgiModule::module().ctx_index) = st.cast();
        let u = &mut *(*r).upstream;
        u.output.output_filter = Some(send_to_daemon);
        u.output.filter_ctx = r.cast();
    }
    Some(())
}

/// # Safety
/// `r` is live and [`install`] ran for it.
unsafe fn state<'a>(r: *mut ngx_http_request_t) -> Option<&'a mut Sending> {
    // SAFETY: contract; the slot holds our Sending (or null).
    unsafe {
        (*(*r).ctx.add(WsgiModule::module().ctx_index))
            .cast::<Sending>()
            .as_mut()
    }
}

/// `create_request` / `reinit_request`: a fresh attempt sends `total` bytes.
///
/// # Safety
/// `r` is live and [`install`] ran for it.
pub unsafe fn start(r: *mut ngx_http_request_t, total: u64) {
    // SAFETY: contract.
    if let Some(st) = unsafe { state(r) } {
        *st = Sending {
            total,
            ..Sending::default()
        };
    }
}

/// `reinit_request`: the next attempt starts over with the same request.
///
/// # Safety
/// `r` is live and [`install`] ran for it.
pub unsafe fn restart(r: *mut ngx_http_request_t) {
    // SAFETY: contract.
    if let Some(st) = unsafe { state(r) } {
        let total = st.total;
        *st = Sending {
            total,
            ..Sending::default()
        };
    }
}

/// `process_header` parsed the head; `unframed`: without Content-Length (only the worker's end
/// ends the body), so the abort mark is due after the request.
///
/// # Safety
/// `r` is live with its upstream connected, and [`install`] ran for it.
pub unsafe fn head_received(r: *mut ngx_http_request_t, unframed: bool) {
    // SAFETY: contract.
    let Some(st) = (unsafe { state(r) }) else {
        return;
    };
    st.head = true;
    st.mark_due = unframed;
    // SAFETY: contract: the upstream is live.
    unsafe { send_mark_if_due(st, &*(*r).upstream) };
}

/// The upstream's output filter: nginx's chain writer, plus the bookkeeping above.
///
/// # Safety
/// Called by `ngx_output_chain` with `data` = the request ([`install`]) and a chain of the
/// request's buffers, on the event-loop thread.
unsafe extern "C" fn send_to_daemon(data: *mut c_void, chain: *mut ngx_chain_t) -> ngx_int_t {
    let r = data.cast::<ngx_http_request_t>();
    // SAFETY: contract.
    let result = std::panic::catch_unwind(|| unsafe { send(r, chain) });
    result.unwrap_or(NGX_ERROR as ngx_int_t)
}

/// # Safety
/// As [`send_to_daemon`].
unsafe fn send(r: *mut ngx_http_request_t, chain: *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: contract: r is live with its upstream.
    let u = unsafe { &mut *(*r).upstream };
    let writer = (&mut u.writer as *mut ngx::ffi::ngx_chain_writer_ctx_t).cast();
    // SAFETY: as above.
    let Some(st) = (unsafe { state(r) }) else {
        // SAFETY: the writer of this upstream and the chain nginx passed.
        return unsafe { ngx_chain_writer(writer, chain) };
    };
    if st.done {
        // Everything is out, or nothing more goes to a worker that stopped reading; a mark
        // that did not fit last time goes now.
        send_mark_if_due(st, u);
        return NGX_OK as ngx_int_t;
    }
    // SAFETY: the chain's buffers are valid (contract).
    st.handed += unsafe { chain_len(chain) };
    // SAFETY: the writer of this upstream (set up by nginx before the first send).
    let rc = unsafe { ngx_chain_writer(writer, chain) };
    if rc == NGX_ERROR as ngx_int_t && st.head && !st.mark_due {
        // The worker answered with a framed response and then stopped reading (it closed): the
        // rest of the body is not needed, and nginx judges the response by its length. Drop
        // what was queued.
        st.done = true;
        u.writer.out = std::ptr::null_mut();
        u.writer.last = &mut u.writer.out;
        return NGX_OK as ngx_int_t;
    }
    if rc == NGX_OK as ngx_int_t && st.handed >= st.total && u.writer.out.is_null() {
        st.done = true;
        send_mark_if_due(st, u);
    }
    rc
}

/// Sends the abort mark once both are true: the whole request is out, and the head said the
/// body ends only with the worker's end.
fn send_mark_if_due(st: &mut Sending, u: &ngx_http_upstream_t) {
    if !(st.done && st.mark_due) || st.mark_sent || u.peer.connection.is_null() {
        return;
    }
    // SAFETY: the peer connection is open (checked non-null; nginx nulls it when it closes);
    // one byte from a static, non-blocking. A full socket (EAGAIN) is tried again on the next
    // write event (send_to_daemon); any other failure means the worker closed.
    let n = unsafe {
        libc::send(
            (*u.peer.connection).fd,
            (&ABORT_MARK_BYTE as *const u8).cast(),
            1,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    st.mark_sent = n == 1;
}

/// Bytes in a chain (memory and file buffers).
///
/// # Safety
/// `cl` is null or a valid chain.
unsafe fn chain_len(mut cl: *mut ngx_chain_t) -> u64 {
    let mut n = 0u64;
    while !cl.is_null() {
        // SAFETY: contract.
        let b = unsafe { &*(*cl).buf };
        let size = if b.temporary() != 0 || b.memory() != 0 || b.mmap() != 0 {
            // SAFETY: pos..last delimit a memory buffer's content.
            (unsafe { b.last.offset_from(b.pos) }) as i64
        } else {
            b.file_last - b.file_pos
        };
        n += size.max(0) as u64;
        // SAFETY: contract.
        cl = unsafe { (*cl).next };
    }
    n
}
