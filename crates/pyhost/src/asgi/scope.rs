//! The connection scope (ASGI HTTP & WebSocket spec 2.5) from the transport's CGI variables:
//! the same variables, and the same filters, a WSGI app's environ is built from (environ.rs), so
//! both interfaces see a request the same way and the same headers never reach either.
//!
//! `path` is the whole decoded path (`SCRIPT_NAME` + `PATH_INFO`) and `root_path` the mount
//! prefix, as the spec and Starlette's routing expect since asgiref 3.7 ("root_path is removed
//! from path by the app").

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use super::Kind;
use crate::environ;

/// What the scope needs from the variables, found in one pass.
#[derive(Default)]
struct Found<'a> {
    method: &'a [u8],
    script_name: &'a [u8],
    path_info: &'a [u8],
    query: &'a [u8],
    request_uri: &'a [u8],
    protocol: &'a [u8],
    https: bool,
    server_name: &'a [u8],
    server_addr: &'a [u8],
    server_port: &'a [u8],
    remote_addr: &'a [u8],
    remote_port: &'a [u8],
    subprotocols: Vec<&'a [u8]>,
}

impl<'a> Found<'a> {
    /// One pass over the variables: what the scope needs, and the request headers as ASGI
    /// wants them (lower-case names, the environ's filters applied).
    fn collect<'py>(
        py: Python<'py>,
        vars: &[(&'a [u8], &'a [u8])],
    ) -> PyResult<(Found<'a>, Bound<'py, PyList>)> {
        let mut f = Found::default();
        let headers = PyList::empty(py);
        for &(k, v) in vars {
            match k {
                b"REQUEST_METHOD" => f.method = v,
                b"SCRIPT_NAME" => f.script_name = v,
                b"PATH_INFO" => f.path_info = v,
                b"QUERY_STRING" => f.query = v,
                b"REQUEST_URI" => f.request_uri = v,
                b"SERVER_PROTOCOL" => f.protocol = v,
                b"HTTPS" => f.https |= truthy(v),
                b"REQUEST_SCHEME" => f.https |= v == b"https",
                b"UWSGI_SCHEME" => f.https = v == b"https",
                b"SERVER_NAME" => f.server_name = v,
                b"SERVER_ADDR" => f.server_addr = v,
                b"SERVER_PORT" => f.server_port = v,
                b"REMOTE_ADDR" => f.remote_addr = v,
                b"REMOTE_PORT" => f.remote_port = v,
                b"HTTP_SEC_WEBSOCKET_PROTOCOL" => f
                    .subprotocols
                    .extend(v.split(|&b| b == b',').map(<[u8]>::trim_ascii)),
                _ => {}
            }
            if environ::dropped(k) {
                continue;
            }
            if let Some(name) = header_name(k) {
                headers.append(PyTuple::new(
                    py,
                    [PyBytes::new(py, &name), PyBytes::new(py, v)],
                )?)?;
            }
        }
        Ok((f, headers))
    }
}

fn truthy(v: &[u8]) -> bool {
    v.eq_ignore_ascii_case(b"on") || v == b"1" || v.eq_ignore_ascii_case(b"true")
}

/// The header name a CGI variable stands for (`HTTP_X_FOO` -> `x-foo`), None for the rest.
/// nginx (and our `http_header_var`) never make a variable from a name holding `_`, so turning
/// `_` back into `-` is exact.
pub(crate) fn header_name(key: &[u8]) -> Option<Vec<u8>> {
    if key == b"CONTENT_TYPE" {
        return Some(b"content-type".to_vec());
    }
    if key == b"CONTENT_LENGTH" {
        return Some(b"content-length".to_vec());
    }
    let rest = key.strip_prefix(b"HTTP_")?;
    if rest.is_empty() {
        return None;
    }
    Some(
        rest.iter()
            .map(|&b| {
                if b == b'_' {
                    b'-'
                } else {
                    b.to_ascii_lowercase()
                }
            })
            .collect(),
    )
}

/// UTF-8 text as ASGI wants it for `path` and `root_path`; bytes that are not UTF-8 are taken
/// as latin-1, as WSGI would, rather than refusing the request.
fn text<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    match std::str::from_utf8(bytes) {
        Ok(s) => PyString::new(py, s),
        Err(_) => PyString::new(
            py,
            &bytes.iter().map(|&b| char::from(b)).collect::<String>(),
        ),
    }
}

fn port(v: &[u8]) -> Option<u16> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

static ASGI_HTTP: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

