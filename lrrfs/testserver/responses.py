"""Responses as the two server generations shape them (JSON encoding, error bodies, ranges)."""

from __future__ import annotations

import json
import re
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .names import html_escape, mojo_quote

JSON_TYPE = "application/json;charset=UTF-8"

NOT_FOUND_HTML = """<!DOCTYPE html>
<html>
  <head>
    <title>Page Not Found</title>
  </head>
  <body>
    <div id="notfound">Page Not Found (lrrfs test server, LANraragi 0.7 generation)</div>
  </body>
</html>
"""


@dataclass
class Stream:
    """A body made while it is sent (never whole in memory): `chunks`, `pace` seconds apart."""

    chunks: Generator[bytes, None, None]
    length: int  # what the chunks add up to: the Content-Length, unless chunked
    chunked: bool = False  # sent with Transfer-Encoding: chunked and no Content-Length
    pace: float = 0.0  # seconds to wait before each chunk


@dataclass
class Response:
    """An answer to send; `file` streams (path, offset, length) from disk with sendfile."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    file: tuple[Path, int, int] | None = None
    stream: Stream | None = None
    hang: float | None = None  # hold the connection this long, then close with no answer
    is_json: bool = False

    @property
    def length(self) -> int:
        if self.stream is not None:
            return self.stream.length
        return self.file[2] if self.file is not None else len(self.body)

    @property
    def bodiless(self) -> bool:
        """HTTP forbids a body (and 1xx and 204 a Content-Length) for these statuses."""
        return self.status < 200 or self.status in (204, 304)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


def hang(seconds: float) -> Response:
    return Response(0, hang=seconds)


def body_chunks(resp: Response, size: int) -> Generator[bytes, None, None]:
    """The body of `resp` (bytes or a file span) in pieces of at most `size` bytes."""
    if resp.file is None:
        for start in range(0, len(resp.body), size):
            yield resp.body[start : start + size]
        return
    path, offset, length = resp.file
    with open(path, "rb") as f:
        f.seek(offset)
        while length > 0 and (piece := f.read(min(size, length))):
            length -= len(piece)
            yield piece


def encode_json(value: Any) -> bytes:
    """Mojo::JSON style: sorted keys, compact, raw UTF-8, '/' escaped as '\\/'."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    text = text.replace("/", "\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text.encode("utf-8")


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, [("Content-Type", JSON_TYPE)], encode_json(value), is_json=True)


class Shapes:
    """Error bodies of one server generation."""

    def __init__(self, generation: str) -> None:
        self.modern = generation == "0.9"

    def api_error(self, operation: str, message: str, status: int = 400) -> Response:
        """Controller error: {"error", "operation", "success": 0} (+ successMessage on 0.9)."""
        if self.modern:
            body = {
                "error": html_escape(message),
                "operation": operation,
                "success": 0,
                "successMessage": "",
            }
        else:
            body = {"error": message, "operation": operation, "success": 0}
        return json_response(body, status)

    def api_success(self, operation: str, message: str = "", **extra: Any) -> Response:
        body: dict[str, Any] = {"error": "", "operation": operation, "success": 1, **extra}
        if self.modern:
            body["successMessage"] = html_escape(message)
        return json_response(body)

    def validation(self, status: int, message: str, path: str = "/") -> Response:
        """0.9 OpenAPI-style error: {"errors": [{"message", "path"}], "status"}."""
        return json_response(
            {"errors": [{"message": message, "path": path}], "status": status}, status
        )

    def not_found(self) -> Response:
        if self.modern:
            return self.validation(404, "Not Found.")
        return Response(404, [("Content-Type", "text/html;charset=UTF-8")], NOT_FOUND_HTML.encode())

    def unauthorized(self, *, legacy_shape: bool = False) -> Response:
        if self.modern and not legacy_shape:
            return self.validation(401, "Unauthorized", "/security/0/api_key")
        body = {"error": "This API is protected and requires login or an API Key."}
        return json_response(body, 401)

    def server_error(self) -> Response:
        if self.modern:
            return self.validation(500, "Internal Server Error.")
        return json_response({"error": "Internal Server Error.", "success": 0}, 500)

    def fault_status(self, status: int) -> Response:
        """Body for a fault rule's forced status, shaped like this generation's errors."""
        if status == 401:
            return self.unauthorized()
        message = "Not Found." if self.modern and status == 404 else "Injected fault."
        return self.fault_error(status, message)

    def fault_error(self, status: int, message: str) -> Response:
        """This generation's error body with `message` (none where HTTP forbids a body)."""
        if Response(status).bodiless:
            return Response(status)
        if self.modern:
            return self.validation(status, message)
        return json_response({"error": message, "operation": "fault", "success": 0}, status)


_RANGE = re.compile(r"^bytes=(\d+)-(\d+)?")


def parse_range(header: str | None, size: int) -> tuple[int, int] | Literal[False] | None:
    """Range handling of Mojolicious::Plugin::RenderFile, which LRR uses for files.

    None: no Range header (200). (start, end): inclusive byte range (206).
    False: not satisfiable (416): suffix ranges, a start past the end, end before start.
    """
    if header is None:
        return None
    m = _RANGE.match(header.strip())
    if not m or int(m.group(1)) > size - 1:
        return False
    start, end = int(m.group(1)), size - 1
    if m.group(2) is not None and int(m.group(2)) <= end:
        end = int(m.group(2))
    return (start, end) if start <= end else False


def ranged(
    headers: list[tuple[str, str]],
    size: int,
    range_header: str | None,
    *,
    body: bytes | None = None,
    file: tuple[Path, int] | None = None,
) -> Response:
    """A 200/206/416 answer for `body` bytes, or for `size` bytes at (path, offset) in a file."""
    rng = parse_range(range_header, size)
    if rng is False:
        return Response(416, list(headers))
    start, end = rng if rng else (0, size - 1)
    status = 206 if rng else 200
    out = list(headers)
    if rng:
        out.append(("Content-Range", f"bytes {start}-{end}/{size}"))
    if file is not None:
        return Response(status, out, file=(file[0], file[1] + start, end - start + 1))
    assert body is not None
    return Response(status, out, body[start : end + 1])


def file_headers(disposition: str, name: str, content_type: str) -> list[tuple[str, str]]:
    """Headers of a served file, as LRR's RenderFile plugin writes them:
    'Content-Type: T;name="n"' and 'Content-Disposition: d;filename="n"'."""
    quoted = mojo_quote(name)
    return [
        ("Content-Type", f"{content_type};name={quoted}"),
        ("Content-Disposition", f"{disposition};filename={quoted}"),
    ]
