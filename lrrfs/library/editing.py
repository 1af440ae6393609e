"""Editing metadata.json: what the user saved, checked and merged with the server's values.

A save applies only what the user changed: a field whose saved value equals the
version the user read is left alone, so changes made on the server since then
(by another client, the web UI) are kept; the same field changed on both sides
is a conflict. Nothing reaches the server unless the whole document is valid.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from ..client import ArchiveMeta
from .metadata import EDITABLE_FIELDS, READ_ONLY_FIELDS, render_metadata

log = logging.getLogger(__name__)

MAX_DOCUMENT = 1 << 20  # bytes
# Lines at the top that start with "#" are lrrfs's note on a failed save (as `git commit`
# and `kubectl edit` do): JSON never starts with "#", and a save drops them.
NOTE_LINES_RE = re.compile(rb"\A(?:[ \t]*#[^\n]*(?:\n|\Z))+")


class EditError(Exception):
    """A save that cannot be applied; the message says why, for the user."""


class InvalidEdit(EditError):
    """The saved text is not a valid metadata document."""


class EditConflict(EditError):
    """A field the user changed was changed on the server too since the user read it."""


class EditNotAllowed(EditError):
    """This mount cannot save: no API key, or mounted read-only."""


class EditTooLarge(EditError):
    """metadata.json may not grow past MAX_DOCUMENT bytes."""


class EditNotKept(EditError):
    """The server said yes but holds other values than were sent (0.7 keeps tags sent empty)."""


@dataclass(frozen=True, slots=True)
class Edit:
    """The editable fields a saved document holds (None: left out) and its read-only ones."""

    title: str | None = None
    tags: tuple[str, ...] | None = None
    summary: str | None = None
    isnew: bool | None = None
    read_only: tuple[tuple[str, Any], ...] = ()

    def value(self, field: str) -> Any:
        return getattr(self, field)


def _position(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def _decode(data: bytes) -> Any:
    if len(data) > MAX_DOCUMENT:
        raise EditTooLarge(f"metadata.json is larger than {MAX_DOCUMENT} bytes")
    if not data.strip():
        raise InvalidEdit("metadata.json is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEdit(f"not valid UTF-8 at {_position(data, exc.start)}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        reason = exc.msg.removesuffix(" at")  # "Invalid control character at": no cut line
        if reason != exc.msg:
            reason += " (inside a string, write a tab as \\t and a line break as \\n)"
        raise InvalidEdit(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {reason}"
        ) from None


def _tags(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise InvalidEdit('"tags" must be a list of strings like ["artist:name", "tag"]')
    tags = tuple(tag.strip() for tag in value if tag.strip())
    for tag in tags:
        if "," in tag:
            raise InvalidEdit(f"a tag cannot hold a comma: {tag!r}")
    return tags


def without_note(data: bytes) -> bytes:
    """The text without lrrfs's note at its top (see `MetadataDocument.annotate`)."""
    return NOTE_LINES_RE.sub(b"", data, count=1)


def parse_document(data: bytes) -> Edit:
    """Check a saved metadata.json; raise InvalidEdit with the reason (and where)."""
    document = _decode(without_note(data))
    if not isinstance(document, dict):
        raise InvalidEdit("metadata.json must hold one JSON object { ... }")
    unknown = sorted(set(document) - set(EDITABLE_FIELDS) - set(READ_ONLY_FIELDS))
    if unknown:
        raise InvalidEdit(
            f"unknown field {unknown[0]!r}; the editable fields are {', '.join(EDITABLE_FIELDS)}"
        )
    fields: dict[str, Any] = {}
    if "title" in document:
        title = document["title"]
        if not isinstance(title, str):
            raise InvalidEdit('"title" must be a string')
        if not title.strip():
            raise InvalidEdit('"title" must not be empty')
        fields["title"] = title.strip()
    if "tags" in document:
        fields["tags"] = _tags(document["tags"])
    if "summary" in document:
        summary = document["summary"]
        if summary is not None and not isinstance(summary, str):
            raise InvalidEdit('"summary" must be a string')
        fields["summary"] = summary or ""
    if "isnew" in document:
        if not isinstance(document["isnew"], bool):
            raise InvalidEdit('"isnew" must be true or false')
        fields["isnew"] = document["isnew"]
    read_only = tuple((k, document[k]) for k in READ_ONLY_FIELDS if k in document)
    return Edit(**fields, read_only=read_only)


@dataclass(frozen=True, slots=True)
class MetadataChange:
    """What to send: title, tags and summary always together; isnew only if it changed."""

    title: str
    tags: tuple[str, ...]
    summary: str | None
    isnew: bool | None
    fields: tuple[str, ...]  # the fields the user changed

    @property
    def sends_metadata(self) -> bool:
        return bool(set(self.fields) & {"title", "tags", "summary"})

    def unkept(self, after: ArchiveMeta) -> list[str]:
        """The changed fields the server does not hold as sent (it trims titles and tags,
        and drops duplicate tags: those are no difference)."""

        def same_text(sent: str | None, held: str | None) -> bool:
            return sent is None or held is None or sent.split() == held.split()

        lost = []
        if "title" in self.fields and not same_text(self.title, after.title):
            lost.append("title")
        if "tags" in self.fields and set(self.tags) != set(after.tags):
            lost.append("tags")
        if "summary" in self.fields and not same_text(self.summary, after.summary):
            lost.append("summary")
        if "isnew" in self.fields and self.isnew != after.isnew:
            lost.append("isnew")
        return lost


