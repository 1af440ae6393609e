"""`@files`: every archive's own file side by side, as links, for backups that follow
links (`rsync -aL`, `cp -L`). Through a real mount of the test server, both API generations."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from lrrfs.testserver.samples import make_archive

from .conftest import start_mount, start_server
from .test_views import arcid_of

# relative path in the server's library -> (pages, date_added): the older of two files
# with the same name keeps it
ARCHIVES = {
    "Same.zip": (2, 1000),
    "sub/Same.zip": (3, 1001),
    "Other.cbz": (2, 1002),
    "deep/er/Odd name #1.zip": (1, 1003),
}
PAGE_LISTS = ("/files", "/extract")  # GET /files (0.9), POST /extract (0.7)


@pytest.fixture(scope="module", params=["0.9", "0.7"], ids=lambda g: f"lrr{g}")
def files_server(request, tmp_path_factory):
    library = tmp_path_factory.mktemp("files-library")
    state = {}
    for rel, (pages, added) in ARCHIVES.items():
        (library / rel).parent.mkdir(parents=True, exist_ok=True)
        make_archive(library / rel, pages, page_bytes=4000)
        state[rel] = {"tags": f"date_added:{added}"}
    (library / ".lrrfs-server.json").write_text(json.dumps({"archives": state}))
    with start_server(
        library, tmp_path_factory.mktemp("files-server"), generation=request.param
    ) as server:
        yield server


def expected_files(server) -> dict[str, Path]:
    """The names `@files` should hold -> the file in the server's library."""
    ids = {arcid_of(server.library / rel): rel for rel in ARCHIVES}
    sub_id = next(arcid for arcid, rel in ids.items() if rel == "sub/Same.zip")
    names = {"Same.zip": "Same.zip", "sub/Same.zip": f"Same [{sub_id[:8]}].zip",
             "Other.cbz": "Other.cbz", "deep/er/Odd name #1.zip": "Odd name #1.zip"}  # fmt: skip
    return {names[rel]: server.library / rel for rel in ARCHIVES}


def page_list_requests(server) -> list[str]:
    return [r["path"] for r in server.requests() if r["path"].endswith(PAGE_LISTS)]


def test_files_links_every_archives_file_by_a_name_of_its_own(files_server, tmp_path):
    expected = expected_files(files_server)
    with start_mount(files_server, tmp_path / "lrr") as mount:
        files = mount.path / "@files"
        assert "@files" in os.listdir(mount.path)
        assert sorted(os.listdir(files)) == sorted(expected)
        folder_of = {
            json.loads((folder / "metadata.json").read_text())["arcid"]: folder.name
            for folder in mount.folders()
        }
        for name, original in expected.items():
            target = os.readlink(files / name)
            folder, file_name = target.removeprefix("../").split("/")
            assert folder == folder_of[arcid_of(original)]
            # the link leads to the archive file in its folder, named as it is there
            assert file_name in os.listdir(mount.path / folder)
            assert os.lstat(files / name).st_size == len(target.encode())
            assert (files / name).read_bytes() == original.read_bytes()


def test_rsync_follows_the_links_and_copies_again_nothing_that_did_not_change(
    files_server, tmp_path
):
    expected = expected_files(files_server)
    backup = tmp_path / "backup"
    files_server.clear_requests()
    with start_mount(files_server, tmp_path / "lrr", args=("--no-progress",)) as mount:
        source = f"{mount.path}/@files/"
        subprocess.run(["rsync", "-aL", source, f"{backup}/"], check=True)
        assert sorted(os.listdir(backup)) == sorted(expected)
        for name, original in expected.items():
            copy = backup / name
            assert not copy.is_symlink() and copy.read_bytes() == original.read_bytes()
        # A backup reads the files, never the pages: no folder's page list was asked for.
        assert page_list_requests(files_server) == []
        again = subprocess.run(
            ["rsync", "-aL", "--itemize-changes", source, f"{backup}/"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        assert again.stdout.strip() == ""  # same sizes and times: nothing to copy
        mtimes = {os.stat(backup / name).st_mtime for name in expected}
        assert mtimes == {os.stat(mount.path / "@files" / name).st_mtime for name in expected}


def test_nothing_can_be_made_or_removed_in_files(files_server, tmp_path):
    with start_mount(files_server, tmp_path / "lrr") as mount:
        files = mount.path / "@files"
        name = sorted(os.listdir(files))[0]
        with pytest.raises(OSError) as removed:
            os.unlink(files / name)
        assert removed.value.errno in (errno.EROFS, errno.EACCES)
        with pytest.raises(PermissionError):
            (files / "new.zip").write_bytes(b"PK")
        with pytest.raises(PermissionError):
            os.rename(files / name, files / "renamed.zip")
        assert name in os.listdir(files)
        assert (files / name).stat().st_size > 0
