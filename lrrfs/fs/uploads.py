"""The FUSE adapter's uploads layer: archives copied into the mount.

A file created at the top (or in a category's folder) is spooled to disk (spool.py);
when it is closed under an archive's name, or renamed to one (file managers and rsync
copy through a temporary name), it is uploaded, and the `close()` or `rename()` returns
once the server has it. A copy killed mid-way is dropped, never uploaded; a file the
server never got is kept at unmount (`keep_unsent`).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import pyfuse3

from ..client import LrrError
from ..library.changes import is_archive_name
from ..library.editing import EditError
from ..library.views import CATEGORIES
from . import invalidate
from .base import FileHandle
from .changes import ChangesOperations, group_of
from .errors import fuse_errors
from .inodes import Kind, Node
from .spool import Spool

log = logging.getLogger(__name__)

DONE_SECONDS = 60.0  # an uploaded file's name answers lookups this long (cp -p, shutil.copy)
PF_EXITING = 0x4  # /proc/<pid>/stat flags: the process is exiting


@dataclass(slots=True)
class PendingUpload:
    """A file being copied in: its bytes in a spool file until the server has them."""

    number: int
    folder: str  # "" for the top, or a category's view path ("@categories/Name")
    name: str
    path: Path
    fd: int
    writer: int  # pid of the program that created it
    mode: int = 0o644
    size: int = 0
    dirty: bool = False  # written since it was last uploaded
    done: float = 0.0  # when the server got it (monotonic); 0: not yet


def killed(pid: int) -> bool:
    """Whether `pid` is being ended by a signal: the kernel closes its files as it exits,
    and a copy cut short must not be uploaded (/proc/<pid>/stat: flags, exit_code)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    flags = int(fields[6])
    exit_code = int(fields[49]) if len(fields) > 49 else 0
    return bool(flags & PF_EXITING) and (exit_code & 0x7F) != 0


