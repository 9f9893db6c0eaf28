#!/bin/sh
# Make a --with-compat configured copy of the nginx header tree the module is built against.
#
# Usage: ngx-headers/configure.sh [SRC_DIR [DEST_DIR]]
#   SRC_DIR  defaults to /usr/share/nginx/src (Debian's nginx-dev: headers, auto/, configure,
#            conf_flags; no .c files)
#   DEST_DIR defaults to build/nginx-src under the repository root
#
# Idempotent: does nothing when DEST_DIR/objs/ngx_auto_config.h is newer than SRC_DIR/conf_flags.
# See ngx-headers/README.md for why the copy must be configured with the binary's own flags.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
src=${1:-/usr/share/nginx/src}
dest=${2:-$root/build/nginx-src}

if [ ! -f "$src/configure" ] || [ ! -f "$src/conf_flags" ]; then
    echo "ngx-headers: $src is not an nginx-dev tree (need configure and conf_flags;" \
         "on Debian: apt-get install nginx-dev)" >&2
    exit 1
fi

if [ -f "$dest/objs/ngx_auto_config.h" ] && [ "$dest/objs/ngx_auto_config.h" -nt "$src/conf_flags" ]; then
    exit 0
fi

rm -rf "$dest.tmp"
mkdir -p "$(dirname "$dest")"
cp -a "$src" "$dest.tmp"
(
    cd "$dest.tmp"
    # conf_flags defines the NGX_CONF_FLAGS bash array the packaged binary was configured with
    # (it includes --with-compat, which fixes the module signature).
    bash -c '. ./conf_flags && ./configure "${NGX_CONF_FLAGS[@]}"' >configure.log 2>&1 || {
        echo "ngx-headers: configure failed, see $dest.tmp/configure.log" >&2
        exit 1
    }
)
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "ngx-headers: configured $dest"
