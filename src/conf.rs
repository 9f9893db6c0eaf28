//! Configuration: the `wsgi_*` directives, their typed structs and nginx's merge semantics.
//!
//! Two structs, one per level nginx lets us hook:
//! - [`MainConf`] (the `http` block): interpreter settings for embedded mode, the embedded thread
//!   pool size, the declared daemon groups, and the table of embedded apps that workers load.
//! - [`LocConf`] (`http`, `server`, `location`): which script and callable a location serves and
//!   whether it goes to a daemon group. Unset values are inherited from the enclosing level
//!   ([`Merge`]), exactly like nginx's own `ngx_conf_merge_*_value` macros.
//!
//! Every mistake fails `nginx -t`: directive handlers log through `ngx_conf_log_error`, which adds
//! "in FILE:LINE"; checks that can only run once the whole `http` block is read (an undeclared
//! process group) are done in the merge step and name the file and line recorded at parse time.

use std::path::PathBuf;

use ngx::http::{Merge, MergeConfigError};

use crate::daemon_options::{DaemonGroup, GroupApp};

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
    /// Embedded apps, registered while locations are merged; indexed by [`LocConf::app`].
    pub apps: Vec<AppEntry>,
}

impl MainConf {
    /// Python threads per nginx worker.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or(DEFAULT_THREADS)
    }

    /// The index of `entry` in the app table, adding it if new: locations that serve the same
    /// script with the same callable share one loaded app per worker.
    pub fn register_app(&mut self, entry: AppEntry) -> usize {
        if let Some(i) = self.apps.iter().position(|a| *a == entry) {
            return i;
        }
        self.apps.push(entry);
        self.apps.len() - 1
    }
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
    /// Resolved in the merge step: index into [`MainConf::apps`] (embedded locations).
    pub app: Option<usize>,
    /// Resolved in the merge step: index into [`MainConf::groups`] (daemon locations).
    pub group: Option<usize>,
    /// Daemon locations: nginx's upstream settings (an `ngx_http_upstream_conf_t` in the
    /// configuration pool), made in the merge step.
    pub upstream: Option<std::ptr::NonNull<std::ffi::c_void>>,
}

impl LocConf {
    /// The callable to look up, default applied.
    pub fn callable(&self) -> &str {
        self.callable.as_deref().unwrap_or(DEFAULT_CALLABLE)
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
        Ok(())
    }
}

/// Binds a merged location to its daemon group (which must be declared) and registers its app.
pub fn resolve(conf: &mut LocConf, main: &mut MainConf) -> Result<(), String> {
    conf.group = None;
    conf.app = None;
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
        conf.app = Some(main.register_app(entry));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
}
