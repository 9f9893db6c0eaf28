//! Embedded mode: the app runs in the Apache child, on the worker thread that took the request.
//!
//! Python starts in `child_init` (each child, before its worker threads; pyhost's per-process
//! start-up, `pyhost::initialize`), never in the parent: httpd unloads and reloads this DSO
//! between configuration passes. pyhost holds the GIL only while Python runs; reading the body
//! and writing the response happen without it, through httpd's own input (de-chunking included)
//! and output filter chain (request.rs, shared with daemon mode). `WSGIRequestTimeout` is
//! pyhost's watchdog plus timeout.rs for a thread stuck in C code.

use std::collections::HashMap;
use std::ffi::c_int;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};

use pyhost::{App, AppSpec, Mode, PythonConfig, Timeout};

use crate::conf::{DirConf, ProcessGroup};
use crate::ffi::*;
use crate::log::{log_request, log_server, HttpdLog};
use crate::request::{build_vars, Output, RequestBody};
use crate::server_conf;
use crate::timeout::{self, CloseConnection};

/// Per-child state, set once in child_init.
struct Child {
    mode: Mode,
    /// Why Python is not available here (restricted, or start-up failed), if it is not.
    unavailable: Option<String>,
}

static CHILD: OnceLock<Child> = OnceLock::new();

/// One App per (script, callable), shared by every worker thread of the child.
type AppRegistry = RwLock<HashMap<(PathBuf, String), Arc<App>>>;
static APPS: OnceLock<AppRegistry> = OnceLock::new();

thread_local! {
    /// Keeps each Apache worker thread's Python thread state (and its threading.local data,
    /// e.g. Django's DB connections) across requests.
    static PY_THREAD: std::cell::RefCell<Option<pyhost::PythonThread>> = const { std::cell::RefCell::new(None) };
}

fn app_for(script: PathBuf, callable: &str) -> Arc<App> {
    let apps = APPS.get_or_init(|| RwLock::new(HashMap::new()));
    let key = (script, callable.to_owned());
    if let Some(app) = apps.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Arc::clone(app);
    }
    let mut map = apps.write().unwrap_or_else(|e| e.into_inner());
    let app = map.entry(key).or_insert_with_key(|(script, callable)| {
        Arc::new(App::new(AppSpec::script(script.clone(), callable.clone())))
    });
    Arc::clone(app)
}

/// The `child_init` hook: starts Python in this Apache child (see [`start_child`]).
///
/// # Safety
/// Called by httpd in each new child, before its worker threads start, with the live main
/// server_rec.
pub(crate) unsafe extern "C" fn child_init(_pool: *mut apr_pool_t, s: *mut server_rec) {
    // SAFETY: httpd passes the live main server_rec.
    let _ = std::panic::catch_unwind(|| unsafe { start_child(s) });
}

/// # Safety
/// `s` must be the live main server_rec.
unsafe fn start_child(s: *mut server_rec) {
    // wsgi.multithread / wsgi.multiprocess as mod_wsgi computes them from the MPM.
    let threaded = mpm_query(AP_MPMQ_IS_THREADED) != AP_MPMQ_NOT_SUPPORTED as c_int
        && mpm_query(AP_MPMQ_MAX_THREADS) != 1;
    let forked = mpm_query(AP_MPMQ_IS_FORKED) != AP_MPMQ_NOT_SUPPORTED as c_int
        && mpm_query(AP_MPMQ_MAX_DAEMONS) != 1;
    let mode = Mode {
        multithread: threaded,
        multiprocess: forked,
        run_once: false,
    };

    timeout::set_server_log(s);
    // SAFETY: s is live (caller contract).
    let Some(conf) = (unsafe { server_conf(s) }) else {
        return;
    };
    let unavailable = if conf.restrict_embedded == Some(true) {
        Some("embedded mode is disabled by WSGIRestrictEmbedded On".to_owned())
    } else {
        let python = PythonConfig {
            python_home: conf.python_home.clone(),
            python_path: conf.python_path.clone(),
        };
        // httpd's threads keep httpd's scheduling policy (pyhost's sched.rs says why).
        match pyhost::initialize_with(&python, pyhost::Scheduling::Unchanged) {
            Ok(()) => None,
            Err(e) => {
                let message =
                    format!("RW-AP001 Python could not be started in this Apache child: {e}");
                // SAFETY: s is live.
                unsafe { log_server(s, APLOG_ERR, &message) };
                Some(message)
            }
        }
    };
    let ready = unavailable.is_none();
    let _ = CHILD.set(Child { mode, unavailable });
    if ready {
        // SAFETY: s is live.
        unsafe { preload(s) };
    }
}

