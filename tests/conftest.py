"""pytest fixtures for the end-to-end tests (see tests/harness/ for the machinery).

Fixtures:
  free_port         -> function returning a free 127.0.0.1 port
  venv              -> build/venv (Debian python3 venv with Flask, Django, ...), or a
                       world-readable copy of it when the checkout is private (/root is 0700)
  apps              -> Path of tests/apps, world-readable (copied to a 0755 temp dir if needed)
  public_path       -> function(path) -> a world-readable path/copy for nobody/www-data
  state_dir         -> a 0777 directory the test apps write their records into (close() log...)
  launcher          -> module-scoped Launcher: .worker(), .nginx(), .apache(), .front_end();
                       everything it started is stopped (by pid) when the module ends
  launcher_fn       -> the same, per test (for tests that kill or restart things)
  new_launcher      -> function(name) -> a Launcher the caller stops (for parametrised
                       module-scoped stacks that must not outlive their parameter)
"""

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import paths  # noqa: E402
from harness.launcher import ACTIVE, Launcher  # noqa: E402
from harness.ports import free_port as _free_port  # noqa: E402


@pytest.fixture(scope="session")
def rwsgi_tmp():
    base = paths.make_private_tmp("rwsgi-test-")
    yield base
    if not os.environ.get("RWSGI_TEST_KEEP"):
        shutil.rmtree(base, ignore_errors=True)
        if paths._public_root is not None:
            shutil.rmtree(paths._public_root, ignore_errors=True)


@pytest.fixture(scope="session")
def free_port():
    return _free_port


@pytest.fixture(scope="session")
def venv():
    if not (paths.VENV / "bin" / "python3").exists():
        pytest.fail(f"{paths.VENV} missing: run scripts/setup.sh")
    # Embedded-mode tests run Python in nginx/Apache workers (nobody/www-data): they must be
    # able to read the venv. A copy keeps working: pyvenv.cfg names /usr/bin, bin/python3 is
    # a symlink, and site-packages is found relative to the copy.
    return paths.public_path(paths.VENV)


@pytest.fixture(scope="session")
def apps():
    return paths.public_path(paths.APPS)


@pytest.fixture(scope="session")
def public_path():
    return paths.public_path


@pytest.fixture(scope="session")
def state_dir(rwsgi_tmp):
    d = rwsgi_tmp / "state"
    d.mkdir()
    d.chmod(0o777)
    return d


def _launcher(base: Path, name: str, state_dir: Path):
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-60:]
    d = base / safe
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o755)
    return Launcher(d, state_dir)


@pytest.fixture(scope="module")
def launcher(rwsgi_tmp, state_dir, request):
    lch = _launcher(rwsgi_tmp, request.module.__name__, state_dir)
    yield lch
    lch.stop_all()


@pytest.fixture(scope="session")
def new_launcher(rwsgi_tmp, state_dir):
    return lambda name: _launcher(rwsgi_tmp, name, state_dir)


@pytest.fixture
def launcher_fn(rwsgi_tmp, state_dir, request):
    lch = _launcher(rwsgi_tmp, request.node.nodeid, state_dir)
    yield lch
    lch.stop_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and ACTIVE:
        report.sections.append(("server logs", "\n".join(lch.logs() for lch in ACTIVE)))
