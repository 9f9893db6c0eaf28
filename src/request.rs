//! Reading what a Python thread needs out of nginx's request: the CGI vars and the body.
//!
//! Runs on the event loop; everything is copied (or, for a temp file, dup'ed) so the job owns it.

use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;

use ngx::ffi::{
    ngx_connection_local_sockaddr, ngx_http_request_t, ngx_inet_get_port, ngx_list_part_t,
    ngx_table_elt_t, NGX_OK,
};
use ngx::http::{HttpModuleServerConf, NgxHttpCoreModule};

use crate::conf::{LocConf, Mount};
use crate::embedded::body::{RequestBody, Segment};
use crate::vars::{split_mount, Vars};

/// The body nginx's reader collected, detached from nginx memory.
///
/// # Safety
/// `r` is live and `ngx_http_read_client_request_body` has completed for it.
pub unsafe fn collect_body(r: &ngx_http_request_t) -> io::Result<RequestBody> {
    let mut body = RequestBody::default();
    if r.request_body.is_null() {
        return Ok(body);
    }
    // SAFETY: request_body and its chain are valid and no longer change once reading is done.
    let mut cl = unsafe { (*r.request_body).bufs };
    while !cl.is_null() {
        // SAFETY: cl is a link of the body chain (see above).
        let b = unsafe { &*(*cl).buf };
        if b.in_file() != 0 && !b.file.is_null() {
            // SAFETY: the temp file is open while the request lives; we take our own descriptor.
            let fd = unsafe { BorrowedFd::borrow_raw((*b.file).fd) };
            let file = File::from(fd.try_clone_to_owned()?);
            let len = (b.file_last - b.file_pos).max(0) as u64;
            body.push(Segment::File {
                file,
                offset: b.file_pos.max(0) as u64,
                len,
            });
        } else if !b.pos.is_null() && b.last > b.pos {
            // SAFETY: pos..last is the buffer's valid content.
            let data =
                unsafe { std::slice::from_raw_parts(b.pos, b.last.offset_from(b.pos) as usize) };
            body.push(Segment::Memory(data.to_vec()));
        }
        // SAFETY: as above.
        cl = unsafe { (*cl).next };
    }
    Ok(body)
}

/// The request's CGI/WSGI variables (PEP 3333 "environ" keys the server provides).
///
/// `strip_mount`: PATH_INFO without the SCRIPT_NAME prefix (embedded mode). Daemon mode sends
/// the whole path and lets the worker strip the SCRIPT_NAME it is given, as it does for nginx's
/// stock `uwsgi_params` (stripping twice would eat a path that repeats the prefix).
///
/// # Safety
/// `r` is live.
pub unsafe fn cgi_vars(
    r: &mut ngx_http_request_t,
    lc: &LocConf,
    body_len: u64,
    strip_mount: bool,
) -> Vars {
    let mut v = Vars::with_capacity(1024, 24);
    // SAFETY: a live request has a live connection.
    let c = unsafe { &mut *r.connection };

    v.add(b"REQUEST_METHOD", r.method_name.as_bytes());
    // r->uri is already percent-decoded and normalised by nginx (dot segments, merged slashes).
    let uri = r.uri.as_bytes();
    let (script_name, path_info) = match &lc.mount {
        Some(Mount::Prefix(prefix)) if strip_mount => split_mount(prefix, uri),
        Some(Mount::Prefix(prefix)) => (&prefix[..], uri),
        _ => (&uri[..0], uri),
    };
    v.add(b"SCRIPT_NAME", script_name);
    v.add(b"PATH_INFO", path_info);
    v.add(b"QUERY_STRING", r.args.as_bytes());
    v.add(b"REQUEST_URI", r.unparsed_uri.as_bytes());
    let protocol = r.http_protocol.as_bytes();
    v.add(
        b"SERVER_PROTOCOL",
        if protocol.is_empty() {
            b"HTTP/1.0"
        } else {
            protocol
        },
    );

    // SAFETY: content_type points at a live header element when set.
    if let Some(ct) = unsafe { r.headers_in.content_type.as_ref() } {
        v.add(b"CONTENT_TYPE", ct.value.as_bytes());
    }
    // The body is complete, so its real length is known even for a chunked request.
    if body_len > 0 || r.headers_in.content_length_n >= 0 {
        v.add(b"CONTENT_LENGTH", body_len.to_string().as_bytes());
    }

    let server_name = NgxHttpCoreModule::server_conf(r)
        .map(|s| s.server_name.as_bytes())
        .unwrap_or(b"");
    let server_name = if server_name.is_empty() {
        r.headers_in.server.as_bytes()
    } else {
        server_name
    };
    v.add(b"SERVER_NAME", server_name);
    // SAFETY: c is live; ngx_connection_local_sockaddr fills c->local_sockaddr when needed.
    if unsafe { ngx_connection_local_sockaddr(c, std::ptr::null_mut(), 0) } == NGX_OK as isize {
        // SAFETY: local_sockaddr was just set.
        let port = unsafe { ngx_inet_get_port(c.local_sockaddr) };
        v.add(b"SERVER_PORT", port.to_string().as_bytes());
    }
    v.add(b"REMOTE_ADDR", c.addr_text.as_bytes());
    if !c.sockaddr.is_null() {
        // SAFETY: sockaddr is the peer address of a live connection.
        let port = unsafe { ngx_inet_get_port(c.sockaddr) };
        v.add(b"REMOTE_PORT", port.to_string().as_bytes());
    }
    let https = is_https(c);
    v.add(b"REQUEST_SCHEME", if https { b"https" } else { b"http" });
    if https {
        v.add(b"HTTPS", b"on");
    }

    // SAFETY: headers_in.headers is the live list of request headers.
    unsafe { for_each_header(&r.headers_in.headers.part, |h| add_header(&mut v, h)) };
    v
}

fn add_header(v: &mut Vars, h: &ngx_table_elt_t) {
    // pyhost::http_header_var drops names with '_' (spoofing), Proxy (httpoxy) and the
    // Content-* pair (they are CONTENT_TYPE/CONTENT_LENGTH above).
    if let Some(name) = pyhost::http_header_var(h.key.as_bytes()) {
        v.add_header(&name, h.value.as_bytes());
    }
}

#[cfg(ngx_feature = "ssl")]
fn is_https(c: &ngx::ffi::ngx_connection_t) -> bool {
    !c.ssl.is_null()
}

#[cfg(not(ngx_feature = "ssl"))]
fn is_https(_c: &ngx::ffi::ngx_connection_t) -> bool {
    false
}

/// Calls `f` for every element of an `ngx_list_t` of headers.
///
/// # Safety
/// `part` is the first part of a live list of `ngx_table_elt_t`.
unsafe fn for_each_header(mut part: *const ngx_list_part_t, mut f: impl FnMut(&ngx_table_elt_t)) {
    while !part.is_null() {
        // SAFETY: each part holds nelts initialised elements (contract).
        let p = unsafe { &*part };
        if !p.elts.is_null() {
            // SAFETY: as above.
            let elts =
                unsafe { std::slice::from_raw_parts(p.elts.cast::<ngx_table_elt_t>(), p.nelts) };
            // hash == 0 marks a header another module removed.
            elts.iter().filter(|h| h.hash != 0).for_each(&mut f);
        }
        part = p.next;
    }
}
