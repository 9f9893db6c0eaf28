//! The scheduling policy of a process that hosts Python: `SCHED_BATCH` unless told otherwise.
//!
//! In nginx embedded mode each worker process has an event thread and Python threads, and on a
//! busy machine they share cores with the other workers' threads. Under the default policy
//! (`SCHED_OTHER`) a woken thread preempts the one running if it has used less CPU, and nearly
//! every wake-up here is such a thread: the event thread woken for a finished response, a
//! Python thread woken for its job or the GIL. Each preemption lands in the middle of a
//! request, often of the thread holding the GIL, which then cannot run while the threads
//! waiting for the GIL wake, find it held, and sleep again. `SCHED_BATCH` is the same fair
//! share of CPU (same weights, same nice value) without wake-up preemption: a woken thread runs
//! when a core is idle, when the running thread blocks (a request ends, the GIL is released for
//! I/O), or at the scheduler tick. Work then comes in runs instead of ping-pong.
//!
//! Measured (bench/results/2026-12-04-sched-batch*.md, nginx embedded, 2 workers x 16 threads
//! on 2 cores, batch against `RWSGI_SCHED=normal` in the same rounds), server CPU per request at
//! c=16 / c=64: Flask JSON API 113 / 104 against 132 / 147 us, Django 981 / 976 against
//! 1045 / 1070, Flask/Jinja page 824 / 813 against 858 / 853; context switches per Flask request
//! 0.8-0.9 against 4.5-5.3; the 10 ms sleep unchanged. Daemon workers: 2-24% less CPU per
//! hello-world request, real apps within noise.
//!
//! The possible cost is latency for the other work of the same threads when every core is busy:
//! a request for a static file that nginx's event thread would have served at once may wait
//! until the Python thread in front of it blocks, or for the tick (a few ms). Measured under
//! that Flask load, a `return 200` location showed none (p99 2-3 ms either way). When a core is
//! idle nothing changes: the wake-up goes there.
//!
//! Where the process is ours ([`Scheduling::WholeProcess`]: nginx embedded, daemon workers) it
//! is applied by the thread that starts Python, before the request threads exist: threads
//! inherit the policy of the thread that creates them (and forked children inherit it too: a
//! subprocess an app starts runs `SCHED_BATCH`). An Apache child in embedded mode is httpd's
//! ([`Scheduling::Unchanged`]): its threads run Python but also accept and serve for the whole
//! child, and neither way of applying it paid there. Measured (2 x 16 threads): with the whole
//! child batch, a child at its thread limit (hello world, c=64) dropped ten times as many
//! connections (160k against 13k wrk socket errors in two rounds); with only the threads that
//! ran Python batch, Flask JSON API requests cost 0.87-1.20x and Django 1.00-1.03x the CPU.
//! `RWSGI_SCHED=normal` keeps the server's own policy; so does any policy other than
//! `SCHED_OTHER` already set (an operator's `chrt`), and a refusal by the kernel or a sandbox
//! (left as is, with one line in the log).

use std::sync::{Once, OnceLock};

/// Names the policy: `batch` (the default) or `normal` (leave the server's).
pub(crate) const SCHED_ENV: &str = "RWSGI_SCHED";

/// What `RWSGI_SCHED` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wanted {
    Batch,
    Normal,
}

/// `None` for a value we do not know (the caller logs it and keeps the default).
pub(crate) fn parse(value: Option<&str>) -> Option<Wanted> {
    match value.map(str::trim) {
        None | Some("") | Some("batch") => Some(Wanted::Batch),
        Some("normal") | Some("off") => Some(Wanted::Normal),
        Some(_) => None,
    }
}

/// What `RWSGI_SCHED` asks for, read (and a bad value logged) once per process.
fn wanted() -> Wanted {
    static WANTED: OnceLock<Wanted> = OnceLock::new();
    *WANTED.get_or_init(|| {
        let value = std::env::var(SCHED_ENV).ok();
        parse(value.as_deref()).unwrap_or_else(|| {
            eprintln!(
                "rwsgi: RW-PY007 {SCHED_ENV}={:?} is not `batch` or `normal`; using batch",
                value.unwrap_or_default()
            );
            Wanted::Batch
        })
    })
}

