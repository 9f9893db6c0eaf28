//! `wsgi.input`: the request body as a file-like object, streamed from the transport.
//!
//! Reads happen with the GIL released (the scope lock is taken inside `detach`), in blocks, so a
//! slow upload never stalls other Python threads and the body is never held whole in memory unless
//! the app asks for all of it (`read()` with no size).

use std::io;
use std::sync::Arc;

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::scope::{InputSide, Scope};

/// How much is read from the transport at a time when the app does not say.
const BLOCK: usize = 64 * 1024;

/// Buffered bytes not yet handed to the app, and how much of the body is still to come.
///
/// `buf[pos..end]` holds unread bytes; `buf` stays initialised up to its length, so a refill
/// writes into memory that was zeroed once, not on every read.
pub(crate) struct InputState {
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// Bytes left per CONTENT_LENGTH; None when the transport gives no length (it ends the stream).
    remaining: Option<u64>,
    eof: bool,
}

impl InputState {
    pub(crate) fn new(content_length: Option<u64>) -> Self {
        InputState {
            buf: Vec::new(),
            pos: 0,
            end: 0,
            remaining: content_length,
            eof: content_length == Some(0),
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// Take up to `n` buffered bytes.
    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.end - self.pos);
        if self.pos == 0 && n == self.buf.len() {
            // The whole buffer is the answer (read() of everything): hand it over, no copy.
            self.end = 0;
            return std::mem::take(&mut self.buf);
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        }
        out
    }
}

impl InputSide {
    /// Read one block from the transport into the buffer. Ok(false) at the end of the body.
    fn fill_once(&mut self, want: usize) -> io::Result<bool> {
        if self.state.eof {
            return Ok(false);
        }
        let mut want = want.max(1);
        if let Some(rem) = self.state.remaining {
            want = want.min(usize::try_from(rem).unwrap_or(usize::MAX));
        }
        let state = &mut self.state;
        if state.pos > 0 {
            // Drop what the app already consumed, so the buffer never grows past one unread
            // block plus one read, however the transport's reads and the app's reads interleave.
            state.buf.copy_within(state.pos..state.end, 0);
            state.end -= state.pos;
            state.pos = 0;
        }
        let start = state.end;
        if state.buf.len() < start + want {
            state.buf.resize(start + want, 0);
        }
        let result = match self.body.as_mut() {
            // SAFETY: see InputSide::body: the pointer is live while Some and exclusive under
            // the input lock, which our &mut self proves we hold.
            Some(b) => unsafe { &mut *b.0 }.read(&mut self.state.buf[start..start + want]),
            None => Ok(0),
        };
        let state = &mut self.state;
        match result {
            Ok(n) => {
                state.end = start + n;
                if n == 0 {
                    state.eof = true;
                    if let Some(rem) = state.remaining {
                        if rem > 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("request body ended {rem} bytes short of CONTENT_LENGTH"),
                            ));
                        }
                    }
                    return Ok(false);
                }
                if let Some(rem) = state.remaining.as_mut() {
                    *rem -= n as u64;
                    if *rem == 0 {
                        state.eof = true;
                    }
                }
                Ok(true)
            }
            Err(e) => {
                state.eof = true;
                Err(e)
            }
        }
    }

    /// read(size): exactly `size` bytes unless the body ends first; everything when None.
    fn read(&mut self, size: Option<usize>) -> io::Result<Vec<u8>> {
        match size {
            Some(n) => {
                while self.state.buffered().len() < n {
                    let missing = n - self.state.buffered().len();
                    if !self.fill_once(missing.max(BLOCK).min(n.max(BLOCK)))? {
                        break;
                    }
                }
                Ok(self.state.take(n))
            }
            None => {
                while self.fill_once(BLOCK)? {}
                Ok(self.state.take(usize::MAX))
            }
        }
    }

    /// readline(size): up to and including the next b'\n', at most `size` bytes.
    fn readline(&mut self, size: Option<usize>) -> io::Result<Vec<u8>> {
        let limit = size.unwrap_or(usize::MAX);
        let mut scanned = 0;
        loop {
            let buffered = self.state.buffered();
            if let Some(i) = buffered[scanned..].iter().position(|&b| b == b'\n') {
                return Ok(self.state.take((scanned + i + 1).min(limit)));
            }
            scanned = buffered.len();
            if scanned >= limit || !self.fill_once(BLOCK)? {
                return Ok(self.state.take(limit));
            }
        }
    }
}

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

    fn with_body<F>(&self, py: Python<'_>, f: F) -> PyResult<Vec<u8>>
    where
        F: FnOnce(&mut InputSide) -> io::Result<Vec<u8>> + Send,
    {
        let scope = &self.scope;
        // The lock is taken and the transport read with the GIL released.
        py.detach(|| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Borrowed;

    struct Trickle(usize);

    impl crate::Body for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.min(1000).min(buf.len());
            self.0 -= n;
            Ok(n)
        }
    }

    #[test]
    fn buffer_does_not_keep_consumed_bytes() {
        let len = 16 * 1024 * 1024;
        let mut body = Trickle(len);
        let body: &mut dyn crate::Body = &mut body;
        // SAFETY: lifetime erasure for the test: `side` is dropped before `body`'s storage.
        let body: *mut (dyn crate::Body + 'static) = unsafe { std::mem::transmute(body) };
        let mut side = InputSide {
            body: Some(Borrowed(body)),
            state: InputState::new(Some(len as u64)),
        };
        let mut total = 0;
        let mut peak = 0;
        loop {
            let block = side.read(Some(65_536)).unwrap();
            if block.is_empty() {
                break;
            }
            total += block.len();
            peak = peak.max(side.state.buf.capacity());
        }
        assert_eq!(total, len);
        assert!(peak < 512 * 1024, "input buffer grew to {peak} bytes");
    }
}
