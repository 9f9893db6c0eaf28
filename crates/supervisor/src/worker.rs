//! One worker process: after fork it drops privileges, starts its own interpreter, loads the app,
//! and runs `threads` request threads that accept from the inherited listening socket.
//!
//! Each thread waits in its own epoll set on the listening socket (EPOLLEXCLUSIVE: one idle
//! thread is woken per connection, not all of them) and on the stop pipe. The stop pipe is written
//! by the SIGTERM handler (graceful stop from the supervisor) or by the thread that accepted the
//! `maximum-requests`-th connection, and never read, so it stays readable for every thread: each
//! one finishes the request it has, sees the pipe, and returns. When all have returned the process
//! exits 0, which tells the supervisor the exit was orderly.
//!
//! request-timeout is enforced here, by pyhost's watchdog: the exception it raises brings a
//! thread stuck in Python back, and the worker lives on. A thread stuck in C code is taken
//! over (conn.rs answers 504 on its connection) and the worker retires: it accepts no more,
//! the supervisor starts its replacement, and it exits once every thread but the stuck ones
//! has returned (a stuck thread cannot be joined). The supervisor's SIGKILL after
//! request-timeout (master.rs) is only the backstop for a worker that cannot do this.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use pyhost::{Mode, ProcessApps, PythonConfig};

use crate::config::{AppConfig, GroupConfig, Interface};
use crate::conn::{self, Ctx, MountedApp, Scratch};
use crate::listener::{readable, Listener};
use crate::log::WorkerLog;
use crate::metrics::GroupMetrics;
use crate::privs::Identity;
use crate::scoreboard::Scoreboard;
use crate::signals::{self, Pipe};
use crate::{rwlog, rwlog_limited};

/// Exit status of a worker that could not start Python (the supervisor backs off on these).
pub const EXIT_PYTHON: i32 = 3;
/// Exit status of a worker that could not drop privileges.
pub const EXIT_PRIVS: i32 = 4;
/// Exit status of a worker whose setup (pipes, signals, threads) failed.
pub const EXIT_SETUP: i32 = 5;

/// Stack of a request thread: Python code runs on it, and C extensions may recurse deeply; 8 MiB
/// is the usual main-thread size (only touched pages cost memory).
const THREAD_STACK: usize = 8 << 20;

/// What the supervisor hands to a freshly forked worker.
pub struct Start<'a> {
    pub cfg: &'a GroupConfig,
    pub listener: &'a Listener,
    pub board: &'a Scoreboard,
    pub slot: usize,
    pub identity: Option<&'a Identity>,
    /// The supervisor's pid, to notice that it died before PR_SET_PDEATHSIG took effect.
    pub parent: libc::pid_t,
    /// The group's metrics slots.
    pub metrics: &'a GroupMetrics,
}

/// Runs the worker; never returns.
pub fn run(start: Start<'_>) -> ! {
    if let Some(region) = ::metrics::region() {
        region.register_process(
            ::metrics::Role::Worker,
            start.metrics.group,
            start.cfg.threads,
        );
    }
    let code = match setup_and_serve(&start) {
        Ok(()) => 0,
        Err(code) => code,
    };
    if let Some(region) = ::metrics::region() {
        region.release_process();
    }
    // _exit: no atexit handlers, no stdio flush races with threads the app may have started, no
    // interpreter finalisation (which can hang on app threads); the supervisor only needs the code.
    // SAFETY: terminating the process is always sound.
    unsafe { libc::_exit(code) }
}

fn setup_and_serve(start: &Start<'_>) -> Result<(), i32> {
    let stop = prepare_process(start)?;
    crate::workdir::apply(start.cfg).map_err(|_| EXIT_SETUP)?;
    if start.cfg.interface == Interface::Asgi {
        return crate::asgi::serve(start, &stop);
    }
    let apps = start_python(start.cfg)?;
    serve(start, &apps, &stop)
}

