#!/usr/bin/env bash
# The README's test command (and what .ci/run runs): setup, Rust tests, the lints the workspace
# declares (clippy, warnings as errors), a short fuzz run, the end-to-end suite against Debian's
# real nginx and Apache (the package test in it builds the .debs with scripts/build-debs.sh,
# lintian included), then the nginx tests again against nginx 1.28 built from source
# (scripts/test-nginx-1.28.sh). Fails on the first failing stage.
# PYTEST ARGS, when given, select tests of the Debian-nginx stage and skip the 1.28 stage.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
say() { printf '\n==> %s\n' "$*"; }

bash scripts/setup.sh
if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

say "cargo test --release --workspace"
cargo test --release --workspace

# [workspace.lints] in Cargo.toml (SAFETY notes, # Safety sections) are only checked by clippy.
say "cargo clippy --release --workspace --all-targets -- -D warnings"
if ! cargo clippy --version >/dev/null 2>&1; then
    echo "test.sh: cargo clippy is missing; install it with: rustup component add clippy" >&2
    exit 1
fi
cargo clippy --release --workspace --all-targets -- -D warnings

# Every fuzz target of the protocol crates (uwsgi: 2, gateway: 3, websocket: 1) for 10 s each, from the
# committed seeds: a smoke test that the parsers still hold; longer runs: scripts/fuzz.sh 600.
say "fuzzing the protocol parsers briefly (scripts/fuzz.sh 10)"
bash scripts/fuzz.sh 10

say "end-to-end tests: build/venv/bin/pytest -q tests/"
set +e
build/venv/bin/pytest -q tests/ "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
    echo "test.sh: pytest collected no tests; that is a failure here" >&2
    exit 1
fi
((rc == 0)) || exit $rc

if (($# == 0)); then
    say "the nginx tests against nginx 1.28 (scripts/test-nginx-1.28.sh)"
    bash scripts/test-nginx-1.28.sh
fi
