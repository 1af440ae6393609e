"""A large archive streams through the mount with flat memory and exact bytes."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from lrrfs.testserver.samples import make_archive

from .conftest import start_mount, start_server

ARCHIVE_MB = 400
PEAK_RSS_LIMIT_MB = 200


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def large_server(tmp_path_factory):
    library = tmp_path_factory.mktemp("large")
    make_archive(library / "Big.zip", ARCHIVE_MB // 2, page_bytes=2_000_000)
    with start_server(library, tmp_path_factory.mktemp("large-server")) as server:
        yield server


def test_rsync_of_a_large_archive_is_exact_with_flat_memory(large_server, tmp_path):
    with start_mount(large_server, tmp_path / "lrr") as mount:
        source = mount.path / "Big" / "Big.zip"
        assert source.stat().st_size > (ARCHIVE_MB - 10) * 1_000_000
        subprocess.run(["rsync", "-a", str(source), str(tmp_path / "Big.zip")], check=True)
        peak = peak_rss_mb(mount.process.pid)
    assert sha256_file(tmp_path / "Big.zip") == sha256_file(large_server.library / "Big.zip")
    assert peak < PEAK_RSS_LIMIT_MB, f"mount process peaked at {peak:.0f} MB"


def test_random_reads_of_a_large_archive_return_the_right_bytes(large_server, tmp_path):
    mount = start_mount(large_server, tmp_path / "lrr")
    original = large_server.library / "Big.zip"
    size = original.stat().st_size
    offsets = [0, size - 1000, size // 2, 12345, size // 3, size // 2 + 7, size - 1]
    try:
        with open(mount.path / "Big" / "Big.zip", "rb") as mounted, open(original, "rb") as local:
            for offset in offsets:
                for handle in (mounted, local):
                    handle.seek(offset)
                assert mounted.read(300_000) == local.read(300_000), offset
    finally:
        mount.unmount()
