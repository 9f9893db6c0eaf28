//! Request packets: the push parser ([`Request`]) and the encoder ([`encode_request`]).

use crate::{Error, Status, Var, HEADER_LEN, MAX_FIELD_LEN, MAX_VARS, MAX_VARS_BLOCK};

/// Parser for one request packet (header + vars block), in httparse's shape.
///
/// `vars` is caller storage; after [`Status::Complete`] it is shrunk to the vars parsed, in
/// wire order (duplicates kept). The modifiers are exposed as they are: which ones to accept
/// is the caller's decision (0/0 is plain WSGI; nginx and Apache send 0/0 by default).
#[derive(Debug)]
pub struct Request<'h, 'b> {
    pub modifier1: u8,
    pub modifier2: u8,
    pub vars: &'h mut [Var<'b>],
}

impl<'h, 'b> Request<'h, 'b> {
    /// A parser that can hold up to `vars.len()` vars.
    pub fn new(vars: &'h mut [Var<'b>]) -> Self {
        Request {
            modifier1: 0,
            modifier2: 0,
            vars,
        }
    }

    /// Parse a packet from the start of `buf`.
    ///
    /// `Complete(n)`: `n = HEADER_LEN + vars block size` bytes were consumed; the request body
    /// (if any) starts at `buf[n]`. `Partial`: `buf` does not hold the whole header and vars
    /// block yet (the modifiers are already set once the 4 header bytes are there). On
    /// `Partial` and on `Err`, `vars` keeps its full length so the call can be repeated.
    pub fn parse(&mut self, buf: &'b [u8]) -> Result<Status<usize>, Error> {
        let Some(&[modifier1, size_lo, size_hi, modifier2]) = buf.get(..HEADER_LEN) else {
            return Ok(Status::Partial);
        };
        self.modifier1 = modifier1;
        self.modifier2 = modifier2;
        let total = HEADER_LEN + usize::from(u16::from_le_bytes([size_lo, size_hi]));
        debug_assert_eq!(packet_len(buf), Some(total));
        let Some(block) = buf.get(HEADER_LEN..total) else {
            return Ok(Status::Partial);
        };
        let count = parse_vars(block, self.vars)?;
        // Shrink the caller's slice to what was parsed (httparse does the same for headers).
        let vars = std::mem::take(&mut self.vars);
        self.vars = &mut vars[..count];
        Ok(Status::Complete(total))
    }

    /// The value of the first var named `key` (uwsgi keys are case-sensitive).
    /// Meaningful after [`Status::Complete`]; an empty `key` never matches.
    pub fn get(&self, key: &[u8]) -> Option<&'b [u8]> {
        if key.is_empty() {
            return None;
        }
        self.vars.iter().find(|v| v.key == key).map(|v| v.value)
    }
}

/// Length of the whole packet (header + vars block, body excluded) once the 4 header bytes are
/// in `buf`; `None` before. Lets a reader size its buffer: never more than 4 + 65,535 bytes.
pub fn packet_len(buf: &[u8]) -> Option<usize> {
    let &[_, lo, hi, _] = buf.first_chunk::<HEADER_LEN>()?;
    Some(HEADER_LEN + usize::from(u16::from_le_bytes([lo, hi])))
}

/// The value of the first var named `key` in the complete packet at the start of `buf`,
/// without storage for the others: for a receiver that refuses a packet (more vars than it
/// takes) but still needs one of its vars, such as CONTENT_LENGTH to read past the body.
/// `None` when the var is absent, the packet incomplete or malformed, or `key` empty.
pub fn find_var<'b>(buf: &'b [u8], key: &[u8]) -> Option<&'b [u8]> {
    let total = packet_len(buf)?;
    let mut block = buf.get(HEADER_LEN..total)?;
    while !block.is_empty() {
        let k = take_field(&mut block).ok()?;
        let v = take_field(&mut block).ok()?;
        if !key.is_empty() && k == key {
            return Some(v);
        }
    }
    None
}

/// Split a complete vars block into `out`; returns how many vars it held.
fn parse_vars<'b>(mut block: &'b [u8], out: &mut [Var<'b>]) -> Result<usize, Error> {
    let mut count = 0;
    while !block.is_empty() {
        let key = take_field(&mut block)?;
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let value = take_field(&mut block)?;
        let slot = out.get_mut(count).ok_or(Error::TooManyVars)?;
        *slot = Var { key, value };
        count += 1;
    }
    Ok(count)
}

/// Take one `u16 LE length + bytes` field off the front of `block`.
fn take_field<'b>(block: &mut &'b [u8]) -> Result<&'b [u8], Error> {
    let rest: &'b [u8] = block;
    let Some((&[lo, hi], rest)) = rest.split_first_chunk::<2>() else {
        return Err(Error::Truncated);
    };
    let len = usize::from(u16::from_le_bytes([lo, hi]));
    if rest.len() < len {
        return Err(Error::Truncated);
    }
    let (field, rest) = rest.split_at(len);
    *block = rest;
    Ok(field)
}

/// Append one request packet (header + vars block) to `out`; returns the bytes appended
/// (`HEADER_LEN` + block size). The body is not part of the packet: write it after.
///
/// Refuses, leaving `out` as it was: an empty key ([`Error::EmptyKey`]), a key or value over
/// 65,535 bytes ([`Error::FieldTooLong`]), a block over [`MAX_VARS_BLOCK`] bytes
/// ([`Error::VarsTooLarge`]) and more than [`MAX_VARS`] vars ([`Error::TooManyVars`]). Never
/// truncates a length: the caller answers 431 instead ("request too large for the daemon").
pub fn encode_request<'a, I>(
    modifier1: u8,
    modifier2: u8,
    vars: I,
    out: &mut Vec<u8>,
) -> Result<usize, Error>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let start = out.len();
    // Header with a placeholder size, patched once the block length is known.
    out.extend_from_slice(&[modifier1, 0, 0, modifier2]);
    // encode_vars already bounds the block; try_from re-checks so no cast can ever wrap.
    let encoded = encode_vars(vars, out).and_then(|len| {
        u16::try_from(len)
            .map(|size| (len, size))
            .map_err(|_| Error::VarsTooLarge)
    });
    match encoded {
        Ok((block_len, size)) => {
            let [lo, hi] = size.to_le_bytes();
            out[start + 1] = lo;
            out[start + 2] = hi;
            Ok(HEADER_LEN + block_len)
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Append the vars block; returns its length. Checks sizes before copying each var so a
/// huge input fails fast instead of being copied first.
fn encode_vars<'a, I>(vars: I, out: &mut Vec<u8>) -> Result<usize, Error>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut block_len = 0usize;
    for (count, (key, value)) in vars.into_iter().enumerate() {
        if count == MAX_VARS {
            return Err(Error::TooManyVars);
        }
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let (Ok(key_len), Ok(value_len)) = (u16::try_from(key.len()), u16::try_from(value.len()))
        else {
            return Err(Error::FieldTooLong);
        };
        debug_assert!(key.len() <= MAX_FIELD_LEN && value.len() <= MAX_FIELD_LEN);
        // Both lengths are <= 65,535 and block_len <= MAX_VARS_BLOCK here: no overflow.
        block_len += 4 + key.len() + value.len();
        if block_len > MAX_VARS_BLOCK {
            return Err(Error::VarsTooLarge);
        }
        out.reserve(4 + key.len() + value.len());
        out.extend_from_slice(&key_len.to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&value_len.to_le_bytes());
        out.extend_from_slice(value);
    }
    Ok(block_len)
}
