"""Aggregation across rounds and the markdown report.

Medians across rounds; ratios are computed per round against the reference configuration of
that same round, then the median of those ratios is shown, so a slow round (noise) moves both
sides of a ratio together.
"""

import statistics

# Issue 2's targets: (config, reference, workload, minimum same-round req/s ratio), for both c.
TARGETS = [
    ("nginx-rwsgi-worker", "nginx-uwsgi", "hello", 1.5),
    ("nginx-rwsgi-worker", "nginx-uwsgi", "64k", 1.0),
    ("nginx-rwsgi-worker", "nginx-uwsgi", "echo1m", 1.0),
    ("nginx-rwsgi-worker", "nginx-uwsgi", "sleep10ms", 1.0),
]

# Ratio columns, shown when the reference configuration took part in the run.
REFERENCES = [("nginx-uwsgi", "x uWSGI"), ("apache-embedded", "x emb")]

# Issue 5's targets. Ratios are same-round req/s ratios on hello at every c, against Debian's
# mod_wsgi 4.9 and against mod_wsgi 6 from PyPI: (config, reference, minimum).
ISSUE5_RATIOS = [
    ("nginx-embedded", "apache-embedded", 2.5),
    ("nginx-embedded", "apache-modwsgi6-embedded", 2.5),
    ("nginx-daemon", "apache-daemon", 2.0),
    ("nginx-daemon", "apache-modwsgi6-daemon", 2.0),
    ("nginx-daemon", "nginx-uwsgi", 1.0),
    ("apache-rwsgi-embedded", "apache-embedded", 1.3),
    ("apache-rwsgi-embedded", "apache-modwsgi6-embedded", 1.3),
    ("apache-rwsgi-daemon", "apache-daemon", 1.5),
    ("apache-rwsgi-daemon", "apache-modwsgi6-daemon", 1.5),
]
ISSUE5_CPU = [("nginx-embedded", "hello", 25.0)]  # server CPU us/request at most
# PSS of ours no higher than mod_wsgi's for the same processes x threads: (ours, mod_wsgi).
ISSUE5_PSS = [
    ("nginx-embedded", "apache-embedded"),
    ("nginx-daemon", "apache-daemon"),
    ("apache-rwsgi-embedded", "apache-embedded"),
    ("apache-rwsgi-daemon", "apache-daemon"),
    ("nginx-embedded", "apache-modwsgi6-embedded"),
    ("nginx-daemon", "apache-modwsgi6-daemon"),
    ("apache-rwsgi-embedded", "apache-modwsgi6-embedded"),
    ("apache-rwsgi-daemon", "apache-modwsgi6-daemon"),
]
OURS = ("nginx-embedded", "nginx-daemon", "apache-rwsgi-embedded", "apache-rwsgi-daemon",
        "nginx-rwsgi-worker")


def _median(values):
    return statistics.median(values) if values else None


def _fmt(v, digits=0):
    if v is None:
        return ""
    return f"{v:.{digits}f}"


def cells(records):
    """{(workload, c, config): [record per round]} in a stable order."""
    out = {}
    for r in records:
        out.setdefault((r["workload"], r["c"], r["config"]), []).append(r)
    return out


def ratio(records, config, reference, workload, c):
    """Median over rounds of req/s(config) / req/s(reference) in the same round."""
    by_round = {}
    for r in records:
        if r["workload"] == workload and r["c"] == c and r["config"] in (config, reference):
            by_round.setdefault(r["round"], {})[r["config"]] = r["rps"]
    per_round = [
        v[config] / v[reference]
        for v in by_round.values()
        if config in v and reference in v and v[reference] > 0
    ]
    return _median(per_round), per_round


def summary_rows(records, config_order, workload_order):
    rows = []
    grouped = cells(records)
    present = {r["config"] for r in records}
    refs = [(name, label) for name, label in REFERENCES if name in present]
    for w in workload_order:
        for c in sorted({r["c"] for r in records}):
            for cfg in config_order:
                rs = grouped.get((w, c, cfg))
                if not rs:
                    continue
                row = {
                    "workload": w,
                    "c": c,
                    "config": cfg,
                    "shape": rs[0]["shape"],
                    "rps": _median([r["rps"] for r in rs]),
                    "p50": _median([r["p50_ms"] for r in rs]),
                    "p99": _median([r["p99_ms"] for r in rs]),
                    "errors": sum(r["errors"] for r in rs),
                    "cpu": _median([r["server_us_per_req"] for r in rs]),
                    "cpu_split": {
                        name: _median([r["cpu_split"][name] for r in rs])
                        for name in rs[0]["cpu_split"]
                    },
                    "load1": _median([r["load1"] for r in rs]),
                    "other": _median([r["other_cores"] for r in rs]),
                    "other_max": max(r["other_cores"] for r in rs),
                    "tree_changed": any(r["tree_changed"] for r in rs),
                    "per_round": [r["rps"] for r in sorted(rs, key=lambda r: r["round"])],
                    "ratios": {},
                }
                for ref, label in refs:
                    row["ratios"][label] = ratio(records, cfg, ref, w, c)[0]
                rows.append(row)
    return rows, [label for _, label in refs]


