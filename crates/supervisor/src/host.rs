//! For the web server modules that host daemon groups (nginx's master, httpd's parent): the
//! defaults a server gives its groups ([`ServerDefaults`]), and starting a group's supervisor
//! in a child forked from the server ([`fork_supervisor`], which runs [`run_forked`]).
//!
//! Both servers keep the write end of each group's lifetime pipe in the master/parent only:
//! when it closes (the server stops, restarts, or dies), the group drains and exits. What stays
//! in the adapters is their own bookkeeping: nginx's table of running groups kept across
//! reloads, httpd's "other child" registration and generations.

use std::io::Write as _;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use pyhost::PythonConfig;

use crate::config::{AppConfig, GroupConfig, SocketSpec};
use crate::options::DaemonOptions;

/// What a web server module knows about itself that decides its groups' defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerDefaults {
    /// The server-level Python settings (`wsgi_python_home`/`wsgi_python_path`,
    /// `WSGIPythonHome`/`WSGIPythonPath`): a group without `python-home=`/`python-path=` uses
    /// them, as in mod_wsgi.
    pub python: PythonConfig,
    /// The account the server's workers run as, when the server runs as root and can switch to
    /// it; `None` otherwise.
    pub worker: Option<WorkerAccount>,
    /// The server's connection timeout (httpd's `Timeout`) as the groups' socket timeout;
    /// `None` keeps the supervisor's own default.
    pub socket_timeout: Option<Duration>,
    /// A group without `display-name=` is named this prefix followed by the group name
    /// (nginx: `wsgi:`); `None` leaves the process name alone (httpd, as mod_wsgi).
    pub display_name_prefix: Option<String>,
}

/// The user (and group) a server's workers run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerAccount {
    pub user: String,
    /// The group the daemons get when `user=` is absent (httpd's `Group`); `None`: the user's
    /// primary group (nginx, which refuses `group=` without `user=`).
    pub group: Option<String>,
}

impl ServerDefaults {
    /// The supervisor configuration of group `name`: its `options` over these defaults, serving
    /// `apps`, listening on `default_socket` unless `socket=` says otherwise.
    ///
    /// - `python-home`/`python-path` not given: the server's ([`DaemonOptions::group_config`]).
    /// - The socket is owned by the worker user: the server's workers connect to it (mode 0600).
    /// - `user=` not given: the daemons run as the worker user, and with its group unless
    ///   `group=` names one, as mod_wsgi does; a server that cannot switch users (not root)
    ///   cannot switch groups either, so `group=` alone is dropped then.
    pub fn group_config(
        &self,
        name: &str,
        options: &DaemonOptions,
        default_socket: SocketSpec,
        apps: Vec<AppConfig>,
    ) -> GroupConfig {
        let mut cfg = options.group_config(name, default_socket, apps, &self.python);
        cfg.socket_owner = self.worker.as_ref().map(|w| w.user.clone());
        if cfg.user.is_none() {
            match &self.worker {
                Some(worker) => {
                    cfg.user = Some(worker.user.clone());
                    if cfg.group.is_none() {
                        cfg.group.clone_from(&worker.group);
                    }
                }
                None => cfg.group = None,
            }
        }
        if let Some(timeout) = self.socket_timeout {
            cfg.socket_timeout = timeout;
        }
        if cfg.display_name.is_none() {
            if let Some(prefix) = &self.display_name_prefix {
                cfg.display_name = Some(format!("{prefix}{name}"));
            }
        }
        cfg
    }
}

/// A group's supervisor just forked by [`fork_supervisor`]. The caller keeps both: the pid to
/// watch or signal it, the lifetime pipe's write end to stop it (dropping it is the stop).
#[derive(Debug)]
pub struct ForkedSupervisor {
    pub pid: libc::pid_t,
    /// Write end of the lifetime pipe (close-on-exec). Only the master/parent may hold it: a
    /// server's worker processes must close their inherited copy, so that the group notices
    /// when the master dies.
    pub lifetime: OwnedFd,
}

