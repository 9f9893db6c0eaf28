//! The worker's response head: a plain HTTP/1.x status line and headers (uwsgi adds no
//! framing). [`ResponseHead`] parses it on the front-end side, [`encode_response_head`]
//! writes it on the worker side. Both follow RFC 9110/9112 strictly, except that a bare LF is
//! accepted as a line end (as nginx does, RFC 9112 section 2.2).

use crate::{Error, Status, Var};

/// Push parser for `HTTP/1.x NNN [reason]` + header lines + blank line.
///
/// `headers` is caller storage; after [`Status::Complete`] it is shrunk to the headers parsed
/// (wire order, duplicates kept, values without surrounding whitespace). Obsolete line
/// folding, a space before the colon and control characters are refused: the head is going
/// to be relayed to an HTTP client, so anything that could split or smuggle a header is out.
#[derive(Debug)]
pub struct ResponseHead<'h, 'b> {
    pub minor_version: u8,
    pub status: u16,
    pub reason: &'b [u8],
    pub headers: &'h mut [Var<'b>],
}

impl<'h, 'b> ResponseHead<'h, 'b> {
    /// A parser that can hold up to `headers.len()` headers.
    pub fn new(headers: &'h mut [Var<'b>]) -> Self {
        ResponseHead {
            minor_version: 0,
            status: 0,
            reason: b"",
            headers,
        }
    }

    /// Parse a head from the start of `buf`.
    ///
    /// `Complete(n)`: the head, blank line included, is `buf[..n]`; the body starts at `buf[n]`.
    /// `Partial`: the blank line has not arrived and nothing so far is invalid. Errors are
    /// reported as soon as the offending byte is in `buf` (one pass, no look-back), so a
    /// longer buffer never turns an `Err` into success. On `Partial` and on `Err`, `headers`
    /// keeps its full length.
    pub fn parse(&mut self, buf: &'b [u8]) -> Result<Status<usize>, Error> {
        let Some((minor_version, status, reason, mut pos)) = parse_status_line(buf)? else {
            return Ok(Status::Partial);
        };
        self.minor_version = minor_version;
        self.status = status;
        self.reason = reason;

        let mut count = 0;
        loop {
            match parse_header_line(&buf[pos..])? {
                Line::Partial => return Ok(Status::Partial),
                Line::End(len) => {
                    pos += len;
                    break;
                }
                Line::Header(header, len) => {
                    let slot = self.headers.get_mut(count).ok_or(Error::TooManyHeaders)?;
                    *slot = header;
                    count += 1;
                    pos += len;
                }
            }
        }
        // Shrink the caller's slice to what was parsed (httparse does the same).
        let headers = std::mem::take(&mut self.headers);
        self.headers = &mut headers[..count];
        Ok(Status::Complete(pos))
    }
}

/// A parsed status line: minor version, status, reason, length of the line with its end.
type StatusLine<'b> = (u8, u16, &'b [u8], usize);

/// `HTTP/1.0` or `HTTP/1.1`, one SP, a three-digit status 100..=999, then the line end or one
/// SP and a reason phrase (which may be empty). Returns the fields and the line length.
fn parse_status_line(buf: &[u8]) -> Result<Option<StatusLine<'_>>, Error> {
    // Check whatever part of the fixed-width "HTTP/1.x NNN" is present, so garbage (say a
    // CGI-style "Status:" head) fails on its first byte rather than when the buffer fills.
    for (i, &b) in buf.iter().enumerate().take(12) {
        let ok = match i {
            0..=6 => b == b"HTTP/1."[i],
            7 => b == b'0' || b == b'1',
            8 => b == b' ',
            9 => (b'1'..=b'9').contains(&b),
            _ => b.is_ascii_digit(),
        };
        if !ok {
            return Err(Error::BadStatusLine);
        }
    }
    let Some(&[_, _, _, _, _, _, _, minor, _, a, b, c]) = buf.first_chunk::<12>() else {
        return Ok(None);
    };
    let status = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    let reason_start = match buf.get(12) {
        None => return Ok(None),
        Some(b' ') => 13,
        Some(b'\r' | b'\n') => 12,
        Some(_) => return Err(Error::BadStatusLine),
    };
    let reason_end = text_end(buf, reason_start);
    let Some(next) = line_end(buf, reason_end, Error::BadStatusLine)? else {
        return Ok(None);
    };
    let reason = buf.get(reason_start..reason_end).unwrap_or_default();
    Ok(Some((minor - b'0', status, reason, next)))
}

/// One step of the header section.
enum Line<'b> {
    /// The line is not complete yet.
    Partial,
    /// The blank line ending the head, of this length (2 for CRLF, 1 for a bare LF).
    End(usize),
    /// A header line of this length.
    Header(Var<'b>, usize),
}

