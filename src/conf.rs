//! Configuration: the `wsgi_*` directives, their typed structs and nginx's merge semantics.
//!
//! Two structs, one per level nginx lets us hook:
//! - [`MainConf`] (the `http` block): interpreter settings for embedded mode, the embedded thread
//!   pool size, the declared daemon groups, and the table of embedded apps that workers load.
//! - [`LocConf`] (`http`, `server`, `location`): which script and callable a location serves and
//!   whether it goes to a daemon group. Unset values are inherited from the enclosing level
//!   ([`Merge`]), exactly like nginx's own `ngx_conf_merge_*_value` macros.
//! - [`DaemonGroup`]: one `wsgi_daemon_process` declaration, parsed by [`parse_group`] (as
//!   Apache's conf.rs parses `WSGIDaemonProcess`).
//!
//! Every mistake fails `nginx -t`: directive handlers log through `ngx_conf_log_error`, which adds
//! "in FILE:LINE"; checks that can only run once the whole `http` block is read (an undeclared
//! process group) are done in the merge step and name the file and line recorded at parse time.

use std::path::PathBuf;
use std::time::Duration;

use ngx::http::{Merge, MergeConfigError};
use supervisor::{DaemonOptions, Interface};

use crate::upstream::Upstream;

/// Python threads per nginx worker when `wsgi_threads` is not given.
pub const DEFAULT_THREADS: usize = 8;
/// Upper bound for `wsgi_threads` (each thread has its own stack; beyond this the GIL, not the
/// thread count, is the limit).
pub const MAX_THREADS: usize = 1024;
/// The callable looked up in a script when `wsgi_callable` is not given (mod_wsgi's default).
pub const DEFAULT_CALLABLE: &str = "application";

/// One embedded application: a script and its callable. Workers create one `pyhost::App` per entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEntry {
    pub script: PathBuf,
    pub callable: String,
}

/// `http`-level settings.
#[derive(Debug, Default)]
pub struct MainConf {
    /// `wsgi_python_home`: virtualenv or prefix of the embedded interpreter (default for daemons).
    pub python_home: Option<PathBuf>,
    /// `wsgi_python_path`: extra `sys.path` entries, in order.
    pub python_path: Vec<PathBuf>,
    /// `wsgi_threads`; `None` = [`DEFAULT_THREADS`].
    pub threads: Option<usize>,
    /// `wsgi_daemon_process` declarations, in file order.
    pub groups: Vec<DaemonGroup>,
    /// Embedded WSGI apps, registered while locations are merged; indexed by [`AppRef::Wsgi`].
    pub apps: Vec<AppEntry>,
    /// The metrics' apps: (mount label, group name or `""` for embedded) of every location
    /// with `wsgi_script`, registered while locations are merged; indexed by
    /// [`LocConf::metrics`].
    pub metric_apps: Vec<(String, String)>,
    /// Their slots in the shared metrics region, filled in by the master in `init_module`.
    pub metric_ids: Vec<Option<::metrics::AppId>>,
    /// Some location has `wsgi_metrics`.
    pub metrics_endpoint: bool,
    /// Daemon mode's default temp directory for buffered responses (an `ngx_path_t`, made with
    /// the first daemon location that needs it; `wsgi_temp_path` overrides it).
    pub default_temp_path: Option<std::ptr::NonNull<std::ffi::c_void>>,
    /// Embedded ASGI apps (`wsgi_interface asgi`), indexed by [`AppRef::Asgi`]: they run on
    /// the worker's asyncio loop, not its Python threads.
    pub asgi_apps: Vec<AppEntry>,
    /// This configuration's generation, given by the master in `init_module` (0 before, and
    /// without embedded apps): workers balance connections only with workers of their own
    /// (src/embedded/seats.rs).
    pub generation: u32,
}

impl MainConf {
    /// Python threads per nginx worker.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or(DEFAULT_THREADS)
    }

    /// The index of `entry` in the app table, adding it if new: locations that serve the same
    /// script with the same callable share one loaded app per worker.
    pub fn register_app(&mut self, entry: AppEntry) -> usize {
        register(&mut self.apps, entry)
    }

    /// The index of the metrics' app `(mount, group)`, adding it if new.
    pub fn register_metric_app(&mut self, mount: &str, group: &str) -> usize {
        let key = (mount.to_owned(), group.to_owned());
        if let Some(i) = self.metric_apps.iter().position(|a| *a == key) {
            return i;
        }
        self.metric_apps.push(key);
        self.metric_apps.len() - 1
    }

    /// As [`register_app`](Self::register_app), in the ASGI table.
    pub fn register_asgi_app(&mut self, entry: AppEntry) -> usize {
        register(&mut self.asgi_apps, entry)
    }
}

