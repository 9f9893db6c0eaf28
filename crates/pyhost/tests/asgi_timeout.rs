//! Request timeouts for ASGI apps (asgi/deadline.rs) and the import gate, on a real interpreter
//! and loop: the task cancelled at the deadline (504, or the response cut), the loop serving on;
//! a coroutine blocking the loop taken over from the monitor thread; an app held back by its
//! gate answering 503 with Retry-After.
//!
//! uvicorn and granian have no request timeout for ASGI apps (a stuck request holds its
//! connection until the client or a proxy gives up); hypercorn cancels the task after its
//! `--read-timeout`-like settings only for reading, not for the app.

mod asgi_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use asgi_support::*;
use pyhost::asgi::{AsgiConfig, ImportGate, Kind, LoopKind, Timeout};
use pyhost::Outcome;

const SLOW: &str = r#"
import asyncio, time

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    path = scope["path"]
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await asyncio.sleep(30)
    elif path == "/block":
        time.sleep(3)  # blocks the loop: no cancel can reach it
    elif path == "/block-then-return":
        time.sleep(3)
        return  # (without a response: the server had answered for it)
    elif path == "/slow":
        await asyncio.sleep(30)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done"})
"#;

fn timeout(after: Duration, taken: Arc<AtomicUsize>) -> Option<Timeout> {
    Some(Timeout {
        after,
        take_over: Box::new(move || {
            taken.fetch_add(1, Ordering::SeqCst);
        }),
    })
}

fn timed(h: &Host, path: &str, after: Duration, taken: &Arc<AtomicUsize>) -> Arc<Shared> {
    let (t, shared) = TestTransport::new(&[]);
    submit_timed(
        h,
        Kind::Http,
        vars("GET", path, &[]),
        t,
        timeout(after, Arc::clone(taken)),
    );
    shared
}

#[test]
fn a_task_past_its_timeout_is_cancelled_and_answered_504() {
    let h = host("timeout_slow", SLOW);
    let taken = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let r = timed(&h, "/slow", Duration::from_millis(300), &taken);
    let rec = r.finished();
    assert_eq!(rec.status, Some(504), "{rec:?}");
    assert_eq!(rec.outcome, Some(Outcome::TimedOut));
    assert_eq!(rec.finish_calls, 1);
    drop(rec);
    assert!(start.elapsed() < Duration::from_secs(5));
    // The stack says where the task waited.
    assert!(h
        .log
        .wait("RW-PY045 ASGI request GET /slow passed its request timeout"));
    assert!(h.log.has("timeout_slow.py\", line"), "{}", h.log.all());
    // Cancelled quietly (no RW-PY010 traceback), and the loop serves on.
    assert!(!h.log.has("RW-PY010"), "{}", h.log.all());
    let again = timed(&h, "/", Duration::from_secs(5), &taken);
    assert_eq!(again.finished().text(), "done");
    assert_eq!(taken.load(Ordering::SeqCst), 0);
    assert!(h.host.stop());
}

#[test]
fn a_started_response_past_its_timeout_is_cut() {
    let h = host("timeout_stream", SLOW);
    let taken = Arc::new(AtomicUsize::new(0));
    let r = timed(&h, "/stream", Duration::from_millis(300), &taken);
    let rec = r.finished();
    assert_eq!(rec.status, Some(200));
    assert_eq!(rec.text(), "first");
    assert_eq!(rec.outcome, Some(Outcome::Aborted));
    drop(rec);
    assert!(h.log.wait("its response is cut"));
    assert!(h.host.stop());
}

#[test]
fn a_coroutine_blocking_the_loop_is_taken_over_by_the_monitor() {
    let h = host("timeout_block", SLOW);
    let taken = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let r = timed(&h, "/block", Duration::from_millis(200), &taken);
    // The timer cannot run while time.sleep(3) holds the loop: after the grace (2 s at least)
    // the monitor calls the transport's take-over.
    while taken.load(Ordering::SeqCst) == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", h.log.all());
        std::thread::sleep(Duration::from_millis(20));
    }
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    assert!(h
        .log
        .has("RW-PY046 ASGI request GET /block passed its request timeout"));
    // When the loop comes back, the timer still cancels the task (the monitor answered: the
    // response is ended as cut, never sent twice).
    let rec = r.finished();
    assert_eq!(rec.outcome, Some(Outcome::Aborted), "{rec:?}");
    assert_eq!(rec.status, None);
    drop(rec);
    assert_eq!(taken.load(Ordering::SeqCst), 1);
    assert!(h.host.stop());
}

