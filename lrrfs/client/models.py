"""Typed views of LANraragi's JSON answers, tolerant of both API generations.

Old servers (0.7) send `isnew` as "true"/"false", `/api/info` values as strings
and none of `filename`, `extension`, `size`, `summary`, `lastreadtime`; those
fields are `None` here when the server did not send them.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any

from .errors import BadResponse

ARCID_RE = re.compile(r"[0-9a-f]{40}")
MAX_EPOCH = 1 << 34  # seconds (the year 2514): a later date is no date
MAX_PAGES = 100_000  # pages of one archive, at most: a listing beyond is nonsense


def _bool(value: Any) -> bool:
    """LRR booleans: JSON true/false, "true"/"false", 1/0 or "1"/"0"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return False


NUMBER_RE = re.compile(r"[0-9]{1,18}")  # ASCII digits only: '²' passes str.isdigit()
LARGEST = 10**18 - 1  # past any real size or count; an int64 st_size holds it


class LongNumber:
    """A JSON integer of more digits than `int()` takes (4,300): no field accepts it."""

    def __repr__(self) -> str:
        return "a number of thousands of digits"


def json_int(text: str) -> int | LongNumber:
    """`parse_int` for JSON that may hold integers too long for `int()`."""
    try:
        return int(text)
    except ValueError:
        return LongNumber()


def number(text: str) -> int | None:
    """A non-negative number the server wrote as text, or None if it is not one."""
    text = text.strip()
    return int(text) if NUMBER_RE.fullmatch(text) else None


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise BadResponse(f"field {field!r} is a boolean, expected a number")
    if isinstance(value, int):
        if not -LARGEST <= value <= LARGEST:
            raise BadResponse(f"field {field!r} is out of range")
        return value
    if isinstance(value, str):
        parsed = number(value.removeprefix("-"))
        if parsed is not None:
            return -parsed if value.strip().startswith("-") else parsed
    raise BadResponse(f"field {field!r} is {type(value).__name__}, expected a number")


def _optional_int(obj: dict[str, Any], field: str) -> int | None:
    value = obj.get(field)
    return None if value is None else _int(value, field)


def _optional_str(obj: dict[str, Any], field: str) -> str | None:
    value = obj.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadResponse(f"field {field!r} is {type(value).__name__}, expected a string")
    return value


def archive_id(value: Any) -> str:
    """An archive id as the server lists it: 40 lowercase hex characters."""
    if not isinstance(value, str) or not ARCID_RE.fullmatch(value):
        raise BadResponse(f"archive id {str(value)[:60]!r} is not 40 hex characters")
    return value


def split_tags(tags: str) -> tuple[str, ...]:
    """The server's comma-separated tag string as a tuple of trimmed tags.

    Tags are interned: a library of 100,000 archives repeats the same few thousand."""
    return tuple(sys.intern(tag.strip()) for tag in tags.split(",") if tag.strip())


