"""`lrrfs status`: what each lrrfs mount is doing, from the status files its process writes.

A mount process writes a small JSON file every couple of seconds (and at once
when mounted) under `$XDG_RUNTIME_DIR/lrrfs/` (or `/tmp/lrrfs-<uid>/`), named
from its mount point, and removes it at unmount. `lrrfs status` lists the
mounts of type fuse.lrrfs in /proc/self/mountinfo, finds their files, checks
that the process is alive and still writing, and prints a table or JSON.
The file holds counters and the server's address, never the API key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from . import __version__
from .library.diskcache import process_alive

if TYPE_CHECKING:
    from .library import Library
    from .mount import MountOptions

log = logging.getLogger(__name__)

FSTYPE = "fuse.lrrfs"
INTERVAL = 2.0  # seconds between writes of a mount's status file
STALE_AFTER = 15.0  # a file older than this, from a live process: the process is stuck
FORMAT = 1


# -- where the files live --------------------------------------------------------------------


def runtime_dir() -> Path:
    """Where this process writes: its session's runtime dir, else a private folder in /tmp."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "lrrfs"
    return Path(f"/tmp/lrrfs-{os.getuid()}")


def candidate_dirs(uid: int) -> list[Path]:
    """Where a mount by `uid` may have written: its session's runtime dir, or /tmp.

    A mount made outside the user's session (from fstab, at boot) has no
    XDG_RUNTIME_DIR and falls back to /tmp, so readers look in every place.
    """
    dirs = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and uid == os.getuid() and os.path.isdir(runtime):
        dirs.append(Path(runtime) / "lrrfs")
    dirs += [Path(f"/run/user/{uid}/lrrfs"), Path(f"/tmp/lrrfs-{uid}")]
    return list(dict.fromkeys(dirs))


def status_name(mountpoint: Path) -> str:
    """A file name for a mount point: readable, and unique thanks to a hash of the path."""
    text = str(mountpoint)
    digest = hashlib.sha256(os.fsencode(text)).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/"))[-80:] or "root"
    return f"{readable}-{digest}.json"


def _own_private_dir(path: Path) -> Path:
    """Make `path` (mode 700), refusing one that someone else made (/tmp is shared)."""
    path.mkdir(mode=0o700, exist_ok=True)  # never parents: a missing runtime dir is not ours
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"{path} is not a folder of this user's")
    if info.st_mode & 0o077:
        path.chmod(0o700)
    return path


# -- the writing side (in the mount process) ---------------------------------------------------


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks: tells a reused PID from the original."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[19]


def public_url(url: str) -> str:
    """The URL without any user:password@ part."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def snapshot(options: MountOptions, library: Library, started: float) -> dict[str, Any]:
    """The mount's state for its status file: counters and names only, never the key."""
    from .library.background import FAILURES

    info = library.info
    used, most = library.cache_usage()
    stats = library.client.stats
    return {
        "format": FORMAT,
        "lrrfs_version": __version__,
        "pid": os.getpid(),
        "pid_start": _process_start(os.getpid()),
        "mountpoint": str(options.mountpoint),
        "server": public_url(options.url),
        "server_name": info.name if info else None,
        "server_version": info.version if info else None,
        "archives": len(library),
        "cache_bytes": used,
        "cache_max_bytes": most,
        "disk_cache_bytes": library.disk_cache_usage()[0],
        "disk_cache_max_bytes": library.disk_cache_usage()[1],
        "requests": stats.requests,
        "errors": stats.errors + FAILURES.count,  # requests failed, and what else failed
        "in_flight": stats.in_flight,
        "background_failures": FAILURES.count,
        "problems": list(FAILURES.recent),  # the last background failures, newest last
        "read_only": options.read_only,
        **library.client.link.state(),  # online, since when, the last error
        "uploads": [  # files being copied in, and how far they got
            {"name": u.name, "sent": u.sent, "total": u.total} for u in library.uploads.values()
        ],
        "started": started,
        "updated": time.time(),
    }


class StatusFile:
    """One mount's status file; failures are logged once and never stop the mount."""

    def __init__(self, mountpoint: Path) -> None:
        self.path: Path | None = None
        try:
            self.path = _own_private_dir(runtime_dir()) / status_name(mountpoint)
        except OSError as exc:
            log.warning("no status file for lrrfs status: %s", exc)

    def write(self, state: dict[str, Any]) -> None:
        if self.path is None:
            return
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
            os.replace(temporary, self.path)  # readers never see half a file
        except OSError as exc:
            log.warning("cannot write status file %s: %s", self.path, exc)
            self.path = None

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


# -- the reading side (`lrrfs status`) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MountEntry:
    mountpoint: Path
    source: str
    uid: int


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def lrrfs_mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[MountEntry]:
    entries = []
    for line in mountinfo.read_text(errors="surrogateescape").splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 2 or tail[0] != FSTYPE:
            continue
        options = dict(o.partition("=")[::2] for o in (tail[2] if len(tail) > 2 else "").split(","))
        uid = int(options.get("user_id") or os.getuid())
        entries.append(MountEntry(Path(_unescape(fields[4])), _unescape(tail[1]), uid))
    return entries


