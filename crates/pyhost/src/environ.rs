//! Building the WSGI `environ` dict from the transport's CGI variables (PEP 3333).
//!
//! Keys are interned Python strings, so Python-side lookups hit the pointer-equality fast path and
//! repeated keys cost no new allocations; values are decoded as latin-1 ("native strings").

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::{intern, sync::PyOnceLock};

use crate::filewrapper::FileWrapper;
use crate::Request;

/// Variables the transport may pass that never reach the app.
pub(crate) fn dropped(key: &[u8]) -> bool {
    // httpoxy: a client `Proxy:` header must not become HTTP_PROXY (read as a proxy setting).
    // nginx passes Content-Type/Length both as CONTENT_* and HTTP_CONTENT_*; PEP 3333 has only
    // the former. UWSGI_* are uWSGI's code-loading variables: never honoured.
    key == b"HTTP_PROXY"
        || key == b"HTTP_CONTENT_TYPE"
        || key == b"HTTP_CONTENT_LENGTH"
        || key.starts_with(b"UWSGI_")
}

/// Decode bytes as latin-1 into a Python str (every byte maps to one code point).
fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    let len = isize::try_from(bytes.len()).map_err(|_| PyValueError::new_err("value too long"))?;
    // SAFETY: the pointer/length pair describes `bytes`, which outlives the call; the GIL is held
    // (we have `py`); PyUnicode_DecodeLatin1 returns a new reference or NULL with an exception set,
    // which from_owned_ptr_or_err turns into Err.
    unsafe {
        let ptr = ffi::PyUnicode_DecodeLatin1(bytes.as_ptr().cast(), len, std::ptr::null());
        Ok(Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked())
    }
}

/// Keys that nearly every request carries: made once as interned strings, so building environ
/// costs a lookup per key instead of creating and interning a string (the single largest cost of
/// a hello-world request before this table existed).
macro_rules! common_keys {
    ($($key:literal),* $(,)?) => {
        const COMMON_KEYS: &[&str] = &[$($key),*];

        /// Index into COMMON_KEYS: a chain of slice compares, most of which fail on the length.
        fn common_index(key: &[u8]) -> Option<usize> {
            let mut i = 0usize;
            $(
                if key == $key.as_bytes() {
                    return Some(i);
                }
                i += 1;
            )*
            let _ = i;
            None
        }
    };
}

common_keys!(
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "SERVER_ADDR",
    "SERVER_SOFTWARE",
    "GATEWAY_INTERFACE",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "REMOTE_USER",
    "AUTH_TYPE",
    "REQUEST_URI",
    "REQUEST_SCHEME",
    "DOCUMENT_ROOT",
    "DOCUMENT_URI",
    "PATH_TRANSLATED",
    "HTTPS",
    "HTTP_HOST",
    "HTTP_USER_AGENT",
    "HTTP_ACCEPT",
    "HTTP_ACCEPT_LANGUAGE",
    "HTTP_ACCEPT_ENCODING",
    "HTTP_CONNECTION",
    "HTTP_COOKIE",
    "HTTP_CACHE_CONTROL",
    "HTTP_PRAGMA",
    "HTTP_REFERER",
    "HTTP_ORIGIN",
    "HTTP_AUTHORIZATION",
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_REAL_IP",
    "HTTP_X_REQUESTED_WITH",
    "HTTP_X_CSRFTOKEN",
    "HTTP_UPGRADE_INSECURE_REQUESTS",
    "HTTP_DNT",
);

static COMMON_STRINGS: PyOnceLock<Vec<Py<PyString>>> = PyOnceLock::new();

fn key<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    if let Some(i) = common_index(bytes) {
        let strings = COMMON_STRINGS.get_or_init(py, || {
            COMMON_KEYS
                .iter()
                .map(|k| PyString::intern(py, k).unbind())
                .collect()
        });
        return Ok(strings[i].bind(py).clone());
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(PyString::new(py, s)),
        Err(_) => latin1(py, bytes),
    }
}

