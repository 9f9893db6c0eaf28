//! One accepted front-end connection, non-blocking underneath.
//!
//! The socket is accepted with `O_NONBLOCK` and every operation is first tried as it is: for
//! the usual request the whole packet is already there and the response fits in the socket
//! buffer, so nothing waits and no extra system call is made. When an operation would block,
//! the caller waits with [`Stream::wait`] (poll(2), bounded by the connection's timeout) for
//! what it needs: that is what lets the response writer also take request body bytes while the
//! front end is not reading (see `respond.rs`), which a blocking socket could not do.
//!
//! `Read`/`Write` for `&Stream` are the simple blocking forms (try, wait, try again) for the
//! code that needs nothing more.

use std::cell::Cell;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// A connection accepted by the listener (see [`crate::listener::Listener::accept`]).
pub struct Stream {
    fd: OwnedFd,
    /// Longest wait for the front end in one [`Stream::wait`]; zero = no limit.
    timeout: Cell<Duration>,
}

impl Stream {
    /// Takes a socket accepted with `SOCK_NONBLOCK | SOCK_CLOEXEC`.
    pub(crate) fn new(fd: OwnedFd) -> Stream {
        Stream {
            fd,
            timeout: Cell::new(Duration::ZERO),
        }
    }

    /// The longest the front end may keep us waiting for one step (a read, room to write);
    /// zero = no limit. A front end that stalls must not pin a thread forever.
    pub fn set_timeouts(&self, t: Duration) {
        self.timeout.set(t);
    }

    /// The timeout set with [`Stream::set_timeouts`].
    pub fn timeout(&self) -> Duration {
        self.timeout.get()
    }

    /// Waits until one of `events` (`POLLIN`, `POLLOUT`) is ready, or the timeout passes
    /// (`TimedOut`). Returns the ready events; `POLLHUP`/`POLLERR` count as ready (the next
    /// operation reports what happened).
    pub fn wait(&self, events: libc::c_short) -> io::Result<libc::c_short> {
        self.wait_for(events, self.timeout.get())
    }

