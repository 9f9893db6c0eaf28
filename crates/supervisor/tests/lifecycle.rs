//! Process management of rwsgi-worker: respawn, recycling, timeouts, signals.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{request, vars, Server};

#[test]
fn worker_exiting_mid_request_is_replaced_within_a_second() {
    let s = Server::start(&["--processes", "1", "--threads", "2"], 1);
    let before = s.get("/pid").text();
    // The worker dies inside the app: this connection ends without a response.
    let r = request(&s.socket, &vars("GET", "/die"), b"");
    assert!(r.is_err(), "expected no response, got {r:?}");
    let died = Instant::now();
    let r = s.get("/pid");
    let waited = died.elapsed();
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_ne!(r.text(), before, "a new worker answers");
    assert!(
        waited < Duration::from_secs(1),
        "next request took {waited:?}"
    );
    s.wait_log_count(
        "died unexpectedly: exited with status 1",
        1,
        Duration::from_secs(5),
    );
}

#[test]
fn maximum_requests_recycles_the_worker() {
    let s = Server::start(
        &[
            "--processes",
            "1",
            "--threads",
            "1",
            "--maximum-requests",
            "3",
        ],
        1,
    );
    let pids: Vec<String> = (0..7).map(|_| s.get("/pid").text()).collect();
    assert_eq!(pids[0], pids[1]);
    assert_eq!(pids[1], pids[2]);
    assert_ne!(pids[2], pids[3]);
    assert_eq!(pids[3], pids[5]);
    assert_ne!(pids[5], pids[6]);
    s.wait_log_count("RW011", 2, Duration::from_secs(5));
    // Recycling is orderly: never counted as a crash.
    assert_eq!(s.count("RW004"), 0, "{}", s.log());
}

#[test]
fn sigterm_lets_the_in_flight_request_finish() {
    let mut s = Server::start(
        &[
            "--processes",
            "2",
            "--threads",
            "2",
            "--graceful-timeout",
            "10",
        ],
        2,
    );
    let sock = s.socket.clone();
    let slow = std::thread::spawn(move || request(&sock, &vars("GET", "/sleep/1.5"), b""));
    std::thread::sleep(Duration::from_millis(400));
    let stopped = Instant::now();
    s.signal(libc::SIGTERM);
    // New clients are turned away at once (the socket file is gone)...
    std::thread::sleep(Duration::from_millis(200));
    assert!(std::os::unix::net::UnixStream::connect(&s.socket).is_err());
    // ...while the request already running completes.
    let r = slow.join().unwrap().expect("in-flight request completes");
    assert_eq!(r.text(), "slept");
    let status = s
        .wait_exit(Duration::from_secs(5))
        .expect("supervisor exits");
    assert!(status.success(), "{status:?}");
    assert!(stopped.elapsed() < Duration::from_secs(4));
    assert!(!s.socket.exists());
    s.wait_log_count("RW009", 1, Duration::from_secs(5));
}

#[test]
fn graceful_timeout_kills_stragglers() {
    let mut s = Server::start(
        &[
            "--processes",
            "1",
            "--threads",
            "1",
            "--graceful-timeout",
            "1",
        ],
        1,
    );
    let sock = s.socket.clone();
    let slow = std::thread::spawn(move || request(&sock, &vars("GET", "/sleep/30"), b""));
    std::thread::sleep(Duration::from_millis(300));
    let stopped = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s
        .wait_exit(Duration::from_secs(5))
        .expect("supervisor exits");
    assert!(status.success());
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(
        slow.join().unwrap().is_err(),
        "the killed request gets no response"
    );
    s.wait_log_count("RW007", 1, Duration::from_secs(5));
}

const TIMEOUT_1S: [&str; 6] = [
    "--processes",
    "1",
    "--threads",
    "2",
    "--request-timeout",
    "1",
];

