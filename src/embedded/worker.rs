//! Per nginx worker process: the Python interpreter, the loaded apps and the pool of Python threads.
//!
//! Started from the module's `init_process` (in each worker, never in the master and never during
//! `nginx -t`, so a config test never imports an app) and only when some location runs an app in
//! embedded mode. The event loop hands [`Job`]s to the pool; a Python thread runs the app through
//! pyhost and streams the response back through the job's [`Exchange`].

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use ngx::ffi::{ngx_connection_t, ngx_cycle_t, ngx_event_t, NGX_LOG_ERR, NGX_LOG_NOTICE, NGX_OK};
use ngx::http::HttpModuleMainConf;
use pyhost::{AppSpec, Mode, Outcome, ProcessApps, PythonConfig};

use super::body::RequestBody;
use super::dispatch::Dispatch;
use super::exchange::{Exchange, PyResponder};
use super::wake::Notifier;
use crate::log::NgxLog;
use crate::request::Vars;
use crate::WsgiModule;

/// One request for a Python thread. Owns everything it needs: no pointer into nginx memory.
pub struct Job {
    pub app: usize,
    pub vars: Vars,
    pub body: RequestBody,
    pub exchange: Arc<Exchange>,
    /// The app's metrics slot, and when the job was queued (metrics kept only).
    pub metrics: Option<::metrics::AppId>,
    pub queued: Option<Instant>,
}

enum Task {
    Request(Job),
    /// Import an app ahead of its first request.
    Preload(usize),
}

/// Everything embedded mode needs in a worker process.
pub struct Worker {
    apps: ProcessApps,
    pub notifier: Notifier<Arc<Exchange>>,
    queue: Dispatch<Task>,
    mode: Mode,
    pub log: NgxLog,
    /// Why Python could not start in this worker (requests then get 500 and this line is logged).
    pub python_error: Option<String>,
    /// Python request threads started.
    threads: usize,
}

static WORKER: OnceLock<Worker> = OnceLock::new();

/// The read handler of the wake-up eventfd's nginx connection.
pub type WakeupHandler = unsafe extern "C" fn(*mut ngx_event_t);

/// The eventfd's nginx connection, for `exit_process`. Event-loop thread only.
struct WakeConnection(*mut ngx_connection_t);
// SAFETY: only ever touched on the event-loop thread (init_process / exit_process); the Mutex is
// there to satisfy `static`, not for cross-thread use.
unsafe impl Send for WakeConnection {}
static WAKE_CONNECTION: Mutex<WakeConnection> = Mutex::new(WakeConnection(std::ptr::null_mut()));

/// The worker state, if embedded mode runs in this process.
pub fn get() -> Option<&'static Worker> {
    WORKER.get()
}

impl Worker {
    /// Queues a request for the Python threads.
    pub fn submit(&self, job: Job) {
        self.push(Task::Request(job));
    }

    fn push(&self, task: Task) {
        self.queue.push(task);
    }

    /// The body of each Python thread.
    fn serve(&'static self) {
        // One Python thread state for this thread's whole life: without it every request would
        // create and destroy one, and the app's threading.local() data (Django's database
        // connection among it) would be rebuilt on every request.
        let _python_thread = pyhost::register_thread();
        let slot = self.queue.join();
        while let Some(task) = self.queue.next(slot) {
            match task {
                Task::Preload(i) => {
                    if let Some(app) = self.apps.get(i) {
                        app.preload(&self.log);
                    }
                }
                Task::Request(job) => self.run(job),
            }
        }
    }

    fn run(&'static self, job: Job) {
        // The client may have gone while the job waited for a thread: don't run the app for nobody.
        if job.exchange.is_gone() {
            return;
        }
        let Job {
            app,
            vars,
            mut body,
            exchange,
            metrics,
            queued,
        } = job;
        let mut out = PyResponder::new(exchange, &self.notifier);
        let outcome = match self.apps.get(app) {
            Some(app) => {
                let pairs = vars.pairs();
                let req = pyhost::Request {
                    vars: &pairs,
                    mode: self.mode,
                };
                let call = ::metrics::PythonCall::start(metrics, queued.map(|t| t.elapsed()));
                // pyhost never panics on purpose; if it does, the thread survives and the
                // response is cut (the event loop closes the connection).
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let outcome = pyhost::handle(app, &req, &mut body, &mut out, &self.log);
                    let stats = pyhost::last_request_stats();
                    call.finish(stats.gil_wait, u64::from(stats.exceptions));
                    outcome
                }))
                .unwrap_or_else(|_| {
                    self.log.write(
                        NGX_LOG_ERR as _,
                        "wsgi: RW-NG090 internal error (panic) while running the app",
                    );
                    Outcome::Aborted
                })
            }
            None => Outcome::Aborted,
        };
        out.finish(outcome);
    }
}

