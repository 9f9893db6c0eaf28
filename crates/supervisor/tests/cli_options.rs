//! rwsgi-worker's command line, through `supervisor::cli::parse` as the binary calls it: every
//! option, errors naming the option, `--secret-file`, relative python dirs, mounts, the protocol
//! prefix of `--socket`, `--module` and callables, `--chdir`/`--env`, and `--ini` (a real file,
//! the command line overriding it, every refusal in one error).

use std::path::{Path, PathBuf};
use std::time::Duration;

use pyhost::AppSource;
use supervisor::cli::{parse, Command};
use supervisor::{GroupConfig, Protocol, SocketSpec};

fn run(args: &[&str]) -> Result<GroupConfig, String> {
    match parse(args.iter().map(|s| s.to_string()))? {
        Command::Run { cfg, .. } => Ok(*cfg),
        other => Err(format!("{other:?}")),
    }
}

#[test]
fn protocols_prefix_the_socket() {
    let socket = |v: &str| {
        run(&["--socket", v, "--script", "a.py"]).map(|c| (c.protocol, c.socket.to_string()))
    };
    assert_eq!(
        socket("scgi:unix:/run/a.sock"),
        Ok((Protocol::Scgi, "unix:/run/a.sock".to_owned()))
    );
    assert_eq!(
        socket("fcgi:127.0.0.1:9000"),
        Ok((Protocol::FastCgi, "127.0.0.1:9000".to_owned()))
    );
    assert_eq!(
        socket("fastcgi:/run/b.sock"),
        Ok((Protocol::FastCgi, "unix:/run/b.sock".to_owned()))
    );
    assert_eq!(
        socket("uwsgi:[::1]:3031"),
        Ok((Protocol::Uwsgi, "[::1]:3031".to_owned()))
    );
    assert_eq!(
        socket("127.0.0.1:3031"),
        Ok((Protocol::Uwsgi, "127.0.0.1:3031".to_owned()))
    );
    let e = socket("http:127.0.0.1:80").unwrap_err();
    assert!(e.starts_with("--socket: unknown protocol \"http\""), "{e}");
    let e = socket("scgi:fcgi:127.0.0.1:80").unwrap_err();
    assert!(e.starts_with("--socket: unknown protocol \"fcgi\""), "{e}");
    let e = run(&[
        "--socket",
        "fcgi:/x",
        "--script",
        "a.py",
        "--interface",
        "asgi",
    ]);
    assert!(e
        .unwrap_err()
        .starts_with("--interface: asgi serves uwsgi sockets only, not fcgi"));
    let e = socket("scgi:nowhere").unwrap_err();
    assert!(e.contains("after scgi:, fcgi: or uwsgi:"), "{e}");
}

#[test]
fn modules_and_their_callables() {
    let c = run(&["--socket", "unix:/x", "--module", "mysite.wsgi"]).unwrap();
    assert_eq!(c.apps[0].source, AppSource::Module("mysite.wsgi".into()));
    assert_eq!(c.apps[0].callable, "application");
    // A module's own callable wins over --callable, which names the scripts' callable.
    let c = run(&[
        "--socket",
        "unix:/x",
        "--module",
        "m:app",
        "--callable",
        "other",
        "--mount",
        "/s=s.wsgi",
        "--mount",
        "/m=pkg.admin:site",
        "--mount",
        "/f=plain",
    ])
    .unwrap();
    let got: Vec<(Option<&str>, &AppSource, &str)> = c
        .apps
        .iter()
        .map(|a| (a.mount.as_deref(), &a.source, a.callable.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (None, &AppSource::Module("m".into()), "app"),
            (Some("/s"), &AppSource::Script("s.wsgi".into()), "other"),
            (Some("/m"), &AppSource::Module("pkg.admin".into()), "site"),
            (Some("/f"), &AppSource::Script("plain".into()), "other"),
        ]
    );
    // The last of --script and --module is the default app.
    let c = run(&["--socket", "unix:/x", "--module", "m", "--script", "a.py"]).unwrap();
    assert_eq!(c.apps.len(), 1);
    assert_eq!(c.apps[0].source, AppSource::Script("a.py".into()));
    let e = run(&["--socket", "unix:/x", "--module", "my-site.wsgi"]).unwrap_err();
    assert!(
        e.starts_with("--module: expected a dotted module name"),
        "{e}"
    );
    let e = run(&["--socket", "unix:/x", "--module", "m:create_app()"]).unwrap_err();
    assert!(e.contains("application factory"), "{e}");
}

#[test]
fn chdir_and_env() {
    let c = run(&[
        "--socket", "unix:/x", "--script", "a.py", "--chdir", "/tmp", "--env", "A=1", "--env",
        "B=x=y", "--env", "C=",
    ])
    .unwrap();
    assert_eq!(c.chdir.as_deref(), Some(Path::new("/tmp")));
    let env: Vec<(&str, &str)> = c
        .env
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, [("A", "1"), ("B", "x=y"), ("C", "")]);
    let e = run(&["--socket", "unix:/x", "--script", "a.py", "--env", "=1"]).unwrap_err();
    assert!(e.starts_with("--env: expected NAME=VALUE"), "{e}");
    let e = run(&[
        "--socket",
        "unix:/x",
        "--script",
        "a.py",
        "--chdir",
        "/nonexistent/d",
    ])
    .unwrap_err();
    assert!(
        e.starts_with("--chdir: /nonexistent/d is not a directory"),
        "{e}"
    );
}

#[test]
fn an_ini_file_gives_options_that_the_command_line_overrides() {
    let dir = std::env::temp_dir().join(format!("gateway-wire-cli-ini-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("site.ini");
    let text = "[uwsgi]\nchdir = %d\nmodule = site.wsgi\nprocesses = 3\nthreads = 2\n\
                scgi-socket = %dsite.sock\nmaster = true\nvacuum = true\nenv = A=b\n\
                harakiri = 20\nmax-requests = 100\n[other]\nsocket = 127.0.0.1:1\nwsgi-file = x.py\n";
    std::fs::write(&file, text).unwrap();
    let spec = file.to_str().unwrap();
    let c = match parse(["--ini", spec, "--threads", "8"].map(String::from)).unwrap() {
        Command::Run { cfg, ini_note, .. } => {
            let note = ini_note.unwrap();
            assert!(note.ends_with("always runs: master, vacuum"), "{note}");
            *cfg
        }
        other => panic!("{other:?}"),
    };
    assert_eq!((c.processes, c.threads), (3, 8));
    assert_eq!(c.protocol, Protocol::Scgi);
    assert_eq!(c.socket, SocketSpec::Unix(dir.join("site.sock")));
    assert_eq!(c.chdir.as_deref(), Some(&*dir));
    assert_eq!(c.env, [("A".to_owned(), "b".to_owned())]);
    assert_eq!(c.apps[0].source, AppSource::Module("site.wsgi".into()));
    assert_eq!(c.request_timeout, Some(Duration::from_secs(20)));
    assert_eq!(c.maximum_requests, 100);
    // Before --ini, an option is the file's to override.
    let c = run(&["--threads", "8", "--ini", spec]).unwrap();
    assert_eq!(c.threads, 2);
    // A section.
    let c = run(&["--ini", &format!("{spec}:other")]).unwrap();
    assert_eq!(c.socket, SocketSpec::Tcp("127.0.0.1:1".into()));
    // Without chdir, a relative path starts from the current directory, as in uWSGI.
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(c.apps[0].source, AppSource::Script(cwd.join("x.py")));
    // A value the ini reader takes but the worker refuses names the file and the key.
    std::fs::write(
        &file,
        "[uwsgi]\nsocket = /x.sock\nwsgi-file = a.py\nuid = root\n",
    )
    .unwrap();
    let e = run(&["--ini", spec]).unwrap_err();
    assert!(
        e.starts_with(&format!("{spec}: uid (--user): invalid value \"root\"")),
        "{e}"
    );
    // Every unsupported line in one error; http-socket refused with the reason.
    std::fs::write(
        &file,
        "[uwsgi]\nhttp-socket = :8080\nwsgi-file = a.py\npidfile = /run/x.pid\nlogto = /x.log\n",
    )
    .unwrap();
    let e = run(&["--ini", spec]).unwrap_err();
    assert!(e.starts_with("--ini: "), "{e}");
    assert!(e.contains("3 lines rwsgi-worker cannot honour"), "{e}");
    assert!(e.contains("line 2: http-socket: not supported: rwsgi-worker speaks uwsgi, SCGI and FastCGI, not HTTP"), "{e}");
    assert!(
        e.contains("line 4: pidfile") && e.contains("line 5: logto"),
        "{e}"
    );
    std::fs::write(&file, "[uwsgi]\nwsgi-file = a.py\n").unwrap();
    let e = run(&["--ini", spec, "--ini", spec]).unwrap_err();
    assert!(e.contains("one ini file"), "{e}");
    let e = run(&["--ini", spec]).unwrap_err();
    assert!(
        e.contains("--socket is required") && e.contains("has no socket line"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn full_command_line() {
    let c = run(&[
        "--socket=unix:/tmp/x.sock",
        "--script",
        "app.py",
        "--processes",
        "3",
        "--threads=4",
        "--mount",
        "/app/",
        "--python-path",
        "/a:/b",
        "--python-path=/c",
        "--maximum-requests",
        "10",
        "--socket-mode",
        "0660",
        "--request-timeout",
        "2.5",
        "--callable",
        "app",
    ])
    .unwrap();
    assert_eq!(c.processes, 3);
    assert_eq!(c.threads, 4);
    assert_eq!(c.apps[0].mount.as_deref(), Some("/app"));
    assert_eq!(c.apps[0].callable, "app");
    assert_eq!(
        c.python_path,
        vec![PathBuf::from("/a"), "/b".into(), "/c".into()]
    );
    assert_eq!(c.socket_mode, 0o660);
    assert_eq!(c.request_timeout, Some(Duration::from_millis(2500)));
    assert_eq!(c.maximum_requests, 10);
}

#[test]
fn errors_name_the_option() {
    let e = run(&[
        "--socket",
        "unix:/x",
        "--script",
        "a.py",
        "--processes",
        "many",
    ]);
    assert!(e.unwrap_err().starts_with("--processes:"));
    let e = run(&["--socket", "unix:/x"]);
    assert!(e.unwrap_err().contains("--script is required"));
    let e = run(&[
        "--socket",
        "unix:/x",
        "--script",
        "a.py",
        "--frobnicate",
        "1",
    ]);
    assert!(e.unwrap_err().contains("unknown option --frobnicate"));
    let e = run(&["--socket", "unix:/x", "--script"]);
    assert!(e.unwrap_err().contains("needs a value"));
    let e = run(&["--socket", "nowhere", "--script", "a.py"]);
    assert!(e.unwrap_err().starts_with("--socket:"));
    let e = run(&[
        "--socket",
        "unix:/x",
        "--script",
        "a.py",
        "--socket-mode",
        "999",
    ]);
    assert!(e.unwrap_err().starts_with("--socket-mode:"));
    let e = run(&["--socket", "unix:/x", "--script", "a.py", "--threads", "0"]);
    assert!(e.unwrap_err().starts_with("--threads:"));
    assert!(matches!(
        parse(vec!["--help".to_string()]),
        Ok(Command::Help)
    ));
}

#[test]
fn secret_file() {
    let base = [
        "--socket",
        "127.0.0.1:0",
        "--script",
        "a.py",
        "--secret-file",
    ];
    let e = run(&[&base[..], &["/nonexistent/secret"]].concat()).unwrap_err();
    assert!(e.starts_with("--secret-file: /nonexistent/secret:"), "{e}");
    let dir = std::env::temp_dir().join(format!("rwsgi-cli-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s");
    std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let p = path.to_str().unwrap();
    let e = run(&[&base[..], &[p]].concat()).unwrap_err();
    assert!(e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = run(&[&base[..], &[p]].concat()).unwrap();
    assert!(c.secret.is_some_and(|s| s.matches(b"0123456789abcdef0123")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn relative_python_dirs_come_from_the_current_directory() {
    let c = run(&[
        "--socket",
        "unix:/x",
        "--script",
        "a.py",
        "--python-home",
        "venv",
        "--python-path",
        "lib:/abs",
    ])
    .unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(c.python_home, Some(cwd.join("venv")));
    assert_eq!(c.python_path, vec![cwd.join("lib"), PathBuf::from("/abs")]);
    // 0 turns a timeout off, as in mod_wsgi's options.
    let c = run(&[
        "--socket",
        "unix:/x",
        "--script",
        "a.py",
        "--request-timeout",
        "0",
    ])
    .unwrap();
    assert_eq!(c.request_timeout, None);
}

#[test]
fn mount_errors() {
    let e = run(&["--socket", "unix:/x", "--mount", "/a"]);
    assert!(e.unwrap_err().contains("needs --script"));
    let e = run(&["--socket", "unix:/x", "--mount", "/a="]);
    assert!(e.unwrap_err().starts_with("--mount:"));
    let e = run(&[
        "--socket", "unix:/x", "--mount", "/a=a.py", "--mount", "/a/=b.py",
    ]);
    assert!(e.unwrap_err().contains("two scripts mounted at /a"));
    let e = run(&["--socket", "unix:/x"]);
    assert!(e.unwrap_err().contains("--script is required"));
}

#[test]
fn several_mounted_scripts() {
    let c = run(&[
        "--socket",
        "unix:/x",
        "--mount",
        "/a=a.py",
        "--script",
        "root.py",
        "--mount",
        "/b/=b.py",
        "--callable",
        "app",
    ])
    .unwrap();
    let apps: Vec<(Option<&str>, &str, &str)> = c
        .apps
        .iter()
        .map(|a| {
            (
                a.mount.as_deref(),
                a.script_path().unwrap().to_str().unwrap(),
                a.callable.as_str(),
            )
        })
        .collect();
    assert_eq!(
        apps,
        vec![
            (None, "root.py", "app"),
            (Some("/a"), "a.py", "app"),
            (Some("/b"), "b.py", "app")
        ]
    );
    let c = run(&["--socket", "unix:/x", "--mount", "/only=o.py"]).unwrap();
    assert_eq!(c.apps.len(), 1);
    assert_eq!(c.apps[0].mount.as_deref(), Some("/only"));
}
