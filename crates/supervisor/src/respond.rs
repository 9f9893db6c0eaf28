//! The response of one connection, framed as its protocol wants ([`Framing`]): an
//! `HTTP/1.1 <status>` head (uwsgi) or a CGI `Status:` head (SCGI), then the body as the app
//! produces it, the close ending it; or for FastCGI the same CGI head and body cut into STDOUT
//! records, ended by an empty STDOUT record and END_REQUEST ([`SocketResponder::finish`]).
//!
//! Writing never waits for the front end alone while it may still be sending the request body:
//! a front end that writes the whole body before it reads (Apache's `mod_proxy_uwsgi`, a uwsgi
//! client) and an app that answers without reading the body would otherwise both block in
//! write(2) until a timeout. So when the socket is full, the writer waits for room *or* body
//! bytes, and moves those into the stash (`body.rs`), where the app still finds them.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, Ordering};

use gateway::fastcgi::HEADER_LEN;
use pyhost::{Head, Responder};

use crate::body::Inbound;
use crate::proto::{abort_answer, abort_record, end_records, stdout_headers};
use crate::stream::Stream;

/// The longest an aborted FastCGI response waits for the front end to take what was sent
/// before the record that ends it.
const ABORT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How a response goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// uwsgi: `HTTP/1.1 200 OK` head (Apache's `mod_proxy_uwsgi` requires it), raw body.
    Http,
    /// SCGI: CGI head (`Status: 200 OK`, which every SCGI front end reads), raw body.
    Cgi,
    /// FastCGI: the CGI head and the body as STDOUT records of `request_id`.
    FastCgi { request_id: u16 },
}

/// The response writer handed to pyhost.
pub struct SocketResponder<'a, 's> {
    stream: &'s Stream,
    inbound: &'a RefCell<Inbound<'s>>,
    head: &'a mut Vec<u8>,
    head_pending: bool,
    framing: Framing,
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
        framing: Framing,
        head_claim: &'a AtomicBool,
    ) -> SocketResponder<'a, 's> {
        head.clear();
        SocketResponder {
            stream,
            inbound,
            head,
            head_pending: false,
            framing,
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
            // send() takes the pending head along.
            self.send(&[], &[])?;
        }
        Ok(())
    }

    /// The end of a complete response: the head if it has not gone out (an empty body), and
    /// for FastCGI the empty STDOUT record and END_REQUEST. A FastCGI request the front end
    /// aborted gets END_REQUEST alone.
    pub fn finish(&mut self) -> io::Result<()> {
        let Framing::FastCgi { request_id } = self.framing else {
            return self.flush_head();
        };
        let mut tail = Vec::with_capacity(2 * HEADER_LEN + 8);
        if self.front_end_aborted() {
            abort_answer(request_id, &mut tail);
            self.head_pending = false;
        } else {
            end_records(request_id, &mut tail);
        }
        self.send(&[], &tail)
    }

    /// FastCGI, after the app failed mid-response: the record that makes the front end cut the
    /// response (`proto::abort_record`) instead of END_REQUEST. Ok(false) for other framings.
    pub fn abort(&mut self) -> io::Result<bool> {
        let Framing::FastCgi { request_id } = self.framing else {
            return Ok(false);
        };
        self.flush_head()?;
        // In a read of its own: a front end that meets the bad record in the same read as the
        // last body bytes (nginx) drops those bytes, and the client would get no response at
        // all instead of a cut one.
        self.stream.wait_sent(ABORT_WAIT);
        self.send(&[], &abort_record(request_id))?;
        Ok(true)
    }

    /// How this response goes on the wire.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// FastCGI: the front end sent ABORT_REQUEST.
    pub fn front_end_aborted(&self) -> bool {
        self.inbound
            .borrow_mut()
            .records()
            .is_some_and(|r| r.aborted())
    }

    /// Writes, in order: the FastCGI management answers waiting (between two records), the head
    /// if pending, `body` (framed), then `tail` as it is (already framed).
    /// The pending head is claimed first (`claim_head`): every head goes out through here.
    fn send(&mut self, body: &[u8], tail: &[u8]) -> io::Result<()> {
        let head: &[u8] = if std::mem::take(&mut self.head_pending) {
            self.claim_head()?;
            self.head
        } else {
            &[]
        };
        let Framing::FastCgi { request_id } = self.framing else {
            return write_all(
                self.stream,
                self.inbound,
                &mut [IoSlice::new(head), IoSlice::new(body), IoSlice::new(tail)],
            );
        };
        let answers = self
            .inbound
            .borrow_mut()
            .records()
            .map(|r| r.take_answers())
            .unwrap_or_default();
        let mut headers = Vec::new();
        stdout_headers(request_id, head.len(), &mut headers);
        stdout_headers(request_id, body.len(), &mut headers);
        let headers: &[[u8; HEADER_LEN]] = &headers;
        let mut slices = Vec::with_capacity(2 * headers.len() + 2);
        slices.push(IoSlice::new(&answers));
        let mut records = headers.iter();
        for part in [head, body] {
            for chunk in part.chunks(gateway::fastcgi::MAX_CONTENT_LEN) {
                if let Some(h) = records.next() {
                    slices.push(IoSlice::new(h));
                    slices.push(IoSlice::new(chunk));
                }
            }
        }
        slices.push(IoSlice::new(tail));
        write_all(self.stream, self.inbound, &mut slices)
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
        let encoded = match self.framing {
            Framing::Http => uwsgi::encode_response_head(head.status_line, headers, self.head),
            // In a CGI head `Status` is the status line: an app's own `Status` header would
            // replace the real status at the front end, so it is dropped (as nginx's uwsgi
            // module hides one).
            Framing::Cgi | Framing::FastCgi { .. } => gateway::cgi::encode_head(
                head.status_line,
                headers.filter(|(k, _)| !k.eq_ignore_ascii_case(b"status")),
                self.head,
            ),
        };
        encoded.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
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
        if let Framing::FastCgi { .. } = self.framing {
            // One non-blocking read per chunk: an ABORT_REQUEST is seen here.
            self.inbound.borrow_mut().poll_front_end();
        }
        if self.front_end_aborted() {
            // FastCGI's ABORT_REQUEST: the app's iterable is closed, as for a client gone.
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the front end aborted the request",
            ));
        }
        self.send(chunk, &[])
    }

    fn send_file(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: u64,
    ) -> Option<io::Result<u64>> {
        if let Framing::FastCgi { .. } = self.framing {
            // The bytes must go inside STDOUT records, and a file shorter than announced would
            // leave a record short of its length: pyhost reads the file and writes it instead.
            return None;
        }
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
        let body_pending = inbound.borrow().pending();
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
        let mut out = SocketResponder::new(&stream, &inbound, &mut head, Framing::Http, &claim);
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
