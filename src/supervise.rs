//! Daemon mode, master side: one keeper process per `wsgi_daemon_process` group, which runs
//! the group's supervisor (keeper.rs says why there is a keeper).
//!
//! Called from the module's `init_module`, which nginx runs in the master at start and on every
//! reload (and also for `nginx -t` and `nginx -s ...`, where we only check). The master stays
//! single-threaded: each keeper is a `fork()`ed child and never returns to nginx code.
//!
//! The master binds each group's listening socket itself and keeps it, across reloads, for as
//! long as some group listens there (`SOCKETS`). So the socket never goes away while nginx runs:
//! a supervisor started again (case 2 of docs/failure-modes.md) or a changed group (case 1) finds
//! the connections queued there, and no request meets a missing socket.
//!
//! Lifetime: the master keeps the write end of a pipe per keeper (close-on-exec, and closed in
//! the nginx workers by `init_process`). When the master goes away for any reason (`nginx -s
//! stop`, `quit`, `kill -9`) the pipe closes and the group drains and exits. On reload the table
//! below (module statics survive reloads: nginx opens the new cycle's modules before it closes
//! the old cycle's, so the .so stays loaded) tells which groups are unchanged (kept running),
//! changed or gone:
//! - unchanged: nothing happens;
//! - changed: a new keeper starts on the same socket and is handed the old keeper's pipe (after
//!   a [`keeper::KEEP_SOCKET`] byte): its supervisor closes that pipe once one of its workers is
//!   ready, and the old group then drains (graceful-timeout) while the new one serves. One stop
//!   notice, never a signal on top: the supervisor takes a second one as "kill the workers now";
//! - gone: its pipe is closed (the group drains), and a socket no group uses any more is closed
//!   and its file removed.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ngx::ffi::{ngx_uint_t, NGX_LOG_ERR, NGX_LOG_NOTICE};
use pyhost::PythonConfig;
use supervisor::listener::Listener;
use supervisor::{AppConfig, GroupConfig, ServerDefaults, SocketSpec, WorkerAccount};

use crate::conf::{DaemonGroup, MainConf};
use crate::keeper;

/// A running group, as the master knows it.
struct Running {
    /// The `wsgi_daemon_process` name: a group of the same name in a new configuration
    /// replaces this one.
    name: String,
    config: GroupConfig,
    keeper: libc::pid_t,
    /// Write end of the keeper's pipe; dropping it stops the group.
    pipe: OwnedFd,
}

/// The listening sockets the master holds, one per address in use.
struct Bound {
    socket: SocketSpec,
    listener: Listener,
}

#[derive(Default)]
struct State {
    groups: Vec<Running>,
    sockets: Vec<Bound>,
}

static STATE: Mutex<State> = Mutex::new(State {
    groups: Vec::new(),
    sockets: Vec::new(),
});

/// A line for nginx's error log, at nginx's level.
pub struct Line {
    pub level: ngx_uint_t,
    pub text: String,
}

fn notice(text: String) -> Line {
    Line {
        level: NGX_LOG_NOTICE as ngx_uint_t,
        text,
    }
}

fn error(text: String) -> Line {
    Line {
        level: NGX_LOG_ERR as ngx_uint_t,
        text,
    }
}

/// Each socket's secret (`supervisor::Secret`): made the first time the master starts a group on
/// that socket and kept for the master's life, across reloads. Keyed by the socket, not the
/// group's name, because the socket is what a request reaches: a changed group's new supervisor,
/// a renamed group that takes over the socket, and the old generation's nginx workers (and
/// daemon workers, while they drain on the same socket) all agree on it.
static SECRETS: Mutex<Vec<(SocketSpec, supervisor::Secret)>> = Mutex::new(Vec::new());

/// The secret of `socket` (made now if it has none yet); `None` if the system cannot give
/// random bytes, and then the group runs without one (logged by the caller).
fn secret_for(socket: &SocketSpec) -> Option<supervisor::Secret> {
    let mut secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, s)) = secrets.iter().find(|(k, _)| k == socket) {
        return Some(s.clone());
    }
    let secret = supervisor::Secret::generate().ok()?;
    secrets.push((socket.clone(), secret.clone()));
    Some(secret)
}

/// Where nginx runs (from the core module configuration).
pub struct Host {
    /// The directory of nginx's pid file: default home of the groups' unix sockets.
    pub run_dir: PathBuf,
    /// nginx's worker user when the master runs as root: default daemon user and socket owner.
    pub worker_user: Option<String>,
}

