"""rwsgi-worker spoken to directly over uwsgi (no front end): what a front end cannot show.

Vars are sent the way nginx's uwsgi_params sends them (harness.uwsgi_client.request_vars).
"""

import json
import socket
import time
import os
import stat

import pytest
import requests

from harness import uwsgi_client as uc


@pytest.fixture(scope="module")
def worker(launcher, apps):
    return launcher.worker(apps / "conformance.py", processes=1, threads=4)


def environ_of(resp):
    assert resp.status == 200, resp.raw[:400]
    return json.loads(resp.body)


def test_status_line_is_http_1_1(worker):
    resp = uc.get(worker.address, "/environ")
    # Apache's mod_proxy_uwsgi needs "HTTP/x.y NNN"; nginx parses it too.
    assert resp.status_line.startswith("HTTP/1.1 200 ")


def test_https_sets_url_scheme(worker):
    env = environ_of(uc.get(worker.address, "/environ", extra=[("HTTPS", "on")]))
    assert env["wsgi.url_scheme"]["value"] == "https"
    env = environ_of(uc.get(worker.address, "/environ", extra=[("HTTPS", "off")]))
    assert env["wsgi.url_scheme"]["value"] == "http"
    env = environ_of(uc.get(worker.address, "/environ"))
    assert env["wsgi.url_scheme"]["value"] == "http"


def test_script_name_stripped_from_path_info(worker):
    env = environ_of(uc.get(worker.address, "/app/environ/x", script_name="/app"))
    assert env["SCRIPT_NAME"]["value"] == "/app"
    assert env["PATH_INFO"]["value"] == "/environ/x"


def test_path_info_kept_when_not_under_script_name(worker):
    # Apache's mod_proxy_uwsgi sends PATH_INFO already relative to SCRIPT_NAME.
    env = environ_of(uc.get(worker.address, "/environ/y", script_name="/app"))
    assert env["SCRIPT_NAME"]["value"] == "/app"
    assert env["PATH_INFO"]["value"] == "/environ/y"


def test_no_script_name_means_root(worker):
    env = environ_of(uc.get(worker.address, "/environ"))
    assert env["SCRIPT_NAME"]["value"] == ""
    assert env["PATH_INFO"]["value"] == "/environ"


def test_path_info_bytes_as_latin1(worker):
    raw_path = "/environ/\xc3\xa9\xff"  # raw bytes c3 a9 ff (invalid UTF-8) carried as latin-1
    env = environ_of(uc.get(worker.address, raw_path))
    assert env["PATH_INFO"]["latin1_hex"] == raw_path.encode("latin-1").hex()


def test_uwsgi_code_loading_vars_ignored(worker, tmp_path):
    evil = tmp_path / "evil.py"
    evil.write_text("def application(e, s):\n    s('200 OK', [])\n    return [b'EVIL']\n")
    extra = [("UWSGI_FILE", str(evil)), ("UWSGI_SCRIPT", "evil"), ("UWSGI_MODULE", "evil"),
             ("UWSGI_CALLABLE", "nothing"), ("UWSGI_CHDIR", str(tmp_path)),
             ("UWSGI_PYHOME", str(tmp_path)), ("UWSGI_APPID", "evil"), ("UWSGI_SETENV", "X=1")]
    resp = uc.get(worker.address, "/environ", extra=extra)
    assert b"EVIL" not in resp.raw
    env = environ_of(resp)
    assert env["PATH_INFO"]["value"] == "/environ"


def test_proxy_and_content_duplicates_dropped(worker):
    body = b"abc"
    pairs = uc.request_vars("POST", "/environ", body=body, content_type="text/x",
                            extra=[("HTTP_PROXY", "http://evil"), ("HTTP_CONTENT_TYPE", "text/x"),
                                   ("HTTP_CONTENT_LENGTH", "3")])
    env = environ_of(uc.request(worker.address, pairs, body))
    assert "HTTP_PROXY" not in env
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["CONTENT_LENGTH"]["value"] == "3" and env["CONTENT_TYPE"]["value"] == "text/x"


