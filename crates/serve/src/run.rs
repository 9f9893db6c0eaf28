//! The foreground server: a private directory, nginx started and watched, the URL printed,
//! `--reload-on-change`, and a clean stop on Ctrl-C that leaves nothing running.

use std::ffi::CString;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::conf::{Layout, Logs};
use crate::procs;
use crate::setup;
use crate::site::{Site, GROUP};
use crate::watch::Watcher;
use crate::{preflight, say};

/// How long nginx may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// After a graceful stop request (SIGQUIT), nginx gets this long before SIGTERM...
const QUIT_GRACE: Duration = Duration::from_secs(10);
/// ... and whatever nginx started (a daemon group draining) this long before SIGKILL.
const REAP_GRACE: Duration = Duration::from_secs(20);
const TICK: Duration = Duration::from_millis(100);

/// A temp directory, removed with everything in it when dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create(port: u16) -> Result<PrivateDir, String> {
        let template = std::env::temp_dir().join(format!("rwsgi-serve-{port}-XXXXXX"));
        let mut bytes = CString::new(template.as_os_str().as_encoded_bytes())
            .map_err(|_| "the temp directory name holds a NUL byte".to_owned())?
            .into_bytes_with_nul();
        // SAFETY: bytes is a writable NUL-terminated template ending in XXXXXX, as mkdtemp wants.
        let made = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
        if made.is_null() {
            return Err(format!(
                "cannot create a directory like {}: {}",
                template.display(),
                std::io::Error::last_os_error()
            ));
        }
        bytes.pop(); // the NUL
        let path = PathBuf::from(String::from_utf8_lossy(&bytes).into_owned());
        Ok(PrivateDir(path))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serves until Ctrl-C (Ok) or until nginx fails (Err with the reason).
pub fn serve(site: &Site) -> Result<(), String> {
    preflight::port_free(site)?;
    let module_file = preflight::module_file(site)?;
    let dir = PrivateDir::create(site.server.port)?;
    setup::make_enterable(&dir.0)?;
    preflight::readable(site, module_file, &dir.0)?;
    let layout = Layout {
        dir: dir.0.clone(),
        logs: Logs::Terminal,
    };
    setup::write(site, &layout)?;
    setup::check(site, &layout)?;
    procs::install_signals().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    procs::become_subreaper().map_err(|e| format!("prctl(PR_SET_CHILD_SUBREAPER): {e}"))?;
    let mut nginx = procs::spawn_nginx(&site.nginx.bin, &setup::nginx_args(&layout))
        .map_err(|e| format!("cannot start {}: {e}", site.nginx.bin.display()))?;
    let outcome = wait_ready(site, &mut nginx).and_then(|()| {
        banner(site, &layout);
        watch(site, &mut nginx)
    });
    stop(&mut nginx);
    drop(dir);
    if outcome.is_ok() {
        say("stopped; nothing left running");
    }
    outcome
}

/// Until nginx accepts connections on the site's address.
fn wait_ready(site: &Site, nginx: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let addr = site.probe_addr();
    loop {
        if let Ok(Some(status)) = nginx.try_wait() {
            return Err(format!(
                "nginx exited during start-up ({status}); its messages are above"
            ));
        }
        if procs::stops() > 0 {
            return Ok(());
        }
        if TcpStream::connect(&addr).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "nginx did not listen on {addr} within {START_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(TICK);
    }
}

fn banner(site: &Site, layout: &Layout) {
    let mode = if site.server.daemon {
        format!(
            "daemon mode: {} process(es) x {} threads",
            site.server.processes, site.server.threads
        )
    } else {
        format!(
            "embedded in nginx's workers: {} process(es) x {} threads",
            site.server.processes, site.server.threads
        )
    };
    say(&format!("serving {} on {}", site.app_name(), site.url()));
    say(&format!(
        "nginx {} ({}), {mode}",
        site.nginx.version,
        site.nginx.bin.display()
    ));
    if let Some(home) = &site.python_home {
        say(&format!("python home {}", home.display()));
    }
    for s in &site.statics {
        say(&format!("static {} -> {}", s.url, s.dir.display()));
    }
    say(&format!("configuration {}", layout.conf().display()));
    say("Ctrl-C to stop");
}

