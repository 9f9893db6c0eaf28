//! `rwsgi-worker --ini FILE[:SECTION]`: a uWSGI ini file's options as rwsgi-worker's own.
//!
//! `uwsgi_ini::read` has already applied uWSGI's reading rules and refused, in one error, every
//! line rwsgi-worker cannot honour (docs/migrating-from-uwsgi.md). What is left maps one to one
//! onto command-line options, and that is what this file returns: the file's options go through
//! the same parser, checks and error sentences as the command line's (`cli.rs`), which puts
//! them where `--ini` stands, so an option written after `--ini` wins, as in uWSGI.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use uwsgi_ini::{Address, App, AppSource, IniConfig, Protocol};

/// The file's options as `(rwsgi-worker option, uWSGI key it came from, value)`, in the order
/// the command line would take them.
pub fn options(ini: &IniConfig) -> Vec<(&'static str, &'static str, String)> {
    let mut out: Vec<(&'static str, &'static str, String)> = Vec::new();
    let mut push = |name, key, value: String| out.push((name, key, value));
    if let Some(socket) = &ini.socket {
        push(
            "socket",
            "socket",
            socket_value(socket.protocol, &socket.address),
        );
    }
    if let Some(dir) = &ini.chdir {
        push("chdir", "chdir", path(dir));
    }
    for (name, value) in &ini.env {
        push("env", "env", format!("{name}={value}"));
    }
    // uWSGI's `callable` applies to the script apps; a module app names its own.
    if let Some(app) = ini
        .apps
        .iter()
        .find(|a| matches!(a.source, AppSource::Script(_)))
    {
        push("callable", "callable", app.callable.clone());
    }
    for app in &ini.apps {
        match (&app.mount, &app.source) {
            (None, AppSource::Script(file)) => push("script", "wsgi-file", path(file)),
            (None, AppSource::Module(_)) => push("module", "module", module_value(app)),
            (Some(prefix), _) => push("mount", "mount", format!("{prefix}={}", mount_app(app))),
        }
    }
    push("processes", "processes", ini.processes.to_string());
    push("threads", "threads", ini.threads.to_string());
    if let Some(home) = &ini.python_home {
        push("python-home", "home", path(home));
    }
    for dir in &ini.python_path {
        push("python-path", "pythonpath", path(dir));
    }
    if let Some(user) = &ini.user {
        push("user", "uid", user.clone());
    }
    if let Some(group) = &ini.group {
        push("group", "gid", group.clone());
    }
    if ini.maximum_requests > 0 {
        push(
            "maximum-requests",
            "max-requests",
            ini.maximum_requests.to_string(),
        );
    }
    if let Some(t) = ini.request_timeout {
        push("request-timeout", "harakiri", secs(t));
    }
    if let Some(t) = ini.graceful_timeout {
        push("graceful-timeout", "worker-reload-mercy", secs(t));
    }
    if let Some(t) = ini.socket_timeout {
        push("socket-timeout", "socket-timeout", secs(t));
    }
    if let Some(mode) = ini.socket_mode {
        push("socket-mode", "chmod-socket", format!("{mode:04o}"));
    }
    if let Some(owner) = &ini.socket_owner {
        push("socket-owner", "chown-socket", owner.clone());
    }
    if let Some(backlog) = ini.listen_backlog {
        push("listen-backlog", "listen", backlog.to_string());
    }
    out
}

/// The log line's text for the keys that change nothing: `master, vacuum (...)`.
pub fn accepted_note(file: &str, accepted: &[String]) -> Option<String> {
    if accepted.is_empty() {
        return None;
    }
    let mut keys: Vec<&str> = accepted.iter().map(String::as_str).collect();
    keys.dedup();
    let mut line =
        format!("{file}: uWSGI options accepted as they are how rwsgi-worker always runs: ");
    let _ = write!(line, "{}", keys.join(", "));
    Some(line)
}

fn socket_value(protocol: Protocol, address: &Address) -> String {
    let prefix = match protocol {
        Protocol::Uwsgi => "",
        Protocol::Scgi => "scgi:",
        Protocol::FastCgi => "fcgi:",
    };
    match address {
        Address::Unix(p) => format!("{prefix}unix:{}", p.display()),
        Address::Tcp(a) => format!("{prefix}{a}"),
    }
}

