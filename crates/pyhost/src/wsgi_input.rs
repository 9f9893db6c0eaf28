//! `wsgi.input`: the request body as a file-like object, streamed from the transport.
//!
//! Reads happen with the GIL released (the scope's input lock is taken inside `detach`), in
//! blocks (input.rs), so a slow upload never stalls other Python threads.

use std::io;
use std::sync::Arc;

use pyo3::exceptions::PyOSError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::PyBytes;

use crate::input::InputSide;
use crate::scope::Scope;

/// Reads at least this large go straight into the app's bytes object (see `Input::read_direct`).
const DIRECT_MIN: usize = 64 * 1024;

/// A destination buffer handed into a `detach` closure.
struct SendPtr(*mut u8, usize);

// SAFETY: the pointer is into a bytes object that only the thread calling read_direct can reach
// (it has not been returned to Python yet), and that thread waits for the closure to finish.
unsafe impl Send for SendPtr {}

fn io_error(e: io::Error) -> PyErr {
    PyOSError::new_err(format!("error reading the request body: {e}"))
}

/// A negative or missing size means "no limit", as in Python's file objects.
fn size_arg(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pyclass(module = "rwsgi", name = "Input")]
pub(crate) struct Input {
    scope: Arc<Scope>,
}

impl Input {
    pub(crate) fn new(scope: Arc<Scope>) -> Self {
        Input { scope }
    }

    /// The size of a read worth doing straight into a bytes object: at least DIRECT_MIN, and
    /// bounded by what the body can still deliver (so `read(10**9)` never allocates a gigabyte).
    fn direct_read_size(&self, py: Python<'_>, size: Option<usize>) -> Option<usize> {
        // Nothing blocks while this lock is held except another thread reading the same body;
        // lock_py_attached waits for that one with the GIL released.
        let available = {
            let side = self
                .scope
                .input
                .lock_py_attached(py)
                .unwrap_or_else(|e| e.into_inner());
            side.body.as_ref()?;
            side.available()
        }?;
        let n = match size {
            Some(n) => (n as u64).min(available),
            None => available,
        };
        let n = usize::try_from(n).ok()?;
        (n >= DIRECT_MIN).then_some(n)
    }

    /// Read up to `n` bytes into a new bytes object, without zeroing it first and without an
    /// intermediate buffer; the GIL is released while the transport fills it.
    fn read_direct<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyBytes>> {
        let len =
            ffi::Py_ssize_t::try_from(n).map_err(|_| PyOSError::new_err("read size too large"))?;
        // SAFETY: the GIL is held; a NULL source makes CPython allocate an uninitialised bytes
        // object of `len` bytes (or return NULL with an exception set, turned into Err).
        let obj = unsafe {
            Bound::from_owned_ptr_or_err(py, ffi::PyBytes_FromStringAndSize(std::ptr::null(), len))?
        };
        // SAFETY: obj is a bytes object; PyBytes_AsString returns its data pointer, valid for
        // `len` bytes while obj lives (we hold it until we return).
        let data = unsafe { ffi::PyBytes_AsString(obj.as_ptr()) }.cast::<u8>();
        let dst = SendPtr(data, n);
        let scope = &self.scope;
        let filled = crate::gil::detach(py, move || {
            let dst = dst;
            // SAFETY: the object is new and not yet visible to any other code (no other
            // reference exists), so writing its bytes without the GIL races with nothing;
            // the pointer is valid for n bytes (see above).
            let buf = unsafe { std::slice::from_raw_parts_mut(dst.0, dst.1) };
            let mut side = scope.lock_input();
            if side.body().is_none() {
                return Ok(0);
            }
            side.read_into(buf)
        })
        .map_err(io_error)?;
        if filled == n {
            return Ok(obj.cast_into::<PyBytes>()?);
        }
        // The body ended early: a bytes object of the right size (copying the short part).
        // SAFETY: `filled` <= n bytes of obj's buffer were written above.
        let part = unsafe { std::slice::from_raw_parts(data, filled) };
        Ok(PyBytes::new(py, part))
    }

    fn with_body<F>(&self, py: Python<'_>, f: F) -> PyResult<Vec<u8>>
    where
        F: FnOnce(&mut InputSide) -> io::Result<Vec<u8>> + Send,
    {
        let scope = &self.scope;
        // The lock is taken and the transport read with the GIL released.
        crate::gil::detach(py, || {
            let mut side = scope.lock_input();
            if side.body().is_none() {
                return Ok(Vec::new());
            }
            f(&mut side)
        })
        .map_err(io_error)
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size = None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let size = size_arg(size);
        if let Some(n) = self.direct_read_size(py, size) {
            return self.read_direct(py, n);
        }
        let data = self.with_body(py, |side| side.read(size))?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let size = size_arg(size);
        let data = self.with_body(py, |side| side.readline(size))?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(
        &self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let hint = size_arg(hint).filter(|&h| h > 0);
        let mut lines = Vec::new();
        let mut total = 0;
        loop {
            let line = self.with_body(py, |side| side.readline(None))?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            lines.push(PyBytes::new(py, &line));
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.with_body(py, |side| side.readline(None))?;
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }

    fn readable(&self) -> bool {
        true
    }

    fn close(&self) {}
}
