"""The mount as users see it: folders, pages, thumbnail, archive file, metadata.json.

Everything goes through a real FUSE mount (a subprocess) of the LRR-compatible
test server on 127.0.0.1, with ordinary file calls and real programs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from PIL import Image

from lrrfs.library.names import safe_name
from lrrfs.testserver.samples import make_archive

from .conftest import archive_names, start_mount, start_server

PAGE_SUFFIXES = {".jpg", ".png", ".gif", ".webp", ".avif", ".jxl", ".bmp", ".heic", ".img"}


def is_page(name: str) -> bool:
    stem, suffix = os.path.splitext(name)
    return stem.isdigit() and suffix in PAGE_SUFFIXES


def folder_of(mounted, server, arcid: str) -> Path:
    """The folder the mount shows for an archive (titles here are plain and unique)."""
    entry = next(a for a in server.archives() if a["arcid"] == arcid)
    matches = [p for p in mounted.folders() if p.name.startswith(safe_name(entry["title"]))]
    for path in matches:
        if json.loads((path / "metadata.json").read_text())["arcid"] == arcid:
            return path
    raise AssertionError(f"no folder for {entry['title']!r}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_root_has_one_folder_per_archive_named_by_title(mounted, server):
    archives = server.archives()
    names = archive_names(mounted.path)
    assert len(names) == len(archives)
    titles = [a["title"] for a in archives]
    for title in set(titles):
        count = titles.count(title)
        named = [n for n in names if n == title or n.startswith(f"{title} [")]
        assert len(named) == count, title
        assert title in names  # one of them keeps the plain title


def test_each_folder_holds_pages_thumbnail_archive_and_metadata(mounted, server):
    for entry in server.archives():
        folder = folder_of(mounted, server, entry["arcid"])
        names = sorted(os.listdir(folder))
        pages = [n for n in names if is_page(n)]
        others = sorted(set(names) - set(pages))
        archive_name = server.archive_file_name(entry)
        assert others == sorted([archive_name, "metadata.json", "thumbnail.jpg"]), folder
        assert len(pages) == len(server.page_urls(entry["arcid"]))


def test_pages_are_in_reading_order_and_equal_a_direct_get(mounted, server):
    with server.http() as http:
        for entry in server.archives():
            folder = folder_of(mounted, server, entry["arcid"])
            urls = server.page_urls(entry["arcid"])
            pages = sorted(n for n in os.listdir(folder) if is_page(n))
            assert len(pages) == len(urls)
            for name, url in zip(pages, urls, strict=True):
                direct = http.get(url)
                assert direct.status_code == 200
                assert (folder / name).read_bytes() == direct.content, (folder.name, name)
                real_suffix = os.path.splitext(unquote(urlsplit(url).query))[1].lower()
                assert name.endswith(real_suffix or ".img")


def test_nested_pages_and_same_names_in_two_subfolders_all_appear(mounted, server):
    same = folder_of(mounted, server, by_title(server, "Same Names")["arcid"])
    pages = sorted(n for n in os.listdir(same) if is_page(n))
    assert pages == ["001.jpg", "002.jpg", "003.jpg", "004.jpg"]
    assert len({sha256((same / p).read_bytes()) for p in pages}) == 4
    nested = folder_of(mounted, server, by_title(server, "Nested Folder Test")["arcid"])
    nested_pages = sorted(n for n in os.listdir(nested) if is_page(n))
    assert len(nested_pages) == 5 and sum(n.endswith(".png") for n in nested_pages) == 1


def by_title(server, title: str) -> dict:
    return next(a for a in server.archives() if a["title"] == title)


def test_stat_size_equals_bytes_read_for_every_file(mounted):
    for folder in mounted.folders():
        for path in folder.iterdir():
            size = path.stat().st_size
            with open(path, "rb") as handle:
                data = handle.read()
                assert handle.seek(0, os.SEEK_END) == size
            assert len(data) == size, path


def test_archive_file_is_byte_identical_to_a_direct_download(mounted, server):
    with server.http() as http:
        for entry in server.archives():
            folder = folder_of(mounted, server, entry["arcid"])
            name = server.archive_file_name(entry)
            direct = http.get(f"/api/archives/{entry['arcid']}/download").content
            assert sha256((folder / name).read_bytes()) == sha256(direct), name


def test_programs_copy_and_open_the_archive_files(mounted, server, tmp_path):
    entry = by_title(server, "Nested Folder Test")
    folder = folder_of(mounted, server, entry["arcid"])
    archive = folder / "Nested Folder Test.zip"
    with zipfile.ZipFile(archive) as opened:  # seeks to the end: needs the exact size
        assert opened.testzip() is None
    shutil.copyfile(archive, tmp_path / "copy.zip")  # sendfile
    assert (tmp_path / "copy.zip").read_bytes() == archive.read_bytes()
    with tarfile.open(tmp_path / "folder.tar", "w") as tar:
        tar.add(folder, arcname="x")
    with tarfile.open(tmp_path / "folder.tar") as tar:
        member = tar.extractfile("x/Nested Folder Test.zip")
        assert member is not None and member.read() == archive.read_bytes()


def test_cp_r_of_a_folder(mounted, server, tmp_path):
    folder = folder_of(mounted, server, by_title(server, "Weird Names")["arcid"])
    subprocess.run(["cp", "-r", str(folder), str(tmp_path / "copy")], check=True)
    for path in folder.iterdir():
        assert (tmp_path / "copy" / path.name).read_bytes() == path.read_bytes()


def test_rsync_backs_up_the_original_archives(mounted, server, tmp_path):
    target = tmp_path / "backup"
    subprocess.run(
        ["rsync", "-a", "--include=*/", "--include=*.zip", "--include=*.cbz",
         "--include=*.cbt", "--include=*.tar.gz", "--exclude=*",
         f"{mounted.path}/", f"{target}/"],
        check=True,
    )  # fmt: skip
    originals = {sha256(p.read_bytes()) for p in server.library.rglob("*") if p.is_file()}
    copied = [p for p in target.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(copied) == len(server.archives())  # once each: @files holds links
    for path in copied:
        assert sha256(path.read_bytes()) in originals, path


def test_every_page_and_thumbnail_decodes_as_an_image(mounted):
    for folder in mounted.folders():
        for path in folder.iterdir():
            if is_page(path.name) or path.name == "thumbnail.jpg":
                with Image.open(io.BytesIO(path.read_bytes())) as image:
                    image.load()
                    assert image.width > 0 and image.height > 0


def test_thumbnail_is_the_servers_real_cover(mounted, server):
    entry = by_title(server, "Simple Comic [Tester]")
    folder = folder_of(mounted, server, entry["arcid"])
    data = (folder / "thumbnail.jpg").read_bytes()
    assert data[:3] == b"\xff\xd8\xff"  # a JPEG, not the PNG placeholder
    direct = server.get(f"/api/archives/{entry['arcid']}/thumbnail", params={"no_fallback": "true"})
    assert direct.status_code == 200 and direct.content == data


def test_metadata_json_shows_the_servers_metadata(mounted, server):
    for entry in server.archives():
        folder = folder_of(mounted, server, entry["arcid"])
        shown = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
        assert shown["title"] == entry["title"]
        assert shown["tags"] == [t.strip() for t in entry["tags"].split(",") if t.strip()]
        assert shown["isnew"] is True  # "true" on 0.7, true on 0.9
        for field in ("arcid", "summary", "filename", "extension", "size"):
            assert shown.get(field) == entry.get(field), field
        # Reading progress moves as other tests read pages: it follows within a refresh.
        for field in ("pagecount", "progress"):
            assert isinstance(shown[field], int), field


def test_mode_bits_say_the_truth_and_nothing_is_executable(mounted):
    """With an API key only metadata.json (and folders, for editors' files) is writable."""
    assert stat.S_IMODE(os.stat(mounted.path).st_mode) == 0o755
    for folder in mounted.folders():
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
        for path in folder.iterdir():
            mode = path.stat().st_mode
            expected = 0o644 if path.name == "metadata.json" else 0o444
            assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == expected, path
    folder = mounted.folders()[0]
    for name in os.listdir(folder):
        if name == "metadata.json":
            continue
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC):
            with pytest.raises(PermissionError):
                os.close(os.open(folder / name, flags))


