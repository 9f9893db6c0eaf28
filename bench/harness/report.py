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
# Configurations our targets are measured against: an extra round (rounds that disagree) runs
# them too, so that every ratio has both sides in the same round.
REFERENCE_CONFIGS = ("apache-embedded", "apache-daemon", "granian", "nginx-uwsgi")

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


# A number is recorded only when the rounds agree: at least `k` of a cell's rounds (k = the
# planned --rounds) lie within AGREE of each other (max - min <= AGREE x their median), for both
# req/s and server CPU per request. bench/run adds rounds for the cells that do not, up to
# 2k - 1 rounds, so that the median of all rounds always lies inside the agreeing ones.
AGREE = 0.10


def agreement(values, k, tol=AGREE):
    """The smallest relative spread of any k of the values, and whether it is within tol."""
    v = sorted(x for x in values if x is not None)
    best = None
    for i in range(len(v) - k + 1):
        window = v[i:i + k]
        med = statistics.median(window)
        if med > 0:
            spread = (window[-1] - window[0]) / med
            best = spread if best is None else min(best, spread)
    return best, best is not None and best <= tol


def disagreeing(records, k, tol=AGREE):
    """{(config, workload)} with a (workload, c) cell whose rounds do not agree yet."""
    out = set()
    for (w, _c, cfg), rs in cells(records).items():
        for key in ("rps", "server_us_per_req"):
            if not agreement([r[key] for r in rs], k, tol)[1]:
                out.add((cfg, w))
    return out


def _pyhost_median(rs, key):
    vals = [r["pyhost"][key] for r in rs if r.get("pyhost")]
    return _median(vals)


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


def summary_rows(records, config_order, workload_order, k=1):
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
                    "vcs": _median([r.get("vcs_per_req", 0.0) for r in rs]),
                    "ics": _median([r.get("ics_per_req", 0.0) for r in rs]),
                    "gil": _pyhost_median(rs, "gil_wait_us"),
                    "adm": _pyhost_median(rs, "admit_wait_us"),
                    "limits": rs[-1]["pyhost"]["limits"] if rs[-1].get("pyhost") else None,
                    "spread_rps": agreement([r["rps"] for r in rs], min(k, len(rs)))[0],
                    "spread_cpu": agreement([r["server_us_per_req"] for r in rs], min(k, len(rs)))[0],
                    "agree": all(agreement([r[key] for r in rs], k)[1]
                                 for key in ("rps", "server_us_per_req")),
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


# Issue 11: (ours, its mod_wsgi 4.9 counterpart in the same mode).
ISSUE11_MODES = [
    ("nginx-embedded", "apache-embedded"),
    ("apache-rwsgi-embedded", "apache-embedded"),
    ("nginx-daemon", "apache-daemon"),
    ("apache-rwsgi-daemon", "apache-daemon"),
]
ISSUE11_APPS = ("django", "flask-api", "flask-page")
# The final issue-5 suite run (results/2026-11-22-suite-final.md): same-round req/s ratio of each
# of ours to mod_wsgi 4.9 in the same mode, per (workload, c). "No worse" = at least 90% of it
# (that run's own rounds spread by more than 10%).
SUITE_FINAL_RATIOS = {
    ("nginx-embedded", "hello"): {16: 3.88, 64: 3.76},
    ("nginx-embedded", "echo1m"): {16: 1.36, 64: 1.87},
    ("nginx-embedded", "sleep10ms"): {16: 0.99, 64: 1.02},
    ("apache-rwsgi-embedded", "hello"): {16: 1.79, 64: 1.54},
    ("apache-rwsgi-embedded", "echo1m"): {16: 0.97, 64: 0.86},
    ("apache-rwsgi-embedded", "sleep10ms"): {16: 1.00, 64: 0.99},
    ("nginx-daemon", "hello"): {16: 2.16, 64: 2.57},
    ("nginx-daemon", "echo1m"): {16: 2.27, 64: 3.01},
    ("nginx-daemon", "sleep10ms"): {16: 1.02, 64: 1.05},
    ("apache-rwsgi-daemon", "hello"): {16: 1.75, 64: 1.80},
    ("apache-rwsgi-daemon", "echo1m"): {16: 1.55, 64: 1.69},
    ("apache-rwsgi-daemon", "sleep10ms"): {16: 1.02, 64: 1.03},
}
NO_WORSE = 0.9


def _ratio_of(records, config, reference, workload, c, key):
    by_round = {}
    for r in records:
        if r["workload"] == workload and r["c"] == c and r["config"] in (config, reference):
            by_round.setdefault(r["round"], {})[r["config"]] = r[key]
    per_round = [v[config] / v[reference] for v in by_round.values()
                 if config in v and reference in v and v[reference] > 0]
    return _median(per_round), per_round


def _target_line(label, med, per_round, ok, wanted):
    verdict = "met" if ok else "**missed**"
    return (f"| {label} | {wanted} | {med:.2f} | {verdict} | "
            f"{', '.join(f'{x:.2f}' for x in per_round)} |")


