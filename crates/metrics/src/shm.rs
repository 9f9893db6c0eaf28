//! A region in an anonymous shared mapping: what Apache's parent and a standalone rwsgi-worker
//! supervisor create before they fork, so every child shares it. (nginx places the region in a
//! shared zone of its own instead: [`Region::init_in`].)

use std::io;

use crate::layout::{Region, REGION_SIZE};

/// Maps a fresh, zeroed region (shared with every process forked afterwards). The mapping is
/// never unmapped: forked children and the counters' readers may use it until they exit.
pub fn create() -> io::Result<&'static Region> {
    // SAFETY: an anonymous shared mapping with no address hint; the result is checked.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            REGION_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a page-aligned, zero-filled mapping of REGION_SIZE bytes that is never unmapped.
    Ok(unsafe { Region::init_in(ptr.cast()) })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn a_forked_child_writes_what_the_parent_reads() {
        let region = create().unwrap();
        let g = region.register_group("g").unwrap();
        // SAFETY: the child only touches the mapping and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            region.groups[g.0 as usize].respawns[1].fetch_add(5, Ordering::Relaxed);
            // SAFETY: leave without running the test harness in the child.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(
            region.groups[g.0 as usize].respawns[1].load(Ordering::Relaxed),
            5
        );
    }

    #[test]
    fn known_memory_is_kept() {
        let region = create().unwrap();
        let g = region.register_group("kept").unwrap();
        let start = region.start_time();
        let ptr = (region as *const Region).cast_mut().cast::<u8>();
        // SAFETY: the same memory, seen again as after a reload.
        let again = unsafe { Region::init_in(ptr) };
        assert_eq!(again.register_group("kept"), Some(g));
        assert_eq!(again.start_time(), start);
    }
}
