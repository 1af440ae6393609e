"""Benchmark lrrfs against direct HTTP on the same test server, in the same run.

    .venv/bin/python -m tests.benchmark [--big-mb 500] [--pages 200]

Each row measures lrrfs through a real FUSE mount and a baseline doing the same
job directly over HTTP, against the same server and bytes, and prints their
ratio. Every row runs twice: with no added latency, and with 20 ms added to
each request by the test server (a NAS over Wi-Fi). Mounts are cold (new) for
each measurement.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lrrfs.testserver.samples import make_archive

from .conftest import Server, start_mount, start_server

PAGE_BYTES = 200_000
CHUNK = 1 << 20


def timed(job: Callable[[], object]) -> float:
    started = time.perf_counter()
    job()
    return time.perf_counter() - started


def cold_listing(server: Server, workdir: Path, title: str, arcid: str) -> tuple[float, float]:
    """`ls -l` of a cold folder vs downloading its pages one by one."""
    with start_mount(server, workdir / "mnt-ls") as mount:
        lrrfs = timed(lambda: subprocess.run(["ls", "-l", str(mount.path / title)],
                                             check=True, capture_output=True))  # fmt: skip
    urls = server.page_urls(arcid)
    with server.http() as http:
        direct = timed(lambda: [http.get(url).content for url in urls])
    return lrrfs, direct


def archive_read(server: Server, workdir: Path, title: str, arcid: str) -> tuple[float, float]:
    """Reading the whole archive file through the mount vs a direct streamed download."""
    with start_mount(server, workdir / "mnt-cat") as mount:
        path = mount.path / title / f"{title}.zip"
        size = path.stat().st_size

        def read_mount() -> None:
            with open(path, "rb", buffering=0) as handle:
                while handle.read(CHUNK):
                    pass

        lrrfs = timed(read_mount)

    def download() -> None:
        with server.http() as http, http.stream("GET", f"/api/archives/{arcid}/download") as r:
            for _ in r.iter_raw(CHUNK):
                pass

    direct = timed(download)
    mb = size / 1e6
    return mb / lrrfs, mb / direct


def make_server_thumbnails(server: Server, arcids) -> None:
    """Have the server make its covers first, as a real one does when archives arrive:
    the cold listing then measures lrrfs, not the server's thumbnail job."""
    with server.http() as http:
        for arcid in arcids:
            url = f"/api/archives/{arcid}/thumbnail"
            while http.get(url, params={"no_fallback": "true"}).status_code == 202:
                time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-mb", type=int, default=500)
    parser.add_argument("--pages", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lrrfs-bench-") as tmp:
        workdir = Path(tmp)
        library = workdir / "library"
        make_archive(library / "Pages.zip", args.pages, page_bytes=PAGE_BYTES)
        make_archive(library / "Big.zip", args.big_mb // 2, page_bytes=2_000_000)
        with start_server(library, workdir) as server:
            ids = {a["title"]: a["arcid"] for a in server.archives()}
            make_server_thumbnails(server, ids.values())
            rows = []
            for latency in (0, 20):
                server.faults(latency_ms=latency)
                lrrfs, direct = cold_listing(server, workdir, "Pages", ids["Pages"])
                rows.append((f"cold `ls -l` of a {args.pages}-page folder", latency,
                             f"{lrrfs * 1000:.0f} ms", f"{direct * 1000:.0f} ms",
                             f"{lrrfs / direct:.3f}x time", "<= 0.5x"))  # fmt: skip
                mine, theirs = archive_read(server, workdir, "Big", ids["Big"])
                rows.append((f"read of a {args.big_mb} MB archive", latency,
                             f"{mine:.0f} MB/s", f"{theirs:.0f} MB/s",
                             f"{mine / theirs:.2f}x throughput", ">= 0.85x"))  # fmt: skip
            server.clear_faults()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    header = ("row", "added latency", "lrrfs", "direct HTTP", "ratio", "target")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
