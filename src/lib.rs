//! `ngx_http_wsgi_module`: runs Python WSGI applications inside nginx.
//!
//! Load with `load_module .../libngx_http_wsgi_module.so;` and configure with the `wsgi_*`
//! directives (docs/nginx/). Two modes, chosen per location (handler.rs):
//! - **embedded**: the app runs in the nginx worker, on a pool of Python threads owned by the
//!   worker; the event loop never waits for Python.
//! - **daemon**: requests go to a supervised pool of Python processes over uwsgi.
//!
//! Layout (the Apache module, crates/apache, has the same files for the same jobs):
//! - `lib` (this file): the C-shaped statics nginx looks up when it loads the module (the module
//!   descriptor, its directive table, its http context) and the process hooks;
//! - `conf`: the typed configuration and its merge rule; `directives`: the directive handlers;
//! - `handler`: the content handler, the one visible branch between the modes;
//! - `request`: what both modes take from nginx's request (the CGI vars);
//! - `embedded/`: embedded mode (the event-loop side, the Python threads, and the hand-off
//!   between them; its mod.rs lists the files);
//! - `daemon`: daemon mode, forwarding a request to its group through nginx's upstream module;
//!   `daemon_send`: its sending side (the body while the response comes back, the abort mark);
//! - `supervise`: daemon mode in the master: starting, keeping and stopping the groups;
//! - `metrics`: the counters' shared zone, what a request records, the `wsgi_metrics` endpoint;
//! - `keeper`: the small process per group, between the master and the group's supervisor,
//!   that starts the supervisor again when it dies;
//! - `log`: nginx's error log, for a request and for pyhost.
//!
//! lib.rs names the other files' callbacks and they reach their configuration through its
//! descriptor ([`WsgiModule`]), as a C module's callbacks name its `ngx_module_t`; apart from that,
//! no file imports a file that imports it back.

// Unit tests build without the nginx-facing modules, so some items are unused there.
#![cfg_attr(test, allow(dead_code))]

// Unit-tested without nginx (embedded/ and request.rs leave their nginx-facing parts out of test
// builds themselves).
mod conf;
mod embedded;
mod keeper;
mod log;
mod request;
mod upstream;

// Code that calls into nginx. A unit-test executable has no nginx to link against, so these are
// left out of `cargo test` and exercised by the end-to-end tests (tests/test_nginx_module_*.py).
#[cfg(not(test))]
mod daemon;
#[cfg(not(test))]
mod daemon_send;
#[cfg(not(test))]
mod directives;
#[cfg(not(test))]
mod handler;
#[cfg(not(test))]
mod metrics;
#[cfg(not(test))]
mod supervise;

#[cfg(not(test))]
pub use statics::{ngx_http_wsgi_module, WsgiModule};

/// The module descriptor, directive table and http context: what nginx looks up in the .so.
#[cfg(not(test))]
mod statics {
    use crate::{conf, directives, embedded, metrics, supervise};

    use std::ffi::{c_char, c_void, CStr};
    use std::ptr::{addr_of, addr_of_mut};

