"""Views (@new, @untagged, @tags, @categories, @search) and reading progress, through a real
mount of the test server, against both API generations."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from lrrfs.testserver.samples import make_archive

from .conftest import KEY, PYTHON, start_mount, start_server, wait_for

# file -> (title or None for the file's name, tags, isnew)
ARCHIVES = {
    "Alpha.zip": (None, "artist:alice,series:one,color,parody:fate/go,date_added:1000", True),
    "Beta.zip": (None, "artist:bob,color,_:odd,date_added:1001", False),
    "Gamma.zip": (None, "date_added:1002", True),
    "at-new.zip": ("@new", "artist:alice,date_added:1003", True),
    "at-tags.zip": ("@tags", "date_added:1004", False),
    "at.zip": ("@", "misc,date_added:1005", False),
    "wide-at-new.zip": ("\uff20new", "date_added:1006", False),  # the escaped name's twin
    "Delta.zip": (None, "date_added:1007", True),  # edited through the mount
    "Epsilon.zip": (None, "date_added:1008", True),  # changed on the server
    "Zeta.zip": (None, "date_added:1009", False),  # read: progress
    "Eta.zip": (None, "date_added:1010", True),  # read: cleared of its new flag
    "Theta.tar": (None, "date_added:1011", False),  # page sizes come from fetching pages
}
VIEWS = ["@categories", "@files", "@new", "@offline", "@search", "@tags", "@untagged"]


def arcid_of(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()[:512000]).hexdigest()


@pytest.fixture(scope="module", params=["0.9", "0.7"], ids=lambda g: f"lrr{g}")
def views_server(request, tmp_path_factory):
    library = tmp_path_factory.mktemp("views-library")
    state = {}
    for name, (title, tags, isnew) in ARCHIVES.items():
        fmt = "tar" if name.endswith(".tar") else "zip"
        make_archive(library / name, 5 if name == "Zeta.zip" else 3, page_bytes=3000, fmt=fmt)
        state[name] = {"tags": tags, "isnew": isnew, **({"title": title} if title else {})}
    ids = {name: arcid_of(library / name) for name in ARCHIVES}
    categories = [
        {"id": "SET_1", "name": "Favs", "archives": [ids["Alpha.zip"], ids["Gamma.zip"]]},
        {"id": "SET_2", "name": "Alices", "search": "artist:alice"},
        {"id": "SET_3", "name": "Favs", "archives": [ids["Beta.zip"]]},
    ]
    seed = {"archives": state, "categories": categories}
    (library / ".lrrfs-server.json").write_text(json.dumps(seed))
    with start_server(
        library, tmp_path_factory.mktemp("views-server"), generation=request.param
    ) as server:
        yield server


@pytest.fixture(scope="module")
def mount(views_server, tmp_path_factory):
    with start_mount(views_server, tmp_path_factory.mktemp("views-mnt") / "lrr") as mounted:
        yield mounted


def folders(mount) -> dict[str, str]:
    """arcid -> the archive's folder name at the top of the mount."""
    found = {}
    for path in mount.path.iterdir():
        if not path.name.startswith("@"):
            found[json.loads((path / "metadata.json").read_text())["arcid"]] = path.name
    return found


def listing(mount, view: str) -> list[str]:
    return sorted(os.listdir(mount.path / view))


def arcid(server, title: str) -> str:
    return next(a["arcid"] for a in server.archives() if a["title"] == title)


def is_new(entry: dict) -> bool:
    return entry["isnew"] in (True, "true")


def progress_puts(server, arcid: str | None = None) -> list[str]:
    return [
        r["path"]
        for r in server.requests()
        if r["method"] == "PUT" and "/progress/" in r["path"] and (arcid or "") in r["path"]
    ]


# -- the views --------------------------------------------------------------------------


