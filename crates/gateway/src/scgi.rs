//! SCGI requests (<http://python.ca/scgi/protocol.txt>): a netstring holding NUL-terminated
//! names and values, then exactly `CONTENT_LENGTH` body bytes. The response is a CGI head
//! ([`crate::cgi::encode_head`]) and the body; the worker closes the connection to end it.
//!
//! ```text
//! "70:" "CONTENT_LENGTH" NUL "27" NUL "SCGI" NUL "1" NUL "REQUEST_METHOD" NUL "POST" NUL ... ","
//!  ^ decimal length of everything between ':' and ','              body follows the ',' ^
//! ```
//!
//! The protocol's own rules, all enforced by [`Request::parse`]: `CONTENT_LENGTH` is the first
//! var and is present even when 0; a var `SCGI` with value `1` is present. nginx's `scgi_pass`
//! and Apache's `mod_proxy_scgi` both write exactly this (and neither sends a chunked body:
//! nginx buffers it to learn the length, httpd answers 411 Length Required).
//!
//! Unlike the spec, duplicate names are kept (in wire order), as the uwsgi parser does: nginx
//! before 1.23 sends a repeated request header (two `Cookie:` lines) as two `HTTP_COOKIE` vars,
//! and the worker joins them. A repeated `CONTENT_LENGTH` must repeat the same value.

use std::fmt;

use crate::{Status, Var};

/// The largest header netstring accepted (the bytes between `:` and `,`): 1 MiB. nginx puts
/// every request header into it, so this is far above what a front end sends (nginx refuses
/// request heads over its `large_client_header_buffers`, 4 x 8 KiB by default). A caller that
/// wants a tighter bound reads [`header_len`] first and refuses before buffering.
pub const MAX_HEADER_LEN: usize = 1 << 20;

/// Digits in [`MAX_HEADER_LEN`]: a longer decimal prefix is refused at once.
const MAX_DIGITS: usize = 7;

/// Why an SCGI request was refused. None of these is cured by reading more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The netstring length is not ASCII digits followed by `:` (or has a leading zero).
    BadLength,
    /// The netstring length is over [`MAX_HEADER_LEN`].
    TooLarge,
    /// The byte after the header block is not `,`.
    MissingComma,
    /// The header block does not split into NUL-terminated name/value pairs.
    Malformed,
    /// A var with an empty name.
    EmptyName,
    /// The first var is not `CONTENT_LENGTH`.
    NoContentLength,
    /// `CONTENT_LENGTH` is not a decimal number, overflows u64, or is repeated with another value.
    BadContentLength,
    /// No `SCGI` var, or one whose value is not `1`.
    NoScgi,
    /// More vars than the caller's storage holds.
    TooManyVars,
    /// Encoder: a name or value holds a NUL byte (it would end the field early).
    NulByte,
    /// Encoder: `vars` names `CONTENT_LENGTH` or `SCGI`, which the encoder writes itself.
    ReservedName,
}

impl Error {
    /// A short, stable description (also the `Display` text).
    pub fn as_str(&self) -> &'static str {
        match self {
            Error::BadLength => "SCGI netstring length is not a decimal number followed by ':'",
            Error::TooLarge => "SCGI header block larger than 1 MiB",
            Error::MissingComma => "SCGI header block not followed by ','",
            Error::Malformed => "SCGI header block is not NUL-terminated name/value pairs",
            Error::EmptyName => "SCGI var with an empty name",
            Error::NoContentLength => "SCGI request does not start with CONTENT_LENGTH",
            Error::BadContentLength => "invalid or conflicting SCGI CONTENT_LENGTH",
            Error::NoScgi => "SCGI request without SCGI=1",
            Error::TooManyVars => "too many SCGI vars",
            Error::NulByte => "SCGI name or value with a NUL byte",
            Error::ReservedName => "CONTENT_LENGTH and SCGI are written by the encoder",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Error {}

/// Push parser for the SCGI request head (the netstring), in httparse's shape.
///
/// `vars` is caller storage; after [`Status::Complete`] it is shrunk to the vars parsed, in wire
/// order, `CONTENT_LENGTH` and `SCGI` included (they are CGI variables the app sees too).
#[derive(Debug)]
pub struct Request<'h, 'b> {
    /// The body length announced by the first var; the body starts right after the head.
    pub content_length: u64,
    pub vars: &'h mut [Var<'b>],
}

impl<'h, 'b> Request<'h, 'b> {
    /// A parser that can hold up to `vars.len()` vars.
    pub fn new(vars: &'h mut [Var<'b>]) -> Self {
        Request {
            content_length: 0,
            vars,
        }
    }

