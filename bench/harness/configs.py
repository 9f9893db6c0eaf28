"""The configuration table: every server setup the harness can measure.

A configuration is a name, a short shape ("ngx 2w + 2x16"), the workloads it serves, an
availability check, and a `plan` function that writes its config files into a fresh directory
and returns the processes to start, in order. Adding a peer (issue 5: nginx embedded, Apache
daemon, mod_wsgi from PyPI, gunicorn, granian...) means adding one entry to CONFIGS.

Settings shared by every configuration, and why (bench/README.md lists them too):
- same processes x threads for every Python server (default 2 x 16), nginx with 2 workers;
- keep-alive with no request limit (nginx keepalive_requests 1000000, Apache
  MaxKeepAliveRequests 0), access logs off;
- nginx client_body_buffer_size 2m so the 1 MiB POST stays in memory instead of a temp file,
  uwsgi_buffers 8 16k so a 64 KiB response stays in memory;
- every server drops to www-data; every backend listens on a unix socket.
"""

import datetime
import glob
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field

RUN_USER = "www-data"
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


# A variant that names another build of a module (`nginx-daemon+RWSGI_BENCH_NGINX_MODULE=/path`):
# a before/after of two commits in one interleaved run. The module finds the rwsgi-worker of
# its own build beside it.
MODULE_ENV = {"nginx": "RWSGI_BENCH_NGINX_MODULE", "apache": "RWSGI_BENCH_APACHE_MODULE"}


@dataclass
class Settings:
    bench_dir: str
    processes: int
    threads: int
    nginx_workers: int
    rwsgi_worker: str  # path to the built rwsgi-worker binary
    # Python servers drop to www-data. bench/profile turns this off under valgrind, whose
    # per-process control FIFOs (created as root at fork) a worker cannot open after setuid.
    drop_privileges: bool = True
    # Extra environment of every service (a variant such as nginx-embedded+MALLOC_ARENA_MAX=16);
    # nginx passes each of them to its workers with an `env` directive.
    extra_env: dict = field(default_factory=dict)

    @property
    def repo_dir(self):
        return os.path.dirname(self.bench_dir)

    @property
    def nginx_module(self):
        return self.extra_env.get(MODULE_ENV["nginx"]) or os.path.join(
            self.repo_dir, "target/release/libngx_http_wsgi_module.so")

    @property
    def apache_module(self):
        return self.extra_env.get(MODULE_ENV["apache"]) or os.path.join(
            self.repo_dir, "target/release/libmod_rwsgi.so")

    @property
    def venv(self):
        """build/bench-venv: mod_wsgi 6 (PyPI), gunicorn, granian, Django, matplotlib."""
        return os.path.join(self.repo_dir, "build", "bench-venv")

    def venv_bin(self, name):
        return os.path.join(self.venv, "bin", name)

    @property
    def mod_wsgi6(self):
        """The PyPI mod_wsgi's Apache module inside the bench venv, or None when not installed."""
        found = sorted(glob.glob(os.path.join(
            self.venv, "lib", "python3*", "site-packages", "mod_wsgi", "server", "mod_wsgi-py*.so")))
        return found[-1] if found else None


@dataclass
class ServiceSpec:
    name: str
    argv: list
    ready: tuple  # ("unix", path) or ("tcp", port): connectable once the service is up
    logs: list = field(default_factory=list)  # files to scan for suspicious lines
    env: dict = field(default_factory=lambda: dict(CLEAN_ENV))


@dataclass
class Plan:
    services: list  # started in this order, stopped in reverse
    port: int  # the HTTP port wrk talks to
    files: dict  # name -> text, for the "exact configurations" section of the report


@dataclass(frozen=True)
class Config:
    name: str
    shape: str  # processes/threads at a glance, filled with Settings
    summary: str
    workloads: tuple
    plan: object  # (Settings, directory) -> Plan
    available: object  # (Settings) -> None or the reason it cannot run
    default: bool = True  # part of a run without --configs
    # wrk errors are a failure. False for Apache: its event MPM closes keep-alive connections
    # when a child's threads are all busy, by design (bench/README.md).
    zero_errors: bool = True


