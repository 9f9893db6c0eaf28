"""mod_rwsgi in embedded mode, through Debian's real /usr/sbin/apache2 (event, worker and prefork MPMs).

Each behaviour is one small WSGI app written next to the server's prefix (world-readable, for the
www-data children) and one assertion. `rwsgi_apache()` below is the local helper the other
test_apache_module_* files import: the shared harness fixes the MPM to event, so this helper
swaps the MPM line (and the thread directives prefork does not know) before starting.
"""

import json
import re
import socket
import textwrap
import time
from pathlib import Path

import pytest
import requests

from harness.apache import Apache
from harness import paths

MODULE = paths.TARGET / "release" / "libmod_rwsgi.so"
MPMS = ("event", "worker", "prefork")
THREAD_DIRECTIVES = ("ThreadsPerChild", "ThreadLimit", "MinSpareThreads", "MaxSpareThreads")


def load_line(module=MODULE) -> str:
    return f"LoadModule rwsgi_module {module}"


def write_app(directory: Path, name: str, source: str) -> Path:
    path = Path(directory) / name
    path.write_text(textwrap.dedent(source))
    path.chmod(0o644)
    return path


def set_mpm(apache: Apache, mpm: str) -> None:
    """Rewrite the harness config for another MPM (prefork has no thread directives)."""
    text = apache.conf_path.read_text()
    text = text.replace("mpm_event_module", f"mpm_{mpm}_module").replace("mod_mpm_event.so", f"mod_mpm_{mpm}.so")
    if mpm == "prefork":
        lines = [line for line in text.splitlines() if line.split(" ")[0] not in THREAD_DIRECTIVES]
        text = "\n".join(lines) + "\n"
        text = re.sub(r"(?m)^ServerLimit .*$", "ServerLimit 8", text)
        text = re.sub(r"(?m)^MaxRequestWorkers .*$", "MaxRequestWorkers 8", text)
    apache.conf_path.write_text(text)


def make_apache(launcher, config: str, *, mpm: str = "event", load_lines=None, env=None, **kw) -> Apache:
    """An Apache (not started) with mod_rwsgi loaded and `config` appended."""
    prefix = launcher._prefix(f"apache-{mpm}")
    lines = [load_line()] if load_lines is None else list(load_lines)
    apache = Apache(prefix, config, load_lines=lines, **kw)
    set_mpm(apache, mpm)
    if env:
        apache.process.env = dict(apache.process.env or {}, **env)
    return apache


def rwsgi_apache(launcher, config: str, **kw) -> Apache:
    """Start Apache with mod_rwsgi and `config` (a config test runs first)."""
    return launcher._start(make_apache(launcher, config, **kw))


def config_test(apache: Apache):
    """(returncode, stderr) of `apache2 -t` on this config."""
    import subprocess
    from harness.apache import _apache_env
    r = subprocess.run([str(paths.APACHE_BIN), "-t", "-f", str(apache.conf_path)],
                       capture_output=True, text=True, env=_apache_env())
    return r.returncode, r.stderr


APP = """\
import json, os, sys, threading, time

STATE = os.path.join(os.path.dirname(__file__), "state")

def record(name, line):
    with open(os.path.join(STATE, name), "a") as f:
        f.write(line + "\\n")

class Endless:
    def __init__(self, token):
        self.token = token
    def __iter__(self):
        n = 0
        while True:
            n += 1
            yield b"x" * 65536
            if n % 16 == 0:
                record(self.token, "chunk %d" % n)
    def close(self):
        record(self.token, "closed")

def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/environ"):
        body = json.dumps({k: v for k, v in environ.items() if isinstance(v, str)}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/mode":
        body = json.dumps({"multithread": environ["wsgi.multithread"],
                           "multiprocess": environ["wsgi.multiprocess"],
                           "pid": os.getpid(), "prefix": sys.prefix}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/echo":
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(data)))])
        return [data]
    if path == "/stream":
        def gen():
            for i in range(3):
                yield ("chunk %d %.3f\\n" % (i, time.time())).encode()
                time.sleep(0.4)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path == "/endless":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Endless(environ["QUERY_STRING"])
    if path == "/file":
        f = open(__file__, "rb")
        f.seek(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](f)
    if path == "/sleep":
        time.sleep(float(environ["QUERY_STRING"]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    if path == "/raise":
        raise RuntimeError("boom from the app")
    if path == "/raise-late":
        def late():
            yield b"partial"
            raise RuntimeError("late boom")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return late()
    if path == "/raise-late-cl":
        def late_cl():
            yield b"partial"
            raise RuntimeError("late boom")
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        return late_cl()
    if path == "/headers":
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-One", "1"),
                                       ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
        return [b"made"]
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def app_dir(launcher, name="app") -> Path:
    d = launcher._prefix(name)
    (d / "state").mkdir()
    (d / "state").chmod(0o777)
    write_app(d, "app.wsgi", APP)
    return d


def site_config(directory: Path, extra: str = "", alias: str = "/app") -> str:
    return f"""
        WSGIScriptAlias {alias} {directory}/app.wsgi
        <Directory {directory}>
            Require all granted
        </Directory>
        {extra}
    """


class Site(tuple):
    """(apache, app directory, label) plus what wsgi.multithread must say there."""
    multithread: bool


def make_site(apache, directory, label, multithread):
    site = Site((apache, directory, label))
    site.multithread = multithread
    return site


def all_logs(apache) -> str:
    """Apache's error log and its stderr (where daemon groups log)."""
    return apache.error_log_text() + apache.process.log_text()


