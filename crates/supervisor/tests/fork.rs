//! `supervisor::fork_supervisor` called the way nginx's master and httpd's parent call it: from
//! a single-threaded process. `harness = false` (Cargo.toml): `main` is this process's only
//! thread, which is the function's contract; the libtest harness would run tests on threads.

mod common;

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use supervisor::listener::Listener;
use supervisor::{
    fork_supervisor, fork_supervisor_with, ForkedSupervisor, GroupConfig, Handoff, SocketSpec,
};

fn main() {
    let tests: [(&str, fn()); 5] = [
        (
            "the_group_serves_and_stops_when_the_pipe_closes",
            the_group_serves_and_stops_when_the_pipe_closes,
        ),
        (
            "a_group_that_cannot_start_prints_its_line_and_exits_1",
            a_group_that_cannot_start_prints_its_line_and_exits_1,
        ),
        (
            "a_panic_in_the_child_never_returns_into_the_caller",
            a_panic_in_the_child_never_returns_into_the_caller,
        ),
        (
            "an_invalid_group_forks_nothing",
            an_invalid_group_forks_nothing,
        ),
        (
            "a_handed_socket_outlives_its_supervisors_and_the_predecessor_goes_when_ready",
            a_handed_socket_outlives_its_supervisors_and_the_predecessor_goes_when_ready,
        ),
    ];
    for (name, test) in tests {
        test();
        println!("test {name} ... ok");
    }
    println!("fork: {} tests passed", tests.len());
}

fn group(dir: &common::TempDir) -> GroupConfig {
    std::fs::write(dir.path("app.py"), common::APP).unwrap();
    let mut cfg = GroupConfig::new(SocketSpec::Unix(dir.path("g.sock")), dir.path("app.py"));
    cfg.processes = 1;
    cfg.threads = 1;
    cfg.graceful_timeout = Duration::from_secs(2);
    cfg
}

/// The child-side hook nginx uses, minus the title: stdout and stderr to a log file.
fn output_to(log: &Path) -> impl FnOnce() {
    let log = log.to_owned();
    move || {
        let file = std::fs::File::create(&log).expect("log file");
        // SAFETY: dup2 onto this (forked, single-threaded) process's own stdout/stderr.
        unsafe {
            libc::dup2(file.as_raw_fd(), 1);
            libc::dup2(file.as_raw_fd(), 2);
        }
    }
}

/// Called right after each fork_supervisor: a child that returned from it would go on running
/// the caller's code (a second master); make that a distinct, loud exit status.
fn still_the_parent(me: u32) {
    if std::process::id() != me {
        // SAFETY: terminating the escaped child.
        unsafe { libc::_exit(99) };
    }
}

/// Waits for the child to exit; its exit code (-1 for a signal), or None after `limit`.
fn wait_exit(pid: libc::pid_t, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child, WNOHANG; status is a valid int.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            return Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            });
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn the_group_serves_and_stops_when_the_pipe_closes() {
    let dir = common::TempDir::new();
    let cfg = group(&dir);
    let log = dir.path("log");
    let me = std::process::id();
    // SAFETY: this process is single-threaded (harness = false).
    let forked =
        unsafe { fork_supervisor(&cfg, output_to(&log), |e| format!("test: group g: {e}")) };
    still_the_parent(me);
    let ForkedSupervisor { pid, lifetime } = forked.expect("forked");
    // SAFETY: F_GETFD only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(lifetime.as_raw_fd(), libc::F_GETFD) };
    assert!(
        flags & libc::FD_CLOEXEC != 0,
        "the write end is close-on-exec"
    );

    let start = Instant::now();
    let response = loop {
        match common::request(&dir.path("g.sock"), &common::vars("GET", "/x"), b"") {
            Ok(r) => break r,
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(20),
                "the group never answered: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        response.text().contains("hello path=/x"),
        "{}",
        response.text()
    );
    // The hook ran in the child: the supervisor's own lines went to its log file.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("RW001"), "log: {text}");

    drop(lifetime);
    assert_eq!(
        wait_exit(pid, Duration::from_secs(10)),
        Some(0),
        "a clean stop once the pipe closed"
    );
    assert!(!dir.path("g.sock").exists(), "the socket is removed");
}

fn a_group_that_cannot_start_prints_its_line_and_exits_1() {
    let dir = common::TempDir::new();
    let mut cfg = group(&dir);
    cfg.user = Some("rwsgi-no-such-user".into());
    let log = dir.path("log");
    let me = std::process::id();
    // SAFETY: single-threaded (harness = false).
    let forked = unsafe {
        fork_supervisor(&cfg, output_to(&log), |e| {
            format!("test: RW-XX032 group g: {e}")
        })
    };
    still_the_parent(me);
    let forked = forked.expect("forked");
    assert_eq!(wait_exit(forked.pid, Duration::from_secs(10)), Some(1));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("test: RW-XX032 group g: user") && text.contains("rwsgi-no-such-user"),
        "log: {text}"
    );
}