# Our host (pyhost) keeps its counters (GIL waits, admission) in a file per process in this
# directory when the variable is set; peers ignore it. Read by procs.pyhost_stats.
STATS_ENV = "RWSGI_STATS_DIR"


def stats_dir(directory):
    return os.path.join(directory, "stats")


def make_plan(cfg, s, d):
    """cfg.plan, plus what every service gets: the stats directory and the variant's env."""
    plan = cfg.plan(s, d)
    sd = stats_dir(d)
    os.makedirs(sd, exist_ok=True)
    os.chmod(sd, 0o1777)  # workers write here after dropping to www-data
    for spec in plan.services:
        spec.env = {**spec.env, **s.extra_env, STATS_ENV: sd}
    if s.extra_env:
        plan.files["variant env"] = " ".join(f"{k}={v}" for k, v in s.extra_env.items())
    return plan


def variant(name):
    """`base+VAR=value+VAR2=value` -> (base config, {VAR: value, ...}); a plain name has no env."""
    base, *pairs = name.split("+")
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{name!r}: expected CONFIG+VAR=value")
        env[key] = value
    return base, env


def free_port():
    """A port the kernel considers free right now (bind to 0, read, close)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write(directory, name, text, files):
    with open(os.path.join(directory, name), "w") as f:
        f.write(text)
    files[name] = text


# ---------------------------------------------------------------------------------------------
# nginx


def _nginx_conf(s, d, port, location, upstream="", main=""):
    # nginx clears its workers' environment: name what they must see (our host's counters,
    # a variant's settings).
    env = "".join(f"env {k};\n" for k in (STATS_ENV, *s.extra_env))
    return f"""# generated by bench/run
{main}{env}user {RUN_USER};
worker_processes {s.nginx_workers};
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    default_type text/plain;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_max_body_size 2m;
    client_body_buffer_size 2m;      # keep the 1 MiB POST in memory (the 16k default spools it to a file)
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
{upstream}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        location / {{
{location}
        }}
    }}
}}
"""


# The variables of Debian's /etc/nginx/uwsgi_params, written out so the config is self-contained.
_UWSGI_PARAMS = """\
            uwsgi_param QUERY_STRING    $query_string;
            uwsgi_param REQUEST_METHOD  $request_method;
            uwsgi_param CONTENT_TYPE    $content_type;
            uwsgi_param CONTENT_LENGTH  $content_length;
            uwsgi_param REQUEST_URI     $request_uri;
            uwsgi_param PATH_INFO       $document_uri;
            uwsgi_param DOCUMENT_ROOT   $document_root;
            uwsgi_param SERVER_PROTOCOL $server_protocol;
            uwsgi_param REQUEST_SCHEME  $scheme;
            uwsgi_param HTTPS           $https if_not_empty;
            uwsgi_param REMOTE_ADDR     $remote_addr;
            uwsgi_param REMOTE_PORT     $remote_port;
            uwsgi_param SERVER_PORT     $server_port;
            uwsgi_param SERVER_NAME     $server_name;
            uwsgi_param HTTP_HOST       $host;"""


def _nginx_uwsgi_pass_location(sock):
    return f"""            uwsgi_pass unix:{sock};
            uwsgi_buffer_size 16k;
            uwsgi_buffers 8 16k;          # a 64 KiB response fits in memory buffers
            uwsgi_max_temp_file_size 0;   # the 1 GiB download is relayed, not spooled to disk
{_UWSGI_PARAMS}"""


def _nginx_service(d, port, conf_text, files):
    _write(d, "nginx.conf", conf_text, files)
    return ServiceSpec(
        "nginx",
        ["nginx", "-p", d, "-c", f"{d}/nginx.conf", "-g", "daemon off;"],
        ("tcp", port),
        logs=[f"{d}/nginx-error.log"],
    )


def _need_binaries(*names):
    def check(_settings):
        missing = [n for n in names if not shutil.which(n, path=CLEAN_ENV["PATH"])]
        return f"not installed: {', '.join(missing)}" if missing else None

    return check


# ---------------------------------------------------------------------------------------------
# configurations


def plan_nginx_static(s, d):
    files, port = {}, free_port()
    location = '            return 200 "Hello World!\\n";'
    nginx = _nginx_service(d, port, _nginx_conf(s, d, port, location), files)
    return Plan([nginx], port, files)


def plan_nginx_uwsgi(s, d):
    files, port = {}, free_port()
    sock = f"{d}/uwsgi.sock"
    drop = f"uid = {RUN_USER}\ngid = {RUN_USER}\n" if s.drop_privileges else ""
    # What a normal user sets: the app, processes x threads, master, a socket nginx can reach,
    # an unprivileged user, stop on SIGTERM. No buffer, backlog or thunder-lock tuning.
    ini = f"""; generated by bench/run
