"""Start servers in sub-directories of one base directory and stop them all together.

A Launcher is what the pytest fixtures hand out (one per test module by default): every server it
starts gets its own prefix, and `stop_all()` stops them in reverse order, by pid.
"""

import atexit
import itertools
from pathlib import Path

from .apache import Apache
from .frontends import front_end
from .nginx import Nginx
from .serve import Serve
from .worker import IniWorker, Worker

ACTIVE = []  # launchers alive right now, so a failing test can show their logs


@atexit.register
def _stop_leftovers():
    """Last resort when a run is interrupted before fixture teardown: stop by pid what we started."""
    for lch in list(ACTIVE):
        try:
            lch.stop_all()
        except Exception:
            pass


class Launcher:
    def __init__(self, base: Path, state_dir: Path):
        self.base = Path(base)
        self.state_dir = Path(state_dir)
        self.started = []
        self._seq = itertools.count(1)
        ACTIVE.append(self)

    def _prefix(self, kind: str) -> Path:
        p = self.base / f"{next(self._seq):02d}-{kind}"
        p.mkdir(parents=True)
        p.chmod(0o755)
        return p

    def _start(self, server):
        self.started.append(server)
        server.start()
        return server

    def worker(self, script, **kw) -> Worker:
        env = {"RWSGI_TEST_STATE_DIR": str(self.state_dir)}
        env.update(kw.pop("env", {}) or {})
        return self._start(Worker(self._prefix("worker"), script, env=env, **kw))

    def ini_worker(self, ini, **kw) -> IniWorker:
        """A worker started with `--ini FILE` (rwsgi-worker, or uWSGI itself)."""
        env = {"RWSGI_TEST_STATE_DIR": str(self.state_dir)}
        env.update(kw.pop("env", {}) or {})
        return self._start(IniWorker(self._prefix("ini-worker"), ini, env=env, **kw))

    def nginx(self, server: str = "", http: str = "", **kw) -> Nginx:
        return self._start(Nginx(self._prefix("nginx"), server, http, **kw))

    def apache(self, config: str = "", **kw) -> Apache:
        return self._start(Apache(self._prefix("apache"), config, **kw))

    def serve(self, args, cwd=None, **kw) -> Serve:
        """`rwsgi serve ARGS` run from `cwd` (default: its own prefix)."""
        return self._start(Serve(self._prefix("serve"), args, cwd=cwd, **kw))

    def front_end(self, kind: str, worker, mount: str = "/app", **kw):
        """nginx or Apache in front of `worker` at `mount` (harness/frontends.py: `nginx`,
        `apache` for uwsgi; `nginx-scgi`, `nginx-fcgi`, `apache-scgi`, `apache-fcgi`)."""
        return self._start(front_end(kind, self._prefix(kind), worker, mount, **kw))

    def logs(self) -> str:
        parts = []
        for s in self.started:
            proc = s.process
            text = proc.log_text()
            if hasattr(s, "error_log_text"):
                text += s.error_log_text()
            tail = "\n".join(text.splitlines()[-30:])
            parts.append(f"--- {type(s).__name__} {proc.argv[0]} (pid {proc.proc.pid if proc.proc else '-'}) ---\n{tail}")
        return "\n".join(parts)

    def stop_all(self):
        errors = []
        for s in reversed(self.started):
            try:
                s.stop()
            except Exception as e:  # keep stopping the others
                errors.append(e)
        self.started.clear()
        if self in ACTIVE:
            ACTIVE.remove(self)
        if errors:
            raise errors[0]
