"""Helpers for the test server's tests: read recordings of real servers, talk raw HTTP,
compare JSON shapes."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

# The recordings live in shared/ beside the repository (also in CI's clone).
REPOSITORY = Path(__file__).resolve().parent.parent
SAMPLES_DIR = Path(
    os.environ.get("LRRFS_LRR_SAMPLES") or REPOSITORY.parent / "shared" / "lrr-samples"
)
RECORDING_DIRS = {"0.9": "0.9.81", "0.7": "0.7.9"}
KEY = "lrr-test-key"  # the throwaway key of the recordings

_OPTION = re.compile(r"\s(?=(?:-X|-H|-F|-m|-w|-o|-I|--data-urlencode)(?:\s|$))")
_HEX_LINE = re.compile(r"^[0-9a-f]{8}: ((?:[0-9a-f]{2,4} ?)+)")


@dataclass
class Recording:
    """One recorded request to a real server and the answer it got."""

    name: str
    method: str
    url: str  # path?query
    headers: list[tuple[str, str]] = field(default_factory=list)
    form: list[tuple[str, str]] = field(default_factory=list)  # --data-urlencode
    multipart: list[tuple[str, str]] = field(default_factory=list)  # -F
    status: int | None = None  # None: the server never answered
    resp_headers: dict[str, str] = field(default_factory=dict)  # lower-cased names
    body_text: str | None = None
    body_len: int | None = None  # binary bodies: their length
    body_head: bytes = b""  # binary bodies: their first bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body_text or "null")

    @property
    def is_json(self) -> bool:
        return "json" in self.resp_headers.get("content-type", "")

    @property
    def range_header(self) -> str | None:
        return next((v for k, v in self.headers if k.lower() == "range"), None)


def recordings(generation: str) -> list[Path]:
    return sorted((SAMPLES_DIR / RECORDING_DIRS[generation]).glob("*.txt"))


def parse_recording(path: Path) -> Recording:
    lines = path.read_text(encoding="utf-8").split("\n")
    rec = _parse_command(path.stem, lines[0])
    i = 1
    while i < len(lines) and not lines[i].startswith("HTTP/"):
        i += 1
    if i == len(lines):
        return rec  # no answer recorded (curl exit 52)
    rec.status = int(lines[i].split()[1])
    i += 1
    while i < len(lines) and lines[i].strip():
        name, _, value = lines[i].partition(":")
        rec.resp_headers[name.strip().lower()] = value.strip()
        i += 1
    _parse_body(rec, lines[i + 1 :])
    return rec


def _parse_command(name: str, line: str) -> Recording:
    assert line.startswith("### curl "), line
    text = line[len("### curl ") :]
    url_match = re.search(r"(https?://\S+)\s*$", text)
    assert url_match, line
    url = urlsplit(url_match.group(1))
    rec = Recording(name, "GET", url.path + (f"?{url.query}" if url.query else ""))
    for option in _OPTION.split(" " + text[: url_match.start()].strip()):
        flag, _, value = option.strip().partition(" ")
        if flag == "-X":
            rec.method = value
        elif flag == "-I":
            rec.method = "HEAD"
        elif flag == "-H":
            key, _, val = value.partition(":")
            rec.headers.append((key.strip(), val.strip()))
        elif flag == "--data-urlencode":
            rec.form.append(tuple(value.split("=", 1)))  # type: ignore[arg-type]
        elif flag == "-F":
            rec.multipart.append(tuple(value.split("=", 1)))  # type: ignore[arg-type]
    return rec


def _parse_body(rec: Recording, lines: list[str]) -> None:
    if lines and lines[0].startswith("<binary body:"):
        rec.body_len = int(re.search(r"(\d+) bytes", lines[0]).group(1))  # type: ignore[union-attr]
        head = "".join(m.group(1) for ln in lines[1:] if (m := _HEX_LINE.match(ln)))
        rec.body_head = bytes.fromhex(head.replace(" ", ""))
    elif lines and lines[0].startswith("<HEAD request"):
        rec.body_text = None
    elif rec.method != "HEAD":
        rec.body_text = "\n".join(lines).rstrip("\n")


# ----- raw HTTP -----


@dataclass
class Answer:
    status: int | None  # None: connection closed without an answer
    headers: dict[str, str]
    body: bytes
    elapsed: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def send(
    base_url: str,
    method: str,
    url: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    timeout: float = 20,
) -> Answer:
    """One request on a fresh connection (so that a hang or close does not leak)."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    start = time.monotonic()
    try:
        conn.putrequest(method, url, skip_accept_encoding=True)
        for key, value in headers or []:
            conn.putheader(key, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        try:
            resp = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return Answer(None, {}, b"", time.monotonic() - start)
        data = resp.read()
        # http.client decodes header bytes as latin-1; LRR sends raw UTF-8 file names
        heads = {k.lower(): _utf8(v) for k, v in resp.getheaders()}
        return Answer(resp.status, heads, data, time.monotonic() - start)
    finally:
        conn.close()


def _utf8(value: str) -> str:
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def raw_exchange(base_url: str, request: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, read until the server closes: for answers that break HTTP."""
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def multipart(fields: list[tuple[str, str]], files: dict[str, Path]) -> tuple[str, bytes]:
    """A multipart/form-data body like curl -F: `name=@path` fields become files."""
    boundary = uuid.uuid4().hex
    out = []
    for name, value in fields:
        out.append(f"--{boundary}\r\n".encode())
        if value.startswith("@"):
            path = files[value[1:]]
            out.append(
                f'Content-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n".encode()
            )
            out.append(path.read_bytes())
        else:
            out.append(f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
            out.append(value.encode())
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(out)


def form_body(fields: list[tuple[str, str]]) -> bytes:
    return urlencode(fields).encode()


# ----- JSON shapes -----


def json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}[type(value)]  # fmt: skip


def shape_diff(recorded: Any, ours: Any, where: str = "$") -> list[str]:
    """Differences of JSON shape: same keys and JSON types, recursively; list elements are
    checked against the first recorded element; an empty recorded list wants an empty list."""
    if json_type(recorded) != json_type(ours):
        return [f"{where}: {json_type(ours)} instead of {json_type(recorded)}"]
    if isinstance(recorded, dict):
        diffs = []
        if set(recorded) != set(ours):
            missing, extra = set(recorded) - set(ours), set(ours) - set(recorded)
            diffs.append(f"{where}: keys missing {sorted(missing)}, extra {sorted(extra)}")
        for key in set(recorded) & set(ours):
            diffs += shape_diff(recorded[key], ours[key], f"{where}.{key}")
        return diffs
    if isinstance(recorded, list):
        if not recorded:
            return [] if not ours else [f"{where}: {len(ours)} elements instead of none"]
        if not ours:
            return [f"{where}: empty, recorded {len(recorded)} elements"]
        return [
            d for i, item in enumerate(ours) for d in shape_diff(recorded[0], item, f"{where}[{i}]")
        ]
    return []
