//! The `rwsgi-worker` command line, turned into a [`GroupConfig`].
//!
//! Hand-written (no argument-parsing dependency): every option takes one value, given either as
//! `--name VALUE` or `--name=VALUE`. Errors are sentences naming the option; the binary prints
//! them and exits with status 2.
//!
//! `--ini FILE[:SECTION]` reads a uWSGI ini file (`ini.rs` turns it into these same options, at
//! the place of `--ini`), so an option given after it on the command line wins, as in uWSGI.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pyhost::AppSource;
use uwsgi_ini::ModuleSpec;

use crate::config::{AppConfig, GroupConfig, Protocol, SocketSpec};
use crate::ini;
use crate::options::{DaemonOptions, OPTION_NAMES};
use crate::secret::Secret;

const DEFAULT_CALLABLE: &str = "application";

/// The text printed by `--help`.
pub const USAGE: &str = "\
rwsgi-worker: a WSGI and ASGI server for nginx and Apache, speaking uwsgi, SCGI or FastCGI
(nginx uwsgi_pass, scgi_pass, fastcgi_pass; Apache mod_proxy_uwsgi, mod_proxy_scgi, mod_proxy_fcgi)

Usage: rwsgi-worker --socket [PROTO:]unix:PATH|HOST:PORT --script app.py [options]
       rwsgi-worker --socket [PROTO:]unix:PATH|HOST:PORT --module pkg.wsgi[:callable] [options]
       rwsgi-worker --ini uwsgi.ini[:section] [options]

Required:
  --socket [PROTO:]unix:PATH|HOST:PORT
                                 where to listen (a unix socket is the safe default); PROTO is
                                 uwsgi (the default), scgi or fcgi: scgi:unix:/run/app.sock
  --script FILE                  the WSGI script, executed as a module (or use --mount /P=FILE)
  --module PKG.MOD[:CALLABLE]    or: the WSGI module, imported by name (Django: mysite.wsgi)
  --ini FILE[:SECTION]           or: a uWSGI ini file's [uwsgi] section (or [SECTION]) gives
                                 these options; options after it override the file's

Application:
  --callable NAME                callable in the scripts (default: application)
  --interface wsgi|asgi          what the apps speak (default wsgi; asgi: one asyncio loop per
                                 process, uwsgi sockets only)
  --mount /PREFIX                URL prefix of --script/--module: becomes SCRIPT_NAME
  --mount /PREFIX=FILE           one more app, mounted at /PREFIX (repeatable); FILE may be
                                 PKG.MOD:CALLABLE for a module
  --chdir DIR                    directory the workers change to before Python starts
  --env NAME=VALUE               environment variable set before Python starts (repeatable)
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
  --secret-file FILE             serve only requests that carry the file's first line as the
                                 RWSGI_SECRET var (uwsgi_param RWSGI_SECRET \"...\";): on a TCP
                                 socket any local user can connect; the file must be mode 0600

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
    /// pipe closes (for a web server that execs rwsgi-worker for a daemon group). `ini_note`:
    /// the line to log about an `--ini` file's options that change nothing.
    Run {
        cfg: Box<GroupConfig>,
        lifetime_fd: Option<i32>,
        ini_note: Option<String>,
    },
    /// Print [`USAGE`] and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
}

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let (opts, ini) = match read_args(args)? {
        Read::Args(opts, ini) => (opts, ini),
        Read::Done(command) => return Ok(command),
    };
    let mut socket = None;
    let mut app = None;
    let mut lifetime_fd = None;
    let mut rest = Vec::new();
    for opt in opts {
        match opt.name.as_str() {
            "socket" => socket = Some(parse_socket(&opt.value).map_err(|e| opt.error(&e))?),
            "script" => app = Some((AppSource::Script(PathBuf::from(&opt.value)), None)),
            "module" => {
                let spec = ModuleSpec::parse(&opt.value).map_err(|e| opt.error(&e))?;
                app = Some((AppSource::Module(spec.module), spec.callable));
            }
            "lifetime-fd" => {
                lifetime_fd = Some(
                    opt.value
                        .parse::<i32>()
                        .ok()
                        .filter(|fd| *fd > 2)
                        .ok_or_else(|| {
                            opt.error("expected an inherited descriptor number above 2")
                        })?,
                )
            }
            _ => rest.push(opt),
        }
    }
    let (protocol, socket) = socket.ok_or_else(|| match &ini {
        Some(ini) => format!("--socket is required: {} has no socket line", ini.file),
        None => "--socket is required (unix:PATH or HOST:PORT)".to_owned(),
    })?;
    let apps = apps(app, &rest)?;
    let options = daemon_options(&rest)?;
    let mut cfg = options.group_config(
        "rwsgi-worker",
        socket,
        apps,
        &pyhost::PythonConfig::default(),
    );
    cfg.protocol = protocol;
    for opt in &rest {
        if !OPTION_NAMES.contains(&opt.name.as_str()) && !APP_OPTIONS.contains(&opt.name.as_str()) {
            apply(&mut cfg, &opt.name, &opt.value).map_err(|msg| opt.error(&msg))?;
        }
    }
    cfg.validate().map_err(|e| format!("--{e}"))?;
    Ok(Command::Run {
        cfg: Box::new(cfg),
        lifetime_fd,
        ini_note: ini.and_then(|i| ini::accepted_note(&i.file, &i.accepted)),
    })
}

