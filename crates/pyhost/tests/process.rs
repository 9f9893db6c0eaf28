//! The per-process start-up every transport shares (`ProcessApps`, `initialize`, `Mode::pool`,
//! loading an app by module name), against a real embedded CPython. A test binary of its own:
//! one interpreter per process, and a test that changes the process's working directory (the
//! others use absolute paths only).

mod common;

use std::path::PathBuf;

use common::{Log, Recorder};
use pyhost::{AppSpec, Mode, NoBody, Outcome, ProcessApps, PythonConfig};

fn script(name: &str, source: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pyhost-process-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.py"));
    std::fs::write(&path, source).unwrap();
    path
}

/// The two tests that start Python take turns: a second `initialize` returns at once, while the
/// first may still be setting the process up, and an import racing it can fail.
static PYTHON: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn spec(script: PathBuf) -> AppSpec {
    AppSpec::script(script, "application")
}

const HELLO: &str = r#"
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'hello from ' + environ['PATH_INFO'].encode()]
"#;

#[test]
fn a_process_starts_python_then_its_apps_in_order_and_preloads_them() {
    let _turn = PYTHON.lock().unwrap_or_else(|e| e.into_inner());
    let good = script("good", HELLO);
    let broken = script("broken", "raise ImportError('no such thing')\n");
    let apps = ProcessApps::start(
        &PythonConfig::default(),
        [spec(good.clone()), spec(broken.clone())],
    )
    .expect("python starts");
    assert!(pyhost::is_initialized());
    assert_eq!(apps.len(), 2);
    assert_eq!(apps.get(0).map(|a| a.spec()), Some(&spec(good.clone())));
    assert_eq!(apps.get(1).map(|a| a.spec()), Some(&spec(broken.clone())));
    assert!(apps.get(2).is_none());

    // Preloading reports the script that failed, with its traceback in the log.
    let log = Log::default();
    let failed: Vec<PathBuf> = apps
        .preload_all(&log)
        .iter()
        .filter_map(|a| a.spec().source.script().map(PathBuf::from))
        .collect();
    assert_eq!(failed, vec![broken]);
    let lines = log.0.lock().unwrap().join("\n");
    assert!(lines.contains("RW-PY001"), "{lines}");
    assert!(lines.contains("ImportError: no such thing"), "{lines}");

    // The loaded app serves.
    let _thread = pyhost::register_thread().expect("python is up");
    let vars: [(&[u8], &[u8]); 2] = [(b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", b"/x")];
    let req = pyhost::Request {
        vars: &vars,
        mode: Mode::pool(1, 1),
        timeout: None,
    };
    let mut out = Recorder::default();
    let app = apps.get(0).expect("app 0");
    let outcome = pyhost::handle(app, &req, &mut NoBody, &mut out, &log);
    assert_eq!((outcome, out.status), (Outcome::Complete, Some(200)));
    assert_eq!(out.body, b"hello from /x");

    // Starting again with the same configuration is a no-op; another one is refused.
    assert!(ProcessApps::start(&PythonConfig::default(), []).is_ok());
    let other = PythonConfig {
        python_home: None,
        python_path: vec!["/nonexistent".into()],
    };
    let Err(err) = ProcessApps::start(&other, []) else {
        panic!("a second configuration must be refused");
    };
    assert!(err.to_string().contains("already initialised"), "{err}");
    if let Some(dir) = good.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn pool_mode_follows_processes_and_threads() {
    let mode = |p, t| {
        let m = Mode::pool(p, t);
        (m.multiprocess, m.multithread, m.run_once)
    };
    assert_eq!(mode(1, 1), (false, false, false));
    assert_eq!(mode(2, 1), (true, false, false));
    assert_eq!(mode(1, 16), (false, true, false));
    assert_eq!(mode(4, 4), (true, true, false));
}

#[test]
fn no_apps_before_start() {
    let apps = ProcessApps::default();
    assert!(apps.is_empty());
    assert_eq!(apps.iter().count(), 0);
}

fn get(app: &pyhost::App) -> (Outcome, Recorder, Log) {
    let vars: [(&[u8], &[u8]); 4] = [
        (b"REQUEST_METHOD", b"GET"),
        (b"PATH_INFO", b"/"),
        (b"SERVER_NAME", b"localhost"),
        (b"SERVER_PORT", b"80"),
    ];
    let req = pyhost::Request {
        vars: &vars,
        mode: Mode::default(),
        timeout: None,
    };
    let (mut rec, log) = (Recorder::default(), Log::default());
    let out = pyhost::handle(app, &req, &mut NoBody, &mut rec, &log);
    (out, rec, log)
}

#[test]
fn a_module_is_imported_from_the_working_directory_and_retried_until_it_loads() {
    let _turn = PYTHON.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("pyhost-module-{}", std::process::id()));
    let pkg = dir.join("rwsgi_modtest");
    std::fs::create_dir_all(&dir).unwrap();
    // The only test of this binary: nothing else depends on the working directory.
    std::env::set_current_dir(&dir).unwrap();
    pyhost::initialize(&PythonConfig::default()).expect("python starts");
    let app = pyhost::App::new(AppSpec::module("rwsgi_modtest.wsgi", "application"));
    assert_eq!(
        app.spec().source,
        pyhost::AppSource::Module("rwsgi_modtest.wsgi".into())
    );

    // Not there yet: a 500, the import error in the log with the module's name.
    let (out, rec, log) = get(&app);
    assert_eq!((out, rec.status), (Outcome::Failed, Some(500)));
    let text = log.all();
    assert!(
        text.contains("RW-PY001 failed to load WSGI module rwsgi_modtest.wsgi")
            && text.contains("ModuleNotFoundError"),
        "{text}"
    );

    // There, without the callable: named in the error.
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("__init__.py"), "").unwrap();
    std::fs::write(pkg.join("wsgi.py"), "app = None\n").unwrap();
    let (_, rec, log) = get(&app);
    assert_eq!(rec.status, Some(500));
    assert!(
        log.all()
            .contains("module rwsgi_modtest.wsgi has no callable named \"application\""),
        "{}",
        log.all()
    );

    // Fixed: the next request imports the new code (the module without the callable was
    // dropped from sys.modules), and serves from then on.
    std::fs::write(
        pkg.join("wsgi.py"),
        "import sys\n\
         def application(environ, start_response):\n\
         \x20   start_response('200 OK', [])\n\
         \x20   return [('first on sys.path: ' + sys.path[0]).encode()]\n",
    )
    .unwrap();
    let (out, rec, log) = get(&app);
    assert_eq!(out, Outcome::Complete, "{}", log.all());
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        String::from_utf8(rec.body).unwrap(),
        format!("first on sys.path: {}", cwd.display())
    );
    let _ = std::fs::remove_dir_all(&dir);
}