/// Everything before Python: the stop pipe and signal handlers, the process name, the
/// privilege drop, and dying with the supervisor. Returns the stop pipe.
fn prepare_process(start: &Start<'_>) -> Result<Pipe, i32> {
    let stop = Pipe::new().map_err(|e| fail(EXIT_SETUP, "stop pipe", &e))?;
    signals::install_worker(&stop).map_err(|e| fail(EXIT_SETUP, "signal handlers", &e))?;
    // Signals were blocked across fork() (see master.rs); now that our handlers are in place,
    // start from an empty mask.
    signals::unblock_all();
    if let Some(name) = &start.cfg.display_name {
        set_process_name(name);
    }
    if let Some(id) = start.identity {
        id.apply().map_err(|e| {
            rwlog!(
                "RW040",
                "cannot switch to user {:?}: {e}; exiting",
                id.user.name
            );
            EXIT_PRIVS
        })?;
    }
    // Die with the supervisor: orphaned workers would keep the socket and the port. Set after the
    // privilege drop, because a credential change clears it (prctl(2)); then check that the
    // supervisor did not die before it took effect.
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    // SAFETY: plain getter.
    if unsafe { libc::getppid() } != start.parent {
        return Err(EXIT_SETUP);
    }
    Ok(stop)
}

/// The interpreter and the group's apps (pyhost's per-process start-up), each preloaded: a
/// failed import is logged and retried by the requests.
fn start_python(cfg: &GroupConfig) -> Result<ProcessApps, i32> {
    let py = PythonConfig {
        python_home: cfg.python_home.clone(),
        python_path: cfg.python_path.clone(),
    };
    let apps = ProcessApps::start(&py, cfg.apps.iter().map(AppConfig::spec)).map_err(|e| {
        rwlog!("RW020", "cannot start Python: {e}");
        EXIT_PYTHON
    })?;
    for app in apps.preload_all(&WorkerLog) {
        rwlog!(
            "RW021",
            "loading {} failed (traceback above); requests retry the import",
            app.spec().source
        );
    }
    Ok(apps)
}

/// Runs the request threads until the worker stops (stop pipe or maximum-requests).
fn serve(start: &Start<'_>, apps: &ProcessApps, stop: &Pipe) -> Result<(), i32> {
    let cfg = start.cfg;
    let mounted: Vec<MountedApp<'_>> = apps
        .iter()
        .zip(&cfg.apps)
        .zip(&start.metrics.apps)
        .map(|((app, conf), metrics)| MountedApp {
            mount: conf.mount.as_deref().map(str::as_bytes),
            app,
            metrics: *metrics,
        })
        .collect();
    let shared = Shared {
        stopping: AtomicBool::new(false),
        accepted: AtomicU64::new(0),
        stop,
        returned: Mutex::new(0),
        changed: Condvar::new(),
    };
    let threads = cfg.threads as usize;
    let (board, slot) = (start.board, start.slot);
    let retire = || {
        board.set_retiring_stuck(slot);
        shared.request_stop();
        shared.changed.notify_all();
    };
    let ctx = Ctx {
        apps: &mounted,
        mode: Mode::pool(cfg.processes as usize, threads),
        socket_timeout: cfg.socket_timeout,
        queue_timeout: cfg.queue_timeout,
        request_timeout: cfg.request_timeout,
        retire: &retire,
        log: &WorkerLog,
        board: start.board,
        slot: start.slot,
        thread: 0,
        count_http: start.metrics.count_http,
        metrics_group: start.metrics.group,
        secret: cfg.secret.as_ref(),
        protocol: cfg.protocol,
    };
    let max_requests = jittered(cfg.maximum_requests);
    std::thread::scope(|scope| {
        let spawned =
            spawn_request_threads(scope, start.listener, &shared, ctx, threads, max_requests);
        if spawned < threads {
            return Err(EXIT_SETUP);
        }
        start.board.set_ready(start.slot);
        rwlog!(
            "RW022",
            "worker ready: {threads} threads, {} app(s)",
            apps.len()
        );
        let stuck = shared.wait_for_threads(threads);
        log_exit(&shared, max_requests);
        if stuck > 0 {
            rwlog!(
                "RW042",
                "worker exits leaving {stuck} thread(s) stuck past request-timeout behind"
            );
            // A stuck thread cannot be joined, and leaving the scope would join it.
            // SAFETY: terminating the process is always sound (see run()).
            unsafe { libc::_exit(0) };
        }
        Ok(())
    })?;
    log_exit(&shared, max_requests);
    Ok(())
}

fn log_exit(shared: &Shared<'_>, max_requests: u64) {
    if max_requests > 0 && shared.accepted.load(Ordering::Relaxed) >= max_requests {
        rwlog!(
            "RW011",
            "served maximum-requests ({max_requests}); exiting to be replaced"
        );
    }
}

