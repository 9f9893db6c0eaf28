//! Request timeouts against a real embedded CPython: the exception lands in spinning Python code
//! (504, the thread serves again), a thread stuck in C is handed to the transport after the
//! grace, and a response already started is cut. A test binary of its own: the watchdog is per
//! process.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Log, Recorder};
use pyhost::{App, AppSpec, Mode, NoBody, Outcome, PythonConfig, Request, Stuck, Timeout};

/// The watchdog's log must outlive the request: one per test, leaked.
fn watchdog_log() -> &'static Log {
    Box::leak(Box::default())
}

#[derive(Default)]
struct Hook {
    called: AtomicBool,
    at: Mutex<Option<Instant>>,
    /// `Stuck::timed_out` calls: one per request that passed its timeout.
    timeouts: AtomicUsize,
}

impl Stuck for Hook {
    fn stuck(&self) {
        *self.at.lock().unwrap() = Some(Instant::now());
        self.called.store(true, Ordering::SeqCst);
    }

    fn timed_out(&self) {
        self.timeouts.fetch_add(1, Ordering::SeqCst);
    }
}

fn app(name: &str, source: &str) -> App {
    pyhost::initialize(&PythonConfig::default()).expect("python starts");
    let dir = std::env::temp_dir().join(format!("pyhost-timeout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script: PathBuf = dir.join(format!("{name}.py"));
    std::fs::write(&script, source).unwrap();
    App::new(AppSpec::script(script, "application"))
}

/// One GET of `path` with a request timeout of `after`.
fn get(
    app: &App,
    path: &str,
    after: Duration,
    hook: &Hook,
) -> (Outcome, Recorder, Log, &'static Log) {
    let vars: [(&[u8], &[u8]); 3] = [
        (b"REQUEST_METHOD", b"GET"),
        (b"REQUEST_URI", path.as_bytes()),
        (b"PATH_INFO", path.as_bytes()),
    ];
    let watchdog = watchdog_log();
    let req = Request {
        vars: &vars,
        mode: Mode::pool(1, 4),
        timeout: Some(Timeout {
            after,
            log: watchdog,
            stuck: hook,
        }),
    };
    let mut rec = Recorder::default();
    let log = Log::default();
    let outcome = pyhost::handle(app, &req, &mut NoBody, &mut rec, &log);
    (outcome, rec, log, watchdog)
}

const APP: &str = r#"
import time

def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/spin':
        n = 0
        while True:
            n += 1
    if path == '/swallow':
        while True:
            try:
                while True:
                    pass
            except Exception:
                pass
    if path == '/sleep':
        time.sleep(6)
    if path == '/late':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return late()
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'hello']

def late():
    yield b'first'
    while True:
        pass
"#;

#[test]
fn spinning_python_gets_504_and_the_thread_serves_again() {
    let app = app("spin", APP);
    let hook = Hook::default();
    let started = Instant::now();
    let (outcome, rec, log, watchdog) = get(&app, "/spin", Duration::from_secs(1), &hook);
    let took = started.elapsed();
    assert_eq!(outcome, Outcome::TimedOut);
    assert_eq!(rec.status, Some(504));
    assert!(took < Duration::from_secs(3), "{took:?}");
    let stack = watchdog.all();
    assert!(
        stack.contains("RW-PY040 request GET /spin timed out"),
        "{stack}"
    );
    assert!(
        stack.contains("spin.py\", line 8, in application"),
        "{stack}"
    );
    assert!(log.all().contains("RW-PY041"), "{}", log.all());
    assert!(!hook.called.load(Ordering::SeqCst));
    // The same thread serves again, with nothing left pending for it.
    for _ in 0..50 {
        let (outcome, rec, _, _) = get(&app, "/hello", Duration::from_secs(1), &hook);
        assert_eq!(
            (outcome, rec.body.as_slice()),
            (Outcome::Complete, &b"hello"[..])
        );
    }
    assert_eq!(hook.timeouts.load(Ordering::SeqCst), 1, "told once");
}

#[test]
fn except_exception_does_not_swallow_the_timeout() {
    let app = app("swallow", APP);
    let hook = Hook::default();
    let (outcome, rec, _, _) = get(&app, "/swallow", Duration::from_secs(1), &hook);
    assert_eq!((outcome, rec.status), (Outcome::TimedOut, Some(504)));
}

#[test]
fn a_started_response_is_cut() {
    let app = app("late", APP);
    let hook = Hook::default();
    let (outcome, rec, log, _) = get(&app, "/late", Duration::from_secs(1), &hook);
    assert_eq!(outcome, Outcome::Aborted);
    assert_eq!(
        (rec.status, rec.body.as_slice()),
        (Some(200), &b"first"[..])
    );
    assert!(log.all().contains("response is cut"), "{}", log.all());
}

#[test]
fn a_thread_stuck_in_c_is_handed_to_the_transport_after_the_grace() {
    let app = app("sleep", APP);
    let hook = Hook::default();
    let started = Instant::now();
    let (outcome, _, log, watchdog) = get(&app, "/sleep", Duration::from_secs(1), &hook);
    let stuck_at = hook.at.lock().unwrap().expect("the transport's hook ran") - started;
    // 1 s timeout + 2 s grace (the minimum), each up to two watchdog ticks late.
    assert!(
        stuck_at >= Duration::from_secs(3) && stuck_at < Duration::from_millis(4500),
        "{stuck_at:?}"
    );
    assert!(watchdog.all().contains("RW-PY042"), "{}", watchdog.all());
    // time.sleep(6) returned: the exception landed at the next bytecode; the thread is back.
    assert_eq!(outcome, Outcome::TimedOut);
    assert!(log.all().contains("RW-PY043"), "{}", log.all());
    assert_eq!(pyhost::stuck_threads(), 0);
    assert_eq!(
        hook.timeouts.load(Ordering::SeqCst),
        1,
        "one timeout, not two"
    );
}

#[test]
fn requests_within_their_timeout_are_untouched() {
    let app = app("quick", APP);
    let hook = Hook::default();
    for _ in 0..2000 {
        let (outcome, rec, _, _) = get(&app, "/hello", Duration::from_millis(300), &hook);
        assert_eq!((outcome, rec.status), (Outcome::Complete, Some(200)));
    }
    assert!(!hook.called.load(Ordering::SeqCst));
    assert_eq!(hook.timeouts.load(Ordering::SeqCst), 0);
}
