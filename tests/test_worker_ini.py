"""Migrating from uWSGI in one step (issue 12, point 4): the repository's uWSGI deployment files,
tests/apps/django_project/uwsgi.ini (a Django project as Django's uWSGI guide lays it out:
module, chdir, home, env, socket, processes, threads, harakiri, max-requests, master, vacuum...)
and tests/apps/conformance.ini, each served by `rwsgi-worker --ini FILE` and by Debian's uWSGI
itself (`uwsgi --ini FILE`), behind the same stock nginx (`location / { include uwsgi_params;
uwsgi_pass ...; }`), must answer alike. Also the ini errors a migrating user meets, and
`--module` on the command line.

The files read their socket from $RWSGI_TEST_SOCKET (and Django's its venv from
$RWSGI_TEST_VENV); both servers get `chmod-socket`'s 660 opened to 666 on the command line after
`--ini`, since the test nginx runs as nobody.
"""

import hashlib
import json
import re
import subprocess

import pytest
import requests

from harness.paths import WORKER_BIN
from harness.stack import Stack

BACKENDS = ("rwsgi", "uwsgi")


def nginx_at_root(lch, worker):
    """The plainest uwsgi deployment: everything to the worker, Debian's uwsgi_params only."""
    server = f"""
        client_max_body_size 64m;
        location / {{
            include /etc/nginx/uwsgi_params;
            uwsgi_pass {worker.uwsgi_pass};
        }}
    """
    return lch.nginx(server)


@pytest.fixture(scope="module")
def conformance_stacks(new_launcher, apps):
    """{backend: Stack} for tests/apps/conformance.ini."""
    lch = new_launcher("worker-ini-conformance")
    try:
        stacks = {}
        for backend in BACKENDS:
            worker = lch.ini_worker(apps / "conformance.ini", backend=backend)
            stacks[backend] = Stack(backend, nginx_at_root(lch, worker), "",
                                    logs=[worker.log_text])
        yield stacks
    finally:
        lch.stop_all()


@pytest.fixture(scope="module")
def django_stacks(new_launcher, apps, venv):
    lch = new_launcher("worker-ini-django")
    try:
        stacks = {}
        for backend in BACKENDS:
            worker = lch.ini_worker(apps / "django_project" / "uwsgi.ini", backend=backend,
                                    env={"RWSGI_TEST_VENV": str(venv)})
            stacks[backend] = Stack(backend, nginx_at_root(lch, worker), "",
                                    logs=[worker.log_text])
        yield stacks
    finally:
        lch.stop_all()


def both(stacks, fn):
    """fn(stack) for each backend: {backend: result}."""
    return {backend: fn(stack) for backend, stack in stacks.items()}


def assert_alike(stacks, fn):
    got = both(stacks, fn)
    assert got["rwsgi"] == got["uwsgi"], json.dumps(got, indent=1, default=repr)[:3000]
    return got["rwsgi"]


# ---- the conformance app from conformance.ini ---------------------------------------------

# environ keys both servers must agree on (uWSGI adds its own `uwsgi.*`, rwsgi its own).
# SCRIPT_NAME differs on purpose: nginx's uwsgi_params send none, and uWSGI leaves it out of
# environ, where PEP 3333 requires it ("may be empty"); rwsgi-worker sets it to "".
ENV_KEYS = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "REQUEST_URI",
            "SERVER_PROTOCOL", "CONTENT_LENGTH", "CONTENT_TYPE", "HTTP_X_CUSTOM", "HTTP_COOKIE",
            "wsgi.url_scheme", "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once",
            "wsgi.version")


def environ_of(stack, path, **kw):
    r = requests.request(kw.pop("method", "GET"), stack.url(path), timeout=10, **kw)
    assert r.status_code == 200, r.text[:300]
    env = r.json()
    return {k: env.get(k) for k in ENV_KEYS}


def test_the_same_environ(conformance_stacks):
    env = assert_alike(conformance_stacks, lambda s: environ_of(
        s, "/environ/caf%C3%A9?a=1&b=%20", method="POST", data=b"hello",
        headers={"X-Custom": "v", "Content-Type": "text/x-test", "Cookie": "a=1"}))
    # processes = 2, threads = 4 from the file.
    assert env["wsgi.multiprocess"]["value"] is True
    assert env["wsgi.multithread"]["value"] is True
    assert env["PATH_INFO"]["value"] == "/environ/caf\u00e9".encode().decode("latin-1")
    scripts = both(conformance_stacks, lambda s: s.get("/environ").json().get("SCRIPT_NAME"))
    assert scripts == {"rwsgi": {"type": "str", "value": "", "latin1_hex": ""}, "uwsgi": None}


