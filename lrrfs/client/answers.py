"""Reading LANraragi's answers: error texts, file names, the archive list decoded one entry
at a time."""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx

from .errors import (
    BadResponse,
    printable,
    server_text,
)
from .models import (
    ArchiveMeta,
    json_int,
)

log = logging.getLogger(__name__)


def describe_transport_error(exc: httpx.TransportError) -> str:
    """A short reason for a transport failure, without URLs or headers."""
    # httpx and trio wrap the telling error (a refused certificate, a reset) in errors
    # without text: say the innermost one that has some.
    text, inner = str(exc).strip(), exc.__cause__ or exc.__context__
    while inner is not None:
        text = str(inner).strip() or text
        inner = inner.__cause__ or inner.__context__
    text = printable(text)  # http.client quotes what the server sent
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def error_message(response: httpx.Response, secrets: tuple[str, ...] = ()) -> str:
    """The server's own words from either error shape, or the status line; fit to show."""
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):
        body = None
    message = ""
    if isinstance(body, dict):
        if isinstance(body.get("error"), str):
            message = html.unescape(body["error"])
        elif isinstance(body.get("errors"), list) and body["errors"]:
            first = body["errors"][0]
            if isinstance(first, dict):
                message = str(first.get("message", ""))
    message = server_text(message, secrets)
    return message or server_text(f"HTTP {response.status_code} {response.reason_phrase}")


def expect_file(response: httpx.Response, what: str) -> None:
    """A page, thumbnail or archive answer is never JSON or HTML: those are errors or
    nonsense, and their bytes must not be served as the file's."""
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if response.status_code < 300 and kind in ("application/json", "text/html"):
        raise BadResponse(f"{what}: the server answered {kind} instead of the file")


def content_disposition_filename(raw_headers: list[tuple[bytes, bytes]]) -> str | None:
    """The file name in `Content-Disposition`, which LRR sends as raw UTF-8."""
    for name, value in raw_headers:
        if name.lower() != b"content-disposition":
            continue
        text = value.decode("utf-8", "replace")
        match = re.search(r'filename="((?:[^"\\]|\\.)*)"', text)
        if match:
            return re.sub(r"\\(.)", r"\1", match.group(1))
        match = re.search(r"filename=([^;]+)", text)
        if match:
            return match.group(1).strip()
    return None


def parse_archives(body: bytes) -> list[ArchiveMeta]:
    """The archives of a `GET /api/archives` body; malformed entries are skipped."""
    return list(iter_archives(body))


JSON_SPACE = re.compile(r"[ \t\n\r]*")


def iter_archives(body: bytes) -> Iterator[ArchiveMeta]:
    """The archives of a `GET /api/archives` body, decoded one at a time: the list of
    dicts of a 100,000-archive library at once would take 100 MB. Malformed entries are
    skipped with a warning."""
    what = "archive list"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadResponse(f"{what}: the answer is not valid JSON") from None
    decoder = json.JSONDecoder()
    pos = _skip_space(text, 0)
    if not text.startswith("[", pos):
        raise BadResponse(f"{what}: the answer is not a JSON array")
    pos = _skip_space(text, pos + 1)
    closed = text.startswith("]", pos)
    while not closed:
        entry, pos = _decode_entry(decoder, text, pos, what)
        try:
            yield ArchiveMeta.from_json(entry)
        except BadResponse as exc:
            log.warning("%s: skipping a malformed entry: %s", what, exc)
        pos = _skip_space(text, pos)
        closed = text.startswith("]", pos)
        if not closed and not text.startswith(",", pos):
            raise BadResponse(f"{what}: the answer is not valid JSON")
        pos = _skip_space(text, pos + 1) if not closed else pos
    if _skip_space(text, pos + 1) != len(text):
        raise BadResponse(f"{what}: the answer is not valid JSON")


# For an entry the fast decoder refused: one integer too long for int() spoils that entry
# (no field takes a LongNumber), not the whole list.
LONG_NUMBER_DECODER = json.JSONDecoder(parse_int=json_int)


def _decode_entry(decoder: json.JSONDecoder, text: str, pos: int, what: str) -> tuple[Any, int]:
    """The JSON value at `pos` and the position after it."""
    for attempt in (decoder, LONG_NUMBER_DECODER):
        try:
            return attempt.raw_decode(text, pos)
        except ValueError:
            continue  # maybe an integer of 5,000 digits: the second decoder takes it
        except RecursionError:  # nested past any real answer
            break
    raise BadResponse(f"{what}: the answer is not valid JSON") from None


def _skip_space(text: str, pos: int) -> int:
    match = JSON_SPACE.match(text, pos)
    assert match is not None  # it matches the empty text too
    return match.end()
