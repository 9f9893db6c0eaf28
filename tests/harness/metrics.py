"""Scraping the metrics endpoints: parse with prometheus_client's own parsers (text format 0.0.4
and OpenMetrics), lint with `promtool check metrics`, and drive a known load while scraping.

`Scrape` is one parsed scrape: `value(name, **labels)` reads one sample (a missing sample is an
error, never a silent 0), `delta(before, name, **labels)` the change since an earlier scrape.
`Load` sends a planned mix of requests from several threads while another thread keeps
scraping, and checks every scrape it took parses and that no counter ever went backwards.
"""

import concurrent.futures
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


class Scrape:
    def __init__(self, text: str, openmetrics: bool = False):
        self.text = text
        parse = parse_openmetrics if openmetrics else parse_text
        self.families = {f.name: f for f in parse(text)}
        self.samples = {}
        for family in self.families.values():
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(self, name: str, **labels) -> float:
        key = (name, frozenset(labels.items()))
        if key not in self.samples:
            near = sorted(str(dict(k[1])) for k in self.samples if k[0] == name)
            raise AssertionError(f"no sample {name}{labels}; samples of {name}: {near}")
        return self.samples[key]

    def get(self, name: str, default=0.0, **labels) -> float:
        return self.samples.get((name, frozenset(labels.items())), default)

    def delta(self, before: "Scrape", name: str, **labels) -> float:
        return self.value(name, **labels) - before.get(name, 0.0, **labels)

    def counters(self) -> dict:
        """Every counter-like sample (counters, histogram buckets/sums/counts)."""
        out = {}
        for family in self.families.values():
            if family.type in ("counter", "histogram"):
                for s in family.samples:
                    out[(s.name, frozenset(s.labels.items()))] = s.value
        return out


def fetch(url: str, accept: str = None) -> requests.Response:
    headers = {"Accept": accept} if accept else {}
    return requests.get(url, headers=headers, timeout=20)


def scrape(url: str, openmetrics: bool = False) -> Scrape:
    r = fetch(url, OPENMETRICS if openmetrics else "text/plain;version=0.0.4")
    assert r.status_code == 200, f"{url}: {r.status_code} {r.text[:300]}"
    want = "application/openmetrics-text" if openmetrics else "text/plain; version=0.0.4"
    assert r.headers["Content-Type"].startswith(want), r.headers["Content-Type"]
    return Scrape(r.text, openmetrics)


def promtool_check(text: str) -> None:
    """`promtool check metrics` (Debian's prometheus package) must accept the text."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/setup.sh installs Debian's prometheus package"
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert r.returncode == 0, f"promtool check metrics:\n{r.stdout}{r.stderr}"


def wait_for(url: str, check, timeout: float = 20.0, what: str = "metrics") -> Scrape:
    """Scrapes until `check(scrape)` is true. A request's end is counted when the server frees
    it, a moment after the client has its response; so tests wait for the exact number."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = scrape(url)
        try:
            if check(last):
                return last
        except AssertionError:
            pass
        if time.monotonic() > deadline:
            check(last)  # raise its AssertionError, if it has one
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Load:
    """Sends `plan` ([(method, path, body bytes or None, expected status)]) from `threads`
    threads while a scraper keeps reading `metrics_url`; `run()` returns the responses and
    checks each scrape parsed and that counters only grew."""

    def __init__(self, base_url: str, metrics_url: str, plan, threads: int = 6):
        self.base_url = base_url
        self.metrics_url = metrics_url
        self.plan = plan
        self.threads = threads
        self.scrapes = 0
        self.errors = []

    def _scraper(self, stop: threading.Event):
        previous = {}
        while not stop.is_set():
            try:
                counters = scrape(self.metrics_url).counters()
            except Exception as e:  # noqa: BLE001 - reported by run()
                self.errors.append(f"scrape failed under load: {e!r}")
                return
            for key, value in counters.items():
                if value < previous.get(key, 0):
                    self.errors.append(f"{key} went backwards: {previous[key]} -> {value}")
            previous = counters
            self.scrapes += 1
            time.sleep(0.02)

    def _send(self, item):
        method, path, body, want = item
        r = requests.request(method, self.base_url + path, data=body, timeout=60,
                             allow_redirects=False)
        assert r.status_code == want, f"{method} {path}: {r.status_code} (wanted {want})"
        return r

    def run(self):
        stop = threading.Event()
        scraper = threading.Thread(target=self._scraper, args=(stop,))
        scraper.start()
        try:
            with concurrent.futures.ThreadPoolExecutor(self.threads) as pool:
                responses = list(pool.map(self._send, self.plan))
        finally:
            stop.set()
            scraper.join()
        assert not self.errors, self.errors
        assert self.scrapes > 0
        return responses


