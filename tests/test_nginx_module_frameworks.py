"""Real Flask and Django apps (tests/apps, from build/venv) under ngx_http_wsgi_module embedded
mode: `wsgi_python_home` names the venv, `wsgi_python_path` adds the Django project. The
assertions of tests/test_frameworks.py are reused unchanged; only the stacks differ.
"""

import pytest

import test_frameworks as _suite
from harness.stack import Stack
from test_nginx_module_embedded import rwsgi_nginx

for _name in dir(_suite):
    if _name.startswith("test_"):
        globals()[_name] = getattr(_suite, _name)


def embedded_stack(new_launcher, name, script, venv, python_path=()):
    lch = new_launcher(f"nginx-module-{name}")
    http = f"wsgi_python_home {venv};\nwsgi_threads 4;\n"
    for p in python_path:
        http += f"wsgi_python_path {p};\n"
    server = f"""
        client_max_body_size 64m;
        location /app {{ wsgi_script {script}; }}
    """
    nginx = rwsgi_nginx(lch, server, http, workers=2)
    return lch, Stack("nginx-embedded", nginx, "/app", logs=[nginx.error_log_text])


@pytest.fixture(scope="module")
def flask_stack(new_launcher, apps, venv):
    lch, stack = embedded_stack(new_launcher, "flask", apps / "flask_app" / "app.py", venv)
    yield stack
    lch.stop_all()


@pytest.fixture(scope="module")
def django_stack(new_launcher, apps, venv):
    project = apps / "django_project"
    lch, stack = embedded_stack(new_launcher, "django", project / "testsite" / "wsgi.py", venv,
                                python_path=[project])
    yield stack
    lch.stop_all()
