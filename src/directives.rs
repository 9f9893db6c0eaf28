//! The C side of the configuration: nginx's http-module callbacks and the directive handlers.
//!
//! Each handler is a shim: nginx's arguments -> a safe function returning `Result<(), String>`,
//! whose error is logged once through `ngx_conf_log_error` (which appends "in FILE:LINE") and
//! turned into `NGX_CONF_ERROR`, so `nginx -t` fails naming the file, the line and what is
//! expected. The typed structs and the merge rules live in conf.rs.

use std::ffi::{c_char, c_void, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::ptr::NonNull;

use ngx::core::{Pool, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_command_t, ngx_conf_full_name, ngx_conf_set_path_slot, ngx_conf_t,
    ngx_http_compile_complex_value, ngx_http_compile_complex_value_t, ngx_http_complex_value_t,
    ngx_parse_size, ngx_parse_time, ngx_path_t, ngx_pcalloc, ngx_str_t, NGX_LOG_EMERG,
    NGX_LOG_WARN, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};

use crate::conf::{
    check_param_name, is_identifier, merge_level, parse_group, GroupRef, LocConf, MainConf, Mount,
    Origin, Param, MAX_THREADS,
};
use crate::handler::wsgi_content_handler;
use crate::upstream::{check_buffers, At, HeaderList, Upstream};
use crate::WsgiModule;

/// `create_main_conf`: a pool-owned [`MainConf`] (the pool runs its destructor).
///
/// # Safety
/// `cf` is the valid `ngx_conf_t` nginx passes to module context callbacks.
pub unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: nginx passes a valid conf whose pool lives as long as the configuration cycle;
    // `allocate` registers a cleanup that drops the value with the pool.
    unsafe {
        Pool::from_ngx_pool((*cf).pool)
            .allocate(MainConf::default())
            .cast()
    }
}

/// `create_loc_conf`: a pool-owned [`LocConf`].
///
/// # Safety
/// `cf` is the valid `ngx_conf_t` nginx passes to module context callbacks.
pub unsafe extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: as in create_main_conf.
    unsafe {
        Pool::from_ngx_pool((*cf).pool)
            .allocate(LocConf::default())
            .cast()
    }
}

/// `merge_loc_conf`: inherit, then resolve the app and the process group of this level.
///
/// # Safety
/// `cf` is valid; `prev` and `conf` are the [`LocConf`]s created by [`create_loc_conf`].
pub unsafe extern "C" fn merge_loc_conf(
    cf: *mut ngx_conf_t,
    prev: *mut c_void,
    conf: *mut c_void,
) -> *mut c_char {
    let result = std::panic::catch_unwind(|| {
        // SAFETY: both pointers come from create_loc_conf for this module and are distinct.
        let (prev, conf) = unsafe { (&*prev.cast::<LocConf>(), &mut *conf.cast::<LocConf>()) };
        // SAFETY: cf is valid during the merge; our main conf was created for this http block.
        let cf = unsafe { &mut *cf };
        let Some(main) = WsgiModule::main_conf_mut(cf) else {
            return Err("wsgi module main configuration is missing".to_string());
        };
        merge_level(conf, prev, main)?;
        conf.upstream = None;
        if let (Some(g), Some(_)) = (conf.group, &conf.script) {
            // SAFETY: cf is valid during the merge.
            conf.upstream =
                Some(unsafe { crate::daemon::make_upstream_conf(cf, main, g, &conf.daemon) }?);
        }
        Ok(())
    });
    match result {
        Ok(Ok(())) => NGX_CONF_OK,
        Ok(Err(msg)) => {
            // Not ngx_conf_log_error: the parser has moved past the directive by now, so the
            // message carries the file and line recorded when the directive was read.
            // SAFETY: cf and its log are valid during the merge.
            unsafe { ngx::log::log_error(NGX_LOG_EMERG as usize, (*cf).log, 0, msg.as_bytes()) };
            NGX_CONF_ERROR
        }
        Err(_) => NGX_CONF_ERROR,
    }
}

// Directive handlers (ngx_command_t.set).

