"""The PEP 3333 conformance suite (tests/test_conformance.py) run against ngx_http_wsgi_module in
daemon mode: the conformance app in a `wsgi_daemon_process` group (2 processes x 4 threads)
behind `location /app` with `wsgi_process_group`. Assertions imported unchanged.

The group listens on TCP here (`socket=127.0.0.1:PORT`): a worker signals "response aborted after
the head" by resetting the connection, which a unix socket cannot carry (close is always a clean
EOF there), so test_exception_after_headers_without_length_aborts needs TCP. With the default
unix socket such a response ends like a complete one; see docs/architecture.md.
"""

import pytest

import test_conformance as _suite
from harness.stack import Stack
from test_nginx_module_daemon import wait_for
from test_nginx_module_embedded import rwsgi_nginx

for _name in dir(_suite):
    if _name.startswith("test_"):
        globals()[_name] = getattr(_suite, _name)


@pytest.fixture(scope="module")
def stack(new_launcher, apps, state_dir):
    lch = new_launcher("nginx-module-daemon-conformance")
    try:
        from harness.ports import free_port
        http = f"wsgi_daemon_process conformance processes=2 threads=4 socket=127.0.0.1:{free_port()};"
        server = f"""
            client_max_body_size 64m;
            location /app {{
                wsgi_script {apps}/conformance.py;
                wsgi_process_group conformance;
            }}
        """
        nginx = rwsgi_nginx(lch, server, http, workers=2, state_dir=state_dir)
        import requests
        wait_for(lambda: requests.get(nginx.url("/app/pid"), timeout=5).status_code == 200,
                 what="the daemon group")
        logs = [nginx.error_log_text, nginx.process.log_text]
        yield Stack("nginx-daemon", nginx, "/app", logs=logs)
    finally:
        lch.stop_all()
