"""A persistent cache of immutable blobs on disk: pages, thumbnails, page lists, the index.

Layout: `<root>/v1/<kind>/<xx>/<sha1 of the key>`, one file per blob:

    magic (8 bytes) | payload length (8) | CRC-32 of the payload (4) | payload

A blob is written to a temporary file in the same folder and renamed into
place (`os.replace`, atomic), so a reader sees either no file or a whole one;
a file whose length or checksum does not match (a crash mid-write on a disk
that reorders writes, a truncated copy, bit rot) is deleted and counts as a
miss. No fsync: the checksum is what guarantees that a damaged blob is never
served, and a lost blob costs only a download. Two mounts of the same server
may share the folder: every change is an atomic rename or unlink, and each
treats a vanished file as a miss.

A process warming the cache pins what it is warming: it lists those blobs in a file of
`<root>/pins/` named by its PID, and no eviction (of any process sharing the folder)
deletes a blob listed by a live process.

Recency is the file's mtime (stamped on every use, even from memory: uses are
gathered for a moment and stamped together, so that a reader turning pages does
not wake a thread per page); when the
folder grows past its cap, the least recently used pages and thumbnails go
(then, if need be, the small lists) until it is under 90 % of the cap. Usage
is counted as blobs are written and recounted by each eviction's scan (which
also sees what other mounts wrote).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import trio

log = logging.getLogger(__name__)
T = TypeVar("T")

MAGIC = b"LRRFS\x01\x00\x00"
HEADER = struct.Struct("<8sQI")
VERSION_DIR = "v1"
TEMP_PREFIX = ".tmp-"
STALE_TEMP_SECONDS = 600.0  # a temp file this old was left by a crash
LOW_WATER = 0.9  # eviction stops at this share of the cap
EVICTION_PASSES = 3  # scans per eviction, when files are used while one runs
QUEUE_BYTES = 64 << 20  # writes waiting for the writer thread, at most
WRITER_NICENESS = 10
TOUCH_SECONDS = 2.0  # uses are stamped at most this long after they happen
QUIET_SECONDS = 0.25  # writes wait until reading has paused this long...
BACKLOG_BYTES = QUEUE_BYTES // 2  # ...unless this much is waiting
BULKY = frozenset({"page", "thumb", "pagethumb", "archive"})  # kinds evicted before the others
PINS_DIR = "pins"


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "lrrfs"


def server_folder_name(url: str) -> str:
    """A folder name for one server's cache: its host (and path), not its port or scheme,
    which change (a demo's or a test's free port, http behind a new proxy).

    Sharing is safe: what is cached is filed by archive id and size, the page lists by the
    API generation too, and the archive list by the server's whole URL."""
    from urllib.parse import urlsplit

    parts = urlsplit(url.rstrip("/"))
    where = f"{parts.hostname or 'server'}{parts.path}"
    host = "".join(c if c.isalnum() or c in "-." else "_" for c in (parts.hostname or "server"))
    digest = hashlib.sha1(where.encode("utf-8")).hexdigest()[:10]
    return f"{host}-{digest}"


