//! WebSocket framing (RFC 6455) for a server, in the uwsgi crate's shape: no I/O, no
//! dependencies; the caller reads and writes the socket, this crate says what the bytes mean.
//!
//! - [`frame`]: one frame's header, parsed from a buffer (`Status::Partial` until it is whole)
//!   and encoded (server frames are never masked).
//! - [`Decoder`]: the client's byte stream, pushed in as it arrives, turned into [`Event`]s:
//!   whole messages (fragments reassembled, text checked to be UTF-8, a size limit), pings,
//!   pongs and the close. Every protocol violation is an [`Error`] that says which close code
//!   to answer with (1002 protocol error, 1007 invalid UTF-8, 1009 too big).
//! - [`handshake`]: which requests are handshakes, the `Sec-WebSocket-Accept` value.
//! - [`Session`]: one upgraded connection as a server runs it: the client's bytes into what the
//!   application hears, the frames the server answers by itself (pongs, the close reply).
//!
//! Both transports use it: nginx's embedded mode on its event loop, and the daemon worker on its
//! asyncio loop after nginx's upgrade tunnel.

pub mod frame;
pub mod handshake;

mod decoder;
mod session;
mod sha1;

pub use decoder::{Decoder, Event};
pub use frame::{encode_close, encode_frame, Opcode};
pub use session::{Delivery, Reaction, Session};

/// Whether a parser has what it needs yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    Complete(T),
    Partial,
}

/// A protocol violation by the client. The connection is closed with [`Error::close_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// RSV1-3 set: no extension was negotiated.
    ReservedBits,
    /// An opcode RFC 6455 does not define.
    UnknownOpcode(u8),
    /// A client frame without a mask (RFC 6455 5.1: the server must close).
    Unmasked,
    /// A control frame longer than 125 bytes or fragmented.
    BadControlFrame,
    /// A continuation with no message started, or a new message before the last one ended.
    BadFragmentation,
    /// A 64-bit length with the top bit set, or a length not in its shortest form.
    BadLength,
    /// A text message (or close reason) that is not UTF-8.
    InvalidUtf8,
    /// A message larger than the decoder's limit.
    TooBig,
    /// A close frame with a 1-byte payload or a code that may not be sent.
    BadClose,
}

impl Error {
    /// The close code to answer this error with (RFC 6455 7.4.1).
    pub fn close_code(&self) -> u16 {
        match self {
            Error::InvalidUtf8 => 1007,
            Error::TooBig => 1009,
            _ => 1002,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::ReservedBits => f.write_str("reserved bits set without an extension"),
            Error::UnknownOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            Error::Unmasked => f.write_str("client frame without a mask"),
            Error::BadControlFrame => f.write_str("control frame fragmented or over 125 bytes"),
            Error::BadFragmentation => f.write_str("continuation frame out of sequence"),
            Error::BadLength => f.write_str("frame length not in its shortest form or too large"),
            Error::InvalidUtf8 => f.write_str("text that is not UTF-8"),
            Error::TooBig => f.write_str("message over the size limit"),
            Error::BadClose => f.write_str("malformed close frame"),
        }
    }
}

impl std::error::Error for Error {}
