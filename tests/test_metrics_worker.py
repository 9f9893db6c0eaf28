"""Metrics from a standalone rwsgi-worker (`--metrics ADDR`) behind Debian's stock nginx
`uwsgi_pass`, and `rwsgi top` reading the three kinds of endpoint. The worker counts the requests
itself here (no rwsgi front end does it); the numbers are checked against what the test sent, and
a SIGKILL'ed worker, a request-timeout kill and a SIGHUP rolling restart are counted.

uWSGI's nearest equivalent is its stats server (`--stats`): JSON per worker, from the master;
gunicorn only pushes statsd.
"""

import os
import signal
import subprocess
import time

import pytest
import requests

from harness import paths
from harness.metrics import (APP, ASGI_APP, Load, Scrape, check_http_counts, client_leaves,
                             counted, exact_counts_under_load, interrupted_timeout_is_counted,
                             mixed_plan, promtool_check, scrape, stuck_timeout_is_a_respawn,
                             wait_for)
from harness.frontends import GATEWAY_FRONT_ENDS
from harness.ports import free_port
from test_nginx_module_embedded import write_app

GROUP = "rwsgi-worker"


@pytest.fixture(scope="module")
def stack(launcher):
    d = launcher._prefix("apps")
    d.chmod(0o755)
    app = write_app(d, "metrics_app.py", APP)
    port = free_port()
    worker = launcher.worker(app, socket="unix", mount="/app", processes=2, threads=4,
                             extra_args=["--metrics", f"127.0.0.1:{port}",
                                         "--request-timeout", "2"])
    front = launcher.front_end("nginx", worker, mount="/app")
    front.worker = worker
    front.metrics = f"http://127.0.0.1:{port}/metrics"
    front.metrics_port = port
    wait_for(front.metrics, lambda s: s.value("rwsgi_processes", group=GROUP, role="worker") == 2,
             what="two workers")
    return front


def test_counts_are_exact_under_load(stack):
    # Stock nginx does not say when it received the request: no queue to measure.
    after = exact_counts_under_load(stack, "/app", GROUP, queued=False)
    assert after.value("rwsgi_processes", group=GROUP, role="supervisor") == 1
    assert after.value("rwsgi_threads", group=GROUP, state="idle") + \
        after.value("rwsgi_threads", group=GROUP, state="busy") == 8


def test_the_endpoint_answers_only_get_of_metrics(stack):
    assert requests.get(f"http://127.0.0.1:{stack.metrics_port}/other", timeout=10).status_code == 404
    assert requests.post(stack.metrics, data=b"x", timeout=10).status_code == 405
    om = requests.get(stack.metrics, headers={"Accept": "application/openmetrics-text"}, timeout=10)
    assert om.text.endswith("# EOF\n")
    Scrape(om.text, openmetrics=True)


def test_a_client_that_leaves_is_an_abort(stack):
    """The front end closes the worker connection when its client goes: the worker's write
    fails, pyhost calls close(), and the request counts as a client abort."""
    client_leaves(stack, stack.port, "/app", GROUP)


def test_sigkill_restart_and_timeout_are_counted(stack):
    before = scrape(stack.metrics)
    pid = int(requests.get(stack.url("/app/pid"), timeout=10).text)
    os.kill(pid, signal.SIGKILL)
    wait_for(stack.metrics, lambda s: s.delta(before, "rwsgi_worker_respawns_total", group=GROUP,
                                              reason="crash") == 1, what="the crash respawn")
    # time.sleep is C code the interrupt cannot reach: the worker answers 504 and retires.
    stuck_timeout_is_a_respawn(stack, "/app", GROUP)
    stack.worker.reload()  # SIGHUP: a rolling restart replaces both workers
    after = wait_for(stack.metrics, lambda s: s.delta(before, "rwsgi_worker_respawns_total",
                                                      group=GROUP, reason="reload") == 2,
                     what="the rolling restart")
    assert after.delta(before, "rwsgi_worker_respawns_total", group=GROUP, reason="crash") == 1


def test_an_interrupted_request_timeout_is_counted(stack):
    """--request-timeout 2 and a request spinning in Python: interrupted, 504 (counted by the
    worker itself, as it answers HTTP here), one timeout, no respawn. (uWSGI's harakiri kills
    the worker instead.)"""
    interrupted_timeout_is_counted(stack, "/app", GROUP)


