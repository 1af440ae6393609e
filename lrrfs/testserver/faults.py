"""Fault injection and the request log, for tests of clients (enabled with --faults).

POST /_lrrfs/faults {"latency_ms": N, "rules": [{"match", "action", "status", "times",
"hang_seconds", "body", "content_type", "inflated_bytes", "body_bytes", "chunked", "depth",
"interval"}]} replaces the fault set; DELETE /_lrrfs/faults clears it.
A rule's `match` is a Python regex searched in "METHOD path?query"; the first rule that matches
and has `times` left (null = unlimited) applies to the request. `hang`, `status` and
`echo_auth` answer without running the request (no side effect); the other actions run it and
corrupt its answer (a route that itself hangs keeps hanging). Actions:

- hang: never answer; close the connection after `hang_seconds` (default 60).
- drop: send the status line, headers with the true Content-Length, half the body, close.
- truncate: like drop but only the first 10 bytes (at most length - 1) of the body.
- overlong: send the whole body then extra garbage bytes beyond Content-Length, close.
- status: answer `status` (default 503) with this generation's JSON error body; no body at all
  for 204 and 304 (as LRR answers 204 to a search while its index is being built).
- nonsense: 200 with a body of the wrong shape: invalid JSON text ("not json{") with a JSON
  Content-Type on JSON routes, the JSON `{"pages": 42}` on image/file routes; `body` overrides
  the body and `content_type` the Content-Type (e.g. a listing the test built itself).
- gzip_bomb: 200 with the route's Content-Type and `Content-Encoding: gzip`, the body a valid
  gzip stream of `inflated_bytes` (default 2 GiB) zeros, about 1/1000 of that compressed.
- garbage_gzip: 200 with the route's Content-Type and `Content-Encoding: gzip`, the body 4096
  bytes that start like a gzip stream but fail to inflate (invalid deflate block type).
- huge: 200 with the route's Content-Type and `body_bytes` (default 2 GiB) bytes of filler
  made while sending: `["xxxxxxxx","xxxxxxxx",...` (cut anywhere, never valid) on JSON routes,
  the real answer's first bytes over and over on others. With the exact Content-Length, or
  with `Transfer-Encoding: chunked` when `chunked` is true.
- deep_json: 200 JSON of `depth` (default 100000) nested arrays: "[[[...]]]".
- trickle: the real status line and headers (true Content-Length), then the body one byte every
  `interval` seconds (default 1.0): a per-read timeout never fires, the answer never ends.
- ignore_range: run the request without its Range header (200 and the whole file, like a
  server that ignores Range).
- echo_auth: answer `status` (default 500) with this generation's JSON error body, its message
  the request's Authorization header verbatim and terminal control sequences: a client must
  never print or log what a server echoes.

Bodies that are made while sending stop quietly when the client closes the connection.

GET /_lrrfs/requests lists {"method", "path", "status"} of every /api request served since
start or the last DELETE /_lrrfs/requests (status null: no answer was sent).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import struct
import threading
import zlib
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeGuard

from .responses import JSON_TYPE, Response, Shapes, Stream, body_chunks

ACTIONS = (
    "hang", "drop", "truncate", "overlong", "status", "nonsense", "gzip_bomb", "garbage_gzip",
    "huge", "deep_json", "trickle", "ignore_range", "echo_auth",
)  # fmt: skip
OVERLONG_GARBAGE = b"\x00GARBAGE-AFTER-CONTENT-LENGTH\x00" * 4
REQUEST_LOG_SIZE = 200_000
GIB = 1 << 30
STREAM_CHUNK = 1 << 20
MAX_INFLATED = 16 * GIB  # the compressed bomb (about 1/1000 of this) is kept in memory
JSON_FILLER = b'"xxxxxxxx",'
REPEATED_HEAD = 64 << 10  # `huge` repeats at most this many first bytes of the real answer
# A gzip header, then a deflate block of the reserved type 3: zlib fails on its first bit.
GARBAGE_GZIP = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"\xff" * 4086
ECHO_SUFFIX = " \x1b]0;pwned\x07\x1b[2J"  # sets the terminal title, clears the screen
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class Rule:
    match: re.Pattern[str]
    action: str
    status: int = 503
    times: int | None = None
    hang_seconds: float = 60.0
    body: str | None = None
    content_type: str | None = None
    inflated_bytes: int = 2 * GIB
    body_bytes: int = 2 * GIB
    chunked: bool = False
    depth: int = 100_000
    interval: float = 1.0

    @classmethod
    def parse(cls, data: Any) -> Rule:
        if not isinstance(data, dict):
            raise ValueError("a rule must be an object")
        action = data.get("action")
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
        times = data.get("times")
        if times is not None and (not _is_int(times) or times < 0):
            raise ValueError("times must be a non-negative integer or null")
        status = data.get("status", 500 if action == "echo_auth" else 503)
        if not _is_int(status) or not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        body = data.get("body")
        content_type = data.get("content_type")
        if content_type is not None and (
            not isinstance(content_type, str) or _CONTROL.search(content_type)
        ):
            raise ValueError("content_type must be a header value (no control characters)")
        inflated = _count(data, "inflated_bytes", 2 * GIB)
        if inflated > MAX_INFLATED:
            raise ValueError(f"inflated_bytes must be at most {MAX_INFLATED}")
        chunked = data.get("chunked", False)
        if not isinstance(chunked, bool):
            raise ValueError("chunked must be true or false")
        return cls(
            match=re.compile(str(data.get("match", ""))),
            action=action,
            status=status,
            times=times,
            hang_seconds=float(data.get("hang_seconds", 60.0)),
            body=None if body is None else str(body),
            content_type=content_type,
            inflated_bytes=inflated,
            body_bytes=_count(data, "body_bytes", 2 * GIB),
            chunked=chunked,
            depth=_count(data, "depth", 100_000),
            interval=_seconds(data, "interval", 1.0),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "match": self.match.pattern,
            "action": self.action,
            "status": self.status,
            "times": self.times,
            "hang_seconds": self.hang_seconds,
            "body": self.body,
            "content_type": self.content_type,
            "inflated_bytes": self.inflated_bytes,
            "body_bytes": self.body_bytes,
            "chunked": self.chunked,
            "depth": self.depth,
            "interval": self.interval,
        }


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no number


def _count(data: dict[str, Any], name: str, default: int) -> int:
    value = data.get(name, default)
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


def _seconds(data: dict[str, Any], name: str, default: float) -> float:
    value = data.get(name, default)
    # json.loads accepts NaN and Infinity
    if not (_is_int(value) or isinstance(value, float)) or not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a non-negative number")
    return float(value)


class Faults:
    """The current fault set; thread-safe."""

    def __init__(self, latency_ms: float = 0) -> None:
        self._lock = threading.Lock()
        self.latency_ms = float(latency_ms)
        self.rules: list[Rule] = []

    def configure(self, data: Any) -> None:
        """Replace the whole fault set (raises ValueError on a malformed description)."""
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        latency = data.get("latency_ms", 0)
        if not isinstance(latency, int | float) or latency < 0:
            raise ValueError("latency_ms must be a non-negative number")
        rules = [Rule.parse(r) for r in data.get("rules") or []]
        with self._lock:
            self.latency_ms, self.rules = float(latency), rules

    def clear(self) -> None:
        with self._lock:
            self.latency_ms, self.rules = 0.0, []

    def take(self, line: str) -> Rule | None:
        """The rule applying to this request, counting it against the rule's `times`."""
        with self._lock:
            for rule in self.rules:
                if rule.times == 0 or not rule.match.search(line):
                    continue
                if rule.times is not None:
                    rule.times -= 1
                return rule
        return None

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {"latency_ms": self.latency_ms, "rules": [r.describe() for r in self.rules]}


