"""The kernel's read-ahead for the mount: how far ahead of a reader it asks for bytes.

The archive file goes through the kernel's page cache. A program's reads reach
lrrfs as the kernel's read-ahead requests, at most `read_ahead_kb` of the
mount's backing device ahead of the reader (128 KiB by default for a FUSE
mount, whatever the FUSE read size allows). At 128 KiB a `cat` costs one
synchronous round trip through lrrfs per 128 KiB; at 1 MiB the kernel keeps
several 1 MiB-or-smaller reads in flight ahead of the reader (libfuse 3 offers
max_pages for 1 MiB requests), which measured fastest here (docs/performance.md:
4 MiB was slower, too much asked for ahead of small readers). Only root may set
it; otherwise the default stays, which is only slower.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

READ_AHEAD_KB = 1024
_OCTAL = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space as \040


def device_of(mountpoint: Path) -> str | None:
    """The mount's "major:minor", from /proc/self/mountinfo: no call into the mount
    (its handlers do not run yet)."""
    # The parent's real path: a stat of the mount point itself would wait for the mount.
    absolute = os.path.abspath(mountpoint)
    target = os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    found = None
    for line in lines:
        fields = line.split()
        path = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[4]) if len(fields) > 4 else ""
        if path == target:
            found = fields[2]  # the last mount on the path is the one on top
    return found


def set_read_ahead(mountpoint: Path, kilobytes: int = READ_AHEAD_KB) -> None:
    device = device_of(mountpoint)
    if device is None:
        return
    try:
        Path(f"/sys/class/bdi/{device}/read_ahead_kb").write_text(str(kilobytes))
    except OSError as exc:
        log.debug("read-ahead of the mount left at the default: %s", exc)
