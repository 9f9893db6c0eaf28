//! `wsgi.errors`: a text stream whose lines go to the server's error log, through the
//! request's scope while it runs and to stderr after it ended.

use std::sync::Arc;

use pyo3::prelude::*;

use crate::log::Level;
use crate::scope::Scope;

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