/// What a server hands to a supervisor it forks, besides the configuration and the lifetime pipe
/// (nginx's keeper does; httpd's parent hands nothing: [`Handoff::default`]).
#[derive(Debug, Default)]
pub struct Handoff<'a> {
    /// The group's listening socket, bound by the server's master with `Listener::bind` and kept
    /// there: the supervisor adopts it instead of binding, so the socket outlives the supervisor
    /// (connections queue while a new one starts) and its file is never removed by it.
    pub listener: Option<BorrowedFd<'a>>,
    /// The lifetime pipe (write end) of the group this one replaces on the same socket: the new
    /// supervisor closes it once one of its workers is ready, and the old group drains then.
    pub predecessor: Option<OwnedFd>,
    /// nginx: the read end of the master's pipe to the group's keeper, which forks the
    /// supervisor. The supervisor only watches it for hang-up, never reads it (the keeper does).
    /// With it, a lifetime pipe that closes without [`STOP_NOTICE`] means the keeper died, not
    /// that the server wants the group gone: the group serves on until this pipe hangs up.
    pub server: Option<BorrowedFd<'a>>,
}

/// The byte a keeper writes on its supervisor's lifetime pipe before closing it to stop the
/// group, so that a pipe closed by the kernel (the keeper was killed) tells otherwise.
pub const STOP_NOTICE: u8 = b'S';

/// Forks the supervisor of group `cfg` from a web server's single-threaded master (nginx) or
/// parent (httpd): [`fork_supervisor_with`] and nothing handed over (the supervisor binds the
/// group's socket itself).
///
/// # Safety
/// As [`fork_supervisor_with`].
pub unsafe fn fork_supervisor<P, E>(
    cfg: &GroupConfig,
    prepare_child: P,
    error_line: E,
) -> Result<ForkedSupervisor, String>
where
    P: FnOnce(),
    E: Fn(&str) -> String,
{
    // SAFETY: the caller's contract is ours.
    unsafe { fork_supervisor_with(cfg, Handoff::default(), prepare_child, error_line) }
}

/// Forks the supervisor of group `cfg`, handing it `handoff`.
///
/// In the child: `prepare_child` runs first (nginx points stdout/stderr at its error log and
/// sets the process title; httpd needs nothing), then [`run_forked`] until the lifetime pipe
/// closes; on failure the line `error_line(reason)` goes to stderr; then the child `_exit`s
/// (0 after a clean stop, 1 otherwise), never returning into the server's code, even on a
/// panic.
///
/// In the parent: the pid and the pipe's write end; the parent's copy of
/// `handoff.predecessor` is closed (the child holds it now). `Err` (nothing forked) when `cfg`
/// is invalid (the [`GroupConfig::validate`] sentence) or the pipe or the fork fails
/// (`pipe: ...`, `fork: ...`).
///
/// # Safety
/// Call only in a single-threaded process: the child runs arbitrary code (allocation, Python
/// later) after `fork`. `handoff.listener` must be a listening socket bound for `cfg.socket`.
pub unsafe fn fork_supervisor_with<P, E>(
    cfg: &GroupConfig,
    handoff: Handoff<'_>,
    prepare_child: P,
    error_line: E,
) -> Result<ForkedSupervisor, String>
where
    P: FnOnce(),
    E: Fn(&str) -> String,
{
    cfg.validate().map_err(|e| e.to_string())?;
    let mut handoff = Some(handoff);
    let child = |lifetime| {
        let handoff = handoff.take().unwrap_or_default();
        become_supervisor(cfg, lifetime, handoff, prepare_child, error_line)
    };
    // SAFETY: the caller's process is single-threaded (contract).
    let (pid, lifetime) = unsafe { fork_with_lifetime(child) }?;
    drop(handoff);
    Ok(ForkedSupervisor { pid, lifetime })
}

