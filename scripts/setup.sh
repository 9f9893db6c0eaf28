#!/usr/bin/env bash
# Prepare a Debian 12 machine to build and test rwsgi. Idempotent: every step checks first and is
# skipped when already done. Used by scripts/test.sh and scripts/run-example.sh (the README's two
# commands), so nothing relies on packages installed by hand.
#
#   1. apt packages (nginx, Apache, their -dev trees, clang for bindgen, Python with the static
#      libpython3.11.a that rwsgi-worker links, uWSGI + mod_wsgi
#      as peers for comparisons, wrk, curl; gcc, make and the pcre2/zlib/OpenSSL headers to
#      compile nginx 1.28 from source; debhelper + lintian for scripts/build-debs.sh; systemd's
#      tools to check the packaged unit); the distro's own nginx/apache2 services are stopped
#      and disabled if the install started them (they would hold port 80).
#   2. build/venv: /usr/bin/python3 -m venv + the pinned packages of scripts/requirements-test.txt.
#   3. build/nginx-src: a --with-compat configured copy of Debian's nginx tree (the nginx module's
#      build.rs binds against it; see docs and BUILD-NOTES §1.1).
#   4. cargo build --release --workspace.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '==> %s\n' "$*"; }
die() { printf 'setup.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# prometheus: only for `promtool check metrics` in the metrics tests (about 96 MB installed; the
# policy below keeps apt from starting its service).
APT_PACKAGES=(nginx nginx-dev apache2 apache2-dev libclang-dev clang python3-dev python3-venv
              libpython3.11-dev uwsgi uwsgi-plugin-python3 wrk libapache2-mod-wsgi-py3 curl
              gcc make libpcre2-dev zlib1g-dev libssl-dev debhelper lintian systemd
              prometheus)

# ---- 1. apt packages --------------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    [[ $EUID -eq 0 ]] || die "missing Debian packages (${missing[*]}); run this script as root (sudo)"
    say "installing Debian packages: ${missing[*]}"
    # Keep apt from starting the distro's nginx/apache2 services (they would take port 80).
    # Only when no policy is in place already; ours is removed again on exit.
    policy_added=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        policy_added=1
        trap 'if [[ $policy_added == 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
    if [[ $policy_added == 1 ]]; then rm -f /usr/sbin/policy-rc.d; policy_added=0; fi
else
    say "Debian packages: all present"
fi

# Stop and disable the distro services if something (this install or an earlier one) started them.
for svc in nginx apache2; do
    pidfile=/run/$svc.pid
    [[ $svc == apache2 ]] && pidfile=/run/apache2/apache2.pid
    if [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        say "stopping the distro's $svc service (it holds port 80; the tests start their own)"
        if [[ -d /run/systemd/system ]]; then
            systemctl stop "$svc" || true
            systemctl disable "$svc" || true
        else
            service "$svc" stop || kill "$(cat "$pidfile")" || true
            update-rc.d "$svc" disable >/dev/null 2>&1 || true
        fi
    fi
done

# ---- 2. Python venv ---------------------------------------------------------------------------
VENV="$ROOT/build/venv"
REQS="$ROOT/scripts/requirements-test.txt"
mkdir -p "$ROOT/build"
if [[ ! -x $VENV/bin/python3 ]] || ! grep -q '^home = /usr/bin$' "$VENV/pyvenv.cfg" 2>/dev/null; then
    say "creating $VENV with /usr/bin/python3 -m venv"
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
fi
if ! cmp -s "$REQS" "$VENV/.requirements-installed"; then
    say "installing pinned Python packages into $VENV"
    "$VENV/bin/pip" install --disable-pip-version-check -q -r "$REQS"
    cp "$REQS" "$VENV/.requirements-installed"
else
    say "Python venv: up to date ($VENV)"
fi

# ---- 3. configured nginx tree -------------------------------------------------------------------
# ngx-headers/configure.sh owns how (Debian's own configure flags, --with-compat) and when (it is
# idempotent); the nginx module's build reads the result through .cargo/config.toml.
NGX_SRC="$ROOT/build/nginx-src"
if [[ -f $NGX_SRC/objs/ngx_auto_config.h && $NGX_SRC/objs/ngx_auto_config.h -nt /usr/share/nginx/src/conf_flags ]]; then
    say "nginx tree: already configured ($NGX_SRC)"
else
    say "configuring a copy of /usr/share/nginx/src in $NGX_SRC (ngx-headers/configure.sh)"
    sh "$ROOT/ngx-headers/configure.sh" /usr/share/nginx/src "$NGX_SRC" || die "configuring the nginx tree failed"
fi

# ---- 4. Rust build ------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain >= 1.85 (rustup), Debian 12's rustc is too old"
say "cargo build --release --workspace ($(cargo --version))"
export NGINX_SOURCE_DIR="$NGX_SRC" NGINX_BUILD_DIR="$NGX_SRC/objs"
cargo build --release --workspace
say "setup done"