[uwsgi]
plugins = python3
master = true
processes = {s.processes}
threads = {s.threads}
socket = {sock}
chown-socket = {RUN_USER}:{RUN_USER}
chmod-socket = 660
{drop}wsgi-file = {s.bench_dir}/apps/router.py
single-interpreter = true
need-app = true
die-on-term = true
disable-logging = true
pidfile = {d}/uwsgi.pid
"""
    _write(d, "uwsgi.ini", ini, files)
    uwsgi = ServiceSpec(
        "uwsgi", ["uwsgi", "--ini", f"{d}/uwsgi.ini"], ("unix", sock), logs=[f"{d}/uwsgi.log"]
    )
    conf = _nginx_conf(s, d, port, _nginx_uwsgi_pass_location(sock))
    return Plan([uwsgi, _nginx_service(d, port, conf, files)], port, files)


def plan_nginx_rwsgi_worker(s, d):
    files, port = {}, free_port()
    sock = f"{d}/rwsgi.sock"
    # The same choices as the uWSGI entry: workers drop to www-data, the socket belongs to the
    # user nginx's workers run as, mode 0660. Everything else is rwsgi-worker's default.
    argv = [
        s.rwsgi_worker,
        "--socket", f"unix:{sock}",
        "--script", f"{s.bench_dir}/apps/router.py",
        "--processes", str(s.processes),
        "--threads", str(s.threads),
        *(["--user", RUN_USER] if s.drop_privileges else []),
        "--socket-owner", RUN_USER,
        "--socket-mode", "0660",
    ]
    files["rwsgi-worker argv"] = " ".join(argv)
    worker = ServiceSpec("rwsgi-worker", argv, ("unix", sock), logs=[f"{d}/rwsgi-worker.log"])
    conf = _nginx_conf(s, d, port, _nginx_uwsgi_pass_location(sock))
    return Plan([worker, _nginx_service(d, port, conf, files)], port, files)


def _rwsgi_worker_available(s):
    if not os.access(s.rwsgi_worker, os.X_OK):
        return f"{s.rwsgi_worker} not built (cargo build --release -p supervisor)"
    return None


_APACHE_COMMON = """# generated by bench/run
ServerRoot {d}
DefaultRuntimeDir {d}
PidFile {d}/httpd.pid
ErrorLog {d}/apache-error.log
LogLevel warn
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
User {user}
Group {user}
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
{modules}
# event MPM pinned to exactly {procs} children x {threads} threads (no spawning/reaping in a run)
StartServers {procs}
ServerLimit {procs}
ThreadsPerChild {threads}
ThreadLimit {threads}
MaxRequestWorkers {workers}
MinSpareThreads {threads}
MaxSpareThreads {workers}
MaxConnectionsPerChild 0
KeepAlive On
KeepAliveTimeout 75
MaxKeepAliveRequests 0
Timeout 60

# Debian's stock apache2.conf block for /: without an explicit AllowOverride None, httpd 2.4
# looks for .htaccess in every directory above the script on every request (5 failed openat
# here), which no Debian install does.
<Directory />
    Options FollowSymLinks
    AllowOverride None
    Require all denied