def target_lines(records):
    present = {r["config"] for r in records}
    lines = []
    for cfg, ref, w, minimum in TARGETS:
        if cfg not in present or ref not in present:
            continue
        for c in sorted({r["c"] for r in records if r["workload"] == w}):
            med, per_round = ratio(records, cfg, ref, w, c)
            if med is None:
                continue
            verdict = "met" if med >= minimum else "**missed**"
            rounds = ", ".join(f"{x:.2f}" for x in per_round)
            lines.append(
                f"| {w} | {c} | {cfg} / {ref} | >= {minimum:.1f} | {med:.2f} | {verdict} | {rounds} |"
            )
    if not lines:
        return []
    return [
        "| app | c | ratio | target | median | verdict | per round |",
        "|---|---:|---|---:|---:|---|---|",
        *lines,
    ]


def _median_pss(run, cfg):
    return _median([m["pss_mib"] for m in run["memory"] if m["config"] == cfg])


def issue5_lines(run):
    """Issue 5's target table: same-round ratios on hello, CPU/request, PSS, errors."""
    records = run["records"]
    present = {r["config"] for r in records}
    lines = []
    for cfg, ref, minimum in ISSUE5_RATIOS:
        if cfg not in present or ref not in present:
            continue
        for c in sorted({r["c"] for r in records if r["workload"] == "hello"}):
            med, per_round = ratio(records, cfg, ref, "hello", c)
            if med is None:
                continue
            verdict = "met" if med >= minimum else "**missed**"
            lines.append(f"| hello c={c}: {cfg} / {ref} req/s | >= {minimum:.1f} | {med:.2f} | "
                         f"{verdict} | {', '.join(f'{x:.2f}' for x in per_round)} |")
    for cfg, w, limit in ISSUE5_CPU:
        for c in sorted({r["c"] for r in records if r["workload"] == w}):
            vals = [r["server_us_per_req"] for r in records
                    if r["config"] == cfg and r["workload"] == w and r["c"] == c]
            if vals:
                med = _median(vals)
                verdict = "met" if med <= limit else "**missed**"
                lines.append(f"| {w} c={c}: {cfg} server CPU us/req | <= {limit:.0f} | {med:.0f} | "
                             f"{verdict} | {', '.join(f'{x:.0f}' for x in vals)} |")
    for cfg, ref in ISSUE5_PSS:
        ours, theirs = _median_pss(run, cfg), _median_pss(run, ref)
        if ours is None or theirs is None:
            continue
        verdict = "met" if ours <= theirs else "**missed**"
        lines.append(f"| PSS MiB: {cfg} vs {ref} | <= {theirs:.1f} | {ours:.1f} | {verdict} | |")
    nginx_fronted = [c for c in run["config_order"] if c.startswith("nginx")]
    for cfg in nginx_fronted:
        errors = sum(r["errors"] for r in records if r["config"] == cfg)
        if any(r["config"] == cfg for r in records):
            lines.append(f"| wrk errors, {cfg} (all workloads, c, rounds) | 0 | {errors} | "
                         f"{'met' if errors == 0 else '**missed**'} | |")
    if not lines:
        return []
    return ["| target | wanted | median | verdict | per round |", "|---|---:|---:|---|---|", *lines]


