"""What the process hosting this app links: which C extension modules import, and which copies
of libpython are mapped (tests/test_interpreter_linkage.py; docs/building.md, "Which libpython").

C extension modules are not linked against libpython: they find the C API (`PyExc_ValueError`,
`PyLong_FromLong`, ...) in the process's global symbol scope, from libpython3.11.so.1.0 loaded
globally with our web-server module, or from the rwsgi-worker executable, which exports it.
"""

import ctypes
import json
import os
import sys

# Debian's packaged C extensions (PyYAML's libyaml binding, cffi, cryptography's pyo3 module):
# the venv the test selects does not include system site-packages.
DIST_PACKAGES = "/usr/lib/python3/dist-packages"
if DIST_PACKAGES not in sys.path:
    sys.path.append(DIST_PACKAGES)

MODULES = [
    "_ssl", "_hashlib", "_ctypes", "_sqlite3", "_decimal", "_json", "_pickle", "_asyncio",
    "zlib", "pyexpat", "_bz2", "_lzma", "_uuid",               # Debian's lib-dynload (and builtins)
    "yaml._yaml", "_cffi_backend", "cryptography.hazmat.bindings._rust",  # dist-packages
    "markupsafe._speedups", "pydantic_core._pydantic_core",    # manylinux wheels in the venv
]


def _imports():
    result = {}
    for name in MODULES:
        try:
            __import__(name)
            result[name] = "ok"
        except Exception as e:  # noqa: BLE001 - the test shows every failure at once
            result[name] = f"{type(e).__name__}: {e}"
    return result


def _libpythons():
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "libpython" in line}
    return sorted(os.path.realpath(p) for p in paths)


def _rwsgi_memfds():
    """Memory files of ours this process holds open (the metrics region, a handed-over config)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/memfd:rwsgi"):
            found.append(target)
    return sorted(found)


def application(environ, start_response):
    get_version = ctypes.pythonapi.Py_GetVersion  # dlsym in the global scope
    get_version.restype = ctypes.c_char_p
    body = json.dumps({
        "imports": _imports(),
        "libpythons": _libpythons(),
        "exe": os.path.realpath("/proc/self/exe"),
        "version": sys.version,
        "c_api_version": get_version().decode(),
        "sqlite": __import__("sqlite3").connect(":memory:").execute("select 6*7").fetchone()[0],
        "rwsgi_environ": sorted(k for k in os.environ if k.startswith("RWSGI_")),
        "rwsgi_memfds": _rwsgi_memfds(),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
