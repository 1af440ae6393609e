"""A hostile or broken server never takes the mount down, hangs a caller, or exhausts memory
(issue 11).

Each test makes the test server answer like a broken, malicious or merely slow LANraragi
(POST /_lrrfs/faults) and checks, through a real mount with a short deadline (--timeout 3),
that the mount lives on and still serves what it had, that the call fails with its errno
within the deadline, and that the mount process's peak RSS stays under the cap. One server and
one mount serve the module; each test clears its faults and waits for the full listing again.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lrrfs.fs.calls import MAX_TASKS, WAITING_CALLS
from lrrfs.library.diskcache import server_folder_name
from lrrfs.testserver.samples import make_archive

from .conftest import (
    KEY,
    PYTHON,
    Mount,
    Server,
    archive_names,
    in_mount_table,
    mount_env,
    start_mount,
    start_server,
    wait_for,
)

DEADLINE = 3.0  # --timeout of the mounts here
SLACK = 5.0  # what a loaded 2-core machine may add to the deadline
RSS_CAP_MB = 300
SEARCH_LOOKED_AT = "x"  # the search whose answers never end
SEARCH_PAGES = 1_000  # lrrfs/client/session.py: pages of a paged search followed, at most


def book(index: int) -> str:
    return f"Book {index:03d}"


# Zip archives "Book NNN" of 2 small pages: the crowd's, then one or two per test.
CROWD = MAX_TASKS + 12  # folders listed at once while their page lists hang
ALICE = [book(CROWD), book(CROWD + 1)]  # what the saved search "artist:alice" finds
SAVED = book(CROWD + 2)  # its metadata.json is saved while searches fail
VICTIM = book(CROWD + 3)  # the entry made malformed in the archive list
FILES_HUGE = {False: book(CROWD + 4), True: book(CROWD + 5)}  # huge page lists (chunked?)
THUMB_BOMB, ECHOED, NO_RANGE = book(CROWD + 6), book(CROWD + 7), book(CROWD + 8)
KNOWN = book(CROWD + 9)  # looked up under load: never touched before that
FRESH = [book(CROWD + 10 + index) for index in range(5)]  # listed while the list is broken
BOOKS = CROWD + 15
TAPES = 6  # tar archives "Tape N": their page sizes come from fetching the pages
TAPE_PAGES = 6  # more than the 4 pages sized at once

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
    print(f"(RSS at start {rss_mb(mount, 'VmRSS'):.0f} MB)", end=" ")


def peak_rss_mb(mount: Mount) -> float:
    return rss_mb(mount, "VmHWM")


def rss_mb(mount: Mount, field: str) -> float:
    for line in Path(f"/proc/{mount.process.pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")


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


# -- 2. malformed archive lists -------------------------------------------------------------

BIG = "9" * 5000  # past Python's 4,300 digits of int()
MALFORMED_ENTRIES = {
    "pagecount-superscript": ({"pagecount": "²"}, "field 'pagecount' is str"),
    "size-1e19": ({"size": 10**19}, "field 'size' is out of range"),
    "5000-digits-in-a-string": ({"pagecount": BIG}, "field 'pagecount' is str"),
    "5000-digits-as-a-number": ({"lastreadtime": "<BIG>"}, "lastreadtime"),
}


def archive_list_with(server: Server, title: str, changes: dict) -> str:
    """The server's archive list as JSON text, the entry of `title` changed."""
    entries = [{**a, **changes} if a["title"] == title else a for a in server.archives()]
    return json.dumps(entries, ensure_ascii=False).replace('"<BIG>"', BIG)


def list_refreshes(server: Server) -> int:
    return sum(r["method"] == "GET" and r["path"] == "/api/archives" for r in server.requests())