@pytest.fixture(scope="module", params=MPMS)
def site(request, new_launcher):
    lch = new_launcher(f"apache-embedded-{request.param}")
    try:
        d = app_dir(lch)
        apache = rwsgi_apache(lch, site_config(d), mpm=request.param)
        yield make_site(apache, d, request.param, multithread=request.param != "prefork")
    finally:
        lch.stop_all()


def test_hello_and_mode(site):
    apache, _, _ = site
    r = requests.get(apache.url("/app"), timeout=10)
    assert r.status_code == 200 and r.text == "Hello, World!"
    assert r.headers["Server"].startswith("Apache/2.4")
    mode = requests.get(apache.url("/app/mode"), timeout=10).json()
    assert mode["multithread"] is site.multithread
    assert mode["multiprocess"] is True
    assert mode["prefix"] == "/usr"


def test_script_name_and_path_info(site):
    apache, _, _ = site
    env = requests.get(apache.url("/app/environ"), params={"q": "1"}, timeout=10).json()
    assert env["SCRIPT_NAME"] == "/app" and env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "q=1" and env["REQUEST_METHOD"] == "GET"
    # %-decoded PATH_INFO, doubled slashes collapsed as mod_wsgi does.
    env = requests.get(apache.url("/app//environ"), timeout=10)
    assert env.status_code == 200 and env.json()["PATH_INFO"] == "/environ"
    assert requests.get(apache.url("/apple"), timeout=10).status_code == 404


def test_post_echo(site):
    apache, _, _ = site
    payload = bytes(range(256)) * 4096  # 1 MiB
    r = requests.post(apache.url("/app/echo"), data=payload, timeout=20)
    assert r.status_code == 200 and r.content == payload


def test_chunked_request_body(site):
    apache, _, _ = site
    parts = [b"a" * 1000, b"b" * 70000, b"c"]
    r = requests.post(apache.url("/app/echo"), data=iter(parts), timeout=20)  # generator -> chunked
    assert r.status_code == 200 and r.content == b"".join(parts)


def test_streaming_is_flushed(site):
    apache, _, _ = site
    with requests.get(apache.url("/app/stream"), stream=True, timeout=10) as r:
        assert r.headers.get("Transfer-Encoding") == "chunked"
        arrivals = []
        for line in r.iter_lines():
            arrivals.append(time.time())
    assert len(arrivals) == 3
    # Each chunk arrives as produced (0.4 s apart), not all at the end.
    assert arrivals[1] - arrivals[0] > 0.25 and arrivals[2] - arrivals[1] > 0.25


