"""Multipart bodies spooled to disk, as Mojolicious does with large uploads.

An upload of gigabytes is never held in memory: the body is copied to a file
beside the library (a chunk at a time), the parts are found in it through
mmap, and a file part is read back as a range of that file.
"""

from __future__ import annotations

import mmap
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from io import BufferedIOBase
from pathlib import Path

CHUNK = 1 << 20
_DISPOSITION = re.compile(rb'(\w+)="((?:[^"\\]|\\.)*)"')


class IncompleteBody(ValueError):
    """The client sent less than its Content-Length (it went away)."""


@dataclass(frozen=True, slots=True)
class FilePart:
    """A file part of a multipart body: bytes start..end of the spooled body."""

    filename: str
    path: Path
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    def chunks(self, limit: int | None = None) -> Iterator[bytes]:
        left = self.size if limit is None else min(limit, self.size)
        with open(self.path, "rb") as f:
            f.seek(self.start)
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    def head(self, size: int) -> bytes:
        return b"".join(self.chunks(size))


def spool(rfile: BufferedIOBase, length: int, folder: Path) -> Path:
    """Copy `length` bytes of the request body to a new hidden file in `folder`."""
    fd, name = tempfile.mkstemp(prefix=".lrrfs-body-", dir=folder)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            left = length
            while left > 0:
                chunk = rfile.read(min(CHUNK, left))
                if not chunk:
                    raise IncompleteBody(f"the body ended {left} bytes short")
                out.write(chunk)
                left -= len(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def parse(ctype: str, path: Path) -> tuple[list[tuple[str, str]], dict[str, FilePart]]:
    """Form fields and file parts of the multipart body spooled at `path`."""
    found = re.search(r'boundary="?([^";]+)"?', ctype)
    form: list[tuple[str, str]] = []
    files: dict[str, FilePart] = {}
    if found is None or path.stat().st_size == 0:
        return form, files
    delimiter = b"--" + found.group(1).encode("latin-1")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as body:
        pos = body.find(delimiter)
        while pos >= 0:
            pos += len(delimiter)
            if body[pos : pos + 2] == b"--":
                break
            head_end = body.find(b"\r\n\r\n", pos)
            if head_end < 0:
                break
            following = body.find(b"\r\n" + delimiter, head_end + 4)
            if following < 0:
                break
            head = body[pos:head_end]
            params = dict(_DISPOSITION.findall(head))
            name = params.get(b"name", b"").decode("utf-8", "replace")
            start, end = head_end + 4, following
            if b"filename" in params:
                filename = params[b"filename"].decode("utf-8", "replace")
                files[name] = FilePart(filename, path, start, end)
            elif name:
                form.append((name, body[start:end].decode("utf-8", "replace")))
            pos = following + 2
    return form, files
