"""Page file names: a plain name sort gives the server's reading order."""

from __future__ import annotations

import re

from ..client import PageRef

DEFAULT_EXTENSION = "img"


def page_extension(path: str) -> str:
    """The page's real extension, lowercased, or a neutral one if it has none."""
    base = path.rsplit("/", 1)[-1]
    stem, dot, extension = base.rpartition(".")
    if dot and stem and re.fullmatch(r"[A-Za-z0-9]{1,5}", extension):
        return extension.lower()
    return DEFAULT_EXTENSION


def page_names(refs: list[PageRef], *, force_extension: str | None = None) -> list[str]:
    """`001.jpg`, `002.png`, ...: zero-padded to at least three digits."""
    width = max(3, len(str(len(refs))))
    return [
        f"{index:0{width}d}.{force_extension or page_extension(ref.path)}"
        for index, ref in enumerate(refs, start=1)
    ]


def old_server_path(path: str) -> str:
    """How a 0.7 server renames a page's path on extraction: non-ASCII -> hex code point."""
    return "".join(c if ord(c) < 128 else f"{ord(c):04X}" for c in path)
