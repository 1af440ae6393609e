"""Reading archive files: member tables of zip/tar files and the bytes of one member.

Only the member table is read when a library is scanned; a page is read on request. Members
stored uncompressed (stored zip entries, plain tar) are described as a byte span of the archive
file so that the server can stream them with sendfile instead of copying them through Python.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .names import is_image, normalize_member

ARCID_BYTES = 512000  # LRR hashes the first 512000 bytes (not 512 KiB)

_ZIP_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")


@dataclass(frozen=True, slots=True)
class Member:
    """One image member of an archive, under the name it is served as."""

    name: str  # normalized in-archive path (see names.normalize_member)
    raw_name: str  # name as stored in the archive
    size: int  # uncompressed size
    kind: str  # "zip" or "tar"
    offset: int  # zip: local header offset; tar: offset of the data
    compress_type: int = zipfile.ZIP_STORED
    compress_size: int = 0
    gzipped: bool = False


def compute_arcid(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha1(f.read(ARCID_BYTES)).hexdigest()


def read_head(path: Path) -> bytes:
    """The first ARCID_BYTES bytes: the whole file when it is small."""
    with open(path, "rb") as f:
        return f.read(ARCID_BYTES)


def list_image_members(path: Path, head: bytes | None = None) -> list[Member]:
    """Image members of a zip or tar archive, unordered; unreadable archives have none.

    `head` (see read_head) saves reopening a small file: it is parsed from memory.
    """
    source: Path | io.BytesIO = path
    if head is not None and len(head) < ARCID_BYTES:
        source = io.BytesIO(head)
    try:
        try:
            return _zip_members(source)
        except zipfile.BadZipFile:
            if isinstance(source, io.BytesIO):
                source.seek(0)
            return _tar_members(source)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error):
        return []


def _dedup(members: list[Member]) -> list[Member]:
    """Keep the first member of each served name (two raw names can normalize alike)."""
    seen: set[str] = set()
    out = []
    for m in members:
        if m.name not in seen:
            seen.add(m.name)
            out.append(m)
    return out


def _zip_members(path: Path | io.BytesIO) -> list[Member]:
    out = []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = normalize_member(info.filename)
            if info.is_dir() or info.flag_bits & 0x1 or name is None or not is_image(name):
                continue
            out.append(
                Member(
                    name=name,
                    raw_name=info.filename,
                    size=info.file_size,
                    kind="zip",
                    offset=info.header_offset,
                    compress_type=info.compress_type,
                    compress_size=info.compress_size,
                )
            )
    return _dedup(out)


def _tar_members(source: Path | io.BytesIO) -> list[Member]:
    gzipped = _is_gzip(source)
    out = []
    in_memory = source if isinstance(source, io.BytesIO) else None
    path = None if isinstance(source, io.BytesIO) else source
    mode: Literal["r:gz", "r:"] = "r:gz" if gzipped else "r:"
    with tarfile.open(name=path, fileobj=in_memory, mode=mode) as tf:
        for info in tf:
            name = normalize_member(_printable(info.name))
            if not info.isreg() or info.issparse() or name is None or not is_image(name):
                continue
            out.append(
                Member(
                    name=name,
                    raw_name=info.name,
                    size=info.size,
                    kind="tar",
                    offset=info.offset_data,
                    gzipped=gzipped,
                )
            )
    return _dedup(out)


def _printable(name: str) -> str:
    """tarfile keeps undecodable name bytes as lone surrogates, which cannot go into a URL;
    serve such a name with U+FFFD instead (members are read by offset, not by name)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _is_gzip(source: Path | io.BytesIO) -> bool:
    if isinstance(source, io.BytesIO):
        return bytes(source.getbuffer()[:2]) == b"\x1f\x8b"
    with open(source, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def stored_span(path: Path, member: Member) -> tuple[int, int] | None:
    """(offset, length) of the member's bytes in the archive file when stored uncompressed."""
    if member.kind == "tar":
        return None if member.gzipped else (member.offset, member.size)
    if member.compress_type != zipfile.ZIP_STORED:
        return None
    return (_zip_data_offset(path, member), member.size)


def _zip_data_offset(path: Path, member: Member) -> int:
    with open(path, "rb") as f:
        f.seek(member.offset)
        header = f.read(_ZIP_LOCAL_HEADER.size)
    fields = _ZIP_LOCAL_HEADER.unpack(header)
    if fields[0] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header for {member.raw_name!r}")
    name_length: int = fields[9]
    extra_length: int = fields[10]
    return member.offset + _ZIP_LOCAL_HEADER.size + name_length + extra_length


def read_member(path: Path, member: Member) -> bytes:
    """All the bytes of one member."""
    span = stored_span(path, member)
    if span is not None:
        with open(path, "rb") as f:
            f.seek(span[0])
            return f.read(span[1])
    if member.kind == "tar":
        with gzip.open(path, "rb") as f:
            f.seek(member.offset)
            return f.read(member.size)
    if member.compress_type == zipfile.ZIP_DEFLATED:
        with open(path, "rb") as f:
            f.seek(_zip_data_offset(path, member))
            raw = f.read(member.compress_size)
        return zlib.decompressobj(-15).decompress(raw)
    with zipfile.ZipFile(path) as zf:
        return zf.read(member.raw_name)
