"""A hostile or broken server never takes the mount down, hangs a caller, or exhausts memory
(issue 11).

Each test makes the test server answer like a broken, malicious or merely slow LANraragi
(POST /_lrrfs/faults) and checks, through a real mount with a short deadline (--timeout 3),
that the mount lives on and still serves what it had, that the call fails with its errno
within the deadline, and that the mount process's peak RSS stays under the cap. One server and
one mount serve the module; each test clears its faults and waits for the full listing again.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lrrfs.testserver.samples import make_archive

from .conftest import (
    PYTHON,
    Mount,
    Server,
    archive_names,
    mount_env,
    start_mount,
    start_server,
    wait_for,
)

DEADLINE = 3.0  # --timeout of the mounts here
SLACK = 5.0  # what a loaded 2-core machine may add to the deadline
RSS_CAP_MB = 300
CROWD = 100  # folders listed at once while their page lists hang
BOOKS = CROWD + 9  # zip archives "Book NNN"; the first CROWD are the crowd's
TAPES = 6  # tar archives "Tape N": their page sizes come from fetching the pages
TAPE_PAGES = 6  # more than the 4 pages sized at once
ALICE = ["Book 100", "Book 101"]  # what the saved search "artist:alice" finds
SAVED = "Book 102"  # its metadata.json is saved while searches fail
VICTIM = "Book 103"  # the entry made malformed in the archive list
FILES_HUGE, THUMB_BOMB, ECHOED, NO_RANGE = "Book 104", "Book 105", "Book 106", "Book 107"
KNOWN = "Book 108"  # looked up under load: never touched before that
SEARCH_LOOKED_AT = "x"  # the search whose answers never end
SEARCH_PAGES = 1_000  # lrrfs/client/api.py: pages of a paged search followed, at most


def book(index: int) -> str:
    return f"Book {index:03d}"


EXPECTED = sorted([book(i) for i in range(BOOKS)] + [f"Tape {i}" for i in range(TAPES)])


# -- the library, its server and the shared mount ----------------------------------------


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    library = tmp_path_factory.mktemp("hostile-server-library")
    state = {}
    for index in range(BOOKS):
        name = f"{book(index)}.zip"
        make_archive(library / name, 2, page_bytes=2000)
        artist = ",artist:alice" if book(index) in ALICE else ""
        state[name] = {"tags": f"date_added:{1000 + index}{artist}", "isnew": False}
    for index in range(TAPES):
        name = f"Tape {index}.cbt"
        make_archive(library / name, TAPE_PAGES, page_bytes=2000, fmt="cbt")
        state[name] = {"tags": f"date_added:{2000 + index}", "isnew": False}
    categories = [{"id": "SET_1", "name": "Alices", "search": "artist:alice"}]
    (library / ".lrrfs-server.json").write_text(
        json.dumps({"archives": state, "categories": categories})
    )
    return library


@pytest.fixture(scope="module")
def server(library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("hostile-server")
    with start_server(library, workdir, extra=("--thumbnail-delay", "0")) as running:
        yield running


@pytest.fixture(scope="module")
def shared_mount(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    mountpoint = tmp_path_factory.mktemp("hostile-mnt") / "lrr"
    args = ("--timeout", str(DEADLINE), "--refresh-interval", "1")
    with start_mount(server, mountpoint, args=args) as mounted:
        yield mounted


@pytest.fixture
def mount(shared_mount: Mount, server: Server) -> Iterator[Mount]:
    """The shared mount, its peak RSS reset; after the test, the server's faults gone and
    the mount alive with the whole library listed again."""
    server.clear_faults()
    server.clear_requests()
    reset_peak_rss(shared_mount)
    yield shared_mount
    server.clear_faults()
    assert shared_mount.process.poll() is None, shared_mount.log_text()[-3000:]
    assert wait_for(lambda: archive_names(shared_mount.path) == EXPECTED, timeout=15)


# -- helpers ----------------------------------------------------------------------------


def timed_failure(call: Callable[[], object]) -> tuple[OSError, float]:
    started = time.monotonic()
    with pytest.raises(OSError) as failure:
        call()
    return failure.value, time.monotonic() - started


def reset_peak_rss(mount: Mount) -> None:
    """VmHWM from now on: the peak of what the test itself made the mount do."""
    Path(f"/proc/{mount.process.pid}/clear_refs").write_text("5")


def peak_rss_mb(mount: Mount) -> float:
    for line in Path(f"/proc/{mount.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def served(server: Server, pattern: str, status: int | None = -1) -> list[dict]:
    """The /api requests served whose "METHOD path" contains `pattern` (with that status)."""
    return [
        r
        for r in server.requests()
        if pattern in f"{r['method']} {r['path']}" and (status == -1 or r["status"] == status)
    ]


def status_of(mount: Mount) -> dict:
    """`lrrfs status --json` of the mount."""
    done = subprocess.run(
        [PYTHON, "-m", "lrrfs", "status", "--json", str(mount.path)],
        capture_output=True, text=True, timeout=60, env=mount_env(None),
    )  # fmt: skip
    states = json.loads(done.stdout)
    assert len(states) == 1, done
    return states[0]


def problems(mount: Mount, what: str) -> list[str]:
    """The errors of background failures of `what` that `lrrfs status` shows."""
    return [p["error"] for p in status_of(mount).get("problems", []) if p["what"] == what]


def originals(library: Path, title: str) -> list[bytes]:
    with zipfile.ZipFile(library / f"{title}.zip") as archive:
        return [archive.read(name) for name in sorted(archive.namelist())]


def pages_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name[:3].isdigit())


def assert_alive(mount: Mount) -> None:
    assert mount.process.poll() is None, mount.log_text()[-3000:]
    assert archive_names(mount.path) == EXPECTED


# -- 1. a failing saved search ------------------------------------------------------------

SEARCH_FAULTS = [{"action": "status", "status": 500}, {"action": "status", "status": 204}]


@pytest.mark.parametrize("rule", SEARCH_FAULTS, ids=["500", "204-empty"])
def test_a_failing_saved_search_keeps_the_mount_the_category_and_saves(
    server: Server, mount: Mount, rule: dict
) -> None:
    category = mount.path / "@categories" / "Alices"
    assert sorted(os.listdir(category)) == ALICE
    status = rule["status"]
    server.faults(rules=[{"match": r"^GET /api/search\?filter=artist", **rule}])
    search = "GET /api/search?filter=artist"
    assert wait_for(lambda: len(served(server, search, status)) >= 3, timeout=15)  # 3 refreshes
    assert_alive(mount)
    assert sorted(os.listdir(category)) == ALICE  # its last contents

    arcid = json.loads((mount.path / SAVED / "metadata.json").read_text())["arcid"]
    document = json.loads((mount.path / SAVED / "metadata.json").read_text())
    summary = f"saved while the search answers {status}"
    document["summary"] = summary
    (mount.path / SAVED / "metadata.json").write_text(json.dumps(document))  # close() is fine
    put = f"PUT /api/archives/{arcid}/metadata"
    assert [r["status"] for r in served(server, put)] == [200]
    assert server.get(f"/api/archives/{arcid}/metadata").json()["summary"] == summary
    assert json.loads((mount.path / SAVED / "metadata.json").read_text())["summary"] == summary

    seen = len(served(server, search, status))
    assert wait_for(lambda: len(served(server, search, status)) >= seen + 2, timeout=15)
    assert_alive(mount)
    assert sorted(os.listdir(category)) == ALICE
    why = "still building its search index" if status == 204 else "Injected fault"
    assert wait_for(
        lambda: any(why in e for e in problems(mount, "views: category 'Alices'")), timeout=10
    )
    print(f"search answering {status}: {seen} failed refreshes, the mount and its category stay")


def test_a_mount_comes_up_while_its_saved_search_fails(server: Server, tmp_path: Path) -> None:
    server.faults(rules=[{"match": r"^GET /api/search", "action": "status", "status": 500}])
    try:
        args = ("--timeout", str(DEADLINE), "--refresh-interval", "1")
        with start_mount(server, tmp_path / "lrr", args=args) as fresh:  # no "died before"
            assert archive_names(fresh.path) == EXPECTED
            assert os.listdir(fresh.path / "@categories") == ["Alices"]
            assert os.listdir(fresh.path / "@categories" / "Alices") == []  # nothing found yet
            failed = len(served(server, "GET /api/search", 500))
            assert wait_for(lambda: len(served(server, "GET /api/search", 500)) >= failed + 2)
            assert fresh.process.poll() is None and archive_names(fresh.path) == EXPECTED
            server.clear_faults()
            assert wait_for(
                lambda: sorted(os.listdir(fresh.path / "@categories" / "Alices")) == ALICE
            )
    finally:
        server.clear_faults()
