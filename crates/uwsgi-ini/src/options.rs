//! Which uWSGI options rwsgi-worker honours, and how. Three kinds:
//!
//! - **mapped**: the option has an rwsgi-worker equivalent and is translated;
//! - **accepted**: it asks for what rwsgi-worker always does (a master process, threads
//!   enabled, the socket removed at exit...), so it changes nothing, as long as it is not
//!   turned off (`master = false` asks for something rwsgi-worker cannot do, and is reported);
//! - **refused**: everything else, with a sentence saying why or what to do instead.
//!
//! Every refused line is reported, all of them in one error; nothing is silently ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::values::{self, truthy};
use crate::{App, AppSource, IniConfig, Protocol, Socket};

/// What a line asks for, once its key is looked up.
pub enum Meaning {
    Mapped,
    Accepted,
    Refused(String),
}

/// Options that change nothing because rwsgi-worker always behaves so (when true).
const ACCEPTED: &[(&str, &str)] = &[
    ("master", "a supervisor process always manages the workers"),
    ("vacuum", "the socket file is always removed at exit"),
    ("die-on-term", "SIGTERM always stops gracefully"),
    ("enable-threads", "Python threads always work"),
    (
        "thunder-lock",
        "one accept queue is shared without a thundering herd",
    ),
    (
        "single-interpreter",
        "each worker runs every app in its main interpreter",
    ),
    ("lazy-apps", "each worker loads the apps itself, after fork"),
    ("lazy", "each worker loads the apps itself, after fork"),
    (
        "manage-script-name",
        "SCRIPT_NAME is always stripped from PATH_INFO",
    ),
    ("strict", "unknown options are always refused"),
    (
        "harakiri-verbose",
        "a request-timeout kill is always logged (RW006)",
    ),
    ("disable-logging", "there is no per-request log"),
    (
        "buffer-size",
        "uwsgi packets up to 65,535 bytes are always accepted",
    ),
];

/// Refused option families, matched by prefix, with what to do instead.
const REFUSED_PREFIXES: &[(&str, &str)] = &[
    ("http", HTTP),
    ("https", HTTP),
    (
        "pidfile",
        "rwsgi-worker writes no pid file: run it under systemd or another service manager",
    ),
    (
        "daemonize",
        "rwsgi-worker stays in the foreground: let the service manager run it",
    ),
    ("log", LOG),
    ("req-log", LOG),
    (
        "stats",
        "there is no stats server; the RW log lines report workers and timeouts",
    ),
    ("static", "serve static files from nginx or Apache"),
    ("check-static", "serve static files from nginx or Apache"),
    ("touch-", "reload with SIGHUP (a rolling restart) instead"),
    (
        "py-autoreload",
        "reload with SIGHUP (a rolling restart) instead",
    ),
    (
        "py-auto-reload",
        "reload with SIGHUP (a rolling restart) instead",
    ),
    (
        "python-autoreload",
        "reload with SIGHUP (a rolling restart) instead",
    ),
    (
        "python-auto-reload",
        "reload with SIGHUP (a rolling restart) instead",
    ),
    (
        "cheaper",
        "rwsgi-worker runs a fixed number of processes (processes =)",
    ),
    (
        "reload-on-",
        "memory limits are not supported; max-requests recycles workers",
    ),
    (
        "evil-reload-on-",
        "memory limits are not supported; max-requests recycles workers",
    ),
    (
        "max-worker-lifetime",
        "not supported; max-requests recycles workers",
    ),
    (
        "max-requests-delta",
        "each worker already adds up to 10% to max-requests",
    ),
    ("attach-", "run it as a service of its own"),
    ("smart-attach-", "run it as a service of its own"),
    ("spooler", UWSGI_API),
    ("mule", UWSGI_API),
    ("cron", UWSGI_API),
    ("cache", UWSGI_API),
    ("sharedarea", UWSGI_API),
    ("route", "routing belongs to nginx or Apache"),
    (
        "add-header",
        "response headers belong to the app, nginx or Apache",
    ),
    (
        "emperor",
        "run one rwsgi-worker per app under your service manager",
    ),
    ("hook-", "uWSGI hooks are not supported"),
    ("if-", LOGIC),
    (
        "post-buffering",
        "wsgi.input streams the body; nginx (uwsgi_request_buffering) and Apache buffer it",
    ),
    (
        "offload-threads",
        "file responses already go out with sendfile(2)",
    ),
    ("procname", "use --display-name"),
    ("auto-procname", "use --display-name"),
];

