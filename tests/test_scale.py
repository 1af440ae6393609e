"""Big libraries and big archives: 100,000 archives, an archive of 10,000 pages."""

from __future__ import annotations

import io
import os
import random
import subprocess
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from lrrfs.testserver.samples import make_archive

from .conftest import archive_names, start_mount, start_server

ARCHIVES = 100_000
PAGES = 10_000


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def write_many_archives(library: Path, count: int) -> None:
    """`count` one-page zips, each different (so each has its own arcid), written fast."""
    png = tiny_png()
    for index in range(count):
        folder = library / f"{index // 1000:03d}"
        folder.mkdir(exist_ok=True)
        with zipfile.ZipFile(folder / f"Archive {index:06d}.zip", "w") as archive:
            archive.writestr(f"{index:06d}.png", png)


@pytest.fixture(scope="module")
def big_library_server(tmp_path_factory):
    library = tmp_path_factory.mktemp("big-library")
    write_many_archives(library, ARCHIVES)
    with start_server(library, tmp_path_factory.mktemp("big-server")) as server:
        yield server


def test_a_library_of_100000_archives(big_library_server, tmp_path):
    with start_mount(big_library_server, tmp_path / "lrr", args=("--timeout", "120")) as mount:
        names = archive_names(mount.path)
        assert len(names) == len(set(names)) == ARCHIVES
        listing = subprocess.run(
            ["ls", "-l", str(mount.path)], capture_output=True, text=True, check=True
        )
        folders = listing.stdout.count("\ndr-x") + listing.stdout.count("\ndrwx")
        assert folders == len(os.listdir(mount.path))  # every entry: archives' and views'
        for index in random.Random(7).sample(range(ARCHIVES), 5):
            folder = mount.path / f"Archive {index:06d}"
            page = folder / "1.png" if (folder / "1.png").exists() else folder / "001.png"
            assert page.read_bytes() == tiny_png()


def test_an_archive_of_10000_pages(tmp_path):
    library = tmp_path / "library"
    make_archive(library / "Ten Thousand.zip", PAGES, page_bytes=500)
    with (
        start_server(library, tmp_path) as server,
        start_mount(server, tmp_path / "lrr") as mount,
    ):
        folder = mount.path / "Ten Thousand"
        server.clear_requests()
        names = sorted(os.listdir(folder))
        pages = [n for n in names if n[:5].isdigit()]
        assert len(pages) == PAGES
        assert pages[0] == "00001.jpg" and pages[-1] == "10000.png"
        assert not [r for r in server.requests() if "/page?" in r["path"]]  # sizes: zip directory
        with zipfile.ZipFile(library / "Ten Thousand.zip") as archive:
            members = sorted(archive.namelist(), key=lambda name: int(name.split(".")[0]))
            for index in (0, 4999, PAGES - 1):
                assert (folder / pages[index]).read_bytes() == archive.read(members[index])
                assert (folder / pages[index]).stat().st_size == archive.getinfo(
                    members[index]
                ).file_size
