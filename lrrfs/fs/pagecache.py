"""Pages fetched ahead of a reader, handed to the kernel's page cache.

A page the prefetcher brought in is stored in the kernel's cache of its file
(`pyfuse3.notify_store`): when the reader opens it, the kernel answers the
reads itself, and the page costs OPEN, FLUSH and RELEASE but no READ. Stores
run in a thread of their own: the kernel may make a store wait for a read of
the same file, which only the trio thread can answer.
"""

from __future__ import annotations

import logging
import queue
import threading

import pyfuse3

log = logging.getLogger(__name__)

PENDING_BYTES = 64 << 20  # waiting to be stored, at most; more is dropped (it is only a head start)


class KernelPageCache:
    """Stores whole files' bytes in the kernel's page cache, in the background."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._closed = False
        self._storing = 0  # store_now calls in progress (the session must outlive them)
        self._stored = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name="lrrfs-pagecache", daemon=True)
        self._thread.start()

    def store(self, inode: int, data: bytes) -> None:
        """Hand the file's bytes to the kernel soon (call on any thread)."""
        with self._lock:
            if self._pending + len(data) > PENDING_BYTES:
                return
            self._pending += len(data)
        self._queue.put((inode, data))

    def store_now(self, inode: int, data: bytes | memoryview) -> bool:
        """Hand the file's bytes to the kernel now (blocking; any thread but the trio
        thread): whether it took them."""
        with self._lock:
            if self._closed:
                return False
            self._storing += 1
        try:
            return _notify_store(inode, data)
        finally:
            with self._lock:
                self._storing -= 1
                self._stored.notify_all()

    def close(self, timeout: float = 2.0) -> None:
        """Stop storing, and wait (at most `timeout`) for the stores under way: the FUSE
        session closes next."""
        with self._lock:
            self._closed = True
            self._stored.wait_for(lambda: not self._storing, timeout)
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            inode, data = item
            try:
                _notify_store(inode, data)
            finally:
                with self._lock:
                    self._pending -= len(data)


def _notify_store(inode: int, data: bytes | memoryview) -> bool:
    """Store the file's bytes in the kernel's cache (blocking): whether it took them."""
    try:
        # Any contiguous buffer (PyObject_GetBuffer), whatever its stub says.
        pyfuse3.notify_store(inode, 0, data)  # type: ignore[arg-type]
    except OSError as exc:  # the kernel forgot the inode, or cannot store
        log.debug("page cache: inode %d not stored: %s", inode, exc)
        return False
    return True
