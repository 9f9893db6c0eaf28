//! `rwsgi-worker` (and this package's test executables) link the interpreter's static archive
//! into a non-PIE executable: Debian compiles that archive with profile-guided optimisation and
//! without -fPIC, as its own /usr/bin/python3.11, and it runs a Django request in 10% fewer
//! instructions than libpython3.11.so. crates/pyhost/build.rs explains the choice and works out
//! the arguments; docs/building.md ("Which libpython") what it means for packaging.

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    hosted_abi();
    println!("cargo::rerun-if-env-changed=DEP_RWSGI_PYTHON_LINK_STATIC_EXECUTABLE");
    let libpython = env::var("DEP_RWSGI_PYTHON_LINK_STATIC_EXECUTABLE")
        .expect("pyhost's build script publishes DEP_RWSGI_PYTHON_LINK_STATIC_EXECUTABLE");
    for arg in libpython.split(' ') {
        println!("cargo::rustc-link-arg={arg}");
    }
}

/// `RWSGI_HOSTED_ABI` (src/hosted.rs): the version and a digest (FNV-1a, 64 bits) of the sources
/// of every crate a daemon group runs, so that a module hands its group only to an
/// `rwsgi-worker` built from the same code.
fn hosted_abi() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let crates = manifest.parent().expect("crates/");
    let mut files = Vec::new();
    for name in [
        "supervisor",
        "pyhost",
        "uwsgi",
        "gateway",
        "metrics",
        "websocket",
        "uwsgi-ini",
    ] {
        let src = crates.join(name).join("src");
        println!("cargo::rerun-if-changed={}", src.display());
        collect(&src, &mut files);
    }
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in &files {
        let rel = file.strip_prefix(crates).unwrap_or(file);
        let bytes = std::fs::read(file).expect("a source file");
        for b in rel.to_string_lossy().bytes().chain([0]).chain(bytes) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let version = env::var("CARGO_PKG_VERSION").expect("set by cargo");
    println!("cargo::rustc-env=RWSGI_HOSTED_ABI={version}-{hash:016x}");
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}
