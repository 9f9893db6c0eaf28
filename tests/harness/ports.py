"""Free 127.0.0.1 ports and readiness probes."""

import socket
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, ask the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def can_connect(address) -> bool:
    """address: (host, port) for TCP or a str path for a unix socket."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(address)
        except OSError:
            return False
        return True


def wait_until(predicate, timeout: float, interval: float = 0.02, what: str = "condition",
               alive=None):
    """Poll `predicate` until true; `alive()` returning False aborts early (process died)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if alive is not None and not alive():
            raise RuntimeError(f"process exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
