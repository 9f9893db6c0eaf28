//! What an app passes to `send()`, read and checked in Rust before anything reaches a transport.
//!
//! The checks are the WSGI host's (response.rs): a header name that is not an RFC 9110 token or
//! a value with CR, LF, NUL or another control character raises in the app, so a header
//! injection never reaches the client. Hop-by-hop headers are dropped instead of refused: the
//! server owns the connection's framing, and ASGI (unlike PEP 3333) does not forbid them, so
//! apps written for uvicorn may send `Connection`; nginx drops them the same way.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyString};

use crate::response::check_header;

/// A parsed `send()` message.
pub(crate) enum Msg<'py> {
    Start {
        status: u16,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
        trailers: bool,
    },
    Body {
        body: Bytes<'py>,
        more: bool,
    },
    PathSend {
        path: String,
    },
    ZeroCopy {
        file: Bound<'py, PyAny>,
        offset: Option<u64>,
        count: Option<u64>,
        more: bool,
    },
    Trailers,
    WsAccept {
        subprotocol: Option<String>,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
    },
    WsSend {
        bytes: Option<Bytes<'py>>,
        text: Option<Bound<'py, PyString>>,
    },
    WsClose {
        code: u16,
        reason: String,
    },
    StartupComplete,
    StartupFailed(String),
    ShutdownComplete,
    ShutdownFailed(String),
    /// A type this server does not know (or not for this scope): the caller raises.
    Unknown(String),
}

/// A body: bytes or bytearray, borrowed from Python.
pub(crate) enum Bytes<'py> {
    Bytes(Bound<'py, PyBytes>),
    Array(Bound<'py, PyByteArray>),
}

impl Bytes<'_> {
    /// The bytes. For a bytearray this copies (the app could resize it while we look).
    pub(crate) fn to_cow(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Bytes::Bytes(b) => std::borrow::Cow::Borrowed(b.as_bytes()),
            Bytes::Array(a) => std::borrow::Cow::Owned(a.to_vec()),
        }
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

fn bytes_of<'py>(what: &str, obj: Bound<'py, PyAny>) -> PyResult<Bytes<'py>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Bytes::Bytes(b.clone()));
    }
    if let Ok(a) = obj.cast::<PyByteArray>() {
        return Ok(Bytes::Array(a.clone()));
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be bytes, not {}",
        type_name(&obj)
    )))
}

