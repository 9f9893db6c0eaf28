//! WebSocket in embedded mode, the parts that need no nginx: is a request a handshake, and what
//! the client's bytes mean once the connection is upgraded (the `websocket` crate decodes; this
//! turns its events into what the app hears and what we answer on the wire ourselves: pongs and
//! the close reply). The event-loop side (stream.rs) reads the socket and writes the replies.

use pyhost::asgi::{Handle, WsMessage};
use websocket::handshake::{accept_key, has_token, key_is_valid};
use websocket::{encode_close, encode_frame, Decoder, Event, Opcode};

/// Largest message a client may send (reassembled): a bigger one closes with 1009.
pub const MAX_MESSAGE: usize = 16 << 20;

/// What a request's headers say about a WebSocket handshake.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Not a WebSocket request.
    No,
    /// A valid handshake: the `Sec-WebSocket-Accept` value to answer with.
    Yes(String),
    /// It asks for a WebSocket but is malformed: answer 400 (or 426 for a version we lack).
    Bad(u16),
}

/// Checks a GET's `Upgrade`, `Connection`, `Sec-WebSocket-Version` and `Sec-WebSocket-Key`
/// (RFC 6455 4.2.1). `http11`: HTTP/1.1 (HTTP/2 has its own WebSocket mechanism, not offered).
pub fn handshake(
    method_get: bool,
    http11: bool,
    upgrade: Option<&[u8]>,
    connection: Option<&[u8]>,
    version: Option<&[u8]>,
    key: Option<&[u8]>,
) -> Handshake {
    if !upgrade.is_some_and(|u| has_token(u, b"websocket")) {
        return Handshake::No;
    }
    if !method_get || !http11 || !connection.is_some_and(|c| has_token(c, b"upgrade")) {
        return Handshake::Bad(400);
    }
    if version.map(<[u8]>::trim_ascii) != Some(b"13") {
        return Handshake::Bad(426);
    }
    match key {
        Some(k) if key_is_valid(k) => Handshake::Yes(accept_key(k)),
        _ => Handshake::Bad(400),
    }
}

/// The reading side of an upgraded connection.
pub struct WsSide {
    decoder: Decoder,
    /// Bytes of an incomplete frame header, kept for the next read.
    pending: Vec<u8>,
    pub handle: Handle,
    /// We sent a close frame (the app's, or our reply): nothing more may follow it.
    pub close_sent: bool,
    /// The client's close frame or EOF was seen: stop reading.
    pub done_reading: bool,
}

/// What to do after some client bytes.
#[derive(Default, Debug)]
pub struct Reaction {
    /// Frames to write to the client now (pongs, the close reply).
    pub replies: Vec<u8>,
    /// The connection is over on the client's side.
    pub end: bool,
}

impl WsSide {
    pub fn new(handle: Handle) -> WsSide {
        WsSide {
            decoder: Decoder::new(MAX_MESSAGE),
            pending: Vec::new(),
            handle,
            close_sent: false,
            done_reading: false,
        }
    }

    /// Bytes the client sent: messages go to the app, pings are answered, a close is
    /// answered and reported, a protocol error closes with its code.
    pub fn received(&mut self, bytes: &[u8]) -> Reaction {
        let mut reaction = Reaction::default();
        let mut events = Vec::new();
        let input: Vec<u8> = if self.pending.is_empty() {
            bytes.to_vec()
        } else {
            let mut all = std::mem::take(&mut self.pending);
            all.extend_from_slice(bytes);
            all
        };
        let result = self.decoder.decode(&input, &mut events);
        for event in events {
            self.event(event, &mut reaction);
        }
        match result {
            Ok(used) => self.pending = input[used..].to_vec(),
            Err(e) => {
                self.close(e.close_code(), &e.to_string(), &mut reaction);
                self.handle.ws_closed(e.close_code(), String::new());
                self.done_reading = true;
                reaction.end = true;
            }
        }
        reaction
    }

    fn event(&mut self, event: Event, reaction: &mut Reaction) {
        match event {
            Event::Text(t) => self.handle.ws_message(WsMessage::Text(t)),
            Event::Binary(b) => self.handle.ws_message(WsMessage::Binary(b)),
            Event::Ping(data) if !self.close_sent => {
                encode_frame(Opcode::Pong, &data, &mut reaction.replies)
            }
            Event::Ping(_) | Event::Pong(_) => {}
            Event::Close(close) => {
                let (code, reason) = close.clone().unwrap_or((1005, String::new()));
                // Echo the code (RFC 6455 5.5.1); an empty close is answered with 1000.
                let echo = if code == 1005 { 1000 } else { code };
                self.close(echo, "", reaction);
                self.handle.ws_closed(code, reason);
                self.done_reading = true;
                reaction.end = true;
            }
        }
    }

    fn close(&mut self, code: u16, reason: &str, reaction: &mut Reaction) {
        if !self.close_sent {
            encode_close(code, reason, &mut reaction.replies);
            self.close_sent = true;
        }
    }

    /// The client closed the connection without a close frame.
    pub fn eof(&mut self) {
        if !self.done_reading {
            self.done_reading = true;
            self.handle.ws_closed(1006, String::new());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes() {
        let key = Some(&b"dGhlIHNhbXBsZSBub25jZQ=="[..]);
        let ws = Some(&b"websocket"[..]);
        let up = Some(&b"keep-alive, Upgrade"[..]);
        let v13 = Some(&b"13"[..]);
        assert_eq!(
            handshake(true, true, ws, up, v13, key),
            Handshake::Yes("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into())
        );
        assert_eq!(handshake(true, true, None, up, v13, key), Handshake::No);
        assert_eq!(
            handshake(true, true, Some(b"h2c"), up, v13, key),
            Handshake::No
        );
        assert_eq!(
            handshake(false, true, ws, up, v13, key),
            Handshake::Bad(400)
        );
        assert_eq!(
            handshake(true, false, ws, up, v13, key),
            Handshake::Bad(400)
        );
        assert_eq!(
            handshake(true, true, ws, None, v13, key),
            Handshake::Bad(400)
        );
        assert_eq!(
            handshake(true, true, ws, up, Some(b"8"), key),
            Handshake::Bad(426)
        );
        assert_eq!(
            handshake(true, true, ws, up, v13, Some(b"x")),
            Handshake::Bad(400)
        );
    }
}
