"""Metrics from nginx (`wsgi_metrics`), through Debian's real /usr/sbin/nginx: embedded and daemon
locations of one server, two nginx workers, each daemon group with its own workers. Every number
is checked against what the test sent: request counts and status classes exactly (counted while
a scraper keeps reading the endpoint), respawns after a SIGKILL, a request-timeout kill and
maximum-requests recycling, and counters that survive a reload. The text parses with
prometheus_client (both formats) and passes `promtool check metrics`; nginx's allow/deny
guard the endpoint.

mod_wsgi has no endpoint to compare with (its metrics are a Python API inside each process);
uWSGI's stats server is per instance, JSON, and counts the workers of that instance only.
"""

import concurrent.futures
import os
import time
from pathlib import Path

import pytest
import requests

from harness.metrics import (APP, ASGI_APP, PROMETHEUS_ACCEPT, Scrape, client_leaves,
                             exact_counts_under_load, fetch, interrupted_timeout_is_counted,
                             promtool_check, rwsgi_top_once, scrape, sigkill_is_a_crash_respawn,
                             stuck_timeout_is_a_respawn, wait_for)
from test_nginx_module_embedded import app_dir, make_nginx, rwsgi_nginx, worker_pids, write_app

_names = iter(range(1, 1_000_000))


@pytest.fixture(scope="module")
def site(launcher, state_dir):
    d = app_dir(launcher)
    app = write_app(d, "metrics_app.py", APP)
    tag = f"m{os.getpid() % 1000}x{next(_names)}"
    group, recycled = f"{tag}d", f"{tag}r"
    http = f"""
        wsgi_threads 4;
        wsgi_daemon_process {group} processes=2 threads=4 request-timeout=2;
        wsgi_daemon_process {recycled} processes=1 threads=1 maximum-requests=5;
    """
    server = f"""
        location /emb/ {{ wsgi_script {app}; }}
        location /emt/ {{ wsgi_script {app}; wsgi_request_timeout 1s; }}
        location /dmn/ {{ wsgi_script {app}; wsgi_process_group {group}; }}
        location /rec/ {{ wsgi_script {app}; wsgi_process_group {recycled}; }}
        location = /metrics {{ wsgi_metrics; allow 127.0.0.1; deny all; }}
        location = /metrics-denied {{ wsgi_metrics; deny all; }}
    """
    nginx = rwsgi_nginx(launcher, server, http, workers=2)
    nginx.group, nginx.recycled = group, recycled
    nginx.metrics = nginx.url("/metrics")
    # The daemon groups answer once their workers have loaded the app.
    for prefix in ("/dmn", "/rec"):
        deadline = time.monotonic() + 30
        while requests.get(nginx.url(f"{prefix}/ok"), timeout=30).status_code != 200:
            assert time.monotonic() < deadline, nginx.error_log_text()
            time.sleep(0.2)
    return nginx


def nginx_workers(nginx) -> set:
    """The master's children that are nginx workers (not the daemon groups' supervisors)."""
    out = set()
    for pid in worker_pids(nginx):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "nginx":
                out.add(pid)
        except OSError:
            pass
    return out


@pytest.mark.parametrize("prefix,mode", [("/emb", "embedded"), ("/dmn", "daemon")])
def test_counts_are_exact_under_load(site, prefix, mode):
    # Every request waits for a Python thread once: the job queue, or the daemon's socket.
    exact_counts_under_load(site, prefix, "" if mode == "embedded" else site.group, queued=True)


def test_processes_threads_and_build_info(site):
    s = scrape(site.metrics)
    assert s.value("rwsgi_processes", group="", role="server") == 2
    busy = s.value("rwsgi_threads", group="", state="busy")
    idle = s.value("rwsgi_threads", group="", state="idle")
    assert busy + idle == 2 * 4  # 2 nginx workers x wsgi_threads 4
    assert s.value("rwsgi_processes", group=site.group, role="supervisor") == 1
    assert s.value("rwsgi_processes", group=site.group, role="worker") == 2
    assert s.value("rwsgi_threads", group=site.group, state="idle") + \
        s.value("rwsgi_threads", group=site.group, state="busy") == 2 * 4
    assert s.value("rwsgi_process_resident_memory_bytes", group=site.group, role="worker") > 10e6
    info = [k for k in s.samples if k[0] == "rwsgi_build_info"]
    assert len(info) == 1
    labels = dict(info[0][1])
    assert labels["server"] == "nginx/1.22.1" or labels["server"].startswith("nginx/")
    assert labels["python"].startswith("3.")
    assert s.value("rwsgi_start_time_seconds") <= time.time()


