//! Daemon mode, master side: the keeper, one small process per `wsgi_daemon_process` group
//! between nginx's master and the group's supervisor.
//!
//! Why it exists: nginx's master reaps every child itself (its SIGCHLD handler waits for any
//! pid) and has no hook for modules in its loop, so a module never hears that a process it forked
//! died; and `ngx_spawn_process(..., NGX_PROCESS_RESPAWN)` is no way out either, because the
//! master signals such processes on every reload. So the master forks a keeper, which forks the
//! supervisor and starts it again when it dies (the OOM killer, `kill -9`): the same job httpd's
//! parent does for mod_rwsgi with its "other child" registration.
//!
//! ```text
//! nginx: master process          holds the group's listening socket and the keeper's pipe
//!  └ nginx: wsgi keeper NAME      no Python, single-threaded, oom_score_adj -1000 (when root)
//!     └ nginx: wsgi daemon group NAME    the supervisor (crates/supervisor)
//!        └ ... its worker processes
//! ```
//!
//! The keeper, and the supervisors it forks, get the listening socket the master bound (the
//! master keeps it across reloads): the socket outlives any supervisor, so while one is started
//! again connections wait in the socket's backlog instead of failing, and a changed group's new
//! supervisor takes over the same socket (supervise.rs).
//!
//! The pipe from the master: its closing (EOF) stops the group: the keeper closes its
//! supervisor's pipe (one stop notice: the supervisor drains, graceful-timeout), waits for it
//! and exits. Before that the master may write [`KEEP_SOCKET`]: the socket file belongs to a
//! successor, leave it; without it (the master died, or the group is gone) the keeper removes the
//! file if it is still the one it was given. SIGHUP is passed on to the supervisor (a rolling
//! restart, as `rwsgi serve` asks for), SIGTERM/SIGINT/SIGQUIT stop the group like the pipe.
//!
//! Restarts: at once after a supervisor that ran for a while; after one that died within
//! [`QUICK_DEATH`] of its start, back-off from 0.5 s doubling to 60 s (a supervisor does not
//! fail at start for a configuration reason: the master checks those before it binds, and says
//! them at `[error]`). Lines go to nginx's error log in nginx's format with the `wsgi:` prefix.

use std::io::Write as _;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use supervisor::{GroupConfig, Handoff, SocketSpec};

/// The byte the master writes on a keeper's pipe before handing the group's socket to a
/// successor (a changed group): the keeper then leaves the socket file when it stops.
pub const KEEP_SOCKET: u8 = b'K';

/// A supervisor that dies sooner than this after its start counts toward the back-off.
const QUICK_DEATH: Duration = Duration::from_secs(1);
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The delay before the next start after `quick` supervisor deaths in a row within
/// [`QUICK_DEATH`] of their start (0: the last one ran for a while).
pub fn restart_delay(quick: u32) -> Duration {
    match quick {
        0 => Duration::ZERO,
        n => BACKOFF_START
            .saturating_mul(1 << (n - 1).min(16))
            .min(BACKOFF_MAX),
    }
}

/// What the master gives a new keeper.
pub struct Start<'a> {
    /// The group's name (titles and log lines).
    pub name: &'a str,
    pub cfg: &'a GroupConfig,
    /// The group's listening socket, bound and kept by the master.
    pub listener: BorrowedFd<'a>,
    /// The lifetime pipe of the group this one replaces, for the first supervisor to close once
    /// it is ready (`supervisor::Handoff::predecessor`); the master closes its own copy after
    /// the fork.
    pub predecessor: Option<BorrowedFd<'a>>,
    /// nginx's error log: the keeper's and the group's stdout and stderr.
    pub log_fd: RawFd,
    /// Sets the process title (nginx's `ngx_setproctitle`: "nginx: " + the text).
    pub set_title: fn(&str),
}

/// A keeper just forked: its pid, and the write end of its pipe (dropping it stops the group).
pub struct Forked {
    pub pid: libc::pid_t,
    pub pipe: OwnedFd,
}

/// Forks the keeper of one group; the child never returns.
///
/// # Safety
/// Call only in nginx's single-threaded master (or the single process of `master_process off`).
pub unsafe fn fork(start: Start<'_>) -> Result<Forked, String> {
    // SAFETY: single-threaded caller (contract); the child is freshly forked when set_up runs.
    let (pid, pipe) =
        unsafe { supervisor::fork_with_lifetime(|pipe| Keeper::set_up(start, pipe).run()) }?;
    Ok(Forked { pid, pipe })
}

