"""Reading an archive file: blocks from the disk cache, the rest by a read-ahead window
of parallel Range requests.

The file is cut into blocks of `BLOCK` bytes. A block the disk cache holds
(`ArchiveBlocks`, filed under the archive's cache key and the block's index) is
read from it; only blocks it lacks are asked of the server, runs of them merged
into one Range request each, and every request that arrives whole goes back to
the disk cache, block by block, in the cache's writer thread (off the reading
path). A block is stored only from a request that delivered all its bytes, with
the length the server confirmed, and is checked (name and CRC-32) when read back:
a damaged or half-written block is a miss, fetched again.

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

import bisect
import logging
import mmap
from dataclasses import dataclass

import trio

from ..client import LrrClient, LrrError
from ..client.ranges import RangeJob
from .diskcache import DiskCache

log = logging.getLogger(__name__)

# 1 MiB: as large as the kernel's largest read (so a read meets one or two blocks), small
# enough that a random read (zipfile, a viewer) costs little more than its round trip
# (~0.7 ms at 1.5 GB/s), and a 500 MB archive is 500 files, not 100,000.
BLOCK = 1 << 20
SPREAD = 4 * BLOCK  # how far past the last read the kernel's read-ahead may ask, at once
DISK_AHEAD = 8  # blocks read from the disk cache ahead of a sequential reader, at most
MIN_PART = BLOCK  # the smallest request: a random read costs about this much
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

    def give(self, buffer: Buffer | bytes, size: int, reusable: bool) -> None:
        """`reusable`: nothing writes into it any more (its transfer has ended)."""
        self.in_use -= size
        pooled = isinstance(buffer, mmap.mmap) and len(buffer) == self._part
        if reusable and pooled and len(self._free) < self._keep:
            self._free.append(buffer)

    def hold(self, size: int) -> None:
        """Count bytes held elsewhere (blocks read from the disk) against the budget;
        `give` them back."""
        self.in_use += size

    def room_for(self, size: int) -> bool:
        return self.in_use + size <= self.budget


class ArchiveBlocks:
    """The blocks of one archive file in the disk cache (blocking calls run in a thread)."""

    KIND = "block"

    def __init__(self, disk: DiskCache, cache_key: str, timeout: float) -> None:
        self._disk = disk
        self._prefix = f"{cache_key}/"
        self._timeout = timeout

    def key(self, index: int) -> str:
        return f"{self._prefix}{index}"

    async def look(self, load: list[int], check: list[int]) -> tuple[dict[int, bytes], set[int]]:
        """The blocks of `load` the disk has (whole and checked), and which of `check` are
        there (not read); one trip to a worker thread. Nothing if the disk is too slow."""

        def run() -> tuple[dict[int, bytes], set[int]]:
            loaded = {}
            for index in load:
                data = self._disk.get(self.KIND, self.key(index))
                if data is not None:
                    loaded[index] = data
            return loaded, {i for i in check if self._disk.has(self.KIND, self.key(i))}

        with trio.move_on_after(self._timeout):
            return await trio.to_thread.run_sync(run, abandon_on_cancel=True)
        log.warning("disk cache: no answer from the disk within %g s", self._timeout)
        return {}, set()

    def save(self, index: int, data: bytes) -> None:
        """Queue a whole, verified block for the disk (dropped if the queue is full)."""
        self._disk.put_later(self.KIND, self.key(index), data)


@dataclass(eq=False, slots=True)
class _Part:
    """Bytes `start ..< end` of the file (whole blocks, but for the file's last),
    arriving in `buffer` through `job`, or read from the disk cache (`job` None)."""

    start: int
    size: int
    buffer: Buffer | bytes
    job: RangeJob | None
    users: int = 0  # reads waiting on it or slicing it
    dropped: bool = False
    saved: bool = False  # its blocks went to the disk cache

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def whole(self) -> bool:
        """All its bytes are in. A job's bytes count once the last of them arrived, not once
        its thread says it is done (that comes a moment later): the range and the length
        were checked before any byte was taken."""
        job = self.job
        return job is None or job.filled == self.size


class ArchiveReader:
    """Random-access reads of one archive file of known `size`."""

    def __init__(
        self,
        client: LrrClient,
        arcid: str,
        size: int,
        buffers: BufferPool,
        blocks: ArchiveBlocks | None = None,
    ) -> None:
        self._client = client
        self._arcid = arcid
        self.size = size
        self._buffers = buffers
        self._blocks = blocks
        self._parts: list[_Part] = []  # in file order, not overlapping
        self._held: dict[int, _Part] = {}  # block index -> the part that holds it
        self._known: set[int] = set()  # blocks whose presence on disk was looked at
        self._on_disk: set[int] = set()  # ...and found there (not loaded)
        self._ahead = 0  # the read-ahead window, in bytes
        self._expected = -1  # where a sequential read would start
        self.last_used = trio.current_time()

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        """The file's bytes `offset ..< offset + length` (fewer at its end)."""
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        self.last_used = trio.current_time()
        await self._steer(offset, end)
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

    async def _steer(self, offset: int, end: int) -> None:
        """Move the window to the read: keep what still matters, load or ask for the rest."""
        # The kernel's read-ahead sends several reads at once, not always in order: a
        # read near the furthest one so far is sequential, not a jump.
        sequential = self._expected - BACKLOG <= offset <= self._expected + SPREAD
        self._expected = max(end, self._expected) if sequential else end
        first = self._parts[0].start if self._parts else -1
        last = self._parts[-1].end if self._parts else -1
        if not sequential and not first <= offset <= last:
            self._drop(list(self._parts))  # a jump: nothing asked for is of use
            self._ahead = 0
        if sequential:
            self._ahead = min(MAX_AHEAD, max(MIN_PART, self._ahead * GROWTH))
        behind = min(offset, self._expected - BLOCK) - BACKLOG
        self._drop([part for part in self._parts if part.end <= behind])
        needed = range(offset // BLOCK, (end - 1) // BLOCK + 1)
        ahead = range(needed.stop, -(-min(self.size, end + self._ahead) // BLOCK))
        if self._blocks is not None:
            await self._look(needed, ahead)
        self._ask(needed, ahead)

    async def _look(self, needed: range, ahead: range) -> None:
        """Load from the disk cache the blocks the read needs (and a few after them);
        learn which blocks of the window it has, so that they are not asked for."""
        assert self._blocks is not None
        load = [i for i in needed if i not in self._held]
        for index in ahead[:DISK_AHEAD]:
            if index not in self._held and (index in self._on_disk or index not in self._known):
                load.append(index)
        check = [i for i in ahead[DISK_AHEAD:] if i not in self._held and i not in self._known]
        if not load and not check:
            return
        loaded, present = await self._blocks.look(load, check)
        self._known.update(load, check)
        self._on_disk.difference_update(load)
        self._on_disk.update(present)
        for index, data in sorted(loaded.items()):
            if index not in self._held and len(data) == self._block_size(index):
                self._buffers.hold(len(data))
                self._insert(_Part(index * BLOCK, len(data), data, None, saved=True))

    def _ask(self, needed: range, ahead: range) -> None:
        """Requests for the missing blocks the read needs, whatever the budget; then
        for those of the window, within it. Runs of missing blocks go as one request."""
        part = min(MAX_PART, max(MIN_PART, self._ahead))
        # Whatever the read needs and nothing holds is fetched, even if the disk has it:
        # another read may have dropped it while this one looked at the disk.
        for run in self._missing(needed, MAX_PART, disk=False):
            self._add(run)
        for run in self._missing(ahead, part):
            short = len(run) * BLOCK < part and run.stop == ahead.stop
            if short and run.stop * BLOCK < self.size:
                break  # the window's edge moves on with each read: wait for a whole part
            if not self._buffers.room_for(len(run) * BLOCK):
                break
            self._add(run)

    def _missing(self, blocks: range, most: int, disk: bool = True) -> list[range]:
        """Runs of blocks not held (nor on the disk, if `disk`), each at most `most` bytes."""
        runs: list[range] = []
        for index in blocks:
            if index in self._held or (disk and index in self._on_disk):
                continue
            if runs and runs[-1].stop == index and len(runs[-1]) * BLOCK < most:
                runs[-1] = range(runs[-1].start, index + 1)
            else:
                runs.append(range(index, index + 1))
        return runs

    def _block_size(self, index: int) -> int:
        return min(BLOCK, self.size - index * BLOCK)

    def _add(self, run: range) -> None:
        start = run.start * BLOCK
        size = min(run.stop * BLOCK, self.size) - start
        buffer = self._buffers.take(size)
        view = memoryview(buffer)[:size]
        job = self._client.read_range(self._arcid, start, view, self.size)
        self._insert(_Part(start, size, buffer, job))

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
                    if part.job is None:
                        self._on_disk.add(index)  # read from the disk: it is there still
            part.dropped = True
            if not part.users:  # a read still waiting on it keeps it going
                if part.job is not None:
                    part.job.abort()
                self._release(part)

    def _release(self, part: _Part) -> None:
        if part.job is None:
            self._buffers.give(part.buffer, part.size, reusable=False)
            return
        # A buffer a worker may still write into is never reused.
        self._buffers.give(part.buffer, part.size, reusable=part.job.done)
        self._client.forget_range(part.job)

    def _save_whole(self, parts: list[_Part] | None = None) -> None:
        """Hand the blocks of requests that arrived whole to the disk cache, once."""
        if self._blocks is None:
            return
        for part in self._parts if parts is None else parts:
            if part.saved or not part.whole:
                continue
            part.saved = True
            view = memoryview(part.buffer)[: part.size]  # a pooled buffer may be longer
            for start in range(0, part.size, BLOCK):
                index = (part.start + start) // BLOCK
                self._blocks.save(index, bytes(view[start : start + BLOCK]))
                self._known.discard(index)  # the queue may drop it: look again later

    # -- serving a read -----------------------------------------------------------

    async def _wait(self, parts: list[_Part], end: int) -> None:
        timeout = self._client.timeout
        fetched = [part for part in parts if part.job is not None]
        try:
            with trio.fail_after(timeout):
                for part in fetched:
                    assert part.job is not None
                    await part.job.wait(min(end, part.end) - part.start)
        except trio.TooSlowError:
            self._drop([part for part in parts if not part.dropped])
            assert fetched[0].job is not None
            raise fetched[0].job.stalled(timeout) from None
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