/// Single options refused with a specific reason.
const REFUSED_NAMES: &[(&str, &str)] = &[
    (
        "need-app",
        "rwsgi-worker keeps running when the app fails to import: requests get a 500 \
                  with the traceback logged (RW021), and the next request retries the import",
    ),
    (
        "umask",
        "set the umask in the service manager (systemd: UMask=)",
    ),
    ("chdir2", "use chdir (before the apps load)"),
    (
        "cpu-affinity",
        "set it in the service manager (systemd: CPUAffinity=)",
    ),
    ("memory-report", "not available"),
    (
        "import",
        "import the module from the application's own code",
    ),
    (
        "pyimport",
        "import the module from the application's own code",
    ),
    (
        "py-import",
        "import the module from the application's own code",
    ),
    (
        "python-import",
        "import the module from the application's own code",
    ),
    (
        "shared-import",
        "import the module from the application's own code",
    ),
    (
        "shared-pyimport",
        "import the module from the application's own code",
    ),
    (
        "paste",
        "load the Paste app from a wsgi.py file (wsgi-file)",
    ),
    (
        "paste-logger",
        "load the Paste app from a wsgi.py file (wsgi-file)",
    ),
    ("eval", "put the code in a wsgi.py file (wsgi-file)"),
    (
        "py-tracebacker",
        "not available; tracebacks of failing requests are logged",
    ),
    ("wsgi-disable-file-wrapper", "not available"),
    (
        "max-fd",
        "set it in the service manager (systemd: LimitNOFILE=)",
    ),
    (
        "reuse-port",
        "not available: one socket is shared by all workers",
    ),
    ("so-keepalive", "not available"),
    ("ignore-sigpipe", "not available"),
    ("ignore-write-errors", "not available"),
    ("disable-write-exception", "not available"),
    ("set", "not available"),
    (
        "py-call-osafterfork",
        "not needed: each worker starts its own interpreter after fork; remove it",
    ),
];

const HTTP: &str = "rwsgi-worker speaks uwsgi, SCGI and FastCGI, not HTTP: put nginx \
                    (uwsgi_pass, scgi_pass, fastcgi_pass) or Apache (mod_proxy_uwsgi, \
                    mod_proxy_scgi, mod_proxy_fcgi) in front of it and use socket = (or \
                    scgi-socket =, fastcgi-socket =)";
const LOG: &str = "rwsgi-worker logs to standard error and keeps no request log; collect it there";
const UWSGI_API: &str = "needs uWSGI's own `uwsgi` Python API, which rwsgi-worker does not provide";
const LOGIC: &str = "uWSGI config logic (if-*/for/endif) is not supported";

/// uWSGI's config logic keys besides the `if-` family.
const LOGIC_KEYS: &[&str] = &[
    "for",
    "for-glob",
    "for-times",
    "for-readline",
    "endfor",
    "end-for",
    "endif",
    "end-if",
    "end",
    "else",
];

/// Every option [`Builder::apply_mapped`] translates (checked by a test).
const MAPPED: &[&str] = &[
    "socket",
    "uwsgi-socket",
    "scgi-socket",
    "fastcgi-socket",
    "protocol",
    "chdir",
    "module",
    "wsgi",
    "wsgi-file",
    "file",
    "callable",
    "mount",
    "processes",
    "workers",
    "threads",
    "home",
    "virtualenv",
    "venv",
    "pyhome",
    "pythonpath",
    "python-path",
    "pp",
    "env",
    "uid",
    "gid",
    "chmod-socket",
    "chown-socket",
    "max-requests",
    "harakiri",
    "listen",
    "socket-timeout",
    "worker-reload-mercy",
    "reload-mercy",
];