/// One option as given: on the command line, or by a key of the `--ini` file.
struct Opt {
    name: String,
    value: String,
    /// The ini file and the uWSGI key this option comes from, if it does.
    from_ini: Option<(String, &'static str)>,
}

impl Opt {
    /// `--name: message`, or for an option from the ini file, the file and the uWSGI key.
    fn error(&self, message: &str) -> String {
        match &self.from_ini {
            None => format!("--{}: {message}", self.name),
            Some((file, key)) => format!("{file}: {key} (--{}): {message}", self.name),
        }
    }
}

/// What `--ini` read, besides the options.
struct IniRead {
    file: String,
    /// The file's keys that change nothing (for a log line).
    accepted: Vec<String>,
}

enum Read {
    /// The options in order (an `--ini` file's in the place of `--ini`), and the file if any.
    Args(Vec<Opt>, Option<IniRead>),
    /// `--help` or `--version`: nothing else matters.
    Done(Command),
}

/// Splits the arguments into options (`--name VALUE` or `--name=VALUE`), reading `--ini`'s file
/// in its place.
fn read_args<I: IntoIterator<Item = String>>(args: I) -> Result<Read, String> {
    let mut opts = Vec::new();
    let mut ini: Option<IniRead> = None;
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
        if !is_known(&name) {
            return Err(format!("unknown option --{name} (see --help)"));
        }
        if name != "ini" {
            opts.push(Opt {
                name,
                value,
                from_ini: None,
            });
            continue;
        }
        if ini.is_some() {
            return Err("--ini: one ini file per worker".to_owned());
        }
        let config = uwsgi_ini::read(&value).map_err(|e| format!("--ini: {e}"))?;
        for (name, key, option) in ini::options(&config) {
            opts.push(Opt {
                name: name.to_owned(),
                value: option,
                from_ini: Some((value.clone(), key)),
            });
        }
        ini = Some(IniRead {
            file: value,
            accepted: config.accepted,
        });
    }
    Ok(Read::Args(opts, ini))
}

/// `--socket [PROTO:]ADDRESS`.
fn parse_socket(value: &str) -> Result<(Protocol, SocketSpec), String> {
    let (protocol, address) = Protocol::split_prefix(value);
    // `http:127.0.0.1:80` would otherwise be a TCP socket on the host "http:127.0.0.1".
    if let Some((word, _)) = address.split_once(':') {
        let tcp_host = address.rsplit_once(':').map_or("", |(host, _)| host);
        if word != "unix" && !word.starts_with('[') && tcp_host.contains(':') {
            return Err(format!(
                "unknown protocol {word:?}: rwsgi-worker speaks uwsgi, scgi and fcgi \
                 (e.g. scgi:unix:/run/app.sock, fcgi:127.0.0.1:9000)"
            ));
        }
    }
    let socket = SocketSpec::parse(address)
        .map_err(|e| format!("{} (optionally after scgi:, fcgi: or uwsgi:)", e.message))?;
    Ok((protocol, socket))
}

/// The options that name the apps (read by [`apps`]).
const APP_OPTIONS: &[&str] = &["mount", "callable"];

