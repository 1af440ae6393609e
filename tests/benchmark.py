"""Benchmark lrrfs against direct HTTP and local files, on the same test server, in one run.

    .venv/bin/python -m tests.benchmark            # the whole table, a few minutes
    .venv/bin/python -m tests.benchmark --quick    # smaller libraries, for a quick look
    .venv/bin/python -m tests.benchmark --archive  # only the archive file's rows

Each row measures lrrfs through a real FUSE mount and a baseline doing the same
job directly (over HTTP against the same server and bytes, or on local files),
in the same run, and prints their ratio. Every row runs twice: with no added
latency, and with 20 ms added to each request by the test server (a NAS over
Wi-Fi). "Cold" means a new mount with an empty disk cache; "warm" says which
caches are warm. Throughput rows take the best of three runs of each side.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import struct
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lrrfs.testserver.samples import make_archive, write_zip

from .conftest import PYTHON, Mount, Server, mount_env, start_mount, start_server, wait_for
from .test_desktop_thumbnails import complete, thumbnail_root, thumbnailed_files
from .test_large import peak_rss_mb

PAGE_BYTES = 200_000
CHUNK = 1 << 20
LATENCIES = (0, 20)
MOUNT_ARGS = ("--refresh-interval", "3600")  # no refresh of the archive list mid-row


@dataclass(frozen=True)
class Sizes:
    many: int = 10_000  # archives of the listing rows
    huge: int = 100_000  # archives of the memory row
    pages: int = 200  # pages of the listing and warm-read rows
    viewer_pages: int = 100  # pages of the image-viewer row
    big_mb: int = 500  # the archive read with `cat`
    read_gb: float = 2.0  # bytes read in the memory row
    thumbnail_pages: int = 100  # 2 MB pages of the file-manager row


QUICK = Sizes(many=2_000, huge=10_000, pages=100, viewer_pages=50, big_mb=200, read_gb=0.5,
              thumbnail_pages=50)  # fmt: skip


@dataclass
class Row:
    name: str
    latency: int
    lrrfs: str
    baseline: str
    ratio: str
    target: str
    met: str


# -- libraries ---------------------------------------------------------------------


def make_many(folder: Path, count: int) -> None:
    """`count` tiny archives, fast: one small zip with the archive's number as its
    comment (so that every archive gets its own id)."""
    folder.mkdir(parents=True, exist_ok=True)
    template = folder.parent / "template.zip"
    write_zip(template, [("01.jpg", b"\xff\xd8\xff\xe0" + bytes(200) + b"\xff\xd9")])
    with zipfile.ZipFile(template, "a") as archive:
        archive.comment = b"00000000"
    blob = template.read_bytes()
    template.unlink()
    assert blob.endswith(b"00000000") and struct.unpack("<H", blob[-10:-8])[0] == 8
    for i in range(count):
        (folder / f"Archive {i:06d}.zip").write_bytes(blob[:-8] + b"%08d" % i)


def make_server_thumbnails(server: Server, arcids) -> None:
    """Have the server make its covers first, as a real one does when archives arrive:
    the cold listing then measures lrrfs, not the server's thumbnail job."""
    with server.http() as http:
        for arcid in arcids:
            url = f"/api/archives/{arcid}/thumbnail"
            while http.get(url, params={"no_fallback": "true"}).status_code == 202:
                time.sleep(0.1)


# -- measuring ---------------------------------------------------------------------


def timed(job: Callable[[], object]) -> float:
    started = time.perf_counter()
    job()
    return time.perf_counter() - started


def best_of(runs: int, job: Callable[[], float]) -> float:
    return min(job() for _ in range(runs))


def best_alternated(
    runs: int, mine: Callable[[], float], theirs: Callable[[], float]
) -> tuple[float, float]:
    """The best time of each side, the two run in turn (this machine's speed drifts)."""
    times = [(mine(), theirs()) for _ in range(runs)]
    return min(t[0] for t in times), min(t[1] for t in times)


def read_file(path: Path) -> int:
    with open(path, "rb", buffering=0) as handle:
        total = 0
        while chunk := handle.read(CHUNK):
            total += len(chunk)
        return total


def read_files(paths: list[Path]) -> int:
    return sum(read_file(path) for path in paths)


def run(command: list[str]) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


