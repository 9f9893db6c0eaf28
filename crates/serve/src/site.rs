//! The site to serve: the command line's [`Options`] resolved against the machine (absolute
//! paths, which nginx and which module, the worker user), each part checked so that a mistake is
//! reported here, in words, before nginx ever starts.

use std::env;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::cli::{AppSource, Options, Server};
use crate::users;

/// Where Debian's `libnginx-mod-http-wsgi` package installs the module.
pub const PACKAGED_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_wsgi_module.so";
/// The file name `cargo build` gives the module.
const BUILT_MODULE: &str = "libngx_http_wsgi_module.so";
const DEFAULT_NGINX: &str = "/usr/sbin/nginx";
/// The daemon process group's name (the supervisor shows as `wsgi:rwsgi` in `ps`).
pub const GROUP: &str = "rwsgi";

/// The app, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum App {
    /// An existing script file (absolute).
    Script(PathBuf),
    /// A module name; `rwsgi serve` writes a small script that imports it (see conf.rs).
    Module(String),
}

/// A `--static URL=DIR`, resolved: `url` ends with `/`, `dir` is an existing directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Static {
    pub url: String,
    pub dir: PathBuf,
}

/// The nginx binary and what `nginx -V` says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nginx {
    pub bin: PathBuf,
    /// `1.22.1`.
    pub version: String,
    /// Its `mime.types` (next to its nginx.conf), when there is one.
    pub mime_types: Option<PathBuf>,
}

/// Everything the configuration is written from.
#[derive(Debug, Clone)]
pub struct Site {
    pub app: App,
    pub callable: String,
    pub python_home: Option<PathBuf>,
    /// sys.path entries in order: the script's directory (or the current directory for
    /// --module) first, then --python-path.
    pub python_path: Vec<PathBuf>,
    pub statics: Vec<Static>,
    pub nginx: Nginx,
    pub module: PathBuf,
    /// The `user` directive: set when nginx starts as root.
    pub user: Option<String>,
    pub server: Server,
}

impl Site {
    /// Resolves `opts` (relative paths against `cwd`).
    pub fn resolve(opts: &Options, cwd: &Path) -> Result<Site, String> {
        let (app, first_path) = match &opts.app {
            AppSource::Script(p) => {
                let script = existing(cwd, p, "the app script")?;
                if !script.is_file() {
                    return Err(format!("{} is not a file", script.display()));
                }
                let dir = script.parent().map(Path::to_path_buf).unwrap_or_default();
                (App::Script(script), dir)
            }
            AppSource::Module(m) => (App::Module(m.clone()), cwd.to_path_buf()),
        };
        let python_home = match &opts.python_home {
            Some(p) => Some(existing(cwd, p, "--python-home")?),
            // An activated virtualenv is what the user means, as for gunicorn or flask run.
            None => env::var_os("VIRTUAL_ENV")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute() && p.is_dir()),
        };
        if let Some(home) = &python_home {
            if !home.is_dir() {
                return Err(format!(
                    "--python-home {} is not a directory",
                    home.display()
                ));
            }
        }
        let mut python_path = vec![first_path];
        for p in &opts.python_path {
            let p = existing(cwd, p, "--python-path")?;
            if !python_path.contains(&p) {
                python_path.push(p);
            }
        }
        let statics = statics(opts, cwd)?;
        let nginx = find_nginx(opts.nginx.as_deref(), cwd)?;
        let module = find_module(opts.nginx_module.as_deref(), cwd)?;
        let user = worker_user(opts.user.as_deref())?;
        Ok(Site {
            app,
            callable: opts.callable.clone(),
            python_home,
            python_path,
            statics,
            nginx,
            module,
            user,
            server: opts.server.clone(),
        })
    }

    /// The app as people name it: the script path or the module name.
    pub fn app_name(&self) -> String {
        match &self.app {
            App::Script(p) => p.display().to_string(),
            App::Module(m) => m.clone(),
        }
    }

    /// The address nginx listens on, as `listen` and bind(2) take it.
    pub fn listen_addr(&self) -> String {
        match self.server.host.as_str() {
            "localhost" => format!("127.0.0.1:{}", self.server.port),
            h if h.contains(':') => format!("[{h}]:{}", self.server.port),
            h => format!("{h}:{}", self.server.port),
        }
    }

    /// The address to connect to to see whether nginx listens (a wildcard means loopback).
    pub fn probe_addr(&self) -> String {
        match self.server.host.as_str() {
            "0.0.0.0" => format!("127.0.0.1:{}", self.server.port),
            "::" => format!("[::1]:{}", self.server.port),
            _ => self.listen_addr(),
        }
    }

    /// The URL printed for the user.
    pub fn url(&self) -> String {
        let host = match self.server.host.as_str() {
            "0.0.0.0" | "::" => "localhost".to_owned(),
            h if h.contains(':') => format!("[{h}]"),
            h => h.to_owned(),
        };
        format!("http://{host}:{}/", self.server.port)
    }

    /// The directories whose .py files --reload-on-change watches: the app's sys.path entries
    /// outside the virtualenv (the app's code, not its installed packages).
    pub fn watch_roots(&self) -> Vec<PathBuf> {
        self.python_path
            .iter()
            .filter(|p| match &self.python_home {
                Some(home) => !p.starts_with(home),
                None => true,
            })
            .cloned()
            .collect()
    }
}

