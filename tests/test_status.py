"""`lrrfs status`: what a real mount reports through its status file, and how a dead or stuck
mount shows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lrrfs.status import status_name
from lrrfs.testserver.samples import make_archive

from .conftest import KEY, Server, start_server, wait_for
from .test_config import MIB, foreground_mount, lrrfs_env, run_lrrfs, secrets_of, status_json


@pytest.fixture(scope="module")
def status_server(tmp_path_factory: pytest.TempPathFactory):
    library = tmp_path_factory.mktemp("status-library")
    for index in range(4):
        make_archive(library / f"Volume {index}.zip", 3, page_bytes=30_000)
    with start_server(library, tmp_path_factory.mktemp("status-server")) as running:
        yield running


def status_file(env: dict[str, str], mountpoint: Path) -> Path:
    return Path(env["XDG_RUNTIME_DIR"]) / "lrrfs" / status_name(mountpoint)


def mount_args(server: Server, mountpoint: Path, *extra: str) -> list[str]:
    return [server.url, str(mountpoint), "--memory-cache", "32", *extra]


def test_status_shows_the_server_archives_cache_and_requests(
    status_server: Server, tmp_path: Path
) -> None:
    env = lrrfs_env(tmp_path, LRR_API_KEY=KEY)
    mountpoint = tmp_path / "lrr"
    with foreground_mount(mount_args(status_server, mountpoint), mountpoint, env):
        status_server.clear_requests()
        for index in range(4):
            (mountpoint / f"Volume {index}" / "001.jpg").read_bytes()
        served = [r for r in status_server.requests() if r["path"].startswith("/api/")]
        time.sleep(2.5)  # one more write of the status file
        state = status_json(mountpoint, env)
        assert state["state"] == "ok"
        assert state["server"] == status_server.url
        assert (state["server_name"], state["server_version"]) == ("LANraragi", "0.9.81")
        assert state["archives"] == 4
        assert state["cache_max_bytes"] == 32 * MIB
        assert state["disk_cache_max_bytes"] == 4 << 30 and state["disk_cache_bytes"] >= 0
        assert state["cache_bytes"] >= 4 * 30_000  # the four pages read
        assert state["in_flight"] == 0
        assert state["errors"] == 0
        assert state["pid"] == foreground_pid(mountpoint, env)
        # the counter holds the mount's requests: those before the reads, and the reads
        assert state["requests"] >= len(served) > 0
        table = run_lrrfs("status", env=env)
        assert table.returncode in (0, 1)  # 1 if some other lrrfs mount on this machine is sick
        header, *rows = table.stdout.splitlines()
        assert header.split()[:3] == ["MOUNTPOINT", "SERVER", "VERSION"]
        row = next(r for r in rows if r.startswith(f"{mountpoint} "))
        assert row.split()[1:4] == [status_server.url, "LANraragi", "0.9.81"]
        assert row.split()[-1] == "ok"


def foreground_pid(mountpoint: Path, env: dict[str, str]) -> int:
    return json.loads(status_file(env, mountpoint).read_text())["pid"]


def test_the_file_is_rewritten_while_mounted_and_removed_at_unmount(
    status_server: Server, tmp_path: Path
) -> None:
    env = lrrfs_env(tmp_path, LRR_API_KEY=KEY)
    mountpoint = tmp_path / "lrr"
    path = status_file(env, mountpoint)
    with foreground_mount(mount_args(status_server, mountpoint), mountpoint, env) as mount:
        first = json.loads(path.read_text())
        assert first["pid"] == mount.process.pid
        assert oct(path.parent.stat().st_mode & 0o777) == oct(0o700)
        assert wait_for(lambda: json.loads(path.read_text())["updated"] > first["updated"], 6)
        text = path.read_bytes()
        assert not any(secret in text for secret in secrets_of())
        assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert mount.process.returncode == 0
    assert not path.exists()


def test_a_killed_mount_shows_as_dead(status_server: Server, tmp_path: Path) -> None:
    env = lrrfs_env(tmp_path, LRR_API_KEY=KEY)
    mountpoint = tmp_path / "lrr"
    with foreground_mount(mount_args(status_server, mountpoint), mountpoint, env) as mount:
        mount.process.send_signal(signal.SIGKILL)
        mount.process.wait(10)
        state = status_json(mountpoint, env)
        assert state["state"] == "dead"
        table = run_lrrfs("status", str(mountpoint), env=env)
        assert table.returncode == 1
        assert "its lrrfs process is gone" in table.stdout
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


def test_a_stopped_process_shows_as_not_responding_then_ok_again(
    status_server: Server, tmp_path: Path
) -> None:
    env = lrrfs_env(tmp_path, LRR_API_KEY=KEY)
    mountpoint = tmp_path / "lrr"
    path = status_file(env, mountpoint)
    with foreground_mount(mount_args(status_server, mountpoint), mountpoint, env) as mount:
        os.kill(mount.process.pid, signal.SIGSTOP)
        try:
            state = json.loads(path.read_text())
            state["updated"] -= 60  # as if a minute had passed without a write
            path.write_text(json.dumps(state))
            assert status_json(mountpoint, env)["state"] == "not responding"
            assert run_lrrfs("status", str(mountpoint), env=env).returncode == 1
        finally:
            os.kill(mount.process.pid, signal.SIGCONT)
        assert wait_for(lambda: status_json(mountpoint, env)["state"] == "ok", 10)


def test_a_folder_that_is_no_lrrfs_mount(tmp_path: Path) -> None:
    done = run_lrrfs("status", str(tmp_path), env=lrrfs_env(tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip() == f"lrrfs: {tmp_path} is not an lrrfs mount"


def test_a_background_mount_writes_its_status_under_tmp_without_a_runtime_dir(
    status_server: Server, tmp_path: Path
) -> None:
    env = lrrfs_env(tmp_path, LRR_API_KEY=KEY)
    del env["XDG_RUNTIME_DIR"]  # as under mount(8) at boot
    mountpoint = tmp_path / "lrr"
    mountpoint.mkdir()
    args = mount_args(status_server, mountpoint, "--log-file", str(tmp_path / "log"))
    done = run_lrrfs("mount", *args, env=env)
    assert done.returncode == 0, done.stderr
    try:
        path = Path(f"/tmp/lrrfs-{os.getuid()}") / status_name(mountpoint)
        assert path.exists()
        state = status_json(mountpoint, lrrfs_env(tmp_path))  # a session with a runtime dir
        assert state["state"] == "ok"
        assert state["pid"] != os.getpid()
    finally:
        assert run_lrrfs("umount", str(mountpoint), env=env).returncode == 0
    assert wait_for(lambda: not path.exists())


def test_a_thumbnailer_pass_costs_one_request_per_page_once(
    status_server: Server, tmp_path: Path
) -> None:
    """The figure in docs/guide.md: a file manager making thumbnails of a folder fetches
    each page once at most (whatever it reads of it; a zip's pages come several to a
    request); looking again costs nothing. The status counter agrees with the server.
    Without lrrfs's own thumbnails (--no-thumbnails): what the file manager costs by itself."""
    env = lrrfs_env(tmp_path, LRR_API_KEY=KEY)
    mountpoint = tmp_path / "lrr"
    args = mount_args(status_server, mountpoint, "--no-thumbnails")
    with foreground_mount(args, mountpoint, env):
        folder = mountpoint / "Volume 2"
        before = status_json(mountpoint, env)["requests"]
        status_server.clear_requests()
        served: list[str] = []
        for look in range(2):
            for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                entry.stat()
                if entry.name[0].isdigit():
                    with open(entry.path, "rb") as page:
                        page.read(65536)  # a thumbnailer's first look
            paths = [r["path"] for r in status_server.requests() if r["path"].startswith("/api/")]
            assert look == 0 or paths == [], paths  # looking again costs nothing
            served += paths
            status_server.clear_requests()
        # The page API or Range reads of the archive file (one of them: the zip's directory)
        pages = [p for p in served if "/page" in p or "path=" in p or p.endswith("/download")]
        assert 2 <= len(pages) <= 3 + 1, served  # three pages, each fetched once at most
        cover = [p for p in served if "thumbnail" in p or "/minion/" in p]  # its job, polled
        listing = sorted(set(served) - set(pages) - set(cover))
        assert len(listing) == len(served) - len(pages) - len(cover) <= 2, served
        assert wait_for(lambda: status_json(mountpoint, env)["requests"] - before == len(served), 6)


