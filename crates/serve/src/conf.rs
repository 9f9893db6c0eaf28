//! The nginx configuration `rwsgi serve` writes: a complete, production-grade nginx.conf for one
//! app, everything (pid, temp files, daemon socket, logs) inside one directory.
//!
//! Pure text: [`render`] only formats; [`Layout`] says where the files go. Every path is written
//! double-quoted; a path nginx cannot take literally (`$` starts a variable in `alias`, `"` and
//! `\` escape) is refused with a sentence instead.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::site::{App, Site, GROUP};

/// Where the logs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logs {
    /// The foreground server: errors to stderr, the access log to stdout (the terminal).
    Terminal,
    /// `--setup-only`: files in `<dir>/logs`.
    Files,
}

/// The directory the server lives in: the private temp directory of a foreground run, or the
/// `--setup-only` directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
    pub logs: Logs,
}

impl Layout {
    pub fn conf(&self) -> PathBuf {
        self.dir.join("nginx.conf")
    }
    pub fn pid(&self) -> PathBuf {
        self.dir.join("nginx.pid")
    }
    pub fn error_log(&self) -> PathBuf {
        match self.logs {
            Logs::Terminal => PathBuf::from("stderr"),
            Logs::Files => self.dir.join("logs/error.log"),
        }
    }
    pub fn access_log(&self) -> PathBuf {
        match self.logs {
            Logs::Terminal => PathBuf::from("/dev/stdout"),
            Logs::Files => self.dir.join("logs/access.log"),
        }
    }
    /// The daemon group's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("wsgi.sock")
    }
    /// The generated script that imports a `--module` app.
    pub fn module_shim(&self) -> PathBuf {
        self.dir.join("app/rwsgi_module_app.py")
    }
    /// Directories to create before nginx starts.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut d = vec![self.dir.join("tmp"), self.dir.join("app")];
        if self.logs == Logs::Files {
            d.push(self.dir.join("logs"));
        }
        d
    }
    /// The script `wsgi_script` names.
    pub fn script(&self, site: &Site) -> PathBuf {
        match &site.app {
            App::Script(p) => p.clone(),
            App::Module(_) => self.module_shim(),
        }
    }
}

/// The script that stands in for `--module NAME`: nginx's `wsgi_script` loads a file, and this
/// file imports the real module by its name, so it is a normal module of its package (relative
/// imports, `__name__`, one copy in sys.modules), as gunicorn and uWSGI load `--module`.
pub fn module_shim(module: &str, callable: &str) -> String {
    format!(
        "\"\"\"Written by `rwsgi serve --module {module}`: imports the app by its module name.\"\"\"\n\
         import importlib\n\n\
         application = getattr(importlib.import_module({module:?}), {callable:?})\n"
    )
}

/// `"path"`, or why the path cannot be written into nginx.conf.
pub fn quote(p: &Path) -> Result<String, String> {
    let s = p
        .to_str()
        .ok_or_else(|| format!("{} is not valid UTF-8", p.display()))?;
    if s.chars()
        .any(|c| c == '$' || c == '"' || c == '\\' || c.is_control())
    {
        return Err(format!(
            "{s}: nginx cannot take a path with $, \", \\ or control characters literally; \
             rename it or move the app"
        ));
    }
    Ok(format!("\"{s}\""))
}

/// The whole nginx.conf.
pub fn render(site: &Site, layout: &Layout) -> Result<String, String> {
    let q = |p: &Path| quote(p);
    let mut c = String::new();
    let w = &mut c;
    let dir = &layout.dir;
    let _ = writeln!(
        w,
        "# nginx configuration written by `rwsgi serve` (rwsgi {}) for {}.\n\
         # Generated: change the rwsgi serve command line rather than this file.\n",
        env!("CARGO_PKG_VERSION"),
        site.app_name()
    );
    let _ = writeln!(w, "load_module {};", q(&site.module)?);
    if let Some(user) = &site.user {
        let _ = writeln!(w, "user {user};");
    }
    // Embedded mode: Python runs in nginx's workers, so they are the processes. Daemon mode: the
    // workers only move bytes; one per core is what nginx recommends.
    let workers = if site.server.daemon {
        "auto".to_owned()
    } else {
        site.server.processes.to_string()
    };
    let _ = writeln!(w, "worker_processes {workers};");
    let _ = writeln!(w, "pid {};", q(&layout.pid())?);
    // The terminal gets warnings and errors (a traceback is an error); files get notices too.
    let level = match layout.logs {
        Logs::Terminal => "warn",
        Logs::Files => "notice",
    };
    let _ = writeln!(w, "error_log {} {level};", q(&layout.error_log())?);
    let _ = writeln!(
        w,
        "\nevents {{\n    worker_connections 1024;\n}}\n\nhttp {{"
    );
    match &site.nginx.mime_types {
        Some(m) => {
            let _ = writeln!(w, "    include {};", q(m)?);
        }
        None => w.push_str(FALLBACK_TYPES),
    }
    w.push_str(
        "    default_type application/octet-stream;\n    sendfile on;\n    tcp_nopush on;\n",
    );
    w.push_str("    keepalive_timeout 65;\n    server_tokens off;\n");
    if site.server.access_log {
        let _ = writeln!(w, "    access_log {} combined;", q(&layout.access_log())?);
    } else {
        w.push_str("    access_log off;\n");
    }
    let _ = writeln!(
        w,
        "    client_max_body_size {};",
        site.server.limit_request_body
    );
    // nginx's compiled-in temp paths are the system's (/var/lib/nginx): keep ours private.
    for kind in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let _ = writeln!(
            w,
            "    {kind}_temp_path {};",
            q(&dir.join("tmp").join(kind))?
        );
    }
    python(w, site, layout)?;
    server(w, site, layout)?;
    w.push_str("}\n");
    Ok(c)
}