class DiskCache:
    """Blobs by (kind, key) in `root`, at most about `cap` bytes in all."""

    def __init__(self, root: Path, cap: int) -> None:
        self.root = root / VERSION_DIR
        self.cap = cap
        # Titles, pages and covers are the user's business: folders only they can open.
        for folder in (root.parent, root, self.root):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        root.chmod(0o700)  # the server's folder is ours alone, even if an older lrrfs made it
        self._used = 0
        self._written = 0  # bytes written by this process, ever: eviction's scans miss some
        self._evictor: threading.Thread | None = None
        self._lock = threading.Lock()  # guards _used and the write queue
        self._queue: deque[tuple[str, str, bytes]] = deque()  # blobs to write
        self._touches: dict[tuple[str, str], bytes | None] = {}  # blobs used, to stamp
        self._touch_due = 0.0  # when the gathered touches are stamped
        self._queued = 0  # bytes in both
        self._quiet_from = 0.0  # no write before this (monotonic): a reader is busy
        self._wakeup = threading.Condition(self._lock)
        self._closed = False
        self._evicting = False
        self._folders: set[Path] = set()  # made already (by this process)
        self._before_close: list[Callable[[], None]] = []
        self._writer = threading.Thread(target=self._write_loop, name="lrrfs-cache", daemon=True)
        self._writer.start()
        self._start_eviction()  # learns the usage left by earlier mounts

    # -- paths ------------------------------------------------------------------

    def path(self, kind: str, key: str) -> Path:
        digest = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()
        return self.root / kind / digest[:2] / digest

    # -- reading (any thread; blocking) -----------------------------------------

    def get(self, kind: str, key: str, touch: bool = True) -> bytes | None:
        """The blob, whole and checked, or None; `touch`: used now (else only looked at)."""
        path = self.path(kind, key)
        try:
            data = _read_blob(path)
        except OSError:
            return None
        if data is None:
            log.warning("disk cache: %s is damaged; dropping it", path)
            with contextlib.suppress(OSError):
                path.unlink()
        elif touch:
            self.touch_later(kind, key, data)  # used now: evicted last
        return data

    def read_into(self, kind: str, key: str, buffer: memoryview) -> memoryview | None:
        """(Blocking.) The blob's bytes, whole and checked, read into `buffer` (which
        must be big enough), as the start of it; None if it is not there, damaged or
        bigger. Used now, for eviction. A page-aligned buffer reused for many blobs
        spares a new object's page faults and the kernel's slow copy into an unaligned
        one: 200 KB in 30 us here, against 170 us."""
        try:
            fd = os.open(self.path(kind, key), os.O_RDONLY)
        except OSError:
            return None
        try:
            found = _blob_header(fd)
            if found is None or found[0] > len(buffer):
                return None
            length, crc = found
            data = buffer[:length]
            if os.preadv(fd, [data], HEADER.size) != length or zlib.crc32(data) != crc:
                return None
            _stamp(fd)
            return data
        except OSError:
            return None
        finally:
            os.close(fd)

    async def read(self, kind: str, key: str, timeout: float) -> bytes | None:
        """`get` in a worker thread, so that a slow disk never stalls the mount; None
        if the disk does not answer within `timeout` seconds."""
        return (await self.read_many(kind, [key], timeout))[0]

    async def read_many(self, kind: str, keys: list[str], timeout: float) -> list[bytes | None]:
        """`read` of several blobs with one trip to a worker thread (the trip costs more
        than reading a page the system has cached)."""
        found = await self.in_worker(lambda: [self.get(kind, key) for key in keys], timeout)
        return found if found is not None else [None] * len(keys)

    @staticmethod
    async def in_worker(job: Callable[[], T], timeout: float) -> T | None:
        """`job` (blocking disk work) in a worker thread, so that a slow disk never stalls
        the mount; None if the disk does not answer within `timeout` seconds."""
        with trio.move_on_after(timeout):
            return await trio.to_thread.run_sync(job, abandon_on_cancel=True)
        log.warning("disk cache: no answer from the disk within %g s", timeout)
        return None

    # -- writing ----------------------------------------------------------------

    def put(self, kind: str, key: str, data: bytes) -> None:
        """Write the blob now (blocking)."""
        path = self.path(kind, key)
        header = HEADER.pack(MAGIC, len(data), zlib.crc32(data))
        temp = path.parent / f"{TEMP_PREFIX}{os.getpid()}-{threading.get_ident()}"
        try:
            if path.parent not in self._folders:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._folders.add(path.parent)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                if os.writev(fd, [header, data]) != len(header) + len(data):
                    raise OSError(errno.ENOSPC, "short write")
                _stamp(fd)
            finally:
                os.close(fd)
            os.replace(temp, path)
        except OSError as exc:
            log.warning("disk cache: cannot write %s: %s", path, exc.strerror)
            self._folders.discard(path.parent)  # deleted under us, maybe: make it again
            with contextlib.suppress(OSError):
                temp.unlink()
            return
        with self._lock:
            self._used += HEADER.size + len(data)
            self._written += HEADER.size + len(data)
            over = self._used > self.cap
        if over:
            self._start_eviction()

    def grew(self, size: int) -> None:
        """`size` bytes were written into the folder by someone else (the archive files'
        writer): counted against the cap."""
        with self._lock:
            self._used += size
            self._written += size
            over = self._used > self.cap
        if over:
            self._start_eviction()

    def put_later(self, kind: str, key: str, data: bytes) -> None:
        """Queue the blob for the writer thread; dropped if too much is waiting."""
        self._enqueue(kind, key, data, touch=False)

    def touch_later(self, kind: str, key: str, data: bytes | None) -> None:
        """The blob was used (from memory): it is the most recent again, for eviction;
        written again if it was evicted meanwhile (least recently used is not unused),
        when its `data` is at hand."""
        self._enqueue(kind, key, data, touch=True)

    def reading(self) -> None:
        """A program is reading: writing waits for it to pause (the disk and the CPU are
        the reader's first), unless the backlog grows long."""
        self._quiet_from = time.monotonic() + QUIET_SECONDS

    def _enqueue(self, kind: str, key: str, data: bytes | None, touch: bool) -> None:
        size = _size(data)
        with self._lock:
            if self._closed or self._queued + size > QUEUE_BYTES:
                return
            if not touch:
                assert data is not None
                self._queue.append((kind, key, data))
                # While a reader is busy, one wake-up for the first write is enough:
                # the writer then waits for the pause by itself.
                if len(self._queue) == 1 or time.monotonic() >= self._quiet_from:
                    self._wakeup.notify()
            else:
                gathered = (kind, key) in self._touches
                if gathered and (data is None or self._touches[(kind, key)] is not None):
                    return  # gathered already (with its bytes, if any came)
                if not self._touches:
                    self._touch_due = time.monotonic() + TOUCH_SECONDS
                    self._wakeup.notify()  # the writer's next deadline
                self._touches[(kind, key)] = data
            self._queued += size

    def before_close(self, job: Callable[[], None]) -> None:
        """Run `job` first when closing (another writer into the folder stops)."""
        self._before_close.append(job)

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued (within `timeout`); leave the folder under its cap."""
        for job in self._before_close:
            job()
        with self._lock:
            self._closed = True
            self._wakeup.notify_all()
        self._writer.join(timeout)
        with self._lock:
            evictor = self._evictor
        if evictor is not None:
            evictor.join()
        self.evict()  # a fresh count: what eviction threads counted may have drifted

    def _write_loop(self) -> None:
        # Writing the cache is never urgent: leave the CPU to the readers first.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICENESS)
        while True:
            with self._lock:
                jobs = self._next_jobs()
            if jobs is None:
                return
            for kind, key, data, touch in jobs:
                try:
                    if touch:
                        _stamp(self.path(kind, key))
                    elif data is not None:
                        self.put(kind, key, data)
                except FileNotFoundError:
                    if data is not None:
                        self.put(kind, key, data)  # evicted, and used since: back it goes
                except OSError:
                    pass
                finally:
                    with self._lock:
                        self._queued -= _size(data)

    def _next_jobs(self) -> list[tuple[str, str, bytes | None, bool]] | None:
        """(With the lock held.) The gathered touches once due, else the next write;
        waits for either. None once closed with nothing left."""
        while True:
            now = time.monotonic()
            if self._touches and (now >= self._touch_due or (self._closed and not self._queue)):
                touches, self._touches = self._touches, {}
                return [(kind, key, data, True) for (kind, key), data in touches.items()]
            hold = self._quiet_from - now
            if self._queue and (hold <= 0 or self._queued >= BACKLOG_BYTES or self._closed):
                return [(*self._queue.popleft(), False)]
            if self._closed and not self._touches:
                return None
            deadlines = [hold] if self._queue else []
            if self._touches:
                deadlines.append(self._touch_due - now)
            self._wakeup.wait(min(deadlines) if deadlines else None)

    def wait_written(self, timeout: float) -> bool:
        """Block until every queued write is on the disk (True), or `timeout` passed."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queued > sum(map(_size, self._touches.values())):  # writes not done
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wakeup.notify_all()
                self._wakeup.wait(min(left, 0.05))
        return True

    @contextlib.contextmanager
    def pinned(self, blobs: list[tuple[str, str]]) -> Iterator[None]:
        """No eviction deletes these (kind, key) blobs meanwhile, in any process."""
        pins = self.root / PINS_DIR
        pins.mkdir(exist_ok=True)
        path = pins / f"{os.getpid()}-{threading.get_ident()}"
        names = "".join(f"{self.path(kind, key).relative_to(self.root)}\n" for kind, key in blobs)
        path.write_text(names)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()

    def _pinned_paths(self) -> set[str]:
        """Blobs pinned by live processes (pins of dead ones are deleted)."""
        found: set[str] = set()
        try:
            entries = list(os.scandir(self.root / PINS_DIR))
        except OSError:
            return found
        for entry in entries:
            pid = entry.name.split("-", 1)[0]
            if not pid.isdigit() or not process_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                continue
            with contextlib.suppress(OSError), open(entry.path) as pins:
                found.update(str(self.root / line.strip()) for line in pins if line.strip())
        return found

    # -- eviction -----------------------------------------------------------------

    def usage(self) -> int:
        with self._lock:
            return self._used

    def _start_eviction(self) -> None:
        with self._lock:
            if self._evicting:
                return
            self._evicting = True
            self._evictor = threading.Thread(target=self._evict, name="lrrfs-evict", daemon=True)
            self._evictor.start()

    def _evict(self) -> None:
        try:
            self.evict()
        except Exception:
            log.exception("disk cache: eviction failed")
        finally:
            with self._lock:
                self._evicting = False

    def evict(self) -> None:
        """Scan the folder; delete the least recently used files until under the cap."""
        with self._lock:
            written = self._written
        for _ in range(EVICTION_PASSES):
            total, stale = self._evict_pass()
            if not stale:
                break
        with self._lock:
            self._used = total + self._written - written  # what was written meanwhile

    def _evict_pass(self) -> tuple[int, bool]:
        """One scan and its deletions: (the bytes left, whether the scan's order went
        stale). A file used since the scan stays, and ends the pass: the files after it
        in that order may be newer now than the ones before it, and going on could
        delete what every listing needs (the lists come last) while pages stay."""
        files, total = self._scan()
        if total <= self.cap:
            return total, False
        files.sort()
        target = int(self.cap * LOW_WATER)
        pinned = self._pinned_paths()
        # What is being warmed stays, whatever it weighs: the rest makes room beside it
        # (and no list goes for lack of room the pins took).
        target += sum(size for _, _, size, path in files if path in pinned)
        stale = False
        for _, used, size, path in files:
            if total <= target:
                break
            if path in pinned:
                continue
            if _used_since(path, used):
                stale = True
                break
            if _unlink(path):
                total -= size
        log.info("disk cache: evicted down to %d MiB", total >> 20)
        return total, stale

    def _scan(self) -> tuple[list[tuple[bool, int, int, str]], int]:
        """The cache's files in eviction order's terms (lists last, mtime, bytes held,
        path) and their total; temporary files left by a crash are deleted."""
        files = []
        total = 0
        now = time.time()
        for entry in self._walk():
            try:
                info = entry.stat()
            except OSError:
                continue
            if entry.name.startswith(TEMP_PREFIX):
                if now - info.st_mtime > STALE_TEMP_SECONDS:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                continue
            # Pages and covers go first; lists are small and every listing needs them.
            bulky = os.path.basename(os.path.dirname(os.path.dirname(entry.path))) in BULKY
            # Bytes held: an archive file is sparse (its length is the archive's, blocks not
            # read take no space); a small file is counted by length, as it was written.
            size = min(info.st_size, info.st_blocks * 512)
            files.append((not bulky, info.st_mtime_ns, size, entry.path))
            total += size
        return files, total

    def blobs(self) -> Iterator[os.DirEntry[str]]:
        """Every file of the cache (blocking)."""
        return self._walk()

    def _walk(self) -> Iterator[os.DirEntry[str]]:
        stack = [str(self.root)]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except OSError:
                continue
            for entry in entries:
                if entry.name == PINS_DIR:
                    continue  # not blobs
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    yield entry


