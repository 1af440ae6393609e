"""The FUSE adapter: inodes and handlers over the library model.

Handlers stay small: they map names to nodes, ask the library, and turn
answers into attributes and bytes. Errors are mapped in `errors.py`.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass
from itertools import count

import pyfuse3
import trio

from ..library import METADATA_NAME, THUMBNAIL_NAME, ArchiveReader, Changes, Library
from . import invalidate
from .errors import fuse_errors
from .inodes import ROOT, InodeTable, Kind, Node

log = logging.getLogger(__name__)

DIR_MODE = stat.S_IFDIR | 0o555
FILE_MODE = stat.S_IFREG | 0o444
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
BLOCK_SIZE = 128 * 1024


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long the kernel may trust what it was told (seconds)."""

    entry: float = 60.0  # names and attributes of things that do not change
    changing: float = 1.0  # metadata.json and placeholder thumbnails


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
    snapshot: bytes | None = None  # metadata.json and thumbnail: what this open reads
    reader: ArchiveReader | None = None


class LrrOperations(pyfuse3.Operations):
    """A LANraragi library as a read-only folder tree."""

    enable_writeback_cache = False

    def __init__(
        self,
        library: Library,
        *,
        timeouts: Timeouts | None = None,
        ownership: Ownership | None = None,
        read_only: bool = False,
    ) -> None:
        super().__init__()
        self.library = library
        self.timeouts = timeouts or Timeouts()
        self.ownership = ownership or Ownership()
        self.read_only = read_only
        self.inodes = InodeTable()
        self._handles = count(1)
        self._dirs: dict[int, DirHandle] = {}
        self._files: dict[int, FileHandle] = {}
        library.on_thumbnail_change = self._thumbnail_changed
        self._nursery: trio.Nursery | None = None

    def attach(self, nursery: trio.Nursery) -> None:
        """Give the adapter a nursery for background work (kernel invalidations)."""
        self._nursery = nursery

    # -- nodes and attributes ---------------------------------------------------

    def _node(self, inode: int) -> Node:
        node = self.inodes.node(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    async def _child(self, parent: Node, name: str) -> Node | None:
        if parent.kind is Kind.ROOT:
            archive = self.library.find(name)
            return None if archive is None else Node(Kind.ARCHIVE, archive.arcid)
        if parent.kind is not Kind.ARCHIVE:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        arcid = parent.arcid
        self.library.get(arcid)
        if name == METADATA_NAME:
            return Node(Kind.METADATA, arcid)
        if name == THUMBNAIL_NAME:
            return Node(Kind.THUMBNAIL, arcid)
        found = await self.library.find_page(arcid, name)
        if found is not None:
            return Node(Kind.PAGE, arcid, found[0])
        if name == (await self.library.archive_file(arcid)).name:
            return Node(Kind.ARCHIVE_FILE, arcid)
        return None

    async def _size_of(self, node: Node) -> tuple[int, bool]:
        """The node's exact size, and whether it may change soon."""
        library = self.library
        if node.kind is Kind.PAGE:
            return (await library.pages(node.arcid))[node.index].size, False
        if node.kind is Kind.THUMBNAIL:
            data = await library.thumbnail(node.arcid)
            return len(data), library.thumbnail_is_placeholder(node.arcid)
        if node.kind is Kind.ARCHIVE_FILE:
            return (await library.archive_file(node.arcid)).size, False
        if node.kind is Kind.METADATA:
            return len(library.get(node.arcid).metadata_json), True
        return 0, False

    async def _attributes(self, node: Node) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = self.inodes.inode(node)
        mtime = self.library.get(node.arcid).mtime if node.arcid else 0
        if node.is_dir:
            attr.st_mode, attr.st_nlink, changing = DIR_MODE, 2, False
        else:
            attr.st_size, changing = await self._size_of(node)
            attr.st_mode, attr.st_nlink = FILE_MODE, 1
            attr.st_blocks = (attr.st_size + 511) // 512
        attr.st_mode = self.ownership.mode(attr.st_mode)
        timeout = self.timeouts.changing if changing else self.timeouts.entry
        attr.entry_timeout = attr.attr_timeout = timeout
        attr.st_uid, attr.st_gid = self.ownership.uid, self.ownership.gid
        attr.st_blksize = BLOCK_SIZE
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = mtime * 1_000_000_000
        return attr

    # -- lookups and listings ------------------------------------------------------

    @fuse_errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        if name == b".":
            return await self._attributes(parent)
        if name == b"..":
            return await self._attributes(ROOT)
        child = await self._child(parent, name.decode("utf-8", "surrogateescape"))
        if child is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self._attributes(child)

    @fuse_errors
    async def getattr(
        self, inode: int, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        return await self._attributes(self._node(inode))

    @fuse_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._node(inode)
        if node.kind is Kind.ROOT:
            names = list(self.library.names)
            nodes = [Node(Kind.ARCHIVE, self.library.find(n).arcid) for n in names]  # type: ignore[union-attr]
        elif node.kind is Kind.ARCHIVE:
            names, nodes = await self._archive_entries(node.arcid)
        else:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        handle = next(self._handles)
        self._dirs[handle] = DirHandle(names, nodes)
        return handle

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
        entries[METADATA_NAME] = Node(Kind.METADATA, arcid)
        names = sorted(entries)
        return names, [entries[name] for name in names]

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self._dirs[fh]
        for index in range(start_id, len(handle.names)):
            try:
                attr = await self._attributes(handle.nodes[index])
            except pyfuse3.FUSEError:
                continue  # gone since the folder was opened
            name = handle.names[index].encode("utf-8", "surrogateescape")
            if not pyfuse3.readdir_reply(token, name, attr, index + 1):
                break

    @fuse_errors
    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    # -- files --------------------------------------------------------------------

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EACCES)
        handle = FileHandle(node)
        keep_cache = True
        if node.kind is Kind.METADATA:
            handle.snapshot = self.library.get(node.arcid).metadata_json
            keep_cache = False
        elif node.kind is Kind.THUMBNAIL:
            handle.snapshot = await self.library.thumbnail(node.arcid)
            keep_cache = not self.library.thumbnail_is_placeholder(node.arcid)
        elif node.kind is Kind.ARCHIVE_FILE:
            handle.reader = await self.library.open_archive(node.arcid)
        fh = next(self._handles)
        self._files[fh] = handle
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep_cache)

    @fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self._files[fh]
        if handle.snapshot is not None:
            return handle.snapshot[off : off + size]
        if handle.reader is not None:
            return await handle.reader.read(off, size)
        data = await self.library.page_data(handle.node.arcid, handle.node.index)
        return data[off : off + size]

    @fuse_errors
    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh, None)
        if handle is not None and handle.reader is not None:
            await handle.reader.aclose()

    async def close_idle_streams(self, idle_seconds: float) -> None:
        for handle in list(self._files.values()):
            if handle.reader is not None:
                await handle.reader.close_if_idle(idle_seconds)

    @fuse_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = BLOCK_SIZE
        data.f_files = len(self.library)
        data.f_namemax = 255
        return data

    # -- following the server ------------------------------------------------------

    async def apply_changes(self, changes: Changes) -> None:
        """Drop what the kernel cached of names and files that changed on the server."""
        root = pyfuse3.ROOT_INODE
        for _arcid, old_name in changes.removed:
            await invalidate.forget_entry(root, old_name)
        for _arcid, old_name, _new in changes.renamed:
            await invalidate.forget_entry(root, old_name)
        for arcid in changes.updated:
            inode = self.inodes.known(Node(Kind.METADATA, arcid))
            if inode is not None:
                await invalidate.forget_attributes(inode)

    def _thumbnail_changed(self, arcid: str) -> None:
        inode = self.inodes.known(Node(Kind.THUMBNAIL, arcid))
        if inode is not None and self._nursery is not None:
            self._nursery.start_soon(invalidate.forget_attributes, inode)
