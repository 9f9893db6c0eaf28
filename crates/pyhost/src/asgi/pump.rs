//! The loop thread's side of the inbox: the callback `loop.add_reader` calls when the eventfd is
//! readable. It takes every queued event and turns each into asyncio work: a new connection
//! becomes a task running the app, a transport event completes the future a `receive()` or
//! `send()` waits on. It also keeps each app's readiness (loaded, lifespan started) and holds
//! the connections waiting for it.
//!
//! Re-entrancy: nothing called from here runs Python code synchronously (tasks and future
//! callbacks are scheduled by asyncio), so the pump's borrow is never taken twice; the lifespan
//! and connection objects reach it again only from their own callbacks, later.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::conn::{Conn, ERROR_500, ERROR_503};
use super::fdwatch::Watch;
use super::inbox::{Event, Inbox, NewConn};
use super::lifespan::Lifespan;
use super::{scope, ImportGate, Kind};
use crate::log::{format_exception, ErrorLog, Level};
use crate::{App, Outcome};

/// An app's readiness on this loop.
enum Phase {
    /// Not imported yet, or the import failed (each new request tries again, as WSGI does).
    Unloaded,
    /// Its lifespan startup runs (filling this state); requests wait in `Slot::waiting`.
    Starting(Py<PyDict>),
    /// Serving; requests get a copy of this lifespan state.
    Ready(Py<PyDict>),
    /// `lifespan.startup.failed`: every request is answered 503.
    Failed,
}

struct Slot {
    app: App,
    /// The app as an ASGI 3 single callable, once loaded (see `single_callable`).
    callable: Option<Py<PyAny>>,
    phase: Phase,
    lifespan: Option<Py<Lifespan>>,
    waiting: Vec<u64>,
    /// The import gate holds the app back until then (its requests get 503).
    held_until: Option<Instant>,
}

#[pyclass(module = "rwsgi", name = "Pump")]
pub(crate) struct Pump {
    inbox: Arc<Inbox>,
    event_loop: Py<PyAny>,
    log: Arc<dyn ErrorLog>,
    apps: Vec<Slot>,
    conns: HashMap<u64, Py<Conn>>,
    /// Descriptors given to `AsgiHost::watch`, for `unwatch`.
    watches: HashMap<std::os::fd::RawFd, Py<Watch>>,
    use_lifespan: bool,
    stopping: bool,
    /// The lifespans were sent `shutdown` (stopping, after the connections ended).
    lifespans_told: bool,
    shutdowns_pending: usize,
    shutdown_timeout: f64,
    gate: Option<Arc<dyn ImportGate>>,
}

impl Pump {
    pub(crate) fn new(
        inbox: Arc<Inbox>,
        event_loop: Py<PyAny>,
        log: Arc<dyn ErrorLog>,
        apps: Vec<App>,
        use_lifespan: bool,
        shutdown_timeout: f64,
        gate: Option<Arc<dyn ImportGate>>,
    ) -> Pump {
        Pump {
            inbox,
            event_loop,
            log,
            apps: apps
                .into_iter()
                .map(|app| Slot {
                    app,
                    callable: None,
                    phase: Phase::Unloaded,
                    lifespan: None,
                    waiting: Vec::new(),
                    held_until: None,
                })
                .collect(),
            conns: HashMap::new(),
            watches: HashMap::new(),
            use_lifespan,
            stopping: false,
            lifespans_told: false,
            shutdowns_pending: 0,
            shutdown_timeout,
            gate,
        }
    }

    /// Imports every app and starts its lifespan, before the first request.
    pub(crate) fn start_apps(me: &Py<Pump>, py: Python<'_>) {
        let mut p = me.bind(py).borrow_mut();
        for i in 0..p.apps.len() {
            p.load(me, py, i);
        }
    }