def merge(base: ArchiveMeta, edit: Edit, current: ArchiveMeta) -> MetadataChange | None:
    """The change to send, given the version the user read (`base`) and the server's now.

    None when there is nothing to change.
    """
    read_only = [
        field
        for field, value in edit.read_only
        if value not in (getattr(base, field), getattr(current, field))
    ]
    changed: dict[str, Any] = {}
    for field in EDITABLE_FIELDS:
        mine = edit.value(field)
        theirs, read = getattr(current, field), getattr(base, field)
        if mine is None or mine in (read, theirs):
            continue
        if theirs != read:
            raise EditConflict(
                f'"{field}" was changed on the server since you read it (now {theirs!r}); '
                "delete metadata.json (rm) to see the server's version, then edit again"
            )
        changed[field] = mine
    if read_only and not changed:
        raise InvalidEdit(
            f'"{read_only[0]}" is read-only; only {", ".join(EDITABLE_FIELDS)} can change'
        )
    if read_only:  # `sed -i s/Old/New/` also hits "filename" when it equals the title
        log.warning(
            "%r: ignoring a change to the read-only %s (only %s can change)",
            current.title, ", ".join(map(repr, read_only)), ", ".join(EDITABLE_FIELDS),
        )  # fmt: skip
    if not changed:
        return None
    if "summary" in changed and current.summary is None:
        raise InvalidEdit("this LANraragi server does not keep a summary (it is older than 0.9.10)")
    return MetadataChange(
        title=changed.get("title", current.title),
        tags=changed.get("tags", current.tags),
        summary=changed.get("summary", current.summary),
        isnew=changed.get("isnew"),
        fields=tuple(changed),
    )


class MetadataDocument:
    """The text metadata.json shows for one archive.

    Normally the server's metadata, rendered. Once the user writes, the text is
    theirs (a draft) until a save succeeds or they revert: a rejected save loses
    nothing, and a later valid save applies it.
    """

    __slots__ = ("_draft", "base", "dirty")  # one per archive: 100,000 of them, maybe

    def __init__(self) -> None:
        self._draft: bytearray | None = None
        self.dirty = False  # written since the last save attempt
        self.base: ArchiveMeta | None = None  # the server's version the user last read

    @property
    def has_draft(self) -> bool:
        return self._draft is not None

    def content(self, meta: ArchiveMeta) -> bytes:
        return bytes(self._draft) if self._draft is not None else render_metadata(meta)

    def note_read(self, meta: ArchiveMeta) -> None:
        """The user read the server's version: it is what their edit starts from."""
        if self._draft is None:
            self.base = meta

    def _editable(self, meta: ArchiveMeta) -> bytearray:
        if self._draft is None:
            self._draft = bytearray(render_metadata(meta))
            self.base = self.base or meta
        return self._draft

    def write(self, meta: ArchiveMeta, offset: int, data: bytes) -> None:
        if offset + len(data) > MAX_DOCUMENT:
            raise EditTooLarge(f"metadata.json may not grow past {MAX_DOCUMENT} bytes")
        draft = self._editable(meta)
        if offset > len(draft):
            draft.extend(b"\0" * (offset - len(draft)))
        draft[offset : offset + len(data)] = data
        self.dirty = True

    def truncate(self, meta: ArchiveMeta, size: int) -> None:
        if size > MAX_DOCUMENT:
            raise EditTooLarge(f"metadata.json may not grow past {MAX_DOCUMENT} bytes")
        draft = self._editable(meta)
        if size < len(draft):
            del draft[size:]
        else:
            draft.extend(b"\0" * (size - len(draft)))
        self.dirty = True

    def replace(self, meta: ArchiveMeta, data: bytes) -> None:
        """The whole text at once (a file renamed onto metadata.json)."""
        self.truncate(meta, 0)
        self.write(meta, 0, data)

    def annotate(self, reason: str) -> None:
        """A save failed: the kept text gets a note at its top saying why, which the next
        save drops, so a user who opens the file again sees it where they look."""
        if self._draft is None:
            return
        note = (
            f"# lrrfs: this text was NOT saved: {' '.join(reason.split())}\n"
            "# Fix it and save again (these lines at the top are dropped), or delete the file\n"
            "# to see the server's version.\n"
        ).encode("utf-8", "backslashreplace")
        text = note + without_note(bytes(self._draft))
        if len(text) <= MAX_DOCUMENT:
            self._draft = bytearray(text)

    def saved(self) -> None:
        """A save succeeded, or the user reverted: show the server's version again."""
        self._draft = None
        self.dirty = False
        self.base = None
