//! The request body of one connection, from three places in order: what came with the request
//! head, what the response writer stashed while the front end was not reading ([`Stash`]), and
//! the socket. On the wire ([`Source`]) it is exactly CONTENT_LENGTH raw bytes (uwsgi, SCGI),
//! or the content of FastCGI's STDIN records up to the empty one.
//!
//! After the response, whatever the app left unread is read and thrown away before the close,
//! as nginx's lingering close does: closing a socket with unread input makes Linux send a
//! reset, which destroys the response still on its way to the front end (a short body that a
//! front end could pass off as whole). That drain is bounded in time, never in size.

use std::cell::RefCell;
use std::io;
use std::time::{Duration, Instant};

use pyhost::Body;

use crate::proto::StdinRecords;
use crate::stash::Stash;
use crate::stream::Stream;

/// The longest the drain after a response may take in all (nginx's `lingering_time`).
const LINGER_TOTAL: Duration = Duration::from_secs(30);
/// The longest the drain waits for the next bytes (nginx's `lingering_timeout`).
const LINGER_IDLE: Duration = Duration::from_secs(5);
/// Bytes moved per read from the socket into the stash or the drain.
const CHUNK: usize = 64 * 1024;

/// The body on the wire.
pub enum Source<'s> {
    /// The next bytes of the connection (uwsgi, SCGI): `prefix` came with the head, `on_socket`
    /// more are still to be read.
    Raw { prefix: &'s [u8], on_socket: u64 },
    /// FastCGI's STDIN records.
    Records(Box<StdinRecords>),
}

impl<'s> Source<'s> {
    /// A body of `length` raw bytes whose first bytes are `prefix` (more is ignored).
    pub fn raw(prefix: &'s [u8], length: u64) -> Source<'s> {
        let prefix = &prefix[..prefix
            .len()
            .min(usize::try_from(length).unwrap_or(usize::MAX))];
        Source::Raw {
            prefix,
            on_socket: length - prefix.len() as u64,
        }
    }
}

/// Where the body's bytes are (see the module docs).
pub struct Inbound<'s> {
    stream: &'s Stream,
    source: Source<'s>,
    stash: Stash,
}

