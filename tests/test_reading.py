"""Reading through real mounts: the archive file through its read-ahead window of parallel
Range requests, and pages read out of the archive file, prefetched; always the server's
exact bytes, whatever the access pattern and however the server fails."""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import random
import subprocess
import threading
import zipfile
from pathlib import Path

import pytest

from lrrfs.library.prefetch import DEPTH
from lrrfs.testserver.samples import make_archive, write_zip

from .conftest import served_pages, start_mount, start_server, wait_for

BIG_PAGES = 40  # of 1 MB: a 40 MB archive, several read-ahead parts long
MIB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    library = tmp_path_factory.mktemp("reading-library")
    make_archive(library / "Big.zip", BIG_PAGES, page_bytes=1_000_000)
    make_archive(library / "Comic.zip", 30, page_bytes=150_000)
    pages = [(f"{i:02d}.png", bytes(range(256)) * (200 + i)) for i in range(1, 7)]
    write_zip(library / "Deflated.zip", pages, compression=zipfile.ZIP_DEFLATED)
    with start_server(library, tmp_path_factory.mktemp("reading-server")) as running:
        yield running


@pytest.fixture
def mounted(server, tmp_path):
    server.clear_faults()
    with start_mount(server, tmp_path / "lrr") as mount:
        yield mount
    server.clear_faults()


def big_file(mount) -> Path:
    return mount.path / "Big" / "Big.zip"


def original(server) -> bytes:
    return (server.library / "Big.zip").read_bytes()


def read_in_blocks(path: Path, block: int) -> bytes:
    pieces = []
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(block):
            pieces.append(chunk)
    return b"".join(pieces)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_requests(server) -> list[dict]:
    return [r for r in server.requests() if r["path"].endswith("/download")]


def pages_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name[0].isdigit())


# -- the archive file ------------------------------------------------------------------


@pytest.mark.parametrize("block", [MIB, 100_000, 4096])
def test_sequential_reads_of_any_size_are_exact(server, mounted, block):
    assert digest(read_in_blocks(big_file(mounted), block)) == digest(original(server))


def test_cat_is_exact_and_uses_parallel_range_requests(server, mounted):
    path = big_file(mounted)
    path.stat()
    server.clear_requests()
    out = subprocess.run(["cat", str(path)], capture_output=True, check=True).stdout
    assert digest(out) == digest(original(server))
    assert len(download_requests(server)) > 2  # a growing window of parts, not one stream