@dataclass
class Mangle:
    """How to corrupt the sending of a response: cut the body after `limit` bytes, or
    send `extra` bytes after it; the connection is closed after either."""

    limit: int | None = None
    extra: bytes = b""


def refusal(rule: Rule, shapes: Shapes, authorization: str) -> Response | None:
    """The answer under `rule` if its action does not run the request, else None."""
    if rule.action == "hang":
        return Response(0, hang=rule.hang_seconds)
    if rule.action == "status":
        return shapes.fault_status(rule.status)
    if rule.action == "echo_auth":
        return shapes.fault_error(rule.status, f"rejected {authorization}{ECHO_SUFFIX}")
    return None


def hidden_headers(rule: Rule | None) -> tuple[str, ...]:
    """The request headers that the server pretends not to have received under `rule`."""
    return ("Range",) if rule is not None and rule.action == "ignore_range" else ()


def apply(rule: Rule, resp: Response) -> tuple[Response, Mangle | None]:
    """The response to send instead of `resp` under `rule`, and how to mangle its sending."""
    if resp.hang is not None or rule.action == "ignore_range":
        return resp, None
    if rule.action == "drop":
        return resp, Mangle(limit=resp.length // 2)
    if rule.action == "truncate":
        return resp, Mangle(limit=max(0, min(10, resp.length - 1)))
    if rule.action == "overlong":
        return resp, Mangle(extra=OVERLONG_GARBAGE)
    return _replacement(rule, resp), None


def _replacement(rule: Rule, resp: Response) -> Response:
    """A whole answer of the fault's own in place of `resp`."""
    if rule.action == "nonsense":
        return _nonsense(rule, resp)
    if rule.action == "trickle":
        stream = Stream(body_chunks(resp, 1), resp.length, pace=rule.interval)
        return Response(resp.status, resp.headers, stream=stream, is_json=resp.is_json)
    if rule.action == "deep_json":
        stream = Stream(_deep_json(rule.depth), 2 * rule.depth)
        return Response(200, [("Content-Type", JSON_TYPE)], stream=stream, is_json=True)
    headers = _route_headers(resp)
    if rule.action == "huge":
        stream = Stream(_huge_body(resp, rule.body_bytes), rule.body_bytes, chunked=rule.chunked)
        return Response(200, headers, stream=stream)
    gzipped = [*headers, ("Content-Encoding", "gzip")]
    if rule.action == "gzip_bomb":
        return Response(200, gzipped, gzip_bomb(rule.inflated_bytes))
    assert rule.action == "garbage_gzip", rule.action
    return Response(200, gzipped, GARBAGE_GZIP)


def _nonsense(rule: Rule, resp: Response) -> Response:
    if rule.body is not None:
        body = rule.body.encode()
    elif resp.is_json:
        body = b"not json{"
    else:
        body = b'{"pages": 42}'
    return Response(200, [("Content-Type", rule.content_type or JSON_TYPE)], body)


def _route_headers(resp: Response) -> list[tuple[str, str]]:
    """The route's Content-Type (and file name) for a body of our own: no range, no encoding."""
    dropped = ("content-range", "content-encoding")
    return [(k, v) for k, v in resp.headers if k.lower() not in dropped]


def repeated(unit: bytes, total: int) -> Generator[bytes, None, None]:
    """`total` bytes of `unit` over and over, in chunks of at most STREAM_CHUNK bytes."""
    block = unit * (STREAM_CHUNK // len(unit) + 2)  # any chunk is a slice of it
    offset = 0
    while total > 0:
        size = min(total, STREAM_CHUNK)
        yield block[offset : offset + size]
        offset, total = (offset + size) % len(unit), total - size


def _huge_body(resp: Response, total: int) -> Generator[bytes, None, None]:
    if resp.is_json:
        if total:
            yield b"["
            yield from repeated(JSON_FILLER, total - 1)
        return
    with contextlib.closing(body_chunks(resp, REPEATED_HEAD)) as chunks:
        head = next(chunks, b"")
    yield from repeated(head or b"\x00", total)


def _deep_json(depth: int) -> Generator[bytes, None, None]:
    yield from repeated(b"[", depth)
    yield from repeated(b"]", depth)


_bomb_lock = threading.Lock()


def gzip_bomb(size: int) -> bytes:
    """A gzip stream of `size` zeros (built once per size: the first takes a second)."""
    with _bomb_lock:  # concurrent requests wait for one build
        return _build_gzip_bomb(size)


@functools.lru_cache(maxsize=4)
def _build_gzip_bomb(size: int) -> bytes:
    zeros = bytes(STREAM_CHUNK)
    full, rest = divmod(size, STREAM_CHUNK)
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = []
    if full:
        parts.append(deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH))
    if full > 1:
        # A full flush starts the compressor afresh, so every further chunk of zeros compresses
        # to the same bytes: compress one and repeat it (compressing 2 GiB takes 10 s).
        again = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
        parts.append(again * (full - 1))
    last = deflate.compress(zeros[:rest]) + deflate.flush()
    # The trailer zlib wrote counts only what it saw: CRC-32 and size of all the zeros.
    crc = zlib.crc32(zeros[:rest])
    for _ in range(full):
        crc = zlib.crc32(zeros, crc)
    parts.append(last[:-8] + struct.pack("<II", crc, size & 0xFFFFFFFF))
    return b"".join(parts)


class RequestLog:
    """The /api requests served, oldest first (bounded; the oldest are forgotten)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)

    def add(self, method: str, path: str) -> dict[str, Any]:
        entry = {"method": method, "path": path, "status": None}
        with self._lock:
            self._entries.append(entry)
        return entry

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._entries]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