/// `{"version": "3.0", "spec_version": "2.5"}`, copied per scope (an app may write to it).
fn asgi_version<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let template = ASGI_HTTP.get_or_try_init(py, || -> PyResult<Py<PyDict>> {
        let d = PyDict::new(py);
        d.set_item("version", "3.0")?;
        d.set_item("spec_version", "2.5")?;
        Ok(d.unbind())
    })?;
    template.bind(py).copy()
}

/// Builds the scope of one connection. `state` is the app's lifespan state (copied, so a
/// request cannot change what the next one sees); `files` advertises pathsend/zerocopysend.
pub(crate) fn build<'py>(
    py: Python<'py>,
    kind: Kind,
    vars: &[(&[u8], &[u8])],
    state: Option<&Bound<'py, PyDict>>,
    files: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let (f, headers) = Found::collect(py, vars)?;
    let scope = PyDict::new(py);
    let websocket = kind == Kind::WebSocket;
    scope.set_item(
        intern!(py, "type"),
        if websocket {
            intern!(py, "websocket")
        } else {
            intern!(py, "http")
        },
    )?;
    scope.set_item(intern!(py, "asgi"), asgi_version(py)?)?;
    let version = match f.protocol {
        b"HTTP/1.0" => intern!(py, "1.0"),
        b"HTTP/2.0" | b"HTTP/2" => intern!(py, "2"),
        b"HTTP/3.0" | b"HTTP/3" => intern!(py, "3"),
        _ => intern!(py, "1.1"),
    };
    scope.set_item(intern!(py, "http_version"), version)?;
    let scheme = match (websocket, f.https) {
        (false, false) => intern!(py, "http"),
        (false, true) => intern!(py, "https"),
        (true, false) => intern!(py, "ws"),
        (true, true) => intern!(py, "wss"),
    };
    scope.set_item(intern!(py, "scheme"), scheme)?;
    if !websocket {
        scope.set_item(intern!(py, "method"), text(py, f.method))?;
    }
    let mut path = Vec::with_capacity(f.script_name.len() + f.path_info.len());
    path.extend_from_slice(f.script_name);
    path.extend_from_slice(f.path_info);
    if path.is_empty() {
        path.push(b'/');
    }
    scope.set_item(intern!(py, "path"), text(py, &path))?;
    let raw_path = match f.request_uri.iter().position(|&b| b == b'?') {
        Some(i) => &f.request_uri[..i],
        None => f.request_uri,
    };
    scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, raw_path))?;
    scope.set_item(intern!(py, "query_string"), PyBytes::new(py, f.query))?;
    scope.set_item(intern!(py, "root_path"), text(py, f.script_name))?;
    scope.set_item(intern!(py, "headers"), headers)?;
    set_addresses(py, &scope, &f)?;
    if websocket {
        let protocols = PyList::empty(py);
        for p in f.subprotocols.iter().filter(|p| !p.is_empty()) {
            protocols.append(text(py, p))?;
        }
        scope.set_item(intern!(py, "subprotocols"), protocols)?;
    }
    if let Some(state) = state {
        scope.set_item(intern!(py, "state"), state.copy()?)?;
    }
    let extensions = PyDict::new(py);
    if files && !websocket {
        extensions.set_item("http.response.pathsend", PyDict::new(py))?;
        extensions.set_item("http.response.zerocopysend", PyDict::new(py))?;
    }
    scope.set_item(intern!(py, "extensions"), extensions)?;
    Ok(scope)
}

/// `client` and `server`: (host, port) pairs, or None when the port is unknown.
fn set_addresses(py: Python<'_>, scope: &Bound<'_, PyDict>, f: &Found<'_>) -> PyResult<()> {
    let client = port(f.remote_port).filter(|_| !f.remote_addr.is_empty());
    match client {
        Some(p) => scope.set_item(intern!(py, "client"), (text(py, f.remote_addr), p))?,
        None => scope.set_item(intern!(py, "client"), py.None())?,
    }
    let host = if f.server_addr.is_empty() {
        f.server_name
    } else {
        f.server_addr
    };
    match port(f.server_port) {
        Some(p) => scope.set_item(intern!(py, "server"), (text(py, host), p))?,
        None => scope.set_item(intern!(py, "server"), py.None())?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_from_cgi_variables() {
        assert_eq!(header_name(b"HTTP_X_FOO").as_deref(), Some(&b"x-foo"[..]));
        assert_eq!(header_name(b"HTTP_HOST").as_deref(), Some(&b"host"[..]));
        assert_eq!(
            header_name(b"CONTENT_TYPE").as_deref(),
            Some(&b"content-type"[..])
        );
        assert_eq!(header_name(b"HTTP_"), None);
        assert_eq!(header_name(b"REQUEST_METHOD"), None);
        assert_eq!(header_name(b"SERVER_NAME"), None);
    }
}
