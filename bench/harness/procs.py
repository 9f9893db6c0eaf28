"""Process trees and /proc accounting: start, stop, CPU, memory, machine-wide busy time.

Everything is read from /proc so the harness needs nothing beyond the Python standard library.
CPU times are in clock ticks (SC_CLK_TCK) in /proc, converted to seconds here.
"""

import os
import signal
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def proc_stat(pid):
    """(ppid, starttime ticks, utime+stime seconds, state) of one process, or None if gone.

    The comm field may contain spaces and parentheses, so fields are split after the last ')'.
    """
    text = _read(f"/proc/{pid}/stat")
    if not text:
        return None
    rest = text[text.rfind(")") + 2 :].split()
    # rest[0] is field 3 (state); utime/stime are fields 14/15, starttime field 22.
    ppid = int(rest[1])
    cpu = (int(rest[11]) + int(rest[12])) / CLK_TCK
    start = int(rest[19])
    return ppid, start, cpu, rest[0]


def all_ppids():
    """{pid: ppid} for every process visible now."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st:
                out[int(name)] = st[0]
    return out


def tree_pids(roots):
    """The roots and all their live descendants."""
    ppids = all_ppids()
    children = {}
    for pid, ppid in ppids.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), [r for r in roots if r in ppids]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, ()))
    return seen


def tree_snapshot(roots):
    """{(pid, starttime): cpu seconds} for a process tree; (pid, starttime) survives pid reuse."""
    snap = {}
    for pid in tree_pids(roots):
        st = proc_stat(pid)
        if st:
            snap[(pid, st[1])] = st[2]
    return snap


def tree_cpu_delta(before, after):
    """CPU seconds the tree used between two snapshots, and whether its membership changed.

    A process that appeared in between counts in full; one that exited in between loses the
    CPU it used since `before` (its parent only collects it when reaping), so a changed
    membership is reported and shown in the results.
    """
    used = 0.0
    for key, cpu in after.items():
        used += cpu - before.get(key, 0.0)
    return used, set(before) != set(after)


def thread_stats(pid, tid):
    """(voluntary, involuntary context switches, ns on CPU, ns runnable but waiting for a CPU)
    of one thread, or None if it is gone. The last two come from schedstat."""
    status = _read(f"/proc/{pid}/task/{tid}/status")
    sched = _read(f"/proc/{pid}/task/{tid}/schedstat")
    if not status or not sched:
        return None
    vol = invol = 0
    for line in status.splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            vol = int(line.split()[1])
        elif line.startswith("nonvoluntary_ctxt_switches:"):
            invol = int(line.split()[1])
    run_ns, wait_ns = (int(v) for v in sched.split()[:2])
    return vol, invol, run_ns, wait_ns


def tree_threads(roots):
    """{(pid, tid): thread_stats} for every thread of a process tree."""
    out = {}
    for pid in tree_pids(roots):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            st = thread_stats(pid, int(tid))
            if st:
                out[(pid, int(tid))] = st
    return out


def threads_delta(before, after):
    """Summed (voluntary, involuntary, run s, runqueue wait s) of a tree between two
    tree_threads snapshots; a thread that appeared in between counts in full."""
    total = [0, 0, 0, 0]
    for key, now in after.items():
        then = before.get(key, (0, 0, 0, 0))
        for i in range(4):
            total[i] += now[i] - then[i]
    return total[0], total[1], total[2] / 1e9, total[3] / 1e9


def tree_context_switches(roots):
    """(voluntary, involuntary) context switches summed over every thread of a process tree."""
    vol, invol, _, _ = threads_delta({}, tree_threads(roots))
    return vol, invol


# The counters of our host, pyhost (crates/pyhost/src/stats.rs): each Python-hosting process
# keeps them in <stats dir>/pyhost-<pid>.stats, the magic then little-endian u64s in this order.
PYHOST_MAGIC = b"RWSGIST1"
PYHOST_FIELDS = ("requests", "gil_waits", "gil_wait_ns", "admitted_ns", "cpu_ns", "admit_waits",
                 "admit_wait_ns", "limit", "in_python", "limit_raised", "limit_lowered")
PYHOST_GAUGES = ("limit", "in_python")


def pyhost_stats(directory):
    """{pid: {field: value}} of every pyhost stats file in directory ({} for peers)."""
    out = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return out
    for name in names:
        if not (name.startswith("pyhost-") and name.endswith(".stats")):
            continue
        try:
            with open(os.path.join(directory, name), "rb") as f:
                data = f.read()
        except OSError:
            continue
        if data[:8] != PYHOST_MAGIC:
            continue
        values = [int.from_bytes(data[8 + 8 * i: 16 + 8 * i], "little")
                  for i in range((len(data) - 8) // 8)]
        out[int(name[7:-6])] = dict(zip(PYHOST_FIELDS, values))
    return out


def pyhost_delta(before, after):
    """Counters summed over processes between two pyhost_stats snapshots, gauges as
    "limits" (the list of each process's limit at the end); None when nothing was exported."""
    if not after:
        return None
    total = {k: 0 for k in PYHOST_FIELDS if k not in PYHOST_GAUGES}
    for pid, now in after.items():
        then = before.get(pid, {})
        for k in total:
            total[k] += now.get(k, 0) - then.get(k, 0)
    total["limits"] = sorted(v.get("limit", 0) for v in after.values())
    return total


def machine_busy():
    """(busy seconds summed over all cores, wall time) from the aggregate line of /proc/stat."""
    line = _read("/proc/stat").splitlines()[0].split()
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in line[1:9])
    busy = user + nice + system + irq + softirq + steal
    return busy / CLK_TCK, time.monotonic()


