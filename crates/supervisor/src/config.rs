//! The typed configuration of one daemon process group.
//!
//! The same struct is filled by the `rwsgi-worker` command line (see `cli.rs`) and by the nginx
//! `wsgi_daemon_process` / Apache `WSGIDaemonProcess` directives, whose mod_wsgi-style options
//! (`processes=`, `threads=`, `maximum-requests=`...) are parsed once, in `options.rs`.
//! `validate` is the one place that checks the combination, so every front end reports the same
//! sentence for the same mistake.

use std::ffi::CString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// Longest unix socket path: `sun_path` is 108 bytes including the terminating NUL.
pub const MAX_UNIX_PATH: usize = 107;

/// The gateway protocol the listening socket speaks to the front end. uwsgi is what rwsgi's own
/// modules, nginx's `uwsgi_pass` and Apache's `mod_proxy_uwsgi` send; SCGI and FastCGI
/// (responder role) let stock `scgi_pass`/`fastcgi_pass` and `mod_proxy_scgi`/`mod_proxy_fcgi`
/// front the same worker. Each request is served the same way whatever the protocol: only the
/// framing of the request head, the body and the response differs (`proto/`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Protocol {
    #[default]
    Uwsgi,
    Scgi,
    FastCgi,
}

impl Protocol {
    /// The prefix of `--socket` that selects it (`uwsgi:` is optional).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Uwsgi => "uwsgi",
            Protocol::Scgi => "scgi",
            Protocol::FastCgi => "fcgi",
        }
    }

    /// `--socket PROTO:ADDRESS`: the protocol named by a leading `uwsgi:`, `scgi:`, `fcgi:` or
    /// `fastcgi:`, and the address after it; without one, uwsgi and the whole value.
    pub fn split_prefix(value: &str) -> (Protocol, &str) {
        let prefixes = [
            ("uwsgi:", Protocol::Uwsgi),
            ("scgi:", Protocol::Scgi),
            ("fcgi:", Protocol::FastCgi),
            ("fastcgi:", Protocol::FastCgi),
        ];
        for (prefix, protocol) in prefixes {
            if let Some(rest) = value.strip_prefix(prefix) {
                return (protocol, rest);
            }
        }
        (Protocol::Uwsgi, value)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the group listens.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SocketSpec {
    /// A unix stream socket at this path (the default transport: only local users can reach it).
    Unix(PathBuf),
    /// A TCP socket, `HOST:PORT`, resolved at bind time. Port 0 picks a free port (logged).
    Tcp(String),
}

impl SocketSpec {
    /// Parses `unix:PATH`, `HOST:PORT` or `[V6]:PORT`. A bare absolute path is taken as a unix socket.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ConfigError::new(
                    "socket",
                    "unix: needs a path, e.g. unix:/run/app.sock",
                ));
            }
            return Ok(SocketSpec::Unix(PathBuf::from(path)));
        }
        if s.starts_with('/') {
            return Ok(SocketSpec::Unix(PathBuf::from(s)));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(SocketSpec::Tcp(s.to_owned()))
            }
            _ => Err(ConfigError::new(
                "socket",
                format!("expected unix:PATH or HOST:PORT, got {s:?}"),
            )),
        }
    }
}

impl fmt::Display for SocketSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketSpec::Unix(p) => write!(f, "unix:{}", p.display()),
            SocketSpec::Tcp(a) => f.write_str(a),
        }
    }
}

/// The WSGI application a group serves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppConfig {
    /// Its code: a script file executed as a module (mod_wsgi's `WSGIScriptAlias` target, the
    /// web server modules' only kind), or a module imported by name (`rwsgi-worker --module`).
    pub source: pyhost::AppSource,
    /// The callable looked up in it; `application` by default.
    pub callable: String,
    /// A URL prefix served by this app: stripped from PATH_INFO and set as SCRIPT_NAME when the front
    /// end did not send a SCRIPT_NAME itself. Stored without a trailing slash; `None` = mounted at `/`.
    pub mount: Option<String>,
}

impl AppConfig {
    /// The script `script`'s `callable`, mounted at `mount` (`None` = `/`).
    pub fn script(
        script: impl Into<PathBuf>,
        callable: impl Into<String>,
        mount: Option<String>,
    ) -> AppConfig {
        AppConfig {
            source: pyhost::AppSource::Script(script.into()),
            callable: callable.into(),
            mount,
        }
    }

