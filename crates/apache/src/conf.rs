//! Typed configuration: what the WSGI* directives mean, independent of httpd's C structs.
//!
//! Two scopes, as in mod_wsgi:
//! - [`ServerConf`]: one per server_rec (main server and each `<VirtualHost>`): script aliases,
//!   daemon groups, and the process-wide settings that only the main server may carry.
//! - [`DirConf`]: per-directory values (`<Directory>`, `<Location>`, `.htaccess`, and the
//!   server-level defaults httpd keeps in `lookup_defaults`), merged by [`DirConf::merge`].
//!
//! Every parser here returns `Err(sentence)`; the directive shim hands that string to httpd,
//! which prints it with the file and line. Nothing unknown is silently accepted.

use std::path::PathBuf;
use std::time::Duration;

use supervisor::{parse_timeout, DaemonOptions, OPTION_NAMES};

/// mod_wsgi's spelling of "the main interpreter" / "run in the Apache child itself".
pub const GLOBAL: &str = "%{GLOBAL}";

/// Where requests for a location run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessGroup {
    /// `%{GLOBAL}` (or the empty string): embedded in the Apache child.
    Embedded,
    /// The name of a `WSGIDaemonProcess` group.
    Daemon(String),
}

impl ProcessGroup {
    pub fn parse(directive: &str, value: &str) -> Result<Self, String> {
        if value.is_empty() || value == GLOBAL {
            return Ok(Self::Embedded);
        }
        if value.starts_with("%{") {
            return Err(format!(
                "{directive}: '{value}' is not supported by mod_rwsgi; use a WSGIDaemonProcess name or %{{GLOBAL}}"
            ));
        }
        Ok(Self::Daemon(value.to_owned()))
    }
}

/// Only the main interpreter exists (sub-interpreters break pyo3-based packages), so the
/// application group must name it: `%{GLOBAL}` or the empty string.
pub fn check_application_group(directive: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value == GLOBAL {
        Ok(())
    } else {
        Err(format!(
            "{directive}: application group '{value}' is not supported: mod_rwsgi runs every app in the \
             main interpreter, so only %{{GLOBAL}} (or an empty value) is accepted"
        ))
    }
}

/// Per-directory settings. `None` = not set here (inherit).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirConf {
    pub process_group: Option<ProcessGroup>,
    pub callable: Option<String>,
    pub pass_authorization: Option<bool>,
    pub chunked_request: Option<bool>,
    /// `WSGIRequestTimeout` / `request-timeout=` (embedded mode); `Some(None)` is `Off`.
    pub request_timeout: Option<Option<Duration>>,
}

impl DirConf {
    /// The one merge rule for every field: a value set in the inner scope wins.
    pub fn merge(parent: &Self, child: &Self) -> Self {
        fn pick<T: Clone>(child: &Option<T>, parent: &Option<T>) -> Option<T> {
            child.clone().or_else(|| parent.clone())
        }
        Self {
            process_group: pick(&child.process_group, &parent.process_group),
            callable: pick(&child.callable, &parent.callable),
            pass_authorization: pick(&child.pass_authorization, &parent.pass_authorization),
            chunked_request: pick(&child.chunked_request, &parent.chunked_request),
            request_timeout: pick(&child.request_timeout, &parent.request_timeout),
        }
    }

    /// Applies the options a `WSGIScriptAlias` line carries; they override directory settings,
    /// as in mod_wsgi.
    pub fn with_alias(&self, alias: &Alias) -> Self {
        Self::merge(self, &alias.options)
    }

    pub fn callable_name(&self) -> &str {
        self.callable.as_deref().unwrap_or("application")
    }

    /// The request timeout of an embedded request here, if any.
    pub fn request_timeout(&self) -> Option<Duration> {
        self.request_timeout.flatten()
    }
}

/// `WSGIRequestTimeout SECS|Off` and `request-timeout=SECS`: seconds (fractions allowed) as
/// the daemon option takes them; 0 or `Off` means none.
pub fn parse_request_timeout(directive: &str, value: &str) -> Result<Option<Duration>, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_timeout("request-timeout", value).map_err(|e| format!("{directive}: {e}, or Off"))
}

/// One `WSGIScriptAlias URL PATH [options]` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alias {
    pub url: String,
    pub script: PathBuf,
    /// process-group= / callable-object= / pass-authorization= given on the line.
    pub options: DirConf,
    /// mod_wsgi preloads the script at process start when both process-group= and
    /// application-group= are given.
    pub preload: bool,
}