/// The module's http-level directives: the interpreter, and the mode.
fn python(w: &mut String, site: &Site, layout: &Layout) -> Result<(), String> {
    w.push('\n');
    if let Some(home) = &site.python_home {
        let _ = writeln!(w, "    wsgi_python_home {};", quote(home)?);
    }
    for p in &site.python_path {
        let _ = writeln!(w, "    wsgi_python_path {};", quote(p)?);
    }
    if site.server.daemon {
        let socket = layout.socket();
        // sockaddr_un holds 107 bytes of path; say so here rather than let the group fail to
        // start behind a configuration that passed `nginx -t`.
        if socket.as_os_str().len() > MAX_UNIX_PATH {
            return Err(format!(
                "the daemon group's socket {} would be longer than a unix socket path may be \
                 ({MAX_UNIX_PATH} bytes): choose a shorter directory",
                socket.display()
            ));
        }
        let mut opts = format!(
            "processes={} threads={} socket=unix:{}",
            site.server.processes,
            site.server.threads,
            socket.display()
        );
        if let Some(t) = site.server.request_timeout {
            let _ = write!(opts, " request-timeout={t}");
        }
        let _ = writeln!(w, "    wsgi_daemon_process {GROUP} {opts};");
    } else {
        let _ = writeln!(w, "    wsgi_threads {};", site.server.threads);
        if let Some(t) = site.server.request_timeout {
            // nginx time syntax; whole milliseconds, at least one (0 would be refused).
            let ms = ((t * 1000.0).round() as u64).max(1);
            let _ = writeln!(w, "    wsgi_request_timeout {ms}ms;");
        }
    }
    Ok(())
}

fn server(w: &mut String, site: &Site, layout: &Layout) -> Result<(), String> {
    let listen = site.listen_addr();
    let _ = writeln!(
        w,
        "\n    server {{\n        listen {listen};\n        server_name _;"
    );
    for s in &site.statics {
        // `alias` maps the prefix onto the directory; both end in / so /static/x -> DIR/x.
        let dir = format!("{}/", s.dir.display());
        let _ = writeln!(
            w,
            "\n        location {} {{\n            alias {};\n        }}",
            quote(Path::new(&s.url))?,
            quote(Path::new(&dir))?
        );
    }
    let _ = writeln!(w, "\n        location / {{");
    let _ = writeln!(
        w,
        "            wsgi_script {};",
        quote(&layout.script(site))?
    );
    if matches!(site.app, App::Script(_)) && site.callable != "application" {
        let _ = writeln!(w, "            wsgi_callable {};", site.callable);
    }
    if site.server.daemon {
        let _ = writeln!(w, "            wsgi_process_group {GROUP};");
    }
    w.push_str("        }\n    }\n");
    Ok(())
}

/// The longest path a unix socket address takes (sun_path is 108 bytes with the NUL).
const MAX_UNIX_PATH: usize = 107;