/// `pkg.mod:callable`: a module app always names its callable (the ini's own or `callable =`).
fn module_value(app: &App) -> String {
    match &app.source {
        AppSource::Module(name) => format!("{name}:{}", app.callable),
        AppSource::Script(file) => path(file),
    }
}

/// The `=APP` of a mount: a script's file (it ends in `.py` or `.wsgi`, which is how uWSGI
/// told it from a module) or `pkg.mod:callable`.
fn mount_app(app: &App) -> String {
    module_value(app)
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn secs(d: Duration) -> String {
    d.as_secs().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ini(text: &str) -> IniConfig {
        let ctx = uwsgi_ini::Context::for_file("/srv/site/uwsgi.ini", None, "/home/u");
        uwsgi_ini::parse(text, &ctx).unwrap_or_else(|e| panic!("{e}"))
    }

    fn opts(text: &str) -> Vec<(String, String)> {
        options(&ini(text))
            .into_iter()
            .map(|(n, _, v)| (n.to_owned(), v))
            .collect()
    }

    fn pair(n: &str, v: &str) -> (String, String) {
        (n.to_owned(), v.to_owned())
    }

    #[test]
    fn a_django_deployment_maps_option_by_option() {
        let got = opts(
            "[uwsgi]\nchdir = %d\nmodule = mysite.wsgi:application\nhome = /srv/venv\n\
             env = DJANGO_SETTINGS_MODULE=mysite.settings\nmaster = true\nprocesses = 4\n\
             threads = 2\nharakiri = 30\nmax-requests = 5000\nsocket = /run/mysite.sock\n\
             chmod-socket = 660\nvacuum = true\nlisten = 256\nuid = www-data\n",
        );
        assert_eq!(
            got,
            vec![
                pair("socket", "unix:/run/mysite.sock"),
                pair("chdir", "/srv/site/"),
                pair("env", "DJANGO_SETTINGS_MODULE=mysite.settings"),
                pair("module", "mysite.wsgi:application"),
                pair("processes", "4"),
                pair("threads", "2"),
                pair("python-home", "/srv/venv"),
                pair("user", "www-data"),
                pair("maximum-requests", "5000"),
                pair("request-timeout", "30"),
                pair("socket-mode", "0660"),
                pair("listen-backlog", "256"),
            ]
        );
    }

    #[test]
    fn protocols_scripts_mounts_and_callables() {
        let got = opts(
            "[uwsgi]\nfastcgi-socket = 127.0.0.1:9000\nwsgi-file = app.py\ncallable = app\n\
             mount = /api=api.wsgi\nmount = /adm=admin.wsgi:site\npythonpath = lib\n\
             socket-timeout = 9\nworker-reload-mercy = 20\nchown-socket = www-data\n",
        );
        assert_eq!(
            got,
            vec![
                pair("socket", "fcgi:127.0.0.1:9000"),
                pair("callable", "app"),
                pair("script", "/home/u/app.py"),
                pair("mount", "/api=/home/u/api.wsgi"),
                pair("mount", "/adm=admin.wsgi:site"),
                pair("processes", "1"),
                pair("threads", "1"),
                pair("python-path", "/home/u/lib"),
                pair("graceful-timeout", "20"),
                pair("socket-timeout", "9"),
                pair("socket-owner", "www-data"),
            ]
        );
        assert_eq!(
            opts("[uwsgi]\nsocket = :3031\nprotocol = scgi\nmodule = m\n")[0],
            pair("socket", "scgi:0.0.0.0:3031")
        );
    }

    #[test]
    fn the_note_lists_each_accepted_key_once() {
        let config = ini("[uwsgi]\nmaster = true\nvacuum\nplugins = python3\nmodule = m\n");
        let note = accepted_note("x.ini", &config.accepted).unwrap();
        assert!(
            note.ends_with("always runs: master, vacuum, plugins"),
            "{note}"
        );
        assert_eq!(accepted_note("x.ini", &[]), None);
    }
}