impl Alias {
    pub fn parse(args: &[&str]) -> Result<Self, String> {
        const D: &str = "WSGIScriptAlias";
        let [url, script, opts @ ..] = args else {
            return Err(format!(
                "{D} takes a URL path and a script path, then optional key=value options"
            ));
        };
        if !url.starts_with('/') {
            return Err(format!("{D}: the URL path '{url}' must start with '/'"));
        }
        let mut options = DirConf::default();
        let (mut has_group, mut has_app_group) = (false, false);
        for opt in opts {
            let (key, value) = split_option(D, opt)?;
            match key {
                "process-group" => {
                    options.process_group = Some(ProcessGroup::parse(D, value)?);
                    has_group = true;
                }
                "application-group" => {
                    check_application_group(D, value)?;
                    has_app_group = true;
                }
                "callable-object" => options.callable = Some(non_empty(D, key, value)?.to_owned()),
                "pass-authorization" => options.pass_authorization = Some(parse_on_off(D, value)?),
                "request-timeout" => {
                    options.request_timeout = Some(parse_request_timeout(D, value)?)
                }
                _ => return Err(unsupported_option(D, key)),
            }
        }
        if let (Some(Some(_)), Some(ProcessGroup::Daemon(group))) =
            (options.request_timeout, &options.process_group)
        {
            return Err(format!(
                "{D}: request-timeout= applies to embedded mode; requests here go to daemon \
                 group '{group}': set request-timeout= on its WSGIDaemonProcess"
            ));
        }
        Ok(Self {
            url: (*url).to_owned(),
            script: PathBuf::from(script),
            options,
            preload: has_group && has_app_group,
        })
    }
}

/// `WSGIImportScript PATH process-group=G application-group=A`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportScript {
    pub script: PathBuf,
    pub process_group: ProcessGroup,
}

impl ImportScript {
    pub fn parse(args: &[&str]) -> Result<Self, String> {
        const D: &str = "WSGIImportScript";
        let [script, opts @ ..] = args else {
            return Err(format!(
                "{D} takes a script path and process-group=/application-group= options"
            ));
        };
        let (mut group, mut app_group) = (None, false);
        for opt in opts {
            let (key, value) = split_option(D, opt)?;
            match key {
                "process-group" => group = Some(ProcessGroup::parse(D, value)?),
                "application-group" => {
                    check_application_group(D, value)?;
                    app_group = true;
                }
                _ => return Err(unsupported_option(D, key)),
            }
        }
        match (group, app_group) {
            (Some(process_group), true) => Ok(Self {
                script: PathBuf::from(script),
                process_group,
            }),
            _ => Err(format!(
                "{D}: both process-group= and application-group= are required (as in mod_wsgi)"
            )),
        }
    }
}

/// `WSGIDaemonProcess NAME key=value...` (mod_wsgi's option names; see DESIGN.md). The options
/// are parsed by [`DaemonOptions`], the same code nginx's `wsgi_daemon_process` uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonGroup {
    pub name: String,
    pub options: DaemonOptions,
}

impl DaemonGroup {
    pub fn parse(args: &[&str]) -> Result<Self, String> {
        const D: &str = "WSGIDaemonProcess";
        let [name, opts @ ..] = args else {
            return Err(format!("{D} takes a group name, then key=value options"));
        };
        if name.is_empty() || name.contains('=') || name.starts_with("%{") {
            return Err(format!("{D}: '{name}' is not a valid group name"));
        }
        let mut options = DaemonOptions::default();
        for opt in opts {
            let (key, value) = split_option(D, opt)?;
            // Most unknown names are mod_wsgi options this module leaves out (stack-size=,
            // inactivity-timeout=...): say so, rather than "unknown".
            if !OPTION_NAMES.contains(&key) {
                return Err(format!(
                    "{D}: option '{key}' is not supported by mod_rwsgi; the accepted options are {}",
                    OPTION_NAMES.join(", ")
                ));
            }
            options
                .apply(key, value)
                .map_err(|e| format!("{D} {name}: {e}"))?;
        }
        Ok(Self {
            name: (*name).to_owned(),
            options,
        })
    }
}

/// Per-server settings. Process-wide values are only honoured on the main server (the
/// directives that set them are GLOBAL_ONLY).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerConf {
    pub aliases: Vec<Alias>,
    pub daemons: Vec<DaemonGroup>,
    pub imports: Vec<ImportScript>,
    pub python_home: Option<PathBuf>,
    pub python_path: Vec<PathBuf>,
    pub socket_prefix: Option<PathBuf>,
    pub restrict_embedded: Option<bool>,
}

impl ServerConf {
    /// A virtual host sees its own aliases first, then the main server's (mod_wsgi's order);
    /// daemon groups and import scripts stay with the server that declared them.
    pub fn merge(parent: &Self, child: &Self) -> Self {
        let mut aliases = child.aliases.clone();
        aliases.extend(parent.aliases.iter().cloned());
        Self {
            aliases,
            daemons: child.daemons.clone(),
            imports: child.imports.clone(),
            python_home: parent.python_home.clone(),
            python_path: parent.python_path.clone(),
            socket_prefix: parent.socket_prefix.clone(),
            restrict_embedded: parent.restrict_embedded,
        }
    }
}

