"""Fault injection and the request log, for tests of clients (enabled with --faults).

POST /_lrrfs/faults {"latency_ms": N, "rules": [{"match", "action", "status", "times",
"hang_seconds", "body"}]} replaces the fault set; DELETE /_lrrfs/faults clears it.
A rule's `match` is a Python regex searched in "METHOD path?query"; the first rule that matches
and has `times` left (null = unlimited) applies to the request. `hang` and `status` answer
without running the request (no side effect); the other actions run it and corrupt its answer.
Actions:

- hang: never answer; close the connection after `hang_seconds` (default 60).
- drop: send the status line, headers with the true Content-Length, half the body, close.
- truncate: like drop but only the first 10 bytes (at most length - 1) of the body.
- overlong: send the whole body then extra garbage bytes beyond Content-Length, close.
- status: answer `status` (default 503) with this generation's JSON error body.
- nonsense: 200 with a body of the wrong shape: invalid JSON text ("not json{") with a JSON
  Content-Type on JSON routes, the JSON `{"pages": 42}` on image/file routes; `body` overrides.

GET /_lrrfs/requests lists {"method", "path", "status"} of every /api request served since
start or the last DELETE /_lrrfs/requests (status null: no answer was sent).
"""

from __future__ import annotations

import re
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from .responses import JSON_TYPE, Response, Shapes

ACTIONS = ("hang", "drop", "truncate", "overlong", "status", "nonsense")
OVERLONG_GARBAGE = b"\x00GARBAGE-AFTER-CONTENT-LENGTH\x00" * 4
REQUEST_LOG_SIZE = 200_000


@dataclass
class Rule:
    match: re.Pattern[str]
    action: str
    status: int = 503
    times: int | None = None
    hang_seconds: float = 60.0
    body: str | None = None

    @classmethod
    def parse(cls, data: Any) -> Rule:
        if not isinstance(data, dict):
            raise ValueError("a rule must be an object")
        action = data.get("action")
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
        times = data.get("times")
        if times is not None and (not isinstance(times, int) or times < 0):
            raise ValueError("times must be a non-negative integer or null")
        status = data.get("status", 503)
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        body = data.get("body")
        return cls(
            match=re.compile(str(data.get("match", ""))),
            action=action,
            status=status,
            times=times,
            hang_seconds=float(data.get("hang_seconds", 60.0)),
            body=None if body is None else str(body),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "match": self.match.pattern,
            "action": self.action,
            "status": self.status,
            "times": self.times,
            "hang_seconds": self.hang_seconds,
            "body": self.body,
        }


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


def apply(rule: Rule, resp: Response, shapes: Shapes) -> tuple[Response, Mangle | None]:
    """The response to send instead of `resp` under `rule`, and how to mangle its sending."""
    if rule.action == "hang":
        return Response(0, hang=rule.hang_seconds), None
    if rule.action == "status":
        return shapes.fault_status(rule.status), None
    if rule.action == "nonsense":
        return _nonsense(rule, resp), None
    if rule.action == "drop":
        return resp, Mangle(limit=resp.length // 2)
    if rule.action == "truncate":
        return resp, Mangle(limit=max(0, min(10, resp.length - 1)))
    return resp, Mangle(extra=OVERLONG_GARBAGE)


def _nonsense(rule: Rule, resp: Response) -> Response:
    if rule.body is not None:
        body = rule.body.encode()
    elif resp.is_json:
        body = b"not json{"
    else:
        body = b'{"pages": 42}'
    return Response(200, [("Content-Type", JSON_TYPE)], body)


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