def test_content_length_longer_truncated_by_worker(worker):
    resp = uc.get(worker.address, "/content_length/longer")
    assert resp.status == 200 and resp.header("Content-Length") == "5"
    assert resp.body == b"01234"


def test_content_length_shorter_worker_closes(worker):
    resp = uc.get(worker.address, "/content_length/shorter")
    assert resp.status == 200 and resp.header("Content-Length") == "10"
    assert len(resp.body) < 10


def test_file_wrapper_content_length_at_worker(worker):
    resp = uc.get(worker.address, "/file_wrapper", query="kind=file&size=100000&cl=1000&token=direct")
    assert resp.status == 200
    assert resp.body == (bytes(range(256)) * 4)[:1000]


def test_large_vars_block(worker):
    # A request whose vars block is close to the 65,535-byte limit of the protocol.
    big = "v" * 60000
    env = environ_of(uc.get(worker.address, "/environ", headers={"X-Big": big}))
    assert env["HTTP_X_BIG"]["value"] == big


def test_body_shorter_than_content_length(worker):
    """The front end dies mid-upload: the worker must not hang or crash; it stays usable."""
    pairs = uc.request_vars("POST", "/input/read", body=b"x" * 1000)
    with uc.connect(worker.address, timeout=10) as s:
        s.sendall(uc.packet(pairs, b"x" * 100))
        s.shutdown(socket.SHUT_WR)
        uc.recv_all(s)
    assert uc.get(worker.address, "/pid").status == 200


@pytest.fixture(scope="module")
def unix_worker(launcher, apps):
    return launcher.worker(apps / "conformance.py", socket="unix", processes=1, threads=2)


def test_unix_socket_mode(unix_worker):
    mode = stat.S_IMODE(os.stat(unix_worker.socket_path).st_mode)
    assert mode == 0o666  # as requested with --socket-mode 0666
    assert uc.get(unix_worker.address, "/pid").status == 200


@pytest.mark.parametrize("kind", ["nginx", "apache"])
def test_front_end_over_unix_socket(launcher, unix_worker, kind):
    server = launcher.front_end(kind, unix_worker, mount="/u")
    r = requests.get(server.url("/u/environ"), timeout=10)
    assert r.status_code == 200 and r.json()["PATH_INFO"]["value"] == "/environ"


@pytest.fixture(scope="module")
def mounted_worker(launcher, apps):
    return launcher.worker(apps / "conformance.py", mount="/mnt", processes=1, threads=2)


def test_mount_option(mounted_worker):
    env = environ_of(uc.get(mounted_worker.address, "/mnt/environ"))
    assert env["SCRIPT_NAME"]["value"] == "/mnt"
    assert env["PATH_INFO"]["value"] == "/environ"


def peak_rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def test_input_streamed_not_buffered(launcher, apps):
    """A 64 MiB body read in 64 KiB pieces must not be held in the worker's memory whole."""
    worker = launcher.worker(apps / "conformance.py", processes=1, threads=1)
    assert uc.get(worker.address, "/pid").status == 200  # warm up: app loaded
    (child,) = worker.child_pids()
    before = peak_rss_kib(child)
    size = 64 << 20
    # Pieces that do not line up with the app's 64 KiB reads, with pauses so the worker catches
    # up and sees short socket reads, as it does behind a real front end.
    block = b"s" * 100_000
    pairs = uc.request_vars("POST", "/input/read_n", query="n=65536")
    pairs = [(k, v) for k, v in pairs if k != "CONTENT_LENGTH"] + [("CONTENT_LENGTH", str(size))]
    with uc.connect(worker.address, timeout=30) as s:
        s.sendall(uc.packet(pairs))
        left = size
        while left:
            piece = block[:min(left, len(block))]
            s.sendall(piece)
            left -= len(piece)
            time.sleep(0.0005)
        resp = uc.Response(uc.recv_all(s))
    assert resp.status == 200 and json.loads(resp.body)["len"] == size
    grown = peak_rss_kib(child) - before
    assert grown < 16 * 1024, f"peak RSS grew {grown} KiB while streaming a 64 MiB body"
