//! Reading the region at scrape time: the copies of each counter added up, the gauges of the
//! processes that are still alive (checked through /proc) summed per group, labels resolved.
//! Counters are read with relaxed loads while others add to them: each value is exact, and a
//! request in flight may show in one counter and not yet in another.

use std::sync::atomic::Ordering;

use crate::histogram::HistSnapshot;
use crate::layout::{Region, Role, SlotHead, READY};
use crate::procfs;
use crate::registry::proc_stat;

/// One process group (`name` `""`: embedded mode, i.e. the server's own processes).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupSnapshot {
    pub name: String,
    /// Workers replaced, by [`crate::Respawn`] reason.
    pub respawns: [u64; 4],
    pub request_timeouts: u64,
    /// Live processes, by [`Role`] (index `role as usize - 1`).
    pub processes: [u64; 3],
    /// Their resident memory in bytes, summed, by role.
    pub rss_bytes: [u64; 3],
    /// Python request threads of the live processes, and how many run a request.
    pub threads: u64,
    pub busy: u64,
}

/// One app: a mount point served by one group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppSnapshot {
    pub mount: String,
    pub group: String,
    /// Responses by status class 1xx..5xx.
    pub requests: [u64; 5],
    pub duration: HistSnapshot,
    pub queue: HistSnapshot,
    pub gil_wait_seconds: f64,
    pub exceptions: u64,
    pub client_aborts: u64,
    pub body_in: u64,
    pub body_out: u64,
    /// Requests in progress now.
    pub active: u64,
}

/// Everything a scrape shows, in a stable order (groups by name, apps by group and mount).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// When the counters started (seconds since the Unix epoch).
    pub start_time: f64,
    pub groups: Vec<GroupSnapshot>,
    pub apps: Vec<AppSnapshot>,
}

/// The label of a READY slot.
fn label(head: &SlotHead) -> Option<&str> {
    if head.state.load(Ordering::Acquire) != READY {
        return None;
    }
    // SAFETY: READY observed with Acquire: the label is final.
    Some(unsafe { head.label.get() })
}

impl Region {
    /// Reads the counters and the live processes.
    pub fn snapshot(&self) -> Snapshot {
        let current = self.generation();
        let mut groups: Vec<Option<GroupSnapshot>> = self
            .groups
            .iter()
            .map(|g| {
                let name = label(&g.head)?;
                Some(GroupSnapshot {
                    name: name.to_owned(),
                    respawns: std::array::from_fn(|i| g.respawns[i].load(Ordering::Relaxed)),
                    request_timeouts: g.request_timeouts.load(Ordering::Relaxed),
                    ..Default::default()
                })
            })
            .collect();
        let mut shown: Vec<bool> = self
            .groups
            .iter()
            .map(|g| g.head.generation.load(Ordering::Relaxed) >= current)
            .collect();
        let active = self.add_processes(&mut groups, &mut shown);
        let mut apps = Vec::new();
        for (i, slot) in self.apps.iter().enumerate() {
            let Some(mount) = label(&slot.head) else {
                continue;
            };
            let g = slot.head.group.load(Ordering::Relaxed) as usize;
            let live = active[i] > 0;
            if slot.head.generation.load(Ordering::Relaxed) < current && !live {
                continue; // an app the configuration no longer has
            }
            let Some(group) = groups.get(g).and_then(Option::as_ref) else {
                continue;
            };
            let mut app = AppSnapshot {
                mount: mount.to_owned(),
                group: group.name.clone(),
                active: active[i],
                ..Default::default()
            };
            for s in &slot.stripes {
                for (total, c) in app.requests.iter_mut().zip(&s.requests) {
                    *total += c.load(Ordering::Relaxed);
                }
                app.duration.add(&s.duration);
                app.queue.add(&s.queue);
                app.gil_wait_seconds += s.gil_wait_ns.load(Ordering::Relaxed) as f64 / 1e9;
                app.exceptions += s.exceptions.load(Ordering::Relaxed);
                app.client_aborts += s.client_aborts.load(Ordering::Relaxed);
                app.body_in += s.body_in.load(Ordering::Relaxed);
                app.body_out += s.body_out.load(Ordering::Relaxed);
            }
            if let Some(s) = shown.get_mut(g) {
                *s = true;
            }
            apps.push(app);
        }
        let mut groups: Vec<GroupSnapshot> = groups
            .into_iter()
            .zip(shown)
            .filter_map(|(g, show)| g.filter(|_| show))
            .collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        apps.sort_by(|a, b| (&a.group, &a.mount).cmp(&(&b.group, &b.mount)));
        Snapshot {
            start_time: self.start_time(),
            groups,
            apps,
        }
    }