def test_client_disconnect_calls_close(site):
    apache, d, _ = site
    token = f"gone-{time.time_ns()}"
    with socket.create_connection(("127.0.0.1", apache.port), timeout=10) as s:
        s.sendall(f"GET /app/endless?{token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = 0
        while got < 200_000:
            got += len(s.recv(65536))
    record = d / "state" / token
    deadline = time.time() + 10
    while time.time() < deadline and "closed" not in (record.read_text() if record.exists() else ""):
        time.sleep(0.05)
    assert record.read_text().splitlines()[-1] == "closed"


def test_exception_is_500_and_logged(site):
    apache, _, _ = site
    r = requests.get(apache.url("/app/raise"), timeout=10)
    assert r.status_code == 500
    deadline = time.time() + 5
    while "boom from the app" not in all_logs(apache) and time.time() < deadline:
        time.sleep(0.05)
    log = all_logs(apache)
    assert "RuntimeError: boom from the app" in log and "Traceback" in log
    assert requests.get(apache.url("/app"), timeout=10).text == "Hello, World!"


def test_late_exception_truncates_response(site):
    apache, _, _ = site
    from harness import http
    raw = http.request(apache.port, "GET", "/app/raise-late")
    assert raw.status == 200
    assert raw.truncated, "a failed chunked response must not end with the last-chunk"


def test_late_exception_with_content_length_truncates(site):
    apache, _, _ = site
    from harness import http
    raw = http.request(apache.port, "GET", "/app/raise-late-cl")
    assert raw.status == 200 and raw.content_length == 100
    assert raw.body == b"partial" and raw.truncated


def test_file_wrapper_from_an_offset(site):
    apache, d, _ = site
    r = requests.get(apache.url("/app/file"), timeout=10)
    assert r.status_code == 200 and r.content == (d / "app.wsgi").read_bytes()[10:]


def test_mod_wsgi_environ_keys(site):
    apache, _, label = site
    env = requests.get(apache.url("/app/environ"), timeout=10).json()
    assert env["mod_wsgi.process_group"] == ("web" if label.startswith("daemon") else "")
    assert env["mod_wsgi.application_group"] == ""
    assert env["mod_wsgi.callable_object"] == "application"


def test_status_and_repeated_headers(site):
    apache, _, _ = site
    from harness import http
    raw = http.request(apache.port, "GET", "/app/headers")
    assert raw.status == 201
    assert raw.header_all("Set-Cookie") == ["a=1", "b=2"]
    assert raw.header("X-One") == "1"


def test_header_spoofing_and_httpoxy(site):
    apache, _, _ = site
    env = requests.get(apache.url("/app/environ"), timeout=10,
                       headers={"X-Real": "1", "X_Real": "spoof", "Proxy": "http://evil", "Authorization": "Basic eA=="}).json()
    assert env["HTTP_X_REAL"] == "1"
    assert "HTTP_PROXY" not in env
    assert "HTTP_AUTHORIZATION" not in env  # WSGIPassAuthorization is Off by default


def test_pass_authorization(launcher):
    d = app_dir(launcher, "auth")
    apache = rwsgi_apache(launcher, site_config(d, "WSGIPassAuthorization On"))
    env = requests.get(apache.url("/app/environ"), headers={"Authorization": "Basic eA=="}, timeout=10).json()
    assert env["HTTP_AUTHORIZATION"] == "Basic eA=="


def test_root_alias_has_empty_script_name(launcher):
    d = app_dir(launcher, "root")
    apache = rwsgi_apache(launcher, site_config(d, alias="/"))
    env = requests.get(apache.url("/environ"), timeout=10).json()
    assert env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/environ"


def test_graceful_restart_keeps_serving(launcher):
    d = app_dir(launcher, "graceful")
    apache = rwsgi_apache(launcher, site_config(d))
    first = requests.get(apache.url("/app/mode"), timeout=10).json()["pid"]
    apache.graceful()
    deadline = time.time() + 15
    while time.time() < deadline:
        r = requests.get(apache.url("/app/mode"), timeout=10)
        assert r.status_code == 200
        if r.json()["pid"] != first:
            break
        time.sleep(0.2)
    else:
        pytest.fail("no new child answered after a graceful restart")


def test_restrict_embedded_refuses(launcher):
    d = app_dir(launcher, "restricted")
    apache = rwsgi_apache(launcher, site_config(d, "WSGIRestrictEmbedded On"))
    assert requests.get(apache.url("/app"), timeout=10).status_code == 500
    assert "WSGIRestrictEmbedded" in apache.error_log_text()


def test_sethandler_needs_execcgi(launcher):
    """`AddHandler wsgi-script .wsgi` serves scripts under a DocumentRoot, only with ExecCGI."""
    d = app_dir(launcher, "handler")
    (d / "open").mkdir()
    (d / "open").chmod(0o755)
    write_app(d / "open", "app.wsgi", APP)
    config = f"""
        DocumentRoot {d}
        TypesConfig /etc/mime.types
        <Directory {d}>
            Require all granted
            AddHandler wsgi-script .wsgi
        </Directory>
        <Directory {d}/open>
            Options +ExecCGI
        </Directory>
    """
    apache = rwsgi_apache(launcher, config, modules=("mime",))
    assert requests.get(apache.url("/app.wsgi"), timeout=10).status_code == 403
    env = requests.get(apache.url("/open/app.wsgi/environ"), timeout=10).json()
    assert env["SCRIPT_NAME"] == "/open/app.wsgi" and env["PATH_INFO"] == "/environ"
    assert "Options ExecCGI is off" in apache.error_log_text()


def test_bad_python_home_is_logged_and_500(launcher):
    d = app_dir(launcher, "badhome")
    apache = rwsgi_apache(launcher, site_config(d, "WSGIPythonHome /nonexistent/venv"))
    assert requests.get(apache.url("/app"), timeout=10).status_code == 500
    log = apache.error_log_text()
    assert "RW-AP001" in log and "/nonexistent/venv" in log