/// The supervisor configuration of `group`, with the host's defaults applied.
pub fn group_config(group: &DaemonGroup, main: &MainConf, host: &Host) -> Option<GroupConfig> {
    group.apps.first()?;
    // Every script assigned to the group, routed by the SCRIPT_NAME (location prefix) nginx sends.
    let apps = group
        .apps
        .iter()
        .map(|a| {
            AppConfig::script(
                a.entry.script.clone(),
                a.entry.callable.clone(),
                a.mount.clone(),
            )
        })
        .collect();
    // nginx's facts; the rules are the supervisor crate's, the same for both servers. Without
    // user=, the daemons run as nginx's worker user (group= without user= is refused when the
    // directive is parsed, hence no group here), and the socket is theirs (mode 0600).
    let server = ServerDefaults {
        python: PythonConfig {
            python_home: main.python_home.clone(),
            python_path: main.python_path.clone(),
        },
        worker: host
            .worker_user
            .clone()
            .map(|user| WorkerAccount { user, group: None }),
        socket_timeout: None,
        display_name_prefix: Some("wsgi:".into()),
    };
    let default_socket = SocketSpec::Unix(default_socket(&host.run_dir, &group.name));
    let mut cfg = server.group_config(&group.name, &group.options, default_socket, apps);
    cfg.secret.clone_from(&group.secret);
    Some(cfg)
}

/// `<run dir>/nginx-wsgi-<group>.sock`.
pub fn default_socket(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(format!("nginx-wsgi-{name}.sock"))
}

/// Brings the running groups in line with `wanted` (`(name, config)`, master only). Returns
/// log lines. `log_fd`: nginx's error log, which becomes the groups' stdout and stderr.
fn sync(wanted: Vec<(String, GroupConfig)>, log_fd: RawFd) -> Vec<Line> {
    let mut log = Vec::new();
    let mut state = STATE.lock().unwrap_or_else(|p| p.into_inner());
    let State { groups, sockets } = &mut *state;
    // nginx's master reaps every child (its SIGCHLD handler waits for -1), so check by signal 0.
    // A group whose keeper is gone (killed) still serves: its supervisor outlived the keeper
    // and follows our pipe (RW015). It is handed to a new keeper below as a changed group would
    // be: the old supervisor serves until the new group is ready, then drains.
    let mut old = std::mem::take(groups);
    // SAFETY: kill with signal 0 only checks that the process exists.
    let gone: Vec<libc::pid_t> = (old.iter())
        .filter(|r| unsafe { libc::kill(r.keeper, 0) } != 0)
        .map(|r| r.keeper)
        .collect();
    for r in old.iter().filter(|r| gone.contains(&r.keeper)) {
        if wanted.iter().any(|(name, _)| *name == r.name) {
            log.push(notice(format!(
                "wsgi: RW-NG036 the keeper of daemon group {} (pid {}) is gone; a new keeper \
                 takes the group over",
                r.name, r.keeper
            )));
        }
    }
    for (name, cfg) in wanted {
        let unchanged =
            |r: &Running| r.name == name && r.config == cfg && !gone.contains(&r.keeper);
        if let Some(i) = old.iter().position(unchanged) {
            groups.push(old.swap_remove(i));
            continue;
        }
        // Its workers are replaced: the metrics count them as reload respawns.
        if let Some(r) = old.iter().find(|r| r.name == name) {
            crate::metrics::group_restarted(&r.config);
        }
        // A changed group on the same socket is handed over; on another socket it just stops.
        let mut replaced = old
            .iter()
            .position(|r| r.name == name && r.config.socket == cfg.socket)
            .map(|i| old.swap_remove(i));
        match start(&name, &cfg, sockets, &mut replaced, log_fd) {
            Ok((running, line)) => {
                log.push(notice(line));
                groups.push(running);
            }
            Err(e) => {
                let kept = match replaced {
                    Some(r) => {
                        groups.push(r);
                        "; the running group keeps serving with its previous configuration"
                    }
                    None => "",
                };
                log.push(error(format!(
                    "wsgi: RW-NG032 cannot start daemon group {name}: {e}{kept}"
                )));
            }
        }
    }
    for r in old {
        log.push(notice(format!(
            "wsgi: RW-NG031 stopping daemon group {} (keeper pid {}): it finishes its requests \
             (graceful-timeout) and exits",
            r.name, r.keeper
        )));
        // Its socket may serve a group of this configuration (a renamed group): then the file
        // stays where it is.
        if groups.iter().any(|g| g.config.socket == r.config.socket) {
            keep_socket(&r.pipe);
        }
        drop(r.pipe);
    }
    // Sockets no group listens on any more: closed here (the stopping groups keep their
    // copies until they exit), and the file removed so that nobody queues behind them.
    sockets.retain(|b| {
        let used = groups.iter().any(|r| r.config.socket == b.socket);
        if !used {
            b.listener.remove_file();
        }
        used
    });
    log
}

