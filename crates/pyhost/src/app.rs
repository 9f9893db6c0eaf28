//! Loading the WSGI application, from a script or a module:
//!
//! - a **script**, as mod_wsgi does: the file is executed as a module of its own (named after a
//!   hash of its path, so two scripts never collide), and the callable is looked up in it;
//! - a **module**, as uWSGI's `module =` and gunicorn do: imported by its dotted name
//!   (`mysite.wsgi`, Django's layout), with the process's working directory first on `sys.path`
//!   (uWSGI and gunicorn put it there too, so the project next to `manage.py` is importable).
//!
//! Either way a failed load is logged with its traceback and answered 500; the next request tries
//! again, so fixing the code (or a missing dependency) needs no restart. A module that failed is
//! out of `sys.modules` before the retry (Python's import drops one whose code raised; one that
//! imported but lacks the callable is dropped here), so the retry runs the fixed file.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;

use crate::log::{format_exception, ErrorLog, Level};

/// Where an application's code comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AppSource {
    /// A WSGI script file, executed as a module of its own (mod_wsgi's `WSGIScriptAlias`).
    Script(PathBuf),
    /// A module imported by its dotted name (`mysite.wsgi`): uWSGI's `module =`.
    Module(String),
}

impl AppSource {
    /// The script file, for a script.
    pub fn script(&self) -> Option<&Path> {
        match self {
            AppSource::Script(path) => Some(path),
            AppSource::Module(_) => None,
        }
    }
}

impl fmt::Display for AppSource {
    /// `script /srv/app.py` or `module mysite.wsgi`, for log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppSource::Script(path) => write!(f, "script {}", path.display()),
            AppSource::Module(name) => write!(f, "module {name}"),
        }
    }
}

/// Which code and which callable in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSpec {
    pub source: AppSource,
    pub callable: String,
}

impl AppSpec {
    /// The callable `callable` of the script `script`.
    pub fn script(script: impl Into<PathBuf>, callable: impl Into<String>) -> AppSpec {
        AppSpec {
            source: AppSource::Script(script.into()),
            callable: callable.into(),
        }
    }

    /// The callable `callable` of the module `module` (a dotted name).
    pub fn module(module: impl Into<String>, callable: impl Into<String>) -> AppSpec {
        AppSpec {
            source: AppSource::Module(module.into()),
            callable: callable.into(),
        }
    }
}

/// A WSGI application, loaded on first use. Shared by every thread of the process.
pub struct App {
    spec: AppSpec,
    loaded: OnceLock<Py<PyAny>>,
    /// Serialises loading so the script runs once even when the first requests arrive together.
    loading: Mutex<()>,
}

impl App {
    pub fn new(spec: AppSpec) -> Self {
        App {
            spec,
            loaded: OnceLock::new(),
            loading: Mutex::new(()),
        }
    }

    pub fn spec(&self) -> &AppSpec {
        &self.spec
    }

    /// True once the script has been imported in this process (no GIL needed).
    pub fn is_loaded(&self) -> bool {
        self.loaded.get().is_some()
    }

    /// Load the script now (at worker start). On failure the traceback is logged and `false`
    /// returned; requests will retry.
    pub fn preload(&self, log: &dyn ErrorLog) -> bool {
        if !crate::is_initialized() {
            log.log(
                Level::Error,
                "RW-PY002 preload called before Python was initialised",
            );
            return false;
        }
        Python::attach(|py| match self.get(py) {
            Ok(_) => true,
            Err(e) => {
                log.log(Level::Error, &self.load_error_message(py, &e));
                false
            }
        })
    }

    pub(crate) fn load_error_message(&self, py: Python<'_>, err: &PyErr) -> String {
        format!(
            "RW-PY001 failed to load WSGI {} (callable {:?}):\n{}",
            self.spec.source,
            self.spec.callable,
            format_exception(py, err)
        )
    }

    /// The application callable, loading the script if needed.
    pub(crate) fn get<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(app) = self.loaded.get() {
            return Ok(app.bind(py).clone());
        }
        // Wait for the lock with the GIL released: the thread loading needs the GIL to finish.
        let _guard = self
            .loading
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner());
        if let Some(app) = self.loaded.get() {
            return Ok(app.bind(py).clone());
        }
        let app = self.load(py)?;
        // We hold `loading`, so nobody else can have set it meanwhile.
        let _ = self.loaded.set(app.clone().unbind());
        Ok(app)
    }

    fn load<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.spec.source {
            AppSource::Script(path) => self.load_script(py, path),
            AppSource::Module(name) => self.load_module(py, name),
        }
    }

    fn load_script<'py>(&self, py: Python<'py>, script: &Path) -> PyResult<Bound<'py, PyAny>> {
        let name = script_module_name(script);
        let path = script.as_os_str();
        if !script.is_file() {
            return Err(PyRuntimeError::new_err(format!(
                "WSGI script {} does not exist or is not a file",
                script.display()
            )));
        }
        // An explicit SourceFileLoader accepts any file name (mod_wsgi scripts are often *.wsgi).
        let loader = py
            .import("importlib.machinery")?
            .getattr("SourceFileLoader")?
            .call1((&name, path))?;
        let util = py.import("importlib.util")?;
        let spec = util.call_method1("spec_from_loader", (&name, &loader))?;
        let module = util.call_method1("module_from_spec", (&spec,))?;
        module.setattr("__file__", path)?;
        let modules = py.import("sys")?.getattr("modules")?;
        modules.set_item(&name, &module)?;
        if let Err(e) = loader.call_method1("exec_module", (&module,)) {
            let _ = modules.del_item(&name);
            return Err(e);
        }
        let found = self.callable_in(&module, || format!("WSGI script {}", script.display()));
        if found.is_err() {
            let _ = modules.del_item(&name);
        }
        found
    }

    fn load_module<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let sys = py.import("sys")?;
        // The working directory first on sys.path, as uWSGI ("." at 0) and gunicorn do: a
        // Django project is imported from the directory that holds manage.py (`chdir`).
        let cwd = py.import("os")?.call_method0("getcwd")?;
        let path = sys.getattr("path")?;
        if !path.contains(&cwd)? {
            path.call_method1("insert", (0, &cwd))?;
        }
        let importlib = py.import("importlib")?;
        // A retry after the file appeared or was fixed must not trust stale finder caches.
        importlib.call_method0("invalidate_caches")?;
        let module = importlib.call_method1("import_module", (name,))?;
        let found = self.callable_in(&module, || format!("module {name}"));
        if found.is_err() {
            // The module's code ran; the next try must run it again (after a fix), not find
            // the same module without the callable in sys.modules.
            let _ = sys.getattr("modules")?.del_item(name);
        }
        found
    }

    /// The callable named in the spec, looked up in `module`; `what` names the code in errors.
    fn callable_in<'py>(
        &self,
        module: &Bound<'py, PyAny>,
        what: impl Fn() -> String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let callable = self.spec.callable.as_str();
        let app = module.getattr(callable).map_err(|_| {
            PyRuntimeError::new_err(format!("{} has no callable named {callable:?}", what()))
        })?;
        if !app.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "{callable:?} in {} is not callable",
                what()
            )));
        }
        Ok(app)
    }
}

/// The module name a script is executed as: a hash of its path, so two scripts never collide.
fn script_module_name(script: &Path) -> String {
    let mut h = DefaultHasher::new();
    script.hash(&mut h);
    format!("_rwsgi_{:016x}", h.finish())
}
