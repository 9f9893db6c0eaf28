#!/usr/bin/env bash
# Main job, embedded mode: set up, then serve examples/hello/app.py INSIDE Debian's stock nginx
# (load_module ngx_http_wsgi_module.so, wsgi_script) on 127.0.0.1, print the URL and stay in the
# foreground. No separate Python server runs: the app lives in nginx's worker processes, on a pool
# of Python threads per worker. Ctrl-C stops nginx (by pid).
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

module="$ROOT/target/release/libngx_http_wsgi_module.so"
[[ -f $module ]] || { echo "$module missing: run scripts/setup.sh (or cargo build --release)" >&2; exit 1; }

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
[[ -n $port ]] || port=$(free_port)

# nginx's workers run as nobody: the app and the run directory must be readable by them (a
# checkout under /root is not), so the app is copied next to the config.
run_dir=$(mktemp -d /tmp/rwsgi-embedded-example.XXXXXX)
chmod 0755 "$run_dir"
mkdir -p "$run_dir/tmp"
cp "$ROOT/examples/hello/app.py" "$run_dir/app.py"
chmod 0644 "$run_dir/app.py"

nginx_pid=""
cleanup() {
    trap - INT TERM EXIT
    echo
    echo "==> stopping"
    [[ -n $nginx_pid ]] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
    rm -rf "$run_dir"
}
trap cleanup EXIT
trap 'cleanup; exit 0' INT TERM

cat >"$run_dir/nginx.conf" <<CONF
load_module $module;
daemon off;
worker_processes 2;
pid $run_dir/nginx.pid;
error_log $run_dir/error.log info;
events { worker_connections 512; }
http {
    access_log off;
    client_body_temp_path $run_dir/tmp/body;
    proxy_temp_path $run_dir/tmp/proxy;
    fastcgi_temp_path $run_dir/tmp/fastcgi;
    uwsgi_temp_path $run_dir/tmp/uwsgi;
    scgi_temp_path $run_dir/tmp/scgi;
    wsgi_threads 4;
    server {
        listen 127.0.0.1:$port;
        location / {
            wsgi_script $run_dir/app.py;
        }
    }
}
CONF
/usr/sbin/nginx -t -q -p "$run_dir" -e "$run_dir/error.log" -c "$run_dir/nginx.conf"
echo "==> starting nginx with the WSGI module on 127.0.0.1:$port (error log: $run_dir/error.log)"
/usr/sbin/nginx -p "$run_dir" -e "$run_dir/error.log" -c "$run_dir/nginx.conf" &
nginx_pid=$!

for _ in $(seq 1 100); do
    kill -0 "$nginx_pid" 2>/dev/null || { echo "nginx exited:" >&2; cat "$run_dir/error.log" >&2; exit 1; }
    curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/" >/dev/null || { echo "the example does not answer; log:" >&2; cat "$run_dir/error.log" >&2; exit 1; }

echo
echo "    rwsgi example (nginx embedded mode) running: http://127.0.0.1:$port/"
echo "    (Ctrl-C to stop)"
echo
wait "$nginx_pid" || true
echo "==> nginx exited; log:" >&2
tail -n 20 "$run_dir/error.log" >&2
exit 1
