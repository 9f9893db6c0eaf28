//! Daemon mode, master side: one supervisor process per `wsgi_daemon_process` group.
//!
//! Called from the module's `init_module`, which nginx runs in the master at start and on every
//! reload (and also for `nginx -t` and `nginx -s ...`, where we do nothing). The master stays
//! single-threaded: each supervisor is a `fork()`ed child (`supervisor::fork_supervisor`)
//! and never returns to nginx code.
//!
//! Lifetime: the master keeps the write end of a pipe per group (close-on-exec, and closed in the
//! nginx workers by `init_process`), the supervisor polls the read end. When the master goes away
//! for any reason (`nginx -s stop`, `quit`, `kill -9`) the pipe closes and the group drains and
//! exits. On reload the table below (module statics survive reloads: nginx opens the new cycle's
//! modules before it closes the old cycle's, so the .so stays loaded) tells which groups are
//! unchanged (kept running), changed (stopped, then started again) or gone (stopped).

use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pyhost::PythonConfig;
use supervisor::{AppConfig, GroupConfig, ServerDefaults, SocketSpec, WorkerAccount};

use crate::conf::{DaemonGroup, MainConf};

/// A running group, as the master knows it.
struct Running {
    config: GroupConfig,
    pid: libc::pid_t,
    /// Write end of the lifetime pipe; dropping it tells the supervisor to stop.
    lifetime: OwnedFd,
}

static RUNNING: Mutex<Vec<Running>> = Mutex::new(Vec::new());

/// Each group's secret (`supervisor::Secret`), by group name: made the first time the master
/// starts the group and kept for the master's life, across reloads, so that a changed group's
/// new supervisor and the old generation's workers still agree on it.
static SECRETS: Mutex<Vec<(String, supervisor::Secret)>> = Mutex::new(Vec::new());

