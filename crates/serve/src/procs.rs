//! Processes: the signals `rwsgi serve` reacts to, starting nginx so that nothing can outlive
//! us, and finding or reaping what nginx started.
//!
//! `rwsgi serve` makes itself a child subreaper (prctl(2)): when nginx's master exits, whatever
//! it leaves behind (a daemon group's supervisor still draining, its workers) is re-parented to
//! us instead of init, so we can wait for every one of them before saying "stopped".

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How many SIGINT/SIGTERM/SIGHUP arrived (the first stops gracefully, the second at once).
static STOPS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_stop(_sig: libc::c_int) {
    // Atomics are async-signal-safe; the main loop polls the counter.
    STOPS.fetch_add(1, Ordering::Relaxed);
}

/// SIGINT (Ctrl-C), SIGTERM (systemd, kill) and SIGHUP (the terminal closed) ask us to stop, so
/// each ends with nginx stopped and the private directory removed; SIGPIPE is ignored so a closed
/// terminal turns into write errors, not a death that would skip that.
pub fn install_signals() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: an all-zero sigaction is a valid start (empty mask); the handler only touches
        // an atomic. No SA_RESTART: a sleep is cut short so a stop is seen at once.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: sa is initialised; a null old-action pointer is allowed.
        if unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    Ok(())
}

/// How many stop signals have arrived.
pub fn stops() -> u32 {
    STOPS.load(Ordering::Relaxed)
}

/// Orphaned descendants become our children (see the module doc).
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag; no pointers involved.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Starts nginx in its own process group (a Ctrl-C in the terminal reaches only us, and we stop
/// nginx in order) with SIGTERM as its parent-death signal (if we are killed, nginx stops too).
pub fn spawn_nginx(bin: &Path, args: &[String]) -> io::Result<Child> {
    let mut cmd = Command::new(bin);
    cmd.args(args).args(["-g", "daemon off;"]);
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (setpgid, prctl, getppid, kill).
    unsafe {
        cmd.pre_exec(|| {
            let parent = libc::getppid();
            if libc::setpgid(0, 0) != 0
                || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // We may have died between fork and prctl: then nobody would send the signal.
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), libc::SIGTERM);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Sends `sig` to `pid`; a process already gone is not an error.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid we started (or found among our children) and a valid signal.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// The direct children of `parent` whose name (comm) is `comm`, from /proc.
pub fn children_named(parent: u32, comm: &str) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split at
            // the last ')'.
            let Some((head, tail)) = stat.rsplit_once(')') else {
                return false;
            };
            let name = head.split_once('(').map_or("", |(_, n)| n);
            let ppid = tail
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok());
            name == comm && ppid == Some(parent)
        })
        .collect()
}

/// Our remaining children (re-parented orphans included), from /proc.
fn own_children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let tail = s.rsplit_once(')')?.1.to_owned();
                    tail.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(me)
        })
        .collect()
}

/// Reaps every child until none is left. After `patience` the stragglers get SIGKILL (once;
/// returns how many); a process that does not even die of that is given up on after 5 s more.
pub fn reap_all(patience: Duration) -> usize {
    let deadline = Instant::now() + patience;
    let mut killed = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid(-1) on our own children with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            continue;
        }
        if pid < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            return killed.unwrap_or(0);
        }
        let now = Instant::now();
        if killed.is_none() && now >= deadline {
            let stragglers = own_children();
            for &child in &stragglers {
                signal(child, libc::SIGKILL);
            }
            killed = Some(stragglers.len());
        }
        if now >= deadline + Duration::from_secs(5) {
            return killed.unwrap_or(0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