fn register(table: &mut Vec<AppEntry>, entry: AppEntry) -> usize {
    if let Some(i) = table.iter().position(|a| *a == entry) {
        return i;
    }
    table.push(entry);
    table.len() - 1
}

/// An embedded location's app: an index into [`MainConf::apps`] or [`MainConf::asgi_apps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppRef {
    Wsgi(usize),
    Asgi(usize),
}

/// How the request URI splits into SCRIPT_NAME and PATH_INFO for a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// A prefix or exact location: SCRIPT_NAME is this prefix (no trailing slash), PATH_INFO the rest.
    Prefix(Vec<u8>),
    /// A regex or named location has no prefix: SCRIPT_NAME is empty, PATH_INFO the whole URI.
    Whole,
}

/// Where a directive was written, for errors found after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

/// `wsgi_process_group NAME;` as written, resolved against the declared groups in the merge step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    pub name: String,
    pub origin: Origin,
}

/// `http` / `server` / `location` settings.
#[derive(Debug, Default)]
pub struct LocConf {
    /// `wsgi_script`: the script served by this location.
    pub script: Option<PathBuf>,
    /// Derived from the location that holds `wsgi_script`.
    pub mount: Option<Mount>,
    /// `wsgi_callable`.
    pub callable: Option<String>,
    /// `wsgi_process_group`: absent = embedded mode.
    pub process_group: Option<GroupRef>,
    /// `wsgi_interface`: what an embedded app speaks (daemon groups have their own
    /// `interface=`); unset = WSGI.
    pub interface: Option<Interface>,
    /// Resolved in the merge step: the app of an embedded location.
    pub app: Option<AppRef>,
    /// Resolved in the merge step: index into [`MainConf::groups`] (daemon locations).
    pub group: Option<usize>,
    /// Resolved in the merge step: index into [`MainConf::metric_apps`] (every location with a
    /// script).
    pub metrics: Option<usize>,
    /// Daemon locations: nginx's upstream settings (an `ngx_http_upstream_conf_t` in the
    /// configuration pool), made in the merge step from [`LocConf::daemon`].
    pub upstream: Option<std::ptr::NonNull<std::ffi::c_void>>,
    /// The daemon-mode directives (`wsgi_read_timeout`, `wsgi_buffering`, ...).
    pub daemon: Upstream,
    /// `wsgi_param` lines of this level, in order; `None`: inherited (as `uwsgi_param`, a level
    /// with any `wsgi_param` replaces the inherited list).
    pub params: Option<Vec<Param>>,
    /// `wsgi_request_timeout` (embedded mode): `Some(None)` is `off`, written to undo an outer
    /// level's value.
    pub request_timeout: Option<Option<Duration>>,
}

/// One `wsgi_param NAME VALUE [if_not_empty];`.
#[derive(Debug, Clone)]
pub struct Param {
    /// The environ key, checked by [`check_param_name`].
    pub name: Vec<u8>,
    /// The value, compiled by nginx (an `ngx_http_complex_value_t` in the configuration pool);
    /// `None` for an empty literal on an `HTTP_*` name, which only hides the client's header
    /// (as `uwsgi_param HTTP_X "";` does).
    pub value: Option<std::ptr::NonNull<std::ffi::c_void>>,
    /// `if_not_empty`: a value that evaluates to "" sets nothing.
    pub if_not_empty: bool,
}

impl Param {
    /// An `HTTP_*` param replaces the client's header of that name, set or not.
    pub fn is_header(&self) -> bool {
        self.name.starts_with(b"HTTP_")
    }
}