# The app the metrics tests run: each route gives a known status and body size.
APP = """
    import os, time

    def application(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/ok":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return [b"ok"]
        if path == "/echo":
            # With a Content-Length: nginx counts a chunked response's framing as body bytes
            # ($body_bytes_sent), the others do not; the tests compare exact byte counts.
            data = environ["wsgi.input"].read()
            start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                      ("Content-Length", str(len(data)))])
            return [data]
        if path == "/redirect":
            start_response("302 Found", [("Location", "/ok"), ("Content-Length", "0")])
            return [b""]
        if path == "/boom":
            raise RuntimeError("boom for the metrics test")
        if path == "/sleep":
            time.sleep(float(environ["QUERY_STRING"] or "1"))
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"slept"]
        if path == "/spin":
            # Pure Python for QUERY_STRING seconds: a request timeout interrupts it.
            end = time.monotonic() + float(environ["QUERY_STRING"] or "1")
            while time.monotonic() < end:
                pass
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"spun"]
        if path == "/big":
            # Many chunks: a client that leaves early makes a write fail.
            n = int(environ["QUERY_STRING"])
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return (b"x" * 65536 for _ in range(n // 65536))
        if path == "/pid":
            body = str(os.getpid()).encode()
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return [b"nope"]
"""

# The same routes as an ASGI app (for rwsgi-worker --interface asgi).
ASGI_APP = """
    import asyncio, time

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            return  # no lifespan: the host serves without it (RW-PY012)
        path = scope["path"][len(scope.get("root_path", "")):]  # the path includes the mount
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if path == "/boom":
            raise RuntimeError("boom for the metrics test")
        if path == "/asleep":  # awaits: a request timeout cancels it
            await asyncio.sleep(float(scope["query_string"] or b"1"))
        if path == "/sleep":  # blocks the loop: a request timeout must take it over
            time.sleep(float(scope["query_string"] or b"1"))
        status, out = {"/ok": (200, b"ok"), "/echo": (200, body), "/redirect": (302, b"")}.get(
            path, (404, b"nope"))
        headers = [(b"content-length", str(len(out)).encode())]
        if status == 302:
            headers.append((b"location", b"/ok"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})
"""


def mixed_plan(prefix: str, n: int = 10):
    """A mix of every status class the app gives, with request bodies: (plan, expected) where
    expected has the counts and request body bytes the metrics must show."""
    plan = []
    body_in = 0
    for i in range(n):
        payload = bytes([i % 256]) * (1000 + 37 * i)
        plan += [("GET", f"{prefix}/ok", None, 200),
                 ("POST", f"{prefix}/echo", payload, 200),
                 ("GET", f"{prefix}/missing", None, 404),
                 ("GET", f"{prefix}/redirect", None, 302),
                 ("GET", f"{prefix}/boom", None, 500)]
        body_in += len(payload)
    expected = {"2xx": 2 * n, "3xx": n, "4xx": n, "5xx": n, "1xx": 0, "exceptions": n,
                "requests": 5 * n, "python": 5 * n, "body_in": body_in}
    return plan, expected


def body_bytes(responses) -> int:
    """Response body bytes the client received (a 500 is the server's own error page in
    Apache embedded mode, as under mod_wsgi, so the app alone does not say)."""
    return sum(len(r.content) for r in responses)


def check_counts(before: Scrape, after: Scrape, app: str, group: str, expected: dict,
                 responses, front_end_counts: bool = True):
    """The deltas of one app's counters equal what the load sent and received."""
    labels = dict(app=app, group=group)
    if front_end_counts:
        check_http_counts(before, after, app, group, expected, responses)
    assert after.delta(before, "rwsgi_exceptions_total", **labels) == expected["exceptions"]
    assert after.delta(before, "rwsgi_gil_wait_seconds_total", **labels) > 0


def check_http_counts(before: Scrape, after: Scrape, app: str, group: str, expected: dict,
                      responses):
    """What the process that answers HTTP counts: status classes, durations, body bytes."""
    labels = dict(app=app, group=group)
    for cls in ("1xx", "2xx", "3xx", "4xx", "5xx"):
        got = after.delta(before, "rwsgi_requests_total", code_class=cls, **labels)
        assert got == expected[cls], f"{cls}: {got} != {expected[cls]}"
    assert after.delta(before, "rwsgi_request_duration_seconds_count", **labels) == expected["requests"]
    assert after.delta(before, "rwsgi_request_body_bytes_total", **labels) == expected["body_in"]
    got = after.delta(before, "rwsgi_response_body_bytes_total", **labels)
    assert got == body_bytes(responses), (got, body_bytes(responses))
    assert after.value("rwsgi_requests_active", **labels) == 0


def counted(before: Scrape, app: str, group: str, expected: dict):
    """A `wait_for` check: the status classes of `app` grew by exactly `expected`."""
    def check(s: Scrape):
        got = {c: s.delta(before, "rwsgi_requests_total", app=app, group=group, code_class=c)
               for c in ("2xx", "3xx", "4xx", "5xx")}
        assert got == {c: expected[c] for c in got}, got
        return True
    return check


