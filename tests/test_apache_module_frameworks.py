"""Flask and Django under mod_rwsgi embedded, with `WSGIPythonHome` pointing at build/venv (a
virtualenv made from Debian's /usr/bin/python3), as a mod_wsgi user would deploy them.
"""

import shutil
import tempfile
from pathlib import Path

import pytest
import requests

from test_apache_module_embedded import rwsgi_apache, write_app

FLASK_APP = """\
import sys
from flask import Flask, request, jsonify

app = Flask(__name__)

@app.route("/")
def index():
    return "flask ok"

@app.route("/info", methods=["GET", "POST"])
def info():
    return jsonify(prefix=sys.prefix, method=request.method, form=request.form.to_dict(),
                   script_root=request.script_root, path=request.path,
                   process=open("/proc/self/comm").read().strip())

application = app
"""

DJANGO_APP = """\
import sys
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="test-only-not-secret",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
)

from django.http import HttpResponse, JsonResponse
from django.urls import path, reverse
from django.core.wsgi import get_wsgi_application

def hello(request):
    return HttpResponse("django ok")

def info(request):
    return JsonResponse({"prefix": sys.prefix, "method": request.method,
                         "post": request.POST.dict(), "script_name": request.META["SCRIPT_NAME"],
                         "reverse": reverse("hello"), "process": open("/proc/self/comm").read().strip()})

urlpatterns = [path("", hello, name="hello"), path("info", info)]
application = get_wsgi_application()
"""


@pytest.fixture(scope="module", params=["embedded", "daemon"])
def site(request, new_launcher, venv):
    lch = new_launcher(f"apache-frameworks-{request.param}")
    # A short directory: daemon sockets live here and unix socket paths are limited to 107 bytes.
    d = Path(tempfile.mkdtemp(prefix="fw-"))
    d.chmod(0o755)
    write_app(d, "flask_app.wsgi", FLASK_APP)
    write_app(d, "django_app.wsgi", DJANGO_APP)
    if request.param == "daemon":
        # One script per daemon group; python-home is inherited from WSGIPythonHome.
        daemons = f"""
            WSGISocketPrefix {d}/s
            WSGIDaemonProcess flask processes=1 threads=4 display-name=%{{GROUP}}
            WSGIDaemonProcess django processes=2 threads=2 display-name=%{{GROUP}}
        """
        groups = ("process-group=flask application-group=%{GLOBAL}", "process-group=django application-group=%{GLOBAL}")
    else:
        daemons, groups = "", ("", "")
    config = f"""
        WSGIPythonHome {venv}
        {daemons}
        WSGIScriptAlias /flask {d}/flask_app.wsgi {groups[0]}
        WSGIScriptAlias /django {d}/django_app.wsgi {groups[1]}
        <Directory {d}>
            Require all granted
        </Directory>
    """
    try:
        apache = rwsgi_apache(lch, config)
        apache.mode = request.param
        yield apache
    finally:
        lch.stop_all()
        shutil.rmtree(d, ignore_errors=True)


def test_flask(site, venv):
    assert requests.get(site.url("/flask/"), timeout=20).text == "flask ok"
    info = requests.post(site.url("/flask/info"), data={"a": "1"}, timeout=20).json()
    assert info["prefix"] == str(venv)
    assert info["method"] == "POST" and info["form"] == {"a": "1"}
    assert info["script_root"] == "/flask" and info["path"] == "/info"
    assert info["process"] == ("(wsgi:flask)" if site.mode == "daemon" else "apache2")


def test_django(site, venv):
    assert requests.get(site.url("/django/"), timeout=20).text == "django ok"
    info = requests.post(site.url("/django/info"), data={"b": "2"}, timeout=20).json()
    assert info["prefix"] == str(venv)
    assert info["method"] == "POST" and info["post"] == {"b": "2"}
    assert info["script_name"] == "/django" and info["reverse"] == "/django/"
    assert info["process"] == ("(wsgi:django)" if site.mode == "daemon" else "apache2")
