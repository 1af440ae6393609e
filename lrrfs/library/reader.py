"""Reading an archive file through HTTP Range requests, streamed.

One open file keeps one streaming response that follows sequential reads, so
`cat` or `rsync` costs one request, not one per 128 KiB. The kernel may send
reads slightly out of order (readahead runs several at once), so the last few
MiB stay buffered behind the stream and a short jump forward reads through
instead of reconnecting. Memory per open file is bounded by those windows,
whatever the archive's size.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import trio

from ..client import BadResponse, DownloadStream, LrrClient, ServerUnreachable

log = logging.getLogger(__name__)

BACKLOG = 4 << 20  # bytes kept behind the stream position
MAX_SKIP = 4 << 20  # a forward jump shorter than this reads through
RECONNECTS = 2  # a stream cut mid-body is reopened where it stopped, this often


class ArchiveReader:
    """Random-access reads of one archive file of known `size`."""

    def __init__(self, client: LrrClient, arcid: str, size: int) -> None:
        self._client = client
        self._arcid = arcid
        self.size = size
        self._lock = trio.Lock()
        self._stream: DownloadStream | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._buffer = bytearray()  # the bytes [self._buffer_start, self._position)
        self._buffer_start = 0
        self._position = 0
        self.last_used = trio.current_time()

    async def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        async with self._lock:
            self.last_used = trio.current_time()
            buffered = self._buffer_start <= offset and end <= self._position
            reachable = self._buffer_start <= offset <= self._position + MAX_SKIP
            if not buffered and not (reachable and self._stream):
                await self._restart(offset)
            await self._fill(end)
            start = offset - self._buffer_start
            with memoryview(self._buffer) as view:
                data = bytes(view[start : start + end - offset])
            self._trim(keep_from=offset)
            return data

    async def aclose(self) -> None:
        async with self._lock:
            await self._close_stream()

    async def close_if_idle(self, idle_seconds: float) -> None:
        """Give back the connection of a file left open but unread."""
        if self._stream and trio.current_time() - self.last_used > idle_seconds:
            await self.aclose()

    async def _restart(self, offset: int) -> None:
        await self._close_stream()
        self._buffer.clear()
        self._buffer_start = self._position = offset

    async def _open_stream(self) -> None:
        stream = await self._client.open_download(self._arcid, self._position)
        if stream.total != self.size:
            await stream.aclose()
            raise BadResponse(
                f"archive {self._arcid} is {stream.total} bytes on the server, "
                f"not {self.size}: it changed; it will show anew after the next refresh"
            )
        self._stream, self._chunks = stream, stream.chunks()

    async def _close_stream(self) -> None:
        stream, self._stream, self._chunks = self._stream, None, None
        if stream is not None:
            await stream.aclose()

    async def _fill(self, end: int) -> None:
        """Read the stream until the buffer reaches `end`, reconnecting if it breaks."""
        try:
            with trio.fail_after(self._client.timeout):
                await self._fill_unbounded(end)
        except trio.TooSlowError:
            await self._close_stream()
            raise ServerUnreachable(
                f"download of {self._arcid}: no data for {self._client.timeout:g} s"
            ) from None

    async def _fill_unbounded(self, end: int) -> None:
        failures = 0
        while self._position < end:
            try:
                if self._chunks is None:
                    await self._open_stream()
                assert self._chunks is not None
                chunk = await anext(self._chunks, None)
                if chunk is None:
                    raise ServerUnreachable(f"download of {self._arcid}: the body ended early")
            except ServerUnreachable as exc:
                await self._close_stream()
                failures += 1
                if failures > RECONNECTS:
                    raise
                log.info("%s; reconnecting at byte %d", exc, self._position)
                continue
            self._buffer += chunk
            self._position += len(chunk)

    def _trim(self, keep_from: int) -> None:
        excess = min(keep_from, self._position - BACKLOG) - self._buffer_start
        if excess > 0:
            del self._buffer[:excess]
            self._buffer_start += excess
