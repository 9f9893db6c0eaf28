//! Daemon mode, parent side: `WSGIDaemonProcess` groups are started by the Apache parent in
//! `post_config`, one supervisor process per group (crates/supervisor), and the handler in the
//! children forwards requests to them over uwsgi (see `daemon.rs`).
//!
//! Lifecycle, as mod_wsgi does it with httpd's "other child" registration:
//! - The supervisor is forked from the (single-threaded) parent by
//!   `supervisor::fork_supervisor`, with the read end of a pipe whose write end only the parent
//!   holds, in a pool cleanup of pconf. `apachectl stop`, `graceful` and `restart` all clear
//!   pconf: the pipe closes, the old group stops accepting, finishes its in-flight requests
//!   (graceful-timeout) and exits; the next generation starts fresh groups.
//! - Each generation's groups listen on their own socket path (prefix.PID.GEN.N.sock, like
//!   mod_wsgi), so a new group never has to wait for the draining one to let go of the path.
//! - A supervisor that dies is respawned by the parent (APR_OC_REASON_DEATH).
//!
//! A group serves the scripts of the aliases routed to it, each mounted at its alias URL (the
//! workers preload them all and pick one per request by SCRIPT_NAME); two different scripts at
//! the same URL in one group are refused at `apachectl -t` time.

use std::collections::HashSet;
use std::ffi::{c_int, c_void};
use std::os::fd::IntoRawFd;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use pyhost::PythonConfig;
use supervisor::{AppConfig, GroupConfig, ServerDefaults, SocketSpec, WorkerAccount};

use crate::conf::{DaemonGroup, DirConf, ProcessGroup, ServerConf};
use crate::ffi::*;
use crate::log::log_server;
use crate::{module_ptr, server_conf};

/// What a child needs to reach a group: set by the parent in post_config before the children
/// fork, so every child of this generation inherits it.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub name: String,
    pub socket: SocketSpec,
    /// Every script the group serves (a request for another script is refused).
    pub scripts: Vec<PathBuf>,
    /// How long a request waits for the group's socket to accept (a restarting group).
    pub connect_wait: Duration,
    /// Sent as `RWSGI_SECRET` in every packet: the group's workers refuse packets without it.
    pub secret: Option<supervisor::Secret>,
}

static ROUTES: RwLock<Vec<Arc<Route>>> = RwLock::new(Vec::new());

pub(crate) fn route(name: &str) -> Option<Arc<Route>> {
    ROUTES
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|r| r.name == name)
        .cloned()
}

/// The servers of this configuration: main server first, then the virtual hosts.
///
/// # Safety
/// `s` must be the live main server_rec.
unsafe fn servers<'a>(s: *mut server_rec) -> Vec<(*mut server_rec, &'a ServerConf)> {
    let mut out = Vec::new();
    let mut server = s;
    while !server.is_null() {
        // SAFETY: the vhost list is live for this configuration pass.
        if let Some(conf) = unsafe { server_conf(server) } {
            out.push((server, conf));
        }
        // SAFETY: as above.
        server = unsafe { (*server).next };
    }
    out
}

/// Server-level (outside any section) per-directory settings of `s`.
///
/// # Safety
/// `s` must be a live server_rec.
unsafe fn server_dir_conf<'a>(s: *mut server_rec) -> Option<&'a DirConf> {
    // SAFETY: lookup_defaults holds every module's server-level per-dir config.
    unsafe {
        ap_get_module_config((*s).lookup_defaults, module_ptr())
            .cast::<DirConf>()
            .as_ref()
    }
}