/// Keys that load other config files.
const INCLUDES: &[&str] = &[
    "ini", "include", "inherit", "yaml", "yml", "json", "xml", "config",
];

/// The section's options, applied in order; cross-checks happen in [`Builder::finish`].
pub struct Builder<'c> {
    pub config: IniConfig,
    cwd: &'c Path,
    /// Where relative paths start: the file's (last) `chdir`, else the current directory.
    base: PathBuf,
    /// (line, value, protocol); `None` for a plain `socket` line, whose protocol is `protocol =`.
    sockets: Vec<(usize, String, Option<Protocol>)>,
    protocol: Option<Protocol>,
    default_app: Option<(usize, AppSource, Option<String>)>,
    mounts: Vec<(String, AppSource, Option<String>)>,
    callable: Option<String>,
    graceful: (Option<Duration>, Option<Duration>),
}

impl<'c> Builder<'c> {
    /// `chdir` is the section's `chdir` value if it has one: uWSGI changes directory before it
    /// binds sockets and loads apps, whatever the order of the lines, so every relative path
    /// starts there.
    pub fn new(cwd: &'c Path, chdir: Option<&str>) -> Self {
        Builder {
            config: IniConfig::default(),
            cwd,
            base: chdir.map_or_else(|| cwd.to_path_buf(), |dir| cwd.join(dir)),
            sockets: Vec::new(),
            protocol: None,
            default_app: None,
            mounts: Vec::new(),
            callable: None,
            graceful: (None, None),
        }
    }

    /// Applies one line. `Ok(Meaning::Refused(..))` for an option rwsgi-worker cannot honour,
    /// `Err` for a value it cannot use.
    pub fn apply(&mut self, line: usize, key: &str, value: &str) -> Result<Meaning, String> {
        if self.apply_mapped(line, key, value)? {
            return Ok(Meaning::Mapped);
        }
        if let Some((_, what)) = ACCEPTED.iter().find(|(name, _)| *name == key) {
            if key == "buffer-size" {
                values::number::<u64>(value)?;
            } else if !truthy(value) {
                return Ok(Meaning::Refused(format!("cannot be turned off: {what}")));
            }
            self.config.accepted.push(key.to_owned());
            return Ok(Meaning::Accepted);
        }
        if matches!(key, "plugins" | "plugin") {
            return Ok(self.plugins(value));
        }
        Ok(Meaning::Refused(refusal(key)))
    }