</Directory>

<Directory {bench}/apps>
    Require all granted
</Directory>
"""


def _apache_service(s, d, port, modules, body, files):
    text = _APACHE_COMMON.format(
        d=d, port=port, user=RUN_USER, modules=modules, procs=s.processes, threads=s.threads,
        workers=s.processes * s.threads, bench=s.bench_dir,
    ) + body
    _write(d, "httpd.conf", text, files)
    return ServiceSpec(
        "apache2",
        ["apache2", "-f", f"{d}/httpd.conf", "-DFOREGROUND"],
        ("tcp", port),
        logs=[f"{d}/apache-error.log"],
    )


DEBIAN_MOD_WSGI = "LoadModule wsgi_module /usr/lib/apache2/modules/mod_wsgi.so"


def plan_apache_mod_wsgi_embedded(s, d):
    return _apache_embedded(s, d, DEBIAN_MOD_WSGI)


def plan_apache_mod_wsgi_daemon(s, d):
    return _apache_daemon(s, d, DEBIAN_MOD_WSGI)


def _apache_embedded(s, d, modules):
    files, port = {}, free_port()
    # Main interpreter, and process-group/application-group on the alias so the app preloads.
    body = f"""
WSGIApplicationGroup %{{GLOBAL}}
WSGIScriptAlias / {s.bench_dir}/apps/router.py process-group=%{{GLOBAL}} application-group=%{{GLOBAL}}
"""
    return Plan([_apache_service(s, d, port, modules, body, files)], port, files)


def _apache_daemon(s, d, modules):
    files, port = {}, free_port()
    # No Python in the Apache children (WSGIRestrictEmbedded); the daemon group has the same
    # processes x threads as every other Python server, in front of 2 x 16 Apache threads.
    body = f"""
