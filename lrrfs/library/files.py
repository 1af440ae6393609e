"""The library's files beside the pages: thumbnails and the original archive file."""

from __future__ import annotations

import json
import logging

import trio

from ..client import ArchiveMeta
from .archive import Archive, ArchiveFile, archive_file_name, comic_name
from .index import LibraryIndex, Thumb
from .names import NameRequest, assign_file_names
from .reader import ArchiveReader

log = logging.getLogger(__name__)

FILE_LOOKUPS = 8  # old servers' archive files asked at once, for `@files`


class LibraryFiles(LibraryIndex):
    """Thumbnails and archive files."""

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

    def thumbnail_is_placeholder(self, arcid: str) -> bool:
        thumb = self._thumbs.get(arcid)
        return thumb is None or thumb.placeholder

    async def _fetch_thumbnail(self, arcid: str) -> Thumb:
        key = self.get(arcid).cache_key
        data = await self._disk_get("thumb", key)
        if data is not None:
            thumb = Thumb(data, False, trio.current_time())
        else:
            result = await self.client.thumbnail(arcid)
            thumb = Thumb(result.data, result.placeholder, trio.current_time())
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
            file = self._file_from_list(archive.meta)
            if file is None:
                file = await self._file_lookups.run(
                    ("file", arcid), lambda: self._ask_archive_file(archive.meta)
                )
            archive.file = file
        return archive.file

    def _file_from_list(self, meta: ArchiveMeta) -> ArchiveFile | None:
        """The archive's file as the archive list names and sizes it (0.9.10 and later),
        None where it tells neither."""
        if not _lists_file(meta):
            return None
        assert meta.size is not None
        return self._named_file(f"{meta.filename}.{meta.extension}", meta.size)

    def _named_file(self, name: str, size: int) -> ArchiveFile:
        name = archive_file_name(name)
        return ArchiveFile(comic_name(name) if self._comic_names else name, size)

    async def _ask_archive_file(self, meta: ArchiveMeta) -> ArchiveFile:
        """Old servers tell neither name nor size: a HEAD of the download does, once (then
        the disk cache)."""
        cached = await self._disk_get("file", meta.arcid)
        if cached is not None:
            name, size = json.loads(cached)
            return self._named_file(name, size)
        download = await self.client.download_info(meta.arcid)
        name = (
            f"{meta.filename}.{meta.extension}"
            if meta.filename and meta.extension
            else download.filename or f"{meta.title}.{meta.extension or 'zip'}"
        )
        file = self._named_file(name, download.size)
        self._disk_put("file", meta.arcid, json.dumps([file.name, file.size]).encode())
        return file

    async def files_view(self) -> dict[str, str]:
        """`@files`: every archive's file side by side, for backups. Unique file name ->
        arcid, in name order; made again when archives come, go or change files."""
        while self._files_view is None:
            version = self._files_version
            archives = list(self._archives.values())
            missing = [a.arcid for a in archives if a.file is None and not _lists_file(a.meta)]
            if missing:  # old servers: a HEAD each, once, then kept on disk
                await self._ask_archive_files(missing)
                continue  # the list may have changed meanwhile
            # 100,000 archives take a second to name: not in the thread that answers calls.
            files, names = await trio.to_thread.run_sync(self._name_files, archives)
            if version == self._files_version:  # else named from a list since changed
                for archive, file in zip(archives, files, strict=True):
                    archive.file = archive.file or file
                self._files_view = names
        return self._files_view

    def _name_files(self, archives: list[Archive]) -> tuple[list[ArchiveFile], dict[str, str]]:
        """(In a worker thread; changes nothing.) Each archive's file, and unique names."""
        files = []
        for archive in archives:
            file = archive.file or self._file_from_list(archive.meta)
            assert file is not None  # asked of the server before
            files.append(file)
        named = assign_file_names(
            NameRequest(a.arcid, f.name, a.meta.date_added or 0)
            for a, f in zip(archives, files, strict=True)
        )
        return files, dict(sorted(named.items()))

    async def _ask_archive_files(self, arcids: list[str]) -> None:
        limiter = trio.CapacityLimiter(FILE_LOOKUPS)

        async def ask(arcid: str) -> None:
            async with limiter:
                if arcid in self._archives:  # not gone meanwhile
                    await self.archive_file(arcid)

        async with trio.open_nursery() as nursery:
            for arcid in arcids:
                nursery.start_soon(ask, arcid)

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


def _lists_file(meta: ArchiveMeta) -> bool:
    """The archive list tells the archive file's name and size (0.9.10 and later)."""
    return bool(meta.filename and meta.extension) and meta.size is not None
