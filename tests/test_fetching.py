"""Pure logic of fetching pages: a shared fetch hands each page out as soon as it has it,
work ahead starts in reading order, and the disk cache writes once reading pauses."""

from __future__ import annotations

import time

import trio
import trio.testing

from lrrfs.library.diskcache import QUIET_SECONDS, DiskCache
from lrrfs.library.pagestore import PARALLEL, in_order
from lrrfs.library.singleflight import Deliver, SingleFlight

from .conftest import wait_for


def test_a_shared_fetch_hands_out_each_key_as_soon_as_it_has_it():
    flights: SingleFlight[str] = SingleFlight()
    results: dict[str, str] = {}
    go, release = trio.Event(), trio.Event()

    async def fetch(deliver: Deliver[str]) -> None:
        await go.wait()
        deliver("a", "A")
        await release.wait()  # the rest of the request takes long
        deliver("b", "B")  # "c" never comes

    async def ask(key: str) -> None:
        async def alone() -> str:
            return f"{key} alone"

        results[key] = await flights.run(key, alone)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flights.run_many, ["a", "b", "c"], fetch)
            await trio.testing.wait_all_tasks_blocked()
            for key in "abc":
                nursery.start_soon(ask, key)
            await trio.testing.wait_all_tasks_blocked()
            go.set()
            await trio.testing.wait_all_tasks_blocked()
            assert results == {"a": "A"}  # b's asker still waits for its share
            release.set()

    trio.run(main)
    assert results == {"a": "A", "b": "B", "c": "c alone"}


def test_work_ahead_starts_in_reading_order_a_few_at_a_time():
    started: list[int] = []
    running = peak = 0

    async def job(item: int) -> None:
        nonlocal running, peak
        started.append(item)
        running += 1
        peak = max(peak, running)
        await trio.sleep(0.001 * (item % 3))
        running -= 1

    trio.run(in_order, list(range(40)), job)
    assert started == list(range(40))
    assert peak == PARALLEL


def test_the_disk_cache_writes_once_reading_pauses(tmp_path):
    cache = DiskCache(tmp_path, 10 << 20)
    try:
        cache.reading()
        cache.put_later("page", "a", b"x" * 1000)
        reading_until = time.monotonic() + 4 * QUIET_SECONDS
        while time.monotonic() < reading_until:  # a reader turning pages
            cache.reading()
            assert not cache.path("page", "a").exists()
            time.sleep(QUIET_SECONDS / 5)
        assert wait_for(lambda: cache.path("page", "a").exists(), 10)
        assert cache.get("page", "a") == b"x" * 1000
    finally:
        cache.close()
