"""What the disk cache holds of each archive, and which archives read fully offline.

An archive is readable offline when the disk cache holds its page list, every page and its
thumbnail (and, for old servers that do not list it, its file's name and size); its
metadata.json comes with the archive list, which is cached as a whole. `readable_offline`
is the one place that decides. The archive file's own blocks (archivecache.py) are counted
beside (`Holding.file_blocks`): `cache warm --archives` stores them; they are not needed to
read the pages, so `@offline/` does not ask for them.

Everything here only looks at the disk (no server, and no reading of pages: a `stat` per
blob), in worker threads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import trio

from ..client import ServerInfo
from .archivecache import blocks_held
from .diskcache import DiskCache
from .singleflight import SingleFlight

OFFLINE_TTL = 5.0  # seconds a computed @offline list is shown before it is computed again


def page_key(prefix: str, path: str) -> str:
    """The disk cache's key (kind "page") of the page at `path` of an archive whose pages
    are filed under `prefix`."""
    return f"{prefix}/{path}"


@dataclass(frozen=True, slots=True)
class ArchiveKeys:
    """Where the disk cache files an archive's parts (see `Library.archive_keys`)."""

    arcid: str
    title: str
    page_list: str  # kind "pages"
    page_prefix: str  # kind "page": `page_key(page_prefix, path)`
    thumbnail: str  # kind "thumb"
    file: str | None  # kind "file": only old servers' archives need it
    size: int | None  # the archive file's length, when the list says it (its blocks' key)


@dataclass(frozen=True, slots=True)
class Holding:
    """What the disk cache holds of one archive."""

    arcid: str
    title: str
    pages: int | None  # None: the page list is not cached
    pages_cached: int
    thumbnail: bool
    file_named: bool  # its file's name and size are known without the server
    bytes: int  # of all its blobs on disk (not of its archive file's blocks)
    file_blocks: tuple[int, int] | None = None  # of its archive file: (held, all); None: none

    @property
    def readable_offline(self) -> bool:
        return readable_offline(self)


def readable_offline(holding: Holding) -> bool:
    """Every file of the archive's folder reads without the server."""
    return (
        holding.pages is not None
        and holding.pages_cached == holding.pages
        and holding.thumbnail
        and holding.file_named
    )


def file_complete(holding: Holding) -> bool:
    """The archive file reads whole offline too (`cache warm --archives`)."""
    return holding.file_blocks is not None and holding.file_blocks[0] == holding.file_blocks[1]


def _size(disk: DiskCache, kind: str, key: str) -> int | None:
    try:
        return os.stat(disk.path(kind, key)).st_size
    except OSError:
        return None


def holding(disk: DiskCache, keys: ArchiveKeys) -> Holding:
    """What is on disk of one archive (blocking: a worker thread's job)."""
    total = 0
    pages: int | None = None
    cached = 0
    listed = _size(disk, "pages", keys.page_list)
    blob = disk.get("pages", keys.page_list, touch=False) if listed is not None else None
    if listed is not None and blob is not None:
        total += listed
        try:
            paths = [row[0] for row in json.loads(blob)]
        except (ValueError, TypeError, IndexError):
            paths = None
        if paths is not None:
            pages = len(paths)
            for path in paths:
                size = _size(disk, "page", page_key(keys.page_prefix, path))
                if size is not None:
                    cached += 1
                    total += size
    thumb = _size(disk, "thumb", keys.thumbnail)
    file = _size(disk, "file", keys.file) if keys.file is not None else 0
    total += (thumb or 0) + (file or 0)
    blocks = None if keys.size is None else blocks_held(disk, keys.arcid, keys.size)
    return Holding(
        keys.arcid, keys.title, pages, cached, thumb is not None, file is not None, total, blocks
    )


def holdings(disk: DiskCache, archives: Iterable[ArchiveKeys]) -> list[Holding]:
    """`holding` of each archive that has anything on disk (blocking)."""
    found = []
    for keys in archives:
        held = holding(disk, keys)
        if held.bytes or held.file_blocks:
            found.append(held)
    return found


class OfflineArchives:
    """The archives readable offline, for `@offline/`: computed from the disk in a worker
    thread at most every OFFLINE_TTL seconds (a listing never waits on the server)."""

    def __init__(self, disk: DiskCache | None, archives: Callable[[], list[ArchiveKeys]]) -> None:
        self._disk = disk
        self._archives = archives
        self._found: frozenset[str] = frozenset()
        self._when = -OFFLINE_TTL
        self._flights: SingleFlight[frozenset[str]] = SingleFlight()

    async def members(self) -> frozenset[str]:
        if self._disk is None:
            return frozenset()
        if trio.current_time() - self._when >= OFFLINE_TTL:
            self._found = await self._flights.run(("offline",), self._compute)
        return self._found

    async def _compute(self) -> frozenset[str]:
        disk, archives = self._disk, self._archives()
        assert disk is not None
        found = await trio.to_thread.run_sync(lambda: holdings(disk, archives))
        self._when = trio.current_time()
        return frozenset(h.arcid for h in found if h.readable_offline)


def encode_info(info: ServerInfo) -> bytes:
    """The server's info, for the disk cache: a mount that starts offline needs it (the
    API generation and resizing decide where pages are filed)."""
    return json.dumps(asdict(info)).encode()


def decode_info(blob: bytes) -> ServerInfo | None:
    try:
        return ServerInfo(**json.loads(blob))
    except (ValueError, TypeError):
        return None
