//! A web server module's daemon group, run by `rwsgi-worker`.
//!
//! nginx and httpd `dlopen()` our modules, so everything they fork runs Debian's
//! `libpython3.11.so`: compiled `-fPIC`, without profile-guided optimisation. `rwsgi-worker`
//! links the profile-optimised static interpreter that `/usr/bin/python3.11` is made of, and runs
//! the same Django or Flask request in about 10% fewer instructions (docs/building.md, "Which
//! libpython"). So the supervisor a module forks (`host.rs`) replaces itself with that program
//! when it can, and its workers, forked from it, run the better interpreter:
//!
//! - **Which program.** `rwsgi-worker` beside the module's own file (a build tree, or a custom
//!   install), else `/usr/bin/rwsgi-worker` (the package); or the one `RWSGI_WORKER_PROGRAM`
//!   names in the server's environment (`none`: never). Only a regular, executable file
//!   owned by root or by this process's user and writable by nobody else, and only one built
//!   from the same sources: it must carry this build's [`ABI`] string, looked for in the file.
//!   Anything else, and the group runs in the forked process as before (the start-up line says
//!   which interpreter runs the group).
//! - **What crosses `exec`.** Everything the forked supervisor would have used, and nothing
//!   through argv or the environment: the configuration (the group's secret included) as JSON in
//!   a memory file; the lifetime pipe, the inherited listening socket and the predecessor's pipe
//!   at the descriptors `run_forked` would put them; the metrics region's memory file; the
//!   server's error-line format for a failed start. The server's stdout/stderr (its error log),
//!   environment, process title (argv[0]) and `comm` name carry over, so the group looks and logs
//!   as before.
//! - **The other side** is [`run_if_handed_over`], `rwsgi-worker` with [`ENV`] set: it maps the region, takes the
//!   descriptors over and runs the same supervisor code (`run_inner`).

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::GroupConfig;

/// This build's name for what crosses `exec`: the crate version and a digest of the sources of
/// every crate a daemon group runs (supervisor/build.rs). The module and the program must agree.
pub const ABI: &str = concat!("rwsgi-hosted-abi/", env!("RWSGI_HOSTED_ABI"));

/// The packaged program, looked for after the module's own directory.
const PACKAGED: &str = "/usr/bin/rwsgi-worker";

/// In the server's environment: the program to use instead of looking for one, or `none` to
/// run every group in the server's forked process (docs/building.md).
pub const PROGRAM_ENV: &str = "RWSGI_WORKER_PROGRAM";

/// The environment variable that tells `rwsgi-worker` it was handed a group, and at which
/// descriptor (argv stays the server's process title: `ps` shows what it showed before).
pub const ENV: &str = "RWSGI_HOSTED_GROUP";

/// What the memory file holds.
#[derive(Serialize, Deserialize)]
struct Blob {
    abi: String,
    cfg: GroupConfig,
    /// The server's line for a failed start: `error_line(reason)` is `before + reason + after`.
    error_before: String,
    error_after: String,
    /// The forked process's `comm` (kept unless the group sets `display-name`).
    comm: String,
    /// Which descriptors follow the lifetime pipe (3), in this order.
    listener: bool,
    predecessor: bool,
    server: bool,
    metrics: bool,
}

/// Which handed-over descriptors follow the lifetime pipe (3), in this order (`host::Handoff`).
#[derive(Clone, Copy, Default)]
pub(crate) struct Layout {
    pub listener: bool,
    pub predecessor: bool,
    pub server: bool,
}

impl Layout {
    /// The first descriptor after them.
    fn end(self) -> RawFd {
        4 + self.listener as RawFd + self.predecessor as RawFd + self.server as RawFd
    }
}

/// A prepared `exec`: made in the forked child before its descriptors are moved.
pub(crate) struct Plan {
    /// The program, opened once: checked and executed through the same descriptor, so nobody
    /// can swap the file in between. Raw descriptors here and below: `keep_only` moves them,
    /// and nothing may close their old numbers afterwards.
    program: RawFd,
    program_name: PathBuf,
    /// The server's process title, as argv (what `ps` shows keeps showing).
    title: Vec<CString>,
    blob: RawFd,
    metrics: Option<RawFd>,
    layout: Layout,
}

