//! The WSGI* directive table httpd reads, and the shims that turn each line into typed config.
//!
//! Every directive uses RAW_ARGS, split with httpd's ap_getword_conf, and the same shim;
//! `cmd_data` carries which [`Directive`] it is. The shim never panics across `extern "C"`.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr::{null, null_mut};

use crate::conf::{self, Alias, DaemonGroup, DirConf, ImportScript, ProcessGroup, ServerConf};
use crate::ffi::*;

#[derive(Clone, Copy, Debug)]
#[repr(usize)]
enum Directive {
    ScriptAlias = 1,
    DaemonProcess,
    ProcessGroup,
    ApplicationGroup,
    PythonHome,
    PythonPath,
    CallableObject,
    PassAuthorization,
    ChunkedRequest,
    SocketPrefix,
    RestrictEmbedded,
    ImportScript,
    RequestTimeout,
    Unsupported,
}

impl Directive {
    const ALL: [Directive; 14] = [
        Self::ScriptAlias,
        Self::DaemonProcess,
        Self::ProcessGroup,
        Self::ApplicationGroup,
        Self::PythonHome,
        Self::PythonPath,
        Self::CallableObject,
        Self::PassAuthorization,
        Self::ChunkedRequest,
        Self::SocketPrefix,
        Self::RestrictEmbedded,
        Self::ImportScript,
        Self::RequestTimeout,
        Self::Unsupported,
    ];

    fn from_tag(tag: usize) -> Option<Self> {
        Self::ALL.into_iter().find(|d| *d as usize == tag)
    }
}

/// Where a directive may appear (httpd's req_override bits).
const SERVER: u32 = RSRC_CONF;
const ANYWHERE: u32 = RSRC_CONF | ACCESS_CONF | OR_FILEINFO;

/// One row of the table: name, which directive, contexts, usage text.
const fn row(
    name: &'static CStr,
    d: Directive,
    contexts: u32,
    usage: &'static CStr,
) -> command_rec {
    command_rec {
        name: name.as_ptr(),
        func: cmd_func {
            raw_args: Some(directive_shim),
        },
        cmd_data: d as usize as *mut c_void,
        req_override: contexts as c_int,
        args_how: cmd_how_RAW_ARGS,
        errmsg: usage.as_ptr(),
    }
}

/// httpd reads this table through a `*const command_rec`; it is never written.
#[repr(transparent)]
pub struct CommandTable<const N: usize>(pub [command_rec; N]);
// SAFETY: the table is immutable and only holds pointers to 'static C strings and fns.
unsafe impl<const N: usize> Sync for CommandTable<N> {}

const N_SUPPORTED: usize = 13;
const N_ROWS: usize = N_SUPPORTED + conf::UNSUPPORTED_DIRECTIVES.len() + 1;

const fn unsupported_row(i: usize) -> command_rec {
    // C strings for the unsupported names are built at compile time below.
    row(
        UNSUPPORTED_C[i],
        Directive::Unsupported,
        RSRC_CONF | ACCESS_CONF | OR_ALL,
        c"not supported by mod_rwsgi",
    )
}

/// NUL-terminated copies of conf::UNSUPPORTED_DIRECTIVES (a test keeps the two lists equal).
const UNSUPPORTED_C: [&CStr; 33] = [
    c"WSGIScriptAliasMatch",
    c"WSGIDispatchScript",
    c"WSGIAccessScript",
    c"WSGIAuthUserScript",
    c"WSGIAuthGroupScript",
    c"WSGIAuthHostScript",
    c"WSGIHandlerScript",
    c"WSGIScriptReloading",
    c"WSGILazyInitialization",
    c"WSGIPythonOptimize",
    c"WSGIPythonEggs",
    c"WSGIPythonHashSeed",
    c"WSGIPythonWarnings",
    c"WSGIRestrictStdin",
    c"WSGIRestrictStdout",
    c"WSGIRestrictSignal",
    c"WSGIRestrictProcess",
    c"WSGIAcceptMutex",
    c"WSGIVerboseDebugging",
    c"WSGIErrorOverride",
    c"WSGIMapHEADToGET",
    c"WSGITrustedProxyHeaders",
    c"WSGITrustedProxies",
    c"WSGIDestroyInterpreter",
    c"WSGIEnableSendfile",
    c"WSGIIgnoreActivity",
    c"WSGIApplicationGroupMatch",
    c"WSGICaseSensitivity",
    c"WSGIDontWriteBytecode",
    c"WSGINewHandlerScript",
    c"WSGIPythonCompileFlags",
    c"WSGICallableObjectMatch",
    c"WSGIStartupScriptMatch",
];
const _: () = assert!(UNSUPPORTED_C.len() == conf::UNSUPPORTED_DIRECTIVES.len());