/// Whether the process's threads take `SCHED_BATCH` (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduling {
    /// The thread that starts Python, and so every thread started after it: the process is
    /// ours (nginx embedded: the worker's event thread and the pool; a daemon worker).
    WholeProcess,
    /// The server's threads keep the server's policy (Apache embedded).
    Unchanged,
}

/// For a server process that hosts no Python itself but forwards its requests to daemon workers
/// on the same machine (an nginx worker whose locations use `wsgi_process_group`): the calling
/// thread takes the same policy as the workers, with the same `RWSGI_SCHED` override. Returns
/// whether `SCHED_BATCH` was set.
///
/// The forwarding process and the Python workers share the cores. A forwarder under the default
/// policy preempts the worker thread running on its core at every wake-up (a response to relay, a
/// request to forward), and most of its wake-ups come while Python runs: nginx in front of a Flask
/// JSON API woke 1.5-1.9 times per request and spent 74-84 us of CPU per request, most of it in
/// the kernel. Under `SCHED_BATCH` it runs when the Python thread blocks, and relays what has
/// gathered: 0.1-0.3 wake-ups and 40 us per request; the whole server (nginx + workers) used
/// 0.67-0.72x the CPU per request on that API and 0.91-0.94x on Django
/// (bench/results/2026-12-05-daemon-front-batch.md). httpd's children are not switched: in
/// front of a group, at their thread limit, they closed 30-50 times as many keep-alive
/// connections (docs/scheduling.md).
pub fn prefer_batch_for_forwarding() -> bool {
    prefer_batch()
}

/// Applies the policy to the calling thread. Returns whether `SCHED_BATCH` was set.
pub(crate) fn prefer_batch() -> bool {
    if wanted() == Wanted::Normal {
        return false;
    }
    // SAFETY: sched_getscheduler(0) only reads the calling thread's policy.
    if unsafe { libc::sched_getscheduler(0) } != libc::SCHED_OTHER {
        return false;
    }
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for the call's duration.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        static LOGGED: Once = Once::new();
        LOGGED.call_once(|| {
            eprintln!(
                "rwsgi: RW-PY008 cannot switch to SCHED_BATCH ({}); keeping the server's policy",
                std::io::Error::last_os_error()
            )
        });
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(parse(None), Some(Wanted::Batch));
        assert_eq!(parse(Some("batch")), Some(Wanted::Batch));
        assert_eq!(parse(Some(" normal ")), Some(Wanted::Normal));
        assert_eq!(parse(Some("off")), Some(Wanted::Normal));
        assert_eq!(parse(Some("fifo")), None);
    }

    #[test]
    fn sets_batch_on_this_thread_only_and_children_inherit_it() {
        // SAFETY: reads the calling thread's policy.
        let before = unsafe { libc::sched_getscheduler(0) };
        // A thread of its own: the test harness's other threads keep their policy.
        std::thread::spawn(move || {
            // The variable is not set in the test environment (the default: batch).
            if std::env::var_os(SCHED_ENV).is_some() || before != libc::SCHED_OTHER {
                return;
            }
            assert!(prefer_batch());
            // SAFETY: reads the calling thread's policy.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_BATCH);
            // Already batch: left alone, reported as not set by us.
            assert!(!prefer_batch());
            let child = std::thread::spawn(|| {
                // SAFETY: as above.
                unsafe { libc::sched_getscheduler(0) }
            });
            assert_eq!(child.join().unwrap(), libc::SCHED_BATCH);
        })
        .join()
        .unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, before);
    }

    #[test]
    fn an_operators_policy_is_kept() {
        std::thread::spawn(|| {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: pid 0 is this (test) thread; lowering to SCHED_IDLE needs no privilege.
            let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
            assert_eq!(rc, 0);
            assert!(!prefer_batch());
            // SAFETY: reads the calling thread's policy.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_IDLE);
        })
        .join()
        .unwrap();
    }
}