class Mounts:
    """Mounts for the rows, each with its own disk cache folder unless told which."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._count = 0

    def cache_dir(self) -> Path:
        self._count += 1
        return self.workdir / f"cache-{self._count}"

    @contextlib.contextmanager
    def mount(self, server: Server, cache: Path | None = None) -> Iterator[Mount]:
        """A new mount: cold unless `cache` holds an earlier mount's disk cache."""
        self._count += 1
        path = self.workdir / f"mnt-{self._count}" / "lrr"
        cache = cache or self.cache_dir()
        with start_mount(server, path, args=(*MOUNT_ARGS, "--cache-dir", str(cache))) as mounted:
            yield mounted
        shutil.rmtree(path.parent, ignore_errors=True)


def ratio_row(name, latency, mine, theirs, unit, target, *, higher_is_better=False) -> Row:
    ratio = mine / theirs
    limit = float(target.split()[-1].rstrip("x"))
    met = ratio >= limit if higher_is_better else ratio <= limit
    fmt = (lambda v: f"{v:.0f} MB/s") if unit == "MB/s" else (lambda v: f"{v * 1000:.0f} ms")
    kind = "throughput" if higher_is_better else "time"
    return Row(name, latency, fmt(mine), fmt(theirs), f"{ratio:.2f}x {kind}", target,
               "yes" if met else "NO")  # fmt: skip


# -- the rows ----------------------------------------------------------------------


def mount_ready_time(server: Server, workdir: Path, cache: Path) -> float:
    """Seconds from starting `lrrfs mount -f` until the mount point answers."""
    path = workdir / "mnt-ready" / "lrr"
    path.mkdir(parents=True, exist_ok=True)
    command = [PYTHON, "-m", "lrrfs", "mount", server.url, str(path), "-f", *MOUNT_ARGS,
               "--cache-dir", str(cache)]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, env=mount_env(server.key), stderr=subprocess.DEVNULL)
    mounted = Mount(path, process, workdir / "mnt-ready.log")
    with mounted:
        while not os.path.ismount(path):
            if process.poll() is not None or time.perf_counter() - started > 120:
                raise RuntimeError("the mount did not come up")
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
        os.listdir(path)
    return elapsed


def script_fetch_time(server: Server) -> float:
    """Seconds for a new Python process to GET /api/archives and parse it."""
    script = (
        "import base64, json, os, sys, httpx\n"
        "key = os.environ.get('LRR_API_KEY')\n"
        "headers = {'Authorization': 'Bearer ' + base64.b64encode(key.encode()).decode()} "
        "if key else {}\n"
        "url = sys.argv[1] + '/api/archives'\n"
        "json.loads(httpx.get(url, headers=headers, timeout=60).content)\n"
    )
    return timed(lambda: subprocess.run([PYTHON, "-c", script, server.url], check=True,
                                        env=mount_env(server.key)))  # fmt: skip


def listing_rows(server: Server, mounts: Mounts, workdir: Path, latency: int, count: int):
    name = f"{count:,}-archive root"
    with server.http() as http:
        direct = best_of(3, lambda: timed(lambda: json.loads(http.get("/api/archives").content)))
    with mounts.mount(server) as mounted:
        cold = timed(lambda: run(["ls", str(mounted.path)]))
        run(["ls", "-l", str(mounted.path)])
        warm = best_of(3, lambda: timed(lambda: run(["ls", "-l", str(mounted.path)])))
    local = workdir / f"local-{count}"
    if not local.exists():
        for i in range(count):
            (local / f"Archive {i:06d}").mkdir(parents=True)
    run(["ls", "-l", str(local)])
    local_time = best_of(3, lambda: timed(lambda: run(["ls", "-l", str(local)])))
    yield ratio_row(f"cold `ls` of a {name} vs GET /api/archives + parse", latency,
                    cold, direct, "ms", "<= 1.5x")  # fmt: skip
    yield ratio_row(f"warm `ls -l` of a {name} vs `ls -l` of {count:,} local folders",
                    latency, warm, local_time, "ms", "<= 3x")  # fmt: skip
    cache = mounts.cache_dir()
    cold_ready = mount_ready_time(server, workdir, cache)
    warm_ready = mount_ready_time(server, workdir, cache)
    script = best_of(3, lambda: script_fetch_time(server))
    yield Row(f"`lrrfs mount -f` until ready, {name}: empty / warm disk cache", latency,
              f"{cold_ready * 1000:.0f} / {warm_ready * 1000:.0f} ms",
              f"{script * 1000:.0f} ms (a Python script: GET + parse)",
              f"{cold_ready / script:.2f}x / {warm_ready / script:.2f}x time",
              "-", "-")  # fmt: skip