WSGISocketPrefix {d}/wsgi
WSGIRestrictEmbedded On
WSGIDaemonProcess bench processes={s.processes} threads={s.threads} display-name=%{{GROUP}}
WSGIProcessGroup bench
WSGIApplicationGroup %{{GLOBAL}}
WSGIScriptAlias / {s.bench_dir}/apps/router.py process-group=bench application-group=%{{GLOBAL}}
"""
    return Plan([_apache_service(s, d, port, modules, body, files)], port, files)


# ---------------------------------------------------------------------------------------------
# ours: the nginx module and the Apache module (target/release)


def _nginx_module_conf(s, d, port, daemon):
    # Same shape as the peers: 2 nginx workers x 16 Python threads embedded, or a daemon group
    # of 2 processes x 16 threads (its workers run as nginx's worker user, www-data).
    main = f"load_module {s.nginx_module};\n"
    location = f"            wsgi_script {s.bench_dir}/apps/router.py;"
    if daemon:
        http = (f"    wsgi_daemon_process bench processes={s.processes} threads={s.threads};\n")
        location += "\n            wsgi_process_group bench;"
    else:
        http = f"    wsgi_threads {s.threads};\n"
    return _nginx_conf(s, d, port, location, upstream=http, main=main)


def plan_nginx_embedded(s, d):
    files, port = {}, free_port()
    nginx = _nginx_service(d, port, _nginx_module_conf(s, d, port, daemon=False), files)
    return Plan([nginx], port, files)


def plan_nginx_daemon(s, d):
    files, port = {}, free_port()
    nginx = _nginx_service(d, port, _nginx_module_conf(s, d, port, daemon=True), files)
    return Plan([nginx], port, files)


def _nginx_module_available(s):
    if not os.access(s.nginx_module, os.R_OK):
        return f"{s.nginx_module} not built (cargo build --release)"
    return _need_binaries("nginx")(s)


def _apache_module_available(s):
    if not os.access(s.apache_module, os.R_OK):
        return f"{s.apache_module} not built (cargo build --release)"
    return _need_binaries("apache2")(s)


# The mod_wsgi configurations with only the LoadModule line swapped (the migration path).
def plan_apache_rwsgi_embedded(s, d):
    return _apache_embedded(s, d, f"LoadModule rwsgi_module {s.apache_module}")


def plan_apache_rwsgi_daemon(s, d):
    return _apache_daemon(s, d, f"LoadModule rwsgi_module {s.apache_module}")


# ---------------------------------------------------------------------------------------------
# peers from PyPI, in build/bench-venv (bench/requirements.txt)


def plan_apache_mod_wsgi6_embedded(s, d):
    return _apache_embedded(s, d, f"LoadModule wsgi_module {s.mod_wsgi6}")


def plan_apache_mod_wsgi6_daemon(s, d):
    return _apache_daemon(s, d, f"LoadModule wsgi_module {s.mod_wsgi6}")


def _mod_wsgi6_available(s):
    if not s.mod_wsgi6:
        return f"mod_wsgi (PyPI) not installed in {s.venv} (bench/run installs bench/requirements.txt)"
    return _need_binaries("apache2")(s)


def _venv_available(*names):
    def check(s):
        missing = [n for n in names if not os.access(s.venv_bin(n), os.X_OK)]
        if missing:
            return f"{', '.join(missing)} not installed in {s.venv} (bench/run installs bench/requirements.txt)"
        return _need_binaries("nginx")(s)

    return check


def plan_nginx_gunicorn(s, d):
    files, port = {}, free_port()
    sock = f"{d}/gunicorn.sock"
    # gthread: processes x threads like the others; the arbiter binds the socket as root and
    # hands it to www-data. Everything else default (keepalive 2 s, backlog 2048).
    argv = [
        s.venv_bin("gunicorn"),
        "--worker-class", "gthread",
        "--workers", str(s.processes),
        "--threads", str(s.threads),
        "--bind", f"unix:{sock}",
        *(["--user", RUN_USER, "--group", RUN_USER] if s.drop_privileges else []),
        "--chdir", f"{s.bench_dir}/apps",
        "--no-control-socket",
        "--log-level", "warning",
        "router:application",
    ]
    files["gunicorn argv"] = " ".join(argv)
    gunicorn = ServiceSpec("gunicorn", argv, ("unix", sock), logs=[f"{d}/gunicorn.log"])
    return Plan([gunicorn, _nginx_proxy(s, d, port, sock, files)], port, files)


def _nginx_proxy(s, d, port, sock, files):
    """nginx in front of an HTTP backend on unix socket `sock`: `proxy_pass` with 32 keep-alive
    upstream connections, buffers sized so a 64 KiB response stays in memory."""
    upstream = f"""    upstream backend_app {{
        server unix:{sock};
        keepalive 32;
    }}
"""
    location = """            proxy_pass http://backend_app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;          # a 64 KiB response fits in memory buffers
            proxy_max_temp_file_size 0;   # the 1 GiB download is relayed, not spooled to disk"""
    conf = _nginx_conf(s, d, port, location, upstream=upstream)
    return _nginx_service(d, port, conf, files)


def backend_socket(d, name):
    """The path of a unix socket that a backend binds itself as the user it runs as (www-data):
    in a directory of the run's that it may write."""
    sock_dir = os.path.join(d, "sock")
    os.makedirs(sock_dir, exist_ok=True)
    os.chmod(sock_dir, 0o777)
    return os.path.join(sock_dir, name)


def _granian_wsgi_argv(s, bind):
    """granian's WSGI server, 2 workers x 16 blocking threads (the threads that run the WSGI
    app), started as www-data with setpriv, since it has no option to drop privileges itself."""
    return [
        *(["setpriv", f"--reuid={RUN_USER}", f"--regid={RUN_USER}", "--init-groups"]
          if s.drop_privileges else []),
        s.venv_bin("granian"),
        "--interface", "wsgi",
        "--workers", str(s.processes),
        "--blocking-threads", str(s.threads),
        *bind,
        "--no-ws",
        "--log-level", "warning",
        "--working-dir", f"{s.bench_dir}/apps",
        "router:application",
    ]


