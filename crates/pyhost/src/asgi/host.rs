//! The loop thread: one asyncio event loop per [`AsgiHost`], started after the interpreter
//! (`crate::initialize`), stopped with a lifespan shutdown.

use std::os::fd::RawFd;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::intern;
use pyo3::prelude::*;

use super::deadline::Timeout;
use super::fdwatch::{FdHandler, NewWatch};
use super::inbox::{Event, Handle, Inbox};
use super::pump::Pump;
use super::{ImportGate, Kind, Transport, VarSource};
use crate::log::{format_exception, ErrorLog, Level};
use crate::{App, AppSpec, Error};

/// Which event loop implementation to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoopKind {
    /// uvloop when it can be imported, else asyncio's default loop (uvicorn's `auto`).
    #[default]
    Auto,
    Asyncio,
    Uvloop,
}

/// How the host runs its apps.
#[derive(Clone)]
pub struct AsgiConfig {
    pub loop_kind: LoopKind,
    /// Run the lifespan protocol ("auto": apps without it are served anyway). Off: no
    /// startup/shutdown events, as uvicorn's `--lifespan off`.
    pub lifespan: bool,
    /// How long [`AsgiHost::stop`] lets the apps' lifespan shutdown run.
    pub shutdown_timeout: Duration,
    /// Watches (and may hold back) each app's import; None: import every app when asked.
    pub import_gate: Option<Arc<dyn ImportGate>>,
}

impl Default for AsgiConfig {
    fn default() -> Self {
        AsgiConfig {
            loop_kind: LoopKind::Auto,
            lifespan: true,
            shutdown_timeout: Duration::from_secs(5),
            import_gate: None,
        }
    }
}

/// One asyncio loop on its own thread, serving the ASGI apps of this process.
pub struct AsgiHost {
    inbox: Arc<Inbox>,
    apps: usize,
    shutdown_timeout: Duration,
    thread: Mutex<Option<(JoinHandle<()>, mpsc::Receiver<()>)>>,
}