/// `init_process`: starts embedded mode in this worker if any location needs it. `on_wakeup` is
/// the event loop's handler for the eventfd the Python threads signal (the event-loop side,
/// stream.rs, passes it in: this file does not import that one).
///
/// # Safety
/// `cycle` is the worker's cycle, called on the event-loop thread.
pub unsafe fn start(cycle: *mut ngx_cycle_t, on_wakeup: WakeupHandler) -> Result<(), String> {
    // SAFETY: init_process runs with the fully configured cycle.
    let cycle_ref = unsafe { &*cycle };
    let Some(main) = WsgiModule::main_conf(cycle_ref) else {
        return Ok(()); // no http block
    };
    if main.apps.is_empty() {
        return Ok(()); // nothing embedded: no interpreter in this worker
    }
    // SAFETY: the cycle log lives as long as this worker process.
    let log = unsafe { NgxLog::new(cycle_ref.log) };
    let notifier = Notifier::new().map_err(|e| format!("wsgi: RW-NG001 eventfd() failed: {e}"))?;

    let cfg = PythonConfig {
        python_home: main.python_home.clone(),
        python_path: main.python_path.clone(),
    };
    let specs = main.apps.iter().map(|a| AppSpec {
        script: a.script.clone(),
        callable: a.callable.clone(),
    });
    let (apps, python_error) = match ProcessApps::start(&cfg, specs) {
        Ok(apps) => (apps, None),
        Err(e) => {
            let msg = format!("wsgi: RW-NG002 cannot start Python in this worker: {e}");
            log.write(NGX_LOG_ERR as _, &msg);
            (ProcessApps::default(), Some(msg))
        }
    };
    let threads = main.threads();
    let mode = Mode::pool(worker_processes(cycle_ref), threads);
    let worker = Worker {
        apps,
        notifier,
        queue: Dispatch::default(),
        mode,
        log,
        python_error,
        threads,
    };
    if WORKER.set(worker).is_err() {
        return Err("wsgi: RW-NG090 embedded mode started twice in one process".to_string());
    }
    let Some(worker) = WORKER.get() else {
        return Err("wsgi: RW-NG090 worker state missing".to_string());
    };
    // SAFETY: cycle is valid; we are on the event-loop thread.
    unsafe { register_wakeup(cycle, worker.notifier.fd(), on_wakeup) }?;
    if worker.python_error.is_some() {
        return Ok(()); // requests answer 500 with the reason; no threads to run
    }
    spawn_threads(worker, threads)?;
    for i in 0..worker.apps.len() {
        worker.push(Task::Preload(i));
    }
    worker.log.write(
        NGX_LOG_NOTICE as _,
        &format!(
            "wsgi: RW-NG005 embedded mode: {} app(s), {threads} Python thread(s) in this worker",
            worker.apps.len()
        ),
    );
    Ok(())
}

/// Python request threads running in this worker (0 without embedded mode), for the metrics.
pub fn python_threads() -> usize {
    get()
        .filter(|w| w.python_error.is_none())
        .map_or(0, |w| w.threads)
}

/// Number of nginx worker processes (for `wsgi.multiprocess`).
fn worker_processes(cycle: &ngx_cycle_t) -> usize {
    use ngx::core::{CoreModuleMainConf, NgxCoreModule};
    NgxCoreModule::main_conf(cycle)
        .and_then(|c| usize::try_from(c.worker_processes).ok())
        .unwrap_or(1)
}

/// Spawns the Python threads with nginx's signals blocked (`pyhost::spawn_with_signals_blocked`),
/// so they (reload, quit...) keep going to the event-loop thread, whose `epoll_wait` they
/// interrupt. nginx's own thread pool does the same.
fn spawn_threads(worker: &'static Worker, n: usize) -> Result<(), String> {
    for i in 0..n {
        pyhost::spawn_with_signals_blocked(
            std::thread::Builder::new().name(format!("wsgi-{i}")),
            move || worker.serve(),
        )
        .map_err(|e| format!("wsgi: RW-NG003 cannot start Python thread {i}: {e}"))?;
    }
    Ok(())
}

/// Registers the notifier's eventfd with nginx's event loop as a read event.
///
/// # Safety
/// `cycle` is valid; called on the event-loop thread after the event module's `init_process`
/// (ours is an http module, which nginx initialises after the event modules).
unsafe fn register_wakeup(
    cycle: *mut ngx_cycle_t,
    fd: i32,
    on_wakeup: WakeupHandler,
) -> Result<(), String> {
    // SAFETY: see the function contract; ngx_get_connection returns a zeroed connection slot
    // (or null when worker_connections are exhausted) whose read/write events we may set up.
    unsafe {
        let log = (*cycle).log;
        let c = ngx::ffi::ngx_get_connection(fd, log);
        if c.is_null() {
            return Err("wsgi: RW-NG004 no free connection for the wake-up descriptor".to_string());
        }
        (*c).log = log;
        let rev = (*c).read;
        (*rev).log = log;
        (*(*c).write).log = log;
        (*rev).handler = Some(on_wakeup);
        if ngx::ffi::ngx_handle_read_event(rev, 0) != NGX_OK as isize {
            ngx::ffi::ngx_free_connection(c);
            return Err(
                "wsgi: RW-NG004 cannot add the wake-up descriptor to the event loop".to_string(),
            );
        }
        if let Ok(mut slot) = WAKE_CONNECTION.lock() {
            slot.0 = c;
        }
    }
    Ok(())
}

/// `exit_process`: stops the Python threads after their current request and releases the
/// eventfd's connection slot (nginx reports connections still open at exit).
///
/// Threads are not joined: one may be inside a long Python call, and the process is about to
/// exit anyway. The interpreter is not finalised for the same reason.
pub fn stop() {
    let Some(worker) = WORKER.get() else { return };
    worker.queue.stop();
    if let Ok(mut slot) = WAKE_CONNECTION.lock() {
        let c = std::mem::replace(&mut slot.0, std::ptr::null_mut());
        if !c.is_null() {
            // SAFETY: c is the connection we got in register_wakeup, on the event-loop thread.
            // The fd stays open (see Notifier::new); fd = -1 tells nginx the slot holds no socket.
            unsafe {
                let rev: *mut ngx_event_t = (*c).read;
                (*rev).set_active(0);
                (*c).fd = -1;
                ngx::ffi::ngx_free_connection(c);
            }
        }
    }
}
