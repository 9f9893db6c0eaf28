#!/bin/sh
# Build a second, current nginx from source, to prove (and test) that the module builds against
# any nginx configured with --with-compat, not only Debian's 1.22.1.
#
# Usage: ngx-headers/build-nginx.sh [DEST_DIR]
#   DEST_DIR defaults to build/nginx-1.28 under the repository root. Afterwards it holds the
#   configured and compiled tree: DEST_DIR/objs/nginx is the binary, and DEST_DIR (with
#   DEST_DIR/objs) is what NGINX_SOURCE_DIR / NGINX_BUILD_DIR name to build the module for it.
#
# The source is the `nginx-src` crate on crates.io (the one ngx-rust's vendored builds use),
# pinned in ngx-headers/nginx-src/Cargo.{toml,lock}; cargo downloads it into its registry cache
# and `cargo metadata` says where. So the only network this needs is the crate registry, and a
# second run is offline. pcre2, zlib and OpenSSL come from Debian's -dev packages (libpcre2-dev,
# zlib1g-dev, libssl-dev; nginx-dev depends on all three).
#
# Idempotent: nothing happens when DEST_DIR/objs/nginx exists and was built from the same
# source with the same flags (DEST_DIR/.rwsgi-build-stamp).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/build/nginx-1.28}
manifest=$root/ngx-headers/nginx-src/Cargo.toml

# What our tests and `rwsgi serve` need beyond nginx's defaults (the http core, proxy, uwsgi,
# fastcgi, scgi, static, gzip, rewrite with PCRE are built in):
#   --with-compat    the module signature every dynamic module build relies on
#   --with-threads   as Debian builds it (part of the signature's ABI choices)
#   --with-debug     tests read debug log lines (e.g. "sendfile: @0")
#   --with-http_ssl_module / --with-pcre-jit   as every distribution builds it; also compiles
#                    the module's `ngx_feature = "ssl"` code path (HTTPS detection)
# Paths point into DEST_DIR; the tests always pass -p/-e/-c and set every temp path.
flags="--with-compat --with-threads --with-debug --with-http_ssl_module --with-pcre-jit
--error-log-path=stderr"

command -v cargo >/dev/null 2>&1 || PATH="$HOME/.cargo/bin:$PATH"
host=$(rustc -vV | sed -n 's/^host: //p')
src=$(cargo metadata --locked --format-version 1 --manifest-path "$manifest" \
          --filter-platform "$host" |
      python3 -c 'import json, sys, os
m = json.load(sys.stdin)
p = [p for p in m["packages"] if p["name"] == "nginx-src"]
print(os.path.join(os.path.dirname(p[0]["manifest_path"]), "nginx"))')
[ -f "$src/auto/configure" ] || { echo "build-nginx: no nginx source at $src" >&2; exit 1; }
version=$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$src/src/core/nginx.h")
stamp="$src $version $flags"

if [ -x "$dest/objs/nginx" ] && [ "$(cat "$dest/.rwsgi-build-stamp" 2>/dev/null)" = "$stamp" ]; then
    exit 0
fi

echo "build-nginx: nginx $version from $src -> $dest"
rm -rf "$dest.tmp"
mkdir -p "$(dirname "$dest")"
cp -a "$src" "$dest.tmp"
chmod -R u+w "$dest.tmp"
(
    cd "$dest.tmp"
    # shellcheck disable=SC2086 # $flags is a word list on purpose
    auto/configure --prefix="$dest" $flags >configure.log 2>&1 || {
        echo "build-nginx: configure failed, see $dest.tmp/configure.log" >&2
        exit 1
    }
    make -j"$(nproc)" -f objs/Makefile >make.log 2>&1 || {
        echo "build-nginx: make failed, see $dest.tmp/make.log" >&2
        exit 1
    }
)
printf '%s\n' "$stamp" >"$dest.tmp/.rwsgi-build-stamp"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
"$dest/objs/nginx" -V 2>&1 | head -n 1
