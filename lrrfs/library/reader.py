"""Reading an archive file: blocks from the disk cache, the rest by a read-ahead window
of parallel Range requests.

The file is cut into blocks of `BLOCK` bytes. Blocks the disk cache holds
(`CachedArchive`) are read from it: at once, on the trio thread, when the
kernel's page cache has them (the window ahead is prefetched into it), else by
a worker. Only blocks it lacks are asked of the server, runs of them merged
into one Range request each, and every request that arrives whole goes to the
disk cache's writer (off the reading path, from the very buffer it arrived in).

Each read is served from "parts": buffers being filled, by Range requests (in
the client's worker threads) or by the disk (in the cache's), for consecutive
stretches of the file. Sequential reads widen the window of bytes asked for
ahead of the reader (fourfold per read, up to `MAX_AHEAD`), cut into parts of
at most `MAX_PART`, so that up to five requests are in flight at once and a
server's latency per request is hidden (as mountpoint-s3 and rclone do); a
jump elsewhere gives up the parts that no longer matter and starts small
again, so random reads (zipfile, a viewer) cost one small request each.

Memory per open file is bounded by the window (and all readers together by
the buffer pool's budget, beyond which no read-ahead is asked for), whatever
the archive's size.
"""

from __future__ import annotations

import bisect
import logging
import mmap
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import trio

from ..client import LrrClient, LrrError
from ..client.ranges import RangeJob
from .archivecache import BLOCK, ArchiveFiles, CachedArchive, DamagedBlock

log = logging.getLogger(__name__)

SPREAD = 4 * BLOCK  # how far past the last read the kernel's read-ahead may ask, at once
MIN_PART = BLOCK  # the smallest request: a random read costs about this much
MAX_PART = 8 << 20  # the largest request; parts this size are pooled
MAX_AHEAD = 40 << 20  # bytes asked for beyond the read position, at most
GROWTH = 4  # the window's growth per sequential read: a few reads reach full speed
BACKLOG = 2 << 20  # bytes kept behind the read position: the kernel's reads may cross
READ_BUDGET = 96 << 20  # read-ahead buffers of all open files together
PREFETCH_STEP = 8  # blocks: the disk's read-ahead is asked for this many or more at once
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
        small: int = BLOCK - 1,  # bigger ones are page-aligned maps: direct I/O takes them
    ) -> None:
        self.budget = budget
        self.in_use = 0
        self._keep = keep
        self._part = part
        self._small = small
        self._free: deque[mmap.mmap] = deque()  # appended to by the disk's writer too

    def take(self, size: int) -> Buffer:
        """A buffer of at least `size` bytes (slice it)."""
        self.in_use += size
        if size > self._part:
            return mmap.mmap(-1, size)
        if size > self._small:
            return self._free.pop() if self._free else mmap.mmap(-1, self._part)
        return bytearray(size)

    def recycle(self, buffer: Buffer) -> None:
        """A buffer given up (not reusable then) that nothing uses any more: kept for reuse
        (any thread; deque's append and pop are atomic)."""
        if not isinstance(buffer, mmap.mmap) or len(buffer) != self._part:
            return
        if len(self._free) < self._keep:
            self._free.append(buffer)

    def give(self, buffer: Buffer | bytes, size: int, reusable: bool) -> None:
        """`reusable`: nothing writes into it any more (its transfer has ended)."""
        self.in_use -= size
        if not (reusable and isinstance(buffer, mmap.mmap)):
            return
        if len(buffer) == self._part and len(self._free) < self._keep:
            self._free.append(buffer)

    def hold(self, size: int) -> None:
        """Count bytes held elsewhere (blocks read from the disk) against the budget;
        `give` them back."""
        self.in_use += size

    def room_for(self, size: int) -> bool:
        return self.in_use + size <= self.budget


@dataclass(eq=False, slots=True)
class _Part:
    """Bytes `start ..< end` of the file (whole blocks, but for the file's last),
    arriving in `buffer` through `job`, from the server or the disk cache."""

    start: int
    size: int
    buffer: Buffer
    job: RangeJob
    from_disk: bool = False
    users: int = 0  # reads waiting on it or slicing it
    dropped: bool = False
    saved: bool = False  # its blocks were handed to the disk cache (or came from it)
    storing: bool = False  # the disk cache's writer still reads its buffer...
    released: bool = False  # ...after the reader gave it up (then the writer recycles it)

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def whole(self) -> bool:
        """All its bytes are in. A job's bytes count once the last of them arrived, not once
        its thread says it is done (that comes a moment later): the range and the length
        were checked before any byte was taken."""
        return self.job.filled == self.size