/// Forks a child that runs `child` with the read end of a new lifetime pipe and then `_exit`s
/// with the code it returns (1 after a panic): it never returns into the caller's code. The
/// parent gets the child's pid and the pipe's write end (close-on-exec; dropping it is the
/// child's stop notice). `Err` (`pipe: ...`, `fork: ...`) when nothing was forked.
///
/// # Safety
/// Call only in a single-threaded process: the child runs arbitrary code after `fork`.
pub unsafe fn fork_with_lifetime<F>(child: F) -> Result<(libc::pid_t, OwnedFd), String>
where
    F: FnOnce(OwnedFd) -> i32,
{
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array; the result is checked. O_CLOEXEC
    // keeps both out of anything the server execs.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the caller's process is single-threaded (contract), so the child may run
    // arbitrary code; it leaves through _exit below, never into the caller's code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(write_end);
        // A panic must never unwind into the server's code, which would go on as a second
        // master.
        let code = std::panic::catch_unwind(AssertUnwindSafe(|| child(read_end))).unwrap_or(1);
        // SAFETY: leave without running the server's atexit handlers or flushing its stdio
        // buffers (not this process's); terminating is always sound.
        unsafe { libc::_exit(code) }
    }
    drop(read_end);
    Ok((pid, write_end))
}

/// The forked child: prepare, run the group (in `rwsgi-worker` when it can: `hosted.rs`),
/// report; returns the exit code.
fn become_supervisor<P, E>(
    cfg: &GroupConfig,
    lifetime: OwnedFd,
    handoff: Handoff<'_>,
    prepare: P,
    error_line: E,
) -> i32
where
    P: FnOnce(),
    E: Fn(&str) -> String,
{
    // The server's line around a reason, for rwsgi-worker to print if the group fails after the
    // exec (its time stamp is the fork's).
    let line = std::panic::catch_unwind(AssertUnwindSafe(|| error_line("\u{1}")))
        .unwrap_or_else(|_| "\u{1}".to_owned());
    let (before, after) = line.split_once('\u{1}').unwrap_or((&line, ""));
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        prepare();
        let listener = handoff.listener.map(|fd| fd.as_raw_fd());
        let predecessor = handoff.predecessor.map(IntoRawFd::into_raw_fd);
        let server = handoff.server.map(|fd| fd.as_raw_fd());
        let fds = Handed {
            listener,
            predecessor,
            server,
        };
        let plan = crate::hosted::Plan::new(cfg, (before, after), fds.layout());
        // SAFETY: we are the freshly forked child of a single-threaded process (fork_supervisor's
        // contract); the descriptors are handed over.
        unsafe { run_forked_with(cfg, lifetime.into_raw_fd(), fds, plan) }
    }))
    .unwrap_or_else(|_| Err("internal error (panic) while starting the supervisor".to_owned()));
    match result {
        Ok(()) => 0,
        Err(reason) => {
            // Still this process (an exec'd group prints its own line): the server's line as of
            // now, its time stamp included; the template only if the server's formatter fails.
            let text = std::panic::catch_unwind(AssertUnwindSafe(|| error_line(&reason)))
                .unwrap_or_else(|_| format!("{before}{reason}{after}"));
            // Not eprintln!: it panics when stderr is gone.
            let _ = writeln!(std::io::stderr(), "{text}");
            1
        }
    }
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
/// buffers are not this process's). [`fork_supervisor`] does all of that around this call.
///
/// # Safety
/// Call only in a freshly forked child of a single-threaded process. `lifetime` is the read end
/// of the lifetime pipe (above stderr); this call takes it over.
pub unsafe fn run_forked(cfg: &GroupConfig, lifetime: RawFd) -> Result<(), String> {
    // SAFETY: the caller's contract is ours.
    unsafe { run_forked_with(cfg, lifetime, Handed::default(), None) }
}

/// The descriptors a [`Handoff`] put in the forked child, before `keep_only` moves them.
#[derive(Default)]
struct Handed {
    listener: Option<RawFd>,
    predecessor: Option<RawFd>,
    server: Option<RawFd>,
}

