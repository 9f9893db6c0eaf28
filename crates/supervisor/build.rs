//! `rwsgi-worker` (and this package's test executables) link the interpreter's static archive
//! into a non-PIE executable: Debian compiles that archive with profile-guided optimisation and
//! without -fPIC, as its own /usr/bin/python3.11, and it runs a Django request in 10% fewer
//! instructions than libpython3.11.so. crates/pyhost/build.rs explains the choice and works out
//! the arguments; docs/building.md ("Which libpython") what it means for packaging.

use std::env;

fn main() {
    println!("cargo::rerun-if-env-changed=DEP_RWSGI_PYTHON_LINK_STATIC_EXECUTABLE");
    let libpython = env::var("DEP_RWSGI_PYTHON_LINK_STATIC_EXECUTABLE")
        .expect("pyhost's build script publishes DEP_RWSGI_PYTHON_LINK_STATIC_EXECUTABLE");
    for arg in libpython.split(' ') {
        println!("cargo::rustc-link-arg={arg}");
    }
}
