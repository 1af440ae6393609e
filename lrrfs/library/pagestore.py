"""Pages' bytes: from memory, else the disk cache, else the server.

From the server, a page of a zip archive is read straight out of the archive
file when its directory says where it lies (a Range request of `/download`,
inflated if need be, checked against the directory's size and CRC-32), and
consecutive pages come with one request: a real LANraragi server spends about
5 ms of CPU on every page request, which reopens the archive, and a third of
that on a Range request. Each page of such a request is ready, checked and
handed to its readers as soon as its own bytes are in, not when the whole
request is. Any other page, or any archive where that check
fails once, goes through the page API. Either way a page never has another
length than its listing said.
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import trio
from cachetools import LRUCache

from ..client import BadResponse, LrrClient, PageRef
from ..client.ranges import RangeJob
from .diskcache import DiskCache
from .offline import page_key
from .reader import BufferPool
from .singleflight import Deliver, SingleFlight
from .zipindex import NotAZip, ZipSpan, extract

log = logging.getLogger(__name__)

BATCH_BYTES = 4 << 20  # consecutive zip members asked for with one Range request, at most
PARALLEL = 3  # requests in flight for one prefetch
IN_KERNEL = 50_000  # pages remembered as handed to the kernel's cache, at most
SERVER_AHEAD = 32  # pages asked of the server by one prefetch, at most (each costs it CPU)
AHEAD_BATCH = 16  # pages read ahead from the disk cache with one trip to a worker thread

T = TypeVar("T")
OnPage = Callable[[int, bytes], None]  # a page's index and bytes, as soon as they are in


@dataclass(frozen=True, slots=True)
class Page:
    name: str
    ref: PageRef
    size: int
    span: ZipSpan | None = None  # where it lies in the archive file, for a zip member


@dataclass(frozen=True, slots=True)
class PageSet:
    """One archive's pages, and what the caches file them under."""

    arcid: str
    title: str  # for messages
    key: str  # the disk cache's prefix for this archive's pages
    pages: list[Page]
    file_size: int | None  # the archive file's length, when known
    maybe_on_disk: bool = True  # False: the page list itself was not there, nor its pages


