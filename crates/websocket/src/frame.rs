//! One frame (RFC 6455 section 5.2):
//!
//! ```text
//! byte 0: FIN, RSV1-3, opcode (4 bits)
//! byte 1: MASK, payload length (7 bits: 0-125, 126 = u16 follows, 127 = u64 follows)
//! then:   the extended length (big-endian), the 4-byte masking key if MASK, the payload
//! ```

use crate::{Error, Status};

/// Frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(b: u8) -> Result<Opcode, Error> {
        Ok(match b {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            other => return Err(Error::UnknownOpcode(other)),
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Close, ping and pong: at most 125 bytes, never fragmented.
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: Opcode,
    /// The masking key (client frames always have one).
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: u64,
    /// Bytes the header occupies (the payload starts there).
    pub header_len: usize,
}

/// Parses a frame header from the start of `buf`. Checks what the header alone can show:
/// reserved bits, the opcode, control frame rules, the length's shortest form. The mask is
/// parsed, not required: the [`crate::Decoder`] requires it for client frames.
pub fn parse_header(buf: &[u8]) -> Result<Status<Header>, Error> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(Status::Partial);
    };
    if b0 & 0x70 != 0 {
        return Err(Error::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = Opcode::from_bits(b0 & 0x0F)?;
    let masked = b1 & 0x80 != 0;
    let short = b1 & 0x7F;
    let (len, mut pos) = match short {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(Status::Partial);
            };
            let len = u64::from(u16::from_be_bytes([b[0], b[1]]));
            if len < 126 {
                return Err(Error::BadLength);
            }
            (len, 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(Status::Partial);
            };
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(b);
            let len = u64::from_be_bytes(bytes);
            if len >> 63 != 0 || len <= u64::from(u16::MAX) {
                return Err(Error::BadLength);
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(Error::BadControlFrame);
    }
    let mask = if masked {
        let Some(m) = buf.get(pos..pos + 4) else {
            return Ok(Status::Partial);
        };
        pos += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    Ok(Status::Complete(Header {
        fin,
        opcode,
        mask,
        len,
        header_len: pos,
    }))
}

/// Unmasks (or masks: XOR is its own inverse) `data` in place; `offset` is the position of
/// `data[0]` in the frame's payload, so a payload can be unmasked piece by piece.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: u64) {
    let start = (offset % 4) as usize;
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(start + i) % 4];
    }
}

/// Appends a frame header for a server frame (FIN set, not masked) of `len` bytes.
pub fn encode_header(opcode: Opcode, len: usize, out: &mut Vec<u8>) {
    out.push(0x80 | opcode.bits());
    match len {
        0..=125 => out.push(len as u8),
        126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// Appends one whole server frame.
pub fn encode_frame(opcode: Opcode, payload: &[u8], out: &mut Vec<u8>) {
    encode_header(opcode, payload.len(), out);
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and `reason` (cut to fit the 125-byte control limit at a
/// character boundary).
pub fn encode_close(code: u16, reason: &str, out: &mut Vec<u8>) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode_frame(Opcode::Close, &payload, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(buf: &[u8]) -> Header {
        match parse_header(buf) {
            Ok(Status::Complete(h)) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lengths_in_all_three_forms() {
        let mut out = Vec::new();
        for len in [0usize, 125, 126, 65535, 65536, 1 << 20] {
            out.clear();
            encode_header(Opcode::Binary, len, &mut out);
            let h = header(&out);
            assert_eq!(
                (h.len, h.header_len, h.fin, h.mask),
                (len as u64, out.len(), true, None)
            );
            for cut in 0..out.len() {
                assert_eq!(
                    parse_header(&out[..cut]),
                    Ok(Status::Partial),
                    "{len} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn masked_client_frame() {
        // RFC 6455 5.7: a single-frame masked text message "Hello".
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let h = header(&frame);
        assert_eq!((h.opcode, h.len, h.header_len), (Opcode::Text, 5, 6));
        let mut payload = frame[6..].to_vec();
        apply_mask(&mut payload[..2], h.mask.unwrap(), 0);
        apply_mask(&mut payload[2..], h.mask.unwrap(), 2);
        assert_eq!(payload, b"Hello");
    }

    #[test]
    fn header_errors() {
        assert_eq!(parse_header(&[0xC1, 0x80]), Err(Error::ReservedBits));
        assert_eq!(parse_header(&[0x83, 0x80]), Err(Error::UnknownOpcode(3)));
        assert_eq!(parse_header(&[0x09, 0x80]), Err(Error::BadControlFrame));
        assert_eq!(
            parse_header(&[0x89, 0xFE, 0, 200]),
            Err(Error::BadControlFrame)
        );
        assert_eq!(parse_header(&[0x82, 0xFE, 0, 5]), Err(Error::BadLength));
        assert_eq!(
            parse_header(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(Error::BadLength)
        );
        assert_eq!(
            parse_header(&[0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0x10, 0]),
            Err(Error::BadLength)
        );
    }

    #[test]
    fn close_reason_is_cut_at_a_character() {
        let mut out = Vec::new();
        encode_close(1000, &"é".repeat(100), &mut out);
        let h = header(&out);
        assert!(h.len <= 125);
        assert!(std::str::from_utf8(&out[h.header_len + 2..]).is_ok());
    }
}