    /// As [`Stream::wait`], for at most `limit` (zero = no limit).
    pub fn wait_for(&self, events: libc::c_short, limit: Duration) -> io::Result<libc::c_short> {
        let deadline = (!limit.is_zero()).then(|| Instant::now() + limit);
        loop {
            let ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    // Round up: a 0 ms poll would spin until the deadline.
                    i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
                }
            };
            let mut fds = [libc::pollfd {
                fd: self.as_raw_fd(),
                events,
                revents: 0,
            }];
            // SAFETY: fds is a valid array of one pollfd; the fd is open for as long as self.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n > 0 {
                return Ok(fds[0].revents);
            }
        }
    }

    /// One `recv` that never blocks (`WouldBlock` when nothing is there yet).
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for buf.len() bytes; the fd is open for as long as self.
        let n = unsafe {
            libc::recv(
                self.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        result(n)
    }

    /// One `sendmsg` that never blocks (`WouldBlock` when the socket buffer is full).
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: an all-zero msghdr is valid (no name, no control data); iov points to `bufs`,
        // whose IoSlice layout is that of iovec (std guarantees it on unix) and which outlives
        // the call.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = bufs.len().min(1024) as _;
            libc::sendmsg(
                self.as_raw_fd(),
                &msg,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        result(n)
    }

    /// One `sendfile` of up to `len` bytes of `file` from `*offset` (advanced by what was sent);
    /// never blocks, since the socket is non-blocking.
    pub fn try_sendfile(
        &self,
        file: &std::fs::File,
        offset: &mut libc::off_t,
        len: usize,
    ) -> io::Result<usize> {
        // SAFETY: both fds are open for the duration of the call; `offset` is a valid off_t
        // that the kernel advances by the bytes sent.
        let n = unsafe { libc::sendfile(self.as_raw_fd(), file.as_raw_fd(), offset, len) };
        result(n)
    }

    /// Half-closes the sending side: the front end sees the end of the response.
    pub fn shutdown_write(&self) {
        // SAFETY: plain syscall on our open socket.
        unsafe { libc::shutdown(self.as_raw_fd(), libc::SHUT_WR) };
    }

    /// Whether this is a unix socket (which cannot send a reset).
    pub fn is_unix(&self) -> bool {
        // SAFETY: an all-zero sockaddr_storage is valid; getsockname writes at most `len`
        // bytes into it; the fd is open for as long as self.
        unsafe {
            let mut addr: libc::sockaddr_storage = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            libc::getsockname(
                self.as_raw_fd(),
                (&mut addr as *mut libc::sockaddr_storage).cast(),
                &mut len,
            ) == 0
                && i32::from(addr.ss_family) == libc::AF_UNIX
        }
    }

    /// Resets a TCP connection now, from any thread, without closing the descriptor (its
    /// owner still holds it): `connect(AF_UNSPEC)` disconnects the socket, which sends a reset
    /// and drops what was not sent yet; later reads and writes on it fail. For a thread that
    /// cannot be reached, when a close by its owner may never come. A unix socket refuses it
    /// (EINVAL) and stays as it is.
    ///
    /// # Safety
    ///
    /// `fd` must be an open socket for the duration of the call.
    pub unsafe fn reset_now(fd: std::os::fd::RawFd) {
        // SAFETY: an all-zero sockaddr is valid; only its family (AF_UNSPEC) is read, and the
        // caller keeps fd open.
        unsafe {
            let mut unspec: libc::sockaddr = std::mem::zeroed();
            unspec.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
            libc::connect(
                fd,
                &unspec,
                std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
            );
        }
    }

    /// Makes the coming close send a reset instead of a clean end, so the front end knows the
    /// response is incomplete (uwsgi has no other way to say "aborted": the body ends at EOF).
    pub fn set_reset_on_close(&self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: linger is a valid option value of the stated size; the fd is open.
        unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
    }

    /// Waits (up to the timeout) until the front end has sent at least one more byte, and
    /// leaves it unread. Closing with unread data is what turns a close into an error for the
    /// front end on a unix socket (`ECONNRESET`; a unix socket has no `SO_LINGER` reset).
    pub fn wait_for_unread_byte(&self) -> bool {
        if self.wait(libc::POLLIN).is_err() {
            return false;
        }
        let mut byte = 0u8;
        // SAFETY: one writable byte; the fd is open for as long as self.
        let n = unsafe {
            libc::recv(
                self.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n == 1
    }
}

impl Stream {
    /// Waits (at most `limit`) until the front end has taken everything written: on a unix
    /// socket until it has read it, on TCP until it has acknowledged it. For an end the front
    /// end must read after the data, not with it (`proto::abort_record`). Polls SIOCOUTQ with
    /// short sleeps: there is no event for "the peer read it", and this path is rare.
    pub fn wait_sent(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut pause = Duration::from_millis(1);
        loop {
            let mut queued: libc::c_int = 0;
            // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int; the fd is open for as long as self.
            let rc = unsafe { libc::ioctl(self.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
            if rc != 0 || queued == 0 {
                return rc == 0;
            }
            if Instant::now() + pause > deadline {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

/// A syscall's byte count, or its error.
fn result(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(libc::POLLIN)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            match self.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(libc::POLLOUT)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// For tests: a [`Stream`] connected to a plain blocking peer.
#[cfg(test)]
pub(crate) fn test_pair() -> (Stream, std::os::unix::net::UnixStream) {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    // SAFETY: into_raw_fd hands over sole ownership of the descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(a.into_raw_fd()) };
    (Stream::new(fd), b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_pair as pair;

    #[test]
    fn reads_wait_for_data_and_time_out() {
        let (s, mut peer) = pair();
        s.set_timeouts(Duration::from_millis(50));
        let mut buf = [0u8; 8];
        let e = (&s).read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        peer.write_all(b"hi").unwrap();
        assert_eq!((&s).read(&mut buf).unwrap(), 2);
        assert_eq!(
            s.try_read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn a_full_socket_times_out_instead_of_blocking() {
        let (s, _peer) = pair();
        s.set_timeouts(Duration::from_millis(50));
        let chunk = vec![0u8; 1 << 16];
        let started = Instant::now();
        let err = loop {
            if let Err(e) = (&s).write(&chunk) {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
