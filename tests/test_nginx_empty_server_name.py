"""SERVER_NAME behind an nginx server block without `server_name` (nginx's name is then empty):
PEP 3333 requires the key and CGI a host name, so every mode falls back to the name in Host,
else the server's address (SERVER_ADDR, which our module sends), else the machine's host name
(what a stock `uwsgi_pass` leaves the worker). Three deployments: Debian's nginx with
`uwsgi_pass` to rwsgi-worker, and ngx_http_wsgi_module embedded and in a daemon group.

mod_wsgi never meets this case: httpd always has a ServerName (it guesses one at start-up).
"""

import json
import socket

import pytest

from harness import http
from harness.stack import Stack
from test_nginx_module_daemon import wait_for
from test_nginx_module_embedded import rwsgi_nginx

DEPLOYMENTS = ["stock-uwsgi_pass", "module-embedded", "module-daemon"]


@pytest.fixture(scope="module", params=DEPLOYMENTS)
def stack(request, new_launcher, apps, state_dir):
    lch = new_launcher(f"empty-server-name-{request.param}")
    try:
        if request.param == "stock-uwsgi_pass":
            worker = lch.worker(apps / "conformance.py", processes=1, threads=2)
            server = lch.front_end("nginx", worker, server_name=None)
            yield Stack(request.param, server, "/app", logs=[worker.log_text])
            return
        daemon = request.param == "module-daemon"
        group = "wsgi_process_group empty;" if daemon else ""
        server = f"location /app {{ wsgi_script {apps}/conformance.py; {group} }}"
        http_block = "wsgi_daemon_process empty processes=1 threads=2;" if daemon else ""
        nginx = rwsgi_nginx(lch, server, http_block, state_dir=state_dir, server_name=None)
        if daemon:
            import requests
            wait_for(lambda: requests.get(nginx.url("/app/pid"), timeout=5).status_code == 200,
                     what="the daemon group")
        yield Stack(request.param, nginx, "/app", logs=[nginx.error_log_text])
    finally:
        lch.stop_all()


def environ(stack, headers, version="HTTP/1.1"):
    resp = http.request(stack.port, "GET", "/app/environ", headers=headers, version=version)
    assert resp.status == 200, resp.raw[:300]
    return {k: v.get("value") for k, v in json.loads(resp.body).items() if isinstance(v, dict)}


def test_server_name_is_the_host_header_name(stack):
    env = environ(stack, {"Host": "Site.Example:8080"})
    assert env["SERVER_NAME"] == "site.example"


def test_without_host_server_name_is_the_address_or_the_machine(stack):
    env = environ(stack, {"Host": None}, version="HTTP/1.0")
    if stack.kind == "stock-uwsgi_pass":
        # Debian's uwsgi_params send neither a name nor the server's address here.
        assert env["SERVER_NAME"] == socket.gethostname()
    else:
        assert env["SERVER_NAME"] == env["SERVER_ADDR"] == "127.0.0.1"