def test_the_same_bodies_and_statuses(conformance_stacks):
    body = bytes(range(256)) * 4000

    def answers(stack):
        out = {}
        r = stack.post("/input/read", data=body)
        out["input"] = (r.status_code, r.json())
        r = stack.get("/status?code=404&reason=Nope+Not+Here")
        out["status"] = (r.status_code, r.reason, r.text)
        r = stack.get("/write")
        out["write"] = (r.status_code, r.text)
        r = stack.get("/big?size=1000001")
        out["big"] = (r.status_code, len(r.content), hashlib.sha256(r.content).hexdigest())
        r = stack.get("/file_wrapper?kind=file&size=300001&token=x")
        out["file"] = (r.status_code, hashlib.sha256(r.content).hexdigest())
        r = stack.get("/bare_body?kind=bytes")
        out["bare"] = (r.status_code, r.content.decode())
        r = stack.get("/headers/ok")
        out["headers"] = (r.headers.get("X-Tab"), r.headers.get("X-Many-49"))
        return out
    got = assert_alike(conformance_stacks, answers)
    assert got["input"][1]["len"] == len(body)


def test_an_exception_before_the_head(conformance_stacks):
    """A known difference: rwsgi-worker answers 500 with the traceback in its log, as mod_wsgi
    does; uWSGI closes the connection without an answer, which nginx turns into a 502."""
    got = both(conformance_stacks, lambda s: s.get("/exception/before?token=ini").status_code)
    assert got == {"rwsgi": 500, "uwsgi": 502}
    conformance_stacks["rwsgi"].wait_log("conformance exception before headers ini")


def test_the_rwsgi_worker_says_what_it_took_from_the_file(conformance_stacks):
    log = conformance_stacks["rwsgi"].log_text()
    assert re.search(r"RW001 listening on unix:\S+worker.sock: 2 processes x 4 threads, "
                     r"app module conformance", log), log[-2000:]
    assert re.search(r"RW012 \S+conformance.ini: uWSGI options accepted as they are how "
                     r"rwsgi-worker always runs: plugins, master, vacuum, die-on-term", log), log


# ---- the Django project from its uwsgi.ini ------------------------------------------------

def test_django_pages_alike(django_stacks):
    def pages(stack):
        page = stack.get("/")
        info = stack.get("/info?x=1").json()
        return {
            "index": (page.status_code, "<h1>rwsgi django test</h1>" in page.text,
                      'action="/form"' in page.text),
            "info": {k: info[k] for k in ("script_name", "path", "path_info", "reverse_form")},
            "absolute": info["absolute"].split("/", 3)[3],
            "venv": info["prefix"],
            "error": stack.get("/error").status_code,
            "missing": stack.get("/no/such/page").status_code,
        }
    got = assert_alike(django_stacks, pages)
    assert got["info"] == {"script_name": "", "path": "/info", "path_info": "/info",
                           "reverse_form": "/form"}
    assert got["index"] == (200, True, True) and (got["error"], got["missing"]) == (500, 404)


def test_django_forms_uploads_and_database_alike(django_stacks):
    data = bytes(range(256)) * 12_000

    def flows(stack):
        with requests.Session() as s:
            page = s.get(stack.url("/"), timeout=10)
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
            form = s.post(stack.url("/form"), timeout=10,
                          data={"csrfmiddlewaretoken": token, "name": "Zo\u00eb", "colour": "red"})
            upload = s.post(stack.url("/upload"), timeout=30, files={"file": ("f.bin", data)},
                            data={"csrfmiddlewaretoken": token, "note": "n"})
        hits = [stack.get("/db").json()["hits"] for _ in range(2)]
        return {"form": (form.status_code, form.json()), "upload": upload.json(),
                "db_counts_up": hits[1] == hits[0] + 1,
                "csrf_refused": stack.post("/form", data={"name": "x"}).status_code}
    got = assert_alike(django_stacks, flows)
    assert got["upload"]["size"] == len(data) and got["csrf_refused"] == 403