/// Tells a keeper that its socket file stays (a successor serves on it), before its pipe closes.
fn keep_socket(pipe: &OwnedFd) {
    // SAFETY: one byte from a static into our own pipe's write end (never full: nothing else
    // is written to it).
    unsafe { libc::write(pipe.as_raw_fd(), [keeper::KEEP_SOCKET].as_ptr().cast(), 1) };
}

/// Starts the keeper of one group on its socket (bound now, or kept from before). `replaces`: the
/// running group of the same name on the same socket, taken (and handed its pipe) only once the
/// new keeper runs. Returns the running group and its log line.
fn start(
    name: &str,
    cfg: &GroupConfig,
    sockets: &mut Vec<Bound>,
    replaces: &mut Option<Running>,
    log_fd: RawFd,
) -> Result<(Running, String), String> {
    // What a supervisor would refuse (unknown user...): said now, and no socket is bound that
    // nobody would serve (requests then get 503 RW-NG020 at once).
    supervisor::preflight(cfg).map_err(|e| e.to_string())?;
    let listener = match sockets.iter().find(|b| b.socket == cfg.socket) {
        Some(b) => {
            b.listener.reconfigure(cfg)?;
            &b.listener
        }
        None => {
            let listener = Listener::bind(cfg)?;
            sockets.push(Bound {
                socket: cfg.socket.clone(),
                listener,
            });
            &sockets[sockets.len() - 1].listener
        }
    };
    // SAFETY: the nginx master is single-threaded.
    let forked = unsafe {
        keeper::fork(keeper::Start {
            name,
            cfg,
            listener: listener.as_fd(),
            predecessor: replaces.as_ref().map(|r| r.pipe.as_fd()),
            log_fd,
            set_title,
        })
    }?;
    let mut line = format!(
        "wsgi: RW-NG030 started daemon group {name} (keeper pid {}) on {}",
        forked.pid, cfg.socket
    );
    if let Some(old) = replaces.take() {
        // The new keeper holds the old one's pipe now; ours goes, after saying that the socket
        // file stays.
        keep_socket(&old.pipe);
        line += &format!(
            "; the group it replaces (keeper pid {}) serves until a new worker is ready, then \
             finishes its requests (graceful-timeout) and exits",
            old.keeper
        );
    }
    let running = Running {
        name: name.to_owned(),
        config: cfg.clone(),
        keeper: forked.pid,
        pipe: forked.pipe,
    };
    Ok((running, line))
}

/// nginx's process title setter: "nginx: " + `text` in `ps`.
fn set_title(text: &str) {
    if let Ok(title) = std::ffi::CString::new(text) {
        // SAFETY: nginx's own title setter (the master initialised it; a forked keeper or
        // supervisor has the same memory), NUL-terminated input that outlives the call.
        unsafe { ngx::ffi::ngx_setproctitle(title.as_ptr().cast_mut()) };
    }
}

/// Closes the keepers' pipes and the listening sockets in an nginx worker (only the master may
/// hold them, so that the groups notice when the master dies even while old workers are still
/// draining).
pub fn close_in_worker() {
    if let Ok(mut state) = STATE.lock() {
        // Dropping the OwnedFds and listeners closes them in this process only.
        state.groups.clear();
        state.sockets.clear();
    }
    // The metrics region's memory file too (the mapping stays): only the master hands it on.
    ::metrics::shm::close_files();
}

