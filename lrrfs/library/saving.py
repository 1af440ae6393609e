"""The library's edits sent to the server (metadata.json saves, new titles) and
the reading progress reported as a person reads."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import replace

from ..client import ArchiveMeta, LrrError
from ..client.errors import Offline
from .archive import Archive, Changes
from .editing import (
    Edit,
    EditConflict,
    EditError,
    EditNotAllowed,
    EditNotKept,
    MetadataChange,
    merge,
    parse_document,
)
from .pagelists import LibraryPages

log = logging.getLogger(__name__)


class LibraryEditing(LibraryPages):
    """Saves, titles and reading progress."""

    # -- editing ----------------------------------------------------------------

    @property
    def editable(self) -> bool:
        return self.client.has_key and not self.read_only

    def _check_editable(self, archive: Archive) -> None:
        self._check_allowed(archive.name, "saving")

    def _check_allowed(self, what: str, doing: str) -> None:
        """EditNotAllowed unless the mount may write to the server: `doing` needs a key."""
        if self.read_only:
            raise EditNotAllowed(f"{what}: the mount is read-only")
        if not self.client.has_key:
            raise EditNotAllowed(
                f"{what}: {doing} needs the server's API key "
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

    # -- reading progress -------------------------------------------------------------

    def page_opened(self, arcid: str, index: int, by_person: bool = True) -> None:
        """A program opened a page to read it: the next pages start coming, and, if a
        person reads (not a backup or a thumbnailer), the server's reading progress
        follows. (The kernel may answer the reads itself, from pages handed to it ahead:
        the open is what lrrfs always sees.)"""
        archive = self.get(arcid)
        listed = archive.pages
        if listed is not None and 0 <= index < len(listed):
            self.prefetcher.reading(
                arcid, index, len(listed), listed[index].size, archive.pages_from_disk
            )
            self._page_used_on_disk(archive, index)
        self.note_reading()
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
            # Offline: said once when the mount went offline, not per page.
            log.log(logging.DEBUG if isinstance(exc, Offline) else logging.WARNING,
                    "archive %s: %s failed: %s", arcid, what, exc)  # fmt: skip
            return False
        return True