def test_django_worker_runs_the_files_processes_and_threads(django_stacks):
    log = django_stacks["rwsgi"].log_text()
    assert re.search(r"RW001 listening on unix:\S+: 2 processes x 2 threads, app module "
                     r"testsite.wsgi", log), log[-2000:]
    pids = {django_stacks["rwsgi"].get("/info").json()["pid"] for _ in range(20)}
    assert 1 <= len(pids) <= 2


# ---- what a migrating user gets wrong ----------------------------------------------------

def run_worker(*args, cwd=None, timeout=20):
    return subprocess.run([str(WORKER_BIN), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def test_every_unsupported_line_in_one_error(tmp_path):
    ini = tmp_path / "site.ini"
    ini.write_text(
        "[uwsgi]\n"
        "http-socket = :8080\n"          # 2: rwsgi does not speak HTTP
        "module = mysite.wsgi\n"
        "pidfile = /run/site.pid\n"      # 4
        "max_requests = 100\n"           # 5: a misspelt option (uWSGI: an unused placeholder)
        "logto = /var/log/site.log\n"    # 6
        "master = false\n"               # 7: cannot be turned off
        "processes = 4x\n"               # 8: uWSGI would run 4
    )
    r = run_worker("--ini", ini)
    assert r.returncode == 2, r.stderr
    err = r.stderr
    assert err.startswith(f"rwsgi-worker: --ini: {ini} [uwsgi]: 6 lines rwsgi-worker cannot "
                          "honour:"), err
    for line, key, why in [
            (2, "http-socket", "rwsgi-worker speaks uwsgi, SCGI and FastCGI, not HTTP"),
            (4, "pidfile", "writes no pid file"),
            (5, "max_requests", "uWSGI spells it max-requests"),
            (6, "logto", "logs to standard error"),
            (7, "master", "cannot be turned off"),
            (8, "processes", "expected a whole number")]:
        assert re.search(rf"\n  line {line}: {key}: .*{re.escape(why)}", err), (key, err)


def test_a_value_the_worker_refuses_names_the_file_and_key(tmp_path):
    ini = tmp_path / "root.ini"
    ini.write_text("[uwsgi]\nsocket = /tmp/x.sock\nwsgi-file = app.py\nuid = root\n")
    r = run_worker("--ini", ini)
    assert r.returncode == 2
    assert f"{ini}: uid (--user): invalid value \"root\"" in r.stderr, r.stderr


# ---- --module on the command line -------------------------------------------------------

def test_module_on_the_command_line(launcher, apps, venv):
    """Django's `mysite.wsgi`, imported by name from the directory it is started in (as uWSGI
    and gunicorn do), behind stock nginx at /app."""
    project = apps / "django_project"
    worker = launcher.worker(None, module="testsite.wsgi:application", cwd=project,
                             python_home=venv, processes=1, threads=2)
    server = launcher.front_end("nginx", worker)
    stack = Stack("nginx", server, "/app", logs=[worker.log_text])
    info = stack.get("/info").json()
    assert (info["script_name"], info["path_info"], info["reverse_form"]) == \
        ("/app", "/info", "/app/form")
    assert "RW001" in worker.log_text() and "app module testsite.wsgi" in worker.log_text()


def test_a_module_that_fails_to_import_is_500_and_retried(launcher, tmp_path):
    """The same as a script: the import error is logged with its traceback, requests get 500,
    and the next request imports the module again (no restart once it is fixed)."""
    pkg = tmp_path / "later_app"
    tmp_path.chmod(0o755)
    worker = launcher.worker(None, module="later_app.wsgi", cwd=tmp_path, processes=1,
                             threads=1, socket="unix")
    server = launcher.front_end("nginx", worker)
    stack = Stack("nginx", server, "/app", logs=[worker.log_text])
    assert stack.get("/x").status_code == 500
    stack.wait_log("RW-PY001 failed to load WSGI module later_app.wsgi")
    stack.wait_log("ModuleNotFoundError")
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "wsgi.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [environ['PATH_INFO'].encode()]\n")
    r = stack.get("/x")
    assert (r.status_code, r.text) == (200, "/x")