def download_lines(run):
    """One row per configuration: the streamed download's MB/s, time, server CPU, PSS."""
    downloads = run.get("downloads") or []
    if not downloads:
        return []
    out = [
        "| config | procs x thr | MB/s | seconds | srv CPU s | PSS before MiB | PSS peak MiB | ok | other cores | MB/s per run |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for cfg in run["config_order"]:
        ds = [d for d in downloads if d["config"] == cfg]
        if not ds:
            continue
        out.append("| " + " | ".join([
            cfg, ds[0]["shape"], _fmt(_median([d["mb_per_s"] for d in ds])),
            _fmt(_median([d["seconds"] for d in ds]), 2),
            _fmt(_median([d["server_cpu_s"] for d in ds]), 2),
            _fmt(_median([d["pss_before_mib"] for d in ds]), 1),
            _fmt(max(d["pss_peak_mib"] for d in ds), 1),
            "yes" if all(d["ok"] for d in ds) else "**no**",
            _fmt(_median([d["other_cores"] for d in ds]), 2),
            ", ".join(_fmt(d["mb_per_s"]) for d in ds),
        ]) + " |")
    return out


def markdown(run):
    """The whole report for one run (see bench/README.md for how to read it)."""
    records = run["records"]
    out = [f"# {run['title']}", ""]
    env = run["environment"]
    out += [
        f"{run['method']}",
        "",
        f"Machine: {env['cpus']} CPUs ({env['cpu_model']}), kernel {env['versions']['kernel']}. "
        f"Wall time {env['wall_s']:.0f} s. Load average before {env['load_before']}, "
        f"after {env['load_after']}.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if k != "kernel") + ".",
        "",
    ]
    others = [r["other_cores"] for r in records]
    if others:
        out += [
            f"**Noise: CPU used by other jobs during the wrk runs: median {_median(others):.2f} cores, "
            f"max {max(others):.2f} cores** (of {env['cpus']}). "
            + ("Quiet enough to compare." if max(others) < 0.15 else
               "Other jobs were running: absolute req/s and CPU/req are depressed and noisy; "
               "read the same-round ratios."),
            "",
        ]
    if run["failures"]:
        out += ["## Failures", ""] + [f"- {f}" for f in run["failures"]] + [""]
    targets = issue5_lines(run)
    if targets:
        out += ["## Issue 5 targets", "",
                "Same-round req/s ratios on hello (median over rounds, per-round values after), "
                "server CPU per request, PSS of the server process trees (median over rounds), and "
                "wrk errors of the nginx-fronted configurations.", ""] + targets + [""]
    targets = target_lines(records)
    if targets:
        out += ["## Issue 2 targets (same-round req/s ratios)", ""] + targets + [""]

    rows, ratio_labels = summary_rows(records, run["config_order"], run["workload_order"])
    out += [
        "## Results",
        "",
        "Medians across rounds. Ratios (`x ...`) are medians of per-round ratios to that reference "
        "in the same round. `errors` = wrk non-2xx + socket errors, summed over rounds. "
        "`srv CPU us/req` = utime+stime of the server process tree(s) per request, wrk excluded; "
        "`CPU split` = the same per service (front end + backend). "
        "`other cores` = CPU used by jobs outside this benchmark during the run (median, max).",
        "",
    ]
    head = ["app", "c", "config", "procs x thr", "req/s", *ratio_labels, "p50 ms", "p99 ms",
            "errors", "srv CPU us/req", "CPU split", "load1", "other cores", "req/s per round"]
    out.append("| " + " | ".join(head) + " |")
    align = ["---", "---:", "---", "---"] + ["---:"] * (len(head) - 4)
    align[head.index("CPU split")] = align[-1] = "---"
    out.append("|" + "|".join(align) + "|")
    for row in rows:
        flag = " (process tree changed)" if row["tree_changed"] else ""
        out.append("| " + " | ".join([
            row["workload"], str(row["c"]), row["config"] + flag, row["shape"],
            _fmt(row["rps"]),
            *[_fmt(row["ratios"].get(label), 2) for label in ratio_labels],
            _fmt(row["p50"], 2), _fmt(row["p99"], 2), str(row["errors"]), _fmt(row["cpu"]),
            " + ".join(f"{k} {v:.0f}" for k, v in row["cpu_split"].items()) if len(row["cpu_split"]) > 1 else "",
            _fmt(row["load1"], 2), f"{row['other']:.2f} / {row['other_max']:.2f}",
            ", ".join(_fmt(v) for v in row["per_round"]),
        ]) + " |")
    out.append("")

    downloads = download_lines(run)
    if downloads:
        mib = run.get("stream_mib", 1024)
        out += [f"### Streamed download ({mib} MiB, 64 KiB chunks from a generator; curl to /dev/null)",
                "", "Median over the runs of all rounds; PSS peak = the largest value sampled "
                "every 0.1 s during any download.", ""] + downloads + [""]

    if run["memory"]:
        out += [
            "### Memory (server process trees after each round's runs; median over rounds)",
            "",
            "| config | procs x thr | processes | RSS sum MiB | PSS sum MiB |",
            "|---|---|---:|---:|---:|",
        ]
        for cfg in run["config_order"]:
            ms = [m for m in run["memory"] if m["config"] == cfg]
            if ms:
                out.append(
                    f"| {cfg} | {ms[0]['shape']} | {_median([m['processes'] for m in ms]):.0f} | "
                    f"{_median([m['rss_mib'] for m in ms]):.1f} | "
                    f"{_median([m['pss_mib'] for m in ms]):.1f} |"
                )
        out.append("")

    out += ["### Server log lines", ""]
    if not run["log_lines"]:
        out += ["None suspicious.", ""]
    for cfg in run["config_order"]:
        entries = [e for e in run["log_lines"] if e["config"] == cfg]
        if not entries:
            continue
        aborts = sum(1 for e in entries if e["kind"] == "client-abort")
        other = [e for e in entries if e["kind"] != "client-abort"]
        text = f"- {cfg}: {aborts} client-abort lines (requests in flight when wrk stopped)"
        text += f", {len(other)} other lines" + (":" if other else ".")
        out.append(text)
        for e in other[:5]:
            out.append(f"  - round {e['round']} `{e['file']}`: `{e['line'][:300]}`")
    out.append("")

    out += ["## Exact configurations", "",
            "`$TMP` = the configuration's directory inside the run's temp dir; "
            "`$BENCH` = the bench/ directory, `$REPO` = the checkout. Ports are picked free per start.", ""]
    for cfg in run["config_order"]:
        for name, text in run["config_files"].get(cfg, {}).items():
            out += [f"### {cfg}: `{name}`", "", "```", text.rstrip(), "```", ""]
    return "\n".join(out) + "\n"
