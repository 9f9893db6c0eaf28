//! The wire side of a connection, one file per gateway protocol (same functions in each):
//! reading the request head, parsing its vars, finding one var, and what the body and the
//! response look like on the wire. Everything between (the environ, routing, the secret, the
//! app, the 431/503/504 answers, how a response ends) is `conn.rs`, the same for all three.
//!
//! | protocol | request head | body | response |
//! |---|---|---|---|
//! | uwsgi (`uwsgi.rs`) | 4-byte header + vars block | `CONTENT_LENGTH` raw bytes | `HTTP/1.1` head, raw body, close |
//! | SCGI (`scgi.rs`) | netstring of NUL-separated vars | `CONTENT_LENGTH` raw bytes | CGI head (`Status:`), raw body, close |
//! | FastCGI (`fastcgi.rs`) | BEGIN_REQUEST + PARAMS records | STDIN records up to the empty one | CGI head and body in STDOUT records, empty STDOUT, END_REQUEST, close |
//!
//! The parsers are the `uwsgi` and `gateway` crates' (push parsers, no I/O, fuzzed); the files
//! here do the I/O around them. The body ([`crate::body::Inbound`]) and the response writer
//! ([`crate::respond::SocketResponder`]) take the protocol's framing from [`Head::body`] and
//! [`Head::framing`].

mod fastcgi;
mod scgi;
mod uwsgi;

use std::io;

use ::uwsgi::Var;

use crate::body::Source;
use crate::config::Protocol;
use crate::respond::Framing;
use crate::stream::Stream;

pub(crate) use fastcgi::{
    abort_answer, abort_record, end_records, stdout_headers, FirstRequestId, StdinRecords,
};

/// Why a connection was closed without an answer (or, for [`Bad::TooManyVars`], answered 431).
#[derive(Debug)]
pub(crate) enum Bad {
    Eof(usize),
    Timeout(usize),
    Io(io::Error),
    Uwsgi(::uwsgi::Error),
    Modifier(u8, u8),
    Scgi(gateway::scgi::Error),
    FastCgi(gateway::fastcgi::Error),
    /// More vars than the worker takes ([`::uwsgi::MAX_VARS`]): answered 431.
    TooManyVars,
    ContentLength,
    NoApp,
    /// Without the group's secret (`RWSGI_SECRET` missing or wrong).
    Origin,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Eof(n) => write!(f, "connection closed after {n} bytes of the request head"),
            Bad::Timeout(n) => write!(f, "timed out reading the request head ({n} bytes so far)"),
            Bad::Io(e) => write!(f, "reading the request head: {e}"),
            Bad::Uwsgi(e) => write!(f, "malformed uwsgi packet: {e}"),
            Bad::Modifier(m1, m2) => {
                write!(f, "unsupported uwsgi modifiers {m1}/{m2} (only 0 = WSGI)")
            }
            Bad::Scgi(e) => write!(f, "malformed SCGI request: {e}"),
            Bad::FastCgi(e) => write!(f, "malformed FastCGI request: {e}"),
            Bad::TooManyVars => write!(f, "more than {} vars", ::uwsgi::MAX_VARS),
            Bad::ContentLength => f.write_str("invalid or conflicting CONTENT_LENGTH"),
            Bad::NoApp => f.write_str("no application configured"),
            Bad::Origin => f.write_str("the request does not carry the group's secret"),
        }
    }
}

/// A whole answer of the worker's or the supervisor's own (the app does not run), framed for
/// `protocol`; `request_id` is FastCGI's. Statuses and headers are ours, so they encode.
pub(crate) fn own_answer(
    protocol: Protocol,
    request_id: u16,
    status_line: &[u8],
    headers: &[(&[u8], &[u8])],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    let headers = headers.iter().copied();
    let encoded = match protocol {
        Protocol::Uwsgi => ::uwsgi::encode_response_head(status_line, headers, &mut out),
        Protocol::Scgi | Protocol::FastCgi => {
            gateway::cgi::encode_head(status_line, headers, &mut out)
        }
    };
    debug_assert!(encoded.is_ok(), "our own answers encode");
    out.extend_from_slice(body);
    if protocol == Protocol::FastCgi {
        let mut records = Vec::with_capacity(out.len() + 64);
        gateway::fastcgi::encode_stdout(request_id, &out, &mut records);
        end_records(request_id, &mut records);
        return records;
    }
    out
}

/// A read error while waiting for the head, as a refusal.
fn read_error(e: io::Error, filled: usize) -> Bad {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Bad::Timeout(filled),
        _ => Bad::Io(e),
    }
}

/// Reads into `buf` until it holds a whole head of a length-prefixed protocol (uwsgi, SCGI):
/// `head_len` says, from what is in so far, how long the head is (`None`: not known yet; an
/// error refuses it at once). Returns the bytes read (the head and maybe the body's start) and
/// the head's length; `None` at EOF before the first byte. `buf` grows to the head's length,
/// at least 8 KiB (so the body's start comes along), at most `max`.
fn read_prefixed(
    mut stream: &Stream,
    buf: &mut Vec<u8>,
    max: usize,
    head_len: impl Fn(&[u8]) -> Result<Option<usize>, Bad>,
) -> Result<Option<(usize, usize)>, Bad> {
    use std::io::Read;
    let mut filled = 0;
    loop {
        let need = head_len(&buf[..filled])?;
        if let Some(need) = need.filter(|n| filled >= *n) {
            return Ok(Some((filled, need)));
        }
        // Unknown yet: a length prefix fits in 16 bytes in both protocols.
        let want = need.unwrap_or(filled + 16).clamp(8192, max);
        if buf.len() < want {
            buf.resize(want, 0);
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(Bad::Eof(filled)),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(e, filled)),
        }
    }
}

