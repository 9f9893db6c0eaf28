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

    /// Appends a variable. A request header sent on several lines is added once per line:
    /// pyhost joins them (RFC 9110), in every mode and behind every front end alike.
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        let n = self.put(name);
        let v = self.put(value);
        self.spans.push((n, v));
    }

    /// Sets a variable: every earlier one of that name is removed (their bytes stay unused in
    /// the buffer; params are few and small).
    pub fn set(&mut self, name: &[u8], value: &[u8]) {
        let bytes = &self.bytes;
        self.spans.retain(|(n, _)| &bytes[n.clone()] != name);
        self.add(name, value);
    }

    /// The value of the last variable called `name`.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.spans
            .iter()
            .rev()
            .find(|(n, _)| &self.bytes[n.clone()] == name)
            .map(|(_, v)| &self.bytes[v.clone()])
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
        ngx_connection_local_sockaddr, ngx_http_complex_value, ngx_http_complex_value_t,
        ngx_http_request_t, ngx_inet_get_port, ngx_list_part_t, ngx_str_t, ngx_table_elt_t, NGX_OK,
    };
    use ngx::http::{HttpModuleServerConf, NgxHttpCoreModule};

    use crate::conf::{LocConf, Mount, Param};

    use super::{split_mount, Vars};

    /// Room for an address as text: at least nginx's NGX_SOCKADDR_STRLEN (113 bytes with unix
    /// sockets: "unix:" + sun_path), a macro bindgen cannot evaluate.
    const SOCKADDR_TEXT: usize = 128;

    /// The request's CGI/WSGI variables (PEP 3333 "environ" keys the server provides), the same
    /// in both modes, then the location's `wsgi_param`s. `body_len` is the request body's length
    /// (CONTENT_LENGTH).
    ///
    /// PATH_INFO is what follows SCRIPT_NAME (CGI's split form); daemon mode says so to the
    /// worker (`uwsgi::contract`'s `split`).
    ///
    /// # Safety
    /// `r` is live.
    pub unsafe fn cgi_vars(r: &mut ngx_http_request_t, lc: &LocConf, body_len: u64) -> Vars {
        let mut v = Vars::with_capacity(1024, 24);
        let params = lc.params.as_deref().unwrap_or(&[]);
        // SAFETY: r is live (contract).
        unsafe { add_request_vars(r, lc, body_len, &mut v) };
        let c = r.connection;
        // SAFETY: a live request has a live connection.
        unsafe { add_connection_vars(r, &mut *c, &mut v) };
        // SAFETY: headers_in.headers is the live list of request headers.
        unsafe {
            for_each_header(&r.headers_in.headers.part, |h| {
                add_header(&mut v, h, params)
            })
        };
        for p in params {
            // SAFETY: r is live; the param's value was compiled for this configuration.
            unsafe { apply_param(r, p, &mut v) };
        }
        v
    }

    /// What the request line and the content headers say.
    ///
    /// # Safety
    /// `r` is live.
    unsafe fn add_request_vars(r: &ngx_http_request_t, lc: &LocConf, body_len: u64, v: &mut Vars) {
        v.add(b"REQUEST_METHOD", r.method_name.as_bytes());
        // r->uri is already percent-decoded and normalised by nginx (dot segments, merged slashes).
        let uri = r.uri.as_bytes();
        let (script_name, path_info) = match &lc.mount {
            Some(Mount::Prefix(prefix)) => split_mount(prefix, uri),
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
        if body_len > 0 || r.headers_in.content_length_n >= 0 {
            v.add(b"CONTENT_LENGTH", body_len.to_string().as_bytes());
        }
    }

    /// The server's and the client's addresses, and the scheme.
    ///
    /// # Safety
    /// `r` and `c` (its connection) are live.
    unsafe fn add_connection_vars(
        r: &ngx_http_request_t,
        c: &mut ngx::ffi::ngx_connection_t,
        v: &mut Vars,
    ) {
        // server_name, else the host nginx took from the request line or Host (validated, lower
        // case, without the port); pyhost falls back further (SERVER_ADDR) if both are empty.
        let server_name = NgxHttpCoreModule::server_conf(r)
            .map(|s| s.server_name.as_bytes())
            .unwrap_or(b"");
        let server_name = if server_name.is_empty() {
            r.headers_in.server.as_bytes()
        } else {
            server_name
        };
        v.add(b"SERVER_NAME", server_name);
        let mut text = [0u8; SOCKADDR_TEXT];
        let mut addr = ngx_str_t {
            len: text.len(),
            data: text.as_mut_ptr(),
        };
        // SAFETY: c is live; ngx_connection_local_sockaddr fills c->local_sockaddr when needed
        // and writes at most addr.len bytes of its text into `text`.
        if unsafe { ngx_connection_local_sockaddr(c, &mut addr, 0) } == NGX_OK as isize {
            v.add(b"SERVER_ADDR", addr.as_bytes());
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
    }

    fn add_header(v: &mut Vars, h: &ngx_table_elt_t, params: &[Param]) {
        // pyhost::http_header_var drops names with '_' (spoofing), Proxy (httpoxy) and the
        // Content-* pair (they are CONTENT_TYPE/CONTENT_LENGTH above).
        if let Some(name) = pyhost::http_header_var(h.key.as_bytes()) {
            // A wsgi_param of that name replaces the client's header (uwsgi_param's rule), even
            // when it sets nothing (if_not_empty, or an empty literal that only hides it).
            if params.iter().any(|p| p.is_header() && p.name == name) {
                return;
            }
            v.add(&name, h.value.as_bytes());
        }
    }

    /// Evaluates one `wsgi_param` (nginx variables and all) and sets it. A value nginx cannot
    /// evaluate (out of memory) sets nothing.
    ///
    /// # Safety
    /// `r` is live and `p.value` was compiled by `ngx_http_compile_complex_value` for the
    /// configuration this request runs under.
    unsafe fn apply_param(r: &mut ngx_http_request_t, p: &Param, v: &mut Vars) {
        let Some(cv) = p.value else {
            return;
        };
        let mut value = ngx_str_t {
            len: 0,
            data: std::ptr::null_mut(),
        };
        // SAFETY: contract; the result lives in the request pool (or the configuration) for
        // the request's lifetime, longer than this call.
        let rc = unsafe {
            ngx_http_complex_value(
                r,
                cv.as_ptr().cast::<ngx_http_complex_value_t>(),
                &mut value,
            )
        };
        if rc != NGX_OK as isize {
            return;
        }
        let value = if value.len == 0 {
            &[][..]
        } else {
            value.as_bytes()
        };
        if value.is_empty() && p.if_not_empty {
            return;
        }
        v.set(&p.name, value);
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
    fn set_replaces_and_add_repeats() {
        let mut v = Vars::default();
        v.add(b"REQUEST_METHOD", b"GET");
        v.add(b"HTTP_COOKIE", b"x=1");
        v.add(b"SCRIPT_NAME", b"/app");
        v.add(b"HTTP_COOKIE", b"y=2");
        v.set(b"SCRIPT_NAME", b"");
        v.set(b"REMOTE_USER", b"alice");
        assert_eq!(
            v.pairs(),
            vec![
                (&b"REQUEST_METHOD"[..], &b"GET"[..]),
                (&b"HTTP_COOKIE"[..], &b"x=1"[..]),
                (&b"HTTP_COOKIE"[..], &b"y=2"[..]),
                (&b"SCRIPT_NAME"[..], &b""[..]),
                (&b"REMOTE_USER"[..], &b"alice"[..]),
            ]
        );
        assert_eq!(v.get(b"HTTP_COOKIE"), Some(&b"y=2"[..]));
        assert_eq!(v.get(b"SCRIPT_NAME"), Some(&b""[..]));
        assert_eq!(v.get(b"NOPE"), None);
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