/// Starts `threads` request threads in `scope`, each with its own copy of `ctx`; returns how
/// many started. After a failure the ones started are told to stop.
fn spawn_request_threads<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    listener: &'env Listener,
    shared: &'env Shared<'env>,
    ctx: Ctx<'env>,
    threads: usize,
    max_requests: u64,
) -> usize {
    for t in 0..threads {
        let ctx = Ctx { thread: t, ..ctx };
        let spawn = std::thread::Builder::new()
            .name(format!("rwsgi-req-{t}"))
            .stack_size(THREAD_STACK)
            .spawn_scoped(scope, move || {
                accept_loop(listener, shared, &ctx, max_requests);
                shared.thread_returned();
            });
        if let Err(e) = spawn {
            rwlog!("RW023", "cannot start request thread {t}: {e}");
            shared.request_stop();
            return t;
        }
    }
    threads
}

fn fail(code: i32, what: &str, e: &io::Error) -> i32 {
    rwlog!("RW024", "worker setup failed: {what}: {e}");
    code
}

/// Sets the name `ps -o comm`, `top` and /proc/PID/comm show (at most 15 bytes).
pub fn set_process_name(name: &str) {
    let mut bytes: Vec<u8> = name.bytes().filter(|&b| b != 0).take(15).collect();
    bytes.push(0);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes, which bytes is.
    unsafe { libc::prctl(libc::PR_SET_NAME, bytes.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// State shared by the request threads of one worker.
struct Shared<'a> {
    stopping: AtomicBool,
    accepted: AtomicU64,
    stop: &'a Pipe,
    /// Request threads that have returned, and its wake-up for the main thread.
    returned: Mutex<usize>,
    changed: Condvar,
}

impl Shared<'_> {
    fn request_stop(&self) {
        if !self.stopping.swap(true, Ordering::SeqCst) {
            self.stop.poke(1);
        }
    }

    fn thread_returned(&self) {
        *self.returned.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.changed.notify_all();
    }

    /// Main thread: waits until each of the `threads` request threads has returned or is stuck
    /// past its request-timeout (pyhost took its request over); returns how many are stuck.
    fn wait_for_threads(&self, threads: usize) -> usize {
        let mut returned = self.returned.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let stuck = pyhost::stuck_threads();
            if *returned + stuck >= threads {
                return if *returned >= threads { 0 } else { stuck };
            }
            // Woken by each return and by a retirement; the timeout covers a stuck thread
            // coming back (which only lowers the count) without a wake-up of its own.
            returned = match self.changed.wait_timeout(returned, Duration::from_secs(1)) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// An epoll set watching the listening socket (exclusively) and the stop pipe.
struct Waiter {
    epoll: OwnedFd,
}

const LISTEN_TOKEN: u64 = 1;
const STOP_TOKEN: u64 = 2;

impl Waiter {
    fn new(listen: RawFd, stop: RawFd) -> io::Result<Waiter> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: epoll_create1 returned a fresh fd that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let add = |target: RawFd, events: u32, token: u64| {
            let mut ev = libc::epoll_event { events, u64: token };
            // SAFETY: both fds are open; ev is a valid epoll_event.
            if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, target, &mut ev) }
                != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        // EPOLLEXCLUSIVE: a new connection wakes one idle thread instead of the whole pool.
        add(
            listen,
            (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32,
            LISTEN_TOKEN,
        )?;
        add(stop, libc::EPOLLIN as u32, STOP_TOKEN)?;
        Ok(Waiter { epoll })
    }

    /// Blocks until something is ready or `timeout_ms` passed (-1: no limit); returns (listener
    /// ready, stop requested).
    fn wait(&self, timeout_ms: i32) -> io::Result<(bool, bool)> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 2];
        // SAFETY: events is a valid array of 2 epoll_events; the epoll fd is open.
        let n =
            unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 2, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok((false, false))
            } else {
                Err(e)
            };
        }
        let ready = &events[..n as usize];
        let token = |t: u64| ready.iter().any(|e| e.u64 == t);
        Ok((token(LISTEN_TOKEN), token(STOP_TOKEN)))
    }
}

