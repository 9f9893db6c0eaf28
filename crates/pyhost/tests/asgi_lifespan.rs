//! Lifespan (ASGI lifespan spec 2.0) through the host: startup once per loop before the first
//! request, `state` copied into each request, shutdown on stop, "auto" mode for apps without
//! lifespan. Cases follow uvicorn's `tests/test_lifespan.py` (named per test).

mod asgi_support;

use std::time::Duration;

use asgi_support::*;
use pyhost::asgi::{AsgiConfig, LoopKind};
use pyhost::Outcome;

/// Writes what the app saw to a file next to it: the host's stop() happens after the last
/// request, so only a file can tell the test about shutdown.
const LIFESPAN: &str = r#"
import os, asyncio
events = []
LOG = os.path.join(os.path.dirname(__file__), "events.txt")
def note(e):
    events.append(e)
    with open(LOG, "a") as f:
        f.write(e + "\n")
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        m = await receive()
        note(m["type"])
        scope["state"]["db"] = "connected"
        await asyncio.sleep(0.05)   # a startup that takes a moment: requests wait for it
        await send({"type": "lifespan.startup.complete"})
        m = await receive()
        note(m["type"])
        await send({"type": "lifespan.shutdown.complete"})
        return
    note("request:" + scope["state"].get("db", "-"))
    scope["state"]["db"] = "changed by a request"
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": ",".join(events).encode()})
"#;

fn events_file(name: &str) -> std::path::PathBuf {
    script(name, "").with_file_name("events.txt")
}

/// uvicorn test_lifespan_on / test_lifespan_auto: startup before the first request, shutdown
/// at stop; plus the spec's `state`, copied per request (a request's change stays its own).
#[test]
fn startup_before_the_first_request_state_per_request_shutdown_at_stop() {
    let _ = std::fs::remove_file(events_file("lifespan"));
    let h = host("lifespan", LIFESPAN);
    let r = request(&h, "GET", "/", &[]);
    assert_eq!(
        r.lock().text(),
        "lifespan.startup,request:connected",
        "{}",
        h.log.all()
    );
    let r = request(&h, "GET", "/", &[]);
    assert_eq!(
        r.lock().text(),
        "lifespan.startup,request:connected,request:connected"
    );
    assert!(h.host.stop());
    let events = std::fs::read_to_string(events_file("lifespan")).unwrap();
    assert_eq!(
        events.lines().collect::<Vec<_>>(),
        [
            "lifespan.startup",
            "request:connected",
            "request:connected",
            "lifespan.shutdown"
        ]
    );
}

/// uvicorn test_lifespan_auto_with_error: an app that fails on the lifespan scope (Django)
/// is served anyway, with an info line.
#[test]
fn apps_without_lifespan_are_served() {
    let h = host(
        "no_lifespan",
        r#"
async def app(scope, receive, send):
    if scope["type"] != "http":
        raise ValueError("Django can only handle ASGI/HTTP connections, not lifespan.")
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": b"served"})
"#,
    );
    let r = request(&h, "GET", "/", &[]);
    assert_eq!(r.lock().text(), "served");
    assert!(h.log.has("[info] RW-PY012"), "{}", h.log.all());
    assert!(h.log.has("not lifespan"), "{}", h.log.all());
    assert!(!h.log.has("[error]"), "{}", h.log.all());
    assert!(h.host.stop());
}

/// uvicorn test_lifespan_scope_asgi3app: the lifespan scope is exactly type, asgi, state; an
/// app that returns without answering is served (it has nothing to start).
#[test]
fn lifespan_scope_and_an_app_that_just_returns() {
    let h = host(
        "lifespan_scope",
        r#"
seen = []
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        seen.append(repr(scope))
        return
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": seen[0].encode()})
"#,
    );
    let r = request(&h, "GET", "/", &[]);
    assert_eq!(
        r.lock().text(),
        "{'type': 'lifespan', 'asgi': {'version': '3.0', 'spec_version': '2.0'}, 'state': {}}"
    );
    assert!(h.host.stop());
}

/// uvicorn test_lifespan_with_failed_startup (both with and without the app re-raising):
/// the message is logged and every request is answered 503.
#[test]
fn failed_startup_answers_503_and_logs_why() {
    for reraise in [false, true] {
        let name = format!("startup_failed_{reraise}");
        let h = host(
            &name,
            &format!(
                r#"
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({{"type": "lifespan.startup.failed", "message": "the database is down"}})
        if {reraise}:
            raise RuntimeError("re-raised")
        return
    raise AssertionError("never called")
"#,
                reraise = if reraise { "True" } else { "False" }
            ),
        );
        let r = request(&h, "GET", "/", &[]);
        let rec = r.lock();
        assert_eq!(rec.status, Some(503));
        assert_eq!(rec.outcome, Some(Outcome::Failed));
        drop(rec);
        assert!(h.log.has("RW-PY011"), "{}", h.log.all());
        assert!(h.log.has("the database is down"), "{}", h.log.all());
        assert!(!h.log.has("never called"), "{}", h.log.all());
        assert!(h.host.stop());
    }
}

