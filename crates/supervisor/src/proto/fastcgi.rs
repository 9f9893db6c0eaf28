//! FastCGI, responder role: BEGIN_REQUEST, the PARAMS stream (the CGI variables), the STDIN
//! stream (the body); the answer is STDOUT records holding a CGI head and the body, an empty
//! STDOUT, and END_REQUEST. `gateway::fastcgi::Responder` keeps the connection's rules (record
//! order, one request at a time, management records); this file does its I/O.
//!
//! Choices, the same for every front end:
//! - **One request per connection.** The connection is closed after END_REQUEST even when the
//!   front end set `FCGI_KEEP_CONN`: a kept connection would hold a request thread while idle
//!   (crates/gateway/README.md). nginx (`fastcgi_keep_conn off`, its default) and httpd (unless
//!   `disablereuse=off`) expect that anyway, and both cope with a backend that closes.
//! - **No multiplexing.** A second BEGIN_REQUEST while one is active is refused with
//!   `END_REQUEST(FCGI_CANT_MPX_CONN)` and the active request goes on; `GET_VALUES` answers
//!   `FCGI_MPXS_CONNS=0`. Such answers written while a response is under way go out between
//!   two of its records (`answers`), never inside one.
//! - **The body ends with the empty STDIN record**, with or without `CONTENT_LENGTH`: Apache's
//!   `mod_proxy_fcgi` streams a chunked upload that way (no length, `HTTP_TRANSFER_ENCODING`
//!   chunked), and `wsgi.input` ends where the stream ends.
//! - **ABORT_REQUEST** ends the body with an error for the app, makes its next write fail (the
//!   app's iterable is closed), and is answered with END_REQUEST, as the spec says.
//! - **An app that fails mid-response** gets no END_REQUEST but a record the front end refuses
//!   ([`abort_record`]), so the client sees the response cut.

use std::io::{self, Read, Write};

use gateway::fastcgi::{self, Event, ProtocolStatus, Responder, HEADER_LEN, MAX_RECORD_LEN};
use uwsgi::{Status, Var};

use super::{parse_in, read_error, Bad, Buffers, Head};
use crate::stream::Stream;

/// What `GET_VALUES` is told: this application does not multiplex. (`FCGI_MAX_CONNS` and
/// `FCGI_MAX_REQS` are left out, which the spec allows: the front end keeps its own limits.)
const KNOWN_VALUES: &[(&[u8], &[u8])] = &[(b"FCGI_MPXS_CONNS", b"0")];

/// Reads records until the PARAMS stream of a responder request has ended, answering the
/// management records met on the way. `None`: EOF before the first byte, or the front end
/// aborted the request before its params ended (answered with END_REQUEST).
pub(super) fn read_head<'b>(stream: &Stream, bufs: Buffers<'b>) -> Result<Option<Head<'b>>, Bad> {
    let Buffers { read: buf, params } = bufs;
    params.clear();
    let mut conn = Responder::default();
    let mut answers = Vec::new();
    let mut request_id = None;
    let (mut pos, mut filled) = (0, 0);
    let end = loop {
        let event = match conn.feed(&buf[pos..filled]).map_err(Bad::FastCgi)? {
            Status::Complete((event, n)) => {
                let start = pos;
                pos += n;
                (event, start)
            }
            Status::Partial => {
                send_answers(stream, &mut answers)?;
                make_room(buf, &mut pos, &mut filled);
                match read_some(stream, buf, &mut filled) {
                    Ok(true) => continue,
                    Ok(false) if filled == 0 => return Ok(None),
                    Ok(false) => return Err(Bad::Eof(filled)),
                    Err(e) => return Err(read_error(e, filled)),
                }
            }
        };
        match event.0 {
            Event::Begin { request_id: id, .. } => request_id = Some(id),
            Event::Params(part) => params.extend_from_slice(part),
            Event::ParamsEnd => break request_id,
            Event::Abort { request_id: id } => {
                fastcgi::encode_end_request(id, 0, ProtocolStatus::RequestComplete, &mut answers);
                send_answers(stream, &mut answers)?;
                return Ok(None);
            }
            other => management(other, &mut answers).map_err(Bad::FastCgi)?,
        }
    };
    send_answers(stream, &mut answers)?;
    let request_id = end.ok_or(Bad::FastCgi(fastcgi::Error::UnexpectedRecord))?;
    Ok(Some(Head::FastCgi {
        params,
        rest: &buf[pos..filled],
        request_id,
        conn,
    }))
}