def test_views_stand_beside_the_archives_and_titles_starting_with_at_are_escaped(
    mount, views_server
):
    names = os.listdir(mount.path)
    tankoubons = ["@tankoubons"] if views_server.generation == "0.9" else []  # 0.9 has them
    assert sorted(n for n in names if n.startswith("@")) == sorted([*VIEWS, *tankoubons])
    titles = {name: json.loads((mount.path / name / "metadata.json").read_text())["title"]
              for name in names if not name.startswith("@")}  # fmt: skip
    assert titles["\uff20tags"] == "@tags" and titles["\uff20"] == "@"
    twins = {n: t for n, t in titles.items() if n.startswith("\uff20new")}
    assert sorted(twins.values()) == ["@new", "\uff20new"]  # told apart: one has a suffix
    assert "\uff20new" in twins and len(twins) == 2
    assert len(titles) == len(ARCHIVES)


def test_new_holds_relative_links_to_the_archives_flagged_new(mount, views_server):
    by_id = folders(mount)
    expected = sorted(by_id[a["arcid"]] for a in views_server.archives() if is_new(a))
    assert listing(mount, "@new") == expected
    for name in expected:
        link = mount.path / "@new" / name
        assert link.is_symlink() and os.readlink(link) == f"../{name}"
        assert os.lstat(link).st_size == len(f"../{name}".encode())
        assert os.path.samefile(link, mount.path / name)  # the same folder, not a copy


def test_untagged_is_the_servers_list(mount, views_server):
    by_id = folders(mount)
    untagged = views_server.get("/api/archives/untagged").json()
    assert untagged  # the library has untagged archives
    assert listing(mount, "@untagged") == sorted(by_id[i] for i in untagged)
    assert "\uff20tags" in listing(mount, "@untagged")


def test_tags_by_namespace_with_bare_tags_under_underscore(mount):
    tags = mount.path / "@tags"
    assert {"artist", "series", "parody", "_", "\uff3f"} <= set(os.listdir(tags))
    assert "date_added" not in os.listdir(tags)
    assert listing(mount, "@tags/artist") == ["alice", "bob"]
    assert listing(mount, "@tags/artist/alice") == ["Alpha", "\uff20new"]
    assert listing(mount, "@tags/_") == ["color", "misc"]
    assert listing(mount, "@tags/_/color") == ["Alpha", "Beta"]
    assert listing(mount, "@tags/\uff3f") == ["odd"]  # the namespace "_", told apart
    assert listing(mount, "@tags/parody") == ["fate\uff0fgo"]  # "/" as in titles
    assert os.readlink(tags / "artist" / "alice" / "Alpha") == "../../../Alpha"
    assert (tags / "artist" / "alice" / "Alpha" / "metadata.json").is_file()
    assert not (tags / "artist" / "nobody").exists()


def test_categories_static_and_saved_searches(mount):
    assert listing(mount, "@categories") == ["Alices", "Favs", "Favs [SET_3]"]
    assert listing(mount, "@categories/Favs") == ["Alpha", "Gamma"]
    assert listing(mount, "@categories/Favs [SET_3]") == ["Beta"]
    assert listing(mount, "@categories/Alices") == ["Alpha", "\uff20new"]  # its search
    assert os.readlink(mount.path / "@categories" / "Favs" / "Gamma") == "../../Gamma"


def test_search_folders_appear_when_looked_up(mount, views_server):
    search = mount.path / "@search"
    assert os.listdir(search) == []
    views_server.clear_requests()
    assert listing(mount, "@search/artist:bob") == ["Beta"]
    assert listing(mount, "@search/color") == ["Alpha", "Beta"]
    assert (search / "no such thing").is_dir() and os.listdir(search / "no such thing") == []
    assert not (search / ".hidden").exists()  # file managers' probes are not searches
    for probe in ("metadata.json", "folder.jpg", "desktop.ini", "Thumbs.db", ".directory"):
        assert not (search / probe).exists(), probe
    assert [str(p.relative_to(mount.path)) for p in mount.path.glob("@*/metadata.json")] == []
    assert os.readlink(search / "color" / "Beta") == "../../Beta"
    assert os.listdir(search) == []  # looked-up searches are still not listed
    asked = [r["path"] for r in views_server.requests() if r["path"].startswith("/api/search")]
    assert "/api/search?filter=artist%3Abob&start=-1" in asked
    assert not any(KEY in path for path in asked)
    assert KEY not in mount.log_text()


