//! The per-process start-up every transport shares (`ProcessApps`, `initialize`, `Mode::pool`),
//! against a real embedded CPython. A test binary of its own: one interpreter per process.

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

fn spec(script: PathBuf) -> AppSpec {
    AppSpec {
        script,
        callable: "application".into(),
    }
}

const HELLO: &str = r#"
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'hello from ' + environ['PATH_INFO'].encode()]
"#;

#[test]
fn a_process_starts_python_then_its_apps_in_order_and_preloads_them() {
    let good = script("good", HELLO);
    let broken = script("broken", "raise ImportError('no such thing')\n");
    let apps = ProcessApps::start(
        &PythonConfig::default(),
        [spec(good.clone()), spec(broken.clone())],
    )
    .expect("python starts");
    assert!(pyhost::is_initialized());
    assert_eq!(apps.len(), 2);
    assert_eq!(apps.get(0).map(|a| &a.spec().script), Some(&good));
    assert_eq!(apps.get(1).map(|a| &a.spec().script), Some(&broken));
    assert!(apps.get(2).is_none());

    // Preloading reports the script that failed, with its traceback in the log.
    let log = Log::default();
    let failed: Vec<PathBuf> = apps
        .preload_all(&log)
        .iter()
        .map(|a| a.spec().script.clone())
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
