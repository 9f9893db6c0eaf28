"""One interpreter per process, and C extension modules find it, in every Python-hosting mode.

The web-server modules link Debian's libpython3.11.so.1.0 (nginx and httpd dlopen() them, so the
code must be position independent); rwsgi-worker has Debian's static, profile-optimised
interpreter core linked in and exports its C API (docs/building.md, "Which libpython"). Either
way C extension modules (Debian's lib-dynload and dist-packages, manylinux wheels, pyo3-based
ones) import, find the C API in the global scope, and there is never a second libpython in the
process: two interpreters would each have their own state, and an extension that bound to the
other one would crash or corrupt memory. mod_wsgi and uWSGI link the shared library, as our
modules do; gunicorn and granian run in /usr/bin/python3.11, the static build, as rwsgi-worker.
"""

import os
import sysconfig

import pytest

from harness import paths
from harness.stack import Stack
from test_apache_module_embedded import rwsgi_apache
from test_nginx_module_embedded import rwsgi_nginx

# The tests run on Debian's /usr/bin/python3 (build/venv), the Python everything is built against.
SHARED_LIBPYTHON = os.path.join(sysconfig.get_config_var("LIBDIR"),
                                sysconfig.get_config_var("INSTSONAME"))
MODES = ("rwsgi-worker", "nginx-embedded", "nginx-daemon", "apache-embedded", "apache-daemon")


def start(lch, mode, script, venv):
    """The linkage app at /app in `mode`; returns (Stack, the executable expected to host it)."""
    if mode == "rwsgi-worker":
        worker = lch.worker(script, processes=1, threads=2, python_home=venv)
        return Stack(mode, lch.front_end("nginx", worker), logs=[worker.log_text]), paths.TARGET / "release" / "rwsgi-worker"
    if mode.startswith("nginx"):
        http = f"wsgi_python_home {venv};"
        group = ""
        if mode == "nginx-daemon":
            http += f"\nwsgi_daemon_process linkage processes=1 threads=2 python-home={venv};"
            group = "wsgi_process_group linkage;"
        server = f"location /app {{ wsgi_script {script}; {group} }}"
        nginx = rwsgi_nginx(lch, server, http)
        return Stack(mode, nginx, logs=[nginx.error_log_text]), paths.NGINX_BIN
    daemon = ""
    if mode == "apache-daemon":
        daemon = f"WSGIDaemonProcess linkage processes=1 threads=2 python-home={venv}\nWSGIProcessGroup linkage"
    config = f"""
        WSGIPythonHome {venv}
        WSGIScriptAlias /app {script}
        <Directory {script.parent}>
            Require all granted
        </Directory>
        {daemon}
    """
    apache = rwsgi_apache(lch, config)
    return Stack(mode, apache, logs=[apache.error_log_text]), paths.APACHE_BIN


@pytest.fixture(scope="module", params=MODES)
def hosted(request, new_launcher, apps, venv):
    lch = new_launcher(f"linkage-{request.param}")
    stack, exe = start(lch, request.param, apps / "linkage.py", venv)
    r = stack.get("")
    assert r.status_code == 200, r.text[:500] + stack.log_text()[-2000:]
    yield request.param, r.json(), exe
    lch.stop_all()


def test_c_extension_modules_import(hosted):
    mode, info, _ = hosted
    failed = {name: why for name, why in info["imports"].items() if why != "ok"}
    assert not failed, f"{mode}: {failed}"
    assert info["sqlite"] == 42


def test_exactly_one_interpreter_in_the_process(hosted):
    mode, info, exe = hosted
    assert os.path.realpath(info["exe"]) == os.path.realpath(exe)
    if mode == "rwsgi-worker":
        # The interpreter is the executable's own: no shared libpython may be loaded beside it.
        assert info["libpythons"] == [], info["libpythons"]
    else:
        assert info["libpythons"] == [SHARED_LIBPYTHON], info["libpythons"]
    # The C API found through the global scope (ctypes.pythonapi, as C extensions find it) is
    # the interpreter that runs the app.
    assert info["c_api_version"] == info["version"]
