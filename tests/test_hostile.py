"""Hostile titles and odd archives still give valid, unique, stable names and a working mount."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

from lrrfs.testserver.samples import make_archive

from .conftest import archive_names, start_mount, start_server

HOSTILE_TITLES = [
    "a/b/c",
    "nul\0byte",
    "ctrl\x01\x02\x1b[31mred",
    ".",
    "..",
    "",
    "   ",
    "x" * 1000,
    "é" * 600,
    "\u202eevil\u202dgpj.exe",
    "📚🔥 emoji",
    "Dup",
    "Dup",
    "Dup",
    "metadata.json",
]


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    library = tmp_path_factory.mktemp("hostile")
    state = {}
    for index, title in enumerate(HOSTILE_TITLES):
        name = f"archive-{index:02d}.zip"
        make_archive(library / name, 2, page_bytes=3000)
        state[name] = {"title": title, "tags": f"date_added:{1000 + index}"}
    with zipfile.ZipFile(library / "Empty.zip", "w") as empty:
        empty.writestr("readme.txt", "no images in here\n")
    (library / ".lrrfs-server.json").write_text(json.dumps({"archives": state}))
    with start_server(library, tmp_path_factory.mktemp("hostile-server")) as server:
        yield server


def test_hostile_titles_give_valid_unique_names(hostile_server, tmp_path):
    with start_mount(hostile_server, tmp_path / "lrr") as mount:
        names = archive_names(mount.path)
        assert len(names) == len(set(names)) == len(HOSTILE_TITLES) + 1
        for name in names:
            raw = name.encode("utf-8")
            assert len(raw) <= 255 and b"/" not in raw and name not in (".", "..")
            assert not any(ord(c) < 0x20 for c in name)
        titles = []
        for name in names:
            folder = mount.path / name
            shown = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
            titles.append(shown["title"])
            for entry in folder.iterdir():
                assert len(entry.read_bytes()) == entry.stat().st_size
        server_titles = [a["title"] for a in hostile_server.archives()]
        assert sorted(titles) == sorted(server_titles)  # metadata.json shows the real title
        assert "Dup" in names  # the oldest of the duplicates keeps the plain title
        assert len([n for n in names if n.startswith("Dup [")]) == 2
    with start_mount(hostile_server, tmp_path / "lrr") as again:
        assert archive_names(again.path) == sorted(names)  # stable across remounts


def test_an_archive_without_pages_is_an_empty_but_working_folder(hostile_server, tmp_path):
    with start_mount(hostile_server, tmp_path / "lrr") as mount:
        folder = mount.path / "Empty"
        names = sorted(os.listdir(folder))
        assert "Empty.zip" in names and "metadata.json" in names
        assert not [n for n in names if n[:3].isdigit()]
        assert (folder / "Empty.zip").read_bytes() == (
            hostile_server.library / "Empty.zip"
        ).read_bytes()


def test_a_title_cut_to_255_bytes_keeps_whole_characters(hostile_server, tmp_path):
    with start_mount(hostile_server, tmp_path / "lrr") as mount:
        long = [n for n in os.listdir(mount.path) if n.startswith("é")]
        assert long == ["é" * 127]  # 254 bytes: a 2-byte character does not fit in the last one
        assert [n for n in os.listdir(mount.path) if n.startswith("xxx")] == ["x" * 255]


def test_names_from_the_server_never_escape_their_folder(hostile_server, tmp_path):
    with start_mount(hostile_server, tmp_path / "lrr") as mount:
        root = Path(mount.path).resolve()
        for folder in mount.folders():
            assert folder.resolve().parent == root
            for entry in folder.iterdir():
                assert entry.resolve().parent == folder.resolve()
