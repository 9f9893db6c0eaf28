"""The ASGI configurations (bench/README.md, "ASGI"): the same FastAPI app
(bench/apps/asgi_app.py) in our nginx module (embedded and daemon), behind nginx in uvicorn,
and in granian. Not part of a run without --configs; `bench/run --asgi` picks all of them with
the ASGI workloads.

Shared settings: 2 Python processes (nginx 2 workers embedded), each one event loop (uvloop,
from build/bench-venv for every server), keep-alive, access logs off, unix sockets between
nginx and a backend, everything as www-data.
"""

from . import configs
from .configs import (
    RUN_USER, Config, Plan, ServiceSpec, _need_binaries, _nginx_conf, _nginx_module_available,
    _nginx_service, _venv_available, free_port,
)

WORKLOADS = ("asgi-hello", "asgi-64k", "asgi-sleep10ms", "asgi-ws")


def _app(s):
    return f"{s.bench_dir}/apps/asgi_app.py"


def _module_conf(s, d, port, daemon):
    main = f"load_module {s.nginx_module};\n"
    location = f"""            wsgi_script {_app(s)};
            wsgi_callable app;"""
    if daemon:
        http = (f"    wsgi_daemon_process bench processes={s.processes} interface=asgi "
                f"python-home={s.venv};\n")
        location += "\n            wsgi_process_group bench;"
    else:
        http = f"    wsgi_python_home {s.venv};\n"
        location += "\n            wsgi_interface asgi;"
    return _nginx_conf(s, d, port, location, upstream=http, main=main)


def plan_nginx_embedded_asgi(s, d):
    files, port = {}, free_port()
    nginx = _nginx_service(d, port, _module_conf(s, d, port, daemon=False), files)
    return Plan([nginx], port, files)


def plan_nginx_daemon_asgi(s, d):
    files, port = {}, free_port()
    nginx = _nginx_service(d, port, _module_conf(s, d, port, daemon=True), files)
    return Plan([nginx], port, files)


# nginx in front of uvicorn, as uvicorn's deployment docs write it: keep-alive upstream,
# WebSocket upgrade headers passed on.
_PROXY = """            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;"""


def plan_nginx_uvicorn(s, d):
    files, port = {}, free_port()
    sock = configs.backend_socket(d, "uvicorn.sock")
    argv = [
        *(["setpriv", f"--reuid={RUN_USER}", f"--regid={RUN_USER}", "--init-groups"]
          if s.drop_privileges else []),
        s.venv_bin("uvicorn"),
        "--uds", sock,
        "--workers", str(s.processes),
        "--loop", "uvloop",
        "--http", "httptools",
        "--ws", "websockets-sansio",
        "--no-access-log",
        "--log-level", "warning",
        "--app-dir", f"{s.bench_dir}/apps",
        "asgi_app:app",
    ]
    files["uvicorn argv"] = " ".join(argv)
    uvicorn = ServiceSpec("uvicorn", argv, ("unix", sock), logs=[f"{d}/uvicorn.log"])
    upstream = f"""    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}
    upstream backend {{
        server unix:{sock};
        keepalive 32;
    }}
"""
    conf = _nginx_conf(s, d, port, _PROXY, upstream=upstream)
    return Plan([uvicorn, _nginx_service(d, port, conf, files)], port, files)


def plan_granian_asgi(s, d):
    # granian's own HTTP server (no nginx), 2 workers, uvloop, WebSockets on.
    files, port = {}, free_port()
    argv = [
        *(["setpriv", f"--reuid={RUN_USER}", f"--regid={RUN_USER}", "--init-groups"]
          if s.drop_privileges else []),
        s.venv_bin("granian"),
        "--interface", "asgi",
        "--workers", str(s.processes),
        "--loop", "uvloop",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--log-level", "warning",
        "--working-dir", f"{s.bench_dir}/apps",
        "asgi_app:app",
    ]
    files["granian argv"] = " ".join(argv)
    return Plan([ServiceSpec("granian", argv, ("tcp", port))], port, files)


CONFIGS = [
    Config("nginx-embedded-asgi", "ngx {w}w, 1 loop each",
           "ours: nginx + ngx_http_wsgi_module, `wsgi_interface asgi` (a loop per nginx worker)",
           WORKLOADS, plan_nginx_embedded_asgi, _nginx_module_available, default=False),
    Config("nginx-daemon-asgi", "ngx {w}w + d {p} loops",
           "ours: nginx + ngx_http_wsgi_module, daemon group `interface=asgi`",
           WORKLOADS, plan_nginx_daemon_asgi, _nginx_module_available, default=False),
    Config("nginx-uvicorn", "ngx {w}w + {p} loops",
           "nginx proxy_pass (keep-alive) -> uvicorn (uvloop, httptools), unix socket",
           WORKLOADS, plan_nginx_uvicorn, _venv_available("uvicorn"), default=False),
    Config("granian-asgi", "{p} loops",
           "granian --interface asgi (uvloop), its own HTTP server, no nginx",
           WORKLOADS, plan_granian_asgi, _venv_available("granian"), default=False),
]


def register():
    """Adds the ASGI configurations to the table bench/run chooses from."""
    for c in CONFIGS:
        if c.name not in configs.BY_NAME:
            configs.CONFIGS.append(c)
            configs.BY_NAME[c.name] = c
