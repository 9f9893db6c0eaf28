//! What a worker sets in its own process before Python starts: the working directory and the
//! environment variables of `--chdir` / `--env` (uWSGI's `chdir` and `env`). Done in each worker
//! after fork and after the privilege drop, so the supervisor keeps its own directory (it owns
//! the socket file, whose path may be relative) and the directory is entered as the user the app
//! runs as.

use std::path::Path;

use crate::config::GroupConfig;
use crate::rwlog;

/// Applies the group's `chdir` and `env` to this process. Call it while the process has one
/// thread (right after fork): changing the environment is not thread-safe in glibc, and Python,
/// which reads it at start, is not running yet. The error is the log line's text.
pub fn apply(cfg: &GroupConfig) -> Result<(), String> {
    if let Some(dir) = &cfg.chdir {
        change_dir(dir)?;
    }
    for (name, value) in &cfg.env {
        // Single-threaded here (see above); names and values were checked by validate().
        std::env::set_var(name, value);
    }
    Ok(())
}

fn change_dir(dir: &Path) -> Result<(), String> {
    std::env::set_current_dir(dir).map_err(|e| {
        let msg = format!("cannot change to directory {}: {e}", dir.display());
        rwlog!("RW024", "worker setup failed: {msg}");
        msg
    })
}
