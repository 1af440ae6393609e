"""File managers' thumbnail cache, filled by the mount from the server's small pictures.

Through real mounts of the test server: a folder is listed with `os.listdir`, and the
freedesktop cache (`$XDG_CACHE_HOME/thumbnails`, per mount here) is read back with
Pillow, checked against `stat` of the mount's files and against GLib's own URIs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

from lrrfs.library.freedesktop import SIZE_CLASSES, Target, file_uri, png_text
from lrrfs.library.thumbimage import scaled_pngs
from lrrfs.testserver.samples import make_archive, page, write_zip

from .conftest import start_mount, start_server, wait_for

ODD_TITLE = '日本語 "q" #1 50% a+b?c=d;e [x] ~!'


def thumbnail_root(mount) -> Path:
    """Where file managers run by the mount's user look (launch_mount's XDG_CACHE_HOME)."""
    return mount.path.parent / f"{mount.path.name}.cache" / "thumbnails"


def glib_uri(path: Path) -> str:
    """The URI GLib (so Thunar, Nautilus, Nemo, pcmanfm) gives a path: g_filename_to_uri;
    without GLib, the same rule written with urllib."""
    raw = os.fsencode(path)
    name = ctypes.util.find_library("glib-2.0")
    if name is None:
        return "file://" + quote(raw, safe="/!$&'()*+,:=@")
    glib = ctypes.CDLL(name)
    glib.g_filename_to_uri.restype = ctypes.c_void_p
    glib.g_filename_to_uri.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
    glib.g_free.argtypes = [ctypes.c_void_p]
    pointer = glib.g_filename_to_uri(raw, None, None)
    try:
        return ctypes.string_at(pointer).decode("ascii")
    finally:
        glib.g_free(pointer)


def cache_path(root: Path, size_class: str, file: Path) -> Path:
    return root / size_class / (hashlib.md5(glib_uri(file).encode()).hexdigest() + ".png")


def thumbnailed_files(folder: Path) -> list[Path]:
    """The files of an archive folder a file manager draws: pages, cover, archive file."""
    return sorted(folder / name for name in os.listdir(folder) if name not in ("metadata.json",))


def check_thumbnail(root: Path, size_class: str, file: Path) -> Image.Image:
    """The thumbnail is a whole PNG for this file as `stat` sees it, in its size class."""
    path = cache_path(root, size_class, file)
    info = os.stat(file)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with Image.open(path) as image:
        image.load()
    assert image.format == "PNG"
    assert image.text["Thumb::URI"] == glib_uri(file)
    assert image.text["Thumb::MTime"] == str(int(info.st_mtime))
    assert image.text["Thumb::Size"] == str(info.st_size)
    assert max(image.size) == SIZE_CLASSES[size_class]
    return image


def complete(root: Path, files: list[Path], classes=tuple(SIZE_CLASSES)) -> bool:
    return all(cache_path(root, c, f).exists() for f in files for c in classes)


def page_thumbnail_requests(server) -> list[str]:
    return [
        r["path"] for r in server.requests() if "/thumbnail?" in r["path"] and "page=" in r["path"]
    ]


def page_downloads(server) -> list[str]:
    return [r["path"] for r in server.requests() if "/page?" in r["path"]]


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """Plain pages, an odd title, and a page so wide that the server's picture of it
    (500 px wide) is too small for the x-large class."""
    folder = tmp_path_factory.mktemp("desktop-library")
    make_archive(folder / "Plain Pages.zip", 6, page_bytes=30_000)
    make_archive(folder / f"{ODD_TITLE}.cbz", 2, page_bytes=10_000)
    write_zip(folder / "Wide Page.zip", [("1.jpg", page("wide", "jpg", 7, (1600, 200)))])
    return folder


def test_listing_fills_the_cache_without_reading_a_page(library, tmp_path):
    with start_server(library, tmp_path) as server, start_mount(server, tmp_path / "mnt") as mount:
        server.clear_requests()
        root = thumbnail_root(mount)
        for title in ("Plain Pages", ODD_TITLE):
            folder = mount.path / title
            files = thumbnailed_files(folder)  # the listing
            assert len(files) == {"Plain Pages": 8, ODD_TITLE: 4}[title]
            assert wait_for(lambda files=files: complete(root, files))
            for file in files:
                for size_class in SIZE_CLASSES:
                    check_thumbnail(root, size_class, file)
        assert page_downloads(server) == []
        assert len(page_thumbnail_requests(server)) >= 8  # 6 + 2 pages, asked at least once
        assert "%22q%22%20%231%2050%25%20a+b%3Fc=d%3Be%20%5Bx%5D%20~!" in glib_uri(
            mount.path / ODD_TITLE
        )  # GLib's own escapes of the odd title, as the cache names it
        assert stat.S_IMODE(root.stat().st_mode) == 0o700


THUMBNAILER = """
import ctypes, sys
ctypes.CDLL(None).prctl(15, b"gnome-thumbnailer", 0, 0, 0)  # PR_SET_NAME, as GNOME's is named
with open(sys.argv[1], "rb") as page:
    page.read()
