"""rwsgi-worker's process management seen from outside: a worker dying mid-request, a script that
fails to import, recycling, rolling restart (SIGHUP) and graceful stop (SIGTERM).
"""

import json
import signal
import threading
import time

import pytest
import requests

from harness import uwsgi_client as uc
from harness.frontends import FRONT_ENDS
from harness.procs import pid_alive


@pytest.mark.parametrize("kind", FRONT_ENDS)
@pytest.mark.parametrize("route", ["/crash", "/crash_before"])
def test_worker_exit_mid_request_recovers_within_1s(launcher_fn, apps, kind, route):
    worker = launcher_fn.worker(apps / "conformance.py", processes=1, threads=2)
    server = launcher_fn.front_end(kind, worker)
    old_pid = requests.get(server.url("/app/pid"), timeout=5).json()["pid"]

    try:
        r = requests.get(server.url("/app" + route), timeout=10)
        failed_visibly = r.status_code >= 500 or len(r.content) < 100
    except requests.RequestException:
        failed_visibly = True
    assert failed_visibly, "a request whose worker died must not look like a success"

    crashed_at = time.monotonic()
    while True:
        try:
            r = requests.get(server.url("/app/pid"), timeout=2)
            if r.status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() - crashed_at < 1.0, "no successful request within 1 s of the crash"
        time.sleep(0.02)
    assert r.json()["pid"] != old_pid
    assert not pid_alive(old_pid)
    assert worker.alive()


def test_import_error_is_500_then_retried(launcher_fn, apps, state_dir):
    flag = state_dir / "import_error.allow"
    flag.unlink(missing_ok=True)
    worker = launcher_fn.worker(apps / "import_error.py", processes=1, threads=2)
    server = launcher_fn.front_end("nginx", worker)
    for _ in range(2):
        r = requests.get(server.url("/app/"), timeout=10)
        assert r.status_code == 500
        assert "conformance-import-error-marker" not in r.text
    deadline = time.monotonic() + 5
    while "conformance-import-error-marker" not in worker.log_text():
        assert time.monotonic() < deadline, "import traceback not logged:\n" + worker.log_text()[-2000:]
        time.sleep(0.05)
    assert "Traceback" in worker.log_text()
    assert worker.alive()

    flag.write_text("ok")
    try:
        r = requests.get(server.url("/app/"), timeout=10)
        assert r.status_code == 200 and r.text == "imported after retry"
    finally:
        flag.unlink(missing_ok=True)


def test_maximum_requests_recycles(launcher_fn, apps):
    worker = launcher_fn.worker(apps / "conformance.py", processes=1, threads=1, maximum_requests=5)
    pids = []
    for _ in range(16):
        resp = uc.get(worker.address, "/pid")
        assert resp.status == 200, resp.raw[:200]
        pids.append(json.loads(resp.body)["pid"])
    distinct = list(dict.fromkeys(pids))
    assert len(distinct) >= 3, f"5-request recycling over 16 requests gave pids {pids}"
    assert all(pids.count(p) <= 5 for p in distinct)


def test_sighup_rolling_restart_refuses_nothing(launcher_fn, apps):
    worker = launcher_fn.worker(apps / "conformance.py", processes=2, threads=2)
    server = launcher_fn.front_end("nginx", worker)
    before = set(worker.started_children(2))
    errors, pids, stop = [], set(), threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                r = requests.get(server.url("/app/pid"), timeout=10)
                if r.status_code != 200:
                    errors.append(r.status_code)
                else:
                    pids.add(r.json()["pid"])
            except requests.RequestException as e:
                errors.append(repr(e))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        worker.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not (set(worker.child_pids()) - before and not before & set(worker.child_pids())):
            assert time.monotonic() < deadline, "workers were not replaced after SIGHUP"
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == [], f"requests failed during the rolling restart: {errors[:5]}"
    assert pids - before, "no request was served by a new worker"


def test_sigterm_finishes_in_flight_request(launcher_fn, apps):
    worker = launcher_fn.worker(apps / "conformance.py", processes=1, threads=2)
    result = {}

    def slow():
        result["resp"] = uc.get(worker.address, "/sleep", query="s=1.0")
    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    worker.process.send_signal(signal.SIGTERM)
    t.join(10)
    assert result["resp"].status == 200
    worker.process.proc.wait(10)
    assert worker.process.proc.returncode == 0
