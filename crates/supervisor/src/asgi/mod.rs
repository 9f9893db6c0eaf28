//! An ASGI worker process (`interface=asgi`, `--interface asgi`): one asyncio loop (pyhost's
//! `AsgiHost`) that runs the apps and also drives the sockets: the listening socket and every
//! front-end connection are watched by the loop and handled in Rust (`conn`), so a worker holds
//! as many concurrent requests as its apps can `await`, with no thread per connection.
//!
//! The supervisor side is the WSGI one (fork, respawn, recycle, graceful stop). What differs:
//! `threads=` does not apply (one loop); `maximum-requests=` counts accepted connections;
//! `request-timeout=` cancels the request's task on the loop (504, or the response cut), and
//! when a coroutine blocks the loop itself past it (synchronous code: nothing on the loop runs,
//! no cancel reaches it) the request is answered from pyhost's monitor thread (conn.rs
//! `take_over`) and the worker retires as one with a WSGI thread stuck in C code does. On stop
//! the worker stops accepting, closes its WebSockets with 1001, lets the connections still open
//! finish within `graceful-timeout`, then runs the apps' lifespan shutdown.

mod conn;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyhost::asgi::{AsgiConfig, AsgiHost, FdHandler, Io};
use pyhost::PythonConfig;

use crate::config::{AppConfig, GroupConfig};
use crate::listener::Listener;
use crate::log::WorkerLog;
use crate::rwlog;
use crate::signals::Pipe;
use crate::worker::{Start, EXIT_PYTHON, EXIT_SETUP};

use conn::{ConnHandler, Shared};

/// Connections accepted per readiness callback at most, so one busy listener cannot starve the
/// connections already open.
const ACCEPT_BATCH: usize = 64;

/// Accepts front-end connections on the loop.
struct Acceptor {
    listener: Listener,
    shared: Arc<Shared>,
    accepted: Arc<AtomicU64>,
    /// maximum-requests (0 = none); reaching it sets `retire`.
    max_requests: u64,
    retire: Arc<AtomicBool>,
}

impl FdHandler for Acceptor {
    fn ready(&mut self, io: &mut Io<'_>, readable: bool, _writable: bool) {
        if !readable {
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            if self.retire.load(Ordering::Relaxed) {
                return;
            }
            match self.listener.accept() {
                Ok(stream) => {
                    // SAFETY: fcntl on the accepted socket's own descriptor.
                    unsafe {
                        let fd = stream.as_raw_fd();
                        let flags = libc::fcntl(fd, libc::F_GETFL);
                        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
                    }
                    let fd = stream.as_raw_fd();
                    let handler = ConnHandler::new(stream, Arc::clone(&self.shared));
                    io.spawn(fd, Box::new(handler), true, false);
                    let n = self.accepted.fetch_add(1, Ordering::Relaxed) + 1;
                    if self.max_requests > 0 && n >= self.max_requests {
                        self.retire.store(true, Ordering::Relaxed);
                    }
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ECONNABORTED) => return,
                    _ => {
                        rwlog!("RW034", "accept: {e}");
                        return;
                    }
                },
            }
        }
    }
}

/// Runs the worker's loop until it is told to stop (or reaches maximum-requests).
pub fn serve(start: &Start<'_>, stop: &Pipe) -> Result<(), i32> {
    let cfg = start.cfg;
    let host = start_host(cfg)?;
    let listener = start.listener.try_clone().map_err(|e| {
        rwlog!("RW024", "worker setup failed: listener: {e}");
        EXIT_SETUP
    })?;
    let listen_fd = listener.as_raw_fd();
    let shared = Arc::new(Shared {
        mounts: cfg
            .apps
            .iter()
            .map(|a| a.mount.as_ref().map(|m| m.as_bytes().to_vec()))
            .collect(),
        queue_timeout: cfg.queue_timeout,
        secret: cfg.secret.clone(),
        live: AtomicUsize::new(0),
        request_timeout: cfg.request_timeout,
        stuck: AtomicBool::new(false),
    });
    let retire = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let max_requests = crate::worker::jittered(cfg.maximum_requests);
    host.watch(
        listen_fd,
        Box::new(Acceptor {
            listener,
            shared: Arc::clone(&shared),
            accepted: Arc::clone(&accepted),
            max_requests,
            retire: Arc::clone(&retire),
        }),
        false,
    );
    start.board.set_ready(start.slot);
    rwlog!(
        "RW022",
        "worker ready: ASGI, one event loop, {} app(s)",
        cfg.apps.len()
    );
    wait_for_stop(stop, &retire, &shared.stuck);
    let stuck = shared.stuck.load(Ordering::Acquire);
    if stuck {
        // No more accepts (the acceptor checks the flag whenever the loop comes back).
        retire.store(true, Ordering::Relaxed);
        start.board.set_retiring(start.slot);
    } else if retire.load(Ordering::Relaxed) {
        start.board.set_retiring(start.slot);
        rwlog!(
            "RW011",
            "served maximum-requests ({max_requests}); exiting to be replaced"
        );
    }
    if !drain(&host, listen_fd, &shared, cfg.graceful_timeout) && stuck {
        // worker::run exits without joining it (`_exit`).
        rwlog!(
            "RW042",
            "worker exits leaving its asyncio loop blocked past request-timeout behind"
        );
    }
    Ok(())
}

/// The interpreter and the loop; the apps are imported on the loop thread, which also runs
/// their lifespan startup before the worker says it is ready.
fn start_host(cfg: &GroupConfig) -> Result<AsgiHost, i32> {
    let py = PythonConfig {
        python_home: cfg.python_home.clone(),
        python_path: cfg.python_path.clone(),
    };
    pyhost::initialize(&py).map_err(|e| {
        rwlog!("RW020", "cannot start Python: {e}");
        EXIT_PYTHON
    })?;
    let asgi = AsgiConfig {
        shutdown_timeout: cfg.graceful_timeout,
        ..AsgiConfig::default()
    };
    let specs = cfg.apps.iter().map(AppConfig::spec).collect();
    AsgiHost::start(specs, asgi, Arc::new(WorkerLog)).map_err(|e| {
        rwlog!("RW020", "cannot start the asyncio loop: {e}");
        EXIT_PYTHON
    })
}

/// Blocks until the stop pipe is readable (SIGTERM, the supervisor), the acceptor reached
/// maximum-requests, or a request blocked the loop past its timeout.
fn wait_for_stop(stop: &Pipe, retire: &AtomicBool, stuck: &AtomicBool) {
    loop {
        if retire.load(Ordering::Relaxed) || stuck.load(Ordering::Acquire) {
            return;
        }
        let mut pfd = libc::pollfd {
            fd: stop.read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; the pipe is open for the worker's life.
        let n = unsafe { libc::poll(&mut pfd, 1, 200) };
        if n > 0 {
            return;
        }
    }
}

/// The graceful stop: no new connections, WebSockets closed with 1001, the open connections
/// given until `graceful` to finish, then the lifespan shutdown (bounded by the same timeout).
/// False if the loop did not stop (a coroutine blocks it).
fn drain(host: &AsgiHost, listen_fd: i32, shared: &Shared, graceful: Duration) -> bool {
    host.unwatch(listen_fd);
    host.going_away();
    let deadline = Instant::now() + graceful;
    while shared.live.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = shared.live.load(Ordering::Relaxed);
    if left > 0 {
        rwlog!(
            "RW007",
            "graceful-timeout: {left} connection(s) still open; stopping without them"
        );
    }
    host.stop()
}