/// What `wsgi_param` may name. An operator may set any CGI variable, override the ones nginx
/// computes (`SCRIPT_NAME`, `HTTPS`, `REMOTE_USER`, ...) and replace or hide a request header
/// (`HTTP_*`); the filters against clients (a `Proxy` header, `_` in header names) do not stop
/// an operator who writes the full name. Refused, each with its reason: names that are not
/// CGI-like; `HTTP_*` names in lower case (they could never match a header); the request body's
/// framing (`CONTENT_LENGTH`, which only nginx knows; `HTTP_CONTENT_*` are dropped for
/// `CONTENT_*`); `HTTP_PROXY` (httpoxy: every front end's worker drops it, so it could never
/// arrive, and a proxy for the app belongs in its environment); `wsgi.*` (PEP 3333's keys, set
/// by the server); `UWSGI_*` (uWSGI's code-loading vars, never honoured) and `RWSGI_*` (the
/// front end/worker contract). docs/nginx/wsgi_param.md argues each case.
pub fn check_param_name(name: &[u8]) -> Result<(), String> {
    let shown = String::from_utf8_lossy(name);
    let cgi_like = !name.is_empty()
        && name
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if !cgi_like {
        return Err(format!(
            "invalid name \"{shown}\": expected a variable name of letters, digits, '_', '.' or '-' \
             such as REMOTE_USER or HTTP_X_FORWARDED_PROTO"
        ));
    }
    let upper = name.to_ascii_uppercase();
    let refused = |why: &str| Err(format!("cannot set \"{shown}\": {why}"));
    if let Some(header) = upper.strip_prefix(b"HTTP_") {
        if upper != name || header.is_empty() || name.contains(&b'.') || name.contains(&b'-') {
            return Err(format!(
                "invalid name \"{shown}\": a request header is HTTP_ and the header name in upper \
                 case with '-' as '_', such as HTTP_X_FORWARDED_PROTO"
            ));
        }
        return match header {
            b"PROXY" => refused(
                "HTTP_PROXY never reaches an app (httpoxy: it would be read as a proxy setting); \
                 give the app its proxy in its environment instead",
            ),
            b"CONTENT_TYPE" | b"CONTENT_LENGTH" => refused(
                "the request's content headers are CONTENT_TYPE and CONTENT_LENGTH in environ",
            ),
            _ => Ok(()),
        };
    }
    if upper == b"CONTENT_LENGTH" {
        return refused(
            "the length of the request body is nginx's to say (the app reads that many bytes)",
        );
    }
    if name.starts_with(b"wsgi.") {
        return refused("wsgi.* keys are PEP 3333's, set by the server itself");
    }
    if upper.starts_with(b"UWSGI_") {
        return refused(
            "UWSGI_* variables are never honoured (uWSGI loads code by them); for the scheme use \
             \"wsgi_param HTTPS on;\"",
        );
    }
    if upper.starts_with(b"RWSGI_") {
        return refused("RWSGI_* variables are rwsgi's front end/worker contract");
    }
    Ok(())
}

impl LocConf {
    /// The callable to look up, default applied.
    pub fn callable(&self) -> &str {
        self.callable.as_deref().unwrap_or(DEFAULT_CALLABLE)
    }

    /// The `app` label of this location's metrics: its SCRIPT_NAME prefix, `/` for the root and
    /// for regex and named locations (whose SCRIPT_NAME is empty), as the daemon workers name
    /// their apps.
    pub fn metrics_mount(&self) -> &str {
        match &self.mount {
            Some(Mount::Prefix(p)) => ::metrics::mount_label(std::str::from_utf8(p).unwrap_or("/")),
            _ => "/",
        }
    }

    /// The request timeout of an embedded request here, if any.
    pub fn request_timeout(&self) -> Option<Duration> {
        self.request_timeout.flatten()
    }
}

impl Merge for LocConf {
    /// A value set at this level wins; an unset one is taken from the enclosing level.
    fn merge(&mut self, prev: &LocConf) -> Result<(), MergeConfigError> {
        if self.script.is_none() {
            self.script.clone_from(&prev.script);
            self.mount.clone_from(&prev.mount);
        }
        if self.callable.is_none() {
            self.callable.clone_from(&prev.callable);
        }
        if self.process_group.is_none() {
            self.process_group.clone_from(&prev.process_group);
        }
        if self.params.is_none() {
            self.params.clone_from(&prev.params);
        }
        if self.request_timeout.is_none() {
            self.request_timeout = prev.request_timeout;
        }
        self.daemon.merge(&prev.daemon);
        if self.interface.is_none() {
            self.interface = prev.interface;
        }
        Ok(())
    }
}

/// The merge step of one level: inherit from `prev`, resolve the app or group, and refuse
/// daemon-mode directives written in the block of an embedded `wsgi_script` location.
pub fn merge_level(conf: &mut LocConf, prev: &LocConf, main: &mut MainConf) -> Result<(), String> {
    check_timeout_mode(conf)?;
    let local = conf.daemon.first_local();
    // Merge never fails for LocConf (every field has a default).
    let _ = conf.merge(prev);
    resolve(conf, main)?;
    match (conf.app, local) {
        (Some(_), Some((directive, file, line))) => Err(format!(
            "\"{directive}\" applies to daemon mode only (a location with wsgi_process_group), \
             but this location runs its app embedded in nginx, in {file}:{line}"
        )),
        _ => Ok(()),
    }
}

