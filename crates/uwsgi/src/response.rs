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
    /// `Partial`: every complete line so far is valid but the blank line has not arrived. An
    /// invalid complete line is an error at once, so a longer buffer never turns an `Err`
    /// into success. On `Partial` and on `Err`, `headers` keeps its full length.
    pub fn parse(&mut self, buf: &'b [u8]) -> Result<Status<usize>, Error> {
        let mut rest = buf;
        let Some(line) = next_line(&mut rest) else {
            return Ok(Status::Partial);
        };
        let (minor_version, status, reason) = parse_status_line(line)?;
        self.minor_version = minor_version;
        self.status = status;
        self.reason = reason;

        let mut count = 0;
        loop {
            let Some(line) = next_line(&mut rest) else {
                return Ok(Status::Partial);
            };
            if line.is_empty() {
                break;
            }
            let header = parse_header_line(line)?;
            let slot = self.headers.get_mut(count).ok_or(Error::TooManyHeaders)?;
            *slot = header;
            count += 1;
        }
        let headers = std::mem::take(&mut self.headers);
        self.headers = &mut headers[..count];
        Ok(Status::Complete(buf.len() - rest.len()))
    }
}

/// Take the next LF-terminated line off `rest`, without its CRLF or bare LF.
/// `None` when no complete line is there yet.
fn next_line<'b>(rest: &mut &'b [u8]) -> Option<&'b [u8]> {
    let buf: &'b [u8] = rest;
    let lf = buf.iter().position(|&b| b == b'\n')?;
    let line = &buf[..lf];
    *rest = &buf[lf + 1..];
    // A CR anywhere else in the line is refused later by the character checks.
    Some(line.strip_suffix(b"\r").unwrap_or(line))
}

/// `HTTP/1.0` or `HTTP/1.1`, one SP, a three-digit status 100..=999, then nothing or one SP
/// and a reason phrase (which may be empty).
fn parse_status_line(line: &[u8]) -> Result<(u8, u16, &[u8]), Error> {
    let Some((version, rest)) = line.split_first_chunk::<9>() else {
        return Err(Error::BadStatusLine);
    };
    let minor_version = match version {
        b"HTTP/1.0 " => 0,
        b"HTTP/1.1 " => 1,
        _ => return Err(Error::BadStatusLine),
    };
    let (status, reason) = split_status(rest).ok_or(Error::BadStatusLine)?;
    Ok((minor_version, status, reason))
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

/// `name ":" OWS value OWS`; the returned value has no surrounding whitespace.
fn parse_header_line(line: &[u8]) -> Result<Var<'_>, Error> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(Error::BadHeader)?;
    let (key, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
    if !is_header_name(key) || !is_header_value(value) {
        return Err(Error::BadHeader);
    }
    Ok(Var { key, value })
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
/// Refuses NUL, CR, LF, the other C0 controls and DEL.
fn is_text_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
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
