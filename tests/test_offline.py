"""Offline: a mount reads its disk cache while the server cannot be reached, fails what is not
cached at once, and comes back online by itself. Real mounts, a real test server stopped,
restarted, made to hang; a name that stops resolving (kept on loopback: see the DNS test).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from lrrfs.library.diskcache import DiskCache, server_folder_name
from lrrfs.library.views import Views
from lrrfs.testserver.samples import make_archive

from .conftest import KEY, Server, archive_names, launch_mount, served_pages, start_server, wait_for
from .test_config import lrrfs_env, run_lrrfs, status_json
from .test_views import arcid_of

TIMEOUT = 5.0  # --timeout of the mounts here: an uncached call offline must not wait for it
PROBE = 1.0  # --probe-interval: the most between two looks for the server
ONLINE_WITHIN = 30.0  # a deadline to wait on (not a claim): the probe needs ~PROBE
PAGES = 4


@pytest.fixture
def library(tmp_path: Path) -> Path:
    library = tmp_path / "library"
    for title in ("Warm One", "Warm Two", "Cold"):
        make_archive(library / f"{title}.zip", PAGES, page_bytes=20_000)
    return library


def warm(server: Server, env: dict[str, str], cache: Path, *patterns: str, url: str = "") -> str:
    done = run_lrrfs(
        "cache", "warm", url or server.url, *patterns, "--cache-dir", str(cache), env=env,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stderr


def mount_offline_capable(
    url: str, mountpoint: Path, cache: Path, env: dict[str, str], *extra: str
):
    command = [
        "python3", "-m", "lrrfs", "mount", "-f", url, str(mountpoint), "--cache-dir", str(cache),
        "--timeout", str(TIMEOUT), "--probe-interval", str(PROBE), "--refresh-interval", "2",
        *extra,
    ]  # fmt: skip
    import sys

    command[0] = sys.executable
    return launch_mount(command, mountpoint, env)


def page_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name[:3].isdigit())


def timed_error(call) -> tuple[OSError, float]:
    started = time.monotonic()
    with pytest.raises(OSError) as failure:
        call()
    return failure.value, time.monotonic() - started


def thumbnail_of(server: Server, title: str) -> bytes:
    arcid = next(a["arcid"] for a in server.archives() if a["title"] == title)
    return server.get(f"/api/archives/{arcid}/thumbnail").content


def test_a_stopped_server_mounts_offline_from_a_warm_cache_and_comes_back(
    library: Path, tmp_path: Path
) -> None:
    env = lrrfs_env(tmp_path, LRR_API_KEY=KEY)
    cache = tmp_path / "cache"
    server = start_server(library, tmp_path)
    restarted: Server | None = None
    try:
        said = warm(server, env, cache, "Warm *")
        assert "Warm One: 4 pages cached, readable offline" in said and "Cold" not in said
        expected = {t: served_pages(server, t) for t in ("Warm One", "Warm Two")}
        cover = thumbnail_of(server, "Warm One")
        server.stop()

        mountpoint = tmp_path / "lrr"
        with mount_offline_capable(server.url, mountpoint, cache, env) as mount:
            assert archive_names(mountpoint) == ["Cold", "Warm One", "Warm Two"]
            for title, pages in expected.items():
                assert [p.read_bytes() for p in page_files(mountpoint / title)] == pages
            assert (mountpoint / "Warm One" / "thumbnail.jpg").read_bytes() == cover
            shown = json.loads((mountpoint / "Warm One" / "metadata.json").read_bytes())
            assert shown["title"] == "Warm One"
            assert sorted(os.listdir(mountpoint / "@offline")) == ["Warm One", "Warm Two"]
            os.statvfs(mountpoint)

            # Not cached: fails at once, with EHOSTUNREACH (not EIO after the deadline).
            error, elapsed = timed_error(lambda: os.listdir(mountpoint / "Cold"))
            assert error.errno == errno.EHOSTUNREACH
            assert elapsed < TIMEOUT
            print(f"uncached listing while offline failed in {elapsed * 1000:.0f} ms")
            error, _ = timed_error(lambda: os.listdir(mountpoint / "@search" / "Warm"))
            assert error.errno == errno.EHOSTUNREACH
            archive_file = mountpoint / "Warm One" / "Warm One.zip"  # its bytes: not cached
            error, elapsed = timed_error(archive_file.read_bytes)
            assert error.errno == errno.EHOSTUNREACH and elapsed < TIMEOUT
            print(f"uncached read while offline failed in {elapsed * 1000:.0f} ms")

            # A save offline fails clearly and keeps the text, under the usual note.
            target = mountpoint / "Warm Two" / "metadata.json"
            edited = json.dumps({"title": "Renamed Offline", "tags": []}).encode()
            with pytest.raises(OSError) as failure, open(target, "wb") as handle:
                handle.write(edited)
            assert failure.value.errno == errno.EHOSTUNREACH
            text = target.read_bytes()
            assert text.startswith(b"# lrrfs: this text was NOT saved: ") and b"offline" in text
            assert edited in text

            state = status_json(mountpoint, env)
            assert state["online"] is False and "refused" in state["last_error"].lower()
            table = run_lrrfs("status", str(mountpoint), env=env).stdout
            assert "offline (cached files only) since" in table

            # The server comes back, with a new archive: online by itself, no remount.
            make_archive(library / "New Arrival.zip", 2, page_bytes=10_000)
            restarted = server.restart()
            back = time.monotonic()
            assert wait_for(
                lambda: "New Arrival" in archive_names(mountpoint), timeout=ONLINE_WITHIN
            ), mount.log_text()
            print(f"online again {time.monotonic() - back:.1f} s after the server returned")
            assert len(page_files(mountpoint / "Cold")) == PAGES
            assert len(page_files(mountpoint / "New Arrival")) == 2
            assert wait_for(lambda: status_json(mountpoint, env)["online"] is True, timeout=10)
            log = mount.log_text()
            assert log.count("the server cannot be reached") == 1  # said once, not per call
            assert "online (offline for" in log and KEY not in log
    finally:
        server.stop()
        if restarted is not None:
            restarted.stop()


def test_no_cache_fails_to_mount_as_before_and_offline_modes(library: Path, tmp_path: Path):
    env = lrrfs_env(tmp_path, LRR_API_KEY=KEY)
    cache = tmp_path / "cache"
    with start_server(library, tmp_path) as server:
        url, port = server.url, server.port
        said = warm(server, env, cache, "Warm One", "--archives")  # its archive file's blocks too
        assert "Warm One: archive file cached" in said
    mountpoint = tmp_path / "lrr"
    mountpoint.mkdir()
    # No cache: the mount fails as it always did, and says why.
    done = run_lrrfs(
        "mount", url, str(mountpoint), "--cache-dir", str(tmp_path / "empty"), "--timeout", "5",
        env=env,
    )  # fmt: skip
    assert done.returncode == 1
    assert "holds no archive list of this server" in done.stderr and "refused" in done.stderr
    # --no-offline: a cache is not enough.
    done = run_lrrfs(
        "mount", url, str(mountpoint), "--cache-dir", str(cache), "--no-offline", env=env
    )
    assert done.returncode == 1 and "Connect" in done.stderr
    assert not os.path.ismount(mountpoint)
    # -o offline (fstab's form) mounts from the cache without asking anything.
    with start_server(library, tmp_path, port=port) as server:
        server.clear_requests()
        command = [
            "python3", "-m", "lrrfs", "mount", "-f", server.url, str(mountpoint),
            "-o", f"offline,cache_dir={cache},probe_interval=1",
        ]  # fmt: skip
        import sys

        command[0] = sys.executable
        with launch_mount(command, mountpoint, env):
            assert "Warm One" in archive_names(mountpoint)
            assert len(page_files(mountpoint / "Warm One")) == PAGES
            original = (library / "Warm One.zip").read_bytes()
            assert (mountpoint / "Warm One" / "Warm One.zip").read_bytes() == original
            error, _ = timed_error(lambda: os.listdir(mountpoint / "Cold"))
            assert error.errno == errno.EHOSTUNREACH
            time.sleep(2 * PROBE)  # forced offline never probes: nothing reaches the server
            assert server.requests() == []
    both = run_lrrfs("mount", url, str(mountpoint), "-o", "offline,no_offline", env=env)
    assert both.returncode == 1 and "contradict" in both.stderr


def test_a_server_that_hangs_is_offline_at_mount_and_mid_use(library: Path, tmp_path: Path):
    """A server that accepts connections and never answers: at mount, then mid-use."""
    env = lrrfs_env(tmp_path, LRR_API_KEY=KEY)
    cache = tmp_path / "cache"
    hang = [{"match": r"/api/", "action": "hang", "hang_seconds": 300}]
    with start_server(library, tmp_path) as server:
        warm(server, env, cache, "Warm One")
        server.faults(rules=hang)
        mountpoint = tmp_path / "lrr"
        with mount_offline_capable(server.url, mountpoint, cache, env, "--timeout", "2") as mount:
            assert status_json(mountpoint, env)["online"] is False
            assert "no answer within" in status_json(mountpoint, env)["last_error"]
            assert len(page_files(mountpoint / "Warm One")) == PAGES
            error, elapsed = timed_error(lambda: os.listdir(mountpoint / "Cold"))
            assert error.errno == errno.EHOSTUNREACH and elapsed < 2.0
            server.clear_faults()
            assert wait_for(lambda: status_json(mountpoint, env)["online"], ONLINE_WITHIN)
            cold = page_files(mountpoint / "Cold")  # online: lists now
            assert len(cold) == PAGES

            # Mid-use: the server hangs again; repeated timeouts take the mount offline.
            said = mount.log_text().count("the server cannot be reached")
            assert said == 1  # at mount
            server.faults(rules=hang)
            errors: list[int] = []

            def read_uncached() -> bool:
                target = mountpoint / "Warm Two"  # never listed: its page list is not cached
                try:
                    os.listdir(target)
                except OSError as exc:
                    errors.append(exc.errno or 0)
                return errors[-1:] == [errno.EHOSTUNREACH]

            assert wait_for(read_uncached, timeout=60), errors
            assert set(errors) <= {errno.EIO, errno.EHOSTUNREACH}
            assert mount.log_text().count("the server cannot be reached") == said + 1  # once
            server.clear_faults()
            assert wait_for(lambda: lists(mountpoint / "Warm Two"), ONLINE_WITHIN)
            assert len(page_files(mountpoint / "Warm Two")) == PAGES


def lists(folder: Path) -> bool:
    try:
        os.listdir(folder)
    except OSError:
        return False
    return True


def test_a_name_that_no_longer_resolves_mounts_offline(library: Path, tmp_path: Path):
    """The NAS's name resolves at home, not on the train. Traffic stays on loopback: the
    resolver is told to send no query at all (RES_OPTIONS=attempts:0, read by glibc), so
    `lrr-nas.invalid` fails to resolve at once, as it does with no network; the cache that a
    mount of that name left at home is the one warmed through 127.0.0.1, filed under the
    name (its pages are filed by archive, its archive list and server info by URL)."""
    env = lrrfs_env(tmp_path, LRR_API_KEY=KEY, RES_OPTIONS="attempts:0")
    cache = tmp_path / "cache"
    with start_server(library, tmp_path) as server:
        warm(server, env, cache, "Warm One")
        expected = served_pages(server, "Warm One")
        port = server.port
    url = f"http://lrr-nas.invalid:{port}"
    mountpoint = tmp_path / "lrr"
    mountpoint.mkdir()
    done = run_lrrfs("mount", url, str(mountpoint), "--cache-dir", str(cache), env=env)
    assert done.returncode == 1 and "name resolution" in done.stderr  # nothing cached yet
    file_under_name(cache, f"http://127.0.0.1:{port}", url)
    with mount_offline_capable(url, mountpoint, cache, env):
        assert [p.read_bytes() for p in page_files(mountpoint / "Warm One")] == expected
        state = status_json(mountpoint, env)
        assert state["online"] is False and "name resolution" in state["last_error"]
        error, elapsed = timed_error(lambda: os.listdir(mountpoint / "Cold"))
        assert error.errno == errno.EHOSTUNREACH and elapsed < TIMEOUT


def file_under_name(cache: Path, warmed_url: str, url: str) -> None:
    """The cache of `warmed_url`, as a mount of `url` would have left it."""
    source, target = cache / server_folder_name(warmed_url), cache / server_folder_name(url)
    shutil.copytree(source, target, dirs_exist_ok=True)  # the failed mount made it empty
    old, new = DiskCache(source, 1 << 30), DiskCache(target, 1 << 30)
    try:
        for kind, name in (("index", "archives"), ("info", "info")):
            blob = old.get(kind, f"{name} {warmed_url}")
            assert blob is not None, kind
            new.put(kind, f"{name} {url}", blob)
    finally:
        old.close()
        new.close()


def test_warming_a_view_pins_it_past_the_cap_and_cache_show_says_what_is_held(
    library: Path, tmp_path: Path
) -> None:
    """A view warmed whole into a cache capped below its size: nothing being warmed is
    evicted meanwhile (without the pin, eviction would take its first pages)."""
    env = lrrfs_env(tmp_path, LRR_API_KEY=KEY)
    cache = tmp_path / "cache"
    make_archive(library / "Warm Big.zip", 12, page_bytes=200_000)  # ~2.4 MB, over the cap
    with start_server(library, tmp_path) as server:
        done = run_lrrfs(
            "cache", "warm", server.url, "@search/Warm", "--cache-dir", str(cache),
            "--cache-size", "1M", env=env, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        for title, pages in (("Warm Big", 12), ("Warm One", 4), ("Warm Two", 4)):
            assert f"{title}: {pages} pages cached, readable offline" in done.stderr
        assert "Cold" not in done.stderr
        missing = run_lrrfs("cache", "warm", server.url, "@categories/Nothing", env=env)
        assert missing.returncode == 1 and "no view '@categories/Nothing'" in missing.stderr
        server.stop()
        shown = run_lrrfs(
            "cache", "show", server.url, "--cache-dir", str(cache), "--cache-size", "1M", env=env
        )
    assert shown.returncode == 0, shown.stderr
    *rows, total = shown.stdout.splitlines()
    # After the warm, the cache is back under its cap: some of it was evicted then.
    titles = sorted(row.split("  ")[-1].strip() for row in rows)
    assert titles == ["Warm Big", "Warm One", "Warm Two"]
    assert all(re.search(r"MiB +\d+/(4|12) pages +(offline|partly) ", row) for row in rows), rows
    assert re.fullmatch(r"\d+\.\d MiB held of 1\.0 MiB: 3 of 4 archives, .*", total), total


def view_listings(mountpoint: Path) -> dict[str, list[str]]:
    """The views only the server knows, each folder's listing."""
    shown = {}
    for view in ("@categories", "@tankoubons", "@untagged"):
        shown[view] = sorted(os.listdir(mountpoint / view))
    for view in ("@categories", "@tankoubons"):
        for name in shown[view]:
            shown[f"{view}/{name}"] = sorted(os.listdir(mountpoint / view / name))
    return shown


def test_the_servers_own_views_show_offline_as_the_last_refresh_saw_them(
    library: Path, tmp_path: Path
) -> None:
    """@categories (a saved search's result too), @tankoubons and @untagged come from the
    server alone: a mount that starts offline shows them from the disk cache."""
    ids = {path.stem: arcid_of(path) for path in library.glob("*.zip")}
    seed = {
        "archives": {"Cold.zip": {"tags": ["artist:someone"]}},
        "categories": [
            {"id": "SET_1", "name": "Favs", "archives": [ids["Warm One"], ids["Cold"]]},
            {"id": "SET_2", "name": "Warmers", "search": "Warm"},
        ],
        "tankoubons": [
            {"id": "TANK_1", "name": "Series", "archives": [ids["Warm Two"], ids["Warm One"]]}
        ],
    }
    (library / ".lrrfs-server.json").write_text(json.dumps(seed))
    env = lrrfs_env(tmp_path, LRR_API_KEY=KEY)
    cache = tmp_path / "cache"
    mountpoint = tmp_path / "lrr"
    server = start_server(library, tmp_path)
    try:
        with mount_offline_capable(server.url, mountpoint, cache, env):
            online = view_listings(mountpoint)
        server.stop()
        with mount_offline_capable(server.url, mountpoint, cache, env) as mount:
            assert status_json(mountpoint, env)["online"] is False
            assert view_listings(mountpoint) == online, mount.log_text()
    finally:
        server.stop()
    assert online["@categories"] == ["Favs", "Warmers"]
    assert online["@categories/Favs"] == ["Cold", "Warm One"]
    assert online["@categories/Warmers"] == ["Warm One", "Warm Two"]
    assert online["@tankoubons"] == ["Series"] and len(online["@tankoubons/Series"]) == 2
    assert online["@untagged"] == ["Warm One", "Warm Two"]


@pytest.mark.parametrize(
    "saved",
    [
        b"",
        b"not json",
        b"[]",
        b'{"untagged": [1], "categories": [], "found": {}, "tankoubons": null}',
        b'{"untagged": [], "categories": [{"name": "no id"}], "found": {}, "tankoubons": null}',
        b'{"untagged": [], "categories": [], "found": {"A": "x"}, "tankoubons": null}',
        b'{"untagged": [], "categories": [], "found": {}, "tankoubons": [{"id": 1}]}',
    ],
)
def test_saved_views_that_do_not_read_are_ignored(saved: bytes, caplog) -> None:
    views = Views(None)  # type: ignore[arg-type]  # restoring asks no server
    views.restore(saved)
    assert views.categories == {} and views.tankoubons is None
    assert "views saved last time are unusable" in caplog.text
