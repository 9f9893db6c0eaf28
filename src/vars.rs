//! The CGI/WSGI variables of a request, built on the event loop from nginx's parsed request.
//!
//! All values are copied into one buffer (one allocation for the bytes, one for the spans), so the
//! job that crosses to a Python thread owns everything and holds no pointer into nginx memory.

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