/// PEP 3333's hop-by-hop list (response.rs refuses these for WSGI; here they are dropped).
fn hop_by_hop(name: &[u8]) -> bool {
    [
        &b"connection"[..],
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// The `headers` of a start or accept message: an iterable of `[name, value]` byte pairs.
fn headers(obj: Option<Bound<'_, PyAny>>) -> PyResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let Some(obj) = obj else { return Ok(out) };
    for item in obj.try_iter()? {
        let item = item?;
        let mut pair = item.try_iter().map_err(|_| {
            PyTypeError::new_err("each response header must be a [name, value] pair of bytes")
        })?;
        let (Some(name), Some(value), None) = (pair.next(), pair.next(), pair.next()) else {
            return Err(PyTypeError::new_err(
                "each response header must be a [name, value] pair of bytes",
            ));
        };
        let name = bytes_of("header name", name?)?.to_cow().into_owned();
        let value = bytes_of("header value", value?)?.to_cow().into_owned();
        if hop_by_hop(&name) {
            continue;
        }
        check_header(&name, &value).map_err(PyValueError::new_err)?;
        out.push((name, value));
    }
    Ok(out)
}

fn get<'py>(
    d: &Bound<'py, PyDict>,
    key: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    Ok(d.get_item(key)?.filter(|v| !v.is_none()))
}

fn flag(d: &Bound<'_, PyDict>, key: &Bound<'_, PyString>) -> PyResult<bool> {
    match get(d, key)? {
        Some(v) => v.is_truthy(),
        None => Ok(false),
    }
}

fn text_field(d: &Bound<'_, PyDict>, key: &Bound<'_, PyString>) -> PyResult<String> {
    match get(d, key)? {
        Some(v) => Ok(v.str()?.to_cow()?.into_owned()),
        None => Ok(String::new()),
    }
}

fn u64_field(d: &Bound<'_, PyDict>, key: &Bound<'_, PyString>) -> PyResult<Option<u64>> {
    get(d, key)?.map(|v| v.extract::<u64>()).transpose()
}

/// Reads one message. Errors are the app's mistakes, raised from its `send()`.
pub(crate) fn parse<'py>(msg: &Bound<'py, PyAny>) -> PyResult<Msg<'py>> {
    let py = msg.py();
    let d = msg.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(format!(
            "an ASGI message must be a dict, not {}",
            type_name(msg)
        ))
    })?;
    let Some(ty) = get(d, intern!(py, "type"))? else {
        return Err(PyValueError::new_err("an ASGI message needs a \"type\""));
    };
    let ty = ty
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("an ASGI message's \"type\" must be a str"))?;
    let msg = match &*ty.to_cow()? {
        "http.response.start" => {
            let status = match get(d, intern!(py, "status"))? {
                Some(s) => s.extract::<i64>().map_err(|_| {
                    PyTypeError::new_err("http.response.start: \"status\" must be an int")
                })?,
                None => {
                    return Err(PyValueError::new_err(
                        "http.response.start needs a \"status\"",
                    ))
                }
            };
            let status = u16::try_from(status)
                .ok()
                .filter(|s| (100..=999).contains(s))
                .ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "http.response.start: status {status} is not 100-999"
                    ))
                })?;
            Msg::Start {
                status,
                headers: headers(get(d, intern!(py, "headers"))?)?,
                trailers: flag(d, intern!(py, "trailers"))?,
            }
        }
        "http.response.body" => Msg::Body {
            body: match get(d, intern!(py, "body"))? {
                Some(b) => bytes_of("http.response.body: \"body\"", b)?,
                None => Bytes::Bytes(PyBytes::new(py, b"")),
            },
            more: flag(d, intern!(py, "more_body"))?,
        },
        "http.response.pathsend" => Msg::PathSend {
            path: match get(d, intern!(py, "path"))? {
                Some(p) => p.extract::<String>().map_err(|_| {
                    PyTypeError::new_err("http.response.pathsend: \"path\" must be a str")
                })?,
                None => {
                    return Err(PyValueError::new_err(
                        "http.response.pathsend needs a \"path\"",
                    ))
                }
            },
        },
        "http.response.zerocopysend" => Msg::ZeroCopy {
            file: get(d, intern!(py, "file"))?.ok_or_else(|| {
                PyValueError::new_err("http.response.zerocopysend needs a \"file\"")
            })?,
            offset: u64_field(d, intern!(py, "offset"))?,
            count: u64_field(d, intern!(py, "count"))?,
            more: flag(d, intern!(py, "more_body"))?,
        },
        "http.response.trailers" => Msg::Trailers,
        "websocket.accept" => Msg::WsAccept {
            subprotocol: get(d, intern!(py, "subprotocol"))?
                .map(|s| s.extract::<String>())
                .transpose()?,
            headers: headers(get(d, intern!(py, "headers"))?)?,
        },
        "websocket.send" => Msg::WsSend {
            bytes: get(d, intern!(py, "bytes"))?
                .map(|b| bytes_of("websocket.send: \"bytes\"", b))
                .transpose()?,
            text: get(d, intern!(py, "text"))?
                .map(|t| {
                    t.cast_into::<PyString>()
                        .map_err(|_| PyTypeError::new_err("websocket.send: \"text\" must be a str"))
                })
                .transpose()?,
        },
        "websocket.close" => Msg::WsClose {
            code: match get(d, intern!(py, "code"))? {
                Some(c) => c.extract::<u16>()?,
                None => 1000,
            },
            reason: text_field(d, intern!(py, "reason"))?,
        },
        "lifespan.startup.complete" => Msg::StartupComplete,
        "lifespan.startup.failed" => Msg::StartupFailed(text_field(d, intern!(py, "message"))?),
        "lifespan.shutdown.complete" => Msg::ShutdownComplete,
        "lifespan.shutdown.failed" => Msg::ShutdownFailed(text_field(d, intern!(py, "message"))?),
        other => Msg::Unknown(other.to_string()),
    };
    Ok(msg)
}

/// The standard reason phrase of a status code (RFC 9110 and friends), for the status line.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        511 => "Network Authentication Required",
        _ => "Unknown",
    }
}

/// `"NNN Reason"`, as the transports' `Head::status_line` carries it.
pub(crate) fn status_line(status: u16) -> Vec<u8> {
    format!("{status} {}", reason(status)).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_carry_the_standard_reason() {
        assert_eq!(status_line(200), b"200 OK");
        assert_eq!(status_line(404), b"404 Not Found");
        assert_eq!(status_line(599), b"599 Unknown");
        assert!(crate::response::parse_status(&status_line(418)).is_ok());
    }

    #[test]
    fn hop_by_hop_names() {
        assert!(hop_by_hop(b"Connection"));
        assert!(hop_by_hop(b"transfer-encoding"));
        assert!(!hop_by_hop(b"content-length"));
    }
}