impl AsgiHost {
    /// Starts the loop thread for `apps` (indices of [`AsgiHost::submit`] follow this order):
    /// makes the loop, sets it as the thread's current loop, imports each app on it and starts
    /// its lifespan, before returning. Python must be initialised. A failed import is logged
    /// (RW-PY001) and retried by the app's requests; an error here means no loop could be made.
    pub fn start(
        apps: Vec<AppSpec>,
        cfg: AsgiConfig,
        log: Arc<dyn ErrorLog>,
    ) -> Result<AsgiHost, Error> {
        if !crate::is_initialized() {
            return Err(Error("the ASGI loop needs a started interpreter".into()));
        }
        let inbox =
            Inbox::new(Arc::clone(&log)).map_err(|e| Error(format!("eventfd() failed: {e}")))?;
        let count = apps.len();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let thread_inbox = Arc::clone(&inbox);
        let timeout = cfg.shutdown_timeout;
        let builder = std::thread::Builder::new()
            .name("rwsgi-asgi".into())
            .stack_size(8 << 20);
        let handle = crate::spawn_with_signals_blocked(builder, move || {
            let apps = apps.into_iter().map(App::new).collect();
            let result = Python::attach(|py| run(py, thread_inbox, apps, &cfg, log, &ready_tx));
            if let Err(msg) = result {
                let _ = ready_tx.send(Err(msg));
            }
            let _ = done_tx.send(());
        })
        .map_err(|e| Error(format!("cannot start the asyncio loop thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err(Error(msg)),
            Err(_) => return Err(Error("the asyncio loop thread ended at start".into())),
        }
        Ok(AsgiHost {
            inbox,
            apps: count,
            shutdown_timeout: timeout,
            thread: Mutex::new(Some((handle, done_rx))),
        })
    }

    /// Number of apps this host serves.
    pub fn len(&self) -> usize {
        self.apps
    }

    pub fn is_empty(&self) -> bool {
        self.apps == 0
    }

    /// A handle for the next connection: make it first, give it to whatever must reach the
    /// connection (the transport's own side), then [`submit`](Self::submit) with it, so no
    /// event can arrive before its handle is in place.
    pub fn handle(&self) -> Handle {
        self.inbox.handle()
    }

    /// Hands one connection to app `app`. Returns at once; the app runs on the loop thread and
    /// answers through `transport`. Every connection submitted gets exactly one
    /// `Transport::finish`, unless the host is stopped first (or `timeout`'s take-over answered
    /// for it: deadline.rs).
    pub fn submit(
        &self,
        handle: &Handle,
        app: usize,
        kind: Kind,
        vars: Box<dyn VarSource>,
        transport: Box<dyn Transport>,
        timeout: Option<Timeout>,
    ) {
        self.inbox
            .submit(handle, app, kind, vars, transport, timeout);
    }

    /// Has the loop watch `fd` (for reading, and writing when `write`) and call `handler` on
    /// the loop thread when it is ready: for transports that do their socket I/O on the loop
    /// itself (the daemon worker's listening socket and connections).
    pub fn watch(&self, fd: RawFd, handler: Box<dyn FdHandler>, write: bool) {
        self.inbox.push(
            0,
            Event::Watch(Box::new(NewWatch {
                fd,
                handler,
                read: true,
                write,
            })),
        );
    }

    /// Stops watching a descriptor given to [`watch`](Self::watch) and drops its handler.
    pub fn unwatch(&self, fd: RawFd) {
        self.inbox.push(0, Event::Unwatch(fd));
    }

    /// The process begins to stop: every open WebSocket hears `websocket.disconnect` 1001 and its
    /// client gets a close frame 1001 ("going away"). HTTP requests go on.
    pub fn going_away(&self) {
        self.inbox.push(0, Event::GoingAway);
    }

    /// Stops the loop: WebSockets are closed as by [`going_away`](Self::going_away), every
    /// app's lifespan hears `shutdown` (bounded by the configured timeout), then the loop stops.
    /// Blocks until the loop thread ends, at most the timeout plus a second; true if it ended.
    /// Call it once requests are done (nginx `exit_process`, a daemon worker after draining).
    pub fn stop(&self) -> bool {
        let Some((handle, done)) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take()
        else {
            return true;
        };
        self.inbox.push(0, Event::GoingAway);
        self.inbox.push(0, Event::Stop);
        match done.recv_timeout(self.shutdown_timeout + Duration::from_secs(1)) {
            Ok(()) => {
                let _ = handle.join();
                true
            }
            // Still running (an app blocks the loop): the process exits without it.
            Err(_) => false,
        }
    }
}

/// The loop thread's body: make the loop, start the apps, run until stopped.
fn run(
    py: Python<'_>,
    inbox: Arc<Inbox>,
    apps: Vec<App>,
    cfg: &AsgiConfig,
    log: Arc<dyn ErrorLog>,
    ready: &mpsc::Sender<Result<(), String>>,
) -> Result<(), String> {
    let event_loop = new_loop(py, cfg.loop_kind, &*log).map_err(|e| {
        format!(
            "cannot create the asyncio event loop:\n{}",
            format_exception(py, &e)
        )
    })?;
    let setup = (|| -> PyResult<Py<Pump>> {
        py.import("asyncio")?
            .call_method1("set_event_loop", (&event_loop,))?;
        let pump = Py::new(
            py,
            Pump::new(
                Arc::clone(&inbox),
                event_loop.clone().unbind(),
                Arc::clone(&log),
                apps,
                cfg.lifespan,
                cfg.shutdown_timeout.as_secs_f64(),
                cfg.import_gate.clone(),
            ),
        )?;
        event_loop.call_method1(intern!(py, "add_reader"), (inbox.fd(), pump.clone_ref(py)))?;
        Ok(pump)
    })();
    let pump = setup.map_err(|e| {
        format!(
            "cannot set up the asyncio event loop:\n{}",
            format_exception(py, &e)
        )
    })?;
    Pump::start_apps(&pump, py);
    let _ = ready.send(Ok(()));
    if let Err(e) = event_loop.call_method0(intern!(py, "run_forever")) {
        log.log(
            Level::Error,
            &format!(
                "RW-PY016 the asyncio event loop failed:\n{}",
                format_exception(py, &e)
            ),
        );
    }
    let _ = event_loop.call_method1(intern!(py, "remove_reader"), (inbox.fd(),));
    Ok(())
}

/// The loop `kind` asks for. `Auto` takes uvloop when it imports, asyncio's otherwise.
fn new_loop<'py>(
    py: Python<'py>,
    kind: LoopKind,
    log: &dyn ErrorLog,
) -> PyResult<Bound<'py, PyAny>> {
    let uvloop = match kind {
        LoopKind::Asyncio => None,
        LoopKind::Uvloop => Some(py.import("uvloop")?),
        LoopKind::Auto => py.import("uvloop").ok(),
    };
    let (event_loop, name) = match uvloop {
        Some(m) => (m.call_method0("new_event_loop")?, "uvloop"),
        None => (
            py.import("asyncio")?.call_method0("new_event_loop")?,
            "asyncio",
        ),
    };
    log.log(
        Level::Info,
        &format!("RW-PY017 ASGI event loop started ({name})"),
    );
    Ok(event_loop)
}