@pytest.mark.parametrize("variant", MALFORMED_ENTRIES)
def test_a_malformed_entry_is_skipped_and_the_rest_stay(
    server: Server, mount: Mount, variant: str
) -> None:
    changes, why = MALFORMED_ENTRIES[variant]
    skipped = mount.log_text().count("skipping a malformed entry")
    body = archive_list_with(server, VICTIM, changes)
    server.faults(rules=[{"match": r"^GET /api/archives$", "action": "nonsense", "body": body}])
    assert wait_for(lambda: VICTIM not in archive_names(mount.path), timeout=10)
    assert mount.process.poll() is None
    assert archive_names(mount.path) == [name for name in EXPECTED if name != VICTIM]
    log = mount.log_text()
    assert log.count("skipping a malformed entry") == skipped + 1
    assert why in log.rsplit("skipping a malformed entry", 1)[1].splitlines()[0]
    assert BIG not in log  # a warning quotes no 5,000 digits


def test_a_malformed_date_leaves_the_entry_listed_without_a_date(
    server: Server, mount: Mount
) -> None:
    document = mount.path / VICTIM / "metadata.json"
    date = int(os.stat(document).st_mtime)
    assert date == 1000 + CROWD + 3
    tags = next(t for t in server.archives() if t["title"] == VICTIM)["tags"]
    body = archive_list_with(
        server, VICTIM, {"tags": tags.replace(f"date_added:{date}", "date_added:²")}
    )
    server.faults(rules=[{"match": r"^GET /api/archives$", "action": "nonsense", "body": body}])
    assert wait_for(lambda: "date_added:²" in json.loads(document.read_text())["tags"], 10)
    # No date: the folder's time is the mount's (lrrfs/library/library.py `mtime`).
    assert os.stat(document).st_mtime != date
    assert abs(os.stat(document).st_mtime - time.time()) < 3600
    assert_alive(mount)
    server.clear_faults()  # and the date is back (the listing alone does not show it)
    assert wait_for(lambda: int(os.stat(document).st_mtime) == date, timeout=10)


WHOLE_LIST_FAULTS = {
    "deep-json": ({"action": "deep_json"}, "not valid JSON"),
    "garbage-gzip": ({"action": "garbage_gzip"}, "does not inflate"),
    "gzip-bomb": ({"action": "gzip_bomb"}, "inflating past the cap"),
    "huge": ({"action": "huge"}, "over the cap"),
    "huge-chunked": ({"action": "huge", "chunked": True}, "over the cap"),
}


@pytest.mark.parametrize("variant", WHOLE_LIST_FAULTS)
def test_a_broken_archive_list_keeps_the_last_good_one(
    server: Server, mount: Mount, variant: str
) -> None:
    rule, why = WHOLE_LIST_FAULTS[variant]
    fresh = FRESH[list(WHOLE_LIST_FAULTS).index(variant)]
    document = json.loads((mount.path / VICTIM / "metadata.json").read_text())
    server.faults(rules=[{"match": r"^GET /api/archives$", **rule}])
    server.clear_requests()
    started = time.monotonic()
    assert wait_for(lambda: list_refreshes(server) >= 3, timeout=DEADLINE + 2 * SLACK)
    refreshing = time.monotonic() - started
    assert_alive(mount)
    assert json.loads((mount.path / VICTIM / "metadata.json").read_text()) == document
    assert len(pages_of(mount.path / fresh)) == 2  # a folder not listed before still lists
    errors = problems(mount, "refresh of the archive list")
    assert any(why in error for error in errors), errors
    rss = peak_rss_mb(mount)
    print(
        f"archive list {variant}: 3 refreshes failed in {refreshing:.1f} s, peak RSS {rss:.0f} MB"
    )
    assert rss < RSS_CAP_MB


# -- 3. size limits ------------------------------------------------------------------------

# On the page API, sizing a tar's pages (4 at once). Pages are asked for without compression.
PAGE_FAULTS = {
    "gzip-bomb": ({"action": "gzip_bomb"}, ["an encoding never asked for"]),
    "huge": ({"action": "huge"}, ["over the cap"]),
    "huge-chunked": ({"action": "huge", "chunked": True}, ["over the cap", "read together"]),
}


