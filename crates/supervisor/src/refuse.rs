//! The supervisor's own answer while its group has no live worker: `503 Service Unavailable`.
//!
//! When the workers die before they are ready (an app that exits at import, a broken
//! virtualenv), nobody accepts from the group's socket: connections would wait in its backlog
//! until the front end's read timeout (nginx: 300 s for our module, 60 s for `uwsgi_pass`;
//! Apache: `Timeout`), queue-timeout included, since only a worker checks it. So while no
//! worker is ready and the last one died unasked, the supervisor accepts the connections
//! itself, from its poll loop, and answers each with a 503 and `Retry-After` (the time to the
//! next start attempt); the front end passes that on to its client at once.
//!
//! All of it is non-blocking: the supervisor stays single-threaded and never waits for a front
//! end. Each connection gets the answer, then the end of it (`shutdown(SHUT_WR)`), and its
//! request (head and body) is read and thrown away until the front end closes, as the workers
//! do, so that the close does not reset the answer away; bounded in time and in number. The
//! answer is framed for the socket's protocol (`proto::own_answer`); a FastCGI one waits for
//! the request's id, in the first record of a request.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::config::Protocol;
use crate::listener::Listener;
use crate::proto::{own_answer, FirstRequestId};
use crate::stream::Stream;

/// How long one refused connection may take to read our answer and send its request.
const LINGER: Duration = Duration::from_secs(10);
/// Refused connections handled at once; beyond that the backlog keeps the rest for a moment.
const MAX_PENDING: usize = 256;

/// Connections being answered 503.
#[derive(Default)]
pub struct Refuser {
    pending: Vec<Pending>,
    /// What the group's socket speaks.
    protocol: Protocol,
}

struct Pending {
    stream: Stream,
    /// The answer (empty until it can be framed), and how much of it went out.
    answer: Vec<u8>,
    sent: usize,
    deadline: Instant,
    /// FastCGI, before the answer: the request's id, as the records come.
    first_id: Option<FirstRequestId>,
    retry_after: Duration,
}

impl Refuser {
    /// A refuser for a socket speaking `protocol`.
    pub fn new(protocol: Protocol) -> Refuser {
        Refuser {
            pending: Vec::new(),
            protocol,
        }
    }

    /// True when another connection may be taken (used to decide whether to poll the listener).
    pub fn has_room(&self) -> bool {
        self.pending.len() < MAX_PENDING
    }

    /// Accepts what is waiting on `listener` and starts answering each; returns how many.
    /// `retry_after` is the time until the next start attempt.
    pub fn accept_all(&mut self, listener: &Listener, retry_after: Duration) -> usize {
        let mut taken = 0;
        while self.has_room() {
            let Ok(stream) = listener.accept() else {
                break; // EAGAIN (nothing left, or a worker was faster), or an error for later
            };
            let fastcgi = self.protocol == Protocol::FastCgi;
            let mut p = Pending {
                stream,
                answer: if fastcgi {
                    Vec::new()
                } else {
                    answer(self.protocol, 0, retry_after)
                },
                sent: 0,
                deadline: Instant::now() + LINGER,
                first_id: fastcgi.then(FirstRequestId::default),
                retry_after,
            };
            if p.send().is_ok() {
                self.pending.push(p);
            }
            taken += 1;
        }
        taken
    }

    /// Adds one pollfd per connection being answered to `fds`.
    pub fn poll_fds(&self, fds: &mut Vec<libc::pollfd>) {
        for p in &self.pending {
            let events = if p.sent < p.answer.len() || p.answer.is_empty() {
                libc::POLLIN | libc::POLLOUT
            } else {
                libc::POLLIN
            };
            fds.push(libc::pollfd {
                fd: p.stream.as_raw_fd(),
                events,
                revents: 0,
            });
        }
    }

