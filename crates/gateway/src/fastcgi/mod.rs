//! FastCGI 1.0, the responder role (FastCGI Specification, Open Market, 1996): the web server
//! sends a request as records on one connection, the application answers with records.
//!
//! ```text
//! record: version=1 | type | request id (u16 BE) | content length (u16 BE) | padding length | 0
//!         content (0..=65,535 bytes) | padding (0..=255 bytes, ignored)
//!
//! web server -> worker   BEGIN_REQUEST(id, role RESPONDER, flags)
//!                        PARAMS(id, name-value pairs) ... PARAMS(id, empty)   = CGI variables
//!                        STDIN(id, body bytes) ... STDIN(id, empty)            = request body
//! worker -> web server   STDOUT(id, "Status: 200 OK\r\n" headers "\r\n" body) ... STDOUT(id, empty)
//!                        END_REQUEST(id, app status 0, REQUEST_COMPLETE)
//! ```
//!
//! The layers, lowest first:
//! - [`parse_record`] / [`record_len`]: framing only, one record at a time.
//! - [`parse_params`]: the name-value pairs of a whole PARAMS stream (1- or 4-byte lengths).
//! - [`Responder`]: the per-connection rules of the spec for an application that serves one
//!   request at a time, turning records into [`Event`]s (begin, params, body, end, abort) and
//!   telling the caller which management answers to write.
//! - Encoders for everything a responder writes ([`encode_stdout`], [`encode_end_request`],
//!   [`encode_get_values_result`], [`encode_unknown_type`]) and, for front ends and tests, what a
//!   web server writes ([`encode_begin_request`], [`encode_params`], [`encode_stream`]).
//!
//! Policy decisions, taken here so that every worker behaves the same:
//! - **No multiplexing.** A BEGIN_REQUEST for another id while a request is active is answered
//!   `END_REQUEST(FCGI_CANT_MPX_CONN)` and the active request goes on; `FCGI_MPXS_CONNS` is `0`.
//!   nginx (always id 1) and httpd (always id 1) never multiplex.
//! - **Responder only.** A BEGIN_REQUEST for another role (authorizer, filter) is answered
//!   `END_REQUEST(FCGI_UNKNOWN_ROLE)`.
//! - **Unknown record types** get `FCGI_UNKNOWN_TYPE` (spec 4.2), whatever their request id.
//! - **Records of an inactive request id are ignored** (spec 3.3, "Managing Request IDs").
//! - **Anything else out of order** (STDIN before the PARAMS stream ended, a record type only an
//!   application sends, a second stream end) is an [`Error`]: the caller closes the connection.
//! - **FCGI_KEEP_CONN** is reported ([`Event::Begin`]) and the state machine can serve the next
//!   request after [`Responder::end_request`]. Whether a worker keeps the connection open is its
//!   choice; see the crate README for the one rwsgi-worker makes.

use std::fmt;

mod params;
mod record;
mod responder;

pub use params::{encode_pair, parse_params, Pairs};
pub use record::{
    encode_begin_request, encode_end_request, encode_get_values, encode_get_values_result,
    encode_params, encode_record, encode_stdout, encode_stream, encode_unknown_type, parse_record,
    record_header, record_len, Header, Record,
};
pub use responder::{Event, Responder};

/// The protocol version every record carries (`FCGI_VERSION_1`).
pub const VERSION_1: u8 = 1;

/// Length of the fixed record header.
pub const HEADER_LEN: usize = 8;

/// Largest record content: the 16-bit content length field.
pub const MAX_CONTENT_LEN: usize = 65_535;

/// Largest whole record: header, content and the largest padding (8-bit field).
pub const MAX_RECORD_LEN: usize = HEADER_LEN + MAX_CONTENT_LEN + 255;

/// Largest name or value length a name-value pair can carry (31-bit length).
pub const MAX_PAIR_FIELD_LEN: usize = 0x7fff_ffff;

/// Request id of management records (`FCGI_NULL_REQUEST_ID`).
pub const NULL_REQUEST_ID: u16 = 0;

/// The `FCGI_KEEP_CONN` bit of BEGIN_REQUEST's flags.
pub const KEEP_CONN: u8 = 1;

/// Record types (`FCGI_BEGIN_REQUEST` = 1 ... `FCGI_UNKNOWN_TYPE` = 11).
pub mod kind {
    pub const BEGIN_REQUEST: u8 = 1;
    pub const ABORT_REQUEST: u8 = 2;
    pub const END_REQUEST: u8 = 3;
    pub const PARAMS: u8 = 4;
    pub const STDIN: u8 = 5;
    pub const STDOUT: u8 = 6;
    pub const STDERR: u8 = 7;
    pub const DATA: u8 = 8;
    pub const GET_VALUES: u8 = 9;
    pub const GET_VALUES_RESULT: u8 = 10;
    pub const UNKNOWN_TYPE: u8 = 11;
}

/// Roles a BEGIN_REQUEST asks for.
pub mod role {
    pub const RESPONDER: u16 = 1;
    pub const AUTHORIZER: u16 = 2;
    pub const FILTER: u16 = 3;
}

/// `protocolStatus` of END_REQUEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ProtocolStatus {
    /// Normal end of the request (also the answer to ABORT_REQUEST).
    RequestComplete = 0,
    /// Refusing a second concurrent request on one connection.
    CantMpxConn = 1,
    /// Refusing a request for lack of a resource.
    Overloaded = 2,
    /// Refusing a role other than responder.
    UnknownRole = 3,
}

/// Why a FastCGI stream or record was refused. None of these is cured by reading more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// A record whose version byte is not 1.
    BadVersion,
    /// A BEGIN_REQUEST whose body is not 8 bytes.
    BadBeginRequest,
    /// A record not allowed where it came: a stream record out of order, a second BEGIN_REQUEST
    /// for the active id, or a type only an application sends (STDOUT, END_REQUEST...).
    UnexpectedRecord,
    /// The PARAMS stream is longer than the limit given to [`Responder::new`].
    ParamsTooLarge,
    /// A name-value pair with an empty name.
    EmptyName,
    /// A name-value length runs past the end of the block.
    Truncated,
    /// More name-value pairs than the caller's storage holds.
    TooManyVars,
    /// Encoder: record content over [`MAX_CONTENT_LEN`] bytes.
    ContentTooLong,
    /// Encoder: a name or value over [`MAX_PAIR_FIELD_LEN`] bytes.
    FieldTooLong,
}

impl Error {
    /// A short, stable description (also the `Display` text).
    pub fn as_str(&self) -> &'static str {
        match self {
            Error::BadVersion => "FastCGI record version is not 1",
            Error::BadBeginRequest => "FastCGI BEGIN_REQUEST body is not 8 bytes",
            Error::UnexpectedRecord => "FastCGI record out of order or of the wrong direction",
            Error::ParamsTooLarge => "FastCGI PARAMS stream too large",
            Error::EmptyName => "FastCGI name-value pair with an empty name",
            Error::Truncated => "FastCGI name-value length runs past the block",
            Error::TooManyVars => "too many FastCGI params",
            Error::ContentTooLong => "FastCGI record content longer than 65535 bytes",
            Error::FieldTooLong => "FastCGI name or value longer than 2^31-1 bytes",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Error {}
