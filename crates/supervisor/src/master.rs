//! The supervisor of one process group: forks the workers, reaps and replaces them, enforces
//! request-timeout and graceful-timeout, and handles the signals.
//!
//! It is single-threaded and never runs Python, so forking from it is safe. Its loop sleeps in
//! poll(2) on the signal pipe (and the optional lifetime pipe) with a 100 ms tick, and after every
//! wake-up re-derives what to do from its table of workers: that keeps the state machine in one
//! place (`tick`) instead of spread over signal handlers.
//!
//! - A worker that exits is replaced. Workers that die before they are ready, or within a second
//!   of starting (a crash loop), are replaced after an exponential back-off: 100 ms doubling up
//!   to 10 s, reset after 30 s without such a death.
//! - request-timeout is enforced by the workers themselves (pyhost's watchdog interrupts the
//!   request; a worker whose thread is stuck in C answers 504 and retires). The supervisor is
//!   the backstop for a worker that cannot: a request still running [`BACKSTOP`] after the
//!   worker's own last resort was due gets the worker SIGKILLed (that request is lost, as with
//!   uWSGI's harakiri) and replaced at once.
//! - SIGTERM/SIGINT (or the lifetime pipe closing): the socket file is removed, every worker gets
//!   SIGTERM and finishes its in-flight requests; stragglers are SIGKILLed after graceful-timeout.
//!   A second SIGINT/SIGTERM kills at once.
//! - While no worker is ready and the last one died before it was ready (a crash loop), the
//!   supervisor answers the group's connections itself with 503 (`refuse.rs`) instead of
//!   leaving them in the backlog until the front end gives up.
//! - SIGHUP: rolling restart. For each old worker: start a new one, wait until it is ready, then
//!   stop the old one gracefully. The listening socket stays open throughout, so connections are
//!   queued by the kernel, never refused.
//! - A group that replaces another on the same (inherited) socket holds the replaced group's
//!   lifetime pipe and closes it once one of its own workers is ready (or its workers fail to
//!   start): until then the old group keeps serving, after that it drains.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::config::GroupConfig;
use crate::listener::Listener;
use crate::metrics::GroupMetrics;
use crate::privs::Identity;
use crate::refuse::Refuser;
use crate::scoreboard::Scoreboard;
use crate::signals::{self, monotonic_ms, Pipe};
use crate::worker;
use crate::{rwlog, rwlog_limited};
use ::metrics::Respawn;

/// A worker that died unasked before it was ready (Python or the app failed to start), or that
/// died this soon after it started, counts as a crash-loop failure. One that served for a while
/// and then crashed on a request is replaced at once: backing off there would only stretch the
/// outage that one bad request caused.
const EARLY_DEATH: Duration = Duration::from_secs(1);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// After this long without an early death the back-off starts again from zero.
const BACKOFF_RESET: Duration = Duration::from_secs(30);
const TICK_MS: i32 = 100;
/// How long after a worker's own handling of a request-timeout was due (the timeout plus
/// pyhost's interrupt grace) the supervisor kills the worker instead.
const BACKSTOP: Duration = Duration::from_secs(3);

struct Worker {
    pid: libc::pid_t,
    slot: usize,
    started: Instant,
    generation: u64,
    /// Set when we asked it to stop: the deadline after which it is killed.
    stop_deadline: Option<Instant>,
    /// Set when we sent SIGKILL (request-timeout or graceful-timeout); its death is expected.
    killed: bool,
}

/// What ended the supervisor's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// A stop signal or the lifetime pipe; everything was drained.
    Stopped,
}

pub struct Master<'a> {
    cfg: &'a GroupConfig,
    listener: Listener,
    board: Scoreboard,
    identity: Option<Identity>,
    sigpipe: Pipe,
    lifetime: Option<BorrowedFd<'a>>,
    /// The replaced group's lifetime pipe ([`Master::replace_when_ready`]).
    predecessor: Option<OwnedFd>,
    /// nginx: the master's pipe to our keeper ([`Master::outlive_keeper`]).
    server: Option<OwnedFd>,
    workers: Vec<Worker>,
    generation: u64,
    failures: u32,
    last_failure: Option<Instant>,
    next_spawn: Instant,
    shutdown: Option<Instant>,
    metrics: GroupMetrics,
    /// The `--metrics` endpoint process, and when it may be started (again).
    endpoint: Option<libc::pid_t>,
    endpoint_next: Instant,
    /// Why the group has no live worker (the last early death), until a worker is ready.
    outage: Option<String>,
    refuser: Refuser,
}

