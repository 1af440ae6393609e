"""The LANraragi HTTP client: knows the server's API, nothing of FUSE."""

from .api import DownloadStream, LrrClient, iter_archives, parse_archives
from .errors import (
    AuthRejected,
    BadResponse,
    Locked,
    LrrError,
    NotFound,
    ServerError,
    ServerUnreachable,
)
from .models import ArchiveMeta, Category, DownloadInfo, PageRef, ServerInfo, Thumbnail

__all__ = [
    "ArchiveMeta",
    "AuthRejected",
    "BadResponse",
    "Category",
    "DownloadInfo",
    "DownloadStream",
    "Locked",
    "LrrClient",
    "LrrError",
    "NotFound",
    "PageRef",
    "ServerError",
    "ServerInfo",
    "ServerUnreachable",
    "Thumbnail",
    "iter_archives",
    "parse_archives",
]
