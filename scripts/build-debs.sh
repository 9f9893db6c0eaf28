#!/usr/bin/env bash
# Debian 12 packages from the release build, offline:
#
#   libnginx-mod-http-wsgi   /usr/lib/nginx/modules/ngx_http_wsgi_module.so, enabled through
#                            /etc/nginx/modules-enabled/50-mod-http-wsgi.conf, Depends: nginx-abi-1.22.1-7
#   libapache2-mod-rwsgi     /usr/lib/apache2/modules/mod_rwsgi.so, mods-available/rwsgi.{load,conf}
#   rwsgi-worker             /usr/bin/rwsgi-worker, /usr/bin/rwsgi (rwsgi serve), rwsgi-worker@.service
#
#   bash scripts/build-debs.sh [OUT_DIR]      (default target/debs; needs cargo build --release first)
#
# Why debhelper rather than a hand-assembled dpkg-deb tree: Debian's own module packages are
# made with it, and the helpers they use are on the machine already (nginx-dev ships dh_nginx,
# apache2-dev ships dh_apache2). So our packages get exactly what Debian's get, without our
# re-implementing it: dh_nginx writes the modules-available file, the modules-enabled link
# scripts and the nginx-abi dependency (read from nginx-dev, so it follows Debian's nginx);
# dh_apache2 the a2enmod/a2dismod scripts and the apache2-api dependency; dh_shlibdeps computes
# the library dependencies (libpython3.11 for the modules, libc6) from the binaries (rwsgi-worker
# has the interpreter core linked in: debian/control adds its standard library and Built-Using,
# debian/rules the version, see docs/building.md "Which libpython"); dh_installsystemd handles
# the unit; dh_strip, dh_compress, dh_fixperms and dh_md5sums give lintian-clean files. Nothing
# is compiled: debian/rules (packaging/debian/rules) has empty build steps and packages the
# binaries this script copies from target/release.
#
# lintian runs on the result and fails the script on any error or warning. What remains, each
# explained:
#   - override initial-upload-closes-no-bugs (all three, packaging/debian/*.lintian-overrides):
#     these packages are not uploaded to the Debian archive, so there is no ITP bug to close.
#   - info hardening-no-fortify-functions (the two modules and rwsgi): _FORTIFY_SOURCE swaps C
#     calls such as memcpy for checked __memcpy_chk when C is compiled; Rust makes no such calls
#     (the language checks bounds), so there is nothing to fortify. (rwsgi-worker has CPython's
#     fortified C linked in, so lintian finds checked calls there.)
#   - override hardening-no-pie and embedded-library expat (rwsgi-worker): the interpreter core
#     it links is not position independent, and carries expat's messages in pyexpat.c (the
#     reasons are in packaging/debian/rwsgi-worker.lintian-overrides).
#   - info spelling-error-in-binary (rwsgi-worker, about ten): word fragments such as "ADDRES" in
#     the interpreter core's string data (libpython3.11.so.1.0 holds the same), not words of ours.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$(mkdir -p "${1:-$ROOT/target/debs}" && cd "${1:-$ROOT/target/debs}" && pwd)"
say() { printf '==> %s\n' "$*"; }
die() { printf 'build-debs.sh: ERROR: %s\n' "$*" >&2; exit 1; }

REL="${CARGO_TARGET_DIR:-$ROOT/target}/release"
declare -A ARTIFACTS=(
    [libngx_http_wsgi_module.so]=ngx_http_wsgi_module.so
    [libmod_rwsgi.so]=mod_rwsgi.so
    [rwsgi-worker]=rwsgi-worker
    [rwsgi]=rwsgi
)
for built in "${!ARTIFACTS[@]}"; do
    [[ -f $REL/$built ]] || die "$REL/$built missing: build first (cargo build --release --workspace, or scripts/setup.sh)"
done
for tool in dpkg-buildpackage dh dh_nginx dh_apache2 lintian; do
    command -v "$tool" >/dev/null || die "$tool missing: apt-get install debhelper nginx-dev apache2-dev lintian (scripts/setup.sh does)"
done

# The package version's upstream part is the workspace's version.
crate_version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
deb_version=$(sed -n '1s/^rwsgi (\(.*\)) .*/\1/p' packaging/debian/changelog)
[[ ${deb_version%-*} == "$crate_version" ]] ||
    die "packaging/debian/changelog says $deb_version, Cargo.toml $crate_version: add a changelog entry"

STAGE="$(mktemp -d /tmp/rwsgi-debs.XXXXXX)"
trap 'rm -rf "$STAGE"' EXIT
SRC="$STAGE/rwsgi-$crate_version"
mkdir -p "$SRC/artifacts/docs"
cp -a packaging/debian "$SRC/debian"
for built in "${!ARTIFACTS[@]}"; do
    cp "$REL/$built" "$SRC/artifacts/${ARTIFACTS[$built]}"
done
cp docs/rwsgi-worker.md docs/rwsgi-serve.md "$SRC/artifacts/docs/"

# Manual pages from the programs' own --help, so they never drift from the options.
# manpage NAME "one-line summary" DOC-FILE-NAME: the help text as a preformatted DESCRIPTION.
man_date=$(cd "$SRC" && dpkg-parsechangelog -S Date | xargs -I{} date -u -d {} +%Y-%m-%d)
manpage() {
    local name=$1 summary=$2 doc=$3 upper
    upper=$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')
    {
        printf '.TH %s 1 "%s" "rwsgi %s" "User Commands"\n' "$upper" "$man_date" "$crate_version"
        printf '.SH NAME\n%s \\- %s\n.SH DESCRIPTION\n.nf\n' "$name" "$summary"
        "$SRC/artifacts/$name" --help | sed -e 's/\\/\\e/g' -e 's/-/\\-/g' -e "s/^[.']/\\\\\&&/"
        printf '.fi\n.SH SEE ALSO\n/usr/share/doc/rwsgi-worker/%s.gz\n' "$doc"
    } >"$SRC/artifacts/man/$name.1"
}
mkdir -p "$SRC/artifacts/man"
manpage rwsgi "serve a WSGI app inside nginx with the rwsgi module" rwsgi-serve.md
manpage rwsgi-worker "a WSGI server speaking the uwsgi protocol" rwsgi-worker.md

say "dpkg-buildpackage -b (rwsgi $deb_version, binaries from $REL)"
(cd "$SRC" && dpkg-buildpackage -b -us -uc) >"$STAGE/build.log" 2>&1 || {
    tail -n 40 "$STAGE/build.log" >&2
    die "dpkg-buildpackage failed (log above)"
}

say "lintian"
changes=("$STAGE"/rwsgi_"${deb_version}"_*.changes)
lintian --display-info --fail-on error,warning "${changes[0]}" || die "lintian found errors or warnings (above)"

rm -f "$OUT"/*.deb
cp "$STAGE"/*.deb "$OUT/"
say "packages in $OUT:"
ls -1 "$OUT"/*.deb