const fn build_table() -> [command_rec; N_ROWS] {
    let supported: [command_rec; N_SUPPORTED] = [
        row(c"WSGIScriptAlias", Directive::ScriptAlias, SERVER,
            c"URL-path script-path [process-group=G] [application-group=%{GLOBAL}] [callable-object=N] [pass-authorization=On|Off] [request-timeout=SECS]"),
        row(c"WSGIDaemonProcess", Directive::DaemonProcess, SERVER, c"name [key=value ...] (see docs/apache/WSGIDaemonProcess.md)"),
        row(c"WSGIProcessGroup", Directive::ProcessGroup, ANYWHERE, c"a WSGIDaemonProcess name, or %{GLOBAL} for embedded mode"),
        row(c"WSGIApplicationGroup", Directive::ApplicationGroup, ANYWHERE, c"%{GLOBAL} (the main interpreter)"),
        row(c"WSGIPythonHome", Directive::PythonHome, SERVER, c"directory of the Python prefix or virtualenv"),
        row(c"WSGIPythonPath", Directive::PythonPath, SERVER, c"directories to add to sys.path, ':'-separated"),
        row(c"WSGICallableObject", Directive::CallableObject, ANYWHERE, c"name of the WSGI callable in the script"),
        row(c"WSGIPassAuthorization", Directive::PassAuthorization, RSRC_CONF | ACCESS_CONF | OR_AUTHCFG,
            c"On|Off: pass the Authorization header to the app"),
        row(c"WSGIChunkedRequest", Directive::ChunkedRequest, ANYWHERE, c"On|Off (accepted; chunked bodies always work)"),
        row(c"WSGISocketPrefix", Directive::SocketPrefix, SERVER, c"path prefix for daemon sockets"),
        row(c"WSGIRestrictEmbedded", Directive::RestrictEmbedded, SERVER, c"On|Off: no Python in Apache's children"),
        row(c"WSGIImportScript", Directive::ImportScript, SERVER,
            c"script-path process-group=G application-group=%{GLOBAL}"),
        row(c"WSGIRequestTimeout", Directive::RequestTimeout, RSRC_CONF | ACCESS_CONF,
            c"SECS or Off: embedded requests running longer are interrupted and answered 504"),
    ];
    let end = command_rec {
        name: null(),
        func: cmd_func { raw_args: None },
        cmd_data: null_mut(),
        req_override: 0,
        args_how: 0,
        errmsg: null(),
    };
    let mut table = [end; N_ROWS];
    let mut i = 0;
    while i < N_SUPPORTED {
        table[i] = supported[i];
        i += 1;
    }
    let mut j = 0;
    while j < UNSUPPORTED_C.len() {
        table[N_SUPPORTED + j] = unsupported_row(j);
        j += 1;
    }
    table
}

pub static COMMANDS: CommandTable<N_ROWS> = CommandTable(build_table());

/// The single `extern "C"` entry for every directive.
///
/// # Safety
/// Called by httpd while reading the configuration: `cmd` is the live `cmd_parms` of a row of
/// [`COMMANDS`] (its `cmd_data` names the directive), `mconfig` the per-directory config our
/// `create_dir_config` made, and `line` the rest of the line (NUL-terminated).
unsafe extern "C" fn directive_shim(
    cmd: *mut cmd_parms,
    mconfig: *mut c_void,
    line: *const c_char,
) -> *const c_char {
    // RAW_ARGS + ap_getword_conf (httpd's own quoting rules) rather than TAKE_ARGV/TAKE1: those
    // stop at an empty word, and mod_wsgi configs say `WSGIApplicationGroup ""`.
    let mut words: Vec<*const c_char> = Vec::new();
    let mut rest = line;
    // SAFETY: `line` is the NUL-terminated rest of the directive line; ap_getword_conf advances
    // `rest` within it and returns words allocated in cmd->temp_pool, live for this call.
    unsafe {
        while !rest.is_null() && *rest != 0 {
            words.push(ap_getword_conf((*cmd).temp_pool, &mut rest));
        }
    }
    // SAFETY: forwarded from httpd's call.
    unsafe { run_directive(cmd, mconfig, &words) }
}