impl Plan {
    /// The plan for group `cfg`, or `None` when no suitable program is found (the group then
    /// runs in this process). The server's error line is `before + reason + after`;
    /// `layout` says what the handoff holds.
    pub(crate) fn new(
        cfg: &GroupConfig,
        (before, after): (&str, &str),
        layout: Layout,
    ) -> Option<Plan> {
        let (program, program_name) = candidates()
            .into_iter()
            .find_map(|p| open_suitable(&p).map(|f| (f, p)))?;
        let region = ::metrics::region();
        let metrics = region.and_then(::metrics::shm::fd_of);
        if region.is_some() && metrics.is_none() {
            // A region this process cannot hand over (mapped by an older build that kept no
            // file): the group would lose its counters, so it stays here.
            return None;
        }
        let blob = Blob {
            abi: ABI.to_owned(),
            cfg: cfg.clone(),
            error_before: before.to_owned(),
            error_after: after.to_owned(),
            comm: std::fs::read_to_string("/proc/self/comm")
                .map(|c| c.trim_end().to_owned())
                .unwrap_or_default(),
            listener: layout.listener,
            predecessor: layout.predecessor,
            server: layout.server,
            metrics: metrics.is_some(),
        };
        let json = serde_json::to_vec(&blob).ok()?;
        let file = memory_file(&json)?;
        Some(Plan {
            program: program.into_raw_fd(),
            program_name,
            title: own_title(),
            blob: file.into_raw_fd(),
            metrics,
            layout,
        })
    }

    /// The descriptors to keep after the lifetime pipe and the handed-over ones ([`Layout`]):
    /// the memory file, the metrics region's file, the program (last).
    pub(crate) fn descriptors(&self) -> Vec<RawFd> {
        let mut fds = vec![self.blob];
        fds.extend(self.metrics);
        fds.push(self.program);
        fds
    }

    /// Replaces this process with the program, once `keep_only` has put the descriptors at 3,
    /// 4, ... (lifetime pipe, listener, predecessor, server, then [`Plan::descriptors`]).
    /// Returns only when `fexecve` fails, with the reason, having closed the plan's own
    /// descriptors.
    ///
    /// # Safety
    /// Single-threaded process; the descriptors are where the doc above says.
    pub(crate) unsafe fn exec(self) -> String {
        // The lifetime pipe, the handed-over ones, then the plan's own; the program's
        // descriptor is the last, and only it stays close-on-exec.
        let blob_fd = self.layout.end();
        let program = blob_fd + self.descriptors().len() as RawFd - 1;
        for fd in 3..=program {
            let flags = if fd == program { libc::FD_CLOEXEC } else { 0 };
            // SAFETY: descriptors this process owns (keep_only put them there); only their
            // close-on-exec flag changes.
            unsafe { libc::fcntl(fd, libc::F_SETFD, flags) };
        }
        let mut env: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| k != ENV)
            .filter_map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend(v.into_vec());
                CString::new(kv).ok()
            })
            .collect();
        env.extend(CString::new(format!("{ENV}={blob_fd}")).ok());
        let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        let mut argv: Vec<*const libc::c_char> = self.title.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        // SAFETY: an open executable file, and NULL-terminated argv and envp of NUL-terminated
        // strings, all alive for the call. (Its descriptor is close-on-exec: fine for an ELF
        // program, which the kernel has loaded before it closes the descriptor.)
        unsafe { libc::fexecve(program, argv.as_ptr(), envp.as_ptr()) };
        let err = std::io::Error::last_os_error();
        for fd in 3..blob_fd {
            // SAFETY: as above, back to close-on-exec for the in-process run.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        for fd in blob_fd..=program {
            // SAFETY: the plan's own descriptors (the memory file holds the secret), which the
            // in-process run does not use and its workers must not inherit.
            unsafe { libc::close(fd) };
        }
        format!("exec {}: {err}", self.program_name.display())
    }
}

/// Where to look for the program, in order: [`PROGRAM_ENV`] when the server's environment sets
/// it (`none`: nowhere), else beside the module, then the packaged one.
fn candidates() -> Vec<PathBuf> {
    match std::env::var_os(PROGRAM_ENV) {
        Some(v) if v == "none" => return Vec::new(),
        Some(v) if !v.is_empty() => return vec![PathBuf::from(v)],
        _ => {}
    }
    let mut list = Vec::new();
    if let Some(dir) = own_file().as_deref().and_then(Path::parent) {
        list.push(dir.join("rwsgi-worker"));
    }
    list.push(PathBuf::from(PACKAGED));
    list
}

