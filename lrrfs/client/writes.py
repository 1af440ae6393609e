"""Changes to the library on the server: uploads, deletes, categories, tankoubons.

Each call says only what the server answered; whether the change was applied is
read back by the caller (library/changes.py): old servers answer success to
requests they ignore.

An upload streams its file from disk in a worker thread, on a connection of its
own (`http.client`): a 2 GB archive never passes through memory, and the trio
thread only hears how far it got (`UploadProgress`).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .api import LrrClient
from .errors import LrrError, ServerError, ServerUnreachable, printable, status_error
from .models import ARCID_RE
from .transport import in_thread

log = logging.getLogger(__name__)

UPLOAD_CHUNK = 1 << 20  # bytes read from the spool file and sent at a time
SERVER_BYTES_PER_SECOND = 20 << 20  # a server checks and moves an upload at least this fast
ANSWER_CAP = 64 << 10  # an upload's answer is a line of JSON


class UploadRefused(ServerError):
    """The server refused the upload; `status` says why (409 duplicate, 415 type, 417 checksum)."""


class NoUploadApi(LrrError):
    """The server has no upload route (the old generation)."""


@dataclass(slots=True)
class UploadProgress:
    """How far an upload got: written by its thread, read by `lrrfs status`."""

    name: str
    total: int
    sent: int = 0


@dataclass(frozen=True, slots=True)
class Tankoubon:
    """A tankoubon (0.9): a named, ordered list of archives."""

    id: str
    name: str
    archives: tuple[str, ...]

    @classmethod
    def from_json(cls, obj: Any) -> Tankoubon:
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise ServerError("tankoubon entry without an id", 200)
        archives = obj.get("archives") or []
        name = obj.get("name")
        if not isinstance(archives, list) or not isinstance(name, str):
            raise ServerError(f"tankoubon {obj['id']}: malformed", 200)
        ids = tuple(a for a in archives if isinstance(a, str) and ARCID_RE.fullmatch(a))
        return cls(obj["id"], name, ids)


def file_sha1(path: Path) -> str:
    """The SHA-1 of a file, read a chunk at a time (run it in a thread)."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(UPLOAD_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _field(boundary: str, name: str, value: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
    ).encode()


def _quoted(name: str) -> str:
    """A file name inside a quoted header parameter (as browsers send it, raw UTF-8)."""
    return name.replace("\\", "\\\\").replace('"', "%22").replace("\r", " ").replace("\n", " ")


