//! Claiming slots: groups and apps by label, processes by pid.
//!
//! Group and app slots form open-addressed hash tables. A slot goes `FREE -> CLAIMING ->
//! READY` exactly once (compare-and-swap, so two processes registering the same label at once
//! end up with one slot) and is never freed: a label registered again, in this process or after
//! a reload, finds its counters where they were. Registration happens at start-up (the server's
//! master or parent, a supervisor, a worker), never per request.
//!
//! Process slots are claimed by each process for itself after it forked, and freed when it exits
//! cleanly; the slot of a process that died without freeing it is taken over by a later one once
//! /proc shows the pid gone or reused.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::layout::{
    ProcSlot, Region, Role, SlotHead, CLAIMING, FREE, MAX_APPS, MAX_GROUPS, MAX_PROCS, NO_GROUP,
    READY, STRIPES,
};
use crate::procfs;

/// An app's slot: a mount point served by one process group (or embedded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AppId(pub(crate) u16);

/// A process group's slot (`""`: embedded mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupId(pub(crate) u16);

/// This process's own slot, `u32::MAX` until it registers. Inherited across fork: every process
/// that records must register itself after it forked.
static PROC: AtomicU32 = AtomicU32::new(u32::MAX);

/// This process's slot, if it registered.
pub(crate) fn own_proc(region: &Region) -> Option<&ProcSlot> {
    region.procs.get(PROC.load(Ordering::Relaxed) as usize)
}

/// Which copy of the app counters this process adds to.
pub(crate) fn stripe() -> usize {
    PROC.load(Ordering::Relaxed) as usize % STRIPES
}

