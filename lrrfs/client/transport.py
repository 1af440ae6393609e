"""An httpx transport that moves bytes in worker threads, with plain `http.client`.

Under trio, httpx parses every response on the trio thread: about 1 ms of a
core per 200 KB page, where a worker thread doing blocking `http.client` I/O
(socket reads release the GIL) costs the trio thread a fifth of that. So the
client keeps httpx for what it is good at (requests, headers, decoding,
redirects switched off) and this transport sends each request from a worker
thread over a kept-alive connection.

Every wait has a bound: sockets time out after the client's timeout, and a
request cancelled on the trio side (the client's deadline) shuts its socket so
that its thread ends at once. Connections to the one server are pooled and
shared with the archive reader's Range requests (`ranges.py`).

Every body has a cap (`BODY_CAP`, set per request by the client; a default
otherwise): a longer one fails as `TooLarge` before it is read (Content-Length)
or as soon as it passes the cap. Compressed bodies are inflated here, in the
worker thread, under the same cap and a megabyte at a time, so a small gzip bomb
stays small; httpx sees them already decoded. A body in an encoding the request
did not accept (pages and covers ask for identity) is refused unread. The capped
bodies being read at once together hold at most `BODIES_IN_FLIGHT` bytes: sizing
a folder fetches 4 pages together, each up to its own cap. Error bodies are cut to
their first 64 KiB.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import queue
import select
import socket
import ssl
import threading
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import trio

from .errors import BadResponse, TooLarge

log = logging.getLogger(__name__)

WHOLE_BODY = 8 << 20  # bodies up to this size are read in one go; longer ones stream
STREAM_CHUNK = 256 << 10
BODY_CAP = "lrrfs.body_cap"  # request extension: the most bytes its body may have (None: no cap)
DEFAULT_BODY_CAP = 32 << 20  # a JSON answer, where the caller sets no other cap
ERROR_BODY_CAP = 64 << 10  # an error answer's text: the rest is dropped with the connection
# Capped bodies being read, together: a full archive list (96 MiB) and a few pages fit.
BODIES_IN_FLIGHT = 128 << 20
INFLATE_STEP = 1 << 20  # inflated at a time: a bomb never gets a buffer past its cap
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the server is, and how long a socket may wait for it."""

    scheme: str
    host: str
    port: int
    timeout: float
    verify: bool

    @classmethod
    def from_url(cls, base_url: str, timeout: float, verify: bool) -> Endpoint:
        parts = urlsplit(base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname or "", port, timeout, verify)

    def connect(self) -> http.client.HTTPConnection:
        """A new connection (it connects on its first request)."""
        if self.scheme == "https":
            context = ssl.create_default_context()
            if not self.verify:  # only when the user asked for it
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)


class BodyBudget:
    """The bytes that the bodies being read may hold together (thread-safe)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._lock = threading.Lock()

    def take(self, claim: list[int], size: int) -> None:
        """Add `size` bytes to `claim` (a one-item list), or fail as TooLarge."""
        with self._lock:
            if self.used + size > self.total:
                raise TooLarge(f"the answers being read together pass {self.total} bytes")
            self.used += size
            claim[0] += size

    def give_back(self, claim: list[int]) -> None:
        with self._lock:
            self.used -= claim[0]
            claim[0] = 0


class ConnectionPool:
    """Kept-alive connections to one server, shared by worker threads."""

    def __init__(self, endpoint: Endpoint, keep: int, budget: int = BODIES_IN_FLIGHT) -> None:
        self.endpoint = endpoint
        self.budget = BodyBudget(budget)
        self._keep = keep
        self._idle: queue.SimpleQueue[http.client.HTTPConnection] = queue.SimpleQueue()

    def take(self) -> http.client.HTTPConnection:
        """An idle connection the server has not closed, or a new one."""
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return self.endpoint.connect()
            if conn.sock is not None and not _readable(conn.sock):
                return conn
            conn.close()  # closed by the server (or sending unasked-for bytes): useless

    def give(self, conn: http.client.HTTPConnection) -> None:
        if self._idle.qsize() < self._keep:
            self._idle.put(conn)
        else:
            conn.close()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: the server's close."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


async def in_thread(work: Callable[[], T], abort: Callable[[], None]) -> T:
    """`work()` in a worker thread; if the caller is cancelled, `abort()` makes it end."""
    try:
        return await trio.to_thread.run_sync(work, abandon_on_cancel=True)
    except BaseException:
        abort()
        raise


def transport_error(exc: BaseException, connected: bool) -> httpx.TransportError:
    """The httpx error a failure of `http.client` stands for (the client knows these)."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError | socket.timeout):
        return httpx.ReadTimeout(text) if connected else httpx.ConnectTimeout(text)
    if not connected:
        return httpx.ConnectError(text)
    if isinstance(exc, http.client.HTTPException):
        return httpx.RemoteProtocolError(text)
    return httpx.ReadError(text)