    /// The script file, for a script app.
    pub fn script_path(&self) -> Option<&std::path::Path> {
        self.source.script()
    }

    /// What pyhost loads for this app (the mount is the worker's routing, not pyhost's).
    pub fn spec(&self) -> pyhost::AppSpec {
        pyhost::AppSpec {
            source: self.source.clone(),
            callable: self.callable.clone(),
        }
    }
}

/// The Python interface of an app: `wsgi` (PEP 3333, the default) or `asgi` (ASGI 3.0). The
/// one vocabulary of nginx's `wsgi_interface`, the daemon option `interface=` and
/// rwsgi-worker's `--interface`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Interface {
    #[default]
    Wsgi,
    Asgi,
}

impl Interface {
    /// `wsgi` or `asgi`, as written in a configuration.
    pub fn parse(value: &str) -> Option<Interface> {
        match value {
            "wsgi" => Some(Interface::Wsgi),
            "asgi" => Some(Interface::Asgi),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Wsgi => "wsgi",
            Interface::Asgi => "asgi",
        }
    }
}

/// All daemon options of one process group (DESIGN.md, "Daemon group options").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupConfig {
    /// The group's name (`wsgi_daemon_process NAME`, `WSGIDaemonProcess NAME`; rwsgi-worker:
    /// its display name, else `rwsgi-worker`): the `group` label of its metrics.
    pub name: String,
    /// Which interface the apps speak (`interface=`): WSGI threads, or one asyncio loop.
    pub interface: Interface,
    /// Where to listen.
    pub socket: SocketSpec,
    /// What the socket speaks: uwsgi for every web server module's group; rwsgi-worker's
    /// `--socket scgi:...`/`fcgi:...` choose the others.
    pub protocol: Protocol,
    /// Permission bits of a unix socket (default 0600: only the owner may connect).
    pub socket_mode: u32,
    /// User that owns a unix socket (the front end's worker user); `None` = the supervisor's user.
    pub socket_owner: Option<String>,
    /// `listen(2)` backlog: connections the kernel queues while every worker thread is busy.
    pub listen_backlog: u32,
    /// The applications, at least one. A request goes to the app whose `mount` the front end's
    /// SCRIPT_NAME names, else to the longest mount prefixing PATH_INFO, else to the app without a
    /// mount (or the first). One script per group is the common case; the web server modules put
    /// every script assigned to a group here (an allow-list: the front end selects among them,
    /// it can never name a file to load).
    pub apps: Vec<AppConfig>,
    /// Worker processes.
    pub processes: u32,
    /// Request threads per worker process.
    pub threads: u32,
    /// A virtualenv or prefix for the workers' interpreter.
    pub python_home: Option<PathBuf>,
    /// Extra `sys.path` entries.
    pub python_path: Vec<PathBuf>,
    /// Workers switch to this user after fork (never root).
    pub user: Option<String>,
    /// Workers switch to this group; default: the user's primary group.
    pub group: Option<String>,
    /// A worker exits gracefully after this many requests and is replaced; 0 = never.
    pub maximum_requests: u64,
    /// A worker with a request running longer than this is killed and replaced.
    pub request_timeout: Option<Duration>,
    /// How long a stopping worker may take to finish its in-flight requests before SIGKILL.
    pub graceful_timeout: Duration,
    /// Requests that waited longer than this since the front end received them get 504 without
    /// running the app (needs the front end's `RWSGI_REQUEST_START` var).
    pub queue_timeout: Option<Duration>,
    /// Read/write timeout on a front-end connection (head, body, response).
    pub socket_timeout: Duration,
    /// Process name shown by `ps -o comm` and used as the log prefix.
    pub display_name: Option<String>,
    /// rwsgi-worker `--metrics`: serve the Prometheus endpoint here (the web server modules
    /// serve it themselves and leave this `None`).
    pub metrics: Option<SocketSpec>,
    /// The secret every packet must carry as `RWSGI_SECRET` (`secret.rs`); `None` = no check
    /// (rwsgi-worker without `--secret-file`).
    pub secret: Option<Secret>,
    /// The directory each worker changes to before Python starts (`--chdir`, uWSGI's `chdir`);
    /// `None` = the supervisor's own.
    pub chdir: Option<PathBuf>,
    /// Environment variables each worker sets before Python starts (`--env`, uWSGI's `env`),
    /// in order.
    pub env: Vec<(String, String)>,
}

