//! The group's listening socket (owned by the supervisor, inherited by every worker) and the
//! accepted connections.
//!
//! A unix socket is bound under umask 077 (nobody else can connect in the window before chmod),
//! then given the configured mode and owner. A stale socket file left by a dead server is
//! replaced; a live one, or any other kind of file at that path, is an error (never clobbered,
//! never followed if it is a symlink). The backlog is applied with a second `listen(2)`, which
//! Linux allows on a listening socket and which std's bind does not expose.
//!
//! A web server's master may bind the socket itself and keep it across supervisor restarts and
//! reloads (nginx does: `host::Handoff`); the supervisor then [`Listener::adopt`]s it and never
//! removes its file, which stays the master's.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{GroupConfig, SocketSpec};
use crate::privs;

/// A bound, listening, non-blocking socket.
pub enum Listener {
    /// Unix socket, with its path and the inode we created (to remove only our own file).
    Unix {
        sock: UnixListener,
        path: PathBuf,
        dev: u64,
        ino: u64,
        /// Bound by someone else ([`Listener::adopt`]): its file is theirs to remove.
        adopted: bool,
    },
    /// TCP socket.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds and listens as `cfg` says.
    pub fn bind(cfg: &GroupConfig) -> Result<Listener, String> {
        let listener = match &cfg.socket {
            SocketSpec::Unix(path) => bind_unix(path, cfg)?,
            SocketSpec::Tcp(addr) => bind_tcp(addr)?,
        };
        let backlog = cfg.listen_backlog.min(i32::MAX as u32) as libc::c_int;
        // SAFETY: the fd is a bound stream socket owned by `listener`.
        if unsafe { libc::listen(listener.as_raw_fd(), backlog) } != 0 {
            return Err(format!("listen: {}", io::Error::last_os_error()));
        }
        match &listener {
            Listener::Unix { sock, .. } => sock.set_nonblocking(true),
            Listener::Tcp(sock) => sock.set_nonblocking(true),
        }
        .map_err(|e| format!("O_NONBLOCK: {e}"))?;
        Ok(listener)
    }

    /// Takes over a listening socket bound by a web server's master (with [`Listener::bind`]
    /// and the same `spec`), inherited across `fork`: used as it is, its file never removed here.
    pub fn adopt(fd: OwnedFd, spec: &SocketSpec) -> Listener {
        match spec {
            SocketSpec::Unix(path) => Listener::Unix {
                sock: UnixListener::from(fd),
                path: path.clone(),
                dev: 0,
                ino: 0,
                adopted: true,
            },
            SocketSpec::Tcp(_) => Listener::Tcp(TcpListener::from(fd)),
        }
    }

    /// Applies `cfg`'s owner, mode and backlog to a socket bound earlier for the same address
    /// (a master that keeps the socket for a changed group).
    pub fn reconfigure(&self, cfg: &GroupConfig) -> Result<(), String> {
        if let Listener::Unix { path, .. } = self {
            if let Some(owner) = &cfg.socket_owner {
                let user = privs::lookup_user(owner)?;
                std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
                    .map_err(|e| format!("chown {} to {owner}: {e}", path.display()))?;
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.socket_mode))
                .map_err(|e| format!("chmod {}: {e}", path.display()))?;
        }
        let backlog = cfg.listen_backlog.min(i32::MAX as u32) as libc::c_int;
        // SAFETY: the fd is a listening stream socket owned by self; listen(2) again only
        // changes its backlog.
        if unsafe { libc::listen(self.as_raw_fd(), backlog) } != 0 {
            return Err(format!("listen: {}", io::Error::last_os_error()));
        }
        Ok(())
    }

    /// The address as bound (a TCP port 0 shows the real port).
    pub fn describe(&self) -> String {
        match self {
            Listener::Unix { path, .. } => format!("unix:{}", path.display()),
            Listener::Tcp(sock) => match sock.local_addr() {
                Ok(a) => a.to_string(),
                Err(_) => "tcp:?".into(),
            },
        }
    }

    /// Accepts one connection; `WouldBlock` when another thread or process took it first. The
    /// accepted socket is blocking (Linux does not inherit O_NONBLOCK) and close-on-exec.
    pub fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Unix { sock, .. } => sock.accept().map(|(s, _)| Stream::new(Inner::Unix(s))),
            Listener::Tcp(sock) => {
                let (s, _) = sock.accept()?;
                // uwsgi responses are written in few large pieces; no reason to delay them.
                let _ = s.set_nodelay(true);
                Ok(Stream::new(Inner::Tcp(s)))
            }
        }
    }

    /// Removes the unix socket file if it is still the one we created (a newer server may have
    /// replaced it meanwhile). TCP, or an adopted socket: nothing to do.
    pub fn remove_file(&self) {
        if let Listener::Unix {
            path,
            dev,
            ino,
            adopted: false,
            ..
        } = self
        {
            if let Ok(m) = std::fs::symlink_metadata(path) {
                if m.dev() == *dev && m.ino() == *ino {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Unix { sock, .. } => sock.as_fd(),
            Listener::Tcp(sock) => sock.as_fd(),
        }
    }
}

fn bind_unix(path: &Path, cfg: &GroupConfig) -> Result<Listener, String> {
    remove_stale(path)?;
    // SAFETY: umask only changes this process's file-creation mask. The supervisor is single
    // threaded while it binds, so no other thread creates files under the temporary mask.
    let old = unsafe { libc::umask(0o077) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let sock = bound.map_err(|e| format!("bind {}: {e}", path.display()))?;
    let cleanup = |msg: String| {
        let _ = std::fs::remove_file(path);
        msg
    };
    if let Some(owner) = &cfg.socket_owner {
        let user = privs::lookup_user(owner).map_err(cleanup)?;
        std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
            .map_err(|e| cleanup(format!("chown {} to {owner}: {e}", path.display())))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.socket_mode))
        .map_err(|e| cleanup(format!("chmod {}: {e}", path.display())))?;
    let meta =
        std::fs::symlink_metadata(path).map_err(|e| format!("stat {}: {e}", path.display()))?;
    Ok(Listener::Unix {
        sock,
        path: path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
        adopted: false,
    })
}

/// A socket file nobody listens on is left over from a server that died: remove it. Anything else
/// at the path stays and is reported.
fn remove_stale(path: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("stat {}: {e}", path.display())),
    };
    if !meta.file_type().is_socket() {
        return Err(format!(
            "{} exists and is not a socket; not replacing it",
            path.display()
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(format!("{} is in use by a running server", path.display())),
        Err(_) => std::fs::remove_file(path)
            .map_err(|e| format!("removing stale socket {}: {e}", path.display())),
    }
}

fn bind_tcp(addr: &str) -> Result<Listener, String> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| format!("resolving {addr}: {e}"))?
        .collect();
    // std sets SO_REUSEADDR on unix, so a restart does not wait for TIME_WAIT sockets.
    let sock = TcpListener::bind(&addrs[..]).map_err(|e| format!("bind {addr}: {e}"))?;
    Ok(Listener::Tcp(sock))
}

