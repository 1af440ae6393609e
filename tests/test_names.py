"""Folder names from hostile titles: valid, unique, stable."""

from lrrfs.library.names import (
    NAME_MAX,
    NameRequest,
    assign_file_names,
    assign_names,
    safe_name,
    truncate_utf8,
)
from lrrfs.library.views import numbered_links, place_of


def valid(name: str) -> bool:
    raw = name.encode("utf-8")
    return (
        bool(raw)
        and b"/" not in raw
        and b"\0" not in raw
        and name not in (".", "..")
        and len(raw) <= NAME_MAX
    )


def test_hostile_titles_become_valid_names():
    titles = ["a/b", "nul\0x", "ctrl\x01\x1f\x7f", ".", "..", "", "   ", "é" * 1000, "\ud800x"]
    for title in titles:
        assert valid(safe_name(title)), title
    assert safe_name("a/b") == "a\uff0fb"
    assert safe_name("nul\0x") == "nul\u2400x"
    assert safe_name(".") == "\uff0e" and safe_name("..") == "\uff0e\uff0e"
    assert safe_name("") == safe_name("   ") == "(untitled)"


def test_truncation_keeps_whole_characters():
    title = "日本" * 200  # 3 bytes each
    name = safe_name(title)
    assert len(name.encode()) == 255 and name == "日本" * 42 + "日"
    assert truncate_utf8("ab😀", 5) == "ab"


def test_duplicates_get_deterministic_suffixes_and_the_oldest_keeps_the_plain_name():
    requests = [
        NameRequest("b" * 40, "Same", added=20),
        NameRequest("a" * 40, "Same", added=10),
        NameRequest("c" * 40, "Same", added=30),
    ]
    names = assign_names(requests)
    assert names["a" * 40] == "Same"
    assert names["b" * 40] == "Same [bbbbbbbb]"
    assert names["c" * 40] == "Same [cccccccc]"
    assert assign_names(reversed(requests)) == names


def test_names_stay_put_while_titles_do_not_change():
    old = [NameRequest("b" * 40, "T", added=20)]
    first = assign_names(old)
    assert first["b" * 40] == "T"
    # An older archive with the same title arrives: the running name does not move.
    both = [*old, NameRequest("a" * 40, "T", added=10)]
    previous = {"b" * 40: ("T", "T")}
    second = assign_names(both, previous)
    assert second["b" * 40] == "T" and second["a" * 40] == "T [aaaaaaaa]"


def test_ten_thousand_identical_long_titles_stay_unique_and_short():
    title = "x" * 1000
    requests = [NameRequest(f"{i:040x}", title, added=0) for i in range(10_000)]
    names = assign_names(requests)
    assert len(set(names.values())) == 10_000
    assert all(valid(n) for n in names.values())


def test_a_title_that_looks_like_a_suffix_does_not_clash():
    requests = [
        NameRequest("a" * 40, "T", added=1),
        NameRequest("b" * 40, "T", added=2),
        NameRequest("c" * 40, "T [bbbbbbbb]", added=0),
    ]
    names = assign_names(requests)
    assert len(set(names.values())) == 3


def test_a_title_made_to_clash_with_a_full_arcid_suffix_still_terminates():
    arcid = "d" * 40
    requests = [
        NameRequest("a" * 40, "T", added=0),
        NameRequest("e" * 40, f"T [{arcid}]", added=1),
        NameRequest("f" * 40, "T [dddddddd]", added=1),
        NameRequest("0" * 40, "T [dddddddddddd]", added=1),
        NameRequest(arcid, "T", added=5),
    ]
    names = assign_names(requests)
    assert len(set(names.values())) == len(requests)


def test_titles_starting_with_at_are_escaped_when_views_are_on():
    requests = [
        NameRequest("a" * 40, "@new", added=1),
        NameRequest("b" * 40, "\uff20new", added=2),
        NameRequest("c" * 40, " @tags", added=3),
        NameRequest("d" * 40, "mail@home", added=4),
    ]
    names = assign_names(requests, escape_views=True)
    assert names["a" * 40] == "\uff20new"
    assert names["b" * 40] == "\uff20new [bbbbbbbb]"  # the twin, told apart
    assert names["c" * 40] == "\uff20tags"  # blanks are trimmed first
    assert names["d" * 40] == "mail@home"
    assert not any(name.startswith("@") for name in names.values())
    assert assign_names(requests)["a" * 40] == "@new"  # views off: as it is


def test_files_of_the_same_name_get_the_suffix_before_the_extension():
    a, b, c = "a" * 40, "b" * 40, "c" * 40
    files = assign_file_names([
        NameRequest(b, "Comic.cbz", 2), NameRequest(a, "Comic.cbz", 1),
        NameRequest(c, "README", 3), NameRequest("d" * 40, "README", 4),
    ])  # fmt: skip
    expected = {
        "Comic.cbz": a,  # added first: the plain name
        f"Comic [{b[:8]}].cbz": b,
        "README": c,
        f"README [{'d' * 8}]": "d" * 40,  # no extension: the suffix at the end
    }
    assert files == expected


def test_long_file_names_keep_their_extension_and_stay_unique():
    long = "日" * 90 + ".cbz"  # 274 bytes
    requests = [NameRequest(f"{i:040x}", long, i) for i in range(50)]
    files = assign_file_names(requests)
    assert len(files) == 50 and all(valid(n) and n.endswith(".cbz") for n in files)


def test_a_tankoubons_numbered_link_names_read_back_their_place():
    names = ["Vol 1", "07 Odd", "line\nbreak", *(f"V{i}" for i in range(100))]
    links = numbered_links(names)
    assert list(links)[:2] == ["001 Vol 1", "002 07 Odd"]  # wide enough for 103
    for link, index in links.items():
        assert place_of(link) == (index + 1, names[index])
    assert place_of("Vol 1") is None and place_of("1234567 Vol") is None
    assert place_of("0 Vol") == (0, "Vol") and place_of("0009 Vol") == (9, "Vol")
