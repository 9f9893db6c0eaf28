//! The request body behind `wsgi.input` (wsgi_input.rs): a buffer over the transport's `Body`,
//! read in blocks, bounded by CONTENT_LENGTH. The body is never held whole in memory unless the
//! app asks for all of it (`read()` with no size). No Python here: the callers hold the scope's
//! input lock with the GIL released.

use std::io;

use crate::borrowed::Borrowed;
use crate::Body;

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

/// The input half of a request's scope: the transport's body while the request runs, and the
/// buffer. Guarded by the scope's input lock.
pub(crate) struct InputSide {
    pub(crate) body: Option<Borrowed<dyn Body + 'static>>,
    pub(crate) state: InputState,
}

impl InputSide {
    /// The live body, or None after the request ended.
    pub(crate) fn body(&mut self) -> Option<&mut (dyn Body + 'static)> {
        // SAFETY: Some only while the scope is live (see Scope::close); the &mut self borrow of
        // the locked InputSide makes this the only reference to the body.
        self.body.as_mut().map(|b| unsafe { &mut *b.0 })
    }

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
    pub(crate) fn available(&self) -> Option<u64> {
        let buffered = self.state.buffered().len() as u64;
        if self.state.eof {
            return Some(buffered);
        }
        self.state.remaining.map(|r| r + buffered)
    }

    /// Fill `dst` from the buffer, then straight from the transport, until it is full or the body
    /// ends. Returns how many bytes were written. Used for large reads, so the body is copied
    /// once (socket -> the app's bytes object) instead of twice through our buffer.
    pub(crate) fn read_into(&mut self, dst: &mut [u8]) -> io::Result<usize> {
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
    pub(crate) fn read(&mut self, size: Option<usize>) -> io::Result<Vec<u8>> {
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
    pub(crate) fn readline(&mut self, size: Option<usize>) -> io::Result<Vec<u8>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
