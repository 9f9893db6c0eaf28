//! Per nginx worker process: the Python interpreter, the loaded apps and the pool of Python threads.
//!
//! Started from the module's `init_process` (in each worker, never in the master and never during
//! `nginx -t`, so a config test never imports an app) and only when some location runs an app in
//! embedded mode. The event loop hands [`Job`]s to the pool; a Python thread runs the app through
//! pyhost and streams the response back through the job's [`Exchange`].
//!
//! Imports (and the interpreter's start) are noted in the [`Ledger`] the master shares with its
//! workers (imports.rs): a worker started in place of one that died importing an app does not
//! import it again before the back-off is over; that app answers 503 meanwhile (stream.rs asks
//! [`Worker::unavailable`]) and everything else in the worker is served.
//!
//! `wsgi_request_timeout` is enforced by pyhost's watchdog ([`pyhost::Timeout`]): a request
//! stuck in Python gets an exception and a 504 from pyhost; one stuck in C code is taken over by
//! [`EventLoopTakeOver`]: the event loop answers for it and the worker retires ([`retire_if_asked`]).

use std::os::unix::ffi::OsStrExt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ngx::ffi::{
    ngx_connection_t, ngx_cycle_t, ngx_event_t, NGX_LOG_ERR, NGX_LOG_NOTICE, NGX_LOG_WARN, NGX_OK,
};
use ngx::http::HttpModuleMainConf;
use pyhost::asgi::{AsgiConfig, AsgiHost};
use pyhost::{AppSpec, Mode, Outcome, ProcessApps, PythonConfig, Stuck, Timeout};

use super::body::RequestBody;
use super::dispatch::Dispatch;
use super::exchange::{Exchange, PyResponder};
use super::gate::Gate;
use super::imports::{self, Admit, Ledger};
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
    /// The location's `wsgi_request_timeout`.
    pub timeout: Option<Duration>,
}