def folder_listing_row(server: Server, mounts: Mounts, latency: int, pages: int, arcid: str):
    with mounts.mount(server) as mounted:
        lrrfs = timed(lambda: run(["ls", "-l", str(mounted.path / "Pages")]))
    urls = server.page_urls(arcid)
    with server.http() as http:
        direct = timed(lambda: [http.get(url).content for url in urls])
    return ratio_row(f"cold `ls -l` of a {pages}-page folder (exact sizes) vs GET of "
                     "each page, one by one", latency, lrrfs, direct, "ms", "<= 0.5x")  # fmt: skip


def viewer_row(server: Server, mounts: Mounts, latency: int, pages: int, arcid: str):
    """An image viewer: list the folder, then read its pages in order, one at a time.
    Alternated with the direct fetches (this machine's speed drifts), the best of
    three of each; every lrrfs run is a new mount with an empty cache."""
    urls = server.page_urls(arcid)

    def direct() -> float:
        with server.http() as http:
            return timed(lambda: [http.get(url).content for url in urls])

    def through_mount() -> float:
        with mounts.mount(server) as mounted:
            folder = mounted.path / "Viewer"
            names = sorted(n for n in os.listdir(folder) if n[0].isdigit())
            return timed(lambda: read_files([folder / n for n in names]))

    mine, theirs = best_alternated(3, through_mount, direct)
    return ratio_row(f"cold read of a {pages}-page archive's pages in order, one at a time, "
                     "vs GET of each page, one by one", latency, mine, theirs, "ms",
                     "<= 0.7x")  # fmt: skip


def warm_read_rows(server: Server, mounts: Mounts, workdir: Path, latency: int):
    """Re-reading a folder's pages read before: on the same mount (the kernel's cache),
    and on a new mount (the disk cache), against local files and the pyfuse3 floor.
    A new mount's best of three: each one starts with the kernel's cache empty."""
    local = workdir / "local-pages"
    if not local.exists():
        with zipfile.ZipFile(server.library / "Pages.zip") as archive:
            archive.extractall(local)
    local_files = sorted(local.iterdir())
    read_files(local_files)
    local_time = best_of(3, lambda: timed(lambda: read_files(local_files)))
    cache = mounts.cache_dir()
    with mounts.mount(server, cache) as mounted:
        folder = mounted.path / "Pages"
        files = [folder / n for n in sorted(os.listdir(folder)) if n[0].isdigit()]
        read_files(files)
        # The disk cache's writing and the folder's desktop thumbnails (both wait for
        # reading to pause) are not this row's.
        wait_for(lambda: len(list(cache.glob("*/v1/page/*/*"))) >= len(files), 60)
        root = thumbnail_root(mounted)
        wait_for(lambda: complete(root, thumbnailed_files(folder)), 120)
        same_mount = best_of(3, lambda: timed(lambda: read_files(files)))
    asked: list[dict] = []

    def new_mount() -> float:
        with mounts.mount(server, cache) as mounted:
            folder = mounted.path / "Pages"
            files = [folder / n for n in sorted(os.listdir(folder)) if n[0].isdigit()]
            server.clear_requests()
            took = timed(lambda: read_files(files))
            asked.extend(r for r in server.requests() if "/page" in r["path"])
            return took

    remounted = best_of(3, new_mount)
    assert not asked, f"a warm read asked the server for {len(asked)} pages"
    first, again = floor_times(local, workdir)
    count = len(local_files)
    yield Row(f"(floor) a minimal pyfuse3 file system serving the {count} pages from memory: "
              "first read / re-read", latency, f"{first * 1000:.0f} / {again * 1000:.0f} ms",
              f"{local_time * 1000:.0f} ms (local files)",
              f"{first / local_time:.2f}x / {again / local_time:.2f}x time", "-", "-")  # fmt: skip
    yield ratio_row(f"warm re-read of all {count} pages, same mount (kernel's cache; local "
                    f"files {same_mount / local_time:.1f}x), vs the floor's re-read", latency,
                    same_mount, again, "ms", "<= 1.3x")  # fmt: skip
    yield ratio_row(f"warm re-read of all {count} pages, new mount (disk cache; local files "
                    f"{remounted / local_time:.1f}x), vs the same mount's", latency, remounted,
                    same_mount, "ms", "<= 1.5x")  # fmt: skip
    yield ratio_row(f"warm re-read of all {count} pages, new mount, vs the floor's first read "
                    "(from memory, the kernel's cache empty)", latency, remounted, first, "ms",
                    "<= 1.3x")  # fmt: skip