/// The arguments of the directive being parsed, as byte slices (`args[0]` is its name).
///
/// # Safety
/// `cf` is the valid `ngx_conf_t` of a directive handler call; the slices borrow its pool.
unsafe fn args<'a>(cf: *mut ngx_conf_t) -> Vec<&'a [u8]> {
    // SAFETY: during a directive handler cf->args is an array of ngx_str_t with nelts entries,
    // whose data lives in the configuration pool (longer than this call).
    unsafe {
        let a = &*(*cf).args;
        let elts = std::slice::from_raw_parts(a.elts.cast::<ngx_str_t>(), a.nelts);
        elts.iter().map(|s| s.as_bytes()).collect()
    }
}

/// Logs `result`'s error, prefixed with the directive's name as nginx's own messages are (nginx
/// adds "in FILE:LINE"), and maps it to the handler return value.
fn finish(cf: *mut ngx_conf_t, result: std::thread::Result<Result<(), String>>) -> *mut c_char {
    let msg = match result {
        Ok(Ok(())) => return NGX_CONF_OK,
        Ok(Err(msg)) => msg,
        Err(_) => "internal error while parsing the directive".to_string(),
    };
    // SAFETY: cf is valid during the handler; args[0] is the directive name.
    let name = unsafe { args(cf) }
        .first()
        .map(|n| String::from_utf8_lossy(n).into_owned());
    let name = name.unwrap_or_default();
    if msg.starts_with("is ") {
        ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "\"{name}\" directive {msg}");
    } else {
        ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "\"{name}\" directive: {msg}");
    }
    NGX_CONF_ERROR
}

/// The one shim behind every directive handler: the module's conf struct and the directive's
/// arguments as safe references, a panic caught (it must not cross into nginx), and the result
/// logged with the directive's name and mapped to nginx's return value by [`finish`].
///
/// # Safety
/// `cf` is the valid `ngx_conf_t` of a directive handler call and `conf` points at the `C` that
/// the directive's conf offset selects (our `MainConf` or `LocConf`).
unsafe fn directive<C>(
    cf: *mut ngx_conf_t,
    conf: *mut c_void,
    parse: impl FnOnce(&mut C, &[&[u8]]) -> Result<(), String>,
) -> *mut c_char {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: the caller guarantees conf points at a C for the current level.
        let conf = unsafe { &mut *conf.cast::<C>() };
        // SAFETY: cf is valid during the handler.
        let argv = unsafe { args(cf) };
        parse(conf, &argv)
    }));
    finish(cf, result)
}

/// Where the directive being parsed was written.
///
/// # Safety
/// `cf` is valid and is parsing a file.
unsafe fn origin(cf: *mut ngx_conf_t) -> Origin {
    // SAFETY: while parsing, cf->conf_file points at the current file (name + line).
    unsafe {
        let file = &*(*cf).conf_file;
        Origin {
            file: String::from_utf8_lossy(file.file.name.as_bytes()).into_owned(),
            line: file.line,
        }
    }
}

fn text(value: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(value.to_vec()).map_err(|_| format!("{what} must be valid UTF-8"))
}

/// Resolves a relative path against nginx's prefix (`-p`), like `root` and `access_log` do.
///
/// # Safety
/// `cf` is valid.
unsafe fn full_path(cf: *mut ngx_conf_t, value: &[u8]) -> Result<PathBuf, String> {
    if value.is_empty() {
        return Err("expects a path, got an empty string".to_string());
    }
    if value.contains(&0) {
        return Err("path contains a NUL byte".to_string());
    }
    let mut name = ngx_str_t {
        len: value.len(),
        data: value.as_ptr().cast_mut(),
    };
    // SAFETY: ngx_conf_full_name only reads `name` and replaces it by a pool copy when relative.
    let rc = unsafe { ngx_conf_full_name((*cf).cycle, &mut name, 0) };
    if rc != NGX_OK as isize {
        return Err("could not resolve the path".to_string());
    }
    Ok(PathBuf::from(OsStr::from_bytes(name.as_bytes())))
}

