"""Page sizes from a zip's central directory match what zipfile reads."""

import io
import zipfile

import pytest

from lrrfs.library.zipindex import (
    TAIL_BYTES,
    NeedZip64Record,
    NotAZip,
    extract,
    locate_directory,
    parse_directory,
    parse_zip64_record,
)


def make_zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED, comment=b"") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.comment = comment
    return buffer.getvalue()


def sizes_of(blob: bytes) -> dict[str, int]:
    start = max(0, len(blob) - TAIL_BYTES)
    directory = locate_directory(blob[start:], start)
    members = parse_directory(blob[directory.offset : directory.offset + directory.size])
    return {member.names[0]: member.size for member in members}


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_sizes_match_zipfile(compression):
    members = {
        "01.png": b"x" * 1000,
        "chapter 1/ページ #3 & 50%.png": bytes(range(256)) * 50,
        "deep/er/empty.jpg": b"",
    }
    blob = make_zip(members, compression, comment=b"a comment")
    assert sizes_of(blob) == {name: len(data) for name, data in members.items()}


def test_many_members_directory_larger_than_the_tail():
    members = {f"folder/page {i:05d}.jpg": b"y" * (i % 7) for i in range(5000)}
    blob = make_zip(members, zipfile.ZIP_STORED)
    start = len(blob) - TAIL_BYTES
    directory = locate_directory(blob[start:], start)
    assert directory.offset < start  # needs a second read, as the library does
    assert sizes_of(blob) == {name: len(data) for name, data in members.items()}


def test_non_utf8_names_offer_shift_jis():
    sjis = "ページ.png".encode("shift_jis")
    stand_in = b"a" * (len(sjis) - 4) + b".png"  # ASCII, so zipfile sets no UTF-8 flag
    blob = make_zip({stand_in.decode(): b"data"}).replace(stand_in, sjis)
    start = max(0, len(blob) - TAIL_BYTES)
    directory = locate_directory(blob[start:], start)
    members = parse_directory(blob[directory.offset : directory.offset + directory.size])
    assert "ページ.png" in members[0].names


def test_not_a_zip():
    with pytest.raises(NotAZip):
        locate_directory(b"this is no zip file" * 10, 0)
    with pytest.raises(NotAZip):
        parse_directory(b"PK\x01\x02" + b"\0" * 10)


def test_zip64_needs_its_end_record():
    members = {f"{i}.png": b"z" for i in range(3)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", allowZip64=True) as archive:
        for name, data in members.items():
            with archive.open(name, "w", force_zip64=True) as handle:
                handle.write(data)
    blob = buffer.getvalue()
    try:
        sizes = sizes_of(blob)
    except NeedZip64Record as need:
        directory = parse_zip64_record(blob[need.offset : need.offset + 56])
        members_found = parse_directory(blob[directory.offset : directory.offset + directory.size])
        sizes = {m.names[0]: m.size for m in members_found}
    assert sizes == {name: 1 for name in members}


def members_of(blob: bytes):
    start = max(0, len(blob) - TAIL_BYTES)
    directory = locate_directory(blob[start:], start)
    data = blob[directory.offset : directory.offset + directory.size]
    return parse_directory(data, directory)


@pytest.mark.parametrize("prefix", [b"", b"#!/bin/sh\nexit 0\n" * 100])
def test_members_read_out_of_the_file_are_the_member_bytes(prefix):
    members = {"01.png": bytes(range(256)) * 40, "a/02.jpg": b"\xff\xd8" + b"q" * 5000}
    stored = make_zip(members, zipfile.ZIP_STORED)
    deflated = make_zip({"03.png": b"z" * 20000, "empty.gif": b""}, zipfile.ZIP_DEFLATED)
    for blob, expected in (
        (stored, members),
        (deflated, {"03.png": b"z" * 20000, "empty.gif": b""}),
    ):
        blob = prefix + blob  # a self-extractor: offsets move with what comes first
        for member in members_of(blob):
            assert member.span is not None
            piece = blob[member.span.offset : member.span.end]
            got = extract(piece, member.span.offset, member.span, member.size)
            assert got == expected[member.names[0]]


def test_a_member_whose_bytes_do_not_match_its_crc_is_refused():
    blob = make_zip({"01.png": b"x" * 1000}, zipfile.ZIP_STORED)
    (member,) = members_of(blob)
    assert member.span is not None
    data_at = blob.index(b"x" * 1000)
    damaged = blob[:data_at] + b"y" + blob[data_at + 1 :]
    with pytest.raises(NotAZip):
        extract(damaged, 0, member.span, member.size)
    with pytest.raises(NotAZip):  # not where the directory says
        extract(blob[1:], 1, member.span, member.size)


def test_members_that_cannot_be_read_straight_have_no_place():
    blob = make_zip({"01.png": b"x" * 1000}, zipfile.ZIP_BZIP2)
    (member,) = members_of(blob)
    assert member.span is None and member.size == 1000