    /// The mapped options; `Ok(false)` when `key` is not one.
    fn apply_mapped(&mut self, line: usize, key: &str, value: &str) -> Result<bool, String> {
        let base = self.base.clone();
        let c = &mut self.config;
        match key {
            "socket" => self.sockets.push((line, value.to_owned(), None)),
            "uwsgi-socket" => self
                .sockets
                .push((line, value.to_owned(), Some(Protocol::Uwsgi))),
            "scgi-socket" => self
                .sockets
                .push((line, value.to_owned(), Some(Protocol::Scgi))),
            "fastcgi-socket" => {
                self.sockets
                    .push((line, value.to_owned(), Some(Protocol::FastCgi)))
            }
            "protocol" => {
                self.protocol = Some(match value {
                    "uwsgi" => Protocol::Uwsgi,
                    "scgi" => Protocol::Scgi,
                    "fastcgi" => Protocol::FastCgi,
                    "http" | "https" => return Err(HTTP.into()),
                    _ => return Err(format!("expected uwsgi, scgi or fastcgi, got {value:?}")),
                })
            }
            "chdir" => c.chdir = Some(values::path(value, self.cwd)?),
            "module" | "wsgi" => {
                let (name, callable) = values::module(value)?;
                self.set_default_app(line, AppSource::Module(name), callable)?;
            }
            "wsgi-file" | "file" => {
                self.set_default_app(line, AppSource::Script(values::path(value, &base)?), None)?
            }
            "callable" => {
                if !crate::is_identifier(value) {
                    return Err(format!("expected a Python name, got {value:?}"));
                }
                self.callable = Some(value.to_owned());
            }
            "mount" => {
                let (prefix, source, callable) = values::mount(value, &base)?;
                self.mounts.push((prefix, source, callable));
            }
            "processes" | "workers" => c.processes = values::positive(value)?,
            "threads" => c.threads = values::positive(value)?,
            "home" | "virtualenv" | "venv" | "pyhome" => {
                c.python_home = Some(values::path(value, &base)?)
            }
            "pythonpath" | "python-path" | "pp" => {
                if value.contains(['*', '?', '[']) {
                    return Err("glob patterns are not supported; list each directory".into());
                }
                c.python_path.push(values::path(value, &base)?);
            }
            "env" => match value.split_once('=') {
                Some((name, v))
                    if !name.is_empty() && !name.contains('\0') && !v.contains('\0') =>
                {
                    c.env.push((name.to_owned(), v.to_owned()))
                }
                _ => return Err(format!("expected NAME=VALUE, got {value:?}")),
            },
            "uid" => c.user = Some(non_empty(value)?),
            "gid" => c.group = Some(non_empty(value)?),
            "chmod-socket" => c.socket_mode = Some(values::socket_mode(value)?),
            "chown-socket" => c.socket_owner = Some(socket_owner(value)?),
            "max-requests" => c.maximum_requests = values::number(value)?,
            "harakiri" => c.request_timeout = seconds(value)?,
            "listen" => c.listen_backlog = Some(values::positive(value)?),
            "socket-timeout" => {
                c.socket_timeout = Some(values::positive(value).map(Duration::from_secs)?)
            }
            "worker-reload-mercy" => self.graceful.0 = seconds(value)?,
            "reload-mercy" => self.graceful.1 = seconds(value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn set_default_app(
        &mut self,
        line: usize,
        source: AppSource,
        callable: Option<String>,
    ) -> Result<(), String> {
        if let Some((first, _, _)) = &self.default_app {
            return Err(format!(
                "line {first} already names the application (module/wsgi-file); keep one"
            ));
        }
        self.default_app = Some((line, source, callable));
        Ok(())
    }

    /// `plugins = python3` is how Debian's packaged uWSGI loads Python; rwsgi-worker has it built
    /// in. Any other plugin is something rwsgi-worker does not have.
    fn plugins(&mut self, value: &str) -> Meaning {
        let others: Vec<&str> = value
            .split([',', ' '])
            .filter(|p| !p.is_empty() && !p.starts_with("python"))
            .collect();
        if others.is_empty() {
            self.config.accepted.push("plugins".into());
            return Meaning::Accepted;
        }
        Meaning::Refused(format!(
            "uWSGI plugins {} are not available",
            others.join(", ")
        ))
    }

    /// Cross-option results: the socket and its protocol, the apps and their callable. Returns
    /// the config and the (line, key, message) problems found here.
    pub fn finish(mut self) -> (IniConfig, Vec<(usize, String, String)>) {
        let mut problems = Vec::new();
        let base = self.base.clone();
        match self.sockets.as_slice() {
            [] => {}
            [(line, value, protocol)] => {
                let protocol = protocol.or(self.protocol).unwrap_or(Protocol::Uwsgi);
                match values::address(value, &base) {
                    Ok(address) => self.config.socket = Some(Socket { protocol, address }),
                    Err(e) => problems.push((*line, "socket".into(), e)),
                }
            }
            [_, rest @ ..] => {
                for (line, _, _) in rest {
                    problems.push((
                        *line,
                        "socket".into(),
                        "rwsgi-worker listens on one socket".into(),
                    ));
                }
            }
        }
        let callable = self
            .callable
            .take()
            .unwrap_or_else(|| "application".to_owned());
        if let Some((_, source, own)) = self.default_app.take() {
            self.config.apps.push(App {
                source,
                callable: own.unwrap_or_else(|| callable.clone()),
                mount: None,
            });
        }
        for (prefix, source, own) in self.mounts.drain(..) {
            let mount = (!prefix.is_empty()).then_some(prefix);
            self.config.apps.push(App {
                source,
                callable: own.unwrap_or_else(|| callable.clone()),
                mount,
            });
        }
        self.config.graceful_timeout = self.graceful.0.or(self.graceful.1);
        (self.config, problems)
    }
}

/// Why a key is refused: its own or its family's reason, or a generic sentence.
fn refusal(key: &str) -> String {
    if let Some((_, why)) = REFUSED_NAMES.iter().find(|(name, _)| *name == key) {
        return format!("not supported: {why}");
    }
    if let Some((_, why)) = REFUSED_PREFIXES
        .iter()
        .find(|(prefix, _)| key.starts_with(prefix))
    {
        return format!("not supported: {why}");
    }
    if LOGIC_KEYS.contains(&key) {
        return format!("not supported: {LOGIC}");
    }
    if INCLUDES.contains(&key) {
        return "including other config files is not supported; merge them into this section"
            .into();
    }
    let dashed = key.replace('_', "-");
    if dashed != key && is_known(&dashed) {
        return format!("not an option: uWSGI spells it {dashed} (uWSGI would take {key} as an unused placeholder)");
    }
    "not supported by rwsgi-worker (if it is meant as a %(placeholder), nothing refers to it)"
        .into()
}

/// A key that is none of the options this reader knows of (mapped, accepted or refused by
/// name or family): in uWSGI such a key is a placeholder, and `%(key)` may use it.
pub fn is_placeholder_name(key: &str) -> bool {
    !is_known(key)
        && !matches!(key, "plugins" | "plugin")
        && !REFUSED_NAMES.iter().any(|(name, _)| *name == key)
        && !REFUSED_PREFIXES
            .iter()
            .any(|(prefix, _)| key.starts_with(prefix))
        && !INCLUDES.contains(&key)
        && !LOGIC_KEYS.contains(&key)
}

/// A key this reader maps or accepts.
fn is_known(key: &str) -> bool {
    MAPPED.contains(&key) || ACCEPTED.iter().any(|(name, _)| *name == key)
}

fn non_empty(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("needs a value".into());
    }
    Ok(value.to_owned())
}

/// Whole seconds; 0 turns the timeout off, as in uWSGI.
fn seconds(value: &str) -> Result<Option<Duration>, String> {
    let n: u64 = values::number(value)?;
    Ok((n > 0).then(|| Duration::from_secs(n)))
}

/// `chown-socket = user` or `user:group`. rwsgi-worker gives the socket its owner's primary group,
/// so `user:group` is accepted when the group has the user's name (`www-data:www-data`).
fn socket_owner(value: &str) -> Result<String, String> {
    match value.split_once(':') {
        None => non_empty(value),
        Some((user, group)) if user == group && !user.is_empty() => Ok(user.to_owned()),
        Some(_) => Err(
            "rwsgi-worker gives the socket its owner's primary group: write \
                        chown-socket = USER (or USER:USER)"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mapped_list_is_what_apply_mapped_handles() {
        for name in MAPPED {
            let handled = Builder::new(Path::new("/"), None).apply_mapped(1, name, "x");
            assert_ne!(
                handled,
                Ok(false),
                "{name} is listed as mapped but not handled"
            );
        }
        assert_eq!(
            Builder::new(Path::new("/"), None).apply_mapped(1, "master", "x"),
            Ok(false)
        );
        for (name, _) in ACCEPTED {
            assert!(!MAPPED.contains(name), "{name} is both mapped and accepted");
            assert!(!is_placeholder_name(name));
        }
        assert!(is_placeholder_name("project") && !is_placeholder_name("logto"));
    }

    #[test]
    fn refusals_say_why() {
        assert!(refusal("http-socket").contains("speaks uwsgi, SCGI and FastCGI, not HTTP"));
        assert!(refusal("static-map").contains("nginx or Apache"));
        assert!(refusal("endif").contains("config logic"));
        assert!(
            refusal("force-cwd").starts_with("not supported by rwsgi-worker"),
            "{}",
            refusal("force-cwd")
        );
        assert!(refusal("harakiri_verbose").contains("uWSGI spells it harakiri-verbose"));
        assert!(refusal("ini").contains("merge them"));
    }
}