/// The scripts group `name` serves, each at the URL of its alias (the worker picks the app
/// whose mount equals the SCRIPT_NAME we send): aliases that name the group with process-group=,
/// and aliases without it in servers whose server-level WSGIProcessGroup is this group (with a
/// single group and no such alias: every alias without process-group=, since a
/// `WSGIProcessGroup` inside `<Directory>`/`<Location>` cannot be read here). A
/// `WSGIImportScript` for the group adds its script as the default app if the group has none.
///
/// # Safety
/// `s` must be the live main server_rec.
unsafe fn resolve_apps(
    s: *mut server_rec,
    name: &str,
    single_group: bool,
) -> Result<Vec<AppConfig>, String> {
    let wanted = ProcessGroup::Daemon(name.to_owned());
    let (mut routed, mut fallback, mut imports) = (Vec::new(), Vec::new(), Vec::new());
    // SAFETY: caller contract.
    let main_dir = unsafe { server_dir_conf(s) }.cloned().unwrap_or_default();
    // SAFETY: caller contract.
    for (server, conf) in unsafe { servers(s) } {
        // SAFETY: server comes from the live list.
        let own = unsafe { server_dir_conf(server) }
            .cloned()
            .unwrap_or_default();
        let dir = DirConf::merge(&main_dir, &own);
        for alias in &conf.aliases {
            let url = alias.url.trim_end_matches('/');
            let app = AppConfig::script(
                alias.script.clone(),
                dir.with_alias(alias).callable_name(),
                (!url.is_empty()).then(|| url.to_owned()),
            );
            match &alias.options.process_group {
                Some(g) if *g == wanted => routed.push(app),
                None if dir.process_group.as_ref() == Some(&wanted) => routed.push(app),
                None => fallback.push(app),
                _ => {}
            }
        }
        for import in conf.imports.iter().filter(|i| i.process_group == wanted) {
            imports.push(AppConfig::script(
                import.script.clone(),
                dir.callable_name(),
                None,
            ));
        }
    }
    let mut apps: Vec<AppConfig> = Vec::new();
    let chosen = if routed.is_empty() && single_group {
        fallback
    } else {
        routed
    };
    for app in chosen {
        if apps.contains(&app) {
            continue;
        }
        if let Some(other) = apps.iter().find(|o| o.mount == app.mount) {
            return Err(format!(
                "WSGIDaemonProcess {name}: {} and {} are both mounted at {} in this group; use one \
                 WSGIDaemonProcess per script for the same URL",
                other.source,
                app.source,
                app.mount.as_deref().unwrap_or("/")
            ));
        }
        apps.push(app);
    }
    for import in imports {
        if !apps.iter().any(|a| a.source == import.source)
            && !apps.iter().any(|a| a.mount.is_none())
        {
            apps.push(import);
        }
    }
    if apps.is_empty() {
        return Err(format!(
            "WSGIDaemonProcess {name}: no WSGIScriptAlias routes to this group; add process-group={name} \
             to the WSGIScriptAlias line (or WSGIProcessGroup {name} at server level)"
        ));
    }
    Ok(apps)
}

/// Checks the whole configuration (all servers): daemon group names are unique, every
/// `process-group=` names a declared group, each group serves one script, and mod_wsgi is not
/// loaded beside us (both modules claim the same directive names).
///
/// # Safety
/// `s` must be the live main server_rec (the head of the virtual host list).
pub(crate) unsafe fn validate(s: *mut server_rec) -> Result<(), String> {
    // SAFETY: ap_find_linked_module reads httpd's module list by name.
    if !unsafe { ap_find_linked_module(c"mod_wsgi.c".as_ptr()) }.is_null() {
        return Err("mod_rwsgi and mod_wsgi cannot be loaded into the same server; remove one LoadModule line".into());
    }
    // SAFETY: caller contract.
    let all = unsafe { servers(s) };
    let groups: Vec<&DaemonGroup> = all.iter().flat_map(|(_, c)| c.daemons.iter()).collect();
    let mut names = HashSet::new();
    for group in &groups {
        if !names.insert(group.name.as_str()) {
            return Err(format!(
                "WSGIDaemonProcess: the group name '{}' is defined more than once",
                group.name
            ));
        }
    }
    let mut referenced: Vec<&ProcessGroup> = Vec::new();
    for (server, conf) in &all {
        referenced.extend(
            conf.aliases
                .iter()
                .filter_map(|a| a.options.process_group.as_ref()),
        );
        referenced.extend(conf.imports.iter().map(|i| &i.process_group));
        // SAFETY: server comes from the live list.
        if let Some(g) = unsafe { server_dir_conf(*server) }.and_then(|d| d.process_group.as_ref())
        {
            referenced.push(g);
        }
    }
    for group in referenced {
        if let ProcessGroup::Daemon(name) = group {
            if !names.contains(name.as_str()) {
                return Err(format!(
                    "process-group={name}: no WSGIDaemonProcess group of that name is defined"
                ));
            }
        }
    }
    for group in &groups {
        // SAFETY: caller contract.
        unsafe { resolve_apps(s, &group.name, groups.len() == 1) }?;
    }
    Ok(())
}

