"""The archive file's blocks in the disk cache, through real mounts: exact bytes whatever the
reads (sizes, orders, mmap, two processes), no request for what is cached (a re-open, a new
mount), a damaged block never served, a dead server never answered with wrong bytes, and
eviction under a small cap while the file is open."""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lrrfs.library.reader import BLOCK
from lrrfs.testserver.samples import make_archive

from .conftest import start_mount, start_server, wait_for

PAGES = 12  # of ~1 MB: an archive of ~12 blocks, its last one partial
TIMEOUT = 4  # --timeout of the mounts that meet a dead server


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("archive-cache-library")
    make_archive(folder / "Big.zip", PAGES, page_bytes=1_000_003)
    return folder


@pytest.fixture(scope="module")
def server(library, tmp_path_factory):
    with start_server(library, tmp_path_factory.mktemp("archive-cache-server")) as running:
        yield running


def mount_with(server, tmp_path: Path, name: str, cache: Path, *args: str):
    return start_mount(server, tmp_path / name / "lrr", args=("--cache-dir", str(cache), *args))


def archive_of(mount) -> Path:
    return mount.path / "Big" / "Big.zip"


def listed(mount) -> None:
    """Look the folder up and list it: the page list (read from the zip's end) is done."""
    for entry in (mount.path / "Big").iterdir():
        entry.stat()


def downloads(server) -> list[dict]:
    return [r for r in server.requests() if r["path"].endswith("/download")]


def block_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.glob("*/v1/block/*/*") if not p.name.startswith(".tmp"))


