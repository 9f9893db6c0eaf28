"""Front ends in front of a worker: stock nginx (`uwsgi_pass`, `scgi_pass`, `fastcgi_pass`) and
stock Apache (`mod_proxy_uwsgi`, `mod_proxy_scgi`, `mod_proxy_fcgi`), each mounting the worker at
a URL prefix, with Debian's stock params files as a deployment includes them.
"""

from pathlib import Path

from .apache import Apache
from .nginx import Nginx

FRONT_ENDS = ("nginx", "apache")

# The SCGI and FastCGI front ends, and the protocol each needs its worker to speak.
GATEWAY_FRONT_ENDS = {
    "nginx-scgi": "scgi",
    "nginx-fcgi": "fcgi",
    "apache-scgi": "scgi",
    "apache-fcgi": "fcgi",
}


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


def nginx_gateway_pass(prefix: Path, worker, mount: str = "/app", extra_location: str = "",
                       **kw) -> Nginx:
    """nginx passing `mount` to a worker speaking SCGI (`scgi_pass`, Debian's scgi_params) or
    FastCGI (`fastcgi_pass`, Debian's fastcgi_params), as stock as those configs get: no
    SCRIPT_NAME of our own (the worker is started with `--mount`, which splits the path)."""
    name = {"scgi": "scgi", "fcgi": "fastcgi"}[worker.protocol]
    server = f"""
        client_max_body_size 64m;
        location {mount} {{
            include /etc/nginx/{name}_params;
            {name}_pass {worker.uwsgi_pass};
            {extra_location}
        }}
    """
    return Nginx(prefix, server=server, **kw)


def apache_proxy_gateway(prefix: Path, worker, mount: str = "/app", extra: str = "",
                         **kw) -> Apache:
    """Apache with mod_proxy_scgi (`ProxyPass /app scgi://...`) or mod_proxy_fcgi
    (`fcgi://...`)."""
    scheme = worker.protocol
    if isinstance(worker.address, str):
        target = f"unix:{worker.address}|{scheme}://localhost/"
    else:
        target = f"{scheme}://{worker.address[0]}:{worker.address[1]}/"
    # mod_proxy_fcgi holds the response back until its buffer fills unless told to flush each
    # record (flushpackets, off by default): a streaming app needs it, as the docs say.
    params = " flushpackets=on" if scheme == "fcgi" else ""
    config = f"""
        ProxyPass {mount} {target}{params}
        {extra}
    """
    modules = {"scgi": ("proxy_scgi",), "fcgi": ("proxy_fcgi",)}[scheme]
    return Apache(prefix, config, modules=modules, **kw)


def front_end(kind: str, prefix: Path, worker, mount: str = "/app", **kw):
    if kind == "nginx":
        return nginx_uwsgi_pass(prefix, worker, mount, **kw)
    if kind == "apache":
        return apache_proxy_uwsgi(prefix, worker, mount, **kw)
    if kind in GATEWAY_FRONT_ENDS:
        if worker.protocol != GATEWAY_FRONT_ENDS[kind]:
            raise ValueError(f"{kind} needs a worker speaking {GATEWAY_FRONT_ENDS[kind]}")
        if kind.startswith("nginx"):
            return nginx_gateway_pass(prefix, worker, mount, **kw)
        return apache_proxy_gateway(prefix, worker, mount, **kw)
    raise ValueError(f"unknown front end {kind!r}")
