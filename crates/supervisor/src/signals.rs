//! Signals as bytes on a pipe (the self-pipe trick), plus the small fd helpers around it.
//!
//! A signal handler may only do async-signal-safe things, so ours writes the signal number to a
//! non-blocking pipe and returns; the supervisor's poll loop (or a worker thread's poll) reads the
//! pipe and does the real work in normal context. One static holds the pipe's write end: the
//! supervisor points it at its signal pipe, and a worker, after fork, at its stop pipe.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

static PIPE_W: AtomicI32 = AtomicI32::new(-1);

/// The handler of every signal the supervisor and its workers catch (installed by
/// `set_handler`): the signal number, as one byte, on the pipe `PIPE_W` names.
///
/// # Signal safety
/// Runs in signal context, on whatever thread the signal interrupted: it only loads an atomic,
/// calls write(2) and saves/restores errno (all async-signal-safe), allocates nothing, takes no
/// lock and cannot panic. Not `unsafe` to call: any thread may run it at any time.
extern "C" fn on_signal(sig: libc::c_int) {
    let fd = PIPE_W.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    // SAFETY: __errno_location returns this thread's errno slot; we restore it so the interrupted
    // code never sees an errno changed by the handler.
    let saved = unsafe { *libc::__errno_location() };
    let byte = sig as u8;
    // SAFETY: write(2) is async-signal-safe; the buffer is one valid byte on our stack. A full
    // pipe (EAGAIN) just drops the byte: a wake-up is already pending.
    unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// A non-blocking, close-on-exec pipe.
pub struct Pipe {
    /// Read end.
    pub read: OwnedFd,
    /// Write end.
    pub write: OwnedFd,
}

impl Pipe {
    /// Creates the pipe.
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: fds is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe { read, write })
    }

    /// Writes one byte (a wake-up). Never blocks; a full pipe is already readable, which is all a
    /// wake-up needs.
    pub fn poke(&self, byte: u8) {
        // SAFETY: one valid byte; the fd is open for as long as self lives.
        unsafe { libc::write(self.write.as_raw_fd(), (&byte as *const u8).cast(), 1) };
    }

    /// Reads every pending byte.
    pub fn drain(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: buf is valid for buf.len() bytes; the fd is open (non-blocking).
            let n =
                unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
    }
}

fn set_handler(sig: libc::c_int, handler: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: an all-zero sigaction is a valid starting value (empty mask, no flags).
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler;
    // SA_RESTART: plain blocking reads/writes in worker threads are not cut short by a signal; the
    // poll loops see EINTR anyway and re-check their state.
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: sa is fully initialised; a null old-action pointer is allowed.
    if unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn handler_ptr() -> libc::sighandler_t {
    on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t
}

/// Supervisor: TERM, INT, HUP and CHLD become bytes on `pipe`; SIGPIPE is ignored (a write to a
/// closed socket must be an EPIPE error, never a dead process).
///
/// The supervisor may be forked from a web server's master (nginx blocks most signals in its
/// master and has handlers for the rest), so the handled signals are unblocked explicitly and the
/// other signals a host commonly catches go back to their defaults: no host code runs in our
/// processes.
pub fn install_supervisor(pipe: &Pipe) -> io::Result<()> {
    PIPE_W.store(pipe.write.as_raw_fd(), Ordering::Relaxed);
    const HANDLED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD];
    for sig in HANDLED {
        set_handler(sig, handler_ptr())?;
    }
    for sig in [
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
        libc::SIGALRM,
        libc::SIGIO,
    ] {
        set_handler(sig, libc::SIG_DFL)?;
    }
    set_handler(libc::SIGPIPE, libc::SIG_IGN)?;
    // SAFETY: zeroed sigset_t values are valid inputs for sigemptyset/sigaddset to overwrite; a
    // null old-mask pointer is allowed.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in HANDLED {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    Ok(())
}

/// Worker (after fork): SIGTERM pokes `stop` (graceful stop); INT and HUP are ignored (a Ctrl-C in
/// a terminal reaches the whole process group; the supervisor decides for its workers); CHLD is back
/// to default so the app's subprocess module can wait for its own children.
pub fn install_worker(stop: &Pipe) -> io::Result<()> {
    PIPE_W.store(stop.write.as_raw_fd(), Ordering::Relaxed);
    set_handler(libc::SIGTERM, handler_ptr())?;
    set_handler(libc::SIGINT, libc::SIG_IGN)?;
    set_handler(libc::SIGHUP, libc::SIG_IGN)?;
    set_handler(libc::SIGCHLD, libc::SIG_DFL)?;
    set_handler(libc::SIGPIPE, libc::SIG_IGN)
}

/// Blocks every signal and returns the previous mask. Used around fork(), so that no handler runs
/// in the child before it has pointed the handler at its own pipe.
pub fn block_all() -> libc::sigset_t {
    // SAFETY: zeroed sigset_t values are valid inputs for sigfillset/pthread_sigmask to overwrite.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    }
}

/// Restores a mask returned by [`block_all`].
pub fn restore_mask(old: &libc::sigset_t) {
    // SAFETY: old came from pthread_sigmask; a null old-mask pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
}

/// Unblocks every signal: a worker starts from a clean mask whatever its host had blocked, and so
/// do the subprocesses the app starts (they inherit the mask).
pub fn unblock_all() {
    // SAFETY: a zeroed sigset_t is a valid input for sigemptyset; a null old-mask pointer is
    // allowed.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// poll(2) over `fds`; EINTR counts as "nothing ready".
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: fds is a valid, writable slice of pollfd for its whole length.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(err);
    }
    Ok(n as usize)
}

/// A pollfd asking for readability.
pub fn readable(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// CLOCK_MONOTONIC in milliseconds: comparable between processes (the scoreboard uses it).
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}
