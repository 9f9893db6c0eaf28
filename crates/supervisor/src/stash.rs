//! Request body bytes taken off the socket before the app asked for them.
//!
//! While the response cannot be written (the front end is not reading), the worker reads the
//! body the front end is still sending and keeps it here, so that neither side waits for the
//! other (see `respond.rs`). The app may still read those bytes later, so they are kept, not
//! thrown away: the first [`MEM_LIMIT`] bytes in memory, the rest in an unlinked temporary file
//! (as nginx spools a request body), in order.

use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;

/// Stashed bytes kept in memory; beyond this they go to a temporary file.
pub const MEM_LIMIT: usize = 1 << 20;

/// A FIFO of body bytes: memory first, then a temporary file.
#[derive(Default)]
pub struct Stash {
    mem: Vec<u8>,
    /// Bytes of `mem` already handed out.
    mem_read: usize,
    file: Option<File>,
    file_read: u64,
    file_written: u64,
}

impl Stash {
    /// Bytes waiting to be read.
    pub fn len(&self) -> u64 {
        (self.mem.len() - self.mem_read) as u64 + (self.file_written - self.file_read)
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `data` (after everything stashed before).
    pub fn push(&mut self, data: &[u8]) -> io::Result<()> {
        let file_empty = self.file_read == self.file_written;
        if file_empty && self.mem.len() - self.mem_read + data.len() <= MEM_LIMIT {
            if self.mem_read > 0 && self.mem.len() + data.len() > MEM_LIMIT {
                self.mem.drain(..self.mem_read);
                self.mem_read = 0;
            }
            self.mem.extend_from_slice(data);
            return Ok(());
        }
        let file = match &self.file {
            Some(f) => f,
            None => self.file.insert(temp_file()?),
        };
        file.write_all_at(data, self.file_written)?;
        self.file_written += data.len() as u64;
        Ok(())
    }

    /// Takes up to `buf.len()` of the oldest bytes; 0 when empty.
    pub fn pop(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.mem_read < self.mem.len() {
            let n = buf.len().min(self.mem.len() - self.mem_read);
            buf[..n].copy_from_slice(&self.mem[self.mem_read..self.mem_read + n]);
            self.mem_read += n;
            if self.mem_read == self.mem.len() {
                self.mem.clear();
                self.mem_read = 0;
            }
            return Ok(n);
        }
        let Some(file) = &self.file else {
            return Ok(0);
        };
        let left = self.file_written - self.file_read;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = file.read_at(&mut buf[..want], self.file_read)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the request body's temporary file is shorter than written",
            ));
        }
        self.file_read += n as u64;
        if self.file_read == self.file_written {
            // Start over at offset 0; the space is given back to the file system.
            self.file_read = 0;
            self.file_written = 0;
            let _ = file.set_len(0);
        }
        Ok(n)
    }
}

/// An unnamed file in the first temporary directory that takes one: `$TMPDIR` (else /tmp),
/// then /tmp and /var/tmp. A worker inherits `$TMPDIR` from whoever started the supervisor
/// (a web server's master, as root), and may not be allowed to write there after it dropped
/// its privileges.
fn temp_file() -> io::Result<File> {
    let mut first_error = None;
    for dir in [std::env::temp_dir(), "/tmp".into(), "/var/tmp".into()] {
        match temp_file_in(&dir) {
            Ok(file) => return Ok(file),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| io::ErrorKind::NotFound.into()))
}

/// An unnamed file in `dir`: `O_TMPFILE` where the file system has it, else a named file
/// removed at once.
fn temp_file_in(dir: &std::path::Path) -> io::Result<File> {
    let cdir = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "temporary directory name"))?;
    // SAFETY: cdir is NUL-terminated; the result is checked.
    let fd = unsafe {
        libc::open(
            cdir.as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd >= 0 {
        // SAFETY: open returned a new descriptor that nothing else owns.
        return Ok(unsafe { File::from_raw_fd(fd) });
    }
    let mut template = dir.join("rwsgi-body-XXXXXX").into_os_string().into_vec();
    template.push(0);
    // SAFETY: template is a writable, NUL-terminated buffer ending in XXXXXX, as mkostemp wants.
    let fd = unsafe { libc::mkostemp(template.as_mut_ptr().cast(), libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; mkostemp filled in the name, still NUL-terminated.
    unsafe { libc::unlink(template.as_ptr().cast()) };
    // SAFETY: mkostemp returned a new descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(stash: &mut Stash, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = stash.pop(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn keeps_order_across_memory_and_file() {
        let mut stash = Stash::default();
        let data: Vec<u8> = (0..3 * MEM_LIMIT + 123).map(|i| (i % 251) as u8).collect();
        for piece in data.chunks(70_001) {
            stash.push(piece).unwrap();
        }
        assert_eq!(stash.len(), data.len() as u64);
        assert!(
            stash.file.is_some(),
            "beyond MEM_LIMIT the bytes go to a file"
        );
        assert_eq!(drain(&mut stash, 65_536), data);
        assert!(stash.is_empty());
    }

    #[test]
    fn interleaved_pushes_and_pops() {
        let mut stash = Stash::default();
        let mut expected = Vec::new();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 300_000];
        for round in 0..20u8 {
            let piece = vec![round; 200_000 + usize::from(round) * 1000];
            stash.push(&piece).unwrap();
            expected.extend_from_slice(&piece);
            let n = stash.pop(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        got.extend(drain(&mut stash, 4096));
        assert_eq!(got, expected);
    }
}