def test_openmetrics_when_the_scraper_asks(site):
    r = fetch(site.metrics, PROMETHEUS_ACCEPT)
    assert r.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert r.text.endswith("# EOF\n")
    om = Scrape(r.text, openmetrics=True)
    assert om.families["rwsgi_requests"].type == "counter"
    assert om.families["rwsgi_build"].type == "info"
    text = fetch(site.metrics)
    assert text.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    promtool_check(text.text)


def test_access_rules_and_methods(site):
    assert requests.get(site.url("/metrics-denied"), timeout=10).status_code == 403
    assert requests.post(site.metrics, data=b"x", timeout=10).status_code == 405
    head = requests.head(site.metrics, timeout=10)
    assert head.status_code == 200 and head.content == b""


def test_a_client_that_leaves_is_an_abort(site):
    """A client that closes while a large embedded response streams: nginx's write fails
    (the connection's error flag, as its access log shows), one client abort."""
    client_leaves(site, site.port, "/emb", "")


def test_rwsgi_top_reads_the_endpoint(site):
    for _ in range(5):
        requests.get(site.url("/emb/ok"), timeout=10)
    frame = rwsgi_top_once(site.metrics)
    assert "nginx/" in frame
    assert any(line.startswith("/emb ") and "(embedded)" in line for line in frame.splitlines())
    assert any(line.startswith(site.group) for line in frame.splitlines()), frame


def test_sigkill_of_a_daemon_worker_is_a_crash_respawn(site):
    """kill -9 of one daemon worker: counted once as a crash, and the group is whole again.
    (mod_wsgi restarts such a process too, and counts it nowhere an operator can scrape.)"""
    before, after = sigkill_is_a_crash_respawn(site, "/dmn", site.group, workers=2)
    for reason in ("maximum-requests", "request-timeout", "reload"):
        assert after.delta(before, "rwsgi_worker_respawns_total", group=site.group, reason=reason) == 0


@pytest.mark.parametrize("prefix,mode", [("/emt", "embedded"), ("/dmn", "daemon")])
def test_an_interrupted_request_timeout_is_counted(site, prefix, mode):
    """wsgi_request_timeout 1s / request-timeout=2 and a request spinning in Python: pyhost's
    watchdog interrupts it, 504, one timeout, no respawn. (mod_wsgi has no embedded timeout; its
    daemon request-timeout restarts the whole process.)"""
    interrupted_timeout_is_counted(site, prefix, "" if mode == "embedded" else site.group)


def test_request_timeout_kill_is_counted(site):
    """request-timeout=2 and a request that sleeps 30 s in C (time.sleep), where no interrupt
    reaches: after the grace the daemon worker answers 504 itself and retires (as mod_wsgi's
    request-timeout restarts its daemon process); one timeout, one request-timeout respawn."""
    stuck_timeout_is_a_respawn(site, "/dmn", site.group)


def test_embedded_timeouts_waiting_and_stuck_are_counted(launcher):
    """One nginx worker, one Python thread, wsgi_request_timeout 1s. A request sleeps in C
    (time.sleep(30)) and holds the thread; a second one waits for it until its own timeout and
    gets 504 from the event loop; the first one's thread never comes back from the interrupt,
    so the event loop answers 504 for it too and the worker retires. Two timeouts, two 5xx.
    (mod_wsgi has no request timeout in embedded mode.)"""
    d = app_dir(launcher)
    app = write_app(d, "metrics_app.py", APP)
    nginx = rwsgi_nginx(launcher, f"""
        location /t/ {{ wsgi_script {app}; wsgi_request_timeout 1s; }}
        location = /metrics {{ wsgi_metrics; }}
    """, "wsgi_threads 1;", workers=1)
    nginx.metrics = nginx.url("/metrics")
    assert requests.get(nginx.url("/t/ok"), timeout=30).status_code == 200
    before = scrape(nginx.metrics)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(requests.get, nginx.url("/t/sleep?30"), timeout=60)
        wait_for(nginx.metrics, lambda s: s.value("rwsgi_threads", group="", state="busy") == 1,
                 what="the sleeping request on the thread")
        waiting = requests.get(nginx.url("/t/ok"), timeout=60)
        assert waiting.status_code == 504, waiting.text[:300]
        assert stuck.result().status_code == 504
    after = wait_for(nginx.metrics, lambda s: (
        s.delta(before, "rwsgi_request_timeouts_total", group="") == 2
        and s.delta(before, "rwsgi_requests_total", app="/t", group="", code_class="5xx") == 2),
        what="two timeouts")
    assert after.delta(before, "rwsgi_exceptions_total", app="/t", group="") == 0
    assert "RW-NG041" in nginx.error_log_text() and "RW-NG040" in nginx.error_log_text()