    /// Imports app `i` if needed (and the import gate lets it) and starts its lifespan. Logs a
    /// failed import (RW-PY001).
    fn load(&mut self, me: &Py<Pump>, py: Python<'_>, i: usize) {
        let slot = &mut self.apps[i];
        if !matches!(slot.phase, Phase::Unloaded) {
            return;
        }
        // Held back: not asked again before the time the gate gave.
        if slot.held_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        slot.held_until = None;
        let imported = match &self.gate {
            Some(gate) => {
                if let Some(wait) = gate.admit(i) {
                    slot.held_until = Some(Instant::now() + wait);
                    return;
                }
                let mut got = None;
                gate.watch(i, &mut || got = Some(slot.app.get(py)));
                match got {
                    Some(result) => result,
                    None => return,
                }
            }
            None => slot.app.get(py),
        };
        let callable = match imported {
            Ok(c) => single_callable(py, c),
            Err(e) => {
                self.log
                    .log(Level::Error, &slot.app.load_error_message(py, &e));
                return;
            }
        };
        slot.callable = Some(callable.clone().unbind());
        let state = PyDict::new(py);
        if !self.use_lifespan {
            slot.phase = Phase::Ready(state.unbind());
            return;
        }
        let lifespan = Lifespan::new(
            i,
            me.clone_ref(py).into_any(),
            self.event_loop.clone_ref(py),
            Arc::clone(&self.log),
        );
        let started = (|| -> PyResult<Py<Lifespan>> {
            let lifespan = Bound::new(py, lifespan)?;
            let scope = Lifespan::scope(py, &state)?;
            run_app(
                self.event_loop.bind(py),
                &callable,
                scope,
                lifespan.as_any(),
            )?;
            Ok(lifespan.unbind())
        })();
        // The state dict the lifespan fills is the one requests copy once startup is done.
        self.apps[i].phase = Phase::Starting(state.unbind());
        match started {
            Ok(l) => self.apps[i].lifespan = Some(l),
            Err(e) => {
                // Calling the app with a lifespan scope raised at once: no lifespan support.
                self.log.log(
                    Level::Info,
                    &format!(
                        "RW-PY012 ASGI 'lifespan' protocol appears unsupported by the app: {}; \
                         serving it without",
                        e.value(py)
                    ),
                );
                self.started(me, py, i, Ok(()));
            }
        }
    }

    /// Startup of app `i` is over: serve (or refuse) the requests that waited for it.
    fn started(&mut self, me: &Py<Pump>, py: Python<'_>, i: usize, result: Result<(), String>) {
        let slot = &mut self.apps[i];
        let state = match std::mem::replace(&mut slot.phase, Phase::Failed) {
            Phase::Starting(state) => state,
            other => {
                slot.phase = other;
                return;
            }
        };
        match result {
            Ok(()) => slot.phase = Phase::Ready(state),
            Err(why) => {
                self.log.log(
                    Level::Error,
                    &format!(
                        "RW-PY011 lifespan startup failed for ASGI app {}: {why}; its requests \
                         are answered 503",
                        slot.app.spec().source
                    ),
                );
            }
        }
        for id in std::mem::take(&mut self.apps[i].waiting) {
            self.dispatch(me, py, id, i);
        }
    }

    /// A new connection: register it, then run it, queue it behind its app's startup, or
    /// answer it.
    fn accept(&mut self, me: &Py<Pump>, py: Python<'_>, id: u64, new: NewConn) {
        let NewConn {
            app,
            kind,
            vars,
            transport,
            backlog,
            due,
        } = new;
        let head_request = kind == Kind::Http
            && vars
                .pairs()
                .iter()
                .any(|&(k, v)| k == b"REQUEST_METHOD" && v == b"HEAD");
        let forget = match me.bind(py).getattr(intern!(py, "_forget")) {
            Ok(f) => f.unbind(),
            Err(e) => {
                self.log
                    .log(Level::Error, &format!("RW-PY016 internal error: {e}"));
                // No timer will cover it: neither may the monitor (deadline.rs).
                self.inbox.deadlines.remove(id);
                return;
            }
        };
        let conn = Conn::new(
            id,
            kind,
            vars,
            transport,
            Arc::clone(&self.log),
            self.event_loop.clone_ref(py),
            forget,
            head_request,
            backlog,
            Arc::clone(&self.inbox.deadlines),
        );
        let conn = match Py::new(py, conn) {
            Ok(c) => c,
            Err(e) => {
                self.log.log(
                    Level::Error,
                    &format!("RW-PY010 cannot set up a connection: {e}"),
                );
                self.inbox.deadlines.remove(id);
                return;
            }
        };
        if let Some((due, what)) = due {
            Conn::arm_timeout(&conn, py, due, what);
        }
        self.conns.insert(id, conn);
        if app >= self.apps.len() {
            self.answer(py, id, 500, ERROR_500, None);
            return;
        }
        self.load(me, py, app);
        self.dispatch(me, py, id, app);
    }

