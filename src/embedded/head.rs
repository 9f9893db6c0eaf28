//! The response head of an embedded request: the app's status line and headers into nginx's
//! `headers_out`, with the headers nginx tracks in fields of their own mapped to them, then
//! `ngx_http_send_header` (the header filters run).

use ngx::ffi::{
    add_to_ngx_table, ngx_http_request_t, ngx_http_send_header, ngx_int_t, ngx_list_push,
    ngx_str_t, ngx_table_elt_t, NGX_ERROR, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_OK,
};

use super::exchange::HeadMsg;

/// Sets the status and headers from the app and sends the head.
///
/// Ok: the rc of `ngx_http_send_header`; Err: the rc to finalise the request with.
///
/// # Safety
/// `r` is live.
pub unsafe fn send_head(
    r: *mut ngx_http_request_t,
    head: &HeadMsg,
) -> Result<ngx_int_t, ngx_int_t> {
    let internal = NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    // SAFETY: contract.
    let r = unsafe { &mut *r };
    let out = &mut r.headers_out;
    out.status = head.status as _;
    // SAFETY: the pool copies live as long as the request.
    out.status_line =
        unsafe { ngx_str_t::from_bytes(r.pool, &head.status_line) }.ok_or(internal)?;
    let upgrade = head.status == 101;
    for (name, value) in &head.headers {
        // SAFETY: as above.
        unsafe { add_header(r, name, value, upgrade) }.ok_or(internal)?;
    }
    // SAFETY: r is live; the header filters run now.
    let rc = unsafe { ngx_http_send_header(r) };
    if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t {
        return Err(rc);
    }
    Ok(rc)
}

/// Adds one response header, mapping those nginx tracks separately.
///
/// # Safety
/// `r` is live.
unsafe fn add_header(
    r: &mut ngx_http_request_t,
    name: &[u8],
    value: &[u8],
    upgrade: bool,
) -> Option<()> {
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
    // A 101 keeps its Upgrade (nginx writes `Connection: upgrade` itself).
    let hop = [
        &b"connection"[..],
        b"keep-alive",
        b"transfer-encoding",
        b"upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h));
    if hop && !(upgrade && name.eq_ignore_ascii_case(b"upgrade")) {
        return Some(());
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
