"""A WebSocket echo load: C connections, each sending a message and waiting for its echo, for
D seconds; prints one JSON line like wrk's done() hook (run with build/bench-venv's Python,
which has the `websockets` package).

    wsload.py URL CONNECTIONS SECONDS
"""

import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect

MESSAGE = "x" * 32


async def one(url, deadline, latencies, errors):
    try:
        async with connect(url, max_size=None, compression=None) as ws:
            while time.monotonic() < deadline:
                t = time.monotonic()
                await ws.send(MESSAGE)
                if await ws.recv() != MESSAGE:
                    errors["status"] += 1
                    return
                latencies.append(time.monotonic() - t)
    except Exception:  # noqa: BLE001 - counted, as wrk counts socket errors
        errors["read"] += 1


async def main(url, connections, seconds):
    latencies = []
    errors = {"status": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0}
    start = time.monotonic()
    deadline = start + seconds
    await asyncio.gather(*(one(url, deadline, latencies, errors) for _ in range(connections)))
    duration = time.monotonic() - start
    latencies.sort()

    def pct(p):
        return int(latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] * 1e6) if latencies else 0

    print("BENCH-RESULT " + json.dumps({
        "requests": len(latencies), "duration_us": int(duration * 1e6), "bytes": 0,
        **errors, "p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99),
        "max_us": int(latencies[-1] * 1e6) if latencies else 0,
    }))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
