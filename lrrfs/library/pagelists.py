"""The library's pages: each archive's page list with exact sizes (from its zip
directory, else from the pages), and the pages' bytes through the page store."""

from __future__ import annotations

import json
import logging
from dataclasses import astuple

import trio

from ..client import BadResponse, LrrError, PageRef
from .archive import PAGE_NAME_RE, Archive
from .files import LibraryFiles
from .offline import ArchiveKeys, page_key
from .pages import old_server_path, page_names
from .pagestore import Page, PageSet
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

ZIP_EXTENSIONS = frozenset({"zip", "cbz"})
SIZE_FETCHES = 4  # pages fetched at once when sizes must come from the pages themselves
MAX_DIRECTORY = 64 << 20  # bytes of a zip's central directory: 100,000 pages take ~10 MB


class LibraryPages(LibraryFiles):
    """Page lists and page bytes."""

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
    def _resized(self) -> bool:
        return bool(self.info and self.info.resizes_images)

    def _pages_key(self, archive: Archive) -> str:
        return f"{archive.cache_key}/{'resized' if self._resized else 'original'}"

    def _page_list_key(self, archive: Archive) -> str:
        # Page URLs differ between API generations (two servers may share a cache folder).
        return f"{self._pages_key(archive)}{'/extract' if self._old_server else ''}"

    def _page_used_on_disk(self, archive: Archive, index: int) -> None:
        """A page of the listed ones was opened: a use of its disk copy, for eviction."""
        assert archive.pages is not None
        key = page_key(self._pages_key(archive), archive.pages[index].ref.path)
        self._store.opened(archive.arcid, index, key)

    def archive_keys(self, archive: Archive) -> ArchiveKeys:
        """Where the disk cache files the archive's parts (see offline.py)."""
        meta = archive.meta
        listed = bool(meta.filename and meta.extension and meta.size is not None)
        return ArchiveKeys(
            archive.arcid,
            archive.name,
            self._page_list_key(archive),
            self._pages_key(archive),
            archive.cache_key,
            None if listed else archive.arcid,
            archive.file.size if archive.file is not None else meta.size,
        )

    def all_archive_keys(self) -> list[ArchiveKeys]:
        return [self.archive_keys(self._archives[arcid]) for arcid in self._by_name.values()]

    async def _load_pages(self, archive: Archive) -> list[Page]:
        key = self._page_list_key(archive)
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
            key = page_key(variant, refs[index].path)
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

    def note_reading(self) -> None:
        """A program reads (a page or an archive file): background work gives way."""
        self._store.reading()

    async def until_reading_pauses(self, quiet: float) -> None:
        """Return once programs have paused their reading for `quiet` seconds."""
        await self._store.until_reading_pauses(quiet)

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