impl GroupConfig {
    /// A config with mod_wsgi's defaults for everything but the socket and the script.
    pub fn new(socket: SocketSpec, script: PathBuf) -> Self {
        GroupConfig {
            name: "rwsgi-worker".to_owned(),
            interface: Interface::Wsgi,
            socket,
            protocol: Protocol::Uwsgi,
            socket_mode: 0o600,
            socket_owner: None,
            listen_backlog: 100,
            apps: vec![AppConfig::script(script, "application", None)],
            processes: 1,
            threads: 15,
            python_home: None,
            python_path: Vec::new(),
            user: None,
            group: None,
            maximum_requests: 0,
            request_timeout: None,
            graceful_timeout: Duration::from_secs(15),
            queue_timeout: None,
            socket_timeout: Duration::from_secs(60),
            display_name: None,
            metrics: None,
            secret: None,
            chdir: None,
            env: Vec::new(),
        }
    }

    /// Checks the combination; every error names the option and says what is expected.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1024).contains(&self.processes) {
            return Err(ConfigError::new("processes", "expected 1..1024"));
        }
        if !(1..=1024).contains(&self.threads) {
            return Err(ConfigError::new("threads", "expected 1..1024"));
        }
        if self.listen_backlog == 0 || self.listen_backlog > i32::MAX as u32 {
            return Err(ConfigError::new(
                "listen-backlog",
                "expected a positive number",
            ));
        }
        if self.socket_mode > 0o777 {
            return Err(ConfigError::new(
                "socket-mode",
                "expected octal permission bits, e.g. 0600",
            ));
        }
        if let SocketSpec::Unix(p) = &self.socket {
            if p.as_os_str().len() > MAX_UNIX_PATH {
                return Err(ConfigError::new(
                    "socket",
                    format!("unix socket path longer than {MAX_UNIX_PATH} bytes"),
                ));
            }
        }
        if self.apps.is_empty() {
            return Err(ConfigError::new(
                "script",
                "at least one WSGI script is needed",
            ));
        }
        for (i, app) in self.apps.iter().enumerate() {
            if app.callable.is_empty() {
                return Err(ConfigError::new("callable", "must not be empty"));
            }
            if app.mount.as_deref().is_some_and(|m| !m.starts_with('/')) {
                return Err(ConfigError::new(
                    "mount",
                    "expected a URL prefix starting with /",
                ));
            }
            if self.apps[..i].iter().any(|other| other.mount == app.mount) {
                let at = app.mount.as_deref().unwrap_or("/");
                return Err(ConfigError::new(
                    "mount",
                    format!("two scripts mounted at {at}"),
                ));
            }
        }
        if let Some(name) = &self.display_name {
            if CString::new(name.as_str()).is_err() || name.is_empty() {
                return Err(ConfigError::new(
                    "display-name",
                    "must be non-empty, without NUL",
                ));
            }
        }
        // The options refuse root by any name at parse time (NSS included); this catches the
        // spellings of id 0 in a config built some other way.
        let is_root = |v: &str| v == "root" || (!v.is_empty() && v.bytes().all(|c| c == b'0'));
        if self.user.as_deref().is_some_and(is_root) {
            return Err(ConfigError::new("user", "refusing to run workers as root"));
        }
        if self.group.as_deref().is_some_and(is_root) {
            return Err(ConfigError::new(
                "group",
                "refusing to run workers with root's group (gid 0)",
            ));
        }
        if self.group.is_some() && self.user.is_none() {
            return Err(ConfigError::new("group", "needs user as well"));
        }
        if self.request_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "request-timeout",
                "expected a positive number of seconds",
            ));
        }
        if self.queue_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "queue-timeout",
                "expected a positive number of seconds",
            ));
        }
        self.validate_process_setup()
    }

    /// `chdir` and `env`: checked before any worker starts, so a mistake is one clear error
    /// instead of every worker failing its start-up. And the protocol: the ASGI connection
    /// (`asgi/`) reads uwsgi only.
    fn validate_process_setup(&self) -> Result<(), ConfigError> {
        if self.interface == Interface::Asgi && self.protocol != Protocol::Uwsgi {
            return Err(ConfigError::new(
                "interface",
                format!(
                    "asgi serves uwsgi sockets only, not {} (put nginx's uwsgi_pass or Apache's \
                     mod_proxy_uwsgi in front)",
                    self.protocol
                ),
            ));
        }
        if let Some(dir) = &self.chdir {
            if !dir.is_absolute() {
                return Err(ConfigError::new("chdir", "expected an absolute directory"));
            }
            if !dir.is_dir() {
                return Err(ConfigError::new(
                    "chdir",
                    format!("{} is not a directory", dir.display()),
                ));
            }
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                return Err(ConfigError::new(
                    "env",
                    format!("expected NAME=VALUE with a non-empty NAME, got {name:?}"),
                ));
            }
        }
        Ok(())
    }

    /// The name used in log lines and as the process name.
    pub fn log_name(&self) -> &str {
        self.display_name.as_deref().unwrap_or("rwsgi-worker")
    }

    /// Normalises a mount prefix: `/app/` -> `/app`, `/` -> none.
    pub fn normalize_mount(prefix: &str) -> Option<String> {
        let trimmed = prefix.trim_end_matches('/');
        if trimmed.is_empty() {
            None
        } else {
            Some(trimmed.to_owned())
        }
    }
}

