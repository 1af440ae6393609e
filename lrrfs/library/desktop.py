"""Thumbnails for file managers, made from the server's small pictures instead of the pages.

When an archive's folder is listed, its pages, its cover (`thumbnail.jpg`) and its archive
file get thumbnails in the user's freedesktop cache (`freedesktop.py`), from the server's
page thumbnails (LANraragi 0.9: `thumbnail?page=N`, ~30 KB each) and its cover. A file
manager opening the folder then finds them ready and reads no page: without them it reads
every page whole (MBs each) to draw a 256-pixel picture.

The work is bounded and never in anyone's way: a listing only queues its folder; folders
are done one at a time, the most recently listed first (the last few only); it pauses
while programs read pages or archive files; at most REQUESTS requests to the server are
in flight; a picture the server has not made within
the thumbnail wait is left to the file manager. Thumbnails already valid are kept. The
server's pictures go to the disk cache too: a remount fills the cache without asking.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from ..client import LrrError, NotFound
from . import THUMBNAIL_NAME, Archive, Library
from .background import quietly
from .freedesktop import Target, ThumbnailFolder, file_uri

log = logging.getLogger(__name__)

REQUESTS = 2  # requests for pictures in flight: the listing and the readers come first
QUEUED_FOLDERS = 8  # folders listed and waiting; older ones are dropped
MAX_PAGES = 1000  # pages of a folder done at most (each may cost the server a job)
COVER = 0  # the server's number for the cover; pages are 1, 2, ...
DISK_KIND = "pagethumb"
QUIET = 1.0  # seconds without a read before the work goes on (a viewer's pace leaves gaps)


@dataclass(frozen=True, slots=True)
class Missing:
    """A file of the folder and the size classes its thumbnail is missing in."""

    target: Target
    classes: list[str]
    picture: int  # the server's picture to make it from: COVER or a page number


def start_desktop_thumbnails(
    library: Library, mountpoint: Path, owner: int, folder: ThumbnailFolder | None = None
) -> DesktopThumbnails | None:
    """The thumbnail maker of a mount, or None (with a log line saying why) if it cannot
    work: only for the user running the mount, with Pillow, on a 0.9 server."""
    if owner != os.getuid():
        log.info("desktop thumbnails: off (the files belong to uid %d, not to this user)", owner)
        return None
    if importlib.util.find_spec("PIL") is None:
        log.warning(
            "desktop thumbnails: off: Pillow is not installed "
            "(pip install 'lrrfs[thumbnails]'); file managers will read whole pages"
        )
        return None
    if library.info is None or not library.info.has_page_thumbnails:
        version = library.info.version if library.info else "?"
        log.info("desktop thumbnails: off (LANraragi %s makes no page thumbnails)", version)
        return None
    from .freedesktop import default_thumbnail_root

    return DesktopThumbnails(
        library, mountpoint, folder or ThumbnailFolder(default_thumbnail_root())
    )


class DesktopThumbnails:
    """Fills the freedesktop thumbnail cache for the folders of a mount that get listed."""

    def __init__(self, library: Library, mountpoint: Path, folder: ThumbnailFolder) -> None:
        self.library = library
        self.mountpoint = os.fsencode(mountpoint)
        self.folder = folder
        self.written = 0  # thumbnails written, for the log
        self._queue: OrderedDict[str, None] = OrderedDict()
        self._queued = trio.Event()
        self._done: dict[str, str] = {}  # arcid -> the folder name it was done under
        self._filling: tuple[str, trio.CancelScope] | None = None  # the folder being done
        self._disk = trio.CapacityLimiter(1)  # one thread scales and writes

    def listed(self, arcid: str) -> None:
        """An archive's folder was listed: queue it. Never waits, never fails."""
        try:
            archive = self.library.get(arcid)
        except LrrError:  # gone meanwhile
            return
        if self._done.get(arcid) == archive.name:
            return
        self._queue[arcid] = None
        self._queue.move_to_end(arcid)
        while len(self._queue) > QUEUED_FOLDERS:
            self._queue.popitem(last=False)
        self._queued.set()

    async def run(self) -> None:
        """Work through the folders listed, for as long as the mount lives."""
        while True:
            if not self._queue:
                self._queued = trio.Event()
                await self._queued.wait()
                continue
            arcid, _ = self._queue.popitem(last=True)
            with trio.CancelScope() as scope:
                self._filling = (arcid, scope)
                await quietly(self._fill_unless_gone(arcid), f"desktop thumbnails of {arcid}")
            self._filling = None

    def thumbnailer_reading(self, arcid: str) -> None:
        """The file manager's own thumbnailer reads the archive's pages: it got there first,
        and thumbnails made meanwhile would only compete with it for the CPU and the server.
        The folder is left to it (until its name changes)."""
        self._queue.pop(arcid, None)
        try:
            name = self.library.get(arcid).name
        except LrrError:
            return
        if self._done.get(arcid) != name:
            self._done[arcid] = name
            log.info("desktop thumbnails: %s: left to the file manager's thumbnailer", name)
        if self._filling is not None and self._filling[0] == arcid:
            self._filling[1].cancel()

    async def _fill_unless_gone(self, arcid: str) -> None:
        """An archive deleted meanwhile (`rm -r` lists the folder it deletes) is no failure."""
        try:
            await self._fill(arcid)
        except* NotFound:
            log.debug("desktop thumbnails: archive %s is gone", arcid)

    async def _fill(self, arcid: str) -> None:
        archive = self.library.get(arcid)
        name = archive.name
        missing = await trio.to_thread.run_sync(self._missing, await self._targets(archive))
        by_picture: dict[int, list[Missing]] = {}
        for item in missing:
            by_picture.setdefault(item.picture, []).append(item)
        made = 0
        if COVER in by_picture:
            made += await self._write(await self.library.thumbnail(arcid), by_picture.pop(COVER))
        unmade = set(by_picture)
        send, receive = trio.open_memory_channel[tuple[int, bytes]](len(unmade))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._fetch_pictures, archive, sorted(unmade), send)
            async with receive:
                async for page, image in receive:
                    made += await self._write(image, by_picture[page])
                    unmade.discard(page)
        self.written += made
        if made:
            log.info("desktop thumbnails: %d written for %s", made, name)
        if unmade:
            log.info("desktop thumbnails: %d pages of %s left to the file manager (the "
                     "server made no picture of them in time)", len(unmade), name)  # fmt: skip
        else:
            self._done[arcid] = name

    async def _targets(self, archive: Archive) -> list[tuple[Target, int]]:
        """Every file of the folder that gets a thumbnail, as `stat` shows it, and the
        server's picture it is made from. The cover only once it is the real one."""
        library, arcid = self.library, archive.arcid
        pages = await library.pages(arcid)
        file = await library.archive_file(arcid)
        mtime = library.mtime(arcid)
        folder = self.mountpoint + b"/" + os.fsencode(archive.name)

        def target(name: str, size: int) -> Target:
            return Target(file_uri(folder + b"/" + os.fsencode(name)), mtime, size)

        targets = [
            (target(page.name, page.size), i + 1) for i, page in enumerate(pages[:MAX_PAGES])
        ]
        cover = await library.thumbnail(arcid)
        if not library.thumbnail_is_placeholder(arcid):
            targets.append((target(THUMBNAIL_NAME, len(cover)), COVER))
            targets.append((target(file.name, file.size), COVER))
        return targets

    def _missing(self, targets: list[tuple[Target, int]]) -> list[Missing]:
        """(Blocking.) The files whose thumbnails are not all there and valid."""
        found = (Missing(t, self.folder.missing(t), picture) for t, picture in targets)
        return [m for m in found if m.classes]

    async def _write(self, image: bytes, missing: list[Missing]) -> int:
        await self.library.until_reading_pauses(QUIET)  # scaling takes a core: readers first
        return await trio.to_thread.run_sync(self._write_now, image, missing, limiter=self._disk)

    def _write_now(self, image: bytes, missing: list[Missing]) -> int:
        """(Blocking.) Scale and write the thumbnails made from one picture."""
        from .thumbimage import NotAnImage, scaled_pngs

        written = 0
        for item in missing:
            try:
                pngs = scaled_pngs(image, item.target, item.classes)
            except NotAnImage as exc:
                log.warning("desktop thumbnails: the server's picture is unusable: %s", exc)
                return written
            for size_class, png in pngs.items():
                try:
                    self.folder.write(size_class, item.target, png)
                except OSError as exc:
                    log.warning("desktop thumbnails: cannot write in %s: %s", self.folder.root, exc)
                    return written
                written += 1
        return written

    async def _fetch_pictures(
        self, archive: Archive, pages: list[int], send: trio.MemorySendChannel[tuple[int, bytes]]
    ) -> None:
        """The server's pictures of these pages, as they come: from the disk cache, else
        asked for all at once (the server queues a job for each it must make), then
        waited for, in order. Given up once no picture came for the thumbnail wait: the
        server's jobs run a few at a time, so a long folder's last ones come late."""
        library, client, arcid = self.library, self.library.client, archive.arcid
        keys = {page: f"{archive.cache_key}/{page}" for page in pages}
        jobs: dict[int, int] = {}  # page -> the server's job making its picture
        last_picture = [trio.current_time()]

        async def got(page: int, data: bytes) -> None:
            last_picture[0] = trio.current_time()
            if library.disk is not None:
                library.disk.put_later(DISK_KIND, keys[page], data)
            await send.send((page, data))

        async def ask(page: int) -> None:
            await library.until_reading_pauses(QUIET)  # the server's CPU too: readers first
            answer = await client.page_thumbnail(arcid, page)
            if isinstance(answer, bytes):
                await got(page, answer)
            else:
                jobs[page] = answer

        async def wait(page: int) -> None:
            what = f"thumbnail of page {page} of {arcid}"
            while trio.current_time() < last_picture[0] + client.thumbnail_wait:
                with trio.move_on_at(last_picture[0] + client.thumbnail_wait):
                    await client.wait_for_job(jobs[page], what)
                    answer = await client.page_thumbnail(arcid, page)
                    if isinstance(answer, bytes):
                        await got(page, answer)
                    return

        async with send:
            await library.until_reading_pauses(QUIET)  # a reader opening the folder first
            cached = await self._cached(list(keys.values()))
            for page, data in zip(pages, cached, strict=True):
                if data is not None:
                    await send.send((page, data))
            asking = [page for page, data in zip(pages, cached, strict=True) if data is None]
            last_picture[0] = trio.current_time()  # the server has its jobs from now on
            await in_order(ask, asking)
            await in_order(wait, sorted(jobs))

    async def _cached(self, keys: list[str]) -> list[bytes | None]:
        disk = self.library.disk
        if disk is None:
            return [None] * len(keys)
        return await disk.read_many(DISK_KIND, keys, self.library.client.timeout)


async def in_order(step: Callable[[int], Awaitable[None]], pages: list[int]) -> None:
    """`step` for each page, first pages first (the server runs its jobs in the order
    asked, and file managers draw from the top), REQUESTS at a time."""
    todo = iter(pages)

    async def worker() -> None:
        for page in todo:
            try:
                await step(page)
            except LrrError as exc:  # that page is left to the file manager
                log.debug("desktop thumbnails: page %d: %s", page, exc)

    async with trio.open_nursery() as nursery:
        for _ in range(REQUESTS):
            nursery.start_soon(worker)
