"""The content of `metadata.json`: an archive's metadata as pretty JSON."""

from __future__ import annotations

import json
from typing import Any

from ..client import ArchiveMeta

# Fields shown in this order; those the server did not send are left out.
EDITABLE_FIELDS = ("title", "tags", "summary", "isnew")
READ_ONLY_FIELDS = (
    "arcid",
    "pagecount",
    "filename",
    "extension",
    "size",
    "progress",
    "lastreadtime",
)


def metadata_document(meta: ArchiveMeta) -> dict[str, Any]:
    document: dict[str, Any] = {
        "title": meta.title,
        "tags": list(meta.tags),
        "summary": meta.summary,
        "isnew": meta.isnew,
    }
    for field in READ_ONLY_FIELDS:
        value = getattr(meta, field)
        if value is not None:
            document[field] = value
    if document["summary"] is None:
        del document["summary"]
    return document


def render_metadata(meta: ArchiveMeta) -> bytes:
    text = json.dumps(metadata_document(meta), ensure_ascii=False, indent=2)
    return (text + "\n").encode("utf-8", "backslashreplace")
