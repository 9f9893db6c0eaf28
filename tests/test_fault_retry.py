"""Issue 10, case 3: a request the daemon accepted is never sent again.

Apache's daemon-mode handler retried a bodiless GET when the group's connection ended before a
response head ("connection gone"): after a read timeout, after request-timeout killed the worker,
after a crash. The app then ran twice, and request-timeout killed two workers per stuck request.
A request may be retried only when it provably never reached the app (the connect failed, or
nothing was written). Counted here with the fault app's state file: one line per run.

Interface assumed (DESIGN.md "Names the next capabilities add"): a timeout answers 504 in every
mode; a crashed worker mid-request answers 502.
"""

import re
import signal
import threading
import time

import pytest
import requests

from fault_common import (Clock, apache_logs, apache_site, app_dir, lch, nginx_daemon, reference)  # noqa: F401
from harness.faults import kill, token


def get_in_thread(url, out: dict, timeout=30):
    def run():
        clock = Clock()
        try:
            r = requests.get(url, timeout=timeout)
            out["status"], out["body"] = r.status_code, r.text
        except requests.RequestException as e:
            out["status"] = type(e).__name__
        out["elapsed"] = clock()
    t = threading.Thread(target=run)
    t.start()
    return t


def kill_mid_request(server, d):
    """A GET that sleeps 3 s; its worker is SIGKILLed while it runs. Returns (what the client
    got, how many times the app ran)."""
    t = token()
    out = {}
    th = get_in_thread(server.url(f"/app/count?token={t}&sleep=3"), out)
    assert d.wait_count(t, 1, 10) == 1
    kill(d.pids(t)[0], signal.SIGKILL)
    th.join(30)
    time.sleep(1)  # a retry would have run the app again by now
    return out, d.count(t)


APACHE_TIMEOUT_GROUP = "processes=1 threads=2 request-timeout=2 display-name=%{GROUP}"
NGINX_TIMEOUT_GROUP = "processes=1 threads=2 request-timeout=2"


def apache_request_timeout(lch):
    """request-timeout=2 and a GET that sleeps 10 s (in C: the exception the worker raises in
    the thread cannot land, so the worker answers 504 itself and retires: RW041).
    Returns (response, runs of the app, workers retired, what was seen)."""
    d = app_dir(lch)
    apache = apache_site(lch, d, APACHE_TIMEOUT_GROUP)
    t = token()
    clock = Clock()
    r = requests.get(apache.url(f"/app/count?token={t}&sleep=10"), timeout=30)
    elapsed = clock()
    time.sleep(3)  # a retry would have run the app again by now
    retired = len(re.findall(r"RW041 ", apache_logs(apache)))
    seen = f"{d.count(t)} runs, {retired} workers retired, {r.status_code} after {elapsed:.1f}s"
    print(seen)
    return r, d.count(t), retired, seen


def test_apache_daemon_request_timeout_runs_the_get_once(lch):
    """The app runs once and one worker is retired (one RW041 line; the supervisor's RW006 kill
    is only the backstop now). Measured on main before cases 3 and 5: 2 runs, 2 RW006 kills,
    502 after 4.2 s (the GET was retried). mod_wsgi 4.9 (reference below): 1 run, 500 after
    10 s."""
    _, runs, retired, seen = apache_request_timeout(lch)
    assert runs == 1, seen
    assert retired == 1, seen


def test_apache_daemon_request_timeout_answers_504(lch):
    """The same fault as above, seen by the client: 504 (a timeout), still one run."""
    r, runs, _, seen = apache_request_timeout(lch)
    assert runs == 1, seen
    assert r.status_code == 504, seen


def test_apache_daemon_killed_worker_runs_the_get_once(lch):
    """The worker running a GET is SIGKILLed: that request fails (502), and is not sent again.
    Measured on main: the retry runs the app a second time (on the replacement worker), and the
    client gets the second run's 200 after 3.1 s. mod_wsgi 4.9 (reference below): 1 run, 500
    at once ("Truncated or oversized response headers received from daemon process")."""
    d = app_dir(lch)
    apache = apache_site(lch, d, "processes=1 threads=2 display-name=%{GROUP}")
    out, runs = kill_mid_request(apache, d)
    assert runs == 1, f"the app ran {runs} times for one GET (client got {out})"
    assert out["status"] == 502, out