impl<'a> Master<'a> {
    pub fn new(
        cfg: &'a GroupConfig,
        listener: Listener,
        identity: Option<Identity>,
        lifetime: Option<BorrowedFd<'a>>,
        metrics: GroupMetrics,
    ) -> Result<Self, String> {
        // Room for every worker twice: during a rolling restart the old ones drain while their
        // replacements already run.
        let slots = 2 * cfg.processes as usize + 1;
        let board =
            Scoreboard::new(slots, cfg.threads as usize).map_err(|e| format!("scoreboard: {e}"))?;
        let sigpipe = Pipe::new().map_err(|e| format!("signal pipe: {e}"))?;
        signals::install_supervisor(&sigpipe).map_err(|e| format!("signal handlers: {e}"))?;
        Ok(Master {
            cfg,
            listener,
            board,
            identity,
            sigpipe,
            lifetime,
            predecessor: None,
            server: None,
            workers: Vec::new(),
            generation: 0,
            failures: 0,
            last_failure: None,
            next_spawn: Instant::now(),
            shutdown: None,
            metrics,
            endpoint: None,
            endpoint_next: Instant::now(),
            outage: None,
            refuser: Refuser::new(cfg.protocol),
        })
    }

    /// This group replaces the one whose lifetime pipe `fd` is (same socket, new configuration):
    /// close it once this group can serve, so that no request waits for a group that is
    /// starting while the old one could still take it.
    pub fn replace_when_ready(&mut self, fd: OwnedFd) {
        self.predecessor = Some(fd);
    }

    /// nginx: `fd` is the master's pipe to the keeper that forked us (read end, never read
    /// here). A lifetime pipe closed with the keeper's stop notice stops the group as always;
    /// one closed without it, while this pipe is still up, means the keeper was killed: the
    /// group serves on, and stops when this pipe hangs up (nginx stops, or a reload hands the
    /// group to a new keeper, which closes it once its own group is ready). Until then a
    /// supervisor that dies is not restarted.
    pub fn outlive_keeper(&mut self, fd: OwnedFd) {
        self.server = Some(fd);
    }

