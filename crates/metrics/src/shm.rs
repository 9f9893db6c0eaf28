//! A region in a shared mapping of a memory file (`memfd_create`): what nginx's master, Apache's
//! parent and a standalone rwsgi-worker supervisor create before they fork, so every child shares
//! it. The file's descriptor is kept (close-on-exec) so that a daemon group's supervisor that
//! `exec`s `rwsgi-worker` can be handed it and map the same memory ([`attach_fd`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use crate::layout::{Region, REGION_SIZE};

/// The regions this process mapped from memory files (their address), with the files.
static FILES: Mutex<Vec<(usize, OwnedFd)>> = Mutex::new(Vec::new());

/// Maps a fresh, zeroed region (shared with every process forked afterwards). The mapping is
/// never unmapped: forked children and the counters' readers may use it until they exit.
pub fn create() -> io::Result<&'static Region> {
    // SAFETY: memfd_create takes a NUL-terminated name and flags; the result is checked.
    let fd = unsafe {
        libc::memfd_create(
            c"rwsgi-metrics".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just created and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate on our own memory file; a fresh file reads as zeroes.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), REGION_SIZE as libc::off_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // The size is final: whoever holds a descriptor (a forked process, app code in it) can
    // write the counters, as through the mapping, but can never shrink the file under the
    // mappings, which would raise SIGBUS in every process that touches the region, the server's
    // master among them.
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on our own memory file; the result is checked.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let ptr = map(fd.as_raw_fd())?;
    // SAFETY: a page-aligned, zero-filled mapping of REGION_SIZE bytes that is never unmapped.
    let region = unsafe { Region::init_in(ptr) };
    keep(region, fd);
    Ok(region)
}

fn keep(region: &Region, fd: OwnedFd) {
    let mut files = FILES.lock().unwrap_or_else(|e| e.into_inner());
    files.push((region as *const Region as usize, fd));
}

/// The memory file behind `region`, when [`create`] or [`attach_fd`] mapped it in this process
/// (close-on-exec: whoever hands it on clears that on its copy).
pub fn fd_of(region: &Region) -> Option<RawFd> {
    let files = FILES.lock().unwrap_or_else(|e| e.into_inner());
    let addr = region as *const Region as usize;
    files
        .iter()
        .find(|(a, _)| *a == addr)
        .map(|(_, fd)| fd.as_raw_fd())
}

/// Notes `fd` as `region`'s memory file again: a server module that was unloaded and loaded
/// again (httpd's restart) finds its region where it kept it, but these notes were the old copy's.
///
/// # Safety
/// `fd` is the open memory file `region` is mapped from, and nothing else in this process will
/// close it.
pub unsafe fn known(region: &Region, fd: RawFd) {
    if fd_of(region).is_none() {
        // SAFETY: caller contract.
        keep(region, unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// Notes that this process moved `region`'s memory file to descriptor `fd` (a forked process
/// that laid its descriptors out with `dup2` and closed the others, the old number among them).
///
/// # Safety
/// `fd` is now `region`'s memory file, owned by nobody else in this process.
pub unsafe fn moved(region: &Region, fd: RawFd) {
    let mut files = FILES.lock().unwrap_or_else(|e| e.into_inner());
    let addr = region as *const Region as usize;
    if let Some(i) = files.iter().position(|(a, _)| *a == addr) {
        // Already closed by whoever moved it: closing the number again could close another file.
        std::mem::forget(files.remove(i).1);
    }
    // SAFETY: the caller moved the file to `fd`, which this entry now owns.
    files.push((addr, unsafe { OwnedFd::from_raw_fd(fd) }));
}

/// Forgets every memory file this process noted, without closing them: a forked process that
/// closed or moved its descriptors wholesale, whose noted numbers may now be other files.
pub fn forget_files() {
    let mut files = FILES.lock().unwrap_or_else(|e| e.into_inner());
    for (_, fd) in files.drain(..) {
        std::mem::forget(fd);
    }
}

/// Closes every memory file this process noted (the mappings stay): a process that only records
/// and hands the region to nobody (an nginx worker, an Apache child, a daemon supervisor that
/// mapped it), so that nothing its app code starts or does can reach the file.
pub fn close_files() {
    FILES.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Maps the region held by memory file `fd`, which a process that ran [`create`] handed over
/// across `exec` (the region is already initialised there), and closes the descriptor: the
/// mapping is all this process needs.
///
/// # Safety
/// `fd` is a memory file made by [`create`] in this server (so REGION_SIZE bytes holding an
/// initialised region), owned by this call.
pub unsafe fn attach_fd(fd: RawFd) -> io::Result<&'static Region> {
    // SAFETY: caller contract: the descriptor is ours to own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: fcntl only changes the descriptor's flags.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: all zero is a valid stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat fills st; the result is checked.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if (st.st_size as u64) < REGION_SIZE as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the metrics memory file is smaller than a region",
        ));
    }
    let ptr = map(fd.as_raw_fd())?;
    // SAFETY: REGION_SIZE bytes of an initialised region (caller contract); init_in keeps what it
    // finds (the same as after a reload) and the mapping is never unmapped.
    let region = unsafe { Region::init_in(ptr) };
    drop(fd);
    Ok(region)
}

fn map(fd: RawFd) -> io::Result<*mut u8> {
    // SAFETY: a shared mapping of the file's first REGION_SIZE bytes with no address hint; the
    // result is checked.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            REGION_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(ptr.cast())
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
    fn the_memory_file_maps_the_same_region_again() {
        let region = create().unwrap();
        let g = region.register_group("exec").unwrap();
        region.groups[g.0 as usize].respawns[0].fetch_add(3, Ordering::Relaxed);
        let fd = fd_of(region).expect("create keeps the file");
        // What a process that exec'd does with the descriptor it was handed (here a copy).
        // SAFETY: dup of our own open descriptor.
        let copy = unsafe { libc::dup(fd) };
        // SAFETY: the copy is a memory file made by create(), owned by the call.
        let again = unsafe { attach_fd(copy) }.unwrap();
        assert_ne!(
            again as *const Region, region as *const Region,
            "a second mapping"
        );
        assert_eq!(again.register_group("exec"), Some(g));
        again.groups[g.0 as usize].respawns[0].fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            region.groups[g.0 as usize].respawns[0].load(Ordering::Relaxed),
            4
        );
        assert_eq!(
            fd_of(again),
            None,
            "the handed-over file is closed once mapped"
        );
        // SAFETY: fcntl(F_GETFD) only inspects the table.
        assert!(unsafe { libc::fcntl(copy, libc::F_GETFD) } < 0);
    }

    #[test]
    fn the_file_cannot_be_shrunk_under_the_mappings() {
        let region = create().unwrap();
        let fd = fd_of(region).unwrap();
        // SAFETY: ftruncate on our own memory file: refused by the seal.
        assert_ne!(unsafe { libc::ftruncate(fd, 0) }, 0);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EPERM)
        );
        region.register_group("still-here").unwrap();
    }

    #[test]
    fn a_file_too_small_is_refused() {
        // SAFETY: memfd_create with a static name; checked.
        let fd = unsafe { libc::memfd_create(c"small".as_ptr(), 0) };
        assert!(fd >= 0);
        // SAFETY: our own fresh descriptor, owned by the call.
        assert!(unsafe { attach_fd(fd) }.is_err());
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