impl Handed {
    fn layout(&self) -> crate::hosted::Layout {
        crate::hosted::Layout {
            listener: self.listener.is_some(),
            predecessor: self.predecessor.is_some(),
            server: self.server.is_some(),
        }
    }
}

/// [`run_forked`] with what [`Handoff`] carries: `listener` (kept open, adopted),
/// `predecessor` and `server` (taken over), all above stderr; and with a `plan`, the process
/// becomes `rwsgi-worker` once the descriptors are in place (`hosted.rs`), or runs the group
/// itself when that `exec` fails.
///
/// # Safety
/// As [`run_forked`]; `listener` is a listening socket bound for `cfg.socket`, `predecessor` a
/// descriptor this call may own.
unsafe fn run_forked_with(
    cfg: &GroupConfig,
    lifetime: RawFd,
    fds: Handed,
    plan: Option<crate::hosted::Plan>,
) -> Result<(), String> {
    let mut keep = vec![lifetime];
    keep.extend(fds.listener);
    keep.extend(fds.predecessor);
    keep.extend(fds.server);
    if let Some(plan) = &plan {
        keep.extend(plan.descriptors());
    }
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
        keep_only(&keep);
        // The workers are forked, not exec'd: nothing the app runs needs the pipe.
        libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::setsid();
    }
    // The metrics region's file numbers noted before keep_only are stale now (closed, or moved
    // into the plan's place).
    ::metrics::shm::forget_files();
    if let Some(plan) = plan {
        // SAFETY: single-threaded (contract); keep_only laid the descriptors out as the plan
        // expects.
        let failed = unsafe { plan.exec() };
        crate::log::set_name(cfg.log_name());
        crate::rwlog!(
            "RW013",
            "{failed}; the group runs in this process, on the server's libpython"
        );
    }
    // The descriptors are now 3 (the pipe), then the listener, the predecessor's pipe, the
    // server's pipe.
    let mut next = 4;
    let mut take = |present: bool| {
        present.then(|| {
            next += 1;
            // SAFETY: keep_only moved the descriptor there; nothing else owns it.
            unsafe { OwnedFd::from_raw_fd(next - 1) }
        })
    };
    let inherited = crate::Inherited {
        listener: take(fds.listener.is_some())
            .map(|fd| crate::listener::Listener::adopt(fd, &cfg.socket)),
        predecessor: take(fds.predecessor.is_some()),
        server: take(fds.server.is_some()),
    };
    // SAFETY: fd 3 is the lifetime pipe's read end (above), open for the rest of this process.
    let lifetime = unsafe { BorrowedFd::borrow_raw(3) };
    match std::panic::catch_unwind(AssertUnwindSafe(|| {
        crate::run_inner(cfg, Some(lifetime), inherited)
    })) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("internal error (panic) in the supervisor".to_owned()),
    }
}

