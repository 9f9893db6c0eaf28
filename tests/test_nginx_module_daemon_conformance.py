"""The PEP 3333 conformance suite (tests/test_conformance.py) run against ngx_http_wsgi_module in
daemon mode: the conformance app in a `wsgi_daemon_process` group (2 processes x 4 threads)
behind `location /app` with `wsgi_process_group`. Assertions imported unchanged.

The group listens on TCP here (`socket=127.0.0.1:PORT`), where the worker signals "response
aborted after the head" with a reset. The default unix socket, where the signal is the abort mark
(docs/architecture.md, "Aborted responses"), runs the ways a response can end at the bottom.
"""

import pytest

import test_conformance as _suite
from harness.stack import Stack
from test_nginx_module_daemon import wait_for
from test_nginx_module_embedded import rwsgi_nginx

for _name in dir(_suite):
    if _name.startswith("test_"):
        globals()[_name] = getattr(_suite, _name)


def conformance_daemon(lch, apps, state_dir, group, kind, workers):
    """nginx with the conformance app in daemon group `group` (its options included); yields the
    Stack once the group answers."""
    try:
        server = f"""
            client_max_body_size 64m;
            location /app {{
                wsgi_script {apps}/conformance.py;
                wsgi_process_group {group.split()[0]};
            }}
        """
        nginx = rwsgi_nginx(lch, server, f"wsgi_daemon_process {group};", workers=workers,
                            state_dir=state_dir)
        import requests
        wait_for(lambda: requests.get(nginx.url("/app/pid"), timeout=5).status_code == 200,
                 what="the daemon group")
        yield Stack(kind, nginx, "/app", logs=[nginx.error_log_text, nginx.process.log_text])
    finally:
        lch.stop_all()


@pytest.fixture(scope="module")
def stack(new_launcher, apps, state_dir):
    from harness.ports import free_port
    group = f"conformance processes=2 threads=4 socket=127.0.0.1:{free_port()}"
    yield from conformance_daemon(new_launcher("nginx-module-daemon-conformance"), apps,
                                  state_dir, group, "nginx-daemon", workers=2)


# ---- the same endings over the default unix socket -------------------------------------------
# A unix socket closes with a clean EOF whatever happened; the module's abort mark (one byte sent
# to the worker after a head without Content-Length, left unread when the app fails) makes an
# aborted body an error for nginx there too. A body shorter than its Content-Length is caught by
# nginx counting the bytes.

@pytest.fixture(scope="module")
def unix_stack(new_launcher, apps, state_dir):
    yield from conformance_daemon(new_launcher("nginx-module-daemon-unix-endings"), apps,
                                  state_dir, "endings processes=1 threads=2", "nginx-daemon-unix",
                                  workers=1)


@pytest.mark.parametrize("ending", [
    "test_exception_after_headers_without_length_aborts",
    "test_exception_after_headers_aborts",
    "test_content_length_shorter_body_closes",
    "test_content_length_longer_body_truncated",
    "test_generator_streamed",
])
def test_endings_over_the_unix_socket(unix_stack, ending):
    getattr(_suite, ending)(unix_stack)


def test_complete_bodies_without_length_stay_whole_over_the_unix_socket(unix_stack):
    """The clean side of the mark: many complete unframed responses, none cut, none reset."""
    resets = unix_stack.log_text().count("reset by peer")
    for _ in range(50):
        resp = unix_stack.raw("GET", "/stream?n=3&delay=0")
        assert resp.status == 200 and not resp.truncated, resp.raw[-200:]
        assert resp.body.count(b"chunk ") == 3
    assert unix_stack.log_text().count("reset by peer") == resets