/// The apps: the default app (`--script` or `--module`, at `--mount /PREFIX` if given) and each
/// `--mount /PREFIX=FILE` or `/PREFIX=PKG.MOD:CALLABLE`, as in uWSGI. `--callable` names the
/// callable of every app that does not name its own (a module's `:callable`).
fn apps(
    default: Option<(AppSource, Option<String>)>,
    opts: &[Opt],
) -> Result<Vec<AppConfig>, String> {
    let mut callable = DEFAULT_CALLABLE.to_owned();
    let mut mounted = Vec::new();
    let mut default_mount = None;
    for opt in opts {
        match opt.name.as_str() {
            "callable" => callable = non_empty(&opt.value).map_err(|e| opt.error(&e))?.to_owned(),
            "mount" => match mount(&opt.value).map_err(|e| opt.error(&e))? {
                (prefix, Some(app)) => mounted.push((prefix, app)),
                (prefix, None) => default_mount = Some(prefix),
            },
            _ => {}
        }
    }
    let mut apps = Vec::new();
    let make = |(source, own): (AppSource, Option<String>), mount| AppConfig {
        source,
        callable: own.unwrap_or_else(|| callable.clone()),
        mount,
    };
    match default {
        Some(app) => apps.push(make(app, default_mount.flatten())),
        None if default_mount.is_some() => {
            return Err("--mount /PREFIX without =FILE needs --script or --module".to_owned())
        }
        None => {}
    }
    for (mount, app) in mounted {
        apps.push(make(app, mount));
    }
    if apps.is_empty() {
        return Err(
            "--script is required (the WSGI script file), or --module (the WSGI module)".to_owned(),
        );
    }
    Ok(apps)
}

/// A mounted app: a `.py`/`.wsgi` file, or `PKG.MOD:CALLABLE` (a module with its callable
/// named), else a file, as uWSGI's `mount` decides.
type Mounted = (Option<String>, Option<(AppSource, Option<String>)>);

/// `--mount /PREFIX` or `/PREFIX=APP` (see [`Mounted`]).
fn mount(value: &str) -> Result<Mounted, String> {
    let (prefix, app) = match value.split_once('=') {
        Some((p, a)) if !a.is_empty() => (p, Some(a)),
        Some(_) => return Err("expected /PREFIX or /PREFIX=FILE".to_owned()),
        None => (value, None),
    };
    if !prefix.starts_with('/') {
        return Err("expected a URL prefix starting with /".to_owned());
    }
    let prefix = GroupConfig::normalize_mount(prefix);
    let Some(app) = app else {
        return Ok((prefix, None));
    };
    let is_file = app.ends_with(".py") || app.ends_with(".wsgi") || !app.contains(':');
    let source = match ModuleSpec::parse(app) {
        Ok(spec) if !is_file => (AppSource::Module(spec.module), spec.callable),
        _ => (AppSource::Script(PathBuf::from(app)), None),
    };
    Ok((prefix, Some(source)))
}

/// mod_wsgi's daemon group options go through the parser the web server directives use, so
/// `--threads 0` and `threads=0` get the same answer; the rest are the command line's own.
fn daemon_options(opts: &[Opt]) -> Result<DaemonOptions, String> {
    let mut options = DaemonOptions::default();
    let mut python_path: Vec<String> = Vec::new();
    for opt in opts {
        let name = opt.name.as_str();
        if name == "python-path" {
            // Repeatable: the entries add up.
            python_path.push(from_cwd(&opt.value).map_err(|e| opt.error(&e))?);
        } else if OPTION_NAMES.contains(&name) {
            let value = if name == "python-home" {
                from_cwd(&opt.value).map_err(|e| opt.error(&e))?
            } else {
                opt.value.clone()
            };
            options.apply(name, &value).map_err(|msg| opt.error(&msg))?;
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
    "module",
    "ini",
    "callable",
    "mount",
    "chdir",
    "env",
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
];

fn is_known(name: &str) -> bool {
    OPTIONS.contains(&name)
}

/// The options only the command line has (the daemon group options went to [`DaemonOptions`]).
fn apply(cfg: &mut GroupConfig, name: &str, value: &str) -> Result<(), String> {
    match name {
        "socket-timeout" => cfg.socket_timeout = seconds(value)?,
        "socket-mode" => {
            cfg.socket_mode = u32::from_str_radix(value, 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or("expected octal permission bits, e.g. 0600 or 0660")?
        }
        "socket-owner" => cfg.socket_owner = Some(non_empty(value)?.to_owned()),
        "secret-file" => cfg.secret = Some(Secret::from_file(Path::new(non_empty(value)?))?),
        "chdir" => cfg.chdir = Some(PathBuf::from(from_cwd(non_empty(value)?)?)),
        "env" => match value.split_once('=') {
            Some((n, v)) if !n.is_empty() => cfg.env.push((n.to_owned(), v.to_owned())),
            _ => return Err(format!("expected NAME=VALUE, got {value:?}")),
        },
        _ => return Err("unknown option".into()),
    }
    Ok(())
}

/// Relative paths (`--python-home`, `--python-path`, `--chdir`) are taken from the current
/// directory (a shell user's expectation); the shared option parser wants absolute paths.
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