def floor_times(folder: Path, workdir: Path) -> tuple[float, float]:
    """Reading `folder`'s files through tests/memfs.py: once (the kernel's cache empty;
    the best of three mounts), then again (the best of three). No Python FUSE file
    system can do better on this machine."""
    path = workdir / "mnt-floor"
    path.mkdir(exist_ok=True)
    command = [PYTHON, "-m", "tests.memfs", str(folder), str(path)]
    files = [path / name.name for name in sorted(folder.iterdir())]
    firsts, agains = [], []
    for _ in range(3):
        process = subprocess.Popen(command, cwd=Path(__file__).resolve().parent.parent)
        with Mount(path, process, workdir / "mnt-floor.log"):
            if not wait_for(lambda: os.path.ismount(path), 30):
                raise RuntimeError("tests.memfs did not mount")
            os.listdir(path)
            firsts.append(timed(lambda: read_files(files)))
            agains.append(best_of(3, lambda: timed(lambda: read_files(files))))
    return min(firsts), min(agains)


def thumbnailer_view(folder: Path, thumbnails: Path) -> tuple[float, int, int]:
    """A file manager opening a folder: list it, then for each page, as its thumbnailer
    (tumbler, gnome-desktop) does, look the page's "large" thumbnail up in the cache
    (valid for its URI and mtime: draw it), else read the page whole, scale it and store
    the thumbnail. Seconds, bytes of pages read, pages read."""
    from PIL import Image

    from lrrfs.library.freedesktop import Target, file_uri, is_valid, thumbnail_name

    started = time.perf_counter()
    names = sorted(n for n in os.listdir(folder) if n[0].isdigit())
    read = pages = 0
    for name in names:
        info = (folder / name).stat()
        target = Target(file_uri(os.fsencode(folder / name)), int(info.st_mtime), info.st_size)
        cached = thumbnails / "large" / thumbnail_name(target.uri)
        if is_valid(cached, target):
            Image.open(cached).load()
            continue
        data = (folder / name).read_bytes()
        read, pages = read + len(data), pages + 1
        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail((256, 256))
            cached.parent.mkdir(parents=True, exist_ok=True)
            image.save(cached, "PNG")
    return time.perf_counter() - started, read, pages


THUMBNAILER_SCRIPT = """
import ctypes, json, sys
from pathlib import Path
# The kernel's name of this process, as a thumbnailer's (tumblerd, gnome-thumbnailer): lrrfs
# tells file managers' thumbnailers by it.
ctypes.CDLL(None).prctl(15, b"lrrfs-thumbnail", 0, 0, 0)
from tests.benchmark import thumbnailer_view
print(json.dumps(thumbnailer_view(Path(sys.argv[1]), Path(sys.argv[2]))))
"""


def thumbnailer_process(folder: Path, thumbnails: Path) -> tuple[float, int, int]:
    """`thumbnailer_view` in a process of its own named as a thumbnailer."""
    done = subprocess.run([PYTHON, "-c", THUMBNAILER_SCRIPT, str(folder), str(thumbnails)],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                          text=True, check=True)  # fmt: skip
    seconds, read, pages = json.loads(done.stdout)
    return float(seconds), int(read), int(pages)


def make_photo_pages(path: Path, pages: int) -> None:
    """An archive of `pages` real 2 MB JPEG pages (1400x2000, noisy: a thumbnailer must
    decode them), one picture told apart by a comment per page; stored, as scans are."""
    from PIL import Image

    noise = Image.effect_noise((1400, 2000), 60).convert("RGB")
    picture = Image.blend(noise, Image.linear_gradient("L").resize(noise.size).convert("RGB"), 0.5)
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=95)
    body = out.getvalue()[2:]
    members = []
    for i in range(1, pages + 1):
        comment = f"page {i}".encode()
        segment = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
        members.append((f"{i:04d}.jpg", b"\xff\xd8" + segment + body))
    write_zip(path, members)


