"""Reading progress: the server learns how far the user read, once the reader pauses.

A page counts as read when a program opens it (lrrfs's own fetches, to learn
page sizes, are not reading). Reads are gathered per archive and sent when the
reader pauses: one report per archive per burst of reading, with the highest
page of the burst, so that a viewer turning pages does not send a request per
page, and prefetching a page or two ahead does not move the progress back.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

QUIET = 2.0  # seconds without a read of the archive before its progress is sent
LONGEST = 10.0  # ...but no later than this after the first unsent read (a steady reader)

# send(arcid, page (1-based), clear_new): report one burst to the server.
Send = Callable[[str, int, bool], Awaitable[None]]


@dataclass(slots=True)
class _Burst:
    page: int  # the highest page read in the burst, 1-based
    first: float
    last: float
    clear_new: bool

    @property
    def due(self) -> float:
        return min(self.last + QUIET, self.first + LONGEST)


class ReadingProgress:
    """Pages read, gathered per archive until the reader pauses, then sent."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._bursts: dict[str, _Burst] = {}
        self._wake = trio.Event()

    def page_read(self, arcid: str, page: int, *, clear_new: bool = False) -> None:
        now = trio.current_time()
        burst = self._bursts.get(arcid)
        if burst is None:
            self._bursts[arcid] = _Burst(page, now, now, clear_new)
            self._wake.set()
            return
        burst.page = max(burst.page, page)
        burst.last = now
        burst.clear_new |= clear_new

    def forget(self, arcid: str) -> None:
        """The reads gathered for the archive were no person's: send nothing for them."""
        self._bursts.pop(arcid, None)

    async def run(self) -> None:
        """Send each burst when it is due; forever (run it in a nursery)."""
        while True:
            now = trio.current_time()
            for arcid, burst in list(self._bursts.items()):
                if burst.due <= now:
                    del self._bursts[arcid]
                    await self._send(arcid, burst.page, burst.clear_new)
            self._wake = trio.Event()
            with trio.move_on_at(min((b.due for b in self._bursts.values()), default=math.inf)):
                await self._wake.wait()

    async def flush(self) -> None:
        """Send every burst now (the mount is stopping)."""
        bursts, self._bursts = self._bursts, {}
        for arcid, burst in bursts.items():
            await self._send(arcid, burst.page, burst.clear_new)