/// The mod_wsgi directives this module deliberately does not implement. They are registered so
/// that `apachectl -t` fails with a sentence that names them instead of httpd's generic
/// "Invalid command" (or, worse, a config that silently behaves differently).
pub const UNSUPPORTED_DIRECTIVES: &[&str] = &[
    "WSGIScriptAliasMatch",
    "WSGIDispatchScript",
    "WSGIAccessScript",
    "WSGIAuthUserScript",
    "WSGIAuthGroupScript",
    "WSGIAuthHostScript",
    "WSGIHandlerScript",
    "WSGIScriptReloading",
    "WSGILazyInitialization",
    "WSGIPythonOptimize",
    "WSGIPythonEggs",
    "WSGIPythonHashSeed",
    "WSGIPythonWarnings",
    "WSGIRestrictStdin",
    "WSGIRestrictStdout",
    "WSGIRestrictSignal",
    "WSGIRestrictProcess",
    "WSGIAcceptMutex",
    "WSGIVerboseDebugging",
    "WSGIErrorOverride",
    "WSGIMapHEADToGET",
    "WSGITrustedProxyHeaders",
    "WSGITrustedProxies",
    "WSGIDestroyInterpreter",
    "WSGIEnableSendfile",
    "WSGIIgnoreActivity",
    "WSGIApplicationGroupMatch",
    "WSGICaseSensitivity",
    "WSGIDontWriteBytecode",
    "WSGINewHandlerScript",
    "WSGIPythonCompileFlags",
    "WSGICallableObjectMatch",
    "WSGIStartupScriptMatch",
];

pub fn unsupported_directive(name: &str) -> String {
    format!(
        "{name} is a mod_wsgi directive that mod_rwsgi does not support; remove it \
         (see docs/apache/ for the supported directives)"
    )
}

fn unsupported_option(directive: &str, key: &str) -> String {
    format!("{directive}: option '{key}' is not supported by mod_rwsgi (see docs/apache/ for the accepted options)")
}

/// `key=value` -> (key, value); a bare word is an error (mod_wsgi has no flag-style options).
fn split_option<'a>(directive: &str, opt: &'a str) -> Result<(&'a str, &'a str), String> {
    opt.split_once('=')
        .ok_or_else(|| format!("{directive}: expected key=value, found '{opt}'"))
}

fn non_empty<'a>(directive: &str, key: &str, value: &'a str) -> Result<&'a str, String> {
    if value.is_empty() {
        Err(format!("{directive}: {key}= needs a value"))
    } else {
        Ok(value)
    }
}

/// `On`/`Off`, case-insensitive, as httpd's FLAG directives accept.
pub fn parse_on_off(directive: &str, value: &str) -> Result<bool, String> {
    if value.eq_ignore_ascii_case("on") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("off") {
        Ok(false)
    } else {
        Err(format!("{directive}: expected On or Off, found '{value}'"))
    }
}

