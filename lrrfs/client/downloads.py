"""A streamed download of an archive file (a byte range of it)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import httpx
import trio

from .answers import describe_transport_error, expect_file
from .errors import (
    BadResponse,
    ServerUnreachable,
)
from .models import (
    number,
)
from .ranges import CONTENT_RANGE_RE

log = logging.getLogger(__name__)


class DownloadStream:
    """An open Range response; yields bytes from the requested start, checked."""

    def __init__(
        self,
        response: httpx.Response,
        start: int,
        what: str,
        on_close: Callable[[], None],
    ) -> None:
        self._response = response
        self._on_close: Callable[[], None] | None = on_close
        self._what = what
        self.start = start
        self.total, self._skip = self._parse_range(response, start)

    def _parse_range(self, response: httpx.Response, start: int) -> tuple[int, int]:
        expect_file(response, self._what)
        if response.status_code == 206:
            match = CONTENT_RANGE_RE.fullmatch(response.headers.get("content-range", ""))
            if not match or int(match.group(1)) != start:
                raise BadResponse(f"{self._what}: the server sent the wrong range")
            return int(match.group(3)), 0
        if response.status_code == 200:
            # A server that ignores Range: skip to the start ourselves.
            length = number(response.headers.get("content-length", ""))
            if length is None:
                raise BadResponse(f"{self._what}: no Content-Length")
            return length, start
        raise BadResponse(f"{self._what}: unexpected HTTP {response.status_code}")

    async def aclose(self) -> None:
        """Close the connection (mid-body it is dropped, not reused) and free the slot."""
        try:
            with trio.CancelScope(shield=True):
                await self._response.aclose()
        finally:
            if self._on_close is not None:
                self._on_close()
                self._on_close = None

    async def chunks(self, limit: int | None = None) -> AsyncIterator[bytes]:
        """Up to `limit` bytes from `start`, chunk by chunk.

        No deadline of its own (a cancel scope per chunk costs a tenth of the
        throughput): the caller bounds its reads.
        """
        raw = self._response.aiter_raw()
        remaining = limit
        while remaining is None or remaining > 0:
            try:
                chunk = await anext(raw, None)
            except httpx.TransportError as exc:
                raise ServerUnreachable(f"{self._what}: {describe_transport_error(exc)}") from None
            if chunk is None:
                if remaining:
                    raise ServerUnreachable(f"{self._what}: the body ended early")
                return
            if self._skip:
                cut = min(self._skip, len(chunk))
                self._skip -= cut
                chunk = chunk[cut:]
            if remaining is not None:
                chunk = chunk[:remaining]
                remaining -= len(chunk)
            if chunk:
                yield chunk