#[test]
fn request_timeout_interrupts_python_and_the_worker_lives_on() {
    let s = Server::start(&TIMEOUT_1S, 1);
    let pid = s.get("/pid").text();
    let started = Instant::now();
    let r = request(&s.socket, &vars("GET", "/spin"), b"").expect("a response");
    let took = started.elapsed();
    assert_eq!(r.status_line, "HTTP/1.1 504 Gateway Timeout");
    // The timeout plus at most two watchdog ticks (the exception lands at once).
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(s.get("/pid").text(), pid, "the same worker serves on");
    assert!(s.log().contains("RW-PY040") && s.log().contains("in application"));
    assert_eq!(s.count("RW006"), 0);
}

#[test]
fn request_timeout_in_c_answers_504_and_replaces_the_worker() {
    let s = Server::start(&TIMEOUT_1S, 1);
    let pid = s.get("/pid").text();
    let started = Instant::now();
    let r = request(&s.socket, &vars("GET", "/sleep/20"), b"").expect("a response");
    let took = started.elapsed();
    assert_eq!(r.status_line, "HTTP/1.1 504 Gateway Timeout");
    // time.sleep cannot be interrupted: the timeout, the 2 s grace, then the worker answers.
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(6),
        "{took:?}"
    );
    s.wait_log_count("RW041", 1, Duration::from_secs(1));
    assert_eq!(s.get("/hello").status_line, "HTTP/1.1 200 OK");
    // The retired worker exits once its other thread is idle, without its stuck thread.
    s.wait_log_count("RW042", 1, Duration::from_secs(5));
    assert_ne!(s.get("/pid").text(), pid);
    assert_eq!(
        s.count("RW006"),
        0,
        "the supervisor's backstop was not needed"
    );
}

#[test]
fn a_frozen_worker_is_killed_by_the_supervisors_backstop() {
    let s = Server::start(&TIMEOUT_1S, 1);
    let pid: i32 = s.get("/pid").text().parse().unwrap();
    let socket = s.socket.clone();
    let client = std::thread::spawn(move || request(&socket, &vars("GET", "/sleep/30"), b""));
    std::thread::sleep(Duration::from_millis(500));
    // A worker that cannot act on its own timeouts (here: stopped; in life: a process-wide
    // deadlock): the supervisor kills it once the worker's own 504 is 3 s overdue.
    // SAFETY: pid is the worker that just answered; SIGSTOP only pauses it.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let r = client.join().unwrap();
    assert!(r.is_err(), "{r:?}");
    s.wait_log_count("RW006", 1, Duration::from_secs(1));
    assert_eq!(s.get("/hello").status_line, "HTTP/1.1 200 OK");
}

#[test]
fn sighup_rolling_restart_loses_no_request() {
    let s = Server::start(&["--processes", "2", "--threads", "2"], 2);
    let old: HashSet<String> = (0..20).map(|_| s.get("/pid").text()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (sock, stop, ok) = (s.socket.clone(), stop.clone(), ok.clone());
        clients.push(std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match request(&sock, &vars("GET", "/sleep/0.01"), b"") {
                    Ok(r) if r.text() == "slept" => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures.push(format!("{other:?}")),
                }
            }
            failures
        }));
    }
    for round in 1..=3 {
        s.signal(libc::SIGHUP);
        // Each restart starts 2 new workers, one at a time.
        s.wait_log_count("RW022", 2 + 2 * round, Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "only {} requests",
        ok.load(Ordering::Relaxed)
    );
    let new: HashSet<String> = (0..20).map(|_| s.get("/pid").text()).collect();
    assert!(old.is_disjoint(&new), "old {old:?} new {new:?}");
    assert_eq!(s.count("RW004"), 0, "{}", s.log());
}

#[test]
fn crash_loop_backs_off() {
    let dir = common::TempDir::new();
    let s = Server::start_with(
        dir,
        common::APP,
        &[
            "--processes",
            "2",
            "--threads",
            "1",
            "--python-home",
            "/nonexistent/venv",
        ],
        0,
    );
    std::thread::sleep(Duration::from_secs(3));
    let starts = s.count("RW002");
    // Without back-off this would be hundreds; 100 ms doubling allows about 6 per 3 s.
    assert!((2..=12).contains(&starts), "{starts} starts:\n{}", s.log());
    s.wait_log_count("RW005", 1, Duration::from_secs(5));
    s.wait_log_count("RW020", 1, Duration::from_secs(5));
}

