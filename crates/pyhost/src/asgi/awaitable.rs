//! The awaitable that is already complete: what `receive()` returns when the next message is
//! already here and `send()` when the transport took the message. `await` on it finishes without
//! suspending the task, so the common request (body in hand, output queue not full) makes no trip
//! through the event loop. Only a real wait returns an asyncio future (conn.rs).

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// `await Ready(v)` evaluates to `v` at once (its iterator stops on the first step with `v`).
#[pyclass(module = "rwsgi", name = "Ready", freelist = 64)]
pub(crate) struct Ready {
    value: Option<Py<PyAny>>,
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.value {
            // StopIteration(value) is how an iterator used by `await` returns its result.
            Some(v) => Err(PyStopIteration::new_err((v.clone_ref(py),))),
            None => Ok(None),
        }
    }

    /// `coroutine.send(None)` drives `await` through this when the task resumes us; a value
    /// other than None cannot reach a Ready (nobody suspends on it).
    fn send(&self, py: Python<'_>, _value: Py<PyAny>) -> PyResult<Option<Py<PyAny>>> {
        self.__next__(py)
    }
}

static NONE: PyOnceLock<Py<Ready>> = PyOnceLock::new();

/// A complete awaitable for `value`.
pub(crate) fn ready<'py>(py: Python<'py>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    Ok(Bound::new(
        py,
        Ready {
            value: Some(value.unbind()),
        },
    )?
    .into_any())
}

/// The complete awaitable of `None`, shared: it holds no state, so one object serves every
/// `send()`.
pub(crate) fn ready_none(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let r = NONE.get_or_try_init(py, || Py::new(py, Ready { value: None }))?;
    Ok(r.bind(py).clone().into_any())
}