    /// The lifetime pipe became readable: the stop notice, or EOF. True when the group stops.
    fn lifetime_says_stop(&mut self) -> bool {
        let Some(fd) = self.lifetime else {
            return false;
        };
        let mut buf = [0u8; 16];
        // SAFETY: buf is valid for its length; poll said the pipe is readable or hung up.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n != 0 || self.server.as_ref().is_none_or(|s| hung_up(s.as_fd())) {
            return true;
        }
        rwlog!(
            "RW015",
            "the group's keeper exited without stopping it; serving on until the server stops \
             or reloads (a supervisor that dies before then is not restarted)"
        );
        self.lifetime = None;
        false
    }

    /// Closes the replaced group's pipe once a worker of ours is ready, or once ours fail at
    /// start (a crash loop must not keep the old group serving beside us), or when we stop.
    fn release_predecessor(&mut self) {
        if self.predecessor.is_none() {
            return;
        }
        let ready = self.workers.iter().any(|w| self.board.is_ready(w.slot));
        if ready || self.failures > 0 || self.shutdown.is_some() {
            self.predecessor = None;
        }
    }

    /// Runs until stopped.
    pub fn run(mut self) -> Exit {
        loop {
            self.tick();
            crate::log::flush_due();
            if self.shutdown.is_some() && self.workers.is_empty() {
                rwlog!("RW009", "all workers stopped; exiting");
                self.stop_endpoint();
                return Exit::Stopped;
            }
            let mut fds = vec![signals::readable(self.sigpipe.read.as_raw_fd())];
            let lifetime_at = self.lifetime.map(|fd| {
                fds.push(signals::readable(fd.as_raw_fd()));
                fds.len() - 1
            });
            // Without a keeper: the master's pipe, for its hang-up only (events 0).
            let server_at = match (&self.lifetime, &self.server) {
                (None, Some(fd)) if self.shutdown.is_none() => {
                    fds.push(libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: 0,
                        revents: 0,
                    });
                    Some(fds.len() - 1)
                }
                _ => None,
            };
            let listen_at = self.answering().then(|| {
                fds.push(signals::readable(self.listener.as_raw_fd()));
                fds.len() - 1
            });
            let refused_from = fds.len();
            self.refuser.poll_fds(&mut fds);
            if let Err(e) = signals::poll(&mut fds, TICK_MS) {
                rwlog!("RW050", "poll: {e}");
                std::thread::sleep(Duration::from_millis(TICK_MS as u64));
            }
            let ready = |at: Option<usize>| at.is_some_and(|i| fds[i].revents != 0);
            if ready(lifetime_at) && self.shutdown.is_none() && self.lifetime_says_stop() {
                rwlog!("RW008", "lifetime pipe closed: stopping");
                self.begin_shutdown();
                self.lifetime = None;
            }
            if ready(server_at) {
                rwlog!("RW008", "the server's pipe closed: stopping");
                self.begin_shutdown();
                self.server = None;
            }
            let incoming = ready(listen_at);
            self.refuser.on_poll(&fds[refused_from..]);
            if incoming && self.answering() {
                self.refuse_waiting();
            }
            for sig in self.sigpipe.drain() {
                self.on_signal(libc::c_int::from(sig));
            }
            self.reap();
            self.release_predecessor();
        }
    }

    /// No worker is ready, and the last one died before it was (module docs): connections
    /// are answered 503 here rather than left in the backlog.
    fn answering(&self) -> bool {
        self.outage.is_some() && self.shutdown.is_none() && self.refuser.has_room()
    }

    /// Answers what waits on the socket with 503 and says why (rate-limited: a line a second).
    fn refuse_waiting(&mut self) {
        let retry_after = self.next_spawn.saturating_duration_since(Instant::now());
        let n = self.refuser.accept_all(&self.listener, retry_after);
        if n > 0 {
            let why = self.outage.as_deref().unwrap_or("?");
            rwlog_limited!("RW052", "no live worker (last: {why}): answered 503");
        }
    }

    fn on_signal(&mut self, sig: libc::c_int) {
        match sig {
            libc::SIGTERM | libc::SIGINT => {
                if self.shutdown.is_none() {
                    rwlog!(
                        "RW008",
                        "signal {sig}: stopping, in-flight requests may finish"
                    );
                    self.begin_shutdown();
                } else {
                    rwlog!("RW008", "signal {sig} again: killing the workers now");
                    self.kill_all();
                }
            }
            libc::SIGHUP if self.shutdown.is_none() => {
                self.generation += 1;
                rwlog!(
                    "RW010",
                    "SIGHUP: rolling restart of {} workers",
                    self.workers.len()
                );
            }
            _ => {} // SIGCHLD: reap() runs after every wake-up anyway
        }
    }

    fn begin_shutdown(&mut self) {
        let deadline = Instant::now() + self.cfg.graceful_timeout;
        self.shutdown = Some(deadline);
        // New clients now fail fast (ENOENT) instead of queueing behind workers that are leaving.
        self.listener.remove_file();
        for w in &mut self.workers {
            if w.stop_deadline.is_none() {
                signal(w.pid, libc::SIGTERM);
                w.stop_deadline = Some(deadline);
            }
        }
    }

    fn kill_all(&mut self) {
        for w in &mut self.workers {
            if !w.killed {
                signal(w.pid, libc::SIGKILL);
                w.killed = true;
            }
        }
    }

    /// Collects every exited child and decides whether its death counts as a failure.
    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: status is a valid out-parameter; WNOHANG never blocks.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if self.endpoint == Some(pid) {
                rwlog!(
                    "RW061",
                    "metrics endpoint {pid} {}",
                    describe_status(status)
                );
                self.endpoint = None;
                continue;
            }
            let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let w = self.workers.swap_remove(i);
            if self.board.is_retiring(w.slot) {
                // Counted when it is gone: a recycled worker may finish its last request and
                // exit before a tick sees its flag.
                self.count_respawn(if self.board.is_retiring_stuck(w.slot) {
                    Respawn::RequestTimeout
                } else {
                    Respawn::MaximumRequests
                });
            }
            let lived = w.started.elapsed();
            let expected = w.stop_deadline.is_some() || w.killed;
            let how = describe_status(status);
            let clean = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            if expected || clean {
                rwlog!(
                    "RW003",
                    "worker {pid} {how} after {:.1}s",
                    lived.as_secs_f64()
                );
            } else {
                rwlog!(
                    "RW004",
                    "worker {pid} died unexpectedly: {how} after {:.1}s",
                    lived.as_secs_f64()
                );
                if self.shutdown.is_none() {
                    self.count_respawn(Respawn::Crash);
                }
                let was_ready = self.board.is_ready(w.slot) || self.board.is_retiring(w.slot);
                if !was_ready || lived < EARLY_DEATH {
                    self.note_failure();
                }
                // Died before it could serve: the app cannot start. (One that was ready and
                // died on a request is replaced at once; requests wait for it in the backlog.)
                if !was_ready && !self.any_ready() {
                    self.outage = Some(format!("worker {pid} {how}"));
                }
            }
        }
    }

    fn note_failure(&mut self) {
        let now = Instant::now();
        if self.last_failure.is_some_and(|t| now - t > BACKOFF_RESET) {
            self.failures = 0;
        }
        self.failures += 1;
        self.last_failure = Some(now);
        let delay = BACKOFF_START
            .saturating_mul(1 << (self.failures - 1).min(10))
            .min(BACKOFF_MAX);
        self.next_spawn = now + delay;
        rwlog!(
            "RW005",
            "workers are dying right after start ({} in a row): next start in {:.1}s",
            self.failures,
            delay.as_secs_f64()
        );
    }

    /// Is some worker ready to take requests?
    fn any_ready(&self) -> bool {
        self.workers.iter().any(|w| self.board.is_ready(w.slot))
    }

    /// One pass of the state machine: timeouts, then replacements and rolling-restart steps.
    fn tick(&mut self) {
        let now = Instant::now();
        if self.outage.is_some() && self.any_ready() {
            rwlog!("RW053", "a worker is ready again: requests are served");
            self.outage = None;
        }
        self.enforce_deadlines(now);
        if self.shutdown.is_some() {
            return;
        }
        self.keep_endpoint(now);
        if self.last_failure.is_some_and(|t| now - t > BACKOFF_RESET) {
            self.failures = 0;
            self.last_failure = None;
        }
        let target = self.cfg.processes as usize;
        loop {
            let active: Vec<&Worker> = self
                .workers
                .iter()
                .filter(|w| w.stop_deadline.is_none())
                .collect();
            let old: Vec<libc::pid_t> = active
                .iter()
                .filter(|w| w.generation < self.generation)
                .map(|w| w.pid)
                .collect();
            let new_unready = active
                .iter()
                .any(|w| w.generation == self.generation && !self.board.is_ready(w.slot));
            let count = active.len();
            if count < target || (!old.is_empty() && !new_unready && count == target) {
                if !self.spawn(now) {
                    return;
                }
            } else if !old.is_empty() && !new_unready && count > target {
                // The replacement is ready: retire the oldest worker of the old generation.
                let pid = old[0];
                self.stop_worker(pid, now);
                self.count_respawn(Respawn::Reload);
                if old.len() == 1 {
                    rwlog!(
                        "RW010",
                        "rolling restart: last old worker {pid} is draining"
                    );
                }
            } else {
                return;
            }
        }
    }

    fn stop_worker(&mut self, pid: libc::pid_t, now: Instant) {
        if let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) {
            signal(pid, libc::SIGTERM);
            w.stop_deadline = Some(now + self.cfg.graceful_timeout);
        }
    }

    fn enforce_deadlines(&mut self, now: Instant) {
        // A worker that reached maximum-requests already stopped accepting: count it as stopping
        // so that tick() starts its replacement now, while it finishes its last requests.
        for w in &mut self.workers {
            if w.stop_deadline.is_none() && self.board.is_retiring(w.slot) {
                w.stop_deadline = Some(now + self.cfg.graceful_timeout);
            }
        }
        let timeout_ms = self
            .cfg
            .request_timeout
            .map(|t| (t + pyhost::interrupt_grace(t) + BACKSTOP).as_millis() as u64);
        let now_ms = monotonic_ms();
        for w in &mut self.workers {
            if w.killed {
                continue;
            }
            if let Some(deadline) = w.stop_deadline {
                if now >= deadline {
                    rwlog!(
                        "RW007",
                        "worker {} still busy after graceful-timeout: killing it",
                        w.pid
                    );
                    signal(w.pid, libc::SIGKILL);
                    w.killed = true;
                    continue;
                }
            }
            if let (Some(limit), Some((thread, started))) =
                (timeout_ms, self.board.oldest_request(w.slot))
            {
                let ran = now_ms.saturating_sub(started);
                if ran > limit {
                    rwlog!(
                        "RW006",
                        "worker {}: request on thread {thread} running for {:.1}s, past request-timeout, and the worker did not end it: killing the worker",
                        w.pid,
                        ran as f64 / 1000.0
                    );
                    signal(w.pid, libc::SIGKILL);
                    w.killed = true;
                    if let Some(g) = self.metrics.group {
                        ::metrics::request_timed_out(g);
                        ::metrics::respawned(g, Respawn::RequestTimeout, 1);
                    }
                }
            }
        }
    }

    fn count_respawn(&self, reason: Respawn) {
        if let Some(g) = self.metrics.group {
            ::metrics::respawned(g, reason, 1);
        }
    }

    /// Starts the `--metrics` endpoint process if it is not running (at most once a second).
    fn keep_endpoint(&mut self, now: Instant) {
        if self.endpoint.is_some()
            || now < self.endpoint_next
            || self.metrics.endpoint_fd().is_none()
        {
            return;
        }
        self.endpoint_next = now + Duration::from_secs(1);
        let endpoint_fd = self.metrics.endpoint_fd();
        let mut close: Vec<RawFd> = self
            .supervisor_fds()
            .into_iter()
            .filter(|fd| Some(*fd) != endpoint_fd)
            .collect();
        close.push(self.listener.as_raw_fd());
        // SAFETY: plain getter.
        let parent = unsafe { libc::getpid() };
        self.endpoint = self
            .metrics
            .spawn_endpoint(&close, self.identity.as_ref(), parent);
    }

    fn stop_endpoint(&mut self) {
        if let Some(pid) = self.endpoint.take() {
            signal(pid, libc::SIGKILL);
            let mut status = 0;
            // SAFETY: our child, killed just now; waiting reaps it.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
        self.metrics.remove_endpoint_file();
    }

    /// Forks one worker of the current generation; false when it has to wait (back-off, no slot).
    fn spawn(&mut self, now: Instant) -> bool {
        if now < self.next_spawn {
            return false;
        }
        let Some(slot) =
            (0..self.board.slots()).find(|s| !self.workers.iter().any(|w| w.slot == *s))
        else {
            return false;
        };
        self.board.reset(slot);
        // SAFETY: plain getter.
        let parent = unsafe { libc::getpid() };
        let saved_mask = signals::block_all();
        // SAFETY: the supervisor is single-threaded (it never starts threads and never runs
        // Python), so the child inherits no lock held by another thread; the child only runs
        // worker::run, which never returns into this loop.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            self.close_in_child();
            worker::run(worker::Start {
                cfg: self.cfg,
                listener: &self.listener,
                board: &self.board,
                slot,
                identity: self.identity.as_ref(),
                parent,
                metrics: &self.metrics,
            });
        }
        signals::restore_mask(&saved_mask);
        if pid < 0 {
            rwlog!("RW050", "fork: {}", std::io::Error::last_os_error());
            self.next_spawn = now + Duration::from_secs(1);
            return false;
        }
        rwlog!(
            "RW002",
            "started worker {pid} (slot {slot}, generation {})",
            self.generation
        );
        self.workers.push(Worker {
            pid,
            slot,
            started: now,
            generation: self.generation,
            stop_deadline: None,
            killed: false,
        });
        true
    }

    /// The descriptors only the supervisor uses: the signal pipe, the lifetime pipe, the
    /// metrics endpoint's socket.
    fn supervisor_fds(&self) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = vec![
            self.sigpipe.read.as_raw_fd(),
            self.sigpipe.write.as_raw_fd(),
        ];
        if let Some(fd) = self.lifetime {
            fds.push(fd.as_raw_fd());
        }
        // A worker must not keep the replaced group alive.
        if let Some(fd) = &self.predecessor {
            fds.push(fd.as_raw_fd());
        }
        if let Some(fd) = &self.server {
            fds.push(fd.as_raw_fd());
        }
        fds.extend(self.metrics.endpoint_fd());
        // Connections the supervisor is answering: a copy held here would keep them open.
        let mut refused = Vec::new();
        self.refuser.poll_fds(&mut refused);
        fds.extend(refused.iter().map(|p| p.fd));
        fds
    }

    /// In a new worker: close the supervisor-only descriptors.
    fn close_in_child(&self) {
        for fd in self.supervisor_fds() {
            // SAFETY: these fds belong to the supervisor's objects, which the child never uses
            // again (worker::run does not return); closing them only drops the child's copies.
            unsafe { libc::close(fd) };
        }
    }
}

impl Drop for Master<'_> {
    fn drop(&mut self) {
        self.listener.remove_file();
        self.stop_endpoint();
    }
}

fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: plain syscall; pid is one of our children not yet reaped, so it cannot be reused.
    unsafe { libc::kill(pid, sig) };
}

fn describe_status(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("was killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("changed state ({status:#x})")
    }
}

/// The read end `fd` of a pipe whose every write end is closed.
fn hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd; no waiting.
    unsafe { libc::poll(&mut p, 1, 0) };
    p.revents & (libc::POLLHUP | libc::POLLERR) != 0
}
