"""The FUSE adapter: inodes and handlers over the library model.

Handlers stay small: they map names to nodes, ask the library, and turn
answers into attributes and bytes. Errors are mapped in `errors.py`.

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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from itertools import count
from typing import Any

import pyfuse3
import trio

from .. import notify
from ..client import LrrError, NotFound
from ..client.errors import printable
from ..library import METADATA_NAME, THUMBNAIL_NAME, ArchiveReader, Changes, Library
from ..library.background import FAILURES, start_quietly
from ..library.editing import EditError
from . import invalidate, views
from .calls import CallLimits, bounded
from .errors import errno_for, fuse_errors
from .inodes import ROOT, VIEW_KINDS, InodeTable, Kind, Node
from .pagecache import KernelPageCache
from .readers import Readers
from .scratch import ScratchFile, ScratchFiles

log = logging.getLogger(__name__)

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND
BLOCK_SIZE = 128 * 1024
# st_blksize of the archive file: `cat` and `cp` read this much at once
ARCHIVE_BLOCK_SIZE = 1 << 20
UNPIN_GRACE = 1.0  # seconds
FOLDER_ICON_NAME = ".directory"
# Dolphin (KDE) reads a folder's icon from it; "./" is the folder itself.
FOLDER_ICON = f"[Desktop Entry]\nIcon=./{THUMBNAIL_NAME}\n".encode()
FORMER_NAME = 1  # number of an archive folder's node under its former name: an inode of its own
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long the kernel may trust what it was told (seconds)."""

    entry: float = 60.0  # names and attributes of things that do not change
    changing: float = 1.0  # placeholder thumbnails
    editable: float = 0.0  # metadata.json and scratch files: their size changes under writes
    view: float = 1.0  # view folders and links: their content follows the server


@dataclass(frozen=True, slots=True)
class Ownership:
    """Who the files belong to and which mode bits are masked (like sshfs's uid/gid/umask)."""

    uid: int = os.getuid()
    gid: int = os.getgid()
    umask: int = 0o022

    def mode(self, mode: int) -> int:
        return mode & ~self.umask


@dataclass(slots=True)
class DirHandle:
    names: list[str]
    nodes: list[Node]


@dataclass(slots=True)
class FileHandle:
    node: Node
    snapshot: bytes | None = None  # thumbnail, or a page once read: what this open reads
    reader: ArchiveReader | None = None
    wrote: bool = False  # metadata.json written through this handle since its last save
    failed: int = 0  # errno of a refused write: the text is incomplete, so no save
    pinned: bool = False  # an open scratch file: the folder keeps its name meanwhile


