"""Managing the library through the mount: archives copied in (uploads), folders deleted,
categories and tankoubons as folders of links, the new flag. Both API generations."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lrrfs.library.diskcache import server_folder_name
from lrrfs.testserver.samples import make_archive

from .conftest import start_mount, start_server, wait_for
from .test_views import arcid_of

BOOKS = 4


# Uploads exist on current servers only (the old generation's refusal: test_cp_adds_the_archive).
UPLOADS = pytest.mark.parametrize("change_server", ["0.9"], indirect=True, ids=["lrr0.9"])


@pytest.fixture(scope="module", params=["0.9", "0.7"], ids=lambda g: f"lrr{g}")
def change_server(request, tmp_path_factory):
    library = tmp_path_factory.mktemp("change-library")
    for index in range(BOOKS):
        make_archive(library / f"Book {index:02d}.zip", 2, page_bytes=3000)
    with start_server(
        library, tmp_path_factory.mktemp("change-server"), generation=request.param
    ) as server:
        yield server


@pytest.fixture(scope="module")
def mount(change_server, tmp_path_factory):
    """A mount that may delete archives."""
    path = tmp_path_factory.mktemp("change-mnt") / "lrr"
    with start_mount(change_server, path, args=("--allow-delete",)) as mounted:
        yield mounted


@pytest.fixture(scope="module")
def plain_mount(change_server, tmp_path_factory):
    """A mount started without --allow-delete, in the fstab -o form."""
    path = tmp_path_factory.mktemp("change-plain") / "lrr"
    with start_mount(change_server, path, args=("-o", "allow_delete=no")) as mounted:
        yield mounted


@pytest.fixture
def new_archive(tmp_path):
    """A fresh archive to copy in (its content unique to the test)."""
    counter = iter(range(1000))

    def make(name: str = "Fresh Book.cbz", pages: int = 3) -> Path:
        path = tmp_path / f"src{next(counter)}" / name
        path.parent.mkdir()
        return make_archive(path, pages, page_bytes=4000 + len(str(tmp_path)) + pages)

    return make


def modern(server) -> bool:
    return server.generation == "0.9"


def requests(server, method: str, fragment: str) -> list[dict]:
    return [r for r in server.requests() if r["method"] == method and fragment in r["path"]]


def server_titles(server) -> set[str]:
    return {a["title"] for a in server.archives()}


def failure(call) -> int:
    try:
        call()
    except OSError as exc:
        return exc.errno
    return 0


# -- adding ------------------------------------------------------------------------------


def test_cp_adds_the_archive(mount, change_server, new_archive):
    source = new_archive("Copied In.cbz")
    change_server.clear_requests()
    result = subprocess.run(["cp", str(source), str(mount.path)], capture_output=True, text=True)
    if not modern(change_server):
        assert result.returncode != 0
        assert "Read-only file system" in result.stderr
        assert "has no upload API" in mount.log_text()
        assert requests(change_server, "PUT", "/upload") == []
        return
    assert result.returncode == 0, result.stderr
    # close() returned: the server has it, and the folder is there at once
    assert "Copied In" in server_titles(change_server)
    assert (mount.path / "Copied In").is_dir()
    with zipfile.ZipFile(source) as original:
        first = sorted(original.namelist())[0]
        assert (mount.path / "Copied In" / f"001.{first.rsplit('.', 1)[1]}").read_bytes() == (
            original.read(first)
        )
    [upload] = requests(change_server, "PUT", "/api/archives/upload")
    assert upload["status"] == 200
    assert not (mount.path / "Copied In.cbz").exists() or "Copied In.cbz" not in os.listdir(
        mount.path
    )


@pytest.mark.parametrize("tool", ["rsync", "gio", "shutil", "rename", "odd_chunks"])
@UPLOADS
def test_copy_programs(mount, change_server, new_archive, tool):
    title = f"By {tool}"
    source = new_archive(f"{title}.zip")
    target = mount.path / source.name
    if tool == "rsync":
        subprocess.run(["rsync", str(source), str(mount.path) + "/"], check=True)
    elif tool == "gio":
        subprocess.run(["gio", "copy", str(source), str(target)], check=True)
    elif tool == "shutil":
        shutil.copy(source, target)  # copies the mode by path after close
    elif tool == "rename":  # a desktop file manager: a temporary name, then its own
        temporary = mount.path / f".{source.name}.part"
        temporary.write_bytes(source.read_bytes())
        assert title not in server_titles(change_server)  # not an archive's name: waits
        os.rename(temporary, target)
    else:
        data = source.read_bytes()
        with open(target, "wb") as out:
            for start in range(0, len(data), 7777):
                out.write(data[start : start + 7777])
                out.flush()
    assert title in server_titles(change_server)
    assert (mount.path / title).is_dir()


@UPLOADS
def test_refusals_of_copies(mount, change_server, new_archive, tmp_path):
    # the same file twice: EEXIST
    source = new_archive("Twice.zip")
    shutil.copy(source, mount.path)
    assert failure(lambda: shutil.copyfile(source, mount.path / "Twice again.zip")) == (
        errno.EEXIST
    )
    assert "already" in mount.log_text()
    # a type the server does not take: EINVAL
    odd = tmp_path / "odd.cbr"
    odd.write_bytes(b"not an archive")
    assert failure(lambda: shutil.copyfile(odd, mount.path / odd.name)) == errno.EINVAL
    assert "Unsupported file extension" in mount.log_text()
    # the checksum the server computes differs (bytes changed on the way): EIO
    change_server.faults(
        rules=[{"match": "PUT /api/archives/upload", "action": "status", "status": 417}]
    )
    try:
        late = new_archive("Checksum.zip")
        assert failure(lambda: shutil.copyfile(late, mount.path / late.name)) == errno.EIO
    finally:
        change_server.clear_faults()
    assert "Checksum" not in server_titles(change_server)
    assert "Twice again" not in server_titles(change_server)


@UPLOADS
def test_copy_into_a_category(mount, change_server, new_archive):
    os.mkdir(mount.path / "@categories" / "Inbox")
    source = new_archive("Into Inbox.zip")
    shutil.copyfile(source, mount.path / "@categories" / "Inbox" / source.name)
    assert os.listdir(mount.path / "@categories" / "Inbox") == ["Into Inbox"]
    [cat] = [c for c in change_server.get("/api/categories").json() if c["name"] == "Inbox"]
    [entry] = [a for a in change_server.archives() if a["title"] == "Into Inbox"]
    assert cat["archives"] == [entry["arcid"]]


@UPLOADS
def test_copy_killed_midway_sends_nothing(mount, change_server, new_archive):
    change_server.clear_requests()
    target = mount.path / "Killed.zip"
    writer = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "writing"
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.wait()
    assert wait_for(lambda: not target.exists())
    assert "cut short" in mount.log_text()
    assert requests(change_server, "PUT", "/upload") == []
    assert "Killed" not in server_titles(change_server)
    assert (mount.path / "Book 00").is_dir()  # the mount lives on


SLOW_WRITER = """
import sys, time
with open(sys.argv[1], "wb") as f:
    f.write(b"PK" + bytes(100000))
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


