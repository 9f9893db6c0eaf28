//! Daemon mode: one supervisor process per process group, owning the listening socket and a pool
//! of forked worker processes that speak uwsgi (or, for rwsgi-worker, SCGI or FastCGI) and run
//! the WSGI app through `pyhost`.
//!
//! The `rwsgi-worker` binary is a thin command line over [`run`]; the nginx and Apache modules
//! start the same supervisor for their `wsgi_daemon_process` / `WSGIDaemonProcess` groups with
//! [`fork_supervisor`] from their master, which forks a child that runs [`run_forked`] with the
//! read end of a pipe whose write end the master keeps open: when the master goes away, the pipe
//! closes and the group drains and exits ([`run_with_lifetime`]). [`ServerDefaults`] gives both
//! modules' groups the same defaults from the server's facts.
//!
//! Modules: `config` (the typed options), `options` (mod_wsgi's daemon group options, shared by
//! both web server modules), `host` (what the web server modules call: group defaults, forking
//! the supervisor), `cli` (the command line), `ini` (a uWSGI ini file as command-line options),
//! `listener` (bind, mode, owner, backlog, stale sockets), `master` (fork, reap, respawn,
//! recycle, timeouts, signals), `refuse` (the supervisor's own 503 while no worker lives),
//! `worker` (one process: privileges, Python, request threads), `workdir` (its `chdir` and
//! `env`), `conn` (one connection, whatever its protocol), `proto` (the wire of uwsgi, SCGI and
//! FastCGI), `stream` (the socket), `body` and `stash` (the request body), `respond` (the
//! response), `routing` (which app, SCRIPT_NAME and
//! PATH_INFO), `scoreboard` (shared memory between supervisor and workers), `secret` (the
//! group's proof of origin), `asgi` (an ASGI worker: one asyncio loop that also drives the
//! sockets), `metrics` (the group's slots in the metrics region, rwsgi-worker's `--metrics`
//! endpoint), `signals`, `privs`, `log`. The vars our front ends add to uwsgi
//! are `uwsgi::contract`.

mod asgi;
mod body;
pub mod cli;
pub mod config;
mod conn;
mod host;
pub mod hosted;
mod ini;
pub mod listener;
pub mod log;
mod master;
mod metrics;
pub mod options;
mod privs;
mod proto;
mod refuse;
mod respond;
mod routing;
mod scoreboard;
mod secret;
mod signals;
mod stash;
mod stream;
mod workdir;
mod worker;

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

pub use config::{AppConfig, ConfigError, GroupConfig, Interface, Protocol, SocketSpec};
pub use host::{
    fork_supervisor, fork_supervisor_with, fork_with_lifetime, keep_only, run_forked,
    ForkedSupervisor, Handoff, ServerDefaults, WorkerAccount, STOP_NOTICE,
};
pub use options::{parse_timeout, DaemonOptions, OPTION_NAMES};
pub use secret::Secret;

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
    run_inner(cfg, None, Inherited::default())
}

/// As [`run`], and also stops (gracefully) when `lifetime` becomes readable or hung up: the web
/// server's master holds the write end of that pipe and never writes to it.
pub fn run_with_lifetime(cfg: &GroupConfig, lifetime: BorrowedFd<'_>) -> Result<(), Error> {
    run_inner(cfg, Some(lifetime), Inherited::default())
}

/// What a supervisor forked by a web server module may inherit besides its lifetime pipe
/// (`host::Handoff`, once the descriptors are in place).
#[derive(Default)]
pub(crate) struct Inherited {
    /// The group's listening socket, bound by the server's master, which keeps it.
    pub listener: Option<listener::Listener>,
    /// The lifetime pipe of the group this one replaces: closed once this group can serve.
    pub predecessor: Option<OwnedFd>,
    /// The server master's pipe to the group's keeper, watched for hang-up (`Handoff::server`).
    pub server: Option<OwnedFd>,
}

/// Checks what must hold before a group starts: the configuration, the accounts it runs as, and
/// the privilege to switch to them. A web server module that binds the group's socket itself
/// (nginx's master) calls this first, so that a group that cannot start says so at once and no
/// socket is left that nobody serves.
pub fn preflight(cfg: &GroupConfig) -> Result<(), Error> {
    startable(cfg).map(|_| ())
}

fn startable(cfg: &GroupConfig) -> Result<Option<privs::Identity>, Error> {
    cfg.validate().map_err(Error::Config)?;
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
    Ok(identity)
}

pub(crate) fn run_inner(
    cfg: &GroupConfig,
    lifetime: Option<BorrowedFd<'_>>,
    inherited: Inherited,
) -> Result<(), Error> {
    cfg.validate().map_err(Error::Config)?;
    close_inherited_on_exec(lifetime.map(|fd| fd.as_raw_fd()));
    log::set_name(cfg.log_name());
    if let Some(name) = &cfg.display_name {
        worker::set_process_name(name);
    }
    let identity = startable(cfg)?;
    let listener = match inherited.listener {
        Some(listener) => listener,
        None => listener::Listener::bind(cfg).map_err(Error::Startup)?,
    };
    let metrics = metrics::GroupMetrics::setup(cfg).map_err(Error::Startup)?;
    let apps: Vec<String> = cfg
        .apps
        .iter()
        .map(|a| match &a.mount {
            Some(m) => format!("{m}={}", a.source),
            None => a.source.to_string(),
        })
        .collect();
    // Written as --socket takes it: a protocol prefix unless it is uwsgi.
    let protocol = match cfg.protocol {
        Protocol::Uwsgi => "",
        Protocol::Scgi => "scgi:",
        Protocol::FastCgi => "fcgi:",
    };
    let per_process = match cfg.interface {
        Interface::Wsgi => format!("{} threads", cfg.threads),
        Interface::Asgi => "an ASGI event loop".to_string(),
    };
    let python = pyhost::interpreter_file()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "?".to_owned());
    rwlog!(
        "RW001",
        "listening on {protocol}{}: {} processes x {per_process}, app {}, python {} from {python}",
        listener.describe(),
        cfg.processes,
        apps.join(" "),
        pyhost::python_version()
    );
    if let Some(endpoint) = metrics.describe_endpoint() {
        rwlog!("RW062", "metrics endpoint on {endpoint}");
    }
    let mut master =
        master::Master::new(cfg, listener, identity, lifetime, metrics).map_err(Error::Startup)?;
    if let Some(fd) = inherited.predecessor {
        master.replace_when_ready(fd);
    }
    if let Some(fd) = inherited.server {
        master.outlive_keeper(fd);
    }
    master.run();
    if let Some(region) = ::metrics::region() {
        region.release_process();
    }
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
