//! This child's row of httpd's scoreboard: the state of each of its request threads, as the MPM
//! keeps it (read only).

use std::sync::OnceLock;

use crate::ffi::*;

/// The status of every request-thread cell of this child (`SERVER_DEAD`, `SERVER_READY`, ...),
/// or None when the scoreboard cannot tell (no scoreboard, this process not in it).
pub(crate) fn thread_states() -> Option<impl Iterator<Item = u32>> {
    let servers = usize::try_from(mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS)).ok()?;
    // ThreadsPerChild, not ThreadLimit: the MPM resets only those cells when a child stops, so
    // the ones above may still hold what a crashed child with more threads left there.
    let threads = usize::try_from(mpm_query(AP_MPMQ_MAX_THREADS)).ok()?;
    // This child's row never changes: found once (getpid is a system call, and the wait in
    // keepalive.rs asks after every response).
    static ROW: OnceLock<usize> = OnceLock::new();
    // SAFETY: ap_scoreboard_image is httpd's shared scoreboard, mapped in every child for its
    // whole life, with HARD_LIMIT_DAEMONS process rows of HARD_LIMIT_THREADS (>= MAX_THREADS)
    // worker cells; we only read it (volatile: other processes write it meanwhile), and the
    // iterator reads each cell once, while this child lives (it is used within one hook call).
    // getpid is a plain getter.
    unsafe {
        let sb = ap_scoreboard_image;
        if sb.is_null() {
            return None;
        }
        let row = match ROW.get() {
            Some(&row) => row,
            None => {
                let me = libc::getpid();
                let row = (0..servers).find(|&i| {
                    std::ptr::addr_of!((*(*sb).parent.add(i)).pid).read_volatile() == me
                })?;
                *ROW.get_or_init(|| row)
            }
        };
        let cells = *(*sb).servers.add(row);
        Some(
            (0..threads).map(move |j| {
                u32::from(std::ptr::addr_of!((*cells.add(j)).status).read_volatile())
            }),
        )
    }
}