def block_bytes(cache: Path) -> int:
    """Bytes of the blocks on disk (eviction may delete one as it is counted)."""
    total = 0
    for path in block_files(cache):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def blocks_of(original: bytes) -> int:
    return -(-len(original) // BLOCK)


def read_in(path: Path, size: int) -> bytes:
    pieces = []
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(size):
            pieces.append(chunk)
    return b"".join(pieces)


def drop_kernel_cache(path: Path) -> None:
    """Forget the file's pages in the kernel, so the next reads reach the mount."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cached_fully(server, tmp_path: Path, cache: Path, original: bytes) -> None:
    """Read the archive once through a mount on `cache`, until every block is on disk."""
    with mount_with(server, tmp_path, "filler", cache) as mount:
        assert read_in(archive_of(mount), BLOCK) == original
        assert wait_for(lambda: len(block_files(cache)) == blocks_of(original))


@pytest.fixture
def original(library) -> bytes:
    return (library / "Big.zip").read_bytes()


# -- exact bytes ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 8192, 128 << 10, BLOCK, 3 * BLOCK + 17])
def test_sequential_reads_of_every_size_are_exact(server, tmp_path, original, size):
    if size == 1:
        original = original[: 2 * BLOCK + 5]  # a byte at a time: two blocks' edge is enough
    with (
        mount_with(server, tmp_path, "m", tmp_path / "cache") as mount,
        open(archive_of(mount), "rb", buffering=0) as handle,
    ):
        got = b"".join(iter(lambda: handle.read(size), b""))[: len(original)]
    assert got == original


def test_random_reads_and_block_edges_are_exact(server, tmp_path, original):
    rng = random.Random(13)
    edges = [i * BLOCK + d for i in range(1, blocks_of(original)) for d in (-3, -1, 0, 1)]
    spots = [(o, rng.choice([1, 7, 8192, 100_000, BLOCK + 5])) for o in edges]
    spots += [(rng.randrange(len(original)), rng.randrange(1, 3 * BLOCK)) for _ in range(60)]
    spots += [(len(original) - 10, 100), (len(original), 10)]
    with mount_with(server, tmp_path, "m", tmp_path / "cache") as mount:
        for round_ in range(2):  # cold, then with blocks on disk and in the kernel
            with open(archive_of(mount), "rb", buffering=0) as handle:
                for offset, size in spots:
                    handle.seek(offset)
                    assert handle.read(size) == original[offset : offset + size], (round_, offset)
            drop_kernel_cache(archive_of(mount))


@pytest.mark.parametrize("flags", [mmap.MAP_SHARED, mmap.MAP_PRIVATE], ids=["shared", "private"])
def test_mmap_is_exact(server, tmp_path, original, flags):
    with (
        mount_with(server, tmp_path, "m", tmp_path / "cache") as mount,
        open(archive_of(mount), "rb") as handle,
        mmap.mmap(handle.fileno(), 0, flags=flags, prot=mmap.PROT_READ) as mapped,
    ):
        assert mapped[BLOCK - 5 : BLOCK + 5] == original[BLOCK - 5 : BLOCK + 5]
        assert mapped[:] == original


def test_two_processes_reading_at_once_get_exact_bytes(server, tmp_path, original):
    script = (
        "import hashlib, sys\n"
        "h = hashlib.sha256()\n"
        "with open(sys.argv[1], 'rb', buffering=0) as f:\n"
        "    while c := f.read(int(sys.argv[2])): h.update(c)\n"
        "print(h.hexdigest())\n"
    )
    import hashlib

    want = hashlib.sha256(original).hexdigest()
    with mount_with(server, tmp_path, "m", tmp_path / "cache") as mount:
        path = str(archive_of(mount))
        readers = [
            subprocess.Popen([sys.executable, "-c", script, path, size], stdout=subprocess.PIPE)
            for size in ("8192", "1048576")
        ]
        outputs = [reader.communicate(timeout=60)[0].decode().strip() for reader in readers]
    assert outputs == [want, want]


# -- no request for what is cached --------------------------------------------------------


def test_a_reopen_and_a_new_mount_send_no_download(server, tmp_path, original):
    cache = tmp_path / "cache"
    with mount_with(server, tmp_path, "first", cache) as mount:
        assert read_in(archive_of(mount), BLOCK) == original
        server.clear_requests()
        assert read_in(archive_of(mount), 8192) == original  # the kernel's cache
        assert downloads(server) == []
        assert wait_for(lambda: len(block_files(cache)) == blocks_of(original))
    with mount_with(server, tmp_path, "second", cache) as mount:
        listed(mount)
        server.clear_requests()
        assert read_in(archive_of(mount), 128 << 10) == original  # the disk cache
        assert downloads(server) == []


def test_damaged_blocks_are_fetched_again(server, tmp_path, original):
    cache = tmp_path / "cache"
    cached_fully(server, tmp_path, cache, original)
    blocks = block_files(cache)
    flipped = bytearray(blocks[0].read_bytes())
    flipped[-1000] ^= 0x40
    blocks[0].write_bytes(bytes(flipped))
    with open(blocks[1], "r+b") as handle:
        handle.truncate(handle.seek(0, os.SEEK_END) - 1)  # a crash mid-write
    blocks[2].write_bytes(b"")
    # A block renamed into another's place names the wrong block: a miss too.
    blocks[4].write_bytes(blocks[3].read_bytes())
    with mount_with(server, tmp_path, "m", cache) as mount:
        listed(mount)
        server.clear_requests()
        assert read_in(archive_of(mount), 8192) == original
        assert len(downloads(server)) >= 1


# -- failures -------------------------------------------------------------------------------


def test_a_dead_server_leaves_what_is_cached_and_fails_the_rest_in_time(
    library, tmp_path, original
):
    (tmp_path / "server").mkdir()
    with start_server(library, tmp_path / "server") as own:
        mount = mount_with(own, tmp_path, "m", tmp_path / "cache", "--timeout", str(TIMEOUT))
        with mount:
            path = archive_of(mount)
            with open(path, "rb", buffering=0) as handle:
                assert handle.read(4 * BLOCK) == original[: 4 * BLOCK]
            assert wait_for(lambda: len(block_files(tmp_path / "cache")) >= 4)
            drop_kernel_cache(path)
            own.stop()
            with open(path, "rb", buffering=0) as handle:
                # The kernel asks for up to 1 MiB past a read: 2 MiB stay within the 4 cached.
                assert handle.read(2 * BLOCK) == original[: 2 * BLOCK]  # from the disk
                handle.seek(len(original) - BLOCK)
                started = time.monotonic()
                with pytest.raises(OSError) as failure:
                    data = handle.read(BLOCK)
                    assert data == original[-BLOCK:], "wrong bytes from a dead server"
                    raise AssertionError("a dead server's bytes were served")
                assert failure.value.errno == errno.EIO
                assert time.monotonic() - started < TIMEOUT + 5


def test_eviction_under_a_small_cap_while_open_keeps_bytes_exact(server, tmp_path, original):
    cache = tmp_path / "cache"
    with mount_with(server, tmp_path, "m", cache, "--cache-size", "3M") as mount:
        path = archive_of(mount)
        with open(path, "rb", buffering=0) as handle:
            for round_ in range(3):
                handle.seek(0)
                assert b"".join(iter(lambda: handle.read(256 << 10), b"")) == original, round_
                drop_kernel_cache(path)
        assert wait_for(lambda: block_bytes(cache) < 6 << 20)
