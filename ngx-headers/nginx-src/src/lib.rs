//! Empty on purpose: see Cargo.toml (this package only pins the `nginx-src` download).
