"""Mounting and unmounting as a user does it, the API key, and following the server."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from lrrfs.testserver.samples import make_archive

from .conftest import (
    KEY,
    PYTHON,
    archive_names,
    mount_env,
    start_mount,
    start_server,
    wait_for,
)


@pytest.fixture(scope="module")
def small_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    library = tmp_path_factory.mktemp("small-library")
    for index in range(3):
        make_archive(library / f"Book {index}.zip", 3, page_bytes=5000)
    return library


@pytest.fixture
def small_server(small_library, tmp_path):
    with start_server(small_library, tmp_path) as running:
        yield running


def lrrfs(*args: str, key: str | None = KEY, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "lrrfs", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=mount_env(key),
    )


def processes_serving(mountpoint: Path) -> list[int]:
    """PIDs whose command line names the mount point (read from /proc, not pkill)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(mountpoint).encode() in cmdline.split(b"\0"):
                found.append(int(entry.name))
    return found


def test_mount_returns_once_mounted_and_umount_ends_it(small_server, tmp_path):
    mountpoint = tmp_path / "lrr"
    mountpoint.mkdir()
    done = lrrfs("mount", small_server.url, str(mountpoint), "--log-file", str(tmp_path / "log"))
    try:
        assert done.returncode == 0, done.stderr
        assert os.path.ismount(mountpoint)
        assert archive_names(mountpoint) == ["Book 0", "Book 1", "Book 2"]
        assert lrrfs("umount", str(mountpoint)).returncode == 0
        assert not os.path.ismount(mountpoint)
        assert wait_for(lambda: not processes_serving(mountpoint))
    finally:
        if os.path.ismount(mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


def test_unreachable_server_fails_at_once_leaving_no_mount(tmp_path):
    mountpoint = tmp_path / "lrr"
    mountpoint.mkdir()
    started = time.monotonic()
    done = lrrfs("mount", "http://127.0.0.1:9", str(mountpoint), "--timeout", "5")
    assert done.returncode != 0
    assert "cannot mount http://127.0.0.1:9" in done.stderr
    assert time.monotonic() - started < 15
    assert not os.path.ismount(mountpoint)


def test_a_url_where_no_lanraragi_answers_says_so(small_server, tmp_path):
    mountpoint = tmp_path / "lrr"
    mountpoint.mkdir()
    done = lrrfs("mount", f"{small_server.url}/nope", str(mountpoint))
    assert done.returncode != 0
    assert f"no LANraragi server answers at {small_server.url}/nope" in done.stderr
    assert "such as http://nas:3000" in done.stderr
    assert not os.path.ismount(mountpoint)


def test_a_rejected_key_fails_the_mount_with_a_clear_message(small_server, tmp_path):
    mountpoint = tmp_path / "lrr"
    mountpoint.mkdir()
    done = lrrfs("mount", small_server.url, str(mountpoint), key="not-the-key")
    assert done.returncode != 0
    assert "rejected the API key" in done.stderr
    assert "not-the-key" not in done.stderr
    assert not os.path.ismount(mountpoint)


def test_without_a_key_everything_readable_works(small_server, tmp_path):
    with start_mount(small_server, tmp_path / "lrr", key=None) as mount:
        folder = mount.path / "Book 1"
        assert (folder / "001.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
        # Nothing can be saved without a key, and the mode bits say so.
        assert stat.S_IMODE(os.stat(mount.path).st_mode) == 0o555
        assert stat.S_IMODE(folder.stat().st_mode) == 0o555
        assert stat.S_IMODE((folder / "metadata.json").stat().st_mode) == 0o444
        with pytest.raises(PermissionError):
            (folder / "metadata.json").write_text("{}")
        with pytest.raises(PermissionError):
            (folder / "scratch.txt").write_text("x")
        assert "saving needs the server's API key" in mount.log_text()
        assert (folder / "Book 1.zip").read_bytes() == (
            small_server.library / "Book 1.zip"
        ).read_bytes()


def test_the_key_file_and_the_key_never_show(small_server, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    mountpoint = tmp_path / "lrr"
    mount = start_mount(
        small_server, mountpoint, key=None, args=("--api-key-file", str(key_file), "-v")
    )
    try:
        (mountpoint / "Book 0" / "002.png").read_bytes()
        cmdlines = [
            Path(f"/proc/{pid}/cmdline").read_bytes() for pid in processes_serving(mountpoint)
        ]
    finally:
        mount.unmount()
    secrets = [KEY.encode(), base64.b64encode(KEY.encode())]
    assert cmdlines
    for text in [*cmdlines, mount.log.read_bytes()]:
        assert not any(secret in text for secret in secrets)
    assert b"HTTP Request" in mount.log.read_bytes()  # -v did log the requests


def test_a_key_file_readable_by_others_is_warned_about(small_server, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    key_file.chmod(0o644)
    mountpoint = tmp_path / "lrr"
    mountpoint.mkdir()
    done = lrrfs("mount", small_server.url, str(mountpoint), "--api-key-file", str(key_file))
    try:
        assert done.returncode == 0
        assert "readable by other users" in done.stderr
    finally:
        lrrfs("umount", str(mountpoint))


def test_new_archives_appear_and_deleted_ones_go_within_the_refresh_interval(
    small_server, tmp_path
):
    mount = start_mount(small_server, tmp_path / "lrr")  # refresh interval: 2 s
    added = small_server.library / "Late Arrival.zip"
    try:
        assert "Late Arrival" not in os.listdir(mount.path)
        make_archive(added, 2, page_bytes=4000)
        assert wait_for(lambda: "Late Arrival" in os.listdir(mount.path), timeout=15)
        assert len(os.listdir(mount.path / "Late Arrival")) == 5  # 2 pages + 3 files
        added.unlink()
        assert wait_for(lambda: "Late Arrival" not in os.listdir(mount.path), timeout=15)
        assert not (mount.path / "Late Arrival").exists()
    finally:
        added.unlink(missing_ok=True)
        mount.unmount()


def test_sigterm_unmounts_cleanly(small_server, tmp_path):
    with start_mount(small_server, tmp_path / "lrr") as mount:
        os.listdir(mount.path / "Book 2")
        mount.process.send_signal(signal.SIGTERM)
        assert mount.process.wait(20) == 0
        assert not os.path.ismount(mount.path)


def test_a_dead_mount_is_cleared_by_the_next_mount(small_server, tmp_path):
    mount = start_mount(small_server, tmp_path / "lrr")
    mount.process.kill()
    mount.process.wait()
    with pytest.raises(OSError):
        os.listdir(mount.path)  # Transport endpoint is not connected
    again = start_mount(small_server, mount.path)
    try:
        assert "cleared a dead mount" in again.log_text()
        assert archive_names(again.path)[:1] == ["Book 0"]
    finally:
        again.unmount()
        mount.unmount()


def test_thumbnail_placeholder_then_the_real_one(small_library, tmp_path):
    library = tmp_path / "library"
    shutil.copytree(small_library, library)
    slow = start_server(library, tmp_path, extra=("--thumbnail-delay", "6"))
    mount = start_mount(slow, tmp_path / "lrr", args=("--thumbnail-wait", "1"))
    try:
        thumbnail = mount.path / "Book 0" / "thumbnail.jpg"
        first = thumbnail.read_bytes()
        assert first[:4] == b"\x89PNG"  # the server's placeholder, after a bounded wait
        assert len(first) == thumbnail.stat().st_size
        # The server finishes its job; a later look shows the real cover.
        assert wait_for(lambda: thumbnail.read_bytes()[:3] == b"\xff\xd8\xff", timeout=30)
        assert len(thumbnail.read_bytes()) == thumbnail.stat().st_size
    finally:
        mount.unmount()
        slow.stop()
