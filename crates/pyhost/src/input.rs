//! `wsgi.input`: the request body as a file-like object, streamed from the transport.
//!
//! Reads happen with the GIL released (the scope lock is taken inside `detach`), in blocks, so a
//! slow upload never stalls other Python threads and the body is never held whole in memory unless
//! the app asks for all of it (`read()` with no size).

use std::io;
use std::sync::Arc;

use pyo3::exceptions::PyOSError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::PyBytes;

use crate::scope::{InputSide, Scope};

/// How much is read from the transport at a time when the app does not say.
const BLOCK: usize = 64 * 1024;

/// Reads at least this large go straight into the app's bytes object (see `Input::read_direct`).
const DIRECT_MIN: usize = 64 * 1024;

/// A destination buffer handed into a `detach` closure.
struct SendPtr(*mut u8, usize);

// SAFETY: the pointer is into a bytes object that only the thread calling read_direct can reach
// (it has not been returned to Python yet), and that thread waits for the closure to finish.
unsafe impl Send for SendPtr {}

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

    /// The most bytes a read can still return (buffered + the rest of CONTENT_LENGTH); None when
    /// the transport gives no length.
    fn available(&self) -> Option<u64> {
        let buffered = self.state.buffered().len() as u64;
        if self.state.eof {
            return Some(buffered);
        }
        self.state.remaining.map(|r| r + buffered)
    }

    /// Fill `dst` from the buffer, then straight from the transport, until it is full or the body
    /// ends. Returns how many bytes were written. Used for large reads, so the body is copied
    /// once (socket -> the app's bytes object) instead of twice through our buffer.
    fn read_into(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        let from_buffer = self.state.take(dst.len());
        dst[..from_buffer.len()].copy_from_slice(&from_buffer);
        let mut filled = from_buffer.len();
        while filled < dst.len() && !self.state.eof {
            let mut want = dst.len() - filled;
            if let Some(rem) = self.state.remaining {
                want = want.min(usize::try_from(rem).unwrap_or(usize::MAX));
            }
            let result = match self.body.as_mut() {
                // SAFETY: see InputSide::body: live while Some, exclusive under the input lock.
                Some(b) => unsafe { &mut *b.0 }.read(&mut dst[filled..filled + want]),
                None => Ok(0),
            };
            let n = match result {
                Ok(n) => n,
                Err(e) => {
                    self.state.eof = true;
                    return Err(e);
                }
            };
            if n == 0 {
                self.state.eof = true;
                if let Some(rem) = self.state.remaining.filter(|&r| r > 0) {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("request body ended {rem} bytes short of CONTENT_LENGTH"),
                    ));
                }
                break;
            }
            filled += n;
            if let Some(rem) = self.state.remaining.as_mut() {
                *rem -= n as u64;
                if *rem == 0 {
                    self.state.eof = true;
                }
            }
        }
        Ok(filled)
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
        let filled = py
            .detach(move || {
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
