//! The request as both modes see it: its CGI/WSGI variables (PEP 3333's "environ" keys the server
//! provides), read out of nginx's request on the event loop.
//!
//! All values are copied into one buffer ([`Vars`]: one allocation for the bytes, one for the
//! spans), so an embedded job that crosses to a Python thread owns everything and holds no
//! pointer into nginx memory; daemon mode encodes the same pairs into its uwsgi packet.

use std::ops::Range;

/// Owned `(name, value)` pairs in one byte buffer.
#[derive(Debug, Default)]
pub struct Vars {
    bytes: Vec<u8>,
    spans: Vec<(Range<usize>, Range<usize>)>,
}

impl Vars {
    pub fn with_capacity(bytes: usize, vars: usize) -> Vars {
        Vars {
            bytes: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(vars),
        }
    }

    fn put(&mut self, data: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        start..self.bytes.len()
    }

    /// Appends a variable (names are not checked for duplicates: see [`Vars::add_header`]).
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        let n = self.put(name);
        let v = self.put(value);
        self.spans.push((n, v));
    }

    /// Appends an `HTTP_*` variable; a repeated header is folded into the first one with ", "
    /// (RFC 9110 5.3), or "; " for Cookie (RFC 6265 5.4), as CGI servers do.
    pub fn add_header(&mut self, name: &[u8], value: &[u8]) {
        let existing = self
            .spans
            .iter()
            .position(|(n, _)| &self.bytes[n.clone()] == name);
        let Some(i) = existing else {
            self.add(name, value);
            return;
        };
        let sep: &[u8] = if name == b"HTTP_COOKIE" { b"; " } else { b", " };
        let (n, v) = self.spans[i].clone();
        let mut joined = self.bytes[v].to_vec();
        joined.extend_from_slice(sep);
        joined.extend_from_slice(value);
        // The old value stays in the buffer unused: repeated headers are rare and small.
        let v = self.put(&joined);
        self.spans[i] = (n, v);
    }

    /// Borrowed pairs, as `pyhost::Request::vars` wants them.
    pub fn pairs(&self) -> Vec<(&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|(n, v)| (&self.bytes[n.clone()], &self.bytes[v.clone()]))
            .collect()
    }
}

/// Splits the (decoded) URI into SCRIPT_NAME and PATH_INFO for a location mounted at `prefix`
/// (no trailing slash). A URI outside the prefix (a rewrite can do that) is all PATH_INFO.
pub fn split_mount<'u>(prefix: &[u8], uri: &'u [u8]) -> (&'u [u8], &'u [u8]) {
    if !prefix.is_empty() && uri.starts_with(prefix) {
        uri.split_at(prefix.len())
    } else {
        (&uri[..0], uri)
    }
}

#[cfg(not(test))]
pub use from_nginx::{cgi_vars, request_header};

/// Reading nginx's request. A unit-test executable has no nginx to link against, so this part is
/// left out of `cargo test` and exercised end to end (tests/test_nginx_module_*.py).
#[cfg(not(test))]
mod from_nginx {
    use ngx::ffi::{
        ngx_connection_local_sockaddr, ngx_http_request_t, ngx_inet_get_port, ngx_list_part_t,
        ngx_table_elt_t, NGX_OK,
    };
    use ngx::http::{HttpModuleServerConf, NgxHttpCoreModule};

    use crate::conf::{LocConf, Mount};

    use super::{split_mount, Vars};

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

    /// The value of request header `name` (case-insensitive), the first if repeated.
    ///
    /// # Safety
    /// `r` is live.
    pub unsafe fn request_header<'r>(r: &'r ngx_http_request_t, name: &[u8]) -> Option<&'r [u8]> {
        let mut found: Option<&'r [u8]> = None;
        // SAFETY: headers_in.headers is the live list of request headers; the elements (and the
        // values they point to) live in the request pool as long as r.
        unsafe {
            for_each_header(&r.headers_in.headers.part, |h| {
                if found.is_none() && h.key.as_bytes().eq_ignore_ascii_case(name) {
                    found = Some(std::slice::from_raw_parts(h.value.data, h.value.len));
                }
            })
        };
        found
    }

    /// Calls `f` for every element of an `ngx_list_t` of headers.
    ///
    /// # Safety
    /// `part` is the first part of a live list of `ngx_table_elt_t`.
    unsafe fn for_each_header(
        mut part: *const ngx_list_part_t,
        mut f: impl FnMut(&ngx_table_elt_t),
    ) {
        while !part.is_null() {
            // SAFETY: each part holds nelts initialised elements (contract).
            let p = unsafe { &*part };
            if !p.elts.is_null() {
                // SAFETY: as above.
                let elts = unsafe {
                    std::slice::from_raw_parts(p.elts.cast::<ngx_table_elt_t>(), p.nelts)
                };
                // hash == 0 marks a header another module removed.
                elts.iter().filter(|h| h.hash != 0).for_each(&mut f);
            }
            part = p.next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_headers_fold() {
        let mut v = Vars::default();
        v.add(b"REQUEST_METHOD", b"GET");
        v.add_header(b"HTTP_ACCEPT", b"a");
        v.add_header(b"HTTP_COOKIE", b"x=1");
        v.add_header(b"HTTP_ACCEPT", b"b");
        v.add_header(b"HTTP_COOKIE", b"y=2");
        let p = v.pairs();
        assert_eq!(
            p,
            vec![
                (&b"REQUEST_METHOD"[..], &b"GET"[..]),
                (&b"HTTP_ACCEPT"[..], &b"a, b"[..]),
                (&b"HTTP_COOKIE"[..], &b"x=1; y=2"[..]),
            ]
        );
    }

    #[test]
    fn mount_split() {
        assert_eq!(
            split_mount(b"/app", b"/app/x/y"),
            (&b"/app"[..], &b"/x/y"[..])
        );
        assert_eq!(split_mount(b"/app", b"/app"), (&b"/app"[..], &b""[..]));
        assert_eq!(split_mount(b"", b"/x"), (&b""[..], &b"/x"[..]));
        assert_eq!(split_mount(b"/app", b"/other"), (&b""[..], &b"/other"[..]));
    }
}
