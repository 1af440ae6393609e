"""Name handling shared by the test server: page ordering, 0.7 renaming, URL and header quoting.

These mirror what the recorded LANraragi servers do (see /work/shared/lrr-samples), so that a
client tested against the test server meets the same names and the same order as on a real one.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import quote

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "gif", "webp", "avif", "jxl", "bmp", "heic"})
ARCHIVE_SUFFIXES = (".zip", ".cbz", ".tar", ".tar.gz", ".tgz", ".cbt")

# Content types a real server sends for pages; anything else is "application/x-download".
_PAGE_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif"}

_DIGITS = re.compile(r"(\d+)")


def extension_of(name: str) -> str:
    """Lowercased last suffix without the dot ("" when none), like LRR's `extension` field."""
    base = posixpath.basename(name)
    dot = base.rfind(".")
    return base[dot + 1 :].lower() if dot > 0 else ""


def strip_extension(name: str) -> str:
    """File name without its last suffix: LRR's default title and `filename`."""
    dot = name.rfind(".")
    return name[:dot] if dot > 0 else name


def is_image(name: str) -> bool:
    return extension_of(name) in IMAGE_EXTENSIONS


def is_archive_name(name: str) -> bool:
    lower = name.lower()
    return any(lower.endswith(s) for s in ARCHIVE_SUFFIXES) and not lower.startswith(".")


def page_content_type(name: str) -> str:
    return _PAGE_TYPES.get(extension_of(name), "application/x-download")


def natural_key(path: str) -> tuple[tuple[object, ...], str]:
    """Sort key of 0.9 servers: digit runs compare as numbers, text case-insensitively.

    re.split with a capturing group alternates text / digits, so every position of the key holds
    the same type for all paths and tuples always compare.
    """
    parts = _DIGITS.split(path)
    key: list[object] = []
    for i, part in enumerate(parts):
        key.append((int(part), len(part)) if i % 2 else part.casefold())
    return (tuple(key), path)


def legacy_key(path: str) -> str:
    """Sort key of 0.7 servers: digit runs padded to 4 digits, then plain string order."""
    return _DIGITS.sub(lambda m: m.group(1).zfill(4), path)


def rename_non_ascii(path: str) -> str:
    """0.7 extraction renames every non-ASCII character to its uppercase hex code point."""
    return "".join(c if ord(c) < 128 else f"{ord(c):04X}" for c in path)


def normalize_member(name: str) -> str | None:
    """The in-archive name a member is served under, or None to drop it.

    Leading '/' and '.'/'..' segments are resolved inside the archive root ("../../a.png" is
    served as "a.png"), so no name can point outside the archive. Served names are only ever
    looked up in the archive's own member table; nothing is extracted to disk.
    """
    parts: list[str] = []
    for seg in name.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts:
                parts.pop()
            continue
        parts.append(seg)
    return "/".join(parts) or None


def page_url(arcid: str, path: str, *, legacy: bool) -> str:
    """The page URL listed by /files (0.9) or /extract (0.7, relative with a leading '.')."""
    prefix = "./" if legacy else "/"
    return f"{prefix}api/archives/{arcid}/page?path={quote(path, safe='/')}"


def mojo_quote(value: str) -> str:
    """Quote a header parameter like Mojo::Util::quote: backslash-escape '"' and '\\'."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def html_escape(text: str) -> str:
    """Mojo's xml_escape, used by 0.9 on error and success messages (&#39; for the quote)."""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )
