//! The `rwsgi-worker` command line, turned into a [`GroupConfig`].
//!
//! Hand-written (no argument-parsing dependency): every option takes one value, given either as
//! `--name VALUE` or `--name=VALUE`. Errors are sentences naming the option; the binary prints
//! them and exits with status 2.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{AppConfig, GroupConfig, SocketSpec};
use crate::options::{DaemonOptions, OPTION_NAMES};
use crate::secret::Secret;

const DEFAULT_CALLABLE: &str = "application";

/// The text printed by `--help`.
pub const USAGE: &str = "\
rwsgi-worker: a WSGI and ASGI server speaking the uwsgi protocol (for nginx uwsgi_pass, Apache mod_proxy_uwsgi)

Usage: rwsgi-worker --socket unix:PATH|HOST:PORT --script app.py [options]

Required:
  --socket unix:PATH|HOST:PORT   where to listen (a unix socket is the safe default)
  --script FILE                  the WSGI script, executed as a module (or use --mount /P=FILE)

Application:
  --callable NAME                callable in the scripts (default: application)
  --interface wsgi|asgi          what the apps speak (default wsgi; asgi: one asyncio loop per process)
  --mount /PREFIX                URL prefix of --script: becomes SCRIPT_NAME, stripped from PATH_INFO
  --mount /PREFIX=FILE           one more app, mounted at /PREFIX (repeatable)
  --python-home DIR              virtualenv or prefix for the interpreter
  --python-path DIR[:DIR]        extra sys.path entries (repeatable)

Processes:
  --processes N                  worker processes (default 1)
  --threads N                    request threads per process (default 15)
  --maximum-requests N           recycle a worker after N requests (default 0: never)
  --request-timeout SECS         kill and replace a worker whose request runs longer
  --graceful-timeout SECS        time to finish in-flight requests on stop (default 15)
  --queue-timeout SECS           answer 504 to requests queued longer (needs RWSGI_REQUEST_START)
  --socket-timeout SECS          I/O timeout on a front-end connection (default 60)
  --user USER                    run workers as this user (never root)
  --group GROUP                  run workers with this group (default: the user's group)
  --display-name NAME            process name and log prefix

Socket:
  --socket-mode OCTAL            unix socket permissions (default 0600)
  --socket-owner USER            owner of the unix socket (the front end's worker user)
  --listen-backlog N             listen(2) backlog (default 100)
  --secret-file FILE             serve only packets that carry the file's first line as the
                                 RWSGI_SECRET var (uwsgi_param RWSGI_SECRET \"...\";): on a TCP
                                 socket any local user can connect; the file must be mode 0600

Metrics:
  --metrics HOST:PORT|unix:PATH  serve Prometheus metrics of all the workers there (GET /metrics)

Embedding:
  --lifetime-fd N                stop gracefully when this inherited pipe closes (web server modules)

Signals: TERM/INT = stop gracefully, HUP = rolling restart of the workers.
  -h, --help                     this text
  -V, --version                  the version
";

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the server with this configuration; with `lifetime_fd`, also stop when that inherited
    /// pipe closes (for a web server that execs rwsgi-worker for a daemon group).
    Run {
        cfg: Box<GroupConfig>,
        lifetime_fd: Option<i32>,
    },
    /// Print [`USAGE`] and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
}

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let args = match read_args(args)? {
        Read::Args(args) => args,
        Read::Done(command) => return Ok(command),
    };
    let socket = args
        .socket
        .ok_or("--socket is required (unix:PATH or HOST:PORT)")?;
    let apps = apps(args.script, &args.opts)?;
    let options = daemon_options(&args.opts)?;
    let mut cfg = options.group_config(
        "rwsgi-worker",
        socket,
        apps,
        &pyhost::PythonConfig::default(),
    );
    for (name, value) in &args.opts {
        if !OPTION_NAMES.contains(&name.as_str()) && name != "mount" {
            apply(&mut cfg, name, value).map_err(|msg| format!("--{name}: {msg}"))?;
        }
    }
    // The metrics' group label: what `ps` shows, when the user named the processes.
    if let Some(name) = &cfg.display_name {
        cfg.name.clone_from(name);
    }
    cfg.validate().map_err(|e| format!("--{e}"))?;
    Ok(Command::Run {
        cfg: Box::new(cfg),
        lifetime_fd: args.lifetime_fd,
    })
}

/// The command line, split into options (before they are interpreted).
struct Args {
    socket: Option<SocketSpec>,
    script: Option<PathBuf>,
    lifetime_fd: Option<i32>,
    /// Every other option, in order, as `(name, value)`.
    opts: Vec<(String, String)>,
}

enum Read {
    Args(Args),
    /// `--help` or `--version`: nothing else matters.
    Done(Command),
}

/// Splits the arguments into options (`--name VALUE` or `--name=VALUE`); `--socket`,
/// `--script` and `--lifetime-fd` are read here, the rest later.
fn read_args<I: IntoIterator<Item = String>>(args: I) -> Result<Read, String> {
    let mut read = Args {
        socket: None,
        script: None,
        lifetime_fd: None,
        opts: Vec::new(),
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Read::Done(Command::Help)),
            "-V" | "--version" => return Ok(Read::Done(Command::Version)),
            _ => {}
        }
        let Some(body) = arg.strip_prefix("--") else {
            return Err(format!(
                "unexpected argument {arg:?} (options start with --; see --help)"
            ));
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n.to_owned(), v.to_owned()),
            None => {
                if !is_known(body) {
                    return Err(format!("unknown option --{body} (see --help)"));
                }
                let Some(v) = it.next() else {
                    return Err(format!("--{body} needs a value"));
                };
                (body.to_owned(), v)
            }
        };
        match name.as_str() {
            "socket" => {
                read.socket = Some(SocketSpec::parse(&value).map_err(|e| format!("--{e}"))?)
            }
            "script" => read.script = Some(PathBuf::from(value)),
            "lifetime-fd" => {
                read.lifetime_fd =
                    Some(
                        value.parse::<i32>().ok().filter(|fd| *fd > 2).ok_or(
                            "--lifetime-fd: expected an inherited descriptor number above 2",
                        )?,
                    )
            }
            n if is_known(n) => read.opts.push((name, value)),
            _ => return Err(format!("unknown option --{name} (see --help)")),
        }
    }
    Ok(Read::Args(read))
}

/// The apps: `--script` (at `--mount /PREFIX` if given) and each `--mount /PREFIX=FILE`, as in
/// uWSGI.
fn apps(script: Option<PathBuf>, opts: &[(String, String)]) -> Result<Vec<AppConfig>, String> {
    let mut mounted = Vec::new();
    let mut script_mount = None;
    for (name, value) in opts.iter().filter(|(n, _)| n == "mount") {
        let (prefix, file) = match value.split_once('=') {
            Some((p, f)) if !f.is_empty() => (p, Some(f)),
            Some(_) => return Err(format!("--{name}: expected /PREFIX or /PREFIX=FILE")),
            None => (value.as_str(), None),
        };
        if !prefix.starts_with('/') {
            return Err(format!("--{name}: expected a URL prefix starting with /"));
        }
        let prefix = GroupConfig::normalize_mount(prefix);
        match file {
            Some(f) => mounted.push((prefix, PathBuf::from(f))),
            None => script_mount = Some(prefix),
        }
    }
    let mut apps = Vec::new();
    match script {
        Some(script) => apps.push(AppConfig {
            script,
            callable: DEFAULT_CALLABLE.to_owned(),
            mount: script_mount.flatten(),
        }),
        None if script_mount.is_some() => {
            return Err("--mount /PREFIX without =FILE needs --script".to_owned())
        }
        None => {}
    }
    for (mount, script) in mounted {
        apps.push(AppConfig {
            script,
            callable: DEFAULT_CALLABLE.to_owned(),
            mount,
        });
    }
    if apps.is_empty() {
        return Err("--script is required (the WSGI script file)".to_owned());
    }
    Ok(apps)
}

