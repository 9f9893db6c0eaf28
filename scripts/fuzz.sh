#!/usr/bin/env bash
# Run every cargo-fuzz target of one fuzz folder for SECONDS each (default 60):
#   scripts/fuzz.sh crates/uwsgi/fuzz 15
# Installs cargo-fuzz if missing. Only stable Rust is assumed: RUSTC_BOOTSTRAP=1 lets cargo-fuzz
# pass its -Z sanitizer flags. A crash fails the script; the reproducer is left in
# artifacts/<target>/ of that folder.
set -euo pipefail

dir="${1:?usage: $0 FUZZ_DIR [SECONDS]}"
seconds="${2:-60}"
case "$seconds" in
    '' | *[!0-9]*) echo "usage: $0 FUZZ_DIR [SECONDS]" >&2; exit 2 ;;
esac

cd "$dir"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

for target in $(cargo fuzz list); do
    # corpus/<target> grows between runs (ignored by git); seeds/<target> is the committed start.
    mkdir -p "corpus/$target"
    seeds=()
    if [ -d "seeds/$target" ]; then
        seeds=("seeds/$target")
    fi
    echo "== fuzzing $target for ${seconds}s"
    cargo fuzz run "$target" "corpus/$target" "${seeds[@]}" -- -max_total_time="$seconds"
done
