//! mod_wsgi's daemon group options (`processes=2 threads=15 python-home=/srv/venv ...`): the one
//! vocabulary behind nginx's `wsgi_daemon_process` and Apache's `WSGIDaemonProcess`.
//!
//! The web server modules own only their directive syntax (the group name, how options are
//! split, whether an option may be repeated, what they say about an option they do not know) and
//! the server-specific defaults (socket path, worker user, nginx's larger backlog). What each
//! option means, which values it takes, mod_wsgi's defaults and the sentence for a bad value live
//! here, so a config moves between the two servers and gets the same answer from both.

use std::ffi::CString;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{AppConfig, GroupConfig, Interface, SocketSpec, MAX_UNIX_PATH};

/// Every option [`DaemonOptions::apply`] accepts, in the order the docs list them.
pub const OPTION_NAMES: &[&str] = &[
    "processes",
    "threads",
    "python-home",
    "python-path",
    "user",
    "group",
    "maximum-requests",
    "request-timeout",
    "graceful-timeout",
    "queue-timeout",
    "listen-backlog",
    "socket",
    "display-name",
    "interface",
];

/// The most processes or threads a group may ask for ([`GroupConfig::validate`] agrees).
const MAX_COUNT: u64 = 1024;

/// mod_wsgi's `display-name` placeholder for "(wsgi:GROUP)".
const GROUP_PLACEHOLDER: &str = "%{GROUP}";

/// The options of one daemon process group, as written in the web server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonOptions {
    /// `processes=N`: worker processes.
    pub processes: u32,
    /// `threads=N`: request threads per worker.
    pub threads: u32,
    /// `python-home=DIR`; `None` = the server-level Python home.
    pub python_home: Option<PathBuf>,
    /// `python-path=DIR[:DIR]`; empty = the server-level Python path.
    pub python_path: Vec<PathBuf>,
    /// `user=U`; `None` = the web server decides (its worker user, as mod_wsgi does).
    pub user: Option<String>,
    /// `group=G`; `None` = the user's primary group.
    pub group: Option<String>,
    /// `maximum-requests=N`; 0 = never recycle.
    pub maximum_requests: u64,
    /// `request-timeout=SECS`; `None` (or 0 written) = no limit.
    pub request_timeout: Option<Duration>,
    /// `graceful-timeout=SECS`.
    pub graceful_timeout: Duration,
    /// `queue-timeout=SECS`; `None` (or 0 written) = no limit.
    pub queue_timeout: Option<Duration>,
    /// `listen-backlog=N`.
    pub listen_backlog: u32,
    /// `socket=unix:PATH|HOST:PORT`; `None` = a unix socket the web server chooses.
    pub socket: Option<SocketSpec>,
    /// `display-name=NAME`, as written (`%{GROUP}` is expanded by [`DaemonOptions::group_config`]).
    pub display_name: Option<String>,
    /// `interface=wsgi|asgi`: what the group's apps speak.
    pub interface: Interface,
}

impl Default for DaemonOptions {
    /// mod_wsgi's defaults: one process of 15 threads, no recycling, no request or queue
    /// timeout, 15 s to finish in-flight requests, a listen backlog of 100.
    fn default() -> Self {
        DaemonOptions {
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
            listen_backlog: 100,
            socket: None,
            display_name: None,
            interface: Interface::Wsgi,
        }
    }
}

