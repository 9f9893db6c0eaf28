//! One server-side connection after the handshake, as both transports run it: the client's
//! bytes decoded into what the application should hear, plus the frames the server answers by
//! itself (pongs, the close reply), and the close-handshake bookkeeping.

use crate::frame::{encode_close, encode_frame, Opcode};
use crate::{Decoder, Event};

/// What the application hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Text(String),
    Binary(Vec<u8>),
    /// The client closed (its code, or 1005 for none; 1006 when the connection just ended, or
    /// the code of a protocol error we closed with).
    Closed(u16, String),
}

/// What to do after some client bytes.
#[derive(Debug, Default)]
pub struct Reaction {
    /// For the application, in order.
    pub deliveries: Vec<Delivery>,
    /// Frames to write to the client now.
    pub replies: Vec<u8>,
    /// The client's side is over: stop reading.
    pub end: bool,
}

/// The reading side and close state of an upgraded connection.
pub struct Session {
    decoder: Decoder,
    /// An incomplete frame header, kept for the next read.
    pending: Vec<u8>,
    /// A close frame went out (the application's or our reply): nothing may follow it.
    pub close_sent: bool,
    /// The client's close frame, EOF or a protocol error was seen.
    pub done_reading: bool,
}

impl Session {
    /// A session refusing messages over `max_message` bytes (closed with 1009).
    pub fn new(max_message: usize) -> Session {
        Session {
            decoder: Decoder::new(max_message),
            pending: Vec::new(),
            close_sent: false,
            done_reading: false,
        }
    }

    /// Bytes the client sent.
    pub fn received(&mut self, bytes: &[u8]) -> Reaction {
        let mut reaction = Reaction::default();
        if self.done_reading {
            return reaction;
        }
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
                reaction
                    .deliveries
                    .push(Delivery::Closed(e.close_code(), String::new()));
                self.done_reading = true;
                reaction.end = true;
            }
        }
        reaction
    }

    fn event(&mut self, event: Event, reaction: &mut Reaction) {
        match event {
            Event::Text(t) => reaction.deliveries.push(Delivery::Text(t)),
            Event::Binary(b) => reaction.deliveries.push(Delivery::Binary(b)),
            Event::Ping(data) if !self.close_sent => {
                encode_frame(Opcode::Pong, &data, &mut reaction.replies)
            }
            Event::Ping(_) | Event::Pong(_) => {}
            Event::Close(close) => {
                let (code, reason) = close.unwrap_or((1005, String::new()));
                // Echo the code (RFC 6455 5.5.1); an empty close is answered with 1000.
                let echo = if code == 1005 { 1000 } else { code };
                self.close(echo, "", reaction);
                reaction.deliveries.push(Delivery::Closed(code, reason));
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

    /// The connection ended without a close frame: what the application hears, once.
    pub fn eof(&mut self) -> Option<Delivery> {
        if self.done_reading {
            return None;
        }
        self.done_reading = true;
        Some(Delivery::Closed(1006, String::new()))
    }

    /// The application's close frame, if none went out yet (then nothing may follow it).
    pub fn app_close(&mut self, code: u16, reason: &str) -> Option<Vec<u8>> {
        if self.close_sent {
            return None;
        }
        self.close_sent = true;
        let mut frame = Vec::new();
        encode_close(code, reason, &mut frame);
        Some(frame)
    }
}
