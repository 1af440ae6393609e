"""The library's files beside the pages: thumbnails and the original archive file."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import trio

from ..client import ArchiveMeta
from .archive import ArchiveFile, archive_file_name, comic_name
from .index import LibraryIndex, Thumb
from .reader import ArchiveReader

log = logging.getLogger(__name__)


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
