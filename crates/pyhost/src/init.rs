//! The interpreter: one CPython per process, started in the worker after fork (process.rs
//! says what else a process starts with it).
//!
//! We use a `PyConfig` instead of `Py_Initialize` because CPython 3.11 derives `sys.prefix` from
//! the first `python3` on `PATH` when `program_name` is not set: a pyenv python first on PATH made
//! Debian's libpython load a foreign stdlib (`undefined symbol: _PyModule_Add`). Pinning
//! `program_name` to `/usr/bin/python3`, or to a virtualenv's `bin/python3`, makes the prefix
//! deterministic and makes CPython honour the venv's `pyvenv.cfg` (BUILD-NOTES.md, section 3).

use std::ffi::CString;
use std::fmt;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use pyo3::ffi;
use pyo3::prelude::*;

/// The interpreter every rwsgi build links against (Debian's).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// Where Python comes from: `python-home` (a virtualenv or a prefix) and extra `sys.path` entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PythonConfig {
    pub python_home: Option<PathBuf>,
    pub python_path: Vec<PathBuf>,
}

/// A start-up failure, with a sentence for the server's error log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// The configuration the interpreter was started with, to refuse a different second one.
static STARTED: Mutex<Option<PythonConfig>> = Mutex::new(None);

/// True once [`crate::initialize`] has succeeded in this process.
pub fn is_initialized() -> bool {
    // SAFETY: Py_IsInitialized only reads a global flag and may be called at any time.
    unsafe { ffi::Py_IsInitialized() != 0 }
}

/// The version of the Python this process links (`3.11.2`), for metrics and logs. Callable
/// before the interpreter starts, and in processes that never start it.
pub fn python_version() -> String {
    // SAFETY: Py_GetVersion returns a static NUL-terminated string and may be called before
    // Py_Initialize (documented so).
    let full = unsafe { std::ffi::CStr::from_ptr(ffi::Py_GetVersion()) };
    let full = full.to_string_lossy();
    full.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The file this process runs the interpreter's code from: the executable itself when it links
/// the static interpreter (rwsgi-worker), else the shared `libpython3.x.so` a module brought.
/// For start-up lines.
pub fn interpreter_file() -> Option<PathBuf> {
    mapped_file(ffi::Py_IsInitialized as *const () as usize)
}

/// The file whose mapping holds address `addr` in this process (`/proc/self/maps`, resolved),
/// so the real file whatever argv[0] says: the executable, or a shared object such as a server
/// module.
pub fn mapped_file(addr: usize) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let (start, end) = (
            usize::from_str_radix(start, 16).ok()?,
            usize::from_str_radix(end, 16).ok()?,
        );
        let path = fields.nth(4)?;
        (start <= addr && addr < end && path.starts_with('/'))
            .then(|| std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path)))
    })
}

/// The `program_name` that selects the prefix: `<home>/bin/python3`, or Debian's python3.
fn program_name(home: Option<&Path>) -> Result<PathBuf, Error> {
    let Some(home) = home else {
        return Ok(PathBuf::from(SYSTEM_PYTHON));
    };
    for name in ["bin/python3", "bin/python"] {
        let candidate = home.join(name);
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(Error(format!(
        "python-home {}: no bin/python3 there; expected a virtualenv made with `{SYSTEM_PYTHON} -m venv` or a Python prefix",
        home.display()
    )))
}

/// Starts CPython once in this process with `cfg` and returns with the GIL released.
/// `Ok(true)`: started now (`before_start` ran just before); `Ok(false)`: it already runs with
/// this very configuration (nothing ran). A different configuration, or an interpreter someone
/// else started, is an error: one interpreter per process. `crate::initialize` (process.rs)
/// is the public entry point.
pub(crate) fn start_interpreter(
    cfg: &PythonConfig,
    before_start: impl FnOnce(),
) -> Result<bool, Error> {
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(previous) = started.as_ref() {
        if previous == cfg {
            return Ok(false);
        }
        return Err(Error(
            "Python is already initialised in this process with another python-home/python-path"
                .into(),
        ));
    }
    if is_initialized() {
        return Err(Error(
            "Python was initialised in this process by someone else (another Python module loaded?)"
                .into(),
        ));
    }
    before_start();
    let program = program_name(cfg.python_home.as_deref())?;
    let program = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| Error("python-home contains a NUL byte".into()))?;
    // SAFETY: the PyConfig is initialised by PyConfig_InitPythonConfig before any field is read,
    // cleared exactly once with PyConfig_Clear, and only used on this thread; the interpreter is
    // not yet initialised (checked above under the STARTED lock), which is what
    // Py_InitializeFromConfig requires. PyEval_SaveThread then releases the GIL this thread holds
    // after initialisation, so that any thread can attach later.
    unsafe {
        let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        // The host server owns signals; Python must not install SIGINT handlers in it.
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        let status =
            ffi::PyConfig_SetBytesString(&mut config, &mut config.program_name, program.as_ptr());
        if ffi::PyStatus_Exception(status) != 0 {
            ffi::PyConfig_Clear(&mut config);
            return Err(status_error("setting program_name", &status));
        }
        let status = ffi::Py_InitializeFromConfig(&config);
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(status) != 0 {
            return Err(status_error("Py_InitializeFromConfig", &status));
        }
        // `threading` records the thread that first imports it as the main thread. Imported
        // here, that is the thread that started the interpreter, which is what CPython's own
        // checks (signal.set_wakeup_fd) mean by it; imported first on the ASGI loop thread,
        // uvloop would take that thread for the main one and fail in run_forever.
        let threading = ffi::PyImport_ImportModule(c"threading".as_ptr());
        if threading.is_null() {
            ffi::PyErr_Clear();
        } else {
            ffi::Py_DECREF(threading);
        }
        ffi::PyEval_SaveThread();
    }
    *started = Some(cfg.clone());
    Ok(true)
}

/// Append `python-path` entries with `site.addsitedir`, as mod_wsgi does (so `.pth` files work).
pub(crate) fn add_python_path(dirs: &[PathBuf]) -> Result<(), Error> {
    if dirs.is_empty() {
        return Ok(());
    }
    Python::attach(|py| add_site_dirs(py, dirs))
}

fn add_site_dirs(py: Python<'_>, dirs: &[PathBuf]) -> Result<(), Error> {
    let site = py
        .import("site")
        .map_err(|e| Error(format!("import site: {e}")))?;
    for dir in dirs {
        site.call_method1("addsitedir", (dir.as_os_str(),))
            .map_err(|e| Error(format!("python-path {}: {e}", dir.display())))?;
    }
    Ok(())
}

fn status_error(what: &str, status: &ffi::PyStatus) -> Error {
    let msg = if status.err_msg.is_null() {
        "unknown error".to_string()
    } else {
        // SAFETY: a non-null err_msg of a PyStatus is a static NUL-terminated C string.
        unsafe { std::ffi::CStr::from_ptr(status.err_msg) }
            .to_string_lossy()
            .into_owned()
    };
    Error(format!("Python start-up failed in {what}: {msg}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_name_defaults_to_debian_python() {
        assert_eq!(program_name(None).unwrap(), PathBuf::from(SYSTEM_PYTHON));
    }

    #[test]
    fn program_name_rejects_a_home_without_python() {
        let err = program_name(Some(Path::new("/nonexistent-home"))).unwrap_err();
        assert!(err.0.contains("no bin/python3"), "{err}");
    }
}
