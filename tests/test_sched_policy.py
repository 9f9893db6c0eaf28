"""The scheduling policy of processes that host Python (crates/pyhost/src/sched.rs): SCHED_BATCH
for the thread that starts Python and every thread it starts, so that wake-ups stop preempting
the thread that holds the GIL; `RWSGI_SCHED=normal` keeps the server's policy; a bad value is
logged and the default applies; Apache's embedded children are httpd's and keep its policy;
nginx workers that forward to daemon groups take the groups' policy.
Checked in every mode against the real servers: the app reports
its request thread's policy, and the test reads the other threads' from /proc.

mod_wsgi and the other hosts leave the policy as the server started with it (SCHED_OTHER), which
is what `RWSGI_SCHED=normal` gives.
"""

import json
import os

import pytest
import requests

from test_apache_module_embedded import rwsgi_apache
from test_nginx_module_embedded import app_dir, rwsgi_nginx, worker_pids, write_app

APP = """
    import json, os, threading

    def application(environ, start_response):
        body = json.dumps({"pid": os.getpid(), "tid": threading.get_native_id(),
                           "policy": os.sched_getscheduler(0)}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
"""

BATCH, OTHER = os.SCHED_BATCH, os.SCHED_OTHER


def seen(url):
    r = requests.get(url, timeout=20)
    assert r.status_code == 200, r.text
    return r.json()


def thread_policies(pid):
    """{tid: policy} of every thread of process `pid`."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[int(tid)] = os.sched_getscheduler(int(tid))
        except ProcessLookupError:
            pass  # a thread that ended meanwhile
    return out


@pytest.fixture
def app(launcher):
    return write_app(app_dir(launcher), "policy.py", APP)


def test_nginx_embedded_worker_runs_batch_and_the_master_does_not(launcher, app):
    nginx = rwsgi_nginx(launcher, f"location /app {{ wsgi_script {app}; }}", "wsgi_threads 4;")
    got = seen(nginx.url("/app"))
    assert got["policy"] == BATCH
    # Every thread of the worker: nginx's event thread and the Python threads it started.
    policies = thread_policies(got["pid"])
    assert len(policies) >= 5 and set(policies.values()) == {BATCH}, policies
    assert os.sched_getscheduler(nginx.process.pid) == OTHER


def test_nginx_embedded_normal_keeps_the_servers_policy(launcher, app):
    nginx = rwsgi_nginx(launcher, f"location /app {{ wsgi_script {app}; }}", "wsgi_threads 4;",
                        main="env RWSGI_SCHED=normal;")
    got = seen(nginx.url("/app"))
    assert got["policy"] == OTHER
    assert set(thread_policies(got["pid"]).values()) == {OTHER}


def test_a_bad_value_is_logged_and_batch_applies(launcher, app):
    nginx = rwsgi_nginx(launcher, f"location /app {{ wsgi_script {app}; }}",
                        main="env RWSGI_SCHED=fifo;")
    assert seen(nginx.url("/app"))["policy"] == BATCH
    assert "RW-PY007" in launcher.logs()


def nginx_children(nginx):
    """{pid: cmdline} of the nginx master's children (its workers, the groups' keeper)."""
    out = {}
    for pid in worker_pids(nginx):
        try:
            out[pid] = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except FileNotFoundError:
            pass
    return out


def test_nginx_daemon_group_workers_and_the_nginx_workers_in_front_run_batch(launcher, app):
    """The group's workers are ours; nginx's workers forward to them on the same cores, and take
    the same policy (docs/scheduling.md, "nginx workers in front of daemon groups"). The master
    and the group's keeper are left alone."""
    nginx = rwsgi_nginx(launcher,
                        f"location /app {{ wsgi_script {app}; wsgi_process_group g; }}",
                        "wsgi_daemon_process g processes=1 threads=2;")
    got = seen(nginx.url("/app"))
    assert got["policy"] == BATCH
    assert set(thread_policies(got["pid"]).values()) == {BATCH}
    children = nginx_children(nginx)
    workers = [p for p, cmd in children.items() if "worker process" in cmd]
    others = [p for p, cmd in children.items() if "worker process" not in cmd]
    assert workers and {os.sched_getscheduler(p) for p in workers} == {BATCH}, children
    assert {os.sched_getscheduler(p) for p in others} <= {OTHER}, children
    assert os.sched_getscheduler(nginx.process.pid) == OTHER


def test_nginx_daemon_normal_keeps_the_servers_policy_in_front_too(launcher, app):
    nginx = rwsgi_nginx(launcher,
                        f"location /app {{ wsgi_script {app}; wsgi_process_group g; }}",
                        "wsgi_daemon_process g processes=1 threads=2;",
                        main="env RWSGI_SCHED=normal;")
    # `env` sets the variable for nginx's workers only (the group, started by the master, reads
    # the server's own environment): the workers in front keep nginx's policy.
    assert seen(nginx.url("/app"))["policy"] == BATCH
    workers = [p for p, cmd in nginx_children(nginx).items() if "worker process" in cmd]
    assert workers and {os.sched_getscheduler(p) for p in workers} == {OTHER}


def test_nginx_workers_without_python_or_groups_are_left_alone(launcher):
    """The module loaded, no embedded app and no daemon group that runs (one that no location
    uses is not started): nginx's workers keep its policy."""
    nginx = rwsgi_nginx(launcher, "location /ok { return 200 ok; }",
                        "wsgi_daemon_process unused processes=1 threads=1;")
    assert requests.get(nginx.url("/ok"), timeout=20).status_code == 200
    workers = worker_pids(nginx)
    assert workers and {os.sched_getscheduler(p) for p in workers} == {OTHER}


def test_apache_embedded_leaves_httpds_threads_alone_and_its_daemon_workers_run_batch(launcher, app):
    """An Apache child's threads are httpd's: they keep its policy (sched.rs says why); the
    daemon group's worker processes are ours."""
    apache = rwsgi_apache(launcher, f"WSGIScriptAlias /app {app}\n"
                                    f"WSGIScriptAlias /daemon {app} process-group=g\n"
                                    "WSGIDaemonProcess g processes=1 threads=2\n"
                                    f"<Directory {app.parent}>\n    Require all granted\n</Directory>\n",
                          threads=4)
    embedded = seen(apache.url("/app"))
    assert embedded["policy"] == OTHER
    assert set(thread_policies(embedded["pid"]).values()) == {OTHER}
    daemon = seen(apache.url("/daemon"))
    assert daemon["pid"] != embedded["pid"] and daemon["policy"] == BATCH
    assert set(thread_policies(daemon["pid"]).values()) == {BATCH}


def test_rwsgi_worker_runs_batch(launcher, app):
    worker = launcher.worker(app, processes=1, threads=2)
    front = launcher.front_end("nginx", worker)
    assert seen(front.url("/app"))["policy"] == BATCH
