"""Member sizes and places from a zip file's central directory, read from its tail.

LANraragi serves a zip member's uncompressed bytes as the page (unless it
resizes images), so one Range request for the end of `/download` gives every
page's exact size without downloading a single page; and a Range request for
a member's place in the file gives its bytes (inflated when deflated), which
`extract` checks against the directory's CRC-32 and size, at a fraction of the
server's cost of a page request, and for many consecutive pages at once.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

EOCD_SIG = b"PK\x05\x06"
ZIP64_LOCATOR_SIG = b"PK\x06\x07"
ZIP64_EOCD_SIG = b"PK\x06\x06"
CENTRAL_SIG = b"PK\x01\x02"
EOCD_SIZE = 22
ZIP64_LOCATOR_SIZE = 20
CENTRAL_SIZE = 46
LOCAL_SIG = b"PK\x03\x04"
LOCAL_SIZE = 30
UTF8_FLAG = 0x800
ENCRYPTED_FLAG = 0x1
STORED, DEFLATED = 0, 8
TAIL_BYTES = 65536 + EOCD_SIZE  # the EOCD record plus the longest comment


class NotAZip(ValueError):
    """The bytes are not the end of a zip file we can read."""


@dataclass(frozen=True, slots=True)
class CentralDirectory:
    """Where the central directory lies in the file."""

    offset: int
    size: int
    entries: int
    shift: int = 0  # bytes before the zip proper (a self-extractor): added to its offsets


@dataclass(frozen=True, slots=True)
class ZipSpan:
    """Where a member lies in the file: its local header at `offset`, up to `end` (the
    next member or the directory), `compressed` bytes of `method` data, its CRC-32."""

    offset: int
    end: int
    compressed: int
    method: int
    crc: int


@dataclass(frozen=True, slots=True)
class ZipMember:
    """A member's possible names (how its raw name may be decoded), its size, and its
    place when its bytes can be read straight from the file (stored or deflated)."""

    names: tuple[str, ...]
    size: int
    span: ZipSpan | None = None


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
    actual = tail_offset + pos - size
    return CentralDirectory(actual, size, entries, shift=actual - offset)


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


def _zip64_extra(extra: bytes) -> list[int]:
    """The 8-byte values of a zip64 extra field: one for each 0xFFFFFFFF field of the
    header (uncompressed size, compressed size, local header offset), in that order."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        if tag == 0x0001:
            count = min(length, len(extra) - pos - 4) // 8
            return list(struct.unpack_from(f"<{count}Q", extra, pos + 4))
        pos += 4 + length
    return []


def _widen(extra: bytes, fields: tuple[int, ...]) -> tuple[int, ...]:
    """Header fields holding 0xFFFFFFFF take their zip64 values (-1 when missing)."""
    values = iter(_zip64_extra(extra))
    return tuple(next(values, -1) if field == 0xFFFFFFFF else field for field in fields)


@dataclass(slots=True)
class _Entry:
    names: tuple[str, ...] | None  # None: a folder
    size: int
    offset: int
    compressed: int
    method: int
    crc: int
    encrypted: bool


def _entries(data: bytes) -> list[_Entry]:
    entries = []
    pos = 0
    while pos + CENTRAL_SIZE <= len(data) and data[pos : pos + 4] == CENTRAL_SIG:
        flags, method = struct.unpack_from("<2H", data, pos + 8)
        crc, compressed, size = struct.unpack_from("<3L", data, pos + 16)
        name_len, extra_len, comment_len = struct.unpack_from("<3H", data, pos + 28)
        (offset,) = struct.unpack_from("<L", data, pos + 42)
        name_start = pos + CENTRAL_SIZE
        raw_name = data[name_start : name_start + name_len]
        extra = data[name_start + name_len : name_start + name_len + extra_len]
        size, compressed, offset = _widen(extra, (size, compressed, offset))
        if size < 0:
            raise NotAZip("zip64 member without its size")
        names = None if raw_name.endswith(b"/") else _name_variants(raw_name, flags)
        entries.append(
            _Entry(names, size, offset, compressed, method, crc, bool(flags & ENCRYPTED_FLAG))
        )
        pos = name_start + name_len + extra_len + comment_len
    if pos != len(data):
        raise NotAZip("central directory is cut or corrupt")
    return entries


def parse_directory(data: bytes, directory: CentralDirectory | None = None) -> list[ZipMember]:
    """Every file member of a central directory (folders are skipped); with the
    `directory`'s place in the file, also where each readable member lies."""
    entries = _entries(data)
    ends: dict[int, int] = {}
    if directory is not None:
        starts = sorted({e.offset for e in entries if e.offset >= 0})
        ends = dict(zip(starts, [*starts[1:], directory.offset - directory.shift], strict=True))
    members = []
    for entry in entries:
        if entry.names is None:
            continue
        span = None
        readable = entry.method in (STORED, DEFLATED) and not entry.encrypted
        if directory is not None and readable and entry.offset in ends and entry.compressed >= 0:
            shift = directory.shift
            span = ZipSpan(
                entry.offset + shift, ends[entry.offset] + shift, entry.compressed, entry.method,
                entry.crc,
            )  # fmt: skip
        members.append(ZipMember(entry.names, entry.size, span))
    return members


def extract(blob: bytes | memoryview, blob_start: int, span: ZipSpan, size: int) -> bytes:
    """The member's bytes from `blob` (the file's bytes from `blob_start`, covering its
    span), inflated if need be, checked against its size and CRC-32; NotAZip if not."""
    view = memoryview(blob)
    pos = span.offset - blob_start
    limit = span.end - blob_start
    if pos < 0 or limit > len(view) or bytes(view[pos : pos + 4]) != LOCAL_SIG:
        raise NotAZip("no local header where the directory says")
    name_len, extra_len = struct.unpack_from("<2H", view, pos + 26)
    start = pos + LOCAL_SIZE + name_len + extra_len
    if start + span.compressed > limit:
        raise NotAZip("member data runs past its span")
    data = view[start : start + span.compressed]
    if span.method == DEFLATED:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            out = inflater.decompress(data, size + 1)
        except zlib.error as exc:
            raise NotAZip(f"member data does not inflate: {exc}") from None
        if not inflater.eof:
            raise NotAZip("member data does not inflate to its end")
    else:
        out = bytes(data)
    if len(out) != size or zlib.crc32(out) != span.crc:
        raise NotAZip("member bytes do not match the directory's size and CRC-32")
    return out