static WSGI_VERSION: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();

fn truthy(v: &[u8]) -> bool {
    v.eq_ignore_ascii_case(b"on") || v == b"1" || v.eq_ignore_ascii_case(b"true")
}

/// The value of CONTENT_LENGTH if present and well-formed.
pub(crate) fn content_length(req: &Request<'_>) -> Option<u64> {
    let (_, v) = req.vars.iter().find(|(k, _)| *k == b"CONTENT_LENGTH")?;
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

pub(crate) fn is_head(req: &Request<'_>) -> bool {
    req.vars
        .iter()
        .any(|(k, v)| *k == b"REQUEST_METHOD" && *v == b"HEAD")
}

extern "C" {
    /// CPython's dict constructor with room for `minused` items (exported by libpython since 3.0;
    /// not in pyo3-ffi because of its leading underscore).
    fn _PyDict_NewPresized(minused: ffi::Py_ssize_t) -> *mut ffi::PyObject;
}

/// A dict that holds all of environ without growing (each growth rehashes every key).
fn presized_dict(py: Python<'_>, n: usize) -> PyResult<Bound<'_, PyDict>> {
    let n = ffi::Py_ssize_t::try_from(n).unwrap_or(64);
    // SAFETY: the GIL is held (we have `py`); the function returns a new reference to a dict or
    // NULL with an exception set, which from_owned_ptr_or_err turns into Err.
    unsafe {
        let ptr = _PyDict_NewPresized(n);
        Ok(Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked())
    }
}

/// Build environ for one request.
pub(crate) fn build<'py>(
    py: Python<'py>,
    req: &Request<'_>,
    input: &Bound<'py, PyAny>,
    errors: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let env = presized_dict(py, req.vars.len() + 12)?;
    let mut https = false;
    let mut server_name = false;
    // Keys in `env` so far: when setting a key leaves the count unchanged, the key came before.
    let mut distinct = 0usize;
    for (i, (k, v)) in req.vars.iter().enumerate() {
        if dropped(k) {
            continue;
        }
        if (*k == b"HTTPS" && truthy(v)) || (*k == b"REQUEST_SCHEME" && *v == b"https") {
            https = true;
        }
        if *k == b"SERVER_NAME" {
            server_name = !v.is_empty();
        }
        let key = key(py, k)?;
        env.set_item(&key, latin1(py, v)?)?;
        distinct += 1;
        if env.len() < distinct {
            distinct -= 1;
            // A repeated variable: a request header sent on several lines becomes one value;
            // for any other variable the last one wins (it has overwritten the earlier ones).
            if k.starts_with(b"HTTP_") {
                env.set_item(&key, latin1(py, &join_repeated(&req.vars[..=i], k))?)?;
            }
        }
    }
    if !server_name {
        let name = server_name_fallback(req.vars);
        env.set_item(intern!(py, "SERVER_NAME"), latin1(py, &name)?)?;
    }
    let empty = intern!(py, "");
    for required in [
        intern!(py, "SCRIPT_NAME"),
        intern!(py, "PATH_INFO"),
        intern!(py, "QUERY_STRING"),
    ] {
        if !env.contains(required)? {
            env.set_item(required, empty)?;
        }
    }
    let version = WSGI_VERSION.get_or_init(py, || {
        PyTuple::new(py, [1, 0])
            .map(Bound::unbind)
            .unwrap_or_else(|_| PyTuple::empty(py).unbind())
    });
    env.set_item(intern!(py, "wsgi.version"), version.bind(py))?;
    let scheme = if https {
        intern!(py, "https")
    } else {
        intern!(py, "http")
    };
    env.set_item(intern!(py, "wsgi.url_scheme"), scheme)?;
    env.set_item(intern!(py, "wsgi.input"), input)?;
    // The body stream ends at the end of the body: reading to EOF is safe.
    env.set_item(intern!(py, "wsgi.input_terminated"), true)?;
    env.set_item(intern!(py, "wsgi.errors"), errors)?;
    env.set_item(intern!(py, "wsgi.multithread"), req.mode.multithread)?;
    env.set_item(intern!(py, "wsgi.multiprocess"), req.mode.multiprocess)?;
    env.set_item(intern!(py, "wsgi.run_once"), req.mode.run_once)?;
    env.set_item(
        intern!(py, "wsgi.file_wrapper"),
        py.get_type::<FileWrapper>(),
    )?;
    Ok(env)
}

/// The value of a request header sent on several lines (so present several times in `vars`), as
/// one field: RFC 9110 5.3 joins the lines' values with ", " in order; Cookie is the exception,
/// joined with "; " (RFC 6265 5.4, and RFC 9113 8.2.3 for the crumbs HTTP/2 splits it into).
/// Empty lines add no element (RFC 9110 5.6.1). Every front end's repeated headers go through
/// here: nginx before 1.23 sends them to a uwsgi server as repeated variables, and our own
/// adapters pass them on the same way, so the rule is written once.
fn join_repeated(vars: &[(&[u8], &[u8])], name: &[u8]) -> Vec<u8> {
    let sep: &[u8] = if name == b"HTTP_COOKIE" { b"; " } else { b", " };
    let mut out = Vec::new();
    for (_, v) in vars.iter().filter(|(k, v)| *k == name && !v.is_empty()) {
        if !out.is_empty() {
            out.extend_from_slice(sep);
        }
        out.extend_from_slice(v);
    }
    out
}

/// SERVER_NAME when the transport sent none or an empty one (nginx with no `server_name` sends
/// `$server_name` empty; PEP 3333 requires the key, CGI a host name): the name from the Host
/// header, else the server's address (SERVER_ADDR), else this machine's host name, as httpd
/// falls back to it without a ServerName.
fn server_name_fallback(vars: &[(&[u8], &[u8])]) -> Vec<u8> {
    let last = |name: &[u8]| {
        vars.iter()
            .rev()
            .find(|(k, v)| *k == name && !v.is_empty())
            .map(|(_, v)| *v)
    };
    if let Some(host) = last(b"HTTP_HOST").map(host_name).filter(|h| !h.is_empty()) {
        return host;
    }
    if let Some(addr) = last(b"SERVER_ADDR") {
        return addr.to_vec();
    }
    machine_name().to_vec()
}

/// The host name of a Host header value: `Example.com:8080` -> `example.com`, `[::1]:80` ->
/// `[::1]` (host names are case-insensitive; nginx's `$host` is lower case too).
fn host_name(host: &[u8]) -> Vec<u8> {
    let host = host
        .split(|&b| b == b',')
        .next()
        .unwrap_or(b"")
        .trim_ascii();
    let name = if host.starts_with(b"[") {
        host.iter()
            .position(|&b| b == b']')
            .map_or(host, |end| &host[..=end])
    } else {
        host.split(|&b| b == b':').next().unwrap_or(b"")
    };
    name.to_ascii_lowercase()
}

/// gethostname(), once per process; "localhost" if it fails.
fn machine_name() -> &'static [u8] {
    static NAME: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: buf is writable for its length; gethostname NUL-terminates within it on
        // success (we reserve the last byte in case it does not).
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
        let name: Vec<u8> = buf.iter().copied().take_while(|&b| b != 0).collect();
        if rc == 0 && !name.is_empty() {
            name
        } else {
            b"localhost".to_vec()
        }
    })
}

