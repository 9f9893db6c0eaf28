#!/usr/bin/env bash
# Run every websocket fuzz target for SECONDS each (default 60); see scripts/fuzz.sh, which runs
# the fuzz crates of all the protocol crates.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec bash "$here/../../../scripts/fuzz.sh" "${1:-60}" "$here"
