"""Helpers for the fault tests (tests/test_fault_*.py, issue 10): the fault app in a directory of
its own with a state directory, what it recorded, the processes of a server, and raw HTTP reads
that can tell a whole response from a cut one while it streams.

Plain Python, no pytest (see harness/__init__.py).
"""

import os
import shutil
import socket
import time
from pathlib import Path

from .http import RawResponse
from .paths import APPS, APACHE_MODULES

MOD_WSGI = APACHE_MODULES / "mod_wsgi.so"


class AppDir:
    """A 0755 directory holding copies of the test apps and a 0777 `state/` the apps write to."""

    def __init__(self, directory: Path, scripts=("faults.py",)):
        self.path = Path(directory)
        self.path.mkdir(parents=True, exist_ok=True)
        self.path.chmod(0o755)
        self.state = self.path / "state"
        self.state.mkdir(exist_ok=True)
        self.state.chmod(0o777)
        for name in scripts:
            dest = self.path / name
            shutil.copy(APPS / name, dest)
            dest.chmod(0o644)

    def script(self, name="faults.py") -> Path:
        return self.path / name

    def count(self, token: str) -> int:
        """How many times the app ran for `token` (lines in state/count-<token>)."""
        f = self.state / f"count-{token}"
        return len(f.read_text().splitlines()) if f.exists() else 0

    def pids(self, token: str):
        f = self.state / f"count-{token}"
        return [int(x) for x in f.read_text().split()] if f.exists() else []

    def wait_count(self, token: str, n: int = 1, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while self.count(token) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.count(token)


def token() -> str:
    return f"t{time.monotonic_ns()}"


# --- processes -------------------------------------------------------------------------------

def proc_table() -> dict:
    """pid -> (ppid, comm, state) of every process."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(d.name)] = (int(fields[1]), comm, fields[0])
    return out


def children(pid: int, comm: str = None) -> list:
    """Live (not zombie) children of `pid`, optionally only those named `comm`."""
    return sorted(p for p, (pp, c, st) in proc_table().items()
                  if pp == pid and st != "Z" and (comm is None or c == comm))


def alive(pid: int) -> bool:
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return st[st.rindex(")") + 2:].split()[0] != "Z"


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def wait_for(predicate, timeout=10.0, interval=0.05):
    """The predicate's first truthy value, or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def kill(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# --- raw HTTP --------------------------------------------------------------------------------

class Streamed:
    """A response read as it arrives: `arrivals` are (seconds since send, bytes) pairs."""

    def __init__(self, port: int, path: str, headers=None, timeout: float = 30.0):
        self.port, self.path = port, path
        hdrs = {"Host": f"127.0.0.1:{port}", "Connection": "close"}
        hdrs.update(headers or {})
        self.request = (f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
                        + "\r\n").encode("latin-1")
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.start = time.monotonic()
        self.sock.sendall(self.request)
        self.data = bytearray()
        self.arrivals = []
        self.error = None

    def read_until(self, needle: bytes, timeout: float = 10.0) -> bool:
        """Reads until `needle` is in the data (True) or timeout/EOF (False)."""
        deadline = time.monotonic() + timeout
        while needle not in self.data:
            left = deadline - time.monotonic()
            if left <= 0 or not self._recv(left):
                return needle in self.data
        return True

    def read_all(self, timeout: float = 30.0) -> RawResponse:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._recv(left):
                break
        self.sock.close()
        return RawResponse(bytes(self.data), time.monotonic() - self.start)

    def _recv(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            self.error = "timeout"
            return False
        except ConnectionResetError:
            self.error = "reset"
            return False
        if not data:
            return False
        self.data += data
        self.arrivals.append((time.monotonic() - self.start, data))
        return True


def post_raw(port: int, path: str, body_len: int, headers=None, timeout: float = 30.0,
             piece: int = 1 << 20, read_limit: int = 64 << 20) -> RawResponse:
    """POSTs `body_len` bytes of b"y" with Content-Length, reading the answer while it sends, so a
    server that answers before reading the body cannot deadlock the client. Returns what came
    back (status None if nothing did), with `error` ("timeout", "reset" or None) and `body_sent`."""
    import selectors
    hdrs = {"Host": f"127.0.0.1:{port}", "Connection": "close", "Content-Length": str(body_len),
            "Content-Type": "application/octet-stream"}
    hdrs.update(headers or {})
    head = (f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
            + "\r\n").encode("latin-1")
    block = b"y" * piece
    total = len(head) + body_len
    sent = 0
    received = bytearray()
    error = None
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    start = time.monotonic()
    done = broken = False
    body_total = body_len
    while not done:
        left = start + timeout - time.monotonic()
        if left <= 0:
            error = "timeout"
            break
        for _, mask in sel.select(min(left, 1.0)):
            if mask & selectors.EVENT_READ:
                try:
                    data = s.recv(262144)
                except BlockingIOError:
                    data = None
                except ConnectionResetError:
                    error, done = "reset", True
                    break
                if data == b"" or len(received) > read_limit:
                    done = True
                    break
                received += data or b""
            if mask & selectors.EVENT_WRITE and sent < total:
                view = memoryview(head)[sent:] if sent < len(head) else \
                    memoryview(block)[:min(piece, total - sent)]
                try:
                    sent += s.send(view)
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    broken = True  # the server stopped reading: only read from now on
                if sent >= total or broken:
                    sel.modify(s, selectors.EVENT_READ)
                    total = sent  # nothing more goes out
    sel.close()
    s.close()
    r = RawResponse(bytes(received), time.monotonic() - start)
    r.error = error
    r.body_sent = max(0, sent - len(head))
    r.body_complete = r.body_sent == body_total
    return r