/// Loads the scripts named by `WSGIImportScript ... process-group=%{GLOBAL}` and by
/// `WSGIScriptAlias` lines that carry both process-group=%{GLOBAL} and application-group=,
/// in every server, as mod_wsgi does at child start.
///
/// # Safety
/// `s` must be the live main server_rec.
unsafe fn preload(s: *mut server_rec) {
    let log = HttpdLog::Server(s);
    let mut server = s;
    while !server.is_null() {
        // SAFETY: the vhost list is live for this generation.
        if let Some(conf) = unsafe { server_conf(server) } {
            for import in conf
                .imports
                .iter()
                .filter(|i| i.process_group == ProcessGroup::Embedded)
            {
                app_for(import.script.clone(), "application").preload(&log);
            }
            for alias in conf
                .aliases
                .iter()
                .filter(|a| a.preload && a.options.process_group == Some(ProcessGroup::Embedded))
            {
                app_for(alias.script.clone(), alias.options.callable_name()).preload(&log);
            }
        }
        // SAFETY: as above.
        server = unsafe { (*server).next };
    }
}

/// Python runs in this child (embedded mode is possible here).
pub(crate) fn python_available() -> bool {
    CHILD.get().is_some_and(|c| c.unavailable.is_none())
}

/// Runs the request in this child (`app`: its metrics slot). Returns the handler status.
pub(crate) fn run(
    r: &mut request_rec,
    conf: &DirConf,
    app_metrics: Option<::metrics::AppId>,
) -> c_int {
    let Some(child) = CHILD.get() else {
        // SAFETY: r is live.
        unsafe {
            log_request(
                r,
                APLOG_ERR,
                "RW-AP002 embedded request before child_init ran",
            )
        };
        return HTTP_INTERNAL_SERVER_ERROR as c_int;
    };
    if let Some(why) = &child.unavailable {
        // SAFETY: r is live.
        unsafe {
            log_request(
                r,
                APLOG_ERR,
                &format!("RW-AP003 cannot run the app in embedded mode: {why}"),
            )
        };
        return HTTP_INTERNAL_SERVER_ERROR as c_int;
    }
    // REQUEST_CHUNKED_DECHUNK: chunked request bodies are always accepted (WSGIChunkedRequest
    // is accepted for compatibility; there is no 411 path).
    // SAFETY: r is live; called once before any body read.
    let status = unsafe { ap_setup_client_block(r, REQUEST_CHUNKED_DECHUNK as c_int) };
    if status != OK_ {
        return status;
    }

    let vars = build_vars(r, conf);
    let pairs: Vec<(&[u8], &[u8])> = vars.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    let stuck = CloseConnection {
        r,
        threaded: child.mode.multithread,
    };
    let request = pyhost::Request {
        vars: &pairs,
        mode: child.mode,
        timeout: conf
            .request_timeout()
            .zip(timeout::server_log())
            .map(|(after, log)| Timeout {
                after,
                log,
                stuck: &stuck,
            }),
    };
    // SAFETY: r->filename is the script path after httpd's directory walk split off path_info.
    let script = PathBuf::from(std::ffi::OsStr::from_bytes(unsafe {
        cstr_bytes(r.filename)
    }));
    let app = app_for(script, conf.callable_name());

    PY_THREAD.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            *slot = pyhost::register_thread();
        }
    });
    let log = HttpdLog::Request(r);
    let mut body = RequestBody::new(r);
    let mut out = Output::new(r);
    let call = ::metrics::PythonCall::start(app_metrics, None);
    let outcome = pyhost::handle(&app, &request, &mut body, &mut out, &log);
    let stats = pyhost::last_request_stats();
    call.finish(stats.gil_wait, u64::from(stats.exceptions));
    out.finish(outcome)
}
