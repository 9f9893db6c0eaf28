//! rwsgi's metrics: counters in shared memory, added to with atomics on the request path, and
//! their Prometheus / OpenMetrics exposition.
//!
//! Every process of a server (nginx workers, Apache children, daemon supervisors and workers)
//! maps the same [`Region`]: nginx's master, Apache's parent and a standalone rwsgi-worker
//! supervisor map it from a memory file ([`shm::create`]) before anything forks, so children
//! inherit the mapping, and a daemon group's supervisor that execs rwsgi-worker maps the file
//! again ([`shm::attach_fd`]); a scrape from any one process sees all of them.
//! The layout is fixed (`layout`): the server registers its process groups and apps by label
//! (`registry`), processes claim a slot of their own, the request path adds to counters
//! (`record`), and a scrape reads them (`snapshot`) and writes the text (`expose`).
//!
//! Files: `layout` (the shared structs), `histogram` (buckets), `registry` (claiming slots),
//! `record` (the request path), `procfs` (liveness and memory of processes), `snapshot`,
//! `expose`, `shm`, `http` (serving and fetching the endpoint over a socket), `text` (reading the
//! exposition back, for `rwsgi top` and tests).

mod expose;
mod histogram;
pub mod http;
mod layout;
mod procfs;
mod record;
mod registry;
pub mod shm;
mod snapshot;
pub mod text;

use std::sync::atomic::{AtomicPtr, Ordering};

pub use expose::{render, BuildInfo, Format};
pub use histogram::{HistSnapshot, BOUNDS_TEXT, BUCKETS};
pub use layout::{Region, Respawn, Role, MAX_APPS, MAX_GROUPS, MAX_PROCS, REGION_SIZE, STRIPES};
pub use record::{
    request_finished, request_started, request_timed_out, request_timed_out_in, respawned,
    Finished, PythonCall,
};
pub use registry::{AppId, GroupId};
pub use snapshot::{AppSnapshot, GroupSnapshot, Snapshot};

/// The region this process records into (inherited across fork).
static REGION: AtomicPtr<Region> = AtomicPtr::new(std::ptr::null_mut());

/// The attached region, if any.
#[inline]
pub fn region() -> Option<&'static Region> {
    let p = REGION.load(Ordering::Acquire);
    // SAFETY: a non-null pointer was stored by attach(), whose contract keeps it valid for the
    // rest of the process.
    unsafe { p.as_ref() }
}

/// Makes `region` the one this process (and every process it forks from now on) records into.
pub fn attach(region: &'static Region) {
    REGION.store((region as *const Region).cast_mut(), Ordering::Release);
}

/// Forgets the attached region (nginx: a reload to a configuration that no longer uses the module;
/// the mapping stays, unused).
pub fn detach() {
    REGION.store(std::ptr::null_mut(), Ordering::Release);
}

/// The mount label of an app: its SCRIPT_NAME prefix without a trailing slash, `/` for the root
/// (and for nginx's regex and named locations, whose SCRIPT_NAME is empty).
pub fn mount_label(script_name: &str) -> &str {
    let trimmed = script_name.trim_end_matches('/');
    if trimmed.is_empty() {
        "/"
    } else {
        trimmed
    }
}

/// The text of the endpoint now: a snapshot of the attached region in `format` (an empty one
/// when none is attached).
pub fn scrape(build: &BuildInfo, format: Format) -> String {
    let snap = region().map(Region::snapshot).unwrap_or_default();
    render(&snap, build, format)
}

#[cfg(test)]
mod testing {
    //! Tests that attach a region or claim a process slot share process-wide state.
    use std::sync::{Mutex, MutexGuard};

    static LOCK: Mutex<()> = Mutex::new(());

    pub(crate) fn lock() -> MutexGuard<'static, ()> {
        LOCK.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn attach(region: &'static super::Region) {
        super::attach(region);
    }

    pub(crate) fn detach() {
        super::detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_labels() {
        assert_eq!(mount_label(""), "/");
        assert_eq!(mount_label("/"), "/");
        assert_eq!(mount_label("/app/"), "/app");
        assert_eq!(mount_label("/a/b"), "/a/b");
    }

    #[test]
    fn nothing_attached_records_nothing_and_scrapes_empty() {
        let _g = testing::lock();
        testing::detach();
        request_started(AppId(0));
        request_finished(AppId(0), &Finished::default());
        drop(PythonCall::start(Some(AppId(0)), None));
        let build = BuildInfo {
            version: "v".into(),
            python: "p".into(),
            server: "s".into(),
        };
        let text = scrape(&build, Format::Text);
        assert!(text.contains("rwsgi_build_info{version=\"v\",python=\"p\",server=\"s\"} 1"));
    }
}