/// The user Apache's children run as (`User`), when the parent is root and can switch to it.
fn apache_user() -> Option<(String, String)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    // SAFETY: ap_unixd_config is filled by mod_unixd while reading the config; read-only here.
    let (name, gid) = unsafe {
        (
            cstr_bytes(ap_unixd_config.user_name),
            ap_unixd_config.group_id,
        )
    };
    let user = String::from_utf8(name.to_vec())
        .ok()
        .filter(|u| !u.is_empty() && u != "root")?;
    // SAFETY: getgrgid returns NULL or a pointer into static storage, copied at once; the parent
    // is single-threaded here.
    let group = unsafe {
        let g = libc::getgrgid(gid);
        if g.is_null() {
            return Some((user.clone(), user));
        }
        String::from_utf8_lossy(cstr_bytes((*g).gr_name)).into_owned()
    };
    Some((user, group))
}

/// Builds the supervisor's config for one group of this generation.
fn group_config(
    group: &DaemonGroup,
    main: &ServerConf,
    apps: Vec<AppConfig>,
    default_socket: PathBuf,
    timeout: Duration,
) -> GroupConfig {
    // httpd's facts; the rules are the supervisor crate's, the same for both servers: as
    // mod_wsgi, without user= the daemons run as Apache's User (and Group, unless group= says
    // otherwise); a parent that is not root cannot switch, so group= alone is moot then.
    let server = ServerDefaults {
        python: PythonConfig {
            python_home: main.python_home.clone(),
            python_path: main.python_path.clone(),
        },
        worker: apache_user().map(|(user, group)| WorkerAccount {
            user,
            group: Some(group),
        }),
        socket_timeout: Some(timeout),
        display_name_prefix: None,
    };
    server.group_config(
        &group.name,
        &group.options,
        SocketSpec::Unix(default_socket),
        apps,
    )
}

/// One running group, owned by pconf: dropping it (pool cleanup) closes the lifetime pipe.
struct Daemon {
    cfg: GroupConfig,
    name: String,
    proc_: apr_proc_t,
    lifetime_w: c_int,
    started: Instant,
    quick_deaths: u32,
    pool: *mut apr_pool_t,
    process_pool: *mut apr_pool_t,
    server: *mut server_rec,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.lifetime_w < 0 {
            return;
        }
        // On a restart the old group keeps serving until the next generation's group listens
        // (start_groups closes the retired pipes then); on exit it stops now.
        // SAFETY: ap_state_query only reads httpd's state; process_pool outlives pconf.
        let exiting =
            unsafe { ap_state_query(AP_SQ_MAIN_STATE as c_int) } == AP_SQ_MS_EXITING as c_int;
        // SAFETY: as above.
        if exiting || !unsafe { retire(self.process_pool, self.lifetime_w) } {
            // SAFETY: our own pipe fd, closed exactly once.
            unsafe { libc::close(self.lifetime_w) };
        }
    }
}

/// Lifetime pipes of the previous generation's groups, kept open across a restart. Plain data
/// in the process pool (no cleanup: this DSO is unloaded before that pool is destroyed).
#[repr(C)]
struct Retiring {
    count: u32,
    fds: [c_int; 64],
}

/// # Safety
/// `process_pool` must be httpd's process pool.
unsafe fn retiring(process_pool: *mut apr_pool_t) -> *mut Retiring {
    let key = c"mod_rwsgi.retiring";
    let mut data: *mut c_void = std::ptr::null_mut();
    // SAFETY: userdata lookup/creation on the live process pool; Retiring is plain data,
    // zero-initialised (count 0).
    unsafe {
        apr_pool_userdata_get(&mut data, key.as_ptr(), process_pool);
        if data.is_null() {
            // apr_pcalloc is a macro; palloc + write.
            let fresh =
                apr_palloc(process_pool, std::mem::size_of::<Retiring>()).cast::<Retiring>();
            fresh.write(Retiring {
                count: 0,
                fds: [-1; 64],
            });
            data = fresh.cast();
            apr_pool_userdata_set(
                data,
                key.as_ptr(),
                Some(apr_pool_cleanup_null),
                process_pool,
            );
        }
    }
    data.cast()
}

