//! The group's listening socket (owned by the supervisor, inherited by every worker); what it
//! accepts is a [`Stream`].
//!
//! A unix socket is bound under umask 077 (nobody else can connect in the window before chmod),
//! then given the configured mode and owner. A stale socket file left by a dead server is
//! replaced; a live one, or any other kind of file at that path, is an error (never clobbered,
//! never followed if it is a symlink). The backlog is applied with a second `listen(2)`, which
//! Linux allows on a listening socket and which std's bind does not expose.

use std::io;
use std::net::{TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::config::{GroupConfig, SocketSpec};
use crate::privs;
use crate::stream::Stream;

/// A bound, listening, non-blocking socket.
pub enum Listener {
    /// Unix socket, with its path and the inode we created (to remove only our own file).
    Unix {
        sock: UnixListener,
        path: PathBuf,
        dev: u64,
        ino: u64,
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
    /// accepted socket is non-blocking (see [`Stream`]) and close-on-exec.
    pub fn accept(&self) -> io::Result<Stream> {
        // SAFETY: accept4 on our listening socket, without asking for the peer address.
        let fd = unsafe {
            libc::accept4(
                self.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if let Listener::Tcp(_) = self {
            // uwsgi responses are written in few large pieces; no reason to delay them.
            let one: libc::c_int = 1;
            // SAFETY: a valid int option of the stated size on our open socket.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
        Ok(Stream::new(fd))
    }

    /// Removes the unix socket file if it is still the one we created (a newer server may have
    /// replaced it meanwhile). TCP: nothing to do.
    pub fn remove_file(&self) {
        if let Listener::Unix { path, dev, ino, .. } = self {
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
        match self {
            Listener::Unix { sock, .. } => sock.as_raw_fd(),
            Listener::Tcp(sock) => sock.as_raw_fd(),
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
