"""The PEP 3333 conformance suite (tests/test_conformance.py) against `rwsgi-worker --ini
tests/apps/conformance.ini` (module, chdir, pythonpath, processes 2 x threads 4, harakiri,
max-requests, a unix socket): the worker a uWSGI user gets from their own file, behind stock nginx
(`uwsgi_pass`) and Apache (`mod_proxy_uwsgi`) at /app. Assertions imported unchanged.
"""

import pytest

from harness import suite
from harness.frontends import FRONT_ENDS
from harness.stack import Stack

_UNIX_EOF = (
    "uwsgi ends a body at EOF and the file's unix socket cannot reset: a stock front end "
    "(which sends no RWSGI_ABORT_MARK) takes an aborted response without Content-Length as "
    "complete, with uWSGI too (docs/rwsgi-worker.md: use TCP, or a Content-Length)")
suite.reuse(globals(), {
    "nginx": {"test_exception_after_headers_without_length_aborts": _UNIX_EOF},
    "apache": {"test_exception_after_headers_without_length_aborts": _UNIX_EOF},
})


@pytest.fixture(scope="module", params=FRONT_ENDS)
def stack(request, new_launcher, apps):
    lch = new_launcher(f"worker-ini-conformance-{request.param}")
    try:
        worker = lch.ini_worker(apps / "conformance.ini")
        server = lch.front_end(request.param, worker)
        yield Stack(request.param, server, "/app", logs=[worker.log_text])
    finally:
        lch.stop_all()