/// Keeps `fd` open for the next generation to close; false if there is no room.
///
/// # Safety
/// `process_pool` must be httpd's process pool; single-threaded parent.
unsafe fn retire(process_pool: *mut apr_pool_t, fd: c_int) -> bool {
    // SAFETY: caller contract; the parent is single-threaded.
    let list = unsafe { &mut *retiring(process_pool) };
    match list.fds.get_mut(list.count as usize) {
        Some(slot) => {
            *slot = fd;
            list.count += 1;
            true
        }
        None => false,
    }
}

/// Waits (briefly) until this generation's sockets exist, then closes the previous
/// generation's lifetime pipes: its groups stop accepting, finish their in-flight requests and
/// exit, while children reach the new groups through the stable links.
///
/// # Safety
/// `process_pool` must be httpd's process pool; single-threaded parent.
unsafe fn retire_previous(process_pool: *mut apr_pool_t, new_sockets: &[PathBuf]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !new_sockets.iter().all(|p| p.exists()) {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let the old groups take what is already queued on their sockets.
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: caller contract.
    let list = unsafe { &mut *retiring(process_pool) };
    for fd in &list.fds[..list.count as usize] {
        // SAFETY: fds retired by Daemon::drop, still open, closed once here.
        unsafe { libc::close(*fd) };
    }
    list.count = 0;
}

/// The secret of group `name`: made the first time the parent starts the group and kept in the
/// process pool (which survives restarts; our statics may not), so that children of the
/// previous generation, still finishing requests through the group's stable link, send what the
/// new group's workers check. `None` if the system has no random bytes to give (the group then
/// runs without one).
///
/// # Safety
/// `process_pool` must be httpd's process pool; single-threaded parent.
unsafe fn group_secret(process_pool: *mut apr_pool_t, name: &str) -> Option<supervisor::Secret> {
    let key = std::ffi::CString::new(format!("mod_rwsgi.secret.{name}")).ok()?;
    let mut data: *mut c_void = std::ptr::null_mut();
    // SAFETY: userdata lookup on the live process pool; what we stored there is a pool string.
    unsafe { apr_pool_userdata_get(&mut data, key.as_ptr(), process_pool) };
    if !data.is_null() {
        // SAFETY: set below as a NUL-terminated pool string that lives as long as the pool.
        let stored = unsafe { cstr_bytes(data.cast()) };
        return supervisor::Secret::new(stored.to_vec()).ok();
    }
    let secret = supervisor::Secret::generate().ok()?;
    // SAFETY: the copy lives in the process pool; apr_pool_userdata_set copies the key.
    unsafe {
        let value = pool_str(process_pool, secret.as_bytes());
        apr_pool_userdata_set(
            value.cast(),
            key.as_ptr(),
            Some(apr_pool_cleanup_null),
            process_pool,
        );
    }
    Some(secret)
}

/// Generation counter kept in the process pool (which survives restarts; our statics may not).
///
/// # Safety
/// `process_pool` must be httpd's process pool.
unsafe fn next_generation(process_pool: *mut apr_pool_t) -> u32 {
    let key = c"mod_rwsgi.generation";
    let mut data: *mut c_void = std::ptr::null_mut();
    // SAFETY: userdata lookup/creation on the live process pool; the counter is a pool-owned u32.
    unsafe {
        apr_pool_userdata_get(&mut data, key.as_ptr(), process_pool);
        let counter = if data.is_null() {
            let fresh = apr_palloc(process_pool, std::mem::size_of::<u32>()).cast::<u32>();
            fresh.write(0);
            apr_pool_userdata_set(
                fresh.cast(),
                key.as_ptr(),
                Some(apr_pool_cleanup_null),
                process_pool,
            );
            fresh
        } else {
            data.cast::<u32>()
        };
        *counter += 1;
        *counter
    }
}

/// The `post_config` hook: announces the module in SERVER_SOFTWARE and starts this
/// generation's daemon groups.
///
/// # Safety
/// Called by httpd in the single-threaded parent with its live configuration pool and the main
/// server_rec.
pub(crate) unsafe extern "C" fn post_config(
    pconf: *mut apr_pool_t,
    _plog: *mut apr_pool_t,
    _ptemp: *mut apr_pool_t,
    s: *mut server_rec,
) -> c_int {
    // "mod_rwsgi/x.y.z" in SERVER_SOFTWARE (and Server: under ServerTokens Full), as mod_wsgi
    // announces itself.
    let token = concat!("mod_rwsgi/", env!("CARGO_PKG_VERSION"), "\0");
    // SAFETY: pconf is live for this generation; httpd copies the component string.
    unsafe { ap_add_version_component(pconf, token.as_ptr().cast()) };
    // SAFETY: httpd passes the live main server and pconf.
    match std::panic::catch_unwind(|| unsafe { start_groups(pconf, s) }) {
        Ok(Ok(())) => OK_,
        Ok(Err(message)) => {
            // SAFETY: s is live.
            unsafe { log_server(s, APLOG_ERR | APLOG_STARTUP, &message) };
            HTTP_INTERNAL_SERVER_ERROR as c_int
        }
        Err(_) => HTTP_INTERNAL_SERVER_ERROR as c_int,
    }
}

/// Starts this generation's groups: for each, its config (checked), the socket the children use
/// and the supervisor process; then publishes the routes and lets the previous generation go.
///
/// # Safety
/// `pconf`/`s` as httpd passes them to post_config, in the single-threaded parent.
unsafe fn start_groups(pconf: *mut apr_pool_t, s: *mut server_rec) -> Result<(), String> {
    // SAFETY: caller contract.
    let process_pool = unsafe { (*(*s).process).pool };
    // httpd runs post_config once for the throw-away first configuration pass at start-up;
    // mod_wsgi starts its daemons only from the second call on, and so do we.
    // SAFETY: as above.
    let generation = unsafe { next_generation(process_pool) };
    if generation == 1 {
        ROUTES.write().unwrap_or_else(|e| e.into_inner()).clear();
        return Ok(());
    }
    // SAFETY: caller contract.
    let all = unsafe { servers(s) };
    let Some((_, main)) = all.first() else {
        return Ok(());
    };
    let groups: Vec<&DaemonGroup> = all.iter().flat_map(|(_, c)| c.daemons.iter()).collect();
    // SAFETY: caller contract; server timeout is in microseconds.
    let timeout =
        Duration::from_micros(u64::try_from(unsafe { (*s).timeout }).unwrap_or(60_000_000));
    // SAFETY: caller contract.
    let prefix = unsafe { socket_prefix(pconf, main) };
    let mut routes = Vec::new();
    let mut new_sockets = Vec::new();
    for (n, group) in groups.iter().enumerate() {
        // SAFETY: caller contract.
        let apps = unsafe { resolve_apps(s, &group.name, groups.len() == 1) }?;
        let socket = PathBuf::from(format!(
            "{}.{}.{}.{}.sock",
            prefix.display(),
            std::process::id(),
            generation,
            n
        ));
        let mut cfg = group_config(group, main, apps, socket, timeout);
        // SAFETY: caller contract.
        cfg.secret = unsafe { group_secret(process_pool, &group.name) };
        if cfg.secret.is_none() {
            let message = format!(
                "RW-AP050 WSGIDaemonProcess {}: no random bytes for its secret; it runs without one",
                group.name
            );
            // SAFETY: s is live (caller contract).
            unsafe { log_server(s, APLOG_ERR, &message) };
        }
        cfg.validate().map_err(|e| {
            let hint = if e.option == "socket" {
                " (set WSGISocketPrefix to a shorter directory)"
            } else {
                ""
            };
            format!("WSGIDaemonProcess {}: {e}{hint}", group.name)
        })?;
        if let SocketSpec::Unix(path) = &cfg.socket {
            new_sockets.push(path.clone());
        }
        // SAFETY: caller contract.
        let socket_for_children = unsafe { socket_for_children(pconf, s, &prefix, group, &cfg) };
        routes.push(Arc::new(Route {
            name: group.name.clone(),
            socket: socket_for_children,
            scripts: cfg
                .apps
                .iter()
                .filter_map(|a| a.script_path().map(PathBuf::from))
                .collect(),
            connect_wait: cfg.queue_timeout.unwrap_or(timeout),
            secret: cfg.secret.clone(),
        }));
        // SAFETY: caller contract.
        unsafe { start_daemon(pconf, process_pool, s, group, cfg) }?;
    }
    *ROUTES.write().unwrap_or_else(|e| e.into_inner()) = routes;
    // SAFETY: caller contract.
    unsafe { retire_previous(process_pool, &new_sockets) };
    Ok(())
}

/// The directory and file-name start of this server's group sockets: `WSGISocketPrefix`
/// (relative to ServerRoot), else `<runtime dir>/rwsgi`.
///
/// # Safety
/// `pconf` must be live.
unsafe fn socket_prefix(pconf: *mut apr_pool_t, main: &ServerConf) -> PathBuf {
    match &main.socket_prefix {
        // SAFETY: pconf is live; the result is a pool string.
        Some(p) => PathBuf::from(
            String::from_utf8_lossy(unsafe {
                cstr_bytes(ap_server_root_relative(
                    pconf,
                    pool_str(pconf, p.as_os_str().as_encoded_bytes()),
                ))
            })
            .into_owned(),
        ),
        // SAFETY: as above.
        None => PathBuf::from(
            String::from_utf8_lossy(unsafe {
                cstr_bytes(ap_runtime_dir_relative(pconf, c"rwsgi".as_ptr()))
            })
            .into_owned(),
        ),
    }
}

/// The socket the children connect to for `group`.
///
/// Children connect through a per-group link that outlives generations, so that a child of the
/// old generation still finishing keep-alive requests after a graceful restart reaches the new
/// group instead of the old one, which has stopped accepting.
///
/// # Safety
/// `pconf` and `s` (the main server) must be live; call in the single-threaded parent.
unsafe fn socket_for_children(
    pconf: *mut apr_pool_t,
    s: *mut server_rec,
    prefix: &std::path::Path,
    group: &DaemonGroup,
    cfg: &GroupConfig,
) -> SocketSpec {
    match (&group.options.socket, &cfg.socket) {
        (None, SocketSpec::Unix(path)) => {
            let link = PathBuf::from(format!(
                "{}.{}.{}.sock",
                prefix.display(),
                std::process::id(),
                link_name(&group.name)
            ));
            // SAFETY: pconf is live; the parent is single-threaded here.
            match unsafe { point_link(pconf, &link, path) } {
                Ok(()) => SocketSpec::Unix(link),
                Err(e) => {
                    let message = format!(
                        "RW-AP024 WSGIDaemonProcess {}: {e}; connecting directly",
                        group.name
                    );
                    // SAFETY: s is live.
                    unsafe { log_server(s, APLOG_WARNING, &message) };
                    cfg.socket.clone()
                }
            }
        }
        _ => cfg.socket.clone(),
    }
}

/// Starts the supervisor of one group, owned by pconf (see [`Daemon`]).
///
/// # Safety
/// `pconf`, `process_pool` and `s` as in [`start_groups`]; single-threaded parent.
unsafe fn start_daemon(
    pconf: *mut apr_pool_t,
    process_pool: *mut apr_pool_t,
    s: *mut server_rec,
    group: &DaemonGroup,
    cfg: GroupConfig,
) -> Result<(), String> {
    // SAFETY: pconf owns the Daemon; the parent is single-threaded here.
    unsafe {
        let daemon = pool_box(
            pconf,
            Daemon {
                cfg,
                name: group.name.clone(),
                proc_: std::mem::zeroed(),
                lifetime_w: -1,
                started: Instant::now(),
                quick_deaths: 0,
                pool: pconf,
                process_pool,
                server: s,
            },
        );
        spawn(daemon)
    }
}

/// A file-name-safe form of a group name, for its stable socket link.
fn link_name(group: &str) -> String {
    group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The stable link of one group; removed when the server exits (not on a restart, when the next
/// generation re-points it at once).
struct StableLink(PathBuf);

impl Drop for StableLink {
    fn drop(&mut self) {
        // SAFETY: ap_state_query only reads httpd's global state.
        if unsafe { ap_state_query(AP_SQ_MAIN_STATE as c_int) } == AP_SQ_MS_EXITING as c_int {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Atomically (re)points `link` at this generation's socket `target` (symlink + rename).
///
/// # Safety
/// `pconf` must be live; call in the single-threaded parent.
unsafe fn point_link(
    pconf: *mut apr_pool_t,
    link: &std::path::Path,
    target: &std::path::Path,
) -> Result<(), String> {
    if link.as_os_str().len() > supervisor::config::MAX_UNIX_PATH {
        return Err(format!(
            "socket link {} is longer than a unix socket path may be",
            link.display()
        ));
    }
    let tmp = link.with_extension("sock.new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .map_err(|e| format!("symlink {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, link).map_err(|e| format!("rename {}: {e}", link.display()))?;
    // SAFETY: caller contract; the StableLink lives in pconf and only removes the link at exit.
    unsafe { pool_box(pconf, StableLink(link.to_owned())) };
    Ok(())
}

/// Forks the group's supervisor and registers it as an httpd "other child".
///
/// # Safety
/// `d` must point to a live, pool-owned Daemon; call only in the single-threaded parent.
unsafe fn spawn(d: *mut Daemon) -> Result<(), String> {
    // SAFETY: caller contract.
    let d = unsafe { &mut *d };
    // SAFETY: the parent is single-threaded (post_config / MPM maintenance). Nothing is done in
    // the child before the group starts: it keeps httpd's stderr, the error log.
    let forked = unsafe {
        supervisor::fork_supervisor(
            &d.cfg,
            || {},
            |e| format!("[error] mod_rwsgi: RW-AP021 daemon group could not start: {e}"),
        )
    }
    .map_err(|e| format!("WSGIDaemonProcess {}: {e}", d.name))?;
    let pid = forked.pid;
    if d.lifetime_w >= 0 {
        // SAFETY: the previous supervisor's pipe (respawn); closing it is harmless.
        unsafe { libc::close(d.lifetime_w) };
    }
    d.lifetime_w = forked.lifetime.into_raw_fd();
    d.started = Instant::now();
    d.proc_.pid = pid;
    // SAFETY: proc_ and d live in pconf; APR unregisters the entry when pconf is cleared.
    unsafe {
        apr_proc_other_child_register(
            &mut d.proc_,
            Some(on_child_event),
            (d as *mut Daemon).cast(),
            std::ptr::null_mut(),
            d.pool,
        )
    };
    let message = format!(
        "RW-AP020 WSGIDaemonProcess {} started (pid {pid}, {})",
        d.name, d.cfg.socket
    );
    // SAFETY: d.server is the live main server.
    unsafe { log_server(d.server, APLOG_INFO, &message) };
    Ok(())
}

/// httpd's other-child callback: respawn a supervisor that died (with a limit for crash loops).
///
/// # Safety
/// Called by APR in the parent's maintenance loop with `data` = the pool-owned [`Daemon`]
/// registered in [`spawn`], whose pool (pconf) is still live.
unsafe extern "C" fn on_child_event(reason: c_int, data: *mut c_void, status: c_int) {
    if reason != APR_OC_REASON_DEATH as c_int && reason != APR_OC_REASON_LOST as c_int {
        return; // restart/unregister: the lifetime pipe closes with pconf and the group drains
    }
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: data is the pool-owned Daemon registered in spawn(); pconf is still live.
        let d = unsafe { &mut *data.cast::<Daemon>() };
        // SAFETY: unregistering the entry that just reported its death.
        unsafe { apr_proc_other_child_unregister(data) };
        if d.started.elapsed() < Duration::from_secs(5) {
            d.quick_deaths += 1;
        } else {
            d.quick_deaths = 0;
        }
        if d.quick_deaths > 5 {
            let message = format!(
                "RW-AP022 WSGIDaemonProcess {} keeps exiting at start (status {status}); not restarting it",
                d.name
            );
            // SAFETY: live main server.
            unsafe { log_server(d.server, APLOG_ERR, &message) };
            return;
        }
        let message = format!(
            "RW-AP023 WSGIDaemonProcess {} exited (status {status}); restarting it",
            d.name
        );
        // SAFETY: live main server.
        unsafe { log_server(d.server, APLOG_WARNING, &message) };
        // SAFETY: called from the parent's single-threaded maintenance loop.
        if let Err(e) = unsafe { spawn(d) } {
            // SAFETY: live main server.
            unsafe { log_server(d.server, APLOG_ERR, &e) };
        }
    });
}
