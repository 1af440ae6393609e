"""The disk cache, through real mounts: it survives remounts, serves warm reads without the
server, never serves a damaged or half-written file, stays under its cap, and can be shared."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from lrrfs.library.diskcache import HEADER, DiskCache
from lrrfs.library.prefetch import DEPTH
from lrrfs.testserver.samples import make_archive

from .conftest import (
    PYTHON,
    archive_names,
    mount_env,
    served_pages,
    start_mount,
    start_server,
    wait_for,
)

PAGES = 24
PAGE_BYTES = 100_000


@pytest.fixture(scope="module", params=["0.9", "0.7"], ids=lambda g: f"lrr{g}")
def server(request, tmp_path_factory):
    library = tmp_path_factory.mktemp("cache-library")
    make_archive(library / "Comic.zip", PAGES, page_bytes=PAGE_BYTES)
    make_archive(library / "Tarred.cbt", 4, page_bytes=PAGE_BYTES, fmt="tar")
    with start_server(
        library, tmp_path_factory.mktemp("cache-server"), generation=request.param
    ) as running:
        yield running


def pages_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name[0].isdigit())


def read_all(paths: list[Path]) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in paths}


def asked(server, *fragments: str) -> list[str]:
    return [r["path"] for r in server.requests() if any(f in r["path"] for f in fragments)]


def cache_files(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file()]


def mount(server, tmp_path: Path, name: str, cache: Path, *args: str):
    return start_mount(server, tmp_path / name / "lrr", args=("--cache-dir", str(cache), *args))


def test_a_remount_serves_pages_thumbnail_and_listing_from_the_disk_cache(server, tmp_path):
    cache = tmp_path / "cache"
    with mount(server, tmp_path, "first", cache) as first:
        folder = first.path / "Comic"
        subprocess.run(["ls", "-l", str(folder)], check=True, capture_output=True)
        cold = read_all(pages_of(folder))
        thumbnail = (folder / "thumbnail.jpg").read_bytes()
    assert list(cold.values()) == served_pages(server, "Comic")
    # (Desktop thumbnails off: the first mount may not have fetched every page's picture.)
    with mount(server, tmp_path, "second", cache, "--no-thumbnails") as second:
        folder = second.path / "Comic"
        server.clear_requests()
        subprocess.run(["ls", "-l", str(folder)], check=True, capture_output=True)
        warm = read_all(pages_of(folder))
        assert (folder / "thumbnail.jpg").read_bytes() == thumbnail
        made = asked(server, "/page", "/files", "/extract", "/thumbnail", "/download")
    assert warm == cold
    assert made == [], "a warm read asked the server"


def test_a_remount_hands_the_next_pages_to_the_kernel_from_the_disk(server, tmp_path):
    """On a remount, opening a page sends the next ones from the disk cache straight to
    the kernel's page cache: their opens cost no read call, and no request."""
    from .test_reading import held_by_kernel

    cache = tmp_path / "cache"
    with mount(server, tmp_path, "first", cache) as first:
        cold = read_all(pages_of(first.path / "Comic"))
    with mount(server, tmp_path, "second", cache, "--no-thumbnails") as second:
        pages = pages_of(second.path / "Comic")
        server.clear_requests()
        pages[0].read_bytes()  # (fincore opens the files it looks at: not before this)
        assert wait_for(lambda: all(held_by_kernel(p) for p in pages[1:]))
        assert read_all(pages) == cold
        assert asked(server, "/page", "/files", "/extract", "/download") == []


def test_a_page_the_kernel_answers_still_counts_as_used_for_eviction(server, tmp_path):
    """A page fetched ahead waits in the kernel's cache, and on the disk: its open costs
    no read call, yet it makes the disk copy the most recent, or eviction would take the
    pages read last first (the kernel answered them) and keep older ones."""
    from .test_reading import held_by_kernel

    cache = tmp_path / "cache"

    def blobs() -> dict[bytes, int]:
        """Page bytes on the disk: when each was last used."""
        found = [p for p in cache_files(cache) if p.parent.parent.name == "page"]
        return {p.read_bytes()[HEADER.size :]: p.stat().st_mtime_ns for p in found}

    with mount(server, tmp_path, "first", cache, "--no-thumbnails") as first:
        pages = pages_of(first.path / "Comic")
        pages[0].read_bytes()  # (fincore opens the files it looks at: not before this)
        ahead = pages[1 : 1 + DEPTH]
        assert wait_for(lambda: len(blobs()) >= 1 + DEPTH)  # written during the pause
        assert wait_for(lambda: all(held_by_kernel(p) for p in ahead))
        opened = time.time_ns()
        read = read_all(ahead)
    # Uses are stamped together, soon after; at the latest when the mount ends.
    used = blobs()
    assert [name for name, data in read.items() if used[data] < opened] == [], "unstamped"


