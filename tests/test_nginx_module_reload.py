"""`nginx -s reload` (SIGHUP) while wrk drives load: no request fails, in embedded and daemon mode.

wrk sends `Connection: close`: with keep-alive, nginx's exiting workers close idle keep-alive
connections and a client that reuses one at that instant sees a read error; that happens for a
plain `return 200` location too (measured: 41 read errors over 3 reloads), so it is nginx's
behaviour, not ours, and is not what this test is about.
"""

import re
import shutil
import subprocess
import threading
import time

import pytest
import requests

from test_nginx_module_daemon import wait_for
from test_nginx_module_embedded import HELLO, app_dir, rwsgi_nginx, write_app


def wrk_while_reloading(nginx, path, reloads=3, seconds=5):
    if shutil.which("wrk") is None:
        pytest.skip("wrk not installed")
    def reload_loop():
        for _ in range(reloads):
            time.sleep(1)
            nginx.reload()
    t = threading.Thread(target=reload_loop)
    t.start()
    out = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds}s", "-H", "Connection: close",
                          nginx.url(path)], capture_output=True, text=True, timeout=seconds + 30)
    t.join()
    text = out.stdout
    total = int(re.search(r"(\d+) requests in", text).group(1))
    socket_errors = re.search(r"Socket errors: (.*)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return total, socket_errors.group(1) if socket_errors else None, int(non2xx.group(1)) if non2xx else 0, text


@pytest.mark.parametrize("mode", ["embedded", "daemon"])
def test_reload_under_load_loses_nothing(launcher, mode):
    d = app_dir(launcher)
    app = write_app(d, "hello.py", HELLO)
    if mode == "embedded":
        nginx = rwsgi_nginx(launcher, f"location / {{ wsgi_script {app}; }}", "wsgi_threads 4;", workers=2)
    else:
        nginx = rwsgi_nginx(launcher, f"location / {{ wsgi_script {app}; wsgi_process_group g; }}",
                            "wsgi_daemon_process g processes=2 threads=4;", workers=2)
        wait_for(lambda: requests.get(nginx.url("/"), timeout=5).status_code == 200, what="the group")
    total, socket_errors, non2xx, text = wrk_while_reloading(nginx, "/x")
    print(f"{mode}: {total} requests across 3 reloads, socket errors: {socket_errors}, non-2xx: {non2xx}")
    assert total > 1000, text
    assert socket_errors is None, text
    assert non2xx == 0, text