@dataclass(frozen=True, slots=True)
class ArchiveMeta:
    """One archive's metadata as the server reports it."""

    arcid: str
    title: str
    tags: tuple[str, ...]
    isnew: bool
    pagecount: int
    progress: int
    summary: str | None = None
    filename: str | None = None
    extension: str | None = None
    size: int | None = None
    lastreadtime: int | None = None

    @classmethod
    def from_json(cls, obj: Any) -> ArchiveMeta:
        if not isinstance(obj, dict):
            raise BadResponse(f"archive entry is {type(obj).__name__}, expected an object")
        arcid = archive_id(obj.get("arcid"))
        title = obj.get("title")
        if not isinstance(title, str):
            raise BadResponse(f"archive {arcid}: title is {type(title).__name__}")
        tags = obj.get("tags") or ""
        if not isinstance(tags, str):
            raise BadResponse(f"archive {arcid}: tags is {type(tags).__name__}")
        size = _optional_int(obj, "size")
        if size is not None and size < 0:
            raise BadResponse(f"archive {arcid}: negative size")
        pagecount = _int(obj.get("pagecount") or 0, "pagecount")
        if not 0 <= pagecount <= MAX_PAGES:
            raise BadResponse(f"archive {arcid}: a page count of {pagecount}")
        filename = _optional_str(obj, "filename")
        extension = _optional_str(obj, "extension")
        return cls(
            arcid=arcid,
            title=title,
            tags=split_tags(tags),
            isnew=_bool(obj.get("isnew")),
            pagecount=pagecount,
            progress=_int(obj.get("progress") or 0, "progress"),
            # null on old entries of servers that keep summaries; absent on 0.7
            summary=(_optional_str(obj, "summary") or "") if "summary" in obj else None,
            filename=title if filename == title else filename,  # one string, not two
            extension=None if extension is None else sys.intern(extension),
            size=size,
            lastreadtime=_optional_int(obj, "lastreadtime"),
        )

    @property
    def date_added(self) -> int | None:
        """The `date_added:<epoch>` tag the server adds, if any."""
        for tag in self.tags:
            namespace, _, value = tag.partition(":")
            if namespace.strip() == "date_added":
                added = number(value)
                return added if added is not None and added <= MAX_EPOCH else None
        return None


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What `/api/info` tells a client."""

    version: str
    name: str
    nofun_mode: bool
    resizes_images: bool
    has_password: bool
    tracks_progress: bool = True

    @classmethod
    def from_json(cls, obj: Any) -> ServerInfo:
        if not isinstance(obj, dict) or not isinstance(obj.get("version"), str):
            raise BadResponse("/api/info has no version string: is this a LANraragi server?")
        return cls(
            version=obj["version"],
            name=str(obj.get("name") or "LANraragi"),
            nofun_mode=_bool(obj.get("nofun_mode")),
            resizes_images=_bool(obj.get("server_resizes_images")),
            has_password=_bool(obj.get("has_password")),
            # "1" on 0.7; servers older than the field had the progress route too
            tracks_progress=_bool(obj.get("server_tracks_progress", True)),
        )

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"[0-9]{1,9}", self.version)[:3])

    @property
    def has_files_route(self) -> bool:
        """`GET /files` exists from 0.8.2 on; older servers only have `POST /extract`."""
        return self.version_tuple >= (0, 8, 2)

    @property
    def has_page_thumbnails(self) -> bool:
        """`thumbnail?page=N&no_fallback=true` makes a small picture of page N (0.9 on);
        older servers answer the cover whatever the page."""
        return self.version_tuple >= (0, 9)


@dataclass(frozen=True, slots=True)
class Category:
    """A category: a static list of archives, or (non-empty `search`) a saved search."""

    id: str
    name: str
    archives: tuple[str, ...]
    search: str
    pinned: bool = False  # shown first by the web interface; kept when renamed

    @classmethod
    def from_json(cls, obj: Any) -> Category:
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise BadResponse("category entry without an id")
        archives = obj.get("archives") or []
        if not isinstance(archives, list):
            raise BadResponse(f"category {obj['id']}: archives is {type(archives).__name__}")
        name, search = obj.get("name"), obj.get("search") or ""
        if not isinstance(name, str) or not isinstance(search, str):
            raise BadResponse(f"category {obj['id']}: name or search is not a string")
        ids = tuple(a for a in archives if isinstance(a, str) and ARCID_RE.fullmatch(a))
        pinned = str(obj.get("pinned", 0)).strip().lower() in ("1", "true")
        return cls(obj["id"], name, ids, search.strip(), pinned)


@dataclass(frozen=True, slots=True)
class PageRef:
    """A page as listed by `/files` or `/extract`: its in-archive path and its URL."""

    path: str
    url: str


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """A cover image; `placeholder` when the server had none to give yet."""

    data: bytes
    placeholder: bool


@dataclass(frozen=True, slots=True)
class DownloadInfo:
    """What a HEAD of `/download` tells: the exact length and the file's name."""

    size: int
    filename: str | None