    /// After poll: `ready` holds the entries [`Refuser::poll_fds`] added, in order. Moves each
    /// connection along; closes the finished and the expired ones.
    pub fn on_poll(&mut self, ready: &[libc::pollfd]) {
        let now = Instant::now();
        let mut keep = Vec::with_capacity(self.pending.len());
        for (i, mut p) in self.pending.drain(..).enumerate() {
            let revents = ready
                .get(i)
                .filter(|f| f.fd == p.stream.as_raw_fd())
                .map_or(0, |f| f.revents);
            let alive = now < p.deadline && (revents == 0 || p.progress(revents).is_ok());
            if alive {
                keep.push(p);
            }
        }
        self.pending = keep;
    }
}

impl Pending {
    /// Sends what is left of the answer (once there is one); once it is out, ends our side.
    fn send(&mut self) -> io::Result<()> {
        if self.answer.is_empty() {
            return Ok(());
        }
        while self.sent < self.answer.len() {
            match self
                .stream
                .try_write_vectored(&[IoSlice::new(&self.answer[self.sent..])])
            {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n;
                    if self.sent == self.answer.len() {
                        self.stream.shutdown_write();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads and drops what the front end sent; `Err` once it closed (or failed): done.
    fn drain(&mut self) -> io::Result<()> {
        let mut sink = [0u8; 16 * 1024];
        loop {
            match self.stream.try_read(&mut sink) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    let id = self.first_id.as_mut().and_then(|f| f.feed(&sink[..n]));
                    if let Some(id) = id {
                        self.first_id = None;
                        self.answer = answer(Protocol::FastCgi, id, self.retry_after);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn progress(&mut self, revents: libc::c_short) -> io::Result<()> {
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            self.drain()?;
        }
        self.send()
    }
}

/// `503` with `Retry-After` (whole seconds, at least 1) and a one-line body that says nothing
/// about the app (the reason is in the log), framed for `protocol`.
fn answer(protocol: Protocol, request_id: u16, retry_after: Duration) -> Vec<u8> {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let body: &[u8] =
        b"The application is not available right now (its workers fail to start); retry later.\n";
    let length = body.len().to_string();
    let retry = secs.max(1).to_string();
    let headers: [(&[u8], &[u8]); 3] = [
        (b"Content-Type", b"text/plain"),
        (b"Content-Length", length.as_bytes()),
        (b"Retry-After", retry.as_bytes()),
    ];
    own_answer(
        protocol,
        request_id,
        b"503 Service Unavailable",
        &headers,
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn answers_503_and_reads_the_request_away() {
        let dir = std::env::temp_dir().join(format!("rwsgi-refuse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let cfg = crate::config::GroupConfig::new(
            crate::config::SocketSpec::Unix(path.clone()),
            "app.py".into(),
        );
        let listener = Listener::bind(&cfg).unwrap();
        let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let mut refuser = Refuser::new(Protocol::Uwsgi);
        assert_eq!(
            refuser.accept_all(&listener, Duration::from_millis(1500)),
            1
        );
        // A request with a body bigger than the socket buffers: sent while we answer.
        let sender = {
            let mut c = client.try_clone().unwrap();
            std::thread::spawn(move || c.write_all(&vec![b'x'; 4 << 20]).is_ok())
        };
        let started = Instant::now();
        while !sender.is_finished() && started.elapsed() < Duration::from_secs(10) {
            let mut fds = Vec::new();
            refuser.poll_fds(&mut fds);
            crate::signals::poll(&mut fds, 50).unwrap();
            refuser.on_poll(&fds);
        }
        assert!(sender.join().unwrap(), "the whole request went through");
        let mut got = String::new();
        client.read_to_string(&mut got).unwrap();
        assert!(
            got.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{got}"
        );
        assert!(got.contains("\r\nRetry-After: 2\r\n"), "{got}");
        drop(client);
        let mut fds = Vec::new();
        refuser.poll_fds(&mut fds);
        crate::signals::poll(&mut fds, 1000).unwrap();
        refuser.on_poll(&fds);
        assert!(
            refuser.pending.is_empty(),
            "closed once the front end closed"
        );
        drop(listener);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