def test_page_lists_are_fetched_lazily_and_sizes_need_no_page_download(server, tmp_path):
    server.clear_requests()
    with start_mount(server, tmp_path / "lrr") as mount:
        os.listdir(mount.path)
        made = [r["path"] for r in server.requests()]
        assert not [p for p in made if "/files" in p or "/extract" in p or "/page" in p]
        check_cold_listing_downloads_no_page(mount, server)


def check_cold_listing_downloads_no_page(mount, server):
    folder = folder_of(mount, server, by_title(server, "Large Archive")["arcid"])
    server.clear_requests()
    listing = subprocess.run(["ls", "-l", str(folder)], capture_output=True, text=True, check=True)
    assert "001.jpg" in listing.stdout
    made = [r["path"] for r in server.requests()]
    assert not [p for p in made if "/page" in p], made  # sizes came from the zip directory
    route = "/extract" if server.generation == "0.7" else "/files"
    assert len([p for p in made if p.endswith(route)]) == 1, made


def test_ls_a_df_and_times_show_what_programs_expect(mounted):
    """`.` and `..` are listed, every folder has a real time (none in 1970), and df's
    figures add up (Used + Avail = Size)."""
    for folder in (mounted.path, mounted.folders()[0], mounted.path / "@tags"):
        listing = subprocess.run(["ls", "-a", str(folder)], capture_output=True, text=True)
        assert listing.stdout.split("\n")[:2] == [".", ".."], listing.stdout
        assert os.stat(folder).st_mtime > 1_000_000_000  # 2001 on: a real date
    df = subprocess.run(["df", "-B1", str(mounted.path)], capture_output=True, text=True)
    size, used, avail = (int(field) for field in df.stdout.splitlines()[1].split()[1:4])
    assert size == used + avail and size > 0