/// The supervisor the keeper runs now.
struct Child {
    pid: libc::pid_t,
    /// Its lifetime pipe's write end: dropping it is the one stop notice.
    pipe: OwnedFd,
    started: Instant,
}

struct Keeper<'a> {
    name: String,
    cfg: &'a GroupConfig,
    set_title: fn(&str),
    /// The socket file and its inode at our start (removed at exit unless handed on).
    socket_file: Option<(PathBuf, u64, u64)>,
    predecessor: Option<OwnedFd>,
    signals: OwnedFd,
    child: Option<Child>,
    /// Consecutive quick deaths (see [`restart_delay`]).
    quick: u32,
    restart_at: Option<Instant>,
    keep_socket: bool,
    /// Our oom_score_adj before we lowered it: the supervisor gets it back.
    oom_score_adj: Option<String>,
}

/// The keeper's descriptors after [`Keeper::set_up`].
const MASTER_PIPE: RawFd = 3;
const LISTENER: RawFd = 4;

impl<'a> Keeper<'a> {
    /// In the child: output to nginx's log, titles, signals, descriptors, OOM score.
    ///
    /// # Safety
    /// Freshly forked child of a single-threaded process.
    unsafe fn set_up(start: Start<'a>, master: OwnedFd) -> Keeper<'a> {
        let Start {
            name,
            cfg,
            listener,
            predecessor,
            log_fd,
            set_title,
        } = start;
        set_title(&format!("wsgi keeper {name}"));
        if let Some(comm) = cfg.display_name.as_deref().and_then(comm_bytes) {
            // SAFETY: prctl with a NUL-terminated buffer that outlives the call.
            unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr() as libc::c_ulong, 0, 0, 0) };
        }
        let mut keep = vec![master.as_raw_fd(), listener.as_raw_fd()];
        let has_predecessor = predecessor.is_some();
        keep.extend(predecessor.map(|fd| fd.as_raw_fd()));
        // The metrics region's memory file, for a supervisor that execs rwsgi-worker.
        let region = ::metrics::region();
        let metrics_fd = region.and_then(::metrics::shm::fd_of);
        keep.extend(metrics_fd);
        // SAFETY: this process is single-threaded (contract); the descriptors are ours or
        // nginx's (inherited), and nothing here uses nginx's any more. Signals: nginx's
        // handlers must not run here; the ones we act on are read from a signalfd instead.
        let signals = unsafe {
            if log_fd > 2 {
                libc::dup2(log_fd, 1);
                libc::dup2(log_fd, 2);
            }
            for sig in 1..32 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            // A Ctrl-C to a foreground nginx is nginx's; our pipe says when to stop.
            libc::setsid();
            supervisor::keep_only(&keep);
            // Its number is 3 now (keep_only); the old one was closed there.
            std::mem::forget(master);
            ::metrics::shm::forget_files();
            if let (Some(region), Some(_)) = (region, metrics_fd) {
                // keep_only moved it to the last place, where nothing else owns it.
                ::metrics::shm::moved(region, 3 + keep.len() as RawFd - 1);
            }
            signal_fd()
        };
        let socket_file = match &cfg.socket {
            SocketSpec::Unix(path) => std::fs::symlink_metadata(path)
                .ok()
                .map(|m| (path.clone(), m.dev(), m.ino())),
            SocketSpec::Tcp(_) => None,
        };
        let oom_score_adj = std::fs::read_to_string("/proc/self/oom_score_adj").ok();
        // Never the OOM killer's choice (allowed for root only; otherwise it stays as it was):
        // it is the keeper that brings a killed supervisor back.
        let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
        Keeper {
            name: name.to_owned(),
            cfg,
            set_title,
            socket_file,
            // SAFETY: keep_only put the predecessor's pipe (if any) right after the listener.
            predecessor: has_predecessor.then(|| unsafe { OwnedFd::from_raw_fd(LISTENER + 1) }),
            signals,
            child: None,
            quick: 0,
            restart_at: Some(Instant::now()),
            keep_socket: false,
            oom_score_adj,
        }
    }

    /// The keeper's life; returns its exit code.
    fn run(mut self) -> i32 {
        loop {
            if self.restart_at.is_some_and(|t| Instant::now() >= t) {
                self.start_supervisor();
            }
            let timeout = self.restart_at.map_or(-1, |t| {
                let left = t.saturating_duration_since(Instant::now());
                left.as_millis().min(60_000) as i32
            });
            let mut fds = [readable(MASTER_PIPE), readable(self.signals.as_raw_fd())];
            // SAFETY: two valid pollfd entries.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
            if n < 0 {
                continue; // EINTR
            }
            if fds[0].revents != 0 && self.master_said_stop() {
                return self.stop();
            }
            if fds[1].revents != 0 {
                for sig in read_signals(&self.signals) {
                    match sig {
                        libc::SIGCHLD => self.reap(),
                        libc::SIGHUP => self.signal_child(libc::SIGHUP),
                        _ => return self.stop(),
                    }
                }
            }
        }
    }

    /// Reads the master's pipe: true at EOF (stop), notes [`KEEP_SOCKET`].
    fn master_said_stop(&mut self) -> bool {
        let mut buf = [0u8; 16];
        // SAFETY: buf is valid for its length; poll said the pipe is readable or hung up.
        let n = unsafe { libc::read(MASTER_PIPE, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            self.keep_socket |= buf[..n as usize].contains(&KEEP_SOCKET);
        }
        n == 0
    }

    fn start_supervisor(&mut self) {
        self.restart_at = None;
        let name = self.name.clone();
        let title = format!("wsgi daemon group {name}");
        let set_title = self.set_title;
        let oom = self.oom_score_adj.clone();
        let prepare = move || {
            if let Some(value) = &oom {
                let _ = std::fs::write("/proc/self/oom_score_adj", value.trim());
            }
            set_title(&title);
        };
        let error_line = |e: &str| {
            nginx_line(
                "error",
                &format!("wsgi: RW-NG032 daemon group {name} could not start: {e}"),
            )
        };
        let handoff = Handoff {
            // SAFETY: LISTENER is the listening socket set_up put there, open for our life.
            listener: Some(unsafe { BorrowedFd::borrow_raw(LISTENER) }),
            predecessor: self.predecessor.take(),
            // SAFETY: MASTER_PIPE is the master's pipe set_up put there, open for our life.
            server: Some(unsafe { BorrowedFd::borrow_raw(MASTER_PIPE) }),
        };
        // SAFETY: the keeper is single-threaded.
        match unsafe { supervisor::fork_supervisor_with(self.cfg, handoff, prepare, error_line) } {
            Ok(f) => {
                self.child = Some(Child {
                    pid: f.pid,
                    pipe: f.lifetime,
                    started: Instant::now(),
                })
            }
            Err(e) => {
                self.quick += 1;
                let delay = restart_delay(self.quick);
                log(
                    "error",
                    &format!(
                        "wsgi: RW-NG032 cannot start daemon group {}: {e}; trying again in {:.1}s",
                        self.name,
                        delay.as_secs_f64()
                    ),
                );
                self.restart_at = Some(Instant::now() + delay);
            }
        }
    }

    /// After SIGCHLD: a supervisor that died unasked is started again.
    fn reap(&mut self) {
        while let Some((pid, status)) = wait_any() {
            let Some(child) = self.child.take_if(|c| c.pid == pid) else {
                continue;
            };
            let lived = child.started.elapsed();
            self.quick = if lived < QUICK_DEATH {
                self.quick + 1
            } else {
                0
            };
            let delay = restart_delay(self.quick);
            let when = if delay.is_zero() {
                String::new()
            } else {
                format!(" in {:.1}s", delay.as_secs_f64())
            };
            log(
                "warn",
                &format!(
                    "wsgi: RW-NG035 daemon group {} (supervisor pid {pid}) exited ({}) after {:.1}s; restarting it{when}",
                    self.name,
                    describe(status),
                    lived.as_secs_f64()
                ),
            );
            self.restart_at = Some(Instant::now() + delay);
        }
    }

    fn signal_child(&self, sig: libc::c_int) {
        if let Some(child) = &self.child {
            // SAFETY: our child, not yet reaped (so the pid is not reused).
            unsafe { libc::kill(child.pid, sig) };
        }
    }

    /// Stops the group: one notice to the supervisor, wait for it, the socket file, exit code.
    fn stop(mut self) -> i32 {
        self.predecessor = None;
        if let Some(child) = self.child.take() {
            // The stop notice, then the pipe closes: a pipe closed without it would mean that
            // this keeper was killed, and the group would serve on (supervisor's outlive_keeper).
            // SAFETY: one byte from a static into our own pipe's write end (never full: nothing
            // else is written to it).
            unsafe {
                libc::write(
                    child.pipe.as_raw_fd(),
                    [supervisor::STOP_NOTICE].as_ptr().cast(),
                    1,
                )
            };
            drop(child.pipe);
            // A second stop request (SIGTERM...) while it drains: the supervisor takes a signal
            // after the pipe as "kill the workers now".
            loop {
                if wait_any().is_some_and(|(pid, _)| pid == child.pid) {
                    break;
                }
                let mut fds = [readable(self.signals.as_raw_fd())];
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(fds.as_mut_ptr(), 1, 1000) };
                for sig in read_signals(&self.signals) {
                    if matches!(sig, libc::SIGTERM | libc::SIGINT | libc::SIGQUIT) {
                        // SAFETY: our child, not yet reaped.
                        unsafe { libc::kill(child.pid, libc::SIGTERM) };
                    }
                }
            }
        }
        if !self.keep_socket {
            if let Some((path, dev, ino)) = &self.socket_file {
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == *dev && m.ino() == *ino)
                {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        0
    }
}

/// The process name (`comm`, 15 bytes) as a NUL-terminated buffer.
fn comm_bytes(name: &str) -> Option<[u8; 16]> {
    let mut buf = [0u8; 16];
    let bytes = name.as_bytes();
    if bytes.contains(&0) {
        return None;
    }
    let n = bytes.len().min(15);
    buf[..n].copy_from_slice(&bytes[..n]);
    Some(buf)
}

/// A signalfd for the signals the keeper acts on (blocked, so they only arrive there).
///
/// # Safety
/// Single-threaded process.
unsafe fn signal_fd() -> OwnedFd {
    // SAFETY: sigset manipulation on a local set; blocking and signalfd only affect this
    // single-threaded process. A failed signalfd leaves -1, on which poll reports POLLNVAL and
    // the keeper would stop: only under fd exhaustion, where nothing better can be done.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [
            libc::SIGCHLD,
            libc::SIGHUP,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGQUIT,
        ] {
            libc::sigaddset(&mut set, sig);
        }
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        OwnedFd::from_raw_fd(fd)
    }
}

