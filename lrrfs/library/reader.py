"""Reading an archive file: a read-ahead window of parallel Range requests.

Each read is served from "parts": buffers being filled by Range requests (in
the client's worker threads) for consecutive stretches of the file. Sequential
reads widen the window of bytes asked for ahead of the reader (fourfold per
read, up to `MAX_AHEAD`), cut into parts of at most `MAX_PART`, so that up to
five requests are in flight at once and a server's latency per request is
hidden (as mountpoint-s3 and rclone do); a jump elsewhere gives up the parts
that no longer matter and starts small again, so random reads (zipfile, a
viewer seeking) cost one small request each.

Memory per open file is bounded by the window (and all readers together by
the buffer pool's budget, beyond which no read-ahead is asked for), whatever
the archive's size.
"""

from __future__ import annotations

import logging
import mmap
from dataclasses import dataclass

import trio

from ..client import LrrClient, LrrError
from ..client.ranges import RangeJob

log = logging.getLogger(__name__)

MIN_PART = 256 << 10  # the smallest request: a random read costs about this much
MAX_PART = 8 << 20  # the largest request; parts this size are pooled
MAX_AHEAD = 40 << 20  # bytes asked for beyond the read position, at most
GROWTH = 4  # the window's growth per sequential read: a few reads reach full speed
BACKLOG = 2 << 20  # bytes kept behind the read position: the kernel's reads may cross
READ_BUDGET = 96 << 20  # read-ahead buffers of all open files together
POOLED = 2  # idle MAX_PART buffers kept for reuse (a fresh one costs page faults)


Buffer = bytearray | mmap.mmap


class BufferPool:
    """Buffers for Range requests: reuses the big ones, counts what is in use.

    Big buffers are anonymous memory maps of `part` bytes, not bytearrays:
    malloc keeps freed multi-MiB blocks in its heap (the process's memory would
    only grow), while a map goes back to the system when dropped; and a reused
    map costs no page faults. Sizes up to `small` get a bytearray; sizes over
    `part`, a map of their own.
    """

    def __init__(
        self,
        budget: int = READ_BUDGET,
        keep: int = POOLED,
        part: int = MAX_PART,
        small: int = MAX_PART // 2,
    ) -> None:
        self.budget = budget
        self.in_use = 0
        self._keep = keep
        self._part = part
        self._small = small
        self._free: list[mmap.mmap] = []

    def take(self, size: int) -> Buffer:
        """A buffer of at least `size` bytes (slice it)."""
        self.in_use += size
        if size > self._part:
            return mmap.mmap(-1, size)
        if size > self._small:
            return self._free.pop() if self._free else mmap.mmap(-1, self._part)
        return bytearray(size)

    def give(self, buffer: Buffer, size: int, reusable: bool) -> None:
        """`reusable`: nothing writes into it any more (its transfer has ended)."""
        self.in_use -= size
        if not (reusable and isinstance(buffer, mmap.mmap)):
            return
        if len(buffer) == self._part and len(self._free) < self._keep:
            self._free.append(buffer)

    def room_for(self, size: int) -> bool:
        return self.in_use + size <= self.budget


@dataclass(eq=False, slots=True)
class _Part:
    """Bytes `start ..< end` of the file, arriving in `buffer` through `job`."""

    start: int
    size: int
    buffer: Buffer
    job: RangeJob
    users: int = 0  # reads waiting on it or slicing it
    dropped: bool = False

    @property
    def end(self) -> int:
        return self.start + self.size


class ArchiveReader:
    """Random-access reads of one archive file of known `size`."""

    def __init__(self, client: LrrClient, arcid: str, size: int, buffers: BufferPool) -> None:
        self._client = client
        self._arcid = arcid
        self.size = size
        self._buffers = buffers
        self._parts: list[_Part] = []  # consecutive, in file order
        self._ahead = 0  # the read-ahead window, in bytes
        self._expected = -1  # where a sequential read would start
        self.last_used = trio.current_time()

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        """The file's bytes `offset ..< offset + length` (fewer at its end)."""
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        self.last_used = trio.current_time()
        self._steer(offset, end)
        parts = [part for part in self._parts if part.start < end and part.end > offset]
        for part in parts:
            part.users += 1
        try:
            await self._wait(parts, end)
            return self._slice(parts, offset, end)
        finally:
            for part in parts:
                part.users -= 1
                if part.dropped and not part.users:
                    self._release(part)

    async def aclose(self) -> None:
        self._drop(list(self._parts))

    async def close_if_idle(self, idle_seconds: float) -> None:
        """Give back the buffers and connections of a file left open but unread."""
        if self._parts and trio.current_time() - self.last_used > idle_seconds:
            self._drop(list(self._parts))

    # -- the window ---------------------------------------------------------------

    def _steer(self, offset: int, end: int) -> None:
        """Move the window to the read: keep what still matters, ask for what is missing."""
        sequential = offset == self._expected
        self._expected = end
        first = self._parts[0].start if self._parts else -1
        last = self._parts[-1].end if self._parts else -1
        if not first <= offset <= last:
            self._drop(list(self._parts))  # a jump: nothing asked for is of use
            self._ahead = 0
        if sequential:
            self._ahead = min(MAX_AHEAD, max(MIN_PART, self._ahead * GROWTH))
        self._drop([part for part in self._parts if part.end <= offset - BACKLOG])
        self._ask(offset, end)

    def _ask(self, offset: int, end: int) -> None:
        """Parts up to `end` whatever the budget; then up to the window, within it."""
        position = self._parts[-1].end if self._parts else offset
        while position < end:
            position = self._add(position, min(MAX_PART, max(MIN_PART, end - position)))
        horizon = min(self.size, end + self._ahead)
        size = min(MAX_PART, max(MIN_PART, self._ahead))
        while position < horizon and self._buffers.room_for(size):
            position = self._add(position, size)

    def _add(self, start: int, size: int) -> int:
        size = min(size, self.size - start)
        buffer = self._buffers.take(size)
        view = memoryview(buffer)[:size]
        job = self._client.read_range(self._arcid, start, view, self.size)
        self._parts.append(_Part(start, size, buffer, job))
        return start + size

    def _drop(self, parts: list[_Part]) -> None:
        for part in parts:
            self._parts.remove(part)
            part.dropped = True
            if not part.users:  # a read still waiting on it keeps it going
                part.job.abort()
                self._release(part)

    def _release(self, part: _Part) -> None:
        # A buffer a worker may still write into is never reused.
        self._buffers.give(part.buffer, part.size, reusable=part.job.done)
        self._client.forget_range(part.job)

    # -- serving a read -----------------------------------------------------------

    async def _wait(self, parts: list[_Part], end: int) -> None:
        timeout = self._client.timeout
        try:
            with trio.fail_after(timeout):
                for part in parts:
                    await part.job.wait(min(end, part.end) - part.start)
        except trio.TooSlowError:
            self._drop([part for part in parts if not part.dropped])
            raise parts[0].job.stalled(timeout) from None
        except LrrError:
            self._drop(list(self._parts))  # ask afresh next time
            raise

    @staticmethod
    def _slice(parts: list[_Part], offset: int, end: int) -> bytes | memoryview:
        if len(parts) == 1 and not parts[0].dropped:
            # No copy: pyfuse3 replies with these bytes before any other task
            # runs, so before the buffer could be reused.
            part = parts[0]
            return memoryview(part.buffer)[offset - part.start : end - part.start]
        pieces = []
        for part in parts:
            lo, hi = max(offset, part.start), min(end, part.end)
            pieces.append(bytes(memoryview(part.buffer)[lo - part.start : hi - part.start]))
        return b"".join(pieces)
