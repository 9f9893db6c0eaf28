"""Debian's real /usr/sbin/nginx, run in the foreground from a private temp prefix."""

import subprocess
import textwrap
from pathlib import Path

from .paths import NGINX_BIN
from .ports import free_port
from .procs import ServerProcess, read_pid, wait_for_file

CONF_TEMPLATE = """\
{load_module}
{user}
daemon off;
master_process on;
worker_processes {worker_processes};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log {log_level};
{main}
events {{ worker_connections 512; {events} }}

http {{
    access_log off;
    # The compiled-in temp paths point at /var/lib/nginx; keep everything inside the prefix.
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include /etc/nginx/mime.types;
{http}
    server {{
        listen 127.0.0.1:{port}{listen_extra};
        {server_name}
{server}
    }}
}}
"""


class Nginx:
    """nginx with a given `http{}`/`server{}` snippet.

    prefix: a directory other users can enter (see paths.make_private_tmp); the config, pid,
    error.log (`self.error_log`) and temp dirs live there. `load_module` is a path to a module
    .so (emitted before everything else), `user` an optional `user` directive value (nginx
    defaults to nobody when started as root), `main` extra main-context directives (e.g. `env`),
    `server_name` the server's name (None: no server_name directive, nginx's empty name).
    """

    def __init__(self, prefix: Path, server: str = "", http: str = "", *, load_module=None,
                 user=None, main: str = "", worker_processes: int = 2, log_level: str = "info",
                 port: int = None, server_name="localhost", events: str = "",
                 listen_extra: str = ""):
        self.prefix = Path(prefix)
        self.port = port or free_port()
        self.conf_path = self.prefix / "nginx.conf"
        self.error_log = self.prefix / "error.log"
        self.pid_path = self.prefix / "nginx.pid"
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        self.prefix.chmod(0o755)
        conf = CONF_TEMPLATE.format(
            load_module=f"load_module {load_module};" if load_module else "",
            user=f"user {user};" if user else "",
            worker_processes=worker_processes, prefix=self.prefix, log_level=log_level,
            main=main, port=self.port, events=events, listen_extra=listen_extra,
            server_name=f"server_name {server_name};" if server_name is not None else "",
            http=textwrap.indent(textwrap.dedent(http), " " * 4),
            server=textwrap.indent(textwrap.dedent(server), " " * 8))
        self.conf_path.write_text(conf)
        self.process = ServerProcess(
            [NGINX_BIN, "-p", self.prefix, "-e", self.error_log, "-c", self.conf_path],
            self.prefix / "stderr.log")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def check_config(self) -> str:
        """`nginx -t`; raises with nginx's message on a bad config."""
        r = subprocess.run([str(NGINX_BIN), "-t", "-p", str(self.prefix), "-e", str(self.error_log),
                            "-c", str(self.conf_path)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{r.stderr}\n--- config ---\n{self.conf_path.read_text()}")
        return r.stderr

    def start(self, timeout: float = 20.0):
        self.check_config()
        self.process.start()
        self.process.wait_connectable(("127.0.0.1", self.port), timeout, what="nginx to listen")
        wait_for_file(self.pid_path, timeout, alive=self.process.alive)
        if read_pid(self.pid_path) != self.process.pid:
            raise RuntimeError("nginx.pid does not name the process we started")
        return self

    def stop(self):
        return self.process.stop()

    def reload(self):
        import signal
        self.process.send_signal(signal.SIGHUP)

    def error_log_text(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