@pytest.mark.parametrize("variant", PAGE_FAULTS)
def test_pages_past_their_cap_give_eio_in_time_and_little_memory(
    server: Server, mount: Mount, variant: str
) -> None:
    rule, why = PAGE_FAULTS[variant]
    tape = mount.path / f"Tape {list(PAGE_FAULTS).index(variant)}"
    server.faults(rules=[{"match": r"^GET /api/archives/\w+/page\?", **rule}])
    error, elapsed = timed_failure(lambda: os.listdir(tape))
    rss = peak_rss_mb(mount)
    fetched = len(served(server, "/page?"))
    print(f"tar pages {variant}: {errno.errorcode[error.errno]} after {elapsed:.2f} s, "
          f"{fetched} page requests, peak RSS {rss:.0f} MB")  # fmt: skip
    assert error.errno == errno.EIO and elapsed < DEADLINE + SLACK
    assert fetched >= 1
    said = mount.log_text().rsplit("opendir", 1)[-1]
    assert any(reason in said for reason in why), said
    assert rss < RSS_CAP_MB
    server.clear_faults()
    assert len(pages_of(tape)) == TAPE_PAGES  # the same folder lists once the server is sane


@pytest.mark.parametrize("chunked", [False, True], ids=["huge", "huge-chunked"])
def test_a_huge_page_list_gives_eio_in_time_and_little_memory(
    server: Server, mount: Mount, chunked: bool
) -> None:
    folder = mount.path / FILES_HUGE[chunked]
    server.faults(rules=[{"match": r"/files", "action": "huge", "chunked": chunked}])
    error, elapsed = timed_failure(lambda: os.listdir(folder))
    rss = peak_rss_mb(mount)
    print(f"/files huge (chunked {chunked}): {errno.errorcode[error.errno]} after "
          f"{elapsed:.2f} s, peak RSS {rss:.0f} MB")  # fmt: skip
    assert error.errno == errno.EIO and elapsed < DEADLINE + SLACK
    assert "over the cap" in mount.log_text().rsplit("opendir", 1)[-1]
    assert rss < RSS_CAP_MB
    server.clear_faults()
    assert len(pages_of(folder)) == 2


