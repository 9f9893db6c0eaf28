//! `wsgi.input` for embedded mode: the request body nginx's body reader collected.
//!
//! nginx reads the whole body before the app runs (chunked bodies de-chunked; small ones in
//! memory, large ones in a temporary file, as `client_body_buffer_size` decides). We copy the
//! in-memory parts (at most `client_body_buffer_size`, 16 KiB by default) and `dup()` the
//! temporary file's descriptor, so the Python thread reads the body without touching nginx
//! memory and keeps working even if nginx frees the request (and deletes the temporary file:
//! an unlinked file stays readable through an open descriptor).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// One contiguous piece of the body.
#[derive(Debug)]
pub enum Segment {
    Memory(Vec<u8>),
    File { file: File, offset: u64, len: u64 },
}

impl Segment {
    fn len(&self) -> u64 {
        match self {
            Segment::Memory(v) => v.len() as u64,
            Segment::File { len, .. } => *len,
        }
    }
}

/// The body as an ordered list of segments, read front to back.
#[derive(Debug, Default)]
pub struct RequestBody {
    segments: VecDeque<Segment>,
    /// Bytes already read from the front segment.
    consumed: u64,
    total: u64,
}

impl RequestBody {
    /// Appends a segment (empty ones are skipped).
    pub fn push(&mut self, segment: Segment) {
        let len = segment.len();
        if len > 0 {
            self.total += len;
            self.segments.push_back(segment);
        }
    }

    /// Total body length in bytes.
    pub fn len(&self) -> u64 {
        self.total
    }
}

/// The body nginx's reader collected, detached from nginx memory.
///
/// # Safety
/// `r` is live and `ngx_http_read_client_request_body` has completed for it.
#[cfg(not(test))] // reads nginx memory: exercised end to end, not by unit tests
pub unsafe fn collect_body(r: &ngx::ffi::ngx_http_request_t) -> io::Result<RequestBody> {
    let mut body = RequestBody::default();
    if r.request_body.is_null() {
        return Ok(body);
    }
    // SAFETY: request_body and its chain are valid and no longer change once reading is done.
    let mut cl = unsafe { (*r.request_body).bufs };
    while !cl.is_null() {
        // SAFETY: cl is a link of the body chain (see above).
        let b = unsafe { &*(*cl).buf };
        if b.in_file() != 0 && !b.file.is_null() {
            // SAFETY: the temp file is open while the request lives; we take our own descriptor.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw((*b.file).fd) };
            let file = File::from(fd.try_clone_to_owned()?);
            let len = (b.file_last - b.file_pos).max(0) as u64;
            body.push(Segment::File {
                file,
                offset: b.file_pos.max(0) as u64,
                len,
            });
        } else if !b.pos.is_null() && b.last > b.pos {
            // SAFETY: pos..last is the buffer's valid content.
            let data =
                unsafe { std::slice::from_raw_parts(b.pos, b.last.offset_from(b.pos) as usize) };
            body.push(Segment::Memory(data.to_vec()));
        }
        // SAFETY: as above.
        cl = unsafe { (*cl).next };
    }
    Ok(body)
}

impl pyhost::Body for RequestBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(front) = self.segments.front() {
            let left = front.len() - self.consumed;
            if left == 0 {
                self.segments.pop_front();
                self.consumed = 0;
                continue;
            }
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            if want == 0 {
                return Ok(0);
            }
            let n = match front {
                Segment::Memory(v) => {
                    // consumed < v.len() here, so the range is in bounds.
                    let start = self.consumed as usize;
                    buf[..want].copy_from_slice(&v[start..start + want]);
                    want
                }
                Segment::File { file, offset, .. } => {
                    let n = file.read_at(&mut buf[..want], offset + self.consumed)?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "request body temporary file is shorter than expected",
                        ));
                    }
                    n
                }
            };
            self.consumed += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyhost::Body;
    use std::io::Write;

    #[test]
    fn reads_memory_and_file_segments_in_order() {
        let mut tmp = tempfile();
        tmp.write_all(b"xxHELLO-FILEyy").unwrap();
        let mut body = RequestBody::default();
        body.push(Segment::Memory(b"head-".to_vec()));
        body.push(Segment::Memory(Vec::new()));
        body.push(Segment::File {
            file: tmp,
            offset: 2,
            len: 10,
        });
        body.push(Segment::Memory(b"-tail".to_vec()));
        assert_eq!(body.len(), 20);
        let mut out = Vec::new();
        let mut buf = [0u8; 3];
        loop {
            let n = body.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, b"head-HELLO-FILE-tail");
    }

    fn tempfile() -> File {
        let path = std::env::temp_dir().join(format!("rwsgi-body-test-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }
}