class UploadsOperations(ChangesOperations):
    """Files copied into the top or a category's folder: spooled, then uploaded."""

    def __init__(self, *args: Any, spool: Spool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spool = spool
        self._uploads: dict[int, PendingUpload] = {}
        self._upload_numbers = count(1)

    # -- nodes ------------------------------------------------------------------------

    def _pending(self, folder: str, name: str) -> PendingUpload | None:
        for pending in self._uploads.values():
            if pending.folder == folder and pending.name == name:
                if pending.done and time.monotonic() - pending.done > DONE_SECONDS:
                    del self._uploads[pending.number]
                    return None
                return pending
        return None

    def _pending_in(self, parent: Node, name: str) -> PendingUpload | None:
        """The copy named `name` in the folder `parent`, if copies can be made there."""
        if parent.kind is Kind.ROOT or group_of(parent) is not None:
            return self._pending(parent.view, name)
        return None

    def _upload_entries(self) -> dict[str, Node]:
        """Files being copied in at the top, for its listing."""
        return {
            p.name: Node(Kind.UPLOAD, number=p.number)
            for p in self._uploads.values()
            if not p.folder and not p.done
        }

    async def _child(self, parent: Node, name: str, pid: int = 0) -> Node | None:
        pending = self._pending_in(parent, name)
        if pending is not None:
            return Node(Kind.UPLOAD, number=pending.number)
        return await super()._child(parent, name, pid)

    async def _size_of(self, node: Node) -> tuple[int, float]:
        if node.kind is Kind.UPLOAD:
            return self._upload(node).size, self.timeouts.editable
        return await super()._size_of(node)

    def _mode(self, node: Node) -> int:
        if node.kind is Kind.UPLOAD:
            return stat.S_IFREG | self._upload(node).mode
        return super()._mode(node)

    def _upload(self, node: Node) -> PendingUpload:
        pending = self._uploads.get(node.number)
        if pending is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return pending

    # -- copying in ---------------------------------------------------------------------

    def _can_add(self, name: str) -> None:
        library = self.library
        if not library.editable:
            log.warning(
                "adding %r: %s", name,
                "the mount is read-only" if library.read_only
                else "adding archives needs the server's API key (--api-key-file or LRR_API_KEY)",
            )  # fmt: skip
            raise pyfuse3.FUSEError(errno.EACCES)
        if library.info is not None and not library.info.has_files_route:
            log.error("adding %r: this LANraragi server (0.7) has no upload API", name)
            raise pyfuse3.FUSEError(errno.EROFS)

    @fuse_errors
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        parent = self._node(parent_inode)
        group = group_of(parent)
        if parent.kind is not Kind.ROOT and (group is None or group[0] != CATEGORIES):
            return await super().create(parent_inode, name, mode, flags, ctx)
        text = name.decode("utf-8", "surrogateescape")
        existing = await self._child(parent, text)
        if existing is not None and (flags & os.O_EXCL or existing.kind is not Kind.UPLOAD):
            raise pyfuse3.FUSEError(errno.EEXIST)
        self._can_add(text)
        if existing is not None:
            self._drop(self._upload(existing))
        fd, spooled = self.spool.new_file()
        pending = PendingUpload(
            next(self._upload_numbers), parent.view, text, spooled, fd, ctx.pid, mode & 0o666
        )
        self._uploads[pending.number] = pending
        node = Node(Kind.UPLOAD, number=pending.number)
        info = self._file_info(FileHandle(node), keep_cache=False)
        return info, await self._attributes(node)

    def _check_writable(self, node: Node) -> None:
        if node.kind is Kind.UPLOAD:
            pending = self._upload(node)
            if pending.done:  # copied in again: a new copy (the server says if it is one)
                pending.fd, pending.path = self.spool.new_file()
                pending.done, pending.size, pending.dirty = 0.0, 0, False
            return
        super()._check_writable(node)

    def _truncate(self, node: Node, size: int) -> None:
        if node.kind is Kind.UPLOAD:
            pending = self._upload(node)
            os.ftruncate(pending.fd, size)
            pending.size, pending.dirty = size, True
            return
        super()._truncate(node, size)

    @fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        node = self._files[fh].node
        if node.kind is not Kind.UPLOAD:
            return await super().write(fh, off, buf)
        pending = self._upload(node)
        self._check_writable(node)
        written = os.pwrite(pending.fd, buf, off)
        pending.size = max(pending.size, off + written)
        pending.dirty = True
        return written

    def read_upload(self, node: Node, off: int, size: int) -> bytes:
        pending = self._upload(node)
        if pending.done:
            raise pyfuse3.FUSEError(errno.EACCES)  # the spool is gone: read it on the server
        return os.pread(pending.fd, size, off)

    @fuse_errors
    async def flush(self, fh: int) -> None:
        handle = self._files.get(fh)
        if handle is None or handle.node.kind is not Kind.UPLOAD:
            return await super().flush(fh)
        pending = self._uploads.get(handle.node.number)
        if pending is None or not pending.dirty or not is_archive_name(pending.name):
            return None  # a temporary name: uploaded when renamed to its own
        if killed(pending.writer):
            log.warning("adding %r: the copy was cut short; nothing was sent", pending.name)
            self._drop(pending)
            return None
        await self._send(pending)
        return None

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self._files.get(fh)
        if handle is not None and handle.node.kind is Kind.UPLOAD:
            return  # its bytes are on disk already; the upload comes with close()
        await super().fsync(fh, datasync)

    async def _send(self, pending: PendingUpload) -> None:
        """Upload a spooled file; the call fails (and logs why) unless the server has it."""
        category = pending.folder.split("/", 1)[1] if pending.folder else None
        try:
            await self.library.upload(pending.path, pending.name, category)
        except (EditError, LrrError) as exc:
            self._drop(pending)  # nothing half-added: copy it again once the cause is gone
            raise self._refused(f"adding {pending.name!r}", exc) from None
        pending.dirty = False
        pending.done = time.monotonic()
        _close_spool(pending)
        self._background(invalidate.forget_entry(pyfuse3.ROOT_INODE, pending.name))

    def _drop(self, pending: PendingUpload) -> None:
        self._uploads.pop(pending.number, None)
        _close_spool(pending)

    def keep_unsent(self) -> None:
        """At unmount: the files copied in that the server never got (a name that is not an
        archive's, a copy still open) are kept for their owner, never deleted."""
        for pending in list(self._uploads.values()):
            if pending.done or pending.fd < 0:
                continue
            if pending.size == 0:
                _close_spool(pending)
                continue
            os.close(pending.fd)
            pending.fd = -1
            why = "still being copied" if is_archive_name(pending.name) else "not an archive's name"
            try:
                kept = self.spool.keep(pending.path, pending.name)
            except OSError as exc:
                log.warning("%r was not sent (%s) and cannot be kept: %s", pending.name, why, exc)
                continue
            log.warning("%r was not sent to the server (%s): kept in %s", pending.name, why, kept)

    @fuse_errors
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        if node.kind is not Kind.UPLOAD:
            return await super().setattr(inode, attr, fields, fh, ctx)
        pending = self._upload(node)
        if fields.update_size and not pending.done:
            self._truncate(node, attr.st_size)
        if fields.update_mode:
            pending.mode = stat.S_IMODE(attr.st_mode) & 0o666
        return await self._attributes(node)  # times and owner: accepted, as cp -p sets them

    @fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        text = name.decode("utf-8", "surrogateescape")
        pending = self._pending_in(self._node(parent_inode), text)
        if pending is None:
            return await super().unlink(parent_inode, name, ctx)
        self._drop(pending)
        return None

    @fuse_errors
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        old = name_old.decode("utf-8", "surrogateescape")
        pending = self._pending_in(self._node(parent_inode_old), old)
        if pending is None:
            return await super().rename(
                parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx
            )
        if parent_inode_new != parent_inode_old:
            raise pyfuse3.FUSEError(errno.EXDEV)
        await self._rename_upload(pending, name_new.decode("utf-8", "surrogateescape"))
        return None

    async def _rename_upload(self, pending: PendingUpload, new: str) -> None:
        """A copy's temporary file given its name (rsync, file managers): uploaded now."""
        other = self._pending(pending.folder, new)
        if other is not None and other is not pending:
            self._drop(other)
        pending.name = new
        if is_archive_name(new) and pending.dirty and not pending.done:
            await self._send(pending)


def _close_spool(pending: PendingUpload) -> None:
    if pending.fd >= 0:
        os.close(pending.fd)
        pending.fd = -1
    pending.path.unlink(missing_ok=True)