/// `wsgi_script PATH;` (location): serve this location with the app in PATH.
///
/// # Safety
/// Called by nginx with a valid `cf` and `conf` pointing at our [`LocConf`].
pub unsafe extern "C" fn set_script(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let parse = |lc: &mut LocConf, argv: &[&[u8]]| -> Result<(), String> {
        if lc.script.is_some() {
            return Err("is duplicate".to_string());
        }
        // SAFETY: as above.
        let script = unsafe { full_path(cf, argv[1]) }?;
        if !script.is_file() {
            // Not fatal: the app may be deployed after nginx is configured, and pyhost answers 500
            // with a clear log line until it exists. But say it now, it is usually a typo.
            ngx::ngx_conf_log_error!(
                NGX_LOG_WARN,
                cf,
                "wsgi_script \"{}\" is not a readable file (yet)",
                script.display()
            );
        }
        // SAFETY: cf is valid and we are inside a location block (NGX_HTTP_LOC_CONF only).
        let clcf = NgxHttpCoreModule::location_conf_mut(unsafe { &*cf })
            .ok_or_else(|| "no core location configuration".to_string())?;
        lc.mount = Some(mount_of(clcf));
        lc.script = Some(script);
        // The content handler of this location: nginx calls it in the content phase.
        clcf.handler = Some(wsgi_content_handler);
        Ok(())
    };
    // SAFETY: nginx calls this with a valid cf and, for this directive's conf offset, our LocConf.
    unsafe { directive(cf, conf, parse) }
}

/// SCRIPT_NAME for the location being configured.
fn mount_of(clcf: &ngx::ffi::ngx_http_core_loc_conf_t) -> Mount {
    #[cfg(ngx_feature = "pcre")]
    if !clcf.regex.is_null() {
        return Mount::Whole;
    }
    if clcf.named() != 0 {
        return Mount::Whole;
    }
    let name = clcf.name.as_bytes();
    // SCRIPT_NAME never ends with '/': "location /app/" serves "/app" + "/rest" (PEP 3333 / CGI).
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    Mount::Prefix(trimmed.to_vec())
}

/// `wsgi_callable NAME;` (http, server, location).
///
/// # Safety
/// Called by nginx with a valid `cf` and `conf` pointing at our [`LocConf`].
pub unsafe extern "C" fn set_callable(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let parse = |lc: &mut LocConf, argv: &[&[u8]]| -> Result<(), String> {
        if lc.callable.is_some() {
            return Err("is duplicate".to_string());
        }
        let value = argv[1];
        if !is_identifier(value) {
            return Err(format!(
                "invalid value \"{}\": expected a Python identifier such as \"application\"",
                String::from_utf8_lossy(value)
            ));
        }
        lc.callable = Some(text(value, "the callable")?);
        Ok(())
    };
    // SAFETY: nginx calls this with a valid cf and, for this directive's conf offset, our LocConf.
    unsafe { directive(cf, conf, parse) }
}

/// `wsgi_interface wsgi|asgi;` (http, server, location).
///
/// # Safety
/// Called by nginx with a valid `cf` and `conf` pointing at our [`LocConf`].
pub unsafe extern "C" fn set_interface(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let parse = |lc: &mut LocConf, argv: &[&[u8]]| -> Result<(), String> {
        if lc.interface.is_some() {
            return Err("is duplicate".to_string());
        }
        let value = argv[1];
        let interface = std::str::from_utf8(value)
            .ok()
            .and_then(supervisor::Interface::parse)
            .ok_or_else(|| {
                format!(
                    "invalid value \"{}\": expected \"wsgi\" or \"asgi\"",
                    String::from_utf8_lossy(value)
                )
            })?;
        lc.interface = Some(interface);
        Ok(())
    };
    // SAFETY: nginx calls this with a valid cf and, for this directive's conf offset, our LocConf.
    unsafe { directive(cf, conf, parse) }
}

/// `wsgi_process_group NAME;` (http, server, location).
///
/// # Safety
/// Called by nginx with a valid `cf` and `conf` pointing at our [`LocConf`].
pub unsafe extern "C" fn set_process_group(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let parse = |lc: &mut LocConf, argv: &[&[u8]]| -> Result<(), String> {
        if lc.process_group.is_some() {
            return Err("is duplicate".to_string());
        }
        let value = argv[1];
        if value.is_empty() {
            return Err("expects a process group name, got an empty string".to_string());
        }
        let name = text(value, "the process group name")?;
        // SAFETY: cf is valid and parsing a file.
        let origin = unsafe { origin(cf) };
        lc.process_group = Some(GroupRef { name, origin });
        Ok(())
    };
    // SAFETY: nginx calls this with a valid cf and, for this directive's conf offset, our LocConf.
    unsafe { directive(cf, conf, parse) }
}

