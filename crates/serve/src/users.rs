//! The user nginx's workers run as, and whether that user can read the app.
//!
//! Started as root, nginx runs its workers (and with them the embedded Python, or the daemon
//! group) as an unprivileged user. An app under /root, or a virtualenv in a 0700 home, is then
//! unreadable to them, and the symptom would be a 500 and a permission error in the log. We
//! check first, the only reliable way: a child process switches to that user and tries.

use std::ffi::CString;
use std::path::{Path, PathBuf};

/// A user's ids.
#[derive(Debug, Clone)]
pub struct Ids {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// Every group the user is in (nginx's worker calls initgroups, so these count).
    pub groups: Vec<libc::gid_t>,
}

/// True when this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Looks a user name up through NSS.
pub fn lookup(name: &str) -> Option<Ids> {
    let cname = CString::new(name).ok()?;
    // SAFETY: an all-zero passwd is a valid out-parameter for getpwnam_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: pw, buf (with its true length) and result are valid for the call; cname is
    // NUL-terminated.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    let mut groups = vec![0 as libc::gid_t; 256];
    let mut n = groups.len() as libc::c_int;
    // SAFETY: cname is NUL-terminated; groups has room for n entries, n is updated in place.
    if unsafe { libc::getgrouplist(cname.as_ptr(), pw.pw_gid, groups.as_mut_ptr(), &mut n) } < 0 {
        n = 0; // more than 256 groups: check with the primary group only
    }
    groups.truncate(n.max(0) as usize);
    if groups.is_empty() {
        groups.push(pw.pw_gid);
    }
    Some(Ids {
        uid: pw.pw_uid,
        gid: pw.pw_gid,
        groups,
    })
}

/// The first of `paths` that `user` cannot read (directories: list and enter), if any.
///
/// Must be called while the process has one thread (it forks and the child only makes system
/// calls before `_exit`).
pub fn first_unreadable(user: &str, paths: &[PathBuf]) -> Result<Option<PathBuf>, String> {
    let ids = lookup(user).ok_or_else(|| format!("no such user {user}"))?;
    let cpaths: Vec<CString> = paths
        .iter()
        .map(|p| CString::new(p.as_os_str().as_encoded_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| "a path contains a NUL byte".to_owned())?;
    let dirs: Vec<bool> = paths.iter().map(|p| p.is_dir()).collect();
    // SAFETY: fork in a single-threaded process (documented precondition); the child below calls
    // only async-signal-safe functions (setgroups, setgid, setuid, access, _exit) on data
    // prepared before the fork (the group list included: initgroups is not async-signal-safe).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: see above; every pointer is to memory the child inherited intact.
        unsafe { child_check(&ids, &cpaths, &dirs) }
    }
    let mut status = 0;
    // SAFETY: waiting for the child we just forked; status is a valid out-pointer.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
    }
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(None),
        Some(255) => Err(format!(
            "could not switch to user {user} to check file access"
        )),
        Some(n) => Ok(paths.get(n as usize - 1).cloned()),
        None => Err("the file access check died".to_owned()),
    }
}

/// The child of [`first_unreadable`]: drop to `ids`, test each path, exit with the 1-based
/// index of the first failure (0: all readable, 255: could not switch user).
///
/// # Safety
/// Only to be called in a freshly forked child of a single-threaded process; never returns.
unsafe fn child_check(ids: &Ids, paths: &[CString], dirs: &[bool]) -> ! {
    // SAFETY: plain system calls on values owned by this (child) process.
    unsafe {
        if libc::setgroups(ids.groups.len(), ids.groups.as_ptr()) != 0
            || libc::setgid(ids.gid) != 0
            || libc::setuid(ids.uid) != 0
        {
            libc::_exit(255);
        }
        for (i, (p, dir)) in paths.iter().zip(dirs).enumerate().take(254) {
            let mode = if *dir {
                libc::R_OK | libc::X_OK
            } else {
                libc::R_OK
            };
            if libc::access(p.as_ptr(), mode) != 0 {
                libc::_exit(i as libc::c_int + 1);
            }
        }
        libc::_exit(0)
    }
}

/// The sentence for an unreadable path.
pub fn unreadable_message(user: &str, path: &Path) -> String {
    format!(
        "nginx's workers run as {user}, and {user} cannot read {}: put the app where {user} can \
         read it (every parent directory needs o+x, e.g. /srv/myapp), or choose the user with \
         --user",
        path.display()
    )
}
