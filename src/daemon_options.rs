//! `wsgi_daemon_process NAME key=value...`: parsing mod_wsgi's daemon group options.
//!
//! The option names and meanings are mod_wsgi's `WSGIDaemonProcess` ones (DESIGN.md, "Daemon
//! group options"), so a config can move between Apache and nginx. Every error is a sentence
//! naming the option and what is expected; an unknown option is an error, never ignored.

use std::path::PathBuf;
use std::time::Duration;

use crate::conf::AppEntry;

/// Where a group listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAddr {
    /// A unix stream socket (the default: only local users with permission can connect).
    Unix(PathBuf),
    /// `HOST:PORT`.
    Tcp(String),
}

/// One app of a daemon group: the supervisor picks it by the SCRIPT_NAME nginx sends (`mount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupApp {
    pub entry: AppEntry,
    /// The location prefix (SCRIPT_NAME); `None` for `/`, regex and named locations.
    pub mount: Option<String>,
}

/// One declared daemon process group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonGroup {
    pub name: String,
    pub processes: u32,
    pub threads: u32,
    pub python_home: Option<PathBuf>,
    pub python_path: Vec<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    /// 0 = never recycle.
    pub maximum_requests: u64,
    pub request_timeout: Option<Duration>,
    pub graceful_timeout: Duration,
    pub queue_timeout: Option<Duration>,
    pub listen_backlog: u32,
    /// `None` = a unix socket under nginx's prefix, chosen when the group is started.
    pub socket: Option<SocketAddr>,
    pub display_name: Option<String>,
    /// The apps the group serves: the `wsgi_script` of each location that uses the group, with
    /// the location prefix the supervisor routes on (set while locations are merged).
    pub apps: Vec<GroupApp>,
    /// `socket=HOST:PORT` resolved by the master at start-up (workers must not resolve names on
    /// the event loop).
    pub resolved: Option<std::net::SocketAddr>,
}

impl DaemonGroup {
    /// mod_wsgi's defaults (one process, 15 threads, 15 s graceful timeout), except the listen
    /// backlog: 1024 instead of 100, because a full unix-socket backlog makes nginx's
    /// non-blocking connect() fail at once (EAGAIN -> 502) instead of waiting like TCP does.
    pub fn new(name: String) -> Self {
        DaemonGroup {
            name,
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
            listen_backlog: DEFAULT_BACKLOG,
            socket: None,
            display_name: None,
            apps: Vec::new(),
            resolved: None,
        }
    }
}

/// Default `listen-backlog` (see [`DaemonGroup::new`]); the kernel caps it at somaxconn.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Every option `wsgi_daemon_process` accepts, for the "unknown option" message.
pub const OPTIONS: &[&str] = &[
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
];

/// Parses `NAME` and its `key=value` options.
pub fn parse_group(name: &[u8], options: &[&[u8]]) -> Result<DaemonGroup, String> {
    let name = std::str::from_utf8(name).unwrap_or("");
    if name.is_empty()
        || !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "invalid process group name \"{name}\": expected letters, digits, '_', '-' or '.'"
        ));
    }
    let mut group = DaemonGroup::new(name.to_string());
    let mut seen: Vec<String> = Vec::new();
    for raw in options {
        let opt = std::str::from_utf8(raw)
            .map_err(|_| "daemon options must be valid UTF-8".to_string())?;
        let Some((key, value)) = opt.split_once('=') else {
            return Err(format!("invalid option \"{opt}\": expected key=value"));
        };
        if seen.iter().any(|k| k == key) {
            return Err(format!("option \"{key}\" is given twice"));
        }
        apply(&mut group, key, value)?;
        seen.push(key.to_string());
    }
    if group.group.is_some() && group.user.is_none() {
        return Err("option \"group\" needs \"user\" as well".to_string());
    }
    Ok(group)
}

fn apply(g: &mut DaemonGroup, key: &str, value: &str) -> Result<(), String> {
    match key {
        "processes" => g.processes = count(key, value, 1, 1024)? as u32,
        "threads" => g.threads = count(key, value, 1, 1024)? as u32,
        "python-home" => g.python_home = Some(absolute(key, value)?),
        "python-path" => {
            for part in value.split(':').filter(|p| !p.is_empty()) {
                g.python_path.push(absolute(key, part)?);
            }
        }
        "user" => {
            let user = word(key, value)?;
            if user == "root" {
                return Err(
                    "invalid value \"root\" for \"user\": daemons never run as root".into(),
                );
            }
            g.user = Some(user);
        }
        "group" => g.group = Some(word(key, value)?),
        "maximum-requests" => g.maximum_requests = count(key, value, 0, u64::MAX)?,
        "request-timeout" => g.request_timeout = Some(seconds(key, value)?),
        "graceful-timeout" => g.graceful_timeout = seconds_or_zero(key, value)?,
        "queue-timeout" => g.queue_timeout = Some(seconds(key, value)?),
        "listen-backlog" => g.listen_backlog = count(key, value, 1, i32::MAX as u64)? as u32,
        "socket" => g.socket = Some(socket(value)?),
        "display-name" => {
            if value.is_empty() || value.contains('\0') {
                return Err("invalid value for \"display-name\": expected a non-empty name".into());
            }
            g.display_name = Some(value.to_string());
        }
        _ => {
            return Err(format!(
                "unknown option \"{key}\" in wsgi_daemon_process: expected one of {}",
                OPTIONS.join(", ")
            ))
        }
    }
    Ok(())
}

