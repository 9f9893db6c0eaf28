//! How our artifacts link the Python interpreter (docs/building.md, "Which libpython").
//!
//! Debian builds CPython 3.11 twice, and the two builds run the same Python code in different
//! numbers of instructions (bench/results/2026-12-04-static-libpython.md):
//!
//! - the static build, compiled without `-fPIC` and with profile-guided optimisation, is
//!   `/usr/bin/python3.11` and `libpython3.11.a` (the objects that executable is made of, less
//!   its link-time optimisation);
//! - the shared build, compiled with `-fPIC`, without PGO and without
//!   `-fno-semantic-interposition` (so no exported function is inlined), is
//!   `libpython3.11.so.1.0` and `libpython3.11-pic.a`.
//!
//! A module that nginx or httpd `dlopen()`s must be position independent: the web-server modules
//! link the shared library (`link_shared`). An executable can be made non-PIE and take the
//! archive: `rwsgi-worker` and our test executables link it whole (`link_static_executable`),
//! 10% fewer instructions per Django request. pyo3 is told not to link libpython itself
//! (`suppress_build_script_link_lines` in the PYO3_CONFIG_FILE that .cargo/config.toml names),
//! because its link line would reach every artifact alike; this script works out both link lines
//! and hands them to the packages that build artifacts (each depends on pyhost directly, so it
//! reads them as `DEP_RWSGI_PYTHON_LINK_SHARED` / `DEP_RWSGI_PYTHON_LINK_STATIC_EXECUTABLE`) and
//! uses the static one for pyhost's own tests and benches.

use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let config = pyo3_build_config::get();
    // Without the file (cargo run from outside the checkout does not read its .cargo/config.toml)
    // pyo3 would link whichever python3 is on PATH as well, and rwsgi-worker would map two
    // interpreters.
    assert!(
        config.suppress_build_script_link_lines(),
        "pyo3 is not configured from crates/pyhost/pyo3-python3.11.txt: run cargo inside the \
         checkout, so that .cargo/config.toml sets PYO3_CONFIG_FILE (docs/building.md, \
         \"Which libpython\")"
    );
    let (Some(lib_name), Some(python)) = (config.lib_name(), config.executable()) else {
        panic!(
            "the pyo3 configuration (PYO3_CONFIG_FILE, .cargo/config.toml) must name lib_name \
             and executable"
        );
    };
    // The directories come from the interpreter, not from the file, so the one file serves
    // every Debian architecture (LIBDIR is /usr/lib/<multiarch>).
    let vars = sysconfig(
        python,
        &["LIBDIR", "LIBPL", "LIBRARY", "LIBS", "SYSLIBS", "MODLIBS"],
    );
    let shared = vec![format!("-L{}", vars[0]), format!("-l{lib_name}")];
    let static_executable = static_executable_args(&vars[1..]);
    publish("link_shared", &shared);
    publish("link_static_executable", &static_executable);
    for arg in &static_executable {
        println!("cargo::rustc-link-arg={arg}");
    }
}

/// The link arguments that put the interpreter's static archive into a non-PIE executable, as
/// CPython's own Makefile links `python`: every object of the archive (C extension modules may
/// use any API function, not only those our code reaches), the libraries it needs, and the C
/// API exported to the modules the process loads (`_ssl`, numpy, ...), which look its symbols up
/// in the global scope. Every symbol libpython exports starts with `Py` or `_Py`; exporting only
/// those keeps our own Rust symbols out of the dynamic symbol table.
///
/// `vars` are the interpreter's LIBPL, LIBRARY, LIBS, SYSLIBS and MODLIBS.
fn static_executable_args(vars: &[String]) -> Vec<String> {
    let archive = format!("{}/{}", vars[0], vars[1]);
    println!("cargo::rerun-if-changed={archive}");
    assert!(
        std::path::Path::new(&archive).is_file(),
        "{archive} is missing: rwsgi-worker links the interpreter's static archive, which Debian \
         ships in libpython3.11-dev (scripts/setup.sh installs it)"
    );
    let mut args: Vec<String> = [
        // The archive's objects use absolute 32-bit relocations (R_X86_64_32S): they cannot be
        // placed in a position-independent executable. rustc asks for -pie; the last one wins.
        "-no-pie",
        "-Wl,--export-dynamic-symbol=Py*",
        "-Wl,--export-dynamic-symbol=_Py*",
        "-Wl,--whole-archive",
    ]
    .map(String::from)
    .to_vec();
    args.push(archive);
    args.push("-Wl,--no-whole-archive".to_string());
    for lib in vars[2..].iter().flat_map(|v| v.split_whitespace()) {
        if !args.iter().any(|a| a == lib) {
            args.push(lib.to_string());
        }
    }
    args
}

/// `sysconfig.get_config_var(name)` of `python` for each name, in order ("" when unset).
fn sysconfig(python: &str, names: &[&str]) -> Vec<String> {
    let script =
        format!("import sysconfig\nfor n in {names:?}: print(sysconfig.get_config_var(n) or '')");
    let out = Command::new(python)
        .args(["-I", "-c", &script])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} (pyo3's executable): {e}"));
    assert!(
        out.status.success(),
        "{python} failed to report its sysconfig: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("sysconfig values are UTF-8");
    let values: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(
        values.len(),
        names.len(),
        "{python}: unexpected sysconfig output {text:?}"
    );
    values
}

/// Hands `args` to the build scripts of the packages that depend on pyhost directly, as
/// `DEP_RWSGI_PYTHON_<NAME>` (space-separated; no argument may contain a space).
fn publish(name: &str, args: &[String]) {
    assert!(
        args.iter().all(|a| !a.contains(char::is_whitespace)),
        "a libpython link argument contains white space: {args:?}"
    );
    println!("cargo::metadata={name}={}", args.join(" "));
}