/// The signals waiting on the signalfd.
fn read_signals(fd: &OwnedFd) -> Vec<libc::c_int> {
    let mut out = Vec::new();
    loop {
        // SAFETY: an all-zero signalfd_siginfo is valid; read fills it or fails (non-blocking).
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: info is valid for `size` bytes.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n != size as isize {
            return out;
        }
        out.push(info.ssi_signo as libc::c_int);
    }
}

/// One exited child, without blocking.
fn wait_any() -> Option<(libc::pid_t, libc::c_int)> {
    let mut status = 0;
    // SAFETY: status is a valid out-parameter; WNOHANG never blocks.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (pid > 0).then_some((pid, status))
}

fn readable(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// How a wait status reads in a log line.
pub fn describe(status: libc::c_int) -> String {
    if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("status {}", libc::WEXITSTATUS(status))
    }
}

/// Writes one line to stderr (nginx's error log) in nginx's own format.
fn log(level: &str, msg: &str) {
    let line = nginx_line(level, msg);
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("{line}\n").as_bytes());
}

/// `YYYY/MM/DD HH:MM:SS [level] PID#PID: msg`, as nginx writes its error log (local time).
pub fn nginx_line(level: &str, msg: &str) -> String {
    // SAFETY: time(NULL) and localtime_r into a zeroed tm, both plain libc calls.
    let tm = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&now, &mut tm);
        tm
    };
    let pid = std::process::id();
    format!(
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02} [{level}] {pid}#{pid}: {msg}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_only_after_quick_deaths() {
        assert_eq!(restart_delay(0), Duration::ZERO);
        assert_eq!(restart_delay(1), Duration::from_millis(500));
        assert_eq!(restart_delay(2), Duration::from_secs(1));
        assert_eq!(restart_delay(4), Duration::from_secs(4));
        assert_eq!(restart_delay(8), BACKOFF_MAX);
        assert_eq!(restart_delay(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn lines_look_like_nginx_lines() {
        let line = nginx_line("warn", "wsgi: RW-NG035 x");
        let (stamp, rest) = line.split_at(19);
        assert_eq!(stamp.as_bytes()[4], b'/');
        assert_eq!(stamp.as_bytes()[13], b':');
        let pid = std::process::id();
        assert_eq!(rest, format!(" [warn] {pid}#{pid}: wsgi: RW-NG035 x"));
        assert_eq!(describe(9), "killed by signal 9");
        assert_eq!(describe(3 << 8), "status 3");
    }

    #[test]
    fn comm_is_cut_at_15_bytes() {
        let c = comm_bytes("wsgi:a-very-long-group-name").unwrap();
        assert_eq!(&c[..15], b"wsgi:a-very-lon");
        assert_eq!(c[15], 0);
        assert!(comm_bytes("a\0b").is_none());
    }
}