def plan_nginx_granian(s, d):
    # granian as it is deployed behind nginx (TLS, static files, one front for several apps):
    # proxy_pass over a unix socket with keep-alive, as for gunicorn. The two-hop peer of our
    # daemon modes.
    files, port = {}, free_port()
    sock = backend_socket(d, "granian.sock")
    argv = _granian_wsgi_argv(s, ["--uds", sock, "--uds-permissions", "666"])
    files["granian argv"] = " ".join(argv)
    granian = ServiceSpec("granian", argv, ("unix", sock))
    return Plan([granian, _nginx_proxy(s, d, port, sock, files)], port, files)


def plan_granian(s, d):
    # granian is its own HTTP server (Rust, hyper): no nginx in front.
    files, port = {}, free_port()
    argv = _granian_wsgi_argv(s, ["--host", "127.0.0.1", "--port", str(port)])
    files["granian argv"] = " ".join(argv)
    return Plan([ServiceSpec("granian", argv, ("tcp", port))], port, files)



# Part of a run without --configs: the whole issue-5 suite.
SUITE = True

ALL_WORKLOADS = ("hello", "64k", "echo1m", "sleep10ms", "django", "flask-api", "flask-page",
                 "stream1g")

CONFIGS = [
    Config(
        "nginx-static", "ngx {w}w", "nginx `return 200` (no Python): the ceiling",
        ("hello",), plan_nginx_static, _need_binaries("nginx"),
    ),
    Config(
        "apache-embedded", "{p}x{t}",
        "Apache event MPM + Debian mod_wsgi, embedded (Python in the Apache children)",
        ALL_WORKLOADS, plan_apache_mod_wsgi_embedded, _need_binaries("apache2"), zero_errors=False,
    ),
    Config(
        "apache-daemon", "fe {p}x{t} + d {p}x{t}",
        "Apache event MPM + Debian mod_wsgi, daemon mode (WSGIDaemonProcess)",
        ALL_WORKLOADS, plan_apache_mod_wsgi_daemon, _need_binaries("apache2"), default=SUITE,
        zero_errors=False,
    ),
    Config(
        "apache-modwsgi6-embedded", "{p}x{t}",
        "Apache event MPM + mod_wsgi 6 from PyPI (built against apache2-dev), embedded",
        ALL_WORKLOADS, plan_apache_mod_wsgi6_embedded, _mod_wsgi6_available, default=SUITE,
        zero_errors=False,
    ),
    Config(
        "apache-modwsgi6-daemon", "fe {p}x{t} + d {p}x{t}",
        "Apache event MPM + mod_wsgi 6 from PyPI, daemon mode",
        ALL_WORKLOADS, plan_apache_mod_wsgi6_daemon, _mod_wsgi6_available, default=SUITE,
        zero_errors=False,
    ),
    Config(
        "nginx-uwsgi", "ngx {w}w + {p}x{t}",
        "nginx uwsgi_pass -> Debian uWSGI (python3 plugin), unix socket",
        ALL_WORKLOADS, plan_nginx_uwsgi, _need_binaries("nginx", "uwsgi"),
    ),
    Config(
        "nginx-rwsgi-worker", "ngx {w}w + {p}x{t}",
        "nginx uwsgi_pass -> rwsgi-worker (target/release), unix socket",
        ALL_WORKLOADS, plan_nginx_rwsgi_worker, _rwsgi_worker_available,
    ),
    Config(
        "nginx-gunicorn", "ngx {w}w + {p}x{t}",
        "nginx proxy_pass (keep-alive upstream) -> gunicorn gthread (PyPI), unix socket",
        ALL_WORKLOADS, plan_nginx_gunicorn, _venv_available("gunicorn"), default=SUITE,
    ),
    Config(
        "granian", "{p}x{t}",
        "granian --interface wsgi (PyPI), its own HTTP server, no nginx",
        ALL_WORKLOADS, plan_granian, _venv_available("granian"), default=SUITE,
    ),
    Config(
        "nginx-granian", "ngx {w}w + {p}x{t}",
        "nginx proxy_pass (keep-alive upstream) -> granian --interface wsgi (PyPI), unix socket",
        ALL_WORKLOADS, plan_nginx_granian, _venv_available("granian"), default=False,
    ),
    Config(
        "nginx-embedded", "ngx {w}w x {t}",
        "ours: nginx + ngx_http_wsgi_module, embedded (Python threads in the nginx workers)",
        ALL_WORKLOADS, plan_nginx_embedded, _nginx_module_available, default=SUITE,
    ),
    Config(
        "nginx-daemon", "ngx {w}w + d {p}x{t}",
        "ours: nginx + ngx_http_wsgi_module, daemon group (wsgi_daemon_process)",
        ALL_WORKLOADS, plan_nginx_daemon, _nginx_module_available, default=SUITE,
    ),
    Config(
        "apache-rwsgi-embedded", "{p}x{t}",
        "ours: Apache event MPM + mod_rwsgi, embedded (mod_wsgi config, LoadModule swapped)",
        ALL_WORKLOADS, plan_apache_rwsgi_embedded, _apache_module_available, default=SUITE,
        zero_errors=False,
    ),
    Config(
        "apache-rwsgi-daemon", "fe {p}x{t} + d {p}x{t}",
        "ours: Apache event MPM + mod_rwsgi, daemon mode (mod_wsgi config, LoadModule swapped)",
        ALL_WORKLOADS, plan_apache_rwsgi_daemon, _apache_module_available, default=SUITE,
        zero_errors=False,
    ),
]
BY_NAME = {c.name: c for c in CONFIGS}


