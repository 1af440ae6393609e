"""A randomized soak: 32 readers on a real mount while a chaos thread keeps changing what
the server does wrong (issue 11): no wrong byte, no hung call, the mount alive, no leaked slot.

The run is seeded: the seed is printed first and named in every assertion message, and the
readers and the chaos thread each draw from their own generator seeded from it. Timing still
varies (which reader meets which fault), so a replay repeats the same draws, not the same
interleaving. Environment:

    LRRFS_SOAK_SEED=N       the seed (default: a random one, printed)
    LRRFS_SOAK_SECONDS=S    how long the readers run (default 90, enough for CI)

A longer run, e.g. ten minutes, replaying a seed:

    LRRFS_SOAK_SECONDS=600 LRRFS_SOAK_SEED=1234 \\
        .venv/bin/pytest tests/test_soak.py -x -q -s -p no:cacheprovider

Every file call must end within the mount's deadline (--timeout 3) plus a slack for a loaded
2-core machine: a bound, not a speed. Every OSError must be EIO or EAGAIN (the server failed,
or too many calls wait on it), EHOSTUNREACH (faults that hang everything long enough take the
mount offline, as a server that hangs should), or ENOENT where a name may really be gone: a
folder whose archive the chaos thread left out of, or spoiled in, an archive list; a search; a
category (a valid but different category list removes it).

What no client can tell from the truth is left out of the chaos: a page answered with an
image type and other bytes (the page API has no checksum; zip members are checked by CRC-32,
but pages of tar archives come from the page API), and well-formed lists that differ from the
library (an empty archive list is a library emptied). Nonsense on the page API therefore
always comes with a type no file has (JSON, HTML).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import errno
import hashlib
import json
import os
import random
import tarfile
import threading
import time
import traceback
import zipfile
from pathlib import Path

import pytest

from lrrfs.testserver.samples import make_archive

from .conftest import KEY, archive_names, start_mount, start_server, wait_for

DEADLINE = 3.0  # --timeout of the mount
SLACK = 6.0  # what a loaded 2-core machine may add to one call
BOUND = DEADLINE + SLACK
READERS = 32
PAGES = 12
PAGE_BYTES = 20_000
ZIPS = 16
TARS = 3
RSS_CAP_MB = 300
FINAL_TIMEOUT = 120  # the checks after the faults (19 archives read whole: seconds)
GIB = 1 << 30
VIEWS = ("@categories", "@files", "@new", "@offline", "@search", "@tags", "@untagged")
WITHOUT_COVER = "thumbnail.jpg"  # a folder lists without its cover when that fails
TAGS = ["artist:artist 0", "artist:artist 1", "artist:artist 2", "series:s0", "series:s1",
        "color", "mono"]  # fmt: skip

SEED = int(os.environ.get("LRRFS_SOAK_SEED") or random.SystemRandom().randrange(1 << 32))
SECONDS = float(os.environ.get("LRRFS_SOAK_SECONDS") or 90)


def arcid_of(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()[:512000]).hexdigest()


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """16 zip archives (pages from Range requests of the file) and 3 tar ones (pages from
    the page API), 12 pages of 20 KB each; every tag on at least 3 archives."""
    library = tmp_path_factory.mktemp("soak-library")
    files = [f"Comic {i:02d}.zip" for i in range(ZIPS)] + [f"Tarred {i}.cbt" for i in range(TARS)]
    state = {}
    for index, name in enumerate(files):
        fmt = "tar" if name.endswith(".cbt") else "zip"
        make_archive(library / name, PAGES, page_bytes=PAGE_BYTES, fmt=fmt)
        tags = [f"artist:artist {index % 3}", f"series:s{index % 2}",
                "color" if index % 2 else "mono", f"date_added:{1000 + index}"]  # fmt: skip
        state[name] = {"tags": ",".join(tags), "isnew": index % 3 == 0}
    ids = [arcid_of(library / name) for name in files]
    categories = [
        {"id": "SET_1", "name": "Favs", "archives": ids[:4] + ids[-1:]},
        {"id": "SET_2", "name": "Artist 1", "search": "artist:artist 1"},
    ]
    (library / ".lrrfs-server.json").write_text(
        json.dumps({"archives": state, "categories": categories})
    )
    return library


@pytest.fixture
def server(library, tmp_path):
    with start_server(library, tmp_path, extra=("--thumbnail-delay", "0")) as running:
        yield running


@pytest.fixture
def mount(server, tmp_path):
    """A short deadline, a memory cache smaller than the library and a disk cache of 2 MB
    (the library's pages are 4.6 MB): reads keep going to the server, eviction runs."""
    args = ("--timeout", str(DEADLINE), "--refresh-interval", "1",
            "--memory-cache", "1", "--cache-size", "2M", "--probe-interval", "2")  # fmt: skip
    with start_mount(server, tmp_path / "lrr", args=args) as mounted:
        yield mounted


def originals(path: Path) -> list[bytes]:
    """The pages of an archive file as it holds them, in reading order."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            return [archive.read(name) for name in sorted(archive.namelist())]
    with tarfile.open(path) as archive:
        members = sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name)
        return [archive.extractfile(m).read() for m in members]  # type: ignore[union-attr]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def drop_kernel_caches() -> None:
    """Page reads must reach the mount, not the kernel's page cache (root only)."""
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("1")


# -- the chaos ----------------------------------------------------------------------------

ARCHIVE_LIST = r"^GET /api/archives$"
ROUTES = [ARCHIVE_LIST, r"/files", r"/page\?", r"/download", r"/thumbnail",
          r"^GET /api/search", r"^GET /api/categories", r"/metadata", r"/api/archives/untagged",
          r"/progress/"]  # fmt: skip
ACTIONS = ["hang", "drop", "truncate", "overlong", "status", "nonsense", "gzip_bomb",
           "garbage_gzip", "huge", "deep_json", "trickle", "ignore_range", "echo_auth"]  # fmt: skip
NOT_A_FILE = [None, "application/json", "text/html", "text/html; charset=utf-8"]
ANY_TYPE = [*NOT_A_FILE, "application/octet-stream", "text/plain", "application/zip"]
BIG_NUMBER = "9" * 5000  # more digits than int() takes from a text by default (4300)


def odd_bodies(other_arcid: str) -> list[str]:
    """Bodies of the wrong shape for any route: none is a valid answer of that route."""
    foreign = json.dumps({"pages": [f"./api/archives/{other_arcid}/page?path={i + 1:04d}.jpg"
                                    for i in range(PAGES)]})  # fmt: skip
    return [
        "not json{",
        '{"pages": 42}',
        "{}",
        "null",
        '"text"',
        "\x00\xff\x1b[2J garbage\x07",
        "<html><body>502 Bad Gateway</body></html>",
        '{"pages": ["../../../etc/passwd"]}',
        '{"pages": [' + ",".join(['"./api/archives/x/page?path=a"'] * 100_000) + "]}",
        '{"pages": [1, 2, 3]}',
        '{"pages": [null]}',
        foreign,
        '{"error": "\\u001b]0;pwned\\u0007 nope"}',
        '{"success": 0}',
        "[" * 5000 + "]" * 5000,
        '{"data": [], "draw": 0, "recordsFiltered": 1000000000, "recordsTotal": 1000000000}',
        '{"data": [{"arcid": "zz"}], "recordsFiltered": "²"}',
        '[{"id": 5}]',
        '[{"id": "SET_9", "name": null, "archives": "all"}]',
        "NaN",
        "1e999",
        f'{{"pagecount": {BIG_NUMBER}}}',
        "\ufeff{}",
        '{"pages": [' + '"x",' * 10 + "}",
    ]


def spoiled_lists(good: list[dict], rng: random.Random) -> tuple[str, str | None]:
    """An archive list with one malformed entry: (body, the title of that entry, which a
    mount may leave out until the next good list). Or a whole answer that is no list."""
    entries = [dict(e) for e in good]
    victim = rng.randrange(len(entries))
    entry = entries[victim]
    title = entry["title"]
    kind = rng.randrange(14)
    if kind == 0:
        entry["pagecount"] = "²"
    elif kind == 1:
        entry["pagecount"] = "__BIG__"
    elif kind == 2:
        entry["size"] = "²"
    elif kind == 3:
        entry["size"] = 10**19
    elif kind == 4:
        entry["tags"] = entry["tags"] + ",date_added:²"
    elif kind == 5:
        entry["pagecount"] = "__NAN__"
    elif kind == 6:
        entry["pagecount"] = -5
    elif kind == 7:
        entry["arcid"] = "not-hex-" + entry["arcid"][8:]
    elif kind == 8:
        entry["title"] = 5
    elif kind == 9:
        entries[victim] = 42  # type: ignore[call-overload]
    elif kind == 10:
        entry["size"] = "__BIG__"
    elif kind == 11:
        entries.append(dict(entry))  # the same archive twice
    elif kind == 12:
        return rng.choice(['{"archives": []}', "not json{", "{}", "null", '"x"']), None
    else:
        entry["tags"] = "__DEEP__"
    body = json.dumps(entries)
    body = body.replace('"__BIG__"', BIG_NUMBER).replace('"__NAN__"', "NaN")
    body = body.replace('"__DEEP__"', "[" * 100_000 + "]" * 100_000)
    return body, title


class Chaos:
    """Replaces the server's fault set every 0.3-1 s with 1-3 random rules."""

    def __init__(self, server, pid: int, good_list: list[dict], seed: int, stop: threading.Event):
        self.server = server
        self.pid = pid  # the mount's: its peak memory is sampled at each change of faults
        self.peak = 0.0
        self.rises: list[tuple[float, float, str]] = []  # (MB more, peak, the faults then)
        self.good = good_list
        self.rng = random.Random(f"{seed}-chaos")
        self.stop = stop
        self.withheld: set[str] = set()  # titles a spoiled list may have left out
        self.lock = threading.Lock()
        self.sets = 0
        self.actions: collections.Counter[str] = collections.Counter()
        self.bodies = odd_bodies(good_list[0]["arcid"])

    def may_be_gone(self, title: str) -> bool:
        with self.lock:
            return title in self.withheld

    def rule(self) -> dict:
        rng = self.rng
        action = rng.choice(ACTIONS)
        route = r"/download" if action == "ignore_range" else rng.choice(ROUTES)
        rule: dict = {"match": route, "action": action}
        if action == "hang":
            rule["hang_seconds"] = round(rng.uniform(2, 5), 1)
        elif action == "trickle":
            rule["interval"] = 0.5
        elif action == "huge":
            rule.update(body_bytes=2 * GIB, chunked=rng.random() < 0.5)
        elif action == "status":
            rule["status"] = rng.choice([500, 503, 429, 204])
        elif action == "nonsense":
            if route == ARCHIVE_LIST:
                body, title = spoiled_lists(self.good, rng)
                if title is not None:
                    with self.lock:
                        self.withheld.add(title)  # before the server can answer with it
                rule["body"] = body
            else:
                rule["body"] = rng.choice(self.bodies)
                types = NOT_A_FILE if route == r"/page\?" else ANY_TYPE
                if (content_type := rng.choice(types)) is not None:
                    rule["content_type"] = content_type
        if rng.random() < 0.4:
            rule["times"] = rng.randint(1, 20)
        return rule

    def run(self) -> None:
        rng = self.rng
        rules: list[dict] = []
        before: list[dict] = []
        while not self.stop.is_set():
            self.note_peak(before, rules)
            before = rules
            rules = [] if rng.random() < 0.15 else [self.rule() for _ in range(rng.randint(1, 3))]
            latency = round(rng.uniform(0, 30)) if rng.random() < 0.3 else 0
            self.server.faults(latency_ms=latency, rules=rules)
            self.sets += 1
            self.actions.update(r["action"] for r in rules)
            if rng.random() < 0.5:
                drop_kernel_caches()
            self.stop.wait(rng.uniform(0.3, 1.0))
        self.note_peak(before, rules)

    def note_peak(self, before: list[dict], rules: list[dict]) -> None:
        """Which faults the mount's peak memory grew under: those of the last step, or
        of the step before (work they started may outlive them)."""
        with contextlib.suppress(OSError, AssertionError):
            peak = peak_rss_mb(self.pid)
            if peak > self.peak + 5:
                what = f"{describe(rules)} after {describe(before)}"
                self.rises.append((peak - self.peak, peak, what))
            self.peak = max(self.peak, peak)

    def biggest_rises(self) -> str:
        rises = sorted(self.rises, reverse=True)[:4]
        return "; ".join(
            f"+{more:.0f} MB to {peak:.0f} MB under {what}" for more, peak, what in rises
        )


def describe(rules: list[dict]) -> str:
    """A fault set in short: no bodies."""
    shown = [{k: (v if k != "body" else f"<{len(v)} chars>") for k, v in r.items()} for r in rules]
    return json.dumps(shown) if shown else "no faults"


# -- the readers --------------------------------------------------------------------------


class Wrong(Exception):
    """A wrong answer: bytes, sizes, names or a document that is not what the library holds."""


class Soak:
    def __init__(self, mount, library: Path, titles: list[str], listings: dict[str, list[str]],
                 views: list[str], chaos: Chaos, seed: int):  # fmt: skip
        self.mount = mount
        self.titles = titles
        self.listings = listings
        self.views = views
        self.chaos = chaos
        self.seed = seed
        self.files = {t: next(p for p in library.iterdir() if p.stem == t) for t in titles}
        self.file_bytes = {t: p.read_bytes() for t, p in self.files.items()}
        self.pages = {t: originals(p) for t, p in self.files.items()}
        self.page_names = {t: sorted(n for n in names if n[:3].isdigit())
                           for t, names in listings.items()}  # fmt: skip
        self.lock = threading.Lock()
        self.ok: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[tuple[str, str]] = collections.Counter()
        self.longest: dict[str, tuple[float, str]] = {}  # op -> (seconds, the call)
        self.wrong: list[str] = []
        self.unexpected: list[str] = []
        self.crashed: list[str] = []

    def call(self, op: str, what: str, path: Path, fn, *args):
        """One file call, timed: the longest of each operation is kept."""
        started = time.monotonic()
        try:
            return fn(*args)
        finally:
            elapsed = time.monotonic() - started
            with self.lock:
                if elapsed > self.longest.get(op, (0.0, ""))[0]:
                    shown = path.relative_to(self.mount.path)
                    self.longest[op] = (elapsed, f"{what} {str(shown) or '/'}")

    def read_file(self, op: str, path: Path) -> bytes:
        fd = self.call(op, "open", path, os.open, path, os.O_RDONLY)
        try:
            parts = []
            while chunk := self.call(op, "read", path, os.read, fd, 1 << 17):
                parts.append(chunk)
            return b"".join(parts)
        finally:
            self.call(op, "close", path, os.close, fd)

    def read_range(self, op: str, path: Path, offset: int, size: int) -> bytes:
        fd = self.call(op, "open", path, os.open, path, os.O_RDONLY)
        try:
            parts, done = [], 0
            while done < size:
                chunk = self.call(op, "pread", path, os.pread, fd, size - done, offset + done)
                if not chunk:
                    break
                parts.append(chunk)
                done += len(chunk)
            return b"".join(parts)
        finally:
            self.call(op, "close", path, os.close, fd)

    def listdir(self, path: Path) -> set[str]:
        return set(self.call("listdir", "listdir", path, os.listdir, path))

    def stat(self, path: Path) -> os.stat_result:
        return self.call("stat", "stat", path, os.stat, path)

    # the operations: each returns nothing or raises Wrong / OSError
    def op_page(self, rng: random.Random, about: list) -> None:
        title = rng.choice(self.titles)
        about.append(title)
        index = rng.randrange(PAGES)
        path = self.mount.path / title / self.page_names[title][index]
        data = self.read_file("page", path)
        expected = self.pages[title][index]
        if data != expected:
            raise Wrong(f"{path}: {len(data)} bytes, not the {len(expected)} of page "
                        f"{index + 1}{first_difference(data, expected)}")  # fmt: skip

    def op_range(self, rng: random.Random, about: list) -> None:
        title = rng.choice(self.titles)
        about.append(title)
        whole = self.file_bytes[title]
        offset = rng.randrange(len(whole))
        size = rng.choice([1, rng.randint(1, 4096), rng.randint(1, 300_000)])
        folder = self.mount.path / rng.choice([title, "@files"])  # @files: a link to the file
        path = folder / self.files[title].name
        data = self.read_range("range", path, offset, size)
        expected = whole[offset : offset + size]
        if data != expected:
            raise Wrong(f"{path} at {offset}, {size} bytes: {len(data)} bytes read"
                        f"{first_difference(data, expected)}")  # fmt: skip

    def op_listdir(self, rng: random.Random, about: list) -> None:
        kind = rng.random()
        if kind < 0.5:
            title = rng.choice(self.titles)
            about.append(title)
            path = self.mount.path / title
            names = self.listdir(path)
            expected = set(self.listings[title]) | {WITHOUT_COVER}
            # A folder whose archive left the list between opendir and readdir lists what
            # is left of it: like a local folder removed while open, nothing.
            least = set() if self.chaos.may_be_gone(title) else expected - {WITHOUT_COVER}
            if not least <= names <= expected:
                raise Wrong(f"{path} lists {sorted(names ^ expected)} differently")
        elif kind < 0.7:
            names = self.listdir(self.mount.path)
            if not set(VIEWS) <= names <= set(self.titles) | set(VIEWS) | {"@tankoubons"}:
                raise Wrong(f"the root lists {sorted(names - set(self.titles))} and views "
                            f"{sorted(names & set(VIEWS))}")  # fmt: skip
        else:
            view = rng.choice(self.views)
            about.append(view)
            names = self.listdir(self.mount.path / view)
            if holds_links(view) and not names <= set(self.titles):
                raise Wrong(f"{view} links to {sorted(names - set(self.titles))}")

    def op_stat(self, rng: random.Random, about: list) -> None:
        title = rng.choice(self.titles)
        folder = self.mount.path / title
        choice = rng.randrange(8)
        if choice >= 6:
            view = rng.choice(self.views)
            about.append(view)
            self.stat(self.mount.path / view)
            return
        about.append(title)
        if choice == 0:
            self.stat(folder)
        elif choice == 1:
            index = rng.randrange(PAGES)
            result = self.stat(folder / self.page_names[title][index])
            if result.st_size != len(self.pages[title][index]):
                raise Wrong(f"{folder} page {index + 1} has st_size {result.st_size}, "
                            f"not {len(self.pages[title][index])}")  # fmt: skip
        elif choice == 2:
            result = self.stat(folder / self.files[title].name)
            if result.st_size != len(self.file_bytes[title]):
                raise Wrong(f"{folder}: the archive file has st_size {result.st_size}, "
                            f"not {len(self.file_bytes[title])}")  # fmt: skip
        elif choice == 3:
            self.stat(folder / "metadata.json")
        elif choice == 4:
            self.stat(folder / WITHOUT_COVER)
        else:
            about[:] = []  # the root: always there
            self.stat(self.mount.path)

    def op_metadata(self, rng: random.Random, about: list) -> None:
        title = rng.choice(self.titles)
        about.append(title)
        path = self.mount.path / title / "metadata.json"
        text = self.read_file("metadata", path)
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise Wrong(f"{path} is no JSON ({exc}): {text[:200]!r}...{text[-100:]!r}") from None
        if not isinstance(document, dict) or document.get("title") != title:
            raise Wrong(f"{path} is not the archive's metadata: {text[:200]!r}")

    def allowed(self, exc: OSError, subject: str | None) -> bool:
        if exc.errno in (errno.EIO, errno.EAGAIN, errno.EHOSTUNREACH):
            return True
        if exc.errno != errno.ENOENT or subject is None:
            return False
        if subject.startswith(("@search/", "@categories/")):
            return True
        return subject in self.titles and self.chaos.may_be_gone(subject)

    def reader(self, number: int, stop: threading.Event) -> None:
        rng = random.Random(f"{self.seed}-reader-{number}")
        ops = [self.op_page] * 7 + [self.op_range] * 4 + [self.op_listdir] * 3 + \
            [self.op_stat] * 3 + [self.op_metadata] * 3  # fmt: skip
        try:
            while not stop.is_set():
                op = rng.choice(ops)
                name = op.__name__.removeprefix("op_")
                about: list[str] = []  # the archive title or view the operation is about
                try:
                    op(rng, about)
                except OSError as exc:
                    subject = about[0] if about else None
                    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                    with self.lock:
                        self.errors[(name, code)] += 1
                        if not self.allowed(exc, subject):
                            self.unexpected.append(f"{name} {subject}: {exc!r}")
                    continue
                except Wrong as exc:
                    with self.lock:
                        self.wrong.append(f"{name}: {exc}")
                    continue
                with self.lock:
                    self.ok[name] += 1
        except BaseException:  # a bug in the test: say it, do not hide it
            with self.lock:
                self.crashed.append(f"reader {number}: {traceback.format_exc()}")


def first_difference(data: bytes, expected: bytes) -> str:
    for index, (a, b) in enumerate(zip(data, expected, strict=False)):
        if a != b:
            return f"; first wrong byte at {index}: {data[index : index + 16]!r}"
    return ""


def holds_links(view: str) -> bool:
    """Views whose entries are links to archive folders (the others hold folders)."""
    parts = view.split("/")
    return (
        view in ("@new", "@untagged")
        or (len(parts) == 2 and parts[0] in ("@search", "@categories"))
        or (len(parts) == 3 and parts[0] == "@tags")
    )


# pytest-timeout's 300 s is for one test of the suite; this one runs for SECONDS, then its
# threads are joined (BOUND + 30 s at most) and the checks after run (FINAL_TIMEOUT at most).
@pytest.mark.timeout(SECONDS + BOUND + 30 + FINAL_TIMEOUT + 120)
def test_soak_under_random_faults(server, mount, library):
    """32 readers for LRRFS_SOAK_SECONDS (90) while the faults change every 0.3-1 s; then,
    faults cleared: the mount alive and whole, every byte right, memory bounded, a clean log."""
    seed = SEED
    tag = f"[LRRFS_SOAK_SEED={seed}]"
    print(f"\nsoak: seed {seed} ({SECONDS:g} s, {READERS} readers); replay with "
          f"LRRFS_SOAK_SEED={seed}", flush=True)  # fmt: skip

    good_list = server.archives()
    titles = sorted(a["title"] for a in good_list)
    assert archive_names(mount.path) == titles, tag
    listings = {t: sorted(os.listdir(mount.path / t)) for t in titles}
    for title, names in listings.items():
        pages = [n for n in names if n[:3].isdigit()]
        assert len(pages) == PAGES and "metadata.json" in names, f"{tag} {title}: {names}"
    views = ["@new", "@tags", "@untagged", "@categories", "@search"]
    views += [f"@tags/{ns}" for ns in os.listdir(mount.path / "@tags")]
    views += [f"@tags/artist/{value}" for value in os.listdir(mount.path / "@tags" / "artist")]
    views += [f"@categories/{name}" for name in os.listdir(mount.path / "@categories")]
    views += [f"@search/{t}" for t in TAGS] + ["@search/no such tag"]
    server.clear_requests()

    stop = threading.Event()
    chaos = Chaos(server, mount.process.pid, good_list, seed, stop)
    soak = Soak(mount, library, titles, listings, views, chaos, seed)
    chaos_failure: list[BaseException] = []

    def run_chaos() -> None:
        try:
            chaos.run()
        except BaseException as exc:
            chaos_failure.append(exc)

    threads = [threading.Thread(target=soak.reader, args=(n, stop), daemon=True)
               for n in range(READERS)]  # fmt: skip
    threads.append(threading.Thread(target=run_chaos, daemon=True))
    started = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        stop.wait(SECONDS)  # the readers' time; the chaos thread stops at once on stop
    finally:
        stop.set()
        join_deadline = time.monotonic() + BOUND + 30
        for thread in threads:
            thread.join(max(0.0, join_deadline - time.monotonic()))
        server.clear_faults()
    ran = time.monotonic() - started
    stuck = [t.name for t in threads if t.is_alive()]

    total_ok = sum(soak.ok.values())
    per_errno: collections.Counter[str] = collections.Counter()
    for (_, code), count in soak.errors.items():
        per_errno[code] += count
    seen = server.requests()
    statuses = collections.Counter(str(r["status"]) for r in seen)
    rss = peak_rss_mb(mount.process.pid)
    print(f"soak: seed {seed}, {ran:.0f} s, {chaos.sets} fault sets "
          f"({', '.join(f'{a} {n}' for a, n in chaos.actions.most_common())})")  # fmt: skip
    print(f"soak: {total_ok + sum(per_errno.values())} operations, {total_ok} ok "
          f"({dict(soak.ok)}), errors {dict(per_errno)}, wrong {len(soak.wrong)}")  # fmt: skip
    print(f"soak: errors per operation {dict(soak.errors)}")
    print(
        "soak: longest call per operation: "
        + ", ".join(f"{op} {s:.2f} s ({what})" for op, (s, what) in sorted(soak.longest.items()))
    )
    print(f"soak: the server saw {len(seen)} requests, statuses {dict(statuses)}; "
          f"VmHWM {rss:.0f} MB, grew most {chaos.biggest_rises()}", flush=True)  # fmt: skip

    problems: list[str] = []
    if stuck:
        problems.append(f"threads still in a file call after {BOUND + 30:g} s: {stuck}")
    if chaos_failure:
        problems.append(f"the chaos thread failed: {chaos_failure[0]!r}")
    problems += [f"a reader failed (a bug in this test): {c}" for c in soak.crashed[:3]]
    if soak.wrong:
        problems.append(f"{len(soak.wrong)} wrong answers, the first: {soak.wrong[:10]}")
    if soak.unexpected:
        problems.append(f"{len(soak.unexpected)} unexpected errors: {soak.unexpected[:10]}")
    slow = {op: f for op, f in soak.longest.items() if f[0] > BOUND}
    if slow:
        problems.append(f"calls past the deadline + {SLACK:g} s: {slow}")
    if total_ok <= 100:
        problems.append(f"only {total_ok} operations succeeded")
    if mount.process.poll() is not None:
        problems.append(f"the mount died:\n{mount.log_text()[-5000:]}")
    else:
        # The faults are gone: the mount serves the whole library again, by itself. Run in a
        # thread: a call that hangs for good must fail this test, not stop it.
        final = threading.Thread(target=check_recovery, args=(mount, server, soak, problems))
        final.start()
        final.join(FINAL_TIMEOUT)
        if final.is_alive():
            problems.append(f"the checks after the faults did not end in {FINAL_TIMEOUT} s")
    if mount.process.poll() is not None:
        problems.append("the mount died after the faults")
    else:
        rss = peak_rss_mb(mount.process.pid)
        if rss >= RSS_CAP_MB:
            problems.append(f"peak RSS {rss:.0f} MB; it grew most {chaos.biggest_rises()}")
    log = mount.log_text()
    for needle in ("a bug in lrrfs", "internal error", "Traceback"):
        if needle in log:
            problems.append(f"the log says {needle!r}:\n{excerpt(log, needle)}")
    for secret in (KEY, base64.b64encode(KEY.encode()).decode()):
        if secret in log:
            problems.append(f"the log holds the API key:\n{excerpt(log, secret)}")
    for control in ("\x1b", "\x07"):
        if control in log:
            problems.append(f"the log holds {control!r}:\n{excerpt(log, control)!r}")
    assert not problems, f"{tag} {len(problems)} problems:\n" + "\n".join(problems)


def check_recovery(mount, server, soak: Soak, problems: list[str]) -> None:
    """With the faults cleared: the root lists the library (the refresh may lag), every page
    and every archive file reads right (a leaked connection slot or a lock left held would
    fail these with the 3 s deadline)."""
    titles = soak.titles
    if not wait_for(lambda: searches(mount, titles[0]), timeout=30):  # online again, if it left
        problems.append("the mount is not online again after the faults")
    if not wait_for(lambda: archive_names(mount.path) == titles, timeout=30):
        problems.append(f"the root lists {archive_names(mount.path)}, not {titles}")
    if sorted(a["title"] for a in server.archives()) != titles:
        problems.append("the server's library changed")
    drop_kernel_caches()
    for title in titles:
        for index, name in enumerate(soak.page_names[title]):
            path = mount.path / title / name
            try:
                if path.read_bytes() != soak.pages[title][index]:
                    problems.append(f"{path}: wrong bytes after the faults")
            except OSError as exc:
                problems.append(f"{path} after the faults: {exc!r}")
        path = mount.path / title / soak.files[title].name
        try:
            copy = hashlib.sha256(path.read_bytes()).digest()
            if copy != hashlib.sha256(soak.file_bytes[title]).digest():
                problems.append(f"{path} reads wrong after the faults")
        except OSError as exc:
            problems.append(f"{path} after the faults: {exc!r}")


def searches(mount, query: str) -> bool:
    """A search answers: only the server can (an offline mount fails it at once)."""
    try:
        os.listdir(mount.path / "@search" / query)
    except OSError:
        return False
    return True


def excerpt(log: str, needle: str) -> str:
    at = log.find(needle)
    return log[max(0, at - 2000) : at + 3000]
