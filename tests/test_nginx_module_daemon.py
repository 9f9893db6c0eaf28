"""ngx_http_wsgi_module in daemon mode, through Debian's real /usr/sbin/nginx: the master starts one
supervisor per `wsgi_daemon_process` group, requests go over uwsgi through nginx's upstream
machinery, and the groups follow nginx's lifecycle (reload keeps/restarts/stops them; stop, quit
and kill -9 of the master leave nothing behind).
"""

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from harness import paths
from test_nginx_module_embedded import TOOLS, app_dir, rwsgi_nginx, write_app


def processes() -> dict:
    """pid -> (ppid, uid, comm, cmdline) of every process."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            status = (d / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        out[int(d.name)] = (int(fields["PPid"]), int(fields["Uid"].split()[0]), fields["Name"].strip(), cmd)
    return out


def group_comm(nginx) -> str:
    # The supervisor and its workers are named after the group (display-name "wsgi:NAME").
    return f"wsgi:{nginx.group_name}"[:15]


def keepers(nginx) -> dict:
    """The group's keeper(s): direct children of the master named after the group, which start
    the supervisor (again when it dies)."""
    master = nginx.process.pid
    return {pid: info for pid, info in processes().items()
            if info[0] == master and info[2] == group_comm(nginx)}


def supervisors(nginx) -> dict:
    """The group's supervisor(s): children of the keepers, named after the group."""
    procs = processes()
    ks = keepers(nginx)
    return {pid: info for pid, info in procs.items() if info[0] in ks and info[2] == group_comm(nginx)}


def group_workers(nginx, sup: int) -> list:
    return [pid for pid, info in processes().items() if info[0] == sup and info[2] == group_comm(nginx)]


def leftovers(nginx) -> dict:
    """nginx processes of this config (by command line) and the group's processes (by name)."""
    return {pid: info for pid, info in processes().items()
            if str(nginx.conf_path) in info[3] or info[2] == group_comm(nginx)}


_groups = iter(range(1, 1_000_000))


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def daemon_nginx(launcher, state_dir, group_options="processes=2 threads=4", extra_http=""):
    d = app_dir(launcher)
    app = write_app(d, "tools.py", TOOLS)
    name = f"s{os.getpid() % 1000}x{next(_groups)}"  # unique: tests find processes by group name
    server = f"""
        client_max_body_size 64m;
        location /app/ {{ wsgi_script {app}; wsgi_process_group {name}; }}
        location /static {{ return 200 "static\\n"; }}
    """
    http = f"wsgi_daemon_process {name} {group_options};\n{extra_http}"
    nginx = rwsgi_nginx(launcher, server, http, state_dir=state_dir)
    nginx.group_name = name
    wait_for(lambda: requests.get(nginx.url("/app/environ"), timeout=5).status_code == 200,
             what="the daemon group to answer")
    return nginx


@pytest.fixture(scope="module")
def site(launcher, state_dir):
    return daemon_nginx(launcher, state_dir)


def test_requests_run_in_the_daemon_not_in_nginx(site):
    env = requests.get(site.url("/app/environ"), timeout=10).json()
    assert env["SCRIPT_NAME"] == "/app" and env["PATH_INFO"] == "/environ"
    sups = supervisors(site)
    assert len(sups) == 1, sups
    (sup,) = sups
    r = requests.get(site.url("/app/sleep?s=0"), timeout=10)
    assert r.status_code == 200
    # The app's process is a worker of the group's supervisor, not an nginx worker.
    assert len(group_workers(site, sup)) == 2
    assert "wsgi daemon group" in processes()[sup][3]  # what ps shows
    # Between the master and the supervisor: the group's keeper (restarts a dead supervisor).
    (keeper,) = keepers(site)
    assert processes()[sup][0] == keeper
    assert "wsgi keeper" in processes()[keeper][3]


def test_post_and_streaming_through_the_daemon(site):
    for size in (0, 1000, 3_000_000):
        data = os.urandom(size)
        r = requests.post(site.url("/app/echo"), data=data, timeout=30)
        assert r.status_code == 200 and r.content == data
        assert r.headers["X-Content-Length"] == str(size)
    data = os.urandom(200_000)
    r = requests.post(site.url("/app/echo"), data=iter([data[:10], data[10:]]), timeout=30)
    assert r.content == data
    with requests.get(site.url("/app/stream?gap=0.5"), stream=True, timeout=10) as r:
        arrivals = [(time.time(), line) for line in r.iter_lines()]
    assert [a[1].split()[0] for a in arrivals] == [b"chunk0", b"chunk1", b"chunk2"]
    assert arrivals[0][0] < float(arrivals[-1][1].split()[1]) - 0.5, "daemon response not streamed"


