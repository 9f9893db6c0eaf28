"""Workloads, the smoke test, and one wrk run measured against /proc.

wrk reports through a Lua done() hook that prints one JSON line, so nothing depends on the
layout of wrk's human-readable summary.
"""

import http.client
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass

from . import procs

ECHO_SIZE = 1 << 20


@dataclass(frozen=True)
class Workload:
    name: str
    path: str
    method: str
    expect: bytes  # exact body every correct server returns
    post_size: int = 0
    label: str = ""
    # "wrk": measured with wrk at each c; "download": a few timed curl downloads (MB/s, PSS);
    # "ws": WebSocket echo round trips at each c (harness/wsload.py).
    kind: str = "wrk"
    default: bool = True  # part of a run without --workloads


def _read_app_file(*parts):
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "apps", *parts), "rb") as f:
        return f.read()


STREAM_MIB = 1024  # the router's default for /stream (1 GiB)
SMOKE_STREAM_MIB = 1

# Must match bench/apps/router.py.
WORKLOADS = [
    Workload("hello", "/hello", "GET", b"Hello World!\n", label="hello world, 13 B"),
    Workload("64k", "/64k", "GET", (b"0123456789abcdef" * 4096)[:65536], label="64 KiB response"),
    Workload("echo1m", "/echo", "POST", str(ECHO_SIZE).encode(), ECHO_SIZE, "1 MiB POST, read in full"),
    Workload("sleep10ms", "/sleep10ms", "GET", b"slept 10 ms\n", label="time.sleep(0.01)"),
    Workload("django", "/django", "GET", _read_app_file("djangobench", "expected.html"),
             label="Django view: template + SQLite query"),
    Workload("flask-api", "/flask/api", "GET", _read_app_file("flaskbench", "expected-api.json"),
             label="Flask JSON API: SQLite query, 10 rows serialised"),
    Workload("flask-page", "/flask/page", "GET", _read_app_file("flaskbench", "expected-page.html"),
             label="Flask/Jinja page: base layout + 50 rows from memory"),
    Workload("stream1g", "/stream", "GET", b"x" * (SMOKE_STREAM_MIB << 20),
             label="1 GiB streamed download (64 KiB chunks), curl", kind="download"),
]
# ASGI workloads (bench/apps/asgi_app.py, FastAPI), for the ASGI configurations only.
ASGI_HELLO = b'{"message":"Hello World!"}'
WORKLOADS += [
    Workload("asgi-hello", "/hello", "GET", ASGI_HELLO, label="FastAPI hello JSON", default=False),
    Workload("asgi-64k", "/64k", "GET", (b"0123456789abcdef" * 4096)[:65536],
             label="FastAPI 64 KiB response", default=False),
    Workload("asgi-sleep10ms", "/sleep10ms", "GET", b"slept 10 ms\n",
             label="FastAPI await asyncio.sleep(0.01)", default=False),
    Workload("asgi-ws", "/ws", "GET", b"", label="FastAPI WebSocket echo (messages/s)",
             kind="ws", default=False),
]
BY_NAME = {w.name: w for w in WORKLOADS}

_DONE_HOOK = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
    .. '"max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def write_lua(workload, directory):
    """The wrk script for one workload: request shape plus the JSON done() hook."""
    lines = [f'wrk.method = "{workload.method}"']
    if workload.post_size:
        # wrk.format adds Content-Length for a body; nginx then buffers it (client_body_buffer_size).
        lines.append(f'wrk.body = string.rep("x", {workload.post_size})')
        lines.append('wrk.headers["Content-Type"] = "application/octet-stream"')
    path = os.path.join(directory, f"wrk-{workload.name}.lua")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + _DONE_HOOK)
    return path


