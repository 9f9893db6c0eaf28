#!/usr/bin/env bash
# Main job, embedded mode: set up, then serve examples/hello/app.py INSIDE Debian's stock nginx
# on 127.0.0.1 with `rwsgi serve` (it writes the nginx config with load_module
# ngx_http_wsgi_module.so and wsgi_script, checks it with nginx -t, runs nginx in the foreground
# and prints the URL). No separate Python server runs: the app lives in nginx's worker
# processes, on a pool of Python threads per worker. Ctrl-C stops everything.
#
#   sudo bash scripts/run-example.sh [--port N] [--no-setup]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

port=""
setup=1
while (($#)); do
    case $1 in
        --port) port=$2; shift 2 ;;
        --no-setup) setup=0; shift ;;
        *) echo "usage: $0 [--port N] [--no-setup]" >&2; exit 2 ;;
    esac
done

((setup)) && bash scripts/setup.sh

rwsgi="$ROOT/target/release/rwsgi"
[[ -x $rwsgi ]] || { echo "$rwsgi missing: run scripts/setup.sh (or cargo build --release)" >&2; exit 1; }

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
[[ -n $port ]] || port=$(free_port)

# nginx's workers run as www-data: the app must be readable by them (a checkout under /root is
# not; rwsgi serve would say so), so it is served from a world-readable copy.
app_dir=$(mktemp -d /tmp/rwsgi-example.XXXXXX)
trap 'rm -rf "$app_dir"' EXIT
chmod 0755 "$app_dir"
cp "$ROOT/examples/hello/app.py" "$app_dir/app.py"
chmod 0644 "$app_dir/app.py"

# Not exec: the trap above removes the copy after rwsgi serve has stopped nginx.
"$rwsgi" serve "$app_dir/app.py" --port "$port" --threads 4
