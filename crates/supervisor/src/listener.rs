//! The group's listening socket (owned by the supervisor, inherited by every worker); what it
//! accepts is a [`Stream`].
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

use std::io;
use std::net::{TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
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

    /// A second handle on the same listening socket (`dup`), for an accept loop that must own
    /// its listener (the ASGI worker's, on its event loop thread).
    pub fn try_clone(&self) -> io::Result<Listener> {
        Ok(match self {
            Listener::Unix {
                sock,
                path,
                dev,
                ino,
                adopted,
            } => Listener::Unix {
                sock: sock.try_clone()?,
                path: path.clone(),
                dev: *dev,
                ino: *ino,
                adopted: *adopted,
            },
            Listener::Tcp(sock) => Listener::Tcp(sock.try_clone()?),
        })
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

/// True when `fd` is readable now (a listening socket: a connection waits to be accepted); a
/// poll that does not block.
pub fn readable(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; timeout 0 never blocks.
    unsafe { libc::poll(&mut pfd, 1, 0) == 1 && pfd.revents & libc::POLLIN != 0 }
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