/// The answer to a record that is not part of the active request's streams, appended to
/// `answers`. Stream records are an error here (the state machine already refuses them out of
/// order, so this is only reached by a bug).
fn management(event: Event<'_>, answers: &mut Vec<u8>) -> Result<(), fastcgi::Error> {
    match event {
        Event::GetValues(query) => fastcgi::encode_get_values_result(query, KNOWN_VALUES, answers),
        Event::UnknownType(kind) => {
            fastcgi::encode_unknown_type(kind, answers);
            Ok(())
        }
        Event::Refuse { request_id, status } => {
            fastcgi::encode_end_request(request_id, 0, status, answers);
            Ok(())
        }
        Event::Ignored => Ok(()),
        _ => Err(fastcgi::Error::UnexpectedRecord),
    }
}

/// Writes the pending management answers (before the head is complete nothing else is written,
/// so they go out at once).
fn send_answers(mut stream: &Stream, answers: &mut Vec<u8>) -> Result<(), Bad> {
    if !answers.is_empty() {
        stream.write_all(answers).map_err(Bad::Io)?;
        answers.clear();
    }
    Ok(())
}

/// Moves the unconsumed bytes to the front of `buf` and makes it hold at least the record that
/// starts there (at most [`MAX_RECORD_LEN`] bytes).
fn make_room(buf: &mut Vec<u8>, pos: &mut usize, filled: &mut usize) {
    if *pos > 0 {
        buf.copy_within(*pos..*filled, 0);
        *filled -= *pos;
        *pos = 0;
    }
    let need = fastcgi::record_len(&buf[..*filled]).unwrap_or(HEADER_LEN);
    if buf.len() < need.max(8192) {
        buf.resize(need.clamp(8192, MAX_RECORD_LEN), 0);
    }
}

/// One blocking read into `buf[filled..]`: `Ok(false)` at EOF.
fn read_some(mut stream: &Stream, buf: &mut [u8], filled: &mut usize) -> io::Result<bool> {
    loop {
        match stream.read(&mut buf[*filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                *filled += n;
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The PARAMS stream's vars (see [`Head::parse_vars`]).
pub(super) fn parse_vars<'p, 's>(
    params: &'p [u8],
    small: &'s mut [Var<'p>],
    large: &'s mut Vec<Var<'p>>,
) -> Result<&'s [Var<'p>], Bad> {
    parse_in(small, large, |storage| {
        match fastcgi::parse_params(params, &mut *storage) {
            Ok(n) => {
                let vars: &'s [Var<'p>] = storage;
                Ok(&vars[..n])
            }
            Err(fastcgi::Error::TooManyVars) => Err(Bad::TooManyVars),
            Err(e) => Err(Bad::FastCgi(e)),
        }
    })
}

/// The first var named `name` in the PARAMS stream (any number of pairs).
pub(super) fn find_var<'p>(params: &'p [u8], name: &[u8]) -> Option<&'p [u8]> {
    fastcgi::Pairs::new(params)
        .map_while(Result::ok)
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The request body as the STDIN records bring it, read through the connection's state
/// machine. Owns the bytes read past the head, and what it reads later.
pub(crate) struct StdinRecords {
    conn: Responder,
    /// Bytes read off the socket: `buf[pos..filled]` are not consumed yet.
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    /// The current STDIN record's content not handed out yet: `buf[data.0..data.1]`.
    data: (usize, usize),
    state: Stdin,
    /// Management answers to write between two records of the response.
    answers: Vec<u8>,
}