/// `wsgi_daemon_process NAME key=value...;` (http).
///
/// # Safety
/// Called by nginx with a valid `cf` and `conf` pointing at our [`MainConf`].
pub unsafe extern "C" fn set_daemon_process(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let parse = |mc: &mut MainConf, argv: &[&[u8]]| -> Result<(), String> {
        let mut group = parse_group(argv[1], &argv[2..])?;
        // SAFETY: cf is valid while the directive is parsed.
        group.origin = Some(unsafe { origin(cf) });
        if mc.groups.iter().any(|g| g.name == group.name) {
            return Err(format!("duplicate process group \"{}\"", group.name));
        }
        mc.groups.push(group);
        Ok(())
    };
    // SAFETY: nginx calls this with a valid cf and, for this directive's conf offset, our MainConf.
    unsafe { directive(cf, conf, parse) }
}

/// `wsgi_python_home DIR;` (http).
///
/// # Safety
/// Called by nginx with a valid `cf` and `conf` pointing at our [`MainConf`].
pub unsafe extern "C" fn set_python_home(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let parse = |mc: &mut MainConf, argv: &[&[u8]]| -> Result<(), String> {
        if mc.python_home.is_some() {
            return Err("is duplicate".to_string());
        }
        let value = argv[1];
        // SAFETY: as above.
        let home = unsafe { full_path(cf, value) }?;
        if !home.is_dir() {
            return Err(format!(
                "\"{}\" is not a directory: expected a virtualenv or Python prefix",
                home.display()
            ));
        }
        mc.python_home = Some(home);
        Ok(())
    };
    // SAFETY: nginx calls this with a valid cf and, for this directive's conf offset, our MainConf.
    unsafe { directive(cf, conf, parse) }
}

/// `wsgi_python_path DIR[:DIR...];` (http). May be repeated; entries accumulate in order.
///
/// # Safety
/// Called by nginx with a valid `cf` and `conf` pointing at our [`MainConf`].
pub unsafe extern "C" fn set_python_path(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let parse = |mc: &mut MainConf, argv: &[&[u8]]| -> Result<(), String> {
        let value = argv[1];
        for part in value.split(|c| *c == b':').filter(|p| !p.is_empty()) {
            // SAFETY: as above.
            mc.python_path.push(unsafe { full_path(cf, part) }?);
        }
        Ok(())
    };
    // SAFETY: nginx calls this with a valid cf and, for this directive's conf offset, our MainConf.
    unsafe { directive(cf, conf, parse) }
}

/// `wsgi_threads N;` (http).
///
/// # Safety
/// Called by nginx with a valid `cf` and `conf` pointing at our [`MainConf`].
pub unsafe extern "C" fn set_threads(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let parse = |mc: &mut MainConf, argv: &[&[u8]]| -> Result<(), String> {
        if mc.threads.is_some() {
            return Err("is duplicate".to_string());
        }
        let value = argv[1];
        let n = std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.parse::<usize>().ok());
        match n {
            Some(n) if (1..=MAX_THREADS).contains(&n) => {
                mc.threads = Some(n);
                Ok(())
            }
            _ => Err(format!(
                "invalid value \"{}\": expected a number of threads from 1 to {MAX_THREADS}",
                String::from_utf8_lossy(value)
            )),
        }
    };
    // SAFETY: nginx calls this with a valid cf and, for this directive's conf offset, our MainConf.
    unsafe { directive(cf, conf, parse) }
}

// wsgi_param: both modes.

/// `wsgi_param NAME VALUE [if_not_empty];` (http, server, location): a CGI variable with a value
/// from nginx (variables allowed), as `uwsgi_param` sets one. A level with any `wsgi_param`
/// replaces the inherited list.
///
/// # Safety
/// Called by nginx with a valid `cf` and `conf` pointing at our [`LocConf`].
pub unsafe extern "C" fn set_param(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let parse = |lc: &mut LocConf, argv: &[&[u8]]| -> Result<(), String> {
        let name = argv[1];
        check_param_name(name)?;
        let if_not_empty = match argv.get(3) {
            None => false,
            Some(&b"if_not_empty") => true,
            Some(other) => {
                return Err(format!(
                    "invalid parameter \"{}\": expected if_not_empty",
                    String::from_utf8_lossy(other)
                ))
            }
        };
        let header = name.starts_with(b"HTTP_");
        let value = if argv[2].is_empty() && header {
            None // only hides the client's header, as uwsgi_param HTTP_X "" does
        } else {
            // SAFETY: cf is valid during the handler; argv[2] lives in the configuration pool.
            Some(unsafe { compile_value(cf, argv[2]) }?)
        };
        lc.params.get_or_insert_with(Vec::new).push(Param {
            name: name.to_vec(),
            value,
            if_not_empty,
        });
        Ok(())
    };
    // SAFETY: nginx calls this with a valid cf and, for this directive's conf offset, our LocConf.
    unsafe { directive(cf, conf, parse) }
}