def exact_counts_under_load(server, app: str, group: str, queued: bool) -> Scrape:
    """The mixed plan against `server` (which has `.metrics`, the endpoint URL) while a scraper
    reads along; every count must come out exact. `queued`: every request is seen waiting for a
    Python thread (else none is). Returns the last scrape."""
    before = scrape(server.metrics)
    plan, expected = mixed_plan(app, n=12)
    responses = Load(server.base_url, server.metrics, plan).run()
    after = wait_for(server.metrics, counted(before, app, group, expected), what="the counts")
    check_counts(before, after, app, group, expected, responses)
    waited = after.delta(before, "rwsgi_request_queue_duration_seconds_count", app=app, group=group)
    assert waited == (expected["python"] if queued else 0)
    assert after.delta(before, "rwsgi_client_aborts_total", app=app, group=group) == 0
    promtool_check(after.text)
    return after


def client_leaves(server, port: int, app: str, group: str):
    """A client asks `app` for a huge streamed response, reads a little and closes: the
    server's write fails and exactly one client abort is counted."""
    before = scrape(server.metrics)
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET {app}/big?200000000 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    s.recv(1000)
    s.close()
    wait_for(server.metrics, lambda m: m.delta(before, "rwsgi_client_aborts_total", app=app,
                                               group=group) == 1, what="the abort")


def sigkill_is_a_crash_respawn(server, app: str, group: str, workers: int) -> Scrape:
    """kill -9 of the daemon worker that answers `app`/pid: one `crash` respawn, and the group
    has `workers` live workers again. Returns the scrape that showed it (and its baseline)."""
    before = scrape(server.metrics)
    pid = int(requests.get(server.url(f"{app}/pid"), timeout=10).text)
    os.kill(pid, signal.SIGKILL)

    def respawned(s):
        return (s.delta(before, "rwsgi_worker_respawns_total", group=group, reason="crash") == 1
                and s.value("rwsgi_processes", group=group, role="worker") == workers)
    return before, wait_for(server.metrics, respawned, what="the crash respawn")


def interrupted_timeout_is_counted(server, app: str, group: str, route: str = "spin") -> Scrape:
    """A request of `app` (whose request timeout is shorter than 30 s) spins in Python past it
    (an ASGI app: awaits, `route="asleep"`): pyhost's watchdog interrupts it (cancels the ASGI
    task) and the client gets 504. Exactly one request timeout of
    `group`, one 5xx, no exception (the timeout is not the app's error) and no respawn (the
    process serves on). Returns the scrape."""
    before = scrape(server.metrics)
    r = requests.get(server.url(f"{app}/{route}?30"), timeout=60)
    assert r.status_code == 504, (r.status_code, r.text[:300])

    def timed_out(s):
        return (s.delta(before, "rwsgi_request_timeouts_total", group=group) == 1
                and s.delta(before, "rwsgi_requests_total", app=app, group=group,
                            code_class="5xx") == 1)
    after = wait_for(server.metrics, timed_out, what="the request timeout")
    assert after.delta(before, "rwsgi_exceptions_total", app=app, group=group) == 0
    for reason in ("crash", "maximum-requests", "request-timeout"):
        respawns = dict(group=group, reason=reason)
        assert after.get("rwsgi_worker_respawns_total", **respawns) == before.get(
            "rwsgi_worker_respawns_total", **respawns), reason
    assert requests.get(server.url(f"{app}/ok"), timeout=10).status_code == 200
    promtool_check(after.text)
    return after


def stuck_timeout_is_a_respawn(server, app: str, group: str) -> Scrape:
    """A request of `app` (daemon group `group`, request-timeout shorter than 30 s) sleeps in C
    code (time.sleep), where no interrupt reaches (an ASGI app: blocks the loop, where no cancel
    reaches): after the grace the daemon worker answers 504 itself and retires. Exactly one timeout, one `request-timeout` respawn, no crash, one 5xx
    (the front end, or the standalone worker, counts it). Returns the scrape."""
    before = scrape(server.metrics)
    r = requests.get(server.url(f"{app}/sleep?30"), timeout=60)
    assert r.status_code == 504, (r.status_code, r.text[:300])

    def retired(s):
        return (s.delta(before, "rwsgi_request_timeouts_total", group=group) == 1
                and s.delta(before, "rwsgi_worker_respawns_total", group=group,
                            reason="request-timeout") == 1)
    after = wait_for(server.metrics, retired, what="the request-timeout respawn")
    assert after.delta(before, "rwsgi_worker_respawns_total", group=group, reason="crash") == 0
    assert after.delta(before, "rwsgi_requests_total", app=app, group=group, code_class="5xx") == 1
    return after


def rwsgi_top_once(endpoint: str) -> str:
    """One `rwsgi top --once` frame of `endpoint` (checks it exits 0)."""
    import subprocess
    from . import paths
    r = subprocess.run([str(paths.SERVE_BIN), "top", endpoint, "--once", "--interval", "0.5"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout
