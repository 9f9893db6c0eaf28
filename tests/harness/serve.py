"""`rwsgi serve` started as a user starts it: the real binary, in a working directory, with the
nginx and module from harness/paths.py (so the same tests run against nginx 1.28 too)."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from .paths import NGINX_BIN, NGINX_MODULE, SERVE_BIN
from .ports import can_connect, free_port, wait_until
from .procs import ServerProcess, pid_alive


def descendants(pid: int) -> set:
    """Every process below `pid` (children, grandchildren, ...), from /proc."""
    children = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


class Serve:
    """`rwsgi serve ARGS --port P --nginx ... --nginx-module ...` in `cwd`.

    After start(): `url`, `conf_path` (the generated nginx.conf, from the banner), `run_dir`
    (its private directory) and `master_pid` (nginx's master).
    """

    def __init__(self, prefix: Path, args, cwd=None, env=None, port=None):
        self.prefix = Path(prefix)
        self.port = port or free_port()
        self.argv = [SERVE_BIN, "serve", *map(str, args), "--port", str(self.port),
                     "--nginx", NGINX_BIN, "--nginx-module", NGINX_MODULE]
        full_env = dict(os.environ)
        full_env.pop("VIRTUAL_ENV", None)
        full_env.update(env or {})
        self.process = ServerProcess(self.argv, self.prefix / "serve.log", env=full_env,
                                     cwd=str(cwd or self.prefix), stop_timeout=30)
        self.conf_path = self.run_dir = self.master_pid = None

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_text(self) -> str:
        return self.process.log_text()

    def start(self, timeout: float = 60.0):
        self.process.start()
        wait_until(lambda: "Ctrl-C to stop" in self.log_text(), timeout, alive=self.process.alive,
                   what=f"rwsgi serve to print its URL\n{self.log_text()}")
        assert can_connect(("127.0.0.1", self.port))
        assert f"on http://127.0.0.1:{self.port}/" in self.log_text()
        self.conf_path = Path(re.search(r"configuration (\S+)", self.log_text()).group(1))
        self.run_dir = self.conf_path.parent
        self.master_pid = int((self.run_dir / "nginx.pid").read_text())
        return self

    def check_config(self):
        """The generated configuration passes `nginx -t` on its own."""
        r = subprocess.run([str(NGINX_BIN), "-t", "-p", str(self.run_dir), "-e", "stderr",
                            "-c", str(self.conf_path), "-g", "daemon off;"],
                           capture_output=True, text=True)
        assert r.returncode == 0, f"{r.stderr}\n{self.conf_path.read_text()}"
        return r.stderr

    def interrupt(self, timeout: float = 40.0) -> int:
        """Ctrl-C as a terminal sends it (to the foreground process group); returns the exit
        status."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.proc.wait(timeout)

    def stop(self):
        return self.process.stop()


def wait_gone(pids, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            alive = [p for p in pids if pid_alive(p)]
            raise AssertionError(f"still running after {timeout}s: {alive}")
        time.sleep(0.05)