def test_a_thumbnail_bomb_gives_eio_in_time_and_little_memory(
    server: Server, mount: Mount, library: Path
) -> None:
    folder = mount.path / THUMB_BOMB
    server.faults(rules=[{"match": r"/thumbnail", "action": "gzip_bomb"}])
    error, elapsed = timed_failure((folder / "thumbnail.jpg").read_bytes)
    rss = peak_rss_mb(mount)
    print(f"thumbnail gzip bomb: {errno.errorcode[error.errno]} after {elapsed:.2f} s, "
          f"peak RSS {rss:.0f} MB")  # fmt: skip
    assert error.errno == errno.EIO and elapsed < DEADLINE + SLACK
    assert "an encoding never asked for" in mount.log_text().rsplit("lookup", 1)[-1]
    assert rss < RSS_CAP_MB
    assert [p.read_bytes() for p in pages_of(folder)] == originals(library, THUMB_BOMB)
    server.clear_faults()
    assert (folder / "thumbnail.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG now


# -- 4. bounded calls ------------------------------------------------------------------------


def test_a_folder_whose_pages_trickle_fails_within_the_deadline(
    server: Server, mount: Mount
) -> None:
    tape = mount.path / "Tape 3"
    server.faults(rules=[{"match": r"/page\?", "action": "trickle", "interval": 1}])
    error, elapsed = timed_failure(lambda: os.listdir(tape))
    print(f"ls of a tar whose pages trickle: {errno.errorcode[error.errno]} after {elapsed:.2f} s")
    assert error.errno == errno.EIO and elapsed < DEADLINE + SLACK
    assert len(served(server, "/page?")) >= 1
    server.clear_faults()
    assert len(pages_of(tape)) == TAPE_PAGES


def endless_search_rules(query: str, answers: int) -> list[dict]:
    """`answers` answers to `query`, each once: 100 ids never seen before, of 10^9 found."""
    rules = []
    for answer in range(answers):
        ids = [{"arcid": f"{answer:020x}{index:020x}"} for index in range(100)]
        body = {"data": ids, "recordsFiltered": 10**9, "recordsTotal": 10**9, "draw": 0}
        rules.append({"match": rf"^GET /api/search\?filter={query}&", "action": "nonsense",
                      "body": json.dumps(body), "times": 1})  # fmt: skip
    return rules


def test_a_search_that_never_ends_fails_within_the_deadline(server: Server, mount: Mount) -> None:
    # An answer of its own for every request lrrfs may make (the first, then at most
    # SEARCH_PAGES pages): one more would get the real (empty) answer and end the search.
    server.faults(rules=endless_search_rules(SEARCH_LOOKED_AT, SEARCH_PAGES + 2))
    error, elapsed = timed_failure(lambda: os.listdir(mount.path / "@search" / SEARCH_LOOKED_AT))
    asked = len(served(server, f"GET /api/search?filter={SEARCH_LOOKED_AT}&"))
    print(f"endless search: {errno.errorcode[error.errno]} after {elapsed:.2f} s, "
          f"{asked} search requests")  # fmt: skip
    assert error.errno == errno.EIO and elapsed < DEADLINE + SLACK
    assert 2 <= asked <= SEARCH_PAGES + 1
    assert mount.process.poll() is None


def test_a_search_that_never_ends_stops_after_its_page_bound(
    server: Server, tmp_path: Path
) -> None:
    """With a deadline long enough, the bound on pages followed is what ends it."""
    long_deadline = 60.0
    server.faults(rules=endless_search_rules(SEARCH_LOOKED_AT, SEARCH_PAGES + 2))
    try:
        args = ("--timeout", str(long_deadline), "--refresh-interval", "60")
        with start_mount(server, tmp_path / "lrr", args=args) as patient:
            server.clear_requests()
            search = patient.path / "@search" / SEARCH_LOOKED_AT
            error, elapsed = timed_failure(lambda: os.listdir(search))
            asked = len(served(server, f"GET /api/search?filter={SEARCH_LOOKED_AT}&"))
            failure = errno.errorcode[error.errno]
            print(f"endless search, {long_deadline:g} s deadline: {failure} after {elapsed:.2f} s, "
                  f"{asked} requests")  # fmt: skip
            assert error.errno == errno.EIO and elapsed < long_deadline
            assert asked == SEARCH_PAGES + 1  # the first answer, then SEARCH_PAGES pages
            assert f"still more results after {SEARCH_PAGES} pages" in patient.log_text()
    finally:
        server.clear_faults()


# -- 5. one slow endpoint -----------------------------------------------------------------

MEMORY_BOUND = 2.0  # seconds a call answered from memory may take under load (it takes ms)
CONNECTIONS = 6  # the mount's connections for API calls (LrrClient's default)


def list_at_once(
    folders: list[Path],
) -> tuple[dict[int, tuple[str, float]], list[threading.Thread]]:
    """Start listing every folder at the same moment, each in a thread of its own:
    what each listing gave ("listed" or an errno name) and after how long, once done."""
    outcomes: dict[int, tuple[str, float]] = {}
    start = threading.Barrier(len(folders) + 1)

    def lister(index: int) -> None:
        start.wait(timeout=30)
        started = time.monotonic()
        try:
            os.listdir(folders[index])
            outcome = "listed"
        except OSError as exc:
            outcome = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        outcomes[index] = (outcome, time.monotonic() - started)

    threads = [threading.Thread(target=lister, args=(i,)) for i in range(len(folders))]
    for thread in threads:
        thread.start()
    start.wait(timeout=30)
    return outcomes, threads


def joined(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(DEADLINE + 2 * SLACK)
    assert not any(thread.is_alive() for thread in threads), "a listing is stuck"


def counted(outcomes: dict[int, tuple[str, float]]) -> dict[str, int]:
    kinds = [outcome for outcome, _ in outcomes.values()]
    return {kind: kinds.count(kind) for kind in sorted(set(kinds))}


def test_folders_waiting_on_a_hung_endpoint_leave_memory_answers_fast(
    server: Server, mount: Mount, library: Path
) -> None:
    """More listings than pyfuse3 has tasks wait on a /files that never answers: calls
    answered from memory still answer at once, the listings end with EIO (deadline) or
    EAGAIN (too many waiting) within the deadline, and no call slot stays taken."""
    crowd = [mount.path / book(index) for index in range(CROWD)]
    hung_requests = lambda: len(served(server, "GET /api/archives/", None))  # noqa: E731
    Path("/proc/sys/vm/drop_caches").write_text("2")  # lookups reach the mount again
    server.faults(rules=[{"match": r"/files", "action": "hang", "hang_seconds": 20}])
    outcomes, threads = list_at_once(crowd)
    try:
        assert wait_for(lambda: hung_requests() >= CONNECTIONS, timeout=DEADLINE)
        timings = {}
        for what, call in (
            ("stat of a folder", lambda: os.stat(mount.path / KNOWN)),  # a lookup: not cached
            ("ls of the root", lambda: os.listdir(mount.path)),
            ("statvfs", lambda: os.statvfs(mount.path)),
            ("ls of the root again", lambda: os.listdir(mount.path)),
        ):
            started = time.monotonic()
            call()
            timings[what] = time.monotonic() - started
        waiting = sum(thread.is_alive() for thread in threads)
    finally:
        joined(threads)
    slowest = max(elapsed for _, elapsed in outcomes.values())
    answers = ", ".join(f"{what} {elapsed * 1000:.0f} ms" for what, elapsed in timings.items())
    print(f"{CROWD} listings on a hung /files: {counted(outcomes)}, the slowest after "
          f"{slowest:.2f} s; {waiting} still waiting after: {answers}")  # fmt: skip
    assert waiting >= WAITING_CALLS  # the calls above ran while the crowd waited
    assert all(elapsed < MEMORY_BOUND for elapsed in timings.values()), timings
    # Every call slot taken, each of the rest turned away at once: exactly.
    assert counted(outcomes) == {"EAGAIN": CROWD - WAITING_CALLS, "EIO": WAITING_CALLS}
    assert slowest < DEADLINE + SLACK

    # No slot leaked: the same crowd again is let in and turned away in the same numbers.
    outcomes, threads = list_at_once(crowd)
    joined(threads)
    print(f"again: {counted(outcomes)}")
    assert counted(outcomes) == {"EAGAIN": CROWD - WAITING_CALLS, "EIO": WAITING_CALLS}
    server.clear_faults()
    for index, folder in enumerate(crowd):  # and every folder lists and reads right
        assert [p.read_bytes() for p in pages_of(folder)] == originals(library, book(index))


# -- 6. what a server says, secrets, and private files ----------------------------------------

SECRETS = (KEY, base64.b64encode(KEY.encode()).decode())
CONTROLS = ("\x1b", "\x07")  # ESC starts a terminal sequence; BEL ends an OSC one


def assert_fit_to_show(text: str) -> None:
    assert "<redacted>" in text  # the echo was there, and its secret taken out
    for secret in SECRETS:
        assert secret not in text
    for control in CONTROLS:
        assert control not in text


def lrrfs_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "lrrfs", *args],
        capture_output=True, text=True, timeout=60, env=mount_env(KEY),
    )  # fmt: skip


