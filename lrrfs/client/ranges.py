"""Archive bytes over blocking HTTP/1.1 Range requests, moved in worker threads.

Streaming the archive file through httpx on the trio thread costs most of a
core in body parsing and deadlines per 64 KiB. Here a few worker threads send
plain `http.client` Range requests and `readinto` the body straight into a
buffer the caller owns (socket reads release the GIL); the trio thread only
learns how far each buffer is filled and hands out slices.

The same rules hold as for every other request: the API key travels only in
the Authorization header, redirects are never followed, https is verified,
the number of requests in flight is bounded (the worker pool is the gate), and
every wait has a deadline (socket timeouts here, `trio.fail_after` in the
caller). A body must be exactly the asked-for range of a file of the expected
length, or the job fails: wrong bytes are never handed out.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import trio

from .errors import (
    RETRY_DELAYS,
    RETRY_STATUSES,
    BadResponse,
    LrrError,
    NoConnection,
    ServerUnreachable,
    server_text,
    status_error,
)
from .transport import ConnectionPool

log = logging.getLogger(__name__)

CHUNK = 256 << 10  # bytes per readinto: how often the trio side can see progress
STALLS = 2  # failed attempts in a row without a byte of progress, at most
ATTEMPTS = 6  # requests for one job, at most (a body cut mid-way is asked for again)
ERROR_BODY_LIMIT = 4096
NOT_REACHED = (ConnectionRefusedError, socket.gaierror, TimeoutError)  # no server answered
CONTENT_RANGE_RE = re.compile(r"bytes ([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18})")


class JobAborted(LrrError):
    """The reader gave the job up (it moved elsewhere, or the file was closed)."""


class _Busy(Exception):
    """A status worth asking again for, after a pause."""


class RangeJob:
    """Bytes `start ..< start + len(buffer)` of an archive file of `total` bytes, arriving.

    Fields written by the worker thread (`filled`, `error`, `done`) are read by
    the trio thread; waiters live on the trio thread only.
    """

    def __init__(
        self, arcid: str, start: int, buffer: memoryview, total: int, token: trio.lowlevel.TrioToken
    ) -> None:
        self.arcid = arcid
        self.start = start
        self.buffer = buffer
        self.total = total
        self.filled = 0
        self.error: LrrError | None = None
        self.stall: NoConnection | None = None  # a wait on it ran past its deadline
        self.done = False
        self._token = token
        self._waiters: list[tuple[int, trio.Event]] = []
        self._aborted = False
        self._sock: socket.socket | None = None
        self.what = f"download of {arcid}"

    @property
    def length(self) -> int:
        return len(self.buffer)

    async def wait(self, upto: int) -> None:
        """Until the first `upto` bytes are in; raises the job's error if they never come.

        No deadline of its own: the caller bounds it.
        """
        while self.filled < upto and not self.done:
            event = trio.Event()
            self._waiters.append((upto, event))
            # Re-check after registering: the worker reads `_waiters` after it
            # advances `filled`, so one of the two sides sees the other.
            if self.filled >= upto or self.done:
                self._waiters.remove((upto, event))
                break
            await event.wait()
        if self.filled < upto:
            raise self.error or JobAborted(f"{self.what}: given up")

    def stalled(self, timeout: float) -> ServerUnreachable:
        """The error for a wait on this job that ran past `timeout` seconds."""
        self.stall = NoConnection(f"{self.what}: no data for {timeout:g} s")
        return self.stall

    def abort(self) -> None:
        """Give the job up: a worker blocked in a read returns at once (trio thread)."""
        self._aborted = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    @property
    def aborted(self) -> bool:
        return self._aborted

    # -- the worker's side ------------------------------------------------------

    def advanced(self, count: int) -> None:
        self.filled += count
        if self._waiters:
            self._notify()

    def finish(self, error: LrrError | None) -> None:
        self.error = error
        self.done = True
        self._notify()

    def _notify(self) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # the mount is gone: nobody waits
            self._token.run_sync_soon(self._wake)

    def _wake(self) -> None:
        still = []
        for upto, event in self._waiters:
            if self.filled >= upto or self.done:
                event.set()
            else:
                still.append((upto, event))
        self._waiters = still


@dataclass(slots=True)
class _Stream:
    """A whole-file answer to a Range request, read up to `position` (the file's byte)."""

    conn: http.client.HTTPConnection
    response: http.client.HTTPResponse
    position: int


PARKED = 4  # whole-file answers kept open to go on from, at most (each holds a connection)
TURN_POLL = 0.25  # seconds between looks of a worker waiting for its archive's turn


class WholeFiles:
    """Whole-file answers to Range requests, kept open for the next part to go on from.

    A server that ignores Range sends the whole file to every request: asking
    anew for each part would download the file from its start again and again
    (quadratic traffic). Once a server was seen doing so, the parts of an archive
    take turns: each goes on from where the archive's stream stands (skipping
    forward if need be), and only a part before it asks anew. A worker waits for
    its turn at most `wait` seconds, then asks on its own.
    """

    def __init__(self, wait: float) -> None:
        self.seen = False  # the server answered a Range request with the whole file
        self._wait = wait
        self._cond = threading.Condition()
        self._parked: dict[str, _Stream] = {}
        self._busy: set[str] = set()  # archives whose turn a worker holds
        self._waiting: dict[str, list[int]] = {}  # archive -> first bytes wanted by waiters

    def claim(
        self, arcid: str, first: int, aborted: Callable[[], bool]
    ) -> tuple[bool, _Stream | None]:
        """Wait for the archive's turn: whether it was taken (then `release` it), and
        the stream to go on from (None: ask anew)."""
        with self._cond:
            waiting = self._waiting.setdefault(arcid, [])
            waiting.append(first)
            deadline = time.monotonic() + self._wait
            try:
                while not aborted() and (left := deadline - time.monotonic()) > 0:
                    if arcid not in self._busy:
                        stream = self._parked.get(arcid)
                        if stream is None or stream.position > first:
                            self._busy.add(arcid)
                            self._close(arcid)
                            return True, None
                        if not any(stream.position <= other < first for other in waiting):
                            del self._parked[arcid]  # nobody waits for earlier bytes: ours
                            self._busy.add(arcid)
                            return True, stream
                    self._cond.wait(min(TURN_POLL, left))
                return False, None
            finally:
                waiting.remove(first)
                if not waiting:
                    del self._waiting[arcid]

    def release(self, arcid: str, turn: bool, stream: _Stream | None) -> None:
        """The worker is done: `stream`, if any, waits for the next part."""
        with self._cond:
            if turn:
                self._busy.discard(arcid)
            if stream is not None:
                self._close(arcid)
                if len(self._parked) >= PARKED:
                    self._close(next(iter(self._parked)))  # the oldest
                self._parked[arcid] = stream
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            for arcid in list(self._parked):
                self._close(arcid)

    def _close(self, arcid: str) -> None:
        stream = self._parked.pop(arcid, None)
        if stream is not None:
            stream.conn.close()


class RangePool:
    """Worker threads sending Range requests for `/download` to one server.

    The pool's size is the gate: at most `workers` Range requests are in flight.
    """

    def __init__(
        self,
        connections: ConnectionPool,
        prefix: str,
        headers: dict[str, str],
        workers: int,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self._connections = connections
        self._secrets = secrets  # redacted from what the server says in an error
        self._prefix = prefix
        self._headers = tuple(headers.items())  # the Authorization header, if any
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="lrrfs-range")
        self._jobs: set[RangeJob] = set()
        self._whole_files = WholeFiles(connections.endpoint.timeout)

    def submit(self, arcid: str, start: int, buffer: memoryview, total: int) -> RangeJob:
        """Start filling `buffer` from byte `start`; call on the trio thread."""
        job = RangeJob(arcid, start, buffer, total, trio.lowlevel.current_trio_token())
        self._jobs.add(job)
        self._executor.submit(self._run, job)
        return job

    def forget(self, job: RangeJob) -> None:
        """The job's owner is done with it (trio thread)."""
        self._jobs.discard(job)

    def close(self) -> None:
        for job in list(self._jobs):
            job.abort()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._whole_files.close()

    # -- in a worker thread -----------------------------------------------------

    def _run(self, job: RangeJob) -> None:
        attempts = stalls = 0
        error: LrrError | None = None
        while job.filled < job.length and error is None:
            if job.aborted:
                error = JobAborted(f"{job.what}: given up")
                break
            before = job.filled
            turn, stream = False, None
            if self._whole_files.seen:
                turn, stream = self._whole_files.claim(
                    job.arcid, job.start + job.filled, lambda: job.aborted
                )
            conn = self._connections.take() if stream is None else stream.conn
            kept: _Stream | None = None
            try:
                outcome = self._transfer(conn, job, stream)
                if isinstance(outcome, _Stream):
                    kept = outcome
                elif outcome:
                    self._connections.give(conn)
                else:
                    conn.close()
            except (OSError, http.client.HTTPException, _Busy) as exc:
                conn.close()
                if job.aborted:
                    continue
                attempts += 1
                stalls = 0 if job.filled > before else stalls + 1
                reason = f"{job.what}: {type(exc).__name__}: {exc}".rstrip(": ")
                if stalls > STALLS or attempts >= ATTEMPTS:
                    reached = job.filled > 0 or not isinstance(exc, NOT_REACHED)
                    error = (ServerUnreachable if reached else NoConnection)(reason)
                    continue
                log.info("%s; asking again from byte %d", reason, job.start + job.filled)
                if isinstance(exc, _Busy):
                    time.sleep(RETRY_DELAYS[min(stalls, len(RETRY_DELAYS)) - 1])
            except LrrError as exc:
                conn.close()
                error = exc
            except BaseException as exc:  # never leave a waiter hanging
                conn.close()
                error = LrrError(f"{job.what}: internal error: {exc!r}")
            finally:
                job._sock = None
                if turn or kept is not None:
                    self._whole_files.release(job.arcid, turn, kept)
        job.finish(error)

    def _transfer(
        self, conn: http.client.HTTPConnection, job: RangeJob, stream: _Stream | None
    ) -> bool | _Stream:
        """What the job still lacks, from a new request or from `stream` (a whole-file
        answer read up to before it); raises on any mismatch.

        Returns whether the connection can serve another request, or the whole-file
        answer to go on from.
        """
        first = job.start + job.filled
        last = job.start + job.length - 1
        if stream is None:
            response = self._request(conn, job, first, last)
            skip = self._check_response(response, job, first, last)
        else:
            job._sock = conn.sock
            response, skip = stream.response, first - stream.position
        self._discard(response, skip)
        self._read_body(response, job, last - first + 1)
        if response.status == 200 and not response.isclosed():
            return _Stream(conn, response, last + 1)  # the rest, for the next part
        return response.isclosed() and not response.will_close

    def _request(
        self, conn: http.client.HTTPConnection, job: RangeJob, first: int, last: int
    ) -> http.client.HTTPResponse:
        conn.putrequest(
            "GET", f"{self._prefix}/api/archives/{job.arcid}/download", skip_accept_encoding=True
        )
        conn.putheader("Range", f"bytes={first}-{last}")
        conn.putheader("Accept-Encoding", "identity")
        for name, value in self._headers:
            conn.putheader(name, value)
        conn.endheaders()
        job._sock = conn.sock
        if job.aborted:  # aborted between the check and now: the socket was not shut yet
            raise ConnectionAbortedError("given up")
        response = conn.getresponse()
        # -v logs every request: these too, though they do not go through httpx
        log.debug(
            "HTTP Request: GET %s/api/archives/%s/download Range bytes=%d-%d \"HTTP/1.1 %d\"",
            self._prefix, job.arcid, first, last, response.status,
        )  # fmt: skip
        return response

    def _check_response(
        self, response: http.client.HTTPResponse, job: RangeJob, first: int, last: int
    ) -> int:
        """The bytes to skip before `first` (a server that ignores Range sends it all)."""
        status = response.status
        if status == 206:
            match = CONTENT_RANGE_RE.fullmatch(response.getheader("Content-Range", ""))
            if not match:
                raise BadResponse(f"{job.what}: 206 without a Content-Range")
            start, end, total = (int(group) for group in match.groups())
            self._check_total(job, total)
            if (start, end) != (first, last) or response.length != last - first + 1:
                raise BadResponse(f"{job.what}: the server sent the wrong range")
            return 0
        if status == 200:
            self._check_total(job, response.length)
            if not self._whole_files.seen:  # told before a byte is read: the next parts
                log.info("the server ignores Range requests: each archive file's parts go "
                         "on from one download")  # fmt: skip
                self._whole_files.seen = True  # take turns on one stream from now on
            return first
        if status in RETRY_STATUSES:
            raise _Busy(f"HTTP {status}")
        body = response.read(ERROR_BODY_LIMIT) if status >= 400 else b""
        raise _status_error(job.what, status, response.reason, body, self._secrets)

    @staticmethod
    def _check_total(job: RangeJob, total: int | None) -> None:
        if total != job.total:
            raise BadResponse(
                f"archive {job.arcid} is {total} bytes on the server, not {job.total}: "
                "it changed; it will show anew after the next refresh"
            )

    @staticmethod
    def _discard(response: http.client.HTTPResponse, count: int) -> None:
        scratch = memoryview(bytearray(min(count, CHUNK) or 1))
        while count > 0:
            got = response.readinto(scratch[: min(count, len(scratch))])
            if not got:
                raise http.client.IncompleteRead(b"")
            count -= got

    @staticmethod
    def _read_body(response: http.client.HTTPResponse, job: RangeJob, count: int) -> None:
        view = job.buffer
        while count > 0:
            offset = job.filled
            got = response.readinto(view[offset : offset + min(count, CHUNK)])
            if not got:
                raise http.client.IncompleteRead(b"", count)
            count -= got
            job.advanced(got)


def _status_error(
    what: str, status: int, reason: str, body: bytes, secrets: tuple[str, ...]
) -> LrrError:
    if status >= 400:
        excerpt = body.decode("utf-8", "replace")
        return status_error(what, status, server_text(f"HTTP {status} {reason} {excerpt}", secrets))
    return BadResponse(f"{what}: unexpected HTTP {status} (redirects are not followed)")