fn accept_loop(listener: &Listener, shared: &Shared<'_>, ctx: &Ctx<'_>, max_requests: u64) {
    let waiter = match Waiter::new(listener.as_raw_fd(), shared.stop.read.as_raw_fd()) {
        Ok(w) => w,
        Err(e) => {
            rwlog!("RW024", "thread {}: epoll setup failed: {e}", ctx.thread);
            shared.request_stop();
            return;
        }
    };
    // One Python thread state for the thread's whole life: cheaper than one per request, and the
    // app's threading.local() data (Django's DB connections) survives between requests.
    let _python_thread = pyhost::register_thread();
    let mut scratch = Scratch::new();
    // Only threads admitted into Python wait for connections (pyhost's admission: as many as the
    // GIL serves, more while requests wait outside Python). The others wait in pyhost, and a
    // connection nobody here can take yet stays in the listen queue, where an admitted thread of
    // another worker process may take it.
    let mut permit = None;
    loop {
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        if permit.is_none() {
            permit = admit(listener, shared);
            if permit.is_none() {
                return; // stopping
            }
        }
        // A rate-limited log line is waiting for its summary: wake up for it even if no
        // connection comes (the summary of a flood's last second).
        crate::log::flush_due();
        let timeout_ms = if crate::log::pending() { 1000 } else { -1 };
        let (incoming, stop) = match waiter.wait(timeout_ms) {
            Ok(r) => r,
            Err(e) => {
                rwlog_limited!("RW034", "epoll_wait: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        // A connection that woke this thread is taken even when the stop came with it: the
        // listener is in every thread's epoll set with EPOLLEXCLUSIVE, so the kernel woke this
        // waiter instead of the others, and a connection left in the queue now would wait for
        // the next one to arrive (a client sending one request at a time waited its whole
        // timeout once, in a rolling restart). A draining worker still serves what it took.
        if incoming {
            accept_one(listener, shared, ctx, max_requests, &mut scratch);
            if permit.as_ref().is_some_and(pyhost::Permit::over_limit) {
                permit = None;
            }
        }
        if stop {
            shared.stopping.store(true, Ordering::Relaxed);
            return;
        }
    }
}

/// Accepts one connection from the listener and serves it (nothing when another thread or
/// process was faster).
fn accept_one(
    listener: &Listener,
    shared: &Shared<'_>,
    ctx: &Ctx<'_>,
    max_requests: u64,
    scratch: &mut Scratch,
) {
    match listener.accept() {
        Ok(stream) => {
            let n = shared.accepted.fetch_add(1, Ordering::Relaxed) + 1;
            if max_requests > 0 && n >= max_requests {
                // Serve this one, accept no more; the supervisor sees the flag and starts
                // the replacement while this request finishes.
                ctx.board.set_retiring(ctx.slot);
                shared.request_stop();
            }
            // A panic is a bug, but it must cost one connection, not one of the threads.
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                conn::serve(stream, ctx, scratch)
            }));
            if served.is_err() {
                ctx.board.set_busy(ctx.slot, ctx.thread, 0);
                *scratch = Scratch::new();
                rwlog!(
                    "RW025",
                    "request thread {} recovered from a panic; connection closed",
                    ctx.thread
                );
            }
        }
        Err(e) => match e.raw_os_error() {
            // Another thread or process was faster, or the client gave up while queued.
            Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ECONNABORTED) => {}
            Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM) => {
                rwlog_limited!("RW034", "accept: {e}; pausing 100 ms");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            _ => rwlog_limited!("RW034", "accept: {e}"),
        },
    }
}

/// Wait until this thread is admitted into Python (pyhost decides how many are); None when the
/// worker is stopping meanwhile.
fn admit(listener: &Listener, shared: &Shared<'_>) -> Option<pyhost::Permit> {
    pyhost::admit(&|| {
        if shared.stopping.load(Ordering::Relaxed) || readable(shared.stop.read.as_raw_fd()) {
            pyhost::Demand::Stop
        } else if readable(listener.as_raw_fd()) {
            pyhost::Demand::Waiting
        } else {
            pyhost::Demand::Idle
        }
    })
}

/// maximum-requests plus up to 10% more, different per process, so that workers started together
/// do not all recycle at the same moment (gunicorn's max_requests_jitter idea).
pub(crate) fn jittered(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    // The pid is as good a spread as we need, and needs no random-number dependency.
    max + u64::from(std::process::id()) % (max / 10 + 1)
}
