"""The library's index: the archive list, its refresh, folder names and how names find
archives. The base of `Library`'s layers (files.py, pagelists.py, saving.py, library.py).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import trio
from cachetools import LRUCache

from ..client import (
    ArchiveMeta,
    LrrClient,
    LrrError,
    NotFound,
    ServerInfo,
    ServerUnreachable,
    iter_archives,
)
from ..client.connectivity import Mode
from ..client.errors import NoConnection
from .archive import Archive, ArchiveFile, Changes
from .archivecache import ArchiveFiles
from .background import start_quietly
from .diskcache import DiskCache
from .names import NameRequest, assign_names
from .offline import decode_info, encode_info
from .pagestore import Page, PageStore
from .prefetch import Prefetcher
from .reader import BufferPool
from .reading import ReadingProgress
from .singleflight import SingleFlight
from .views import Views

log = logging.getLogger(__name__)

FORMER_NAME_SECONDS = 3600.0  # a renamed folder's old name keeps working this long


@dataclass(slots=True)
class Thumb:
    data: bytes
    placeholder: bool
    fetched: float


class LibraryIndex:
    """The archive list and folder names."""

    # State, set by Library.__init__ (library.py) and shared by every layer.
    client: LrrClient
    read_only: bool
    disk: DiskCache | None
    index_from_cache: bool  # the archive list is the disk cache's, not yet the server's
    _index_digest: bytes
    _views_digest: bytes  # of the views last kept on disk
    views: Views | None
    reading: ReadingProgress
    _progress: bool
    _clear_new_on_read: bool
    _comic_names: bool
    info: ServerInfo | None
    _archives: dict[str, Archive]
    _by_name: dict[str, str]
    _former: dict[str, tuple[str, float]]
    _writers: dict[tuple[str, int], float]
    _pinned: dict[str, int]
    _sorted_names: list[str]
    mounted_at: int
    changed_at: int
    total_size: int
    _store: PageStore
    _thumbs: LRUCache[str, Thumb]
    _thumb_sizes: dict[str, int]
    _placeholder_retry: float
    _page_lists: SingleFlight[list[Page]]
    _thumb_fetches: SingleFlight[Thumb]
    _file_lookups: SingleFlight[ArchiveFile]
    _files_view: dict[str, str] | None  # files.py: `@files`
    _files_version: int  # counts the changes of which archive files there are
    _buffers: BufferPool
    archive_files: ArchiveFiles | None
    prefetcher: Prefetcher
    on_thumbnail_change: Callable[[str], None]
    on_changes: Callable[[Changes], None]
    on_page_ahead: Callable[[str, int, bytes], None]
    take_page_ahead: Callable[[str, int, memoryview], bool]
    _nursery: trio.Nursery | None

    # -- the index --------------------------------------------------------------

    async def connect(self) -> ServerInfo:
        """Meet the server: its version, the key if we have one, the archive list.

        The archive list may come from the disk cache, to start at once: then
        `index_from_cache` is set and the caller should `refresh()` soon. A server
        that cannot be reached at all leaves the mount offline, on the disk cache's
        list (unless the mode is never).
        """
        if self.client.link.offline:  # --offline
            return await self._connect_offline("mounted with --offline")
        try:
            self.info = await self.client.info()
        except NoConnection as exc:
            if self.client.link.mode is Mode.NEVER:
                raise
            return await self._connect_offline(str(exc))
        self._disk_put("info", self._info_key, encode_info(self.info))
        if self.client.has_key:
            await self.client.check_key()
        if self._progress and not self.info.tracks_progress:
            log.info("the server does not track reading progress: none is sent")
            self._progress = False
        body = await self._disk_get("index", self._index_key)
        if body is not None:
            try:
                self._apply_body(body, await trio.to_thread.run_sync(self._parse, body))
                self.index_from_cache = True
                await self._restore_views()
                return self.info
            except LrrError as exc:
                log.warning("disk cache: the cached archive list is unusable: %s", exc)
        await self.refresh()
        return self.info

    async def _connect_offline(self, reason: str) -> ServerInfo:
        """Start from the disk cache's archive list, offline."""
        info_blob = await self._disk_get("info", self._info_key)
        info = None if info_blob is None else decode_info(info_blob)
        body = await self._disk_get("index", self._index_key)
        if info is None or body is None:
            raise ServerUnreachable(
                f"{reason}; and the disk cache holds no archive list of this server to "
                "mount offline (mount it once while it answers, or `lrrfs cache warm` it)"
            )
        self.info = info
        self.client.assume(info)
        self._progress = self._progress and info.tracks_progress
        self._apply_body(body, await trio.to_thread.run_sync(self._parse, body))
        self.index_from_cache = True
        await self._restore_views()
        self.client.link.go_offline(reason)
        return info

    async def probe(self) -> None:
        """Is the server back (while offline)? Its info; the caller then refreshes."""
        self.info = await self.client.info()
        self._disk_put("info", self._info_key, encode_info(self.info))

    @property
    def _info_key(self) -> str:
        return f"info {self.client.api_url('')}"

    async def refresh(self) -> Changes:
        """Fetch the archive list and apply it; names stay put unless titles change."""
        body = await self.client.archives_body()
        self.index_from_cache = False
        changes = Changes()  # not a byte changed: no need to parse 100,000 entries
        if self._digest(body) != self._index_digest:
            metas = await trio.to_thread.run_sync(self._parse, body)
            changes = self._apply_body(body, metas)
            self._disk_put("index", self._index_key, body)
        await self._refresh_views()
        return changes

    @property
    def _index_key(self) -> str:
        """The archive list is this server's own (a cache folder serves a whole host)."""
        return f"archives {self.client.api_url('')}"

    @staticmethod
    def _digest(body: bytes) -> bytes:
        return hashlib.blake2b(body, digest_size=16).digest()

    def _parse(self, body: bytes) -> dict[str, ArchiveMeta]:
        """The archive list, keeping the objects of archives that did not change: a new
        copy of 100,000 of them would double the index's memory for a while."""
        known = self._archives
        metas = {}
        for meta in iter_archives(body):
            archive = known.get(meta.arcid)
            metas[meta.arcid] = (
                archive.meta if archive is not None and archive.meta == meta else meta
            )
        return metas

    def _apply_body(self, body: bytes, metas: dict[str, ArchiveMeta]) -> Changes:
        changes = self._apply(metas)
        self._index_digest = self._digest(body)
        for arcid, _name in changes.removed:
            self.prefetcher.forget(arcid)
        return changes

    async def _refresh_views(self) -> None:
        if self.views is None:
            return
        await self.views.refresh()
        # 100,000 untagged archives make megabytes of text: built in a thread, kept on
        # disk only when it changed.
        saved = await trio.to_thread.run_sync(self.views.saved)
        digest = self._digest(saved)
        if digest != self._views_digest:
            self._views_digest = digest
            self._disk_put("views", self._views_key, saved)

    async def _restore_views(self) -> None:
        """The views as the last refresh left them: a mount started from the disk cache
        shows its categories and tankoubons at once, offline too."""
        if self.views is None:
            return
        saved = await self._disk_get("views", self._views_key)
        if saved is not None:
            self.views.restore(saved)

    @property
    def _views_key(self) -> str:
        return f"views {self.client.api_url('')}"

    def _apply(self, metas: dict[str, ArchiveMeta]) -> Changes:
        previous = {arcid: (a.named_for, a.name) for arcid, a in self._archives.items()}
        for arcid in self._pinned:
            if arcid in metas and arcid in previous:  # keeps its name whatever its title
                previous[arcid] = (metas[arcid].title, previous[arcid][1])
        requests = (NameRequest(m.arcid, m.title, m.date_added or 0) for m in metas.values())
        names = assign_names(requests, previous, escape_views=self.views is not None)
        changes = Changes()
        for arcid, gone in list(self._archives.items()):
            if arcid not in metas:
                del self._archives[arcid]
                changes.removed.append((arcid, gone.name))
        for arcid, meta in metas.items():
            archive = self._archives.get(arcid)
            if archive is None:
                self._archives[arcid] = Archive(meta, names[arcid], meta.title)
                changes.added.append(arcid)
                continue
            if archive.name != names[arcid]:
                changes.renamed.append((arcid, archive.name, names[arcid]))
                archive.name = names[arcid]
            if arcid not in self._pinned:
                archive.named_for = meta.title
            if archive.meta != meta:
                self._update_meta(archive, meta)
                changes.updated.append(arcid)
        self._remember_former_names(changes)
        if changes.added or changes.removed or changes.renamed:
            self._by_name = {a.name: arcid for arcid, a in self._archives.items()}
            self._sorted_names = sorted(self._by_name)
        if self.views is not None and (changes.added or changes.removed or changes.updated):
            self.views.update(a.meta for a in self._archives.values())
        if changes.added or changes.removed:
            self._files_changed()
        if changes:
            self.total_size = sum(a.meta.size or 0 for a in self._archives.values())
            self.changed_at = int(time.time())
            self.on_changes(changes)
        return changes

    def _update_meta(self, archive: Archive, meta: ArchiveMeta) -> None:
        if (meta.filename, meta.extension, meta.size) != (
            archive.meta.filename,
            archive.meta.extension,
            archive.meta.size,
        ):
            archive.file = None
            self._files_changed()
        archive.meta = meta

    def _files_changed(self) -> None:
        self._files_view = None
        self._files_version += 1

    def _apply_one(self, archive: Archive, meta: ArchiveMeta) -> Changes:
        metas = {arcid: a.meta for arcid, a in self._archives.items()}
        metas[archive.arcid] = meta
        return self._apply(metas)

    @property
    def names(self) -> list[str]:
        """Folder names, sorted."""
        return self._sorted_names

    def __len__(self) -> int:
        return len(self._archives)

    def mtime(self, arcid: str) -> int:
        """An archive folder's time: when the server added it, else when lrrfs mounted; the
        top's and the views' (arcid ""): when the library last changed."""
        if not arcid:
            return self.changed_at
        return self.get(arcid).meta.date_added or self.mounted_at

    def find(self, name: str) -> Archive | None:
        arcid = self._by_name.get(name)
        return None if arcid is None else self._archives[arcid]

    def find_former(self, name: str, pid: int) -> Archive | None:
        """The archive whose folder had this name until a while ago (its title changed),
        for a program that wrote in it: an editor that keeps its path (gedit, Mousepad)
        goes on saving there. Other programs do not see the old name: `mv` back to it
        must not find a folder there."""
        arcid, when = self._former.get(name, ("", 0.0))
        now = time.monotonic()
        if now - when > FORMER_NAME_SECONDS or name in self._by_name:
            return None
        if now - self._writers.get((arcid, pid), -FORMER_NAME_SECONDS) > FORMER_NAME_SECONDS:
            return None
        return self._archives.get(arcid)

    def note_writer(self, arcid: str, pid: int) -> None:
        """Program `pid` writes in the archive's folder (see `find_former`)."""
        self._writers[(arcid, pid)] = time.monotonic()

    def _remember_former_names(self, changes: Changes) -> None:
        now = time.monotonic()

        def recent(when: float) -> bool:
            return now - when <= FORMER_NAME_SECONDS

        self._former = {
            name: (arcid, when)
            for name, (arcid, when) in self._former.items()
            if recent(when) and arcid in self._archives
        }
        self._writers = {key: when for key, when in self._writers.items() if recent(when)}
        for arcid, old, _new in changes.renamed:
            self._former[old] = (arcid, now)

    def pin(self, arcid: str) -> None:
        """An editor works in the archive's folder: its name must not move under it
        (vim deletes its swap file by path when it quits)."""
        self._pinned[arcid] = self._pinned.get(arcid, 0) + 1

    def unpin(self, arcid: str) -> Changes:
        """The last editor left: the folder takes the name its title asks for."""
        count = self._pinned.get(arcid, 0) - 1
        if count > 0:
            self._pinned[arcid] = count
            return Changes()
        self._pinned.pop(arcid, None)
        return self._apply({a: archive.meta for a, archive in self._archives.items()})

    def get(self, arcid: str) -> Archive:
        archive = self._archives.get(arcid)
        if archive is None:
            raise NotFound(f"archive {arcid} is no longer on the server")
        return archive

    @property
    def _old_server(self) -> bool:
        """The server is of the old generation (0.7: `POST /extract`, no `GET /files`)."""
        return self.info is not None and not self.info.has_files_route

    # -- the disk cache -------------------------------------------------------------

    async def _disk_get(self, kind: str, key: str) -> bytes | None:
        if self.disk is None:
            return None
        return await self.disk.read(kind, key, self.client.timeout)

    def _disk_put(self, kind: str, key: str, data: bytes) -> None:
        if self.disk is not None:
            self.disk.put_later(kind, key, data)

    def _in_background(self, job: Coroutine[Any, Any, object]) -> None:
        start_quietly(self._nursery, job, "background fetch")
