//! The uwsgi wire protocol: a push parser and encoder in httparse's shape, with no I/O, no
//! dependencies and no allocation in the parsers.
//!
//! A request packet (front-end -> worker) is a 4-byte header followed by a block of vars:
//!
//! ```text
//! offset size  field
//! 0      1     modifier1 (u8)
//! 1      2     size of the vars block only (u16, little-endian)
//! 3      1     modifier2 (u8)
//! 4      n     vars: u16 LE key length, key, u16 LE value length, value; repeated
//! 4+n    ...   raw request body, CONTENT_LENGTH bytes, no framing
//! ```
//!
//! The response (worker -> front-end) has no uwsgi framing: it is a plain HTTP/1.x head
//! (`HTTP/1.1 200 OK\r\n` + headers + blank line), then the body, then the worker closes the
//! connection. [`ResponseHead`] parses that head on the front-end side and
//! [`encode_response_head`] writes it on the worker side.
//!
//! ```
//! use uwsgi::{encode_request, Request, Status, EMPTY_VAR};
//!
//! // Front-end: encode the packet (the body, CONTENT_LENGTH bytes, is written after it).
//! let mut packet = Vec::new();
//! let vars: [(&[u8], &[u8]); 2] = [(b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", b"/")];
//! let n = encode_request(0, 0, vars, &mut packet)?;
//!
//! // Worker: parse from whatever has been read so far.
//! let mut storage = [EMPTY_VAR; 64];
//! let mut req = Request::new(&mut storage);
//! assert_eq!(req.parse(&packet[..3])?, Status::Partial);
//! assert_eq!(req.parse(&packet)?, Status::Complete(n));
//! assert_eq!(req.get(b"PATH_INFO"), Some(&b"/"[..]));
//! # Ok::<(), uwsgi::Error>(())
//! ```
//!
//! Invariants every caller can rely on:
//! - the parsers never panic and never allocate; they return [`Status::Partial`] until the
//!   buffer holds the whole unit (vars block or head), then [`Status::Complete`] with the
//!   number of bytes it occupies;
//! - the encoders never truncate or wrap a length: a vars block over [`MAX_VARS_BLOCK`]
//!   bytes is [`Error::VarsTooLarge`] (Apache's mod_proxy_uwsgi once wrapped the 16-bit size,
//!   CVE-2020-11984), more than [`MAX_VARS`] vars is [`Error::TooManyVars`], and on any error
//!   the output buffer is left as it was.
//!
//! [`contract`] defines the vars rwsgi's own front ends and its worker add to the protocol
//! (request start time, the abort mark, the form of PATH_INFO).

use std::fmt;

pub mod contract;
mod request;
mod response;

pub use request::{encode_request, find_var, packet_len, Request};
pub use response::{encode_response_head, is_header_name, is_header_value, ResponseHead};

/// Length of the fixed request packet header (modifier1, u16 size, modifier2).
pub const HEADER_LEN: usize = 4;

/// Largest vars block the 16-bit size field can describe.
pub const MAX_VARS_BLOCK: usize = 65_535;

/// Largest key or value: each is preceded by a 16-bit length.
pub const MAX_FIELD_LEN: usize = 65_535;

/// Most vars one request packet may carry. The format itself has no count, but a receiver
/// must bound what it stores: rwsgi's worker takes up to this many (a browser request through
/// nginx has about 30; uWSGI's own default is 64), and [`encode_request`] refuses more with
/// [`Error::TooManyVars`], so that our front ends answer 431 instead of sending a packet the
/// worker would refuse.
pub const MAX_VARS: usize = 512;

/// Outcome of a successful parse step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// The whole unit was parsed; `T` is usually the number of bytes it occupied.
    Complete(T),
    /// The buffer ends before the unit does: read more bytes and parse again from the start.
    Partial,
}

impl<T> Status<T> {
    /// True for [`Status::Complete`].
    pub fn is_complete(&self) -> bool {
        matches!(self, Status::Complete(_))
    }

    /// True for [`Status::Partial`].
    pub fn is_partial(&self) -> bool {
        matches!(self, Status::Partial)
    }
}

/// Why a packet or head was refused. None of these is recoverable by reading more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// A var with a zero-length key (uWSGI: "uwsgi key cannot be null").
    EmptyKey,
    /// A key or value length runs past the end of the vars block.
    Truncated,
    /// More vars than the caller's storage holds (parser), or more than [`MAX_VARS`]
    /// (encoder).
    TooManyVars,
    /// The encoded vars block would exceed [`MAX_VARS_BLOCK`] bytes.
    VarsTooLarge,
    /// A key or value longer than [`MAX_FIELD_LEN`] bytes.
    FieldTooLong,
    /// The response status line is not `HTTP/1.x NNN [reason]`.
    BadStatusLine,
    /// A response header has a non-token name or a value with control characters.
    BadHeader,
    /// More response headers than the caller's storage holds.
    TooManyHeaders,
}

impl Error {
    /// A short, stable description (also the `Display` text).
    pub fn as_str(&self) -> &'static str {
        match self {
            Error::EmptyKey => "uwsgi var with an empty key",
            Error::Truncated => "uwsgi var length runs past the vars block",
            Error::TooManyVars => "too many uwsgi vars",
            Error::VarsTooLarge => "uwsgi vars block larger than 65535 bytes",
            Error::FieldTooLong => "uwsgi key or value longer than 65535 bytes",
            Error::BadStatusLine => "invalid response status line",
            Error::BadHeader => "invalid response header",
            Error::TooManyHeaders => "too many response headers",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Error {}

/// One key/value pair: a uwsgi var, or a response header (name, value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Var<'b> {
    pub key: &'b [u8],
    pub value: &'b [u8],
}

/// An empty var, to initialise caller storage: `[EMPTY_VAR; 64]`.
pub const EMPTY_VAR: Var<'static> = Var {
    key: b"",
    value: b"",
};
