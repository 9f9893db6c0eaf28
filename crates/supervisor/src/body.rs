//! The request body of one connection: exactly CONTENT_LENGTH bytes, from three places in
//! order: what came with the packet head, what the response writer stashed while the front end
//! was not reading ([`Stash`]), and the socket.
//!
//! After the response, whatever the app left unread is read and thrown away before the close,
//! as nginx's lingering close does: closing a socket with unread input makes Linux send a
//! reset, which destroys the response still on its way to the front end (a short body that a
//! front end could pass off as whole). That drain is bounded in time, never in size.

use std::cell::RefCell;
use std::io;
use std::time::{Duration, Instant};

use pyhost::Body;

use crate::stash::Stash;
use crate::stream::Stream;

/// The longest the drain after a response may take in all (nginx's `lingering_time`).
const LINGER_TOTAL: Duration = Duration::from_secs(30);
/// The longest the drain waits for the next bytes (nginx's `lingering_timeout`).
const LINGER_IDLE: Duration = Duration::from_secs(5);
/// Bytes moved per read from the socket into the stash or the drain.
const CHUNK: usize = 64 * 1024;

/// Where the body's bytes are (see the module docs).
pub struct Inbound<'s> {
    stream: &'s Stream,
    /// Body bytes that came with the packet head, not yet read by the app.
    prefix: &'s [u8],
    stash: Stash,
    /// Body bytes still on the socket.
    on_socket: u64,
}

impl<'s> Inbound<'s> {
    /// A body of `length` bytes whose first bytes are `prefix` (more is ignored).
    pub fn new(stream: &'s Stream, prefix: &'s [u8], length: u64) -> Inbound<'s> {
        let prefix = &prefix[..prefix
            .len()
            .min(usize::try_from(length).unwrap_or(usize::MAX))];
        Inbound {
            stream,
            prefix,
            stash: Stash::default(),
            on_socket: length - prefix.len() as u64,
        }
    }

    /// Body bytes the front end has still to send us.
    pub fn on_socket(&self) -> u64 {
        self.on_socket
    }

    /// Moves what the front end has sent (without waiting) from the socket into the stash.
    /// `UnexpectedEof` if the front end closed before the whole body.
    pub fn stash_available(&mut self) -> io::Result<()> {
        let mut buf = [0u8; CHUNK];
        while self.on_socket > 0 {
            let want = buf
                .len()
                .min(usize::try_from(self.on_socket).unwrap_or(usize::MAX));
            match self.stream.try_read(&mut buf[..want]) {
                Ok(0) => return Err(ended_early(self.on_socket)),
                Ok(n) => {
                    self.stash.push(&buf[..n])?;
                    self.on_socket -= n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The app's read: prefix, then stash, then socket (waiting up to the connection's
    /// timeout). 0 once the whole body was read.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.prefix.is_empty() {
            let n = buf.len().min(self.prefix.len());
            buf[..n].copy_from_slice(&self.prefix[..n]);
            self.prefix = &self.prefix[n..];
            return Ok(n);
        }
        if !self.stash.is_empty() {
            return self.stash.pop(buf);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.on_socket).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        loop {
            match self.stream.try_read(&mut buf[..want]) {
                Ok(0) => return Err(ended_early(self.on_socket)),
                Ok(n) => {
                    self.on_socket -= n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
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
    /// and then `extra` more bytes (the abort mark), within [`LINGER_TOTAL`], waiting at most
    /// [`LINGER_IDLE`] (or the connection's timeout, if shorter) for each read. True when all
    /// of it came.
    pub fn discard_rest(&mut self, extra: u64) -> bool {
        let deadline = Instant::now() + LINGER_TOTAL;
        let idle = match self.stream.timeout() {
            t if t.is_zero() => LINGER_IDLE,
            t => t.min(LINGER_IDLE),
        };
        let mut left = self.on_socket + extra;
        let mut sink = [0u8; CHUNK];
        while left > 0 {
            let want = sink.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            match self.stream.try_read(&mut sink[..want]) {
                Ok(0) => return false,
                Ok(n) => left -= n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let wait = idle.min(deadline.saturating_duration_since(Instant::now()));
                    if wait.is_zero() || self.stream.wait_for(libc::POLLIN, wait).is_err() {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.on_socket = 0;
        true
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
        assert_eq!(Inbound::new(&s, b"abcEXTRA", 3).on_socket(), 0);
        let mut inbound = Inbound::new(&s, b"abc", 9);
        assert_eq!(inbound.on_socket(), 6);
        peer.write_all(b"def").unwrap();
        inbound.stash_available().unwrap();
        assert_eq!(inbound.on_socket(), 3);
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
