"""Flask and Django under mod_rwsgi embedded, with `WSGIPythonHome` pointing at build/venv (a
virtualenv made from Debian's /usr/bin/python3), as a mod_wsgi user would deploy them.
"""

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
                   script_root=request.script_root, path=request.path)

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
                         "reverse": reverse("hello")})

urlpatterns = [path("", hello, name="hello"), path("info", info)]
application = get_wsgi_application()
"""


@pytest.fixture(scope="module")
def site(launcher, venv):
    d = launcher._prefix("frameworks")
    write_app(d, "flask_app.wsgi", FLASK_APP)
    write_app(d, "django_app.wsgi", DJANGO_APP)
    config = f"""
        WSGIPythonHome {venv}
        WSGIScriptAlias /flask {d}/flask_app.wsgi
        WSGIScriptAlias /django {d}/django_app.wsgi
        <Directory {d}>
            Require all granted
        </Directory>
    """
    return rwsgi_apache(launcher, config)


def test_flask(site, venv):
    assert requests.get(site.url("/flask/"), timeout=20).text == "flask ok"
    info = requests.post(site.url("/flask/info"), data={"a": "1"}, timeout=20).json()
    assert info["prefix"] == str(venv)
    assert info["method"] == "POST" and info["form"] == {"a": "1"}
    assert info["script_root"] == "/flask" and info["path"] == "/info"


def test_django(site, venv):
    assert requests.get(site.url("/django/"), timeout=20).text == "django ok"
    info = requests.post(site.url("/django/info"), data={"b": "2"}, timeout=20).json()
    assert info["prefix"] == str(venv)
    assert info["method"] == "POST" and info["post"] == {"b": "2"}
    assert info["script_name"] == "/django" and info["reverse"] == "/django/"
