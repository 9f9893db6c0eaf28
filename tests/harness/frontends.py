"""Front ends in front of a worker: stock nginx (`uwsgi_pass`) and stock Apache
(`mod_proxy_uwsgi`), each mounting the worker at a URL prefix.
"""

from pathlib import Path

from .apache import Apache
from .nginx import Nginx

FRONT_ENDS = ("nginx", "apache")


def nginx_uwsgi_pass(prefix: Path, worker, mount: str = "/app", extra_location: str = "",
                     **kw) -> Nginx:
    """nginx passing `mount` (and everything under it) to the worker with Debian's uwsgi_params
    and SCRIPT_NAME set to the mount, the way such deployments are usually written."""
    server = f"""
        client_max_body_size 64m;
        location {mount} {{
            include /etc/nginx/uwsgi_params;
            uwsgi_param SCRIPT_NAME {mount};
            uwsgi_pass {worker.uwsgi_pass};
            {extra_location}
        }}
    """
    return Nginx(prefix, server=server, **kw)


def apache_proxy_uwsgi(prefix: Path, worker, mount: str = "/app", extra: str = "", **kw) -> Apache:
    """Apache with mod_proxy_uwsgi: `ProxyPass /app uwsgi://127.0.0.1:PORT/`."""
    if isinstance(worker.address, str):
        target = f"unix:{worker.address}|uwsgi://localhost/"
    else:
        target = f"uwsgi://{worker.address[0]}:{worker.address[1]}/"
    config = f"""
        ProxyPass {mount} {target}
        {extra}
    """
    return Apache(prefix, config, **kw)


def front_end(kind: str, prefix: Path, worker, mount: str = "/app", **kw):
    if kind == "nginx":
        return nginx_uwsgi_pass(prefix, worker, mount, **kw)
    if kind == "apache":
        return apache_proxy_uwsgi(prefix, worker, mount, **kw)
    raise ValueError(f"unknown front end {kind!r}")
