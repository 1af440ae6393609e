"""The library model: archives, names and caches; neither HTTP details nor FUSE."""

from .archive import METADATA_NAME, THUMBNAIL_NAME, Archive, ArchiveFile, Changes
from .library import Library
from .pagestore import Page
from .reader import ArchiveReader

__all__ = [
    "METADATA_NAME",
    "THUMBNAIL_NAME",
    "Archive",
    "ArchiveFile",
    "ArchiveReader",
    "Changes",
    "Library",
    "Page",
]