def _read_blob(path: Path) -> bytes | None:
    """A blob's bytes, whole and checked, or None if the file is not one (damaged).

    Its header and its bytes are read apart, the bytes straight into the object
    returned: a slice of the whole file would copy them again while holding the GIL
    (the copy's page faults cost more than the read here), and the trio thread waits."""
    fd = os.open(path, os.O_RDONLY)
    try:
        found = _blob_header(fd)
        if found is None:
            return None
        length, crc = found
        data = os.pread(fd, length, HEADER.size)
    finally:
        os.close(fd)
    return data if len(data) == length and zlib.crc32(data) == crc else None


def _blob_header(fd: int) -> tuple[int, int] | None:
    """(length, CRC-32) of the blob in the file, if its header and its size say it is
    one (a file cut short or grown is not)."""
    header = os.pread(fd, HEADER.size, 0)
    if len(header) < HEADER.size:
        return None
    magic, length, crc = HEADER.unpack(header)
    if magic != MAGIC or os.fstat(fd).st_size != HEADER.size + length:
        return None
    return length, crc


def _size(data: bytes | None) -> int:
    return 0 if data is None else len(data)


def _stamp(target: int | Path) -> None:
    """Set the mtime to now, to the nanosecond: the file system's own clock ticks
    coarsely, and files written in one tick would leave eviction to guess their order."""
    now = time.time_ns()
    os.utime(target, ns=(now, now))


def _used_since(path: str, used_ns: int) -> bool:
    """The file the scan found last used at `used_ns` was used again since."""
    try:
        return os.stat(path).st_mtime_ns > used_ns
    except OSError:
        return False  # gone (another mount evicted it), or the unlink will say


def _unlink(path: str) -> bool:
    """Delete the file; True if it is gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass  # another mount evicted it: gone all the same
    except OSError:
        return False
    return True


def process_alive(pid: int) -> bool:
    """Whether a process of that PID runs (whoever's it is)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's: alive
    return True
