//! Daemon mode: the connection to a group (mod_proxy's "backend"), and one request/response on
//! it, on the request's own thread.
//!
//! The request (uwsgi packet, then the spooled body) goes out *while* the response comes in:
//! [`Backend::read`] waits for the socket to be readable or writable and sends what it can
//! whenever the group takes more. A worker that answers before it reads the body (an app that
//! ignores the upload and returns 10 MB) therefore never meets a front end blocked in write(2):
//! neither side waits for the other, and the response arrives whole or clearly fails (issue
//! 10, case 6; before this, both ends blocked writing until `Timeout`, then 502).
//!
//! Everything runs on the request thread, because httpd's output filters (which the relay
//! writes the response through) may only run there. Sends never block (`MSG_DONTWAIT`); reads
//! block for at most `Timeout` (httpd's, as mod_proxy waits for a backend), either in poll(2)
//! while something is left to send or in recv(2) with `SO_RCVTIMEO` once all is out.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use supervisor::SocketSpec;
use uwsgi::contract::ABORT_MARK_BYTE;

use crate::spool::Spool;
use crate::supervise::Route;

/// A connection to a group: unix or TCP, one request per connection.
pub(crate) enum Conn {
    Unix(UnixStream),
    Tcp(std::net::TcpStream),
}

impl Conn {
    fn fd(&self) -> RawFd {
        match self {
            Conn::Unix(s) => s.as_raw_fd(),
            Conn::Tcp(s) => s.as_raw_fd(),
        }
    }

    fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(Some(t)),
            Conn::Tcp(s) => s.set_read_timeout(Some(t)),
        }
    }
}

/// Connects to the group, retrying while it is (re)starting (socket missing or refusing) until
/// `deadline`: a refused connect never reached a worker.
pub(crate) fn connect(route: &Route, deadline: Instant) -> io::Result<Conn> {
    let mut pause = Duration::from_millis(10);
    loop {
        let attempt = match &route.socket {
            SocketSpec::Unix(path) => UnixStream::connect(path).map(Conn::Unix),
            SocketSpec::Tcp(addr) => std::net::TcpStream::connect(addr.as_str()).map(Conn::Tcp),
        };
        match attempt {
            Ok(conn) => return Ok(conn),
            Err(e) if is_restarting(&e) && Instant::now() + pause < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A connect error that means "the group is (re)starting": its socket is missing, refuses, or
/// its backlog is full.
fn is_restarting(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused | io::ErrorKind::WouldBlock
    )
}

/// What is left to send, in order: the packet, the body, then the abort mark.
struct Outgoing<'a> {
    packet: &'a [u8],
    memory: &'a [u8],
    file: Option<FileSource<'a>>,
    mark: bool,
    /// Bytes the socket took so far.
    sent: u64,
}

/// The spooled body's temp file, sent through a small buffer.
struct FileSource<'a> {
    file: &'a File,
    offset: u64,
    len: u64,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<'a> Outgoing<'a> {
    fn new(packet: &'a [u8], body: Option<&'a Spool>) -> Self {
        let (memory, file) = match body {
            None => (&[][..], None),
            Some(Spool::Memory(m)) => (&m[..], None),
            Some(Spool::File { file, len }) => (
                &[][..],
                Some(FileSource {
                    file,
                    offset: 0,
                    len: *len,
                    buf: vec![0; 64 * 1024],
                    start: 0,
                    end: 0,
                }),
            ),
        };
        Outgoing {
            packet,
            memory,
            file,
            mark: false,
            sent: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.packet.is_empty() && self.memory.is_empty() && self.file.is_none() && !self.mark
    }

    /// Sends as much as the socket takes without blocking.
    fn push(&mut self, fd: RawFd) -> io::Result<()> {
        loop {
            let n = if !self.packet.is_empty() || !self.memory.is_empty() {
                let n = send_two(fd, self.packet, self.memory)?;
                let from_packet = n.min(self.packet.len());
                self.packet = &self.packet[from_packet..];
                self.memory = &self.memory[n - from_packet..];
                n
            } else if let Some(f) = &mut self.file {
                if f.start == f.end {
                    if f.offset >= f.len {
                        self.file = None;
                        continue;
                    }
                    f.refill()?;
                }
                let n = send_two(fd, &f.buf[f.start..f.end], &[])?;
                f.start += n;
                n
            } else if self.mark {
                let n = send_two(fd, &[ABORT_MARK_BYTE], &[])?;
                self.mark = n == 0;
                n
            } else {
                return Ok(());
            };
            if n == 0 {
                return Ok(()); // the socket is full
            }
            self.sent += n as u64;
        }
    }
}

impl FileSource<'_> {
    fn refill(&mut self) -> io::Result<()> {
        let left = usize::try_from(self.len - self.offset).unwrap_or(usize::MAX);
        let want = self.buf.len().min(left);
        let n = self.file.read_at(&mut self.buf[..want], self.offset)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the spooled request body is shorter than it was",
            ));
        }
        self.offset += n as u64;
        self.start = 0;
        self.end = n;
        Ok(())
    }
}

