"""Issue 10, case 11: logging under attack. One log line per malformed packet let 400k packets
write 29 MB of log. Repeated errors are rate-limited: the first line of a kind is written, the
repeats are counted, and a summary with the count follows; nothing goes unaccounted.

Interface assumed (log format, to be documented in docs/rwsgi-worker.md and docs/errors.md): per
process and per code, at most one line per second is written as today
(`RW030 closing connection: <reason>`); the others in that second are counted, and once the second
is over one line says how many:
    `RW030 suppressed N similar lines in the last 1.0s (last: closing connection: <reason>)`
So `lines written + sum(N) == events`, and a flood of any size costs about two lines a second.
"""

import re
import socket
import struct
import time

import pytest

from fault_common import Clock, apache_logs, apache_site, app_dir, lch, nginx_daemon, reference, uwsgi_worker  # noqa: F401
from harness import uwsgi_client as uc

PACKETS = 3000
# modifier1 255: well-formed, refused at once ("unsupported uwsgi modifiers"), one RW030 line each
BAD = struct.pack("<BHB", 255, 0, 0)
LINE = re.compile(r"RW030 closing connection")
SUMMARY = re.compile(r"RW030 suppressed (\d+) similar lines")


def flood(address, n=PACKETS):
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    clock = Clock()
    for _ in range(n):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.connect(address)
        s.sendall(BAD)
        s.shutdown(socket.SHUT_WR)
        try:
            s.recv(16)
        except OSError:
            pass
        s.close()
    return clock()


def accounted(log):
    written = len(LINE.findall(log))
    suppressed = sum(int(n) for n in SUMMARY.findall(log))
    return written, suppressed


def check(log_text, elapsed):
    written, suppressed = accounted(log_text())
    seen = f"{PACKETS} bad packets in {elapsed:.1f}s: {written} lines written, {suppressed} counted in summaries"
    print(seen)
    assert written <= 2 * (elapsed + 3), seen
    assert written + suppressed == PACKETS, seen


def test_worker_rate_limits_malformed_packet_lines(lch):
    """rwsgi-worker directly (TCP). Before the fix: 3000 packets -> 3000 lines (~0.3 MB; the
    issue: 400k packets wrote 29 MB)."""
    d = app_dir(lch)
    w = lch.worker(d.script(), processes=1, threads=4)
    elapsed = flood(w.address)
    time.sleep(2.5)  # the last summary is written once its second is over
    check(w.log_text, elapsed)


def test_nginx_daemon_rate_limits_malformed_packet_lines(lch):
    """The group's lines go to nginx's error log; the flood comes through the group's unix socket
    (as root here, standing for anything that can reach it)."""
    d = app_dir(lch)
    nginx = nginx_daemon(lch, d, "processes=1 threads=4")
    elapsed = flood(str(nginx.prefix / f"nginx-wsgi-{nginx.group_name}.sock"))
    time.sleep(2.5)
    check(nginx.error_log_text, elapsed)


def test_apache_daemon_rate_limits_malformed_packet_lines(lch):
    d = app_dir(lch)
    apache = apache_site(lch, d, "processes=1 threads=4 display-name=%{GROUP}")
    sock = next(p for p in d.path.glob("s.*.sock") if not p.is_symlink())
    elapsed = flood(str(sock))
    time.sleep(2.5)
    check(lambda: apache_logs(apache), elapsed)


def test_worker_survives_the_flood(lch):
    """Whatever is logged, the flood costs nothing else: the same worker serves right after
    (true on main; tests/test_malformed.py has the full corpus)."""
    d = app_dir(lch)
    w = lch.worker(d.script(), processes=1, threads=4)
    before = w.started_children(1)  # not child_pids(): that was [] once in CI, before the fork
    flood(w.address, 500)
    r = uc.get(w.address, "/app/hello", script_name="/app")
    assert r.status == 200 and w.child_pids() == before


@reference
def test_reference_uwsgi_logs_every_malformed_packet(lch):
    """Debian's uWSGI 2.0, the same flood (1,000 packets). Measured: one line per packet as well,
    no rate limit."""
    d = app_dir(lch)
    w = uwsgi_worker(lch, d.script(), processes=1, threads=4)
    before = len(w.log_text().splitlines())
    flood(w.address, 1000)
    time.sleep(1)
    lines = w.log_text().splitlines()[before:]
    print(f"uWSGI: {len(lines)} log lines for 1000 bad packets; sample: {lines[-2:]}")
    assert len(lines) >= 1000