/// Moves `fds` to 3, 4, ... in order and closes every other descriptor above stderr.
///
/// # Safety
/// Single-threaded process; the descriptors in `fds` are open and nothing else in this process
/// uses any descriptor above stderr.
pub unsafe fn keep_only(fds: &[RawFd]) {
    let floor = 3 + fds.len() as RawFd;
    // SAFETY: caller contract. Lift every descriptor above the target range first, so that a
    // dup2 onto 3, 4... never closes one still to be moved; then close the lifted copies and
    // everything else.
    unsafe {
        let lifted: Vec<RawFd> = fds
            .iter()
            .map(|&fd| libc::fcntl(fd, libc::F_DUPFD, floor))
            .collect();
        for (i, fd) in lifted.iter().enumerate() {
            libc::dup2(*fd, 3 + i as RawFd);
        }
        libc::close_range(floor as u32, u32::MAX, 0);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn options(opts: &[&str]) -> DaemonOptions {
        let mut o = DaemonOptions::default();
        for opt in opts {
            let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
            o.apply(k, v).expect("valid option");
        }
        o
    }

    fn apps() -> Vec<AppConfig> {
        vec![AppConfig::script("/srv/app.py", "application", None)]
    }

    fn socket() -> SocketSpec {
        SocketSpec::Unix(PathBuf::from("/run/g.sock"))
    }

    /// nginx as root: worker user `www-data`, groups named `wsgi:NAME`, no group default.
    fn nginx() -> ServerDefaults {
        ServerDefaults {
            python: PythonConfig {
                python_home: Some("/srv/venv".into()),
                python_path: vec!["/srv/lib".into()],
            },
            worker: Some(WorkerAccount {
                user: "www-data".into(),
                group: None,
            }),
            socket_timeout: None,
            display_name_prefix: Some("wsgi:".into()),
        }
    }

    /// httpd as root: `User www-data`, `Group www-data`, `Timeout 30`.
    fn apache() -> ServerDefaults {
        ServerDefaults {
            python: PythonConfig::default(),
            worker: Some(WorkerAccount {
                user: "www-data".into(),
                group: Some("www-data".into()),
            }),
            socket_timeout: Some(Duration::from_secs(30)),
            display_name_prefix: None,
        }
    }

    #[test]
    fn nginx_defaults() {
        let cfg = nginx().group_config("site", &options(&[]), socket(), apps());
        assert_eq!(cfg.python_home, Some(PathBuf::from("/srv/venv")));
        assert_eq!(cfg.python_path, vec![PathBuf::from("/srv/lib")]);
        assert_eq!(cfg.user.as_deref(), Some("www-data"));
        assert_eq!(cfg.group, None, "the user's primary group");
        assert_eq!(cfg.socket_owner.as_deref(), Some("www-data"));
        assert_eq!(cfg.display_name.as_deref(), Some("wsgi:site"));
        assert_eq!(
            cfg.socket_timeout,
            Duration::from_secs(60),
            "supervisor default"
        );
        assert_eq!(cfg.socket, socket());
        // What the directive says wins.
        let o = options(&[
            "user=app",
            "group=apps",
            "display-name=%{GROUP}",
            "python-home=/v",
        ]);
        let cfg = nginx().group_config("site", &o, socket(), apps());
        assert_eq!(
            (cfg.user.as_deref(), cfg.group.as_deref()),
            (Some("app"), Some("apps"))
        );
        assert_eq!(cfg.socket_owner.as_deref(), Some("www-data"));
        assert_eq!(cfg.display_name.as_deref(), Some("(wsgi:site)"));
        assert_eq!(cfg.python_home, Some(PathBuf::from("/v")));
    }

    #[test]
    fn apache_defaults() {
        let cfg = apache().group_config("site", &options(&[]), socket(), apps());
        assert_eq!(
            (cfg.user.as_deref(), cfg.group.as_deref()),
            (Some("www-data"), Some("www-data"))
        );
        assert_eq!(cfg.socket_owner.as_deref(), Some("www-data"));
        assert_eq!(cfg.socket_timeout, Duration::from_secs(30));
        assert_eq!(cfg.display_name, None);
        // group= alone keeps the worker user, with that group (mod_wsgi).
        let cfg = apache().group_config("site", &options(&["group=apps"]), socket(), apps());
        assert_eq!(
            (cfg.user.as_deref(), cfg.group.as_deref()),
            (Some("www-data"), Some("apps"))
        );
    }

    #[test]
    fn a_server_that_is_not_root_switches_nobody() {
        let server = ServerDefaults {
            worker: None,
            ..apache()
        };
        let cfg = server.group_config("site", &options(&["group=apps"]), socket(), apps());
        assert_eq!((cfg.user, cfg.group, cfg.socket_owner), (None, None, None));
        // An explicit user= stays (the supervisor then refuses to start without root).
        let cfg = server.group_config("site", &options(&["user=app"]), socket(), apps());
        assert_eq!(cfg.user.as_deref(), Some("app"));
    }
}