/// `init_module` (master, also for `nginx -t` and `nginx -s`): fill in the groups' addresses and
/// check them, then, in a real master, start/keep/stop the groups. Returns lines for the error
/// log; `Err` fails the configuration (`nginx -t` names the reason).
///
/// # Safety
/// `cycle` is the cycle being initialised, on nginx's main thread.
pub unsafe fn init_module(cycle: *mut ngx::ffi::ngx_cycle_t) -> Result<Vec<Line>, String> {
    use ngx::http::HttpModuleMainConf;
    // SAFETY: contract.
    let cycle = unsafe { &mut *cycle };
    let Some(main) = crate::WsgiModule::main_conf_mut(cycle) else {
        return Ok(Vec::new());
    };
    let host = host(cycle)?;
    let mut log = Vec::new();
    for g in main.groups.iter_mut() {
        match &g.options.socket {
            None => {
                g.options.socket = Some(SocketSpec::Unix(default_socket(&host.run_dir, &g.name)))
            }
            Some(SocketSpec::Tcp(addr)) => {
                use std::net::ToSocketAddrs;
                let first = addr.to_socket_addrs().ok().and_then(|mut a| a.next());
                g.resolved = Some(first.ok_or_else(|| {
                    format!(
                        "wsgi: RW-NG034 wsgi_daemon_process {}: cannot resolve socket address \"{addr}\"",
                        g.name
                    )
                })?);
            }
            Some(SocketSpec::Unix(_)) => {}
        }
        if g.apps.is_empty() {
            log.push(notice(format!(
                "wsgi: RW-NG033 daemon group {} is not used by any location with wsgi_script: not started",
                g.name
            )));
        }
    }
    // Also at `nginx -t`: what would only fail when a group starts fails the configuration.
    checked_groups(main, &host)?;
    // SAFETY: reading nginx's process-role globals on its main thread.
    let (testing, role) = unsafe { (ngx::ffi::ngx_test_config, ngx::ffi::ngx_process) };
    if testing != 0 || role == ngx::ffi::NGX_PROCESS_SIGNALLER as usize {
        return Ok(Vec::new());
    }
    // Embedded mode's record of deadly imports, shared with every worker forked from now on.
    let embedded = !main.apps.is_empty() || !main.asgi_apps.is_empty();
    if embedded {
        // Each worker's count of connections, for balancing them (src/embedded/balance.rs);
        // without it workers only take turns.
        main.generation = crate::embedded::seats::next_generation();
        let _ = crate::embedded::seats::Seats::create_shared();
    }
    if embedded && crate::embedded::imports::Ledger::create_shared().is_none() {
        log.push(error(format!(
            "wsgi: RW-NG061 cannot map the shared import record ({}): an app that kills its \
             worker at import is not held back",
            std::io::Error::last_os_error()
        )));
    }
    // Before the workers fork: they send each group's secret (src/daemon.rs).
    for g in main.groups.iter_mut() {
        g.secret = g.options.socket.as_ref().and_then(secret_for);
        if g.secret.is_none() {
            log.push(error(format!(
                "wsgi: RW-NG050 daemon group {}: no random bytes for its secret; it runs without one",
                g.name
            )));
        }
    }
    let wanted = checked_groups(main, &host)?;
    // SAFETY: the cycle's log and its open file are valid during init_module.
    let log_fd = unsafe {
        cycle
            .log
            .as_ref()
            .and_then(|l| l.file.as_ref())
            .map_or(-1, |f| f.fd)
    };
    log.extend(sync(wanted, log_fd));
    Ok(log)
}

/// nginx's facts the groups' defaults come from.
fn host(cycle: &ngx::ffi::ngx_cycle_t) -> Result<Host, String> {
    use ngx::core::{CoreModuleMainConf, NgxCoreModule};
    let ccf = NgxCoreModule::main_conf(cycle).ok_or("no core configuration")?;
    let pid_path = PathBuf::from(std::ffi::OsStr::new(
        std::str::from_utf8(ccf.pid.as_bytes()).map_err(|_| "pid path is not UTF-8")?,
    ));
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let worker_user = if root && !ccf.username.is_null() {
        // SAFETY: username is a NUL-terminated string from the configuration.
        Some(
            unsafe { std::ffi::CStr::from_ptr(ccf.username) }
                .to_string_lossy()
                .into_owned(),
        )
    } else {
        None
    };
    Ok(Host {
        run_dir: pid_path.parent().map(Path::to_path_buf).unwrap_or_default(),
        worker_user,
    })
}

/// The configuration of every group that serves something, checked (also at `nginx -t`): what
/// would only fail when the group starts (a default socket path too long for a unix socket, two
/// groups on one socket) fails the configuration instead, naming the directive's file and line.
fn checked_groups(main: &MainConf, host: &Host) -> Result<Vec<(String, GroupConfig)>, String> {
    let mut wanted: Vec<(String, GroupConfig)> = Vec::new();
    for g in &main.groups {
        let Some(cfg) = group_config(g, main, host) else {
            continue;
        };
        let at = g
            .origin
            .as_ref()
            .map_or(String::new(), |o| format!(" in {}:{}", o.file, o.line));
        if let Err(e) = cfg.validate() {
            let default = SocketSpec::Unix(default_socket(&host.run_dir, &g.name));
            let hint = match (&e.option[..], &cfg.socket) {
                ("socket", SocketSpec::Unix(p)) if cfg.socket == default => format!(
                    ": the default socket {} ({} bytes) lives in the directory of nginx's pid \
                     file; use a shorter pid path, or socket=unix:PATH with a shorter PATH",
                    p.display(),
                    p.as_os_str().len()
                ),
                ("socket", _) => ": use a shorter socket=unix:PATH".to_string(),
                _ => String::new(),
            };
            return Err(format!(
                "wsgi: RW-NG060 wsgi_daemon_process {}{at}: {e}{hint}",
                g.name
            ));
        }
        if let Some((other, _)) = wanted.iter().find(|(_, c)| c.socket == cfg.socket) {
            return Err(format!(
                "wsgi: RW-NG060 wsgi_daemon_process {}{at}: socket {} is already the socket of \
                 group {other}: give each group its own socket=",
                g.name, cfg.socket
            ));
        }
        wanted.push((g.name.clone(), cfg));
    }
    Ok(wanted)
}