/// mod_wsgi's python-path and WSGIPythonPath take a ':'-separated list.
pub fn split_path_list(value: &str) -> Vec<PathBuf> {
    value
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// mod_alias-style prefix match used by WSGIScriptAlias: runs of '/' in the alias match runs of
/// '/' in the URI, and the alias must end on a path-segment boundary. Returns how many bytes of
/// `uri` matched (more than the alias length when the URI had doubled slashes).
pub fn alias_match_len(alias: &[u8], uri: &[u8]) -> Option<usize> {
    let (mut a, mut u) = (0, 0);
    while a < alias.len() {
        if alias[a] == b'/' {
            if uri.get(u) != Some(&b'/') {
                return None;
            }
            while alias.get(a) == Some(&b'/') {
                a += 1;
            }
            while uri.get(u) == Some(&b'/') {
                u += 1;
            }
        } else {
            if uri.get(u) != Some(&alias[a]) {
                return None;
            }
            a += 1;
            u += 1;
        }
    }
    let ends_on_slash = alias.last() == Some(&b'/');
    if !ends_on_slash && u < uri.len() && uri[u] != b'/' {
        return None;
    }
    Some(u)
}

/// Collapses runs of '/' into one, as mod_wsgi does for SCRIPT_NAME and PATH_INFO.
pub fn collapse_slashes(s: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !s.windows(2).any(|w| w == b"//") {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    for &b in s {
        if !(b == b'/' && out.last() == Some(&b'/')) {
            out.push(b);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_parses_options_and_rejects_unknown_ones() {
        let a = Alias::parse(&[
            "/app",
            "/srv/app.wsgi",
            "process-group=web",
            "application-group=%{GLOBAL}",
        ])
        .unwrap();
        assert_eq!(
            a.options.process_group,
            Some(ProcessGroup::Daemon("web".into()))
        );
        assert!(a.preload);
        let e = Alias::parse(&["/app", "/srv/app.wsgi", "script-reloading=Off"]).unwrap_err();
        assert!(e.contains("'script-reloading'"), "{e}");
        let e = Alias::parse(&["/app", "/srv/app.wsgi", "application-group=site1"]).unwrap_err();
        assert!(e.contains("site1"), "{e}");
        assert!(Alias::parse(&["/app"]).is_err());
        assert!(Alias::parse(&["app", "/x"]).is_err());
    }

    #[test]
    fn request_timeouts() {
        let a = Alias::parse(&["/app", "/srv/app.wsgi", "request-timeout=2.5"]).unwrap();
        assert_eq!(
            a.options.request_timeout(),
            Some(Duration::from_millis(2500))
        );
        let off = Alias::parse(&["/app", "/srv/app.wsgi", "request-timeout=0"]).unwrap();
        assert_eq!(off.options.request_timeout, Some(None));
        assert_eq!(parse_request_timeout("WSGIRequestTimeout", "Off"), Ok(None));
        let e = parse_request_timeout("WSGIRequestTimeout", "soon").unwrap_err();
        assert!(e.contains("expected a number of seconds"), "{e}");
        let e = Alias::parse(&[
            "/app",
            "/srv/app.wsgi",
            "process-group=web",
            "request-timeout=5",
        ])
        .unwrap_err();
        assert!(e.contains("WSGIDaemonProcess"), "{e}");
        // A directory's Off undoes the server's value; the alias's own value wins over both.
        let server = DirConf {
            request_timeout: Some(Some(Duration::from_secs(9))),
            ..DirConf::default()
        };
        let dir = DirConf {
            request_timeout: Some(None),
            ..DirConf::default()
        };
        assert_eq!(DirConf::merge(&server, &dir).request_timeout(), None);
        assert_eq!(
            DirConf::merge(&server, &dir)
                .with_alias(&a)
                .request_timeout(),
            Some(Duration::from_millis(2500))
        );
    }

    #[test]
    fn daemon_options() {
        let g = DaemonGroup::parse(&[
            "web",
            "processes=2",
            "threads=4",
            "python-path=/a:/b",
            "socket=unix:/run/x.sock",
        ])
        .unwrap();
        assert_eq!(g.name, "web");
        assert_eq!((g.options.processes, g.options.threads), (2, 4));
        assert_eq!(
            g.options.python_path,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
        // mod_wsgi's rule for a repeated option: the last one wins.
        let g = DaemonGroup::parse(&["web", "threads=2", "threads=3"]).unwrap();
        assert_eq!(g.options.threads, 3);
        for (bad, want) in [
            (
                "threads=0",
                "WSGIDaemonProcess web: invalid value \"0\" for \"threads\"",
            ),
            (
                "processes=x",
                "WSGIDaemonProcess web: invalid value \"x\" for \"processes\"",
            ),
            (
                "stack-size=524288",
                "WSGIDaemonProcess: option 'stack-size' is not supported",
            ),
            ("socket=relative", "expected unix:PATH or HOST:PORT"),
            (
                "inactivity-timeout=5",
                "option 'inactivity-timeout' is not supported",
            ),
            ("threads", "WSGIDaemonProcess: expected key=value"),
        ] {
            let e = DaemonGroup::parse(&["web", bad]).unwrap_err();
            assert!(
                e.starts_with("WSGIDaemonProcess") && e.contains(want),
                "{e}"
            );
        }
    }

    #[test]
    fn merge_inner_scope_wins() {
        let parent = DirConf {
            callable: Some("app".into()),
            pass_authorization: Some(true),
            ..Default::default()
        };
        let child = DirConf {
            pass_authorization: Some(false),
            ..Default::default()
        };
        let m = DirConf::merge(&parent, &child);
        assert_eq!(m.callable_name(), "app");
        assert_eq!(m.pass_authorization, Some(false));
        assert_eq!(DirConf::default().callable_name(), "application");
    }

    #[test]
    fn alias_matching_follows_mod_alias() {
        assert_eq!(alias_match_len(b"/app", b"/app"), Some(4));
        assert_eq!(alias_match_len(b"/app", b"/app/x"), Some(4));
        assert_eq!(alias_match_len(b"/app", b"/apple"), None);
        assert_eq!(alias_match_len(b"/app", b"//app//x"), Some(5));
        assert_eq!(alias_match_len(b"/", b"/anything"), Some(1));
        assert_eq!(alias_match_len(b"/a/", b"/a"), None);
    }

    #[test]
    fn slashes_collapse() {
        assert_eq!(&*collapse_slashes(b"//a///b/"), b"/a/b/");
        assert_eq!(&*collapse_slashes(b"/a/b"), b"/a/b");
    }
}
