#!/usr/bin/env bash
# Serve examples/hello/app.py with the standalone rwsgi-worker behind
# Debian's stock nginx (uwsgi_pass) on 127.0.0.1, print the URL and stay in the foreground.
# Ctrl-C stops both (by pid).
#
#   sudo bash scripts/run-worker-example.sh [--port N] [--no-setup]
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

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
[[ -n $port ]] || port=$(free_port)
worker_port=$(free_port)

# nginx's workers run as nobody: the run directory must be enterable by them.
run_dir=$(mktemp -d /tmp/rwsgi-example.XXXXXX)
chmod 0755 "$run_dir"
mkdir -p "$run_dir/tmp"

worker_pid=""
nginx_pid=""
cleanup() {
    trap - INT TERM EXIT
    echo
    echo "==> stopping"
    [[ -n $nginx_pid ]] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
    [[ -n $worker_pid ]] && kill "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
    rm -rf "$run_dir"
}
trap cleanup EXIT
trap 'cleanup; exit 0' INT TERM

echo "==> starting rwsgi-worker on 127.0.0.1:$worker_port (log: $run_dir/worker.log)"
target/release/rwsgi-worker --socket "127.0.0.1:$worker_port" --script "$ROOT/examples/hello/app.py" \
    --processes 2 --threads 4 >"$run_dir/worker.log" 2>&1 &
worker_pid=$!

cat >"$run_dir/nginx.conf" <<CONF
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
    server {
        listen 127.0.0.1:$port;
        location / {
            include /etc/nginx/uwsgi_params;
            uwsgi_pass 127.0.0.1:$worker_port;
        }
    }
}
CONF
/usr/sbin/nginx -t -q -p "$run_dir" -e "$run_dir/error.log" -c "$run_dir/nginx.conf"
echo "==> starting nginx on 127.0.0.1:$port (error log: $run_dir/error.log)"
/usr/sbin/nginx -p "$run_dir" -e "$run_dir/error.log" -c "$run_dir/nginx.conf" &
nginx_pid=$!

# Wait until the page answers (or one of them died).
for _ in $(seq 1 100); do
    kill -0 "$worker_pid" 2>/dev/null || { echo "rwsgi-worker exited:" >&2; cat "$run_dir/worker.log" >&2; exit 1; }
    kill -0 "$nginx_pid" 2>/dev/null || { echo "nginx exited:" >&2; cat "$run_dir/error.log" >&2; exit 1; }
    curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/" >/dev/null || { echo "the example does not answer; logs:" >&2; cat "$run_dir/worker.log" "$run_dir/error.log" >&2; exit 1; }

echo
echo "    rwsgi example running: http://127.0.0.1:$port/"
echo "    (Ctrl-C to stop)"
echo
wait -n "$worker_pid" "$nginx_pid" || true
echo "==> a server exited; logs:" >&2
tail -n 20 "$run_dir/worker.log" "$run_dir/error.log" >&2
exit 1