def test_a_rejected_save_shows_in_status_and_on_the_desktop(
    status_server: Server, tmp_path: Path
) -> None:
    """Why a save failed reaches the user where they look: `lrrfs status` (errors counted,
    the last problems with their archive) and a desktop notification (notify-send)."""
    programs = tmp_path / "bin"
    programs.mkdir()
    shown = tmp_path / "notifications"
    notify_send = programs / "notify-send"  # records what it would have shown
    notify_send.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{shown}"\n')
    notify_send.chmod(0o755)
    env = lrrfs_env(
        tmp_path,
        LRR_API_KEY=KEY,
        DBUS_SESSION_BUS_ADDRESS="unix:path=/nonexistent",
        PATH=f"{programs}:{os.environ['PATH']}",
    )
    mountpoint = tmp_path / "lrr"
    with foreground_mount(mount_args(status_server, mountpoint), mountpoint, env):
        document = mountpoint / "Volume 2" / "metadata.json"
        with pytest.raises(OSError), open(document, "w") as handle:
            handle.write('{"title": "x",,}')
        assert wait_for(lambda: status_json(mountpoint, env)["errors"] >= 1, timeout=10)
        problem = status_json(mountpoint, env)["problems"][-1]
        assert problem["what"] == "saving metadata.json of 'Volume 2'"
        assert "invalid JSON at line 1, column 15" in problem["error"]
        table = run_lrrfs("status", env=env).stdout
        assert "failed: saving metadata.json of 'Volume 2': invalid JSON" in table
        assert wait_for(lambda: shown.exists() and "invalid JSON" in shown.read_text(), 10)
        assert "lrrfs: saving metadata.json of 'Volume 2' failed" in shown.read_text()
        document.unlink()  # back to the server's version