def test_an_echoed_key_and_terminal_sequences_reach_no_log_or_error(
    server: Server, mount: Mount, tmp_path: Path
) -> None:
    server.faults(rules=[{"match": r"/files", "action": "echo_auth"}])
    error, elapsed = timed_failure(lambda: os.listdir(mount.path / ECHOED))
    assert error.errno == errno.EIO and elapsed < DEADLINE + SLACK
    said = mount.log_text().rsplit("opendir", 1)[-1]
    print(f"an echoed key in an error: {said.strip()!r}")
    assert_fit_to_show(said)

    server.faults(rules=[{"match": r"^GET /api/archives$", "action": "echo_auth"}])
    what = "refresh of the archive list"
    assert wait_for(lambda: any("rejected" in e for e in problems(mount, what)), timeout=10)
    state = json.dumps(status_of(mount), ensure_ascii=False)
    print(f"... in lrrfs status: {problems(mount, what)[-1]!r}")
    assert_fit_to_show(state)

    server.faults(rules=[{"match": r"^GET /api/", "action": "echo_auth"}])
    mountpoint = tmp_path / "lrr"
    mountpoint.mkdir()
    refused = lrrfs_command("mount", server.url, str(mountpoint), "--timeout", str(DEADLINE))
    print(f"... when mounting: {refused.stderr.strip()!r}")
    assert refused.returncode != 0 and not in_mount_table(mountpoint)
    assert_fit_to_show(refused.stderr)
    assert_fit_to_show(mount.log_text())