def shape(config, s):
    return config.shape.format(w=s.nginx_workers, p=s.processes, t=s.threads)


def versions(s):
    """Version strings of everything measured, for the report's environment section."""

    def run(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return (out.stdout + out.stderr).strip().splitlines()[0] if (out.stdout + out.stderr).strip() else "?"

    def deb(pkg):
        return run(["dpkg-query", "-W", "-f", "${Version}", pkg])

    v = {
        "kernel": os.uname().release,
        "nginx": deb("nginx"),
        "apache2": deb("apache2"),
        "mod_wsgi": deb("libapache2-mod-wsgi-py3"),
        "uwsgi": deb("uwsgi") + " (plugin python3 " + deb("uwsgi-plugin-python3") + ")",
        "python": run(["/usr/bin/python3", "--version"]).replace("Python ", ""),
        "wrk": deb("wrk"),
    }
    try:
        pins = subprocess.run([s.venv_bin("python3"), "-m", "pip", "freeze"], capture_output=True,
                              text=True, timeout=60).stdout.lower().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        pins = []
    for pkg in ("mod-wsgi", "gunicorn", "granian", "django"):
        hit = [line.split("==", 1)[1] for line in pins if line.startswith(pkg + "==")]
        v[f"{pkg} (PyPI)"] = hit[0] if hit else "not installed"
    for label, path in (("ngx_http_wsgi_module", s.nginx_module), ("mod_rwsgi", s.apache_module)):
        if os.path.exists(path):
            built = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
            v[label] = f"{path} (built {built:%H:%M} UTC)"
    if os.access(s.rwsgi_worker, os.X_OK):
        repo = os.path.dirname(s.bench_dir)
        commit = run(["git", "-C", repo, "log", "-1", "--format=%h %cd", "--date=iso"])
        dirty = run(["git", "-C", repo, "status", "--porcelain", "--",
                     "crates/supervisor", "crates/pyhost", "crates/uwsgi"])
        built = datetime.datetime.fromtimestamp(os.path.getmtime(s.rwsgi_worker), datetime.timezone.utc)
        v["rwsgi-worker"] = f"{s.rwsgi_worker} (built {built:%H:%M} UTC) at commit {commit}" + (
            " (its crates had uncommitted changes)" if dirty not in ("", "?") else ""
        )
    return v