/// One accepted front-end connection.
///
/// Reads and writes first try without blocking (`MSG_DONTWAIT`): for the usual request the whole
/// packet is already there and the response fits in the socket buffer, so the read and write
/// timeouts are never needed and cost no `setsockopt` calls. Only when an operation would block
/// are the timeouts set (once), and the operation repeated as a blocking one.
pub struct Stream {
    inner: Inner,
    timeout: Cell<Duration>,
    armed: Cell<bool>,
}

enum Inner {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn new(inner: Inner) -> Stream {
        Stream {
            inner,
            timeout: Cell::new(Duration::ZERO),
            armed: Cell::new(false),
        }
    }

    /// Read and write timeouts (the front end stalling must not pin a thread forever), applied
    /// the first time an operation would block. Zero = none.
    pub fn set_timeouts(&self, t: Duration) {
        self.timeout.set(t);
    }

    fn arm(&self) -> io::Result<()> {
        if self.armed.get() {
            return Ok(());
        }
        self.armed.set(true);
        let t = Some(self.timeout.get()).filter(|d| !d.is_zero());
        match &self.inner {
            Inner::Unix(s) => s.set_read_timeout(t).and_then(|_| s.set_write_timeout(t)),
            Inner::Tcp(s) => s.set_read_timeout(t).and_then(|_| s.set_write_timeout(t)),
        }
    }

    /// Half-closes the sending side: the front end sees the end of the response.
    pub fn shutdown_write(&self) {
        let _ = match &self.inner {
            Inner::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            Inner::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
        };
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

    /// Before a blocking operation: the timeouts must be in place.
    pub fn prepare_blocking(&self) -> io::Result<()> {
        self.arm()
    }

    /// Waits (up to the read timeout) until the front end has sent at least one more byte, and
    /// leaves it unread. Closing with unread data is what turns a close into an error for the
    /// front end on a unix socket (`ECONNRESET`; a unix socket has no `SO_LINGER` reset).
    pub fn wait_for_unread_byte(&self) -> bool {
        if self.arm().is_err() {
            return false;
        }
        let mut byte = 0u8;
        loop {
            // SAFETY: one writable byte; the fd is open for as long as self.
            let n = unsafe {
                libc::recv(
                    self.as_raw_fd(),
                    (&mut byte as *mut u8).cast(),
                    1,
                    libc::MSG_PEEK,
                )
            };
            match would_block(n) {
                None => return n == 1,
                Some(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Some(_) => return false,
            }
        }
    }
}

fn would_block(n: isize) -> Option<io::Error> {
    if n >= 0 {
        return None;
    }
    Some(io::Error::last_os_error())
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match &self.inner {
            Inner::Unix(s) => s.as_raw_fd(),
            Inner::Tcp(s) => s.as_raw_fd(),
        }
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.armed.get() {
            // SAFETY: buf is valid for buf.len() bytes; the fd is open for as long as self.
            let n = unsafe {
                libc::recv(
                    self.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            match would_block(n) {
                None => return Ok(n as usize),
                Some(e) if e.kind() == io::ErrorKind::WouldBlock => self.arm()?,
                Some(e) => return Err(e),
            }
        }
        match &self.inner {
            Inner::Unix(s) => (&*s).read(buf),
            Inner::Tcp(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        if !self.armed.get() {
            // SAFETY: an all-zero msghdr is valid (no name, no control data); iov points to
            // `bufs`, whose IoSlice layout is that of iovec (std guarantees it on unix) and which
            // outlives the call.
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
            match would_block(n) {
                None => return Ok(n as usize),
                Some(e) if e.kind() == io::ErrorKind::WouldBlock => self.arm()?,
                Some(e) => return Err(e),
            }
        }
        match &self.inner {
            Inner::Unix(s) => (&*s).write_vectored(bufs),
            Inner::Tcp(s) => (&*s).write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