/// The main loop: stop on a signal, fail when nginx dies, restart Python on a change.
fn watch(site: &Site, nginx: &mut Child) -> Result<(), String> {
    let mut watcher = site.server.reload_on_change.then(|| {
        let skip: Vec<PathBuf> = site.python_home.iter().cloned().collect();
        let w = Watcher::new(site.watch_roots(), skip);
        say(&format!(
            "reloading on change: {} .py files under {}",
            w.len(),
            join(&site.watch_roots())
        ));
        if w.truncated {
            say("(too many files to watch them all: start rwsgi serve in the project directory)");
        }
        w
    });
    let mut next_scan = Instant::now() + Duration::from_secs(1);
    loop {
        if procs::stops() > 0 {
            return Ok(());
        }
        if let Ok(Some(status)) = nginx.try_wait() {
            return Err(format!(
                "nginx exited unexpectedly ({status}); its messages are above"
            ));
        }
        if let Some(w) = watcher.as_mut() {
            if Instant::now() >= next_scan {
                let changed = w.changes();
                if !changed.is_empty() {
                    restart_python(site, nginx.id(), &changed);
                }
                next_scan = Instant::now() + Duration::from_secs(1);
            }
        }
        std::thread::sleep(TICK);
    }
}

/// New Python processes, same listening socket. Embedded mode: nginx's reload (SIGHUP) starts
/// new workers, which import the app afresh, and lets the old ones finish their requests.
/// Daemon mode: a reload keeps an unchanged group running, so the group's supervisor gets the
/// SIGHUP itself: a rolling restart, each new process ready before an old one stops.
fn restart_python(site: &Site, master: u32, changed: &[PathBuf]) {
    let what = match changed {
        [one] => one.display().to_string(),
        many => format!("{} and {} more", many[0].display(), many.len() - 1),
    };
    if site.server.daemon {
        let comm: String = format!("wsgi:{GROUP}").chars().take(15).collect();
        let sups = procs::children_named(master, &comm);
        if sups.is_empty() {
            say(&format!(
                "{what} changed, but the daemon group is not running"
            ));
            return;
        }
        say(&format!(
            "{what} changed: rolling restart of the daemon processes"
        ));
        for pid in sups {
            procs::signal(pid, libc::SIGHUP);
        }
    } else {
        say(&format!(
            "{what} changed: new nginx workers load the app again"
        ));
        procs::signal(master, libc::SIGHUP);
    }
}

/// Stops nginx (graceful, then firm after QUIT_GRACE or a second Ctrl-C), then waits for every
/// process it started.
fn stop(nginx: &mut Child) {
    if matches!(nginx.try_wait(), Ok(None)) {
        say("stopping");
        procs::signal(nginx.id(), libc::SIGQUIT);
        let stops_before = procs::stops();
        let deadline = Instant::now() + QUIT_GRACE;
        let mut firm = false;
        while matches!(nginx.try_wait(), Ok(None)) {
            if !firm && (Instant::now() > deadline || procs::stops() > stops_before.max(1)) {
                procs::signal(nginx.id(), libc::SIGTERM);
                firm = true;
            }
            std::thread::sleep(TICK);
        }
    }
    let killed = procs::reap_all(REAP_GRACE);
    if killed > 0 {
        say(&format!(
            "{killed} process(es) did not stop in time and were killed"
        ));
    }
}

fn join(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Used by `--setup-only` too.
pub fn setup_only(site: &Site, dir: &Path) -> Result<(), String> {
    let module_file = preflight::module_file(site)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    setup::make_enterable(dir)?;
    preflight::readable(site, module_file, dir)?;
    let layout = Layout {
        dir: dir.to_path_buf(),
        logs: Logs::Files,
    };
    setup::write(site, &layout)?;
    setup::write_ctl(site, &layout)?;
    setup::check(site, &layout)?;
    let ctl = dir.join("nginxctl");
    say(&format!(
        "wrote {} and {} (serving {} on {})",
        layout.conf().display(),
        ctl.display(),
        site.app_name(),
        site.url()
    ));
    say(&format!("start: {} start    stop: {0} stop", ctl.display()));
    say(&format!(
        "systemd: ExecStart={} foreground, ExecReload={0} reload",
        ctl.display()
    ));
    Ok(())
}
