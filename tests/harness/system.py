"""The machine's own nginx, Apache and dpkg, for the package test (tests/test_packages.py).

That test installs our .debs and starts the SYSTEM servers with their packaged configurations, on
a machine where other test runs start private servers at the same time. So everything here is
careful: one package test at a time (a lock), every change to /etc recorded in a backup file
before it is made and undone afterwards (also at the start of the next run, should a run have
been killed half-way), servers stopped by the pid they wrote, and a snapshot of the system
configuration directories to prove that we left them as we found them.
"""

import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

LOCK_PATH = Path("/run/lock/rwsgi-package-test.lock")
BACKUP = Path("/var/tmp/rwsgi-package-test-backup.json")
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")

# What an installed, enabled and purged module package can touch.
WATCHED = [Path(p) for p in ("/etc/nginx", "/etc/apache2", "/var/lib/apache2",
                             "/usr/share/nginx/modules-available", "/usr/lib/nginx/modules",
                             "/usr/lib/apache2/modules", "/etc/rwsgi")]


class Lock:
    """An exclusive lock across processes: only one package test on the machine at a time."""

    def __init__(self, timeout: float = 600):
        self.timeout = timeout
        self.fd = None

    def __enter__(self):
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another package test holds {LOCK_PATH}")
                time.sleep(1)

    def __exit__(self, *exc):
        os.close(self.fd)


def snapshot() -> dict:
    """path -> (kind, mode, content hash or link target) for everything under WATCHED."""
    out = {}
    for top in WATCHED:
        if not top.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                p = Path(dirpath, name)
                st = p.lstat()
                if stat.S_ISLNK(st.st_mode):
                    out[str(p)] = ("link", os.readlink(p))
                elif stat.S_ISDIR(st.st_mode):
                    out[str(p)] = ("dir", oct(st.st_mode))
                else:
                    digest = hashlib.sha256(p.read_bytes()).hexdigest()
                    out[str(p)] = ("file", oct(st.st_mode), digest)
    return out


def diff(before: dict, after: dict) -> list:
    lines = []
    for p in sorted(set(before) | set(after)):
        if before.get(p) != after.get(p):
            lines.append(f"{p}: {before.get(p)} -> {after.get(p)}")
    return lines


class Changes:
    """Temporary changes to system files, each recorded in BACKUP before it is made."""

    def __init__(self):
        self.record = {"files": {}, "links": {}, "created": []}

    def _save(self):
        BACKUP.write_text(json.dumps(self.record))

    def replace_file(self, path: Path, text: str):
        path = Path(path)
        if str(path) not in self.record["files"]:
            self.record["files"][str(path)] = {"text": path.read_text(),
                                               "mode": path.stat().st_mode & 0o7777}
            self._save()
        path.write_text(text)

    def remove_link(self, path: Path):
        path = Path(path)
        if path.is_symlink():
            self.record["links"][str(path)] = os.readlink(path)
            self._save()
            path.unlink()

    def create(self, path: Path, text: str, mode=0o644):
        path = Path(path)
        assert not path.exists() and not path.is_symlink(), f"{path} exists already"
        self.record["created"].append(str(path))
        self._save()
        path.write_text(text)
        path.chmod(mode)

    def undo(self):
        undo_record(self.record)
        self.record = {"files": {}, "links": {}, "created": []}
        BACKUP.unlink(missing_ok=True)


def undo_record(record: dict):
    for p in record["created"]:
        Path(p).unlink(missing_ok=True)
    for p, target in record["links"].items():
        if not Path(p).is_symlink():
            os.symlink(target, p)
    for p, saved in record["files"].items():
        Path(p).write_text(saved["text"])
        os.chmod(p, saved["mode"])


def undo_leftovers():
    """Undo what a killed earlier run could not."""
    if BACKUP.exists():
        undo_record(json.loads(BACKUP.read_text()))
        BACKUP.unlink()


def dpkg(*args, timeout: float = 180) -> subprocess.CompletedProcess:
    """dpkg ARGS, waiting while another dpkg/apt run holds the lock."""
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(["dpkg", *map(str, args)], capture_output=True, text=True,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if r.returncode == 0 or "lock" not in r.stderr or time.monotonic() > deadline:
            return r
        time.sleep(2)


def installed(package: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package],
                       capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.startswith("ii")


def known_to_dpkg(package: str) -> bool:
    """Installed or with configuration files left (anything but purged)."""
    r = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package],
                       capture_output=True, text=True)
    return r.returncode == 0 and not r.stdout.startswith("un") and r.stdout.strip() != ""


def pid_from(path: Path):
    try:
        pid = int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def a2(cmd: str, *args) -> subprocess.CompletedProcess:
    """a2enmod / a2dismod / a2query with their real messages."""
    return subprocess.run([f"/usr/sbin/{cmd}", *args], capture_output=True, text=True)


def module_marker(name: str):
    """How Apache's module state records `name`: ("enabled", "maint"|"admin") etc., or None."""
    for d in Path("/var/lib/apache2/module").glob("*_by_*"):
        if (d / name).exists():
            state, _, by = d.name.partition("_by_")
            return state, by
    return None


def remove_new_empty_dirs(top: Path, before: dict):
    """rmdir the empty directories under `top` that the `before` snapshot does not have (a2enmod
    and a2dismod, run as an admin, create their state directories on first use)."""
    for d in sorted(Path(top).glob("**/"), reverse=True):
        if str(d) not in before and d != Path(top) and not any(d.iterdir()):
            d.rmdir()