#[test]
fn queue_timeout_answers_504_without_running_the_app() {
    let s = Server::start(
        &["--processes", "1", "--threads", "1", "--queue-timeout", "1"],
        1,
    );
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let mut old = vars("GET", "/hello");
    old.push((
        "RWSGI_REQUEST_START".into(),
        (now_us - 5_000_000).to_string(),
    ));
    let r = request(&s.socket, &old, b"").unwrap();
    assert_eq!(r.status_line, "HTTP/1.1 504 Gateway Timeout");
    let mut fresh = vars("GET", "/hello");
    fresh.push(("RWSGI_REQUEST_START".into(), format!("t={now_us}")));
    assert_eq!(
        request(&s.socket, &fresh, b"").unwrap().status_line,
        "HTTP/1.1 200 OK"
    );
    // Only the fresh request and this one reached the app.
    assert_eq!(s.get("/calls").text(), "2");
    s.wait_log_count("RW035", 1, Duration::from_secs(5));
}

fn alive(pid: i32) -> bool {
    // A zombie still has a /proc entry; check its state too.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|st| !st.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

#[test]
fn workers_die_with_a_killed_supervisor() {
    // As root, also with a user switch: a credential change clears PR_SET_PDEATHSIG, so the
    // worker must set it after dropping privileges.
    // SAFETY: plain getter.
    let root = unsafe { libc::geteuid() } == 0;
    let mut args = vec!["--processes", "2", "--threads", "1"];
    if root {
        args.extend(["--user", "nobody"]);
    }
    let mut s = Server::start(&args, 2);
    let workers: HashSet<i32> = (0..10)
        .map(|_| s.get("/pid").text().parse().unwrap())
        .collect();
    assert!(!workers.is_empty());
    s.signal(libc::SIGKILL);
    s.wait_exit(Duration::from_secs(2))
        .expect("supervisor killed");
    let start = Instant::now();
    while workers.iter().any(|&p| alive(p)) {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "orphaned workers {workers:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn closing_the_lifetime_pipe_stops_the_group() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    let dir = common::TempDir::new();
    std::fs::write(dir.path("app.py"), common::APP).unwrap();
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array; close-on-exec keeps the pipe out of other tests' children.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 returned two fresh descriptors that we now own.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let read_fd = read.as_raw_fd();
    let sock = dir.path("s.sock");
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("--socket")
        .arg(format!("unix:{}", sock.display()))
        .arg("--script")
        .arg(dir.path("app.py"))
        .args(["--processes", "1", "--threads", "1", "--lifetime-fd", "7"])
        .stderr(std::process::Stdio::null());
    // SAFETY: dup2 and fcntl are async-signal-safe; they run in the forked child before exec and
    // give the child fd 7 (without close-on-exec) as its copy of the read end.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec; clear it instead.
            let ok = if read_fd == 7 {
                libc::fcntl(7, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(read_fd, 7) == 7
            };
            if !ok {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let mut child = cmd.spawn().unwrap();
    drop(read);
    let start = Instant::now();
    while request(&sock, &vars("GET", "/x"), b"").is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "server never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(write);
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still running after the pipe closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!sock.exists());
}

#[test]
fn recycled_worker_is_replaced_while_it_finishes() {
    let s = Server::start(
        &[
            "--processes",
            "1",
            "--threads",
            "1",
            "--maximum-requests",
            "1",
        ],
        1,
    );
    let sock = s.socket.clone();
    // The worker accepts its last request: it stops accepting, and the supervisor starts the
    // replacement at once instead of waiting for this slow request to end.
    let slow = std::thread::spawn(move || request(&sock, &vars("GET", "/sleep/2"), b""));
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let r = s.get("/pid");
    let took = started.elapsed();
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert!(
        took < Duration::from_millis(1500),
        "the replacement answered after {took:?}"
    );
    assert_eq!(slow.join().unwrap().unwrap().text(), "slept");
    assert_eq!(s.count("RW004"), 0, "{}", s.log());
}

#[test]
fn inherited_blocked_signals_are_unblocked() {
    use std::os::unix::process::CommandExt;
    // nginx's master blocks SIGCHLD, SIGTERM, SIGHUP... and a supervisor forked from it inherits
    // that mask (exec keeps it too). rwsgi-worker must still react to them.
    let dir = common::TempDir::new();
    std::fs::write(dir.path("app.py"), common::APP).unwrap();
    let sock = dir.path("s.sock");
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("--socket")
        .arg(format!("unix:{}", sock.display()))
        .arg("--script")
        .arg(dir.path("app.py"))
        .args(["--processes", "1", "--threads", "1"])
        .stderr(std::process::Stdio::null());
    // SAFETY: sigfillset/sigprocmask are async-signal-safe; this runs in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::sigprocmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
            Ok(())
        })
    };
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let first = loop {
        if let Ok(r) = request(&sock, &vars("GET", "/pid"), b"") {
            break r.text();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "server never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // SIGCHLD must get through: a dead worker is replaced.
    assert!(request(&sock, &vars("GET", "/die"), b"").is_err());
    let second = request(&sock, &vars("GET", "/pid"), b"").unwrap().text();
    assert_ne!(first, second);
    // SIGTERM must get through.
    // SAFETY: our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        if start.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("SIGTERM was ignored");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn repeated_crashes_of_ready_workers_are_not_a_crash_loop() {
    let s = Server::start(&["--processes", "1", "--threads", "1"], 1);
    for round in 0..4 {
        // The worker has been serving for over a second: its death is the request's fault.
        std::thread::sleep(Duration::from_millis(1100));
        assert!(request(&s.socket, &vars("GET", "/die"), b"").is_err());
        let died = Instant::now();
        assert_eq!(s.get("/hello").status_line, "HTTP/1.1 200 OK");
        let waited = died.elapsed();
        assert!(
            waited < Duration::from_secs(1),
            "round {round}: next request took {waited:?}"
        );
    }
    assert_eq!(s.count("RW005"), 0, "{}", s.log());
}

/// An app that kills its process at import (issue 10 case 4): while no worker lives, the
/// supervisor answers 503 itself at once, with Retry-After, instead of leaving the request in
/// the backlog; the crash-loop back-off stays; once the app is fixed a worker starts and the
/// group serves again, without a restart.
#[test]
fn crash_loop_answers_503_until_the_app_is_fixed() {
    let s = common::Server::start_with(
        common::TempDir::new(),
        "import os\nos._exit(3)\n",
        &["--processes", "1", "--threads", "2"],
        0,
    );
    s.wait_log_count("exited with status 3", 1, Duration::from_secs(20));
    let asked = Instant::now();
    let r = s.get("/");
    assert_eq!(r.status_line, "HTTP/1.1 503 Service Unavailable");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    let retry = r
        .headers
        .iter()
        .find(|(k, _)| k == "Retry-After")
        .and_then(|(_, v)| v.parse::<u64>().ok());
    assert!(retry.is_some_and(|n| (1..=10).contains(&n)), "{r:?}");
    s.wait_log_count(
        "RW052 no live worker (last: worker",
        1,
        Duration::from_secs(5),
    );
    // Fixed: within the back-off (at most 10 s) a worker starts and serves.
    std::fs::write(s.dir.path("app.py"), common::APP).unwrap();
    s.wait_log_count("RW022", 1, Duration::from_secs(20));
    let started = Instant::now();
    loop {
        let r = s.get("/pid");
        if r.status_line == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    s.wait_log_count("RW053", 1, Duration::from_secs(5));
    // The back-off held: a handful of starts, not a fork storm.
    assert!(s.count("RW002 started worker") < 15, "{}", s.log());
}