    /// Runs connection `id` on app `i`, or parks or answers it by the app's phase.
    fn dispatch(&mut self, me: &Py<Pump>, py: Python<'_>, id: u64, i: usize) {
        match &self.apps[i].phase {
            Phase::Ready(state) => {
                let state = state.clone_ref(py);
                self.launch(py, id, i, state.bind(py));
            }
            Phase::Starting(_) => self.apps[i].waiting.push(id),
            Phase::Failed => self.answer(py, id, 503, ERROR_503, None),
            Phase::Unloaded => match self.apps[i].held_until {
                // Held back by the import gate: 503 with the time to its next try.
                Some(until) => {
                    let left = until.saturating_duration_since(Instant::now());
                    let retry = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                    self.answer(py, id, 503, ERROR_503, Some(retry.max(1)));
                }
                None => self.answer(py, id, 500, ERROR_500, None),
            },
        }
        let _ = me;
    }

    /// Answers a connection that will not reach its app, and forgets it.
    fn answer(
        &mut self,
        py: Python<'_>,
        id: u64,
        status: u16,
        body: &[u8],
        retry_after: Option<u64>,
    ) {
        if let Some(conn) = self.conns.remove(&id) {
            let mut c = conn.bind(py).borrow_mut();
            if c.disconnected {
                c.finish(Outcome::ClientGone);
            } else {
                c.answer_plain(status, body, retry_after, Outcome::Failed);
            }
        }
    }

    /// Starts the app's task for connection `id`.
    fn launch(&mut self, py: Python<'_>, id: u64, i: usize, state: &Bound<'_, PyDict>) {
        let Some(conn) = self.conns.get(&id).map(|c| c.clone_ref(py)) else {
            return;
        };
        let b = conn.bind(py);
        let (kind, vars, gone) = {
            let mut c = b.borrow_mut();
            (c.kind, c.take_vars(), c.disconnected)
        };
        if gone {
            // The client left while the app was starting: nobody to run it for.
            self.conns.remove(&id);
            b.borrow_mut().finish(Outcome::ClientGone);
            return;
        }
        let started = (|| -> PyResult<()> {
            let pairs = vars.as_ref().map(|v| v.pairs()).unwrap_or_default();
            let scope = scope::build(py, kind, &pairs, Some(state), true)?;
            let callable = match &self.apps[i].callable {
                Some(c) => c.bind(py).clone(),
                None => self.apps[i].app.get(py)?,
            };
            let task = run_app(self.event_loop.bind(py), &callable, scope, b.as_any())?;
            b.borrow_mut().task = Some(task.unbind());
            Ok(())
        })();
        if let Err(e) = started {
            self.log.log(
                Level::Error,
                &format!(
                    "RW-PY010 exception in ASGI application:\n{}",
                    format_exception(py, &e)
                ),
            );
            self.answer(py, id, 500, ERROR_500, None);
        }
    }

    /// Stopping: let the connections still running end (background tasks after a response
    /// included, as uvicorn waits for them), then every app's lifespan hears `shutdown`; the
    /// loop stops when all answered, or when the shutdown timeout ends the whole sequence.
    fn begin_stop(&mut self, me: &Py<Pump>, py: Python<'_>) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        let force = me.bind(py).getattr(intern!(py, "_force_stop"));
        let timer = force.and_then(|f| {
            self.event_loop
                .bind(py)
                .call_method1(intern!(py, "call_later"), (self.shutdown_timeout, f))
        });
        if timer.is_err() {
            self.stop_loop(py);
            return;
        }
        if self.conns.is_empty() {
            self.shutdown_lifespans(py);
        }
    }

    /// The second stage of stopping: `lifespan.shutdown` to every app that started one.
    fn shutdown_lifespans(&mut self, py: Python<'_>) {
        if self.lifespans_told {
            return;
        }
        self.lifespans_told = true;
        let mut pending = 0;
        for slot in &self.apps {
            if let Some(l) = &slot.lifespan {
                if l.bind(py).borrow_mut().request_shutdown(py) {
                    pending += 1;
                }
            }
        }
        self.shutdowns_pending = pending;
        if pending == 0 {
            self.stop_loop(py);
        }
    }

    fn stop_loop(&self, py: Python<'_>) {
        if let Err(e) = self.event_loop.bind(py).call_method0(intern!(py, "stop")) {
            self.log.log(
                Level::Error,
                &format!("RW-PY016 cannot stop the event loop: {e}"),
            );
        }
    }
}