/// Compiles a value with nginx variables into an `ngx_http_complex_value_t` in the configuration
/// pool (what `uwsgi_param`'s script compiles to; a value without `$` stays a plain string).
///
/// # Safety
/// `cf` is valid and `value` lives in its pool.
unsafe fn compile_value(cf: *mut ngx_conf_t, value: &[u8]) -> Result<NonNull<c_void>, String> {
    // SAFETY: pool allocations checked; ccv is a plain C struct nginx expects zeroed but for the
    // fields set below; the source string outlives the configuration (cf->pool).
    unsafe {
        let cv = ngx_pcalloc((*cf).pool, std::mem::size_of::<ngx_http_complex_value_t>())
            .cast::<ngx_http_complex_value_t>();
        let source = ngx_pcalloc((*cf).pool, std::mem::size_of::<ngx_str_t>()).cast::<ngx_str_t>();
        if cv.is_null() || source.is_null() {
            return Err("out of memory".to_string());
        }
        *source = ngx_str_t {
            len: value.len(),
            data: value.as_ptr().cast_mut(),
        };
        let mut ccv: ngx_http_compile_complex_value_t = std::mem::zeroed();
        ccv.cf = cf;
        ccv.value = source;
        ccv.complex_value = cv;
        if ngx_http_compile_complex_value(&mut ccv) != NGX_OK as isize {
            return Err(format!(
                "cannot compile the value \"{}\"",
                String::from_utf8_lossy(value)
            ));
        }
        NonNull::new(cv.cast()).ok_or_else(|| "out of memory".to_string())
    }
}

// Daemon mode's upstream settings (upstream.rs): the uwsgi module's knobs, named after them.

/// One daemon-mode directive: refuses a second one at the same level, parses the arguments and
/// records the value with the directive's name and place (an embedded location refuses it).
///
/// # Safety
/// `cf` is the valid `ngx_conf_t` of a directive handler call and `conf` our [`LocConf`].
unsafe fn daemon_setting<T>(
    cf: *mut ngx_conf_t,
    conf: *mut c_void,
    name: &'static str,
    field: fn(&mut Upstream) -> &mut Option<At<T>>,
    parse: impl FnOnce(&[&[u8]]) -> Result<T, String>,
) -> *mut c_char {
    let set = |lc: &mut LocConf, argv: &[&[u8]]| -> Result<(), String> {
        let slot = field(&mut lc.daemon);
        if slot.is_some() {
            return Err("is duplicate".to_string());
        }
        let value = parse(argv)?;
        // SAFETY: cf is valid and parsing a file.
        let Origin { file, line } = unsafe { origin(cf) };
        *slot = Some(At {
            value,
            directive: name,
            file,
            line,
        });
        Ok(())
    };
    // SAFETY: forwarded contract.
    unsafe { directive(cf, conf, set) }
}

/// nginx's time syntax (`30s`, `1m`, `500ms`, `60` = seconds), as `ngx_conf_set_msec_slot`.
fn parse_msec(argv: &[&[u8]]) -> Result<std::time::Duration, String> {
    let mut s = ngx_str_t {
        len: argv[1].len(),
        data: argv[1].as_ptr().cast_mut(),
    };
    // SAFETY: ngx_parse_time only reads the string.
    let ms = unsafe { ngx_parse_time(&mut s, 0) };
    if ms < 0 {
        return Err(format!(
            "invalid value \"{}\": expected a time such as 30s, 5m or 500ms",
            String::from_utf8_lossy(argv[1])
        ));
    }
    Ok(std::time::Duration::from_millis(ms as u64))
}

/// nginx's size syntax (`4k`, `1m`, `8192`), as `ngx_conf_set_size_slot`.
fn parse_size_arg(arg: &[u8]) -> Result<usize, String> {
    let mut s = ngx_str_t {
        len: arg.len(),
        data: arg.as_ptr().cast_mut(),
    };
    // SAFETY: ngx_parse_size only reads the string.
    let n = unsafe { ngx_parse_size(&mut s) };
    usize::try_from(n).map_err(|_| {
        format!(
            "invalid value \"{}\": expected a size such as 8k or 1m",
            String::from_utf8_lossy(arg)
        )
    })
}

