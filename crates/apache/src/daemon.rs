//! Daemon mode: `WSGIDaemonProcess` groups, and the cross-directive checks they need.
//!
//! This build validates daemon configuration completely but does not yet start the groups:
//! rather than silently running a daemon-mode app embedded, a configuration that routes any
//! request to a daemon group fails `apachectl -t` with a sentence saying so.

use std::collections::HashSet;
use std::ffi::c_int;

use crate::conf::{ProcessGroup, ServerConf};
use crate::ffi::*;
use crate::handler::log_request;
use crate::server_conf;

/// Checks the whole configuration (all servers): daemon group names are unique, every
/// `process-group=` names a declared group, and mod_wsgi is not loaded beside us (both modules
/// claim the same directive names).
///
/// # Safety
/// `s` must be the live main server_rec (the head of the virtual host list).
pub(crate) unsafe fn validate(s: *mut server_rec) -> Result<(), String> {
    // SAFETY: ap_find_linked_module reads httpd's module list by name.
    if !unsafe { ap_find_linked_module(c"mod_wsgi.c".as_ptr()) }.is_null() {
        return Err("mod_rwsgi and mod_wsgi cannot be loaded into the same server; remove one LoadModule line".into());
    }
    let mut confs: Vec<&ServerConf> = Vec::new();
    let mut server = s;
    while !server.is_null() {
        // SAFETY: the vhost list is live for this configuration pass.
        if let Some(conf) = unsafe { server_conf(server) } {
            confs.push(conf);
        }
        // SAFETY: as above.
        server = unsafe { (*server).next };
    }
    let mut names = HashSet::new();
    for group in confs.iter().flat_map(|c| c.daemons.iter()) {
        if !names.insert(group.name.as_str()) {
            return Err(format!(
                "WSGIDaemonProcess: the group name '{}' is defined more than once",
                group.name
            ));
        }
    }
    let referenced = confs.iter().flat_map(|c| {
        c.aliases
            .iter()
            .filter_map(|a| a.options.process_group.as_ref())
            .chain(c.imports.iter().map(|i| &i.process_group))
    });
    for group in referenced {
        if let ProcessGroup::Daemon(name) = group {
            if !names.contains(name.as_str()) {
                return Err(format!(
                    "process-group={name}: no WSGIDaemonProcess group of that name is defined"
                ));
            }
        }
    }
    if let Some(group) = confs.iter().flat_map(|c| c.daemons.iter()).next() {
        return Err(format!(
            "WSGIDaemonProcess {}: daemon mode is not available in this build of mod_rwsgi yet; \
             use embedded mode (no WSGIDaemonProcess / WSGIProcessGroup) for now",
            group.name
        ));
    }
    Ok(())
}

pub(crate) unsafe extern "C" fn post_config(
    pconf: *mut apr_pool_t,
    _plog: *mut apr_pool_t,
    _ptemp: *mut apr_pool_t,
    _s: *mut server_rec,
) -> c_int {
    // "mod_rwsgi/x.y.z" in SERVER_SOFTWARE (and Server: under ServerTokens Full), as mod_wsgi
    // announces itself.
    let token = concat!("mod_rwsgi/", env!("CARGO_PKG_VERSION"), "\0");
    // SAFETY: pconf is live for this generation; httpd copies the component string.
    unsafe { ap_add_version_component(pconf, token.as_ptr().cast()) };
    OK_
}

/// Daemon-mode request. Unreachable while validate() refuses daemon groups, except through a
/// `WSGIProcessGroup` in .htaccess naming an unknown group.
pub(crate) fn forward(r: &mut request_rec, _conf: &crate::conf::DirConf, group: &str) -> c_int {
    let message =
        format!("RW-AP010 no WSGI daemon process group '{group}' is running in this server");
    // SAFETY: r is live.
    unsafe { log_request(r, APLOG_ERR, &message) };
    HTTP_INTERNAL_SERVER_ERROR as c_int
}
