//! One worker's side of the import ledger (imports.rs) for a table of apps: whether an app may
//! be imported now, the notice while it is held back, and the note around an import. The WSGI
//! apps (imported by the Python threads, worker.rs) and the ASGI apps (imported on the asyncio
//! loop: this [`Gate`] is the loop's [`ImportGate`]) each have one, so an import that kills the
//! worker is held back the same way in both: its requests get 503 with Retry-After, and one
//! worker tries again after 1 s, 2 s, 4 s... up to 60 s.

use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ngx::ffi::{NGX_LOG_NOTICE, NGX_LOG_WARN};
use pyhost::asgi::ImportGate;

use super::imports::{self, Admit, Ledger};
use crate::conf::AppEntry;
use crate::log::NgxLog;

pub struct Gate {
    /// Imports across workers; `None` without a master (or if its mapping failed).
    ledger: Option<Ledger>,
    /// This worker's nginx process slot (its record in the ledger).
    slot: usize,
    /// Each app's ledger key ([`imports::key`]), in app order.
    keys: Vec<u64>,
    scripts: Vec<String>,
    /// Per app: until when (monotonic ms) this worker already said why it answers 503.
    told_until: Vec<AtomicU64>,
    log: NgxLog,
}

impl Gate {
    pub fn new(ledger: Option<Ledger>, slot: usize, apps: &[AppEntry], log: NgxLog) -> Gate {
        Gate {
            ledger,
            slot,
            keys: apps
                .iter()
                .map(|a| imports::key(a.script.as_os_str().as_bytes(), a.callable.as_bytes()))
                .collect(),
            scripts: apps
                .iter()
                .map(|a| a.script.display().to_string())
                .collect(),
            told_until: apps.iter().map(|_| AtomicU64::new(0)).collect(),
            log,
        }
    }

    /// The script of the app whose ledger key is `key`, if it is one of these.
    pub fn script_of(&self, key: u64) -> Option<&str> {
        let i = self.keys.iter().position(|k| *k == key)?;
        self.scripts.get(i).map(String::as_str)
    }

    /// `Some(wait)` when `app` (not imported in this worker) must not be imported now: its
    /// import killed a worker lately, so its requests get 503 with Retry-After. Otherwise it
    /// may be imported (as the one worker trying again, logged).
    pub fn unavailable(&self, app: usize) -> Option<Duration> {
        let ledger = self.ledger?;
        match ledger.admit(*self.keys.get(app)?, imports::now_ms()) {
            Admit::Free => None,
            Admit::Retry { deaths } => {
                self.log.write(
                    NGX_LOG_NOTICE as _,
                    &format!(
                        "wsgi: RW-NG063 importing {} again (it killed {deaths} worker(s) in a row)",
                        self.script(app)
                    ),
                );
                None
            }
            Admit::Wait(wait) => Some(wait),
        }
    }

    /// Logs (once per back-off period in this worker) why `app` answers 503.
    pub fn tell_held_back(&self, app: usize, wait: Duration) {
        let Some(told) = self.told_until.get(app) else {
            return;
        };
        let now = imports::now_ms();
        if told.load(Ordering::Relaxed) > now {
            return;
        }
        told.store(now + wait.as_millis() as u64, Ordering::Relaxed);
        self.log.write(
            NGX_LOG_WARN as _,
            &format!(
                "wsgi: RW-NG062 not importing {} in this worker for {:.1}s more (its import killed \
                 a worker): its requests get 503",
                self.script(app),
                wait.as_secs_f64()
            ),
        );
    }

    /// Runs `import` (of `app`) noted in the ledger: if the process dies, the import in
    /// progress is the one that killed it, and only that app is held back in the next worker.
    pub fn noted<T>(&self, app: usize, import: impl FnOnce() -> T) -> T {
        let noted = match (self.ledger, self.keys.get(app)) {
            (Some(ledger), Some(key)) => Some((ledger, *key)),
            _ => None,
        };
        let guard = noted.map(|(ledger, key)| ledger.begin(self.slot, key, imports::now_ms()));
        let result = import();
        drop(guard);
        // Returned in a live process (loaded, or a Python exception): not a deadly import.
        if let Some((ledger, key)) = noted {
            ledger.survived(key);
        }
        result
    }

    fn script(&self, app: usize) -> &str {
        self.scripts.get(app).map_or("", String::as_str)
    }
}

/// The asyncio loop asks before each import of an ASGI app (pyhost's asgi `Pump::load`): held
/// back, its requests get 503 with Retry-After from pyhost.
impl ImportGate for Gate {
    fn admit(&self, app: usize) -> Option<Duration> {
        let wait = self.unavailable(app)?;
        self.tell_held_back(app, wait);
        Some(wait)
    }

    fn watch(&self, app: usize, import: &mut dyn FnMut()) {
        self.noted(app, import);
    }
}
