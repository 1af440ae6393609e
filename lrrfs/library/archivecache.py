"""The archive files' bytes on disk, kept as they are read: one sparse file per archive.

An archive's bytes never change under its id and size (a new size is a new
archive), so what is kept never goes stale. Layout, under the disk cache's
folder: `archive/<xx>/<sha1 of "arcid-size">`, one file each:

    header (4 KiB): magic | archive size | block size | label length | label ("arcid-size")
    map: one entry per block: its fingerprint | its length (0: not held), to a 4 KiB edge
    data: block i at `data_start + i * BLOCK`; a block never written takes no disk space

A block's map entry is written only once its bytes are on the device (an
fdatasync of the file comes first), so a crash leaves blocks unmarked, never
marked and missing. Each block is checked against its fingerprint when read (a
CRC-32 of 512 bytes every 64 KiB and at its end): a block zeroed, cut, moved or
of another file is a miss, fetched again. Not a CRC of every byte: that costs
this machine 0.45 s of CPU per GB at each end, as much as the whole rest of a
cold `cat`, against nothing a crash can cause (a bit flipped in place on the
disk is served, as it would be from a local copy; zip readers check members'
CRCs themselves). A file is made
under a temporary name and linked into place, so two mounts making it at once
end with one file, whole.

Blocks are written with direct I/O where the file system allows it (the
buffers are page-aligned memory maps): no copy through the kernel's page cache,
which costs this machine more CPU than the network does, so that storing an
archive while `cat` reads it at the server's full speed takes almost nothing
from it. They are read through the page cache, as a local file is: an archive
read lately reads again from memory, even on a new mount. The reader takes what
the page cache holds at once, on the trio thread (`read_cached`: RWF_NOWAIT, so
never a wait on the disk), and has a worker read the rest (`read`) or ask the
kernel to read ahead (`prefetch`). A block is checked once per process: by its
samples alone on the fast path, read from the page cache too.

Writing runs in one thread of its own, reading in a small pool; the trio side
only queues work and waits on the jobs (`RangeJob`s, as downloads are).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import struct
import threading
import time
import weakref
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..client import LrrError
from ..client.ranges import RangeJob
from .diskcache import TEMP_PREFIX, DiskCache

log = logging.getLogger(__name__)

KIND = "archive"  # the disk cache's folder for them
BLOCK = 1 << 20
PAGE = 4096  # direct I/O's alignment, and the header's size
MAGIC = b"LRRFSAR1"
HEADER = struct.Struct("<8sQIH")  # magic, archive size, block size, label length
ENTRY = struct.Struct("<II")  # CRC-32, length
QUEUE_BYTES = 64 << 20  # blocks waiting for the writer, at most: beyond, they are not kept
COMMIT_BYTES = 32 << 20  # written blocks are made durable and marked at least this often
READERS = 2  # threads reading blocks from the disk
WRITER_NICENESS = 10
STRIPE = 512  # bytes of each sample of a block's fingerprint...
STRIDE = 64 << 10  # ...taken this far apart, and at its end


class DamagedBlock(LrrError):
    """A block the map said was held did not read back whole: now marked missing."""


class CachedArchive:
    """One archive's file: which blocks it holds; reading and writing them (blocking)."""

    def __init__(self, path: Path, label: str, size: int) -> None:
        self.path = path
        self.size = size
        self.blocks = -(-size // BLOCK)
        self._label = label.encode("utf-8", "surrogateescape")
        self._map_start = PAGE
        self._data_start = _round_up(PAGE + self.blocks * ENTRY.size)
        self._entries = bytearray(self.blocks * ENTRY.size)  # as last read or written
        self._held = bytearray(self.blocks)  # 1: its entry marks it held (whole)
        self._checked = bytearray(self.blocks)  # 1: held and found whole by this process
        self._pending: list[tuple[int, int, int]] = []  # (index, crc, length) not yet marked
        self._fd = self._open()
        self._direct = _open_direct(path)
        # The descriptors close when the last reader lets go of the object (or at `close`):
        # a finalizer that held the object itself would keep every archive ever read open.
        self._closer = weakref.finalize(self, _close_all, self._fd, self._direct)

    # -- opening ----------------------------------------------------------------

    def _open(self) -> int:
        for _ in range(3):
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(self.path, os.O_RDWR)
                if self._read_header(fd):
                    return fd
                os.close(fd)
                log.warning("disk cache: %s is not a cache file of this archive; replacing it",
                            self.path)  # fmt: skip
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            self._make()
        raise OSError(errno.EIO, f"cannot make {self.path}")

    def _header(self) -> bytes:
        return HEADER.pack(MAGIC, self.size, BLOCK, len(self._label)) + self._label

    def _read_header(self, fd: int) -> bool:
        header = self._header()
        if os.pread(fd, len(header), 0) != header:
            return False
        self._read_map(fd)
        return True

    def _read_map(self, fd: int) -> None:
        self._entries[:] = os.pread(fd, len(self._entries), self._map_start).ljust(
            len(self._entries), b"\0"
        )
        for index in range(self.blocks):
            self._mark(index)

    def _fingerprint_of(self, index: int) -> int | None:
        """The block's fingerprint if it is marked held (a blank entry's would match
        an empty block)."""
        crc, length = ENTRY.unpack_from(self._entries, index * ENTRY.size)
        return crc if length == min(BLOCK, self.size - index * BLOCK) else None

    def _mark(self, index: int) -> None:
        """Learn from its entry whether the block is held."""
        self._held[index] = self._fingerprint_of(index) is not None

    def _make(self) -> None:
        """A fresh file under a temporary name, linked into place unless one is there."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.parent / f"{TEMP_PREFIX}{os.getpid()}-{threading.get_ident()}"
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.pwrite(fd, self._header(), 0)
            os.ftruncate(fd, self._data_start + self.size)
            with contextlib.suppress(FileExistsError):
                os.link(temp, self.path)
        finally:
            os.close(fd)
            os.unlink(temp)

    def refresh(self) -> None:
        """Learn the blocks other mounts stored since (blocking)."""
        with contextlib.suppress(OSError):
            self._read_map(self._fd)

    def touch(self) -> None:
        """Used now: evicted last."""
        with contextlib.suppress(OSError):
            now = time.time_ns()
            os.utime(self._fd, ns=(now, now))

    def close(self) -> None:
        self._closer()  # once only: a descriptor number may be another file's afterwards

    # -- blocks -------------------------------------------------------------------

    def held(self, index: int) -> bool:
        return bool(self._held[index])

    def holds(self, blocks: range) -> bool:
        """Whether all the blocks are held."""
        return self._held.find(0, blocks.start, blocks.stop) < 0

    def read(self, first: int, view: memoryview) -> None:
        """Blocks from `first` on into `view`, each checked; DamagedBlock if one is not.

        Through the kernel's page cache, as a local file is read: a new mount's
        re-read of an archive read lately costs no disk access."""
        offset = self._data_start + first * BLOCK
        if os.preadv(self._fd, [view], offset) != len(view):
            self._forget(first)
            raise DamagedBlock(f"{self.path}: short read")
        for start in range(0, len(view), BLOCK):
            index = first + start // BLOCK
            crc = self._fingerprint_of(index)  # None: another thread found it damaged
            if crc is None or fingerprint(view[start : start + BLOCK]) != crc:
                self._forget(index)
                raise DamagedBlock(f"{self.path}: block {index} is damaged")
            self._checked[index] = 1

    def read_cached(self, offset: int, view: memoryview) -> bool:
        """The archive's bytes from `offset` into `view` if their blocks are held and the
        kernel's page cache has them all: never waits on the disk, so the trio thread may
        call it. False: `read` them in a thread. DamagedBlock as `read`."""
        first, last = offset // BLOCK, (offset + len(view) - 1) // BLOCK
        for index in range(first, last + 1):
            if not self.held(index) or not (self._checked[index] or self._check(index)):
                return False
        return _read_if_cached(self._fd, view, self._data_start + offset)

    def prefetch(self, first: int, stop: int) -> None:
        """Have the kernel bring blocks `first ..< stop` into its page cache in the
        background, and check them (blocking): `read_cached` then finds them ready.
        DamagedBlock as `read`."""
        with contextlib.suppress(OSError):
            start = self._data_start + first * BLOCK
            length = min(stop * BLOCK, self.size) - first * BLOCK
            os.posix_fadvise(self._fd, start, length, os.POSIX_FADV_WILLNEED)
        for index in range(first, stop):
            if self._held[index] and not self._checked[index]:
                self._check(index, wait=True)

    def _check(self, index: int, wait: bool = False) -> bool:
        """Check the block against its fingerprint by reading only the samples it was
        taken from; unless `wait`, False if they are not all in the page cache."""
        crc = self._fingerprint_of(index)
        if crc is None:
            return False
        base = self._data_start + index * BLOCK
        sample = memoryview(bytearray(STRIPE))
        found = 0
        for start, size in _stripes(min(BLOCK, self.size - index * BLOCK)):
            if wait:
                got = os.preadv(self._fd, [sample[:size]], base + start) == size
            else:
                got = _read_if_cached(self._fd, sample[:size], base + start)
            if not got:
                return False
            found = zlib.crc32(sample[:size], found)
        if found != crc:
            self._forget(index)
            raise DamagedBlock(f"{self.path}: block {index} is damaged")
        self._checked[index] = 1
        return True

    def write(self, first: int, view: memoryview) -> None:
        """Blocks from `first` on (whole, as the server confirmed them), not yet marked."""
        offset = self._data_start + first * BLOCK
        if self._transfer(os.pwritev, view, offset) != len(view):
            raise OSError(errno.ENOSPC, "short write")
        for start in range(0, len(view), BLOCK):
            index = first + start // BLOCK
            block = view[start : start + BLOCK]
            self._pending.append((index, fingerprint(block), len(block)))

    def commit(self) -> None:
        """Make the written blocks durable, then mark them held."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        os.fdatasync(self._fd)
        for index, crc, length in pending:
            entry = ENTRY.pack(crc, length)
            os.pwrite(self._fd, entry, self._map_start + index * ENTRY.size)
            self._entries[index * ENTRY.size : (index + 1) * ENTRY.size] = entry
            self._mark(index)

    def _forget(self, index: int) -> None:
        self._checked[index] = self._held[index] = 0
        blank = bytes(ENTRY.size)
        self._entries[index * ENTRY.size : (index + 1) * ENTRY.size] = blank
        with contextlib.suppress(OSError):
            os.pwrite(self._fd, blank, self._map_start + index * ENTRY.size)

    def _transfer(
        self, call: Callable[[int, list[memoryview], int], int], view: memoryview, offset: int
    ) -> int:
        """Direct I/O when the file system, the buffer's place and the length allow it."""
        if self._direct is not None and len(view) % PAGE == 0:
            try:
                return call(self._direct, [view], offset)
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # EINVAL: a buffer not on a page edge
                    raise
        return call(self._fd, [view], offset)


class ArchiveFiles:
    """The archive files of one disk cache: opened as readers need them, one writer thread
    storing blocks, a few threads loading them."""

    def __init__(self, disk: DiskCache) -> None:
        self._disk = disk
        self._open: weakref.WeakValueDictionary[str, CachedArchive] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._queue: deque[tuple[CachedArchive, int, memoryview, Callable[[], None]]] = deque()
        self._queued = 0
        self._writing = 0
        self._unmarked = False  # blocks written, not yet durable and marked
        self._closed = False
        # Page-aligned: the kernel copies into a misaligned buffer at a fifth of the speed.
        self._scratch = mmap.mmap(-1, BLOCK)
        self._loaders = ThreadPoolExecutor(READERS, thread_name_prefix="lrrfs-disk-read")
        self._writer = threading.Thread(target=self._write_loop, name="lrrfs-disk-write",
                                        daemon=True)  # fmt: skip
        self._writer.start()
        disk.before_close(self.close)

    def open(self, arcid: str, size: int) -> CachedArchive | None:
        """The archive's file (blocking), made if need be; None if the disk refuses."""
        key = f"{arcid}-{size}"
        found = self._open.get(key)
        try:
            if found is None:
                found = CachedArchive(self._disk.path(KIND, key), key, size)
                self._open[key] = found
            else:
                found.refresh()
            found.touch()
        except OSError as exc:
            log.warning("disk cache: the archive file %s cannot be kept: %s", arcid, exc)
            return None
        return found

    def load(self, archive: CachedArchive, first: int, view: memoryview, job: RangeJob) -> None:
        """Read blocks into `view` in a worker thread, reporting through `job`."""

        def run() -> None:
            try:
                archive.read(first, view)
            except OSError as exc:
                job.finish(DamagedBlock(f"{archive.path}: {exc.strerror}"))
            except DamagedBlock as exc:
                job.finish(exc)
            else:
                job.advanced(len(view))
                job.finish(None)

        self._loaders.submit(run)

    def scratch(self, size: int) -> memoryview:
        """A buffer for a read served at once on the trio thread (from the page cache):
        pyfuse3 replies with it before any other task runs, so one serves them all."""
        if size > len(self._scratch):
            return memoryview(mmap.mmap(-1, size))
        return memoryview(self._scratch)[:size]

    def prefetch(self, archive: CachedArchive, first: int, stop: int) -> None:
        """Have the kernel read blocks `first ..< stop` ahead, in the background."""

        def run() -> None:
            try:
                archive.prefetch(first, stop)
            except (OSError, DamagedBlock) as exc:  # a read of them fetches them anew
                log.warning("disk cache: %s", exc)

        self._loaders.submit(run)

    def save(
        self, archive: CachedArchive, first: int, view: memoryview, done: Callable[[], None]
    ) -> bool:
        """Queue whole blocks for the disk; `done` runs (in the writer) once the writer no
        longer needs `view`. False if too much is waiting: the blocks are not kept."""
        with self._lock:
            if self._closed or self._queued + len(view) > QUEUE_BYTES:
                return False
            self._queue.append((archive, first, view, done))
            self._queued += len(view)
            self._wakeup.notify()
        return True

    def drain(self, timeout: float) -> bool:
        """Wait (blocking) until every queued block is written and marked, at most `timeout`
        seconds: whether it came to that."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queue or self._writing or self._unmarked:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wakeup.wait(left)
        return True

    def room(self) -> int:
        with self._lock:
            return QUEUE_BYTES - self._queued

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closed = True
            self._wakeup.notify_all()
        self._writer.join(timeout)
        self._loaders.shutdown(wait=False, cancel_futures=True)

    def _write_loop(self) -> None:
        # Storing is never urgent: the CPU is the readers' first.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICENESS)
        touched: set[CachedArchive] = set()
        since_commit = 0
        while True:
            with self._lock:
                while not self._queue and not self._closed and not touched:
                    self._wakeup.wait()
                if not self._queue:
                    job = None
                else:
                    job = self._queue.popleft()
                    self._writing += 1
            if job is None:
                self._commit(touched)  # the queue ran dry: what was written is marked now
                since_commit = 0
                with self._lock:
                    self._unmarked = False
                    self._wakeup.notify_all()  # for `drain`
                    if self._closed and not self._queue:
                        return
                continue
            archive, first, view, done = job
            try:
                archive.write(first, view)
                touched.add(archive)
                since_commit += len(view)
            except OSError as exc:
                log.warning("disk cache: cannot store blocks of %s: %s", archive.path, exc)
            finally:
                done()
                with self._lock:
                    self._queued -= len(view)
                    self._writing -= 1
                    self._unmarked = True
            self._disk.grew(len(view))
            if since_commit >= COMMIT_BYTES:
                self._commit(touched)
                since_commit = 0

    @staticmethod
    def _commit(touched: set[CachedArchive]) -> None:
        for archive in touched:
            try:
                archive.commit()
            except OSError as exc:
                log.warning("disk cache: cannot mark blocks of %s: %s", archive.path, exc)
        touched.clear()


def blocks_held(disk: DiskCache, arcid: str, size: int) -> tuple[int, int] | None:
    """(blocks held, blocks in all) of the archive's file on disk, None if there is none;
    only looks (blocking): no file is made, nothing is marked."""
    key = f"{arcid}-{size}"
    blocks = -(-size // BLOCK)
    try:
        with open(disk.path(KIND, key), "rb") as handle:
            header = handle.read(PAGE)
            entries = handle.read(blocks * ENTRY.size)
    except OSError:
        return None
    label = key.encode("utf-8", "surrogateescape")
    if not header.startswith(HEADER.pack(MAGIC, size, BLOCK, len(label)) + label):
        return None
    held = sum(
        1
        for index in range(min(blocks, len(entries) // ENTRY.size))
        if ENTRY.unpack_from(entries, index * ENTRY.size)[1] == min(BLOCK, size - index * BLOCK)
    )
    return held, blocks


def fingerprint(block: memoryview) -> int:
    """A CRC-32 of samples of the block: see the module's docstring."""
    crc = 0
    for start, size in _stripes(len(block)):
        crc = zlib.crc32(block[start : start + size], crc)
    return crc


def _stripes(length: int) -> list[tuple[int, int]]:
    """(start, size) of the samples a block of `length` bytes is fingerprinted by."""
    samples = [(start, min(STRIPE, length - start)) for start in range(0, length, STRIDE)]
    return [*samples, (max(0, length - STRIPE), min(STRIPE, length))]


def _read_if_cached(fd: int, view: memoryview, offset: int) -> bool:
    """Fill `view` from the file at `offset` only from the kernel's page cache."""
    try:
        return os.preadv(fd, [view], offset, os.RWF_NOWAIT) == len(view)
    except OSError:  # EAGAIN: not cached; EOPNOTSUPP: a file system without RWF_NOWAIT
        return False


def _close_all(*fds: int | None) -> None:
    for fd in fds:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _round_up(size: int) -> int:
    return -(-size // PAGE) * PAGE


def _open_direct(path: Path) -> int | None:
    """A second descriptor for direct I/O, if the file system has it (tmpfs has not)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(path, os.O_RDWR | flag)
    except OSError:
        return None