/// # Safety
/// `cmd`/`mconfig` as httpd passes them to a directive function; every word NUL-terminated.
unsafe fn run_directive(
    cmd: *mut cmd_parms,
    mconfig: *mut c_void,
    words: &[*const c_char],
) -> *const c_char {
    let outcome = std::panic::catch_unwind(|| {
        // SAFETY: cmd->cmd is the row httpd matched; its cmd_data is our tag.
        let (tag, name) = unsafe {
            (
                (*(*cmd).cmd).cmd_data as usize,
                cstr_bytes((*(*cmd).cmd).name),
            )
        };
        let name = String::from_utf8_lossy(name).into_owned();
        // SAFETY: words are NUL-terminated and live for this call.
        let args: Vec<&str> = words
            .iter()
            .map(|w| std::str::from_utf8(unsafe { cstr_bytes(*w) }))
            .collect::<Result<_, _>>()
            .map_err(|_| format!("{name}: arguments must be UTF-8"))?;
        let directive =
            Directive::from_tag(tag).ok_or_else(|| format!("{name}: internal table error"))?;
        // SAFETY: mconfig is the DirConf httpd created with our create_dir_config for this scope.
        let dir = unsafe { mconfig.cast::<DirConf>().as_mut() };
        apply(directive, &name, cmd, dir, &args)
    });
    let message = match outcome {
        Ok(Ok(())) => return null(),
        Ok(Err(message)) => message,
        Err(_) => "mod_rwsgi: internal error while parsing this directive".to_owned(),
    };
    // SAFETY: cmd is live; its pool outlives the error message's use by httpd.
    unsafe { pool_str((*cmd).pool, message.as_bytes()) }
}

/// Applies one directive line to the right config scope.
fn apply(
    directive: Directive,
    name: &str,
    cmd: *mut cmd_parms,
    dir: Option<&mut DirConf>,
    args: &[&str],
) -> Result<(), String> {
    let one = || match args {
        [value] => Ok(*value),
        _ => Err(format!("{name} takes exactly one argument")),
    };
    match directive {
        Directive::Unsupported => Err(conf::unsupported_directive(name)),
        Directive::ProcessGroup
        | Directive::ApplicationGroup
        | Directive::CallableObject
        | Directive::PassAuthorization
        | Directive::ChunkedRequest
        | Directive::RequestTimeout => {
            let value = one()?;
            let dir = dir.ok_or_else(|| format!("{name}: no directory configuration here"))?;
            match directive {
                Directive::ProcessGroup => {
                    dir.process_group = Some(ProcessGroup::parse(name, value)?)
                }
                Directive::ApplicationGroup => conf::check_application_group(name, value)?,
                Directive::CallableObject => dir.callable = Some(value.to_owned()),
                Directive::PassAuthorization => {
                    dir.pass_authorization = Some(conf::parse_on_off(name, value)?)
                }
                Directive::RequestTimeout => {
                    dir.request_timeout = Some(conf::parse_request_timeout(name, value)?)
                }
                _ => dir.chunked_request = Some(conf::parse_on_off(name, value)?),
            }
            Ok(())
        }
        _ => {
            // SAFETY: cmd is live for the duration of this call.
            let server = unsafe { server_conf_for(cmd) }
                .ok_or_else(|| format!("{name}: no server configuration"))?;
            match directive {
                Directive::ScriptAlias => server.aliases.push(Alias::parse(args)?),
                Directive::DaemonProcess => {
                    let group = DaemonGroup::parse(args)?;
                    if server.daemons.iter().any(|g| g.name == group.name) {
                        return Err(format!(
                            "{name}: a group named '{}' is already defined",
                            group.name
                        ));
                    }
                    server.daemons.push(group);
                }
                Directive::ImportScript => server.imports.push(ImportScript::parse(args)?),
                _ => {
                    // Process-wide settings: only meaningful outside <VirtualHost>.
                    // SAFETY: cmd is live; ap_check_cmd_context only reads it.
                    let refused = unsafe { ap_check_cmd_context(cmd, GLOBAL_ONLY) };
                    if !refused.is_null() {
                        // SAFETY: httpd returns a NUL-terminated message from its pool.
                        return Err(
                            String::from_utf8_lossy(unsafe { cstr_bytes(refused) }).into_owned()
                        );
                    }
                    let value = one()?;
                    match directive {
                        Directive::PythonHome => server.python_home = Some(value.into()),
                        Directive::PythonPath => server.python_path = conf::split_path_list(value),
                        Directive::SocketPrefix => server.socket_prefix = Some(value.into()),
                        _ => server.restrict_embedded = Some(conf::parse_on_off(name, value)?),
                    }
                }
            }
            Ok(())
        }
    }
}

/// The ServerConf of the server (main or virtual host) whose section is being parsed.
///
/// # Safety
/// `cmd` must be the live cmd_parms of a directive call.
unsafe fn server_conf_for<'a>(cmd: *mut cmd_parms) -> Option<&'a mut ServerConf> {
    // SAFETY: cmd->server is the server_rec being configured; its module_config slot for this
    // module was filled by our create_server_config.
    unsafe {
        let s = (*cmd).server;
        ap_get_module_config((*s).module_config, crate::module_ptr())
            .cast::<ServerConf>()
            .as_mut()
    }
}
