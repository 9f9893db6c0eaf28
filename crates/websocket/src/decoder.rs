//! The client's byte stream into events: frames parsed and unmasked as their bytes arrive (a
//! payload need not be in one buffer), fragments reassembled, text checked, sizes bounded.

use crate::frame::{apply_mask, parse_header, Header, Opcode};
use crate::{Error, Status};

/// What the client said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The client's close: its code and reason, or None for an empty close frame (1005).
    Close(Option<(u16, String)>),
}

/// The frame whose payload is being read.
struct Payload {
    header: Header,
    mask: [u8; 4],
    /// Payload bytes read so far.
    read: u64,
}

/// Decodes a client's frames. Push bytes with [`Decoder::decode`]; it consumes what it can and
/// says how much, so the caller keeps the rest (an incomplete header) for the next read.
pub struct Decoder {
    max_message: usize,
    frame: Option<Payload>,
    /// The data message being assembled: its opcode (Text or Binary) and bytes.
    message: Option<(Opcode, Vec<u8>)>,
    /// A control frame's payload being read.
    control: Vec<u8>,
    closed: bool,
}

impl Decoder {
    /// A decoder that refuses messages over `max_message` bytes (reassembled).
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            max_message,
            frame: None,
            message: None,
            control: Vec::new(),
            closed: false,
        }
    }

    /// Consumes bytes from `input`, appending what they complete to `events`; returns how many
    /// bytes were consumed (the rest is an incomplete frame header: push it again with more).
    /// After a close frame nothing more is consumed. An error means the connection must be
    /// closed with the error's code; the decoder is then unusable.
    pub fn decode(&mut self, input: &[u8], events: &mut Vec<Event>) -> Result<usize, Error> {
        let mut pos = 0;
        while pos < input.len() && !self.closed {
            match self.frame.take() {
                None => match parse_header(&input[pos..])? {
                    Status::Partial => break,
                    Status::Complete(header) => {
                        pos += header.header_len;
                        self.start_frame(header)?;
                        if header.len == 0 {
                            self.end_frame(header, events)?;
                        }
                    }
                },
                Some(mut payload) => {
                    let left = payload.header.len - payload.read;
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - pos);
                    let chunk = &input[pos..pos + n];
                    let dest = if payload.header.opcode.is_control() {
                        &mut self.control
                    } else {
                        match &mut self.message {
                            Some((_, bytes)) => bytes,
                            None => return Err(Error::BadFragmentation),
                        }
                    };
                    let start = dest.len();
                    dest.extend_from_slice(chunk);
                    apply_mask(&mut dest[start..], payload.mask, payload.read);
                    payload.read += n as u64;
                    pos += n;
                    if payload.read == payload.header.len {
                        self.end_frame(payload.header, events)?;
                    } else {
                        self.frame = Some(payload);
                    }
                }
            }
        }
        Ok(pos)
    }

    /// A frame header arrived: check it against the message state, prepare its payload.
    fn start_frame(&mut self, header: Header) -> Result<(), Error> {
        let mask = header.mask.ok_or(Error::Unmasked)?;
        match header.opcode {
            Opcode::Continuation if self.message.is_none() => return Err(Error::BadFragmentation),
            Opcode::Text | Opcode::Binary if self.message.is_some() => {
                return Err(Error::BadFragmentation)
            }
            Opcode::Text | Opcode::Binary => self.message = Some((header.opcode, Vec::new())),
            _ => {}
        }
        if header.opcode.is_control() {
            self.control.clear();
        } else {
            let have = self.message.as_ref().map_or(0, |(_, b)| b.len());
            let total = u64::try_from(have)
                .unwrap_or(u64::MAX)
                .saturating_add(header.len);
            if total > self.max_message as u64 {
                return Err(Error::TooBig);
            }
            if let Some((_, bytes)) = &mut self.message {
                bytes.reserve(usize::try_from(header.len).unwrap_or(0));
            }
        }
        if header.len > 0 {
            self.frame = Some(Payload {
                header,
                mask,
                read: 0,
            });
        }
        Ok(())
    }

    /// A frame's payload is complete.
    fn end_frame(&mut self, header: Header, events: &mut Vec<Event>) -> Result<(), Error> {
        match header.opcode {
            Opcode::Ping => events.push(Event::Ping(std::mem::take(&mut self.control))),
            Opcode::Pong => events.push(Event::Pong(std::mem::take(&mut self.control))),
            Opcode::Close => {
                let close = parse_close(&self.control)?;
                self.closed = true;
                events.push(Event::Close(close));
            }
            Opcode::Text | Opcode::Binary | Opcode::Continuation if header.fin => {
                let Some((opcode, bytes)) = self.message.take() else {
                    return Err(Error::BadFragmentation);
                };
                events.push(match opcode {
                    Opcode::Text => {
                        Event::Text(String::from_utf8(bytes).map_err(|_| Error::InvalidUtf8)?)
                    }
                    _ => Event::Binary(bytes),
                });
            }
            _ => {}
        }
        Ok(())
    }
}

/// A close frame's payload: empty, or a code (one that may be sent) and a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Option<(u16, String)>, Error> {
    match payload {
        [] => Ok(None),
        [_] => Err(Error::BadClose),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !close_code_allowed(code) {
                return Err(Error::BadClose);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| Error::InvalidUtf8)?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

/// Codes a peer may send (RFC 6455 7.4.1/7.4.2 and the IANA registry): 1005, 1006 and 1015
/// only ever describe a connection locally.
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}
