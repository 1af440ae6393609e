"""The freedesktop.org thumbnail cache, as file managers share it (Thumbnail Managing
Standard): `$XDG_CACHE_HOME/thumbnails/<size class>/<md5 of the file's URI>.png`, a PNG
whose `Thumb::URI` and `Thumb::MTime` text chunks say which file, as of when, it shows.

Thunar (tumbler), Nautilus, Nemo, Dolphin, pcmanfm and GIMP look a file's thumbnail up
there before they read the file. This module knows the names, the URIs and the checks;
it decodes no image (see `thumbimage.py`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

# Size classes and the longest side of their pictures.
SIZE_CLASSES = {"normal": 128, "large": 256, "x-large": 512}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_THUMBNAIL_BYTES = 16 << 20  # a bigger file is no thumbnail we would keep
# What GLib's g_filename_to_uri leaves as it is in a path; every other byte is %XX.
URI_SAFE = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!$&'()*+,-./:=@_~"
)


def default_thumbnail_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "thumbnails"


def file_uri(path: bytes) -> str:
    """The URI file managers compute for an absolute path (GLib's g_filename_to_uri):
    the path's bytes, percent-encoded with upper-case hex, after `file://`."""
    if not path.startswith(b"/"):
        raise ValueError(f"not an absolute path: {path!r}")
    escaped = "".join(chr(b) if b in URI_SAFE else f"%{b:02X}" for b in path)
    return f"file://{escaped}"


def thumbnail_name(uri: str) -> str:
    return hashlib.md5(uri.encode("ascii")).hexdigest() + ".png"


@dataclass(frozen=True, slots=True)
class Target:
    """A file of the mount a thumbnail is for: its URI, and what `stat` says of it."""

    uri: str
    mtime: int  # seconds
    size: int

    @property
    def text(self) -> dict[str, str]:
        """The PNG text chunks a file manager checks (and the size, which some do)."""
        return {
            "Thumb::URI": self.uri,
            "Thumb::MTime": str(self.mtime),
            "Thumb::Size": str(self.size),
            "Software": "lrrfs",
        }


def png_text(data: bytes) -> dict[str, str] | None:
    """The tEXt chunks of a whole, intact PNG (every chunk's CRC checked, up to IEND);
    None if the bytes are not that."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    text: dict[str, str] = {}
    offset = len(PNG_SIGNATURE)
    while offset + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        end = offset + 12 + length
        if end > len(data):
            return None
        body = data[offset + 8 : end - 4]
        if zlib.crc32(kind + body) != struct.unpack_from(">I", data, end - 4)[0]:
            return None
        if kind == b"tEXt" and b"\0" in body:
            key, value = body.split(b"\0", 1)
            text[key.decode("latin-1")] = value.decode("latin-1")
        if kind == b"IEND":
            return text
        offset = end
    return None


def is_valid(path: Path, target: Target) -> bool:
    """A thumbnail is there for this file as it is now (whoever made it): file managers
    would use it, so it is not made again."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_THUMBNAIL_BYTES + 1)
    except OSError:
        return False
    text = png_text(data) if len(data) <= MAX_THUMBNAIL_BYTES else None
    if text is None:
        return False
    size = text.get("Thumb::Size")
    return (
        text.get("Thumb::URI") == target.uri
        and text.get("Thumb::MTime") == str(target.mtime)
        and (size is None or size == str(target.size))
    )


class ThumbnailFolder:
    """The thumbnail cache of the user running the mount."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, size_class: str, target: Target) -> Path:
        return self.root / size_class / thumbnail_name(target.uri)

    def missing(self, target: Target) -> list[str]:
        """The size classes without a valid thumbnail of the file (blocking)."""
        return [c for c in SIZE_CLASSES if not is_valid(self.path(c, target), target)]

    def write(self, size_class: str, target: Target, png: bytes) -> None:
        """Put a thumbnail in place atomically (a reader sees no file or a whole one),
        readable by its owner only, as the standard asks. OSError if the disk says no."""
        path = self.path(size_class, target)
        for folder in (self.root, path.parent):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        temp = path.with_name(f".lrrfs-{os.getpid()}-{path.name}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(png)
            os.replace(temp, path)
        except OSError:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