def test_headers_and_status(site):
    r = requests.get(site.url("/app/headers"), timeout=10)
    assert r.status_code == 201
    assert r.headers["Content-Type"] == "text/x-test"
    assert r.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]


def test_slow_app_does_not_block_nginx(site):
    out = []
    t = threading.Thread(target=lambda: out.append(requests.get(site.url("/app/sleep?s=1"), timeout=10)))
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    assert requests.get(site.url("/static"), timeout=5).text == "static\n"
    assert time.monotonic() - t0 < 0.5  # the app sleeps 1 s; margin for a loaded machine
    t.join()
    assert out[0].status_code == 200


def test_reload_keeps_unchanged_group_restarts_changed_and_stops_removed(launcher, state_dir):
    nginx = daemon_nginx(launcher, state_dir)
    (first,) = supervisors(nginx)
    # Unchanged configuration: the same supervisor keeps running across a reload.
    nginx.reload()
    time.sleep(1.5)
    assert set(supervisors(nginx)) == {first}
    assert requests.get(nginx.url("/app/environ"), timeout=10).status_code == 200
    # Changed group: replaced by a new supervisor, the old one exits.
    text = nginx.conf_path.read_text().replace("processes=2 threads=4", "processes=1 threads=4")
    nginx.conf_path.write_text(text)
    nginx.reload()
    second = wait_for(lambda: [p for p in supervisors(nginx) if p != first], what="a new supervisor")
    wait_for(lambda: first not in supervisors(nginx), what="the old supervisor to exit")
    wait_for(lambda: requests.get(nginx.url("/app/environ"), timeout=5).status_code == 200,
             what="the restarted group")
    # Removed group: stopped.
    name = nginx.group_name
    text = text.replace(f"wsgi_process_group {name};", "").replace(f"wsgi_daemon_process {name}", "# ")
    nginx.conf_path.write_text(text)
    nginx.reload()
    wait_for(lambda: not supervisors(nginx), what="the removed group to stop")
    assert second


def test_reload_that_cannot_start_the_changed_group_keeps_the_old_one(launcher, state_dir):
    """A reload whose changed group cannot start (here: its user does not exist) says why at
    [error] and leaves the running group serving with its previous options."""
    nginx = daemon_nginx(launcher, state_dir)
    (first,) = supervisors(nginx)
    text = nginx.conf_path.read_text()
    nginx.conf_path.write_text(text.replace("processes=2 threads=4", "processes=2 threads=4 user=rwsgi-no-such-user"))
    nginx.reload()
    wait_for(lambda: "RW-NG032 cannot start daemon group" in nginx.error_log_text(), what="the reason")
    assert re.search(r"\[error\] .*RW-NG032 cannot start daemon group .*rwsgi-no-such-user.*keeps serving",
                     nginx.error_log_text())
    time.sleep(1)
    assert set(supervisors(nginx)) == {first}
    assert requests.get(nginx.url("/app/environ"), timeout=10).status_code == 200


def test_renamed_group_on_the_same_socket_keeps_serving(launcher, state_dir):
    """A group renamed by a reload, with the same socket=: the old group stops, the new one takes
    over the socket, and its file stays (the old group's keeper leaves it). Requests sent all the
    while succeed: the group secret belongs to the socket, not to the group's name."""
    d = app_dir(launcher)
    app = write_app(d, "tools.py", TOOLS)
    sock = Path(d) / "same.sock"
    old, new = f"r{os.getpid() % 1000}x{next(_groups)}", f"r{os.getpid() % 1000}x{next(_groups)}"
    server = f"location /app/ {{ wsgi_script {app}; wsgi_process_group {old}; }}"
    http = f"wsgi_daemon_process {old} processes=1 threads=2 socket=unix:{sock};"
    nginx = rwsgi_nginx(launcher, server, http, state_dir=state_dir)
    nginx.group_name = old
    wait_for(lambda: requests.get(nginx.url("/app/environ"), timeout=5).status_code == 200, what="the group")
    statuses, stop = [], threading.Event()

    def hammer():  # old and new nginx workers, old and new group: one socket, one secret
        while not stop.is_set():
            statuses.append(requests.get(nginx.url("/app/environ"), timeout=10).status_code)
    t = threading.Thread(target=hammer)
    t.start()
    try:
        nginx.conf_path.write_text(nginx.conf_path.read_text().replace(old, new))
        nginx.reload()
        nginx.group_name = new
        wait_for(lambda: supervisors(nginx), what="the renamed group")
        nginx.group_name = old
        wait_for(lambda: not supervisors(nginx), timeout=20, what="the old group to exit")
    finally:
        stop.set()
        t.join()
    assert sock.exists()
    assert statuses and set(statuses) == {200}, statuses
    assert requests.get(nginx.url("/app/environ"), timeout=10).status_code == 200


