"""The library model: archives, their folder names, pages, files and caches.

It knows neither HTTP details (it asks an `LrrClient`) nor FUSE (it answers in
names, sizes and bytes). Everything is fetched on first need, never for the
whole library at once: a folder's page list and page sizes when it is first
listed or looked into, a page's bytes when it is read.

`Library` is built in layers, each a module: the index (index.py), thumbnails and
archive files (files.py), pages (pagelists.py), edits and reading progress
(saving.py); this one holds the state they share and the views.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio
from cachetools import LRUCache

from ..client import LrrClient, ServerInfo
from .archive import Archive, ArchiveFile, Changes
from .archivecache import ArchiveFiles
from .changes import LibraryChanges
from .diskcache import DiskCache
from .index import Thumb
from .names import VIEW_MARK
from .offline import OfflineArchives
from .pagestore import Page, PageStore
from .prefetch import Prefetcher
from .reader import BufferPool
from .reading import ReadingProgress
from .singleflight import SingleFlight
from .views import TANKOUBONS, VIEW_NAMES, ViewFolder, Views, numbered_links


class Library(LibraryChanges):
    """A LANraragi library, as folders of files."""

    def __init__(
        self,
        client: LrrClient,
        *,
        cache_bytes: int = 64 << 20,
        thumbnail_cache_bytes: int = 16 << 20,
        placeholder_retry: float = 10.0,
        read_only: bool = False,
        views: bool = True,
        progress: bool = True,
        clear_new_on_read: bool = False,
        comic_names: bool = False,
        disk: DiskCache | None = None,
        allow_delete: bool = False,
    ) -> None:
        self.client = client
        self.allow_delete = allow_delete  # rm -r of a folder deletes the archive on the server
        self.uploads = {}
        self.read_only = read_only
        self.disk = disk
        self.index_from_cache = False  # the archive list is the disk cache's, not yet the server's
        self._index_digest = self._views_digest = b""
        self.views = Views(client) if views else None
        self.reading = ReadingProgress(self._report_reading)
        # Reading changes nothing on the server through a read-only mount.
        self._progress = progress and not read_only  # until the server says if it tracks it
        self._clear_new_on_read = clear_new_on_read and not read_only
        self._comic_names = comic_names
        self.info: ServerInfo | None = None
        self._archives: dict[str, Archive] = {}
        self._by_name: dict[str, str] = {}
        self._former: dict[str, tuple[str, float]] = {}  # old folder name -> (arcid, when)
        self._writers: dict[tuple[str, int], float] = {}  # (arcid, pid) -> when it wrote
        self._pinned: dict[str, int] = {}  # arcid -> open editors: its folder keeps its name
        self._sorted_names: list[str] = []
        self.mounted_at = int(time.time())  # the time of what the server dates nowhere
        self.changed_at = self.mounted_at  # when archives last came, went or changed
        self.total_size = 0  # bytes of all archive files, as the server reports them
        self._store = PageStore(client, disk, cache_bytes)
        self._thumbs: LRUCache[str, Thumb] = LRUCache(
            thumbnail_cache_bytes, getsizeof=lambda t: len(t.data)
        )
        self._thumb_sizes: dict[str, int] = {}
        self._placeholder_retry = placeholder_retry
        self._page_lists: SingleFlight[list[Page]] = SingleFlight()
        self._thumb_fetches: SingleFlight[Thumb] = SingleFlight()
        self._file_lookups: SingleFlight[ArchiveFile] = SingleFlight()
        self._files_view: dict[str, str] | None = None  # files.py: `@files`
        self._files_version = 0
        self._buffers = BufferPool()
        self.archive_files = None if disk is None else ArchiveFiles(disk)
        self.prefetcher = Prefetcher(self._prefetch_pages)
        self.on_thumbnail_change: Callable[[str], None] = lambda arcid: None
        # Folders came, went, moved or changed (the kernel may know the old ones).
        self.on_changes: Callable[[Changes], None] = lambda changes: None
        # A page fetched ahead of a reader is in memory: (arcid, index, bytes).
        self.on_page_ahead: Callable[[str, int, bytes], None] = lambda arcid, index, data: None
        self._store.on_ahead = lambda arcid, index, data: self.on_page_ahead(arcid, index, data)
        self.take_page_ahead: Callable[[str, int, memoryview], bool] = lambda arcid, i, data: False
        self._store.take_ahead = lambda arcid, index, data: self.take_page_ahead(arcid, index, data)
        self._nursery: trio.Nursery | None = None
        self.offline_archives = OfflineArchives(disk, self.all_archive_keys)
        if self.views is not None:
            self.views.offline = self.offline_archives.members

    def attach(self, nursery: trio.Nursery) -> None:
        """Give the library a nursery for work nobody waits for (progress, prefetch)."""
        self._nursery = nursery
        nursery.start_soon(self.reading.run)
        self.prefetcher.attach(nursery)

    # -- views ----------------------------------------------------------------------

    @property
    def view_names(self) -> tuple[str, ...]:
        """The views' folders beside the archive folders (none with views off)."""
        if self.views is None:
            return ()
        return (*VIEW_NAMES, TANKOUBONS) if self.views.tankoubons is not None else VIEW_NAMES

    def is_reserved(self, name: str) -> bool:
        """A name at the top that belongs to the views, never to an archive folder."""
        return self.views is not None and name.startswith(VIEW_MARK)

    async def view(self, path: tuple[str, ...]) -> ViewFolder | None:
        """The view folder at `path` (names from the top down), or None."""
        if self.views is None or path[0] not in self.view_names:
            return None
        return await self.views.folder(path)

    def view_links(self, folder: ViewFolder) -> dict[str, str]:
        """The archive folders a view folder links to: folder name -> arcid."""
        archives = self._archives
        if folder.order:  # numbered: a listing sorted by name shows the order
            present = [a for a in folder.order if a in archives]
            links = numbered_links([archives[a].name for a in present])
            return {link: present[index] for link, index in links.items()}
        return {archives[a].name: a for a in folder.members if a in archives}

    def cache_usage(self) -> tuple[int, int]:
        """Bytes of pages held in memory, and the most it may hold."""
        return self._store.usage()

    def disk_cache_usage(self) -> tuple[int | None, int | None]:
        """Bytes in the disk cache (as last counted), and its cap; None without one."""
        return (None, None) if self.disk is None else (self.disk.usage(), self.disk.cap)