impl<'s> Inbound<'s> {
    /// A body of `length` raw bytes whose first bytes are `prefix` (more is ignored).
    #[cfg(test)]
    pub fn new(stream: &'s Stream, prefix: &'s [u8], length: u64) -> Inbound<'s> {
        Inbound::from_source(stream, Source::raw(prefix, length))
    }

    /// The body of a request head (`proto::Head::body`).
    pub fn from_source(stream: &'s Stream, source: Source<'s>) -> Inbound<'s> {
        Inbound {
            stream,
            source,
            stash: Stash::default(),
        }
    }

    /// The front end has still to send us some of the body.
    pub fn pending(&self) -> bool {
        match &self.source {
            Source::Raw { on_socket, .. } => *on_socket > 0,
            Source::Records(records) => records.pending(),
        }
    }

    /// FastCGI: the STDIN records, for the response writer (management answers, abort).
    pub fn records(&mut self) -> Option<&mut StdinRecords> {
        match &mut self.source {
            Source::Records(records) => Some(records),
            Source::Raw { .. } => None,
        }
    }

    /// FastCGI, while the response is written: takes in what the front end sent meanwhile
    /// (body bytes into the stash, and ABORT_REQUEST or management records), without waiting.
    /// A read error is left for the app's next read or the close to report.
    pub fn poll_front_end(&mut self) {
        let ended = match &self.source {
            Source::Records(records) => !records.pending(),
            Source::Raw { .. } => return,
        };
        if !ended {
            let _ = self.stash_available();
        } else if let Source::Records(records) = &mut self.source {
            records.poll_after_body(self.stream);
        }
    }

    /// Moves what the front end has sent (without waiting) from the socket into the stash.
    /// `UnexpectedEof` if the front end closed before the whole body.
    pub fn stash_available(&mut self) -> io::Result<()> {
        let mut buf = [0u8; CHUNK];
        loop {
            match self.pull(&mut buf, false) {
                Ok(0) => return Ok(()),
                Ok(n) => self.stash.push(&buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// The app's read: prefix, then stash, then socket (waiting up to the connection's
    /// timeout). 0 once the whole body was read.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Source::Raw { prefix, .. } = &mut self.source {
            if !prefix.is_empty() {
                let n = buf.len().min(prefix.len());
                buf[..n].copy_from_slice(&prefix[..n]);
                *prefix = &prefix[n..];
                return Ok(n);
            }
        }
        if !self.stash.is_empty() {
            return self.stash.pop(buf);
        }
        self.pull(buf, true)
    }

    /// Body bytes from the socket into `buf` (past the prefix, which the caller took): 0 at
    /// the end of the body. Without `wait`, `WouldBlock` when none can be read now; with it,
    /// waits up to the connection's timeout.
    fn pull(&mut self, buf: &mut [u8], wait: bool) -> io::Result<usize> {
        let on_socket = match &mut self.source {
            Source::Records(records) => return records.read(self.stream, buf, wait),
            Source::Raw { on_socket, .. } => on_socket,
        };
        let want = buf
            .len()
            .min(usize::try_from(*on_socket).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        loop {
            match self.stream.try_read(&mut buf[..want]) {
                Ok(0) => return Err(ended_early(*on_socket)),
                Ok(n) => {
                    *on_socket -= n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && wait => {
                    if let Err(e) = self.stream.wait(libc::POLLIN) {
                        return Err(if e.kind() == io::ErrorKind::TimedOut {
                            io::Error::new(
                                io::ErrorKind::TimedOut,
                                "timed out reading the request body",
                            )
                        } else {
                            e
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// After the response: reads and throws away what the front end still sends of the body,
    /// and then `extra` more bytes (the abort mark, raw bodies only), within [`LINGER_TOTAL`],
    /// waiting at most [`LINGER_IDLE`] (or the connection's timeout, if shorter) for each
    /// read. True when all of it came.
    pub fn discard_rest(&mut self, extra: u64) -> bool {
        if let Source::Raw { on_socket, .. } = &mut self.source {
            *on_socket += extra;
        }
        let deadline = Instant::now() + LINGER_TOTAL;
        let idle = match self.stream.timeout() {
            t if t.is_zero() => LINGER_IDLE,
            t => t.min(LINGER_IDLE),
        };
        let mut sink = [0u8; CHUNK];
        loop {
            match self.pull(&mut sink, false) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let wait = idle.min(deadline.saturating_duration_since(Instant::now()));
                    if wait.is_zero() || self.stream.wait_for(libc::POLLIN, wait).is_err() {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
    }
}

fn ended_early(missing: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("request body ended {missing} bytes early"),
    )
}

/// `wsgi.input`, reading through the connection's shared [`Inbound`].
pub struct SocketBody<'a, 's> {
    pub inbound: &'a RefCell<Inbound<'s>>,
}

impl Body for SocketBody<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inbound.borrow_mut().read(buf)
    }
}

/// For tests: everything `body` gives, read in `chunk`-sized pieces.
#[cfg(test)]
pub(crate) fn read_all(body: &mut SocketBody<'_, '_>, chunk: usize) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        let n = body.read(&mut buf).unwrap();
        if n == 0 {
            return all;
        }
        all.extend_from_slice(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::test_pair as pair;
    use std::io::Write;

    #[test]
    fn the_app_reads_prefix_stash_then_socket_in_order() {
        let (s, mut peer) = pair();
        s.set_timeouts(Duration::from_secs(5));
        // What came with the head beyond CONTENT_LENGTH is not body.
        assert!(!Inbound::new(&s, b"abcEXTRA", 3).pending());
        let mut inbound = Inbound::new(&s, b"abc", 9);
        assert!(inbound.pending());
        peer.write_all(b"def").unwrap();
        inbound.stash_available().unwrap();
        assert!(inbound.pending());
        peer.write_all(b"ghi-and-the-mark").unwrap();
        let cell = RefCell::new(inbound);
        let mut body = SocketBody { inbound: &cell };
        assert_eq!(read_all(&mut body, 2), b"abcdefghi");
    }

    #[test]
    fn discard_takes_the_rest_and_gives_up_on_silence() {
        let (s, mut peer) = pair();
        s.set_timeouts(Duration::from_millis(100));
        let mut inbound = Inbound::new(&s, b"", 1_000_000);
        let writer = std::thread::spawn(move || {
            peer.write_all(&vec![7u8; 1_000_000]).unwrap();
            peer.write_all(b"!").unwrap();
            peer
        });
        assert!(inbound.discard_rest(1));
        let _peer = writer.join().unwrap();
        let mut inbound = Inbound::new(&s, b"", 10);
        let started = Instant::now();
        assert!(
            !inbound.discard_rest(0),
            "nothing comes: bounded by the idle wait"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