/// mod_wsgi's daemon group options go through the parser the web server directives use, so
/// `--threads 0` and `threads=0` get the same answer; the rest are the command line's own.
fn daemon_options(opts: &[(String, String)]) -> Result<DaemonOptions, String> {
    let mut options = DaemonOptions::default();
    let mut python_path: Vec<String> = Vec::new();
    for (name, value) in opts {
        if name == "python-path" {
            python_path.push(from_cwd(value)?); // repeatable: the entries add up
        } else if OPTION_NAMES.contains(&name.as_str()) {
            let value = if name == "python-home" {
                from_cwd(value)?
            } else {
                value.clone()
            };
            options
                .apply(name, &value)
                .map_err(|msg| format!("--{name}: {msg}"))?;
        }
    }
    if !python_path.is_empty() {
        options
            .apply("python-path", &python_path.join(":"))
            .map_err(|msg| format!("--python-path: {msg}"))?;
    }
    Ok(options)
}

const OPTIONS: &[&str] = &[
    "socket",
    "script",
    "callable",
    "mount",
    "python-home",
    "python-path",
    "processes",
    "threads",
    "maximum-requests",
    "request-timeout",
    "graceful-timeout",
    "queue-timeout",
    "socket-timeout",
    "user",
    "group",
    "display-name",
    "interface",
    "socket-mode",
    "socket-owner",
    "listen-backlog",
    "secret-file",
    "lifetime-fd",
    "metrics",
];

fn is_known(name: &str) -> bool {
    OPTIONS.contains(&name)
}

/// The options only the command line has (the daemon group options went to [`DaemonOptions`]).
fn apply(cfg: &mut GroupConfig, name: &str, value: &str) -> Result<(), String> {
    match name {
        "callable" => {
            let name = non_empty(value)?;
            for app in &mut cfg.apps {
                app.callable = name.to_owned();
            }
        }
        "socket-timeout" => cfg.socket_timeout = seconds(value)?,
        "socket-mode" => {
            cfg.socket_mode = u32::from_str_radix(value, 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or("expected octal permission bits, e.g. 0600 or 0660")?
        }
        "socket-owner" => cfg.socket_owner = Some(non_empty(value)?.to_owned()),
        "metrics" => {
            cfg.metrics = Some(SocketSpec::parse(value).map_err(|e| e.message)?);
        }
        "secret-file" => cfg.secret = Some(Secret::from_file(Path::new(non_empty(value)?))?),
        _ => return Err("unknown option".into()),
    }
    Ok(())
}

/// Relative `--python-home`/`--python-path` entries are taken from the current directory (a
/// shell user's expectation); the shared option parser wants absolute paths.
fn from_cwd(value: &str) -> Result<String, String> {
    let parts: Result<Vec<String>, String> = value
        .split(':')
        .map(|part| {
            if part.is_empty() || part.starts_with('/') {
                return Ok(part.to_owned());
            }
            std::path::absolute(part)
                .map(|p| p.to_string_lossy().into_owned())
                .map_err(|e| format!("cannot make {part:?} absolute: {e}"))
        })
        .collect();
    Ok(parts?.join(":"))
}

fn non_empty(v: &str) -> Result<&str, String> {
    if v.is_empty() {
        Err("needs a non-empty value".into())
    } else {
        Ok(v)
    }
}

/// Seconds, whole or fractional (`2`, `0.5`).
fn seconds(v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("expected a number of seconds, got {v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<GroupConfig, String> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Command::Run { cfg, .. } => Ok(*cfg),
            other => Err(format!("{other:?}")),
        }
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
        assert_eq!(
            (c.name.as_str(), c.metrics.as_ref()),
            ("rwsgi-worker", None)
        );
    }

    #[test]
    fn metrics_endpoint_and_group_name() {
        let c = run(&[
            "--socket=127.0.0.1:9000",
            "--script=a.py",
            "--metrics=127.0.0.1:9100",
            "--display-name=shop",
        ])
        .unwrap();
        assert_eq!(c.metrics, Some(SocketSpec::Tcp("127.0.0.1:9100".into())));
        assert_eq!(c.name, "shop");
        let c = run(&[
            "--socket=unix:/x",
            "--script=a.py",
            "--metrics",
            "unix:/run/m.sock",
        ])
        .unwrap();
        assert_eq!(c.metrics, Some(SocketSpec::Unix("/run/m.sock".into())));
        let e = run(&["--socket=unix:/x", "--script=a.py", "--metrics", "nowhere"]);
        assert!(e.unwrap_err().starts_with("--metrics:"));
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
                    a.script.to_str().unwrap(),
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
}