/// A level that sets `wsgi_request_timeout` where it cannot apply, so `nginx -t` says so: beside
/// a daemon group (the group's workers enforce its own `request-timeout=`). Checked before
/// merging: a value inherited from an outer level is meant for its embedded locations. (ASGI
/// apps take it too: their task is cancelled at the timeout.)
fn check_timeout_mode(conf: &LocConf) -> Result<(), String> {
    if conf.request_timeout.flatten().is_none() {
        return Ok(());
    }
    if let Some(group) = &conf.process_group {
        return Err(format!(
            "\"wsgi_request_timeout\" applies to embedded mode, and this level sends requests to \
             daemon group \"{}\" (in {}:{}): set request-timeout= on its wsgi_daemon_process",
            group.name, group.origin.file, group.origin.line
        ));
    }
    Ok(())
}

/// Binds a merged location to its daemon group (which must be declared) and registers its app.
pub fn resolve(conf: &mut LocConf, main: &mut MainConf) -> Result<(), String> {
    conf.group = None;
    conf.app = None;
    conf.metrics = None;
    if conf.script.is_some() {
        let group = conf.process_group.as_ref().map_or("", |g| g.name.as_str());
        conf.metrics = Some(main.register_metric_app(conf.metrics_mount(), group));
    }
    if let Some(group) = &conf.process_group {
        let Some(i) = main.groups.iter().position(|g| g.name == group.name) else {
            return Err(format!(
                "wsgi_process_group \"{}\" is not declared: add \"wsgi_daemon_process {} ...;\" \
                 to the http block in {}:{}",
                group.name, group.name, group.origin.file, group.origin.line
            ));
        };
        conf.group = Some(i);
        if let Some(script) = &conf.script {
            let entry = AppEntry {
                script: script.clone(),
                callable: conf.callable().to_string(),
            };
            let mount = match &conf.mount {
                Some(Mount::Prefix(p)) if !p.is_empty() => {
                    Some(String::from_utf8_lossy(p).into_owned())
                }
                _ => None,
            };
            let declared = &mut main.groups[i];
            match declared.apps.iter().find(|a| a.mount == mount) {
                None => declared.apps.push(GroupApp { entry, mount }),
                Some(existing) if existing.entry == entry => {}
                Some(existing) => {
                    return Err(format!(
                        "process group \"{}\" already serves {} ({}) at \"{}\"; another script at \
                         the same location prefix is ambiguous ({} in {}:{})",
                        group.name,
                        existing.entry.script.display(),
                        existing.entry.callable,
                        mount.as_deref().unwrap_or("/"),
                        entry.script.display(),
                        group.origin.file,
                        group.origin.line
                    ))
                }
            }
        }
        return Ok(());
    }
    if let Some(script) = &conf.script {
        let entry = AppEntry {
            script: script.clone(),
            callable: conf.callable().to_string(),
        };
        conf.app = Some(match conf.interface.unwrap_or_default() {
            Interface::Wsgi => AppRef::Wsgi(main.register_app(entry)),
            Interface::Asgi => AppRef::Asgi(main.register_asgi_app(entry)),
        });
    }
    Ok(())
}

/// ASCII Python identifier (what a module-level `def`/assignment can name).
pub fn is_identifier(s: &[u8]) -> bool {
    match s.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        }
        None => false,
    }
}

