//! Logging: the transport's error log, `wsgi.errors`, and traceback formatting.

use std::io::Write as _;
use std::sync::Arc;

use pyo3::prelude::*;

use crate::scope::Scope;

/// Severity, mapped by each transport onto its server's levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// The server's error log. One call per message; a message may span several lines (tracebacks).
pub trait ErrorLog: Send + Sync {
    fn log(&self, level: Level, msg: &str);
}

/// Logs to standard error, one `[level] message` block per call (used by rwsgi-worker).
pub struct StderrLog;

impl ErrorLog for StderrLog {
    fn log(&self, level: Level, msg: &str) {
        let pid = std::process::id();
        let mut out = std::io::stderr().lock();
        // A failed write to stderr has nowhere else to go.
        let _ = writeln!(out, "[{}] rwsgi[{pid}]: {msg}", level.as_str());
    }
}

/// Format a Python exception with its traceback, as `traceback.format_exception` does.
pub(crate) fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        tb.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )?
        .extract::<Vec<String>>()
    });
    match formatted {
        Ok(lines) => lines.concat().trim_end().to_string(),
        // Formatting itself failed (a broken traceback module?): fall back to the message.
        Err(_) => format!("{}: {}", err.get_type(py), err.value(py)),
    }
}

/// `wsgi.errors`: a text stream whose lines go to the server's error log.
#[pyclass(module = "rwsgi", name = "Errors")]
pub(crate) struct Errors {
    scope: Arc<Scope>,
    /// Text written without a trailing newline yet, flushed as one log line later.
    pending: std::sync::Mutex<String>,
}

impl Errors {
    pub(crate) fn new(scope: Arc<Scope>) -> Self {
        Errors {
            scope,
            pending: std::sync::Mutex::new(String::new()),
        }
    }

    fn emit(&self, line: &str) {
        self.scope.log(Level::Error, line);
    }
}

#[pymethods]
impl Errors {
    fn write(&self, s: &str) -> usize {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.push_str(s);
        while let Some(nl) = pending.find('\n') {
            let line: String = pending.drain(..=nl).collect();
            self.emit(line.trim_end_matches('\n'));
        }
        s.chars().count()
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(&line?.extract::<String>()?);
        }
        Ok(())
    }

    fn flush(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            let line = std::mem::take(&mut *pending);
            self.emit(&line);
        }
    }

    fn isatty(&self) -> bool {
        false
    }

    fn writable(&self) -> bool {
        true
    }

    fn readable(&self) -> bool {
        false
    }
}
