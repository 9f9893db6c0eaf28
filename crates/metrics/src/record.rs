//! Recording, on the request path: relaxed atomic adds into this process's copy of the app's
//! counters and into its own process slot. No locks, no allocation, no system call; when no
//! region is attached every call returns at once.
//!
//! Who calls what, so that nothing is counted twice:
//! - the process that answers the HTTP request (nginx worker, Apache child, or a standalone
//!   rwsgi-worker) calls [`request_started`] and [`request_finished`];
//! - the thread that runs the app, in whatever process, wraps `pyhost::handle` in a
//!   [`PythonCall`];
//! - a supervisor calls [`respawned`]; a request-timeout path calls [`request_timed_out`] (or
//!   [`request_timed_out_in`] by group name) once per request it stops: pyhost's watchdog
//!   through the transport's `Stuck::timed_out` hook, and the supervisor's backstop kill.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::histogram::nanos;
use crate::layout::{AppStripe, Region, Respawn};
use crate::registry::{own_proc, stripe, AppId, GroupId};

/// How a request ended, as the process that answered it saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Finished {
    /// The status sent (0 if none was).
    pub status: u16,
    /// From the server taking the request to the end of the response.
    pub duration: Duration,
    /// Request body bytes read.
    pub body_in: u64,
    /// Response body bytes sent.
    pub body_out: u64,
    /// The client went away before it had the whole response.
    pub client_aborted: bool,
}

/// Index into the 1xx..5xx counters. A request that ended without a valid status counts as
/// 499 (4xx) when the client left, else as a server error.
pub(crate) fn class_index(status: u16, client_aborted: bool) -> usize {
    match status {
        100..=599 => usize::from(status / 100) - 1,
        _ if client_aborted => 3,
        _ => 4,
    }
}

fn counters(region: &Region, app: AppId) -> Option<&AppStripe> {
    Some(&region.apps.get(usize::from(app.0))?.stripes[stripe()])
}

/// A request for `app` arrived (the process that will answer it).
pub fn request_started(app: AppId) {
    let Some(region) = crate::region() else {
        return;
    };
    if let Some(slot) = own_proc(region) {
        if let Some(a) = slot.active.get(usize::from(app.0)) {
            a.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The request that [`request_started`] counted has ended.
pub fn request_finished(app: AppId, done: &Finished) {
    let Some(region) = crate::region() else {
        return;
    };
    if let Some(slot) = own_proc(region) {
        if let Some(a) = slot.active.get(usize::from(app.0)) {
            // Never below zero, even if a start was not seen (registered mid-request).
            let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
    let Some(c) = counters(region, app) else {
        return;
    };
    c.requests[class_index(done.status, done.client_aborted)].fetch_add(1, Ordering::Relaxed);
    c.duration.observe(done.duration);
    if done.body_in > 0 {
        c.body_in.fetch_add(done.body_in, Ordering::Relaxed);
    }
    if done.body_out > 0 {
        c.body_out.fetch_add(done.body_out, Ordering::Relaxed);
    }
    if done.client_aborted {
        c.client_aborts.fetch_add(1, Ordering::Relaxed);
    }
}

/// One run of the app on a Python request thread: the thread counts as busy until the value is
/// dropped; [`PythonCall::finish`] adds what pyhost measured.
pub struct PythonCall {
    app: Option<AppId>,
    busy: bool,
}

impl PythonCall {
    /// A request thread took a request for `app`, after it waited `queued` for a thread (when
    /// the transport knows).
    pub fn start(app: Option<AppId>, queued: Option<Duration>) -> PythonCall {
        let Some(region) = crate::region() else {
            return PythonCall { app, busy: false };
        };
        let busy = match own_proc(region) {
            Some(slot) => {
                slot.busy.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        };
        if let (Some(q), Some(c)) = (queued, app.and_then(|a| counters(region, a))) {
            c.queue.observe(q);
        }
        PythonCall { app, busy }
    }

    /// The app is done: time spent waiting for the GIL and exceptions it raised.
    pub fn finish(self, gil_wait: Duration, exceptions: u64) {
        let Some(region) = crate::region() else {
            return;
        };
        let Some(c) = self.app.and_then(|a| counters(region, a)) else {
            return;
        };
        let ns = nanos(gil_wait);
        if ns > 0 {
            c.gil_wait_ns.fetch_add(ns, Ordering::Relaxed);
        }
        if exceptions > 0 {
            c.exceptions.fetch_add(exceptions, Ordering::Relaxed);
        }
    }
}

impl Drop for PythonCall {
    fn drop(&mut self) {
        if !self.busy {
            return;
        }
        if let Some(slot) = crate::region().and_then(own_proc) {
            let _ = slot
                .busy
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
}

/// `n` workers of `group` were (or are being) replaced, for `reason` (the supervisor, or the
/// server's master when its reload restarts a group).
pub fn respawned(group: GroupId, reason: Respawn, n: u64) {
    let Some(region) = crate::region() else {
        return;
    };
    if let Some(g) = region.groups.get(usize::from(group.0)) {
        g.respawns[reason as usize].fetch_add(n, Ordering::Relaxed);
    }
}

/// A request of the group named `group` (`""`: embedded mode) ran past its request timeout
/// and was stopped: the one call a timeout path needs when it has no [`GroupId`] at hand (an
/// embedded request-timeout in nginx or Apache). Not for the request path's hot loop: it looks
/// the group up by name.
pub fn request_timed_out_in(group: &str) {
    if let Some(g) = crate::region().and_then(|r| r.register_group(group)) {
        request_timed_out(g);
    }
}

/// A request of `group` ran past its request timeout and was stopped.
pub fn request_timed_out(group: GroupId) {
    let Some(region) = crate::region() else {
        return;
    };
    if let Some(g) = region.groups.get(usize::from(group.0)) {
        g.request_timeouts.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(class_index(200, false), 1);
        assert_eq!(class_index(101, false), 0);
        assert_eq!(class_index(599, true), 4);
        assert_eq!(class_index(0, true), 3, "client closed: 499");
        assert_eq!(class_index(0, false), 4);
        assert_eq!(class_index(700, false), 4);
    }
}
