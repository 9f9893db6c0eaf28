//! Python in one server process, started once after fork: what the nginx worker (embedded
//! mode), the Apache child (embedded mode) and the daemon worker (crates/supervisor) each do
//! before their first request, written once.
//!
//! 1. [`initialize`]: cap glibc's malloc arenas (before any request thread allocates), start
//!    the interpreter (init.rs), start the memory trimmer (memory.rs), set up admission into
//!    Python (admit.rs) and the counters (stats.rs), add `python-path`.
//! 2. [`ProcessApps::start`]: that, plus one [`App`] per configured script, in configuration
//!    order (an index into them is what a transport keeps per location or mount).
//! 3. [`ProcessApps::preload_all`], or [`App::preload`] one by one on the process's own Python
//!    threads: import the scripts before the first request; a failure is logged with its
//!    traceback and requests retry it.
//! 4. Each request thread holds a [`crate::register_thread`] guard for its life, and is spawned
//!    with [`crate::spawn_with_signals_blocked`] when the server's own thread waits for signals.
//!
//! Error lines keep each server's own code (the `Error` sentence is the same everywhere): nginx
//! `RW-NG002`, Apache `RW-AP001`, daemon worker `RW020` (docs/errors.md).

use crate::admit;
use crate::app::{App, AppSpec};
use crate::init::{self, Error, PythonConfig};
use crate::log::ErrorLog;
use crate::memory;
use crate::sched::{self, Scheduling};
use crate::stats;

/// Starts Python in this process, once, and returns with the GIL released.
///
/// Call it in the process that serves requests (nginx `init_process`, Apache `child_init`, a
/// daemon worker after fork), never in a master that forks afterwards. Calling it again with
/// the same configuration is a no-op; with a different one it is an error (one interpreter per
/// process).
pub fn initialize(cfg: &PythonConfig) -> Result<(), Error> {
    initialize_with(cfg, Scheduling::WholeProcess)
}

/// [`initialize`], saying which threads take the scheduling policy (`sched.rs`).
pub fn initialize_with(cfg: &PythonConfig, scheduling: Scheduling) -> Result<(), Error> {
    // Before the request threads exist: they pick their malloc arenas at first use (memory.rs),
    // and inherit this thread's scheduling policy (sched.rs).
    let started_now = init::start_interpreter(cfg, || {
        memory::limit_arenas();
        if scheduling == Scheduling::WholeProcess {
            sched::prefer_batch();
        }
    })?;
    if !started_now {
        return Ok(());
    }
    // Freed request bodies go back to the kernel after a burst, not kept for good (memory.rs).
    memory::start_trimmer();
    // Admission into Python (admit.rs, control.rs) and the host's counters (stats.rs).
    admit::init();
    if let Err(e) = stats::export() {
        eprintln!(
            "rwsgi: RW-PY006 cannot export the host's counters (RWSGI_STATS_DIR); they stay in memory: {e}"
        );
    }
    init::add_python_path(&cfg.python_path)
}

/// The WSGI apps one server process serves, in configuration order, over a started
/// interpreter. Shared by every request thread of the process.
#[derive(Default)]
pub struct ProcessApps {
    apps: Vec<App>,
}

impl ProcessApps {
    /// Starts Python in this process ([`initialize`]) and makes one [`App`] per spec, each
    /// loaded on first use or by [`ProcessApps::preload_all`] / [`App::preload`]. On error no
    /// app is made: requests should be answered 500 with the error's sentence in the log.
    pub fn start(
        python: &PythonConfig,
        specs: impl IntoIterator<Item = AppSpec>,
    ) -> Result<ProcessApps, Error> {
        initialize(python)?;
        Ok(ProcessApps {
            apps: specs.into_iter().map(App::new).collect(),
        })
    }

    /// The app at `index` (configuration order).
    pub fn get(&self, index: usize) -> Option<&App> {
        self.apps.get(index)
    }

    pub fn len(&self) -> usize {
        self.apps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, App> {
        self.apps.iter()
    }

    /// Loads every app's script now, on this thread, in order. Each failure is logged through
    /// `log` with its traceback (`RW-PY001`); the apps that failed are returned (requests retry
    /// their import, so fixing the script needs no restart).
    pub fn preload_all(&self, log: &dyn ErrorLog) -> Vec<&App> {
        self.apps.iter().filter(|app| !app.preload(log)).collect()
    }
}

impl<'a> IntoIterator for &'a ProcessApps {
    type Item = &'a App;
    type IntoIter = std::slice::Iter<'a, App>;

    fn into_iter(self) -> Self::IntoIter {
        self.apps.iter()
    }
}