/// `p` made absolute against `cwd`, lexically normalised, and required to exist.
fn existing(cwd: &Path, p: &Path, what: &str) -> Result<PathBuf, String> {
    let abs = normalize(&cwd.join(p));
    if !abs.exists() {
        return Err(format!("{what}: {} does not exist", abs.display()));
    }
    Ok(abs)
}

/// Removes `.` and resolves `..` without following symlinks (the path is shown to the user and
/// written into nginx.conf as they named it).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn statics(opts: &Options, cwd: &Path) -> Result<Vec<Static>, String> {
    let mut out: Vec<Static> = Vec::new();
    for (url, dir) in &opts.statics {
        let dir = existing(cwd, dir, &format!("--static {url}"))?;
        if !dir.is_dir() {
            return Err(format!(
                "--static {url}: {} is not a directory",
                dir.display()
            ));
        }
        let url = format!("{}/", url.trim_end_matches('/'));
        if out.iter().any(|s| s.url == url) {
            return Err(format!("--static {url} is given twice"));
        }
        out.push(Static { url, dir });
    }
    Ok(out)
}

/// The nginx binary (`--nginx`, else Debian's), with its version and mime.types from `nginx -V`.
fn find_nginx(given: Option<&Path>, cwd: &Path) -> Result<Nginx, String> {
    let bin = match given {
        Some(p) => normalize(&cwd.join(p)),
        None => PathBuf::from(DEFAULT_NGINX),
    };
    let out = Command::new(&bin).arg("-V").output().map_err(|e| {
        format!(
            "cannot run {} ({e}): install nginx (apt install nginx) or name it with --nginx",
            bin.display()
        )
    })?;
    // nginx prints -V to stderr.
    let text = String::from_utf8_lossy(&out.stderr);
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("nginx version: nginx/"))
        .map(|v| v.split_whitespace().next().unwrap_or(v).to_owned())
        .ok_or_else(|| format!("{} -V did not say which nginx it is", bin.display()))?;
    let arg = |name: &str| {
        text.lines()
            .filter_map(|l| l.strip_prefix("configure arguments:"))
            .flat_map(str::split_whitespace)
            .find_map(|a| a.strip_prefix(name).map(str::to_owned))
    };
    // nginx's own default: <prefix>/conf/nginx.conf, prefix /usr/local/nginx.
    let prefix = arg("--prefix=").unwrap_or_else(|| "/usr/local/nginx".to_owned());
    let conf = arg("--conf-path=").map_or_else(
        || Path::new(&prefix).join("conf/nginx.conf"),
        |c| Path::new(&prefix).join(c),
    );
    let mime_types = conf
        .parent()
        .map(|d| d.join("mime.types"))
        .filter(|m| m.is_file());
    Ok(Nginx {
        bin,
        version,
        mime_types,
    })
}

/// The module: `--nginx-module`, else the one built next to this program (target/release), else
/// the packaged one.
fn find_module(given: Option<&Path>, cwd: &Path) -> Result<PathBuf, String> {
    if let Some(p) = given {
        let p = normalize(&cwd.join(p));
        if !p.is_file() {
            return Err(format!("--nginx-module: {} does not exist", p.display()));
        }
        return Ok(p);
    }
    let built = env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(BUILT_MODULE)));
    built
        .into_iter()
        .chain(std::iter::once(PathBuf::from(PACKAGED_MODULE)))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "the nginx module is not installed: apt install libnginx-mod-http-wsgi, or build \
                 it (cargo build --release puts it next to this program), or name it with \
                 --nginx-module (looked for {PACKAGED_MODULE})"
            )
        })
}

/// nginx's `user` directive. As root, nginx's workers switch to a user (Debian's nginx uses
/// www-data); as anyone else nginx cannot switch, so everything runs as the caller.
fn worker_user(given: Option<&str>) -> Result<Option<String>, String> {
    if !users::is_root() {
        if let Some(u) = given {
            return Err(format!(
                "--user {u} needs root: nginx can only switch users when started as root"
            ));
        }
        return Ok(None);
    }
    let name = match given {
        Some(u) => u.to_owned(),
        None if users::lookup("www-data").is_some() => "www-data".to_owned(),
        None => "nobody".to_owned(),
    };
    if users::lookup(&name).is_none() {
        return Err(format!("--user {name}: no such user"));
    }
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/a/b/")), PathBuf::from("/a/b"));
    }

    fn site(host: &str) -> Site {
        Site {
            app: App::Module("m".into()),
            callable: "application".into(),
            python_home: Some("/venv".into()),
            python_path: vec!["/srv/app".into(), "/venv/lib".into()],
            statics: vec![],
            nginx: Nginx {
                bin: "/usr/sbin/nginx".into(),
                version: "1.22.1".into(),
                mime_types: None,
            },
            module: PACKAGED_MODULE.into(),
            user: None,
            server: Server {
                host: host.into(),
                port: 8000,
                processes: 1,
                threads: 5,
                daemon: false,
                request_timeout: None,
                limit_request_body: 0,
                access_log: false,
                reload_on_change: false,
            },
        }
    }

    #[test]
    fn urls_and_probe_addresses() {
        assert_eq!(site("127.0.0.1").url(), "http://127.0.0.1:8000/");
        assert_eq!(site("0.0.0.0").probe_addr(), "127.0.0.1:8000");
        assert_eq!(site("::").probe_addr(), "[::1]:8000");
        assert_eq!(site("::1").url(), "http://[::1]:8000/");
    }

    #[test]
    fn the_virtualenv_is_not_watched() {
        assert_eq!(
            site("127.0.0.1").watch_roots(),
            vec![PathBuf::from("/srv/app")]
        );
    }
}
