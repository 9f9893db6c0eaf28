"""Issue 10, case 10: a daemon group on a TCP socket trusts whoever connects. Any local user can
send a uwsgi packet that sets REMOTE_USER, HTTPS or any other CGI variable the app trusts; a unix
socket is protected by its mode (0600, owned by the server's worker user), a TCP port is not.

Interface assumed (DESIGN.md names none; mod_wsgi's answer is the model: every request its
Apache children send carries a `mod_wsgi.magic` token the daemon checks, "Request origin could not
be validated"):
  - Module-managed groups (`wsgi_daemon_process ... socket=HOST:PORT`, `WSGIDaemonProcess ...
    socket=HOST:PORT`): the server's master makes a random secret per group start and hands it to
    the supervisor at fork; the module sends it in every packet as the uwsgi var `RWSGI_SECRET`.
    Nothing to configure. A packet without the right secret is refused: the connection is closed
    without running the app, and one rate-limited log line says so.
  - rwsgi-worker: `--secret-file FILE` (the secret is the file's first line; the file must not be
    readable by others). Packets must carry `RWSGI_SECRET` with that value: stock nginx
    `uwsgi_param RWSGI_SECRET "...";`, Apache mod_proxy_uwsgi `SetEnv RWSGI_SECRET ...`.
  - The var never reaches environ. Compared in constant time.
  - Unix sockets stay as they are: mode 0600, owned by the server's worker user
    (tests/test_nginx_module_daemon.py::test_socket_is_private_to_nginx_workers,
    tests/test_apache_module_daemon.py::test_socket_is_private_to_apache_user).
  - The daemon-group pages (docs/nginx/wsgi_daemon_process.md, docs/apache/WSGIDaemonProcess.md,
    docs/rwsgi-worker.md) say in a warning box that a TCP socket without a secret lets any local
    user forge requests.
"""

import json

import pytest
import requests

from fault_common import apache_logs, apache_site, app_dir, lch, nginx_daemon, reference, uwsgi_worker  # noqa: F401
from harness import uwsgi_client as uc
from harness.faults import wait_for
from harness.ports import free_port

FORGED = [("REMOTE_USER", "admin"), ("HTTPS", "on"), ("AUTH_TYPE", "Basic")]


def forge(address):
    """A local attacker's packet straight to the group's TCP port: (status or None, environ)."""
    try:
        r = uc.request(address, uc.request_vars(path="/app/environ", script_name="/app", extra=FORGED),
                       timeout=5)
    except OSError as e:
        return None, str(e)
    if r.status != 200:
        return r.status, {}
    return r.status, json.loads(r.body or b"{}")


def assert_refused(address):
    status, env = forge(address)
    assert not (status == 200 and env.get("REMOTE_USER") == "admin"), \
        "a forged packet reached the app with REMOTE_USER=admin and HTTPS=on"
    assert status is None, f"a packet without the secret must be refused (closed), got {status}"


def tcp_group(lch, mode, port):
    d = app_dir(lch)
    options = f"processes=1 threads=2 socket=127.0.0.1:{port}"
    if mode == "nginx-daemon":
        return nginx_daemon(lch, d, options)
    return apache_site(lch, d, options + " display-name=%{GROUP}")


@pytest.mark.parametrize("mode", ["nginx-daemon", "apache-daemon"])
def test_daemon_tcp_socket_refuses_forged_packets(lch, mode):
    """`socket=127.0.0.1:PORT`: requests through the server work (and do not show the secret),
    a packet sent straight to the port is refused, with a log line. Before the fix the forged
    packet got 200 and the app saw REMOTE_USER=admin, HTTPS=on, in both servers."""
    port = free_port()
    server = tcp_group(lch, mode, port)
    env = requests.get(server.url("/app/environ"), timeout=10).json()
    assert "RWSGI_SECRET" not in env
    assert_refused(("127.0.0.1", port))
    assert requests.get(server.url("/app/hello"), timeout=10).status_code == 200
    logs = apache_logs(server) if mode.startswith("apache") else server.error_log_text()
    assert "RW051 refusing a request that does not carry the group's secret" in logs


ASGI_ENVIRON_APP = """
import json

async def application(scope, receive, send):
    if scope["type"] != "http":
        return
    seen = {"REMOTE_USER": scope.get("extensions", {}).get("remote_user", ""),
            "scheme": scope["scheme"]}
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(seen).encode()})
"""


def test_asgi_daemon_tcp_socket_refuses_forged_packets(lch):
    """The same for an `interface=asgi` group, whose worker drives its sockets from the asyncio
    loop instead of request threads: a packet without the secret is closed unanswered."""
    d = app_dir(lch, ())
    (d.path / "asgi_app.py").write_text(ASGI_ENVIRON_APP)
    (d.path / "asgi_app.py").chmod(0o644)
    port = free_port()
    nginx = nginx_daemon(lch, d, f"processes=1 socket=127.0.0.1:{port} interface=asgi",
                         script="asgi_app.py")
    assert requests.get(nginx.url("/app/environ"), timeout=10).status_code == 200
    status, _ = forge(("127.0.0.1", port))
    assert status is None, f"a packet without the secret must be refused (closed), got {status}"
    assert wait_for(lambda: "RW051 refusing a request that does not carry the group's secret"
                    in nginx.error_log_text(), timeout=5)


def test_worker_secret_file_behind_stock_nginx(lch):
    """rwsgi-worker --secret-file: stock nginx sending the secret is served (and the app does not
    see it); a packet without it is refused."""
    d = app_dir(lch)
    secret = d.path / "secret"
    secret.write_text("s3cret-for-the-test\n")
    secret.chmod(0o600)
    w = lch.worker(d.script(), processes=1, threads=2, extra_args=["--secret-file", str(secret)])
    front = lch.front_end("nginx", w, extra_location='uwsgi_param RWSGI_SECRET "s3cret-for-the-test";')
    r = requests.get(front.url("/app/environ"), timeout=10)
    assert r.status_code == 200 and "RWSGI_SECRET" not in r.json()
    assert_refused(w.address)


@reference
def test_reference_uwsgi_tcp_socket_trusts_any_packet(lch):
    """Debian's uWSGI on TCP: no origin check at all. Measured: the forged packet runs the app
    with REMOTE_USER=admin and HTTPS=on (uWSGI's own UWSGI_* vars can even load code).
    mod_wsgi (not measured here: its daemons listen on unix sockets only, with a protocol of its
    own) checks a per-start `mod_wsgi.magic` token on every request."""
    d = app_dir(lch)
    w = uwsgi_worker(lch, d.script(), processes=1, threads=2)
    status, env = wait_for(lambda: (lambda x: x if x[0] else None)(forge(w.address)), 10)
    print(f"uWSGI forged packet: {status}, REMOTE_USER={env.get('REMOTE_USER')}, HTTPS={env.get('HTTPS')}")
    assert status == 200 and env.get("REMOTE_USER") == "admin"
