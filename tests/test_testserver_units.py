"""Unit tests of the test server's pure parts: ordering, renaming, ranges, quoting, tags,
archive reading and the sample library."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from lrrfs.testserver.archives import ARCID_BYTES, compute_arcid, list_image_members, read_member
from lrrfs.testserver.faults import Faults, Rule
from lrrfs.testserver.names import (
    extension_of,
    html_escape,
    legacy_key,
    mojo_quote,
    natural_key,
    normalize_member,
    page_url,
    rename_non_ascii,
    strip_extension,
)
from lrrfs.testserver.responses import encode_json, parse_range
from lrrfs.testserver.routes import clean_line, matches, split_tags
from lrrfs.testserver.samples import make_archive, make_sample_library, write_zip
from lrrfs.testserver.store import scan_file


def test_natural_sort_compares_digit_runs_as_numbers() -> None:
    names = ["page 10.jpg", "page 2.jpg", "page 1.jpg", "Page 3.jpg", "page 02.jpg"]
    assert sorted(names, key=natural_key) == [
        "page 1.jpg",
        "page 2.jpg",
        "page 02.jpg",
        "Page 3.jpg",
        "page 10.jpg",
    ]


def test_natural_sort_of_the_recorded_nested_archive() -> None:
    """0.9.81/14-files-nested: full paths, folders kept, digits as numbers."""
    members = [
        "chapter 2/ページ #3 & 50%.png",
        "chapter 2/page 10.jpg",
        "chapter 1/page 1.jpg",
        "chapter 2/page 2.jpg",
        "chapter 1/cover.jpg",
    ]
    assert sorted(members, key=natural_key) == [
        "chapter 1/cover.jpg",
        "chapter 1/page 1.jpg",
        "chapter 2/page 2.jpg",
        "chapter 2/page 10.jpg",
        "chapter 2/ページ #3 & 50%.png",
    ]


def test_natural_key_mixes_digit_and_text_starts() -> None:
    assert sorted(["b", "10", "a1", "2", "a"], key=natural_key) == ["2", "10", "a", "a1", "b"]


def test_legacy_order_pads_numbers_then_plain_string_order() -> None:
    """0.7.9/17-extract-nested and 19-extract-weird orders, on renamed paths."""
    original = [
        "chapter 2/page 10.jpg",
        "chapter 2/ページ #3 & 50%.png",
        "chapter 2/page 2.jpg",
        "chapter 1/cover.jpg",
        "chapter 1/page 1.jpg",
    ]
    nested = [rename_non_ascii(p) for p in original]
    assert sorted(nested, key=legacy_key) == [
        "chapter 1/cover.jpg",
        "chapter 1/page 1.jpg",
        "chapter 2/30DA30FC30B8 #3 & 50%.png",
        "chapter 2/page 2.jpg",
        "chapter 2/page 10.jpg",
    ]
    weird = ["deep/er/03 q?x=1#h.png", "65E5672C8A9E30DA30FC30B8.png", "02 c%20d.png", "01 a+b.png"]
    assert sorted(weird, key=legacy_key) == [
        "01 a+b.png",
        "02 c%20d.png",
        "65E5672C8A9E30DA30FC30B8.png",
        "deep/er/03 q?x=1#h.png",
    ]


def test_rename_non_ascii_uses_uppercase_code_points() -> None:
    assert rename_non_ascii("ページ.png") == "30DA30FC30B8.png"
    assert rename_non_ascii("日本語ページ.png") == "65E5672C8A9E30DA30FC30B8.png"
    assert rename_non_ascii("é/ok #1.png") == "00E9/ok #1.png"
    assert rename_non_ascii("\U0001f600.png") == "1F600.png"


def test_normalize_member_keeps_names_inside_the_archive() -> None:
    assert normalize_member("../../escape.png") == "escape.png"
    assert normalize_member("/abs.png") == "abs.png"
    assert normalize_member("a/./b/../c.png") == "a/c.png"
    assert normalize_member("dir/") == "dir"
    assert normalize_member("../") is None


def test_page_url_escaping_matches_the_recordings() -> None:
    arcid = "c5d3969eeb4a5bf7962b56d806c0321cc7b45c8e"
    url = page_url(arcid, "chapter 2/ページ #3 & 50%.png", legacy=False)
    assert url == (
        f"/api/archives/{arcid}/page?path="
        "chapter%202/%E3%83%9A%E3%83%BC%E3%82%B8%20%233%20%26%2050%25.png"
    )
    assert page_url(arcid, "01 a+b.png", legacy=True).endswith("?path=01%20a%2Bb.png")
    assert page_url(arcid, "deep/er/03 q?x=1#h.png", legacy=True).startswith("./api/")
    assert page_url(arcid, "03 q?x=1#h.png", legacy=True).endswith("03%20q%3Fx%3D1%23h.png")


def test_names_and_extensions() -> None:
    assert extension_of("A.CBZ") == "cbz"
    assert extension_of("x.tar.gz") == "gz"
    assert extension_of("noext") == ""
    assert strip_extension('日本語 タイトル "q".cbz') == '日本語 タイトル "q"'
    assert strip_extension("x.tar.gz") == "x.tar"


def test_header_quoting_and_html_escape() -> None:
    assert mojo_quote('日本語 "q".cbz') == '"日本語 \\"q\\".cbz"'
    assert mojo_quote("a\\b") == '"a\\\\b"'
    assert html_escape('It\'s "x" & <y>') == "It&#39;s &quot;x&quot; &amp; &lt;y&gt;"


def test_json_encoding_like_mojo() -> None:
    assert encode_json({"b": "/x", "a": "é"}) == '{"a":"é","b":"\\/x"}'.encode()


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=10-", 100, (10, 99)),
        ("bytes=90-200", 100, (90, 99)),
        ("bytes=99-99", 100, (99, 99)),
        ("bytes=-10", 100, False),  # suffix ranges: 416 on LRR
        ("bytes=100-", 100, False),  # start past the end
        ("bytes=5-2", 100, False),
        ("items=0-1", 100, False),
        ("bytes=0-0", 0, False),  # nothing to serve
        ("bytes=0-1,5-6", 100, (0, 1)),  # only the first range counts
    ],
)
def test_parse_range(header: str | None, size: int, expected: object) -> None:
    assert parse_range(header, size) == expected


def test_tag_cleaning() -> None:
    assert clean_line("  a\r\nb  ") == "ab"
    assert split_tags(" artist:foo, female:bar ,,misc, ") == ["artist:foo", "female:bar", "misc"]


def test_search_filter_terms() -> None:
    meta = {"title": "Nested Folder Test", "tags": "artist:foo,misc"}
    assert matches("", meta)
    assert matches("nested", meta)
    assert matches("artist:foo, nested", meta)
    assert not matches("-nested", meta)
    assert not matches("nested, artist:bar", meta)
    assert matches('"folder test"', meta)


def test_fault_rule_parsing_and_counting() -> None:
    faults = Faults()
    faults.configure({"rules": [{"match": r"^GET /api/archives$", "action": "status", "times": 2}]})
    assert faults.take("GET /api/archives?x") is None
    assert faults.take("GET /api/archives") is not None
    assert faults.take("GET /api/archives") is not None
    assert faults.take("GET /api/archives") is None  # used up
    with pytest.raises(ValueError):
        Rule.parse({"match": "x", "action": "explode"})
    with pytest.raises(ValueError):
        faults.configure({"latency_ms": -1})
    with pytest.raises(ValueError):
        Rule.parse({"match": "x", "action": "status", "status": 9999})


def test_arcid_is_sha1_of_the_first_512000_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    data = bytes(range(256)) * 3000
    path.write_bytes(data)
    assert compute_arcid(path) == hashlib.sha1(data[:ARCID_BYTES]).hexdigest()


def test_members_of_every_format_read_back_exactly(tmp_path: Path) -> None:
    for fmt in ("zip", "tar", "tar.gz"):
        path = make_archive(tmp_path / f"x.{fmt}", 3, page_bytes=5000, fmt=fmt)
        members = sorted(list_image_members(path), key=lambda m: m.name)
        assert [m.name for m in members] == ["0001.jpg", "0002.png", "0003.jpg"]
        for m in members:
            data = read_member(path, m)
            assert len(data) == m.size == 5000
            Image.open(io.BytesIO(data)).verify()


def test_deflated_members_and_non_images(tmp_path: Path) -> None:
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, "PNG")
    path = write_zip(
        tmp_path / "d.zip",
        [("p.png", png.getvalue()), ("info.txt", b"x"), ("dir/q.PNG", png.getvalue())],
        compression=zipfile.ZIP_DEFLATED,
    )
    scan = scan_file(path)
    assert scan.pages == ("dir/q.PNG", "p.png")
    assert read_member(path, scan.members["p.png"]) == png.getvalue()


def test_unreadable_archive_has_no_pages(tmp_path: Path) -> None:
    path = tmp_path / "broken.zip"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    assert list_image_members(path) == []


def test_sample_library_is_deterministic(tmp_path: Path) -> None:
    first = make_sample_library(tmp_path / "a", large_mb=1)
    second = make_sample_library(tmp_path / "b", large_mb=1)
    assert [p.relative_to(tmp_path / "a") for p in first] == [
        p.relative_to(tmp_path / "b") for p in second
    ]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_sample_library_contents(tmp_path: Path) -> None:
    paths = {p.relative_to(tmp_path).as_posix(): p for p in make_sample_library(tmp_path)}
    assert scan_file(paths["Simple Comic [Tester].cbz"]).pages == ("01.png", "02.png", "03.png")
    assert len(scan_file(paths["Nested Folder Test.zip"]).pages) == 5
    sjis = zipfile.ZipFile(paths["Shift-JIS Names.zip"])
    assert all(not info.flag_bits & 0x800 for info in sjis.infolist())
    raw = [info.filename.encode("cp437") for info in sjis.infolist()]
    assert "表紙.jpg".encode("shift_jis") in raw
    assert scan_file(paths["Same Names.zip"]).pages == ("a/001.jpg", "a/002.jpg", "b/001.jpg",
                                                        "b/002.jpg")  # fmt: skip
    assert scan_file(paths["Hostile Names.zip"]).pages == ("abs.png", "escape.png", "ok.png")
    assert (tmp_path / ".lrrfs-server.json").is_file()


def test_make_archive_sizes(tmp_path: Path) -> None:
    path = make_archive(tmp_path / "big.cbz", 4, page_bytes=300_000)
    assert 1_200_000 <= path.stat().st_size < 1_210_000
    with zipfile.ZipFile(path) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        assert [i.file_size for i in zf.infolist()] == [300_000] * 4


def test_tar_member_with_undecodable_name(tmp_path: Path) -> None:
    import tarfile

    png = io.BytesIO()
    Image.new("RGB", (4, 4), "blue").save(png, "PNG")
    path = tmp_path / "latin1.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tf:
        info = tarfile.TarInfo("\xff1.png")  # written as the single byte 0xff
        info.size = len(png.getvalue())
        tf.addfile(info, io.BytesIO(png.getvalue()))
    scan = scan_file(path)
    assert scan.pages == ("\ufffd1.png",)
    assert page_url("0" * 40, scan.pages[0], legacy=False).endswith("%EF%BF%BD1.png")
    assert read_member(path, scan.members[scan.pages[0]]) == png.getvalue()