def issue11_lines(run):
    records = run["records"]
    present = {r["config"] for r in records}
    cs = sorted({r["c"] for r in records})
    lines = []
    for ours, modwsgi in ISSUE11_MODES:
        if ours not in present:
            continue
        daemon = "daemon" in ours
        for w in ISSUE11_APPS:
            for c in cs:
                for ref in (modwsgi, "granian"):
                    if ref not in present:
                        continue
                    med, pr = _ratio_of(records, ours, ref, w, c, "server_us_per_req")
                    if med is not None:
                        lines.append(_target_line(f"{w} c={c}: {ours} / {ref} CPU per request",
                                                  med, pr, med <= 1.0, "<= 1.00"))
                    med, pr = _ratio_of(records, ours, ref, w, c, "rps")
                    if med is None:
                        continue
                    want = 1.0 if (daemon or ref == "granian") else 1.25
                    if daemon and ref == "granian":
                        continue  # the req/s targets of daemon modes are against mod_wsgi daemon
                    if ours == "apache-rwsgi-embedded":
                        want = 1.0
                    lines.append(_target_line(f"{w} c={c}: {ours} / {ref} req/s", med, pr,
                                              med >= want, f">= {want:.2f}"))
        for w in ("hello", "echo1m", "sleep10ms"):
            for c in cs:
                med, pr = _ratio_of(records, ours, modwsgi, w, c, "rps")
                if med is None:
                    continue
                before = SUITE_FINAL_RATIOS.get((ours, w), {}).get(c)
                if before is None:
                    lines.append(_target_line(f"{w} c={c}: {ours} / {modwsgi} req/s (no recorded "
                                              "ratio: informational)", med, pr, True, ""))
                else:
                    lines.append(_target_line(f"{w} c={c}: {ours} / {modwsgi} req/s vs suite-final "
                                              f"{before:.2f}", med, pr, med >= NO_WORSE * before,
                                              f">= {NO_WORSE * before:.2f}"))
    if "nginx-embedded" in present and "granian" in present:
        for c in cs:
            med, pr = _ratio_of(records, "nginx-embedded", "granian", "hello", c, "rps")
            if med is not None:
                lines.append(_target_line(f"hello c={c}: nginx-embedded / granian req/s, every round",
                                          med, pr, all(x > 1.0 for x in pr), "> 1.00 each"))
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


def _spread(row):
    text = "/".join("" if v is None else f"{v:.0%}" for v in (row["spread_rps"], row["spread_cpu"]))
    return text if row["agree"] else f"**{text}**"


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
    if run.get("disagreeing"):
        out += ["## Rounds that did not agree", "",
                f"After {max(r['round'] for r in records)} rounds, these cells still had no "
                f"{run.get('rounds_planned', 1)} rounds within {AGREE:.0%} of each other (req/s or "
                "CPU/req); their numbers are shown but not recorded:", "",
                ", ".join(f"{c} / {w}" for c, w in run["disagreeing"]), ""]
    targets = issue11_lines(run)
    if targets:
        out += ["## Issue 11 targets", "",
                "Same-round ratios (median over rounds, per-round values after) of server CPU per "
                "request and req/s on the real-app workloads, each of our modes against mod_wsgi 4.9 "
                "in the same mode and against granian; hello, 1 MiB POST and 10 ms sleep against the "
                "final issue-5 suite run's same-round ratios to mod_wsgi 4.9.", ""] + targets + [""]
    targets = issue5_lines(run)
    if targets:
        out += ["## Issue 5 targets", "",
                "Same-round req/s ratios on hello (median over rounds, per-round values after), "
                "server CPU per request, PSS of the server process trees (median over rounds), and "
                "wrk errors of the nginx-fronted configurations.", ""] + targets + [""]
    targets = target_lines(records)
    if targets:
        out += ["## Issue 2 targets (same-round req/s ratios)", ""] + targets + [""]

    k = run.get("rounds_planned", 1)
    rows, ratio_labels = summary_rows(records, run["config_order"], run["workload_order"], k)
    out += [
        "## Results",
        "",
        "Medians across rounds. Ratios (`x ...`) are medians of per-round ratios to that reference "
        "in the same round. `errors` = wrk non-2xx + socket errors, summed over rounds. "
        "`srv CPU us/req` = utime+stime of the server process tree(s) per request, wrk excluded; "
        "`CPU split` = the same per service (front end + backend). "
        "`other cores` = CPU used by jobs outside this benchmark during the run (median, max). "
        "`cs/req` = voluntary + involuntary context switches of every server thread per request. "
        "`GIL wait` / `admit wait` = our host's wait for the GIL at its attach points / for "
        "admission, us per request (pyhost counters; blank for peers), `limit` = the admission "
        "limit of each process at the end of the last round. `agree` = the spread of the "
        f"{k} closest rounds (req/s, CPU/req); **bold** when above {AGREE:.0%} (not recorded: "
        "rerun on a quieter machine).",
        "",
    ]
    head = ["app", "c", "config", "procs x thr", "req/s", *ratio_labels, "p50 ms", "p99 ms",
            "errors", "srv CPU us/req", "CPU split", "cs/req", "GIL wait", "admit wait", "limit",
            "agree", "load1", "other cores", "req/s per round"]
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
            f"{row['vcs']:.1f} + {row['ics']:.1f}", _fmt(row["gil"], 1), _fmt(row["adm"], 1),
            ",".join(str(x) for x in row["limits"]) if row["limits"] else "",
            _spread(row), _fmt(row["load1"], 2), f"{row['other']:.2f} / {row['other_max']:.2f}",
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
