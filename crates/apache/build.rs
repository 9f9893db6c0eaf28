//! Generates Rust bindings for the httpd 2.4 / APR API this module uses.
//!
//! Include paths come from the tools apache2-dev ships (`apxs`, `apr-1-config`, `apu-1-config`),
//! so the bindings always describe the httpd we are loaded into. No link flags for httpd: the
//! `ap_*`/`apr_*` symbols resolve at load time against /usr/sbin/apache2 and libapr, which the
//! server has already loaded when it dlopen()s us. libpython is linked as the shared library
//! (only position-independent code can be dlopen()ed; crates/pyhost/build.rs has the arguments).

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// Runs `tool args...` and returns its trimmed stdout, or None if the tool is missing or fails.
fn query(tool: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(tool).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-env-changed=DEP_RWSGI_PYTHON_LINK_SHARED");
    let libpython = env::var("DEP_RWSGI_PYTHON_LINK_SHARED")
        .expect("pyhost's build script publishes DEP_RWSGI_PYTHON_LINK_SHARED");
    for arg in libpython.split(' ') {
        println!("cargo:rustc-link-arg={arg}");
    }
    println!("cargo:rerun-if-env-changed=APXS");
    let apxs = env::var("APXS").unwrap_or_else(|_| "apxs".to_owned());
    let httpd_inc =
        query(&apxs, &["-q", "INCLUDEDIR"]).unwrap_or_else(|| "/usr/include/apache2".to_owned());

    let mut clang_args = vec![format!("-I{httpd_inc}")];
    for (tool, args) in [
        ("apr-1-config", &["--includes", "--cppflags"][..]),
        ("apu-1-config", &["--includes"][..]),
    ] {
        match query(tool, args) {
            Some(flags) => clang_args.extend(flags.split_whitespace().map(str::to_owned)),
            None if tool == "apr-1-config" => clang_args.extend(
                [
                    "-I/usr/include/apr-1.0",
                    "-DLINUX",
                    "-D_REENTRANT",
                    "-D_GNU_SOURCE",
                ]
                .map(String::from),
            ),
            None => {}
        }
    }

    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(&clang_args)
        .allowlist_function("ap_.*|apr_.*")
        .allowlist_type("request_rec|module_struct|module|command_rec|cmd_parms|server_rec|process_rec|conn_rec")
        .allowlist_type("ap_bucket_error|apr_bucket.*|apr_table_entry_t|ap_conn_keepalive_e|unixd_config_rec|apr_proc_t|apr_file_t")
        .allowlist_type("scoreboard|process_score|worker_score")
        .allowlist_var("ap_scoreboard_image|SERVER_DEAD|SERVER_READY")
        .allowlist_var("MODULE_MAGIC_.*|APR_HOOK_.*|OK|DECLINED|DONE|HTTP_.*|APLOG_.*|OR_.*|ACCESS_CONF|RSRC_CONF")
        .allowlist_var("AP_SQ_.*|APR_FOPEN_READ|ap_unixd_config|APR_OC_REASON_.*|REQUEST_CHUNKED_.*|AP_MPMQ_.*|APR_SUCCESS|M_.*|AP_REQ_.*|NOT_IN_.*|GLOBAL_ONLY|OPT_.*")
        .generate_cstr(true)
        .layout_tests(false)
        .derive_default(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| panic!("bindgen over the httpd headers failed ({e}); is apache2-dev installed?"));

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("httpd.rs");
    bindings
        .write_to_file(&out)
        .unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
