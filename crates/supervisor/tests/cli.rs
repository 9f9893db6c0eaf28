//! The rwsgi-worker command line: help, argument errors (exit 2), startup errors (exit 1).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_and_version() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("--socket [PROTO:]unix:PATH|HOST:PORT"),
        "{out}"
    );
    assert!(out.contains("--maximum-requests"), "{out}");
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("rwsgi-worker "));
}

#[test]
fn bad_arguments_exit_2_with_a_sentence() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "--socket is required"),
        (&["--socket", "unix:/tmp/x.sock"], "--script is required"),
        (
            &["--socket", "somewhere", "--script", "a.py"],
            "--socket: expected unix:PATH or HOST:PORT",
        ),
        (
            &[
                "--socket",
                "unix:/tmp/x",
                "--script",
                "a.py",
                "--threads",
                "lots",
            ],
            "--threads: invalid value \"lots\" for \"threads\": expected a number from 1 to 1024",
        ),
        (
            &[
                "--socket",
                "unix:/tmp/x",
                "--script",
                "a.py",
                "--processes",
                "0",
            ],
            "--processes: invalid value \"0\" for \"processes\": expected a number from 1 to 1024",
        ),
        (
            &[
                "--socket",
                "unix:/tmp/x",
                "--script",
                "a.py",
                "--bogus",
                "1",
            ],
            "unknown option --bogus",
        ),
        (
            &[
                "--socket",
                "unix:/tmp/x",
                "--script",
                "a.py",
                "--socket-mode",
                "rw",
            ],
            "--socket-mode: expected octal",
        ),
        (
            &[
                "--socket",
                "unix:/tmp/x",
                "--script",
                "a.py",
                "--user",
                "root",
            ],
            "--user: invalid value \"root\" for \"user\": daemons never run as root",
        ),
        (
            &[
                "--socket",
                "unix:/tmp/x",
                "--script",
                "a.py",
                "--user",
                "no-such-user-here",
            ],
            "no such user",
        ),
        (
            &[
                "--socket",
                "unix:/tmp/x",
                "--script",
                "a.py",
                "--mount",
                "app",
            ],
            "--mount: expected a URL prefix",
        ),
        (
            &[
                "--socket",
                "unix:/tmp/x",
                "--script",
                "a.py",
                "--request-timeout",
                "soon",
            ],
            "--request-timeout",
        ),
        (&["--script"], "--script needs a value"),
        (&["positional"], "unexpected argument"),
    ];
    for (args, expected) in cases {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(expected),
            "{args:?}: expected {expected:?} in {err:?}"
        );
        assert!(err.starts_with("rwsgi-worker: "), "{err}");
    }
}

#[test]
fn socket_file_handling() {
    let dir = common::TempDir::new();
    let script = dir.path("app.py");
    std::fs::write(&script, common::APP).unwrap();
    // A regular file at the socket path is never replaced.
    let path = dir.path("file.sock");
    std::fs::write(&path, "keep me").unwrap();
    let sock = format!("unix:{}", path.display());
    let (code, _, err) = run(&["--socket", &sock, "--script", script.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");

    // A stale socket (nobody listening) is replaced; the default mode is 0600.
    let dir2 = common::TempDir::new();
    drop(std::os::unix::net::UnixListener::bind(dir2.path("s.sock")).unwrap());
    assert!(dir2.path("s.sock").exists());
    let s = common::Server::start_with(
        dir2,
        common::APP,
        &["--processes", "1", "--threads", "1"],
        1,
    );
    let mode = std::fs::metadata(&s.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(s.get("/x").status_line, "HTTP/1.1 200 OK");

    // A live socket is not stolen by a second server.
    let sock = format!("unix:{}", s.socket.display());
    let (code, _, err) = run(&["--socket", &sock, "--script", script.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("in use"), "{err}");
    assert_eq!(s.get("/x").status_line, "HTTP/1.1 200 OK");
}

#[test]
fn socket_mode_and_display_name() {
    let s = common::Server::start(
        &[
            "--processes",
            "1",
            "--threads",
            "1",
            "--socket-mode",
            "0660",
            "--display-name",
            "rw-test-app",
        ],
        1,
    );
    let mode = std::fs::metadata(&s.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", s.pid())).unwrap();
    assert_eq!(comm.trim(), "rw-test-app");
    s.wait_log_count("rw-test-app[", 1, Duration::from_secs(5));
    let worker_pid = s.get("/pid").text();
    let comm = std::fs::read_to_string(format!("/proc/{worker_pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "rw-test-app");
}

#[test]
fn workers_drop_to_the_configured_user() {
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to switch users");
        return;
    }
    let s = common::Server::start(
        &["--processes", "1", "--threads", "1", "--user", "nobody"],
        1,
    );
    let worker_pid = s.get("/pid").text();
    let status = std::fs::read_to_string(format!("/proc/{worker_pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
    };
    let nobody = "65534";
    assert_eq!(field("Uid:"), vec![nobody; 4], "{status}");
    assert_eq!(field("Gid:"), vec![nobody; 4], "{status}");
    assert!(!field("Groups:").contains(&"0"), "{status}");
}

#[test]
fn socket_owner_is_applied() {
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to chown");
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let s = common::Server::start(
        &[
            "--processes",
            "1",
            "--threads",
            "1",
            "--socket-owner",
            "nobody",
        ],
        1,
    );
    assert_eq!(std::fs::metadata(&s.socket).unwrap().uid(), 65534);
}

#[test]
fn switching_users_without_root_is_a_config_error() {
    use std::os::unix::process::CommandExt;
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to start the binary as another user");
        return;
    }
    let out = Command::new(common::bin())
        .args([
            "--socket",
            "unix:/tmp/never.sock",
            "--script",
            "/tmp/never.py",
            "--user",
            "nobody",
        ])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--user: switching users needs a supervisor started as root"),
        "{err}"
    );
}
