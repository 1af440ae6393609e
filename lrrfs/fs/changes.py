"""The FUSE adapter's library-changes layer: folders deleted, links made and removed in
@categories, @tankoubons and @new. (Archives copied in: uploads.py.)

`rm -r` of an archive folder deletes the archive, with --allow-delete only: rm
removes the folder's files first (accepted from a program that listed the
folder, never alone), then the folder (the delete).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from typing import Any

import pyfuse3

from ..client import LrrError
from ..library.editing import EditError
from ..library.views import CATEGORIES, NEW, TANKOUBONS, place_of
from . import invalidate, views
from .editing import EditingOperations
from .errors import fuse_errors
from .inodes import Kind, Node

log = logging.getLogger(__name__)

LISTED_SECONDS = 60.0  # files rm -r removed stay hidden this long, waiting for the rmdir
GROUP_VIEWS = (CATEGORIES, TANKOUBONS)  # folders of folders the user fills with links


def group_of(node: Node) -> tuple[str, str] | None:
    """(view, name) of a category's or tankoubon's folder, else None."""
    if node.kind is not Kind.VIEW:
        return None
    parts = node.view.split("/")
    if len(parts) == 2 and parts[0] in GROUP_VIEWS:
        return parts[0], parts[1]
    return None


class ChangesOperations(EditingOperations):
    """Deletes, categories, tankoubons and the new flag."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listings: dict[int, tuple[int, str]] = {}  # open folder handle -> (pid, arcid)
        self._doomed: dict[str, tuple[set[str], float]] = {}  # arcid -> files rm -r removed

    # -- nodes ------------------------------------------------------------------------

    def note_listing(self, node: Node, pid: int, fh: int) -> None:
        """A program holds an archive folder open: it may remove its files (rm -r and
        file managers delete a folder's files while they hold it open, then the folder)."""
        if node.kind is Kind.ARCHIVE:
            self._listings[fh] = (pid, node.arcid)

    def forget_listing(self, fh: int) -> None:
        self._listings.pop(fh, None)

    def hidden(self, arcid: str) -> set[str]:
        """Files of an archive folder that rm -r removed lately (the folder is going)."""
        names, when = self._doomed.get(arcid, (set(), 0.0))
        return names if time.monotonic() - when < LISTED_SECONDS else set()

    async def _child(self, parent: Node, name: str, pid: int = 0) -> Node | None:
        if parent.kind is Kind.ARCHIVE and name in self.hidden(parent.arcid):
            return None
        return await super()._child(parent, name, pid)

    def _mode(self, node: Node) -> int:
        if node.kind is Kind.VIEW and self.library.editable:
            parts = node.view.split("/")
            if parts[0] in (*GROUP_VIEWS, NEW) and len(parts) <= 2:
                return stat.S_IFDIR | 0o755  # links can be made and removed here
        return super()._mode(node)

    # -- removing -------------------------------------------------------------------------

    @fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        parent = self._node(parent_inode)
        text = name.decode("utf-8", "surrogateescape")
        child = await self._child(parent, text)
        if parent.kind is Kind.VIEW:
            await self._unlink_in_view(parent, text, child)
            return
        if parent.kind is Kind.ARCHIVE and (ctx.pid, parent.arcid) in self._listings.values():
            self._remove_for_delete(parent.arcid, text, child)
            return
        if parent.kind is Kind.ARCHIVE and child is not None and child.kind not in (
            Kind.SCRATCH, Kind.METADATA
        ):  # fmt: skip
            log.warning(
                "%s/%s: a page or the archive file cannot be deleted alone; to delete the "
                "archive, remove its folder (rm -r, with the mount's --allow-delete)",
                self.library.get(parent.arcid).name, text,
            )  # fmt: skip
        await super().unlink(parent_inode, name, ctx)

    def _remove_for_delete(self, arcid: str, name: str, child: Node | None) -> None:
        """A file of a folder being removed whole (rm -r): hidden until the folder goes."""
        if child is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        folder = self.library.get(arcid).name
        if not self.library.allow_delete:
            log.warning(
                "%s: deleting archives needs the mount option --allow-delete (-o allow_delete)",
                folder,
            )
            raise pyfuse3.FUSEError(errno.EACCES)
        if child.kind is Kind.SCRATCH:
            self.scratch.remove(self.scratch.get(child.number))
            return
        names = self.hidden(arcid)
        self._doomed[arcid] = ({*names, name}, time.monotonic())

    async def _unlink_in_view(self, parent: Node, name: str, child: Node | None) -> None:
        if child is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if child.kind is not Kind.VIEW_LINK:
            raise pyfuse3.FUSEError(errno.EISDIR)
        group = group_of(parent)
        try:
            if parent.view == NEW:
                await self.library.clear_new(child.arcid)
            elif group is not None:
                await self.library.set_member(group[0], group[1], child.arcid, False)
            else:
                log.warning("%s: a view the server fills; its links cannot be removed", parent.view)
                raise pyfuse3.FUSEError(errno.EROFS)
        except (EditError, LrrError) as exc:
            raise self._refused(f"removing {parent.view}/{name}", exc) from None
        self._background(invalidate.forget_entry(self.inodes.inode(parent), name))

    @fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        parent = self._node(parent_inode)
        text = name.decode("utf-8", "surrogateescape")
        child = await self._child(parent, text)
        if child is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if child.kind is Kind.ARCHIVE:
            await self._delete_archive(child.arcid, text)
            return
        group = group_of(child)
        if group is None:
            raise pyfuse3.FUSEError(errno.EACCES)
        folder = await self.library.view(tuple(child.view.split("/")))
        if folder is not None and folder.members:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        try:
            await self.library.delete_group(*group)
        except (EditError, LrrError) as exc:
            raise self._refused(f"removing {child.view}", exc) from None
        self._background(invalidate.forget_entry(parent_inode, text))

    async def _delete_archive(self, arcid: str, name: str) -> None:
        if not self.library.allow_delete:
            log.warning(
                "%s: deleting archives needs the mount option --allow-delete (-o allow_delete)",
                name,
            )
            raise pyfuse3.FUSEError(errno.EPERM)
        if not self.hidden(arcid):  # rmdir of a full folder: its files first, as rm -r does
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        try:
            await self.library.delete(arcid)
        except (EditError, LrrError) as exc:
            self._doomed.pop(arcid, None)
            raise self._refused(f"deleting {name!r}", exc) from None
        self._doomed.pop(arcid, None)
        self._background(invalidate.forget_entry(pyfuse3.ROOT_INODE, name))

    # -- making ------------------------------------------------------------------------

    @fuse_errors
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        text = name.decode("utf-8", "surrogateescape")
        if parent.kind is not Kind.VIEW or parent.view not in GROUP_VIEWS:
            raise pyfuse3.FUSEError(errno.EACCES)
        if await self._child(parent, text) is not None:
            raise pyfuse3.FUSEError(errno.EEXIST)
        try:
            await self.library.create_group(parent.view, text)
        except (EditError, LrrError) as exc:
            raise self._refused(f"creating {parent.view}/{text}", exc) from None
        return await self._attributes(views.view_node(f"{parent.view}/{text}"))

    @fuse_errors
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        group = group_of(parent)
        if group is None:
            raise pyfuse3.FUSEError(errno.EACCES)
        folder = os.fsdecode(target).rstrip("/").rsplit("/", 1)[-1]
        archive = self.library.find(folder)
        if archive is None:
            log.warning("%s: a link here must point to an archive folder, not %r",
                        parent.view, os.fsdecode(target))  # fmt: skip
            raise pyfuse3.FUSEError(errno.EINVAL)
        return await self._add_to_group(parent, group, archive.arcid, name)

    async def _add_to_group(
        self, parent: Node, group: tuple[str, str], arcid: str, name: bytes
    ) -> pyfuse3.EntryAttributes:
        try:
            await self.library.set_member(group[0], group[1], arcid, True)
        except (EditError, LrrError) as exc:
            raise self._refused(f"adding to {parent.view}", exc) from None
        child = await self._child(parent, self.library.get(arcid).name)
        if child is None:  # a tankoubon's links are numbered
            links = await views.entries(self.library, parent)
            child = next((n for n in links[1] if n.arcid == arcid), None)
        if child is None:
            raise pyfuse3.FUSEError(errno.EIO)
        self._background(invalidate.forget_entry(self.inodes.inode(parent), os.fsdecode(name)))
        return await self._attributes(child)

    # -- renaming ------------------------------------------------------------------------

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
        old_parent, new_parent = self._node(parent_inode_old), self._node(parent_inode_new)
        old = name_old.decode("utf-8", "surrogateescape")
        source = await self._child(old_parent, old)
        target_group = group_of(new_parent)
        if source is not None and old_parent == new_parent:
            new = name_new.decode("utf-8", "surrogateescape")
            group = group_of(source)
            if group is not None:  # a category's or tankoubon's folder
                await self._rename_group(source, group, new)
                return
            if source.kind is Kind.VIEW_LINK and target_group is not None:
                await self._move_in_group(new_parent, target_group, source.arcid, new)
                return
        if source is not None and source.kind is Kind.VIEW_LINK and target_group is not None:
            # mv of a link into a category or tankoubon: added there (and out of its own)
            await self._add_to_group(new_parent, target_group, source.arcid, name_new)
            old_group = group_of(old_parent)
            if old_group is not None and old_group != target_group:
                try:
                    await self.library.set_member(*old_group, source.arcid, False)
                except (EditError, LrrError) as exc:
                    raise self._refused(f"removing {old_parent.view}/{old}", exc) from None
            return
        if source is not None and source.kind is Kind.ARCHIVE and target_group is not None:
            log.warning(
                "%s: an archive folder stays where it is; to put it in %s, make a link there "
                "(ln -s, or a file manager's \"Link here\")", old, new_parent.view,
            )  # fmt: skip
            raise pyfuse3.FUSEError(errno.EACCES)
        await super().rename(parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx)

    async def _rename_group(self, folder: Node, group: tuple[str, str], new: str) -> None:
        try:
            await self.library.rename_group(group[0], group[1], new)
        except (EditError, LrrError) as exc:
            raise self._refused(f"renaming {folder.view}", exc) from None
        inode = self.inodes.known(folder)  # the kernel keeps it, under the new name
        if inode is not None:
            self.inodes.rebind(inode, views.view_node(f"{group[0]}/{new}"))

    async def _move_in_group(
        self, folder: Node, group: tuple[str, str], arcid: str, new: str
    ) -> None:
        """A link renamed in its own category or tankoubon. In a tankoubon its number is
        its place: `mv "03 Vol C" "01 Vol C"` makes it the first volume. Links in a
        category are named by their folders, in no order."""
        place = place_of(new)
        if group[0] != TANKOUBONS or place is None or place[1] != self.library.get(arcid).name:
            log.warning(
                "%s/%s: %s", folder.view, new,
                "a tankoubon's volumes are reordered by their number only "
                "('03 Name' -> '01 Name')" if group[0] == TANKOUBONS
                else "links in a category are named by their folders",
            )  # fmt: skip
            raise pyfuse3.FUSEError(errno.EINVAL)
        before, _ = await views.entries(self.library, folder)
        try:
            await self.library.move_in_tankoubon(group[1], arcid, place[0])
        except (EditError, LrrError) as exc:
            raise self._refused(f"reordering {folder.view}", exc) from None
        after, _ = await views.entries(self.library, folder)
        inode = self.inodes.inode(folder)
        for name in set(before) - set(after):  # the volumes now numbered otherwise
            self._background(invalidate.forget_entry(inode, name))
