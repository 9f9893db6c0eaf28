//! Users, groups and the privilege drop of a worker.
//!
//! The drop follows the order that avoids the classic mistakes (CVE-2014-0240, CVE-2014-8583):
//! setgid, then the supplementary groups (initgroups), then setuid, each result checked, and a
//! final check that the ids really changed. Any failure is fatal for that worker: it must never
//! serve requests with more privileges than configured.

use std::ffi::{CStr, CString};

/// A resolved user.
#[derive(Debug, Clone)]
pub struct User {
    /// Name, for initgroups.
    pub name: CString,
    /// Numeric id.
    pub uid: libc::uid_t,
    /// Primary group.
    pub gid: libc::gid_t,
}

/// A numeric id written with digits only (Rust's `parse` would also take a leading `+`).
fn numeric_id(name: &str) -> Option<u32> {
    if name.is_empty() || !name.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// Resolves a user name (or a numeric id) through NSS.
pub fn lookup_user(name: &str) -> Result<User, String> {
    let cname = CString::new(name).map_err(|_| format!("bad user name {name:?}"))?;
    // SAFETY: an all-zero passwd is a valid out-parameter for getpwnam_r/getpwuid_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = match numeric_id(name) {
        // SAFETY: pw, buf (with its true length) and result are valid for the call.
        Some(uid) => unsafe {
            libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result)
        },
        // SAFETY: as above; cname is NUL-terminated.
        None => unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pw,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        },
    };
    if rc != 0 || result.is_null() {
        return Err(format!("no such user {name:?}"));
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside buf, still alive here.
    let real_name = unsafe { CStr::from_ptr(pw.pw_name) }.to_owned();
    Ok(User {
        name: real_name,
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    })
}

/// Resolves a group name (or a numeric id).
pub fn lookup_group(name: &str) -> Result<libc::gid_t, String> {
    if let Some(gid) = numeric_id(name) {
        return Ok(gid);
    }
    let cname = CString::new(name).map_err(|_| format!("bad group name {name:?}"))?;
    // SAFETY: an all-zero group is a valid out-parameter for getgrnam_r.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: gr, buf (with its true length) and result are valid; cname is NUL-terminated.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut gr,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(format!("no such group {name:?}"));
    }
    Ok(gr.gr_gid)
}

/// The groups `initgroups(name, gid)` would give (getgrouplist(3)); empty if NSS fails.
fn supplementary_groups(name: &CStr, gid: libc::gid_t) -> Vec<libc::gid_t> {
    let mut count: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; count as usize];
        let asked = count;
        // SAFETY: groups holds `count` elements; name is NUL-terminated; getgrouplist writes at
        // most `count` ids and stores the number it needs in `count`.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return groups;
        }
        if count <= asked || count > 65_536 {
            return Vec::new();
        }
    }
}

/// The identity workers switch to.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user.
    pub user: User,
    /// The group (the user's primary group unless configured).
    pub gid: libc::gid_t,
}

impl Identity {
    /// Resolves the configured user/group; `Ok(None)` when no user is configured.
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<Identity>, String> {
        let Some(user) = user else { return Ok(None) };
        let user = lookup_user(user)?;
        if user.uid == 0 {
            return Err("refusing to run workers as root (uid 0)".into());
        }
        let gid = match group {
            Some(g) => lookup_group(g)?,
            None => user.gid,
        };
        // The options already refuse gid 0 by any spelling; this also catches a user whose
        // primary group is root's, and a membership in it that initgroups would add.
        if gid == 0 {
            return Err(format!(
                "refusing to run workers with gid 0 (root's group){}",
                if group.is_none() {
                    format!(": it is the primary group of {:?}; set group=", user.name)
                } else {
                    String::new()
                }
            ));
        }
        if supplementary_groups(&user.name, gid).contains(&0) {
            return Err(format!(
                "refusing to run workers as {:?}: it is a member of root's group (gid 0)",
                user.name
            ));
        }
        Ok(Some(Identity { user, gid }))
    }

    /// Switches the calling (single-threaded, freshly forked) process to this identity.
    pub fn apply(&self) -> Result<(), String> {
        // SAFETY: plain syscalls with integer arguments.
        if unsafe { libc::setgid(self.gid) } != 0 {
            return Err(format!(
                "setgid({}): {}",
                self.gid,
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: name is NUL-terminated; initgroups reads it only during the call.
        if unsafe { libc::initgroups(self.user.name.as_ptr(), self.gid) } != 0 {
            return Err(format!("initgroups: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: plain syscall.
        if unsafe { libc::setuid(self.user.uid) } != 0 {
            return Err(format!(
                "setuid({}): {}",
                self.user.uid,
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: plain getters without arguments.
        let (uid, euid, gid, egid) = unsafe {
            (
                libc::getuid(),
                libc::geteuid(),
                libc::getgid(),
                libc::getegid(),
            )
        };
        if uid != self.user.uid || euid != self.user.uid || gid != self.gid || egid != self.gid {
            return Err("the uid/gid did not change as asked".into());
        }
        // SAFETY: a null list with size 0 only asks for the count; then a buffer of that size.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        let mut groups = vec![0 as libc::gid_t; n.max(0) as usize];
        // SAFETY: groups has room for n ids.
        let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
        if n < 0 || groups[..n as usize].contains(&0) {
            return Err("the process still belongs to gid 0 (root's group)".into());
        }
        Ok(())
    }
}