/// uvicorn test_lifespan_with_failed_shutdown: logged, and the loop still stops.
#[test]
fn failed_shutdown_is_logged_and_stop_completes() {
    let h = host(
        "shutdown_failed",
        r#"
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": "could not flush"})
        return
"#,
    );
    assert!(h.host.stop());
    assert!(
        h.log
            .has("RW-PY013 lifespan shutdown failed: could not flush"),
        "{}",
        h.log.all()
    );
}

/// A shutdown that never answers is bounded by the host's shutdown timeout.
#[test]
fn a_hanging_shutdown_is_cut_at_the_timeout() {
    let h = host_with(
        "shutdown_hangs",
        r#"
import asyncio
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await asyncio.sleep(3600)
"#,
        AsgiConfig {
            loop_kind: LoopKind::Asyncio,
            shutdown_timeout: Duration::from_millis(300),
            ..AsgiConfig::default()
        },
    );
    let started = std::time::Instant::now();
    assert!(h.host.stop());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        h.log.has("RW-PY013 lifespan shutdown did not finish"),
        "{}",
        h.log.all()
    );
}

/// An import error is logged once at start and retried by requests (500 until fixed), as in
/// WSGI mode; once the script is fixed the lifespan starts and requests are served.
#[test]
fn import_errors_are_retried_by_requests() {
    let path = script("broken", "import does_not_exist\n");
    init();
    let log = std::sync::Arc::new(Log::default());
    let host = pyhost::asgi::AsgiHost::start(
        vec![pyhost::AppSpec::script(path.clone(), "app")],
        AsgiConfig {
            loop_kind: LoopKind::Asyncio,
            ..AsgiConfig::default()
        },
        log.clone(),
    )
    .unwrap();
    let h = Host { host, log };
    assert!(h.log.has("RW-PY001"), "{}", h.log.all());
    let r = request(&h, "GET", "/", &[]);
    assert_eq!(r.lock().status, Some(500));
    std::fs::write(&path, HELLO_LIFESPAN).unwrap();
    let r = request(&h, "GET", "/", &[]);
    assert_eq!(r.lock().text(), "started");
    assert!(h.host.stop());
}

const HELLO_LIFESPAN: &str = r#"
started = []
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        started.append(1)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": b"started" if started else b"no"})
"#;

/// Lifespan off: no lifespan call at all (uvicorn test_lifespan_off).
#[test]
fn lifespan_off_never_calls_the_app_with_it() {
    let h = host_with(
        "lifespan_off",
        r#"
async def app(scope, receive, send):
    assert scope["type"] == "http", scope["type"]
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": b"ok"})
"#,
        AsgiConfig {
            loop_kind: LoopKind::Asyncio,
            lifespan: false,
            ..AsgiConfig::default()
        },
    );
    let r = request(&h, "GET", "/", &[]);
    assert_eq!(r.lock().text(), "ok");
    assert!(!h.log.has("RW-PY012"), "{}", h.log.all());
    assert!(h.host.stop());
}

/// Stopping waits for tasks still running after their response (a background task), then runs
/// the lifespan shutdown: nothing is cut while it has time (uvicorn waits for them too).
#[test]
fn stop_waits_for_running_tasks_before_the_lifespan_shutdown() {
    let _ = std::fs::remove_file(events_file("background"));
    let h = host(
        "background",
        r#"
import asyncio, os
LOG = os.path.join(os.path.dirname(__file__), "events.txt")
def note(e):
    with open(LOG, "a") as f:
        f.write(e + "\n")
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        note("shutdown")
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": b"answered"})
    await asyncio.sleep(0.3)      # the background work goes on after the response
    note("background done")
"#,
    );
    let r = request(&h, "GET", "/", &[]);
    assert_eq!(r.lock().text(), "answered");
    assert!(h.host.stop());
    let events = std::fs::read_to_string(events_file("background")).unwrap();
    assert_eq!(
        events.lines().collect::<Vec<_>>(),
        ["background done", "shutdown"]
    );
}

/// A task that outlives the shutdown timeout is left behind with a log line, and stop() returns.
#[test]
fn a_task_that_never_ends_is_cut_at_the_timeout() {
    let h = host_with(
        "endless",
        r#"
import asyncio
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": b"ok"})
    await asyncio.sleep(3600)
"#,
        AsgiConfig {
            loop_kind: LoopKind::Asyncio,
            shutdown_timeout: Duration::from_millis(300),
            ..AsgiConfig::default()
        },
    );
    let r = request(&h, "GET", "/", &[]);
    assert_eq!(r.lock().text(), "ok");
    assert!(h.host.stop());
    assert!(
        h.log.has("RW-PY014 1 ASGI connection(s) still running"),
        "{}",
        h.log.all()
    );
}