def test_pages_sized_by_fetching_them_are_cached_too(server, tmp_path):
    cache = tmp_path / "cache"
    with mount(server, tmp_path, "first", cache) as first:
        cold = read_all(pages_of(first.path / "Tarred"))
    with mount(server, tmp_path, "second", cache) as second:
        server.clear_requests()
        warm = read_all(pages_of(second.path / "Tarred"))
        made = asked(server, "/page", "/files", "/extract")
    assert warm == cold and list(cold.values()) == served_pages(server, "Tarred")
    assert made == []


def test_damaged_cache_files_are_never_served(server, tmp_path):
    cache = tmp_path / "cache"
    with mount(server, tmp_path, "first", cache) as first:
        good = read_all(pages_of(first.path / "Comic"))
    page_files = [p for p in cache_files(cache) if "/page/" in str(p)]
    assert len(page_files) == PAGES
    for number, path in enumerate(page_files):
        blob = path.read_bytes()
        if number % 3 == 0:  # cut short, as by a crash mid-write on a disk that reorders
            path.write_bytes(blob[: len(blob) // 2])
        elif number % 3 == 1:  # one bit flipped
            path.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
        else:  # only the header left
            path.write_bytes(blob[:20])
    with mount(server, tmp_path, "second", cache) as second:
        again = read_all(pages_of(second.path / "Comic"))
    assert again == good
    with mount(server, tmp_path, "third", cache) as third:
        server.clear_requests()
        assert read_all(pages_of(third.path / "Comic")) == good
        assert asked(server, "/page", "/download") == [], "the damaged files were not rewritten"


def test_a_half_written_temporary_file_is_never_served(server, tmp_path):
    cache = tmp_path / "cache"
    with mount(server, tmp_path, "first", cache) as first:
        good = read_all(pages_of(first.path / "Comic"))
    for number, path in enumerate(p for p in cache_files(cache) if "/page/" in str(p)):
        blob = path.read_bytes()
        path.unlink()  # the rename never happened: only the temporary file is there
        (path.parent / f".tmp-99999-{number}").write_bytes(blob[: len(blob) // 2])
    with mount(server, tmp_path, "second", cache) as second:
        server.clear_requests()
        assert read_all(pages_of(second.path / "Comic")) == good
        assert asked(server, "/page", "/download"), "pages came from half-written files"


def test_the_cache_stays_under_its_cap_and_keeps_what_was_read_last(server, tmp_path):
    cache = tmp_path / "cache"
    cap = 1 << 20  # about ten pages
    # Without desktop thumbnails: their pictures are made once reading pauses, so they are
    # newer than the pages, and under this tiny cap they would rightly take their place.
    only_pages = ("--cache-size", "1M", "--no-thumbnails")
    with mount(server, tmp_path, "first", cache, *only_pages) as first:
        pages = pages_of(first.path / "Comic")
        good = read_all(pages)
    assert sum(p.stat().st_size for p in cache_files(cache)) <= cap
    with mount(server, tmp_path, "second", cache, *only_pages) as second:
        folder = second.path / "Comic"
        server.clear_requests()
        for page in pages[-3:]:
            assert (folder / page.name).read_bytes() == good[page.name]
        assert asked(server, "/page", "/download") == [], "the latest pages were evicted"
        assert (folder / pages[0].name).read_bytes() == good[pages[0].name]
        assert asked(server, "/page", "/download"), "the first page was not evicted"


def test_two_mounts_share_one_cache_without_corrupting_it(server, tmp_path):
    cache = tmp_path / "cache"
    expected = dict(
        zip([f"{i:03d}" for i in range(1, PAGES + 1)], served_pages(server, "Comic"), strict=True)
    )
    results: dict[str, dict[str, bytes]] = {}
    with mount(server, tmp_path, "a", cache) as a, mount(server, tmp_path, "b", cache) as b:

        def read(name: str, root: Path) -> None:
            results[name] = read_all(pages_of(root / "Comic"))

        threads = [threading.Thread(target=read, args=(n, m.path)) for n, m in (("a", a), ("b", b))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for got in results.values():
        assert {name.split(".")[0]: data for name, data in got.items()} == expected
    assert not [p for p in cache_files(cache) if p.name.startswith(".tmp-")]
    with mount(server, tmp_path, "c", cache) as c:
        server.clear_requests()
        got = read_all(pages_of(c.path / "Comic"))
        assert asked(server, "/page", "/download") == []
    assert {name.split(".")[0]: data for name, data in got.items()} == expected


def test_a_cached_archive_list_starts_the_mount_then_the_server_s_list_replaces_it(tmp_path):
    library = tmp_path / "library"
    make_archive(library / "First.zip", 2, page_bytes=1000)
    cache = tmp_path / "cache"
    with start_server(library, tmp_path) as server:
        with mount(server, tmp_path, "first", cache):
            pass
        make_archive(library / "Second.zip", 2, page_bytes=1000)
        assert wait_for(lambda: len(server.archives()) == 2)  # the server rescans each second
        # The server's list hangs once: a mount needing it could not come up.
        server.faults(rules=[{"match": "^GET /api/archives$", "action": "hang", "times": 1}])
        try:
            args = ("--refresh-interval", "2", "--timeout", "3")
            with mount(server, tmp_path, "second", cache, *args) as second:
                assert archive_names(second.path) == ["First"]  # the cached list
                assert wait_for(lambda: archive_names(second.path) == ["First", "Second"])
        finally:
            server.clear_faults()


def test_a_server_down_at_mount_time_fails_a_no_offline_mount_even_with_a_cached_list(tmp_path):
    """(Without --no-offline, such a mount starts offline: test_offline.py.)"""
    library = tmp_path / "library"
    make_archive(library / "First.zip", 2, page_bytes=1000)
    cache = tmp_path / "cache"
    with start_server(library, tmp_path) as server, mount(server, tmp_path, "first", cache):
        pass
    mountpoint = tmp_path / "second"
    mountpoint.mkdir()
    done = subprocess.run(
        [PYTHON, "-m", "lrrfs", "mount", server.url, str(mountpoint), "-f", "--timeout", "5",
         "--cache-dir", str(cache), "--no-offline"],
        capture_output=True, text=True, env=mount_env(server.key), timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "cannot mount" in done.stderr
    assert not os.path.ismount(mountpoint)


# -- the cache's own rules, without a mount --------------------------------------------


def test_a_blob_is_whole_or_absent(tmp_path):
    cache = DiskCache(tmp_path, 10 << 20)
    cache.put("page", "a", b"x" * 1000)
    assert cache.get("page", "a") == b"x" * 1000
    path = cache.path("page", "a")
    path.write_bytes(path.read_bytes()[:-1])
    assert cache.get("page", "a") is None
    assert not path.exists()  # dropped, to be fetched again
    assert cache.get("page", "never written") is None
    cache.close()


def test_a_blob_read_counts_as_used_now(tmp_path):
    cache = DiskCache(tmp_path, 10 << 20)
    cache.put("page", "a", b"x")
    os.utime(cache.path("page", "a"), (1000, 1000))
    cache.get("page", "a")
    cache.close()  # uses are stamped together, soon after (here: on closing)
    assert cache.path("page", "a").stat().st_mtime > 1000


def test_eviction_drops_the_least_recently_used_and_stale_temporary_files(tmp_path):
    writer = DiskCache(tmp_path, 1 << 20)
    for i in range(8):
        writer.put("page", str(i), bytes(1000))
    writer.close()
    for i in range(8):
        os.utime(writer.path("page", str(i)), (1000 + i, 1000 + i))
    os.utime(writer.path("page", "0"))  # used just now
    stale = writer.path("page", "0").parent / ".tmp-1-1"
    stale.write_bytes(b"half")
    os.utime(stale, (1000, 1000))
    cache = DiskCache(tmp_path, 5000)
    cache.close()  # after its scan: under the cap
    kept = {str(i) for i in range(8) if cache.path("page", str(i)).exists()}
    assert kept == {"0", "5", "6", "7"}
    assert not stale.exists()


def test_files_used_during_an_eviction_are_ordered_anew_and_the_lists_stay(tmp_path):
    """Pages read while an eviction deletes would end its pass on stale order: going on
    to what came next (down to the page lists every listing needs) would be wrong."""
    cache = DiskCache(tmp_path, 1 << 30)
    for i in range(8):
        cache.put("page", str(i), bytes(1000))
        os.utime(cache.path("page", str(i)), (1000 + i, 1000 + i))
    cache.put("pages", "list", bytes(100))
    os.utime(cache.path("pages", "list"), (900, 900))
    scan = cache._scan
    scans = []

    def scan_then_read() -> tuple[list[tuple[bool, int, int, str]], int]:
        found = scan()
        if not scans:  # a reader uses pages 0-5 while the first pass runs
            for i in range(6):
                os.utime(cache.path("page", str(i)))
        scans.append(found)
        return found

    cache._scan = scan_then_read  # type: ignore[method-assign]
    cache.cap = 5000
    cache.evict()
    cache.close()
    assert len(scans) >= 2
    assert cache.path("pages", "list").exists()
    assert not cache.path("page", "6").exists() and not cache.path("page", "7").exists()
    assert sum(p.stat().st_size for p in cache_files(tmp_path)) <= 5000