enum Task {
    Request(Job),
    /// Import the apps ahead of their first request, one after the other (so that an import that
    /// kills the process is the only one in progress when it does).
    Preload,
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
    /// The WSGI apps' imports in the ledger (gate.rs).
    gate: Gate,
    /// Starting Python killed a predecessor: not started here before this (monotonic ms).
    start_held_until: Option<u64>,
    quitting: AtomicBool,
    /// Held while an app is imported (see [`Worker::import`]).
    importing: Mutex<()>,
    /// The asyncio loop of the `wsgi_interface asgi` apps (None when there are none).
    pub asgi: Option<AsgiHost>,
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
        // Only threads admitted into Python take jobs (pyhost's admission: as many as the GIL
        // serves, more while requests wait outside Python); the others wait in pyhost, and a job
        // nobody can take yet stays queued for the next admitted thread that is done.
        let mut permit = None;
        loop {
            if permit.is_none() {
                permit = pyhost::admit(&|| self.queue.demand());
                if permit.is_none() {
                    return; // stopping
                }
            }
            let Some(task) = self.queue.next(slot) else {
                return;
            };
            match task {
                Task::Preload => self.preload(),
                Task::Request(job) => self.run(job),
            }
            if permit.as_ref().is_some_and(pyhost::Permit::over_limit) {
                permit = None;
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
            timeout,
        } = job;
        exchange.mark_taken();
        let take_over = timeout.map(|_| EventLoopTakeOver {
            exchange: Arc::clone(&exchange),
            notifier: &self.notifier,
        });
        let mut out = PyResponder::new(exchange, &self.notifier);
        // The first request of an app imports it (noted in the ledger); a failed import was
        // logged with its traceback and gets its 500 without a second try.
        if !self.import(app) {
            let outcome = pyhost::answer_500(&mut out);
            out.finish(outcome);
            return;
        }
        let outcome = match self.apps.get(app) {
            Some(app) => {
                let pairs = vars.pairs();
                let req = pyhost::Request {
                    vars: &pairs,
                    mode: self.mode,
                    timeout: timeout
                        .zip(take_over.as_ref())
                        .map(|(after, stuck)| Timeout {
                            after,
                            log: &self.log,
                            stuck,
                        }),
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

    /// Imports every app now, in order, except those the ledger holds back.
    fn preload(&self) {
        for i in 0..self.apps.len() {
            match self.unavailable(i) {
                Some(wait) => self.tell_held_back(i, wait),
                None => {
                    self.import(i);
                }
            }
        }
    }

    /// Imports `app` if it is not yet: false if that failed (logged). One import at a time in
    /// this worker, noted in the ledger: if the process dies, the import in progress is the one
    /// that killed it, and only that app is held back in the next worker.
    fn import(&self, app: usize) -> bool {
        let Some(a) = self.apps.get(app) else {
            return true;
        };
        if a.is_loaded() {
            return true;
        }
        let _one_at_a_time = self.importing.lock().unwrap_or_else(|e| e.into_inner());
        if a.is_loaded() {
            return true;
        }
        self.gate.noted(app, || a.preload(&self.log))
    }

    /// The `wsgi_request_timeout` of an ASGI request: pyhost cancels its task at `after`; if a
    /// coroutine blocks the loop instead, the event loop answers for the request and the worker
    /// retires, as for a WSGI thread stuck in C code.
    pub fn asgi_timeout(
        &'static self,
        after: Duration,
        exchange: &Arc<Exchange>,
    ) -> pyhost::asgi::Timeout {
        let take_over = EventLoopTakeOver {
            exchange: Arc::clone(exchange),
            notifier: &self.notifier,
        };
        pyhost::asgi::Timeout {
            after,
            take_over: Box::new(move || {
                take_over.timed_out();
                take_over.stuck();
            }),
        }
    }

    /// For the event loop, before a request of `app` is queued: `Some(wait)` when the app is
    /// not imported in this worker and must not be now (its import killed a worker lately):
    /// answer 503 with Retry-After. Otherwise the request may go on (and may import it).
    pub fn unavailable(&self, app: usize) -> Option<Duration> {
        if self.apps.get(app)?.is_loaded() {
            return None;
        }
        self.gate.unavailable(app)
    }

    /// Logs (once per back-off period in this worker) why `app` answers 503.
    pub fn tell_held_back(&self, app: usize, wait: Duration) {
        self.gate.tell_held_back(app, wait);
    }

    /// Starting Python killed a predecessor: `Some(wait)` while this worker holds off (its
    /// embedded requests get 503). Once the wait is over, the worker exits gracefully and
    /// nginx's master starts a new one, which tries again.
    pub fn start_held(&self) -> Option<Duration> {
        let until = self.start_held_until?;
        let now = imports::now_ms();
        if now < until {
            return Some(Duration::from_millis(until - now));
        }
        if !self.quitting.swap(true, Ordering::Relaxed) {
            self.log.write(
                NGX_LOG_NOTICE as _,
                "wsgi: RW-NG063 starting Python again: this worker exits gracefully, the next one tries",
            );
            // SAFETY: the event-loop thread (our caller) sets nginx's own flag, as its signal
            // handler would for SIGQUIT: the worker stops accepting and exits after its requests.
            unsafe { ngx::ffi::ngx_quit = 1 };
        }
        Some(Duration::from_secs(1))
    }
}

/// pyhost's last resort for a request whose Python thread is stuck in C code past its timeout,
/// or whose coroutine blocks the asyncio loop past it: the event loop answers for it (504, or
/// cuts a started response) and retires this worker.
struct EventLoopTakeOver {
    exchange: Arc<Exchange>,
    notifier: &'static Notifier<Arc<Exchange>>,
}

/// Set by [`EventLoopTakeOver`] on pyhost's watchdog thread, taken by the event loop.
static RETIRE: AtomicBool = AtomicBool::new(false);

impl Stuck for EventLoopTakeOver {
    fn timed_out(&self) {
        // Embedded mode's group is "" (crates/metrics); a lookup by name, once per timeout.
        ::metrics::request_timed_out_in("");
    }

    fn stuck(&self) {
        // Before the wake-up, so that the event loop sees it when it wakes.
        RETIRE.store(true, Ordering::Release);
        self.exchange.time_out(self.notifier);
    }
}

/// Event loop: a Python thread of this worker is stuck in C code, or its asyncio loop is
/// blocked (pyhost took a request over). Neither can be freed, so the worker exits gracefully,
/// as on `nginx -s quit`: it stops accepting, finishes its other requests (the other Python
/// threads still work; ASGI requests wait for the loop, each until its own timeout), and the
/// master starts a fresh worker at once. Nothing happens unless asked, and only once.
pub fn retire_if_asked() {
    static RETIRED: AtomicBool = AtomicBool::new(false);
    if !RETIRE.load(Ordering::Acquire) || RETIRED.swap(true, Ordering::AcqRel) {
        return;
    }
    let Some(worker) = WORKER.get() else { return };
    // SAFETY: reading nginx's process-role global on the event-loop thread.
    let role = unsafe { ngx::ffi::ngx_process } as u32;
    if role != ngx::ffi::NGX_PROCESS_WORKER {
        // master_process off: exiting would stop nginx itself.
        worker.log.write(
            NGX_LOG_WARN as _,
            "wsgi: RW-NG043 a Python thread is stuck in C code (or the asyncio loop is blocked) \
             past its wsgi_request_timeout; without a master process this nginx keeps running \
             without it",
        );
        return;
    }
    worker.log.write(
        NGX_LOG_NOTICE as _,
        "wsgi: RW-NG042 a Python thread is stuck in C code (or the asyncio loop is blocked) past \
         its wsgi_request_timeout: this worker exits once its other requests are done, and the \
         master starts a new one",
    );
    // SAFETY: ngx_quit is the flag nginx's own QUIT handler sets; the worker's cycle loop reads
    // it right after this event handler returns, on this same thread.
    unsafe { ngx::ffi::ngx_quit = 1 };
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
    if main.apps.is_empty() && main.asgi_apps.is_empty() {
        return Ok(()); // nothing embedded: no interpreter in this worker
    }
    // SAFETY: the cycle log lives as long as this worker process.
    let log = unsafe { NgxLog::new(cycle_ref.log) };
    let notifier = Notifier::new().map_err(|e| format!("wsgi: RW-NG001 eventfd() failed: {e}"))?;

    let cfg = PythonConfig {
        python_home: main.python_home.clone(),
        python_path: main.python_path.clone(),
    };
    let ledger = Ledger::shared();
    // SAFETY: nginx's global, set for this worker before init_process.
    let slot = usize::try_from(unsafe { ngx::ffi::ngx_process_slot }).unwrap_or(usize::MAX);
    // SAFETY: the cycle log lives as long as this worker process.
    let gate_log = || unsafe { NgxLog::new(cycle_ref.log) };
    let gate = Gate::new(ledger, slot, &main.apps, gate_log());
    let asgi_gate = Arc::new(Gate::new(ledger, slot, &main.asgi_apps, gate_log()));
    let home = cfg
        .python_home
        .as_deref()
        .map_or(&b""[..], |h| h.as_os_str().as_bytes());
    let start_key = imports::key(b"\0python", home);
    let now = imports::now_ms();
    let start_held_until = ledger
        .and_then(|l| report_import_deaths(l, slot, [&gate, &*asgi_gate], start_key, now, &log));
    let specs = main
        .apps
        .iter()
        .map(|a| AppSpec::script(a.script.clone(), a.callable.clone()));
    let (apps, python_error) = if start_held_until.is_some() {
        (ProcessApps::default(), None)
    } else {
        start_python(&cfg, specs, ledger, slot, start_key, now, &log)
    };
    // Python threads only for WSGI apps: the ASGI ones run on the loop thread.
    let threads = if main.apps.is_empty() {
        0
    } else {
        main.threads()
    };
    let mode = Mode::pool(worker_processes(cycle_ref), threads);
    let (asgi, python_error) = match python_error {
        Some(e) => (None, Some(e)),
        // Held back from starting Python (imports.rs): no asyncio loop either.
        None if start_held_until.is_some() => (None, None),
        // SAFETY: the cycle log lives as long as this worker process.
        None => start_asgi(main, unsafe { NgxLog::new(cycle_ref.log) }, asgi_gate),
    };
    let worker = Worker {
        gate,
        apps,
        notifier,
        queue: Dispatch::default(),
        mode,
        log,
        python_error,
        threads,
        start_held_until,
        quitting: AtomicBool::new(false),
        importing: Mutex::new(()),
        asgi,
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
    if let Some(wait) = worker.start_held() {
        worker.log.write(
            NGX_LOG_WARN as _,
            &format!(
                "wsgi: RW-NG062 not starting Python in this worker for {:.1}s (starting it killed \
                 a worker): embedded requests get 503",
                wait.as_secs_f64()
            ),
        );
        return Ok(());
    }
    spawn_threads(worker, threads)?;
    worker.push(Task::Preload);
    if worker.asgi.is_some() {
        // SAFETY: on the event-loop thread, with the worker's cycle log.
        unsafe { arm_exit_watch(cycle_ref.log) };
    }
    // SAFETY: init_process, after the event module's, before the event loop accepts anything.
    unsafe { super::balance::install(cycle, slot, main.generation) };
    announce(worker, threads);
    Ok(())
}

/// The notice lines of a worker whose embedded mode started: its WSGI threads, its ASGI loop.
fn announce(worker: &Worker, threads: usize) {
    if threads > 0 {
        worker.log.write(
            NGX_LOG_NOTICE as _,
            &format!(
                "wsgi: RW-NG005 embedded mode: {} app(s), {threads} Python thread(s) in this worker",
                worker.apps.len()
            ),
        );
    }
    if let Some(host) = &worker.asgi {
        worker.log.write(
            NGX_LOG_NOTICE as _,
            &format!(
                "wsgi: RW-NG006 embedded mode: {} ASGI app(s) on one asyncio loop in this worker",
                host.len()
            ),
        );
    }
}

/// Tells the ledger this worker has started, logs each import (or Python start) that killed a
/// worker before it, and returns until when starting Python is held back, if it is.
fn report_import_deaths(
    ledger: Ledger,
    slot: usize,
    gates: [&Gate; 2],
    start_key: u64,
    now: u64,
    log: &NgxLog,
) -> Option<u64> {
    let pid = std::process::id() as i32;
    for death in ledger.worker_started(slot, pid, now, imports::alive) {
        let script = gates.iter().find_map(|g| g.script_of(death.key));
        let what = match script {
            Some(script) => format!("importing {script}"),
            None if death.key == start_key => "starting Python".to_string(),
            None => continue,
        };
        log.write(
            NGX_LOG_ERR as _,
            &format!(
                "wsgi: RW-NG061 {what} killed worker {} ({} time(s) in a row): not tried \
                 again for {:.1}s; its requests get 503 meanwhile",
                death.pid,
                death.deaths,
                death.wait.as_secs_f64()
            ),
        );
    }
    match ledger.admit(start_key, now) {
        Admit::Wait(wait) => Some(now + wait.as_millis() as u64),
        _ => None,
    }
}

/// Starts Python and loads the WSGI apps, under the ledger's watch (a start that kills the
/// worker is held back in the next one); on failure, the reason every request will answer.
fn start_python(
    cfg: &PythonConfig,
    specs: impl Iterator<Item = AppSpec>,
    ledger: Option<Ledger>,
    slot: usize,
    start_key: u64,
    now: u64,
    log: &NgxLog,
) -> (ProcessApps, Option<String>) {
    let guard = ledger.map(|l| l.begin(slot, start_key, now));
    let started = match ProcessApps::start(cfg, specs) {
        Ok(apps) => (apps, None),
        Err(e) => {
            let msg = format!("wsgi: RW-NG002 cannot start Python in this worker: {e}");
            log.write(NGX_LOG_ERR as _, &msg);
            (ProcessApps::default(), Some(msg))
        }
    };
    drop(guard);
    if let Some(ledger) = ledger {
        ledger.survived(start_key);
    }
    started
}

/// Python request threads running in this worker (0 without embedded mode), for the metrics.
pub fn python_threads() -> usize {
    get()
        .filter(|w| w.python_error.is_none())
        .map_or(0, |w| w.threads)
}

/// How often the exit watch looks at `ngx_exiting`.
const EXIT_WATCH_MS: usize = 250;

/// Arms the exit watch: a cancelable timer (it never holds the worker back) that notices when
/// nginx starts a graceful stop (reload, `nginx -s quit`) and closes the ASGI apps' WebSockets
/// with 1001, so that their connections end and the old worker can exit; HTTP requests in
/// flight hold the worker with their guard timers and finish.
///
/// # Safety
/// On the event-loop thread; `log` lives as long as the worker.
unsafe fn arm_exit_watch(log: *mut ngx::ffi::ngx_log_t) {
    // SAFETY: on the event-loop thread (caller's contract); `log` lives as long as the worker.
    let ev = unsafe { super::timer::leaked(Some(exit_watch), log) };
    // SAFETY: ev lives for the process; we are on the event-loop thread.
    unsafe { ngx::ffi::ngx_add_timer(ev, EXIT_WATCH_MS as _) };
}

/// The exit watch's timer (see [`arm_exit_watch`]).
///
/// # Safety
/// Called by nginx's timer with the leaked event.
unsafe extern "C" fn exit_watch(ev: *mut ngx_event_t) {
    // SAFETY: reading nginx's process flag on the event-loop thread.
    if unsafe { ngx::ffi::ngx_exiting } != 0 {
        if let Some(host) = get().and_then(|w| w.asgi.as_ref()) {
            host.going_away();
        }
        return;
    }
    // SAFETY: ev is the leaked event (contract).
    unsafe { ngx::ffi::ngx_add_timer(ev, EXIT_WATCH_MS as _) };
}

/// The asyncio loop for the ASGI apps, started after the interpreter: it imports them and runs
/// their lifespan startup on its own thread. Err is the line requests answer 500 with.
fn start_asgi(
    main: &crate::conf::MainConf,
    log: NgxLog,
    gate: Arc<Gate>,
) -> (Option<AsgiHost>, Option<String>) {
    if main.asgi_apps.is_empty() {
        return (None, None);
    }
    let specs = main
        .asgi_apps
        .iter()
        .map(|a| AppSpec::script(a.script.clone(), a.callable.clone()))
        .collect();
    let log = Arc::new(log);
    // Imports that kill the worker are held back in the next one (gate.rs), as for WSGI apps.
    let cfg = AsgiConfig {
        import_gate: Some(gate),
        ..AsgiConfig::default()
    };
    match AsgiHost::start(specs, cfg, log.clone()) {
        Ok(host) => (Some(host), None),
        Err(e) => {
            let msg = format!("wsgi: RW-NG007 cannot start the asyncio loop in this worker: {e}");
            log.write(NGX_LOG_ERR as _, &msg);
            (None, Some(msg))
        }
    }
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
    // The last requests are done (nginx waited for their guard timers): the apps' lifespan
    // shutdown runs now, bounded by the host's timeout, while nginx waits to exit.
    if let Some(host) = &worker.asgi {
        host.stop();
    }
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
