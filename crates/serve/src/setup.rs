//! Writing a server directory (nginx.conf, the `--module` script, temp and log directories),
//! checking it with `nginx -t`, and `--setup-only`'s `nginxctl` script.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::conf::{self, Layout};
use crate::site::{App, Site};

/// Writes everything nginx needs into `layout.dir` (which exists). Files are world-readable and
/// directories enterable: nginx's workers run as another user when nginx starts as root.
pub fn write(site: &Site, layout: &Layout) -> Result<(), String> {
    let err = |what: &Path, e: std::io::Error| format!("cannot write {}: {e}", what.display());
    for d in layout.dirs() {
        fs::create_dir_all(&d).map_err(|e| err(&d, e))?;
        chmod(&d, 0o755).map_err(|e| err(&d, e))?;
    }
    if let App::Module(m) = &site.app {
        let shim = layout.module_shim();
        fs::write(&shim, conf::module_shim(m, &site.callable)).map_err(|e| err(&shim, e))?;
        chmod(&shim, 0o644).map_err(|e| err(&shim, e))?;
    }
    let text = conf::render(site, layout)?;
    let path = layout.conf();
    fs::write(&path, text).map_err(|e| err(&path, e))?;
    chmod(&path, 0o644).map_err(|e| err(&path, e))
}

/// The server directory is 0755: nginx's workers (another user when started as root) open the
/// `--module` script and the daemon socket in it.
pub fn make_enterable(dir: &Path) -> Result<(), String> {
    chmod(dir, 0o755).map_err(|e| format!("cannot chmod {}: {e}", dir.display()))
}

fn chmod(p: &Path, mode: u32) -> std::io::Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

/// The arguments that point nginx at the directory: `-p DIR -e LOG -c DIR/nginx.conf`.
pub fn nginx_args(layout: &Layout) -> Vec<String> {
    vec![
        "-p".into(),
        layout.dir.display().to_string(),
        "-e".into(),
        layout.error_log().display().to_string(),
        "-c".into(),
        layout.conf().display().to_string(),
    ]
}

/// `nginx -t` on the written configuration; on failure, nginx's own message (file, line, what
/// is wrong) and a hint when the module was built for another nginx.
pub fn check(site: &Site, layout: &Layout) -> Result<(), String> {
    let out = Command::new(&site.nginx.bin)
        .arg("-t")
        .arg("-q")
        .args(nginx_args(layout))
        .args(["-g", "daemon off;"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", site.nginx.bin.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let mut msg = format!(
        "nginx -t refused the generated configuration ({}):\n{}",
        layout.conf().display(),
        said.trim_end()
    );
    if said.contains("instead of") || said.contains("not binary compatible") {
        msg.push_str(&format!(
            "\nThe module {} was built for another nginx than {} (nginx {}): build it for this \
             one (docs/building.md) and pass it with --nginx-module.",
            site.module.display(),
            site.nginx.bin.display(),
            site.nginx.version
        ));
    }
    Err(msg)
}

/// `--setup-only`: the directory's `nginxctl`, to start and stop that nginx by hand, from an
/// init script, or under systemd (`nginxctl foreground`).
pub fn write_ctl(site: &Site, layout: &Layout) -> Result<(), String> {
    let args = nginx_args(layout)
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let script = format!(
        r#"#!/bin/sh
# Written by `rwsgi serve --setup-only` (rwsgi {version}): controls the nginx that serves
# {app} from this directory.
#
#   nginxctl start        start nginx in the background
#   nginxctl foreground   run nginx in the foreground (systemd: ExecStart=... foreground)
#   nginxctl stop         stop gracefully (in-flight requests finish)
#   nginxctl reload       re-read nginx.conf; new processes load the app's code again
#   nginxctl restart      stop, then start
#   nginxctl configtest   nginx -t
set -e
NGINX={nginx}
run() {{ "$NGINX" {args} "$@"; }}
case "${{1:-}}" in
    start) run ;;
    foreground) exec "$NGINX" {args} -g 'daemon off;' ;;
    stop) run -s quit ;;
    reload) run -s reload ;;
    restart)
        if [ -s {pid} ]; then
            pid=$(cat {pid})
            run -s quit
            while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        fi
        run ;;
    configtest) run -t ;;
    *) echo "usage: $0 start|foreground|stop|reload|restart|configtest" >&2; exit 2 ;;
esac
"#,
        version = env!("CARGO_PKG_VERSION"),
        app = site.app_name(),
        nginx = shell_quote(&site.nginx.bin.display().to_string()),
        pid = shell_quote(&layout.pid().display().to_string()),
    );
    let path = layout.dir.join("nginxctl");
    fs::write(&path, script).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    chmod(&path, 0o755).map_err(|e| format!("cannot chmod {}: {e}", path.display()))
}

/// `'text'` for sh, with embedded single quotes closed, escaped and reopened.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/a b"), "'/a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
