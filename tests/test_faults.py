"""A misbehaving server: bounded waits, right errors, no wrong bytes, back by itself.

Each test injects faults with the test server's knobs (POST /_lrrfs/faults) into a
real mount running with a short deadline (--timeout 3).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import signal
import threading
import time
import zipfile
from pathlib import Path

import pytest

from lrrfs.library.prefetch import DEPTH
from lrrfs.testserver.samples import make_archive

from .conftest import KEY, archive_names, start_mount, start_server, wait_for

DEADLINE = 3.0  # --timeout of the mounts here
# Page bytes come from the page API, or (zip members) from Range requests of /download.
PAGE_ROUTES = r"/page\?|/download"
SLACK = 5.0  # what a loaded 2-core machine may add to the deadline
PAGES = DEPTH + 4  # pages of each archive: more than a first read fetches ahead
FAILED = (errno.EIO, errno.EHOSTUNREACH)  # a call to the server failed; the mount is offline


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    library = tmp_path_factory.mktemp("fault-library")
    for index in range(16):
        make_archive(library / f"Comic {index:02d}.zip", PAGES, page_bytes=20_000)
    return library


@pytest.fixture
def server(library, tmp_path):
    with start_server(library, tmp_path, extra=("--thumbnail-delay", "0")) as running:
        yield running


@pytest.fixture
def mount(server, tmp_path):
    with start_mount(
        server, tmp_path / "lrr", args=("--timeout", str(DEADLINE), "--refresh-interval", "1")
    ) as mounted:
        yield mounted


def originals(library: Path, title: str) -> list[bytes]:
    """The pages of an archive as the files hold them, in reading order."""
    with zipfile.ZipFile(library / f"{title}.zip") as archive:
        return [archive.read(name) for name in sorted(archive.namelist())]


def pages_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name[:3].isdigit())


def timed_failure(call) -> tuple[OSError, float]:
    started = time.monotonic()
    with pytest.raises(OSError) as failure:
        call()
    return failure.value, time.monotonic() - started


def test_a_stopped_server_gives_eio_in_time_cached_things_still_answer_and_it_comes_back(
    server, mount, library
):
    known = mount.path / "Comic 00"
    first = pages_of(known)[0]
    first.read_bytes()  # cached now, and the next DEPTH fetched ahead
    beyond = pages_of(known)[DEPTH + 2]  # not fetched ahead
    server.stop()
    restarted = None
    try:
        assert first.read_bytes() == originals(library, "Comic 00")[0]
        assert len(os.listdir(known)) == PAGES + 3 and os.listdir(mount.path)
        os.stat(pages_of(known)[3])
        # EIO from the server's failure, or EHOSTUNREACH once the mount knows it is offline.
        error, elapsed = timed_failure(beyond.read_bytes)
        assert error.errno in FAILED and elapsed < DEADLINE + SLACK
        error, elapsed = timed_failure(lambda: os.listdir(mount.path / "Comic 01"))
        assert error.errno in FAILED and elapsed < DEADLINE + SLACK
        restarted = server.restart()
        # Back by itself (at once, or at the offline mount's next probe): no remount needed.
        assert wait_for(
            lambda: _try_read(beyond) == originals(library, "Comic 00")[DEPTH + 2], timeout=60
        )
        assert len(os.listdir(mount.path / "Comic 01")) == PAGES + 3
    finally:
        if restarted is not None:  # a failed check leaves no server behind
            restarted.stop()


@pytest.mark.parametrize(
    "rule",
    [{"action": "hang", "hang_seconds": 30}, {"action": "trickle", "interval": 0.5}],
    ids=lambda rule: rule["action"],
)
def test_a_hanging_server_gives_eio_within_one_deadline(server, mount, library, rule):
    """One deadline per read() call, not two: the kernel itself retries a read of a cached
    file that failed (its read-ahead did), and that retry must not wait again."""
    folder = mount.path / "Comic 02"
    page = pages_of(folder)[1]
    archive = folder / "Comic 02.zip"
    size = archive.stat().st_size
    server.faults(rules=[{"match": PAGE_ROUTES, **rule}])
    error, elapsed = timed_failure(page.read_bytes)
    assert error.errno == errno.EIO and elapsed < 2 * DEADLINE, elapsed
    with open(archive, "rb") as file:
        error, elapsed = timed_failure(lambda: os.pread(file.fileno(), 100_000, size // 2))
    assert error.errno == errno.EIO and elapsed < 2 * DEADLINE, elapsed
    server.clear_faults()
    assert page.read_bytes() == originals(library, "Comic 02")[1]
    with open(archive, "rb") as file:  # the failed read is not remembered past the retry
        data = os.pread(file.fileno(), 100_000, size // 2)
    assert data == (library / "Comic 02.zip").read_bytes()[size // 2 : size // 2 + 100_000]


@pytest.mark.parametrize(
    "rule",
    [
        {"action": "status", "status": 503, "times": 2},
        {"action": "status", "status": 429, "times": 1},
        {"action": "status", "status": 502, "times": 1},
        {"action": "drop", "times": 1},
        {"action": "truncate", "times": 1},
        {"action": "overlong", "times": 1},
    ],
    ids=lambda rule: f"{rule['action']}-{rule.get('status', '')}",
)
def test_transient_faults_are_retried_and_bytes_stay_exact(server, mount, library, rule):
    folder = mount.path / "Comic 03"
    expected = originals(library, "Comic 03")
    pages = pages_of(folder)
    server.faults(rules=[{"match": f"GET .*({PAGE_ROUTES})", **rule}])
    assert [p.read_bytes() for p in pages] == expected
    server.faults(rules=[{"match": r"GET .*/download", **rule}])
    archive = folder / "Comic 03.zip"
    assert archive.read_bytes() == (library / "Comic 03.zip").read_bytes()


def test_persistent_server_errors_give_eio(server, mount):
    server.faults(rules=[{"match": PAGE_ROUTES, "action": "status", "status": 500}])
    error, _ = timed_failure(lambda: pages_of(mount.path / "Comic 04")[0].read_bytes())
    assert error.errno == errno.EIO


def test_a_page_answered_with_json_is_refused(server, mount):
    server.faults(rules=[{"match": PAGE_ROUTES, "action": "nonsense"}])
    error, _ = timed_failure(lambda: pages_of(mount.path / "Comic 05")[0].read_bytes())
    assert error.errno == errno.EIO
    assert "instead of the file" in mount.log_text()


def test_nonsense_page_lists_fail_that_folder_only(server, mount, library):
    comic = next(a for a in server.archives() if a["title"] == "Comic 06")
    one_more = json.dumps({"pages": [f"/api/archives/{comic['arcid']}/page?path={i:04d}.jpg"
                                     for i in range(PAGES + 1)]})  # fmt: skip
    for body in ("not json{", '{"pages": 42}', one_more):
        server.faults(rules=[{"match": r"/files", "action": "nonsense", "body": body}])
        error, _ = timed_failure(lambda: os.listdir(mount.path / "Comic 06"))
        assert error.errno == errno.EIO
    assert f"lists {PAGES + 1} pages but counts {PAGES}" in mount.log_text()
    server.clear_faults()
    assert [p.read_bytes() for p in pages_of(mount.path / "Comic 07")] == originals(
        library, "Comic 07"
    )


def test_nonsense_archive_lists_keep_the_mount_serving(server, mount):
    good = server.archives()
    bad_entry = {"arcid": "xyz", "title": "Bad Id", "tags": "", "isnew": True, "pagecount": 1}
    wrong_type = {**good[0], "arcid": "f" * 40, "title": 5}
    server.faults(rules=[{"match": r"GET /api/archives$", "action": "nonsense",
                          "body": json.dumps([*good, bad_entry, wrong_type])}])  # fmt: skip
    assert wait_for(lambda: "is not 40 hex characters" in mount.log_text(), timeout=10)
    names = archive_names(mount.path)
    assert "Bad Id" not in names and len(names) == len(good)
    server.faults(rules=[{"match": r"GET /api/archives$", "action": "nonsense"}])
    assert wait_for(lambda: "refresh of the archive list failed" in mount.log_text(), 10)
    assert len(archive_names(mount.path)) == len(good)  # the known listing stays


def test_a_rejected_key_gives_eacces_and_one_log_line(server, mount):
    server.faults(rules=[{"match": r"/files", "action": "status", "status": 401}])
    for index in (8, 9, 10):
        error, _ = timed_failure(lambda index=index: os.listdir(mount.path / f"Comic {index:02d}"))
        assert error.errno == errno.EACCES
    assert mount.log_text().count("rejected the API key") == 1


def test_sigterm_unmounts_at_once_while_reads_hang(server, mount):
    page = pages_of(mount.path / "Comic 11")[2]
    server.faults(rules=[{"match": PAGE_ROUTES, "action": "hang", "hang_seconds": 60}])
    outcome: list[object] = []
    reader = threading.Thread(target=lambda: outcome.append(_try_read(page)))
    reader.start()
    time.sleep(0.5)  # the read is in flight, waiting on the hung server
    mount.process.send_signal(signal.SIGTERM)
    assert mount.process.wait(DEADLINE) == 0  # no wait for the server
    reader.join(10)
    assert outcome and isinstance(outcome[0], OSError)
    assert not os.path.ismount(mount.path)


def _try_read(path: Path) -> object:
    try:
        return path.read_bytes()
    except OSError as exc:
        return exc


@pytest.fixture
def small_cache_mount(server, tmp_path):
    """A page cache smaller than the library, none on disk: reads keep going to the server."""
    args = ("--timeout", str(DEADLINE), "--memory-cache", "1", "--cache-size", "0")
    with start_mount(server, tmp_path / "lrr-small", args=args) as mounted:
        yield mounted


def test_many_readers_under_random_faults(server, small_cache_mount, library):
    """64 readers over 16 archives for a bounded time while faults come and go:
    every byte read is right, nothing deadlocks, no connection slot leaks."""
    import random

    mount = small_cache_mount
    expected = {f"Comic {i:02d}": originals(library, f"Comic {i:02d}") for i in range(16)}
    stop = threading.Event()
    results = {"ok": 0, "eio": 0, "wrong": 0, "other": []}
    lock = threading.Lock()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            title = rng.choice(list(expected))
            index = rng.randrange(6)
            try:
                data = pages_of(mount.path / title)[index].read_bytes()
            except OSError as exc:
                with lock:
                    if exc.errno == errno.EIO:
                        results["eio"] += 1
                    else:
                        results["other"].append(exc)
                continue
            with lock:
                results["ok" if data == expected[title][index] else "wrong"] += 1

    def chaos() -> None:
        rng = random.Random(1)
        actions = [{"action": "status", "status": 503}, {"action": "drop"}, {"action": "truncate"},
                   {"action": "overlong"}, {"action": "hang", "hang_seconds": 2},
                   {"action": "status", "status": 500}, {"action": "nonsense"}]  # fmt: skip
        while not stop.is_set():
            rules = [{"match": r"/(page|files|download)", "times": rng.randint(1, 20),
                      **rng.choice(actions)} for _ in range(3)]  # fmt: skip
            server.faults(latency_ms=rng.choice([0, 0, 20]), rules=rules)
            Path("/proc/sys/vm/drop_caches").write_text("1")  # reads must reach the mount
            time.sleep(0.5)

    threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(64)]
    threads.append(threading.Thread(target=chaos))
    for thread in threads:
        thread.start()
    time.sleep(20)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a reader is stuck"
    server.clear_faults()
    fetched = sum(re.search(PAGE_ROUTES, r["path"]) is not None for r in server.requests())
    print(f"64 readers, 20 s of random faults: {results['ok']} reads right, "
          f"{results['eio']} EIO, {results['wrong']} wrong; {fetched} page requests")  # fmt: skip
    assert fetched > 500  # the readers really went to the server, through the faults
    assert results["wrong"] == 0 and not results["other"], results
    assert results["ok"] > 100
    # No leaked connection slots: with the faults gone, everything reads, and quickly.
    for title, pages in expected.items():
        for path, data in zip(pages_of(mount.path / title), pages, strict=True):
            assert path.read_bytes() == data
    rss = _peak_rss_mb(mount.process.pid)
    assert rss < 300, f"peak RSS {rss:.0f} MB"


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_archive_bytes_survive_drops_mid_stream(server, mount, library, tmp_path):
    server.faults(rules=[{"match": r"GET .*/download", "action": "drop", "times": 3}])
    copied = (mount.path / "Comic 12" / "Comic 12.zip").read_bytes()
    original = (library / "Comic 12.zip").read_bytes()
    assert hashlib.sha256(copied).digest() == hashlib.sha256(original).digest()


def test_a_server_ignoring_range_sends_the_archive_file_once(tmp_path):
    """A server that answers every Range request with the whole file: once it has done so,
    an archive's parts go on from one stream instead of each asking from byte 0 again
    (quadratic traffic)."""
    library = tmp_path / "big-library"
    library.mkdir()
    make_archive(library / "Big.zip", 24, page_bytes=1_000_000)
    make_archive(library / "First.zip", 3, page_bytes=1_000_000)
    original = (library / "Big.zip").read_bytes()
    with (
        start_server(library, tmp_path) as server,
        start_mount(server, tmp_path / "lrr", args=("--cache-size", "0")) as mount,
    ):
        folder = mount.path / "Big"
        assert "Big.zip" in os.listdir(folder)  # the zip's directory is read now
        server.faults(rules=[{"match": r"GET .*/download", "action": "ignore_range"}])
        # Parts asked for before the server's first answer each get their own download;
        # from that answer on, the mount knows. A read of another archive tells it.
        with open(mount.path / "First" / "First.zip", "rb", buffering=0) as first:
            first.read(1 << 20)
        assert "the server ignores Range requests" in mount.log_text()
        big = next(a["arcid"] for a in server.archives() if a["title"] == "Big")
        server.clear_requests()
        with open(folder / "Big.zip", "rb", buffering=0) as archive:  # in order, as cat reads
            copied = b"".join(iter(lambda: archive.read(1 << 20), b""))
        downloads = [r for r in server.requests() if f"{big}/download" in r["path"]]
    assert hashlib.sha256(copied).digest() == hashlib.sha256(original).digest()
    # Each part alone would be a request from byte 0 (7 here); one stream is one request, or
    # two if a worker took a later part's turn first and an earlier part asked anew.
    assert len(downloads) <= 2, downloads


def test_verbose_logs_the_archive_files_range_requests_too(server, tmp_path, library):
    """-v promises every request in the log: the archive file's Range requests (sent by
    worker threads, not httpx) included, and never the key."""
    with start_mount(server, tmp_path / "lrr-v", args=("-v", "--cache-size", "0")) as mount:
        copied = (mount.path / "Comic 13" / "Comic 13.zip").read_bytes()
        assert copied == (library / "Comic 13.zip").read_bytes()
        assert wait_for(lambda: "/download Range bytes=0-" in mount.log_text(), timeout=10)
        text = mount.log_text()
    assert re.search(r"HTTP Request: GET /api/archives/[0-9a-f]{40}/download Range", text)
    assert KEY not in text
