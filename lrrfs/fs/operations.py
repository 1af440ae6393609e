"""The FUSE adapter: inodes and handlers over the library model.

Handlers stay small: they map names to nodes, ask the library, and turn
answers into attributes and bytes. Errors are mapped in `errors.py`. The
shared state and node helpers are in `base.py`, writes and renames in
`editing.py`; this layer looks up, lists, opens and reads, and follows the server.
"""

from __future__ import annotations

import errno
import logging
import os

import pyfuse3
import trio

from ..client import NotFound
from ..client.errors import Offline
from ..library import METADATA_NAME, THUMBNAIL_NAME, Changes
from . import invalidate, views
from .base import (
    BLOCK_SIZE,
    FOLDER_ICON,
    FOLDER_ICON_NAME,
    WRITE_FLAGS,
    DirHandle,
    FileHandle,
    Ownership,
    Timeouts,
    parent_folder,
)
from .calls import bounded
from .errors import fuse_errors
from .inodes import ROOT, Kind, Node
from .scratch import ScratchFile
from .uploads import UploadsOperations

log = logging.getLogger(__name__)


class LrrOperations(UploadsOperations):
    """A LANraragi library as a folder tree."""

    def attach(self, nursery: trio.Nursery) -> None:
        """Mounted: the library's changes now reach the kernel."""
        self.library.on_thumbnail_change = self._thumbnail_changed
        self.library.on_page_ahead = self._page_ahead
        self.library.take_page_ahead = self._take_page_ahead
        self.library.on_changes = self._library_changed
        super().attach(nursery)

    # -- lookups and listings ------------------------------------------------------

    @fuse_errors
    @bounded
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        if name == b".":
            return await self._attributes(parent)
        if name == b"..":
            return await self._attributes(ROOT)
        child = await self._child(parent, name.decode("utf-8", "surrogateescape"), ctx.pid)
        if child is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self._attributes(child)

    @fuse_errors
    @bounded
    async def getattr(
        self, inode: int, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        return await self._attributes(self._node(inode))

    @fuse_errors
    @bounded
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._node(inode)
        if node.kind is Kind.ROOT:
            await self._settle()
            names, nodes = self._root_entries()
        elif node.kind is Kind.ARCHIVE:
            names, nodes = await self._archive_entries(node.arcid)
            self.on_folder_listed(node.arcid)
        elif node.kind is Kind.VIEW:
            names, nodes = await views.entries(self.library, node)
        else:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        handle = next(self._handles)
        self.note_listing(node, ctx.pid, handle)
        # `ls -a`, `find` and backup tools expect the folder and its parent listed first.
        self._dirs[handle] = DirHandle([".", "..", *names], [node, parent_folder(node), *nodes])
        return handle

    def _root_entries(self) -> tuple[list[str], list[Node]]:
        library = self.library
        found = {name: views.view_node(name) for name in library.view_names}
        for name in library.names:
            archive = library.find(name)
            assert archive is not None  # every listed name is an archive's
            found[name] = Node(Kind.ARCHIVE, archive.arcid)
        found.update(self._upload_entries())
        names = sorted(found)
        return names, [found[name] for name in names]

    async def _archive_entries(self, arcid: str) -> tuple[list[str], list[Node]]:
        """Everything in an archive's folder, with what their sizes need fetched at once."""
        library = self.library
        optional: dict[str, Node] = {}

        async def try_thumbnail() -> None:
            try:
                await library.thumbnail(arcid)
                optional[THUMBNAIL_NAME] = Node(Kind.THUMBNAIL, arcid)
            except Exception as exc:  # a folder without its cover still lists
                quiet = isinstance(exc, Offline)  # offline: said once, when it began
                log.log(logging.DEBUG if quiet else logging.WARNING,
                        "%s: no thumbnail: %s", library.get(arcid).name, exc)  # fmt: skip

        async def archive_file() -> None:
            optional[(await library.archive_file(arcid)).name] = Node(Kind.ARCHIVE_FILE, arcid)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(try_thumbnail)
            nursery.start_soon(archive_file)
            pages = await library.pages(arcid)
        entries = {page.name: Node(Kind.PAGE, arcid, i) for i, page in enumerate(pages)}
        entries.update(optional)
        for name, scratch in self.scratch.names(arcid):
            entries[name] = Node(Kind.SCRATCH, arcid, scratch.number)
        entries[METADATA_NAME] = self._metadata_node(arcid)
        if self.folder_icons:
            entries[FOLDER_ICON_NAME] = Node(Kind.FOLDER_ICON, arcid)
        for name in self.hidden(arcid):  # removed by an rm -r under way
            entries.pop(name, None)
        names = sorted(entries)
        return names, [entries[name] for name in names]

    @fuse_errors
    @bounded
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self._dirs[fh]
        for index in range(start_id, len(handle.names)):
            try:
                attr = await self._attributes(handle.nodes[index])
            except (pyfuse3.FUSEError, NotFound):
                continue  # gone since the folder was opened
            name = handle.names[index].encode("utf-8", "surrogateescape")
            if not pyfuse3.readdir_reply(token, name, attr, index + 1):
                break

    @fuse_errors
    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)
        self.forget_listing(fh)

    @fuse_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self._node(inode)
        if node.kind is not Kind.VIEW_LINK:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return await views.link_target(self.library, node)

    # -- reading ------------------------------------------------------------------

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if node.kind is Kind.VIEW_LINK:
            raise pyfuse3.FUSEError(errno.ELOOP)  # the kernel follows links itself
        handle = FileHandle(node)
        keep_cache = True
        direct_io = False
        if flags & WRITE_FLAGS:
            self._check_writable(node)
            self.library.note_writer(node.arcid, ctx.pid)
            keep_cache = False
            if flags & os.O_TRUNC:
                self._truncate(node, 0)
                handle.wrote = True
        elif node.kind is Kind.METADATA:
            # One version per open: a refresh (the progress, another client's edit) may
            # change the text between two reads, and a reader must never get half of each.
            # Direct I/O: the kernel then reads to this text's end, whatever size it knew.
            archive = self.library.get(node.arcid)
            archive.document.note_read(archive.meta)
            handle.snapshot = archive.metadata_json
            direct_io = True
        elif node.kind is Kind.FOLDER_ICON:
            handle.snapshot = FOLDER_ICON
        elif node.kind is Kind.THUMBNAIL:
            with self.calls.bounded("open"):  # opens of pages, the hot path, need no scope
                handle.snapshot = await self.library.thumbnail(node.arcid)
            keep_cache = not self.library.thumbnail_is_placeholder(node.arcid)
        elif node.kind is Kind.ARCHIVE_FILE:
            # Through the kernel's page cache, kept across opens (an archive's bytes never
            # change under its cache key; a new size is a new file): small reads hit
            # memory, a second open reads nothing from us, a shared mmap works.
            with self.calls.bounded("open"):
                handle.reader = await self.library.open_archive(node.arcid)
        elif node.kind is Kind.PAGE:
            # Opening a page is reading it: a re-read may come from the kernel's cache,
            # without a read call. lrrfs's own fetches never open a file.
            by_person, turned_bulk = self._readers.opened(ctx.pid, node.arcid)
            if not by_person and self._readers.thumbnailer(ctx.pid):
                self.on_thumbnailer_reading(node.arcid)
            self.library.page_opened(node.arcid, node.number, by_person)
            if turned_bulk:
                self.library.read_in_bulk(node.arcid)
        if node.kind in (Kind.METADATA, Kind.SCRATCH, Kind.UPLOAD):
            keep_cache = False
        return self._file_info(
            handle, keep_cache, pin=node.kind is Kind.SCRATCH, direct_io=direct_io
        )

    # its stubs say bytes, and a page's slice is a memoryview, not a copy.
    @fuse_errors
    async def read(  # type: ignore[override]
        self, fh: int, off: int, size: int
    ) -> bytes | memoryview:
        handle = self._files[fh]
        node = handle.node
        if handle.snapshot is not None:
            return handle.snapshot[off : off + size]
        if handle.reader is not None:
            self.library.note_reading()
            with handle.retries.bounded(self.calls):
                return await handle.reader.read(off, size)
        if node.kind is Kind.METADATA:
            archive = self.library.get(node.arcid)
            archive.document.note_read(archive.meta)
            return archive.metadata_json[off : off + size]
        if node.kind is Kind.SCRATCH:
            return bytes(self.scratch.get(node.number).data[off : off + size])
        if node.kind is Kind.UPLOAD:
            return self.read_upload(node, off, size)
        with handle.retries.bounded(self.calls):
            data = await self.library.page_data(node.arcid, node.number)
        handle.snapshot = data  # a page comes in several reads: one fetch, one prefetch nudge
        return memoryview(data)[off : off + size]

    async def close_idle_streams(self, idle_seconds: float) -> None:
        for handle in list(self._files.values()):
            if handle.reader is not None:
                await handle.reader.close_if_idle(idle_seconds)

    @fuse_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        """The library's size, from memory only: file managers and df call this often.

        Size and used are the archives' total size (as the server reports it; at
        least one block, or df hides the mount as a pseudo file system), nothing is
        free: df shows it full, as it shows an ISO image, Use% 100.
        """
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = BLOCK_SIZE
        data.f_blocks = max(1, -(-self.library.total_size // BLOCK_SIZE))
        data.f_bfree = data.f_bavail = 0
        data.f_files = len(self.library)
        data.f_namemax = 255
        return data

    @fuse_errors
    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh, None)
        if handle is None:
            return
        if handle.reader is not None:
            await handle.reader.aclose()
        try:
            if not handle.failed and self._finished_text(handle):
                await self._save_from(handle)  # the error reaches nobody, but it is logged
        finally:
            if handle.pinned:
                self._background(self._unpin_soon(handle.node.arcid))

    # -- following the server ------------------------------------------------------

    def _library_changed(self, changes: Changes) -> None:
        """Folders came, went or moved: the kernel must forget the old names before a
        listing shows the new ones (`_settle`), or a cached name outlives its folder."""
        if self._nursery is None:
            return  # not mounted yet: the kernel knows nothing
        if self._forgetting == 0:
            self._forgotten = trio.Event()
        self._forgetting += 1
        self._background(self._forget_changes(changes))

    async def _forget_changes(self, changes: Changes) -> None:
        try:
            await self._apply_changes(changes)
        finally:
            self._forgetting -= 1
            if self._forgetting == 0:
                self._forgotten.set()

    async def _settle(self) -> None:
        """Wait until the kernel has forgotten what the library dropped."""
        if self._forgetting:
            await self._forgotten.wait()

    async def _apply_changes(self, changes: Changes) -> None:
        """Drop what the kernel cached of names and files that changed on the server."""
        root = pyfuse3.ROOT_INODE
        for _arcid, old_name in changes.removed:
            await invalidate.forget_entry(root, old_name)
        for _arcid, old_name, _new in changes.renamed:
            await invalidate.forget_entry(root, old_name)
        for arcid in changes.updated:
            # The archive file too: its pages stay in the kernel's cache across opens, and
            # an archive the server now reports with a new size is another file.
            for node in (self._metadata_node(arcid), Node(Kind.ARCHIVE_FILE, arcid)):
                inode = self.inodes.known(node)
                if inode is not None:
                    await invalidate.forget_attributes(inode)

    def _page_ahead(self, arcid: str, index: int, data: bytes) -> None:
        """A page fetched ahead goes to the kernel's cache of its file, if the kernel
        knows the file (it was listed or looked up)."""
        inode = self.inodes.known(Node(Kind.PAGE, arcid, index))
        if inode is not None and self._kernel_cache is not None:
            self._kernel_cache.store(inode, data)

    def _take_page_ahead(self, arcid: str, index: int, data: memoryview) -> bool:
        """(In a worker thread.) A page read ahead from the disk goes to the kernel's
        cache of its file at once, if the kernel knows the file."""
        inode = self.inodes.known(Node(Kind.PAGE, arcid, index))
        cache = self._kernel_cache
        return inode is not None and cache is not None and cache.store_now(inode, data)

    def _thumbnail_changed(self, arcid: str) -> None:
        inode = self.inodes.known(Node(Kind.THUMBNAIL, arcid))
        if inode is not None:
            self._background(invalidate.forget_attributes(inode))


__all__ = ["LrrOperations", "Ownership", "ScratchFile", "Timeouts"]
