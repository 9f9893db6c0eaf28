//! `start_response` and the legacy `write()` callable it returns (PEP 3333), over the response
//! state of response.rs.

use std::sync::Arc;

use pyo3::exceptions::{PyAssertionError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::response::{validate, SendError};
use crate::scope::Scope;

/// The `start_response` callable handed to the application.
#[pyclass(module = "rwsgi", name = "StartResponse")]
pub(crate) struct StartResponse {
    scope: Arc<Scope>,
}

impl StartResponse {
    pub(crate) fn new(scope: Arc<Scope>) -> Self {
        StartResponse { scope }
    }
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Write>> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        let has_exc = match exc_info {
            Some(info) => !info.get_item(1)?.is_none(),
            None => false,
        };
        // Validate before taking the lock: this runs Python code (str conversions).
        let (code, line, list, content_length) = validate(status, headers)?;
        {
            let mut side = self.scope.lock_output();
            if has_exc {
                if side.state.head_sent {
                    drop(side);
                    // PEP 3333: too late to change the head; re-raise the app's exception.
                    let value = exc_info.map(|i| i.get_item(1)).transpose()?;
                    return Err(match value {
                        Some(v) => PyErr::from_value(v),
                        None => PyAssertionError::new_err("headers already sent"),
                    });
                }
            } else if side.state.status.is_some() {
                return Err(PyAssertionError::new_err(
                    "start_response() called a second time without exc_info",
                ));
            }
            side.state.status = Some((code, line));
            side.state.headers = list;
            side.state.content_length = content_length;
        }
        Py::new(
            py,
            Write {
                scope: self.scope.clone(),
            },
        )
    }
}

/// The legacy `write(data)` callable returned by start_response.
#[pyclass(module = "rwsgi", name = "Write")]
pub(crate) struct Write {
    scope: Arc<Scope>,
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() argument must be bytes"))?;
        self.scope.emit(py, bytes).map_err(SendError::into_pyerr)
    }
}
