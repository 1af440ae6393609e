"""Changes to the library itself: archives added (uploads) and deleted, categories and
tankoubons filled, emptied, made and removed, the new flag cleared.

Every change is read back from the server before it counts as done: old servers
answer success to requests they ignore, so a change the server did not apply is
an error (`NotApplied`), never a silent success.
"""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from ..client import Category, LrrError, NotFound, ServerError
from ..client import writes as api
from ..client.writes import NoUploadApi, UploadProgress, UploadRefused, file_sha1
from .archive import Archive
from .editing import EditError, EditNotKept
from .saving import LibraryEditing
from .views import CATEGORIES, TANKOUBONS, ViewFolder

log = logging.getLogger(__name__)

# Names a file copied in may have to be uploaded: the formats LANraragi reads.
ARCHIVE_SUFFIXES = (
    ".zip", ".cbz", ".rar", ".cbr", ".7z", ".cb7", ".tar", ".cbt", ".tar.gz", ".tgz", ".tar.xz",
    ".tar.zst", ".tar.bz2", ".lzma", ".xz", ".zst", ".pdf", ".epub", ".cbw",
)  # fmt: skip


class ChangeError(EditError):
    """A change of the library that cannot be made; the message says why."""


class AlreadyThere(ChangeError):
    """The server has it already (an upload of a file it holds: HTTP 409)."""


class Unsupported(ChangeError):
    """The server does not take this kind of file (HTTP 415)."""


class NotSupported(ChangeError):
    """This server cannot make this change at all (the old generation has no upload API)."""


class NotPermitted(ChangeError):
    """Not allowed by the mount's options (deleting without --allow-delete)."""


class ReadOnlyView(ChangeError):
    """A view whose content the server decides (a dynamic category, @tags, a search)."""


class NotApplied(EditNotKept):
    """The server answered yes but the change is not there when read back."""


def is_archive_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(ARCHIVE_SUFFIXES)