/// Used when the nginx has no mime.types next to its nginx.conf: the types a web app's static
/// files commonly have.
const FALLBACK_TYPES: &str = "    types {
        text/html html htm;
        text/css css;
        text/plain txt;
        text/xml xml;
        application/javascript js mjs;
        application/json json map;
        application/pdf pdf;
        application/wasm wasm;
        image/gif gif;
        image/jpeg jpeg jpg;
        image/png png;
        image/svg+xml svg svgz;
        image/webp webp;
        image/x-icon ico;
        font/woff woff;
        font/woff2 woff2;
    }
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Server;
    use crate::site::{Nginx, Static};

    fn site() -> Site {
        Site {
            app: App::Script("/srv/app/app.py".into()),
            callable: "application".into(),
            python_home: Some("/srv/venv".into()),
            python_path: vec!["/srv/app".into()],
            statics: vec![Static {
                url: "/static/".into(),
                dir: "/srv/app/static".into(),
            }],
            nginx: Nginx {
                bin: "/usr/sbin/nginx".into(),
                version: "1.22.1".into(),
                mime_types: Some("/etc/nginx/mime.types".into()),
            },
            module: "/usr/lib/nginx/modules/ngx_http_wsgi_module.so".into(),
            user: Some("www-data".into()),
            server: Server {
                host: "127.0.0.1".into(),
                port: 8000,
                processes: 2,
                threads: 5,
                daemon: false,
                request_timeout: None,
                limit_request_body: 1024,
                access_log: false,
                reload_on_change: false,
            },
        }
    }

    fn layout() -> Layout {
        Layout {
            dir: "/tmp/rwsgi-serve-x".into(),
            logs: Logs::Terminal,
        }
    }

    #[test]
    fn embedded() {
        let c = render(&site(), &layout()).unwrap();
        for line in [
            "load_module \"/usr/lib/nginx/modules/ngx_http_wsgi_module.so\";",
            "user www-data;",
            "worker_processes 2;",
            "error_log \"stderr\" warn;",
            "include \"/etc/nginx/mime.types\";",
            "access_log off;",
            "client_max_body_size 1024;",
            "uwsgi_temp_path \"/tmp/rwsgi-serve-x/tmp/uwsgi\";",
            "wsgi_python_home \"/srv/venv\";",
            "wsgi_python_path \"/srv/app\";",
            "wsgi_threads 5;",
            "listen 127.0.0.1:8000;",
            "location \"/static/\" {",
            "alias \"/srv/app/static/\";",
            "wsgi_script \"/srv/app/app.py\";",
        ] {
            assert!(c.contains(line), "{line:?} missing from:\n{c}");
        }
        assert!(!c.contains("wsgi_process_group") && !c.contains("wsgi_callable"));
        assert!(!c.contains("wsgi_request_timeout"));
        let mut s = site();
        s.server.request_timeout = Some(2.5);
        let c = render(&s, &layout()).unwrap();
        assert!(c.contains("wsgi_request_timeout 2500ms;"), "{c}");
    }

    #[test]
    fn daemon_module_and_files() {
        let mut s = site();
        s.server.daemon = true;
        s.server.request_timeout = Some(2.5);
        s.app = App::Module("mysite.wsgi".into());
        s.server.access_log = true;
        s.server.host = "::1".into();
        s.nginx.mime_types = None;
        let l = Layout {
            dir: "/srv/run".into(),
            logs: Logs::Files,
        };
        let c = render(&s, &l).unwrap();
        for line in [
            "worker_processes auto;",
            "error_log \"/srv/run/logs/error.log\" notice;",
            "access_log \"/srv/run/logs/access.log\" combined;",
            "wsgi_daemon_process rwsgi processes=2 threads=5 socket=unix:/srv/run/wsgi.sock request-timeout=2.5;",
            "wsgi_process_group rwsgi;",
            "wsgi_script \"/srv/run/app/rwsgi_module_app.py\";",
            "listen [::1]:8000;",
            "image/png png;",
        ] {
            assert!(c.contains(line), "{line:?} missing from:\n{c}");
        }
    }

    #[test]
    fn callable_only_for_scripts() {
        let mut s = site();
        s.callable = "app".into();
        assert!(render(&s, &layout())
            .unwrap()
            .contains("wsgi_callable app;"));
        s.app = App::Module("m".into());
        assert!(!render(&s, &layout()).unwrap().contains("wsgi_callable"));
        assert!(module_shim("m.wsgi", "app")
            .contains("getattr(importlib.import_module(\"m.wsgi\"), \"app\")"));
    }

    #[test]
    fn a_socket_path_too_long_is_refused() {
        let mut s = site();
        s.server.daemon = true;
        let l = Layout {
            dir: PathBuf::from("/").join("d".repeat(100)),
            logs: Logs::Files,
        };
        assert!(render(&s, &l)
            .unwrap_err()
            .contains("choose a shorter directory"));
    }

    #[test]
    fn paths_nginx_cannot_take_are_refused() {
        assert_eq!(quote(Path::new("/a b/c")).unwrap(), "\"/a b/c\"");
        for bad in ["/a$b", "/a\"b", "/a\\b", "/a\nb"] {
            assert!(
                quote(Path::new(bad)).unwrap_err().contains("literally"),
                "{bad}"
            );
        }
        let mut s = site();
        s.app = App::Script("/srv/$HOME/app.py".into());
        assert!(render(&s, &layout()).is_err());
    }
}
