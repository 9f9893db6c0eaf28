"""Issue 10, cases 7 and 8: uploads must not cost the Apache daemon handler its memory or the
group its threads.

Case 7: a chunked upload (`WSGIChunkedRequest On`) is held in the Apache child's RAM to learn its
length (crates/apache/src/daemon.rs), so a 200 MiB upload grows the child by 200 MiB. It must be spooled beyond a
bound (to a temp file, as nginx's request buffering does) or streamed with a framing that needs
no length up front.
Case 8: a slow upload pins a daemon thread for as long as the client dawdles: a handful of
clients sending 1 byte/s stop all traffic to a small group. A request must not reach a daemon
thread before its body is in (up to a bound), or the wait must be bounded.

Interface assumed: none new. nginx daemon is checked too (it buffers bodies before forwarding,
so both already hold there).
"""

import socket
import threading
import time

import pytest
import requests

from fault_common import Clock, apache_group, apache_site, app_dir, lch, nginx_daemon, nginx_workers, reference  # noqa: F401
from harness.faults import children, rss_kib

MIB = 1 << 20
UPLOAD = 200  # MiB, sent chunked in 1 MiB pieces


def chunked_upload(url, mib=UPLOAD):
    piece = b"u" * MIB
    r = requests.post(url, data=(piece for _ in range(mib)), timeout=120)
    return r.status_code, r.text


def apache_children(apache):
    sup, workers = apache_group(apache)
    return [p for p in children(apache.process.pid) if p != sup and p not in workers]


def peak_growth_kib(pids, action):
    """Runs `action` and returns the largest VmHWM growth among `pids` (peak RSS, KiB)."""
    before = {p: rss_kib(p, "VmHWM") for p in pids}
    result = action()
    growth = max(rss_kib(p, "VmHWM") - before[p] for p in pids if rss_kib(p, "VmHWM"))
    return growth, result


def test_apache_daemon_chunked_upload_does_not_grow_the_child(lch):
    """A 200 MiB chunked upload through a daemon group: the app gets every byte, and no Apache
    child's peak RSS grows by more than 32 MiB. Measured on main: +200 MiB (the issue: a 400 MB
    upload made the child 412 MB). mod_wsgi 4.9 daemon (reference below): +0 MiB."""
    d = app_dir(lch)
    apache = apache_site(lch, d, "processes=1 threads=2 display-name=%{GROUP}",
                         extra="WSGIChunkedRequest On\nLimitRequestBody 0")
    growth, (status, text) = peak_growth_kib(apache_children(apache),
                                            lambda: chunked_upload(apache.url("/app/drain")))
    print(f"mod_rwsgi daemon: child peak RSS +{growth / 1024:.0f} MiB for a {UPLOAD} MiB chunked upload")
    assert status == 200 and int(text) == UPLOAD * MIB
    assert growth < 32 * 1024


def test_nginx_daemon_chunked_upload_does_not_grow_the_worker(lch):
    """nginx reads the chunked body to a temp file before forwarding (request buffering): the
    nginx worker stays small. True on main."""
    d = app_dir(lch)
    nginx = nginx_daemon(lch, d, "processes=1 threads=2")
    growth, (status, text) = peak_growth_kib(nginx_workers(nginx),
                                            lambda: chunked_upload(nginx.url("/app/drain")))
    assert status == 200 and int(text) == UPLOAD * MIB
    assert growth < 32 * 1024


@reference
def test_reference_mod_wsgi_daemon_chunked_upload(lch):
    """mod_wsgi 4.9 daemon with WSGIChunkedRequest On streams the chunked body to the daemon.
    Measured: child peak RSS +0 MiB for 200 MiB (the issue: 13 MB for 400 MB)."""
    d = app_dir(lch)
    apache = apache_site(lch, d, "processes=1 threads=2 display-name=%{GROUP}", module="mod_wsgi",
                         extra="WSGIChunkedRequest On\nLimitRequestBody 0")
    pids = [p for p in children(apache.process.pid) if p not in apache_group(apache)[1]]
    growth, (status, text) = peak_growth_kib(pids, lambda: chunked_upload(apache.url("/app/drain")))
    print(f"mod_wsgi daemon: child peak RSS +{growth / 1024:.0f} MiB")
    assert status == 200 and int(text) == UPLOAD * MIB
    assert growth < 32 * 1024


# --- case 8: slow uploads ----------------------------------------------------------------------

class SlowUploads:
    """`n` clients that each announce a 100 KB body and send it at 1 byte per second."""

    def __init__(self, port, path, n):
        self.socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                       "Content-Type: application/octet-stream\r\n\r\nz").encode())
            self.socks.append(s)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drip)
        self.thread.start()

    def _drip(self):
        while not self.stop.wait(1.0):
            for s in self.socks:
                try:
                    s.send(b"z")
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.thread.join()
        for s in self.socks:
            s.close()


def hello_while_slow_uploads(server_url, port, n=8):
    slow = SlowUploads(port, "/app/drain", n)
    try:
        time.sleep(1.5)
        clock = Clock()
        try:
            status = requests.get(server_url, timeout=6).status_code
        except requests.RequestException as e:
            status = type(e).__name__
        return status, clock()
    finally:
        slow.close()


def test_apache_daemon_slow_uploads_do_not_pin_the_group(lch):
    """A 1x4 group and 8 uploads at 1 byte/s: /hello still answers within 6 s. Measured on main:
    no answer (every daemon thread waits for body bytes). mod_wsgi 4.9 (reference below): the
    same."""
    d = app_dir(lch)
    apache = apache_site(lch, d, "processes=1 threads=4 display-name=%{GROUP}")
    status, elapsed = hello_while_slow_uploads(apache.url("/app/hello"), apache.port)
    assert status == 200, f"{status} after {elapsed:.1f}s"


def test_nginx_daemon_slow_uploads_do_not_pin_the_group(lch):
    """nginx reads the whole body before it connects to the group: true on main."""
    d = app_dir(lch)
    nginx = nginx_daemon(lch, d, "processes=1 threads=4")
    status, elapsed = hello_while_slow_uploads(nginx.url("/app/hello"), nginx.port)
    assert status == 200, f"{status} after {elapsed:.1f}s"


@reference
def test_reference_mod_wsgi_daemon_slow_uploads(lch):
    """mod_wsgi 4.9, a 1x4 daemon group and 8 uploads at 1 byte/s. Measured: /hello times out."""
    d = app_dir(lch)
    apache = apache_site(lch, d, "processes=1 threads=4 display-name=%{GROUP}", module="mod_wsgi")
    status, elapsed = hello_while_slow_uploads(apache.url("/app/hello"), apache.port)
    print(f"mod_wsgi with slow uploads: {status} after {elapsed:.1f}s")
    assert status == "ReadTimeout"