    /// Adds every live process's gauges to its group (which is then shown even if the current
    /// configuration no longer names it: a group still draining); returns the requests in
    /// progress per app slot.
    fn add_processes(&self, groups: &mut [Option<GroupSnapshot>], shown: &mut [bool]) -> Vec<u64> {
        let page = procfs::page_size();
        let mut active = vec![0u64; self.apps.len()];
        for slot in &self.procs {
            if slot.state.load(Ordering::Acquire) != READY {
                continue;
            }
            let Some(stat) = proc_stat(slot) else {
                continue; // died without releasing its slot
            };
            for (total, a) in active.iter_mut().zip(&slot.active) {
                *total += u64::from(a.load(Ordering::Relaxed));
            }
            let g = slot.group.load(Ordering::Relaxed) as usize;
            let (Some(Some(group)), Some(role)) = (
                groups.get_mut(g),
                Role::from_u32(slot.role.load(Ordering::Relaxed)),
            ) else {
                continue;
            };
            shown[g] = true;
            let r = role as usize - 1;
            group.processes[r] += 1;
            group.rss_bytes[r] += stat.rss_pages * page;
            let threads = u64::from(slot.threads.load(Ordering::Relaxed));
            group.threads += threads;
            group.busy += u64::from(slot.busy.load(Ordering::Relaxed)).min(threads);
        }
        active
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{shm, testing, Finished, PythonCall};

    #[test]
    fn counts_reach_the_snapshot() {
        let _g = testing::lock();
        let region = shm::create().unwrap();
        testing::attach(region);
        region.new_generation();
        let web = region.register_group("web").unwrap();
        let embedded = region.register_group("").unwrap();
        let app = region.register_app("/app", web).unwrap();
        let root = region.register_app("/", embedded).unwrap();
        assert!(region.register_process(Role::Server, Some(embedded), 0));
        crate::request_started(app);
        crate::request_started(app);
        crate::request_finished(
            app,
            &Finished {
                status: 404,
                duration: Duration::from_millis(3),
                body_in: 10,
                body_out: 20,
                client_aborted: false,
            },
        );
        let call = PythonCall::start(Some(root), Some(Duration::from_micros(100)));
        call.finish(Duration::from_millis(2), 1);
        crate::respawned(web, crate::Respawn::Crash, 2);
        crate::request_timed_out(web);
        crate::request_timed_out_in("");
        let snap = region.snapshot();
        let names: Vec<&str> = snap.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["", "web"]);
        assert_eq!(snap.groups[0].processes, [1, 0, 0]);
        assert_eq!(snap.groups[0].request_timeouts, 1);
        assert!(snap.groups[0].rss_bytes[0] > 0);
        assert_eq!(
            (snap.groups[1].respawns[0], snap.groups[1].request_timeouts),
            (2, 1)
        );
        let a = snap.apps.iter().find(|a| a.mount == "/app").unwrap();
        assert_eq!(
            (a.requests, a.active, a.body_in, a.body_out),
            ([0, 0, 0, 1, 0], 1, 10, 20)
        );
        assert_eq!(a.duration.buckets[3], 1, "3 ms falls in le=0.005");
        let r = snap.apps.iter().find(|a| a.mount == "/").unwrap();
        assert_eq!((r.exceptions, r.queue.count()), (1, 1));
        assert!((r.gil_wait_seconds - 0.002).abs() < 1e-9);
        region.release_process();
        testing::detach();
    }

    #[test]
    fn configurations_replaced_by_a_reload_disappear() {
        let region = shm::create().unwrap();
        region.new_generation();
        let g = region.register_group("old").unwrap();
        region.register_app("/gone", g).unwrap();
        region.new_generation();
        let g2 = region.register_group("new").unwrap();
        region.register_app("/kept", g2).unwrap();
        let snap = region.snapshot();
        assert_eq!(snap.apps.len(), 1);
        assert_eq!(snap.apps[0].mount, "/kept");
        assert_eq!(snap.groups.len(), 1);
    }
}
