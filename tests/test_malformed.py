"""A corpus of malformed uwsgi packets sent straight to rwsgi-worker's socket.

Each bad packet may cost its own connection and nothing else: the worker processes do not die
(same pids), a valid request right after succeeds, and memory stays flat over many rounds.
"""

import random
import socket
import struct
import time

import pytest

from harness import uwsgi_client as uc
from harness.worker import rss_kib

ROUNDS = 15
WARMUP_ROUNDS = 3
RSS_GROWTH_LIMIT_KIB = 2048


def var(key: bytes, value: bytes) -> bytes:
    return struct.pack("<H", len(key)) + key + struct.pack("<H", len(value)) + value


def header(size: int, m1: int = 0, m2: int = 0) -> bytes:
    return struct.pack("<BHB", m1, size, m2)


def with_vars(block: bytes, m1: int = 0, m2: int = 0) -> bytes:
    return header(len(block), m1, m2) + block


GOOD = uc.encode_vars(uc.request_vars(path="/pid"))


def corpus():
    """(name, bytes to send) pairs. Sent, then the client half-closes and reads what comes."""
    rng = random.Random(20261122)
    items = [
        ("empty connection", b""),
        ("one byte", b"\x00"),
        ("three header bytes", b"\x00\x10\x00"),
        ("header only, vars promised", header(100)),
        ("vars cut short", header(1000) + GOOD[:50]),
        ("zero-size vars block", header(0)),
        ("empty key", with_vars(var(b"", b"value") + GOOD)),
        ("key length past the end", with_vars(struct.pack("<H", 500) + b"KEY")),
        ("value length past the end", with_vars(struct.pack("<H", 3) + b"KEY" + struct.pack("<H", 900) + b"v")),
        ("odd trailing byte", with_vars(GOOD + b"\x01")),
        ("trailing key without value", with_vars(GOOD + struct.pack("<H", 3) + b"KEY")),
        ("many tiny vars", with_vars(var(b"K", b"") * 13000)),
        ("modifiers 255/255", with_vars(GOOD, 255, 255)),
        ("modifier1 30 (uWSGI's variant)", with_vars(GOOD, 30, 0)),
        ("HTTP request on the uwsgi socket", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("TLS client hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64)),
        ("no REQUEST_METHOD", with_vars(var(b"PATH_INFO", b"/pid"))),
        ("CONTENT_LENGTH not a number", with_vars(GOOD + var(b"CONTENT_LENGTH", b"abc"))),
        ("CONTENT_LENGTH negative", with_vars(GOOD + var(b"CONTENT_LENGTH", b"-1"))),
        ("CONTENT_LENGTH huge", with_vars(GOOD + var(b"CONTENT_LENGTH", b"99999999999999999999999"))),
        ("CONTENT_LENGTH with spaces", with_vars(GOOD + var(b"CONTENT_LENGTH", b" 5 "))),
        ("body shorter than CONTENT_LENGTH",
         with_vars(uc.encode_vars(uc.request_vars("POST", "/input/read", body=b"x" * 5000))) + b"x" * 10),
        ("duplicate keys", with_vars(GOOD + var(b"PATH_INFO", b"/other") + var(b"REQUEST_METHOD", b"PUT"))),
        ("NUL and invalid UTF-8 in PATH_INFO", with_vars(GOOD.replace(b"/pid", b"/p\x00\xff"))),
        ("control characters in a header value", with_vars(GOOD + var(b"HTTP_X", b"\r\nInjected: 1\x00"))),
        ("non-HTTP_ key with odd bytes", with_vars(GOOD + var(b"\xff\xfe\x00", b"\x00"))),
        ("SCRIPT_NAME longer than PATH_INFO", with_vars(GOOD + var(b"SCRIPT_NAME", b"/pid/and/more"))),
        ("empty REQUEST_METHOD and PATH_INFO",
         with_vars(var(b"REQUEST_METHOD", b"") + var(b"PATH_INFO", b""))),
        ("UWSGI_FILE code loading", with_vars(GOOD + var(b"UWSGI_FILE", b"/etc/passwd"))),
    ]
    for i in range(8):
        items.append((f"random bytes #{i}", bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 3000)))))
    for i in range(4):
        block = bytearray(GOOD)
        for _ in range(4):
            block[rng.randrange(len(block))] = rng.getrandbits(8)
        items.append((f"flipped bytes #{i}", with_vars(bytes(block))))
    return items


def send(address, data: bytes, hang: bool = False) -> bytes:
    with uc.connect(address, timeout=5) as s:
        try:
            s.sendall(data)
            if not hang:
                s.shutdown(socket.SHUT_WR)
            else:
                time.sleep(0.05)
        except OSError:
            return b""  # the worker already closed on us: fine
        try:
            return uc.recv_all(s, limit=1 << 20)
        except (socket.timeout, OSError):
            return b""


@pytest.fixture(scope="module")
def worker(launcher, apps):
    w = launcher.worker(apps / "conformance.py", processes=1, threads=4)
    w.started_children(1)
    return w


def assert_healthy(worker, after: str):
    resp = uc.get(worker.address, "/pid")
    assert resp.status == 200, f"valid request failed after {after!r}: {resp.raw[:200]!r}"


@pytest.mark.parametrize("name,data", corpus(), ids=[n for n, _ in corpus()])
def test_malformed_packet_costs_one_connection(worker, name, data):
    children = worker.child_pids()
    send(worker.address, data)
    assert_healthy(worker, name)
    assert worker.child_pids() == children, f"a worker process died on {name!r}"


def test_stalled_partial_packets_time_out(launcher, apps):
    """Clients that stop mid-packet and keep the connection open hold a thread only until
    --socket-timeout; then the worker drops them and serves others again."""
    worker = launcher.worker(apps / "conformance.py", processes=1, threads=2,
                             extra_args=["--socket-timeout", "2"])
    holders = []
    try:
        for _ in range(6):  # more stalled connections than the worker has threads
            s = uc.connect(worker.address, timeout=5)
            s.sendall(header(500) + GOOD[:20])
            holders.append(s)
        start = time.monotonic()
        resp = uc.request(worker.address, uc.request_vars(path="/pid"), timeout=15)
        elapsed = time.monotonic() - start
        assert resp.status == 200, resp.raw[:200]
        assert elapsed < 2 * 3 + 2, f"served only after {elapsed:.1f}s"
    finally:
        for s in holders:
            s.close()


def test_corpus_rounds_keep_memory_flat(worker):
    items = corpus()
    children = worker.child_pids()
    assert children, "no worker processes found under the supervisor"

    def total_rss():
        return sum(rss_kib(p) for p in worker.child_pids()) + rss_kib(worker.pid)

    for _ in range(WARMUP_ROUNDS):
        for name, data in items:
            send(worker.address, data)
        assert_healthy(worker, "warm-up round")
    baseline = total_rss()
    for _ in range(ROUNDS):
        for name, data in items:
            send(worker.address, data)
        assert_healthy(worker, "round")
    grown = total_rss() - baseline
    assert worker.child_pids() == children
    assert grown <= RSS_GROWTH_LIMIT_KIB, (
        f"RSS grew {grown} KiB over {ROUNDS} rounds of {len(items)} malformed packets")
