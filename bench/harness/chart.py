"""Draw a results JSON (written by bench/run) as a PNG: req/s and p99 per workload, MB/s of the
streamed download. Run with the bench venv's Python, which has matplotlib:

    build/bench-venv/bin/python3 bench/harness/chart.py results/X.json results/X.png

One row per wrk workload: left, median req/s per configuration (one bar per c); right, median
p99 latency (log scale). Our configurations are drawn in solid colours, peers hatched and paler,
so "where do we stand" is visible at a glance. A last row shows the download's MB/s and PSS.
"""

import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OURS = {"nginx-embedded", "nginx-daemon", "apache-rwsgi-embedded", "apache-rwsgi-daemon",
        "nginx-rwsgi-worker"}
C_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]


def medians(run, workload, c, key):
    out = {}
    for cfg in run["config_order"]:
        vals = [r[key] for r in run["records"]
                if r["config"] == cfg and r["workload"] == workload and r["c"] == c]
        if vals:
            out[cfg] = statistics.median(vals)
    return out


def bars(ax, configs, series, xlabel, log=False):
    """Horizontal grouped bars: one group per configuration, one bar per series (c value)."""
    n = max(1, len(series))
    height = 0.8 / n
    for i, (label, values) in enumerate(series):
        ys = [k + (i - (n - 1) / 2) * height for k in range(len(configs))]
        xs = [values.get(cfg, 0) for cfg in configs]
        colour = C_COLOURS[i % len(C_COLOURS)]
        drawn = ax.barh(ys, xs, height=height, label=label, color=colour)
        for rect, cfg in zip(drawn, configs):
            if cfg not in OURS:
                rect.set_alpha(0.45)
                rect.set_hatch("//")
        for y, x in zip(ys, xs):
            if x:
                ax.text(x, y, f" {x:,.0f}" if x >= 10 else f" {x:.1f}", va="center", fontsize=7)
    ax.set_yticks(range(len(configs)))
    ax.set_yticklabels([("* " if c in OURS else "") + c for c in configs], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel, fontsize=8)
    top = max([v for _, values in series for v in values.values()] or [1])
    if log:
        ax.set_xscale("log")
        low = min([v for _, values in series for v in values.values() if v > 0] or [1])
        ax.set_xlim(low / 2, top * 4)  # room for the value labels right of the bars
    else:
        ax.set_xlim(0, top * 1.2)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def main(json_path, png_path):
    with open(json_path) as f:
        run = json.load(f)
    workloads = [w for w in run["workload_order"] if any(r["workload"] == w for r in run["records"])]
    downloads = run.get("downloads") or []
    cs = sorted({r["c"] for r in run["records"]})
    rows = len(workloads) + (1 if downloads else 0)
    fig, axes = plt.subplots(rows, 2, figsize=(15, 3.6 * rows + 1), squeeze=False)
    for row, w in enumerate(workloads):
        configs = [cfg for cfg in run["config_order"]
                   if any(r["config"] == cfg and r["workload"] == w for r in run["records"])]
        rps = [(f"c={c}", medians(run, w, c, "rps")) for c in cs]
        p99 = [(f"c={c}", medians(run, w, c, "p99_ms")) for c in cs]
        bars(axes[row][0], configs, rps, "requests/s (median over rounds)")
        axes[row][0].set_title(f"{w}: requests/s (higher is better)", fontsize=10)
        bars(axes[row][1], configs, p99, "p99 latency, ms (log scale)", log=True)
        axes[row][1].set_title(f"{w}: p99 latency (lower is better)", fontsize=10)
    if downloads:
        configs = [cfg for cfg in run["config_order"] if any(d["config"] == cfg for d in downloads)]

        def med(key):
            return {cfg: statistics.median([d[key] for d in downloads if d["config"] == cfg])
                    for cfg in configs}

        mib = run.get("stream_mib", 1024)
        bars(axes[-1][0], configs, [("MB/s", med("mb_per_s"))], "MB/s (median)")
        axes[-1][0].set_title(f"{mib} MiB streamed download: MB/s (higher is better)", fontsize=10)
        peak = {cfg: max(d["pss_peak_mib"] for d in downloads if d["config"] == cfg) for cfg in configs}
        bars(axes[-1][1], configs, [("PSS peak", peak), ("PSS before", med("pss_before_mib"))],
             "MiB")
        axes[-1][1].set_title("download: server PSS (lower is better)", fontsize=10)
    env = run.get("environment", {})
    fig.suptitle(
        f"bench/run: {len(run['config_order'])} configurations, {len(run['workload_order'])} workloads, "
        f"{len({r['round'] for r in run['records']})} round(s), "
        f"{env.get('cpus', '?')} CPUs, wall {env.get('wall_s', 0):.0f} s\n"
        f"* = rwsgi (ours, solid); hatched = peers; same 2 x 16 Python processes x threads everywhere",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(png_path, dpi=90)


if __name__ == "__main__":
    main(*sys.argv[1:3])
