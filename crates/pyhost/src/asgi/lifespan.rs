//! The lifespan protocol (ASGI lifespan spec 2.0), once per app and loop: `startup` before the
//! app's first request, `shutdown` when the host stops.
//!
//! "auto" mode, as uvicorn's default: an app whose lifespan call raises (or returns) before it
//! answers `startup` does not implement lifespan (Django's ASGIHandler raises "Django can only
//! handle ASGI/HTTP connections, not lifespan"); that is logged at info level (RW-PY012) and the
//! app is served. An app that answers `lifespan.startup.failed` is not served: its requests get
//! 503 and the message is logged (RW-PY011).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::conn::{message, ready_message};
use super::message::{parse, Msg};
use crate::log::{format_exception, ErrorLog, Level};

use std::sync::Arc;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// `lifespan.startup` not yet received by the app.
    Fresh,
    /// The app received `startup` and has not answered.
    Starting,
    /// Startup answered; the app waits for `shutdown` (or has not asked yet).
    Running,
    /// The host asked for shutdown; the app has not answered yet.
    ShuttingDown,
    Over,
}

/// One app's lifespan conversation: the `receive` and `send` its lifespan call gets.
#[pyclass(module = "rwsgi", name = "Lifespan")]
pub(crate) struct Lifespan {
    app: usize,
    /// The pump object: its `_app_started(app, why)` and `_shutdown_done()` are called.
    pump: Py<PyAny>,
    event_loop: Py<PyAny>,
    log: Arc<dyn ErrorLog>,
    phase: Phase,
    shutdown_wanted: bool,
    waiter: Option<Py<PyAny>>,
}

impl Lifespan {
    pub(crate) fn new(
        app: usize,
        pump: Py<PyAny>,
        event_loop: Py<PyAny>,
        log: Arc<dyn ErrorLog>,
    ) -> Lifespan {
        Lifespan {
            app,
            pump,
            event_loop,
            log,
            phase: Phase::Fresh,
            shutdown_wanted: false,
            waiter: None,
        }
    }

    /// The scope of the lifespan call, with the `state` dict requests get a copy of.
    pub(crate) fn scope<'py>(
        py: Python<'py>,
        state: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let asgi = PyDict::new(py);
        asgi.set_item("version", "3.0")?;
        asgi.set_item("spec_version", "2.0")?;
        let scope = PyDict::new(py);
        scope.set_item(intern!(py, "type"), intern!(py, "lifespan"))?;
        scope.set_item(intern!(py, "asgi"), asgi)?;
        scope.set_item(intern!(py, "state"), state)?;
        Ok(scope)
    }

    /// The host stops: deliver `lifespan.shutdown`. False when there is nothing to wait for
    /// (the app never started its lifespan, or it already ended).
    pub(crate) fn request_shutdown(&mut self, py: Python<'_>) -> bool {
        match self.phase {
            Phase::Running => {
                self.shutdown_wanted = true;
                if let Some(fut) = self.waiter.take() {
                    self.phase = Phase::ShuttingDown;
                    if let Ok(msg) = message(py, intern!(py, "lifespan.shutdown"), &[]) {
                        let _ = fut.bind(py).call_method1(intern!(py, "set_result"), (msg,));
                    }
                }
                true
            }
            Phase::Fresh | Phase::Starting | Phase::ShuttingDown | Phase::Over => false,
        }
    }

    fn call_pump<'py, A: pyo3::call::PyCallArgs<'py>>(
        &self,
        py: Python<'py>,
        method: &str,
        args: A,
    ) {
        if let Err(e) = self.pump.bind(py).call_method1(method, args) {
            self.log.log(
                Level::Error,
                &format!("RW-PY016 internal error in the lifespan: {e}"),
            );
        }
    }

    fn finish_shutdown(&mut self, py: Python<'_>) {
        if self.shutdown_wanted && self.phase != Phase::Over {
            self.phase = Phase::Over;
            self.call_pump(py, "_shutdown_done", ());
        }
        self.phase = Phase::Over;
    }
}

#[pymethods]
impl Lifespan {
    fn receive<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.phase {
            Phase::Fresh => {
                self.phase = Phase::Starting;
                ready_message(py, intern!(py, "lifespan.startup"), &[])
            }
            Phase::Running if self.shutdown_wanted => {
                self.phase = Phase::ShuttingDown;
                ready_message(py, intern!(py, "lifespan.shutdown"), &[])
            }
            _ => {
                let fut = self
                    .event_loop
                    .bind(py)
                    .call_method0(intern!(py, "create_future"))?;
                self.waiter = Some(fut.clone().unbind());
                Ok(fut)
            }
        }
    }

    fn send<'py>(
        &mut self,
        py: Python<'py>,
        message: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let msg = parse(&message)?;
        match (msg, self.phase) {
            (Msg::StartupComplete, Phase::Starting) => {
                self.phase = Phase::Running;
                self.call_pump(py, "_app_started", (self.app, None::<String>));
            }
            (Msg::StartupFailed(why), Phase::Starting) => {
                self.phase = Phase::Over;
                self.call_pump(py, "_app_started", (self.app, Some(why)));
            }
            (Msg::ShutdownComplete, Phase::ShuttingDown) => self.finish_shutdown(py),
            (Msg::ShutdownFailed(why), Phase::ShuttingDown) => {
                self.log.log(
                    Level::Error,
                    &format!("RW-PY013 lifespan shutdown failed: {why}"),
                );
                self.finish_shutdown(py);
            }
            (other, phase) => {
                let name = match other {
                    Msg::Unknown(t) => t,
                    _ => "this message".to_string(),
                };
                return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                    "unexpected lifespan message {name} in phase {phase:?}"
                )));
            }
        }
        super::awaitable::ready_none(py)
    }

    /// The lifespan task ended.
    fn _done(&mut self, py: Python<'_>, task: Bound<'_, PyAny>) {
        let error = task_exception(py, &task);
        match self.phase {
            Phase::Fresh | Phase::Starting => {
                // auto mode: no lifespan support. Say why at info level: an app that meant to
                // support it will see its own exception here.
                let why = error
                    .map(|e| {
                        format!(
                            ": {}",
                            e.bind(py).str().map(|s| s.to_string()).unwrap_or_default()
                        )
                    })
                    .unwrap_or_default();
                self.log.log(
                    Level::Info,
                    &format!("RW-PY012 ASGI 'lifespan' protocol appears unsupported by the app{why}; serving it without"),
                );
                self.phase = Phase::Over;
                self.call_pump(py, "_app_started", (self.app, None::<String>));
            }
            Phase::Running | Phase::ShuttingDown => {
                if let Some(e) = error {
                    let err = PyErr::from_value(e.into_bound(py));
                    self.log.log(
                        Level::Error,
                        &format!(
                            "RW-PY013 exception in the app's lifespan task:\n{}",
                            format_exception(py, &err)
                        ),
                    );
                }
                self.finish_shutdown(py);
            }
            Phase::Over => {}
        }
    }
}

/// The exception a finished task raised (None when it returned or was cancelled).
fn task_exception(py: Python<'_>, task: &Bound<'_, PyAny>) -> Option<Py<PyAny>> {
    if task
        .call_method0(intern!(py, "cancelled"))
        .and_then(|c| c.is_truthy())
        .unwrap_or(false)
    {
        return None;
    }
    task.call_method0(intern!(py, "exception"))
        .ok()
        .filter(|e| !e.is_none())
        .map(Bound::unbind)
}