impl DaemonOptions {
    /// Sets one `key=value` option. A later value replaces an earlier one (mod_wsgi's rule).
    /// The error is one sentence naming the option and saying what is expected.
    pub fn apply(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "processes" => self.processes = count(key, value, 1, MAX_COUNT)? as u32,
            "threads" => self.threads = count(key, value, 1, MAX_COUNT)? as u32,
            "python-home" => self.python_home = Some(absolute(key, value)?),
            "python-path" => {
                self.python_path = value
                    .split(':')
                    .filter(|p| !p.is_empty())
                    .map(|p| absolute(key, p))
                    .collect::<Result<_, _>>()?
            }
            "user" => self.user = Some(account(key, value, Account::User)?),
            "group" => self.group = Some(account(key, value, Account::Group)?),
            "maximum-requests" => self.maximum_requests = count(key, value, 0, u64::MAX)?,
            "request-timeout" => self.request_timeout = parse_timeout(key, value)?,
            "graceful-timeout" => self.graceful_timeout = seconds(key, value)?,
            "queue-timeout" => self.queue_timeout = parse_timeout(key, value)?,
            "listen-backlog" => self.listen_backlog = count(key, value, 1, i32::MAX as u64)? as u32,
            "socket" => self.socket = Some(socket(value)?),
            "display-name" => {
                if value.is_empty() || CString::new(value).is_err() {
                    return Err(
                        "invalid value for \"display-name\": expected a non-empty name".into(),
                    );
                }
                self.display_name = Some(value.to_owned());
            }
            "interface" => {
                self.interface = Interface::parse(value).ok_or_else(|| {
                    format!("invalid value \"{value}\" for \"interface\": expected wsgi or asgi")
                })?
            }
            _ => {
                return Err(format!(
                    "unknown option \"{key}\": expected one of {}",
                    OPTION_NAMES.join(", ")
                ))
            }
        }
        Ok(())
    }

    /// The process name of group `name`: `display-name`, with mod_wsgi's `%{GROUP}` expanded to
    /// `(wsgi:NAME)`.
    pub fn display_name_for(&self, name: &str) -> Option<String> {
        self.display_name.as_ref().map(|d| {
            if d == GROUP_PLACEHOLDER {
                format!("(wsgi:{name})")
            } else {
                d.clone()
            }
        })
    }

    /// The supervisor configuration of group `name` serving `apps`: these options, over the
    /// server-level Python settings (`python-home`/`python-path` not given = the server's, as in
    /// mod_wsgi) and the web server's `default_socket`. `user`/`group` are copied as written;
    /// the web server fills in its own worker user when `user=` is absent.
    pub fn group_config(
        &self,
        name: &str,
        default_socket: SocketSpec,
        apps: Vec<AppConfig>,
        server_python: &pyhost::PythonConfig,
    ) -> GroupConfig {
        let socket = self.socket.clone().unwrap_or(default_socket);
        let mut cfg = GroupConfig::new(socket, PathBuf::new());
        cfg.apps = apps;
        cfg.processes = self.processes;
        cfg.threads = self.threads;
        cfg.python_home = self
            .python_home
            .clone()
            .or_else(|| server_python.python_home.clone());
        cfg.python_path = if self.python_path.is_empty() {
            server_python.python_path.clone()
        } else {
            self.python_path.clone()
        };
        cfg.user = self.user.clone();
        cfg.group = self.group.clone();
        cfg.maximum_requests = self.maximum_requests;
        cfg.request_timeout = self.request_timeout;
        cfg.graceful_timeout = self.graceful_timeout;
        cfg.queue_timeout = self.queue_timeout;
        cfg.listen_backlog = self.listen_backlog;
        cfg.display_name = self.display_name_for(name);
        cfg.interface = self.interface;
        cfg
    }
}

fn count(key: &str, value: &str, min: u64, max: u64) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "invalid value \"{value}\" for \"{key}\": expected a number from {min} to {max}"
        )),
    }
}

/// Seconds, whole as mod_wsgi writes them or fractional (`0.5`) as the command line allows.
fn seconds(key: &str, value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            format!("invalid value \"{value}\" for \"{key}\": expected a number of seconds")
        })
}

/// mod_wsgi's timeouts: a number of seconds, 0 meaning "no timeout" (its default). Also what
/// Apache's `WSGIRequestTimeout` takes, so the embedded and the daemon spelling agree.
pub fn parse_timeout(key: &str, value: &str) -> Result<Option<Duration>, String> {
    match seconds(key, value) {
        Ok(d) if d.is_zero() => Ok(None),
        Ok(d) => Ok(Some(d)),
        Err(e) => Err(format!("{e} (0 = no timeout)")),
    }
}

/// The daemons start with `/` as their working directory, so a relative path would not mean
/// what its author expects.
fn absolute(key: &str, value: &str) -> Result<PathBuf, String> {
    if value.starts_with('/') {
        Ok(PathBuf::from(value))
    } else {
        Err(format!(
            "invalid value \"{value}\" for \"{key}\": expected an absolute path"
        ))
    }
}

/// What `user=` or `group=` names.
#[derive(Clone, Copy)]
enum Account {
    User,
    Group,
}