def test_view_names_cannot_be_taken_and_views_cannot_be_changed(mount):
    alpha = mount.path / "Alpha"
    with pytest.raises(OSError) as taken:
        os.rename(alpha, mount.path / "@mine")
    assert taken.value.errno == errno.EACCES
    moved = subprocess.run(["mv", str(alpha), str(mount.path / "@home")], capture_output=True)
    assert b"Permission denied" in moved.stderr  # not "a subdirectory of itself"
    assert mount.log_text().count("'@home': names starting with @") == 1
    with pytest.raises(PermissionError):
        os.rename(mount.path / "@new", mount.path / "old")
    # links of views the server fills cannot be removed (rm in @new clears the flag:
    # test_changes.py)
    namespace = listing(mount, "@tags")[0]
    value = listing(mount, f"@tags/{namespace}")[0]
    link = listing(mount, f"@tags/{namespace}/{value}")[0]
    with pytest.raises(OSError) as refused:
        os.unlink(mount.path / "@tags" / namespace / value / link)
    assert refused.value.errno == errno.EROFS
    with pytest.raises(PermissionError):
        os.mkdir(mount.path / "@tags" / "mine")
    with pytest.raises(PermissionError):
        (mount.path / "@categories" / "notes.txt").write_text("x")
    assert "Alpha" in os.listdir(mount.path) and "Alpha" in listing(mount, "@new")


def test_a_failing_view_keeps_its_last_answer_and_a_failing_search_fails(mount, views_server):
    before = listing(mount, "@categories")
    views_server.faults(rules=[
        {"match": "^GET /api/categories", "action": "status", "status": 500},
        {"match": "^GET /api/search", "action": "status", "status": 500},
    ])  # fmt: skip
    try:
        assert wait_for(lambda: "views: categories failed" in mount.log_text(), timeout=10)
        assert listing(mount, "@categories") == before
        assert listing(mount, "@categories/Favs [SET_3]") == ["Beta"]
        with pytest.raises(OSError) as failure:
            os.listdir(mount.path / "@search" / "artist:nobody")
        assert failure.value.errno == errno.EIO
    finally:
        views_server.clear_faults()
    assert listing(mount, "@search/artist:nobody") == []
    assert KEY not in mount.log_text()


# -- following the server -------------------------------------------------------------


def test_views_follow_an_edit_through_the_mount_at_once(mount):
    delta = mount.path / "Delta"
    assert "Delta" in listing(mount, "@new") and "Delta" in listing(mount, "@untagged")
    document = json.loads((delta / "metadata.json").read_text())
    document.update(isnew=False, tags=["artist:carol", *document["tags"]])
    (delta / "metadata.json").write_text(json.dumps(document))
    assert "Delta" not in listing(mount, "@new")
    assert "Delta" not in listing(mount, "@untagged")  # asked of the server after the save
    assert listing(mount, "@tags/artist/carol") == ["Delta"]
    assert listing(mount, "@search/artist:carol") == ["Delta"]
    # A name looked up just before stays in the kernel's cache for at most a second.
    assert wait_for(lambda: not os.path.lexists(mount.path / "@new" / "Delta"), timeout=3)


def test_views_follow_changes_on_the_server(mount, views_server):
    epsilon = arcid(views_server, "Epsilon")
    assert "Epsilon" in listing(mount, "@new") and "Epsilon" in listing(mount, "@untagged")
    with views_server.http() as http:
        http.put(
            f"/api/archives/{epsilon}/metadata", data={"title": "Epsilon", "tags": "artist:dave"}
        ).raise_for_status()
        http.delete(f"/api/archives/{epsilon}/isnew").raise_for_status()
        http.put(f"/api/categories/SET_1/{epsilon}").raise_for_status()

    def followed() -> bool:
        return (
            "Epsilon" not in listing(mount, "@new")
            and "Epsilon" not in listing(mount, "@untagged")
            and "Epsilon" in listing(mount, "@categories/Favs")
            and os.path.isdir(mount.path / "@tags" / "artist" / "dave")
        )

    assert wait_for(followed, timeout=10)  # the refresh interval is 2 s
    assert listing(mount, "@tags/artist/dave") == ["Epsilon"]
    with views_server.http() as http:
        http.delete(f"/api/categories/SET_1/{epsilon}").raise_for_status()
    assert wait_for(lambda: "Epsilon" not in listing(mount, "@categories/Favs"), timeout=10)