def apache_read_timeout(lch, module=None):
    """httpd's Timeout is 2 s and a GET sleeps 6 s (no request-timeout): the group sends no head
    in time. Returns (status or exception name, seconds, runs of the app, the error log)."""
    d = app_dir(lch)
    apache = apache_site(lch, d, "processes=1 threads=2 display-name=%{GROUP}", extra="Timeout 2",
                         module=module)
    t = token()
    clock = Clock()
    try:
        status = requests.get(apache.url(f"/app/count?token={t}&sleep=6"), timeout=30).status_code
    except requests.RequestException as e:
        status = type(e).__name__
    elapsed = clock()
    time.sleep(5)  # a retry would have run the app again by now
    return status, elapsed, d.count(t), apache_logs(apache)


def test_apache_daemon_read_timeout_runs_the_get_once(lch):
    """A read timeout is a timeout, not "connection gone": 504 (RW-AP060) after Timeout, the GET
    is not sent again. Measured on main: the GET was retried, the app ran twice, 502 after 4.1 s
    (RW-AP016 "Resource temporarily unavailable"). mod_wsgi 4.9 (reference below): 1 run, 504
    after 2.0 s ("Timeout when reading response headers from daemon process")."""
    status, elapsed, runs, log = apache_read_timeout(lch)
    seen = f"{status} after {elapsed:.1f}s, {runs} runs"
    assert runs == 1, seen
    assert status == 504, seen
    assert "RW-AP060 " in log


def test_nginx_daemon_request_timeout_runs_the_get_once(lch):
    """nginx daemon never retries (one peer, nginx's upstream tries it once): one run, one worker
    retired (RW041: the worker answers 504 for its thread stuck in time.sleep, and is replaced).
    The status is checked in test_fault_timeout.py (504 in every mode)."""
    d = app_dir(lch)
    nginx = nginx_daemon(lch, d, NGINX_TIMEOUT_GROUP)
    t = token()
    requests.get(nginx.url(f"/app/count?token={t}&sleep=10"), timeout=30)
    time.sleep(2)
    assert d.count(t) == 1
    assert nginx.error_log_text().count("RW041 ") == 1


def test_nginx_daemon_killed_worker_runs_the_get_once(lch):
    d = app_dir(lch)
    nginx = nginx_daemon(lch, d, "processes=1 threads=2")
    out, runs = kill_mid_request(nginx, d)
    assert runs == 1
    assert out["status"] == 502, out


@reference
def test_reference_mod_wsgi_request_timeout(lch):
    """mod_wsgi 4.9 daemon, request-timeout=2, a GET sleeping 25 s. Measured: the app runs once;
    mod_wsgi notices at ~5 s ("Daemon process request time limit exceeded, stopping process"),
    logs the Python stack of the active threads, aborts the process 5 s later (shutdown-timeout),
    and the client gets 500 after 10.0 s ("Truncated or oversized response headers")."""
    d = app_dir(lch)
    apache = apache_site(lch, d, APACHE_TIMEOUT_GROUP, module="mod_wsgi")
    t = token()
    clock = Clock()
    r = requests.get(apache.url(f"/app/count?token={t}&sleep=25"), timeout=40)
    elapsed = clock()
    time.sleep(2)
    print(f"mod_wsgi request-timeout: {r.status_code} after {elapsed:.1f}s, runs {d.count(t)}")
    assert d.count(t) == 1
    assert r.status_code == 500 and 8 < elapsed < 15


@reference
def test_reference_mod_wsgi_killed_daemon_mid_request(lch):
    """mod_wsgi 4.9: the daemon running a GET is SIGKILLed. Measured: 1 run, 500 at once."""
    d = app_dir(lch)
    apache = apache_site(lch, d, "processes=1 threads=2 display-name=%{GROUP}", module="mod_wsgi")
    out, runs = kill_mid_request(apache, d)
    print(f"mod_wsgi killed mid-request: {out['status']}, runs {runs}")
    assert runs == 1
    assert out["status"] == 500


@reference
def test_reference_mod_wsgi_read_timeout(lch):
    """mod_wsgi 4.9 daemon, Timeout 2, a GET sleeping 6 s. Measured: 1 run, 504 after 2.0 s."""
    status, elapsed, runs, _ = apache_read_timeout(lch, module="mod_wsgi")
    print(f"mod_wsgi read timeout: {status} after {elapsed:.1f}s, runs {runs}")
    assert runs == 1
    assert status == 504