class LrrOperations(pyfuse3.Operations):
    """A LANraragi library as a folder tree."""

    enable_writeback_cache = False

    def __init__(
        self,
        library: Library,
        *,
        timeouts: Timeouts | None = None,
        ownership: Ownership | None = None,
        folder_icons: bool = False,
    ) -> None:
        super().__init__()
        self.library = library
        self.folder_icons = folder_icons  # a `.directory` in each archive folder
        self.calls = CallLimits(library.client.timeout)
        self.timeouts = timeouts or Timeouts()
        self.ownership = ownership or Ownership()
        self.inodes = InodeTable()
        self.scratch = ScratchFiles()
        self._readers = Readers()  # a person reading, or a program in bulk
        self._generations: dict[str, int] = {}  # arcid -> metadata.json's generation
        self._handles = count(1)
        self._dirs: dict[int, DirHandle] = {}
        self._files: dict[int, FileHandle] = {}
        library.on_thumbnail_change = self._thumbnail_changed
        library.on_page_ahead = self._page_ahead
        library.on_changes = self._library_changed
        # An archive's folder was listed (desktop thumbnails are made for it): its arcid.
        self.on_folder_listed: Callable[[str], None] = lambda arcid: None
        self._nursery: trio.Nursery | None = None
        self._forgetting = 0  # kernel updates for library changes still running
        self._forgotten = trio.Event()  # set while none runs
        self._kernel_cache: KernelPageCache | None = None

    def attach(self, nursery: trio.Nursery) -> None:
        """Give the adapter a nursery for background work (invalidations, progress, prefetch)."""
        self._nursery = nursery
        self._kernel_cache = KernelPageCache()
        self.library.attach(nursery)

    def detach(self) -> None:
        """The mount is going: no more stores into the kernel's cache."""
        if self._kernel_cache is not None:
            self._kernel_cache.close()
            self._kernel_cache = None

    # -- nodes and attributes ---------------------------------------------------

    def _node(self, inode: int) -> Node:
        node = self.inodes.node(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    def _metadata_node(self, arcid: str) -> Node:
        return Node(Kind.METADATA, arcid, self._generations.get(arcid, 0))

    def _new_metadata_node(self, arcid: str) -> Node:
        """metadata.json gets a new inode: the old one was renamed away or deleted."""
        self._generations[arcid] = self._generations.get(arcid, 0) + 1
        return self._metadata_node(arcid)

    def _archive_folder(self, inode: int) -> str:
        """The arcid of an archive folder, for operations that change its content."""
        node = self._node(inode)
        if node.kind is not Kind.ARCHIVE:
            raise pyfuse3.FUSEError(errno.EACCES)
        self.library.get(node.arcid)
        return node.arcid

    async def _child(self, parent: Node, name: str, pid: int = 0) -> Node | None:
        """The node `name` in `parent`; `pid`: the program asking (see `find_former`)."""
        if parent.kind is Kind.ROOT:
            if name in self.library.view_names:
                return views.view_node(name)
            archive = self.library.find(name)
            if archive is not None:
                return Node(Kind.ARCHIVE, archive.arcid)
            former = self.library.find_former(name, pid)  # listed no more, but still found
            return None if former is None else Node(Kind.ARCHIVE, former.arcid, FORMER_NAME)
        if parent.kind is Kind.VIEW:
            return await views.child(self.library, parent, name)
        if parent.kind is not Kind.ARCHIVE:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        arcid = parent.arcid
        self.library.get(arcid)
        if name == METADATA_NAME:
            return self._metadata_node(arcid)
        if name == THUMBNAIL_NAME:
            return Node(Kind.THUMBNAIL, arcid)
        if name == FOLDER_ICON_NAME and self.folder_icons:
            return Node(Kind.FOLDER_ICON, arcid)
        scratch = self.scratch.find(arcid, name)
        if scratch is not None:
            return Node(Kind.SCRATCH, arcid, scratch.number)
        found = await self.library.find_page(arcid, name)
        if found is not None:
            return Node(Kind.PAGE, arcid, found[0])
        if name == (await self.library.archive_file(arcid)).name:
            return Node(Kind.ARCHIVE_FILE, arcid)
        return None

    async def _size_of(self, node: Node) -> tuple[int, float]:
        """The node's exact size, and how long the kernel may trust it."""
        library, timeouts = self.library, self.timeouts
        if node.kind is Kind.PAGE:
            return (await library.pages(node.arcid))[node.number].size, timeouts.entry
        if node.kind is Kind.THUMBNAIL:
            data = await library.thumbnail(node.arcid)
            placeholder = library.thumbnail_is_placeholder(node.arcid)
            return len(data), timeouts.changing if placeholder else timeouts.entry
        if node.kind is Kind.ARCHIVE_FILE:
            return (await library.archive_file(node.arcid)).size, timeouts.entry
        if node.kind is Kind.METADATA:
            return len(library.get(node.arcid).metadata_json), timeouts.editable
        if node.kind is Kind.SCRATCH:
            return len(self.scratch.get(node.number).data), timeouts.editable
        if node.kind is Kind.VIEW_LINK:
            return len(views.link_target(library, node)), timeouts.view
        if node.kind is Kind.FOLDER_ICON:
            return len(FOLDER_ICON), timeouts.entry
        return 0, timeouts.entry

    def _mode(self, node: Node) -> int:
        writable = self.library.editable
        if node.kind is Kind.VIEW:
            return stat.S_IFDIR | 0o555  # nothing can be made in a view
        if node.kind is Kind.VIEW_LINK:
            return stat.S_IFLNK | 0o777
        if node.is_dir:
            return stat.S_IFDIR | (0o755 if writable else 0o555)
        if node.kind is Kind.SCRATCH:
            return stat.S_IFREG | self.scratch.get(node.number).mode
        if node.kind is Kind.METADATA and writable:
            return stat.S_IFREG | 0o644
        return stat.S_IFREG | 0o444

    async def _attributes(self, node: Node) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = self.inodes.inode(node)
        mtime_ns = self.library.mtime(node.arcid) * 1_000_000_000
        timeout = self.timeouts.view if node.kind in VIEW_KINDS else self.timeouts.entry
        attr.st_nlink = 2 if node.is_dir else 1
        if not node.is_dir:
            attr.st_size, timeout = await self._size_of(node)
            attr.st_blocks = (attr.st_size + 511) // 512
        if node.kind is Kind.SCRATCH:
            mtime_ns = self.scratch.get(node.number).mtime_ns
        attr.st_mode = self.ownership.mode(self._mode(node))
        attr.entry_timeout = attr.attr_timeout = timeout
        if node.kind is Kind.ARCHIVE and node.number == FORMER_NAME:
            attr.entry_timeout = 0  # looked up each time: it is there for its writers only
        attr.st_uid, attr.st_gid = self.ownership.uid, self.ownership.gid
        attr.st_blksize = ARCHIVE_BLOCK_SIZE if node.kind is Kind.ARCHIVE_FILE else BLOCK_SIZE
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = mtime_ns
        return attr

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
        # `ls -a`, `find` and backup tools expect the folder and its parent listed first.
        self._dirs[handle] = DirHandle([".", "..", *names], [node, _parent(node), *nodes])
        return handle

    def _root_entries(self) -> tuple[list[str], list[Node]]:
        library = self.library
        found = {name: views.view_node(name) for name in library.view_names}
        for name in library.names:
            archive = library.find(name)
            assert archive is not None  # every listed name is an archive's
            found[name] = Node(Kind.ARCHIVE, archive.arcid)
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
                log.warning("%s: no thumbnail: %s", library.get(arcid).name, exc)

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

    @fuse_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self._node(inode)
        if node.kind is not Kind.VIEW_LINK:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return views.link_target(self.library, node)

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
            with self.calls.bounded("open"):
                handle.reader = await self.library.open_archive(node.arcid)
            # Direct I/O: the kernel passes reads as large as the program asks for
            # (1 MiB for `cat`) instead of 128 KiB at a time, which is what lets a
            # Python process keep up with the server. The cost: no shared mmap.
            direct_io = True
        elif node.kind is Kind.PAGE:
            # Opening a page is reading it: a re-read may come from the kernel's cache,
            # without a read call. lrrfs's own fetches never open a file.
            by_person, turned_bulk = self._readers.opened(ctx.pid, node.arcid)
            self.library.page_opened(node.arcid, node.number, by_person)
            if turned_bulk:
                self.library.read_in_bulk(node.arcid)
        if node.kind in (Kind.METADATA, Kind.SCRATCH):
            keep_cache = False
        return self._file_info(
            handle, keep_cache, pin=node.kind is Kind.SCRATCH, direct_io=direct_io
        )

    def _file_info(
        self, handle: FileHandle, keep_cache: bool, pin: bool = False, direct_io: bool = False
    ) -> pyfuse3.FileInfo:
        """Register an open file. An editor's open scratch file (vim's swap file) pins
        the folder's name, so that the paths the editor holds keep working."""
        fh = next(self._handles)
        self._files[fh] = handle
        if pin:
            handle.pinned = True
            self.library.pin(handle.node.arcid)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep_cache, direct_io=direct_io)

    # pyfuse3 replies with any contiguous buffer (PyObject_GetBuffer in fuse_read_async);
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
            with self.calls.bounded("read"):
                return await handle.reader.read(off, size)
        if node.kind is Kind.METADATA:
            archive = self.library.get(node.arcid)
            archive.document.note_read(archive.meta)
            return archive.metadata_json[off : off + size]
        if node.kind is Kind.SCRATCH:
            return bytes(self.scratch.get(node.number).data[off : off + size])
        with self.calls.bounded("read"):
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
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EACCES)

    @fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise pyfuse3.FUSEError(errno.EACCES)

    @fuse_errors
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EACCES)

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

    # -- following the server ------------------------------------------------------

    def _background(self, job: Coroutine[Any, Any, object]) -> None:
        start_quietly(self._nursery, job, "background kernel update")

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
            inode = self.inodes.known(self._metadata_node(arcid))
            if inode is not None:
                await invalidate.forget_attributes(inode)

    def _page_ahead(self, arcid: str, index: int, data: bytes) -> None:
        """A page fetched ahead goes to the kernel's cache of its file, if the kernel
        knows the file (it was listed or looked up)."""
        inode = self.inodes.known(Node(Kind.PAGE, arcid, index))
        if inode is not None and self._kernel_cache is not None:
            self._kernel_cache.store(inode, data)

    def _thumbnail_changed(self, arcid: str) -> None:
        inode = self.inodes.known(Node(Kind.THUMBNAIL, arcid))
        if inode is not None:
            self._background(invalidate.forget_attributes(inode))


def _parent(node: Node) -> Node:
    """The folder holding a folder node (the top holds itself)."""
    if node.kind is Kind.VIEW and "/" in node.view:
        return views.view_node(node.view.rsplit("/", 1)[0])
    return ROOT


__all__ = ["LrrOperations", "Ownership", "ScratchFile", "Timeouts"]
