"""Who opens pages: a person turning them in a viewer, or a program reading in bulk.

Reading progress is the server's record of how far a person read. `rsync`, `cp`, `file`,
a thumbnailer or a script walking every page must not move it, or a backup marks every
archive read. A program counts as bulk when its name says so (backup, copy and indexing
tools, thumbnailers), or when it opens pages of one archive faster than anyone reads:
more than `BULK_PAGES` within `BULK_SECONDS` (a viewer preloads a page or two).
"""

from __future__ import annotations

import time
from collections import deque

BULK_PAGES = 6
BULK_SECONDS = 2.0
NAME_SECONDS = 60.0  # a pid's name is read again after this (pids are reused)
# Backup, copy and indexing tools (thumbnailers are told apart by `named_thumbnailer`).
BULK_PROGRAMS = frozenset({
    "rsync", "cp", "mv", "tar", "bsdtar", "cpio", "file", "find", "du", "dd", "cat", "md5sum",
    "sha1sum", "sha256sum", "sha512sum", "b2sum", "cksum", "zip", "unzip", "7z", "7za", "7zz",
    "borg", "restic", "rclone", "rdiff-backup", "duplicity", "kopia", "updatedb",
    "plocate", "mlocate", "tracker-extract", "tracker-miner-f", "baloo_file",
    "baloo_file_extr", "identify", "convert", "magick", "exiftool", "fdupes", "jdupes",
    "rmlint", "czkawka_cli",
})  # fmt: skip


def program_name(pid: int) -> str:
    """The name the kernel knows a process by ("" if it is gone)."""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as comm:
            return comm.read().strip()
    except OSError:
        return ""


def named_bulk(name: str) -> bool:
    return name in BULK_PROGRAMS or named_thumbnailer(name)


def named_thumbnailer(name: str) -> bool:
    """A file manager's thumbnailer: tumbler's daemon, or a helper named for it
    (gdk-pixbuf-thumbnailer, ffmpegthumbnailer, evince-thumbnailer...; the kernel keeps 15
    characters of a name: "gdk-pixbuf-thum")."""
    return name == "tumblerd" or "thum" in name


class Readers:
    """Tells, per opened page, whether a person is reading (see the module's docstring)."""

    def __init__(self) -> None:
        self._names: dict[int, tuple[str, float]] = {}
        self._opens: dict[tuple[int, str], deque[float]] = {}
        self._bulk: dict[tuple[int, str], float] = {}  # (pid, arcid) -> when it was seen

    def opened(self, pid: int, arcid: str) -> tuple[bool, bool]:
        """Program `pid` opened a page of `arcid`: whether a person reads it, and whether
        the program was found reading in bulk just now (its earlier opens did not count)."""
        now = time.monotonic()
        self._forget_old(now)
        key = (pid, arcid)
        if key in self._bulk or named_bulk(self._name(pid, now)):
            self._bulk[key] = now
            return False, False
        opens = self._opens.setdefault(key, deque())
        opens.append(now)
        while opens and now - opens[0] > BULK_SECONDS:
            opens.popleft()
        if len(opens) > BULK_PAGES:
            del self._opens[key]
            self._bulk[key] = now
            return False, True
        return True, False

    def thumbnailer(self, pid: int) -> bool:
        """Whether program `pid` is a file manager's thumbnailer."""
        return named_thumbnailer(self._name(pid, time.monotonic()))

    def _name(self, pid: int, now: float) -> str:
        name, when = self._names.get(pid, ("", -NAME_SECONDS))
        if now - when >= NAME_SECONDS:
            name = program_name(pid)
            self._names[pid] = (name, now)
        return name

    def _forget_old(self, now: float) -> None:
        if len(self._names) + len(self._opens) + len(self._bulk) < 4096:
            return  # small: not worth a sweep
        self._names = {p: nw for p, nw in self._names.items() if now - nw[1] < NAME_SECONDS}
        self._opens = {k: q for k, q in self._opens.items() if q and now - q[-1] < BULK_SECONDS}
        self._bulk = {k: t for k, t in self._bulk.items() if now - t < NAME_SECONDS}
