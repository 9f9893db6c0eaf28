"""Real Flask and Django apps (from PyPI, in build/venv selected with --python-home) served by
rwsgi-worker behind stock nginx and Apache at /app: pages, form POSTs, file uploads, streaming.
"""

import hashlib
import os
import re
import time

import pytest
import requests

from harness.frontends import FRONT_ENDS
from harness.stack import Stack


def make_stack(new_launcher, kind, name, script, venv, python_path=()):
    lch = new_launcher(f"{name}-{kind}")
    worker = lch.worker(script, processes=2, threads=4, python_home=venv, python_path=python_path)
    server = lch.front_end(kind, worker)
    return lch, Stack(kind, server, "/app", logs=[worker.log_text])


@pytest.fixture(scope="module", params=FRONT_ENDS)
def flask_stack(request, new_launcher, apps, venv):
    lch, stack = make_stack(new_launcher, request.param, "flask", apps / "flask_app" / "app.py", venv)
    yield stack
    lch.stop_all()


@pytest.fixture(scope="module", params=FRONT_ENDS)
def django_stack(request, new_launcher, apps, venv):
    project = apps / "django_project"
    lch, stack = make_stack(new_launcher, request.param, "django", project / "testsite" / "wsgi.py",
                            venv, python_path=[project])
    yield stack
    lch.stop_all()


def upload_payload(size):
    data = os.urandom(size)
    return data, hashlib.sha256(data).hexdigest()


def assert_streams(stack, path, n, delay):
    start = time.monotonic()
    with requests.get(stack.url(path), stream=True, timeout=10) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        first = next(lines)
        first_at = time.monotonic() - start
        rest = list(lines)
    assert first.startswith(b"line 0") and len(rest) == n - 1
    assert first_at < delay * (n - 1) * 0.5, f"first line after {first_at:.2f}s: not streamed"


# ---- Flask ---------------------------------------------------------------------------------

def test_flask_page(flask_stack):
    r = flask_stack.get("/")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "<h1>rwsgi flask test</h1>" in r.text
    assert 'action="/app/form"' in r.text  # url_for knows the mount


def test_flask_runs_in_the_venv_under_the_mount(flask_stack, venv):
    info = flask_stack.get("/info").json()
    assert info["script_root"] == "/app" and info["path"] == "/info"
    assert os.path.realpath(info["prefix"]) == os.path.realpath(venv)


def test_flask_form_post(flask_stack):
    r = flask_stack.post("/form", data={"name": "Zo\u00eb \u6f22\u5b57", "colour": "blue & green",
                                        "multi": ["1", "2", "3"]})
    assert r.json() == {"name": "Zo\u00eb \u6f22\u5b57", "colour": "blue & green", "multi": ["1", "2", "3"]}


def test_flask_file_upload(flask_stack):
    data, digest = upload_payload(3 * 1024 * 1024 + 5)
    r = flask_stack.post("/upload", files={"file": ("photo.bin", data, "application/x-test")},
                         data={"note": "hello"}, timeout=30)
    assert r.json() == {"filename": "photo.bin", "size": len(data), "sha256": digest,
                        "mimetype": "application/x-test", "note": "hello"}


def test_flask_streamed_response(flask_stack):
    assert_streams(flask_stack, "/stream?n=4&delay=0.4&tag=x", 4, 0.4)


def test_flask_redirect_session_json(flask_stack):
    r = flask_stack.get("/redirect", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"].endswith("/app/info")
    with requests.Session() as s:
        assert s.get(flask_stack.url("/session/abc"), timeout=10).text == "stored"
        assert s.get(flask_stack.url("/session"), timeout=10).json() == {"value": "abc"}
    assert flask_stack.post("/json", json={"a": [1, 2]}).json() == {"received": {"a": [1, 2]}}


def test_flask_error_is_500_and_logged(flask_stack):
    r = flask_stack.get("/error")
    assert r.status_code == 500
    flask_stack.wait_log("flask test error route")


# ---- Django --------------------------------------------------------------------------------

def test_django_page(django_stack):
    r = django_stack.get("/")
    assert r.status_code == 200 and "<h1>rwsgi django test</h1>" in r.text
    assert 'action="/app/form"' in r.text


def test_django_runs_in_the_venv_under_the_mount(django_stack, venv):
    info = django_stack.get("/info?x=1").json()
    assert info["script_name"] == "/app" and info["path"] == "/app/info" and info["path_info"] == "/info"
    assert info["reverse_form"] == "/app/form"
    # Host part: Debian's uwsgi_params sends HTTP_HOST as $host (no port), so compare the rest.
    assert info["absolute"].startswith("http://127.0.0.1")
    assert info["absolute"].endswith("/app/info?x=1")
    assert os.path.realpath(info["prefix"]) == os.path.realpath(venv)


def test_django_form_post_with_csrf(django_stack):
    with requests.Session() as s:
        page = s.get(django_stack.url("/"), timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        r = s.post(django_stack.url("/form"), timeout=10,
                   data={"csrfmiddlewaretoken": token, "name": "Zo\u00eb", "colour": "red"})
        assert r.status_code == 200, r.text[:300]
        assert r.json() == {"name": "Zo\u00eb", "colour": "red"}
    r = django_stack.post("/form", data={"name": "no token"})
    assert r.status_code == 403


def test_django_file_upload(django_stack):
    data, digest = upload_payload(5 * 1024 * 1024 + 3)  # over 2.5 MB: Django spools to a temp file
    with requests.Session() as s:
        page = s.get(django_stack.url("/"), timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        r = s.post(django_stack.url("/upload"), timeout=30,
                   files={"file": ("big.dat", data)}, data={"csrfmiddlewaretoken": token, "note": "n"})
    assert r.status_code == 200, r.text[:300]
    assert r.json() == {"filename": "big.dat", "size": len(data), "sha256": digest, "note": "n"}


def test_django_streamed_response(django_stack):
    assert_streams(django_stack, "/stream?n=4&delay=0.4", 4, 0.4)


def test_django_database(django_stack):
    first = django_stack.get("/db").json()["hits"]
    second = django_stack.get("/db").json()["hits"]
    assert second == first + 1


def test_django_error_is_500_and_logged(django_stack):
    r = django_stack.get("/error")
    assert r.status_code == 500
    django_stack.wait_log("django test error view")
