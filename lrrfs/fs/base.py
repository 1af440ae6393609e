"""The FUSE adapter's shared part: its state, constants, open handles, and how a name
becomes a node and a node its attributes.

`LrrOperations` (operations.py) is built on it in layers: editing (editing.py: writes,
saves and renames of metadata.json and editors' scratch files), then reading, listing
and following the server (operations.py).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import pyfuse3
import trio

from ..library import METADATA_NAME, THUMBNAIL_NAME, ArchiveReader, Library
from ..library.background import start_quietly
from . import views
from .calls import CallLimits, ReadRetries
from .inodes import ROOT, VIEW_KINDS, InodeTable, Kind, Node
from .pagecache import KernelPageCache
from .readers import Readers
from .scratch import ScratchFiles

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
    retries: ReadRetries = field(default_factory=ReadRetries)


class OperationsBase(pyfuse3.Operations):
    """State and node helpers every layer of the FUSE adapter uses."""

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
        self._nursery: trio.Nursery | None = None
        self._forgetting = 0  # kernel updates for library changes still running
        self._forgotten = trio.Event()  # set while none runs
        self._kernel_cache: KernelPageCache | None = None
        # An archive's folder was listed (desktop thumbnails are made for it): its arcid.
        self.on_folder_listed: Callable[[str], None] = lambda arcid: None
        # A file manager's thumbnailer reads pages of an archive (it makes its own).
        self.on_thumbnailer_reading: Callable[[str], None] = lambda arcid: None

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
            return len(await views.link_target(library, node)), timeouts.view
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
    def _background(self, job: Coroutine[Any, Any, object]) -> None:
        start_quietly(self._nursery, job, "background kernel update")


def parent_folder(node: Node) -> Node:
    """The folder holding a folder node (the top holds itself)."""
    if node.kind is Kind.VIEW and "/" in node.view:
        return views.view_node(node.view.rsplit("/", 1)[0])
    return ROOT