def test_a_url_with_credentials_is_refused(server: Server, tmp_path: Path) -> None:
    mountpoint = tmp_path / "lrr"
    mountpoint.mkdir()
    url = server.url.replace("http://", "http://u:secret-password@")
    refused = lrrfs_command("mount", url, str(mountpoint))
    print(f"a URL with a password: {refused.returncode}, {refused.stderr.strip()!r}")
    assert refused.returncode == 1 and "user name or password" in refused.stderr
    assert "secret-password" not in refused.stderr
    assert not in_mount_table(mountpoint) and os.listdir(mountpoint) == []

    malformed = lrrfs_command("mount", "http://u:p@[::1", str(mountpoint))
    print(f"a malformed URL: {malformed.returncode}, {malformed.stderr.strip()!r}")
    assert malformed.returncode != 0 and "Traceback" not in malformed.stderr
    assert len(malformed.stderr.strip().splitlines()) == 1
    assert not in_mount_table(mountpoint)


def test_the_disk_cache_and_the_log_are_private(
    server: Server, mount: Mount, tmp_path: Path
) -> None:
    cache_home = mount.path.parent / f"{mount.path.name}.cache"  # conftest's launch_mount
    ours = cache_home / "lrrfs" / server_folder_name(server.url)
    assert ours.is_dir() and any(ours.iterdir())
    for folder in (cache_home / "lrrfs", ours):
        assert folder.stat().st_mode & 0o777 == 0o700, folder

    log = tmp_path / "logs" / "lrrfs.log"
    args = ("--timeout", str(DEADLINE), "--log-file", str(log))
    with start_mount(server, tmp_path / "lrr", args=args) as logged:
        assert archive_names(logged.path) == EXPECTED
        assert "mounted" in log.read_text()
        assert log.stat().st_mode & 0o777 == 0o600
        assert log.parent.stat().st_mode & 0o777 == 0o700


def test_a_range_answered_with_the_whole_file_still_gives_exact_bytes(
    server: Server, mount: Mount, library: Path, tmp_path: Path
) -> None:
    server.faults(rules=[{"match": r"/download", "action": "ignore_range"}])
    copy = tmp_path / f"{NO_RANGE}.zip"
    subprocess.run(["cp", str(mount.path / NO_RANGE / f"{NO_RANGE}.zip"), str(copy)], check=True)
    original = (library / f"{NO_RANGE}.zip").read_bytes()
    assert hashlib.sha256(copy.read_bytes()).digest() == hashlib.sha256(original).digest()
    assert served(server, "GET /api/archives/") and served(server, "/download", 200)
