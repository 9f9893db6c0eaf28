//! Embedded ASGI: the worker's asyncio loop (pyhost's `AsgiHost`) answering through the same
//! [`Exchange`] and eventfd wake-up as the WSGI threads, so the event-loop side (stream.rs)
//! streams an ASGI response exactly as a WSGI one.
//!
//! The differences are on the Python side: the loop thread never blocks, so a chunk is queued
//! with [`Exchange::push_nowait`] and the app's `send()` pauses when the queue reaches its
//! high-water mark, until the event loop takes the queue (`Exchange::take` resumes it); and the
//! request body is handed over in chunks as the app's `receive()` asks for them, read from the
//! body nginx buffered (memory or temp file), so an upload is never held whole in Python.

use std::io;
use std::sync::Arc;

use pyhost::asgi::{BodyRead, Flow, Transport, VarSource, WsOut};
use pyhost::{Body, Head, Outcome};
use websocket::{encode_close, encode_frame, Opcode};

use super::body::RequestBody;
use super::exchange::{Exchange, HeadMsg, Msg};
use super::wake::Notifier;
use crate::request::Vars;

/// How much of the body one `http.request` message carries at most.
const BODY_CHUNK: usize = 64 * 1024;

impl VarSource for Vars {
    fn pairs(&self) -> Vec<(&[u8], &[u8])> {
        Vars::pairs(self)
    }
}

/// One HTTP request's transport, used on the loop thread.
pub struct AsgiTransport {
    exchange: Arc<Exchange>,
    notifier: &'static Notifier<Arc<Exchange>>,
    body: RequestBody,
    /// Body bytes not yet handed to the app.
    left: u64,
}

impl AsgiTransport {
    pub fn new(
        exchange: Arc<Exchange>,
        notifier: &'static Notifier<Arc<Exchange>>,
        body: RequestBody,
    ) -> AsgiTransport {
        let left = body.len();
        AsgiTransport {
            exchange,
            notifier,
            body,
            left,
        }
    }

    fn push(&self, msg: Msg) -> io::Result<Flow> {
        match self.exchange.push_nowait(msg, self.notifier)? {
            true => Ok(Flow::Paused),
            false => Ok(Flow::Ready),
        }
    }
}

impl Transport for AsgiTransport {
    fn read_body(&mut self) -> BodyRead {
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(BODY_CHUNK);
        let mut chunk = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            match self.body.read(&mut chunk[filled..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => filled += n,
            }
        }
        chunk.truncate(filled);
        // A temp file that came up short ends the body here rather than spinning on it.
        self.left = if filled < want {
            0
        } else {
            self.left - filled as u64
        };
        BodyRead::Data {
            chunk,
            more: self.left > 0,
        }
    }

    fn head(&mut self, head: &Head<'_>) -> io::Result<()> {
        self.push(Msg::Head(HeadMsg {
            status: head.status,
            status_line: head.status_line.to_vec(),
            headers: head.headers.to_vec(),
        }))
        .map(|_| ())
    }

    fn body(&mut self, chunk: &[u8]) -> io::Result<Flow> {
        self.push(Msg::Data(chunk.to_vec()))
    }

    /// pathsend/zerocopysend: nginx sends a duplicate of the descriptor with sendfile(2).
    fn file(&mut self, file: &std::fs::File, offset: u64, len: u64) -> Option<io::Result<Flow>> {
        let dup = file.try_clone().ok()?;
        Some(self.push(Msg::File {
            file: dup,
            offset,
            len,
        }))
    }

    /// One WebSocket message, framed here (on the loop thread), written by the event loop.
    fn ws_send(&mut self, msg: &WsOut<'_>) -> io::Result<Flow> {
        let mut frame = Vec::new();
        match msg {
            WsOut::Text(t) => encode_frame(Opcode::Text, t.as_bytes(), &mut frame),
            WsOut::Binary(b) => encode_frame(Opcode::Binary, b, &mut frame),
        }
        self.push(Msg::Data(frame))
    }

    fn ws_close(&mut self, code: u16, reason: &str) {
        let mut frame = Vec::new();
        encode_close(code, reason, &mut frame);
        let _ = self.push(Msg::WsClose(frame));
    }

    fn ws_resume_reading(&mut self) {
        let _ = self.push(Msg::Resume);
    }

    fn timed_out(&mut self) {
        // Embedded mode's group is "" (crates/metrics); a lookup by name, once per timeout.
        ::metrics::request_timed_out_in("");
    }

    fn finish(&mut self, outcome: Outcome) {
        // Err: nginx already freed the request; nobody is left to tell.
        let _ = self.push(Msg::Done(outcome));
    }
}
