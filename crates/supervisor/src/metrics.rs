//! The group's metrics (crates/metrics): its slots in the shared region, and for a standalone
//! rwsgi-worker with `--metrics`, the region itself and the endpoint.
//!
//! Two cases, told apart by whether a region is already attached when the supervisor starts:
//! - **Hosted** (nginx's master or Apache's parent forked this supervisor): the server made the
//!   region before the fork and registered the group and its apps; its workers and children
//!   answer the HTTP requests and count them. Here the workers only add what the Python side
//!   sees (GIL wait, exceptions, time queued, busy threads) and the supervisor its respawns.
//! - **Standalone** (`rwsgi-worker --metrics ADDR`): the supervisor creates the region before it
//!   forks anything, the workers count the requests too, and a small child process serves the
//!   endpoint at ADDR (forked from the supervisor, which stays single-threaded).
//!
//! Without either, nothing is set up and every recording call returns at once.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ::metrics::{AppId, BuildInfo, GroupId, Region, Role};

use crate::config::GroupConfig;
use crate::listener::Listener;
use crate::privs::Identity;
use crate::rwlog;

/// A scrape that has not sent its request or taken its response by then is dropped.
const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once (each on its own thread of the endpoint process).
const ENDPOINT_CONNECTIONS: usize = 8;

/// The group's slots, and the endpoint's socket when this supervisor serves one.
pub struct GroupMetrics {
    pub group: Option<GroupId>,
    /// One per configured app, in `cfg.apps` order.
    pub apps: Vec<Option<AppId>>,
    /// The workers answer HTTP themselves (standalone): they count the requests.
    pub count_http: bool,
    endpoint: Option<Listener>,
}

impl GroupMetrics {
    /// Nothing recorded.
    pub fn disabled(apps: usize) -> GroupMetrics {
        GroupMetrics {
            group: None,
            apps: vec![None; apps],
            count_http: false,
            endpoint: None,
        }
    }

    /// The supervisor's part at start-up (see the module docs). Errors: the endpoint address
    /// cannot be bound, or the region cannot be mapped.
    pub fn setup(cfg: &GroupConfig) -> Result<GroupMetrics, String> {
        let hosted = ::metrics::region();
        let standalone = hosted.is_none() && cfg.metrics.is_some();
        let region: &Region = match hosted {
            Some(r) => r,
            None if standalone => {
                let r = ::metrics::shm::create().map_err(|e| format!("metrics region: {e}"))?;
                ::metrics::attach(r);
                r.new_generation();
                r
            }
            None => return Ok(GroupMetrics::disabled(cfg.apps.len())),
        };
        let group = region.register_group(&cfg.name);
        let apps = cfg
            .apps
            .iter()
            .map(|a| {
                let mount = ::metrics::mount_label(a.mount.as_deref().unwrap_or("/"));
                group.and_then(|g| region.register_app(mount, g))
            })
            .collect::<Vec<_>>();
        if group.is_none() || apps.iter().any(Option::is_none) {
            rwlog!(
                "RW060",
                "metrics: the shared table of groups or apps is full; some counts are not kept"
            );
        }
        region.register_process(Role::Supervisor, group, 0);
        let endpoint = match (&cfg.metrics, standalone) {
            (Some(spec), true) => {
                let endpoint_cfg = GroupConfig {
                    socket: spec.clone(),
                    listen_backlog: 64,
                    ..cfg.clone()
                };
                Some(Listener::bind(&endpoint_cfg).map_err(|e| format!("--metrics: {e}"))?)
            }
            _ => None,
        };
        Ok(GroupMetrics {
            group,
            apps,
            count_http: standalone,
            endpoint,
        })
    }

    /// Where the endpoint listens, for the start-up log line.
    pub fn describe_endpoint(&self) -> Option<String> {
        self.endpoint.as_ref().map(Listener::describe)
    }