class PageStore:
    """Page bytes by (arcid, index), fetched once however many ask at once."""

    def __init__(self, client: LrrClient, disk: DiskCache | None, memory_bytes: int) -> None:
        self._client = client
        self._disk = disk
        self._memory: LRUCache[tuple[str, int], bytes] = LRUCache(memory_bytes, getsizeof=len)
        # Pages handed to the kernel's cache from the disk lately: not read ahead again
        # (the kernel may drop one meanwhile: then a read asks for it, as for any page).
        self._in_kernel: LRUCache[tuple[str, int], bool] = LRUCache(IN_KERNEL)
        self._flights: SingleFlight[bytes] = SingleFlight()
        self._no_spans: set[str] = set()  # archives whose zip members did not check out
        self._read_at = float("-inf")  # when a program last read (trio's clock)
        # Maps, reused (no zeroing on the trio thread, no page faults once warm).
        self._buffers = BufferPool(keep=PARALLEL + 1, part=BATCH_BYTES, small=0)
        # Told of every page fetched ahead of a reader (arcid, index, bytes).
        self.on_ahead: Callable[[str, int, bytes], None] = lambda arcid, index, data: None
        # Offered each page read ahead from the disk, in a worker thread, its bytes valid
        # for the call only: True if it took the page (the kernel has it now).
        self.take_ahead: Callable[[str, int, memoryview], bool] = lambda arcid, i, data: False

    def reading(self) -> None:
        """A program is reading pages: the disk cache's writing waits for a pause, and so
        does other background work (`until_reading_pauses`)."""
        self._read_at = trio.current_time()
        if self._disk is not None:
            self._disk.reading()

    async def until_reading_pauses(self, quiet: float) -> None:
        """Return once nothing has been read for `quiet` seconds: background work that
        competes with readers for the CPU (two cores here) waits for that."""
        while (left := self._read_at + quiet - trio.current_time()) > 0:
            await trio.sleep(left)

    def used(self, pages: PageSet, index: int, data: bytes) -> None:
        """A reader used the page: its disk copy is the most recent, for eviction."""
        if self._disk is not None:  # (it gathers a page's uses into one stamp)
            self._disk.touch_later("page", self._disk_key(pages, index), data)

    def opened(self, arcid: str, index: int, key: str) -> None:
        """A reader opened the page filed under `key`: its disk copy is the most recent too,
        even if the kernel then answers the reads from its own cache, unseen by lrrfs."""
        if self._disk is not None:
            self._disk.touch_later("page", key, self._memory.get((arcid, index)))

    def remember(self, arcid: str, index: int, data: bytes) -> None:
        if len(data) <= self._memory.maxsize:
            self._memory[(arcid, index)] = data

    def usage(self) -> tuple[int, int]:
        return int(self._memory.currsize), int(self._memory.maxsize)

    async def get(self, pages: PageSet, index: int) -> bytes:
        data = self._memory.get((pages.arcid, index))
        if data is None:
            data = await self._flights.run(
                (pages.arcid, index), lambda: self._load_one(pages, index)
            )
        return data

    async def prefetch(self, pages: PageSet, indexes: list[int]) -> None:
        """Bring pages ahead of a reader, in reading order: from the disk cache
        AHEAD_BATCH at a time (to the kernel's cache where it takes them, else into
        memory), the rest (SERVER_AHEAD at most) from the server into memory,
        consecutive zip members with one request (each page ready as soon as it is in);
        PARALLEL at once."""
        wanted = [
            i for i in indexes if 0 <= i < len(pages.pages) and not self._busy(pages.arcid, i)
        ]

        taken: set[int] = set()

        async def from_disk(indexes: list[int]) -> None:
            found = await self._disk_ahead(pages, indexes, taken)
            for index in taken.intersection(indexes):
                self._in_kernel[(pages.arcid, index)] = True
            for index, data in found.items():
                self.remember(pages.arcid, index, data)
                self.on_ahead(pages.arcid, index, data)

        def ready(deliver: Deliver[bytes], index: int, data: bytes) -> None:
            deliver((pages.arcid, index), data)
            self.on_ahead(pages.arcid, index, data)

        async def fetch(run: list[int]) -> None:
            # Meanwhile a reader may have asked for some of them: theirs now.
            run = [i for i in run if not self._busy(pages.arcid, i)]
            keys: list[Hashable] = [(pages.arcid, i) for i in run]
            try:
                if keys:
                    await self._flights.run_many(
                        keys,
                        lambda deliver: self._load(
                            pages, run, lambda i, data: ready(deliver, i, data), False
                        ),
                    )
            except Exception as exc:  # nobody waits for it; a reader asks again itself
                log.debug("%s: fetching pages %s ahead failed: %s", pages.title, run, exc)

        if self._disk is not None and pages.maybe_on_disk:
            batches = [wanted[i : i + AHEAD_BATCH] for i in range(0, len(wanted), AHEAD_BATCH)]
            await in_order(batches, from_disk)
            wanted = [i for i in wanted if i not in taken and not self._busy(pages.arcid, i)]
            wanted = wanted[:SERVER_AHEAD]  # a wide window meant for the disk, not the server
        await in_order(self._runs(pages, wanted), fetch)

    def _busy(self, arcid: str, index: int) -> bool:
        """In memory already, handed to the kernel's cache lately, or on its way."""
        key = (arcid, index)
        return key in self._memory or key in self._in_kernel or self._flights.running(key)

    async def _load_one(self, pages: PageSet, index: int) -> bytes:
        found: dict[int, bytes] = {}
        await self._load(pages, [index], found.__setitem__)
        return found[index]

    async def _load(
        self, pages: PageSet, indexes: list[int], on_page: OnPage, disk: bool = True
    ) -> None:
        """The pages, each handed to `on_page` once in memory: from the disk cache (unless
        `disk` is False: just looked there), the rest from the server (then written to
        the disk cache)."""
        found = await self._from_disk(pages, indexes) if disk else {}
        for i, data in found.items():
            self.remember(pages.arcid, i, data)
            on_page(i, data)
        missing = [i for i in indexes if i not in found]

        def downloaded(i: int, data: bytes) -> None:
            if self._disk is not None:
                self._disk.put_later("page", self._disk_key(pages, i), data)
            self.remember(pages.arcid, i, data)
            on_page(i, data)

        for run in self._runs(pages, missing):
            await self._download(pages, run, downloaded)

    # -- where the bytes come from ------------------------------------------------

    @staticmethod
    def _disk_key(pages: PageSet, index: int) -> str:
        return page_key(pages.key, pages.pages[index].ref.path)

    async def _from_disk(self, pages: PageSet, indexes: list[int]) -> dict[int, bytes]:
        """Those of the pages the disk cache has (whole, of their listed size)."""
        if self._disk is None or not pages.maybe_on_disk:
            return {}
        keys = [self._disk_key(pages, i) for i in indexes]
        blobs = await self._disk.read_many("page", keys, self._client.timeout)
        listed = pages.pages
        return {
            i: data
            for i, data in zip(indexes, blobs, strict=True)
            if data is not None and len(data) == listed[i].size
        }

    async def _disk_ahead(
        self,
        pages: PageSet,
        indexes: list[int],
        taken: set[int],
    ) -> dict[int, bytes]:
        """Pages of the disk cache read ahead of a reader, offered to `take_ahead` (the
        kernel's cache) straight from one reused buffer in a worker thread: no object per page,
        no trip through the trio thread. Adds to `taken` those it took; returns those
        it did not (to keep in memory)."""
        assert self._disk is not None
        disk, listed, take = self._disk, pages.pages, self.take_ahead
        keys = {i: self._disk_key(pages, i) for i in indexes}

        def run() -> dict[int, bytes]:
            kept: dict[int, bytes] = {}
            buffer = memoryview(mmap.mmap(-1, max(listed[i].size for i in indexes) or 1))
            for i in indexes:
                data = disk.read_into("page", keys[i], buffer)
                if data is None or len(data) != listed[i].size:
                    continue
                if take(pages.arcid, i, data):
                    taken.add(i)
                else:
                    kept[i] = bytes(data)
            return kept

        kept = await disk.in_worker(run, self._client.timeout)
        return kept if kept is not None else {}

    def _spans(self, pages: PageSet) -> bool:
        return pages.arcid not in self._no_spans

    def _runs(self, pages: PageSet, indexes: list[int]) -> list[list[int]]:
        """`indexes` in groups one request can fetch: consecutive zip members, up to
        BATCH_BYTES; every other page alone."""
        runs: list[list[int]] = []
        listed = pages.pages
        for i in indexes:
            span = listed[i].span if self._spans(pages) else None
            if runs and span is not None and runs[-1][-1] == i - 1:
                first, previous = listed[runs[-1][0]].span, listed[i - 1].span
                if (
                    first is not None
                    and previous is not None
                    and previous.end == span.offset
                    and span.end - first.offset <= BATCH_BYTES
                ):
                    runs[-1].append(i)
                    continue
            runs.append([i])
        return runs

    async def _download(self, pages: PageSet, run: list[int], on_page: OnPage) -> None:
        first, last = pages.pages[run[0]].span, pages.pages[run[-1]].span
        usable = first is not None and last is not None and pages.file_size is not None
        if usable and self._spans(pages):
            done: set[int] = set()

            def checked(i: int, data: bytes) -> None:
                done.add(i)
                on_page(i, data)

            try:
                await self._from_archive_file(pages, run, checked)
                return
            except NotAZip as exc:
                log.warning(
                    "%s: pages read from the archive file do not check out (%s); "
                    "asking the page API instead",
                    pages.title,
                    exc,
                )
                self._no_spans.add(pages.arcid)
            run = [i for i in run if i not in done]
        for i in run:
            on_page(i, await self._from_page_api(pages, i))

    async def _from_archive_file(self, pages: PageSet, run: list[int], on_page: OnPage) -> None:
        """A run of consecutive zip members with one Range request (through the client's
        Range workers, not httpx); each page out as soon as its bytes are in."""
        assert pages.file_size is not None
        listed = pages.pages
        spans = [span for i in run if (span := listed[i].span) is not None]
        assert len(spans) == len(run)  # a run is made of zip members only
        start = spans[0].offset
        length = spans[-1].end - start
        pooled = self._buffers.take(length)
        buffer = memoryview(pooled)[:length]
        client = self._client
        job = client.read_range(pages.arcid, start, buffer, pages.file_size)
        try:
            for i, span in zip(run, spans, strict=True):
                await self._arrived(job, span.end - start)
                on_page(i, extract(buffer, start, span, listed[i].size))
                await trio.lowlevel.checkpoint()  # a reader's call goes first, not after the run
        except BadResponse as exc:  # the file changed, or the server sent a wrong range
            raise NotAZip(str(exc)) from None
        finally:
            if not job.done:
                job.abort()
            client.forget_range(job)
            # Pages were copied out; a buffer a worker may still write into is not reused.
            self._buffers.give(pooled, length, reusable=job.done)

    async def _arrived(self, job: RangeJob, upto: int) -> None:
        """Until the first `upto` bytes of the job are in: ServerUnreachable if no more
        come within the client's timeout."""
        if job.filled >= upto:
            return  # (most pages of a run: no deadline to set up)
        timeout = self._client.timeout
        try:
            with trio.fail_after(timeout):
                await job.wait(upto)
        except trio.TooSlowError:
            raise job.stalled(timeout) from None

    async def _from_page_api(self, pages: PageSet, index: int) -> bytes:
        page = pages.pages[index]
        data = await self._client.page(pages.arcid, page.ref, page.size)
        if len(data) != page.size:
            raise BadResponse(
                f"{pages.title}/{page.name}: the server sent {len(data)} bytes "
                f"where the listing said {page.size}; refusing to serve them"
            )
        return data


async def in_order(items: Iterable[T], job: Callable[[T], Awaitable[None]]) -> None:
    """`job(item)` for every item, PARALLEL at a time, started in the items' order (tasks
    started together run in no set order: the page a reader needs next could come last)."""
    pending = iter(items)

    async def worker() -> None:
        for item in pending:  # shared: each item once, the next one first
            await job(item)

    async with trio.open_nursery() as nursery:
        for _ in range(PARALLEL):
            nursery.start_soon(worker)
