"""Where files copied into the mount wait until the server has them.

A file created at the top of the mount (or in a category's folder) is written to a
spool file on disk, never a RAM-backed /tmp, and uploaded when it is closed
(uploads.py). The spool folder is in the mount's cache folder (`<cache dir>/<server>/uploads`),
so that `--cache-dir` on a big disk takes the copies too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from ..library.diskcache import process_alive

log = logging.getLogger(__name__)

SPOOL_FOLDER = "uploads"  # in the mount's cache folder; `lrrfs cache clear` leaves it
SPOOL_PREFIX = "upload-"
UNSENT = "unsent"  # files the server never got, kept for their owner (see `keep`)


class Spool:
    """Where uploads wait: files on disk (never a RAM-backed /tmp), in the mount's cache
    folder, each named by the PID of the mount that made it. At unmount, a file the
    server never got is kept under `unsent/`; a mount killed mid-copy leaves its files to
    the next one to delete (partial copies: their sources are elsewhere)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def new_file(self) -> tuple[int, Path]:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.folder / f"{SPOOL_PREFIX}{os.getpid()}-{time.monotonic_ns()}"
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), path

    def keep(self, path: Path, name: str) -> Path:
        """Move a spool file the server never got to `unsent/<name>` (a free name), where
        no sweep deletes it; its new path."""
        folder = self.folder / UNSENT
        folder.mkdir(mode=0o700, exist_ok=True)
        target, number = folder / name, 1
        while target.exists():
            number += 1
            target = folder / f"{number} {name}"
        path.rename(target)
        return target

    def sweep(self) -> None:
        """Delete the files of mounts no longer running."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return  # none yet
        for name in names:
            pid = name.removeprefix(SPOOL_PREFIX).split("-", 1)[0]
            if name.startswith(SPOOL_PREFIX) and pid.isdigit() and not process_alive(int(pid)):
                with contextlib.suppress(OSError):
                    (self.folder / name).unlink()
                    log.info("removed %s, left by a mount that ended mid-copy", name)
