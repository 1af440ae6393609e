"""Fetching the pages a reader will want next, in the background.

A reader moving through an archive (an image viewer, `cat *`) keeps a cursor:
the next pages after the one read are fetched, `depth` of them at first; when
the reader has used half of them, the window doubles (up to `MAX_DEPTH` pages
or `AHEAD_BYTES`) and moves on, so pages are asked for in batches that grow
(the library fetches consecutive zip members of a batch with one request),
`parallel` batches at a time. Pages the disk cache likely holds cost the server
nothing: their window starts at its widest, bounded by bytes alone.
Reading on moves the cursor's end along; a jump elsewhere, or reading another
archive, gives the old cursor up (its fetches are cancelled), and only the
latest `cursors` cursors run at all. What is fetched lands in the caches; it
is not a read (reading progress is the library's `page_data`, not this).

Opening or listing a folder fetches nothing: file managers, `du` and `rsync`
list thousands of folders, and a page fetched for each would cost a real
server (about 5 ms of its CPU per page) far more than it saves a reader.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from .background import quietly

log = logging.getLogger(__name__)

DEPTH = 8  # pages fetched ahead of the page being read, at first
MAX_DEPTH = 32  # ... at most
AHEAD_BYTES = 32 << 20  # ... and no more bytes than this (they must fit the memory cache)
PARALLEL = 2  # batches in flight per cursor
CURSORS = 2  # cursors running at once; the oldest is given up
BACKWARD = 2  # reading this far behind the cursor still counts as reading on


@dataclass(eq=False)
class _Cursor:
    last: int  # the page read most recently
    end: int  # fetch pages below this
    depth: int  # how far ahead of `last` the window reaches when it moves
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    more: trio.Event = field(default_factory=trio.Event)
    next: int = 0  # the next page to fetch


class Prefetcher:
    """Keeps the next pages coming; `fetch(arcid, indexes)` puts pages in the caches."""

    def __init__(
        self,
        fetch: Callable[[str, list[int]], Awaitable[None]],
        *,
        depth: int = DEPTH,
        parallel: int = PARALLEL,
        cursors: int = CURSORS,
    ) -> None:
        self._fetch = fetch
        self.depth = depth
        self._parallel = parallel
        self._max_cursors = cursors
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self._nursery: trio.Nursery | None = None

    def attach(self, nursery: trio.Nursery) -> None:
        """Start working: background fetches run in `nursery` (none before)."""
        self._nursery = nursery

    def reading(
        self, arcid: str, index: int, count: int, page_bytes: int, local: bool = False
    ) -> None:
        """A reader is at page `index` (of `page_bytes`) of an archive of `count` pages;
        `local`: its pages are likely in the disk cache, where fetching them costs the
        server nothing, so the window starts at its widest."""
        if self._nursery is None or self.depth <= 0:
            return
        # From the disk, only the bytes bound the window (they go to the kernel's cache).
        most = AHEAD_BYTES // max(1, page_bytes)
        limit = max(self.depth, most if local else min(MAX_DEPTH, most))
        cursor = self._cursors.get(arcid)
        if cursor is not None and cursor.last - BACKWARD <= index <= cursor.end:
            cursor.last = max(cursor.last, index)
            if cursor.end - cursor.last <= cursor.depth // 2 and cursor.end < count:
                cursor.depth = min(limit, cursor.depth * 2)
                cursor.end = min(count, cursor.last + 1 + cursor.depth)
                cursor.more.set()
            self._cursors.move_to_end(arcid)
            return
        if cursor is not None:
            self._give_up(arcid)
        depth = limit if local else self.depth
        end = min(count, index + 1 + depth)
        cursor = _Cursor(last=index, end=end, depth=depth, next=index + 1)
        self._cursors[arcid] = cursor
        self._nursery.start_soon(self._run, arcid, cursor)
        while len(self._cursors) > self._max_cursors:
            self._give_up(next(iter(self._cursors)))

    def forget(self, arcid: str) -> None:
        """The archive is gone: stop fetching its pages."""
        if arcid in self._cursors:
            self._give_up(arcid)

    def _give_up(self, arcid: str) -> None:
        self._cursors.pop(arcid).scope.cancel()

    async def _run(self, arcid: str, cursor: _Cursor) -> None:
        with cursor.scope:
            slots = trio.Semaphore(self._parallel)
            async with trio.open_nursery() as nursery:
                while True:
                    if cursor.next < cursor.end:
                        await slots.acquire()
                        batch = list(range(cursor.next, cursor.end))
                        cursor.next = cursor.end
                        nursery.start_soon(self._batch, arcid, batch, slots)
                    else:
                        cursor.more = trio.Event()
                        await cursor.more.wait()

    async def _batch(self, arcid: str, indexes: list[int], slots: trio.Semaphore) -> None:
        try:  # a prefetch failing is no one's error: the read will retry
            await quietly(self._fetch(arcid, indexes), f"prefetch of pages {indexes} of {arcid}")
        finally:
            slots.release()