/// `name ":" OWS value OWS` + line end, or the blank line; the value has no surrounding
/// whitespace. Obsolete line folding (a line starting with SP/HTAB) fails the name check.
fn parse_header_line(rest: &[u8]) -> Result<Line<'_>, Error> {
    match rest.first() {
        None => return Ok(Line::Partial),
        Some(b'\r' | b'\n') => {
            return Ok(line_end(rest, 0, Error::BadHeader)?.map_or(Line::Partial, Line::End));
        }
        Some(_) => {}
    }
    let name_len = rest
        .iter()
        .position(|&b| !TOKEN[usize::from(b)])
        .unwrap_or(rest.len());
    match rest.get(name_len) {
        None => return Ok(Line::Partial),
        Some(b':') if name_len > 0 => {}
        Some(_) => return Err(Error::BadHeader),
    }
    let value_start = name_len + 1;
    let value_end = text_end(rest, value_start);
    let Some(len) = line_end(rest, value_end, Error::BadHeader)? else {
        return Ok(Line::Partial);
    };
    let key = &rest[..name_len];
    let value = trim_ows(rest.get(value_start..value_end).unwrap_or_default());
    Ok(Line::Header(Var { key, value }, len))
}

/// Index of the first byte at or after `start` that is not header text (or `buf.len()`).
fn text_end(buf: &[u8], start: usize) -> usize {
    let tail = buf.get(start..).unwrap_or_default();
    start
        + tail
            .iter()
            .position(|&b| !is_text_byte(b))
            .unwrap_or(tail.len())
}

/// At `buf[at]` a line must end: CRLF or a bare LF (RFC 9112 section 2.2 lets a recipient
/// accept LF alone; nginx does). Returns the index after it; `None` if `buf` stops first;
/// `err` for anything else, including a CR not followed by LF.
fn line_end(buf: &[u8], at: usize, err: Error) -> Result<Option<usize>, Error> {
    match buf.get(at) {
        None => Ok(None),
        Some(b'\n') => Ok(Some(at + 1)),
        Some(b'\r') => match buf.get(at + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some(at + 2)),
            Some(_) => Err(err),
        },
        Some(_) => Err(err),
    }
}

/// Split `NNN[ reason]` into the code and the reason, validating both.
fn split_status(text: &[u8]) -> Option<(u16, &[u8])> {
    let (&[a, b, c], rest) = text.split_first_chunk::<3>()?;
    if !(b'1'..=b'9').contains(&a) || !b.is_ascii_digit() || !c.is_ascii_digit() {
        return None;
    }
    let status = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    let reason = match rest.split_first() {
        None => rest,
        Some((b' ', reason)) if reason.iter().all(|&b| is_text_byte(b)) => reason,
        Some(_) => return None,
    };
    Some((status, reason))
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// RFC 9110 `tchar`, as a lookup table: ALPHA / DIGIT / ``!#$%&'*+-.^_`|~``.
static TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    table
};

/// Visible text allowed in a reason phrase or a header value: HTAB, SP, VCHAR, obs-text.
/// Refuses NUL, CR, LF, the other C0 controls and DEL. A table, like TOKEN: this is the
/// per-byte check of every header value relayed to a client.
static TEXT: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b == b'\t' || (b >= b' ' && b <= b'~') || b >= 0x80;
        i += 1;
    }
    table
};

fn is_text_byte(b: u8) -> bool {
    TEXT[usize::from(b)]
}

/// True when `name` is a non-empty RFC 9110 token (a valid header field name).
pub fn is_header_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| TOKEN[usize::from(b)])
}

/// True when `value` holds only HTAB, SP, visible ASCII and obs-text (no CR, LF, NUL or other
/// control characters), so it cannot split or end a header line.
pub fn is_header_value(value: &[u8]) -> bool {
    value.iter().all(|&b| is_text_byte(b))
}

/// Worker side: append `"HTTP/1.1 " + status_line + "\r\n"`, one `"Name: value\r\n"` per
/// header, and the blank line to `out`.
///
/// `status_line` is the WSGI status, e.g. `b"200 OK"`: three digits 100..=999, optionally a
/// space and a reason phrase without control characters, else [`Error::BadStatusLine`]. A
/// header with a non-token name or a value with CR, LF, NUL or another control character
/// (HTAB excepted) is [`Error::BadHeader`]. On error `out` is left as it was.
pub fn encode_response_head<'a, I>(
    status_line: &[u8],
    headers: I,
    out: &mut Vec<u8>,
) -> Result<(), Error>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    if split_status(status_line).is_none() {
        return Err(Error::BadStatusLine);
    }
    let start = out.len();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status_line);
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if !is_header_name(name) || !is_header_value(value) {
            out.truncate(start);
            return Err(Error::BadHeader);
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}
