"""One interpreter per process, and C extension modules find it, in every Python-hosting mode.

The web-server modules link Debian's libpython3.11.so.1.0 (nginx and httpd dlopen() them, so the
code must be position independent); rwsgi-worker has Debian's static, profile-optimised
interpreter core linked in and exports its C API (docs/building.md, "Which libpython"), and the
modules' daemon groups run in it: their supervisor execs the rwsgi-worker found beside the module
(crates/supervisor/src/hosted.rs). Without one of the same build there (the `-alone` modes), or
with RWSGI_WORKER_PROGRAM=none in the server's environment (`-none`), the group runs in the
server's forked process with the shared library, as before. Either
way C extension modules (Debian's lib-dynload and dist-packages, manylinux wheels, pyo3-based
ones) import, find the C API in the global scope, and there is never a second libpython in the
process: two interpreters would each have their own state, and an extension that bound to the
other one would crash or corrupt memory. mod_wsgi and uWSGI link the shared library, as our
modules do; gunicorn and granian run in /usr/bin/python3.11, the static build, as rwsgi-worker.
"""

import os
import re
import shutil
import sysconfig

import pytest

from harness import paths
from harness.stack import Stack
from test_apache_module_embedded import MODULE as APACHE_MODULE, load_line, rwsgi_apache
from test_nginx_module_embedded import make_nginx

# The tests run on Debian's /usr/bin/python3 (build/venv), the Python everything is built against.
SHARED_LIBPYTHON = os.path.join(sysconfig.get_config_var("LIBDIR"),
                                sysconfig.get_config_var("INSTSONAME"))
MODES = ("rwsgi-worker", "nginx-embedded", "nginx-daemon", "nginx-daemon-alone",
         "nginx-daemon-none", "apache-embedded", "apache-daemon", "apache-daemon-alone")
WORKER = paths.TARGET / "release" / "rwsgi-worker"


def module_alone(lch, module):
    """A copy of `module` in a directory of its own: no rwsgi-worker beside it."""
    d = lch._prefix("module-alone")
    d.chmod(0o755)
    copy = d / module.name
    shutil.copy2(module, copy)
    return copy


def start(lch, mode, script, venv):
    """The linkage app at /app in `mode`; returns (Stack, the executable expected to host it)."""
    if mode == "rwsgi-worker":
        worker = lch.worker(script, processes=1, threads=2, python_home=venv)
        return Stack(mode, lch.front_end("nginx", worker), logs=[worker.log_text]), WORKER
    # A daemon group runs in rwsgi-worker when one of the same build is beside the module.
    in_worker = mode.endswith("-daemon")
    if mode.startswith("nginx"):
        http = f"wsgi_python_home {venv};"
        group = ""
        if "daemon" in mode:
            http += f"\nwsgi_daemon_process linkage processes=1 threads=2 python-home={venv};"
            group = "wsgi_process_group linkage;"
        server = f"location /app {{ wsgi_script {script}; {group} }}"
        kw = {"module": module_alone(lch, paths.NGINX_MODULE)} if mode.endswith("-alone") else {}
        nginx = make_nginx(lch, server, http, **kw)
        if mode.endswith("-none"):
            nginx.process.env = dict(os.environ, RWSGI_WORKER_PROGRAM="none")
        lch.started.append(nginx)
        nginx.start()
        return Stack(mode, nginx, logs=[nginx.error_log_text]), WORKER if in_worker else paths.NGINX_BIN
    daemon = ""
    if "daemon" in mode:
        daemon = f"WSGIDaemonProcess linkage processes=1 threads=2 python-home={venv}\nWSGIProcessGroup linkage"
    config = f"""
        WSGIPythonHome {venv}
        WSGIScriptAlias /app {script}
        <Directory {script.parent}>
            Require all granted
        </Directory>
        {daemon}
    """
    kw = {"load_lines": [load_line(module_alone(lch, APACHE_MODULE))]} if mode.endswith("-alone") else {}
    apache = rwsgi_apache(lch, config, **kw)
    return Stack(mode, apache, logs=[apache.error_log_text]), WORKER if in_worker else paths.APACHE_BIN


@pytest.fixture(scope="module", params=MODES)
def hosted(request, new_launcher, apps, venv):
    lch = new_launcher(f"linkage-{request.param}")
    stack, exe = start(lch, request.param, apps / "linkage.py", venv)
    r = stack.get("")
    assert r.status_code == 200, r.text[:500] + stack.log_text()[-2000:]
    yield request.param, r.json(), exe, stack
    lch.stop_all()


