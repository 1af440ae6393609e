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
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lrrfs.library.archivecache import BLOCK, ENTRY, HEADER, PAGE
from lrrfs.testserver.samples import make_archive

from .conftest import start_mount, start_server, wait_for
from .test_reading import read_in_blocks

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


def archive_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.glob("*/v1/archive/*/*") if not p.name.startswith(".tmp"))


def map_of(path: Path) -> tuple[int, list[tuple[int, int]]]:
    """Where the cache file's data starts, and its map: (CRC-32, length) per block."""
    with open(path, "rb") as handle:
        _magic, size, _block, _label = HEADER.unpack(handle.read(HEADER.size))
        blocks = -(-size // BLOCK)
        handle.seek(PAGE)
        raw = handle.read(blocks * ENTRY.size)
    data_start = -(-(PAGE + blocks * ENTRY.size) // PAGE) * PAGE
    return data_start, [ENTRY.unpack_from(raw, i * ENTRY.size) for i in range(blocks)]


def held_blocks(cache: Path) -> int:
    """Blocks marked held in the cache's archive files (one archive in these tests)."""
    held = 0
    for path in archive_files(cache):
        with contextlib.suppress(FileNotFoundError, struct.error):
            held += sum(1 for _crc, length in map_of(path)[1] if length)
    return held


def block_bytes(cache: Path) -> int:
    """Bytes the archive files take on disk (eviction may delete one as it is counted)."""
    total = 0
    for path in archive_files(cache):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_blocks * 512
    return total


def blocks_of(original: bytes) -> int:
    return -(-len(original) // BLOCK)


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
        assert read_in_blocks(archive_of(mount), BLOCK) == original
        assert wait_for(lambda: held_blocks(cache) == blocks_of(original))


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
        assert read_in_blocks(archive_of(mount), BLOCK) == original
        server.clear_requests()
        assert read_in_blocks(archive_of(mount), 8192) == original  # the kernel's cache
        assert downloads(server) == []
        assert wait_for(lambda: held_blocks(cache) == blocks_of(original))
    with mount_with(server, tmp_path, "second", cache) as mount:
        listed(mount)
        server.clear_requests()
        assert read_in_blocks(archive_of(mount), 128 << 10) == original  # the disk cache
        assert downloads(server) == []


@pytest.mark.parametrize("in_memory", [True, False], ids=["page-cache", "disk"])
def test_damaged_blocks_are_fetched_again(server, tmp_path, original, in_memory):
    """Whether the cache file's pages are in the kernel's cache (read at once, on the trio
    thread) or on the disk only (read by a worker)."""
    cache = tmp_path / "cache"
    cached_fully(server, tmp_path, cache, original)
    [path] = archive_files(cache)
    data_start, _ = map_of(path)
    with open(path, "r+b") as handle:
        handle.seek(data_start + BLOCK - 100)  # block 0's end overwritten
        handle.write(bytes(100))
        handle.seek(data_start + BLOCK)  # block 1's bytes lost, its entry kept
        handle.write(bytes(BLOCK))
        sampled = data_start + 3 * BLOCK + (64 << 10)  # block 3: one sampled byte changed
        handle.seek(sampled)
        changed = handle.read(1)[0] ^ 0xFF
        handle.seek(sampled)
        handle.write(bytes([changed]))
    os.sync()
    if in_memory:
        path.read_bytes()
    else:
        drop_kernel_cache(path)
    with mount_with(server, tmp_path, "m", cache) as mount:
        listed(mount)
        server.clear_requests()
        assert read_in_blocks(archive_of(mount), 8192) == original
        assert len(downloads(server)) >= 1
    assert held_blocks(cache) == blocks_of(original)  # the damaged ones, stored again


def test_a_file_of_another_archive_in_its_place_is_not_served(server, tmp_path, original):
    cache = tmp_path / "cache"
    cached_fully(server, tmp_path, cache, original)
    [path] = archive_files(cache)
    with open(path, "r+b") as handle:
        handle.seek(HEADER.size)
        handle.write(b"X")  # the label: another archive's id
    with mount_with(server, tmp_path, "m", cache) as mount:
        listed(mount)
        server.clear_requests()
        assert read_in_blocks(archive_of(mount), BLOCK) == original
        assert len(downloads(server)) >= 1


def test_a_mount_killed_mid_read_leaves_no_block_that_reads_wrong(server, tmp_path, original):
    """SIGKILL while blocks are being stored: the next mount serves exact bytes, from what
    the first one finished and from the server."""
    cache = tmp_path / "cache"
    mount = mount_with(server, tmp_path, "killed", cache)
    with mount:
        handle = open(archive_of(mount), "rb", buffering=0)  # noqa: SIM115 (closed below)
        try:
            handle.read(5 * BLOCK)
            mount.process.send_signal(signal.SIGKILL)
            mount.process.wait(10)
        finally:
            with contextlib.suppress(OSError):  # the mount is dead: ENOTCONN
                handle.close()
    with mount_with(server, tmp_path, "after", cache) as mount:
        drop_kernel_cache(archive_of(mount))
        assert read_in_blocks(archive_of(mount), 8192) == original
        assert read_in_blocks(archive_of(mount), 3 * BLOCK + 1) == original


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
                for index in reversed(range(4)):  # jumps: no read-ahead to the file's end
                    handle.seek(index * BLOCK)
                    assert handle.read(BLOCK) == original[index * BLOCK : (index + 1) * BLOCK]
            assert wait_for(lambda: held_blocks(tmp_path / "cache") >= 4)
            [cached] = archive_files(tmp_path / "cache")
            assert map_of(cached)[1][-1] == (0, 0)  # the last block is not on disk
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


def test_archive_files_no_reader_holds_close_their_descriptors(tmp_path):
    """A mount reads many archives over its life: the cache files of those no reader holds
    any more must not keep descriptors open (EMFILE after a few hundred archives)."""
    import gc

    from lrrfs.library.archivecache import ArchiveFiles
    from lrrfs.library.diskcache import DiskCache

    disk = DiskCache(tmp_path / "cache", 1 << 30)
    try:
        files = ArchiveFiles(disk)
        before = len(os.listdir("/proc/self/fd"))
        held = files.open("a" * 40, 3 * BLOCK)
        for index in range(50):
            assert files.open(f"{index:040x}", 3 * BLOCK) is not None
        gc.collect()
        assert len(os.listdir("/proc/self/fd")) - before <= 2  # the held one's only
        assert held is not None and not held.held(0)
    finally:
        disk.close()


def test_a_block_found_damaged_meanwhile_is_not_served(tmp_path):
    """A worker reads a block while another thread finds it damaged and unmarks it: the
    worker's check must fail too (a blank entry is no fingerprint to match)."""
    from lrrfs.library.archivecache import CachedArchive, DamagedBlock

    size = 2 * BLOCK + 5
    archive = CachedArchive(tmp_path / "file", "a" * 40 + f"-{size}", size)
    try:
        data = mmap.mmap(-1, 2 * BLOCK)  # page-aligned, as the reader's buffers
        data[:] = os.urandom(2 * BLOCK)
        archive.write(0, memoryview(data))
        archive.commit()
        view = memoryview(mmap.mmap(-1, BLOCK))
        archive.read(0, view)
        assert view == data[:BLOCK] and archive.read_cached(7, view[:100])
        archive._forget(1)  # what another thread does on finding block 1 damaged
        with pytest.raises(DamagedBlock):
            archive.read(1, view)
        assert not archive.read_cached(BLOCK, view[:100])
    finally:
        archive.close()