def test_rsync_of_the_whole_mount_copies_each_archive_once(views_server, tmp_path):
    target = tmp_path / "backup"
    views_server.clear_requests()
    with start_mount(views_server, tmp_path / "lrr", args=("--no-progress",)) as backup_mount:
        subprocess.run(["rsync", "-a", f"{backup_mount.path}/", f"{target}/"], check=True)
    copies = [p for p in target.rglob("*") if p.is_file() and not p.is_symlink()]
    archives = [p for p in copies if p.suffix in (".zip", ".tar")]
    assert len(archives) == len(ARCHIVES)
    assert len({p.parent for p in archives}) == len(ARCHIVES)  # one per archive folder
    links = [p for p in target.rglob("*") if p.is_symlink()]
    assert links and all(p.relative_to(target).parts[0].startswith("@") for p in links)
    files = [link for link in links if link.parent == target / "@files"]
    assert len(files) == len(ARCHIVES)
    for link in files:  # to the archive file copied in its folder
        assert Path(os.path.realpath(link)).parent.parent == target.resolve()
        assert Path(os.path.realpath(link)) in {p.resolve() for p in archives}
    for link in set(links) - set(files):  # relative links still lead to the copied folder
        assert Path(os.path.realpath(link)).parent == target.resolve()
        assert (link / "metadata.json").is_file()
    assert progress_puts(views_server) == []  # --no-progress: rsync read every page


# -- reading progress ----------------------------------------------------------------


def test_reading_pages_sets_the_progress_once_the_reader_pauses(views_server, tmp_path):
    zeta = arcid(views_server, "Zeta")
    views_server.clear_requests()
    with start_mount(views_server, tmp_path / "lrr") as reading:
        folder = reading.path / "Zeta"
        subprocess.run(["ls", "-lR", str(reading.path / "Theta"), str(folder)], check=True,
                       capture_output=True)  # fmt: skip
        (folder / "thumbnail.jpg").read_bytes()
        tar_pages = [r for r in views_server.requests() if "/page" in r["path"]]
        assert tar_pages  # sizing the tar's pages fetched them: that is not reading
        time.sleep(3)
        assert progress_puts(views_server) == []
        pages = sorted(n for n in os.listdir(folder) if n[0].isdigit())
        for name in pages[:3]:
            (folder / name).read_bytes()
        assert wait_for(lambda: progress_puts(views_server, zeta), timeout=10)
        time.sleep(3)
        assert progress_puts(views_server, zeta) == [f"/api/archives/{zeta}/progress/3"]
        assert views_server.get(f"/api/archives/{zeta}/metadata").json()["progress"] == 3
        (folder / pages[1]).read_bytes()  # back to page 2 (from the kernel's cache)
    # The unmount sends what the reader read just before it.
    assert progress_puts(views_server, zeta)[1:] == [f"/api/archives/{zeta}/progress/2"]
    assert views_server.get(f"/api/archives/{zeta}/metadata").json()["progress"] == 2


def test_a_steady_reader_reports_without_pausing(views_server, tmp_path):
    zeta = arcid(views_server, "Zeta")
    views_server.clear_requests()
    with start_mount(views_server, tmp_path / "lrr") as reading:
        pages = sorted(p for p in (reading.path / "Zeta").iterdir() if p.name[0].isdigit())
        started = time.monotonic()
        while not progress_puts(views_server, zeta) and time.monotonic() - started < 20:
            for page in pages:  # a page every 0.4 s: never a 2 s pause
                page.read_bytes()
                time.sleep(0.4)
        reported = time.monotonic() - started
        assert progress_puts(views_server, zeta) == [f"/api/archives/{zeta}/progress/5"]
        assert 9 < reported < 14  # 10 s after the first page of the burst