def test_c_extension_modules_import(hosted):
    mode, info, _, _ = hosted
    failed = {name: why for name, why in info["imports"].items() if why != "ok"}
    assert not failed, f"{mode}: {failed}"
    assert info["sqlite"] == 42


def test_exactly_one_interpreter_in_the_process(hosted):
    mode, info, exe, _ = hosted
    assert os.path.realpath(info["exe"]) == os.path.realpath(exe)
    if os.path.realpath(exe) == os.path.realpath(WORKER):
        # The interpreter is the executable's own: no shared libpython may be loaded beside it.
        assert info["libpythons"] == [], info["libpythons"]
    else:
        assert info["libpythons"] == [SHARED_LIBPYTHON], info["libpythons"]
    # The C API found through the global scope (ctypes.pythonapi, as C extensions find it) is
    # the interpreter that runs the app.
    assert info["c_api_version"] == info["version"]


def test_the_start_up_line_names_the_interpreter(hosted):
    """RW001 says which file the daemon group's Python comes from (what an admin checks after
    installing the module without the rwsgi-worker package)."""
    mode, _, exe, stack = hosted
    if "daemon" not in mode:
        pytest.skip("daemon groups only")
    expected = WORKER if exe == WORKER else SHARED_LIBPYTHON
    assert f"from {os.path.realpath(expected)}" in stack.log_text(), stack.log_text()[-2000:]


def test_nothing_of_the_handover_reaches_the_app(hosted):
    """The descriptor variable that tells rwsgi-worker it was handed a group is gone from the
    environment before any Python runs (and the group's secret never was in it), and the app's
    process holds none of our memory files: not the handed-over configuration (it holds the
    group's secret) and not the metrics region's file (the mapping is enough to record; a
    descriptor would let app code reach the file the server's master maps)."""
    mode, info, _, _ = hosted
    assert "RWSGI_HOSTED_GROUP" not in info["rwsgi_environ"], (mode, info["rwsgi_environ"])
    assert info["rwsgi_memfds"] == [], (mode, info["rwsgi_memfds"])


def test_a_program_that_cannot_run_leaves_the_group_in_the_server(new_launcher, apps, venv):
    """A program that passes every check but the kernel will not run (here: the build's ABI string
    in a file that is no ELF program; in the field, an LSM policy that forbids nginx to exec):
    `fexecve` fails, the supervisor says so, and the group runs in the forked server process on
    the shared library instead of failing. (mod_wsgi has no such step: its daemons always run
    the library httpd loaded.)"""
    lch = new_launcher("linkage-exec-fails")
    abi = re.search(rb"rwsgi-hosted-abi/[0-9.]+-[0-9a-f]{16}", paths.NGINX_MODULE.read_bytes())
    assert abi, "the module carries its ABI string"
    d = lch._prefix("fake-program")
    d.chmod(0o755)
    fake = d / "rwsgi-worker"
    fake.write_bytes(b"not a program: " + abi.group(0) + b"\n")
    fake.chmod(0o755)
    script = apps / "linkage.py"
    http = (f"wsgi_python_home {venv};\n"
            f"wsgi_daemon_process linkage processes=1 threads=2 python-home={venv};")
    server = f"location /app {{ wsgi_script {script}; wsgi_process_group linkage; }}"
    nginx = make_nginx(lch, server, http)
    nginx.process.env = dict(os.environ, RWSGI_WORKER_PROGRAM=str(fake))
    lch.started.append(nginx)
    nginx.start()
    stack = Stack("nginx-daemon-exec-fails", nginx, logs=[nginx.error_log_text])
    r = stack.get("")
    assert r.status_code == 200, r.text[:500] + stack.log_text()[-2000:]
    info = r.json()
    assert os.path.realpath(info["exe"]) == os.path.realpath(paths.NGINX_BIN)
    assert info["libpythons"] == [SHARED_LIBPYTHON]
    log = stack.log_text()
    assert re.search(rf"RW013 exec {re.escape(str(fake))}: Exec format error \(os error 8\); "
                     r"the group runs in this process, on the server's libpython", log), log[-2000:]
    assert f"from {os.path.realpath(SHARED_LIBPYTHON)}" in log
    # The plan's descriptors were closed after the failed exec: the workers do not inherit them.
    assert info["rwsgi_memfds"] == [], info["rwsgi_memfds"]
    lch.stop_all()