def thumbnail_rows(library: Path, mounts: Mounts, latency: int, pages: int):
    """A file manager showing a folder of 2 MB pages on a new mount, with the thumbnail
    cache filled by lrrfs from the server's small pictures, and without (--no-thumbnails).
    "At once": its thumbnailer starts as soon as the folder is listed, and reads itself the
    pages lrrfs has not done by then. "Listed before": the folder was listed a while
    before (an earlier visit, `ls`, icons scrolled into view later). Each run gets a new
    server, which makes its page pictures on demand (202, then a job), as a real one does
    for a folder nobody looked at yet."""
    for scenario in ("at once", "listed before"):
        runs = {}
        for label, args in (("with", ()), ("without", ("--no-thumbnails",))):
            with serving(library, mounts.workdir) as server:
                server.faults(latency_ms=latency)
                make_server_thumbnails(server, [a["arcid"] for a in server.archives()])
                runs[label] = thumbnailer_run(server, mounts, latency, scenario, args)
        (mine, mine_mb, read_pages, gets), (theirs, their_mb, _, their_gets) = (
            runs["with"],
            runs["without"],
        )
        yield Row(f"file-manager view of a new mount's {pages}-page folder of 2 MB JPEG pages, "
                  f"{scenario} (thumbnailer: look up the cache, else read and scale the "
                  "page): with / without lrrfs's thumbnails", latency,
                  f"{mine * 1000:.0f} ms, {mine_mb:.1f} MB ({read_pages} pages read, "
                  f"{gets} requests)",
                  f"{theirs * 1000:.0f} ms, {their_mb:.1f} MB ({their_gets} requests)",
                  f"{mine / theirs:.2f}x time, {mine_mb / their_mb:.3f}x bytes", "-",
                  "-")  # fmt: skip


def thumbnailer_run(server: Server, mounts: Mounts, latency: int, scenario: str, args):
    """Seconds of the view, MB moved for it (pages read, and lrrfs's pictures from the
    server), pages read, requests for pages or pictures the server served."""
    path = mounts.workdir / f"mnt-thumbs-{len(args)}-{scenario}-{latency}" / "lrr"
    cache = mounts.cache_dir()
    thumbnails = path.parent / "lrr.cache" / "thumbnails"
    with start_mount(server, path, args=(*MOUNT_ARGS, "--cache-dir", str(cache), *args)):
        folder = path / "Thumbs"
        server.clear_requests()
        if scenario == "listed before":
            names = [n for n in os.listdir(folder) if n[0].isdigit()]
            if not args:  # lrrfs fills the cache meanwhile
                wait_for(lambda: thumbnails_made(folder, names, thumbnails), 120)
        seconds, read, read_pages = thumbnailer_process(folder, thumbnails)
        asked = [r["path"] for r in server.requests()]
        gets = sum(("/page?" in p or "/download" in p or "/thumbnail?page" in p) for p in asked)
        pictures = sum(f.stat().st_size for f in cache.rglob("pagethumb/*/*"))
    shutil.rmtree(path.parent, ignore_errors=True)
    return seconds, (read + pictures) / 1e6, read_pages, gets


def thumbnails_made(folder: Path, names: list[str], thumbnails: Path) -> bool:
    from lrrfs.library.freedesktop import file_uri, thumbnail_name

    return all(
        (thumbnails / size / thumbnail_name(file_uri(os.fsencode(folder / name)))).exists()
        for name in names
        for size in ("normal", "large", "x-large")
    )


def memory_row(server: Server, mounts: Mounts, latency: int, sizes: Sizes):
    with mounts.mount(server) as mounted:
        run(["ls", "-l", str(mounted.path)])
        folder = mounted.path / "Pages"
        total = read_files([folder / n for n in sorted(os.listdir(folder)) if n[0].isdigit()])
        big = mounted.path / "Big" / "Big.zip"
        while total < sizes.read_gb * 1e9:
            total += read_file(big)
        peak = peak_rss_mb(mounted.process.pid)
    return Row(f"peak memory: {sizes.huge:,} archives listed (`ls -l`), "
               f"{total / 1e9:.1f} GB read", latency, f"{peak:.0f} MB RSS", "-", "-",
               "< 300 MB", "yes" if peak < 300 else "NO")  # fmt: skip


# -- the whole benchmark -------------------------------------------------------------