/// The secret of group `name` (made now if it has none yet); `None` if the system cannot give
/// random bytes, and then the group runs without one (logged by the caller).
fn secret_for(name: &str) -> Option<supervisor::Secret> {
    let mut secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, s)) = secrets.iter().find(|(n, _)| n == name) {
        return Some(s.clone());
    }
    let secret = supervisor::Secret::generate().ok()?;
    secrets.push((name.to_owned(), secret.clone()));
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
        .map(|a| AppConfig {
            script: a.entry.script.clone(),
            callable: a.entry.callable.clone(),
            mount: a.mount.clone(),
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

/// Brings the running groups in line with `wanted` (master only). Returns log lines.
/// `log_fd`: nginx's error log, which becomes the supervisors' stdout and stderr.
pub fn sync(wanted: Vec<GroupConfig>, log_fd: RawFd) -> Vec<String> {
    let mut log = Vec::new();
    let mut running = match RUNNING.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    reap_dead(&mut running);
    // Stop what is gone or changed.
    let mut kept = Vec::new();
    let mut stopped_sockets = Vec::new();
    for r in running.drain(..) {
        if wanted.contains(&r.config) {
            kept.push(r);
        } else {
            log.push(format!(
                "wsgi: RW-NG031 stopping daemon group {} (pid {})",
                r.config.log_name(),
                r.pid
            ));
            if let SocketSpec::Unix(p) = &r.config.socket {
                stopped_sockets.push(p.clone());
            }
            if wanted.iter().any(|w| w.name == r.config.name) {
                crate::metrics::group_restarted(&r.config);
            }
            stop(r);
        }
    }
    // A restarted group binds the same path: wait (briefly) until the old supervisor removed it.
    for path in stopped_sockets {
        wait_gone(&path, Duration::from_secs(3));
    }
    for cfg in wanted {
        if kept.iter().any(|r| r.config == cfg) {
            continue;
        }
        match start(&cfg, log_fd) {
            Ok(r) => {
                log.push(format!(
                    "wsgi: RW-NG030 started daemon group {} (pid {}) on {}",
                    cfg.log_name(),
                    r.pid,
                    cfg.socket
                ));
                kept.push(r);
            }
            Err(e) => log.push(format!(
                "wsgi: RW-NG032 cannot start daemon group {}: {e}",
                cfg.log_name()
            )),
        }
    }
    *running = kept;
    log
}

/// Closes the lifetime pipes' write ends in an nginx worker (only the master may hold them, so
/// that the groups notice when the master dies even while old workers are still draining).
pub fn close_in_worker() {
    if let Ok(mut running) = RUNNING.lock() {
        // Dropping the OwnedFds closes them in this process only.
        running.clear();
    }
}

fn reap_dead(running: &mut Vec<Running>) {
    // nginx's master reaps every child (its SIGCHLD handler waits for -1), so check by signal 0.
    // SAFETY: kill with signal 0 only checks that the process exists.
    running.retain(|r| unsafe { libc::kill(r.pid, 0) } == 0);
}

fn stop(r: Running) {
    drop(r.lifetime); // the supervisor sees the pipe close and drains
                      // SAFETY: r.pid is our child (checked alive in reap_dead); SIGTERM asks for a graceful stop.
    unsafe { libc::kill(r.pid, libc::SIGTERM) };
}

fn wait_gone(path: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Forks the group's supervisor (`supervisor::fork_supervisor`). In the child, before the
/// group starts: output goes to nginx's error log (nginx only points its own stderr there after
/// this fork, and a daemonising nginx's original stderr may be a terminal or a pipe that must
/// close), and the process gets a title of its own (`ps` would otherwise show it and its workers
/// as "nginx: master process").
fn start(cfg: &GroupConfig, log_fd: RawFd) -> Result<Running, String> {
    let name = cfg.log_name();
    let title = std::ffi::CString::new(format!("wsgi daemon group {name}")).ok();
    let prepare = || {
        if log_fd > 2 {
            // SAFETY: dup2 onto our own stdout/stderr; log_fd is open (inherited from the master).
            unsafe {
                libc::dup2(log_fd, 1);
                libc::dup2(log_fd, 2);
            }
        }
        if let Some(title) = &title {
            // SAFETY: nginx's own title setter (the master initialised it), NUL-terminated input.
            unsafe { ngx::ffi::ngx_setproctitle(title.as_ptr().cast_mut()) };
        }
    };
    let error_line = |e: &str| format!("wsgi: RW-NG032 daemon group {name}: {e}");
    // SAFETY: the nginx master is single-threaded.
    let forked = unsafe { supervisor::fork_supervisor(cfg, prepare, error_line) }?;
    Ok(Running {
        config: cfg.clone(),
        pid: forked.pid,
        lifetime: forked.lifetime,
    })
}

/// `init_module` (master, also for `nginx -t` and `nginx -s`): fill in the groups' addresses,
/// then, in a real master, start/keep/stop the supervisors. Returns lines for the error log.
///
/// # Safety
/// `cycle` is the cycle being initialised, on nginx's main thread.
pub unsafe fn init_module(cycle: *mut ngx::ffi::ngx_cycle_t) -> Result<Vec<String>, String> {
    use ngx::core::{CoreModuleMainConf, NgxCoreModule};
    use ngx::http::HttpModuleMainConf;
    // SAFETY: contract.
    let cycle = unsafe { &mut *cycle };
    let Some(main) = crate::WsgiModule::main_conf_mut(cycle) else {
        return Ok(Vec::new());
    };
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
    let host = Host {
        run_dir: pid_path.parent().map(Path::to_path_buf).unwrap_or_default(),
        worker_user,
    };
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
            log.push(format!(
                "wsgi: RW-NG033 daemon group {} is not used by any location with wsgi_script: not started",
                g.name
            ));
        }
    }
    // SAFETY: reading nginx's process-role globals on its main thread.
    let (testing, role) = unsafe { (ngx::ffi::ngx_test_config, ngx::ffi::ngx_process) };
    if testing != 0 || role == ngx::ffi::NGX_PROCESS_SIGNALLER as usize {
        return Ok(Vec::new());
    }
    // Before the workers fork: they send each group's secret (src/daemon.rs).
    for g in main.groups.iter_mut() {
        g.secret = secret_for(&g.name);
        if g.secret.is_none() {
            log.push(format!(
                "wsgi: RW-NG050 daemon group {}: no random bytes for its secret; it runs without one",
                g.name
            ));
        }
    }
    let wanted = main
        .groups
        .iter()
        .filter_map(|g| group_config(g, main, &host))
        .collect();
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
