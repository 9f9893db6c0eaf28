//! This child's row of httpd's scoreboard: the state of each of its request threads, as the MPM
//! keeps it (read only).

use crate::ffi::*;

/// The status of every request-thread cell of this child (`SERVER_DEAD`, `SERVER_READY`, ...),
/// or None when the scoreboard cannot tell (no scoreboard, this process not in it).
pub(crate) fn thread_states() -> Option<impl Iterator<Item = u32>> {
    let servers = usize::try_from(mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS)).ok()?;
    let threads = usize::try_from(mpm_query(AP_MPMQ_HARD_LIMIT_THREADS)).ok()?;
    // SAFETY: plain getter.
    let me = unsafe { libc::getpid() };
    // SAFETY: ap_scoreboard_image is httpd's shared scoreboard, mapped in every child for its
    // whole life, with `servers` process rows and `servers` x `threads` worker cells (the MPM's
    // hard limits); we only read it, and the iterator reads each cell once, while this child
    // lives (it is used within one hook call).
    unsafe {
        let sb = ap_scoreboard_image;
        if sb.is_null() {
            return None;
        }
        let row = (0..servers).find(|&i| (*(*sb).parent.add(i)).pid == me)?;
        let cells = *(*sb).servers.add(row);
        Some((0..threads).map(move |j| u32::from((*cells.add(j)).status)))
    }
}
