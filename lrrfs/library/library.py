"""The library model: archives, their folder names, pages, files and caches.

It knows neither HTTP details (it asks an `LrrClient`) nor FUSE (it answers in
names, sizes and bytes). Everything is fetched on first need, never for the
whole library at once: a folder's page list and page sizes when it is first
listed or looked into, a page's bytes when it is read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import astuple, dataclass, field, replace
from typing import Any

import trio
from cachetools import LRUCache

from ..client import (
    ArchiveMeta,
    BadResponse,
    LrrClient,
    LrrError,
    NotFound,
    PageRef,
    ServerInfo,
    iter_archives,
)
from .archivecache import ArchiveFiles
from .background import start_quietly
from .diskcache import DiskCache
from .editing import (
    Edit,
    EditConflict,
    EditError,
    EditNotAllowed,
    EditNotKept,
    MetadataChange,
    MetadataDocument,
    merge,
    parse_document,
)
from .names import VIEW_MARK, NameRequest, assign_names, safe_name
from .pages import old_server_path, page_names
from .pagestore import Page, PageSet, PageStore
from .prefetch import Prefetcher
from .reader import ArchiveReader, BufferPool
from .reading import ReadingProgress
from .singleflight import SingleFlight
from .views import VIEW_NAMES, ViewFolder, Views
from .zipindex import (
    TAIL_BYTES,
    NeedZip64Record,
    NotAZip,
    ZipMember,
    ZipSpan,
    locate_directory,
    parse_directory,
    parse_zip64_record,
)

log = logging.getLogger(__name__)

METADATA_NAME = "metadata.json"
THUMBNAIL_NAME = "thumbnail.jpg"
ZIP_EXTENSIONS = frozenset({"zip", "cbz"})
SIZE_FETCHES = 4  # pages fetched at once when sizes must come from the pages themselves
FORMER_NAME_SECONDS = 3600.0  # a renamed folder's old name keeps working this long
MAX_DIRECTORY = 64 << 20  # bytes of a zip's central directory: 100,000 pages take ~10 MB
PAGE_NAME_RE = re.compile(r"\d{3,}\.[a-z0-9]{1,5}")


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """The original archive file: its name in the folder and its exact length."""

    name: str
    size: int


@dataclass(slots=True)
class Archive:
    """One archive of the library and what is known of it so far."""

    meta: ArchiveMeta
    name: str
    named_for: str = ""  # the title the folder name was made from
    pages: list[Page] | None = None
    page_index: dict[str, int] | None = None
    pages_from_disk: bool = False  # the page list came from the disk cache
    file: ArchiveFile | None = None
    document: MetadataDocument = field(default_factory=MetadataDocument)

    @property
    def arcid(self) -> str:
        return self.meta.arcid

    @property
    def metadata_json(self) -> bytes:
        """What metadata.json shows: the server's metadata, or the user's draft."""
        return self.document.content(self.meta)

    @property
    def cache_key(self) -> str:
        """What the disk cache files its pages under: an id is taken from the file's
        first 512 KB only, so its length is part of the key too."""
        return f"{self.meta.arcid}-{self.meta.size if self.meta.size is not None else ''}"


@dataclass(slots=True)
class Changes:
    """What a refresh found different on the server."""

    added: list[str] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)  # (arcid, old name)
    renamed: list[tuple[str, str, str]] = field(default_factory=list)  # (arcid, old, new)
    updated: list[str] = field(default_factory=list)  # arcids whose metadata changed

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.renamed or self.updated)


@dataclass(slots=True)
class _Thumb:
    data: bytes
    placeholder: bool
    fetched: float


class Library:
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
    ) -> None:
        self.client = client
        self.read_only = read_only
        self.disk = disk
        self.index_from_cache = False  # the archive list is the disk cache's, not yet the server's
        self._index_digest = b""
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
        self._thumbs: LRUCache[str, _Thumb] = LRUCache(
            thumbnail_cache_bytes, getsizeof=lambda t: len(t.data)
        )
        self._thumb_sizes: dict[str, int] = {}
        self._placeholder_retry = placeholder_retry
        self._page_lists: SingleFlight[list[Page]] = SingleFlight()
        self._thumb_fetches: SingleFlight[_Thumb] = SingleFlight()
        self._file_lookups: SingleFlight[ArchiveFile] = SingleFlight()
        self._buffers = BufferPool()
        self.archive_files = None if disk is None else ArchiveFiles(disk)
        self.prefetcher = Prefetcher(self._prefetch_pages)
        self.on_thumbnail_change: Callable[[str], None] = lambda arcid: None
        # Folders came, went, moved or changed (the kernel may know the old ones).
        self.on_changes: Callable[[Changes], None] = lambda changes: None
        # A page fetched ahead of a reader is in memory: (arcid, index, bytes).
        self.on_page_ahead: Callable[[str, int, bytes], None] = lambda arcid, index, data: None
        self._store.on_ahead = lambda arcid, index, data: self.on_page_ahead(arcid, index, data)
        self._nursery: trio.Nursery | None = None

    # -- the index --------------------------------------------------------------

    async def connect(self) -> ServerInfo:
        """Meet the server: its version, the key if we have one, the archive list.

        The server must answer (a mount never starts offline), but the archive
        list may come from the disk cache, to start at once: then
        `index_from_cache` is set and the caller should `refresh()` soon.
        """
        self.info = await self.client.info()
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
                return self.info
            except LrrError as exc:
                log.warning("disk cache: the cached archive list is unusable: %s", exc)
        await self.refresh()
        return self.info

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
        if self.views is not None:
            await self.views.refresh()

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
        archive.meta = meta

    # -- editing ----------------------------------------------------------------

    @property
    def editable(self) -> bool:
        return self.client.has_key and not self.read_only

    def _check_editable(self, archive: Archive) -> None:
        if self.read_only:
            raise EditNotAllowed(f"{archive.name}: the mount is read-only")
        if not self.client.has_key:
            raise EditNotAllowed(
                f"{archive.name}: saving needs the server's API key "
                "(mount with --api-key-file FILE or LRR_API_KEY)"
            )

    async def save_metadata(self, arcid: str) -> Changes:
        """Apply the archive's metadata.json draft to the server.

        On success the draft is gone and metadata.json shows the server's
        canonical values; on failure the draft stays, and the error says why.
        """
        archive = self.get(arcid)
        document = archive.document
        document.dirty = False
        try:
            self._check_editable(archive)
            edit = parse_document(document.content(archive.meta))
            changes = await self._apply_edit(archive, edit, document.base)
        except (EditError, LrrError) as exc:
            document.annotate(str(exc))
            raise
        document.saved()
        return changes

    async def set_title(self, arcid: str, title: str) -> Changes:
        """A folder renamed at the root: its new name is the archive's new title."""
        archive = self.get(arcid)
        self._check_editable(archive)
        return await self._apply_edit(archive, Edit(title=title), None)

    async def _apply_edit(self, archive: Archive, edit: Edit, base: ArchiveMeta | None) -> Changes:
        current = await self.client.metadata(archive.arcid)
        try:
            change = merge(base or current, edit, current)
        except EditConflict:
            self._apply_one(archive, current)  # show the server's version from now on
            raise
        if change is not None and change.sends_metadata:
            await self.client.update_metadata(
                archive.arcid, title=change.title, tags=list(change.tags), summary=change.summary
            )
        if change is not None and change.isnew is not None:
            await self.client.set_isnew(archive.arcid, change.isnew)
        after = await self.client.metadata(archive.arcid)  # what it holds, not what it said
        changes = self._apply_one(archive, after)
        if change is not None:
            await self._refresh_views()  # untagged, categories and searches may follow
            self._check_kept(change, after)
        return changes

    def _check_kept(self, change: MetadataChange, after: ArchiveMeta) -> None:
        lost = change.unkept(after)
        if not lost:
            return
        if lost == ["tags"] and not change.tags and self._old_server:
            raise EditNotKept(
                "this LANraragi server (the old generation, 0.7) cannot remove an archive's "
                "last tags: it answered yes and kept them; keep at least one tag"
            )
        raise EditNotKept(
            f"the server answered yes but did not keep the new {', '.join(map(repr, lost))}"
        )

    async def revert_metadata(self, arcid: str) -> Changes:
        """Drop the draft; metadata.json shows the server's version, fetched anew."""
        archive = self.get(arcid)
        archive.document.saved()
        return self._apply_one(archive, await self.client.metadata(arcid))

    def _apply_one(self, archive: Archive, meta: ArchiveMeta) -> Changes:
        metas = {arcid: a.meta for arcid, a in self._archives.items()}
        metas[archive.arcid] = meta
        return self._apply(metas)

    @property
    def names(self) -> list[str]:
        """Folder names, sorted."""
        return self._sorted_names

    # -- views ----------------------------------------------------------------------

    @property
    def view_names(self) -> tuple[str, ...]:
        """The views' folders beside the archive folders (none with views off)."""
        return VIEW_NAMES if self.views is not None else ()

    def is_reserved(self, name: str) -> bool:
        """A name at the top that belongs to the views, never to an archive folder."""
        return self.views is not None and name.startswith(VIEW_MARK)

    async def view(self, path: tuple[str, ...]) -> ViewFolder | None:
        """The view folder at `path` (names from the top down), or None."""
        if self.views is None or path[0] not in VIEW_NAMES:
            return None
        return await self.views.folder(path)

    def view_links(self, folder: ViewFolder) -> dict[str, str]:
        """The archive folders a view folder links to: folder name -> arcid."""
        archives = self._archives
        return {archives[a].name: a for a in folder.members if a in archives}

    # -- reading progress -------------------------------------------------------------

    def page_opened(self, arcid: str, index: int, by_person: bool = True) -> None:
        """A program opened a page to read it: the next pages start coming, and, if a
        person reads (not a backup or a thumbnailer), the server's reading progress
        follows. (The kernel may answer the reads itself, from pages handed to it ahead:
        the open is what lrrfs always sees.)"""
        archive = self.get(arcid)
        listed = archive.pages
        if listed is not None and 0 <= index < len(listed):
            self.prefetcher.reading(arcid, index, len(listed), listed[index].size)
        self._store.reading()
        clear_new = self._clear_new_on_read and archive.meta.isnew
        if by_person and (self._progress or clear_new):
            self.reading.page_read(arcid, index + 1, clear_new=clear_new)

    def read_in_bulk(self, arcid: str) -> None:
        """The pages just opened were a program's reading in bulk, not a person's."""
        self.reading.forget(arcid)

    async def _report_reading(self, arcid: str, page: int, clear_new: bool) -> None:
        if self._progress and await self._sent(
            arcid, "reading progress", self.client.set_progress(arcid, page)
        ):
            log.debug("archive %s: reading progress set to page %d", arcid, page)
        if clear_new and await self._sent(
            arcid, "clearing the new flag", self.client.set_isnew(arcid, False)
        ):
            archive = self._archives.get(arcid)
            if archive is not None:  # @new follows at once
                self._apply_one(archive, replace(archive.meta, isnew=False))

    @staticmethod
    async def _sent(arcid: str, what: str, request: Awaitable[None]) -> bool:
        try:
            await request
        except LrrError as exc:
            log.warning("archive %s: %s failed: %s", arcid, what, exc)
            return False
        return True

    def __len__(self) -> int:
        return len(self._archives)

    def cache_usage(self) -> tuple[int, int]:
        """Bytes of pages held in memory, and the most it may hold."""
        return self._store.usage()

    def disk_cache_usage(self) -> tuple[int | None, int | None]:
        """Bytes in the disk cache (as last counted), and its cap; None without one."""
        return (None, None) if self.disk is None else (self.disk.usage(), self.disk.cap)

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

    # -- pages --------------------------------------------------------------

    async def pages(self, arcid: str) -> list[Page]:
        """The archive's pages with their exact sizes (fetched once per archive)."""
        archive = self.get(arcid)
        if archive.pages is None:
            pages = await self._page_lists.run(("pages", arcid), lambda: self._load_pages(archive))
            archive.pages = pages
            archive.page_index = {page.name: i for i, page in enumerate(pages)}
        return archive.pages

    async def find_page(self, arcid: str, name: str) -> tuple[int, Page] | None:
        if not PAGE_NAME_RE.fullmatch(name):
            return None
        pages = await self.pages(arcid)
        page_index = self.get(arcid).page_index
        assert page_index is not None  # set with the pages, and no wait since
        index = page_index.get(name)
        return None if index is None else (index, pages[index])

    @property
    def _old_server(self) -> bool:
        """The server is of the old generation (0.7: `POST /extract`, no `GET /files`)."""
        return self.info is not None and not self.info.has_files_route

    @property
    def _resized(self) -> bool:
        return bool(self.info and self.info.resizes_images)

    def _pages_key(self, archive: Archive) -> str:
        return f"{archive.cache_key}/{'resized' if self._resized else 'original'}"

    async def _load_pages(self, archive: Archive) -> list[Page]:
        # Page URLs differ between API generations (two servers may share a cache folder).
        key = f"{self._pages_key(archive)}{'/extract' if self._old_server else ''}"
        cached = await self._disk_get("pages", key)
        if cached is not None:
            try:
                pages = self._named_pages(*decode_pages(cached))
                archive.pages_from_disk = True
                return pages
            except (ValueError, TypeError):
                log.warning("disk cache: the page list of %s is unusable", archive.name)
        refs = await self.client.page_list(archive.arcid)
        expected = archive.meta.pagecount
        if self.info and self.info.has_files_route and expected and len(refs) != expected:
            # (Old servers report 0 pages until the first extraction: no check there.)
            raise BadResponse(
                f"{archive.name}: the server lists {len(refs)} pages but counts {expected}; "
                "refusing to guess which pages are real"
            )
        members = await self._page_members(archive, refs)
        self._disk_put("pages", key, encode_pages(refs, members))
        return self._named_pages(refs, members)

    def _named_pages(self, refs: list[PageRef], members: dict[int, ZipMember]) -> list[Page]:
        names = page_names(refs, force_extension="jpg" if self._resized else None)
        return [Page(names[i], ref, members[i].size, members[i].span) for i, ref in enumerate(refs)]

    async def _page_members(self, archive: Archive, refs: list[PageRef]) -> dict[int, ZipMember]:
        """Every page's exact size (and place in a zip): from the zip's directory, else
        from the pages themselves."""
        members: dict[int, ZipMember] = {}
        if refs and not self._resized:
            members = await self._members_from_zip(archive, refs)
        missing = [i for i in range(len(refs)) if i not in members]
        if missing:
            log.debug("%s: sizing %d pages by fetching them", archive.name, len(missing))
            sizes = await self._sizes_from_pages(archive, refs, missing)
            members.update((i, ZipMember((), size)) for i, size in sizes.items())
        return members

    async def _members_from_zip(
        self, archive: Archive, refs: list[PageRef]
    ) -> dict[int, ZipMember]:
        """The pages' zip members from the central directory, or {} if that cannot work."""
        extension = (archive.meta.extension or "").lower()
        try:
            if extension and extension not in ZIP_EXTENSIONS:
                return {}
            file = await self.archive_file(archive.arcid)
            if not extension and file.name.rsplit(".", 1)[-1].lower() not in ZIP_EXTENSIONS:
                return {}
            members = await self._zip_members(archive.arcid, file.size)
        except (NotAZip, LrrError) as exc:
            log.info("%s: no zip directory (%s); sizing pages by fetching them", archive.name, exc)
            return {}
        old_server = self._old_server
        by_name: dict[str, ZipMember] = {}
        doubles: set[str] = set()  # which of two members the server serves is its choice
        for member in members:
            for name in {
                *member.names,
                *(map(old_server_path, member.names) if old_server else ()),
            }:
                if name in by_name:
                    doubles.add(name)
                by_name.setdefault(name, member)
        found = {i: by_name[ref.path] for i, ref in enumerate(refs) if ref.path in by_name}
        return {
            i: ZipMember((), m.size) if refs[i].path in doubles else m for i, m in found.items()
        }

    async def _zip_members(self, arcid: str, size: int) -> list[ZipMember]:
        if size < 22:
            raise NotAZip("too short for a zip")
        start = max(0, size - TAIL_BYTES)
        tail, total = await self.client.download_range(arcid, start, size - 1)
        if total != size:
            raise NotAZip(f"the server's file is {total} bytes, not {size}")
        try:
            directory = locate_directory(tail, start)
        except NeedZip64Record as need:
            record, _ = await self.client.download_range(arcid, need.offset, need.offset + 55)
            directory = parse_zip64_record(record)
        end = directory.offset + directory.size
        if directory.offset < 0 or end > size:
            raise NotAZip("central directory out of bounds")
        if directory.size > MAX_DIRECTORY:
            raise NotAZip(f"a central directory of {directory.size} bytes")
        if directory.offset >= start:
            data = tail[directory.offset - start : end - start]
        else:
            data, _ = await self.client.download_range(arcid, directory.offset, end - 1)
        return parse_directory(data, directory)

    async def _sizes_from_pages(
        self, archive: Archive, refs: list[PageRef], indexes: list[int]
    ) -> dict[int, int]:
        sizes: dict[int, int] = {}
        limiter = trio.CapacityLimiter(SIZE_FETCHES)
        variant = self._pages_key(archive)

        async def fetch(index: int) -> None:
            key = f"{variant}/{refs[index].path}"
            async with limiter:
                data = await self._disk_get("page", key)
                if data is None:
                    data = await self.client.page(archive.arcid, refs[index])
                    self._disk_put("page", key, data)
            sizes[index] = len(data)
            self._store.remember(archive.arcid, index, data)

        async with trio.open_nursery() as nursery:
            for index in indexes:
                nursery.start_soon(fetch, index)
        return sizes

    async def page_data(self, arcid: str, index: int) -> bytes:
        """A user reads a page (opened with `page_opened`): its bytes, from the caches
        or the server; never of another length."""
        return await self._kept_page(await self._page_set(arcid), index)

    async def warm_page(self, arcid: str, index: int) -> None:
        """Put a page in the caches without reading it (`lrrfs cache warm`): no prefetch."""
        await self._kept_page(await self._page_set(arcid), index)

    async def _kept_page(self, pages: PageSet, index: int) -> bytes:
        data = await self._store.get(pages, index)
        self._store.used(pages, index, data)
        return data

    async def _prefetch_pages(self, arcid: str, indexes: list[int]) -> None:
        """Pages fetched ahead of the reader: into the caches, not a read."""
        await self._store.prefetch(await self._page_set(arcid), indexes)

    async def _page_set(self, arcid: str) -> PageSet:
        archive = self.get(arcid)
        pages = await self.pages(arcid)
        size = archive.file.size if archive.file is not None else archive.meta.size
        return PageSet(
            arcid, archive.name, self._pages_key(archive), pages, size, archive.pages_from_disk
        )

    # -- the disk cache -------------------------------------------------------------

    async def _disk_get(self, kind: str, key: str) -> bytes | None:
        if self.disk is None:
            return None
        return await self.disk.read(kind, key, self.client.timeout)

    def _disk_put(self, kind: str, key: str, data: bytes) -> None:
        if self.disk is not None:
            self.disk.put_later(kind, key, data)

    # -- thumbnail, archive file, metadata ------------------------------------------

    async def thumbnail(self, arcid: str) -> bytes:
        """The cover thumbnail. A placeholder is asked for again, in the background,
        after a while: the caller gets what is known at once."""
        thumb = self._thumbs.get(arcid)
        if thumb is None:
            thumb = await self._thumb_fetches.run(
                ("thumb", arcid), lambda: self._fetch_thumbnail(arcid)
            )
        elif thumb.placeholder and trio.current_time() - thumb.fetched > self._placeholder_retry:
            thumb.fetched = trio.current_time()  # one retry at a time
            self._in_background(self._fetch_thumbnail(arcid))
        return thumb.data

    def attach(self, nursery: trio.Nursery) -> None:
        """Give the library a nursery for work nobody waits for (progress, prefetch)."""
        self._nursery = nursery
        nursery.start_soon(self.reading.run)
        self.prefetcher.attach(nursery)

    def _in_background(self, job: Coroutine[Any, Any, object]) -> None:
        start_quietly(self._nursery, job, "background fetch")

    def thumbnail_is_placeholder(self, arcid: str) -> bool:
        thumb = self._thumbs.get(arcid)
        return thumb is None or thumb.placeholder

    async def _fetch_thumbnail(self, arcid: str) -> _Thumb:
        key = self.get(arcid).cache_key
        data = await self._disk_get("thumb", key)
        if data is not None:
            thumb = _Thumb(data, False, trio.current_time())
        else:
            result = await self.client.thumbnail(arcid)
            thumb = _Thumb(result.data, result.placeholder, trio.current_time())
            if not result.placeholder:  # a placeholder is asked for again later
                self._disk_put("thumb", key, result.data)
        if len(thumb.data) <= self._thumbs.maxsize:
            self._thumbs[arcid] = thumb
        old_size = self._thumb_sizes.get(arcid)
        self._thumb_sizes[arcid] = len(thumb.data)
        if old_size is not None and old_size != len(thumb.data):
            self.on_thumbnail_change(arcid)
        return thumb

    async def archive_file(self, arcid: str) -> ArchiveFile:
        archive = self.get(arcid)
        if archive.file is None:
            file = await self._file_lookups.run(
                ("file", arcid), lambda: self._find_archive_file(archive.meta)
            )
            if self._comic_names:
                file = replace(file, name=comic_name(file.name))
            archive.file = file
        return archive.file

    async def _find_archive_file(self, meta: ArchiveMeta) -> ArchiveFile:
        name = f"{meta.filename}.{meta.extension}" if meta.filename and meta.extension else None
        size = meta.size
        if name is None or size is None:
            # Old servers tell neither: a HEAD of the download does, once (then the disk cache).
            cached = await self._disk_get("file", meta.arcid)
            if cached is not None:
                return ArchiveFile(*json.loads(cached))
            download = await self.client.download_info(meta.arcid)
            size = download.size
            name = name or download.filename or f"{meta.title}.{meta.extension or 'zip'}"
            file = ArchiveFile(archive_file_name(name), size)
            self._disk_put("file", meta.arcid, json.dumps([file.name, file.size]).encode())
            return file
        return ArchiveFile(archive_file_name(name), size)

    async def open_archive(self, arcid: str) -> ArchiveReader:
        """A reader of the archive file, with its blocks in the disk cache (filed by id
        and size: a new size is a new archive)."""
        file = await self.archive_file(arcid)
        disk = None
        if self.archive_files is not None:
            files = self.archive_files
            cached = await trio.to_thread.run_sync(
                files.open, arcid, file.size, abandon_on_cancel=True
            )
            disk = None if cached is None else (files, cached)
        return ArchiveReader(self.client, arcid, file.size, self._buffers, disk)


