"""The PEP 3333 conformance suite (tests/test_conformance.py) run against mod_rwsgi, embedded and
daemon mode: Debian's apache2 (event MPM) with the conformance app behind `WSGIScriptAlias /app`.

The assertions are imported unchanged; only the `stack` fixture differs. A test that depends on
the rwsgi-worker daemon would need its own fixture; today every test applies and passes.
"""

import pytest

import test_conformance as _suite
from harness.stack import Stack
from test_apache_module_embedded import rwsgi_apache

# Re-export every conformance test into this module so pytest collects them here too. The daemon
# group listens on its default unix socket: an aborted body without Content-Length is still seen
# as aborted there thanks to the abort mark (crates/apache/src/daemon.rs, send_abort_mark).
for _name in dir(_suite):
    if _name.startswith("test_"):
        globals()[_name] = getattr(_suite, _name)



DAEMON = "WSGIDaemonProcess conf processes=2 threads=4\nWSGIProcessGroup conf"


@pytest.fixture(scope="module", params=["embedded", "daemon"])
def stack(request, new_launcher, apps, state_dir):
    lch = new_launcher(f"apache-module-conformance-{request.param}")
    try:
        config = f"""
            WSGIScriptAlias /app {apps}/conformance.py
            <Directory {apps}>
                Require all granted
            </Directory>
            {DAEMON if request.param == "daemon" else ""}
        """
        apache = rwsgi_apache(lch, config, env={"RWSGI_TEST_STATE_DIR": str(state_dir)})
        logs = [apache.error_log_text, apache.process.log_text]
        yield Stack(f"apache-{request.param}", apache, "/app", logs=logs)
    finally:
        lch.stop_all()

