"""Metrics from Apache httpd (`SetHandler rwsgi-metrics`), through Debian's real /usr/sbin/apache2
(event MPM): an embedded alias and a daemon group in one server. Counts are checked exactly
against what the test sent while a scraper keeps reading; a SIGKILL'ed daemon worker, a
request-timeout kill and a graceful restart are counted; `Require` guards the endpoint as it
guards mod_status; the text parses with prometheus_client and passes promtool.

mod_wsgi 6 has per-process metrics through a Python API and a telemetry socket, but no
endpoint that adds up Apache's children and the daemon processes.
"""

import os
import time

import pytest
import requests

from harness.metrics import (APP, PROMETHEUS_ACCEPT, Scrape, exact_counts_under_load, fetch,
                             interrupted_timeout_is_counted, promtool_check, rwsgi_top_once,
                             scrape, sigkill_is_a_crash_respawn, stuck_timeout_is_a_respawn,
                             wait_for)
from test_apache_module_embedded import rwsgi_apache, write_app

_names = iter(range(1, 1_000_000))


@pytest.fixture(scope="module")
def site(launcher):
    d = launcher._prefix("apps")
    d.chmod(0o755)
    write_app(d, "metrics.wsgi", APP)
    group = f"am{os.getpid() % 1000}x{next(_names)}"
    config = f"""
        WSGIDaemonProcess {group} processes=2 threads=4 request-timeout=2
        WSGIScriptAlias /emb {d}/metrics.wsgi process-group=%{{GLOBAL}}
        WSGIScriptAlias /emt {d}/metrics.wsgi process-group=%{{GLOBAL}} request-timeout=1
        WSGIScriptAlias /dmn {d}/metrics.wsgi process-group={group}
        <Directory {d}>
            Require all granted
        </Directory>
        <Location /rwsgi-metrics>
            SetHandler rwsgi-metrics
            Require ip 127.0.0.1
        </Location>
        <Location /rwsgi-metrics-denied>
            SetHandler rwsgi-metrics
            Require all denied
        </Location>
    """
    apache = rwsgi_apache(launcher, config, modules=("authz_host",))
    apache.group = group
    apache.metrics = apache.url("/rwsgi-metrics")
    deadline = time.monotonic() + 30
    while requests.get(apache.url("/dmn/ok"), timeout=30).status_code != 200:
        assert time.monotonic() < deadline, apache.error_log_text()
        time.sleep(0.2)
    return apache


@pytest.mark.parametrize("prefix,mode", [("/emb", "embedded"), ("/dmn", "daemon")])
def test_counts_are_exact_under_load(site, prefix, mode):
    # Apache runs an embedded request on the thread that read it: nothing to queue for. A daemon
    # request waited from the child's receiving it to a daemon thread's taking it.
    embedded = mode == "embedded"
    exact_counts_under_load(site, prefix, "" if embedded else site.group, queued=not embedded)


def test_processes_threads_and_build_info(site):
    s = scrape(site.metrics)
    assert s.value("rwsgi_processes", group="", role="server") >= 1
    busy = s.value("rwsgi_threads", group="", state="busy")
    idle = s.value("rwsgi_threads", group="", state="idle")
    assert (busy + idle) % 16 == 0 and busy + idle >= 16  # ThreadsPerChild 16 per child
    assert s.value("rwsgi_processes", group=site.group, role="supervisor") == 1
    assert s.value("rwsgi_processes", group=site.group, role="worker") == 2
    labels = dict(next(k for k in s.samples if k[0] == "rwsgi_build_info")[1])
    assert labels["server"].startswith("Apache/2.4.")
    assert labels["python"].startswith("3.")


def test_openmetrics_when_the_scraper_asks(site):
    r = fetch(site.metrics, PROMETHEUS_ACCEPT)
    assert r.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    om = Scrape(r.text, openmetrics=True)
    assert om.families["rwsgi_requests"].type == "counter"
    promtool_check(fetch(site.metrics).text)


def test_require_guards_the_endpoint(site):
    assert requests.get(site.url("/rwsgi-metrics-denied"), timeout=10).status_code == 403
    assert requests.post(site.metrics, data=b"x", timeout=10).status_code == 405


def test_rwsgi_top_reads_the_endpoint(site):
    for _ in range(5):
        requests.get(site.url("/dmn/ok"), timeout=10)
    frame = rwsgi_top_once(site.metrics)
    assert "Apache/2.4." in frame
    assert any(line.startswith("/dmn ") and site.group in line for line in frame.splitlines())


def test_sigkill_of_a_daemon_worker_is_a_crash_respawn(site):
    sigkill_is_a_crash_respawn(site, "/dmn", site.group, workers=2)


@pytest.mark.parametrize("prefix,mode", [("/emt", "embedded"), ("/dmn", "daemon")])
def test_an_interrupted_request_timeout_is_counted(site, prefix, mode):
    """request-timeout=1 on the embedded alias / =2 on the group, and a request spinning in
    Python: pyhost's watchdog interrupts it, 504, one timeout, no respawn. (mod_wsgi has no
    embedded timeout; its daemon request-timeout restarts the whole process.)"""
    interrupted_timeout_is_counted(site, prefix, "" if mode == "embedded" else site.group)


def test_request_timeout_kill_is_counted(site):
    """request-timeout=2 and a request sleeping in C (time.sleep), where no interrupt reaches:
    after the grace the daemon worker answers 504 itself and retires (mod_wsgi restarts its
    daemon process instead); one timeout and one respawn for that reason."""
    stuck_timeout_is_a_respawn(site, "/dmn", site.group)


def test_graceful_restart_keeps_the_counters(site):
    """apachectl graceful: new children and a new generation of the daemon group (its two
    workers counted as reload respawns); the counters and their start time carry on."""
    before = scrape(site.metrics)
    site.graceful()

    def restarted(s):
        # The respawns are counted by the parent; the daemon app's series show again once the
        # new generation's supervisor has registered its apps.
        return (s.delta(before, "rwsgi_worker_respawns_total", group=site.group, reason="reload") == 2
                and s.get("rwsgi_requests_total", None, app="/dmn", group=site.group,
                          code_class="2xx") is not None)
    after = wait_for(site.metrics, restarted, timeout=30, what="the restart's respawns")
    assert after.value("rwsgi_start_time_seconds") == before.value("rwsgi_start_time_seconds")
    for key, value in before.counters().items():
        assert after.samples.get(key, 0) >= value, f"{key} was reset by the restart"
    deadline = time.monotonic() + 30
    while requests.get(site.url("/dmn/ok"), timeout=30).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    mark = scrape(site.metrics)
    for _ in range(3):
        assert requests.get(site.url("/emb/ok"), timeout=10).status_code == 200
    wait_for(site.metrics, lambda s: s.delta(mark, "rwsgi_requests_total", app="/emb", group="",
                                             code_class="2xx") == 3, what="counts after the restart")
