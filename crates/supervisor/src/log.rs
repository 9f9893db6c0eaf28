//! Log lines of the supervisor and its workers: `NAME[pid]: RWnnn message` on stderr.
//!
//! The code (`RWnnn`) is stable and listed in docs/errors.md, so operators can grep for it
//! and tests can wait for it. Each line is formatted first and written with one `write` call, so
//! lines from concurrent threads and processes sharing stderr do not interleave.

use std::io::Write;
use std::sync::OnceLock;

static NAME: OnceLock<String> = OnceLock::new();

/// Sets the log prefix (the group's display name); the first call wins.
pub fn set_name(name: &str) {
    let _ = NAME.set(name.to_owned());
}

/// Writes one line. Use the [`rwlog!`](crate::rwlog) macro instead of calling this directly.
pub fn write_line(code: &str, msg: std::fmt::Arguments<'_>) {
    let name = NAME.get().map(String::as_str).unwrap_or("rwsgi-worker");
    let pid = std::process::id();
    let line = if code.is_empty() {
        format!("{name}[{pid}]: {msg}\n")
    } else {
        format!("{name}[{pid}]: {code} {msg}\n")
    };
    // Nothing sensible to do if stderr is gone; logging must never take a worker down.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// pyhost's messages (app tracebacks, `wsgi.errors`) with the same prefix as ours.
pub struct WorkerLog;

impl pyhost::ErrorLog for WorkerLog {
    fn log(&self, level: pyhost::Level, msg: &str) {
        write_line("", format_args!("[{}] {msg}", level.as_str()));
    }
}

/// `rwlog!("RW001", "listening on {}", addr)`
#[macro_export]
macro_rules! rwlog {
    ($code:literal, $($arg:tt)*) => {
        $crate::log::write_line($code, format_args!($($arg)*))
    };
}
