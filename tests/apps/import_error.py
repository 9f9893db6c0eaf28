"""A WSGI script that fails to import until a flag file exists.

The server must answer 500 and log the traceback (with IMPORT_MARKER) while the import fails, stay
alive, and load the script on a later request once the flag file appears (mod_wsgi's behaviour).
"""

import os
import tempfile

STATE_DIR = os.environ.get("RWSGI_TEST_STATE_DIR") or os.path.join(
    tempfile.gettempdir(), "rwsgi-test-state")
FLAG = os.path.join(STATE_DIR, "import_error.allow")
IMPORT_MARKER = "conformance-import-error-marker"

if not os.path.exists(FLAG):
    raise ImportError(f"{IMPORT_MARKER}: flag file {FLAG} missing")


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"imported after retry"]