/// Calls the app with `scope` and `conn`'s `receive` and `send`, and runs it as a task whose
/// end `conn._done` hears (`conn`: a connection or a lifespan).
fn run_app<'py>(
    event_loop: &Bound<'py, PyAny>,
    callable: &Bound<'py, PyAny>,
    scope: Bound<'py, PyDict>,
    conn: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = event_loop.py();
    let coro = callable.call1((
        scope,
        conn.getattr(intern!(py, "receive"))?,
        conn.getattr(intern!(py, "send"))?,
    ))?;
    let task = event_loop.call_method1(intern!(py, "create_task"), (coro,))?;
    task.call_method1(
        intern!(py, "add_done_callback"),
        (conn.getattr(intern!(py, "_done"))?,),
    )?;
    Ok(task)
}

/// ASGI 2 apps (a class or callable taking only the scope) made into ASGI 3 ones with asgiref's
/// `guarantee_single_callable`, as uvicorn does with its own check. Without asgiref (which every
/// ASGI 2 framework depends on) the app is taken as ASGI 3.
fn single_callable<'py>(py: Python<'py>, app: Bound<'py, PyAny>) -> Bound<'py, PyAny> {
    py.import("asgiref.compatibility")
        .and_then(|m| m.call_method1("guarantee_single_callable", (&app,)))
        .unwrap_or(app)
}

#[pymethods]
impl Pump {
    /// The eventfd is readable: handle everything queued.
    fn __call__(slf: Bound<'_, Self>) {
        let py = slf.py();
        let me = slf.clone().unbind();
        let mut p = slf.borrow_mut();
        for (id, event) in p.inbox.take() {
            match event {
                Event::New(new) => p.accept(&me, py, id, *new),
                Event::Watch(new) => {
                    let fd = new.fd;
                    match Watch::start(py, &p.event_loop, &p.inbox, *new) {
                        Ok(w) => {
                            p.watches.insert(fd, w);
                        }
                        Err(e) => p.log.log(
                            Level::Error,
                            &format!("RW-PY016 cannot watch descriptor {fd}: {e}"),
                        ),
                    }
                }
                Event::Unwatch(fd) => {
                    if let Some(w) = p.watches.remove(&fd) {
                        w.bind(py).borrow().close(py);
                    }
                }
                Event::Stop => p.begin_stop(&me, py),
                Event::GoingAway => {
                    let conns: Vec<Py<Conn>> = p.conns.values().map(|c| c.clone_ref(py)).collect();
                    for c in conns {
                        let mut c = c.bind(py).borrow_mut();
                        if c.kind == Kind::WebSocket {
                            c.on_event(py, Event::GoingAway);
                        }
                    }
                }
                event => {
                    if let Some(c) = p.conns.get(&id) {
                        c.bind(py).borrow_mut().on_event(py, event);
                    }
                }
            }
        }
    }

    /// From a connection's done callback: forget it (the last one lets a stop go on).
    fn _forget(&mut self, py: Python<'_>, id: u64) {
        self.conns.remove(&id);
        if self.stopping && self.conns.is_empty() {
            self.shutdown_lifespans(py);
        }
    }

    /// From a lifespan: startup answered (or found unsupported; `why` None), or failed.
    fn _app_started(slf: Bound<'_, Self>, app: usize, why: Option<String>) {
        let py = slf.py();
        let me = slf.clone().unbind();
        let result = match why {
            None => Ok(()),
            Some(w) => Err(w),
        };
        slf.borrow_mut().started(&me, py, app, result);
    }

    /// From a lifespan: one app finished its shutdown.
    fn _shutdown_done(&mut self, py: Python<'_>) {
        self.shutdowns_pending = self.shutdowns_pending.saturating_sub(1);
        if self.stopping && self.shutdowns_pending == 0 {
            self.stop_loop(py);
        }
    }

    /// The shutdown timeout passed before the connections ended or every lifespan answered.
    fn _force_stop(&mut self, py: Python<'_>) {
        if !self.lifespans_told {
            self.log.log(
                Level::Error,
                &format!(
                    "RW-PY014 {} ASGI connection(s) still running {} s after the stop began; \
                     stopping without them",
                    self.conns.len(),
                    self.shutdown_timeout
                ),
            );
        } else if self.shutdowns_pending > 0 {
            self.log.log(
                Level::Error,
                &format!(
                    "RW-PY013 lifespan shutdown did not finish within {} s; stopping anyway",
                    self.shutdown_timeout
                ),
            );
        } else {
            return;
        }
        self.shutdowns_pending = 0;
        self.stop_loop(py);
    }
}