    /// Forks the endpoint process (standalone with `--metrics` only); its pid. `close` are the
    /// supervisor's descriptors the child must not keep.
    pub fn spawn_endpoint(
        &self,
        close: &[RawFd],
        identity: Option<&Identity>,
        parent: libc::pid_t,
    ) -> Option<libc::pid_t> {
        let listener = self.endpoint.as_ref()?;
        let saved = crate::signals::block_all();
        // SAFETY: the supervisor is single-threaded (see master.rs); the child never returns.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            for fd in close {
                // SAFETY: the supervisor's descriptors, unused by the child.
                unsafe { libc::close(*fd) };
            }
            serve_endpoint(listener, identity, parent);
        }
        crate::signals::restore_mask(&saved);
        if pid < 0 {
            rwlog!(
                "RW061",
                "metrics endpoint: fork: {}",
                std::io::Error::last_os_error()
            );
            return None;
        }
        Some(pid)
    }

    /// Removes the endpoint's unix socket file (at shutdown).
    pub fn remove_endpoint_file(&self) {
        if let Some(l) = &self.endpoint {
            l.remove_file();
        }
    }

    pub fn endpoint_fd(&self) -> Option<RawFd> {
        self.endpoint.as_ref().map(AsRawFd::as_raw_fd)
    }
}

/// A request as a standalone worker counts it (behind our modules the front end does).
pub struct HttpRequest {
    app: Option<AppId>,
    started: Instant,
    /// Counted already: by the request's thread, or by the watchdog's take-over (conn.rs)
    /// for a thread stuck past its request-timeout. Whoever comes first counts it.
    ended: AtomicBool,
}

impl HttpRequest {
    /// The request for `app` was accepted at `started`; counted only when `count_http`.
    pub fn start(count_http: bool, app: Option<AppId>, started: Instant) -> HttpRequest {
        let app = app.filter(|_| count_http);
        if let Some(a) = app {
            ::metrics::request_started(a);
        }
        HttpRequest {
            app,
            started,
            ended: AtomicBool::new(false),
        }
    }

    /// The response is over: its status, the body bytes read and sent, whether the front end
    /// went away before the end. Only the first call counts.
    pub fn finish(&self, status: u16, body_in: u64, body_out: u64, client_aborted: bool) {
        if let Some(a) = self.app {
            if self.ended.swap(true, Ordering::AcqRel) {
                return;
            }
            let done = ::metrics::Finished {
                status,
                duration: self.started.elapsed(),
                body_in,
                body_out,
                client_aborted,
            };
            ::metrics::request_finished(a, &done);
        }
    }
}

/// The endpoint process: as the workers' user, dying with the supervisor, one thread per scrape.
fn serve_endpoint(listener: &Listener, identity: Option<&Identity>, parent: libc::pid_t) -> ! {
    crate::signals::unblock_all();
    crate::worker::set_process_name("rwsgi-metrics");
    let dropped = identity.map_or(Ok(()), Identity::apply);
    // SAFETY: prctl with integer arguments; after the credential change, which clears it.
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
    if dropped.is_err() || unsafe { libc::getppid() } != parent {
        // SAFETY: leaving the child; terminating is always sound.
        unsafe { libc::_exit(1) };
    }
    let build = BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        python: pyhost::python_version(),
        server: "rwsgi-worker".to_owned(),
    };
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let mut fds = [crate::signals::readable(listener.as_raw_fd())];
        let polled = crate::signals::poll(&mut fds, 1000);
        if polled.is_err() || fds[0].revents & (libc::POLLNVAL | libc::POLLERR) != 0 {
            // SAFETY: nothing left to serve; leaving the child is always sound.
            unsafe { libc::_exit(1) };
        }
        let Ok(stream) = listener.accept() else {
            continue;
        };
        if busy.load(std::sync::atomic::Ordering::Relaxed) >= ENDPOINT_CONNECTIONS {
            continue; // dropping the connection: the scraper retries at its next interval
        }
        stream.set_timeouts(ENDPOINT_TIMEOUT);
        let (build, done) = (build.clone(), busy.clone());
        busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("rwsgi-metrics".into())
            .spawn(move || {
                let _ = ::metrics::http::serve_connection(&stream, &build);
                done.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            });
        if spawned.is_err() {
            busy.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