"""


def test_a_file_managers_own_thumbnailer_gets_the_folder(library, tmp_path):
    """A thumbnailer reading the pages as soon as the folder is listed (the server's pictures
    not made yet) gets the folder to itself: lrrfs's filling stops, and goes on with the
    next folder."""
    with (
        start_server(library, tmp_path, extra=("--thumbnail-delay", "3")) as server,
        start_mount(server, tmp_path / "mnt") as mount,
    ):
        root = thumbnail_root(mount)
        folder = mount.path / "Plain Pages"
        pages = [f for f in thumbnailed_files(folder) if f.name[0].isdigit()]
        assert wait_for(lambda: page_thumbnail_requests(server))  # lrrfs is at it
        subprocess.run([sys.executable, "-c", THUMBNAILER, str(pages[0])], check=True)
        assert wait_for(lambda: "left to the file manager's thumbnailer" in mount.log_text())
        wide = thumbnailed_files(mount.path / "Wide Page")  # the next folder: done next
        assert wait_for(lambda: complete(root, wide, ("normal",)))
        assert not any(cache_path(root, "normal", page).exists() for page in pages)


def test_thumbnails_wait_while_a_program_reads(library, tmp_path):
    """Making thumbnails takes a core (and the server's): while a program reads pages,
    the folder listed waits; once the reading pauses, it is done."""
    with start_server(library, tmp_path) as server, start_mount(server, tmp_path / "mnt") as mount:
        root = thumbnail_root(mount)
        wide_page = mount.path / "Wide Page" / "001.jpg"  # looked up, not listed: not queued
        wide_page.read_bytes()
        server.clear_requests()
        folder = mount.path / "Plain Pages"
        files = thumbnailed_files(folder)  # listed: queued
        for _ in range(2000):  # a viewer going through pages (each open tells the mount)
            wide_page.read_bytes()
        assert not page_thumbnail_requests(server)
        assert not any(cache_path(root, "normal", f).exists() for f in files)
        assert wait_for(lambda: complete(root, files))


def test_size_classes_are_never_scaled_up(library, tmp_path):
    """The server's picture of a 1600x200 page is 500x63: normal and large thumbnails
    come from it, an x-large one would be blown up, so the file manager makes that one."""
    with start_server(library, tmp_path) as server, start_mount(server, tmp_path / "mnt") as mount:
        root = thumbnail_root(mount)
        folder = mount.path / "Wide Page"
        page = next(folder / name for name in os.listdir(folder) if name.endswith(".jpg"))
        assert wait_for(lambda: complete(root, [page], ("normal", "large")))
        assert check_thumbnail(root, "normal", page).size == (128, 16)
        assert check_thumbnail(root, "large", page).size == (256, 32)
        cover = page.parent / "thumbnail.jpg"  # the wide page: the same sizes
        assert wait_for(lambda: complete(root, [cover], ("normal", "large")))
        assert not cache_path(root, "x-large", page).exists()


def test_valid_thumbnails_are_kept_and_stale_ones_replaced(library, tmp_path):
    with start_server(library, tmp_path) as server, start_mount(server, tmp_path / "mnt") as mount:
        root = thumbnail_root(mount)
        folder = mount.path / "Plain Pages"
        first, second = folder / "001.jpg", folder / "002.png"  # looked up, not listed
        mtime, size = int(first.stat().st_mtime), first.stat().st_size
        # A file manager's own thumbnail of page 1, and one of page 2 made before it changed.
        mine = Target(glib_uri(first), mtime, size)
        stale = Target(glib_uri(second), mtime - 1, second.stat().st_size)
        kept: dict[str, bytes] = {}
        for size_class, side in SIZE_CLASSES.items():
            for target, file in ((mine, first), (stale, second)):
                image = Image.new("RGB", (side, side), (255, 0, 0))
                out = io.BytesIO()
                image.save(out, "PNG", pnginfo=png_info(target))
                path = cache_path(root, size_class, file)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(out.getvalue())
                if file == first:
                    kept[size_class] = out.getvalue()
        files = thumbnailed_files(folder)
        assert wait_for(lambda: all(fresh(root, f) for f in files))
        for size_class in SIZE_CLASSES:
            assert cache_path(root, size_class, first).read_bytes() == kept[size_class]
            check_thumbnail(root, size_class, second)


def png_info(target: Target):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in target.text.items():
        info.add_text(key, value)
    return info


def fresh(root: Path, file: Path) -> bool:
    """Every size class of the file has a thumbnail of it as it is now."""
    mtime = str(int(file.stat().st_mtime))
    for size_class in SIZE_CLASSES:
        path = cache_path(root, size_class, file)
        text = png_text(path.read_bytes()) if path.exists() else None
        if text is None or text.get("Thumb::MTime") != mtime:
            return False
    return True


def test_no_thumbnails_option_and_old_servers_leave_the_cache_alone(library, tmp_path):
    """--no-thumbnails, and a 0.7 server (no page pictures): nothing written, nothing
    asked. Each is listed before a mount that does fill the cache has finished: it has
    had as long as that one to do anything."""
    with (
        start_server(library, tmp_path, generation="0.9") as server,
        start_server(library, tmp_path, generation="0.7") as old_server,
        start_mount(server, tmp_path / "off", args=("--no-thumbnails",)) as off,
        start_mount(old_server, tmp_path / "old-mnt") as old,
        start_mount(server, tmp_path / "on") as on,
    ):
        for mount in (off, old):
            assert len(thumbnailed_files(mount.path / "Plain Pages")) == 8
        old_server.clear_requests()
        files = thumbnailed_files(on.path / "Plain Pages")
        assert wait_for(lambda: complete(thumbnail_root(on), files))
        for mount in (off, old):
            assert not thumbnail_root(mount).exists()
        assert page_thumbnail_requests(old_server) == []
        assert "makes no page thumbnails" in old.log_text()


def test_remount_fills_the_cache_from_the_disk_cache(library, tmp_path):
    """The server's pictures are kept on disk: after a remount against a server that has
    forgotten them (restarted), the cache is filled again without asking for one."""
    with start_server(library, tmp_path) as server:
        with start_mount(server, tmp_path / "mnt") as mount:
            root = thumbnail_root(mount)
            files = thumbnailed_files(mount.path / "Plain Pages")
            assert wait_for(lambda: complete(root, files))
        shutil.rmtree(root)
        server = server.restart()
        with server, start_mount(server, tmp_path / "mnt") as mount:
            assert thumbnail_root(mount) == root
            files = thumbnailed_files(mount.path / "Plain Pages")
            assert wait_for(lambda: complete(root, files))
            for file in files:
                check_thumbnail(root, "large", file)
            assert page_thumbnail_requests(server) == []
            assert page_downloads(server) == []


# -- pure logic beside the mount ------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [b"/mnt/lrr/Plain/0001.jpg", "/m/日本語 \"q\" #1 50% a+b?;[x]~!/é.png".encode(),
     b"/m/\xff\xfe raw/\x01\x7f", b"/m/a&b=c@d:e,f$g'(h)*/x"],
)  # fmt: skip
def test_uris_are_glibs(path):
    assert file_uri(path) == glib_uri(Path(os.fsdecode(path)))


def test_png_text_wants_a_whole_png():
    image = Image.new("RGB", (4, 4))
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=png_info(Target("file:///a", 5, 6)))
    data = out.getvalue()
    assert png_text(data) == {"Thumb::URI": "file:///a", "Thumb::MTime": "5",
                              "Thumb::Size": "6", "Software": "lrrfs"}  # fmt: skip
    assert png_text(data[:-1]) is None  # cut short
    assert png_text(data[:40] + bytes([data[40] ^ 1]) + data[41:]) is None  # a bit flipped
    assert png_text(b"GIF89a" + data[6:]) is None


def test_pictures_are_scaled_down_never_up():
    out = io.BytesIO()
    Image.new("RGB", (300, 150)).save(out, "JPEG")
    pngs = scaled_pngs(out.getvalue(), Target("file:///a", 1, 2), list(SIZE_CLASSES))
    assert set(pngs) == {"normal", "large"}
    sizes = {c: Image.open(io.BytesIO(png)).size for c, png in pngs.items()}
    assert sizes == {"normal": (128, 64), "large": (256, 128)}