def _read_status(entry: MountEntry) -> dict[str, Any] | None:
    """The newest status file written for this mount point, wherever it is."""
    found = []
    for folder in candidate_dirs(entry.uid):
        try:
            state = json.loads((folder / status_name(entry.mountpoint)).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(state, dict) and state.get("mountpoint") == str(entry.mountpoint):
            found.append(state)
    return max(found, key=lambda s: s.get("updated", 0), default=None)


def _alive(state: dict[str, Any]) -> bool:
    pid = state.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if not process_alive(pid):
        return False
    start = state.get("pid_start")
    return start is None or _process_start(pid) in (None, start)


def mount_state(entry: MountEntry) -> dict[str, Any]:
    """What `lrrfs status --json` shows for one mount."""
    state = _read_status(entry) or {}
    if not state:
        health = "unknown"
    elif not _alive(state):
        health = "dead"
    elif time.time() - float(state.get("updated", 0)) > STALE_AFTER:
        health = "not responding"
    else:
        health = "ok"
    return {**state, "mountpoint": str(entry.mountpoint), "source": entry.source, "state": health}


HINTS = {
    "unknown": "no status file: mounted by another user (run lrrfs status as that user) "
    "or by an older lrrfs",
    "dead": "its lrrfs process is gone: `lrrfs umount` it, then mount again",
    "not responding": "its lrrfs process has stopped updating its status: it may be stuck",
}


def _mib(value: Any) -> str:
    return f"{value / (1 << 20):.0f}M" if isinstance(value, int | float) else "-"


def _row(state: dict[str, Any]) -> list[str]:
    def field(name: str) -> str:
        value = state.get(name)
        return "-" if value is None else str(value)

    version = " ".join(v for v in (state.get("server_name"), state.get("server_version")) if v)
    return [
        field("mountpoint"),
        state.get("server") or state["source"],
        version or "-",
        field("archives"),
        f"{_mib(state.get('cache_bytes'))}/{_mib(state.get('cache_max_bytes'))}",
        field("requests"),
        field("errors"),
        field("in_flight"),
        {True: "online", False: "offline"}.get(state.get("online"), "-"),  # type: ignore[arg-type]
        field("pid"),
        state["state"],
    ]


HEADER = ["MOUNTPOINT", "SERVER", "VERSION", "ARCHIVES", "CACHE", "REQUESTS", "ERRORS",
          "IN FLIGHT", "CONNECTION", "PID", "STATE"]  # fmt: skip


def table(states: list[dict[str, Any]]) -> str:
    rows = [HEADER, *(_row(s) for s in states)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    for state in states:
        if state["state"] in HINTS:
            lines.append(f"{state['mountpoint']}: {HINTS[state['state']]}")
        lines += _connectivity(state)
        lines += _problems(state)
        lines += _uploads(state)
    return "\n".join(lines)


def _uploads(state: dict[str, Any]) -> list[str]:
    """The uploads under way, one line each: bytes sent of how many."""
    uploads = state.get("uploads")
    if not isinstance(uploads, list):
        return []
    return [
        f"{state['mountpoint']}: uploading {u.get('name')}: {_mib(u.get('sent'))} "
        f"of {_mib(u.get('total'))}"
        for u in uploads
        if isinstance(u, dict)
    ]


PROBLEMS_SHOWN = 3


def _clock(when: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(when or 0)))


def _connectivity(state: dict[str, Any]) -> list[str]:
    """Online or offline since when, and the last error reaching the server."""
    if "online" not in state:
        return []
    where = state["mountpoint"]
    word = "online" if state["online"] else "offline (cached files only)"
    lines = [f"{where}: {word} since {_clock(state.get('connectivity_since'))}"]
    if state.get("last_error"):
        at = state.get("last_error_at")
        when = f" at {_clock(at)}" if at else ""
        lines.append(f"{where}: last error{when}: {state['last_error']}")
    return lines


def _problems(state: dict[str, Any]) -> list[str]:
    """The last few background failures of a mount, one line each."""
    problems = state.get("problems")
    if not isinstance(problems, list):
        return []
    lines = []
    for problem in problems[-PROBLEMS_SHOWN:]:
        if not isinstance(problem, dict):
            continue
        when = time.strftime("%H:%M:%S", time.localtime(float(problem.get("time") or 0)))
        kind = "bug" if problem.get("bug") else "failed"
        lines.append(
            f"{state['mountpoint']}: {when} {kind}: {problem.get('what')}: {problem.get('error')}"
        )
    return lines


def _same_place(a: Path, b: Path) -> bool:
    # realpath of the parent only: the mount point itself may be a dead mount.
    def canonical(p: Path) -> str:
        p = Path(os.path.abspath(p))
        return os.path.join(os.path.realpath(p.parent), p.name)

    return canonical(a) == canonical(b)


def run(mountpoint: Path | None, as_json: bool) -> int:
    """Print the state of every lrrfs mount (or of one); 1 if any is not ok or not found."""
    entries = lrrfs_mounts()
    if mountpoint is not None:
        entries = [e for e in entries if _same_place(e.mountpoint, mountpoint)]
        if not entries:
            print(f"lrrfs: {mountpoint} is not an lrrfs mount", file=sys.stderr)
            return 1
    states = [mount_state(e) for e in entries]
    if as_json:
        print(json.dumps(states, indent=1, sort_keys=True))
    elif states:
        print(table(states))
    else:
        print("no lrrfs mounts")
    return 0 if all(s["state"] == "ok" for s in states) else 1
