//! The response state that `start_response`, the `write()` callable (start_response.rs) and
//! the iterable loop (run.rs) share: head validation, lazy head sending, Content-Length
//! enforcement.
//!
//! Validation is the security boundary between Python and the HTTP response: a status line or a
//! header with CR, LF, NUL or another control character, a header name that is not an RFC 9110
//! token, or a hop-by-hop header raises in the app (a 500 if uncaught) and nothing is sent.

use std::io;

use pyo3::exceptions::{PyAssertionError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use crate::borrowed::Borrowed;
use crate::{Head, Responder};

/// Response progress, guarded by the scope's output lock.
pub(crate) struct ResponseState {
    /// Set by start_response: numeric status and the status line as given.
    pub(crate) status: Option<(u16, Vec<u8>)>,
    pub(crate) headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) head_sent: bool,
    pub(crate) content_length: Option<u64>,
    sent: u64,
    client_gone: bool,
    /// HEAD requests and 1xx/204/304 responses carry no body whatever Content-Length says.
    head_request: bool,
}

impl ResponseState {
    pub(crate) fn new(head_request: bool) -> Self {
        ResponseState {
            status: None,
            headers: Vec::new(),
            head_sent: false,
            content_length: None,
            sent: 0,
            client_gone: false,
            head_request,
        }
    }

    fn bodiless(&self) -> bool {
        self.head_request || matches!(self.status, Some((s, _)) if s < 200 || s == 204 || s == 304)
    }
}

/// Why a chunk could not be sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The app produced output before calling start_response.
    NotStarted,
    /// The transport failed: the client is gone.
    Gone(io::Error),
}

impl SendError {
    pub(crate) fn into_pyerr(self) -> PyErr {
        match self {
            SendError::NotStarted => PyAssertionError::new_err(
                "response body produced before start_response() was called",
            ),
            SendError::Gone(e) => PyOSError::new_err(format!("client connection lost: {e}")),
        }
    }
}

/// The output half of a request's scope: the transport's responder while the request runs, and
/// the response state. Guarded by the scope's output lock.
pub(crate) struct OutputSide {
    pub(crate) out: Option<Borrowed<dyn Responder + 'static>>,
    pub(crate) state: ResponseState,
}

impl OutputSide {
    /// The live responder, or None after the request ended.
    pub(crate) fn out(&mut self) -> Option<&mut (dyn Responder + 'static)> {
        // SAFETY: as for InputSide::body.
        self.out.as_mut().map(|o| unsafe { &mut *o.0 })
    }

    /// True once start_response has set a status.
    pub(crate) fn started(&self) -> bool {
        self.state.status.is_some()
    }

    pub(crate) fn head_sent(&self) -> bool {
        self.state.head_sent
    }

    /// Send the head if it has not gone out yet.
    pub(crate) fn ensure_head(&mut self) -> Result<(), SendError> {
        if self.state.head_sent {
            return Ok(());
        }
        if self.state.client_gone {
            return Err(SendError::Gone(io::ErrorKind::BrokenPipe.into()));
        }
        let Some((status, line)) = self.state.status.as_ref() else {
            return Err(SendError::NotStarted);
        };
        let head = Head {
            status: *status,
            status_line: line,
            headers: &self.state.headers,
        };
        let Some(out) = self.out.as_mut() else {
            return Err(SendError::Gone(io::ErrorKind::BrokenPipe.into()));
        };
        // SAFETY: see OutputSide::out: live while Some, exclusive under the output lock.
        let result = unsafe { &mut *out.0 }.start(&head);
        self.state.head_sent = true;
        result.map_err(|e| {
            self.state.client_gone = true;
            SendError::Gone(e)
        })
    }