/// Parses vars into `small` (room for a typical request, on the caller's stack) or, when they
/// do not fit, again into `large` (the full limit, [`::uwsgi::MAX_VARS`], on the heap). `parse`
/// is the protocol's parser over one storage, [`Bad::TooManyVars`] when it is too small.
fn parse_in<'p, 's>(
    small: &'s mut [Var<'p>],
    large: &'s mut Vec<Var<'p>>,
    parse: impl Fn(&'s mut [Var<'p>]) -> Result<&'s [Var<'p>], Bad>,
) -> Result<&'s [Var<'p>], Bad> {
    match parse(small) {
        Err(Bad::TooManyVars) => {
            *large = vec![::uwsgi::EMPTY_VAR; ::uwsgi::MAX_VARS];
            parse(large)
        }
        parsed => parsed,
    }
}

/// A request head, read whole, borrowed from the connection's buffers.
pub(crate) enum Head<'b> {
    /// The packet (header and vars block) and the bytes read after it (the body's start).
    Uwsgi { packet: &'b [u8], rest: &'b [u8] },
    /// The netstring (length, block, comma) and the bytes read after it (the body's start).
    Scgi { netstring: &'b [u8], rest: &'b [u8] },
    /// The PARAMS stream, the records read after its end (STDIN ones), and the connection's
    /// state machine, now in the request's STDIN phase.
    FastCgi {
        params: &'b [u8],
        rest: &'b [u8],
        request_id: u16,
        conn: gateway::fastcgi::Responder,
    },
}

/// The connection's reusable buffers the head is read into.
pub(crate) struct Buffers<'b> {
    /// What was read off the socket.
    pub read: &'b mut Vec<u8>,
    /// FastCGI: the PARAMS stream, put together from its records.
    pub params: &'b mut Vec<u8>,
}

/// Reads the request head of `protocol` off `stream`. `Ok(None)`: the front end connected and
/// closed without a request (a health check), or FastCGI's front end aborted before the params
/// ended; nothing to answer.
pub(crate) fn read_head<'b>(
    protocol: Protocol,
    stream: &Stream,
    bufs: Buffers<'b>,
) -> Result<Option<Head<'b>>, Bad> {
    match protocol {
        Protocol::Uwsgi => uwsgi::read_head(stream, bufs.read),
        Protocol::Scgi => scgi::read_head(stream, bufs.read),
        Protocol::FastCgi => fastcgi::read_head(stream, bufs),
    }
}

impl<'b> Head<'b> {
    pub fn protocol(&self) -> Protocol {
        match self {
            Head::Uwsgi { .. } => Protocol::Uwsgi,
            Head::Scgi { .. } => Protocol::Scgi,
            Head::FastCgi { .. } => Protocol::FastCgi,
        }
    }

    /// The vars, parsed into `small` (room for a typical request, on the caller's stack) or, for
    /// a head with more, into `large` (the full limit, on the heap). [`Bad::TooManyVars`] over
    /// [`::uwsgi::MAX_VARS`].
    pub fn parse_vars<'s>(
        &self,
        small: &'s mut [Var<'b>],
        large: &'s mut Vec<Var<'b>>,
    ) -> Result<&'s [Var<'b>], Bad> {
        match *self {
            Head::Uwsgi { packet, .. } => uwsgi::parse_vars(packet, small, large),
            Head::Scgi { netstring, .. } => scgi::parse_vars(netstring, small, large),
            Head::FastCgi { params, .. } => fastcgi::parse_vars(params, small, large),
        }
    }

    /// The first var named `name`, found without storing the others (for the 431 answer).
    pub fn find_var(&self, name: &[u8]) -> Option<&'b [u8]> {
        match *self {
            Head::Uwsgi { packet, .. } => ::uwsgi::find_var(packet, name),
            Head::Scgi { netstring, .. } => scgi::find_var(netstring, name),
            Head::FastCgi { params, .. } => fastcgi::find_var(params, name),
        }
    }

    /// Where the body comes from: `length` (CONTENT_LENGTH) raw bytes for uwsgi and SCGI, the
    /// STDIN records for FastCGI (whose stream end is the body's end, with or without a length).
    pub fn body(&self, length: u64) -> Source<'b> {
        match self {
            Head::Uwsgi { rest, .. } | Head::Scgi { rest, .. } => Source::raw(rest, length),
            Head::FastCgi { rest, conn, .. } => {
                Source::Records(Box::new(StdinRecords::new(conn.clone(), rest)))
            }
        }
    }

    /// How the response goes on the wire.
    pub fn framing(&self) -> Framing {
        match self {
            Head::Uwsgi { .. } => Framing::Http,
            Head::Scgi { .. } => Framing::Cgi,
            Head::FastCgi { request_id, .. } => Framing::FastCgi {
                request_id: *request_id,
            },
        }
    }
}
