//! Daemon mode: one supervisor process per process group, owning the listening socket and a pool
//! of forked worker processes that speak uwsgi and run the WSGI app through `pyhost`.
//!
//! The `rwsgi-worker` binary is a thin command line over [`run`]; the nginx and Apache modules
//! start the same supervisor for their `wsgi_daemon_process` / `WSGIDaemonProcess` groups with
//! [`run_forked`] in a child forked from their master, handing it the read end of a pipe whose
//! write end the master keeps open: when the master goes away, the pipe closes and the group
//! drains and exits ([`run_with_lifetime`]).
//!
//! Modules: `config` (the typed options), `options` (mod_wsgi's daemon group options, shared by
//! both web server modules), `cli` (the command line), `listener` (bind, mode, owner,
//! backlog, stale sockets), `master` (fork, reap, respawn, recycle, timeouts, signals), `worker`
//! (one process: privileges, Python, request threads), `conn` (one uwsgi connection), `scoreboard`
//! (shared memory between supervisor and workers), `signals`, `privs`, `log`.

pub mod cli;
pub mod config;
mod conn;
pub mod listener;
pub mod log;
mod master;
pub mod options;
mod privs;
mod routing;
mod scoreboard;
mod signals;
mod worker;

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

pub use config::{AppConfig, ConfigError, GroupConfig, SocketSpec};
pub use options::{DaemonOptions, OPTION_NAMES};

/// Why the supervisor could not start (after it started, problems are logged, not returned).
#[derive(Debug)]
pub enum Error {
    /// The configuration is invalid.
    Config(ConfigError),
    /// Binding the socket, resolving the user, or setting up the supervisor failed.
    Startup(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Config(e) => write!(f, "{e}"),
            Error::Startup(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {}

/// Runs the process group until SIGTERM/SIGINT; returns when every worker has stopped.
///
/// Must be called in a single-threaded process (the supervisor forks its workers) that has not
/// initialised Python. It installs handlers for SIGTERM, SIGINT, SIGHUP, SIGCHLD and ignores
/// SIGPIPE.
pub fn run(cfg: &GroupConfig) -> Result<(), Error> {
    run_inner(cfg, None)
}

/// As [`run`], and also stops (gracefully) when `lifetime` becomes readable or hung up: the web
/// server's master holds the write end of that pipe and never writes to it.
pub fn run_with_lifetime(cfg: &GroupConfig, lifetime: BorrowedFd<'_>) -> Result<(), Error> {
    run_inner(cfg, Some(lifetime))
}

/// For the web server modules: runs the group in a child just `fork()`ed from the server's
/// single-threaded master (nginx) or parent (Apache), until the lifetime pipe closes.
///
/// First sheds what that process set up and the group must not keep: its signal dispositions
/// and mask (the master's handlers would run in the supervisor), its session (a Ctrl-C to a
/// foreground server is the server's; the pipe is what stops the group), and every descriptor
/// above stderr but the pipe, which moves to fd 3 (listening sockets, log files and other groups'
/// pipes belong to the server). A panic is caught and reported as an error: it must never
/// unwind into the server's code, which would go on running as a second master.
///
/// The caller points stdout/stderr at its error log and sets the process title before, prints
/// the error after, and then `_exit`s (never `exit`: the server's atexit handlers and stdio
/// buffers are not this process's).
///
/// # Safety
/// Call only in a freshly forked child of a single-threaded process. `lifetime` is the read end
/// of the lifetime pipe (above stderr); this call takes it over.
pub unsafe fn run_forked(cfg: &GroupConfig, lifetime: RawFd) -> Result<(), String> {
    // SAFETY: resetting dispositions and the mask, moving and closing descriptors and starting a
    // session only affect this (single-threaded, caller contract) process. Nothing else in it
    // uses the descriptors above 3 (they are the server's, inherited).
    unsafe {
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        if lifetime != 3 {
            libc::dup2(lifetime, 3);
        }
        // The workers are forked, not exec'd: nothing the app runs needs the pipe.
        libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::close_range(4, u32::MAX, 0);
        libc::setsid();
    }
    // SAFETY: fd 3 is the lifetime pipe's read end (above), open for the rest of this process.
    let lifetime = unsafe { BorrowedFd::borrow_raw(3) };
    match std::panic::catch_unwind(|| run_with_lifetime(cfg, lifetime)) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("internal error (panic) in the supervisor".to_owned()),
    }
}

fn run_inner(cfg: &GroupConfig, lifetime: Option<BorrowedFd<'_>>) -> Result<(), Error> {
    cfg.validate().map_err(Error::Config)?;
    close_inherited_on_exec(lifetime.map(|fd| fd.as_raw_fd()));
    log::set_name(cfg.log_name());
    if let Some(name) = &cfg.display_name {
        worker::set_process_name(name);
    }
    let identity = privs::Identity::resolve(cfg.user.as_deref(), cfg.group.as_deref())
        .map_err(|e| Error::Config(ConfigError::new("user", e)))?;
    // SAFETY: plain getter.
    if identity.is_some() && unsafe { libc::geteuid() } != 0 {
        // Said now, instead of every worker failing its setgid and being restarted forever.
        return Err(Error::Config(ConfigError::new(
            "user",
            "switching users needs a supervisor started as root",
        )));
    }
    let listener = listener::Listener::bind(cfg).map_err(Error::Startup)?;
    let apps: Vec<String> = cfg
        .apps
        .iter()
        .map(|a| match &a.mount {
            Some(m) => format!("{m}={}", a.script.display()),
            None => a.script.display().to_string(),
        })
        .collect();
    rwlog!(
        "RW001",
        "listening on {}: {} processes x {} threads, app {}",
        listener.describe(),
        cfg.processes,
        cfg.threads,
        apps.join(" ")
    );
    let master = master::Master::new(cfg, listener, identity, lifetime).map_err(Error::Startup)?;
    master.run();
    Ok(())
}

/// Marks every descriptor this process inherited (beyond stdin/out/err and the lifetime pipe)
/// close-on-exec: whatever the parent left open (a jobserver pipe, a web server's listening
/// sockets, a log file...) must not reach the programs the app starts. They stay open here; a web
/// server module that forks the supervisor should close the ones it knows about.
fn close_inherited_on_exec(keep: Option<RawFd>) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2 && Some(fd) != keep)
        .collect();
    for fd in fds {
        // SAFETY: fcntl on a descriptor number only changes its flags; a number that is no longer
        // open (the directory listing's own fd, closed by now) just fails with EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}