/// The file this code was loaded from (the module's `.so`).
fn own_file() -> Option<PathBuf> {
    pyhost::mapped_file(own_file as *const () as usize)
}

/// The file at `path`, opened, if it is a regular executable file that only root or this
/// process's user can change, built from the same sources.
fn open_suitable(path: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: a FIFO put there would otherwise hold the open; it is no file anyway.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    // SAFETY: plain getter.
    let euid = unsafe { libc::geteuid() };
    let ok = meta.is_file()
        && meta.mode() & 0o111 != 0
        && meta.mode() & 0o022 == 0
        // Never set-user-ID or set-group-ID: the exec must not change who the group runs as.
        && meta.mode() & 0o6000 == 0
        && (meta.uid() == 0 || meta.uid() == euid)
        && carries_abi(&file, meta.len() as usize);
    ok.then_some(file)
}

/// Whether the file contains [`ABI`] (the program compares it again when it starts).
fn carries_abi(file: &std::fs::File, len: usize) -> bool {
    if len < ABI.len() {
        return false;
    }
    // SAFETY: a private read-only mapping of the whole file, checked, unmapped below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return false;
    }
    // SAFETY: memmem reads len bytes of the mapping and ABI.len() bytes of the string.
    let found = unsafe { libc::memmem(ptr, len, ABI.as_ptr().cast(), ABI.len()) };
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(ptr, len) };
    !found.is_null()
}

/// This process's command line as `ps` shows it (the title nginx's keeper set, or httpd's own
/// arguments), to be the program's argv.
fn own_title() -> Vec<CString> {
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    let args: Vec<CString> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .filter_map(|a| CString::new(a).ok())
        .collect();
    if args.is_empty() {
        vec![CString::from(c"rwsgi-worker")]
    } else {
        args
    }
}

/// A close-on-exec memory file holding `bytes`, read from the start.
fn memory_file(bytes: &[u8]) -> Option<OwnedFd> {
    // SAFETY: memfd_create takes a NUL-terminated name and flags; the result is checked.
    let fd = unsafe { libc::memfd_create(c"rwsgi-group".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a descriptor just created and owned by nobody else.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(bytes).ok()?;
    // SAFETY: lseek on our own file.
    if unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_SET) } != 0 {
        return None;
    }
    Some(file.into())
}

/// `rwsgi-worker` started with [`ENV`] set: takes the variable out of the environment (the
/// app never sees it) and runs the group a web server module's supervisor handed over (see the
/// module docs); `None` without the variable, else the process's exit code.
pub fn run_if_handed_over() -> Option<i32> {
    let value = std::env::var_os(ENV)?;
    // Single-threaded still (main's first step): nothing reads the environment concurrently.
    std::env::remove_var(ENV);
    let Some(fd) = value.to_str().and_then(|v| v.parse::<RawFd>().ok()) else {
        crate::rwlog!("RW014", "{ENV} is not a descriptor");
        return Some(2);
    };
    Some(run(fd))
}

fn run(fd: RawFd) -> i32 {
    // SAFETY: fcntl(F_GETFD) only inspects the descriptor table.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        crate::rwlog!("RW014", "{ENV}: descriptor {fd} is not open");
        return 2;
    }
    // SAFETY: the module's supervisor handed this descriptor over for this use (checked open).
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut json = Vec::new();
    let blob = match file
        .read_to_end(&mut json)
        .map(|_| serde_json::from_slice::<Blob>(&json))
    {
        Ok(Ok(blob)) if blob.abi == ABI => blob,
        _ => {
            crate::rwlog!(
                "RW014",
                "{ENV}: not a group handed over by a module of this build ({ABI})"
            );
            return 2;
        }
    };
    drop(file);
    let reason = match std::panic::catch_unwind(AssertUnwindSafe(|| take_over(&blob, fd))) {
        Ok(Ok(())) => return 0,
        Ok(Err(reason)) => reason,
        Err(_) => "internal error (panic) in the supervisor".to_owned(),
    };
    let _ = writeln!(
        std::io::stderr(),
        "{}{reason}{}",
        blob.error_before,
        blob.error_after
    );
    1
}

