//! Checks before nginx starts, each turning a confusing failure later (a 500 with a permission
//! error in the log, a `ModuleNotFoundError` on the first request, curl talking to some other
//! server on the port) into one sentence now.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::site::{App, Site};
use crate::users;

/// Nothing listens on the address yet. (nginx would say so too, but only after printing its
/// own start-up lines; and a readiness probe must never mistake another server for ours.)
pub fn port_free(site: &Site) -> Result<(), String> {
    TcpListener::bind(site.listen_addr())
        .map(drop)
        .map_err(|e| {
            format!(
                "cannot listen on {}:{} ({e}): pick another port with --port",
                site.server.host, site.server.port
            )
        })
}

/// For `--module`: the module can be found on the app's sys.path (its package is imported to
/// look, as Python does). Returns the module's file, for the access check. Skipped (`Ok(None)`)
/// when there is no interpreter to ask.
pub fn module_file(site: &Site) -> Result<Option<PathBuf>, String> {
    let App::Module(name) = &site.app else {
        return Ok(None);
    };
    let python = site
        .python_home
        .as_ref()
        .map(|h| h.join("bin/python3"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"));
    if !python.exists() {
        return Ok(None);
    }
    const FIND: &str = "import importlib.util, sys
sys.path[:0] = sys.argv[2:]
name = sys.argv[1]
try:
    spec = importlib.util.find_spec(name)
except ModuleNotFoundError as e:
    if e.name and (name == e.name or name.startswith(e.name + '.')):
        sys.exit(4)
    print(f'{type(e).__name__}: {e}')
    sys.exit(3)
except Exception as e:
    print(f'{type(e).__name__}: {e}')
    sys.exit(3)
if spec is None:
    sys.exit(4)
print(spec.origin or '')
";
    let out = Command::new(&python)
        .arg("-c")
        .arg(FIND)
        .arg(name)
        .args(&site.python_path)
        // The workers get an empty environment from nginx: look the way they will.
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .current_dir(&site.python_path[0])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let path = site
        .python_path
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    match out.status.code() {
        Some(0) if said.is_empty() => Ok(None),
        Some(0) => Ok(Some(PathBuf::from(said))),
        Some(4) => Err(format!(
            "no module named {name} on the app's Python path ({path}): run rwsgi serve in the \
             directory that holds the package (for Django, where manage.py is), or add that \
             directory with --python-path"
        )),
        Some(3) => Err(format!("looking for {name} failed: {said}")),
        _ => Err(format!(
            "{} could not look for {name}: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// nginx's worker user (when nginx starts as root) can enter the server directory `dir` and
/// read the app, its Python and the static directories.
pub fn readable(site: &Site, module_file: Option<PathBuf>, dir: &Path) -> Result<(), String> {
    let Some(user) = &site.user else {
        return Ok(());
    };
    if users::lookup(user).is_some_and(|ids| ids.uid == 0) {
        return Ok(());
    }
    // The server directory first: the workers open the --module script and the daemon socket
    // there.
    let mut paths: Vec<PathBuf> = vec![dir.to_path_buf()];
    if let App::Script(p) = &site.app {
        paths.push(p.clone());
    }
    paths.extend(module_file);
    paths.extend(site.python_home.iter().cloned());
    paths.extend(site.python_path.iter().cloned());
    paths.extend(site.statics.iter().map(|s| s.dir.clone()));
    match users::first_unreadable(user, &paths)? {
        None => Ok(()),
        Some(p) => Err(users::unreadable_message(user, &p)),
    }
}
