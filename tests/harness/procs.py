"""A started server process: log file, readiness wait, stop by pid."""

import os
import signal
import subprocess
import time
from pathlib import Path

from .ports import can_connect, wait_until


class ServerProcess:
    """One foreground server process whose output goes to `log_path`.

    Stopped by its own pid (SIGTERM, then SIGKILL after `stop_timeout`), never by name.
    """

    def __init__(self, argv, log_path: Path, env=None, cwd=None, stop_timeout: float = 10.0):
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        self.proc = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self):
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.cwd, start_new_session=True)
        finally:
            log.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_connectable(self, address, timeout: float = 20.0, what: str = None):
        try:
            wait_until(lambda: can_connect(address), timeout, alive=self.alive,
                       what=what or f"{self.argv[0]} to accept on {address}")
        except Exception as e:
            raise RuntimeError(f"{e}\n--- {self.log_path} ---\n{self.log_tail()}") from None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def send_signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def stop(self, sig=signal.SIGTERM):
        """Stop by pid; returns the exit status. Idempotent."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def wait_for_file(path: Path, timeout: float = 10.0, alive=None):
    wait_until(lambda: Path(path).exists() and Path(path).stat().st_size > 0, timeout,
               alive=alive, what=f"{path}")


def read_pid(path: Path) -> int:
    return int(Path(path).read_text().strip())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_pid_gone(pid: int, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"pid {pid} still alive after {timeout}s")
        time.sleep(0.05)