fn a_panic_in_the_child_never_returns_into_the_caller() {
    let dir = common::TempDir::new();
    let cfg = group(&dir);
    let log = dir.path("log");
    let me = std::process::id();
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let to_log = output_to(&log);
    // SAFETY: single-threaded (harness = false).
    let forked = unsafe {
        fork_supervisor(
            &cfg,
            move || {
                to_log();
                panic!("the hook failed");
            },
            |e| format!("test: group g: {e}"),
        )
    };
    still_the_parent(me);
    std::panic::set_hook(quiet);
    let forked = forked.expect("forked");
    assert_eq!(
        wait_exit(forked.pid, Duration::from_secs(10)),
        Some(1),
        "exit 1, not 99 (escaped into the caller)"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("test: group g: internal error (panic)"),
        "log: {text}"
    );
}

fn an_invalid_group_forks_nothing() {
    let dir = common::TempDir::new();
    let mut cfg = group(&dir);
    cfg.processes = 0;
    let me = std::process::id();
    // SAFETY: single-threaded (harness = false).
    let forked = unsafe { fork_supervisor(&cfg, || {}, |e| e.to_owned()) };
    still_the_parent(me);
    let err = forked.expect_err("refused");
    assert!(err.contains("processes"), "{err}");
    // SAFETY: waitpid for any child, WNOHANG: ECHILD when there is none.
    let rc = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
    assert_eq!(rc, -1, "no child was forked");
}

/// Waits until the child's group answers on `socket`.
fn answers(socket: &Path) -> String {
    let start = Instant::now();
    loop {
        match common::request(socket, &common::vars("GET", "/x"), b"") {
            Ok(r) => return r.text(),
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(20),
                "the group never answered: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How nginx's keeper uses it: the caller binds the socket and keeps it; a supervisor adopts it,
/// serves, and leaves the file when it stops; the next one serves on the same socket; and the
/// lifetime pipe of the group being replaced is closed once the new group has a ready worker.
fn a_handed_socket_outlives_its_supervisors_and_the_predecessor_goes_when_ready() {
    let dir = common::TempDir::new();
    let cfg = group(&dir);
    let listener = Listener::bind(&cfg).expect("bound by the caller");
    let me = std::process::id();
    for round in 0..2 {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the array; checked.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: just created, owned by nobody else.
        let (old_read, old_write) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let log = dir.path(&format!("log{round}"));
        let handoff = Handoff {
            listener: Some(listener.as_fd()),
            predecessor: Some(old_write),
            server: None,
        };
        // SAFETY: this process is single-threaded (harness = false).
        let forked =
            unsafe { fork_supervisor_with(&cfg, handoff, output_to(&log), |e| e.to_owned()) };
        still_the_parent(me);
        let ForkedSupervisor { pid, lifetime } = forked.expect("forked");
        assert!(answers(&dir.path("g.sock")).contains("hello path=/x"));
        // The predecessor's pipe: only the new supervisor held it, and it let go once ready.
        let mut byte = [0u8; 1];
        // SAFETY: a blocking read of one byte into a valid buffer; EOF is what is expected.
        let n = unsafe { libc::read(old_read.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
        assert_eq!(n, 0, "the replaced group's pipe is closed");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(text.contains("RW001"), "log: {text}");
        drop(lifetime);
        assert_eq!(wait_exit(pid, Duration::from_secs(10)), Some(0));
        assert!(
            dir.path("g.sock").exists(),
            "an adopted socket's file stays"
        );
    }
    listener.remove_file();
    assert!(
        !dir.path("g.sock").exists(),
        "the caller removes its own file"
    );
}
