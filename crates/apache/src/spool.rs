//! Daemon mode: the request body, read whole from the client before the request goes to a group
//! (request buffering, as nginx does in front of its upstreams).
//!
//! Why read it first:
//! - A daemon thread is only taken once the body is in. A client that sends its upload at 1
//!   byte/s holds an Apache thread (httpd's own model, bounded by `Timeout` between reads and by
//!   mod_reqtimeout), never one of the group's few threads (issue 10, case 8).
//! - A chunked body gets a length: the uwsgi packet must state CONTENT_LENGTH, and the worker's
//!   `wsgi.input` ends there (chunked uploads are never answered 411).
//!
//! Memory stays bounded: a body of up to [`IN_MEMORY`] bytes is kept in memory; a longer one
//! goes to an unlinked temp file in APR's temp directory (`TMPDIR`, else `/tmp`), which the
//! kernel frees when the [`Spool`] is dropped, on every path, a crash of the child included
//! (issue 10, case 7: a 400 MB chunked upload made the child 412 MB when it was held in RAM).

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use pyhost::Body;

use crate::ffi::*;

/// Bodies up to this size stay in memory; longer ones are spooled to a temp file.
pub(crate) const IN_MEMORY: usize = 1 << 20;
/// Size of one read from httpd's input filters (its core filter reads 8,000 bytes at a time).
const READ_CHUNK: usize = 16 * 1024;
/// The temp file's write buffer.
const WRITE_BUFFER: usize = 256 * 1024;

/// A request body read whole: in memory, or in an unlinked temp file.
pub(crate) enum Spool {
    Memory(Vec<u8>),
    File { file: File, len: u64 },
}

impl Spool {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Spool::Memory(m) => m.len() as u64,
            Spool::File { len, .. } => *len,
        }
    }
}

/// Why the body could not be spooled.
pub(crate) enum SpoolError {
    /// Reading from the client failed (it went away, timed out, broke the chunked encoding,
    /// passed LimitRequestBody). httpd's `ap_get_client_block` has already sent the matching
    /// error response (400, 408, 413) down the output filters.
    Client,
    /// The temp file could not be created or written (disk full, no temp directory).
    TempFile(io::Error),
}

/// Reads the whole body. `announced`: the client's Content-Length (None when chunked), used to
/// go to the temp file at once when the body cannot fit in memory.
pub(crate) fn read_body(
    body: &mut impl Body,
    announced: Option<u64>,
    temp_dir: impl Fn() -> PathBuf,
) -> Result<Spool, SpoolError> {
    let fits = |n: u64| n <= IN_MEMORY as u64;
    let mut memory = Vec::with_capacity(match announced {
        Some(n) if fits(n) => n as usize,
        Some(_) => 0,
        None => READ_CHUNK,
    });
    let mut chunk = [0u8; READ_CHUNK]; // on the stack: most bodies are small
    let mut file: Option<BufWriter<File>> = None;
    let mut len = 0u64;
    if announced.is_some_and(|n| !fits(n)) {
        file = Some(open_spool(&temp_dir, &[])?);
    }
    loop {
        let n = body.read(&mut chunk).map_err(|_| SpoolError::Client)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        if file.is_none() && !fits(len) {
            file = Some(open_spool(&temp_dir, &memory)?);
            memory = Vec::new();
        }
        match &mut file {
            Some(f) => f.write_all(&chunk[..n]).map_err(SpoolError::TempFile)?,
            None => memory.extend_from_slice(&chunk[..n]),
        }
    }
    match file {
        None => Ok(Spool::Memory(memory)),
        Some(f) => {
            let file = f
                .into_inner()
                .map_err(|e| SpoolError::TempFile(e.into_error()))?;
            Ok(Spool::File { file, len })
        }
    }
}