@pytest.mark.parametrize("how", ["stop", "quit", "kill9"])
def test_master_exit_leaves_no_daemon_behind(launcher, state_dir, how):
    nginx = daemon_nginx(launcher, state_dir)
    assert supervisors(nginx)
    master = nginx.process.pid
    nginx_workers = [p for p, i in processes().items() if i[0] == master and i[2] == "nginx"]
    sig = {"stop": signal.SIGTERM, "quit": signal.SIGQUIT, "kill9": signal.SIGKILL}[how]
    os.kill(master, sig)
    nginx.process.proc.wait(15)
    if how == "kill9":
        # nginx's own workers outlive a killed master (they hold the listening socket); stop
        # them by pid like an admin would. The daemon group must go by itself.
        for pid in nginx_workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    wait_for(lambda: not leftovers(nginx), timeout=10, what=f"no processes left after {how}")
    assert not [p for p in nginx_workers if p in processes()]
    # The group's socket (bound by the master, kept by the keeper) is removed with the group.
    assert not (Path(nginx.prefix) / f"nginx-wsgi-{nginx.group_name}.sock").exists()


def test_daemon_user_and_group(launcher, state_dir):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    nginx = daemon_nginx(launcher, state_dir, "processes=1 threads=2 user=nobody group=nogroup")
    import pwd
    import grp
    nobody = pwd.getpwnam("nobody").pw_uid
    (sup,) = supervisors(nginx)
    workers = group_workers(nginx, sup)
    assert workers
    for pid in workers:
        status = Path(f"/proc/{pid}/status").read_text()
        uid = int(status.split("Uid:")[1].split()[0])
        gid = int(status.split("Gid:")[1].split()[0])
        assert uid == nobody and gid == grp.getgrnam("nogroup").gr_gid


def test_socket_is_private_to_nginx_workers(site):
    sock = Path(site.prefix) / f"nginx-wsgi-{site.group_name}.sock"
    st = sock.stat()
    assert oct(st.st_mode & 0o777) == oct(0o600)
    import pwd
    assert st.st_uid == pwd.getpwnam("nobody").pw_uid  # nginx's worker user here


def test_unreachable_group_is_503_with_a_reason(launcher, state_dir):
    """A group that cannot start (here: its socket's directory does not exist, so it cannot bind)
    answers 503 and the error log says why; nginx itself keeps running."""
    d = app_dir(launcher)
    app = write_app(d, "tools.py", TOOLS)
    server = f"location /app/ {{ wsgi_script {app}; wsgi_process_group broken; }}"
    http = "wsgi_daemon_process broken socket=unix:/nonexistent-rwsgi-dir/broken.sock;"
    nginx = rwsgi_nginx(launcher, server, http, state_dir=state_dir)
    r = requests.get(nginx.url("/app/environ"), timeout=5)
    assert r.status_code == 503, (r.status_code, nginx.error_log_text()[-2000:])
    log = nginx.error_log_text()
    assert 'daemon process group "broken" cannot be reached' in log
    assert "does not exist" in log
    # The reason, in nginx's error log at [error]: the master binds the group's socket itself.
    assert re.search(r"\[error\] .*RW-NG032 cannot start daemon group broken: bind /nonexistent-rwsgi-dir", log), log


def test_removed_socket_file_is_503_on_the_next_request(launcher, state_dir):
    """A running group's socket file is looked up at most once per millisecond of nginx's clock
    (src/daemon.rs, `socket_seen`): once it is gone, the next request is a 503 with RW-NG020,
    not a connect to a missing path (nginx's 502). mod_wsgi answers 503 too when its daemon
    socket cannot be reached, after its connect retries."""
    nginx = daemon_nginx(launcher, state_dir)
    sock = Path(nginx.prefix) / f"nginx-wsgi-{nginx.group_name}.sock"
    s = requests.Session()  # one client connection, so the same nginx worker sees both
    assert s.get(nginx.url("/app/environ"), timeout=10).status_code == 200
    sock.unlink()
    time.sleep(0.05)  # nginx's clock moves when its event loop wakes for the next request
    r = s.get(nginx.url("/app/environ"), timeout=10)
    assert r.status_code == 503, (r.status_code, nginx.error_log_text()[-2000:])
    assert "RW-NG020" in nginx.error_log_text()


def test_killed_daemon_worker_is_replaced(site):
    """A daemon worker that dies (SIGKILL) is respawned by the group's supervisor: the next
    requests succeed within a second."""
    (sup,) = supervisors(site)
    workers = group_workers(site, sup)
    os.kill(workers[0], signal.SIGKILL)
    t0 = time.monotonic()
    wait_for(lambda: all(requests.get(site.url("/app/environ"), timeout=5).status_code == 200
                         for _ in range(4)), timeout=5, what="requests to succeed again")
    assert time.monotonic() - t0 < 1.5
    wait_for(lambda: len(group_workers(site, sup)) == 2, what="the replacement worker")