// `wsgi_daemon_process NAME key=value...`: the directive's syntax around mod_wsgi's daemon
// group options.
//
// The option names, values and defaults are mod_wsgi's `WSGIDaemonProcess` ones (DESIGN.md,
// "Daemon group options"), parsed by [`supervisor::DaemonOptions`], the same code Apache's
// `WSGIDaemonProcess` uses, so a config moves between the two servers. Here: the group name,
// `key=value` splitting, nginx's stricter rules (no option twice, `group=` needs `user=`) and
// nginx's larger default backlog. Every error is a sentence naming the option and what is
// expected; an unknown option is an error, never ignored.

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
    /// Where the directive was written (errors found once the whole configuration is read).
    pub origin: Option<Origin>,
    /// The group's secret, sent as `RWSGI_SECRET` in every packet: set by the master in
    /// `init_module` (src/supervise.rs), before the workers fork.
    pub secret: Option<supervisor::Secret>,
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
            origin: None,
            secret: None,
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
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use supervisor::SocketSpec;

    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["application", "_app", "app2", "A"] {
            assert!(is_identifier(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "2app", "app.x", "app-x", "ä"] {
            assert!(!is_identifier(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn merge_inherits_unset_values_only() {
        let parent = LocConf {
            script: Some("/srv/app.py".into()),
            mount: Some(Mount::Prefix(b"/app".to_vec())),
            callable: Some("app".into()),
            ..Default::default()
        };
        let mut child = LocConf {
            callable: Some("other".into()),
            ..Default::default()
        };
        child.merge(&parent).unwrap();
        assert_eq!(child.script.as_deref(), Some(Path::new("/srv/app.py")));
        assert_eq!(child.mount, Some(Mount::Prefix(b"/app".to_vec())));
        assert_eq!(child.callable(), "other");
        assert_eq!(LocConf::default().callable(), DEFAULT_CALLABLE);
    }

    #[test]
    fn request_timeouts_inherit_and_off_undoes_them() {
        let http = LocConf {
            request_timeout: Some(Some(Duration::from_secs(30))),
            ..Default::default()
        };
        let mut inherits = LocConf::default();
        inherits.merge(&http).unwrap();
        assert_eq!(inherits.request_timeout(), Some(Duration::from_secs(30)));
        let mut off = LocConf {
            request_timeout: Some(None),
            ..Default::default()
        };
        off.merge(&http).unwrap();
        assert_eq!(off.request_timeout(), None);
        // Set beside a daemon group, at the same level: refused (the group has its own).
        let daemon = LocConf {
            process_group: Some(GroupRef {
                name: "g".into(),
                origin: Origin {
                    file: "nginx.conf".into(),
                    line: 9,
                },
            }),
            request_timeout: Some(Some(Duration::from_secs(5))),
            ..Default::default()
        };
        let err = check_timeout_mode(&daemon).unwrap_err();
        assert!(
            err.contains("request-timeout= on its wsgi_daemon_process"),
            "{err}"
        );
        assert!(check_timeout_mode(&LocConf {
            request_timeout: Some(None),
            ..daemon
        })
        .is_ok());
        let asgi = LocConf {
            interface: Some(Interface::Asgi),
            request_timeout: Some(Some(Duration::from_secs(5))),
            ..Default::default()
        };
        assert!(check_timeout_mode(&asgi).is_ok());
    }

    #[test]
    fn apps_are_shared_between_locations() {
        let mut main = MainConf::default();
        let a = AppEntry {
            script: "/a.py".into(),
            callable: "application".into(),
        };
        let b = AppEntry {
            script: "/a.py".into(),
            callable: "other".into(),
        };
        assert_eq!(main.register_app(a.clone()), 0);
        assert_eq!(main.register_app(b), 1);
        assert_eq!(main.register_app(a), 0);
    }

    #[test]
    fn every_script_location_gets_a_metrics_app() {
        let mut main = MainConf {
            groups: vec![DaemonGroup::new("g".into())],
            ..Default::default()
        };
        let origin = Origin {
            file: "x.conf".into(),
            line: 1,
        };
        let loc = |prefix: &[u8], group: Option<&str>| LocConf {
            script: Some("/a.py".into()),
            mount: Some(Mount::Prefix(prefix.to_vec())),
            process_group: group.map(|name| GroupRef {
                name: name.into(),
                origin: origin.clone(),
            }),
            ..Default::default()
        };
        let mut a = loc(b"/app", None);
        let mut b = loc(b"/app", Some("g"));
        let mut c = loc(b"", None);
        let mut d = LocConf {
            mount: Some(Mount::Whole),
            ..loc(b"", None)
        };
        for lc in [&mut a, &mut b, &mut c, &mut d] {
            resolve(lc, &mut main).unwrap();
        }
        assert_eq!(
            (a.metrics, b.metrics, c.metrics, d.metrics),
            (Some(0), Some(1), Some(2), Some(2))
        );
        assert_eq!(main.metric_apps[1], ("/app".to_string(), "g".to_string()));
        assert_eq!(main.metric_apps[2], ("/".to_string(), String::new()));
        let mut none = LocConf::default();
        resolve(&mut none, &mut main).unwrap();
        assert_eq!(none.metrics, None);
    }

    #[test]
    fn asgi_locations_get_their_own_app_table() {
        let mut main = MainConf::default();
        let mut wsgi = LocConf {
            script: Some("/a.py".into()),
            ..Default::default()
        };
        let parent = LocConf {
            interface: Some(Interface::Asgi),
            ..Default::default()
        };
        let mut asgi = LocConf {
            script: Some("/a.py".into()),
            ..Default::default()
        };
        asgi.merge(&parent).unwrap();
        resolve(&mut wsgi, &mut main).unwrap();
        resolve(&mut asgi, &mut main).unwrap();
        assert_eq!(wsgi.app, Some(AppRef::Wsgi(0)));
        assert_eq!(asgi.app, Some(AppRef::Asgi(0)));
        assert_eq!((main.apps.len(), main.asgi_apps.len()), (1, 1));
    }

    #[test]
    fn undeclared_group_is_an_error_naming_the_origin() {
        let mut main = MainConf::default();
        let mut lc = LocConf {
            process_group: Some(GroupRef {
                name: "nope".into(),
                origin: Origin {
                    file: "/etc/nginx/x.conf".into(),
                    line: 7,
                },
            }),
            ..Default::default()
        };
        let err = resolve(&mut lc, &mut main).unwrap_err();
        assert!(err.contains("\"nope\" is not declared"), "{err}");
        assert!(err.contains("/etc/nginx/x.conf:7"), "{err}");
    }

    #[test]
    fn params_replace_the_inherited_list() {
        let param = |n: &str| Param {
            name: n.as_bytes().to_vec(),
            value: None,
            if_not_empty: false,
        };
        let server = LocConf {
            params: Some(vec![param("HTTP_A"), param("HTTP_B")]),
            ..Default::default()
        };
        let mut inherits = LocConf::default();
        inherits.merge(&server).unwrap();
        assert_eq!(inherits.params.as_ref().map(Vec::len), Some(2));
        let mut replaces = LocConf {
            params: Some(vec![param("HTTP_C")]),
            ..Default::default()
        };
        replaces.merge(&server).unwrap();
        let names: Vec<_> = replaces
            .params
            .unwrap()
            .iter()
            .map(|p| p.name.clone())
            .collect();
        assert_eq!(names, vec![b"HTTP_C".to_vec()]);
    }

    #[test]
    fn param_names() {
        for ok in [
            "REMOTE_USER",
            "SCRIPT_NAME",
            "HTTPS",
            "HTTP_X_FORWARDED_PROTO",
            "HTTP_HOST",
            "myapp.setting",
            "CONTENT_TYPE",
            "X-Thing",
        ] {
            assert_eq!(check_param_name(ok.as_bytes()), Ok(()), "{ok}");
        }
        let cases = [
            ("", "invalid name"),
            ("A B", "invalid name"),
            ("$x", "invalid name"),
            ("HTTP_x_foo", "upper case"),
            ("HTTP_", "upper case"),
            ("HTTP_X-FOO", "upper case"),
            ("HTTP_PROXY", "httpoxy"),
            ("HTTP_CONTENT_LENGTH", "CONTENT_TYPE and CONTENT_LENGTH"),
            ("CONTENT_LENGTH", "nginx's to say"),
            ("wsgi.url_scheme", "PEP 3333"),
            ("UWSGI_SCHEME", "wsgi_param HTTPS on"),
            ("uwsgi_file", "never honoured"),
            ("RWSGI_REQUEST_START", "contract"),
        ];
        for (name, want) in cases {
            let err = check_param_name(name.as_bytes()).unwrap_err();
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn daemon_directives_in_an_embedded_location_are_refused() {
        use crate::upstream::At;
        let mut main = MainConf::default();
        let http = LocConf {
            daemon: Upstream {
                buffering: Some(At {
                    value: true,
                    directive: "wsgi_buffering",
                    file: "/etc/nginx/nginx.conf".into(),
                    line: 12,
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        // Inherited from http: ignored by an embedded location.
        let mut inherited = LocConf {
            script: Some("/srv/app.py".into()),
            ..Default::default()
        };
        merge_level(&mut inherited, &http, &mut main).unwrap();
        // Written in its own block: an error naming the directive and where it is.
        let mut local = LocConf {
            script: Some("/srv/app.py".into()),
            daemon: http.daemon.clone(),
            ..Default::default()
        };
        let err = merge_level(&mut local, &LocConf::default(), &mut main).unwrap_err();
        assert!(
            err.contains("\"wsgi_buffering\" applies to daemon mode only"),
            "{err}"
        );
        assert!(err.contains("/etc/nginx/nginx.conf:12"), "{err}");
    }

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