/// The environ key for an HTTP request header, for transports that build vars from raw headers:
/// `X-Foo` -> `HTTP_X_FOO`. `None` for names with `_` (they would be indistinguishable from `-`,
/// which lets a client spoof headers a proxy set), for `Proxy` (httpoxy), for Content-Type and
/// Content-Length (they are CONTENT_TYPE/CONTENT_LENGTH), and for names that are not tokens.
pub fn http_header_var(name: &[u8]) -> Option<Vec<u8>> {
    if name.is_empty()
        || name.eq_ignore_ascii_case(b"proxy")
        || name.eq_ignore_ascii_case(b"content-type")
        || name.eq_ignore_ascii_case(b"content-length")
    {
        return None;
    }
    let mut out = Vec::with_capacity(5 + name.len());
    out.extend_from_slice(b"HTTP_");
    for &b in name {
        match b {
            b'-' => out.push(b'_'),
            b'A'..=b'Z' | b'0'..=b'9' => out.push(b),
            b'a'..=b'z' => out.push(b.to_ascii_uppercase()),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names() {
        assert_eq!(
            http_header_var(b"X-Foo").as_deref(),
            Some(&b"HTTP_X_FOO"[..])
        );
        assert_eq!(
            http_header_var(b"user-agent").as_deref(),
            Some(&b"HTTP_USER_AGENT"[..])
        );
        assert_eq!(http_header_var(b"X_Foo"), None);
        assert_eq!(http_header_var(b"Proxy"), None);
        assert_eq!(http_header_var(b"PROXY"), None);
        assert_eq!(http_header_var(b"Content-Type"), None);
        assert_eq!(http_header_var(b"content-length"), None);
        assert_eq!(http_header_var(b"X Foo"), None);
        assert_eq!(http_header_var(b""), None);
    }

    #[test]
    fn common_keys_index_themselves() {
        for (i, k) in COMMON_KEYS.iter().enumerate() {
            assert_eq!(common_index(k.as_bytes()), Some(i), "{k}");
        }
        assert_eq!(common_index(b"HTTP_X_UNCOMMON"), None);
        assert_eq!(common_index(b"request_method"), None);
    }

    #[test]
    fn repeated_headers_join_as_rfc_9110_says() {
        let vars: [(&[u8], &[u8]); 7] = [
            (b"HTTP_X_FORWARDED_FOR", b"1.1.1.1"),
            (b"HTTP_COOKIE", b"a=1"),
            (b"SERVER_NAME", b"x"),
            (b"HTTP_X_FORWARDED_FOR", b""),
            (b"HTTP_COOKIE", b"b=2"),
            (b"HTTP_X_FORWARDED_FOR", b"2.2.2.2, 3.3.3.3"),
            (b"HTTP_COOKIE", b"c=3"),
        ];
        assert_eq!(
            join_repeated(&vars, b"HTTP_X_FORWARDED_FOR"),
            b"1.1.1.1, 2.2.2.2, 3.3.3.3"
        );
        assert_eq!(join_repeated(&vars, b"HTTP_COOKIE"), b"a=1; b=2; c=3");
    }

    #[test]
    fn server_name_falls_back_to_host_then_address() {
        let host: [(&[u8], &[u8]); 2] =
            [(b"SERVER_NAME", b""), (b"HTTP_HOST", b"Example.COM:8080")];
        assert_eq!(server_name_fallback(&host), b"example.com");
        let v6: [(&[u8], &[u8]); 1] = [(b"HTTP_HOST", b"[::1]:8080")];
        assert_eq!(server_name_fallback(&v6), b"[::1]");
        let addr: [(&[u8], &[u8]); 2] = [(b"HTTP_HOST", b""), (b"SERVER_ADDR", b"10.0.0.1")];
        assert_eq!(server_name_fallback(&addr), b"10.0.0.1");
        let nothing: [(&[u8], &[u8]); 0] = [];
        assert!(!server_name_fallback(&nothing).is_empty());
        assert_eq!(server_name_fallback(&nothing), machine_name());
    }

    #[test]
    fn dropped_vars() {
        assert!(dropped(b"HTTP_PROXY"));
        assert!(dropped(b"HTTP_CONTENT_LENGTH"));
        assert!(dropped(b"UWSGI_FILE"));
        assert!(!dropped(b"HTTP_PROXY_CONNECTION"));
        assert!(!dropped(b"CONTENT_LENGTH"));
    }
}