@UPLOADS
def test_two_mounts_add_the_same_file(mount, change_server, new_archive, tmp_path):
    source = new_archive("Raced.zip")
    with start_mount(change_server, tmp_path / "second") as second:
        copies = [
            subprocess.Popen(["cp", str(source), str(m.path)], stderr=subprocess.PIPE, text=True)
            for m in (mount, second)
        ]
        results = [(c.wait(), c.stderr.read()) for c in copies]  # type: ignore[union-attr]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    assert any("File exists" in text for _, text in results)
    assert [a["title"] for a in change_server.archives()].count("Raced") == 1


@UPLOADS
def test_copies_wait_in_the_cache_folder_and_a_dead_mounts_are_removed(
    change_server, new_archive, tmp_path
):
    """A copy's bytes wait beside the disk cache (`--cache-dir` on a big disk takes them);
    the spool files a killed mount left are removed by the next mount, a live one's kept,
    and a file the server never got is kept at unmount."""
    cache = tmp_path / "big disk"
    spool = cache / server_folder_name(change_server.url) / "uploads"
    spool.mkdir(parents=True)
    ended = subprocess.Popen(["true"])
    ended.wait()
    stale = spool / f"upload-{ended.pid}-1"
    stale.write_bytes(b"PK" + bytes(1000))
    live = spool / f"upload-{os.getpid()}-1"  # this test's own PID: a running process
    live.write_bytes(b"PK")
    source = new_archive("Spooled.zip").read_bytes()
    with start_mount(change_server, tmp_path / "lrr", args=("--cache-dir", str(cache))) as mount:
        assert not stale.exists() and live.exists()
        mine = f"upload-{mount.process.pid}-"
        with open(mount.path / "Spooled.zip", "wb") as handle:
            handle.write(source[:1000])
            handle.flush()
            [waiting] = [p for p in spool.iterdir() if p.name.startswith(mine)]
            handle.write(source[1000:])
        assert "Spooled" in server_titles(change_server)
        assert not waiting.exists()
        (mount.path / "notes.txt").write_text("mine")  # not an archive's name: never sent
    assert "left by a mount that ended mid-copy" in mount.log_text()
    # Unmounted: the file the server never got is kept for its owner, and stays kept.
    assert (spool / "unsent" / "notes.txt").read_text() == "mine"
    assert "'notes.txt' was not sent to the server" in mount.log_text()
    with start_mount(change_server, tmp_path / "lrr", args=("--cache-dir", str(cache))):
        assert (spool / "unsent" / "notes.txt").read_text() == "mine"