def test_embedded_asgi_timeouts_are_counted(launcher):
    """wsgi_interface asgi with wsgi_request_timeout 1s: a request that awaits past it has its
    task cancelled (504, one timeout); one that blocks the loop is answered by the event loop
    (504, one more) and the worker retires. (mod_wsgi has no ASGI.)"""
    d = app_dir(launcher)
    app = write_app(d, "metrics_asgi.py", ASGI_APP)
    nginx = rwsgi_nginx(launcher, f"""
        location /as/ {{ wsgi_script {app}; wsgi_callable app; wsgi_interface asgi;
                         wsgi_request_timeout 1s; }}
        location = /metrics {{ wsgi_metrics; }}
    """, workers=1)
    nginx.metrics = nginx.url("/metrics")
    assert requests.get(nginx.url("/as/ok"), timeout=30).status_code == 200
    interrupted_timeout_is_counted(nginx, "/as", "", route="asleep")
    before = scrape(nginx.metrics)
    r = requests.get(nginx.url("/as/sleep?30"), timeout=60)
    assert r.status_code == 504, r.text[:300]
    wait_for(nginx.metrics, lambda s: (
        s.delta(before, "rwsgi_request_timeouts_total", group="") == 1
        and s.delta(before, "rwsgi_requests_total", app="/as", group="", code_class="5xx") == 1),
        what="the blocked loop's timeout")


def test_maximum_requests_recycling_is_counted(site):
    """processes=1 threads=1 maximum-requests=5: after 12 more requests, exactly 2 recyclings
    more than before (the worker that took request 5 and the one that took request 10)."""
    before = scrape(site.metrics)
    served_before = sum(before.get("rwsgi_requests_total", app="/rec", group=site.recycled,
                                   code_class=c) for c in ("2xx", "3xx", "4xx", "5xx"))
    for _ in range(12):
        assert requests.get(site.url("/rec/ok"), timeout=30).status_code == 200
    total = served_before + 12
    want = total // 5 - served_before // 5

    def recycled(s):
        return s.delta(before, "rwsgi_worker_respawns_total", group=site.recycled,
                       reason="maximum-requests") == want
    wait_for(site.metrics, recycled, what=f"{want} maximum-requests respawns")


def test_reload_keeps_the_counters(site):
    """SIGHUP: new nginx workers, the same zone. Counters carry on and the start time stays; a
    daemon group whose options changed is restarted (its worker counted as a reload respawn),
    the unchanged one keeps running and counting."""
    before = scrape(site.metrics)
    old = nginx_workers(site)
    conf = site.conf_path.read_text()
    site.conf_path.write_text(conf.replace("threads=1 maximum-requests=5", "threads=1 maximum-requests=500"))
    site.reload()
    deadline = time.monotonic() + 20
    while nginx_workers(site) & old or not nginx_workers(site):
        assert time.monotonic() < deadline, "old nginx workers did not exit"
        time.sleep(0.1)
    after_reload = scrape(site.metrics)
    assert after_reload.value("rwsgi_start_time_seconds") == before.value("rwsgi_start_time_seconds")
    for key, value in before.counters().items():
        assert after_reload.samples.get(key, 0) >= value, f"{key} was reset by the reload"
    for _ in range(3):
        requests.get(site.url("/emb/ok"), timeout=10)
        requests.get(site.url("/dmn/ok"), timeout=10)
    wait_for(site.metrics, lambda s: (
        s.delta(after_reload, "rwsgi_requests_total", app="/emb", group="", code_class="2xx") == 3
        and s.delta(after_reload, "rwsgi_requests_total", app="/dmn", group=site.group,
                    code_class="2xx") == 3), what="counts after the reload")
    final = scrape(site.metrics)
    assert final.value("rwsgi_processes", group="", role="server") == 2
    assert final.delta(before, "rwsgi_worker_respawns_total", group=site.recycled, reason="reload") == 1
    assert final.delta(before, "rwsgi_worker_respawns_total", group=site.group, reason="reload") == 0


def test_a_location_with_another_handler_is_refused_at_nginx_t(launcher):
    d = app_dir(launcher)
    app = write_app(d, "metrics_app.py", APP)
    nginx = make_nginx(launcher, f"location /x {{ wsgi_script {app}; wsgi_metrics; }}")
    with pytest.raises(RuntimeError) as err:
        nginx.check_config()
    assert '"wsgi_metrics" directive: this location already has a content handler' in str(err.value)
    assert "nginx.conf:" in str(err.value)
    nginx = make_nginx(launcher, "location /m { wsgi_metrics on; }")
    with pytest.raises(RuntimeError) as err:
        nginx.check_config()
    assert 'invalid number of arguments in "wsgi_metrics"' in str(err.value)