class ArchiveReader:
    """Random-access reads of one archive file of known `size`."""

    def __init__(
        self,
        client: LrrClient,
        arcid: str,
        size: int,
        buffers: BufferPool,
        disk: tuple[ArchiveFiles, CachedArchive] | None = None,
    ) -> None:
        self._client = client
        self._arcid = arcid
        self.size = size
        self._buffers = buffers
        self._disk = disk
        self._handoff = threading.Lock()  # a part's buffer between the reader and the writer
        self._parts: list[_Part] = []  # in file order, not overlapping
        self._held: dict[int, _Part] = {}  # block index -> the part that holds it
        self._ahead = 0  # the read-ahead window, in bytes
        self._hinted = 0  # blocks before this one were prefetched from the disk
        self._expected = -1  # where a sequential read would start
        self.last_used = trio.current_time()

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        """The file's bytes `offset ..< offset + length` (fewer at its end)."""
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        self.last_used = trio.current_time()
        try:
            return await self._read(offset, end)
        except DamagedBlock as exc:  # now marked missing: from the server, this time
            log.warning("disk cache: %s; fetching it again", exc)
            return await self._read(offset, end)

    async def _read(self, offset: int, end: int) -> bytes | memoryview:
        cached = self._from_page_cache(offset, end)
        self._steer(offset, end, load=cached is None)
        if cached is not None:
            return cached
        parts = [part for part in self._parts if part.start < end and part.end > offset]
        _check_cover(parts, offset, end)
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
            self._save_whole()

    async def aclose(self) -> None:
        self._drop(list(self._parts))

    async def close_if_idle(self, idle_seconds: float) -> None:
        """Give back the buffers and connections of a file left open but unread."""
        if self._parts and trio.current_time() - self.last_used > idle_seconds:
            self._drop(list(self._parts))

    # -- the window ---------------------------------------------------------------

    def _from_page_cache(self, offset: int, end: int) -> memoryview | None:
        """The read's bytes, if the disk cache holds them and the kernel's page cache has
        them (read at once, on this thread: no worker's round trip); else None."""
        if self._disk is None:
            return None
        blocks = range(offset // BLOCK, (end - 1) // BLOCK + 1)
        if any(index in self._held for index in blocks):
            return None  # a part holds some: served from it
        files, archive = self._disk
        view = files.scratch(end - offset)
        return view if archive.read_cached(offset, view) else None

    def _steer(self, offset: int, end: int, load: bool = True) -> None:
        """Move the window to the read: keep what still matters, load or ask for the rest
        (the read's own blocks only if `load`: else it was served from the page cache)."""
        # The kernel's read-ahead sends several reads at once, not always in order: a
        # read near the furthest one so far is sequential, not a jump.
        sequential = self._expected - BACKLOG <= offset <= self._expected + SPREAD
        self._expected = max(end, self._expected) if sequential else end
        first = self._parts[0].start if self._parts else -1
        last = self._parts[-1].end if self._parts else -1
        if not sequential and not first <= offset <= last:
            self._drop(list(self._parts))  # a jump: nothing asked for is of use
            self._ahead = self._hinted = 0
        if sequential:
            self._ahead = min(MAX_AHEAD, max(MIN_PART, self._ahead * GROWTH))
        behind = min(offset, self._expected - BLOCK) - BACKLOG
        self._drop([part for part in self._parts if part.end <= behind])
        needed = range(offset // BLOCK, (end - 1) // BLOCK + 1)
        ahead = range(needed.stop, -(-min(self.size, end + self._ahead) // BLOCK))
        self._ask(needed if load else range(0), ahead)

    def _ask(self, needed: range, ahead: range) -> None:
        """Requests for the missing blocks the read needs, whatever the budget; then
        for those of the window, within it. Runs of missing blocks go as one request;
        the window's blocks on the disk are only prefetched into the page cache."""
        part = min(MAX_PART, max(MIN_PART, self._ahead))
        for run, on_disk in self._missing(needed, MAX_PART):
            self._add(run, on_disk)
        if self._all_on_disk(ahead):  # a re-read: not a block to scan one by one
            self._prefetch(ahead)
            return
        runs = self._missing(ahead, part)
        stored = [run for run, on_disk in runs if on_disk]
        if stored:
            self._prefetch(range(stored[0].start, stored[-1].stop))
        if self._client.link.offline:
            return  # offline: ahead of the reader only what the disk holds
        for run in (run for run, on_disk in runs if not on_disk):
            short = len(run) * BLOCK < part and run.stop == ahead.stop
            if short and run.stop * BLOCK < self.size:
                break  # the window's edge moves on with each read: wait for a whole part
            if not self._buffers.room_for(len(run) * BLOCK):
                break
            self._add(run, False)

    def _all_on_disk(self, blocks: range) -> bool:
        """The disk holds all the blocks, and no part covers any of them."""
        if self._disk is None or not blocks or not self._disk[1].holds(blocks):
            return False
        start, end = blocks.start * BLOCK, blocks.stop * BLOCK
        return not any(part.start < end and part.end > start for part in self._parts)

    def _missing(self, blocks: range, most: int) -> list[tuple[range, bool]]:
        """Runs of blocks not held, each at most `most` bytes and all on the disk or all
        not: (run, on the disk)."""
        runs: list[tuple[range, bool]] = []
        for index in blocks:
            if index in self._held:
                continue
            on_disk = self._disk is not None and self._disk[1].held(index)
            if runs:
                last, last_on_disk = runs[-1]
                if last.stop == index and last_on_disk == on_disk and len(last) * BLOCK < most:
                    runs[-1] = (range(last.start, index + 1), on_disk)
                    continue
            runs.append((range(index, index + 1), on_disk))
        return runs

    def _prefetch(self, run: range) -> None:
        """Have the kernel read the run of blocks from the disk ahead of the reader: the
        reads that follow take them from its page cache. In steps of a few blocks."""
        assert self._disk is not None
        first = max(run.start, self._hinted)
        if first >= run.stop:
            return
        if run.stop - first < PREFETCH_STEP and run.stop < -(-self.size // BLOCK):
            return
        files, archive = self._disk
        files.prefetch(archive, first, run.stop)
        self._hinted = run.stop

    def _add(self, run: range, on_disk: bool) -> None:
        start = run.start * BLOCK
        size = min(run.stop * BLOCK, self.size) - start
        buffer = self._buffers.take(size)
        view = memoryview(buffer)[:size]
        if on_disk:
            assert self._disk is not None
            files, archive = self._disk
            job = RangeJob(self._arcid, start, view, self.size, trio.lowlevel.current_trio_token())
            job.what = f"disk cache of {self._arcid}"
            files.load(archive, run.start, view, job)
        else:
            job = self._client.read_range(self._arcid, start, view, self.size)
        self._insert(_Part(start, size, buffer, job, from_disk=on_disk, saved=on_disk))

    def _insert(self, part: _Part) -> None:
        bisect.insort(self._parts, part, key=lambda p: p.start)
        for index in range(part.start // BLOCK, -(-part.end // BLOCK)):
            self._held[index] = part

    def _drop(self, parts: list[_Part]) -> None:
        self._save_whole(parts)
        for part in parts:
            self._parts.remove(part)
            for index in range(part.start // BLOCK, -(-part.end // BLOCK)):
                if self._held.get(index) is part:
                    del self._held[index]
            part.dropped = True
            if not part.users:  # a read still waiting on it keeps it going
                part.job.abort()
                self._release(part)

    def _release(self, part: _Part) -> None:
        # A buffer a worker may still write into, or the disk's writer read, is not reused
        # now; the writer recycles it when done (fresh maps cost page faults and zeroing).
        with self._handoff:
            part.released = True
            storing = part.storing
        self._buffers.give(part.buffer, part.size, reusable=part.job.done and not storing)
        if not part.from_disk:
            self._client.forget_range(part.job)

    def _save_whole(self, parts: list[_Part] | None = None) -> None:
        """Hand the blocks of requests that arrived whole to the disk cache, once."""
        if self._disk is None:
            return
        files, archive = self._disk
        for part in self._parts if parts is None else parts:
            if part.saved or not part.whole:
                continue
            part.saved = True
            view = memoryview(part.buffer)[: part.size]  # a pooled buffer may be longer
            part.storing = True  # before the writer may be done with it
            stored = self._stored(part)
            part.storing = files.save(archive, part.start // BLOCK, view, stored)

    def _stored(self, part: _Part) -> Callable[[], None]:
        """What the disk's writer calls (in its thread) once done with the part's buffer."""

        def done() -> None:
            with self._handoff:
                part.storing = False
                recycle = part.released
            if recycle:
                self._buffers.recycle(part.buffer)

        return done

    # -- serving a read -----------------------------------------------------------

    async def _wait(self, parts: list[_Part], end: int) -> None:
        timeout = self._client.timeout
        waiting = parts[0]
        try:
            with trio.fail_after(timeout):
                for waiting in parts:
                    await waiting.job.wait(min(end, waiting.end) - waiting.start)
        except trio.TooSlowError:
            self._drop([part for part in parts if not part.dropped])
            raise waiting.job.stalled(timeout) from None
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


def _check_cover(parts: list[_Part], offset: int, end: int) -> None:
    """The parts hold every byte of the read, in order, once: anything else would be a
    wrong byte served, so it fails (EIO) instead."""
    position = parts[0].start if parts and parts[0].start <= offset else offset
    for part in parts:
        if part.start != position:
            break
        position = part.end
    if position < end:
        raise LrrError(f"archive reader: internal error: bytes {position}-{end} not held")