fn count(key: &str, value: &str, min: u64, max: u64) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "invalid value \"{value}\" for \"{key}\": expected a number from {min} to {max}"
        )),
    }
}

fn seconds(key: &str, value: &str) -> Result<Duration, String> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "invalid value \"{value}\" for \"{key}\": expected a positive number of seconds"
        )),
    }
}

fn seconds_or_zero(key: &str, value: &str) -> Result<Duration, String> {
    value.parse::<u64>().map(Duration::from_secs).map_err(|_| {
        format!("invalid value \"{value}\" for \"{key}\": expected a number of seconds")
    })
}

fn absolute(key: &str, value: &str) -> Result<PathBuf, String> {
    if value.starts_with('/') {
        Ok(PathBuf::from(value))
    } else {
        Err(format!(
            "invalid value \"{value}\" for \"{key}\": expected an absolute path"
        ))
    }
}

fn word(key: &str, value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'$'));
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!(
            "invalid value \"{value}\" for \"{key}\": expected a user or group name"
        ))
    }
}

fn socket(value: &str) -> Result<SocketAddr, String> {
    if let Some(path) = value.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!(
                "invalid value \"{value}\" for \"socket\": expected unix:/absolute/path"
            ));
        }
        // sun_path holds 108 bytes including the terminating NUL.
        if path.len() > 107 {
            return Err(
                "invalid value for \"socket\": unix socket path longer than 107 bytes".into(),
            );
        }
        return Ok(SocketAddr::Unix(PathBuf::from(path)));
    }
    match value.rsplit_once(':') {
        Some((_, "0")) => Err(format!(
            "invalid value \"{value}\" for \"socket\": port 0 is not allowed (nginx's workers must know the port)"
        )),
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(SocketAddr::Tcp(value.to_string()))
        }
        _ => Err(format!(
            "invalid value \"{value}\" for \"socket\": expected unix:PATH or HOST:PORT"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, opts: &[&str]) -> Result<DaemonGroup, String> {
        let opts: Vec<&[u8]> = opts.iter().map(|o| o.as_bytes()).collect();
        parse_group(name.as_bytes(), &opts)
    }

    #[test]
    fn every_option() {
        let g = parse(
            "site",
            &[
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
            ],
        )
        .unwrap();
        assert_eq!((g.processes, g.threads), (3, 4));
        assert_eq!(
            g.python_path,
            vec![PathBuf::from("/srv/a"), PathBuf::from("/srv/b")]
        );
        assert_eq!(g.user.as_deref(), Some("nobody"));
        assert_eq!(g.request_timeout, Some(Duration::from_secs(30)));
        assert_eq!(g.socket, Some(SocketAddr::Unix("/run/site.sock".into())));
        assert_eq!(g.display_name.as_deref(), Some("site-wsgi"));
        let tcp = parse("t", &["socket=127.0.0.1:9000"]).unwrap();
        assert_eq!(tcp.socket, Some(SocketAddr::Tcp("127.0.0.1:9000".into())));
    }

    #[test]
    fn defaults_are_mod_wsgi_ones_but_the_backlog() {
        let g = parse("g", &[]).unwrap();
        assert_eq!(
            (g.processes, g.threads, g.listen_backlog),
            (1, 15, DEFAULT_BACKLOG)
        );
        assert_eq!(g.graceful_timeout, Duration::from_secs(15));
    }

    #[test]
    fn mistakes_name_the_option() {
        let cases: &[(&[&str], &str)] = &[
            (&["processes=0"], "\"processes\": expected a number from 1"),
            (&["threads=x"], "\"threads\""),
            (&["bogus=1"], "unknown option \"bogus\""),
            (&["processes"], "expected key=value"),
            (&["python-home=venv"], "expected an absolute path"),
            (&["user=root"], "never run as root"),
            (&["group=www"], "needs \"user\""),
            (&["socket=nowhere"], "expected unix:PATH or HOST:PORT"),
            (&["request-timeout=0"], "positive number of seconds"),
            (&["threads=2", "threads=3"], "given twice"),
        ];
        for (opts, want) in cases {
            let err = parse("g", opts).unwrap_err();
            assert!(err.contains(want), "{opts:?}: {err}");
        }
        assert!(parse("bad name", &[])
            .unwrap_err()
            .contains("invalid process group name"));
    }
}