/// One sendmsg(2) of `a` then `b`, without blocking and without SIGPIPE. Ok(0): the socket is
/// full.
fn send_two(fd: RawFd, a: &[u8], b: &[u8]) -> io::Result<usize> {
    let mut iov = [
        libc::iovec {
            iov_base: a.as_ptr() as *mut libc::c_void,
            iov_len: a.len(),
        },
        libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        },
    ];
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = if b.is_empty() { 1 } else { 2 };
    loop {
        // SAFETY: msg points at iovecs over live slices (only read by sendmsg); fd is open.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => return Ok(0),
            _ => return Err(e),
        }
    }
}

/// The request going out and the response coming in on one connection.
pub(crate) struct Backend<'a> {
    conn: Conn,
    out: Outgoing<'a>,
    timeout: Duration,
    /// Sending failed (the worker closed or reset): only the response is read from then on.
    send_failed: Option<io::Error>,
}

impl<'a> Backend<'a> {
    /// Starts the request: sends what the socket takes at once (all of a bodiless request).
    /// A send error is kept for [`Backend::never_reached`] and the reads that follow.
    pub(crate) fn start(
        conn: Conn,
        packet: &'a [u8],
        body: Option<&'a Spool>,
        timeout: Duration,
    ) -> io::Result<Backend<'a>> {
        conn.set_read_timeout(timeout)?;
        let mut backend = Backend {
            conn,
            out: Outgoing::new(packet, body),
            timeout,
            send_failed: None,
        };
        backend.push();
        Ok(backend)
    }

    /// True when the connection failed before the group took a single byte of the request: it
    /// provably never reached the app (a connection queued on a group that went away), so it
    /// may be sent again on a new connection. Never true once anything went out.
    pub(crate) fn never_reached(&self) -> bool {
        self.send_failed.is_some() && self.out.sent == 0
    }

    /// Why sending failed, if it did.
    pub(crate) fn send_error(&self) -> Option<&io::Error> {
        self.send_failed.as_ref()
    }

    fn push(&mut self) {
        if self.send_failed.is_none() {
            if let Err(e) = self.out.push(self.conn.fd()) {
                self.send_failed = Some(e);
            }
        }
    }

    /// Queues the abort mark (uwsgi::contract, "Aborted responses") behind the rest of the
    /// request: the worker reads it after a complete response and leaves it unread after an
    /// aborted one.
    pub(crate) fn send_abort_mark(&mut self) {
        self.out.mark = true;
        self.push();
    }

    /// Reads response bytes, sending request bytes meanwhile whenever the group takes them.
    /// A wait of `Timeout` with nothing either way is [`io::ErrorKind::TimedOut`].
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.send_failed.is_some() || self.out.is_empty() {
                return match self.conn_read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(timed_out()),
                    other => other,
                };
            }
            let (readable, writable) = self.wait()?;
            if writable {
                self.push();
            }
            if readable {
                // SAFETY: buf is writable for buf.len() bytes; the fd is open.
                let n = unsafe {
                    libc::recv(
                        self.conn.fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n >= 0 {
                    return Ok(n as usize);
                }
                let e = io::Error::last_os_error();
                if !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) {
                    return Err(e);
                }
            }
        }
    }

    fn conn_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let r = match &mut self.conn {
                Conn::Unix(s) => s.read(buf),
                Conn::Tcp(s) => s.read(buf),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    /// poll(2) for readable and writable, up to `Timeout`.
    fn wait(&self) -> io::Result<(bool, bool)> {
        let ms = libc::c_int::try_from(self.timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        let mut pfd = libc::pollfd {
            fd: self.conn.fd(),
            events: libc::POLLIN | libc::POLLOUT,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n > 0 {
                let r = pfd.revents;
                let gone = r & (libc::POLLERR | libc::POLLHUP) != 0;
                return Ok((
                    r & libc::POLLIN != 0 || gone,
                    r & libc::POLLOUT != 0 || gone,
                ));
            }
            if n == 0 {
                return Err(timed_out());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "no data within Timeout")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pair() -> (Conn, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Conn::Unix(a), b)
    }

    /// The peer answers 4 MiB before it reads anything, then reads the whole request: with a
    /// blocking "send, then read", both ends would wait on full socket buffers forever.
    #[test]
    fn response_flows_while_the_body_is_still_going_out() {
        let (conn, mut peer) = pair();
        let body = Spool::Memory(vec![b'b'; 8 << 20]);
        let worker = std::thread::spawn(move || {
            peer.write_all(&vec![b'r'; 4 << 20]).unwrap();
            peer.shutdown(std::net::Shutdown::Write).unwrap();
            let mut got = Vec::new();
            peer.read_to_end(&mut got).unwrap();
            got.len()
        });
        let mut ex = Backend::start(conn, b"PKT", Some(&body), Duration::from_secs(10)).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut received = 0;
        loop {
            match ex.read(&mut buf).unwrap() {
                0 => break,
                n => received += n,
            }
        }
        assert_eq!(received, 4 << 20);
        drop(ex);
        // Everything the response needed; the rest of the body may or may not have gone out.
        assert!(worker.join().unwrap() >= 3);
    }

    #[test]
    fn a_spooled_file_goes_out_whole_then_the_mark() {
        let (conn, mut peer) = pair();
        let mut file = tempfile_with(&vec![b'f'; 300_000]);
        file.flush().unwrap();
        let body = Spool::File { file, len: 300_000 };
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            while got.len() < 3 + 300_000 + 1 {
                let n = peer.read(&mut chunk).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&chunk[..n]);
            }
            peer.write_all(b"done").unwrap();
            got
        });
        let mut ex = Backend::start(conn, b"PKT", Some(&body), Duration::from_secs(10)).unwrap();
        ex.send_abort_mark();
        let mut buf = [0u8; 16];
        let n = ex.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"done");
        let got = reader.join().unwrap();
        assert_eq!(&got[..3], b"PKT");
        assert!(got[3..300_003].iter().all(|&b| b == b'f'));
        assert_eq!(got[300_003], ABORT_MARK_BYTE);
    }

    #[test]
    fn silence_is_a_timeout() {
        let (conn, _peer) = pair();
        let body = Spool::Memory(vec![b'b'; 8 << 20]); // more than the socket takes
        let mut ex = Backend::start(conn, b"PKT", Some(&body), Duration::from_millis(200)).unwrap();
        let mut buf = [0u8; 16];
        let e = ex.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn a_closed_peer_fails_the_first_send_with_nothing_sent() {
        let (conn, peer) = pair();
        drop(peer);
        let ex = Backend::start(conn, b"PKT", None, Duration::from_secs(1)).unwrap();
        assert!(ex.never_reached());
        // Once a byte went out, never again.
        let (conn, mut peer) = pair();
        let ex = Backend::start(conn, b"PKT", None, Duration::from_secs(1)).unwrap();
        let mut got = [0u8; 3];
        peer.read_exact(&mut got).unwrap();
        drop(peer);
        assert!(!ex.never_reached());
    }

    /// What `daemon::deliver` relies on to retry a bodiless request over a unix socket: a reset
    /// before any response byte means the worker never read the whole packet (a connection in
    /// the backlog of a listener that goes away, or a worker that died before reading it all),
    /// while a worker that read it all and then died gives a plain EOF.
    #[test]
    fn unix_resets_only_when_the_packet_was_not_read_whole() {
        let read_after = |peer_reads: usize| -> io::ErrorKind {
            let dir = std::env::temp_dir().join(format!(
                "rwsgi-backend-test.{}.{peer_reads}",
                std::process::id()
            ));
            let _ = std::fs::remove_file(&dir);
            let listener = std::os::unix::net::UnixListener::bind(&dir).unwrap();
            let conn = Conn::Unix(UnixStream::connect(&dir).unwrap());
            let mut ex = Backend::start(conn, b"PACKET", None, Duration::from_secs(5)).unwrap();
            if peer_reads == 0 {
                drop(listener); // never accepted
            } else {
                let (mut worker, _) = listener.accept().unwrap();
                let mut got = vec![0u8; peer_reads];
                worker.read_exact(&mut got).unwrap();
                drop(worker); // dies
            }
            let _ = std::fs::remove_file(&dir);
            let mut buf = [0u8; 16];
            match ex.read(&mut buf) {
                Ok(0) => io::ErrorKind::UnexpectedEof,
                Ok(_) => io::ErrorKind::Other,
                Err(e) => e.kind(),
            }
        };
        assert_eq!(read_after(0), io::ErrorKind::ConnectionReset);
        assert_eq!(read_after(3), io::ErrorKind::ConnectionReset);
        assert_eq!(read_after(6), io::ErrorKind::UnexpectedEof);
    }

    fn tempfile_with(data: &[u8]) -> File {
        let mut f = crate::spool::anonymous_file(&std::env::temp_dir()).unwrap();
        f.write_all(data).unwrap();
        f
    }
}
