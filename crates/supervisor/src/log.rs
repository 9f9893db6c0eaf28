//! Log lines of the supervisor and its workers: `NAME[pid]: RWnnn message` on stderr.
//!
//! The code (`RWnnn`) is stable and listed in docs/errors.md, so operators can grep for it
//! and tests can wait for it. Each line is formatted first and written with one `write` call, so
//! lines from concurrent threads and processes sharing stderr do not interleave.
//!
//! Lines that an outsider can cause at will (one per malformed packet, per forged request, per
//! request refused while no worker lives) go through [`rwlog_limited!`](crate::rwlog_limited):
//! per process and code, the first line of a one-second window is written, the others in that
//! window are counted, and once the window is over one summary says how many there were and
//! shows the last of them:
//!
//! ```text
//! RW030 suppressed 1234 similar lines in the last 1.0s (last: closing connection: ...)
//! ```
//!
//! So every event is accounted for (lines written + the summaries' counts) and a flood of any
//! size costs about two lines a second. The summary is written by the next line of that code
//! after the window, or by [`flush_due`], which the supervisor calls on its tick and the worker
//! threads when they wake up with something pending.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

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

/// How long one rate-limit window lasts: at most one line per code per window.
const WINDOW: Duration = Duration::from_secs(1);

/// The rate-limit state of one code in this process.
struct Limited {
    code: &'static str,
    /// When the window's written line went out.
    window_start: Instant,
    /// Lines counted instead of written in this window.
    suppressed: u64,
    /// The last suppressed message (without the code).
    last: String,
}

impl Limited {
    /// The summary to write once the window is over, resetting the count.
    fn take_summary(&mut self) -> Option<(u64, String)> {
        if self.suppressed == 0 {
            return None;
        }
        let n = std::mem::take(&mut self.suppressed);
        Some((n, std::mem::take(&mut self.last)))
    }
}

/// Every rate-limited code seen in this process (a handful: a linear search is fine).
static LIMITED: Mutex<Vec<Limited>> = Mutex::new(Vec::new());
/// Some code has suppressed lines waiting for their summary (read without the lock).
static PENDING: AtomicBool = AtomicBool::new(false);

fn limited() -> std::sync::MutexGuard<'static, Vec<Limited>> {
    LIMITED.lock().unwrap_or_else(|e| e.into_inner())
}

fn write_summary(code: &str, (count, last): (u64, String)) {
    write_line(
        code,
        format_args!("suppressed {count} similar lines in the last 1.0s (last: {last})"),
    );
}

/// Writes one line of a flood-prone code, rate-limited (module docs). Use the
/// [`rwlog_limited!`](crate::rwlog_limited) macro.
pub fn write_limited(code: &'static str, msg: std::fmt::Arguments<'_>) {
    let now = Instant::now();
    let mut table = limited();
    let i = match table.iter().position(|l| l.code == code) {
        Some(i) => i,
        None => {
            table.push(Limited {
                code,
                window_start: now,
                suppressed: 0,
                last: String::new(),
            });
            drop(table);
            write_line(code, msg);
            return;
        }
    };
    let entry = &mut table[i];
    if now.duration_since(entry.window_start) < WINDOW {
        entry.suppressed += 1;
        entry.last.clear();
        let _ = entry.last.write_fmt(msg);
        PENDING.store(true, Ordering::Release);
        return;
    }
    entry.window_start = now;
    let summary = entry.take_summary();
    drop(table);
    if let Some(summary) = summary {
        write_summary(code, summary);
    }
    write_line(code, msg);
}

/// True when some summary is waiting to be written (cheap: one atomic load).
pub fn pending() -> bool {
    PENDING.load(Ordering::Acquire)
}

/// Writes the summaries whose window is over. Cheap when nothing is pending.
pub fn flush_due() {
    if !pending() {
        return;
    }
    let now = Instant::now();
    let mut due = Vec::new();
    let mut waiting = false;
    {
        let mut table = limited();
        for entry in table.iter_mut() {
            if entry.suppressed == 0 {
                continue;
            }
            if now.duration_since(entry.window_start) >= WINDOW {
                if let Some(summary) = entry.take_summary() {
                    due.push((entry.code, summary));
                }
            } else {
                waiting = true;
            }
        }
        PENDING.store(waiting, Ordering::Release);
    }
    for (code, summary) in due {
        write_summary(code, summary);
    }
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

/// `rwlog_limited!("RW030", "closing connection: {}", why)`: for lines an outsider can make us
/// write at will; at most one a second per code, the rest counted (see the module docs).
#[macro_export]
macro_rules! rwlog_limited {
    ($code:literal, $($arg:tt)*) => {
        $crate::log::write_limited($code, format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(code: &str) -> (u64, String) {
        let table = limited();
        let e = table.iter().find(|l| l.code == code).expect("code seen");
        (e.suppressed, e.last.clone())
    }

    #[test]
    fn repeats_in_a_window_are_counted_then_summarised() {
        // A code of its own: the table is per process, shared with other tests.
        write_limited("RWT01", format_args!("first"));
        for i in 0..5 {
            write_limited("RWT01", format_args!("again {i}"));
        }
        assert_eq!(state("RWT01"), (5, "again 4".to_owned()));
        assert!(pending());
        flush_due(); // the window is not over: nothing is written, nothing lost
        assert_eq!(state("RWT01").0, 5);
        {
            let mut table = limited();
            let e = table.iter_mut().find(|l| l.code == "RWT01").unwrap();
            e.window_start -= WINDOW;
        }
        flush_due();
        assert_eq!(state("RWT01"), (0, String::new()));
        // The window is over: the next line is written and opens a new window.
        write_limited("RWT01", format_args!("later"));
        assert_eq!(state("RWT01").0, 0);
        write_limited("RWT01", format_args!("and again"));
        assert_eq!(state("RWT01").0, 1);
    }
}