def test_random_reads_are_exact(server, mounted):
    data = original(server)
    size = len(data)
    rng = random.Random(5)
    spots = [(0, 1), (size - 1, 10), (size - 100, 100), (size // 2, MIB + 17), (16 * MIB - 3, 7)]
    spots += [(rng.randrange(size), rng.choice([1, 4096, 131072, 3 * MIB])) for _ in range(60)]
    fd = os.open(big_file(mounted), os.O_RDONLY)
    try:
        for offset, length in spots:
            assert os.pread(fd, length, offset) == data[offset : offset + length], offset
    finally:
        os.close(fd)


def test_zipfile_reads_members_out_of_the_archive_file(server, mounted):
    with (
        zipfile.ZipFile(big_file(mounted)) as mine,
        zipfile.ZipFile(server.library / "Big.zip") as theirs,
    ):
        for name in reversed(theirs.namelist()[::7]):
            assert mine.read(name) == theirs.read(name)


def test_threads_reading_one_open_file_at_different_places_get_exact_bytes(server, mounted):
    data = original(server)
    fd = os.open(big_file(mounted), os.O_RDONLY)
    errors: list[str] = []

    def read(start: int) -> None:
        for offset in range(start, len(data), 5 * MIB + 12345):
            if os.pread(fd, 256 * 1024, offset) != data[offset : offset + 256 * 1024]:
                errors.append(f"wrong bytes at {offset}")

    try:
        threads = [threading.Thread(target=read, args=(s * MIB,)) for s in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        os.close(fd)
    assert errors == []


@pytest.mark.parametrize("action", ["drop", "truncate", "overlong"])
def test_a_server_that_breaks_bodies_now_and_then_still_gives_exact_bytes(server, mounted, action):
    path = big_file(mounted)
    path.stat()
    rule = {"match": "GET /api/archives/[0-9a-f]+/download", "action": action, "times": 2}
    server.faults(rules=[rule])
    assert digest(read_in_blocks(path, MIB)) == digest(original(server))


def test_a_server_that_always_drops_the_body_gives_an_error_not_wrong_bytes(server, mounted):
    path = big_file(mounted)
    path.stat()
    server.faults(rules=[{"match": "GET /api/archives/[0-9a-f]+/download", "action": "drop"}])
    with pytest.raises(OSError) as raised:
        read_in_blocks(path, MIB)
    assert raised.value.errno == errno.EIO


# -- pages ------------------------------------------------------------------------------


@pytest.mark.parametrize("title", ["Comic", "Deflated"])
def test_zip_pages_come_out_of_the_archive_file_exact(server, mounted, title):
    folder = mounted.path / title
    os.listdir(folder)
    server.clear_requests()
    got = [page.read_bytes() for page in pages_of(folder)]
    asked = [r["path"] for r in server.requests()]
    assert got == served_pages(server, title)
    assert not [p for p in asked if "/page" in p]  # no page request: Range reads of /download
    assert [p for p in asked if p.endswith("/download")]


def test_pages_that_do_not_check_out_are_fetched_from_the_page_api(server, mounted):
    folder = mounted.path / "Comic"
    os.listdir(folder)  # sizes and places come from the zip's directory
    # From now on /download answers a body of the wrong shape: the checks refuse it.
    server.faults(rules=[{"match": "GET /api/archives/[0-9a-f]+/download", "action": "nonsense"}])
    server.clear_requests()
    got = [page.read_bytes() for page in pages_of(folder)]
    assert got == served_pages(server, "Comic")
    assert [r for r in server.requests() if "/page" in r["path"]]


def resident_bytes(path: Path) -> int:
    """How much of the file the kernel's page cache holds, in whole memory pages
    (fincore reads none of it)."""
    command = ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)]
    return int(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def held_by_kernel(path: Path) -> bool:
    """The kernel's page cache holds the file, but maybe its last partial memory page: one
    run in some tens, a page handed over whole shows 98304 of its 100000 bytes resident
    (a read then asks lrrfs for the tail alone)."""
    return resident_bytes(path) >= path.stat().st_size // mmap.PAGESIZE * mmap.PAGESIZE


def test_pages_fetched_ahead_wait_in_the_kernel_cache(server, mounted):
    """A page fetched ahead is handed to the kernel's page cache: opening it then costs
    lrrfs no read call, and it reads the server's bytes all the same."""
    pages = pages_of(mounted.path / "Comic")
    pages[0].read_bytes()  # (fincore opens the files it looks at: not before this)
    ahead = pages[1 : 1 + DEPTH]
    assert wait_for(lambda: all(held_by_kernel(p) for p in ahead))
    assert [p.read_bytes() for p in ahead] == served_pages(server, "Comic")[1 : 1 + DEPTH]


def test_reading_a_page_fetches_the_next_ones_in_the_background(server, mounted):
    folder = mounted.path / "Comic"
    pages = pages_of(folder)
    server.clear_requests()
    pages[0].read_bytes()
    # Page 1 alone is one request; the prefetch asks for the following pages too.
    assert wait_for(lambda: len(download_requests(server)) >= 2)
    assert wait_for(lambda: len({r["status"] for r in download_requests(server)} - {206}) == 0)
    expected = served_pages(server, "Comic")
    server.clear_requests()
    # Up to where the window moves on (and asks for more), the pages are there already.
    ahead = pages[1 : DEPTH - DEPTH // 2 + 1]
    assert [page.read_bytes() for page in ahead] == expected[1 : 1 + len(ahead)]
    assert download_requests(server) == []
