"""Real Flask and Django apps (tests/apps, from build/venv) in nginx daemon mode: a
`wsgi_daemon_process` group with `python-home=` the venv (and `python-path=` the Django project).
The assertions of tests/test_frameworks.py are reused unchanged.
"""

import pytest
import requests

import test_frameworks as _suite
from harness.stack import Stack
from test_nginx_module_daemon import wait_for
from test_nginx_module_embedded import rwsgi_nginx

for _name in dir(_suite):
    if _name.startswith("test_"):
        globals()[_name] = getattr(_suite, _name)


def daemon_stack(new_launcher, name, script, venv, python_path=()):
    lch = new_launcher(f"nginx-module-daemon-{name}")
    options = f"processes=2 threads=4 python-home={venv}"
    if python_path:
        options += " python-path=" + ":".join(str(p) for p in python_path)
    server = f"""
        client_max_body_size 64m;
        location /app {{ wsgi_script {script}; wsgi_process_group {name}; }}
    """
    nginx = rwsgi_nginx(lch, server, f"wsgi_daemon_process {name} {options};", workers=2)
    wait_for(lambda: requests.get(nginx.url("/app/"), timeout=5).status_code < 500, timeout=20,
             what=f"the {name} group")
    return lch, Stack("nginx-daemon", nginx, "/app", logs=[nginx.error_log_text, nginx.process.log_text])


@pytest.fixture(scope="module")
def flask_stack(new_launcher, apps, venv):
    lch, stack = daemon_stack(new_launcher, "flask", apps / "flask_app" / "app.py", venv)
    yield stack
    lch.stop_all()


@pytest.fixture(scope="module")
def django_stack(new_launcher, apps, venv):
    project = apps / "django_project"
    lch, stack = daemon_stack(new_launcher, "django", project / "testsite" / "wsgi.py", venv,
                              python_path=[project])
    yield stack
    lch.stop_all()
