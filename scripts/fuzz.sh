#!/usr/bin/env bash
# Run every cargo-fuzz target of the protocol crates for SECONDS each (default 60).
#
#   scripts/fuzz.sh [SECONDS] [FUZZ_DIR...]     FUZZ_DIR defaults to every crates/*/fuzz
#
# Installs cargo-fuzz if missing. Only stable Rust is assumed: RUSTC_BOOTSTRAP=1 lets cargo-fuzz
# pass its -Z sanitizer flags. A crash fails the script; the reproducer is left in
# FUZZ_DIR/artifacts/<target>/. Each target starts from FUZZ_DIR/seeds/<target> (committed) and
# FUZZ_DIR/corpus/<target> (grows between runs, ignored by git).
set -euo pipefail

seconds="${1:-60}"
case "$seconds" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS] [FUZZ_DIR...]" >&2; exit 2 ;;
esac
shift || true

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dirs=("$@")
if [ ${#dirs[@]} -eq 0 ]; then
    dirs=("$root"/crates/*/fuzz)
fi
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

for dir in "${dirs[@]}"; do
    (
        cd "$dir"
        for target in $(cargo fuzz list); do
            mkdir -p "corpus/$target"
            seeds=()
            if [ -d "seeds/$target" ]; then
                seeds=("seeds/$target")
            fi
            name="$(basename "$(dirname "$PWD")")/$target"
            echo "== fuzzing $name for ${seconds}s"
            log="corpus/$target.log"
            if ! cargo fuzz run "$target" "corpus/$target" "${seeds[@]}" \
                -- -max_total_time="$seconds" >"$log" 2>&1; then
                tail -n 40 "$log" >&2
                echo "fuzz target $name failed: reproducer in $PWD/artifacts/$target/" >&2
                exit 1
            fi
            # libFuzzer's last lines: "#N DONE cov: .. corp: .." and "Done N runs in T second(s)".
            grep -E '^(#[0-9]+[[:space:]]+DONE|Done [0-9]+ runs)' "$log" || tail -n 3 "$log"
        done
    )
done
