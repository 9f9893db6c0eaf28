//! Name-value pairs (spec 3.4): name length, value length, name, value. A length under 128 is one
//! byte; a longer one is four bytes, big-endian, with the top bit set (so at most 2^31-1).

use super::{Error, MAX_PAIR_FIELD_LEN};
use crate::Var;

/// The pairs of a complete block (a whole PARAMS stream, or a GET_VALUES body), in order.
/// Yields `Err` once, at the first malformed pair, and then stops.
#[derive(Debug, Clone)]
pub struct Pairs<'b> {
    rest: &'b [u8],
}

impl<'b> Pairs<'b> {
    pub fn new(block: &'b [u8]) -> Self {
        Pairs { rest: block }
    }

    fn take(&mut self) -> Result<(&'b [u8], &'b [u8]), Error> {
        let mut rest = self.rest;
        let name_len = take_len(&mut rest)?;
        let value_len = take_len(&mut rest)?;
        // Each length is below 2^31 and checked against what is left, so the sum cannot wrap.
        if rest.len() < name_len || rest.len() - name_len < value_len {
            return Err(Error::Truncated);
        }
        let (name, rest) = rest.split_at(name_len);
        let (value, rest) = rest.split_at(value_len);
        if name.is_empty() {
            return Err(Error::EmptyName);
        }
        self.rest = rest;
        Ok((name, value))
    }
}

impl<'b> Iterator for Pairs<'b> {
    type Item = Result<(&'b [u8], &'b [u8]), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let pair = self.take();
        if pair.is_err() {
            self.rest = &[];
        }
        Some(pair)
    }
}

/// Reads one 1- or 4-byte length off the front of `rest`.
fn take_len(rest: &mut &[u8]) -> Result<usize, Error> {
    match *rest {
        [b0, tail @ ..] if b0 & 0x80 == 0 => {
            *rest = tail;
            Ok(usize::from(*b0))
        }
        [b3, b2, b1, b0, tail @ ..] => {
            *rest = tail;
            let len = u32::from_be_bytes([b3 & 0x7f, *b2, *b1, *b0]);
            usize::try_from(len).map_err(|_| Error::Truncated)
        }
        _ => Err(Error::Truncated),
    }
}

/// Splits a complete PARAMS stream (the concatenated content of its records) into `out`;
/// returns how many pairs it held. Duplicates are kept in order. Errors: a length running past
/// the block ([`Error::Truncated`]), an empty name ([`Error::EmptyName`]), more pairs than `out`
/// holds ([`Error::TooManyVars`]).
pub fn parse_params<'b>(block: &'b [u8], out: &mut [Var<'b>]) -> Result<usize, Error> {
    let mut count = 0;
    for pair in Pairs::new(block) {
        let (key, value) = pair?;
        let slot = out.get_mut(count).ok_or(Error::TooManyVars)?;
        *slot = Var { key, value };
        count += 1;
    }
    Ok(count)
}

/// Appends one pair, each length in its shortest form. An empty name is [`Error::EmptyName`], a
/// field over 2^31-1 bytes [`Error::FieldTooLong`]; on error `out` is left as it was.
pub fn encode_pair(name: &[u8], value: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::EmptyName);
    }
    if name.len() > MAX_PAIR_FIELD_LEN || value.len() > MAX_PAIR_FIELD_LEN {
        return Err(Error::FieldTooLong);
    }
    out.reserve(8 + name.len() + value.len());
    push_len(name.len(), out);
    push_len(value.len(), out);
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    Ok(())
}

/// `len` is at most MAX_PAIR_FIELD_LEN (checked by the caller), so it fits 31 bits.
fn push_len(len: usize, out: &mut Vec<u8>) {
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.push(short),
        _ => {
            let long = u32::try_from(len).unwrap_or(u32::MAX) | 0x8000_0000;
            out.extend_from_slice(&long.to_be_bytes());
        }
    }
}