def test_bulk_readers_leave_the_reading_progress_alone(tmp_path):
    """rsync, cp, file, or a script opening every page at once: no progress is sent (the
    unmount sends whatever was gathered, so an empty log is final); a person still counts."""
    library = tmp_path / "library"
    library.mkdir()
    make_archive(library / "Long.zip", 12, page_bytes=3000)
    make_archive(library / "Short.zip", 3, page_bytes=3000)
    with start_server(library, tmp_path) as server:
        with start_mount(server, tmp_path / "lrr") as mount:
            short, long = mount.path / "Short", mount.path / "Long"
            pages = {
                f: sorted(p for p in f.iterdir() if p.name[0].isdigit()) for f in (short, long)
            }
            for command in (
                ["rsync", "-a", f"{short}/", str(tmp_path / "backup")],
                ["cp", "-r", str(short), str(tmp_path / "copy")],
                ["file", *map(str, pages[short])],
                [PYTHON, "-c", "import sys; [open(p, 'rb').read() for p in sys.argv[1:]]",
                 *map(str, pages[long])],
            ):  # fmt: skip
                subprocess.run(command, check=True, capture_output=True)
        assert progress_puts(server) == []
        with start_mount(server, tmp_path / "lrr") as mount:
            for page in sorted((mount.path / "Long").iterdir())[:2]:
                page.read_bytes()  # a person: two pages
        long_id = arcid(server, "Long")
        assert progress_puts(server) == [f"/api/archives/{long_id}/progress/2"]


def test_clear_new_on_read(views_server, tmp_path):
    eta = arcid(views_server, "Eta")
    views_server.clear_requests()
    args = ("--clear-new-on-read", "--no-progress")
    with start_mount(views_server, tmp_path / "lrr", args=args) as reading:
        assert "Eta" in listing(reading, "@new")
        (reading.path / "Eta" / "001.jpg").read_bytes()
        on_server = lambda: views_server.get(f"/api/archives/{eta}/metadata").json()  # noqa: E731
        assert wait_for(lambda: not is_new(on_server()), timeout=10)
        assert wait_for(lambda: "Eta" not in listing(reading, "@new"), timeout=1)
        assert json.loads((reading.path / "Eta" / "metadata.json").read_text())["isnew"] is False
    deletes = [r["path"] for r in views_server.requests() if r["method"] == "DELETE"]
    assert deletes == [f"/api/archives/{eta}/isnew"]
    assert progress_puts(views_server) == []


def test_reading_through_a_read_only_mount_changes_nothing(views_server, tmp_path):
    gamma = arcid(views_server, "Gamma")
    views_server.clear_requests()
    args = ("--read-only", "--clear-new-on-read")
    with start_mount(views_server, tmp_path / "lrr", args=args) as reading:
        for page in sorted((reading.path / "Gamma").glob("0*")):
            page.read_bytes()
        time.sleep(3)
    assert [r for r in views_server.requests() if r["method"] not in ("GET", "HEAD", "POST")] == []
    assert is_new(views_server.get(f"/api/archives/{gamma}/metadata").json())


def test_no_views_gives_the_plain_tree(views_server, tmp_path):
    with start_mount(views_server, tmp_path / "lrr", args=("--no-views",)) as plain:
        names = os.listdir(plain.path)
        assert len(names) == len(ARCHIVES)
        assert {"@new", "@tags", "@", "\uff20new"} <= set(names)  # titles, as they are
        shown = json.loads((plain.path / "@new" / "metadata.json").read_text())
        assert shown["title"] == "@new"
        assert not (plain.path / "@untagged").exists()
        assert not (plain.path / "@search" / "color").exists()
