"""A deployed app as the tests see it: a front end URL under a mount, plus the logs to inspect.

Works for any deployment (stock front end + rwsgi-worker here; the embedded modules later), so
the same assertion files can run against each: only `logs` and how it was started differ.
"""

import json
import time
import urllib.parse

import requests

from . import http


class Stack:
    def __init__(self, kind: str, server, mount: str = "/app", logs=()):
        self.kind = kind          # "nginx" / "apache" / ...
        self.server = server      # Nginx or Apache instance (has .port, .url())
        self.mount = mount
        self._logs = list(logs)   # callables returning log text (worker log, error_log, ...)

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, path: str) -> str:
        return self.server.url(self.mount + path)

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 10)
        return requests.get(self.url(path), **kw)

    def post(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 10)
        return requests.post(self.url(path), **kw)

    def raw(self, method: str, path: str, **kw) -> http.RawResponse:
        return http.request(self.port, method, self.mount + path, **kw)

    def log_text(self) -> str:
        return "\n".join(f() for f in self._logs)

    def wait_log(self, needle: str, timeout: float = 5.0) -> str:
        """Wait until `needle` appears in the logs; returns the log text (fails with a tail)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            if needle in text:
                return text
            if time.monotonic() > deadline:
                tail = "\n".join(text.splitlines()[-40:])
                raise AssertionError(f"{needle!r} not in the logs after {timeout}s; tail:\n{tail}")
            time.sleep(0.05)

    def record_count(self, kind: str, token: str) -> int:
        """Events the conformance app recorded (see apps/conformance.py /record)."""
        q = urllib.parse.urlencode({"kind": kind, "token": token})
        r = self.get(f"/record?{q}")
        r.raise_for_status()
        return json.loads(r.content)["count"]

    def wait_record(self, kind: str, token: str, expected: int = 1, timeout: float = 5.0,
                    settle: float = 0.3) -> int:
        """Wait for `expected` records, then make sure no extra ones arrive within `settle` s."""
        deadline = time.monotonic() + timeout
        count = self.record_count(kind, token)
        while count < expected and time.monotonic() < deadline:
            time.sleep(0.05)
            count = self.record_count(kind, token)
        time.sleep(settle)
        return self.record_count(kind, token)
