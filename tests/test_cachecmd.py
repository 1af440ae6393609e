"""`lrrfs cache warm` fills the disk cache so that a later mount reads with no page request;
`lrrfs cache clear` empties it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lrrfs.testserver.samples import make_archive

from .conftest import KEY, PYTHON, mount_env, start_mount, start_server


def lrrfs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "lrrfs", *args], capture_output=True, text=True, timeout=120,
        env=mount_env(KEY),
    )  # fmt: skip


def test_warm_then_read_offline_of_the_server_then_clear(tmp_path):
    library = tmp_path / "library"
    for title in ("Warm One", "Warm Two", "Cold"):
        make_archive(library / f"{title}.zip", 4, page_bytes=20_000)
    cache = tmp_path / "cache"
    with start_server(library, tmp_path) as server:
        done = lrrfs("cache", "warm", server.url, "Warm *", "--cache-dir", str(cache))
        assert done.returncode == 0, done.stderr
        assert "Warm One: 4 pages cached" in done.stderr and "Cold" not in done.stderr
        progress = [r for r in server.requests() if "/progress/" in r["path"]]
        assert progress == []  # warming is not reading
        server.clear_requests()
        with start_mount(server, tmp_path / "lrr", args=("--cache-dir", str(cache))) as mount:
            for path in sorted((mount.path / "Warm Two").iterdir()):
                if path.name[:3].isdigit():
                    path.read_bytes()
            fetched = [
                r["path"]
                for r in server.requests()
                if "/page?" in r["path"] or "/download" in r["path"]
            ]
            assert fetched == []  # every page came from the warmed cache
        nothing = lrrfs("cache", "warm", server.url, "No Such Title", "--cache-dir", str(cache))
        assert nothing.returncode == 1 and "no archive matches" in nothing.stderr
    cleared = lrrfs("cache", "clear", "--cache-dir", str(cache))
    assert cleared.returncode == 0 and "removed" in cleared.stdout
    assert not cache.exists()


def test_warm_with_archives_caches_the_archive_file(tmp_path):
    library = tmp_path / "library"
    make_archive(library / "Whole.zip", 5, page_bytes=700_001)  # ~3.5 blocks
    cache = tmp_path / "cache"
    with start_server(library, tmp_path) as server:
        done = lrrfs("cache", "warm", server.url, "Whole", "--archives", "--cache-dir", str(cache))
        assert done.returncode == 0, done.stderr
        assert "Whole: archive file cached" in done.stderr
        with start_mount(server, tmp_path / "lrr", args=("--cache-dir", str(cache))) as mount:
            for entry in (mount.path / "Whole").iterdir():
                entry.stat()
            server.clear_requests()
            data = (mount.path / "Whole" / "Whole.zip").read_bytes()
            assert [r for r in server.requests() if "/download" in r["path"]] == []
    assert data == (library / "Whole.zip").read_bytes()


def test_clear_keeps_the_files_the_server_never_got(tmp_path):
    """The spool folder is the user's, not a cache: a copy under way, or a file kept at
    unmount because the server never got it, survives `cache clear`."""
    cache = tmp_path / "cache"
    servers = [cache / "one", cache / "two"]
    for server in servers:
        (server / "v1" / "page" / "ab").mkdir(parents=True)
        (server / "v1" / "page" / "ab" / "abcd").write_bytes(bytes(1000))
    unsent = servers[0] / "uploads" / "unsent" / "notes.txt"
    unsent.parent.mkdir(parents=True)
    unsent.write_text("mine")
    (servers[1] / "uploads").mkdir()  # empty: goes with the cache
    cleared = lrrfs("cache", "clear", "--cache-dir", str(cache))
    assert cleared.returncode == 0, cleared.stderr
    assert unsent.read_text() == "mine"
    assert f"kept {servers[0] / 'uploads'}" in cleared.stdout
    assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == [
        Path("one"), Path("one/uploads"), Path("one/uploads/unsent"),
        Path("one/uploads/unsent/notes.txt"),
    ]  # fmt: skip
