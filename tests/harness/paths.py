"""Where things are: the checkout, the build products, the venv, the test apps.

nginx workers run as `nobody` and Apache's as `www-data`: whatever they open must be reachable by
"other" (every parent directory o+x, the file o+r). A checkout under /root (0700) is not, so
`public_path()` hands out a world-readable copy under a 0755 temp directory when needed.
"""

import os
import shutil
import stat
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
APPS = TESTS / "apps"
BUILD = ROOT / "build"
VENV = Path(os.environ.get("RWSGI_TEST_VENV", BUILD / "venv"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
WORKER_BIN = Path(os.environ.get("RWSGI_WORKER_BIN", TARGET / "release" / "rwsgi-worker"))
# The nginx binary and the module built for it. Default: Debian's nginx and the workspace build.
# scripts/test-nginx-1.28.sh points both at the nginx 1.28 built from source (build/nginx-1.28)
# and the module compiled against that tree, to run the same nginx tests against it.
NGINX_BIN = Path(os.environ.get("RWSGI_NGINX_BIN", "/usr/sbin/nginx"))
NGINX_MODULE = Path(os.environ.get("RWSGI_NGINX_MODULE",
                                   TARGET / "release" / "libngx_http_wsgi_module.so"))
SERVE_BIN = Path(os.environ.get("RWSGI_SERVE_BIN", TARGET / "release" / "rwsgi"))
APACHE_BIN = Path("/usr/sbin/apache2")
APACHE_MODULES = Path("/usr/lib/apache2/modules")
UWSGI_BIN = Path("/usr/bin/uwsgi")


def world_readable(path: Path) -> bool:
    """True if an unprivileged user could read `path` (and traverse to it)."""
    path = Path(path).resolve()
    try:
        st = path.stat()
    except OSError:
        return False
    need = stat.S_IROTH | (stat.S_IXOTH if path.is_dir() else 0)
    if st.st_mode & need != need:
        return False
    for parent in path.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return True


_public_root = None
_public_cache = {}


def public_root() -> Path:
    """A 0755 directory under the system temp dir for copies other users must read."""
    global _public_root
    if _public_root is None:
        _public_root = Path(tempfile.mkdtemp(prefix="rwsgi-public-"))
        _public_root.chmod(0o755)
    return _public_root


def public_path(path: Path) -> Path:
    """`path` itself if nobody/www-data can read it, else a world-readable copy (made once)."""
    path = Path(path).resolve()
    if path in _public_cache:
        return _public_cache[path]
    if world_readable(path) and (not path.is_dir() or _tree_world_readable(path)):
        _public_cache[path] = path
        return path
    dest = public_root() / path.relative_to("/")
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, dest, symlinks=True)
        else:
            shutil.copy2(path, dest)
        _open_up(public_root())
    _public_cache[path] = dest
    return dest


def public_module(module: Path) -> Path:
    """public_path() of a server module; a copy gets a copy of the rwsgi-worker beside the
    module too, where the module's daemon groups look for it (crates/supervisor/src/hosted.rs)."""
    public = public_path(module)
    worker = Path(module).resolve().parent / "rwsgi-worker"
    beside = public.parent / "rwsgi-worker"
    if public != Path(module).resolve() and worker.exists() and not beside.exists():
        shutil.copy2(worker, beside)
    return public


def _tree_world_readable(top: Path) -> bool:
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            if p.is_symlink():
                continue
            mode = p.stat().st_mode
            need = stat.S_IROTH | (stat.S_IXOTH if p.is_dir() else 0)
            if mode & need != need:
                return False
    return True


def _open_up(top: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            p = Path(dirpath, name)
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | stat.S_IROTH | stat.S_IRGRP)


def make_private_tmp(prefix: str) -> Path:
    """A fresh temp directory that server workers (other users) can enter: mode 0755."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    d.chmod(0o755)
    return d