@pytest.mark.parametrize("kind", sorted(GATEWAY_FRONT_ENDS))
def test_scgi_and_fastcgi_requests_are_counted(launcher, kind):
    """A worker speaking SCGI or FastCGI behind stock nginx (scgi_pass, fastcgi_pass) or Apache
    (mod_proxy_scgi, mod_proxy_fcgi): the same exact counts as over uwsgi. (uWSGI's stats
    server counts its SCGI/FastCGI requests per worker, without statuses or bytes.)"""
    d = launcher._prefix("apps")
    d.chmod(0o755)
    app = write_app(d, "metrics_app.py", APP)
    port = free_port()
    worker = launcher.worker(app, socket="unix", mount="/app", processes=2, threads=4,
                             protocol=GATEWAY_FRONT_ENDS[kind],
                             extra_args=["--metrics", f"127.0.0.1:{port}"])
    front = launcher.front_end(kind, worker, mount="/app")
    front.metrics = f"http://127.0.0.1:{port}/metrics"
    wait_for(front.metrics, lambda s: s.value("rwsgi_processes", group=GROUP, role="worker") == 2,
             what="two workers")
    # A stock front end sends no start time: nothing is seen queueing.
    exact_counts_under_load(front, "/app", GROUP, queued=False)


def test_an_asgi_worker_counts_its_requests(launcher):
    """rwsgi-worker --interface asgi --metrics behind stock nginx: the same mix of statuses and
    bodies, counted exactly while a scraper reads along (the loop's connections, not threads),
    and both kinds of ASGI request timeout.
    uWSGI's stats server has no ASGI; granian's metrics port is the nearest peer."""
    d = launcher._prefix("apps")
    d.chmod(0o755)
    app = write_app(d, "metrics_asgi.py", ASGI_APP)
    port = free_port()
    worker = launcher.worker(app, socket="unix", mount="/a", processes=1, callable="app",
                             extra_args=["--interface", "asgi", "--metrics", f"127.0.0.1:{port}",
                                         "--request-timeout", "1"])
    front = launcher.front_end("nginx", worker, mount="/a")
    front.metrics = f"http://127.0.0.1:{port}/metrics"
    wait_for(front.metrics, lambda s: s.value("rwsgi_processes", group=GROUP, role="worker") == 1,
             what="the worker")
    before = scrape(front.metrics)
    plan, expected = mixed_plan("/a", n=8)
    responses = Load(front.base_url, front.metrics, plan).run()
    after = wait_for(front.metrics, counted(before, "/a", GROUP, expected), what="the counts")
    check_http_counts(before, after, "/a", GROUP, expected, responses)
    promtool_check(after.text)
    # --request-timeout 1: an awaiting request's task is cancelled (504, the loop serves on);
    # one that blocks the loop is taken over (504) and the worker replaced.
    interrupted_timeout_is_counted(front, "/a", GROUP, route="asleep")
    stuck_timeout_is_a_respawn(front, "/a", GROUP)


def rwsgi_top(*args) -> str:
    r = subprocess.run([str(paths.SERVE_BIN), "top", *args], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_rwsgi_top_shows_the_worker(stack):
    stop = time.monotonic() + 3
    import threading

    def traffic():
        while time.monotonic() < stop:
            requests.get(stack.url("/app/ok"), timeout=10)
    t = threading.Thread(target=traffic)
    t.start()
    frame = rwsgi_top(f"127.0.0.1:{stack.metrics_port}", "--once", "--interval", "1")
    t.join()
    assert "rwsgi-worker, Python 3." in frame
    row = next(line for line in frame.splitlines() if line.startswith("/app"))
    cols = row.split()
    assert cols[1] == GROUP and float(cols[2]) > 0, row  # requests per second
    group = next(line for line in frame.splitlines() if line.startswith(GROUP))
    assert group.split()[3] == "2", group  # workers


def test_rwsgi_top_over_a_unix_socket(launcher):
    d = launcher._prefix("apps-unix")
    d.chmod(0o755)
    app = write_app(d, "metrics_app.py", APP)
    endpoint = d / "metrics.sock"
    launcher.worker(app, processes=1, threads=2, extra_args=["--metrics", f"unix:{endpoint}"])
    deadline = time.monotonic() + 20
    while not endpoint.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    frame = rwsgi_top(f"unix:{endpoint}", "--once", "--interval", "0.2")
    assert "GROUP" in frame and "rwsgi-worker" in frame


def test_rwsgi_top_says_what_is_wrong_with_an_endpoint():
    r = subprocess.run([str(paths.SERVE_BIN), "top", f"127.0.0.1:{free_port()}", "--once",
                        "--interval", "0.1"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stderr.startswith("rwsgi top: 127.0.0.1:"), r.stderr
    r = subprocess.run([str(paths.SERVE_BIN), "top"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "endpoint is required" in r.stderr