class _Exchange:
    """One request and its response on one pooled connection, in worker threads."""

    def __init__(self, pool: ConnectionPool, request: httpx.Request, body: bytes) -> None:
        self._pool = pool
        self._request = request
        self._body = body
        self._conn: http.client.HTTPConnection | None = None
        self._response: http.client.HTTPResponse | None = None
        self._aborted = False
        self._cap: int | None = request.extensions.get(BODY_CAP, DEFAULT_BODY_CAP)
        self._body_bytes = 0  # of the body so far, decoded
        self._claim = [0]  # bytes of it taken from the pool's budget, until it is read
        self._inflater: Inflater | None = None

    def send(self) -> tuple[http.client.HTTPResponse, bytes | None]:
        """Send, and read the head (and a short body whole)."""
        conn = self._conn = self._pool.take()
        try:
            response = self._roundtrip(conn)
        except (OSError, http.client.HTTPException) as exc:
            connected = conn.sock is not None
            conn.close()
            raise transport_error(exc, connected) from None
        self._response = response
        if response.status >= 300:
            return response, self._error_body()
        try:
            self._inflater = Inflater.for_encoding(
                response.getheader("content-encoding"), self._request.headers.get("accept-encoding")
            )
        except BadResponse:
            self.discard()
            raise
        length = response.length
        if self._cap is not None and length is not None and length > self._cap:
            self.discard()
            raise TooLarge(f"an answer of {length} bytes, over the cap of {self._cap}")
        if length is not None and length <= WHOLE_BODY:
            return response, self.read_rest()
        return response, None

    @property
    def inflates(self) -> bool:
        """Whether the body is inflated here (its Content-Length and -Encoding are not its)."""
        response = self._response
        return response is not None and Inflater.names(response.getheader("content-encoding"))

    def _error_body(self) -> bytes:
        """An error's text, at most ERROR_BODY_CAP bytes of it (inflated if need be)."""
        assert self._response is not None
        self._cap = ERROR_BODY_CAP
        try:
            raw = self._response.read(ERROR_BODY_CAP)
            inflater = Inflater.for_encoding(self._response.getheader("content-encoding"))
            text = raw if inflater is None else inflater.feed(raw, ERROR_BODY_CAP)
        except (OSError, http.client.HTTPException, BadResponse):
            text = b""  # the status still speaks
        if self._response.isclosed():
            self._finished()
        else:
            self.discard()  # more than the cap, or a body we could not read: not reusable
        return text

    def _roundtrip(self, conn: http.client.HTTPConnection) -> http.client.HTTPResponse:
        request = self._request
        target = request.url.raw_path.decode("ascii")
        conn.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in request.headers.raw:
            conn.putheader(name.decode("latin-1"), value.decode("latin-1"))
        sends_body = self._body or request.method in ("POST", "PUT", "PATCH")
        if sends_body and "content-length" not in request.headers:
            conn.putheader("Content-Length", str(len(self._body)))
        conn.endheaders(self._body or None)
        if self._aborted:
            raise ConnectionAbortedError("given up")
        return conn.getresponse()

    def read_chunk(self) -> bytes:
        """The next piece of the body (b"" at its end)."""
        assert self._response is not None
        while True:  # a compressed piece may inflate to nothing yet: b"" is the end only
            try:
                raw = self._response.read(STREAM_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                self.discard()
                raise transport_error(exc, True) from None
            chunk = self._decoded(raw)
            if not raw:
                self._finished()
            if chunk or not raw:
                return chunk

    def read_rest(self) -> bytes:
        assert self._response is not None
        try:
            raw = self._response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.discard()
            raise transport_error(exc, True) from None
        data = self._decoded(raw) + self._decoded(b"")
        self._finished()
        return data

    def _decoded(self, raw: bytes) -> bytes:
        """`raw` inflated if need be (b"": the end of the body), counted against the cap."""
        room = None if self._cap is None else self._cap - self._body_bytes
        try:
            if self._inflater is None:
                data = raw
                if room is not None and len(data) > room:
                    raise TooLarge(f"an answer over the cap of {self._cap} bytes")
                self._hold(len(data))
            else:
                data = self._inflater.feed(raw, room, self._hold) if raw else self._inflater.end()
        except BadResponse:
            self.discard()
            raise
        self._body_bytes += len(data)
        return data

    def _hold(self, size: int) -> None:
        """Count `size` more bytes of a capped body against the pool's budget."""
        if self._cap is not None:
            self._pool.budget.take(self._claim, size)

    def _finished(self) -> None:
        """The whole body was read: the connection serves the next request."""
        self._pool.budget.give_back(self._claim)
        conn, self._conn = self._conn, None
        response = self._response
        if conn is not None and response is not None:
            if response.isclosed() and not response.will_close:
                self._pool.give(conn)
            else:
                conn.close()

    def discard(self) -> None:
        """Drop the connection (a body left half read cannot be reused)."""
        self._pool.budget.give_back(self._claim)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def abort(self) -> None:
        """From the trio thread: make a blocked worker return at once."""
        self._aborted = True
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Inflater:
    """Inflates a gzip or deflate body piece by piece, never past a given room."""

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._inflate = zlib.decompressobj(wbits)
        self._started = False

    @staticmethod
    def names(encoding: str | None) -> bool:
        """Whether a Content-Encoding header names an encoding (not identity)."""
        return (encoding or "identity").strip().lower() not in ("", "identity")

    @classmethod
    def for_encoding(cls, encoding: str | None, accepted: str | None = None) -> Inflater | None:
        """The inflater a Content-Encoding asks for; BadResponse for one the request did
        not accept (`accepted`: its Accept-Encoding; none: gzip and deflate)."""
        if encoding is None or not cls.names(encoding):
            return None
        name = encoding.strip().lower()
        name = "gzip" if name == "x-gzip" else name
        asked = {part.split(";")[0].strip().lower() for part in (accepted or "").split(",")}
        if name in ("gzip", "deflate") and (accepted is None or name in asked):
            return cls(zlib.MAX_WBITS | 16 if name == "gzip" else zlib.MAX_WBITS)
        raise BadResponse(f"an answer in an encoding never asked for ({encoding[:40]!r})")

    def feed(
        self, raw: bytes, room: int | None, hold: Callable[[int], None] = lambda size: None
    ) -> bytes:
        """`raw` inflated, at most `room` bytes of it (else TooLarge); `hold(n)` is told
        of every piece before the next is made (and may refuse it)."""
        pieces = []
        got = 0
        try:
            if not self._started and self._wbits == zlib.MAX_WBITS:
                self._started = True
                if raw and (raw[0] & 0x0F) != 8:  # "deflate" sent raw, without the zlib header
                    self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            while True:  # a step at a time: one call would make a buffer of `room` bytes
                piece = self._inflate.decompress(raw, INFLATE_STEP)
                got += len(piece)
                if room is not None and got > room:
                    raise TooLarge(f"a compressed answer inflating past the cap of {room} bytes")
                hold(len(piece))
                pieces.append(piece)
                raw = self._inflate.unconsumed_tail
                if not raw and len(piece) < INFLATE_STEP:
                    return b"".join(pieces)
        except zlib.error:
            raise BadResponse("a compressed answer that does not inflate") from None
        except TooLarge:
            pieces.clear()  # the traceback keeps this frame, maybe for a while
            raise

    def end(self) -> bytes:
        if not self._inflate.eof:
            raise BadResponse("a compressed answer cut short")
        return b""


class _BodyStream(httpx.AsyncByteStream):
    def __init__(self, exchange: _Exchange, body: bytes | None) -> None:
        self._exchange = exchange
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._body is not None:
            if self._body:
                yield self._body
            return
        exchange = self._exchange
        while chunk := await in_thread(exchange.read_chunk, exchange.abort):
            yield chunk

    async def aclose(self) -> None:
        if self._body is None:
            self._exchange.discard()  # closing early: the rest of the body is not wanted


class ThreadTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests with `http.client` from worker threads."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        exchange = _Exchange(self._pool, request, body)
        response, content = await in_thread(exchange.send, exchange.abort)
        # Bodies reach httpx inflated already (under the cap): nothing for it to decode.
        inflated = exchange.inflates
        headers = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in response.getheaders()
            if not (inflated and name.lower() in ("content-encoding", "content-length"))
        ]
        return httpx.Response(
            response.status,
            headers=headers,
            stream=_BodyStream(exchange, content),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": response.reason.encode("latin-1", "replace"),
            },
        )

    async def aclose(self) -> None:
        self._pool.close()
