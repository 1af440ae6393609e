"""Editing metadata.json with real editors and programs, checked on the server over HTTP."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lrrfs.testserver.samples import make_archive

from .conftest import KEY, start_mount, start_server, wait_for
from .terminal import Terminal

BOOKS = 27


@pytest.fixture(scope="module", params=["0.9", "0.7"], ids=lambda g: f"lrr{g}")
def edit_server(request, tmp_path_factory):
    library = tmp_path_factory.mktemp("edit-library")
    for index in range(BOOKS):
        make_archive(library / f"Book {index:02d}.zip", 2, page_bytes=3000)
    with start_server(
        library, tmp_path_factory.mktemp("edit-server"), generation=request.param
    ) as server:
        yield server


@pytest.fixture(scope="module")
def mount(edit_server, tmp_path_factory):
    with start_mount(edit_server, tmp_path_factory.mktemp("edit-mnt") / "lrr") as mounted:
        yield mounted


def writes(server) -> list[dict]:
    """Requests that change something on the server (an old server's extract only reads)."""
    return [
        r
        for r in server.requests()
        if r["method"] not in ("GET", "HEAD") and not r["path"].endswith("/extract")
    ]


def server_meta(server, arcid: str) -> dict:
    meta = server.get(f"/api/archives/{arcid}/metadata").json()
    meta["tags"] = [t for t in meta["tags"].split(",") if t]
    return meta


class Book:
    """One archive of the edit library, through the mount and on the server."""

    def __init__(self, mount, server, number: int) -> None:
        self.mount, self.server = mount, server
        self.title = f"Book {number:02d}"
        self.folder = mount.path / self.title
        self.file = self.folder / "metadata.json"
        self.arcid = json.loads(self.file.read_text())["arcid"]

    def shown(self) -> dict:
        return json.loads(self.file.read_text(encoding="utf-8"))

    def on_server(self) -> dict:
        return server_meta(self.server, self.arcid)

    def edited(self, **changes) -> str:
        document = self.shown()
        document.update(changes)
        return json.dumps(document, ensure_ascii=False, indent=2)


@pytest.fixture
def book(request, mount, edit_server):
    """A book of its own for each test (tests must not see each other's edits)."""
    number = request.node.get_closest_marker("book").args[0]
    return Book(mount, edit_server, number)


def uses(number: int):
    return pytest.mark.book(number)


def assert_saved(book: Book, title: str) -> None:
    """The server has the new title, and the mount shows it under its new folder name.

    An editor's scratch file keeps the folder's name while it is open; the kernel
    tells the mount it is closed a moment after the program closed it.
    """
    assert book.on_server()["title"] == title
    assert wait_for(lambda: title in os.listdir(book.mount.path), timeout=5)
    assert book.title not in os.listdir(book.mount.path)
    shown = json.loads((book.mount.path / title / "metadata.json").read_text())
    assert shown["title"] == title


# -- saves that must work -------------------------------------------------------------


@uses(0)
def test_python_open_w_saves_title_tags_and_summary(book):
    summary = {} if book.server.generation == "0.7" else {"summary": "A summary."}
    text = book.edited(title="Renamed 00", tags=["artist:alice", " artist:alice", "tag"], **summary)
    with open(book.file, "w", encoding="utf-8") as handle:
        handle.write(text)
    assert_saved(book, "Renamed 00")
    on_server = book.on_server()
    assert "artist:alice" in on_server["tags"] and "tag" in on_server["tags"]
    shown = json.loads((book.mount.path / "Renamed 00" / "metadata.json").read_text())
    assert shown["tags"] == on_server["tags"]  # the server's canonical tags
    if summary:
        assert on_server["summary"] == shown["summary"] == "A summary."


@uses(1)
def test_temp_file_then_os_replace_saves(book):
    temp = book.folder / ".goutputstream-ABC123"
    temp.write_text(book.edited(title="Renamed 01"))
    os.replace(temp, book.file)
    assert_saved(book, "Renamed 01")
    assert ".goutputstream-ABC123" not in os.listdir(book.mount.path / "Renamed 01")


@uses(2)
def test_sed_in_place_saves(book):
    subprocess.run(["sed", "-i", '/"title"/s/Book 02/Renamed 02/', str(book.file)], check=True)
    assert_saved(book, "Renamed 02")
    assert not [n for n in os.listdir(book.mount.path / "Renamed 02") if n.startswith("sed")]


def run_shell(book: Book, script: str, title: str) -> None:
    """A shell command in the book's folder, with the edited text in $TEXT."""
    env = {**os.environ, "TEXT": book.edited(title=title)}
    subprocess.run(["bash", "-c", script], cwd=book.folder, env=env, check=True)


@uses(3)
def test_shell_redirect_saves(book):
    run_shell(book, 'printf "%s\\n" "$TEXT" > metadata.json', "Renamed 03")
    assert_saved(book, "Renamed 03")


@uses(4)
def test_truncate_then_write_saves(book):
    script = 'truncate -s 0 metadata.json && printf "%s" "$TEXT" >> metadata.json'
    run_shell(book, script, "Renamed 04")
    assert_saved(book, "Renamed 04")


@uses(5)
def test_cp_over_metadata_json_saves(book, tmp_path):
    other = tmp_path / "other.json"
    other.write_text(book.edited(title="Renamed 05"))
    subprocess.run(["cp", str(other), str(book.file)], check=True)
    assert_saved(book, "Renamed 05")


def vim(folder: Path, *commands: str) -> Terminal:
    """vim with its default settings (swap file, backup, 4913 probe), driven by keys."""
    terminal = Terminal(["vim", "metadata.json"], folder)
    terminal.wait_for('"metadata.json"')
    for command in commands:
        terminal.type(command)
    return terminal


@uses(6)
def test_vim_with_default_settings_saves(book):
    terminal = vim(book.folder, ':g/"title"/s/Book 06/Renamed 06/\r', ":wq\r")
    assert terminal.finish() == 0
    assert "written" in terminal.text
    assert_saved(book, "Renamed 06")
    leftovers = set(os.listdir(book.mount.path / "Renamed 06"))
    assert not {n for n in leftovers if n.endswith((".swp", "~")) or n == "4913"}


@uses(7)
def test_vim_scripted_saves(book):
    subprocess.run(
        ["vim", "-es", "-c", 'g/"title"/s/Book 07/Renamed 07/', "-c", "wq", "metadata.json"],
        cwd=book.folder,
        check=True,
        timeout=60,
    )
    assert_saved(book, "Renamed 07")


@uses(8)
def test_nano_saves(book):
    terminal = Terminal(["nano", "metadata.json"], book.folder)
    terminal.wait_for("metadata.json")
    terminal.type(b"\x1c")  # ^\ : replace
    terminal.wait_for("Search")
    terminal.type("true\r")
    terminal.wait_for("Replace with")
    terminal.type("false\r")
    terminal.wait_for("instance?")
    terminal.type("y")
    terminal.type(b"\x0f")  # ^O : write out
    terminal.wait_for("File Name to Write")
    terminal.type("\r")
    terminal.wait_for("Wrote")
    terminal.type(b"\x18")  # ^X : exit
    assert terminal.finish() == 0
    assert book.on_server()["isnew"] in (False, "false")
    assert book.shown()["isnew"] is False


@uses(9)
def test_isnew_can_be_cleared_and_set_again(book):
    book.file.write_text(book.edited(isnew=False))
    assert book.on_server()["isnew"] in (False, "false")
    if book.server.generation == "0.7":
        with pytest.raises(OSError):  # 0.7 servers cannot mark an archive new again
            book.file.write_text(book.edited(isnew=True))
        book.file.unlink()  # revert
    else:
        book.file.write_text(book.edited(isnew=True))
        assert book.on_server()["isnew"] is True


@uses(10)
def test_mv_of_a_folder_sets_the_title(book):
    subprocess.run(["mv", str(book.folder), str(book.mount.path / "Renamed 10")], check=True)
    assert_saved(book, "Renamed 10")


@uses(11)
def test_scratch_files_live_only_in_their_folder_and_the_mount(book):
    neighbour = book.mount.path / "Book 12"
    book.server.clear_requests()
    for name in (".metadata.json.swp", "4913", "metadata.json~", "notes.txt"):
        (book.folder / name).write_text(f"scratch {name}")
    os.rename(book.folder / "notes.txt", book.folder / "notes2.txt")
    assert (book.folder / "notes2.txt").read_text() == "scratch notes.txt"
    (book.folder / "4913").unlink()
    names = set(os.listdir(book.folder))
    assert {".metadata.json.swp", "metadata.json~", "notes2.txt"} <= names
    assert "4913" not in names and "notes.txt" not in names
    assert not {".metadata.json.swp", "notes2.txt"} & set(os.listdir(neighbour))
    assert writes(book.server) == []  # never uploaded


def test_scratch_files_are_gone_after_unmount(edit_server, tmp_path):
    with start_mount(edit_server, tmp_path / "lrr") as first:
        (first.path / "Book 13" / "draft.txt").write_text("x")
        assert "draft.txt" in os.listdir(first.path / "Book 13")
    with start_mount(edit_server, tmp_path / "lrr") as second:
        assert "draft.txt" not in os.listdir(second.path / "Book 13")


@uses(14)
def test_renaming_metadata_json_away_deletes_nothing(book):
    before = book.on_server()
    book.server.clear_requests()
    os.rename(book.file, book.folder / "metadata.json~")
    assert json.loads((book.folder / "metadata.json~").read_text())["arcid"] == book.arcid
    assert book.shown()["title"] == before["title"]  # metadata.json is still there
    os.unlink(book.folder / "metadata.json~")
    assert book.on_server() == before
    assert writes(book.server) == []


@uses(15)
def test_only_what_the_user_changed_is_applied(book):
    book.file.read_text()  # the user reads the file...
    text = book.edited(title="Renamed 15")
    # ...meanwhile another client changes the tags on the server...
    with book.server.http() as http:
        put = http.put(
            f"/api/archives/{book.arcid}/metadata",
            data={"title": "Book 15", "tags": "artist:web-ui"},
        )
        assert put.status_code == 200
    book.file.write_text(text)  # ...and the user saves a new title only.
    assert book.on_server()["title"] == "Renamed 15"
    assert book.on_server()["tags"] == ["artist:web-ui"]  # the server's change is kept


@uses(16)
def test_the_same_field_changed_on_both_sides_is_a_conflict(book):
    book.file.read_text()
    text = book.edited(title="Mine 16")
    with book.server.http() as http:
        http.put(f"/api/archives/{book.arcid}/metadata", data={"title": "Theirs 16", "tags": ""})
    with pytest.raises(OSError) as failure:
        book.file.write_text(text)
    assert failure.value.errno == errno.EBUSY
    assert book.on_server()["title"] == "Theirs 16"
    assert "changed on the server since you read it" in book.mount.log_text()
    book.file.unlink()  # revert to the server's version
    assert book.shown()["title"] == "Theirs 16"


# -- saves that must fail, losing nothing -----------------------------------------------

BAD_DOCUMENTS = {
    "invalid JSON": (b'{"title": "x",,}', "line 1, column 15"),
    "invalid UTF-8": (b'{"title": "\xff\xfe"}', "not valid UTF-8 at line 1, column 12"),
    "wrong type": (b'{"title": "x", "tags": 5}', '"tags" must be a list'),
    "empty title": (b'{"title": "  "}', '"title" must not be empty'),
    "unknown key": (b'{"title": "x", "colour": "red"}', "unknown field 'colour'"),
    "read-only field only": (b'{"pagecount": 999}', '"pagecount" is read-only'),
}


@uses(17)
@pytest.mark.parametrize("case", BAD_DOCUMENTS, ids=str)
def test_an_invalid_save_fails_and_loses_nothing(book, case):
    content, reason = BAD_DOCUMENTS[case]
    before = book.on_server()
    with pytest.raises(OSError) as failure, open(book.file, "wb") as handle:
        handle.write(content)
    assert failure.value.errno == errno.EINVAL
    assert book.on_server() == before
    note, kept = kept_text(book)
    assert kept == content  # the user's text stays readable...
    assert reason.encode() in note  # ...under a note saying why, where the user looks
    log = book.mount.log_text()
    assert f"saving metadata.json of '{before['title']}' failed" in log and reason in log
    assert KEY not in log
    # A later valid save applies, and the mount shows the server's version again.
    book.file.write_text(json.dumps({"title": before["title"], "tags": before["tags"]}))
    assert book.shown()["arcid"] == book.arcid


def kept_text(book: Book) -> tuple[bytes, bytes]:
    """The note lrrfs put at the top of a text it could not save, and the text itself."""
    text = book.file.read_bytes()
    assert text.startswith(b"# lrrfs: this text was NOT saved: "), text[:200]
    lines = text.splitlines(keepends=True)
    note = b"".join(line for line in lines[:3] if line.startswith(b"#"))
    return note, text[len(note) :]


@uses(23)
def test_sed_over_the_whole_file_changes_the_title_and_ignores_filename(book):
    """`sed -i s/Old/New/` also hits "filename" when it equals the title: what the user
    meant (the title) is saved, the read-only field's change ignored with a warning."""
    before = book.on_server()
    subprocess.run(["sed", "-i", "s/Book 23/Renamed 23/g", str(book.file)], check=True)
    assert_saved(book, "Renamed 23")
    shown = json.loads((book.mount.path / "Renamed 23" / "metadata.json").read_text())
    assert shown.get("filename") == before.get("filename")
    if before.get("filename") == "Book 23":  # the current generation shows it
        assert "ignoring a change to the read-only 'filename'" in book.mount.log_text()


@uses(24)
def test_an_editor_keeping_its_path_saves_twice_after_a_title_change(book):
    """Like gedit or Mousepad: the first save renames the folder, the second goes through
    the path the editor still holds. Other programs see only the new name."""
    old_path = book.file
    old_path.write_text(book.edited(title="Renamed 24"))
    assert_saved(book, "Renamed 24")
    old_path.write_text(book.edited(title="Renamed 24", tags=["saved:twice"]))  # old path
    assert book.on_server()["title"] == "Renamed 24"
    assert book.on_server()["tags"] == ["saved:twice"]
    names = os.listdir(book.mount.path)
    assert "Renamed 24" in names and "Book 24" not in names  # never listed twice
    other = subprocess.run(["stat", str(book.folder)], capture_output=True, text=True)
    assert other.returncode != 0  # another program: the old name is gone
    subprocess.run(["mv", str(book.mount.path / "Renamed 24"), str(book.folder)], check=True)
    assert wait_for(lambda: "Book 24" in os.listdir(book.mount.path), timeout=10)


@uses(25)
def test_clearing_every_tag_is_checked_against_what_the_server_kept(book):
    """A 0.7 server answers yes to empty tags but keeps the old ones: the save must fail
    and say so, not look fine while the tags come back."""
    book.file.write_text(book.edited(tags=["only:tag"]))
    assert book.on_server()["tags"] == ["only:tag"]
    if book.server.generation == "0.7":
        with pytest.raises(OSError) as failure:
            book.file.write_text(book.edited(tags=[]))
        assert failure.value.errno == errno.EIO
        assert book.on_server()["tags"] == ["only:tag"]
        assert "cannot remove an archive's last tags" in book.mount.log_text()
        book.file.unlink()
    else:
        book.file.write_text(book.edited(tags=[]))
        assert book.on_server()["tags"] == []
    assert book.shown()["tags"] == book.on_server()["tags"]


@uses(26)
def test_a_reader_gets_one_version_even_if_the_server_changes_it_meanwhile(book):
    """A refresh between two reads of one open (the progress moved, the web UI edited it)
    must not splice two versions: found by the soak (a JSON with extra data)."""
    before = book.file.read_bytes()
    with open(book.file, "rb", buffering=0) as reader:
        head = reader.read(10)
        title = "Book 26 changed on the server meanwhile"
        with book.server.http() as http:
            http.put(f"/api/archives/{book.arcid}/metadata", data={"title": title, "tags": ""})
        changed = book.mount.path / title
        assert wait_for(changed.exists, timeout=15)  # the refresh applied it
        rest = b"".join(iter(lambda: reader.read(7), b""))
    assert head + rest == before
    assert json.loads((changed / "metadata.json").read_text())["title"].endswith("meanwhile")
    with book.server.http() as http:
        http.put(f"/api/archives/{book.arcid}/metadata", data={"title": "Book 26", "tags": ""})


@uses(18)
def test_more_than_a_mebibyte_is_refused(book):
    before = book.on_server()
    text = book.edited(summary="x" * (1 << 20))
    with pytest.raises(OSError) as failure, open(book.file, "w") as handle:
        handle.write(text)
    assert failure.value.errno == errno.EFBIG
    assert book.on_server() == before


@uses(19)
@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ({"action": "status", "status": 500}, errno.EIO),
        ({"action": "status", "status": 423}, errno.EIO),
        ({"action": "status", "status": 503}, errno.EIO),
        ({"action": "status", "status": 401}, errno.EACCES),
        ({"action": "drop"}, errno.EIO),
    ],
    ids=["500", "423", "503", "401", "dropped"],
)
def test_a_server_error_fails_the_save_and_keeps_the_text(book, fault, code):
    before = book.on_server()
    text = book.edited(title="Failed 19")
    book.server.faults(rules=[{"match": r"^PUT .*/metadata", **fault}])
    try:
        with pytest.raises(OSError) as failure:
            book.file.write_text(text)
    finally:
        book.server.clear_faults()
    assert failure.value.errno == code
    if fault["action"] != "status":
        # The answer was lost after the server had saved: the outcome is unknown to the
        # mount, so the call failed; put the title back for the other cases.
        with book.server.http() as http:
            http.put(f"/api/archives/{book.arcid}/metadata", data={"title": "Book 19", "tags": ""})
        assert wait_for(book.folder.exists, timeout=10)  # the next refresh
        book.file.unlink()
        return
    assert book.on_server()["title"] == before["title"]
    assert kept_text(book)[1].decode() == text  # kept as a draft...
    with open(book.file, "a") as handle:  # ...and a later save applies it.
        handle.write("\n")
    assert book.on_server()["title"] == "Failed 19"
    subprocess.run(["mv", str(book.mount.path / "Failed 19"), str(book.folder)], check=True)


