"""The benchmark's archive file rows: lrrfs against curl, a minimal pyfuse3 file system
(the floor), local copies and `rclone mount` (the peer), in the same run.

    .venv/bin/python -m tests.benchmark --archive   # only these rows
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

from .benchmark import Mounts, Row, best_alternated, best_of, ratio_row, run, timed
from .conftest import PYTHON, Mount, Server, wait_for
from .peer import delayed, nginx, program, rclone_mount
from .test_archive_cache import drop_kernel_cache
from .test_large import peak_rss_mb

SMALL = 8192  # zathura's read size
SMALL_READ_TOTAL = 64 << 20
READER_PAGES = 10  # pages a comic reader opens first


def curl_time(server: Server, arcid: str) -> float:
    """`curl -o /dev/null` of the download URL: the fastest client of the server."""
    curl = program("curl", "curl")
    command = [curl, "-sSf", "-o", "/dev/null", "-H", "@-", download_url(server, arcid)]
    headers = auth_headers(server)  # on stdin: the key never in a command line
    return timed(lambda: subprocess.run(command, input=headers, check=True))


def download_url(server: Server, arcid: str) -> str:
    return f"{server.url}/api/archives/{arcid}/download"


def auth_headers(server: Server) -> bytes:
    """The request headers curl needs, one per line (`curl -H @-`)."""
    if not server.key:
        return b"X-No-Key: 1\n"
    token = base64.b64encode(server.key.encode()).decode()
    return f"Authorization: Bearer {token}\n".encode()


def cat_time(path: Path) -> float:
    return timed(lambda: run(["cat", str(path)]))


def small_reads_time(path: Path, total: int = SMALL_READ_TOTAL) -> float:
    """Reading the first `total` bytes in 8 KiB calls, as zathura reads a cbz."""

    def job() -> None:
        with open(path, "rb", buffering=0) as handle:
            left = total
            while left > 0 and (chunk := handle.read(SMALL)):
                left -= len(chunk)

    return timed(job)


def reader_open_time(path: Path, local: Path) -> float:
    """A comic reader opening a cbz: the zip's directory, then its first pages, in 8 KiB
    reads (the places are taken from the local copy)."""
    with zipfile.ZipFile(local) as archive:
        members = archive.infolist()[:READER_PAGES]
    size = local.stat().st_size

    def read_span(handle, start: int, length: int) -> None:
        handle.seek(start)
        while length > 0 and (chunk := handle.read(min(SMALL, length))):
            length -= len(chunk)

    def job() -> None:
        with open(path, "rb", buffering=0) as handle:
            tail = min(size, 64 << 10)
            read_span(handle, size - tail, tail)  # the end record and the directory
            for member in members:
                read_span(handle, member.header_offset, 64 + member.compress_size)

    return timed(job)


def floor_cat_time(local: Path, workdir: Path) -> float:
    """`cat` of the archive through tests/memfs.py (bytes in memory, the same FUSE settings
    as lrrfs's archive file): the fastest a Python FUSE file system reads it here."""
    folder = workdir / "floor-archive"
    folder.mkdir(exist_ok=True)
    if not (folder / local.name).exists():
        os.link(local, folder / local.name)
    path = workdir / "mnt-floor-archive"
    path.mkdir(exist_ok=True)

    def once() -> float:
        process = subprocess.Popen([PYTHON, "-m", "tests.memfs", str(folder), str(path)],
                                   cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
        with Mount(path, process, workdir / "mnt-floor-archive.log"):
            if not wait_for(lambda: os.path.ismount(path), 60):
                raise RuntimeError("tests.memfs did not mount")
            return cat_time(path / local.name)

    return best_of(3, once)


def ceiling_cat_time(server: Server, arcid: str, local: Path, workdir: Path) -> float:
    """`cat` of the archive through tests/curlfs.py: curl downloads it while a minimal
    pyfuse3 file system serves what has arrived (the same FUSE settings as lrrfs's
    archive file). The most a Python FUSE file system serving a download can reach here."""
    path = workdir / "mnt-ceiling"
    path.mkdir(exist_ok=True)
    program("curl", "curl")
    size = str(local.stat().st_size)

    def once() -> float:
        process = subprocess.Popen(
            [PYTHON, "-m", "tests.curlfs", download_url(server, arcid), size, local.name,
             str(path)], stdin=subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        assert process.stdin is not None
        process.stdin.write(auth_headers(server))
        process.stdin.close()
        with Mount(path, process, workdir / "mnt-ceiling.log"):
            if not wait_for(lambda: os.path.ismount(path), 60):
                raise RuntimeError("tests.curlfs did not mount")
            return cat_time(path / local.name)

    return best_of(3, once)


def archive_rows(
    server: Server, mounts: Mounts, workdir: Path, latency: int, big_mb: int, arcid: str
) -> Iterator[Row]:
    local = server.library / "Big.zip"
    yield from cat_rows(server, mounts, workdir, latency, big_mb, arcid, local)
    yield from small_read_rows(server, mounts, workdir, latency, local)
    yield memory_row(server, mounts, latency, local)


def cat_rows(server, mounts, workdir, latency, big_mb, arcid, local) -> Iterator[Row]:
    size_mb = local.stat().st_size / 1e6
    cache = mounts.cache_dir()

    def cold_cat() -> float:
        shutil.rmtree(cache, ignore_errors=True)
        with mounts.mount(server, cache) as mounted:
            path = mounted.path / "Big" / "Big.zip"
            path.stat()
            return cat_time(path)

    mine, curl = (
        size_mb / t for t in best_alternated(3, cold_cat, lambda: curl_time(server, arcid))
    )
    floor = size_mb / floor_cat_time(local, workdir)
    ceiling = size_mb / ceiling_cat_time(server, arcid, local, workdir)
    lower = min(curl, floor)
    yield Row(f"`cat` of a {big_mb} MB archive, cold, vs `curl -o /dev/null` of its URL and "
              "vs the pyfuse3 floor", latency, f"{mine:.0f} MB/s",
              f"curl {curl:.0f}, floor {floor:.0f} MB/s",
              f"{mine / curl:.2f}x curl, {mine / floor:.2f}x floor",
              ">= 0.85x the lower", "yes" if mine >= 0.85 * lower else "NO")  # fmt: skip
    yield Row("(ceiling) the same `cat` through the floor fed by curl: a minimal pyfuse3 "
              "file system serving the download as curl writes it", latency,
              f"{mine:.0f} MB/s", f"{ceiling:.0f} MB/s ({ceiling / curl:.2f}x curl)",
              f"{mine / ceiling:.2f}x", "-", "-")  # fmt: skip

    def remount_cat() -> tuple[float, int]:
        """`cat` through a new mount: its time, and the downloads it asked for."""
        with mounts.mount(server, cache) as mounted:
            path = mounted.path / "Big" / "Big.zip"
            path.stat()
            server.clear_requests()
            took = cat_time(path)
            return took, sum(r["path"].endswith("/download") for r in server.requests())

    # A cold `cat` at full speed may outrun the disk's writer (blocks not kept), and blocks
    # stored since went to the disk only (direct I/O): new mounts `cat` it until one asks
    # for nothing; the whole cache file was read lately then, as the row says.
    for _ in range(4):
        if remount_cat()[1] == 0:
            break
    new_mount, asked = min(remount_cat() for _ in range(3))
    with mounts.mount(server, cache) as mounted:
        path = mounted.path / "Big" / "Big.zip"
        cat_time(path)
        same_mount = best_of(3, lambda: cat_time(path))
    local_cat = best_of(3, lambda: cat_time(local))
    yield ratio_row("`cat` of it again, same mount, vs `cat` of a local copy", latency,
                    same_mount, local_cat, "ms", "<= 1.5x")  # fmt: skip
    floor_ms = size_mb / floor * 1000
    yield ratio_row(f"`cat` of it again, new mount, best of 3 (disk cache in the kernel's "
                    f"cache, as a local file read lately; {asked} requests; the floor: "
                    f"{floor_ms:.0f} ms), vs `cat` of a local copy", latency, new_mount,
                    local_cat, "ms", "<= 1.5x")  # fmt: skip
    yield ratio_row("`cat` of it again, new mount, both from the disk (the kernel's caches "
                    "of the cache file and of the local copy dropped first)", latency,
                    *from_the_disk(mounts, server, cache, local), "ms", "<= 1.5x")  # fmt: skip


def from_the_disk(mounts, server, cache: Path, local: Path) -> tuple[float, float]:
    """`cat` through a new mount and of the local copy, each file's pages read from the
    disk: what a mount reading an archive not read for long costs against a local copy."""

    def mine() -> float:
        with mounts.mount(server, cache) as mounted:
            path = mounted.path / "Big" / "Big.zip"
            path.stat()
            for stored in cache.glob("*/v1/archive/*/*"):
                drop_kernel_cache(stored)
            return cat_time(path)

    def theirs() -> float:
        drop_kernel_cache(local)
        return cat_time(local)

    return best_alternated(3, mine, theirs)


def small_read_rows(server, mounts, workdir, latency, local) -> Iterator[Row]:
    total = min(SMALL_READ_TOTAL, local.stat().st_size)
    mb = total >> 20
    with mounts.mount(server) as mounted:
        path = mounted.path / "Big" / "Big.zip"
        path.stat()
        cold = small_reads_time(path, total)
        again = best_of(3, lambda: small_reads_time(path, total))
    with mounts.mount(server) as mounted:
        path = mounted.path / "Big" / "Big.zip"
        path.stat()
        opening = reader_open_time(path, local)
    drop_kernel_cache(local)
    local_cold = small_reads_time(local, total)
    local_again = best_of(3, lambda: small_reads_time(local, total))
    with nginx(server.library, workdir) as plain, delayed(plain, latency) as url:
        with rclone_mount(url, workdir, "cold") as peer:
            peer_cold = small_reads_time(peer / "Big.zip", total)
            peer_again = best_of(3, lambda: small_reads_time(peer / "Big.zip", total))
        with rclone_mount(url, workdir, "open") as peer:
            peer_opening = reader_open_time(peer / "Big.zip", local)
    yield ratio_row(f"8 KiB reads of {mb} MB of it, cold, vs rclone mount (VFS cache full)",
                    latency, cold, peer_cold, "ms", "<= 1.0x")  # fmt: skip
    yield ratio_row(f"8 KiB reads of the same {mb} MB again vs a local copy", latency,
                    again, local_again, "ms", "<= 3x")  # fmt: skip
    yield Row(f"(peer) rclone mount: 8 KiB reads of {mb} MB cold / again vs a local copy",
              latency, "-", f"{peer_cold * 1000:.0f} / {peer_again * 1000:.0f} ms",
              f"{peer_cold / local_cold:.1f}x / {peer_again / local_again:.1f}x time (local "
              f"{local_cold * 1000:.0f} / {local_again * 1000:.0f} ms)", "-", "-")  # fmt: skip
    yield ratio_row(f"a comic reader's open (8 KiB reads: directory, {READER_PAGES} pages), "
                    "cold, vs rclone mount", latency, opening, peer_opening, "ms",
                    "<= 1.0x")  # fmt: skip


def memory_row(server, mounts, latency, local) -> Row:
    """Peak memory of a mount reading 2 GB of archive: from the server, then the disk."""
    with mounts.mount(server) as mounted:
        path = mounted.path / "Big" / "Big.zip"
        total = 0
        while total < 2e9:
            drop_kernel_cache(path)
            run(["cat", str(path)])
            total += local.stat().st_size
        peak = peak_rss_mb(mounted.process.pid)
    return Row(f"peak memory while reading {total / 1e9:.1f} GB of archive (server, then disk)",
               latency, f"{peak:.0f} MB RSS", "-", "-", "< 300 MB",
               "yes" if peak < 300 else "NO")  # fmt: skip