/// Where the STDIN stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stdin {
    Open,
    /// The empty STDIN record came: the body is complete.
    Ended,
    /// ABORT_REQUEST came.
    Aborted,
}

impl StdinRecords {
    /// The body of the request `conn` is in, whose records start with `rest` (read with the
    /// head).
    pub fn new(conn: Responder, rest: &[u8]) -> StdinRecords {
        let mut buf = Vec::with_capacity(rest.len().max(8192));
        buf.extend_from_slice(rest);
        StdinRecords {
            conn,
            filled: buf.len(),
            buf,
            pos: 0,
            data: (0, 0),
            state: Stdin::Open,
            answers: Vec::new(),
        }
    }

    /// The front end has more of the body to send.
    pub fn pending(&self) -> bool {
        self.state == Stdin::Open
    }

    /// The front end aborted the request (ABORT_REQUEST).
    pub fn aborted(&self) -> bool {
        self.state == Stdin::Aborted
    }

    /// Management answers waiting to be written (taken: the caller writes them).
    pub fn take_answers(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.answers)
    }

    /// Body bytes into `out`: `Ok(0)` once the stream ended. Without `wait`, `WouldBlock` when
    /// nothing more can be read now; with it, waits (the connection's timeout) for the front end.
    pub fn read(&mut self, stream: &Stream, out: &mut [u8], wait: bool) -> io::Result<usize> {
        loop {
            if self.data.0 < self.data.1 {
                let n = out.len().min(self.data.1 - self.data.0);
                out[..n].copy_from_slice(&self.buf[self.data.0..self.data.0 + n]);
                self.data.0 += n;
                return Ok(n);
            }
            match self.state {
                Stdin::Ended => return Ok(0),
                Stdin::Aborted => return Err(aborted()),
                Stdin::Open => {}
            }
            if !self.next_record()? {
                self.fill(stream, wait)?;
            }
        }
    }

    /// While the response is under way and the body has ended: takes in, without waiting, what
    /// the front end sent since (ABORT_REQUEST, management records), so an abort is seen at the
    /// app's next write and answers go out between two records.
    pub fn poll_after_body(&mut self, stream: &Stream) {
        while self.state == Stdin::Ended {
            match self.next_record() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(_) => return, // the close will tell the front end
            }
            if self.fill(stream, false).is_err() {
                return;
            }
        }
    }

    /// Takes the next record if it is all there; `false` if more bytes are needed.
    fn next_record(&mut self) -> io::Result<bool> {
        let base = self.buf.as_ptr() as usize;
        let parsed = self
            .conn
            .feed(&self.buf[self.pos..self.filled])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let (event, n) = match parsed {
            Status::Partial => return Ok(false),
            Status::Complete(done) => done,
        };
        match event {
            Event::Stdin(content) => {
                // A slice of buf: its offset is where the body bytes are.
                let start = content.as_ptr() as usize - base;
                self.data = (start, start + content.len());
            }
            Event::StdinEnd => self.state = Stdin::Ended,
            Event::Abort { .. } => self.state = Stdin::Aborted,
            other => management(other, &mut self.answers)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
        }
        self.pos += n;
        Ok(true)
    }

    /// Reads more bytes (the current record's content was all handed out, so the unconsumed
    /// bytes can move to the front).
    fn fill(&mut self, stream: &Stream, wait: bool) -> io::Result<()> {
        self.data = (0, 0);
        make_room(&mut self.buf, &mut self.pos, &mut self.filled);
        loop {
            match stream.try_read(&mut self.buf[self.filled..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the front end closed before the end of the FastCGI STDIN stream",
                    ))
                }
                Ok(n) => {
                    self.filled += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && wait => {
                    stream.wait(libc::POLLIN).map_err(|e| {
                        if e.kind() == io::ErrorKind::TimedOut {
                            io::Error::new(e.kind(), "timed out reading the request body")
                        } else {
                            e
                        }
                    })?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the front end aborted the request (FCGI_ABORT_REQUEST)",
    )
}

/// The STDOUT record headers for `len` bytes of the response, cut at 65,535 bytes per record.
pub(crate) fn stdout_headers(request_id: u16, len: usize, headers: &mut Vec<[u8; HEADER_LEN]>) {
    let mut left = len;
    while left > 0 {
        let n = left.min(fastcgi::MAX_CONTENT_LEN);
        // n is at most MAX_CONTENT_LEN, so the header cannot fail.
        if let Ok(h) = fastcgi::record_header(fastcgi::kind::STDOUT, request_id, n) {
            headers.push(h);
        }
        left -= n;
    }
}

/// The end of a complete response: the empty STDOUT record and END_REQUEST.
pub(crate) fn end_records(request_id: u16, out: &mut Vec<u8>) {
    let _ = fastcgi::encode_record(fastcgi::kind::STDOUT, request_id, b"", out);
    fastcgi::encode_end_request(request_id, 0, ProtocolStatus::RequestComplete, out);
}

/// How a response the app failed in the middle of ends: with a record header of version 0,
/// then a clean close. A FastCGI response has no "aborted" end (END_REQUEST's status is
/// ignored by nginx), and a front end takes a bare EOF as the end of the body (nginx 1.22 does,
/// over TCP as over a unix socket); a reset would do over TCP but can destroy the response head
/// before httpd has read it. A record of another version is refused by both, at once, as an
/// upstream error ("upstream sent unsupported FastCGI protocol version: 0"; httpd: "Got bogus
/// version 0"), so the client sees the response cut, deterministically, on any socket.
pub(crate) fn abort_record(request_id: u16) -> [u8; HEADER_LEN] {
    let [id_hi, id_lo] = request_id.to_be_bytes();
    [0, fastcgi::kind::STDOUT, id_hi, id_lo, 0, 0, 0, 0]
}

/// The id of the first request on a connection, from the records as they come, skipping
/// management records (id 0): for an answer of the supervisor's own, which reads nothing else
/// of the request (`refuse.rs`).
#[derive(Debug, Default)]
pub(crate) struct FirstRequestId {
    header: [u8; HEADER_LEN],
    have: usize,
    skip: usize,
}

impl FirstRequestId {
    /// Takes the next bytes read; `Some(id)` once a record of a request has begun.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<u16> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (HEADER_LEN - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == HEADER_LEN {
                let h = fastcgi::Header::parse(&self.header)?;
                if h.request_id != fastcgi::NULL_REQUEST_ID {
                    return Some(h.request_id);
                }
                self.skip = h.record_len() - HEADER_LEN;
                self.have = 0;
            }
        }
        None
    }
}

/// The answer to ABORT_REQUEST: END_REQUEST alone.
pub(crate) fn abort_answer(request_id: u16, out: &mut Vec<u8>) {
    fastcgi::encode_end_request(request_id, 0, ProtocolStatus::RequestComplete, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_request_id_skips_management_records() {
        let mut stream = Vec::new();
        fastcgi::encode_get_values([&b"FCGI_MPXS_CONNS"[..]], &mut stream).unwrap();
        fastcgi::encode_begin_request(7, fastcgi::role::RESPONDER, false, &mut stream);
        for cut in 0..stream.len() {
            let mut first = FirstRequestId::default();
            let got = first
                .feed(&stream[..cut])
                .or_else(|| first.feed(&stream[cut..]));
            assert_eq!(got, Some(7), "cut at {cut}");
        }
        // Byte by byte: found with the last byte of the BEGIN_REQUEST header, not before.
        let mut byte_by_byte = FirstRequestId::default();
        let at = stream
            .iter()
            .position(|b| byte_by_byte.feed(&[*b]).is_some());
        assert_eq!(at, Some(stream.len() - 16 + HEADER_LEN - 1));
    }
}