def encode_pages(refs: list[PageRef], members: dict[int, ZipMember]) -> bytes:
    """A page list with sizes and zip places, for the disk cache."""
    rows = []
    for i, ref in enumerate(refs):
        span = members[i].span
        rows.append([ref.path, ref.url, members[i].size, None if span is None else astuple(span)])
    return json.dumps(rows, ensure_ascii=False).encode("utf-8")


def decode_pages(blob: bytes) -> tuple[list[PageRef], dict[int, ZipMember]]:
    """What `encode_pages` wrote; ValueError or TypeError if it is not that."""
    refs, members = [], {}
    for i, (path, url, size, span) in enumerate(json.loads(blob)):
        if not (isinstance(path, str) and isinstance(url, str) and isinstance(size, int)):
            raise ValueError("not a page row")
        refs.append(PageRef(path, url))
        members[i] = ZipMember((), size, None if span is None else ZipSpan(*map(int, span)))
    return refs, members


COMIC_EXTENSIONS = {"zip": "cbz", "7z": "cb7", "rar": "cbr", "tar": "cbt"}


def comic_name(name: str) -> str:
    """The name a comic book reader opens: `x.zip` is `x.cbz` (evince refuses a .zip)."""
    stem, dot, extension = name.rpartition(".")
    comic = COMIC_EXTENSIONS.get(extension.lower())
    return f"{stem}.{comic}" if dot and stem and comic else name


def archive_file_name(name: str) -> str:
    """The archive's own file name, kept clear of the folder's other names."""
    name = safe_name(name.rsplit("/", 1)[-1])
    if name in (METADATA_NAME, THUMBNAIL_NAME) or PAGE_NAME_RE.fullmatch(name):
        name = safe_name("archive " + name)
    return name