def build(workdir: Path, sizes: Sizes) -> tuple[Path, Path, Path]:
    make_photo_pages(workdir / "thumbs" / "Thumbs.zip", sizes.thumbnail_pages)
    main = workdir / "main"
    make_archive(main / "Pages.zip", sizes.pages, page_bytes=PAGE_BYTES)
    make_archive(main / "Viewer.zip", sizes.viewer_pages, page_bytes=PAGE_BYTES)
    make_archive(main / "Big.zip", sizes.big_mb // 2, page_bytes=2_000_000)
    many = workdir / "many"
    make_many(many, sizes.many)
    huge = workdir / "huge"
    make_many(huge, sizes.huge)
    for name in ("Pages.zip", "Big.zip"):
        os.link(main / name, huge / name)
    return main, many, huge


@contextlib.contextmanager
def serving(library: Path, workdir: Path) -> Iterator[Server]:
    with start_server(library, workdir) as server:
        with server.http() as http:  # let it index the library before any timing
            http.get("/api/archives", timeout=600).raise_for_status()
        yield server


def measure_archive(workdir: Path, sizes: Sizes) -> list[Row]:
    """Only the archive file's rows (`--archive`): a quicker look at them."""
    from .bench_archive import archive_rows

    main = workdir / "main"
    make_archive(main / "Big.zip", sizes.big_mb // 2, page_bytes=2_000_000)
    mounts = Mounts(workdir)
    rows: list[Row] = []
    with serving(main, workdir) as server:
        arcid = server.archives()[0]["arcid"]
        for latency in LATENCIES:
            server.faults(latency_ms=latency)
            rows += archive_rows(server, mounts, workdir, latency, sizes.big_mb, arcid)
    return rows


def measure(workdir: Path, sizes: Sizes) -> list[Row]:
    from .bench_archive import archive_rows

    main, many, huge = build(workdir, sizes)
    thumbs = workdir / "thumbs"
    mounts = Mounts(workdir)
    rows: list[Row] = []
    with serving(main, workdir) as server_main, serving(many, workdir) as server_many:
        ids = {a["title"]: a["arcid"] for a in server_main.archives()}
        make_server_thumbnails(server_main, ids.values())
        for latency in LATENCIES:
            for server in (server_main, server_many):
                server.faults(latency_ms=latency)
            rows += listing_rows(server_many, mounts, workdir, latency, sizes.many)
            rows.append(folder_listing_row(server_main, mounts, latency, sizes.pages,
                                           ids["Pages"]))  # fmt: skip
            rows.append(viewer_row(server_main, mounts, latency, sizes.viewer_pages,
                                   ids["Viewer"]))  # fmt: skip
            rows += archive_rows(server_main, mounts, workdir, latency, sizes.big_mb,
                                 ids["Big"])  # fmt: skip
            rows += warm_read_rows(server_main, mounts, workdir, latency)
            rows += thumbnail_rows(thumbs, mounts, latency, sizes.thumbnail_pages)
    with serving(huge, workdir) as server_huge:
        for latency in LATENCIES:
            server_huge.faults(latency_ms=latency)
            rows.append(memory_row(server_huge, mounts, latency, sizes))
    return rows


def measure_thumbnails(workdir: Path, sizes: Sizes) -> list[Row]:
    library = workdir / "thumbs"
    make_photo_pages(library / "Thumbs.zip", sizes.thumbnail_pages)
    mounts = Mounts(workdir)
    return [
        r for ms in LATENCIES for r in thumbnail_rows(library, mounts, ms, sizes.thumbnail_pages)
    ]


def print_table(rows: list[Row]) -> None:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    header = ("row", "added latency", "lrrfs", "baseline", "ratio", "target", "met")
    cells = [header] + [
        (r.name, f"{r.latency} ms", r.lrrfs, r.baseline, r.ratio, r.target, r.met)
        for r in sorted(rows, key=lambda r: r.latency)
    ]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]
    for i, row in enumerate(cells):
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller libraries, a quick look")
    parser.add_argument("--archive", action="store_true", help="only the archive file's rows")
    parser.add_argument("--thumbnails-only", action="store_true", help="the file-manager rows")
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes()
    with tempfile.TemporaryDirectory(prefix="lrrfs-bench-") as tmp:
        if args.thumbnails_only:
            rows = measure_thumbnails(Path(tmp), sizes)
        else:
            rows = (measure_archive if args.archive else measure)(Path(tmp), sizes)
    print_table(rows)


if __name__ == "__main__":
    main()