    /// Parses the head at the start of `buf`.
    ///
    /// `Complete(n)`: the netstring, trailing comma included, is `buf[..n]`; the body starts at
    /// `buf[n]`. `Partial`: the netstring is not all there yet and its length prefix so far is
    /// valid. A bad length prefix is reported as soon as its first bad byte is in `buf`; the
    /// block itself is judged once it is complete, so a longer buffer never turns an `Err` into
    /// success. On `Partial` and `Err`, `vars` keeps its full length.
    pub fn parse(&mut self, buf: &'b [u8]) -> Result<Status<usize>, Error> {
        let Some((colon, block_len)) = length_prefix(buf)? else {
            return Ok(Status::Partial);
        };
        // Both are bounded (7 digits, 1 MiB): no overflow.
        let block_end = colon + 1 + block_len;
        let (Some(block), Some(&comma)) = (buf.get(colon + 1..block_end), buf.get(block_end))
        else {
            return Ok(Status::Partial);
        };
        if comma != b',' {
            return Err(Error::MissingComma);
        }
        let (count, content_length) = parse_block(block, self.vars)?;
        self.content_length = content_length;
        // Shrink the caller's slice to what was parsed (httparse does the same for headers).
        let vars = std::mem::take(&mut self.vars);
        self.vars = &mut vars[..count];
        Ok(Status::Complete(block_end + 1))
    }

    /// The value of the first var named `name` (names are case-sensitive). Meaningful after
    /// [`Status::Complete`]; an empty `name` never matches.
    pub fn get(&self, name: &[u8]) -> Option<&'b [u8]> {
        if name.is_empty() {
            return None;
        }
        self.vars.iter().find(|v| v.key == name).map(|v| v.value)
    }
}

/// Length of the whole head (length prefix, `:`, block, `,`) once the prefix and its `:` are in
/// `buf`; `Ok(None)` before. Lets a reader size its buffer and refuse an oversized head before
/// reading it. Errors as [`Request::parse`] would for the same prefix.
pub fn header_len(buf: &[u8]) -> Result<Option<usize>, Error> {
    Ok(length_prefix(buf)?.map(|(colon, block_len)| colon + 1 + block_len + 1))
}

/// The netstring prefix: the index of its `:` and the block length it announces, once the `:` is
/// in `buf`. Each byte is judged as it arrives, so garbage fails on its first byte.
fn length_prefix(buf: &[u8]) -> Result<Option<(usize, usize)>, Error> {
    let mut len: usize = 0;
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b':' if i > 0 => return Ok(Some((i, len))),
            // A leading zero is only allowed as the whole number ("0:"), as netstrings say.
            b'0'..=b'9' if i > 0 && len == 0 => return Err(Error::BadLength),
            b'0'..=b'9' if i < MAX_DIGITS => {
                // At most 7 digits, so no overflow; compared with the bound right away.
                len = len * 10 + usize::from(b - b'0');
                if len > MAX_HEADER_LEN {
                    return Err(Error::TooLarge);
                }
            }
            b'0'..=b'9' => return Err(Error::TooLarge),
            _ => return Err(Error::BadLength),
        }
    }
    Ok(None)
}

