"""The FUSE adapter's editing layer: metadata.json's writes and saves, editors' scratch
files, and renames (a file renamed onto metadata.json is a save, a folder renamed at the
top a new title).

Only `metadata.json` and editors' scratch files can be written, and only when
the mount can save (an API key, not read-only). A save happens when the
written text is complete: on flush, fsync or close of a written file, or when
a file is renamed onto metadata.json.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

import pyfuse3
import trio

from .. import notify
from ..client import LrrError
from ..client.errors import printable
from ..library import METADATA_NAME
from ..library.background import FAILURES
from ..library.editing import EditError
from . import invalidate
from .base import RENAME_EXCHANGE, RENAME_NOREPLACE, UNPIN_GRACE, FileHandle, OperationsBase
from .calls import bounded
from .errors import errno_for, fuse_errors
from .inodes import Kind, Node

log = logging.getLogger(__name__)


class EditingOperations(OperationsBase):
    """Writes, saves and renames."""

    # -- writing ------------------------------------------------------------------

    def _check_writable(self, node: Node) -> None:
        if node.kind is Kind.SCRATCH:
            return
        if node.kind is not Kind.METADATA:
            raise pyfuse3.FUSEError(errno.EACCES)
        if not self.library.editable:
            archive = self.library.get(node.arcid)
            reason = (
                "the mount is read-only"
                if self.library.read_only
                else ("saving needs the server's API key (--api-key-file or LRR_API_KEY)")
            )
            log.warning("%s/metadata.json cannot be written: %s", archive.name, reason)
            raise pyfuse3.FUSEError(errno.EACCES)

    def _truncate(self, node: Node, size: int) -> None:
        if node.kind is Kind.SCRATCH:
            self.scratch.truncate(self.scratch.get(node.number), size)
            return
        archive = self.library.get(node.arcid)
        try:
            archive.document.truncate(archive.meta, size)
        except EditError as exc:
            raise pyfuse3.FUSEError(errno_for(exc)) from None

    @fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self._files[fh]
        node = handle.node
        self._check_writable(node)
        if node.kind is Kind.SCRATCH:
            self.scratch.write(self.scratch.get(node.number), off, buf)
            return len(buf)
        archive = self.library.get(node.arcid)
        try:
            archive.document.write(archive.meta, off, buf)
        except EditError as exc:
            log.error("saving metadata.json of %r failed: %s", archive.meta.title, exc)
            handle.failed = errno_for(exc)
            raise pyfuse3.FUSEError(handle.failed) from None
        handle.wrote = True
        return len(buf)

    @fuse_errors
    @bounded
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        arcid = self._archive_folder(parent_inode)
        text = name.decode("utf-8", "surrogateescape")
        existing = await self._child(self._node(parent_inode), text)
        if existing is not None:
            if flags & os.O_EXCL:
                raise pyfuse3.FUSEError(errno.EEXIST)
            info = await self.open(self.inodes.inode(existing), flags, ctx)
            return info, await self._attributes(existing)
        if not self.library.editable:
            raise pyfuse3.FUSEError(errno.EACCES)
        self.library.note_writer(arcid, ctx.pid)
        scratch = self.scratch.create(arcid, text, mode)
        node = Node(Kind.SCRATCH, arcid, scratch.number)
        info = self._file_info(FileHandle(node), keep_cache=False, pin=True)
        return info, await self._attributes(node)

    @fuse_errors
    @bounded
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        if fields.update_size:
            self._check_writable(node)
            self._truncate(node, attr.st_size)
            if fh is not None and fh in self._files:
                self._files[fh].wrote = True
            elif node.kind is Kind.METADATA:
                await self._save(node.arcid)  # `truncate FILE`: no handle, no later close
        if fields.update_mode and node.kind is Kind.SCRATCH:
            self.scratch.get(node.number).mode = stat.S_IMODE(attr.st_mode) & 0o666
        # Owner, times and other modes: accepted and ignored (editors copy them over).
        return await self._attributes(node)

    def _finished_text(self, handle: FileHandle) -> bool:
        """Whether metadata.json written through `handle` holds text ready to save.

        An empty text is an unfinished save: `echo > f` flushes before it writes,
        `truncate -s 0 f` comes before the write that fills it.
        """
        if handle.failed:
            raise pyfuse3.FUSEError(handle.failed)
        if not handle.wrote or handle.node.kind is not Kind.METADATA:
            return False
        archive = self.library.get(handle.node.arcid)
        return archive.document.dirty and bool(archive.metadata_json.strip())

    @fuse_errors
    async def flush(self, fh: int) -> None:
        handle = self._files.get(fh)
        if handle is not None and self._finished_text(handle):
            await self._save_from(handle)

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self._files.get(fh)
        if handle is not None and handle.failed:
            raise pyfuse3.FUSEError(handle.failed)
        if handle is not None and handle.wrote and handle.node.kind is Kind.METADATA:
            await self._save_from(handle)  # an empty text fails here: fsync asks for it saved

    async def _unpin_soon(self, arcid: str) -> None:
        """Let the folder take its new name a moment after the editor's last scratch file
        closed: the kernel reports the close late, and vim deletes its swap file by path
        right after closing it."""
        await trio.sleep(UNPIN_GRACE)
        self.library.unpin(arcid)

    async def _save_from(self, handle: FileHandle) -> None:
        handle.wrote = False
        await self._save(handle.node.arcid)

    async def _save(self, arcid: str) -> None:
        """Save metadata.json's text to the server; log why not, and fail the call."""
        archive = self.library.get(arcid)
        title = archive.meta.title
        try:
            with self.calls.bounded("saving metadata.json"):  # flush, fsync, release: only here
                await self.library.save_metadata(arcid)
        except (EditError, LrrError) as exc:
            raise self._refused(f"saving metadata.json of {title!r}", exc) from None
        log.info("saved metadata.json of %r", title)
        self._forget_metadata(arcid)

    def _refused(self, what: str, exc: EditError | LrrError) -> pyfuse3.FUSEError:
        """A change the user made failed: the errno to raise. Editors word it vaguely, so
        beyond the log line, `lrrfs status` lists it and the desktop shows it."""
        log.error("%s failed: %s", what, exc)
        FAILURES.record(what, str(exc))
        self._background(notify.desktop(f"lrrfs: {what} failed", printable(str(exc), 300)))
        return pyfuse3.FUSEError(errno_for(exc))

    def _forget_metadata(self, arcid: str) -> None:
        """metadata.json shows new text: the kernel's idea of its size must go."""
        inode = self.inodes.known(self._metadata_node(arcid))
        if inode is not None:
            self._background(invalidate.forget_attributes(inode))

    # -- names --------------------------------------------------------------------

    @fuse_errors
    @bounded
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        arcid = self._archive_folder(parent_inode)
        text = name.decode("utf-8", "surrogateescape")
        scratch = self.scratch.find(arcid, text)
        if scratch is not None:
            self.scratch.remove(scratch)
        elif text == METADATA_NAME and self.library.editable:
            # Reverting: the draft is dropped and metadata.json shows the server's version.
            archive = self.library.get(arcid)
            if archive.document.has_draft:
                log.info("%s/metadata.json: unsaved text discarded", archive.name)
            self._new_metadata_node(arcid)
            await self.library.revert_metadata(arcid)
        else:
            raise pyfuse3.FUSEError(errno.EACCES)

    @fuse_errors
    @bounded
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        if flags & RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        old = name_old.decode("utf-8", "surrogateescape")
        new = name_new.decode("utf-8", "surrogateescape")
        if parent_inode_old == parent_inode_new == pyfuse3.ROOT_INODE:
            await self._retitle(old, new)
            return
        arcid = self._archive_folder(parent_inode_old)
        if self._archive_folder(parent_inode_new) != arcid:
            raise pyfuse3.FUSEError(errno.EXDEV)
        if not self.library.editable:
            raise pyfuse3.FUSEError(errno.EACCES)
        target = await self._child(self._node(parent_inode_new), new)
        if target is not None and flags & RENAME_NOREPLACE:
            raise pyfuse3.FUSEError(errno.EEXIST)
        source = await self._child(self._node(parent_inode_old), old)
        if source is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if target is not None and target.kind not in (Kind.SCRATCH, Kind.METADATA):
            raise pyfuse3.FUSEError(errno.EACCES)
        if source.kind is Kind.SCRATCH and new == METADATA_NAME:
            await self._save_renamed(source)
        elif source.kind is Kind.SCRATCH:
            self.scratch.rename(self.scratch.get(source.number), new)
        elif source.kind is Kind.METADATA:
            self._rename_metadata_away(source, new)
        else:
            raise pyfuse3.FUSEError(errno.EACCES)

    async def _save_renamed(self, source: Node) -> None:
        """A file renamed onto metadata.json (sed -i, gedit, os.replace): a save."""
        scratch = self.scratch.get(source.number)
        archive = self.library.get(source.arcid)
        try:
            archive.document.replace(archive.meta, bytes(scratch.data))
        except EditError as exc:
            raise pyfuse3.FUSEError(errno_for(exc)) from None
        await self._save(source.arcid)  # on failure the text stays as metadata.json's draft
        self.scratch.remove(scratch)
        self.inodes.rebind(self.inodes.inode(source), self._new_metadata_node(source.arcid))

    def _rename_metadata_away(self, source: Node, new: str) -> None:
        """metadata.json renamed (vim's backup): its inode becomes a scratch file with its
        text; a fresh metadata.json takes its place. Nothing changes on the server."""
        archive = self.library.get(source.arcid)
        existing = self.scratch.find(source.arcid, new)
        if existing is not None:
            self.scratch.remove(existing)
        scratch = self.scratch.create(source.arcid, new, 0o644, archive.metadata_json)
        self.inodes.rebind(
            self.inodes.inode(source), Node(Kind.SCRATCH, source.arcid, scratch.number)
        )
        self._new_metadata_node(source.arcid)

    async def _retitle(self, old: str, new: str) -> None:
        """`mv "Old Title" "New Title"` at the root sets the archive's title."""
        if old in self.library.view_names:
            raise pyfuse3.FUSEError(errno.EACCES)
        if self.library.is_reserved(new):
            # EACCES, not EINVAL: mv retries an EINVAL (and words it "a subdirectory of itself")
            log.warning("renaming %r to %r: names starting with @ are the views'", old, new)
            raise pyfuse3.FUSEError(errno.EACCES)
        archive = self.library.find(old)
        if archive is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if self.library.find(new) is not None:
            raise pyfuse3.FUSEError(errno.EEXIST)
        try:
            await self.library.set_title(archive.arcid, new)
        except (EditError, LrrError) as exc:
            raise self._refused(f"renaming {archive.meta.title!r} to {new!r}", exc) from None
        log.info("retitled %r as %r", old, new)
        self._forget_metadata(archive.arcid)

    @fuse_errors
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EACCES)

    @fuse_errors
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EACCES)
