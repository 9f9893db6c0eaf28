//! `wsgi_daemon_process NAME key=value...`: the directive's syntax around mod_wsgi's daemon
//! group options.
//!
//! The option names, values and defaults are mod_wsgi's `WSGIDaemonProcess` ones (DESIGN.md,
//! "Daemon group options"), parsed by [`supervisor::DaemonOptions`], the same code Apache's
//! `WSGIDaemonProcess` uses, so a config moves between the two servers. Here: the group name,
//! `key=value` splitting, nginx's stricter rules (no option twice, `group=` needs `user=`) and
//! nginx's larger default backlog. Every error is a sentence naming the option and what is
//! expected; an unknown option is an error, never ignored.

use supervisor::DaemonOptions;

use crate::conf::AppEntry;

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
    /// The `key=value` options (the supervisor crate owns their meaning and defaults).
    /// `options.socket` is `None` until `init_module` fills in the default unix socket.
    pub options: DaemonOptions,
    /// The apps the group serves: the `wsgi_script` of each location that uses the group, with
    /// the location prefix the supervisor routes on (set while locations are merged).
    pub apps: Vec<GroupApp>,
    /// `socket=HOST:PORT` resolved by the master at start-up (workers must not resolve names on
    /// the event loop).
    pub resolved: Option<std::net::SocketAddr>,
}

impl DaemonGroup {
    /// mod_wsgi's defaults, except the listen backlog: 1024 instead of 100, because a full
    /// unix-socket backlog makes nginx's non-blocking connect() fail at once (EAGAIN -> 502)
    /// instead of waiting like TCP does.
    pub fn new(name: String) -> Self {
        DaemonGroup {
            name,
            options: DaemonOptions {
                listen_backlog: DEFAULT_BACKLOG,
                ..DaemonOptions::default()
            },
            apps: Vec::new(),
            resolved: None,
        }
    }
}

/// Default `listen-backlog` (see [`DaemonGroup::new`]); the kernel caps it at somaxconn.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Parses `NAME` and its `key=value` options. nginx is stricter than mod_wsgi about the syntax
/// around the options: an option given twice is an error (not "the last one wins"), and so is
/// `group=` without `user=` (nginx's worker user's group is not a meaningful choice).
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
    let mut seen: Vec<&str> = Vec::new();
    for raw in options {
        let opt = std::str::from_utf8(raw)
            .map_err(|_| "daemon options must be valid UTF-8".to_string())?;
        let Some((key, value)) = opt.split_once('=') else {
            return Err(format!("invalid option \"{opt}\": expected key=value"));
        };
        if seen.contains(&key) {
            return Err(format!("option \"{key}\" is given twice"));
        }
        group.options.apply(key, value)?;
        seen.push(key);
    }
    if group.options.group.is_some() && group.options.user.is_none() {
        return Err("option \"group\" needs \"user\" as well".to_string());
    }
    Ok(group)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use supervisor::SocketSpec;

    use super::*;

    fn parse(name: &str, opts: &[&str]) -> Result<DaemonGroup, String> {
        let opts: Vec<&[u8]> = opts.iter().map(|o| o.as_bytes()).collect();
        parse_group(name.as_bytes(), &opts)
    }

    #[test]
    fn options_reach_the_group() {
        let g = parse(
            "site",
            &[
                "processes=3",
                "python-path=/srv/a:/srv/b",
                "user=nobody",
                "group=nogroup",
                "request-timeout=30",
                "socket=unix:/run/site.sock",
            ],
        )
        .unwrap();
        assert_eq!(g.name, "site");
        assert_eq!(g.options.processes, 3);
        assert_eq!(
            g.options.python_path,
            vec![PathBuf::from("/srv/a"), PathBuf::from("/srv/b")]
        );
        assert_eq!(g.options.request_timeout, Some(Duration::from_secs(30)));
        assert_eq!(
            g.options.socket,
            Some(SocketSpec::Unix("/run/site.sock".into()))
        );
    }

    #[test]
    fn defaults_are_mod_wsgi_ones_but_the_backlog() {
        let g = parse("g", &[]).unwrap();
        assert_eq!(
            (
                g.options.processes,
                g.options.threads,
                g.options.listen_backlog
            ),
            (1, 15, DEFAULT_BACKLOG)
        );
        assert_eq!(g.options.graceful_timeout, Duration::from_secs(15));
        let g = parse("g", &["listen-backlog=64"]).unwrap();
        assert_eq!(g.options.listen_backlog, 64);
    }

    #[test]
    fn mistakes_name_the_option() {
        let cases: &[(&[&str], &str)] = &[
            (&["processes=0"], "\"processes\": expected a number from 1"),
            (
                &["bogus=1"],
                "unknown option \"bogus\": expected one of processes",
            ),
            (&["processes"], "expected key=value"),
            (&["user=root"], "never run as root"),
            (&["group=www"], "needs \"user\""),
            (&["socket=127.0.0.1:0"], "port 0 is not allowed"),
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
