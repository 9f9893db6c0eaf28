//! `wsgi.file_wrapper`: lets the transport send a file with sendfile(2) when it can.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Wraps a file-like object; iterating it yields blocks, and `handle()` recognises it to take the
/// transport's `send_file` fast path when the object has a real file descriptor.
#[pyclass(module = "rwsgi", name = "FileWrapper")]
pub(crate) struct FileWrapper {
    pub(crate) filelike: Py<PyAny>,
    blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize = 8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let block = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        let empty = match block.cast::<PyBytes>() {
            Ok(b) => b.as_bytes().is_empty(),
            Err(_) => block.len().map(|n| n == 0).unwrap_or(false),
        };
        Ok((!empty).then_some(block))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }
}