/// The supervisor's run, with the descriptors laid out by [`Plan::exec`] (`blob_fd` was the
/// memory file, already closed).
fn take_over(blob: &Blob, blob_fd: RawFd) -> Result<(), String> {
    if blob.cfg.display_name.is_none() && !blob.comm.is_empty() {
        crate::worker::set_process_name(&blob.comm);
    }
    let mut next = 4;
    let mut take = |present: bool| {
        present.then(|| {
            next += 1;
            next - 1
        })
    };
    let listener = take(blob.listener);
    let predecessor = take(blob.predecessor);
    let server = take(blob.server);
    debug_assert_eq!(next, blob_fd);
    if blob.metrics {
        // SAFETY: the descriptor after the memory file is the region's file (Plan::exec), ours.
        let region = unsafe { ::metrics::shm::attach_fd(blob_fd + 1) }
            .map_err(|e| format!("metrics region: {e}"))?;
        ::metrics::attach(region);
    }
    let inherited = crate::Inherited {
        listener: listener.map(|fd| {
            // SAFETY: the server's listening socket, handed over at this descriptor.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            crate::listener::Listener::adopt(fd, &blob.cfg.socket)
        }),
        // SAFETY: the predecessor's lifetime pipe, handed over at this descriptor.
        predecessor: predecessor.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
        // SAFETY: the server's pipe to the keeper, handed over at this descriptor.
        server: server.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
    };
    // SAFETY: fd 3 is the lifetime pipe's read end, open for the rest of this process (run_forked
    // put it there before the exec).
    let lifetime = unsafe { BorrowedFd::borrow_raw(3) };
    // The workers are forked, not exec'd: nothing the app runs needs the pipe.
    // SAFETY: only the flag of our own descriptor changes.
    unsafe { libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC) };
    crate::run_inner(&blob.cfg, Some(lifetime), inherited).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_abi_names_the_version_and_the_sources() {
        assert!(ABI.starts_with("rwsgi-hosted-abi/"));
        assert!(ABI.contains(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn a_program_of_another_build_is_not_used() {
        let dir = std::env::temp_dir().join(format!("rwsgi-hosted-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let other = dir.join("other");
        std::fs::write(&other, b"\x7fELF rwsgi-hosted-abi/0.0.0-0000").unwrap();
        std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert!(open_suitable(&other).is_none());
        let same = dir.join("same");
        std::fs::write(&same, format!("\x7fELF ... {ABI} ...")).unwrap();
        std::fs::set_permissions(&same, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert!(open_suitable(&same).is_some());
        // Writable by others: refused even with the right string.
        std::fs::set_permissions(&same, std::os::unix::fs::PermissionsExt::from_mode(0o757))
            .unwrap();
        assert!(open_suitable(&same).is_none());
        // Not executable.
        std::fs::set_permissions(&same, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        assert!(open_suitable(&same).is_none());
        // Set-user-ID or set-group-ID.
        for mode in [0o4755, 0o2755] {
            std::fs::set_permissions(&same, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap();
            assert!(open_suitable(&same).is_none(), "{mode:o}");
        }
        // A FIFO does not block the look.
        let fifo = dir.join("fifo");
        let name = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(fifo.as_os_str()))
            .unwrap();
        // SAFETY: a NUL-terminated path; the result is checked.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o755) }, 0);
        assert!(open_suitable(&fifo).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_blob_round_trips_the_configuration() {
        let mut cfg = GroupConfig::new(
            crate::config::SocketSpec::Unix("/run/g.sock".into()),
            "/srv/app.py".into(),
        );
        cfg.secret = Some(crate::Secret::generate().unwrap());
        cfg.env = vec![("A".into(), "b c".into())];
        cfg.request_timeout = Some(std::time::Duration::from_millis(1500));
        let blob = Blob {
            abi: ABI.into(),
            cfg: cfg.clone(),
            error_before: "x ".into(),
            error_after: String::new(),
            comm: "nginx".into(),
            listener: true,
            predecessor: false,
            server: true,
            metrics: true,
        };
        let back: Blob = serde_json::from_slice(&serde_json::to_vec(&blob).unwrap()).unwrap();
        assert_eq!(back.cfg, cfg);
    }
}
