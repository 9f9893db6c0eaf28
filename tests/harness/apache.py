"""Debian's real /usr/sbin/apache2 (event MPM, -DFOREGROUND) from a private temp prefix."""

import signal
import subprocess
import textwrap
from pathlib import Path

from .paths import APACHE_BIN, APACHE_MODULES
from .ports import free_port
from .procs import ServerProcess, read_pid, wait_for_file

# Modules every config here needs; Debian builds the MPM and these as DSOs.
BASE_MODULES = ("mpm_event", "authz_core", "proxy", "proxy_uwsgi")

CONF_TEMPLATE = """\
ServerRoot "{prefix}"
DefaultRuntimeDir "{prefix}/run"
PidFile "{prefix}/run/httpd.pid"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
{load_modules}
{user}
ErrorLog "{prefix}/error.log"
LogLevel {log_level}
Timeout 30
KeepAlive On
StartServers 1
ServerLimit 2
ThreadsPerChild {threads}
ThreadLimit {threads}
MaxRequestWorkers {max_workers}
MinSpareThreads 1
MaxSpareThreads {max_workers}
{config}
"""


def module_line(name: str, path=None) -> str:
    """A LoadModule line; `name` without `_module`, path defaulting to Debian's module dir."""
    path = path or APACHE_MODULES / f"mod_{name}.so"
    return f"LoadModule {name}_module {path}"


class Apache:
    """Apache httpd with a config snippet.

    modules: module names (from /usr/lib/apache2/modules) loaded in addition to BASE_MODULES;
    load_lines: extra raw `LoadModule` lines (e.g. our own mod_rwsgi.so); user: `(user, group)`
    or None to run children as root's default (Debian's binary then uses its compiled default,
    so pass one). error log: `self.error_log`.
    """

    def __init__(self, prefix: Path, config: str = "", *, modules=(), load_lines=(),
                 user=("www-data", "www-data"), log_level: str = "info", threads: int = 16,
                 port: int = None):
        self.prefix = Path(prefix)
        self.port = port or free_port()
        self.conf_path = self.prefix / "httpd.conf"
        self.error_log = self.prefix / "error.log"
        self.pid_path = self.prefix / "run" / "httpd.pid"
        (self.prefix / "run").mkdir(parents=True, exist_ok=True)
        self.prefix.chmod(0o755)
        lines = [module_line(m) for m in dict.fromkeys([*BASE_MODULES, *modules])]
        lines += list(load_lines)
        conf = CONF_TEMPLATE.format(
            prefix=self.prefix, port=self.port, load_modules="\n".join(lines),
            user=f"User {user[0]}\nGroup {user[1]}" if user else "",
            log_level=log_level, threads=threads, max_workers=threads * 2,
            config=textwrap.dedent(config))
        self.conf_path.write_text(conf)
        self.process = ServerProcess([APACHE_BIN, "-f", self.conf_path, "-DFOREGROUND"],
                                     self.prefix / "stderr.log", env=_apache_env())

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def check_config(self) -> str:
        r = subprocess.run([str(APACHE_BIN), "-t", "-f", str(self.conf_path)],
                           capture_output=True, text=True, env=_apache_env())
        if r.returncode != 0:
            raise RuntimeError(f"apache2 -t failed:\n{r.stderr}\n--- config ---\n{self.conf_path.read_text()}")
        return r.stderr

    def start(self, timeout: float = 20.0):
        self.check_config()
        self.process.start()
        self.process.wait_connectable(("127.0.0.1", self.port), timeout, what="apache2 to listen")
        wait_for_file(self.pid_path, timeout, alive=self.process.alive)
        if read_pid(self.pid_path) != self.process.pid:
            raise RuntimeError("httpd.pid does not name the process we started")
        return self

    def stop(self):
        return self.process.stop()

    def graceful(self):
        self.process.send_signal(signal.SIGUSR1)

    def error_log_text(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _apache_env():
    # A small, explicit environment: apache2 is not started through apache2ctl, so no
    # /etc/apache2/envvars; LANG=C keeps messages stable.
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
