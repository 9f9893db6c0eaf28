"""rwsgi-worker (target/release/rwsgi-worker) on a unix or TCP socket.

RWSGI_TEST_WORKER=uwsgi swaps in Debian's uWSGI with equivalent options. That is only a way to
check the harness and the test apps against a known server; the suite targets rwsgi-worker.
"""

import os
import signal
import time
from pathlib import Path

from .paths import UWSGI_BIN, WORKER_BIN
from .ports import free_port
from .procs import ServerProcess


def backend() -> str:
    return os.environ.get("RWSGI_TEST_WORKER", "rwsgi")


# The protocols a worker socket speaks, as rwsgi-worker's --socket prefix, uWSGI's option and
# what nginx calls it (uwsgi_pass, scgi_pass, fastcgi_pass).
PROTOCOLS = {
    "uwsgi": ("", "--uwsgi-socket"),
    "scgi": ("scgi:", "--scgi-socket"),
    "fcgi": ("fcgi:", "--fastcgi-socket"),
}


class Worker:
    """A WSGI worker serving `script` (a file) or `module` (`pkg.mod:callable`).

    socket: "tcp" (a free 127.0.0.1 port) or "unix" (a socket file in `prefix`, mode 0666 so the
    front ends' unprivileged workers can connect); protocol: "uwsgi", "scgi" or "fcgi".
    `extra_args` are appended verbatim; `env` is added to a minimal environment (the apps read
    RWSGI_TEST_STATE_DIR from it); `cwd` is where it starts (default: its prefix).
    """

    def __init__(self, prefix: Path, script: Path = None, *, socket: str = "tcp", callable=None,
                 mount=None, processes: int = 1, threads: int = 4, python_home=None,
                 python_path=(), maximum_requests=None, extra_args=(), env=None,
                 protocol: str = "uwsgi", module: str = None, cwd=None):
        self.prefix = Path(prefix)
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.script = Path(script) if script else None
        self.module = module
        self.protocol = protocol
        if socket == "unix":
            self.socket_path = str(self.prefix / "worker.sock")
            self.address = self.socket_path
            self.socket_arg = f"unix:{self.socket_path}"
            self.uwsgi_pass = f"unix:{self.socket_path}"
        elif socket == "tcp":
            self.port = free_port()
            self.address = ("127.0.0.1", self.port)
            self.socket_arg = f"127.0.0.1:{self.port}"
            self.uwsgi_pass = self.socket_arg
        else:
            raise ValueError(f"socket must be 'tcp' or 'unix', not {socket!r}")
        self.log_path = self.prefix / "worker.log"
        self.backend = backend()
        opts = dict(callable=callable, mount=mount, processes=processes, threads=threads,
                    python_home=python_home, python_path=list(python_path),
                    maximum_requests=maximum_requests, unix=(socket == "unix"))
        argv = self._uwsgi_argv(**opts) if self.backend == "uwsgi" else self._rwsgi_argv(**opts)
        argv += [str(a) for a in extra_args]
        full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        full_env.update(env or {})
        self.process = ServerProcess(argv, self.log_path, env=full_env, cwd=cwd or self.prefix)

    def _rwsgi_argv(self, callable, mount, processes, threads, python_home, python_path,
                    maximum_requests, unix):
        app = ["--module", self.module] if self.module else ["--script", self.script]
        argv = [WORKER_BIN, "--socket", PROTOCOLS[self.protocol][0] + self.socket_arg, *app,
                "--processes", processes, "--threads", threads]
        if callable:
            argv += ["--callable", callable]
        if mount:
            argv += ["--mount", mount]
        if python_home:
            argv += ["--python-home", python_home]
        if python_path:
            argv += ["--python-path", ":".join(str(p) for p in python_path)]
        if maximum_requests:
            argv += ["--maximum-requests", maximum_requests]
        if unix:
            argv += ["--socket-mode", "0666"]
        return [str(a) for a in argv]

    def _uwsgi_argv(self, callable, mount, processes, threads, python_home, python_path,
                    maximum_requests, unix):
        argv = [UWSGI_BIN, "--plugin", "python3", PROTOCOLS[self.protocol][1],
                self.address if unix else self.socket_arg,
                "--master", "--processes", processes, "--threads", threads, "--enable-threads",
                "--die-on-term", "--buffer-size", "65535", "--manage-script-name", "--lazy-apps"]
        # uWSGI strips SCRIPT_NAME from PATH_INFO only for a --mount'ed app; the tests mount at /app.
        app = self.module if self.module else self.script
        argv += ["--mount", f"{mount or '/app'}={app}"]
        if callable:
            argv += ["--callable", callable]
        if python_home:
            argv += ["--virtualenv", python_home]
        for p in python_path:
            argv += ["--pythonpath", p]
        if maximum_requests:
            argv += ["--max-requests", maximum_requests]
        if unix:
            argv += ["--chmod-socket=666"]
        return [str(a) for a in argv]

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self, timeout: float = 30.0):
        if self.backend == "rwsgi" and not WORKER_BIN.exists():
            raise RuntimeError(f"{WORKER_BIN} not built: run scripts/setup.sh")
        self.process.start()
        self.process.wait_connectable(self.address, timeout, what="the worker to accept")
        return self

    def stop(self):
        return self.process.stop()

    def alive(self) -> bool:
        return self.process.alive()

    def reload(self):
        self.process.send_signal(signal.SIGHUP)

    def log_text(self) -> str:
        return self.process.log_text()

    def child_pids(self):
        """pids whose parent is the worker's supervisor (its Python worker processes)."""
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.pid:
                out.append(int(entry.name))
        return sorted(out)

    def started_children(self, count: int, timeout: float = 15.0):
        """child_pids() once `count` processes are forked: the supervisor accepts on its socket
        before it forks them, so a snapshot taken right after start() can be empty."""
        deadline = time.monotonic() + timeout
        while len(pids := self.child_pids()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} worker processes not started in {timeout}s: {pids}")
            time.sleep(0.02)
        return pids

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class IniWorker(Worker):
    """A worker started from a uWSGI ini file, as a migrating user starts it: `rwsgi-worker --ini
    FILE` or (RWSGI_TEST_WORKER=uwsgi, or `backend="uwsgi"`) `uwsgi --ini FILE`. The file reads
    its socket from $RWSGI_TEST_SOCKET (tests/apps/*.ini); `env` adds more variables (the
    Django file's $RWSGI_TEST_VENV)."""

    def __init__(self, prefix: Path, ini: Path, *, socket: str = "unix", env=None,
                 backend: str = None, extra_args=()):
        self.prefix = Path(prefix)
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.script = None
        self.module = None
        self.protocol = "uwsgi"
        if socket == "unix":
            self.socket_path = str(self.prefix / "worker.sock")
            self.address = self.socket_path
            self.uwsgi_pass = f"unix:{self.socket_path}"
            where = self.socket_path
        else:
            self.port = free_port()
            self.address = ("127.0.0.1", self.port)
            self.uwsgi_pass = f"127.0.0.1:{self.port}"
            where = self.uwsgi_pass
        self.log_path = self.prefix / "worker.log"
        self.backend = backend or os.environ.get("RWSGI_TEST_WORKER", "rwsgi")
        # The ini files ask for chmod-socket = 660 (the front end's group, as deployments do);
        # the test front ends run as nobody/www-data, so the command line opens it up after
        # --ini (an option given after the file overrides it, in both servers).
        if self.backend == "uwsgi":
            argv = [UWSGI_BIN, "--ini", ini, "--chmod-socket=666"]
        else:
            argv = [WORKER_BIN, "--ini", ini, "--socket-mode", "0666"]
        argv += [str(a) for a in extra_args]
        full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                    "RWSGI_TEST_SOCKET": where}
        full_env.update(env or {})
        self.process = ServerProcess(argv, self.log_path, env=full_env, cwd=self.prefix)


def rss_kib(pid: int) -> int:
    """Resident set size of one process in KiB (from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