def loadavg():
    return [float(v) for v in _read("/proc/loadavg").split()[:3]]


def tree_memory(roots):
    """(process count, RSS MiB, PSS MiB) summed over a tree, from smaps_rollup."""
    count, rss, pss = 0, 0, 0
    for pid in tree_pids(roots):
        text = _read(f"/proc/{pid}/smaps_rollup")
        if not text:
            continue
        count += 1
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return count, rss / 1024, pss / 1024


def wait_quiet(threshold, limit):
    """Wait up to `limit` s until other jobs use less than `threshold` cores over 1 s.

    Called only while none of our servers run, so all busy time is somebody else's.
    Returns the last sample (cores busy).
    """
    deadline = time.monotonic() + limit
    while True:
        b0, t0 = machine_busy()
        time.sleep(1.0)
        b1, t1 = machine_busy()
        cores = (b1 - b0) / (t1 - t0)
        if cores < threshold or time.monotonic() >= deadline:
            return cores


def _running(pid, start):
    """True if pid still names the process that had this start time and is not a zombie."""
    st = proc_stat(pid)
    return st is not None and st[1] == start and st[3] != "Z"


class Service:
    """One server process started in the foreground by us, stopped by pid."""

    def __init__(self, name, argv, cwd, log_path, env=None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C on the harness must not hit the servers first
        )

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=15.0):
        """SIGTERM to our pid, then SIGKILL (by pid and start time) to anything left of its tree.

        Returns a list of problems (empty when the tree went away on SIGTERM).
        """
        problems = []
        members = {}
        for pid in tree_pids([self.pid]):
            st = proc_stat(pid)
            if st:
                members[pid] = st[1]
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                problems.append(f"{self.name}: pid {self.pid} ignored SIGTERM for {timeout:.0f} s")
                self.proc.kill()
                self.proc.wait()
        # Descendants may outlive the parent briefly while they finish; give them a moment.
        deadline = time.monotonic() + 5.0
        while True:
            left = [p for p, s in members.items() if _running(p, s)]
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        for pid in left:
            problems.append(f"{self.name}: descendant pid {pid} survived; sent SIGKILL")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()
        return problems