class _Upload:
    """One multipart PUT, sent from a worker thread."""

    def __init__(
        self, client: LrrClient, path: Path, fields: dict[str, str], progress: UploadProgress
    ) -> None:
        self.client = client
        self.path = path
        self.progress = progress
        self.boundary = "lrrfs" + secrets.token_hex(16)
        head = b"".join(_field(self.boundary, k, v) for k, v in fields.items())
        self.head = head + (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{_quoted(progress.name)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode("utf-8", "surrogateescape")
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.conn: http.client.HTTPConnection | None = None

    def _body(self) -> Iterator[bytes]:
        yield self.head
        with open(self.path, "rb") as f:
            while chunk := f.read(UPLOAD_CHUNK):
                self.progress.sent += len(chunk)
                yield chunk
        yield self.tail

    def send(self) -> tuple[int, bytes]:
        size = os.path.getsize(self.path)
        self.progress.total = size
        conn = self.conn = self.client.endpoint.connect()
        url = self.client.api_url("/api/archives/upload")
        target = url[len(self.client.origin) :]
        try:
            conn.putrequest("PUT", target)
            for name, value in self.client.auth_headers.items():
                conn.putheader(name, value)
            conn.putheader("Accept", "application/json")
            conn.putheader("Content-Type", f"multipart/form-data; boundary={self.boundary}")
            conn.putheader("Content-Length", str(len(self.head) + size + len(self.tail)))
            conn.endheaders()
            for chunk in self._body():
                conn.send(chunk)
            # The server reads, checks and moves the whole file before it answers.
            if conn.sock is not None:
                conn.sock.settimeout(self.client.timeout + size / SERVER_BYTES_PER_SECOND)
            response = conn.getresponse()
            return response.status, response.read(ANSWER_CAP)
        finally:
            conn.close()

    def abort(self) -> None:
        conn = self.conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)


async def upload(
    client: LrrClient,
    path: Path,
    progress: UploadProgress,
    *,
    checksum: str,
    category_id: str | None = None,
) -> str:
    """Upload the file at `path` as `progress.name`; the new archive's id."""
    what = f"uploading {progress.name!r}"
    fields = {"file_checksum": checksum}
    if category_id:
        fields["category_id"] = category_id
    sender = _Upload(client, path, fields, progress)
    client.stats.requests += 1
    try:
        status, body = await in_thread(sender.send, sender.abort)
    except (OSError, http.client.HTTPException) as exc:
        client.stats.errors += 1
        raise ServerUnreachable(f"{what}: {type(exc).__name__}: {printable(str(exc))}") from None
    answer = _json_or_none(body)
    message = answer.get("error") if isinstance(answer, dict) else None
    detail = printable(str(message)) if message else f"HTTP {status}"
    if status in (404, 405) or (status == 400 and answer is None):
        raise NoUploadApi(f"{what}: this LANraragi server has no upload API (HTTP {status})")
    if status in (409, 415, 417):
        raise UploadRefused(f"{what}: {detail}", status)
    if status >= 400:
        client.stats.errors += 1
        raise status_error(what, status, detail, "rejected the API key")
    arcid = answer.get("id") if isinstance(answer, dict) else None
    if not isinstance(arcid, str) or not ARCID_RE.fullmatch(arcid) or not answer.get("success"):
        raise ServerError(f"{what}: the server answered without the new archive's id", status)
    return arcid


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


async def delete_archive(client: LrrClient, arcid: str) -> None:
    await client.write("DELETE", f"/api/archives/{arcid}", f"deleting archive {arcid}")


@dataclass(frozen=True, slots=True)
class GroupKind:
    """Categories and tankoubons: collections of archives with the same API's shape."""

    noun: str  # "category"
    path: str  # "/api/categories"
    id_field: str  # the created one's id in the answer


CATEGORY = GroupKind("category", "/api/categories", "category_id")
TANKOUBON = GroupKind("tankoubon", "/api/tankoubons", "tankoubon_id")


async def create_group(client: LrrClient, kind: GroupKind, name: str) -> str:
    what = f"creating {kind.noun} {name!r}"
    body = await client.write("PUT", kind.path, what, params={"name": name})
    found = body.get(kind.id_field) if isinstance(body, dict) else None
    if not isinstance(found, str):
        raise ServerError(f"{what}: no id in the answer", 200)
    return found


async def delete_group(client: LrrClient, kind: GroupKind, group_id: str) -> None:
    await client.write("DELETE", f"{kind.path}/{group_id}", f"deleting {kind.noun} {group_id}")


async def group_member(
    client: LrrClient, kind: GroupKind, group_id: str, arcid: str, add: bool
) -> None:
    """Add the archive to the group, or remove it."""
    what = f"{'adding' if add else 'removing'} {arcid} {'to' if add else 'from'} {kind.noun}"
    await client.write("PUT" if add else "DELETE", f"{kind.path}/{group_id}/{arcid}",
                       f"{what} {group_id}")  # fmt: skip


async def rename_group(
    client: LrrClient, kind: GroupKind, group_id: str, name: str, *, pinned: bool = False
) -> None:
    """Give the category or tankoubon a new name; a category keeps its pin (the server
    unpins one renamed without it), its archives and its search."""
    what = f"renaming {kind.noun} {group_id}"
    path = f"{kind.path}/{group_id}"
    if kind is TANKOUBON:
        await client.write("PUT", path, what, json_body={"metadata": {"name": name}})
    else:
        params = {"name": name, "pinned": "1" if pinned else "0"}
        await client.write("PUT", path, what, params=params)


async def order_tankoubon(client: LrrClient, tank_id: str, arcids: list[str]) -> None:
    """Make `arcids` the tankoubon's archives, in this order."""
    what = f"reordering tankoubon {tank_id}"
    await client.write("PUT", f"{TANKOUBON.path}/{tank_id}", what, json_body={"archives": arcids})


TANKOUBON_PAGES = 1_000  # pages of the tankoubon list followed, at most


async def tankoubons(client: LrrClient) -> list[Tankoubon]:
    """Every tankoubon (the list comes in pages)."""
    found: dict[str, Tankoubon] = {}
    for page in range(TANKOUBON_PAGES):
        body = await client.read_json("/api/tankoubons", "tankoubon list", page=str(page))
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, list):
            raise ServerError("tankoubon list: no result list", 200)
        for entry in result:
            try:
                tank = Tankoubon.from_json(entry)
            except ServerError as exc:
                log.warning("tankoubon list: skipping a malformed entry: %s", exc)
                continue
            found[tank.id] = tank
        total = body.get("total")
        if not result or not isinstance(total, int) or len(found) >= total:
            break
        await trio.lowlevel.checkpoint()
    return list(found.values())