def wait_app(port, path, timeout=30.0):
    """Poll GET path until it answers 200; None, or why it did not within timeout."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                return None
            last = f"status {resp.status}"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        time.sleep(0.1)
    return f"GET {path} did not answer 200 within {timeout:.0f} s (last: {last})"


def smoke(port, workloads, timeout=10.0):
    """One request per workload over one keep-alive connection; returns a list of failures.

    Checks status 200, Content-Length equal to the body length, and the exact body.
    """
    failures = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        for w in workloads:
            if w.kind == "ws":
                continue  # checked by wsload itself: every echo must match
            body = b"x" * w.post_size if w.post_size else None
            headers = {"Content-Type": "application/octet-stream"} if body else {}
            # The download is checked on a 1 MiB stream; its full size is measured by curl.
            path = f"{w.path}?mib={SMOKE_STREAM_MIB}" if w.kind == "download" else w.path
            try:
                conn.request(w.method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{w.name}: {type(exc).__name__}: {exc}")
                conn.close()
                continue
            length = resp.getheader("Content-Length")
            if resp.status != 200:
                failures.append(f"{w.name}: status {resp.status} {data[:200]!r}")
            elif length != str(len(data)):
                failures.append(f"{w.name}: Content-Length {length!r} for a {len(data)} B body")
            elif data != w.expect:
                failures.append(f"{w.name}: unexpected body {data[:80]!r} ({len(data)} B)")
            if resp.will_close:
                failures.append(f"{w.name}: server closed the keep-alive connection")
                conn.close()
    finally:
        conn.close()
    return failures


@dataclass
class WrkRun:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # non-2xx/3xx + connect/read/write/timeout
    error_detail: dict
    bytes_per_req: float
    server_cpu_s: float
    server_us_per_req: float
    cpu_split: dict  # service name -> CPU us per request of that service's process tree
    tree_changed: bool  # a server process appeared or exited during the run
    wrk_cpu_s: float
    other_cores: float  # CPU used by jobs that are neither our servers nor wrk
    wall_s: float
    # per request, summed over every thread of the server trees (/proc/PID/task/TID)
    vcs_per_req: float = 0.0  # voluntary context switches (a thread blocked: futex, I/O, ...)
    ics_per_req: float = 0.0  # involuntary ones (preempted)
    rq_wait_us_per_req: float = 0.0  # time runnable but waiting for a CPU (schedstat)
    vcs_split: dict = None  # service name -> voluntary switches per request
    # our host's own counters (pyhost), per request; None for peers
    pyhost: dict = None


def run_wrk(url, lua, connections, seconds, servers, threads=2, stats_dir=None, pin=None):
    """Run wrk once against url while accounting server, wrk and machine CPU.

    servers: [(name, root pid)] of the configuration's services; CPU is reported per service
    tree and in total. stats_dir: where our host's processes keep their counters. pin: a CPU
    list for `taskset -c` (wrk's threads stay there).
    """
    argv = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
        "--latency", "--timeout", "5s", "-s", lua, url,
    ]
    if pin:
        argv = ["taskset", "-c", pin] + argv
    return _measure(argv, servers, stats_dir)


def run_ws(python, url, connections, seconds, servers, stats_dir=None):
    """The WebSocket echo load (harness/wsload.py, a Python client: its own CPU is accounted as
    wrk's is), measured like run_wrk: a "request" is one message echoed."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wsload.py")
    return _measure([python, script, url, str(connections), str(seconds)], servers, stats_dir)


def _measure(argv, servers, stats_dir=None):
    """Runs a load generator that prints one BENCH-RESULT line, accounting CPU, context
    switches and our host's counters around it."""
    py0 = procs.pyhost_stats(stats_dir) if stats_dir else {}
    before = {name: procs.tree_snapshot([pid]) for name, pid in servers}
    threads0 = {name: procs.tree_threads([pid]) for name, pid in servers}
    busy0, t0 = procs.machine_busy()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, rusage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    busy1, t1 = procs.machine_busy()
    after = {name: procs.tree_snapshot([pid]) for name, pid in servers}
    threads1 = {name: procs.tree_threads([pid]) for name, pid in servers}
    py1 = procs.pyhost_stats(stats_dir) if stats_dir else {}
    text = out.decode("utf-8", "replace")
    result = None
    for line in text.splitlines():
        if line.startswith("BENCH-RESULT "):
            result = json.loads(line[len("BENCH-RESULT "):])
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"load failed (exit {proc.returncode}): {' '.join(argv)}\n{text}")
    wall = t1 - t0
    split, changed = {}, False
    for name, _ in servers:
        split[name], moved = procs.tree_cpu_delta(before[name], after[name])
        changed = changed or moved
    server_cpu = sum(split.values())
    wrk_cpu = rusage.ru_utime + rusage.ru_stime
    requests = result["requests"]
    detail = {k: result[k] for k in ("status", "connect", "read", "write", "timeout")}
    per = 1.0 / requests if requests else 0.0
    sched = {name: procs.threads_delta(threads0[name], threads1[name]) for name, _ in servers}
    return WrkRun(
        requests=requests,
        rps=requests / (result["duration_us"] / 1e6),
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        max_ms=result["max_us"] / 1000,
        errors=sum(detail.values()),
        error_detail=detail,
        bytes_per_req=result["bytes"] / requests if requests else 0.0,
        server_cpu_s=server_cpu,
        server_us_per_req=server_cpu / requests * 1e6 if requests else 0.0,
        cpu_split={k: v / requests * 1e6 if requests else 0.0 for k, v in split.items()},
        tree_changed=changed,
        wrk_cpu_s=wrk_cpu,
        other_cores=max(0.0, (busy1 - busy0) - server_cpu - wrk_cpu) / wall,
        wall_s=wall,
        vcs_per_req=sum(v[0] for v in sched.values()) * per,
        ics_per_req=sum(v[1] for v in sched.values()) * per,
        rq_wait_us_per_req=sum(v[3] for v in sched.values()) * per * 1e6,
        vcs_split={name: v[0] * per for name, v in sched.items()},
        pyhost=_pyhost_per_request(procs.pyhost_delta(py0, py1), requests),
    )


def _pyhost_per_request(d, requests):
    """Our host's counters over one load run, per request of the load (None for peers)."""
    if not d or not requests:
        return None
    per = 1.0 / requests
    return {
        "gil_wait_us": d["gil_wait_ns"] * per / 1e3,
        "gil_waits": d["gil_waits"] * per,
        "admit_wait_us": d["admit_wait_ns"] * per / 1e3,
        "admit_waits": d["admit_waits"] * per,
        "py_cpu_us": d["cpu_ns"] * per / 1e3,
        "admitted_us": d["admitted_ns"] * per / 1e3,
        "limits": d["limits"],
        "limit_changes": d["limit_raised"] + d["limit_lowered"],
        "requests": d["requests"],
    }


def wrk_version():
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    first = (out.stdout + out.stderr).strip().splitlines()
    return first[0] if first else "?"


@dataclass
class DownloadRun:
    mib: int
    ok: bool  # status 200 and every byte received
    detail: str
    seconds: float
    mb_per_s: float  # 10^6 bytes per second, as curl reports
    server_cpu_s: float
    cpu_split: dict
    pss_peak_mib: float  # largest PSS of the server trees sampled during the download
    pss_before_mib: float
    other_cores: float
    wrk_cpu_s: float  # curl's CPU (named like wrk's for the shared accounting)


def run_download(url, mib, servers, sample_every=0.1):
    """One timed download of `mib` MiB with curl to /dev/null, server CPU and PSS sampled."""
    roots = [pid for _, pid in servers]
    argv = ["curl", "-s", "-S", "-o", "/dev/null", "--max-time", "300",
            "-w", "%{http_code} %{size_download} %{time_total} %{speed_download}",
            f"{url}?mib={mib}"]
    pss_before = procs.tree_memory(roots)[2]
    peak = [pss_before]
    stop = threading.Event()

    def sample():
        while not stop.wait(sample_every):
            peak[0] = max(peak[0], procs.tree_memory(roots)[2])

    sampler = threading.Thread(target=sample, daemon=True)
    before = {name: procs.tree_snapshot([pid]) for name, pid in servers}
    busy0, t0 = procs.machine_busy()
    sampler.start()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode("utf-8", "replace")
    _, status, rusage = os.wait4(proc.pid, 0)
    stop.set()
    sampler.join()
    busy1, t1 = procs.machine_busy()
    after = {name: procs.tree_snapshot([pid]) for name, pid in servers}
    split = {name: procs.tree_cpu_delta(before[name], after[name])[0] for name, _ in servers}
    server_cpu = sum(split.values())
    curl_cpu = rusage.ru_utime + rusage.ru_stime
    fields = out.split()
    ok = False
    seconds = speed = 0.0
    if os.waitstatus_to_exitcode(status) == 0 and len(fields) == 4:
        code, size, seconds, speed = fields[0], int(fields[1]), float(fields[2]), float(fields[3])
        ok = code == "200" and size == mib << 20
    return DownloadRun(
        mib=mib, ok=ok, detail=out.strip()[:300], seconds=seconds, mb_per_s=speed / 1e6,
        server_cpu_s=server_cpu, cpu_split=split, pss_peak_mib=peak[0], pss_before_mib=pss_before,
        other_cores=max(0.0, (busy1 - busy0) - server_cpu - curl_cpu) / (t1 - t0),
        wrk_cpu_s=curl_cpu,
    )