/// `user=` / `group=`: a name as `useradd` accepts them (`$` for Samba machine accounts) or a
/// numeric id, and never root's (uid or gid 0), however it is written: `0`, `00`, `root`, or a
/// name that resolves to id 0. A name is looked up now, so `nginx -t` / `apache2 -t` refuse root
/// by any name; a name that does not resolve is accepted (the account may be created before the
/// server starts; the group then says so when it starts). Ids that are not ids are refused:
/// `-1` and `4294967295` are `(uid_t)-1`, which `setuid(2)` reads as "no change".
fn account(key: &str, value: &str, kind: Account) -> Result<String, String> {
    let invalid = |why: &str| format!("invalid value \"{value}\" for \"{key}\": {why}");
    let root = match kind {
        Account::User => "daemons never run as root (uid 0)",
        Account::Group => "daemons never run with root's group (gid 0)",
    };
    if !value.is_empty() && value.bytes().all(|c| c.is_ascii_digit()) {
        return match value.parse::<u32>() {
            Ok(0) => Err(invalid(root)),
            Ok(u32::MAX) | Err(_) => Err(invalid(
                "expected a name or a numeric id from 1 to 4294967294",
            )),
            Ok(_) => Ok(value.to_owned()),
        };
    }
    let name_ok = !value.is_empty()
        && !value.starts_with('-')
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'$'));
    if !name_ok {
        return Err(invalid("expected a user or group name, or a numeric id"));
    }
    let id = match kind {
        Account::User => crate::privs::lookup_user(value).ok().map(|u| u.uid),
        Account::Group => crate::privs::lookup_group(value).ok(),
    };
    if value == "root" || id == Some(0) {
        return Err(invalid(root));
    }
    Ok(value.to_owned())
}

/// `unix:/absolute/path` or `HOST:PORT`. Stricter than [`SocketSpec::parse`] (which serves the
/// command line): no bare path, and no port 0, since the web server's workers must know the
/// port to connect to.
fn socket(value: &str) -> Result<SocketSpec, String> {
    if let Some(path) = value.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!(
                "invalid value \"{value}\" for \"socket\": expected unix:/absolute/path"
            ));
        }
        if path.len() > MAX_UNIX_PATH {
            return Err(format!(
                "invalid value for \"socket\": unix socket path longer than {MAX_UNIX_PATH} bytes"
            ));
        }
        return Ok(SocketSpec::Unix(PathBuf::from(path)));
    }
    match value.rsplit_once(':') {
        Some((host, "0")) if !host.is_empty() => Err(format!(
            "invalid value \"{value}\" for \"socket\": port 0 is not allowed (the web server's workers must know the port)"
        )),
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(SocketSpec::Tcp(value.to_owned()))
        }
        _ => Err(format!(
            "invalid value \"{value}\" for \"socket\": expected unix:PATH or HOST:PORT"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(opts: &[&str]) -> Result<DaemonOptions, String> {
        let mut o = DaemonOptions::default();
        for opt in opts {
            let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
            o.apply(k, v)?;
        }
        Ok(o)
    }

    #[test]
    fn every_option() {
        let o = parse(&[
            "processes=3",
            "threads=4",
            "python-home=/srv/venv",
            "python-path=/srv/a:/srv/b",
            "user=nobody",
            "group=nogroup",
            "maximum-requests=1000",
            "request-timeout=30",
            "graceful-timeout=5",
            "queue-timeout=10",
            "listen-backlog=64",
            "socket=unix:/run/site.sock",
            "display-name=site-wsgi",
        ])
        .unwrap();
        assert_eq!((o.processes, o.threads), (3, 4));
        assert_eq!(o.python_home, Some(PathBuf::from("/srv/venv")));
        assert_eq!(
            o.python_path,
            vec![PathBuf::from("/srv/a"), "/srv/b".into()]
        );
        assert_eq!(
            (o.user.as_deref(), o.group.as_deref()),
            (Some("nobody"), Some("nogroup"))
        );
        assert_eq!(o.maximum_requests, 1000);
        assert_eq!(o.request_timeout, Some(Duration::from_secs(30)));
        assert_eq!(o.graceful_timeout, Duration::from_secs(5));
        assert_eq!(o.queue_timeout, Some(Duration::from_secs(10)));
        assert_eq!(o.listen_backlog, 64);
        assert_eq!(o.socket, Some(SocketSpec::Unix("/run/site.sock".into())));
        assert_eq!(o.display_name.as_deref(), Some("site-wsgi"));
        let tcp = parse(&["socket=127.0.0.1:9000"]).unwrap();
        assert_eq!(tcp.socket, Some(SocketSpec::Tcp("127.0.0.1:9000".into())));
    }

    #[test]
    fn mod_wsgi_defaults_and_rules() {
        let o = DaemonOptions::default();
        assert_eq!((o.processes, o.threads, o.listen_backlog), (1, 15, 100));
        assert_eq!(o.graceful_timeout, Duration::from_secs(15));
        // 0 turns a timeout off, as in mod_wsgi.
        let o = parse(&["request-timeout=0", "queue-timeout=0"]).unwrap();
        assert_eq!((o.request_timeout, o.queue_timeout), (None, None));
        let o = parse(&["graceful-timeout=2.5"]).unwrap();
        assert_eq!(o.graceful_timeout, Duration::from_millis(2500));
        // A later value replaces an earlier one.
        let o = parse(&[
            "python-path=/a:/b",
            "python-path=/c",
            "threads=2",
            "threads=3",
        ])
        .unwrap();
        assert_eq!((o.python_path, o.threads), (vec![PathBuf::from("/c")], 3));
    }

    #[test]
    fn mistakes_name_the_option_and_the_expectation() {
        let cases: &[(&str, &str)] = &[
            (
                "processes=0",
                "invalid value \"0\" for \"processes\": expected a number from 1 to 1024",
            ),
            ("threads=x", "\"threads\": expected a number from 1 to 1024"),
            (
                "threads=1025",
                "\"threads\": expected a number from 1 to 1024",
            ),
            (
                "bogus=1",
                "unknown option \"bogus\": expected one of processes, threads",
            ),
            (
                "python-home=venv",
                "\"python-home\": expected an absolute path",
            ),
            (
                "python-path=/a:lib",
                "\"lib\" for \"python-path\": expected an absolute path",
            ),
            ("user=root", "daemons never run as root"),
            ("user=0", "daemons never run as root (uid 0)"),
            ("user=00", "daemons never run as root (uid 0)"),
            ("user=+0", "expected a user or group name"),
            ("user=-1", "expected a user or group name"),
            ("user=4294967295", "numeric id from 1 to 4294967294"),
            ("user=99999999999", "numeric id from 1 to 4294967294"),
            ("group=0", "root's group (gid 0)"),
            ("group=000", "root's group (gid 0)"),
            ("group=root", "root's group (gid 0)"),
            ("user=a b", "expected a user or group name"),
            ("socket=nowhere", "expected unix:PATH or HOST:PORT"),
            ("socket=unix:run.sock", "expected unix:/absolute/path"),
            ("socket=127.0.0.1:0", "port 0 is not allowed"),
            (
                "request-timeout=-1",
                "expected a number of seconds (0 = no timeout)",
            ),
            (
                "graceful-timeout=soon",
                "\"graceful-timeout\": expected a number of seconds",
            ),
            (
                "listen-backlog=0",
                "\"listen-backlog\": expected a number from 1",
            ),
            (
                "display-name=",
                "\"display-name\": expected a non-empty name",
            ),
        ];
        for (opt, want) in cases {
            let err = parse(&[opt]).unwrap_err();
            assert!(err.contains(want), "{opt}: {err}");
        }
        let long = format!("socket=unix:/{}", "x".repeat(200));
        assert!(parse(&[&long])
            .unwrap_err()
            .contains("longer than 107 bytes"));
    }

    #[test]
    fn group_config_inherits_the_server_python_and_expands_group() {
        let python = pyhost::PythonConfig {
            python_home: Some("/srv/server-venv".into()),
            python_path: vec!["/srv/lib".into()],
        };
        let apps = vec![AppConfig::script("/srv/app.py", "application", None)];
        let default_socket = SocketSpec::Unix("/run/g.sock".into());
        let o = parse(&["processes=2", "display-name=%{GROUP}", "request-timeout=9"]).unwrap();
        let cfg = o.group_config("g", default_socket.clone(), apps.clone(), &python);
        assert_eq!(cfg.python_home, python.python_home);
        assert_eq!(cfg.python_path, python.python_path);
        assert_eq!(cfg.socket, default_socket);
        assert_eq!(cfg.processes, 2);
        assert_eq!(cfg.request_timeout, Some(Duration::from_secs(9)));
        assert_eq!(cfg.display_name.as_deref(), Some("(wsgi:g)"));
        assert_eq!(cfg.validate(), Ok(()));
        let o = parse(&["python-home=/v", "python-path=/p", "socket=127.0.0.1:1"]).unwrap();
        let cfg = o.group_config("g", default_socket, apps, &python);
        assert_eq!(cfg.python_home, Some(PathBuf::from("/v")));
        assert_eq!(cfg.python_path, vec![PathBuf::from("/p")]);
        assert_eq!(cfg.socket, SocketSpec::Tcp("127.0.0.1:1".into()));
    }
}
