"""A LANraragi server's HTTP session: the connection, the key, deadlines, retries, errors.

`LrrClient` (api.py) builds the API's calls on it.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from .answers import describe_transport_error, error_message
from .connectivity import Connectivity
from .errors import (
    RETRY_DELAYS,
    RETRY_STATUSES,
    BadResponse,
    LrrError,
    NoConnection,
    ServerError,
    ServerUnreachable,
    printable,
    status_error,
)
from .ranges import RangePool
from .transport import BODY_CAP, DEFAULT_BODY_CAP, ConnectionPool, Endpoint, ThreadTransport

log = logging.getLogger(__name__)


THUMBNAIL_POLL = 0.25
MAX_JOB_POLL = 2.0  # seconds between polls of a long server job, at most
PLACEHOLDER_NAME = "noThumb.png"
# Body caps, by what an answer is: past them it is no real answer (transport.py).
ARCHIVE_LIST_CAP = 96 << 20  # ~150,000 archives of a real server's JSON
PAGE_CAP = 64 << 20  # a page whose length no listing gave
THUMBNAIL_CAP = 8 << 20  # real covers are 30-200 KB
SEARCH_PAGES = 1_000  # pages of a paged search followed, at most
FILE_HEADERS = {"Accept-Encoding": "identity"}  # pages and archives are compressed already
# Failures where no server answered at all: what tells that the mount is offline.
NOT_REACHED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadTimeout)


@dataclass
class ClientStats:
    """Counters for `lrrfs status`: requests sent, failed and in flight."""

    requests: int = 0
    errors: int = 0
    in_flight: int = 0


class ClientSession:
    """A LANraragi server, reached over HTTP.

    `timeout` bounds each call as a whole (all retries included), and each
    chunk of a streamed download.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        connections: int = 6,
        streams: int = 4,
        ranges: int = 5,  # Range requests of archive files in flight: hides a slow link
        thumbnail_wait: float = 5.0,
        verify: bool = True,
        link: Connectivity | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
        self.prefix = url.path.rstrip("/")
        self.timeout = timeout
        self.thumbnail_wait = thumbnail_wait
        self.has_key = bool(api_key)
        self.link = link or Connectivity()  # online or offline: see connectivity.py
        headers = {"Accept": "application/json, */*", "Accept-Encoding": "gzip, deflate"}
        self._secrets: tuple[str, ...] = ()  # never shown, even when a server echoes them
        if api_key:
            token = base64.b64encode(api_key.encode("utf-8")).decode("ascii")
            headers["Authorization"] = f"Bearer {token}"
            self._secrets = (token, api_key)
        # Bytes move in worker threads (transport.py): httpx under trio would parse
        # every body on the trio thread, which also serves the kernel.
        endpoint = Endpoint.from_url(base_url, timeout, verify)
        pool = ConnectionPool(endpoint, connections + streams + ranges)
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,  # the key must never travel to another host
            transport=ThreadTransport(pool),
        )
        self._limiter = trio.CapacityLimiter(connections)
        self._stream_limiter = trio.CapacityLimiter(streams)
        self._use_extract: bool | None = None  # None until the server tells
        self.stats = ClientStats()
        auth = {k: v for k, v in headers.items() if k == "Authorization"}
        self._ranges = RangePool(pool, self.prefix, auth, ranges, self._secrets)
        self.endpoint = endpoint  # for requests that stream a body of their own (writes.py)
        self.auth_headers = auth

    async def aclose(self) -> None:
        self._ranges.close()
        await self._http.aclose()

    # -- plumbing -------------------------------------------------------------

    def api_url(self, path: str) -> str:
        return f"{self.origin}{self.prefix}{path}"

    def resolve(self, url: str) -> str:
        """A URL the server handed out (page URLs), made absolute on this server.

        Old servers send `./api/...`, new ones `/api/...`; a base-URL prefix may
        or may not be part of it. Absolute URLs must point at this server.
        """
        if url.startswith("./"):
            url = url[1:]
        parts = urlsplit(url)
        if parts.scheme or parts.netloc:
            if f"{parts.scheme}://{parts.netloc}" != self.origin:
                raise BadResponse("the server listed a page on another host")
            url = url[len(self.origin) :]
        if not url.startswith("/"):
            url = "/" + url
        if self.prefix and not url.startswith(self.prefix + "/"):
            url = self.prefix + url
        return self.origin + url

    async def _send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
        json_body: object = None,
        headers: dict[str, str] | None = None,
        idempotent: bool = True,
        cap: int = DEFAULT_BODY_CAP,
    ) -> httpx.Response:
        """One API call, retried while idempotent, under one overall deadline; its body
        at most `cap` bytes (else TooLarge)."""

        async def attempt() -> httpx.Response:
            async with self._limiter:
                return await self._counted(
                    self._http.request(
                        method,
                        url,
                        params=params,
                        data=data,
                        json=json_body,
                        headers=headers,
                        extensions={BODY_CAP: cap},
                    )
                )

        return await self._retrying(attempt, what, idempotent)

    async def _retrying(
        self, attempt: Callable[[], Awaitable[httpx.Response]], what: str, idempotent: bool = True
    ) -> httpx.Response:
        """Run `attempt` until it answers, retrying transport errors and 429/502/503/504
        a few times while the request is idempotent, all under one deadline."""
        self.link.check(what)  # offline: fail now, not after the deadline
        try:
            response = await self._attempts(attempt, what, idempotent)
        except LrrError as exc:
            self.link.failed(exc)
            raise
        self.link.answered()
        return response

    async def _attempts(
        self, attempt: Callable[[], Awaitable[httpx.Response]], what: str, idempotent: bool
    ) -> httpx.Response:
        attempts = len(RETRY_DELAYS) + 1 if idempotent else 1
        try:
            with trio.fail_after(self.timeout):
                for number in range(attempts):
                    last = number == attempts - 1
                    try:
                        response = await attempt()
                    except httpx.TransportError as exc:
                        if last:
                            reached = not isinstance(exc, NOT_REACHED)
                            error = ServerUnreachable if reached else NoConnection
                            raise error(f"{what}: {describe_transport_error(exc)}") from None
                        log.debug("%s: %s, retrying", what, describe_transport_error(exc))
                    else:
                        if response.status_code not in RETRY_STATUSES or last:
                            return response
                        await response.aclose()
                        log.debug("%s: HTTP %d, retrying", what, response.status_code)
                    await trio.sleep(RETRY_DELAYS[number])
        except trio.TooSlowError:
            raise NoConnection(f"{what}: no answer within {self.timeout:g} s") from None
        raise AssertionError("unreachable")

    async def _counted(self, request: Awaitable[httpx.Response]) -> httpx.Response:
        self.stats.requests += 1
        self.stats.in_flight += 1
        try:
            response = await request
        except BaseException:
            self.stats.errors += 1
            raise
        finally:
            self.stats.in_flight -= 1
        if response.status_code >= 400:
            self.stats.errors += 1
        return response

    def _raise_for_status(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if 300 <= status < 400:
            target = urlsplit(response.headers.get("location", ""))
            where = (
                printable(f"{target.scheme}://{target.hostname or ''}{target.path}")
                if target.scheme
                else "?"
            )
            raise ServerError(
                f"{what}: the server redirects to {where}; mount that address instead "
                "(lrrfs follows no redirect, so the API key never leaves this server)",
                status,
            )
        if status < 400:
            return
        refusal = "rejected the API key" if self.has_key else "requires an API key"
        raise status_error(what, status, error_message(response, self._secrets), refusal)

    @staticmethod
    def _json(response: httpx.Response, what: str) -> Any:
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError):  # RecursionError: nested past any real answer
            raise BadResponse(f"{what}: the answer is not valid JSON") from None

    async def write(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: dict[str, str] | None = None,
        json_body: object = None,
    ) -> Any:
        """A write that answers `success: 1` in JSON (writes.py), sent once: its JSON.
        `json_body`: a body sent as JSON."""
        response = await self._send(
            method, self.api_url(path), what=what, params=params, json_body=json_body,
            idempotent=False,
        )  # fmt: skip
        self._check_success(response, what)
        return self._json(response, what)

    def _check_success(self, response: httpx.Response, what: str) -> None:
        self._raise_for_status(response, what)
        body = self._json(response, what)
        if not isinstance(body, dict) or body.get("success") not in (1, "1", True):
            raise ServerError(
                f"{what}: {error_message(response, self._secrets)}", response.status_code
            )

    async def read_json(self, path: str, what: str, **params: str) -> Any:
        """A GET's JSON answer (writes.py reads back what it wrote)."""
        return await self._get_json(path, what, **params)

    def error_text(self, response: httpx.Response) -> str:
        """The server's words for an error answer, fit to show."""
        return error_message(response, self._secrets)

    async def _get_json(self, path: str, what: str, **params: str) -> Any:
        response = await self._send("GET", self.api_url(path), what=what, params=params or None)
        self._raise_for_status(response, what)
        return self._json(response, what)
