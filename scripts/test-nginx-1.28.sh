#!/usr/bin/env bash
# The nginx end-to-end tests again, against a second nginx: 1.28 built from source (its source is
# the `nginx-src` crate on crates.io) with the module compiled against that tree. Proves the module
# builds and works on a current nginx, not only Debian 12's 1.22.1. scripts/test.sh runs it.
#
#   bash scripts/test-nginx-1.28.sh [PYTEST ARGS...]   (default: every nginx test file)
#
# Steps (each is skipped when already done):
#   1. ngx-headers/build-nginx.sh: nginx 1.28 configured --with-compat and compiled in build/nginx-1.28
#   2. the module (root package only) built against it, in its own target dir target/nginx-1.28
#      (so the main build in target/release is never rebuilt or overwritten)
#   3. pytest with RWSGI_NGINX_BIN / RWSGI_NGINX_MODULE pointing at that pair (tests/harness/paths.py)
# Expects scripts/setup.sh to have run (packages, build/venv, the main build).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
say() { printf '\n==> %s\n' "$*"; }
if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

NGX="$ROOT/build/nginx-1.28"
say "nginx 1.28 from source (ngx-headers/build-nginx.sh $NGX)"
sh ngx-headers/build-nginx.sh "$NGX"

say "the module against nginx 1.28 (target/nginx-1.28)"
NGINX_SOURCE_DIR="$NGX" NGINX_BUILD_DIR="$NGX/objs" CARGO_TARGET_DIR="$ROOT/target/nginx-1.28" \
    cargo build --release -p ngx_http_wsgi_module
# The module's daemon groups exec the rwsgi-worker beside it (crates/supervisor/src/hosted.rs):
# the workspace build's carries the same sources' ABI string, so a copy of it serves.
if [[ -x "$ROOT/target/release/rwsgi-worker" ]]; then
    cp -f "$ROOT/target/release/rwsgi-worker" "$ROOT/target/nginx-1.28/release/rwsgi-worker"
fi

export RWSGI_NGINX_BIN="$NGX/objs/nginx"
export RWSGI_NGINX_MODULE="$ROOT/target/nginx-1.28/release/libngx_http_wsgi_module.so"
"$RWSGI_NGINX_BIN" -v

if (($# == 0)); then
    # Every test of the nginx module, and `rwsgi serve` (which runs nginx with the module).
    set -- tests/test_nginx_module_*.py tests/test_nginx_accept_balance.py tests/test_serve.py
fi
say "nginx tests against $("$RWSGI_NGINX_BIN" -v 2>&1 | sed 's/.*: //'): pytest $*"
build/venv/bin/pytest -q -p no:cacheprovider "$@"