@uses(20)
def test_a_failed_save_in_vim_is_reported_and_a_good_one_applies(book):
    terminal = vim(book.folder, ':g/"title"/s/"Book 20",/"Book 20",,/\r', ":w\r")
    terminal.wait_for("Fsync failed")
    assert book.on_server()["title"] == "Book 20"
    terminal.type("\r")
    terminal.type(':g/"title"/s/,,/,/\r')
    terminal.type(':g/"title"/s/Book 20/Renamed 20/\r')
    terminal.type(":wq\r")
    assert terminal.finish() == 0
    assert_saved(book, "Renamed 20")


@uses(21)
def test_deleting_metadata_json_reverts_to_the_servers_version(book):
    with pytest.raises(OSError):
        book.file.write_text("not json")
    assert kept_text(book)[1] == b"not json"
    book.file.unlink()
    assert book.shown()["title"] == "Book 21"
    assert "metadata.json" in os.listdir(book.folder)


@uses(22)
def test_a_summary_is_saved_where_the_server_keeps_one(book):
    if book.server.generation == "0.9":
        book.file.write_text(book.edited(summary="new summary"))
        assert book.on_server()["summary"] == "new summary"
        return
    with pytest.raises(OSError) as failure:  # 0.7 servers have no summary
        book.file.write_text(book.edited(summary="new summary"))
    assert failure.value.errno == errno.EINVAL
    assert "does not keep a summary" in book.mount.log_text()
    book.file.unlink()


def test_editors_are_installed():
    for program in ("vim", "nano", "sed", "truncate", "rsync"):
        assert shutil.which(program), program