    /// Send one body chunk (the head first if needed), never past Content-Length.
    pub(crate) fn send(&mut self, chunk: &[u8]) -> Result<(), SendError> {
        if chunk.is_empty() {
            // PEP 3333: the head waits for the first non-empty chunk.
            return Ok(());
        }
        self.ensure_head()?;
        let mut chunk = chunk;
        if self.state.bodiless() {
            return Ok(());
        }
        if let Some(cl) = self.state.content_length {
            let room = cl.saturating_sub(self.state.sent);
            if (chunk.len() as u64) > room {
                chunk = &chunk[..room as usize];
            }
            if chunk.is_empty() {
                return Ok(());
            }
        }
        let Some(out) = self.out() else {
            return Err(SendError::Gone(io::ErrorKind::BrokenPipe.into()));
        };
        match out.write(chunk) {
            Ok(()) => {
                self.state.sent += chunk.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.state.client_gone = true;
                Err(SendError::Gone(e))
            }
        }
    }

    /// Bytes the body may still carry (None = unbounded).
    pub(crate) fn room(&self) -> Option<u64> {
        if self.state.bodiless() {
            return Some(0);
        }
        self.state
            .content_length
            .map(|cl| cl.saturating_sub(self.state.sent))
    }

    pub(crate) fn record_sent(&mut self, n: u64) {
        self.state.sent += n;
    }

    pub(crate) fn mark_gone(&mut self) {
        self.state.client_gone = true;
    }

    /// True when the body fell short of its declared Content-Length.
    pub(crate) fn short_body(&self) -> bool {
        !self.state.bodiless()
            && self
                .state
                .content_length
                .is_some_and(|cl| self.state.sent < cl)
    }

    /// Replace whatever start_response set with a plain error response (before the head went out).
    pub(crate) fn set_error_response(&mut self, status: u16, line: &[u8], body_len: usize) {
        self.state.status = Some((status, line.to_vec()));
        self.state.headers = vec![
            (
                b"Content-Type".to_vec(),
                b"text/plain; charset=utf-8".to_vec(),
            ),
            (
                b"Content-Length".to_vec(),
                body_len.to_string().into_bytes(),
            ),
        ];
        self.state.content_length = Some(body_len as u64);
    }
}

/// RFC 9110 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Control characters that may never reach a response head (HTAB is allowed in values).
fn is_forbidden_in_value(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// PEP 3333 forbids hop-by-hop headers from applications; the server owns the connection.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
];

/// A native string (PEP 3333): `str` whose code points all fit in latin-1, as bytes.
fn latin1(what: &str, obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let s = obj.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be str, not {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    let text = s.to_cow()?;
    if text.is_ascii() {
        return Ok(text.as_bytes().to_vec());
    }
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| PyValueError::new_err(format!("{what} {text:?} is not latin-1 encodable")))
}

/// Parse and check `"NNN Reason"`.
pub(crate) fn parse_status(line: &[u8]) -> Result<u16, String> {
    let digits = line.get(..3).filter(|d| d.iter().all(u8::is_ascii_digit));
    let valid_rest = match line.get(3) {
        None => true,
        Some(b' ') => !line[4..]
            .iter()
            .any(|&b| is_forbidden_in_value(b) || b == b'\t'),
        Some(_) => false,
    };
    match digits {
        Some(d) if valid_rest => {
            let code = d
                .iter()
                .fold(0u16, |acc, &b| acc * 10 + u16::from(b - b'0'));
            if code < 100 {
                Err(format!(
                    "status {:?}: the code must be 100-999",
                    String::from_utf8_lossy(line)
                ))
            } else {
                Ok(code)
            }
        }
        _ => Err(format!(
            "invalid status line {:?}: expected \"NNN Reason\" without control characters",
            String::from_utf8_lossy(line)
        )),
    }
}