/// Splits a complete header block into `out`; returns the var count and CONTENT_LENGTH.
fn parse_block<'b>(mut block: &'b [u8], out: &mut [Var<'b>]) -> Result<(usize, u64), Error> {
    let mut count = 0;
    let mut content_length = None;
    let mut scgi = false;
    while !block.is_empty() {
        let name = take_field(&mut block)?;
        let value = take_field(&mut block)?;
        if name.is_empty() {
            return Err(Error::EmptyName);
        }
        match name {
            b"CONTENT_LENGTH" => {
                let n = parse_decimal(value).ok_or(Error::BadContentLength)?;
                if content_length.is_some_and(|first| first != n) {
                    return Err(Error::BadContentLength);
                }
                content_length = Some(n);
            }
            _ if count == 0 => return Err(Error::NoContentLength),
            b"SCGI" if value == b"1" => scgi = true,
            b"SCGI" => return Err(Error::NoScgi),
            _ => {}
        }
        let slot = out.get_mut(count).ok_or(Error::TooManyVars)?;
        *slot = Var { key: name, value };
        count += 1;
    }
    match content_length {
        None => Err(Error::NoContentLength),
        Some(_) if !scgi => Err(Error::NoScgi),
        Some(n) => Ok((count, n)),
    }
}

/// Takes one NUL-terminated field off the front of `block`.
fn take_field<'b>(block: &mut &'b [u8]) -> Result<&'b [u8], Error> {
    let rest: &'b [u8] = block;
    let end = rest.iter().position(|&b| b == 0).ok_or(Error::Malformed)?;
    *block = &rest[end + 1..];
    Ok(&rest[..end])
}

/// ASCII digits only (no sign, no spaces), at least one, fitting a u64.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Front-end side: appends the head for a request with a `content_length`-byte body: the
/// netstring with `CONTENT_LENGTH` first, `SCGI=1` second, then `vars` in order, and the
/// comma. Returns the bytes appended; the body is written after them.
///
/// Refuses, leaving `out` as it was: an empty name ([`Error::EmptyName`]), a NUL inside a name
/// or value ([`Error::NulByte`]), a var named `CONTENT_LENGTH` or `SCGI` ([`Error::ReservedName`]),
/// and a block over [`MAX_HEADER_LEN`] ([`Error::TooLarge`]).
pub fn encode_request<'a, I>(
    content_length: u64,
    vars: I,
    out: &mut Vec<u8>,
) -> Result<usize, Error>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let start = out.len();
    let block_len = match encode_block(content_length, vars, out) {
        Ok(len) => len,
        Err(e) => {
            out.truncate(start);
            return Err(e);
        }
    };
    debug_assert!(block_len <= MAX_HEADER_LEN);
    // The length prefix goes before the block: append it, then rotate it into place.
    let prefix = format!("{block_len}:");
    out.extend_from_slice(prefix.as_bytes());
    out[start..].rotate_right(prefix.len());
    out.push(b',');
    Ok(out.len() - start)
}

/// Appends the header block (without the netstring framing); returns its length.
fn encode_block<'a, I>(content_length: u64, vars: I, out: &mut Vec<u8>) -> Result<usize, Error>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let start = out.len();
    let length = content_length.to_string();
    push_pair(out, b"CONTENT_LENGTH", length.as_bytes());
    push_pair(out, b"SCGI", b"1");
    for (name, value) in vars {
        if name.is_empty() {
            return Err(Error::EmptyName);
        }
        if name.contains(&0) || value.contains(&0) {
            return Err(Error::NulByte);
        }
        if name == b"CONTENT_LENGTH" || name == b"SCGI" {
            return Err(Error::ReservedName);
        }
        push_pair(out, name, value);
        // Checked per var so a huge input fails fast instead of being copied whole first.
        if out.len() - start > MAX_HEADER_LEN {
            return Err(Error::TooLarge);
        }
    }
    Ok(out.len() - start)
}

fn push_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 2);
    out.extend_from_slice(name);
    out.push(0);
    out.extend_from_slice(value);
    out.push(0);
}