# -- deleting ----------------------------------------------------------------------------


def test_delete_needs_the_option(plain_mount, change_server):
    change_server.clear_requests()
    result = subprocess.run(
        ["rm", "-r", str(plain_mount.path / "Book 01")], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "--allow-delete" in plain_mount.log_text()
    assert "Book 01" in server_titles(change_server)
    assert requests(change_server, "DELETE", "/api/archives/") == []
    assert (plain_mount.path / "Book 01" / "metadata.json").exists()


def test_a_page_or_the_archive_file_alone_is_refused(mount, change_server):
    folder = mount.path / "Book 02"
    page = sorted(p for p in os.listdir(folder) if p[0].isdigit())[0]
    assert failure(lambda: os.unlink(folder / page)) == errno.EACCES
    archive_file = next(p for p in os.listdir(folder) if p.endswith(".zip"))
    assert failure(lambda: os.unlink(folder / archive_file)) == errno.EACCES
    assert "cannot be deleted alone" in mount.log_text()
    assert failure(lambda: os.rmdir(folder)) == errno.ENOTEMPTY
    assert "Book 02" in server_titles(change_server)


def test_rm_r_deletes_the_archive(mount, change_server):
    change_server.clear_requests()
    subprocess.run(["rm", "-r", str(mount.path / "Book 03")], check=True)
    assert not (mount.path / "Book 03").exists()
    assert "Book 03" not in os.listdir(mount.path)
    assert "Book 03" not in server_titles(change_server)
    assert len(requests(change_server, "DELETE", "/api/archives/")) == 1
    # and after the mount's next refreshes (every 2 s here)
    change_server.clear_requests()
    assert wait_for(lambda: len(requests(change_server, "GET", "/api/archives")) >= 2)
    assert "Book 03" not in os.listdir(mount.path)


# -- categories, tankoubons, the new flag ---------------------------------------------------


def test_categories_as_folders(mount, change_server):
    cats = mount.path / "@categories"
    os.mkdir(cats / "Picks")
    os.symlink("../../Book 00", cats / "Picks" / "Book 00")
    subprocess.run(["ln", "-s", str(mount.path / "Book 01"), str(cats / "Picks")], check=True)
    assert sorted(os.listdir(cats / "Picks")) == ["Book 00", "Book 01"]
    assert os.readlink(cats / "Picks" / "Book 01") == "../../Book 01"
    # mv of a link from one category to another
    os.mkdir(cats / "Later")
    subprocess.run(["mv", str(cats / "Picks" / "Book 01"), str(cats / "Later")], check=True)
    assert os.listdir(cats / "Later") == ["Book 01"]
    assert os.listdir(cats / "Picks") == ["Book 00"]
    # cp -r of a link copies the link: added
    subprocess.run(["cp", "-r", str(cats / "Picks" / "Book 00"), str(cats / "Later")], check=True)
    assert sorted(os.listdir(cats / "Later")) == ["Book 00", "Book 01"]
    on_server = {c["name"]: c for c in change_server.get("/api/categories").json()}
    assert len(on_server["Later"]["archives"]) == 2
    # rm of a link: out of the category, the archive stays
    os.unlink(cats / "Later" / "Book 00")
    assert os.listdir(cats / "Later") == ["Book 01"]
    assert (mount.path / "Book 00").is_dir()
    assert failure(lambda: os.rmdir(cats / "Later")) == errno.ENOTEMPTY
    os.unlink(cats / "Later" / "Book 01")
    os.rmdir(cats / "Later")
    assert "Later" not in os.listdir(cats)
    # a folder itself cannot go into a category (a file manager's plain drag): said how
    target = cats / "Picks" / "Book 02"
    assert failure(lambda: os.rename(mount.path / "Book 02", target)) == errno.EACCES
    assert "an archive folder stays where it is" in mount.log_text()
    assert (mount.path / "Book 02").is_dir() and "Book 02" not in os.listdir(cats / "Picks")
    assert "Later" not in {c["name"] for c in change_server.get("/api/categories").json()}


def test_dynamic_categories_are_read_only(mount, change_server):
    response = change_server.http(change_server.key).put(
        "/api/categories", params={"name": "Search Cat", "search": "Book"}
    )
    assert response.status_code == 200
    folder = mount.path / "@categories" / "Search Cat"
    assert wait_for(lambda: folder.is_dir() and os.listdir(folder))
    target = mount.path / "Book 00"
    assert failure(lambda: os.symlink(target, folder / "Book 00x")) == errno.EROFS
    assert failure(lambda: os.unlink(folder / os.listdir(folder)[0])) == errno.EROFS
    assert "dynamic category" in mount.log_text()


def test_rm_in_new_clears_the_flag(mount, change_server):
    new = mount.path / "@new"
    assert "Book 00" in os.listdir(new)
    os.unlink(new / "Book 00")
    assert "Book 00" not in os.listdir(new)
    assert (mount.path / "Book 00").is_dir()
    [entry] = [a for a in change_server.archives() if a["title"] == "Book 00"]
    assert entry["isnew"] in (False, "false")


def test_tankoubons_as_folders(mount, change_server):
    tanks = mount.path / "@tankoubons"
    if not modern(change_server):
        assert not tanks.exists()
        return
    os.mkdir(tanks / "Series")
    os.symlink("../../Book 02", tanks / "Series" / "x")
    os.symlink("../../Book 00", tanks / "Series" / "y")
    assert os.listdir(tanks / "Series") == ["01 Book 02", "02 Book 00"]  # the server's order
    assert os.readlink(tanks / "Series" / "01 Book 02") == "../../Book 02"
    os.unlink(tanks / "Series" / "01 Book 02")
    assert os.listdir(tanks / "Series") == ["01 Book 00"]
    os.unlink(tanks / "Series" / "01 Book 00")
    os.rmdir(tanks / "Series")
    assert change_server.get("/api/tankoubons").json()["result"] == []


def test_a_tankoubons_volumes_are_reordered_by_their_number(mount, change_server):
    tanks = mount.path / "@tankoubons"
    if not modern(change_server):
        assert not tanks.exists()
        return
    saga = tanks / "Saga"
    os.mkdir(saga)
    for book in ("Book 00", "Book 01", "Book 02"):
        os.symlink(f"../../{book}", saga / "x")
    assert sorted(os.listdir(saga)) == ["01 Book 00", "02 Book 01", "03 Book 02"]

    def server_order() -> list[str]:
        titles = {a["arcid"]: a["title"] for a in change_server.archives()}
        [tank] = [t for t in change_server.get("/api/tankoubons").json()["result"]
                  if t["name"] == "Saga"]  # fmt: skip
        return [titles[arcid] for arcid in tank["archives"]]

    subprocess.run(["mv", str(saga / "03 Book 02"), str(saga / "01 Book 02")], check=True)
    assert sorted(os.listdir(saga)) == ["01 Book 02", "02 Book 00", "03 Book 01"]
    assert server_order() == ["Book 02", "Book 00", "Book 01"]
    assert os.readlink(saga / "01 Book 02") == "../../Book 02"
    os.rename(saga / "01 Book 02", saga / "9 Book 02")  # past the last: the last
    assert sorted(os.listdir(saga)) == ["01 Book 00", "02 Book 01", "03 Book 02"]
    assert server_order() == ["Book 00", "Book 01", "Book 02"]
    # Only the number can change; and a category's links have no order: refused, not a
    # success that changes nothing.
    assert failure(lambda: os.rename(saga / "01 Book 00", saga / "01 Other")) == errno.EINVAL
    assert failure(lambda: os.rename(saga / "01 Book 00", saga / "Book 00")) == errno.EINVAL
    assert server_order() == ["Book 00", "Book 01", "Book 02"]
    assert "reordered by their number only" in mount.log_text()
    picks = mount.path / "@categories" / "Ordered"
    os.mkdir(picks)
    os.symlink("../../Book 00", picks / "Book 00")
    assert failure(lambda: os.rename(picks / "Book 00", picks / "01 Book 00")) == errno.EINVAL
    assert os.listdir(picks) == ["Book 00"]
    os.unlink(picks / "Book 00")
    os.rmdir(picks)
    while links := sorted(os.listdir(saga)):  # the others are numbered anew at each rm
        os.unlink(saga / links[0])
    os.rmdir(saga)


def test_categories_and_tankoubons_are_renamed_by_mv(mount, change_server):
    cats = mount.path / "@categories"
    with change_server.http() as http:  # pinned, made on the server: a rename keeps the pin
        answer = http.put("/api/categories", params={"name": "Shelf", "pinned": "1"}).json()
    assert wait_for(lambda: "Shelf" in os.listdir(cats), timeout=10)  # the refresh: 2 s
    os.symlink("../../Book 00", cats / "Shelf" / "Book 00")
    if not modern(change_server):  # no rename API: said, and nothing changes
        assert failure(lambda: os.rename(cats / "Shelf", cats / "Top Shelf")) == errno.ENOTSUP
        assert "cannot rename categories" in mount.log_text()
    else:
        subprocess.run(["mv", str(cats / "Shelf"), str(cats / "Top Shelf")], check=True)
        assert os.listdir(cats / "Top Shelf") == ["Book 00"]  # the folder the kernel kept
        assert "Shelf" not in os.listdir(cats)
        [best] = [c for c in change_server.get("/api/categories").json()
                  if c["id"] == answer["category_id"]]  # fmt: skip
        assert (best["name"], best["pinned"], len(best["archives"])) == ("Top Shelf", 1, 1)
        os.mkdir(cats / "Other")
        assert failure(lambda: os.rename(cats / "Top Shelf", cats / "Other")) == errno.EEXIST
        os.rmdir(cats / "Other")
        tanks = mount.path / "@tankoubons"
        os.mkdir(tanks / "Saga")
        os.symlink("../../Book 01", tanks / "Saga" / "x")
        subprocess.run(["mv", str(tanks / "Saga"), str(tanks / "Epic")], check=True)
        assert os.listdir(tanks) == ["Epic"] and os.listdir(tanks / "Epic") == ["01 Book 01"]
        assert [t["name"] for t in change_server.get("/api/tankoubons").json()["result"]] == [
            "Epic"
        ]
        os.unlink(tanks / "Epic" / "01 Book 01")
        os.rmdir(tanks / "Epic")
        os.rename(cats / "Top Shelf", cats / "Shelf")
    os.unlink(cats / "Shelf" / "Book 00")
    os.rmdir(cats / "Shelf")


def test_a_reorder_the_server_does_not_apply_fails_and_says_so(tmp_path):
    """A tankoubon that still lists an archive the server no longer has: the server answers
    success to the new order and ignores it (as LANraragi does); the read-back catches it."""
    library = tmp_path / "library"
    for index in range(2):
        make_archive(library / f"Vol {index}.zip", 2, page_bytes=3000)
    ids = [arcid_of(library / f"Vol {index}.zip") for index in range(2)]
    gone = "f" * 40
    tank = {"id": "TANK_1000000000", "name": "Saga", "summary": "", "tags": "",
            "archives": [ids[0], gone, ids[1]]}  # fmt: skip
    (library / ".lrrfs-server.json").write_text(json.dumps({"tankoubons": [tank]}))
    with start_server(library, tmp_path) as server:
        with start_mount(server, tmp_path / "lrr") as mounted:
            saga = mounted.path / "@tankoubons" / "Saga"
            assert sorted(os.listdir(saga)) == ["01 Vol 0", "02 Vol 1"]  # listed ones only
            assert failure(lambda: os.rename(saga / "02 Vol 1", saga / "01 Vol 1")) == errno.EIO
            assert "the server answered yes but did not apply it" in mounted.log_text()
            assert sorted(os.listdir(saga)) == ["01 Vol 0", "02 Vol 1"]
        assert server.get("/api/tankoubons").json()["result"][0]["archives"] == tank["archives"]


def test_read_only_views_refuse(mount):
    tags = mount.path / "@tags"
    assert failure(lambda: os.mkdir(tags / "new")) == errno.EACCES


# -- a large upload ------------------------------------------------------------------------

BIG = 2 << 30


def big_zip(path: Path, size: int) -> Path:
    """A zip of stored members of random bytes, `size` bytes or a little more, made fast."""
    chunk = os.urandom(64 << 20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("0001.png", b"\x89PNG\r\n\x1a\n" + os.urandom(4000))
        for index in range(size // len(chunk)):
            with archive.open(f"data/{index:04d}.bin", "w", force_zip64=True) as member:
                member.write(chunk[index:] + chunk[:index])
    return path


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@UPLOADS
def test_a_2gb_upload_streams(mount, change_server, tmp_path):
    source = big_zip(tmp_path / "Huge Book.zip", BIG)
    try:
        copy = subprocess.Popen(["cp", str(source), str(mount.path)])
        peak, seen_progress = 0, False
        while copy.poll() is None:
            peak = max(peak, rss_bytes(mount.process.pid))
            status = subprocess.run(
                [sys.executable, "-m", "lrrfs", "status", str(mount.path), "--json"],
                capture_output=True, text=True,
            )  # fmt: skip
            states = json.loads(status.stdout or "[]")
            seen_progress = seen_progress or any(s.get("uploads") for s in states)
        assert copy.returncode == 0
        print(f"mount RSS peak during a {source.stat().st_size >> 20} MiB upload: {peak >> 20} MiB")
        assert peak < 200 << 20
        assert seen_progress  # lrrfs status showed the upload under way
        assert "Huge Book" in server_titles(change_server)
    finally:
        source.unlink(missing_ok=True)
        for entry in change_server.archives():  # the server's copy goes too (2 GB)
            if entry["title"] == "Huge Book":
                change_server.http().delete(f"/api/archives/{entry['arcid']}")