def test_unknown_names_are_not_found(mounted):
    folder = mounted.folders()[0]
    for name in ("nope", "999.jpg", "desktop.ini", ".hidden"):
        assert not (folder / name).exists()
    assert not (mounted.path / "no such archive").exists()


def test_comic_names_name_archive_files_as_comic_books(tmp_path):
    """-o comic_names: a zip shows as .cbz, a tar as .cbt (evince refuses .zip), same bytes."""
    library = tmp_path / "library"
    library.mkdir()
    make_archive(library / "Zipped.zip", 2, page_bytes=2000)
    make_archive(library / "Tarred.tar", 2, page_bytes=2000, fmt="tar")
    with (
        start_server(library, tmp_path) as server,
        start_mount(server, tmp_path / "lrr", args=("-o", "comic_names")) as mount,
    ):
        zipped, tarred = mount.path / "Zipped" / "Zipped.cbz", mount.path / "Tarred" / "Tarred.cbt"
        assert zipped.read_bytes() == (library / "Zipped.zip").read_bytes()
        assert tarred.read_bytes() == (library / "Tarred.tar").read_bytes()
        assert "Zipped.zip" not in os.listdir(mount.path / "Zipped")


def test_folder_icons_give_dolphin_the_cover(tmp_path):
    """-o folder_icons: a `.directory` naming the cover as the folder's icon (Dolphin)."""
    library = tmp_path / "library"
    library.mkdir()
    make_archive(library / "Covered.zip", 2, page_bytes=2000)
    with (
        start_server(library, tmp_path) as server,
        start_mount(server, tmp_path / "lrr", args=("-o", "folder_icons")) as mount,
    ):
        settings = mount.path / "Covered" / ".directory"
        assert ".directory" in os.listdir(mount.path / "Covered")
        text = settings.read_text()
        assert text.splitlines() == ["[Desktop Entry]", "Icon=./thumbnail.jpg"]
        assert settings.stat().st_size == len(text.encode())
        assert (mount.path / "Covered" / "thumbnail.jpg").read_bytes()[:2] == b"\xff\xd8"