class LibraryChanges(LibraryEditing):
    """Uploads, deletes, categories, tankoubons and the new flag."""

    allow_delete: bool
    uploads: dict[int, UploadProgress]  # uploads under way, for `lrrfs status`

    def _check_changeable(self, what: str) -> None:
        self._check_allowed(what, "changing the library")

    @property
    def has_tankoubons(self) -> bool:
        return self.info is not None and self.info.version_tuple >= (0, 9)

    async def _refresh_views(self) -> None:
        if self.views is not None and self.views.tankoubons is None and self.has_tankoubons:
            self.views.tankoubons = {}  # the server has them: @tankoubons shows them
        await super()._refresh_views()

    # -- adding ---------------------------------------------------------------------

    async def upload(self, path: Path, name: str, category: str | None = None) -> Archive:
        """Upload the file at `path` as `name` (into the category of that folder name);
        the new archive once the server lists it."""
        what = f"adding {name!r}"
        self._check_changeable(what)
        if self._old_server:
            raise NotSupported(f"{what}: this LANraragi server (0.7) has no upload API")
        cat = self._category(category) if category is not None else None
        if cat is not None and cat.search:
            raise ReadOnlyView(f"{what}: category {category!r} is a saved search")
        progress = UploadProgress(name, path.stat().st_size)
        key = id(progress)
        self.uploads[key] = progress
        try:
            checksum = await trio.to_thread.run_sync(file_sha1, path)
            arcid = await api.upload(
                self.client,
                path,
                progress,
                checksum=checksum,
                category_id=None if cat is None else cat.id,
            )
        except UploadRefused as exc:
            raise _refusal(exc) from None
        except NoUploadApi as exc:
            raise NotSupported(str(exc)) from None
        finally:
            del self.uploads[key]
        try:
            await self.client.metadata(arcid)
        except NotFound:
            raise NotApplied(f"{what}: the server answered yes but does not have it") from None
        await self.refresh()
        archive = self._archives.get(arcid)
        if archive is None:
            raise NotApplied(f"{what}: the server does not list archive {arcid}")
        if cat is not None:
            await self._check_member(CATEGORIES, category or "", arcid, True, what)
        log.info("added %r as %r (%s)", name, archive.name, arcid)
        return archive

    # -- deleting -----------------------------------------------------------------------

    async def delete(self, arcid: str) -> None:
        """Delete the archive on the server (only with --allow-delete)."""
        archive = self.get(arcid)
        what = f"deleting {archive.name!r}"
        if not self.allow_delete:
            raise NotPermitted(f"{what}: the mount was not started with --allow-delete")
        self._check_changeable(what)
        await api.delete_archive(self.client, arcid)
        await self.refresh()
        if arcid in self._archives:
            raise NotApplied(f"{what}: the server answered yes but still lists it")
        log.info("deleted %r (%s)", archive.name, arcid)

    # -- the new flag ---------------------------------------------------------------------

    async def clear_new(self, arcid: str) -> None:
        archive = self.get(arcid)
        what = f"clearing the new flag of {archive.name!r}"
        self._check_changeable(what)
        await self.client.set_isnew(arcid, False)
        after = await self.client.metadata(arcid)
        if after.isnew:
            raise NotApplied(f"{what}: the server answered yes but kept it")
        self._apply_one(archive, after)

    # -- categories and tankoubons ----------------------------------------------------------

    def _category(self, name: str) -> Category:
        found = self.views.categories.get(name) if self.views is not None else None
        if found is None:
            raise NotFound(f"no category {name!r}")
        return found

    def _group_id(self, view: str, name: str, what: str) -> str:
        """The id of the category or tankoubon shown as folder `name` in `view`."""
        if view == CATEGORIES:
            cat = self._category(name)
            if cat.search:
                raise ReadOnlyView(
                    f"{what}: {name!r} is a dynamic category (a saved search): "
                    "its archives are what the search finds"
                )
            return cat.id
        tanks = self.views.tankoubons if self.views is not None else None
        if view != TANKOUBONS or tanks is None or name not in tanks:
            raise NotFound(f"no tankoubon {name!r}")
        return tanks[name].id

    async def set_member(self, view: str, name: str, arcid: str, member: bool) -> None:
        """Add the archive to (or remove it from) the category or tankoubon `name`."""
        archive = self.get(arcid)
        what = f"{'adding' if member else 'removing'} {archive.name!r} " + (
            f"{'to' if member else 'from'} {view}/{name}"
        )
        self._check_changeable(what)
        group = self._group_id(view, name, what)
        await api.group_member(self.client, _kind(view), group, arcid, member)
        await self._check_member(view, name, arcid, member, what)
        log.info("%s: done", what)

    async def move_in_tankoubon(self, name: str, arcid: str, place: int) -> None:
        """Move the archive to `place` (from 1) among the tankoubon's volumes that the
        library lists; the others keep their order."""
        what = f"moving {self.get(arcid).name!r} to place {place} of {TANKOUBONS}/{name}"
        self._check_changeable(what)
        tank_id = self._group_id(TANKOUBONS, name, what)
        folder = await self._group_folder(TANKOUBONS, name)
        assert folder is not None  # _group_id found it
        if arcid not in folder.order:
            raise NotFound(f"{what}: it is not in that tankoubon")
        order = [a for a in folder.order if a != arcid]
        listed = [a for a in order if a in self._archives]  # numbered in the folder
        place = max(place, 1)
        order.insert(order.index(listed[place - 1]) if place <= len(listed) else len(order), arcid)
        await api.order_tankoubon(self.client, tank_id, order)
        await self._refresh_groups(TANKOUBONS)
        folder = await self._group_folder(TANKOUBONS, name)
        if folder is None or list(folder.order) != order:
            raise NotApplied(f"{what}: the server answered yes but did not apply it")
        log.info("%s: done", what)

    async def _check_member(
        self, view: str, name: str, arcid: str, member: bool, what: str
    ) -> None:
        """Read the categories or tankoubons back; NotApplied if the archive is not (or
        still is) in the one named `name`."""
        await self._refresh_groups(view)
        folder = await self._group_folder(view, name)
        if folder is None or (arcid in folder.members) != member:
            raise NotApplied(f"{what}: the server answered yes but did not apply it")

    async def _group_folder(self, view: str, name: str) -> ViewFolder | None:
        return None if self.views is None else await self.views.folder((view, name))

    async def _refresh_groups(self, view: str) -> None:
        if self.views is None:
            return
        try:
            if view == CATEGORIES:
                await self.views.refresh_categories()
            else:
                await self.views.refresh_tankoubons()
        except LrrError as exc:
            raise NotApplied(f"reading the {view[1:]} back failed: {exc}") from None

    async def create_group(self, view: str, name: str) -> None:
        """mkdir in @categories (a static category) or @tankoubons."""
        what = f"creating {view}/{name}"
        self._check_changeable(what)
        if view == TANKOUBONS and not self.has_tankoubons:
            raise NotSupported(f"{what}: this LANraragi server has no tankoubons")
        await api.create_group(self.client, _kind(view), name)
        await self._refresh_groups(view)
        if await self._group_folder(view, name) is None:
            raise NotApplied(f"{what}: the server answered yes but does not list it")
        log.info("%s: done", what)

    async def rename_group(self, view: str, name: str, new_name: str) -> None:
        """mv of a category's or tankoubon's folder to `new_name`: the group is renamed
        (its archives, search and pin stay)."""
        what = f"renaming {view}/{name} to {new_name!r}"
        self._check_changeable(what)
        if self._old_server:
            raise NotSupported(f"{what}: this LANraragi server (0.7) cannot rename categories")
        if await self._group_folder(view, new_name) is not None:
            raise AlreadyThere(f"{what}: {view}/{new_name} exists")
        if view == TANKOUBONS:
            group_id, pinned = self._group_id(view, name, what), False
        else:
            category = self._category(name)
            group_id, pinned = category.id, category.pinned
        await api.rename_group(self.client, _kind(view), group_id, new_name, pinned=pinned)
        await self._refresh_groups(view)
        if await self._group_folder(view, new_name) is None:
            raise NotApplied(f"{what}: the server answered yes but does not list it so")
        log.info("%s: done", what)

    async def delete_group(self, view: str, name: str) -> None:
        """rmdir of an empty category or tankoubon folder."""
        what = f"removing {view}/{name}"
        self._check_changeable(what)
        group = self._group_id(view, name, what) if view == TANKOUBONS else self._category(name).id
        await api.delete_group(self.client, _kind(view), group)
        await self._refresh_groups(view)
        if await self._group_folder(view, name) is not None:
            raise NotApplied(f"{what}: the server answered yes but still lists it")
        log.info("%s: done", what)


def _refusal(exc: UploadRefused) -> ChangeError | LrrError:
    if exc.status == 409:
        return AlreadyThere(f"{exc} (the server has this archive already)")
    if exc.status == 415:
        return Unsupported(f"{exc} (the server does not take this kind of file)")
    return ServerError(f"{exc} (the file changed on its way: nothing was added)", exc.status)


def _kind(view: str) -> api.GroupKind:
    return api.CATEGORY if view == CATEGORIES else api.TANKOUBON