def test_one_group_serves_several_scripts_by_location(launcher, state_dir):
    """Like mod_wsgi's several WSGIScriptAlias with one process-group: each location's script runs
    in the same daemon group, chosen by the SCRIPT_NAME nginx sends."""
    from test_nginx_module_embedded import HELLO
    d = app_dir(launcher)
    tools = write_app(d, "tools.py", TOOLS)
    hello = write_app(d, "hello.py", HELLO)
    server = f"""
        location /tools/ {{ wsgi_script {tools}; wsgi_process_group multi; }}
        location /hello/ {{ wsgi_script {hello}; wsgi_process_group multi; }}
    """
    nginx = rwsgi_nginx(launcher, server, "wsgi_daemon_process multi processes=1 threads=2;")
    r = wait_for(lambda: (lambda x: x if x.status_code == 200 else None)(
        requests.get(nginx.url("/hello/x"), timeout=5)), what="the group")
    assert "script=/hello path=/x" in r.text
    env = requests.get(nginx.url("/tools/environ"), timeout=5).json()
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/tools", "/environ")
    pid = int(r.text.split("pid=")[1].split()[0])
    assert int(requests.get(nginx.url("/hello/y"), timeout=5).text.split("pid=")[1].split()[0]) == pid


def test_queue_timeout_answers_504_after_waiting(launcher, state_dir):
    """One worker thread busy for 2.5 s: a second request waits in the group's backlog (no error
    while it waits) and, once it has waited longer than queue-timeout=1, gets 504 without running
    the app. nginx passes when it received the request (RWSGI_REQUEST_START)."""
    nginx = daemon_nginx(launcher, state_dir, "processes=1 threads=1 queue-timeout=1")
    first = []
    t = threading.Thread(target=lambda: first.append(requests.get(nginx.url("/app/sleep?s=2.5"), timeout=10)))
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    second = requests.get(nginx.url("/app/environ"), timeout=10)
    waited = time.monotonic() - t0
    t.join()
    assert first[0].status_code == 200
    assert second.status_code == 504, second.text
    assert waited > 1.5, f"answered after {waited:.2f}s: it should have waited for the busy worker"


def test_daemonised_nginx_start_reload_quit(launcher, state_dir):
    """nginx's default `daemon on`: the groups start before nginx forks into the background and
    still follow it: kept on `nginx -s reload`, gone after `nginx -s quit`."""
    import subprocess
    from test_nginx_module_embedded import make_nginx
    d = app_dir(launcher)
    app = write_app(d, "tools.py", TOOLS)
    name = f"bg{os.getpid() % 1000}x{next(_groups)}"
    nginx = make_nginx(launcher, f"location /app/ {{ wsgi_script {app}; wsgi_process_group {name}; }}",
                       f"wsgi_daemon_process {name} processes=1 threads=2;", state_dir=state_dir)
    nginx.group_name = name
    nginx.conf_path.write_text(nginx.conf_path.read_text().replace("daemon off;", "daemon on;"))
    base = [str(paths.NGINX_BIN), "-p", str(nginx.prefix), "-e", str(nginx.error_log), "-c", str(nginx.conf_path)]
    with open(nginx.prefix / "stderr.log", "ab") as out:
        # Output to a file: pipes would be held open by the daemonised processes.
        subprocess.run(base, check=True, timeout=20, stdout=out, stderr=out)
    master = int(wait_for(lambda: nginx.pid_path.exists() and nginx.pid_path.read_text().strip(),
                          what="the pid file"))
    try:
        def ours():
            # The group's top process: its workers inherit the title (cmdline) and comm, so a
            # worker forked between two looks would otherwise count as a new supervisor.
            procs = {p: i for p, i in processes().items()
                     if i[2] == group_comm(nginx) and "daemon group" in i[3]}
            return [p for p, i in procs.items() if i[0] not in procs]
        first = wait_for(ours, what="the supervisor")
        r = wait_for(lambda: (lambda x: x if x.status_code == 200 else None)(
            requests.get(nginx.url("/app/environ"), timeout=5)), what="the app")
        assert r.json()["SCRIPT_NAME"] == "/app"
        subprocess.run(base + ["-s", "reload"], check=True, timeout=20, capture_output=True)
        assert f"wsgi:{name}" in nginx.error_log_text()  # the supervisor logs to nginx's error log
        time.sleep(1.5)
        assert ours() == first
        subprocess.run(base + ["-s", "quit"], check=True, timeout=20, capture_output=True)
        wait_for(lambda: not ours() and not Path(f"/proc/{master}").exists(), timeout=15,
                 what="nginx and the group to exit")
    finally:
        if Path(f"/proc/{master}").exists():
            os.kill(master, signal.SIGTERM)
