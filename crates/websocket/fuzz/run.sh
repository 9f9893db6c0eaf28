#!/usr/bin/env bash
# Run every websocket fuzz target for SECONDS each (default 60): scripts/fuzz.sh on this folder.
exec bash "$(dirname "$0")/../../../scripts/fuzz.sh" "$(dirname "$0")" "${1:-60}"