/// A new temp file holding `first` (what was kept in memory so far), buffered for writing.
fn open_spool(
    temp_dir: &impl Fn() -> PathBuf,
    first: &[u8],
) -> Result<BufWriter<File>, SpoolError> {
    let file = anonymous_file(&temp_dir()).map_err(SpoolError::TempFile)?;
    let mut w = BufWriter::with_capacity(WRITE_BUFFER, file);
    w.write_all(first).map_err(SpoolError::TempFile)?;
    Ok(w)
}

/// An unnamed file in `dir`, mode 0600: `O_TMPFILE` where the file system has it, else a file
/// created under a unique name and unlinked at once. Either way nothing is left behind once
/// the descriptor closes.
pub(crate) fn anonymous_file(dir: &Path) -> io::Result<File> {
    let unnamed = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match unnamed {
        Ok(f) => Ok(f),
        // Older kernels and some file systems (overlay on old kernels, NFS) lack O_TMPFILE.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            named_then_unlinked(dir)
        }
        Err(e) => Err(e),
    }
}

fn named_then_unlinked(dir: &Path) -> io::Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("mod_rwsgi-body.{}.{n}", std::process::id()));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                std::fs::remove_file(&path)?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// APR's temp directory (`TMPDIR`, `TMP`, `TEMP`, then `/tmp`, `/var/tmp`, `/usr/tmp`, the first
/// one that is writable; APR caches the answer for the process).
///
/// # Safety
/// `pool` must be a live pool (the request's).
pub(crate) unsafe fn apr_temp_dir(pool: *mut apr_pool_t) -> PathBuf {
    let mut dir: *const std::ffi::c_char = std::ptr::null();
    // SAFETY: out-parameter; on success APR points it at a NUL-terminated string in `pool`
    // (or its static cache), valid while we copy it here.
    let rv = unsafe { apr_temp_dir_get(&mut dir, pool) };
    if rv != APR_SUCCESS as apr_status_t || dir.is_null() {
        return std::env::temp_dir();
    }
    // SAFETY: non-null and NUL-terminated (above).
    let bytes = unsafe { CStr::from_ptr(dir) }.to_bytes();
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};

    /// A body handed out in pieces of `piece` bytes.
    struct Pieces {
        data: Vec<u8>,
        at: usize,
        piece: usize,
    }

    impl Body for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.piece).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn spool(len: usize, announced: bool) -> Spool {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut body = Pieces {
            data,
            at: 0,
            piece: 8000,
        };
        let announced = announced.then_some(len as u64);
        match read_body(&mut body, announced, std::env::temp_dir) {
            Ok(s) => s,
            Err(_) => panic!("spooling failed"),
        }
    }

    fn contents(s: Spool) -> Vec<u8> {
        match s {
            Spool::Memory(m) => m,
            Spool::File { mut file, len } => {
                let mut all = Vec::new();
                file.rewind().unwrap();
                file.read_to_end(&mut all).unwrap();
                assert_eq!(all.len() as u64, len);
                all
            }
        }
    }

    #[test]
    fn small_bodies_stay_in_memory_large_ones_go_to_a_file() {
        for (len, announced) in [
            (0, true),
            (10, false),
            (IN_MEMORY, true),
            (IN_MEMORY, false),
        ] {
            let s = spool(len, announced);
            assert!(matches!(s, Spool::Memory(_)), "{len}");
            assert_eq!(contents(s).len(), len);
        }
        for (len, announced) in [
            (IN_MEMORY + 1, true),
            (IN_MEMORY + 1, false),
            (3 * IN_MEMORY + 7, false),
        ] {
            let s = spool(len, announced);
            assert!(matches!(s, Spool::File { .. }), "{len}");
            let all = contents(s);
            assert_eq!(all.len(), len);
            assert!(all.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        }
    }

    #[test]
    fn spool_files_have_no_name() {
        let dir = std::env::temp_dir().join(format!("rwsgi-spool-test.{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = anonymous_file(&dir).unwrap();
        let g = named_then_unlinked(&dir).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        drop((f, g));
        std::fs::remove_dir(&dir).unwrap();
    }
}
