"""Member sizes from a zip file's central directory, read from its tail.

LANraragi serves a zip member's uncompressed bytes as the page (unless it
resizes images), so one Range request for the end of `/download` gives every
page's exact size without downloading a single page.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

EOCD_SIG = b"PK\x05\x06"
ZIP64_LOCATOR_SIG = b"PK\x06\x07"
ZIP64_EOCD_SIG = b"PK\x06\x06"
CENTRAL_SIG = b"PK\x01\x02"
EOCD_SIZE = 22
ZIP64_LOCATOR_SIZE = 20
CENTRAL_SIZE = 46
UTF8_FLAG = 0x800
TAIL_BYTES = 65536 + EOCD_SIZE  # the EOCD record plus the longest comment


class NotAZip(ValueError):
    """The bytes are not the end of a zip file we can read."""


@dataclass(frozen=True, slots=True)
class CentralDirectory:
    """Where the central directory lies in the file."""

    offset: int
    size: int
    entries: int


@dataclass(frozen=True, slots=True)
class ZipMember:
    """A member's possible names (how its raw name may be decoded) and its size."""

    names: tuple[str, ...]
    size: int


def locate_directory(tail: bytes, tail_offset: int) -> CentralDirectory:
    """Find the central directory from the last bytes of a zip (at `tail_offset`)."""
    pos = tail.rfind(EOCD_SIG)
    while pos >= 0 and pos + EOCD_SIZE > len(tail):
        pos = tail.rfind(EOCD_SIG, 0, pos)
    if pos < 0:
        raise NotAZip("no end-of-central-directory record")
    _, _, _, entries, size, offset, _ = struct.unpack_from("<4H2LH", tail, pos + 4)
    if 0xFFFFFFFF in (size, offset) or entries == 0xFFFF:
        return _locate_zip64(tail, pos)
    # Measure back from the record: robust to data prepended to the zip.
    return CentralDirectory(tail_offset + pos - size, size, entries)


def _locate_zip64(tail: bytes, eocd_pos: int) -> CentralDirectory:
    locator = eocd_pos - ZIP64_LOCATOR_SIZE
    if locator < 0 or tail[locator : locator + 4] != ZIP64_LOCATOR_SIG:
        raise NotAZip("zip64 archive without a zip64 locator")
    (record_offset,) = struct.unpack_from("<Q", tail, locator + 8)
    raise NeedZip64Record(record_offset)


class NeedZip64Record(NotAZip):
    """The zip64 end record lies at `offset`: read 56 bytes there and call `parse_zip64_record`."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"zip64 end record at {offset}")
        self.offset = offset


def parse_zip64_record(record: bytes) -> CentralDirectory:
    if len(record) < 56 or record[:4] != ZIP64_EOCD_SIG:
        raise NotAZip("bad zip64 end record")
    _, _, _, _, _, _, entries, size, offset = struct.unpack_from("<QHHLLQQQQ", record, 4)
    return CentralDirectory(offset, size, entries)


def _name_variants(raw: bytes, flags: int) -> tuple[str, ...]:
    if flags & UTF8_FLAG:
        return (raw.decode("utf-8", "replace"),)
    variants = []
    for encoding in ("utf-8", "shift_jis", "cp437"):
        try:
            variants.append(raw.decode(encoding))
        except UnicodeDecodeError:
            continue
    return tuple(dict.fromkeys(variants)) or (raw.decode("utf-8", "replace"),)


def _zip64_size(extra: bytes) -> int | None:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        if tag == 0x0001 and length >= 8:
            return struct.unpack_from("<Q", extra, pos + 4)[0]
        pos += 4 + length
    return None


def parse_directory(data: bytes) -> list[ZipMember]:
    """Every file member of a central directory (folders are skipped)."""
    members = []
    pos = 0
    while pos + CENTRAL_SIZE <= len(data) and data[pos : pos + 4] == CENTRAL_SIG:
        flags, size, name_len, extra_len, comment_len = (
            struct.unpack_from("<H", data, pos + 8)[0],
            struct.unpack_from("<L", data, pos + 24)[0],
            *struct.unpack_from("<3H", data, pos + 28),
        )
        name_start = pos + CENTRAL_SIZE
        raw_name = data[name_start : name_start + name_len]
        extra = data[name_start + name_len : name_start + name_len + extra_len]
        if size == 0xFFFFFFFF:
            size = _zip64_size(extra)
            if size is None:
                raise NotAZip("zip64 member without its size")
        if not raw_name.endswith(b"/"):
            members.append(ZipMember(_name_variants(raw_name, flags), size))
        pos = name_start + name_len + extra_len + comment_len
    if pos != len(data):
        raise NotAZip("central directory is cut or corrupt")
    return members