/// A configuration mistake: which option, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The option name, as mod_wsgi spells it (`processes`, `socket`...).
    pub option: String,
    /// What is wrong or expected.
    pub message: String,
}

impl ConfigError {
    /// Builds an error for `option`.
    pub fn new(option: &str, message: impl Into<String>) -> Self {
        ConfigError {
            option: option.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.option, self.message)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_specs() {
        assert_eq!(
            SocketSpec::parse("unix:/tmp/a.sock"),
            Ok(SocketSpec::Unix("/tmp/a.sock".into()))
        );
        assert_eq!(
            SocketSpec::parse("/tmp/b.sock"),
            Ok(SocketSpec::Unix("/tmp/b.sock".into()))
        );
        assert_eq!(
            SocketSpec::parse("127.0.0.1:9000"),
            Ok(SocketSpec::Tcp("127.0.0.1:9000".into()))
        );
        assert_eq!(
            SocketSpec::parse("[::1]:0"),
            Ok(SocketSpec::Tcp("[::1]:0".into()))
        );
        assert!(SocketSpec::parse("unix:").is_err());
        assert!(SocketSpec::parse("localhost").is_err());
        assert!(SocketSpec::parse("host:99999").is_err());
        assert!(SocketSpec::parse(":80").is_err());
    }

    #[test]
    fn validation() {
        let base = GroupConfig::new(SocketSpec::Tcp("127.0.0.1:0".into()), "app.py".into());
        assert_eq!(base.validate(), Ok(()));
        let mut c = base.clone();
        c.processes = 0;
        assert_eq!(
            c.validate().map_err(|e| e.option),
            Err("processes".to_owned())
        );
        let mut c = base.clone();
        c.socket = SocketSpec::Unix(PathBuf::from(format!("/{}", "x".repeat(200))));
        assert_eq!(c.validate().map_err(|e| e.option), Err("socket".to_owned()));
        let mut c = base.clone();
        c.user = Some("root".into());
        assert_eq!(c.validate().map_err(|e| e.option), Err("user".to_owned()));
        let mut c = base.clone();
        c.apps[0].mount = Some("app".into());
        assert_eq!(c.validate().map_err(|e| e.option), Err("mount".to_owned()));
        let mut c = base.clone();
        c.apps.push(c.apps[0].clone());
        assert_eq!(c.validate().map_err(|e| e.option), Err("mount".to_owned()));
        c.apps[1].mount = Some("/b".into());
        assert_eq!(c.validate(), Ok(()));
        c.apps.clear();
        assert_eq!(c.validate().map_err(|e| e.option), Err("script".to_owned()));
    }

    #[test]
    fn mount_normalisation() {
        assert_eq!(GroupConfig::normalize_mount("/"), None);
        assert_eq!(GroupConfig::normalize_mount("/app/"), Some("/app".into()));
        assert_eq!(GroupConfig::normalize_mount("/a/b"), Some("/a/b".into()));
    }
}
