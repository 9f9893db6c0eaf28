"""The PEP 3333 conformance suite (tests/test_conformance.py) run against mod_rwsgi in embedded
mode: Debian's apache2 (event MPM) with the conformance app behind `WSGIScriptAlias /app`.

The assertions are imported unchanged; only the `stack` fixture differs. A test that depends on
the rwsgi-worker daemon would need its own fixture; today every test applies and passes.
"""

import pytest

import test_conformance as _suite
from harness.stack import Stack
from test_apache_module_embedded import rwsgi_apache

# Re-export every conformance test into this module so pytest collects them here too.
for _name in dir(_suite):
    if _name.startswith("test_"):
        globals()[_name] = getattr(_suite, _name)



@pytest.fixture(scope="module")
def stack(new_launcher, apps, state_dir):
    lch = new_launcher("apache-module-conformance")
    try:
        config = f"""
            WSGIScriptAlias /app {apps}/conformance.py
            <Directory {apps}>
                Require all granted
            </Directory>
        """
        apache = rwsgi_apache(lch, config, env={"RWSGI_TEST_STATE_DIR": str(state_dir)})
        yield Stack("apache-embedded", apache, "/app", logs=[apache.error_log_text])
    finally:
        lch.stop_all()