    use ngx::ffi::{
        ngx_command_t, ngx_conf_t, ngx_cycle_t, ngx_http_module_t, ngx_int_t, ngx_module_t,
        ngx_str_t, ngx_uint_t, NGX_CONF_1MORE, NGX_CONF_FLAG, NGX_CONF_NOARGS, NGX_CONF_TAKE1,
        NGX_CONF_TAKE1234, NGX_CONF_TAKE2, NGX_CONF_TAKE23, NGX_ERROR, NGX_HTTP_LOC_CONF,
        NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_MODULE,
        NGX_HTTP_SRV_CONF, NGX_LOG_EMERG, NGX_OK,
    };
    use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf};

    /// Typed access to this module's configuration (ngx's `HttpModule*Conf` traits).
    pub struct WsgiModule;

    impl HttpModule for WsgiModule {
        fn module() -> &'static ngx_module_t {
            // SAFETY: the module static is only mutated by nginx while loading the module (it sets
            // ctx_index/index), before any code reads it through this function.
            unsafe { &*addr_of!(ngx_http_wsgi_module) }
        }
    }

    // SAFETY: create_main_conf allocates a conf::MainConf for this module's main conf slot.
    unsafe impl HttpModuleMainConf for WsgiModule {
        type MainConf = conf::MainConf;
    }

    // SAFETY: create_loc_conf allocates a conf::LocConf for this module's loc conf slots.
    unsafe impl HttpModuleLocationConf for WsgiModule {
        type LocationConf = conf::LocConf;
    }

    type SetFn =
        unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char;

    /// One directive. The name is a C string: nginx compares names with `strcmp`.
    const fn command(name: &'static CStr, type_: u32, set: SetFn, conf: usize) -> ngx_command_t {
        ngx_command_t {
            name: ngx_str_t {
                len: name.to_bytes().len(),
                data: name.as_ptr().cast_mut().cast(),
            },
            type_: type_ as ngx_uint_t,
            set: Some(set),
            conf,
            offset: 0,
            post: std::ptr::null_mut(),
        }
    }

    const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

    /// A daemon-mode directive (http, server, location; upstream.rs).
    const fn daemon(name: &'static CStr, args: u32, set: SetFn) -> ngx_command_t {
        command(name, ANY_LEVEL | args, set, NGX_HTTP_LOC_CONF_OFFSET)
    }

    /// The directive table (null-terminated, as nginx expects).
    static mut COMMANDS: [ngx_command_t; 25] = [
        command(
            c"wsgi_script",
            NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
            directives::set_script,
            NGX_HTTP_LOC_CONF_OFFSET,
        ),
        command(
            c"wsgi_callable",
            ANY_LEVEL | NGX_CONF_TAKE1,
            directives::set_callable,
            NGX_HTTP_LOC_CONF_OFFSET,
        ),
        command(
            c"wsgi_interface",
            ANY_LEVEL | NGX_CONF_TAKE1,
            directives::set_interface,
            NGX_HTTP_LOC_CONF_OFFSET,
        ),
        command(
            c"wsgi_process_group",
            ANY_LEVEL | NGX_CONF_TAKE1,
            directives::set_process_group,
            NGX_HTTP_LOC_CONF_OFFSET,
        ),
        command(
            c"wsgi_daemon_process",
            NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE,
            directives::set_daemon_process,
            NGX_HTTP_MAIN_CONF_OFFSET,
        ),
        command(
            c"wsgi_python_home",
            NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
            directives::set_python_home,
            NGX_HTTP_MAIN_CONF_OFFSET,
        ),
        command(
            c"wsgi_python_path",
            NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
            directives::set_python_path,
            NGX_HTTP_MAIN_CONF_OFFSET,
        ),
        command(
            c"wsgi_threads",
            NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
            directives::set_threads,
            NGX_HTTP_MAIN_CONF_OFFSET,
        ),
        command(
            c"wsgi_metrics",
            NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
            directives::set_metrics,
            NGX_HTTP_LOC_CONF_OFFSET,
        ),
        command(
            c"wsgi_param",
            ANY_LEVEL | NGX_CONF_TAKE23,
            directives::set_param,
            NGX_HTTP_LOC_CONF_OFFSET,
        ),
        command(
            c"wsgi_request_timeout",
            ANY_LEVEL | NGX_CONF_TAKE1,
            directives::set_request_timeout,
            NGX_HTTP_LOC_CONF_OFFSET,
        ),
        daemon(
            c"wsgi_connect_timeout",
            NGX_CONF_TAKE1,
            directives::set_connect_timeout,
        ),
        daemon(
            c"wsgi_send_timeout",
            NGX_CONF_TAKE1,
            directives::set_send_timeout,
        ),
        daemon(
            c"wsgi_read_timeout",
            NGX_CONF_TAKE1,
            directives::set_read_timeout,
        ),
        daemon(c"wsgi_buffering", NGX_CONF_FLAG, directives::set_buffering),
        daemon(
            c"wsgi_request_buffering",
            NGX_CONF_FLAG,
            directives::set_request_buffering,
        ),
        daemon(
            c"wsgi_buffer_size",
            NGX_CONF_TAKE1,
            directives::set_buffer_size,
        ),
        daemon(c"wsgi_buffers", NGX_CONF_TAKE2, directives::set_buffers),
        daemon(
            c"wsgi_max_temp_file_size",
            NGX_CONF_TAKE1,
            directives::set_max_temp_file_size,
        ),
        daemon(
            c"wsgi_temp_path",
            NGX_CONF_TAKE1234,
            directives::set_temp_path,
        ),
        daemon(
            c"wsgi_intercept_errors",
            NGX_CONF_FLAG,
            directives::set_intercept_errors,
        ),
        daemon(
            c"wsgi_hide_header",
            NGX_CONF_TAKE1,
            directives::set_hide_header,
        ),
        daemon(
            c"wsgi_pass_header",
            NGX_CONF_TAKE1,
            directives::set_pass_header,
        ),
        daemon(
            c"wsgi_next_upstream",
            NGX_CONF_1MORE,
            directives::set_next_upstream,
        ),
        // ngx_null_command
        ngx_command_t {
            name: ngx_str_t {
                len: 0,
                data: std::ptr::null_mut(),
            },
            type_: 0,
            set: None,
            conf: 0,
            offset: 0,
            post: std::ptr::null_mut(),
        },
    ];

    static HTTP_CTX: ngx_http_module_t = ngx_http_module_t {
        preconfiguration: None,
        postconfiguration: Some(metrics::postconfiguration),
        create_main_conf: Some(directives::create_main_conf),
        init_main_conf: None,
        create_srv_conf: None,
        merge_srv_conf: None,
        create_loc_conf: Some(directives::create_loc_conf),
        merge_loc_conf: Some(directives::merge_loc_conf),
    };

    ngx::ngx_modules!(ngx_http_wsgi_module);

    /// The module descriptor. `ngx_module_t::default()` fills in the version and the module
    /// signature of the nginx tree we were built against: nginx refuses the module if they differ.
    #[used]
    #[allow(non_upper_case_globals)]
    pub static mut ngx_http_wsgi_module: ngx_module_t = ngx_module_t {
        ctx: addr_of!(HTTP_CTX) as *mut c_void,
        // Taking the address of the static table (no reference is created); nginx only reads it.
        commands: addr_of_mut!(COMMANDS) as *mut ngx_command_t,
        type_: NGX_HTTP_MODULE as ngx_uint_t,
        init_module: Some(init_module),
        init_process: Some(init_process),
        exit_process: Some(exit_process),
        ..ngx_module_t::default()
    };

    /// Runs in the master at start and on each reload (and for `nginx -t`/`-s`): daemon groups.
    extern "C" fn init_module(cycle: *mut ngx_cycle_t) -> ngx_int_t {
        // SAFETY: nginx passes the cycle being initialised, on its main thread. The metrics
        // slots are registered before the daemon groups fork (they inherit them).
        let result = std::panic::catch_unwind(|| unsafe {
            metrics::init_module(cycle);
            supervise::init_module(cycle)
        });
        let (lines, failed) = match result {
            Ok(Ok(lines)) => (lines, None),
            Ok(Err(msg)) => (Vec::new(), Some(msg)),
            Err(_) => (
                Vec::new(),
                Some("wsgi: RW-NG090 internal error while starting daemon groups".to_string()),
            ),
        };
        for line in lines {
            // SAFETY: the cycle log is valid during init_module.
            unsafe { ngx::log::log_error(line.level, (*cycle).log, 0, line.text.as_bytes()) };
        }
        match failed {
            None => NGX_OK as ngx_int_t,
            Some(msg) => {
                // SAFETY: as above.
                unsafe {
                    ngx::log::log_error(NGX_LOG_EMERG as usize, (*cycle).log, 0, msg.as_bytes())
                };
                NGX_ERROR as ngx_int_t
            }
        }
    }

    /// Runs in each worker process after fork (never in the master, never for `nginx -t`).
    extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
        // Only the master may hold the daemon groups' lifetime pipes (not with master_process
        // off, where this process is the master).
        // SAFETY: reading nginx's process-role global on the main thread.
        let role = unsafe { ngx::ffi::ngx_process } as u32;
        if role == ngx::ffi::NGX_PROCESS_WORKER || role == ngx::ffi::NGX_PROCESS_HELPER {
            let _ = std::panic::catch_unwind(supervise::close_in_worker);
        }
        if role == ngx::ffi::NGX_PROCESS_WORKER {
            // SAFETY: nginx passes the worker's live cycle, on the event-loop thread.
            let _ = std::panic::catch_unwind(|| unsafe { crate::daemon::schedule_worker(cycle) });
        }
        // SAFETY: nginx passes the worker's live cycle, on the event-loop thread.
        let result = std::panic::catch_unwind(|| unsafe { embedded::start(cycle) });
        let msg = match result {
            Ok(Ok(())) => {
                let _ =
                    std::panic::catch_unwind(|| metrics::init_process(embedded::python_threads()));
                return NGX_OK as ngx_int_t;
            }
            Ok(Err(msg)) => msg,
            Err(_) => "wsgi: RW-NG090 internal error while starting the worker".to_string(),
        };
        // SAFETY: the cycle log is valid during init_process.
        unsafe { ngx::log::log_error(NGX_LOG_EMERG as usize, (*cycle).log, 0, msg.as_bytes()) };
        NGX_ERROR as ngx_int_t
    }

    /// Runs in each worker process before it exits.
    extern "C" fn exit_process(_cycle: *mut ngx_cycle_t) {
        let _ = std::panic::catch_unwind(embedded::stop);
        let _ = std::panic::catch_unwind(embedded::leave_seat);
        let _ = std::panic::catch_unwind(metrics::exit_process);
    }
}
