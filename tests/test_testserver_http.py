"""Behaviour of the test server over HTTP: state, persistence, rescans, thumbnails, auth,
faults, the request log and the command line."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

from lrrfs.testserver import TestServer
from lrrfs.testserver.archives import read_member
from lrrfs.testserver.samples import make_archive, make_sample_library
from lrrfs.testserver.store import STATE_FILE, scan_file

from .testserver_fixtures import Answer, multipart, raw_exchange, send

KEY = "test-key"
AUTH = [("Authorization", "Bearer " + base64.b64encode(KEY.encode()).decode())]
FORM = ("Content-Type", "application/x-www-form-urlencoded")


@pytest.fixture(scope="module")
def shared_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    library = tmp_path_factory.mktemp("shared")
    make_sample_library(library)
    return library


@pytest.fixture
def library(tmp_path: Path) -> Path:
    make_sample_library(tmp_path / "lib")
    return tmp_path / "lib"


@pytest.fixture(scope="module")
def server(shared_library: Path) -> Iterator[TestServer]:
    """A read-only 0.9 server over the shared library, with faults enabled."""
    with TestServer(shared_library, api_key=KEY, faults=True, missing_page_hang=0.3) as srv:
        yield srv


def get(srv: TestServer, url: str, **kw) -> Answer:
    return send(srv.url, "GET", url, **kw)


def ids_by_title(srv: TestServer) -> dict[str, str]:
    return {a["title"]: a["arcid"] for a in get(srv, "/api/archives").json}


def rel_ids(srv: TestServer, library: Path) -> dict[str, str]:
    """arcid of each archive by its path relative to the library."""
    from lrrfs.testserver.archives import compute_arcid

    return {
        p.relative_to(library).as_posix(): compute_arcid(p)
        for p in library.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def put(srv: TestServer, url: str, fields: str = "", *, auth: bool = True) -> Answer:
    headers = [FORM, *(AUTH if auth else [])]
    return send(srv.url, "PUT", url, headers=headers, body=fields.encode())


# ----- reading -----


def test_pages_are_served_exactly_for_every_format(
    server: TestServer, shared_library: Path
) -> None:
    for rel in ("formats/Tar Comic.cbt", "formats/Gzip Tar Comic.tar.gz",
                "formats/Deflated Pages.zip", "formats/Stored Pages.zip", "Shift-JIS Names.zip",
                "Same Names.zip", "Tiny_Two.zip"):  # fmt: skip
        path = shared_library / rel
        scan = scan_file(path)
        pages = get(server, f"/api/archives/{scan.arcid}/files").json["pages"]
        assert len(pages) == len(scan.pages) > 0
        for url, name in zip(pages, scan.pages, strict=True):
            ans = get(server, url)
            assert ans.status == 200, (rel, url)
            assert ans.body == read_member(path, scan.members[name])
            Image.open(io.BytesIO(ans.body)).verify()


def test_page_ranges_and_head(server: TestServer) -> None:
    arcid = ids_by_title(server)["Simple Comic [Tester]"]
    url = f"/api/archives/{arcid}/page?path=01.png"
    full = get(server, url).body
    part = get(server, url, headers=[("Range", "bytes=5-")])
    assert part.status == 206 and part.body == full[5:]
    assert part.headers["content-range"] == f"bytes 5-{len(full) - 1}/{len(full)}"
    assert get(server, url, headers=[("Range", "bytes=-5")]).status == 416
    head = send(server.url, "HEAD", url)
    assert (
        head.status == 200 and head.body == b"" and head.headers["content-length"] == str(len(full))
    )


def test_download_streams_the_file(server: TestServer, shared_library: Path) -> None:
    arcid = ids_by_title(server)['日本語 タイトル "q"']
    ans = get(server, f"/api/archives/{arcid}/download")
    assert ans.body == (shared_library / '日本語 タイトル "q".cbz').read_bytes()
    assert ans.headers["content-disposition"] == 'attachment;filename="日本語 タイトル \\"q\\".cbz"'


def test_missing_page_hangs_then_closes(server: TestServer) -> None:
    ids = ids_by_title(server)
    weird = ids["Weird Names"]
    ok = get(server, f"/api/archives/{weird}/page?path=01%20a%2Bb.png")
    assert ok.status == 200
    plus = get(server, f"/api/archives/{weird}/page?path=01+a+b.png")  # '+' is a space
    assert plus.status is None and plus.elapsed >= 0.25
    hostile = ids["Hostile Names"]
    assert get(server, f"/api/archives/{hostile}/page?path=escape.png").status == 200
    escape = get(server, f"/api/archives/{hostile}/page?path=../../escape.png")
    assert escape.status is None


def test_ids_are_validated_on_09(server: TestServer) -> None:
    assert get(server, "/api/archives/abc/metadata").json["errors"][0]["message"] == (
        "String is too short: 3/40."
    )
    assert get(server, "/api/archives/" + "a" * 41 + "/metadata").status == 400


def test_same_titles_in_two_folders_are_two_archives(server: TestServer) -> None:
    archives = get(server, "/api/archives").json
    volumes = [a for a in archives if a["title"] == "Volume 1"]
    assert len(volumes) == 2 and volumes[0]["arcid"] != volumes[1]["arcid"]
    assert {a["tags"] for a in volumes} == {
        "series:example,artist:alice,date_added:1704164646",
        "series:example,artist:bob,date_added:1704164646",
    }


def test_search(server: TestServer) -> None:
    everything = get(server, "/api/search?start=-1").json
    assert everything["recordsTotal"] == everything["recordsFiltered"] == len(everything["data"])
    titles = [a["title"] for a in everything["data"]]
    assert titles == sorted(titles, key=str.casefold)
    alice = get(server, "/api/search?filter=artist:alice").json
    assert [a["tags"].split(",")[1] for a in alice["data"]] == ["artist:alice"]
    desc = get(server, "/api/search?sortby=title&order=desc&start=-1").json["data"]
    assert [a["title"] for a in desc] == titles[::-1]
    untagged = get(server, "/api/search?untaggedonly=true&start=-1").json
    assert set(get(server, "/api/archives/untagged").json) == {a["arcid"] for a in untagged["data"]}
    assert "Volume 1" not in {a["title"] for a in untagged["data"]}


def test_concurrent_requests(server: TestServer) -> None:
    arcid = ids_by_title(server)["Nested Folder Test"]
    pages = get(server, f"/api/archives/{arcid}/files").json["pages"]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda u: get(server, u), pages * 20))
    assert all(a.status == 200 for a in answers)


# ----- writing and persistence -----


def test_metadata_edits_persist_across_restart(library: Path) -> None:
    with TestServer(library, api_key=KEY) as srv:
        arcid = ids_by_title(srv)["Tiny_Two"]
        url = f"/api/archives/{arcid}/metadata"
        ans = put(srv, url, "title=%20New%0D%0A%20&tags=b,%20a,%20b,,%0Ac&summary=S")
        assert ans.status == 200
        assert send(srv.url, "DELETE", f"/api/archives/{arcid}/isnew").status == 200
        assert send(srv.url, "PUT", f"/api/archives/{arcid}/progress/2").status == 200
        assert send(srv.url, "PUT", f"/api/archives/{arcid}/progress/3").status == 400
    saved = json.loads((library / STATE_FILE).read_text())["archives"]["Tiny_Two.zip"]
    assert saved["title"] == "New" and saved["tags"] == "b,a,c" and saved["progress"] == 2
    with TestServer(library, api_key=KEY) as srv:
        meta = get(srv, f"/api/archives/{arcid}/metadata").json
    assert (meta["title"], meta["tags"], meta["summary"]) == ("New", "b,a,c", "S")
    assert meta["isnew"] is False and meta["progress"] == 2 and meta["lastreadtime"] > 0


def test_put_metadata_quirks(library: Path) -> None:
    with TestServer(library, api_key=KEY) as srv:
        arcid = ids_by_title(srv)["Simple Comic [Tester]"]
        url = f"/api/archives/{arcid}/metadata"

        def meta() -> dict:
            return get(srv, url).json

        assert put(srv, url, "title=T&tags=x:1&summary=first").status == 200
        assert put(srv, url, "title=&tags=y").status == 200  # empty title keeps the title
        assert (meta()["title"], meta()["tags"], meta()["summary"]) == ("T", "y", "first")
        assert put(srv, url + "?title=U").status == 200  # missing tags clear the tags
        assert (meta()["title"], meta()["tags"]) == ("U", "")
        assert put(srv, url, "summary=only").status == 400
        json_body = send(srv.url, "PUT", url, headers=[*AUTH, ("Content-Type", "application/json")],
                         body=b'{"title": "J", "tags": "j"}')  # fmt: skip
        assert json_body.status == 400 and meta()["title"] == "U"
        assert put(srv, url, "title=V", auth=False).status == 401
        assert put(srv, "/api/archives/" + "0" * 40 + "/metadata", "title=x").status == 200


def test_legacy_tags_are_stored_as_given(library: Path) -> None:
    with TestServer(library, generation="0.7", api_key=KEY) as srv:
        arcid = ids_by_title(srv)["Tiny_Two"]
        assert (
            put(srv, f"/api/archives/{arcid}/metadata", "title=T&tags=%20b,%20a,b%20").status == 200
        )
        meta = get(srv, f"/api/archives/{arcid}/metadata").json
        assert meta == {"arcid": arcid, "isnew": "true", "pagecount": 0, "progress": 0,
                        "tags": "b, a,b", "title": "T"}  # fmt: skip


def test_seeded_state_with_hostile_titles(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    titles = ["a/b", "nul\x00x", "", ".", "é" * 500, "ctl\x01\x1f", "..", " spaced "]
    for i in range(len(titles)):
        make_archive(lib / f"t{i}.zip", 1, page_bytes=500 + i)
    seed = {"archives": {f"t{i}.zip": {"title": t, "isnew": False} for i, t in enumerate(titles)}}
    seed["archives"]["t0.zip"]["summary"] = "line 1\nline 2"
    (lib / STATE_FILE).write_text(json.dumps(seed))
    with TestServer(lib) as srv:
        archives = sorted(get(srv, "/api/archives").json, key=lambda a: a["filename"])
    assert [a["title"] for a in archives] == titles
    assert archives[0]["summary"] == "line 1\nline 2"
    assert all(a["isnew"] is False for a in archives)


def test_archives_appear_and_disappear_while_running(library: Path) -> None:
    with TestServer(library) as srv:
        before = len(get(srv, "/api/archives").json)
        added = make_archive(library / "new" / "Added.cbz", 2, page_bytes=1000)
        time.sleep(1.05)
        titles = {a["title"] for a in get(srv, "/api/archives").json}
        assert "Added" in titles and len(titles) >= before
        added.unlink()
        (library / "Tiny_Two.zip").unlink()
        time.sleep(1.05)
        titles = {a["title"] for a in get(srv, "/api/archives").json}
        assert "Added" not in titles and "Tiny_Two" not in titles


def test_replaced_file_gets_a_new_id(library: Path) -> None:
    with TestServer(library) as srv:
        old = ids_by_title(srv)["Untagged Archive"]
        make_archive(library / "Untagged Archive.zip", 3, page_bytes=999)
        time.sleep(1.05)
        meta = get(srv, "/api/archives").json
        new = next(a for a in meta if a["title"] == "Untagged Archive")
        assert new["arcid"] != old and new["pagecount"] == 3
        assert get(srv, f"/api/archives/{old}/metadata").status == 400


def test_delete_archive_removes_the_file(library: Path) -> None:
    with TestServer(library, api_key=KEY) as srv:
        arcid = ids_by_title(srv)["Tiny_Two"]
        assert send(srv.url, "DELETE", f"/api/archives/{arcid}").status == 401
        ans = send(srv.url, "DELETE", f"/api/archives/{arcid}", headers=AUTH)
        assert ans.json["success"] == 1 and not (library / "Tiny_Two.zip").exists()
        assert "Tiny_Two" not in ids_by_title(srv)


def test_upload(library: Path, tmp_path: Path) -> None:
    book = make_archive(tmp_path / "up" / "Book.cbz", 2, page_bytes=700)
    with TestServer(library, api_key=KEY) as srv:
        fields = [("file", "@book"), ("title", "Up"), ("tags", "a:b")]
        ctype, body = multipart(fields, {"book": book})
        headers = [*AUTH, ("Content-Type", ctype)]
        ans = send(srv.url, "PUT", "/api/archives/upload", headers=headers, body=body)
        assert ans.status == 200, ans.body
        meta = get(srv, f"/api/archives/{ans.json['id']}/metadata").json
        assert meta["title"] == "Up" and meta["tags"].startswith("a:b,date_added:")
        assert (library / "Book.cbz").read_bytes() == book.read_bytes()
        again = send(srv.url, "PUT", "/api/archives/upload", headers=headers, body=body)
        assert again.status == 409


def test_categories_persist(library: Path) -> None:
    with TestServer(library, api_key=KEY) as srv:
        arcid = ids_by_title(srv)["Tiny_Two"]
        assert [c["name"] for c in get(srv, "/api/categories").json] == ["🔖 Favorites"]
        cat = put(srv, "/api/categories?name=Favs").json["category_id"]
        assert put(srv, f"/api/categories/{cat}/{arcid}").json["success"] == 1
    with TestServer(library, api_key=KEY) as srv:
        found = get(srv, f"/api/archives/{arcid}/categories").json["categories"]
        assert [(c["id"], c["archives"]) for c in found] == [(cat, [arcid])]
        in_cat = get(srv, f"/api/search?category={cat}").json["data"]
        assert [a["arcid"] for a in in_cat] == [arcid]


def test_a_tankoubons_archive_list_is_replaced_in_its_order(library: Path) -> None:
    json_headers = [("Content-Type", "application/json"), *AUTH]

    def update(tank: str, archives: list[str]) -> Answer:
        body = json.dumps({"archives": archives}).encode()
        return send(srv.url, "PUT", f"/api/tankoubons/{tank}", headers=json_headers, body=body)

    with TestServer(library, api_key=KEY) as srv:
        ids = list(ids_by_title(srv).values())[:3]
        tank = put(srv, "/api/tankoubons?name=Saga").json["tankoubon_id"]
        for arcid in ids:
            assert put(srv, f"/api/tankoubons/{tank}/{arcid}").json["success"] == 1
        order = [ids[2], ids[0], ids[1]]
        done = update(tank, order)
        assert done.status == 200 and done.json["success"] == 1
        assert done.json["successMessage"] == "Updated tankoubon &quot;Saga&quot;!"  # escaped
        assert get(srv, f"/api/tankoubons/{tank}").json["archives"] == order
        # As the real server: an unknown archive or tankoubon changes nothing, yet the
        # answer says success (lrrfs reads every write back).
        ignored = update(tank, ["0" * 40, *order[::-1]])
        assert ignored.status == 200 and ignored.json["success"] == 1
        assert get(srv, f"/api/tankoubons/{tank}").json["archives"] == order
        no_tank = update("TANK_0000000000", order)
        assert no_tank.json["success"] == 1
        assert no_tank.json["successMessage"] == "Updated tankoubon &quot;&quot;!"


# ----- thumbnails -----


def test_thumbnail_job_flow_09(library: Path) -> None:
    with TestServer(library, thumbnail_delay=0.2) as srv:
        arcid = ids_by_title(srv)["Nested Folder Test"]
        first = get(srv, f"/api/archives/{arcid}/thumbnail?no_fallback=true")
        assert first.status == 202 and first.json["operation"] == "serve_thumbnail"
        job = first.json["job"]
        assert get(srv, f"/api/minion/{job}").json["state"] in ("inactive", "active")
        placeholder = get(srv, f"/api/archives/{arcid}/thumbnail?page=2")
        assert 'filename="noThumb.png"' in placeholder.headers["content-disposition"]
        deadline = time.monotonic() + 5
        while get(srv, f"/api/minion/{job}").json["state"] != "finished":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        thumb = get(srv, f"/api/archives/{arcid}/thumbnail")
        assert thumb.status == 200 and thumb.body[:2] == b"\xff\xd8"
        assert thumb.headers["content-disposition"] == f'attachment;filename="{arcid}.jpg"'
        size = Image.open(io.BytesIO(thumb.body)).size  # fits 500x1000, as a real 500x926
        assert max(size[0] / 500, size[1] / 1000) == pytest.approx(1, abs=0.01)
        unknown = get(srv, "/api/archives/" + "0" * 40 + "/thumbnail?no_fallback=true")
        assert unknown.body[:4] == b"\x89PNG"


def test_thumbnail_flow_07(library: Path) -> None:
    with TestServer(library, generation="0.7", thumbnail_delay=0.1) as srv:
        arcid = ids_by_title(srv)["Simple Comic [Tester]"]
        first = get(srv, f"/api/archives/{arcid}/thumbnail?no_fallback=true")
        assert first.status == 200 and first.body[:4] == b"\x89PNG"
        time.sleep(0.4)
        assert get(srv, f"/api/archives/{arcid}/thumbnail").body[:2] == b"\xff\xd8"


# ----- 0.7 extraction -----


def test_legacy_extract_renames_pages(library: Path) -> None:
    with TestServer(library, generation="0.7") as srv:
        arcid = ids_by_title(srv)["Nested Folder Test"]
        raw = quote("chapter 2/ページ #3 & 50%.png", safe="/")
        assert get(srv, f"/api/archives/{arcid}/page?path={raw}").status == 400
        assert get(srv, f"/api/archives/{arcid}/metadata").json["pagecount"] == 0
        pages = send(srv.url, "POST", f"/api/archives/{arcid}/extract").json["pages"]
        assert (
            pages[2]
            == f"./api/archives/{arcid}/page?path=chapter%202/30DA30FC30B8%20%233%20%26%2050%25.png"
        )
        for url in pages:
            assert get(srv, url[1:]).status == 200
        assert (
            get(srv, f"/api/archives/{arcid}/page?path={raw}")
            .json["error"]
            .endswith("does not exist.")
        )
        assert get(srv, f"/api/archives/{arcid}/metadata").json["pagecount"] == 5
        assert get(srv, f"/api/archives/{arcid}/files").status == 404


# ----- authentication -----


def test_authentication_forms(library: Path) -> None:
    with TestServer(library, api_key=KEY) as srv:
        arcid = ids_by_title(srv)["Tiny_Two"]
        url = f"/api/archives/{arcid}/isnew"
        assert send(srv.url, "PUT", url, headers=AUTH).status == 200
        raw = [("Authorization", f"Bearer {KEY}")]
        assert send(srv.url, "PUT", url, headers=raw).status == 401
        wrong = [("Authorization", "Bearer " + base64.b64encode(b"nope").decode())]
        assert send(srv.url, "PUT", url, headers=wrong).status == 401
        assert send(srv.url, "PUT", f"{url}?key={KEY}").status == 200  # 0.9 takes ?key=
    with TestServer(library, generation="0.7", api_key=KEY) as srv:
        url = f"/api/archives/{arcid}/metadata?title=x&key={KEY}"
        ans = send(srv.url, "PUT", url)
        assert ans.status == 401 and "error" in ans.json


def test_no_fun_mode_protects_everything(library: Path) -> None:
    with TestServer(library, api_key=KEY, nofun=True) as srv:
        denied = get(srv, "/api/archives")
        assert denied.status == 401
        assert denied.json == {"error": "This API is protected and requires login or an API Key."}
        assert get(srv, "/api/archives", headers=AUTH).status == 200
        assert get(srv, "/api/info", headers=AUTH).json["nofun_mode"] is True


def test_no_key_configured_means_open(library: Path) -> None:
    with TestServer(library) as srv:
        arcid = ids_by_title(srv)["Tiny_Two"]
        assert put(srv, f"/api/archives/{arcid}/metadata", "title=x", auth=False).status == 200
        assert get(srv, "/api/info").json["has_password"] is False


def test_loopback_only(library: Path) -> None:
    with pytest.raises(ValueError):
        TestServer(library, host="0.0.0.0")
    with pytest.raises(ValueError):
        TestServer(library, host="192.168.1.1")


# ----- faults and the request log -----


def faults(srv: TestServer, config: dict) -> None:
    body = json.dumps(config).encode()
    assert send(srv.url, "POST", "/_lrrfs/faults", body=body).status == 200


@pytest.fixture
def clean(server: TestServer) -> Iterator[TestServer]:
    send(server.url, "DELETE", "/_lrrfs/faults")
    send(server.url, "DELETE", "/_lrrfs/requests")
    yield server
    send(server.url, "DELETE", "/_lrrfs/faults")


def test_fault_status_times_and_request_log(clean: TestServer) -> None:
    faults(clean, {"rules": [{"match": "^GET /api/archives$", "action": "status",
                              "status": 503, "times": 2}]})  # fmt: skip
    answers = [get(clean, "/api/archives") for _ in range(3)]
    assert [a.status for a in answers] == [503, 503, 200]
    assert answers[0].json == {
        "errors": [{"message": "Injected fault.", "path": "/"}],
        "status": 503,
    }
    assert get(clean, "/api/info").status == 200
    log = get(clean, "/_lrrfs/requests").json["requests"]
    assert log == [
        {"method": "GET", "path": "/api/archives", "status": 503},
        {"method": "GET", "path": "/api/archives", "status": 503},
        {"method": "GET", "path": "/api/archives", "status": 200},
        {"method": "GET", "path": "/api/info", "status": 200},
    ]
    send(clean.url, "DELETE", "/_lrrfs/requests")
    assert get(clean, "/_lrrfs/requests").json == {"requests": []}


def test_fault_status_401_and_429(clean: TestServer) -> None:
    faults(clean, {"rules": [{"match": "info", "action": "status", "status": 401, "times": 1},
                             {"match": "info", "action": "status", "status": 429}]})  # fmt: skip
    assert get(clean, "/api/info").json["errors"][0]["message"] == "Unauthorized"
    assert get(clean, "/api/info").status == 429
    assert get(clean, "/api/info").status == 429  # times null: unlimited


def test_fault_hang(clean: TestServer) -> None:
    faults(clean, {"rules": [{"match": "untagged", "action": "hang", "hang_seconds": 0.3}]})
    ans = get(clean, "/api/archives/untagged")
    assert ans.status is None and ans.elapsed >= 0.25
    log = get(clean, "/_lrrfs/requests").json["requests"]
    assert log[-1] == {"method": "GET", "path": "/api/archives/untagged", "status": None}


def _raw_get(srv: TestServer, url: str) -> tuple[int, bytes]:
    """(announced Content-Length, body bytes received before the server closed)."""
    data = raw_exchange(srv.url, f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))  # fmt: skip
    return length, body


@pytest.mark.parametrize("action", ["drop", "truncate", "overlong"])
def test_fault_body_mangling(clean: TestServer, action: str) -> None:
    arcid = ids_by_title(clean)["Nested Folder Test"]
    url = f"/api/archives/{arcid}/download"
    full = get(clean, url).body
    faults(clean, {"rules": [{"match": "download", "action": action, "times": 1}]})
    length, body = _raw_get(clean, url)
    assert length == len(full)
    if action == "drop":
        assert body == full[: len(full) // 2]
    elif action == "truncate":
        assert body == full[:10]
    else:
        assert body.startswith(full) and len(body) > len(full)
    assert get(clean, url).body == full  # times=1: used up


def test_fault_nonsense(clean: TestServer) -> None:
    arcid = ids_by_title(clean)["Simple Comic [Tester]"]
    faults(clean, {"rules": [{"match": "GET /api/archives", "action": "nonsense"}]})
    listing = get(clean, "/api/archives")
    assert listing.status == 200 and listing.body == b"not json{"
    assert listing.headers["content-type"].startswith("application/json")
    page = get(clean, f"/api/archives/{arcid}/page?path=01.png")
    assert page.status == 200 and json.loads(page.body) == {"pages": 42}


def test_latency(clean: TestServer) -> None:
    faults(clean, {"latency_ms": 150})
    assert get(clean, "/api/info").elapsed >= 0.14
    assert get(clean, "/_lrrfs/faults").json["latency_ms"] == 150
    send(clean.url, "DELETE", "/_lrrfs/faults")
    assert get(clean, "/api/info").elapsed < 0.14


def test_bad_fault_config_is_refused(clean: TestServer) -> None:
    bad = send(clean.url, "POST", "/_lrrfs/faults", body=b'{"rules": [{"action": "boom"}]}')
    assert bad.status == 400
    assert send(clean.url, "POST", "/_lrrfs/faults", body=b"not json").status == 400


def test_control_routes_need_faults_flag(library: Path) -> None:
    with TestServer(library) as srv:
        assert get(srv, "/_lrrfs/requests").status == 404
    with TestServer(library, generation="0.7") as srv:
        ans = get(srv, "/_lrrfs/requests")
        assert ans.status == 404 and ans.headers["content-type"].startswith("text/html")


# ----- command line -----


def test_cli_prints_url_and_stops_on_sigterm(library: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lrrfs.testserver", "--library", str(library), "--port", "0",
         "--api-key-file", str(key_file), "--api-generation", "0.7", "--faults"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("lrrfs demo-server listening on http://127.0.0.1:")
        url = line.split(" on ", 1)[1].strip()
        assert send(url, "GET", "/api/info").json["version"] == "0.7.9"
        ans = send(url, "PUT", "/api/categories?name=x", headers=AUTH)
        assert ans.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert KEY not in (proc.stderr.read() if proc.stderr else "")


def test_cli_refuses_other_hosts(library: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lrrfs.testserver", "--library", str(library), "--port", "0",
         "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "loopback" in proc.stderr


def test_large_download_is_fast(tmp_path: Path) -> None:
    lib = tmp_path / "big"
    make_archive(lib / "Big.zip", 32, page_bytes=2_000_000)
    with TestServer(lib) as srv:
        arcid = get(srv, "/api/archives").json[0]["arcid"]
        ans = get(srv, f"/api/archives/{arcid}/download")
    assert len(ans.body) == os.path.getsize(lib / "Big.zip")
    assert ans.elapsed < 2.0  # 64 MB: well over 32 MB/s even on a slow machine


def test_state_file_is_written_atomically(library: Path) -> None:
    with TestServer(library, api_key=KEY) as srv:
        arcid = ids_by_title(srv)["Tiny_Two"]
        for i in range(20):
            assert send(srv.url, "PUT", f"/api/archives/{arcid}/progress/{i % 3}").status == 200
    leftovers = [p.name for p in library.iterdir() if p.name.startswith(STATE_FILE + ".")]
    assert leftovers == []
    assert (
        json.loads((library / STATE_FILE).read_text())["archives"]["Tiny_Two.zip"]["progress"] == 1
    )


def test_unreadable_zip_is_listed_without_pages(library: Path) -> None:
    (library / "Broken.zip").write_bytes(b"PK\x03\x04garbage")
    shutil.copy(library / "Tiny_Two.zip", library / "Copy Of Tiny.zip")  # same id: listed once
    with TestServer(library) as srv:
        archives = get(srv, "/api/archives").json
    broken = next(a for a in archives if a["title"] == "Broken")
    assert broken["pagecount"] == 0
    assert sum(a["title"] in ("Tiny_Two", "Copy Of Tiny") for a in archives) == 1
    assert zipfile.is_zipfile(library / "Tiny_Two.zip")


def test_in_process_fault_and_log_shortcuts(library: Path) -> None:
    with TestServer(library) as srv:
        srv.set_faults(
            {"rules": [{"match": "info", "action": "status", "status": 502, "times": 1}]}
        )
        assert get(srv, "/api/info").status == 502
        assert get(srv, "/api/info").status == 200
        assert [r["status"] for r in srv.requests] == [502, 200]
        srv.clear_requests()
        assert srv.requests == []
