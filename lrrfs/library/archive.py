"""An archive of the library as lrrfs shows it: its folder, its file, its metadata.json,
and what a refresh found changed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..client import ArchiveMeta
from .editing import MetadataDocument
from .names import safe_name
from .pagestore import Page

METADATA_NAME = "metadata.json"
THUMBNAIL_NAME = "thumbnail.jpg"
PAGE_NAME_RE = re.compile(r"\d{3,}\.[a-z0-9]{1,5}")


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """The original archive file: its name in the folder and its exact length."""

    name: str
    size: int


@dataclass(slots=True)
class Archive:
    """One archive of the library and what is known of it so far."""

    meta: ArchiveMeta
    name: str
    named_for: str = ""  # the title the folder name was made from
    pages: list[Page] | None = None
    page_index: dict[str, int] | None = None
    pages_from_disk: bool = False  # the page list came from the disk cache
    file: ArchiveFile | None = None
    document: MetadataDocument = field(default_factory=MetadataDocument)

    @property
    def arcid(self) -> str:
        return self.meta.arcid

    @property
    def metadata_json(self) -> bytes:
        """What metadata.json shows: the server's metadata, or the user's draft."""
        return self.document.content(self.meta)

    @property
    def cache_key(self) -> str:
        """What the disk cache files its pages under: an id is taken from the file's
        first 512 KB only, so its length is part of the key too."""
        return f"{self.meta.arcid}-{self.meta.size if self.meta.size is not None else ''}"


@dataclass(slots=True)
class Changes:
    """What a refresh found different on the server."""

    added: list[str] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)  # (arcid, old name)
    renamed: list[tuple[str, str, str]] = field(default_factory=list)  # (arcid, old, new)
    updated: list[str] = field(default_factory=list)  # arcids whose metadata changed

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.renamed or self.updated)


COMIC_EXTENSIONS = {"zip": "cbz", "7z": "cb7", "rar": "cbr", "tar": "cbt"}


def comic_name(name: str) -> str:
    """The name a comic book reader opens: `x.zip` is `x.cbz` (evince refuses a .zip)."""
    stem, dot, extension = name.rpartition(".")
    comic = COMIC_EXTENSIONS.get(extension.lower())
    return f"{stem}.{comic}" if dot and stem and comic else name


def archive_file_name(name: str) -> str:
    """The archive's own file name, kept clear of the folder's other names."""
    name = safe_name(name.rsplit("/", 1)[-1])
    if name in (METADATA_NAME, THUMBNAIL_NAME) or PAGE_NAME_RE.fullmatch(name):
        name = safe_name("archive " + name)
    return name