pub(crate) fn check_header(name: &[u8], value: &[u8]) -> Result<(), String> {
    if name.is_empty() || !name.iter().copied().all(is_token_char) {
        return Err(format!(
            "invalid header name {:?}: must be a token (RFC 9110)",
            String::from_utf8_lossy(name)
        ));
    }
    if value.iter().copied().any(is_forbidden_in_value) {
        return Err(format!(
            "header {:?} has a control character (CR, LF, NUL...) in its value",
            String::from_utf8_lossy(name)
        ));
    }
    let lower = name.to_ascii_lowercase();
    if HOP_BY_HOP.iter().any(|h| h.as_bytes() == lower.as_slice()) {
        return Err(format!(
            "hop-by-hop header {:?} is not allowed from a WSGI application (PEP 3333)",
            String::from_utf8_lossy(name)
        ));
    }
    Ok(())
}

fn parse_content_length(value: &[u8]) -> Result<u64, String> {
    let trimmed = value.trim_ascii();
    if trimmed.is_empty() || !trimmed.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "invalid Content-Length {:?}",
            String::from_utf8_lossy(value)
        ));
    }
    std::str::from_utf8(trimmed)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "Content-Length {:?} is too large",
                String::from_utf8_lossy(value)
            )
        })
}

pub(crate) type Validated = (u16, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>, Option<u64>);

/// Checks what the app passed to `start_response`: (code, status line, headers, Content-Length).
pub(crate) fn validate(
    status: &Bound<'_, PyAny>,
    headers: &Bound<'_, PyAny>,
) -> PyResult<Validated> {
    let line = latin1("status", status)?;
    let code = parse_status(&line).map_err(PyValueError::new_err)?;
    if !headers.is_instance_of::<PyList>() && !headers.is_instance_of::<PyTuple>() {
        return Err(PyTypeError::new_err(
            "response headers must be a list of (name, value) tuples",
        ));
    }
    let mut list = Vec::with_capacity(headers.len().unwrap_or(0));
    let mut content_length = None;
    for item in headers.try_iter()? {
        let item = item?;
        let pair = item
            .cast::<PyTuple>()
            .ok()
            .filter(|t| t.len() == 2)
            .ok_or_else(|| {
                PyTypeError::new_err("each response header must be a (name, value) tuple")
            })?;
        let name = latin1("header name", &pair.get_item(0)?)?;
        let value = latin1("header value", &pair.get_item(1)?)?;
        check_header(&name, &value).map_err(PyValueError::new_err)?;
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length = Some(parse_content_length(&value).map_err(PyValueError::new_err)?);
        }
        list.push((name, value));
    }
    Ok((code, line, list, content_length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"200 OK"), Ok(200));
        assert_eq!(parse_status(b"404"), Ok(404));
        assert_eq!(parse_status(b"599 Custom Thing"), Ok(599));
        for bad in [
            &b"20 OK"[..],
            b"2000 OK",
            b"abc OK",
            b"200\tOK",
            b"200 OK\r\nX: y",
            b"200 O\0K",
            b"099 Low",
            b"",
        ] {
            assert!(
                parse_status(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn headers() {
        assert!(check_header(b"X-Ok", b"a\tb").is_ok());
        assert!(check_header(b"X-Bad", b"a\r\nSet-Cookie: x").is_err());
        assert!(check_header(b"X-Bad", b"a\nb").is_err());
        assert!(check_header(b"X-Bad", b"a\0b").is_err());
        assert!(check_header(b"X-Bad", b"a\x7fb").is_err());
        assert!(check_header(b"Bad Name", b"v").is_err());
        assert!(check_header(b"Bad:Name", b"v").is_err());
        assert!(check_header(b"", b"v").is_err());
        assert!(check_header(b"Transfer-Encoding", b"chunked").is_err());
        assert!(check_header(b"connection", b"close").is_err());
    }

    #[test]
    fn content_length() {
        assert_eq!(parse_content_length(b"42"), Ok(42));
        assert_eq!(parse_content_length(b" 7 "), Ok(7));
        assert!(parse_content_length(b"-1").is_err());
        assert!(parse_content_length(b"1e3").is_err());
        assert!(parse_content_length(b"").is_err());
        assert!(parse_content_length(b"99999999999999999999999").is_err());
    }
}