#[test]
fn a_taken_over_request_whose_app_returns_is_not_answered_again() {
    let h = host("timeout_block_return", SLOW);
    let taken = Arc::new(AtomicUsize::new(0));
    let r = timed(&h, "/block-then-return", Duration::from_millis(200), &taken);
    let rec = r.finished();
    assert_eq!(
        (rec.status, rec.outcome),
        (None, Some(Outcome::Aborted)),
        "{rec:?}"
    );
    drop(rec);
    assert_eq!(taken.load(Ordering::SeqCst), 1);
    assert!(
        h.log.has("the server had answered for it"),
        "{}",
        h.log.all()
    );
    assert!(!h.log.has("RW-PY015"), "{}", h.log.all());
    assert!(h.host.stop());
}

#[test]
fn a_response_complete_in_time_is_not_timed_out() {
    let h = host("timeout_fast", SLOW);
    let taken = Arc::new(AtomicUsize::new(0));
    for _ in 0..20 {
        let r = timed(&h, "/", Duration::from_millis(300), &taken);
        assert_eq!(r.finished().status, Some(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(!h.log.has("RW-PY045"), "{}", h.log.all());
    assert_eq!(taken.load(Ordering::SeqCst), 0);
    assert!(h.host.stop());
}

/// A gate that holds every app back for `wait` the first time, then lets it import.
struct Gate {
    asked: AtomicUsize,
    watched: Mutex<Vec<usize>>,
    wait: Duration,
    seen: Mutex<Option<mpsc::Sender<()>>>,
}

impl ImportGate for Gate {
    fn admit(&self, _app: usize) -> Option<Duration> {
        (self.asked.fetch_add(1, Ordering::SeqCst) == 0).then_some(self.wait)
    }
    fn watch(&self, app: usize, import: &mut dyn FnMut()) {
        import();
        self.watched.lock().unwrap().push(app);
        if let Some(tx) = self.seen.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }
}

#[test]
fn an_app_held_back_by_its_gate_answers_503_then_imports() {
    let (tx, rx) = mpsc::channel();
    let gate = Arc::new(Gate {
        asked: AtomicUsize::new(0),
        watched: Mutex::new(Vec::new()),
        wait: Duration::from_millis(1500),
        seen: Mutex::new(Some(tx)),
    });
    let h = host_with(
        "gated",
        SLOW,
        AsgiConfig {
            loop_kind: LoopKind::Asyncio,
            import_gate: Some(gate.clone()),
            ..AsgiConfig::default()
        },
    );
    // Held back at start: 503 with the time left.
    let r = request(&h, "GET", "/", &[]);
    let rec = r.finished();
    assert_eq!(rec.status, Some(503), "{rec:?}");
    assert_eq!(rec.header("retry-after").as_deref(), Some("2"));
    drop(rec);
    // Not asked again before its time; then the next request asks, and the gate lets it
    // import, under its watch.
    assert_eq!(request(&h, "GET", "/", &[]).finished().status, Some(503));
    assert_eq!(gate.asked.load(Ordering::SeqCst), 1);
    std::thread::sleep(Duration::from_millis(1600));
    let r = request(&h, "GET", "/", &[]);
    assert_eq!(r.finished().text(), "done");
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(*gate.watched.lock().unwrap(), vec![0]);
    assert!(h.host.stop());
}

const TASKS: &str = r#"
import asyncio, gc, weakref

TASKS = []

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    if scope["path"] == "/alive":
        gc.collect()
        alive = sum(1 for t in TASKS if t() is not None)
        body = str(alive).encode()
    else:
        TASKS.append(weakref.ref(asyncio.current_task()))
        if scope["path"] == "/fail":
            raise RuntimeError("boom")
        body = b"ok"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"#;

#[test]
fn finished_tasks_are_freed_timed_or_not() {
    // The connection keeps its task (for the timeout's cancel) only until the task is done: a
    // task that raised holds frames that hold the connection, a cycle gc cannot see through Rust.
    let h = host("tasks_freed", TASKS);
    let taken = Arc::new(AtomicUsize::new(0));
    for path in ["/", "/fail"] {
        for _ in 0..10 {
            drop(request(&h, "GET", path, &[]).finished());
            drop(timed(&h, path, Duration::from_secs(30), &taken).finished());
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    let r = request(&h, "GET", "/alive", &[]);
    assert_eq!(r.finished().text(), "0", "{}", h.log.all());
    assert!(h.host.stop());
}