/// FNV-1a over the group index and the label.
fn hash(group: u32, label: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in group.to_le_bytes().iter().chain(label.as_bytes()) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Finds the slot of `(group, label)` among `heads`, claiming a free one if it is new, and
/// stamps it with `generation`. `None`: the table is full.
fn find_or_claim<'a>(
    heads: impl Fn(usize) -> &'a SlotHead,
    n: usize,
    group: u32,
    label: &str,
    generation: u64,
) -> Option<usize> {
    let h = hash(group, label);
    for i in 0..n {
        let idx = (h as usize + i) % n;
        let head = heads(idx);
        loop {
            match head.state.load(Ordering::Acquire) {
                FREE => {
                    if head
                        .state
                        .compare_exchange(FREE, CLAIMING, Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
                    {
                        continue; // someone else claimed it: look again
                    }
                    head.hash.store(h, Ordering::Relaxed);
                    head.group.store(group, Ordering::Relaxed);
                    // SAFETY: we hold the slot in CLAIMING state.
                    unsafe { head.label.set(label) };
                    head.generation.store(generation, Ordering::Relaxed);
                    head.state.store(READY, Ordering::Release);
                    return Some(idx);
                }
                READY => {
                    if !same_key(head, h, group, label) {
                        break;
                    }
                    // Usually already stamped: no write to the shared line then.
                    if head.generation.load(Ordering::Relaxed) < generation {
                        head.generation.fetch_max(generation, Ordering::Relaxed);
                    }
                    return Some(idx);
                }
                // Another process is writing this slot's label: it takes microseconds.
                _ => std::thread::yield_now(),
            }
        }
    }
    None
}

fn same_key(head: &SlotHead, h: u32, group: u32, label: &str) -> bool {
    // SAFETY: only called for a slot seen READY with Acquire: the label is final.
    head.hash.load(Ordering::Relaxed) == h
        && head.group.load(Ordering::Relaxed) == group
        && unsafe { head.label.get() } == truncated(label)
}

/// The label as stored (cut to LABEL_MAX at a character boundary).
fn truncated(label: &str) -> &str {
    let mut n = label.len().min(crate::layout::LABEL_MAX);
    while !label.is_char_boundary(n) {
        n -= 1;
    }
    &label[..n]
}

impl Region {
    /// The slot of process group `name` (`""` for embedded mode), registered in the current
    /// generation. `None` when the table is full.
    pub fn register_group(&self, name: &str) -> Option<GroupId> {
        let g = self.generation();
        find_or_claim(|i| &self.groups[i].head, MAX_GROUPS, NO_GROUP, name, g)
            .map(|i| GroupId(i as u16))
    }

    /// The configuration generation that last registered group `name`, if it ever was (read
    /// before [`Region::new_generation`]: equal to [`Region::generation`] means the group was
    /// in the configuration being replaced).
    pub fn group_generation(&self, name: &str) -> Option<u64> {
        let h = hash(NO_GROUP, name);
        for i in 0..MAX_GROUPS {
            let head = &self.groups[(h as usize + i) % MAX_GROUPS].head;
            match head.state.load(Ordering::Acquire) {
                READY if same_key(head, h, NO_GROUP, name) => {
                    return Some(head.generation.load(Ordering::Relaxed));
                }
                READY | CLAIMING => {}
                _ => return None,
            }
        }
        None
    }

    /// The slot of the app mounted at `mount` (`/` for the root) in `group`, registered in the
    /// current generation. `None` when the table is full.
    pub fn register_app(&self, mount: &str, group: GroupId) -> Option<AppId> {
        let g = self.generation();
        find_or_claim(
            |i| &self.apps[i].head,
            MAX_APPS,
            u32::from(group.0),
            mount,
            g,
        )
        .map(|i| AppId(i as u16))
    }

    /// Claims a slot for this process (call once after fork, before recording anything): its
    /// role, group and number of Python request threads. Returns false when the table is full
    /// or /proc cannot be read (the process then records counters but no gauges).
    pub fn register_process(&self, role: Role, group: Option<GroupId>, threads: u32) -> bool {
        PROC.store(u32::MAX, Ordering::Relaxed);
        let Some(me) = procfs::own_stat() else {
            return false;
        };
        let pid = std::process::id();
        for i in 0..MAX_PROCS {
            let idx = (pid as usize + i) % MAX_PROCS;
            let slot = &self.procs[idx];
            if !claim_proc(slot) {
                continue;
            }
            slot.pid.store(pid, Ordering::Relaxed);
            slot.start.store(me.start, Ordering::Relaxed);
            let group = group.map_or(NO_GROUP, |g| u32::from(g.0));
            slot.group.store(group, Ordering::Relaxed);
            slot.role.store(role as u32, Ordering::Relaxed);
            slot.threads.store(threads, Ordering::Relaxed);
            slot.busy.store(0, Ordering::Relaxed);
            for a in &slot.active {
                a.store(0, Ordering::Relaxed);
            }
            slot.state.store(READY, Ordering::Release);
            PROC.store(idx as u32, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Frees this process's slot (clean exit). The slot of a process that dies without this is
    /// ignored by scrapes and reused later.
    pub fn release_process(&self) {
        let idx = PROC.swap(u32::MAX, Ordering::Relaxed);
        if let Some(slot) = self.procs.get(idx as usize) {
            if slot.pid.load(Ordering::Relaxed) == std::process::id() {
                slot.state.store(FREE, Ordering::Release);
            }
        }
    }

    /// Changes the number of Python request threads of this process (e.g. once they started).
    pub fn set_threads(&self, threads: u32) {
        if let Some(slot) = own_proc(self) {
            slot.threads.store(threads, Ordering::Relaxed);
        }
    }
}

/// Takes a free slot, or the slot of a process that is gone.
fn claim_proc(slot: &ProcSlot) -> bool {
    match slot.state.load(Ordering::Acquire) {
        FREE => slot
            .state
            .compare_exchange(FREE, CLAIMING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok(),
        READY if !proc_alive(slot) => slot
            .state
            .compare_exchange(READY, CLAIMING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok(),
        _ => false,
    }
}

/// Is the process that claimed `slot` still running? (Its pid may have been reused: the start
/// time tells.) Also gives its /proc stat.
pub(crate) fn proc_stat(slot: &ProcSlot) -> Option<procfs::Stat> {
    let pid = slot.pid.load(Ordering::Relaxed);
    let stat = procfs::stat(pid)?;
    (stat.running() && stat.start == slot.start.load(Ordering::Relaxed)).then_some(stat)
}

fn proc_alive(slot: &ProcSlot) -> bool {
    proc_stat(slot).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm;

    #[test]
    fn labels_find_their_slot_again() {
        let region = shm::create().unwrap();
        region.new_generation();
        let g = region.register_group("web").unwrap();
        let e = region.register_group("").unwrap();
        assert_ne!(g, e);
        assert_eq!(region.register_group("web"), Some(g));
        assert_eq!(region.group_generation("web"), Some(1));
        assert_eq!(region.group_generation("other"), None);
        let a = region.register_app("/app", g).unwrap();
        let b = region.register_app("/app", e).unwrap();
        assert_ne!(a, b, "the same mount in two groups is two apps");
        assert_eq!(region.register_app("/app", g), Some(a));
        let long = "é".repeat(200);
        let c = region.register_app(&long, g).unwrap();
        assert_eq!(region.register_app(&long, g), Some(c));
    }

    #[test]
    fn a_full_table_says_so() {
        let region = shm::create().unwrap();
        let g = region.register_group("g").unwrap();
        for i in 0..MAX_APPS {
            assert!(region.register_app(&format!("/a{i}"), g).is_some(), "{i}");
        }
        assert_eq!(region.register_app("/one-more", g), None);
        assert!(region.register_app("/a7", g).is_some());
    }

    #[test]
    fn a_dead_process_slot_is_taken_over() {
        let _g = crate::testing::lock();
        let region = shm::create().unwrap();
        // A slot claimed by a pid that is not running (pid 0 has no /proc entry).
        let slot = &region.procs[std::process::id() as usize % MAX_PROCS];
        slot.state.store(READY, Ordering::Relaxed);
        slot.pid.store(0, Ordering::Relaxed);
        slot.active[3].store(9, Ordering::Relaxed);
        assert!(region.register_process(Role::Worker, None, 4));
        let mine = own_proc(region).unwrap();
        assert!(std::ptr::eq(mine, slot), "took over the dead one");
        assert_eq!(mine.active[3].load(Ordering::Relaxed), 0);
        assert!(proc_alive(mine));
        region.release_process();
        assert_eq!(slot.state.load(Ordering::Relaxed), FREE);
    }
}
