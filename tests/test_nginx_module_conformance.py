"""The PEP 3333 conformance suite (tests/test_conformance.py) run against ngx_http_wsgi_module in
embedded mode: Debian's /usr/sbin/nginx with the conformance app at `location /app/`.

The assertions are imported unchanged; only the `stack` fixture differs (two nginx workers with
four Python threads each, like the rwsgi-worker stack the suite was written for).
"""

import pytest

import test_conformance as _suite
from harness.stack import Stack
from test_nginx_module_embedded import rwsgi_nginx

# Re-export every conformance test into this module so pytest collects them here too.
for _name in dir(_suite):
    if _name.startswith("test_"):
        globals()[_name] = getattr(_suite, _name)


@pytest.fixture(scope="module")
def stack(new_launcher, apps, state_dir):
    lch = new_launcher("nginx-module-conformance")
    try:
        server = f"""
            client_max_body_size 64m;
            location /app {{ wsgi_script {apps}/conformance.py; }}
        """
        nginx = rwsgi_nginx(lch, server, "wsgi_threads 4;", workers=2, state_dir=state_dir)
        yield Stack("nginx-embedded", nginx, "/app", logs=[nginx.error_log_text])
    finally:
        lch.stop_all()
