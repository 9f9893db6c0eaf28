//! The response of one connection: `HTTP/1.1 <status>` head, then the body as the app produces
//! it; the close ends it.
//!
//! Writing never waits for the front end alone while it may still be sending the request body:
//! a front end that writes the whole body before it reads (Apache's `mod_proxy_uwsgi`, a uwsgi
//! client) and an app that answers without reading the body would otherwise both block in
//! write(2) until a timeout. So when the socket is full, the writer waits for room *or* body
//! bytes, and moves those into the stash (`body.rs`), where the app still finds them.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, Ordering};

use pyhost::{Head, Responder};

use crate::body::Inbound;
use crate::stream::Stream;

/// The response writer handed to pyhost.
pub struct SocketResponder<'a, 's> {
    stream: &'s Stream,
    inbound: &'a RefCell<Inbound<'s>>,
    head: &'a mut Vec<u8>,
    head_pending: bool,
    /// The head has no Content-Length: the body ends at our close.
    pub unframed: bool,
    /// Set by whoever writes a head first: this writer, or pyhost's watchdog answering for a
    /// request stuck past its timeout (conn.rs, `TakeOver`).
    head_claim: &'a AtomicBool,
}

impl<'a, 's> SocketResponder<'a, 's> {
    /// A writer on `stream`, encoding the head into `head` (a reused buffer).
    pub fn new(
        stream: &'s Stream,
        inbound: &'a RefCell<Inbound<'s>>,
        head: &'a mut Vec<u8>,
        head_claim: &'a AtomicBool,
    ) -> SocketResponder<'a, 's> {
        head.clear();
        SocketResponder {
            stream,
            inbound,
            head,
            head_pending: false,
            unframed: false,
            head_claim,
        }
    }

    /// Before the head goes out: the watchdog may have answered for this request already.
    fn claim_head(&self) -> io::Result<()> {
        if self.head_claim.swap(true, Ordering::AcqRel) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the request timed out and was answered without the app",
            ));
        }
        Ok(())
    }

    /// Sends the head if no body byte has taken it along yet.
    pub fn flush_head(&mut self) -> io::Result<()> {
        if self.head_pending {
            self.head_pending = false;
            self.claim_head()?;
            write_all(self.stream, self.inbound, &mut [IoSlice::new(self.head)])?;
        }
        Ok(())
    }

    /// sendfile(2) until `len` bytes went out or the file ended; returns the bytes sent.
    fn sendfile_all(&self, file: &std::fs::File, offset: u64, len: u64) -> io::Result<u64> {
        let mut off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
        let mut sent = 0u64;
        while sent < len {
            let chunk = usize::try_from(len - sent)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            match self.stream.try_sendfile(file, &mut off, chunk) {
                Ok(0) => break, // the file is shorter than announced
                Ok(n) => sent += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_writable(self.stream, self.inbound)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }
}

impl Responder for SocketResponder<'_, '_> {
    fn start(&mut self, head: &Head<'_>) -> io::Result<()> {
        self.head.clear();
        let headers = head
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()));
        uwsgi::encode_response_head(head.status_line, headers, self.head)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        self.head_pending = true;
        self.unframed = !head
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(b"content-length"));
        Ok(())
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        if self.head_pending {
            self.head_pending = false;
            self.claim_head()?;
            write_all(
                self.stream,
                self.inbound,
                &mut [IoSlice::new(self.head), IoSlice::new(chunk)],
            )
        } else {
            write_all(self.stream, self.inbound, &mut [IoSlice::new(chunk)])
        }
    }

    fn send_file(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: u64,
    ) -> Option<io::Result<u64>> {
        Some(
            self.flush_head()
                .and_then(|_| self.sendfile_all(file, offset, len)),
        )
    }
}

/// Writes all of `bufs`, waiting as [`wait_writable`] does when the socket is full.
fn write_all(
    stream: &Stream,
    inbound: &RefCell<Inbound<'_>>,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match stream.try_write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(stream, inbound)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits until the socket has room, up to the connection's timeout without progress; while
/// the front end still owes body bytes, takes them into the stash as they come (module docs).
fn wait_writable(stream: &Stream, inbound: &RefCell<Inbound<'_>>) -> io::Result<()> {
    loop {
        let body_pending = inbound.borrow().on_socket() > 0;
        let events = if body_pending {
            libc::POLLOUT | libc::POLLIN
        } else {
            libc::POLLOUT
        };
        let ready = stream.wait(events)?;
        // Room, or an error or hang-up that the next write reports.
        if ready & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0 || !body_pending {
            return Ok(());
        }
        inbound.borrow_mut().stash_available()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    use crate::body::{read_all, SocketBody};

    /// The deadlock of issue 10 case 6 in miniature: the peer sends a 4 MiB body before it
    /// reads anything, the app writes 4 MiB without reading: both must complete, and the app
    /// still finds the whole body afterwards.
    #[test]
    fn writing_takes_the_body_the_peer_sends_before_it_reads() {
        let (stream, mut peer) = crate::stream::test_pair();
        stream.set_timeouts(Duration::from_secs(10));
        const N: usize = 4 << 20;
        let body: Vec<u8> = (0..N).map(|i| (i % 253) as u8).collect();
        let sent = body.clone();
        let front_end = std::thread::spawn(move || {
            peer.write_all(&sent).unwrap();
            let mut response = Vec::new();
            peer.read_to_end(&mut response).unwrap();
            response.len()
        });
        let inbound = RefCell::new(Inbound::new(&stream, b"", N as u64));
        let mut head = Vec::new();
        let claim = AtomicBool::new(false);
        let mut out = SocketResponder::new(&stream, &inbound, &mut head, &claim);
        let headers = [(b"Content-Type".to_vec(), b"text/plain".to_vec())];
        let h = Head {
            status: 200,
            status_line: b"200 OK",
            headers: &headers,
        };
        out.start(&h).unwrap();
        for _ in 0..64 {
            out.write(&[b'x'; 65_536]).unwrap();
        }
        let got = read_all(&mut SocketBody { inbound: &inbound }, 100_000);
        assert!(got == body, "the app got the body back in order");
        stream.shutdown_write();
        let response = front_end.join().unwrap();
        assert!(response > 64 * 65_536);
    }
}
