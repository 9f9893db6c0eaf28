"""Migration: one mod_wsgi configuration, run once with Debian's mod_wsgi
(/usr/lib/apache2/modules/mod_wsgi.so, libapache2-mod-wsgi-py3) and once with mod_rwsgi, only the
LoadModule line swapped. The same requests must get the same responses (status, body, the
headers an app controls, and the CGI environ the app sees). Each module runs in its own Apache.
"""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import requests

from harness import http, paths
from test_apache_module_embedded import APP, load_line, rwsgi_apache, write_app

MOD_WSGI = paths.APACHE_MODULES / "mod_wsgi.so"

# Keys whose values legitimately differ between two server instances (ports, module identity).
VOLATILE = {"REMOTE_PORT", "SERVER_PORT", "HTTP_HOST", "SERVER_SIGNATURE", "PATH"}


def config(directory, mode) -> str:
    # A typical mod_wsgi site block, written for mod_wsgi (WSGIChunkedRequest On is needed
    # there; mod_rwsgi accepts it and always de-chunks).
    group = "%{GLOBAL}"
    daemon = ""
    if mode == "daemon":
        group = "site"
        daemon = f"WSGIDaemonProcess site processes=2 threads=4 display-name=%{{GROUP}}\nWSGISocketPrefix {directory}/s"
    return f"""
        {daemon}
        WSGIPythonPath {directory}
        WSGIScriptAlias /app {directory}/app.wsgi process-group={group} application-group=%{{GLOBAL}}
        WSGIApplicationGroup %{{GLOBAL}}
        WSGIPassAuthorization On
        WSGIChunkedRequest On
        <Directory {directory}>
            Require all granted
        </Directory>
    """


@pytest.fixture(scope="module", params=["embedded", "daemon"])
def servers(request, new_launcher):
    if not MOD_WSGI.exists():
        pytest.fail(f"{MOD_WSGI} missing: install libapache2-mod-wsgi-py3 (scripts/setup.sh does)")
    lch = new_launcher(f"apache-migration-{request.param}")
    # A short directory: unix socket paths are limited to 107 bytes. Both servers use the same
    # config text (and app path); their sockets differ by the parent's pid.
    d = Path(tempfile.mkdtemp(prefix="mig-"))
    d.chmod(0o755)
    (d / "state").mkdir()
    (d / "state").chmod(0o777)
    write_app(d, "app.wsgi", APP)
    try:
        pair = [rwsgi_apache(lch, config(d, request.param), load_lines=[line])
                for line in (f"LoadModule wsgi_module {MOD_WSGI}", load_line())]
        yield tuple(pair), request.param
    finally:
        lch.stop_all()
        shutil.rmtree(d, ignore_errors=True)


def both(servers, method, path, **kw):
    out = []
    for server in servers:
        kw.setdefault("timeout", 20)
        out.append(requests.request(method, server.url(path), **kw))
    return out


APP_HEADERS = ("Content-Type", "Content-Length", "Set-Cookie", "X-One", "Transfer-Encoding")


@pytest.mark.parametrize("method, path, kw", [
    ("GET", "/app", {}),
    ("GET", "/app/", {}),
    ("GET", "/app/headers", {}),
    ("POST", "/app/echo", {"data": b"x=1&y=2" * 1000}),
    ("POST", "/app/echo", {"data": iter([b"chunk-a;", b"chunk-b" * 5000])}),
    ("GET", "/app/stream", {}),
    ("GET", "/apple", {}),
    ("GET", "/app/raise", {}),
    ("HEAD", "/app", {}),
])
def test_same_response(servers, method, path, kw):
    servers, mode = servers
    if "data" in kw and not isinstance(kw["data"], bytes):
        parts = list(kw["data"])
        responses = [requests.request(method, s.url(path), data=iter(parts), timeout=20) for s in servers]
    else:
        responses = both(servers, method, path, **kw)
    wsgi, rwsgi = responses
    assert rwsgi.status_code == wsgi.status_code
    if path == "/app/stream":
        strip = lambda t: [line.split(" ")[:2] for line in t.splitlines()]  # drop timestamps
        assert strip(rwsgi.text) == strip(wsgi.text)
    elif wsgi.status_code < 400:
        assert rwsgi.content == wsgi.content
    if mode == "daemon" and wsgi.status_code == 500:
        # Known difference: for an app exception mod_wsgi's daemon answers with httpd's HTML error
        # page, our worker with its own short text/plain 500 (the status is the same).
        return
    for name in APP_HEADERS:
        assert rwsgi.headers.get(name) == wsgi.headers.get(name), name


def test_same_environ(servers):
    servers, _ = servers
    headers = {"X-Custom": "v", "Authorization": "Basic eA==", "Cookie": "a=1"}
    envs = []
    for server in servers:
        env = requests.get(server.url("/app/environ/caf%C3%A9"), params={"q": "a b"}, headers=headers,
                           timeout=20).json()
        env["SERVER_SOFTWARE"] = " ".join(  # each module announces itself (mod_wsgi/4.9.4 ...)
            t for t in env["SERVER_SOFTWARE"].split() if not t.startswith(("mod_wsgi/", "mod_rwsgi/", "Python/")))
        shared = ("mod_wsgi.process_group", "mod_wsgi.application_group", "mod_wsgi.callable_object")
        envs.append({k: v.replace(str(server.port), "PORT") for k, v in env.items()
                     if (k.isupper() and k not in VOLATILE) or k in shared})
    wsgi, rwsgi = envs
    assert rwsgi == wsgi, {k: (wsgi.get(k), rwsgi.get(k)) for k in set(wsgi) | set(rwsgi)
                           if wsgi.get(k) != rwsgi.get(k)}


def test_same_truncation_on_late_error(servers):
    """An app that fails after its first chunk: the same status and bytes, and the client told
    the body is incomplete. mod_wsgi's daemon mode is the one deliberate difference: over its unix
    socket it ends such a body (no Content-Length) as if complete; mod_rwsgi cuts it, as both do
    in embedded mode (its abort mark, docs/architecture.md "Aborted responses")."""
    servers, mode = servers
    raws = [http.request(s.port, "GET", "/app/raise-late") for s in servers]
    assert [r.status for r in raws] == [200, 200]
    assert raws[1].body == raws[0].body
    assert raws[1].truncated
    assert raws[0].truncated == (mode == "embedded")
