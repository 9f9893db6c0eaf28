//! What the pyhost test binaries share: an error log that keeps its lines, and a responder that
//! keeps the status and the body.

#![allow(dead_code)] // each test binary uses its own part of it

use std::io;
use std::sync::Mutex;

use pyhost::{ErrorLog, Head, Level, Responder};

/// Keeps every message, in order.
#[derive(Default)]
pub struct Log(pub Mutex<Vec<String>>);

impl ErrorLog for Log {
    fn log(&self, _level: Level, msg: &str) {
        self.0.lock().unwrap().push(msg.to_string());
    }
}

impl Log {
    /// Every message so far, one per line.
    pub fn all(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

/// Keeps the response's status and body.
#[derive(Default)]
pub struct Recorder {
    pub status: Option<u16>,
    pub body: Vec<u8>,
}

impl Responder for Recorder {
    fn start(&mut self, head: &Head<'_>) -> io::Result<()> {
        self.status = Some(head.status);
        Ok(())
    }
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.body.extend_from_slice(chunk);
        Ok(())
    }
}