fn parse_flag(argv: &[&[u8]]) -> Result<bool, String> {
    match argv[1] {
        b"on" => Ok(true),
        b"off" => Ok(false),
        other => Err(format!(
            "invalid value \"{}\": expected on or off",
            String::from_utf8_lossy(other)
        )),
    }
}

fn parse_header_name(argv: &[&[u8]]) -> Result<Vec<u8>, String> {
    let name = argv[1];
    if name.is_empty() || !name.iter().all(|c| c.is_ascii_graphic() && *c != b':') {
        return Err(format!(
            "invalid header name \"{}\": expected a field name such as X-Powered-By",
            String::from_utf8_lossy(name)
        ));
    }
    Ok(name.to_vec())
}

/// A directive handler made of [`daemon_setting`], a field of [`Upstream`] and a parser.
macro_rules! daemon_directive {
    ($(#[$doc:meta])* $fn_name:ident, $name:literal, $field:ident, $parse:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// Called by nginx with a valid `cf` and `conf` pointing at our [`LocConf`].
        pub unsafe extern "C" fn $fn_name(
            cf: *mut ngx_conf_t,
            _cmd: *mut ngx_command_t,
            conf: *mut c_void,
        ) -> *mut c_char {
            // SAFETY: nginx calls this with a valid cf and our LocConf for this conf offset.
            unsafe { daemon_setting(cf, conf, $name, |u| &mut u.$field, $parse) }
        }
    };
}

daemon_directive!(
    /// `wsgi_connect_timeout TIME;` (daemon mode).
    set_connect_timeout, "wsgi_connect_timeout", connect_timeout, parse_msec
);
daemon_directive!(
    /// `wsgi_send_timeout TIME;` (daemon mode).
    set_send_timeout, "wsgi_send_timeout", send_timeout, parse_msec
);
daemon_directive!(
    /// `wsgi_read_timeout TIME;` (daemon mode).
    set_read_timeout, "wsgi_read_timeout", read_timeout, parse_msec
);
daemon_directive!(
    /// `wsgi_buffering on|off;` (daemon mode).
    set_buffering, "wsgi_buffering", buffering, parse_flag
);
daemon_directive!(
    /// `wsgi_request_buffering on|off;` (daemon mode).
    set_request_buffering, "wsgi_request_buffering", request_buffering, parse_flag
);
daemon_directive!(
    /// `wsgi_intercept_errors on|off;` (daemon mode).
    set_intercept_errors, "wsgi_intercept_errors", intercept_errors, parse_flag
);
daemon_directive!(
    /// `wsgi_buffer_size SIZE;` (daemon mode).
    set_buffer_size, "wsgi_buffer_size", buffer_size, |argv: &[&[u8]]| {
        match parse_size_arg(argv[1])? {
            0 => Err("invalid value \"0\": expected a size such as 16k".to_string()),
            n => Ok(n),
        }
    }
);
daemon_directive!(
    /// `wsgi_max_temp_file_size SIZE;` (daemon mode).
    set_max_temp_file_size, "wsgi_max_temp_file_size", max_temp_file_size,
    |argv: &[&[u8]]| parse_size_arg(argv[1])
);
daemon_directive!(
    /// `wsgi_buffers NUMBER SIZE;` (daemon mode).
    set_buffers, "wsgi_buffers", buffers, |argv: &[&[u8]]| {
        let num = std::str::from_utf8(argv[1]).ok().and_then(|s| s.parse::<usize>().ok());
        let Some(num) = num else {
            return Err(format!(
                "invalid number of buffers \"{}\": expected a number such as 8",
                String::from_utf8_lossy(argv[1])
            ));
        };
        check_buffers(num, parse_size_arg(argv[2])?)
    }
);
daemon_directive!(
    /// `wsgi_next_upstream off;` (daemon mode): the only value a group with one socket allows.
    set_next_upstream, "wsgi_next_upstream", next_upstream, |argv: &[&[u8]]| {
        match argv[1..] {
            [b"off"] => Ok(()),
            _ => Err("only \"off\" is possible: a daemon group listens on one socket, so there is \
                      no next server to try, and a request its worker may have accepted is never \
                      sent twice (docs/nginx/wsgi_next_upstream.md)"
                .to_string()),
        }
    }
);

/// `wsgi_hide_header NAME;` and `wsgi_pass_header NAME;` (daemon mode): may be repeated; the
/// names of one level form its list.
///
/// # Safety
/// `cf` is the valid `ngx_conf_t` of a directive handler call and `conf` our [`LocConf`].
unsafe fn header_list(
    cf: *mut ngx_conf_t,
    conf: *mut c_void,
    name: &'static str,
    field: fn(&mut Upstream) -> &mut HeaderList,
) -> *mut c_char {
    let add = |lc: &mut LocConf, argv: &[&[u8]]| -> Result<(), String> {
        let header = parse_header_name(argv)?;
        let slot = field(&mut lc.daemon);
        match slot {
            Some(at) => at.value.push(header),
            None => {
                // SAFETY: cf is valid and parsing a file.
                let Origin { file, line } = unsafe { origin(cf) };
                *slot = Some(At {
                    value: vec![header],
                    directive: name,
                    file,
                    line,
                });
            }
        }
        Ok(())
    };
    // SAFETY: forwarded contract.
    unsafe { directive(cf, conf, add) }
}

/// `wsgi_hide_header NAME;` (daemon mode).
///
/// # Safety
/// Called by nginx with a valid `cf` and `conf` pointing at our [`LocConf`].
pub unsafe extern "C" fn set_hide_header(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: as documented.
    unsafe { header_list(cf, conf, "wsgi_hide_header", |u| &mut u.hide_headers) }
}

/// `wsgi_pass_header NAME;` (daemon mode).
///
/// # Safety
/// Called by nginx with a valid `cf` and `conf` pointing at our [`LocConf`].
pub unsafe extern "C" fn set_pass_header(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: as documented.
    unsafe { header_list(cf, conf, "wsgi_pass_header", |u| &mut u.pass_headers) }
}

/// `wsgi_temp_path PATH [LEVEL1 [LEVEL2 [LEVEL3]]];` (daemon mode): parsed by nginx's own path
/// slot, which also registers the directory for creation at start-up (as `uwsgi_temp_path`).
///
/// # Safety
/// Called by nginx with a valid `cf`, its command and `conf` pointing at our [`LocConf`].
pub unsafe extern "C" fn set_temp_path(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: conf is our LocConf (directive offset).
        let lc = unsafe { &mut *conf.cast::<LocConf>() };
        if lc.daemon.temp_path.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        let mut slot: *mut ngx_path_t = std::ptr::null_mut();
        // SAFETY: nginx's slot writes an ngx_path_t pointer at conf + cmd->offset; our command's
        // offset is 0, so it writes into `slot`. It returns NGX_CONF_OK, a message or an error
        // it has logged, each of which we hand back to nginx unchanged.
        let rc =
            unsafe { ngx_conf_set_path_slot(cf, cmd, (&mut slot as *mut *mut ngx_path_t).cast()) };
        if let (true, Some(path)) = (rc.is_null(), NonNull::new(slot)) {
            // SAFETY: cf is valid and parsing a file.
            let Origin { file, line } = unsafe { origin(cf) };
            lc.daemon.temp_path = Some(At {
                value: path.cast(),
                directive: "wsgi_temp_path",
                file,
                line,
            });
        }
        rc
    }));
    result.unwrap_or(NGX_CONF_ERROR)
}

/// `wsgi_request_timeout TIME | off;` (http, server, location): embedded requests running longer
/// are interrupted and answered 504 (docs/nginx/wsgi_request_timeout.md).
///
/// # Safety
/// Called by nginx with a valid `cf` and `conf` pointing at our [`LocConf`].
pub unsafe extern "C" fn set_request_timeout(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let parse = |lc: &mut LocConf, argv: &[&[u8]]| -> Result<(), String> {
        if lc.request_timeout.is_some() {
            return Err("is duplicate".to_string());
        }
        let value = argv[1];
        if value == b"off" {
            lc.request_timeout = Some(None);
            return Ok(());
        }
        let after = parse_msec(argv)?;
        if after.is_zero() {
            return Err(
                "invalid value \"0\": expected a time such as 30s or 2m, or off".to_string(),
            );
        }
        lc.request_timeout = Some(Some(after));
        Ok(())
    };
    // SAFETY: nginx calls this with a valid cf and, for this directive's conf offset, our LocConf.
    unsafe { directive(cf, conf, parse) }
}
