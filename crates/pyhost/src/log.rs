//! Logging: the transport's error log and traceback formatting (`wsgi.errors` is
//! wsgi_errors.rs).

use std::io::Write as _;

use pyo3::prelude::*;

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
