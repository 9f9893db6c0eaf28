//! WebSocket in embedded mode, the part that needs no nginx: the client's bytes through the
//! `websocket` crate's [`Session`], its deliveries handed to the app through the connection's
//! handle. The event-loop side (stream.rs) reads the socket and writes the replies.

use pyhost::asgi::Handle;
use websocket::{Reaction, Session};

/// Largest message a client may send (reassembled): a bigger one closes with 1009.
pub const MAX_MESSAGE: usize = 16 << 20;

/// An upgraded connection's reading side and close state.
pub struct WsSide {
    pub session: Session,
    pub handle: Handle,
}

impl WsSide {
    pub fn new(handle: Handle) -> WsSide {
        WsSide {
            session: Session::new(MAX_MESSAGE),
            handle,
        }
    }

    /// Bytes the client sent: what the app must hear goes to it; the reaction's replies are
    /// the caller's to write.
    pub fn received(&mut self, bytes: &[u8]) -> Reaction {
        let reaction = self.session.received(bytes);
        for d in &reaction.deliveries {
            self.handle.ws_deliver(d.clone());
        }
        reaction
    }

    /// The client's connection ended without a close frame.
    pub fn eof(&mut self) {
        if let Some(d) = self.session.eof() {
            self.handle.ws_deliver(d);
        }
    }
}
