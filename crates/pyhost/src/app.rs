//! Loading the WSGI script, as mod_wsgi does: the file is executed as a module of its own (named
//! after a hash of its path, so two scripts never collide), and the callable is looked up in it.
//! A failed load is logged with its traceback and answered 500; the next request tries again, so
//! fixing the script (or a missing dependency) needs no restart.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;

use crate::log::{format_exception, ErrorLog, Level};

/// Which script and which callable in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSpec {
    pub script: PathBuf,
    pub callable: String,
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
            "RW-PY001 failed to load WSGI script {} (callable {:?}):\n{}",
            self.spec.script.display(),
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

    fn module_name(&self) -> String {
        let mut h = DefaultHasher::new();
        self.spec.script.hash(&mut h);
        format!("_rwsgi_{:016x}", h.finish())
    }

    fn load<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let name = self.module_name();
        let path = self.spec.script.as_os_str();
        if !self.spec.script.is_file() {
            return Err(PyRuntimeError::new_err(format!(
                "WSGI script {} does not exist or is not a file",
                self.spec.script.display()
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
        let app = module.getattr(self.spec.callable.as_str()).map_err(|_| {
            PyRuntimeError::new_err(format!(
                "WSGI script {} has no callable named {:?}",
                self.spec.script.display(),
                self.spec.callable
            ))
        })?;
        if !app.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "{:?} in {} is not callable",
                self.spec.callable,
                self.spec.script.display()
            )));
        }
        Ok(app)
    }
}
