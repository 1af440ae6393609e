"""Editors' scratch files (swap files, backups, temp files), kept in memory.

Editors save through files of their own beside the one they edit (`.x.swp`,
`4913`, `x~`, `.goutputstream-*`, `sedXXXXXX`). They live only in the mount,
only in their folder, never reach the server, and are gone after unmount.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass, field
from itertools import count

import pyfuse3

TOTAL_LIMIT = 64 << 20  # bytes of scratch files per mount
FILE_MODE_MASK = 0o666  # nothing in the mount is executable


@dataclass(slots=True)
class ScratchFile:
    number: int
    arcid: str
    name: str
    mode: int
    data: bytearray = field(default_factory=bytearray)
    mtime_ns: int = field(default_factory=time.time_ns)


class ScratchFiles:
    def __init__(self, limit: int = TOTAL_LIMIT) -> None:
        self._files: dict[int, ScratchFile] = {}
        self._by_name: dict[tuple[str, str], int] = {}
        self._numbers = count(1)
        self._limit = limit
        self.used = 0

    def find(self, arcid: str, name: str) -> ScratchFile | None:
        number = self._by_name.get((arcid, name))
        return None if number is None else self._files[number]

    def get(self, number: int) -> ScratchFile:
        scratch = self._files.get(number)
        if scratch is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return scratch

    def names(self, arcid: str) -> list[tuple[str, ScratchFile]]:
        return [(s.name, s) for s in self._files.values() if s.arcid == arcid]

    def create(self, arcid: str, name: str, mode: int, data: bytes = b"") -> ScratchFile:
        self._reserve(len(data))
        scratch = ScratchFile(next(self._numbers), arcid, name, mode & FILE_MODE_MASK)
        scratch.data += data
        self._files[scratch.number] = scratch
        self._by_name[(arcid, name)] = scratch.number
        return scratch

    def write(self, scratch: ScratchFile, offset: int, data: bytes) -> None:
        self._reserve(max(0, offset + len(data) - len(scratch.data)))
        if offset > len(scratch.data):
            scratch.data.extend(b"\0" * (offset - len(scratch.data)))
        scratch.data[offset : offset + len(data)] = data
        scratch.mtime_ns = time.time_ns()

    def truncate(self, scratch: ScratchFile, size: int) -> None:
        growth = size - len(scratch.data)
        self._reserve(max(0, growth))
        if growth < 0:
            del scratch.data[size:]
            self.used += growth
        else:
            scratch.data.extend(b"\0" * growth)
        scratch.mtime_ns = time.time_ns()

    def remove(self, scratch: ScratchFile) -> None:
        self._files.pop(scratch.number, None)
        if self._by_name.get((scratch.arcid, scratch.name)) == scratch.number:
            del self._by_name[(scratch.arcid, scratch.name)]
        self.used -= len(scratch.data)

    def rename(self, scratch: ScratchFile, name: str) -> None:
        """Give `scratch` a new name in its folder, replacing a scratch file of that name."""
        target = self.find(scratch.arcid, name)
        if target is not None and target is not scratch:
            self.remove(target)
        del self._by_name[(scratch.arcid, scratch.name)]
        scratch.name = name
        self._by_name[(scratch.arcid, name)] = scratch.number

    def _reserve(self, size: int) -> None:
        if self.used + size > self._limit:
            raise pyfuse3.FUSEError(errno.ENOSPC)
        self.used += size
