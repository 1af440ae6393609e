"""The mount's lifecycle: meet the server, mount, serve, follow the server, unmount.

`serve()` runs in the foreground until SIGTERM/SIGINT or an external unmount.
`mount_in_background()` forks a child that serves, and returns once the child
says the mount is ready (or why it could not mount), like sshfs does.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import trio

from . import notify, status
from .client import LrrClient, LrrError
from .client.connectivity import Connectivity, Mode
from .fs import LrrOperations, Ownership
from .fs.calls import MAX_TASKS
from .fs.readahead import set_read_ahead
from .fs.spool import SPOOL_FOLDER, Spool
from .library import Changes, Library
from .library.background import quietly, repeat
from .library.desktop import start_desktop_thumbnails
from .library.diskcache import DiskCache, default_cache_root, server_folder_name

log = logging.getLogger(__name__)

IDLE_STREAM_SECONDS = 10.0
READY_PROBE_SECONDS = 30.0
FLUSH_SECONDS = 5.0  # longest wait at unmount to send the last reading progress


class MountError(Exception):
    """The mount cannot start; the message says why, for the user."""


@dataclass(frozen=True, slots=True)
class MountOptions:
    url: str
    mountpoint: Path
    api_key: str | None = None
    refresh_interval: float = 60.0
    timeout: float = 30.0
    cache_bytes: int = 64 << 20  # pages in memory
    disk_cache_bytes: int = 4 << 30  # pages, thumbnails, page lists, the index on disk; 0: none
    cache_dir: Path | None = None  # None: $XDG_CACHE_HOME/lrrfs; one subfolder per server
    thumbnail_wait: float = 5.0
    allow_other: bool = False
    verify_tls: bool = True  # https certificates; off only with --insecure, loudly
    debug_fuse: bool = False
    read_only: bool = False  # metadata.json not editable even with a key
    uid: int | None = None  # owner of every file (default: the mounting user)
    gid: int | None = None
    umask: int = 0o022
    fsname: str | None = None  # the source df and findmnt show (default: the URL)
    kernel_options: frozenset[str] = frozenset()  # nosuid, nodev, noexec given with -o
    views: bool = True  # @new, @untagged, @tags, @categories, @search beside the archives
    progress: bool = True  # reading a page sets the server's reading progress
    clear_new_on_read: bool = False  # reading an archive clears its "new" flag
    comic_names: bool = False  # archive files named .cbz, .cb7, .cbr, .cbt
    folder_icons: bool = False  # a .directory in each archive folder: Dolphin's folder cover
    offline: Mode = Mode.AUTO  # unreachable: serve the disk cache (AUTO), always, or never
    probe_interval: float = 60.0  # offline: the most seconds between two probes of the server
    allow_delete: bool = False  # rm -r of an archive folder deletes the archive on the server
    desktop_thumbnails: bool = True  # file managers' thumbnail cache filled for listed folders


Ready = Callable[[str | None], None]  # called once: None when mounted, else the reason


def prepare_mountpoint(mountpoint: Path) -> bool:
    """Check the mount point; clear a dead mount left by a killed lrrfs (then return True)."""
    cleared = False
    try:
        os.stat(mountpoint)
        os.statvfs(mountpoint)  # stat may be answered from cache; statfs reaches the server
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise MountError(f"mount point {mountpoint}: {exc.strerror}") from None
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
        cleared = True
    if not mountpoint.is_dir():
        raise MountError(f"mount point {mountpoint} is not a folder")
    if os.path.ismount(mountpoint):
        raise MountError(f"{mountpoint} is already a mount point")
    return cleared


def fuse_options(options: MountOptions) -> set[str]:
    source = (options.fsname or options.url).replace(",", "%2C")
    result = set(pyfuse3.default_options) | {f"fsname={source}", "subtype=lrrfs", "noatime"}
    if options.read_only:
        result.add("ro")  # the kernel's too: findmnt says ro, writers get EROFS at once
    result |= options.kernel_options
    if options.allow_other:
        result.add("allow_other")
    if options.debug_fuse:
        result.add("debug")
    return result


async def connect(options: MountOptions, doing: str = "mount") -> tuple[LrrClient, Library]:
    """The client and the library of the server, met; MountError says why not."""
    client = LrrClient(
        options.url,
        api_key=options.api_key,
        timeout=options.timeout,
        thumbnail_wait=options.thumbnail_wait,
        verify=options.verify_tls,
        link=Connectivity(options.offline, options.probe_interval),
    )
    if not options.verify_tls and options.url.startswith("https:"):
        log.warning(
            "NOT verifying the certificate of %s (--insecure): anyone on the network "
            "path can read the API key and the library",
            options.url,
        )
    library = Library(
        client,
        cache_bytes=options.cache_bytes,
        read_only=options.read_only,
        views=options.views,
        progress=options.progress,
        clear_new_on_read=options.clear_new_on_read,
        comic_names=options.comic_names,
        disk=open_disk_cache(options),
        allow_delete=options.allow_delete,
    )
    try:
        info = await library.connect()
    except LrrError as exc:
        await client.aclose()
        if library.disk is not None:
            library.disk.close()
        raise MountError(f"cannot {doing} {options.url}: {exc}") from None
    log.info(
        "%s %s %s at %s: %d archives",
        "offline from the disk cache of" if client.link.offline else "connected to",
        info.name,
        info.version,
        options.url,
        len(library),
    )
    return client, library


def server_cache_folder(options: MountOptions) -> Path:
    """The mount's folder for this server: the disk cache, the uploads' spool files."""
    return (options.cache_dir or default_cache_root()) / server_folder_name(options.url)


def open_disk_cache(options: MountOptions) -> DiskCache | None:
    if options.disk_cache_bytes <= 0:
        return None
    root = server_cache_folder(options)
    try:
        return DiskCache(root, options.disk_cache_bytes)
    except OSError as exc:
        log.warning("no disk cache: cannot use %s: %s", root, exc.strerror)
        return None


async def _refresh(library: Library) -> None:
    """Fetch the archive list anew (the adapter tells the kernel what changed); offline,
    the probe does it when the server answers again."""
    if library.client.link.offline:
        return
    _log_changes(await library.refresh())


def _log_changes(changes: Changes) -> None:
    if changes:
        log.info(
            "library changed: %d added, %d removed, %d renamed, %d updated",
            len(changes.added),
            len(changes.removed),
            len(changes.renamed),
            len(changes.updated),
        )


async def _stop_on_signal(signals: AsyncIterator[int], handlers: trio.CancelScope) -> None:
    async for signum in signals:
        log.info("%s: unmounting", signal.Signals(signum).name)
        notify.stopping("unmounting")
        pyfuse3.terminate()
        handlers.cancel()  # calls in flight do not wait for a hung server
        return


async def _announce_ready(options: MountOptions, library: Library, ready: Ready) -> None:
    """Report the mount ready once it answers (statfs reaches this process, not the server)."""
    try:
        with trio.fail_after(READY_PROBE_SECONDS):
            await trio.to_thread.run_sync(os.statvfs, options.mountpoint, abandon_on_cancel=True)
    except (OSError, trio.TooSlowError) as exc:
        ready(f"the mount on {options.mountpoint} does not answer: {exc!r}")
        pyfuse3.terminate()
        return
    # Now, not before: the kernel caps the read-ahead when the mount's INIT is answered.
    await trio.to_thread.run_sync(set_read_ahead, options.mountpoint)
    ready(None)
    notify.ready(f"{len(library)} archives from {options.url} on {options.mountpoint}")


def _start_background(
    nursery: trio.Nursery,
    options: MountOptions,
    library: Library,
    ops: LrrOperations,
    status_file: status.StatusFile,
) -> None:
    """The mount's own background work, each piece repeated and supervised: a failure
    is logged (and shown by `lrrfs status`), and the mount goes on."""
    started = time.time()

    async def write_status() -> None:
        status_file.write(status.snapshot(options, library, started))

    interval = options.refresh_interval
    first_refresh = 0.0 if library.index_from_cache else interval  # a cached list: at once
    nursery.start_soon(
        repeat, lambda: _refresh(library), interval, "refresh of the archive list", first_refresh
    )
    nursery.start_soon(
        repeat,
        lambda: ops.close_idle_streams(IDLE_STREAM_SECONDS),
        IDLE_STREAM_SECONDS / 2,
        "closing idle archive streams",
    )
    nursery.start_soon(repeat, write_status, status.INTERVAL, "status file", 0.0)
    # Offline: probe until the server answers, then go online and refresh at once.
    nursery.start_soon(
        library.client.link.watch,
        library.probe,
        lambda: quietly(_refresh(library), "refreshing the archive list"),
    )


def _start_desktop_thumbnails(
    nursery: trio.Nursery, options: MountOptions, library: Library, ops: LrrOperations
) -> None:
    if not options.desktop_thumbnails:
        return
    thumbnails = start_desktop_thumbnails(library, options.mountpoint, ops.ownership.uid)
    if thumbnails is not None:
        ops.on_folder_listed = thumbnails.listed
        ops.on_thumbnailer_reading = thumbnails.thumbnailer_reading
        nursery.start_soon(thumbnails.run)


async def serve(options: MountOptions, ready: Ready) -> None:
    """Mount and serve until a signal or an external unmount."""
    # Signals are caught from the start: one that comes while mounting stops the mount
    # as soon as it is up, instead of killing the process and leaving a dead mount.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        await _serve(options, ready, signals)


async def _serve(options: MountOptions, ready: Ready, signals: AsyncIterator[int]) -> None:
    try:
        client, library = await connect(options)
    except MountError as exc:
        ready(str(exc))
        raise
    ops = LrrOperations(
        library,
        ownership=Ownership(
            uid=os.getuid() if options.uid is None else options.uid,
            gid=os.getgid() if options.gid is None else options.gid,
            umask=options.umask,
        ),
        folder_icons=options.folder_icons,
        spool=Spool(server_cache_folder(options) / SPOOL_FOLDER),
    )
    await trio.to_thread.run_sync(ops.spool.sweep)
    try:
        pyfuse3.init(ops, str(options.mountpoint), fuse_options(options))
    except RuntimeError as exc:
        await client.aclose()
        ready(f"cannot mount on {options.mountpoint}: {exc}")
        raise MountError(str(exc)) from None
    log.info("mounted %s on %s", options.url, options.mountpoint)
    status_file = status.StatusFile(options.mountpoint)
    try:
        async with trio.open_nursery() as nursery:
            ops.attach(nursery)
            _start_desktop_thumbnails(nursery, options, library, ops)
            # pyfuse3.main and every call it is running: cancelled on the way down (their
            # callers get an error as the mount goes), so a hung server cannot hold it up.
            handlers = trio.CancelScope()
            nursery.start_soon(_stop_on_signal, signals, handlers)
            _start_background(nursery, options, library, ops, status_file)
            nursery.start_soon(_announce_ready, options, library, ready)
            with handlers:
                await pyfuse3.main(min_tasks=4, max_tasks=MAX_TASKS)
            with trio.move_on_after(min(options.timeout, FLUSH_SECONDS)):
                await library.reading.flush()  # pages read just before the unmount
            nursery.cancel_scope.cancel()
    finally:
        notify.stopping("unmounting")
        status_file.remove()
        ops.detach()  # nothing may talk to the session once it is closed
        pyfuse3.close(unmount=True)
        ops.keep_unsent()
        await client.aclose()
        if library.disk is not None:
            library.disk.close()  # queued writes reach the disk
        log.info("unmounted %s", options.mountpoint)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_BLOCK = 128 << 10  # blocks of this size or more are mapped apart, and unmapped when freed


def return_freed_memory() -> None:
    """Make glibc give large freed blocks back to the system at once.

    Bodies are read in worker threads, each with a malloc arena of its own, and after the
    first large block is freed glibc serves blocks of up to 32 MiB from those arenas, which
    keep what is freed. An answer cut at its cap (tens of MiB) then stayed resident, and the
    next one, read in another thread, added to it: 450 MB after a few hostile answers. A
    fixed threshold also turns off that growth."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # not glibc: its own rules
    mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)


def run_foreground(options: MountOptions, ready: Ready) -> int:
    return_freed_memory()
    try:
        trio.run(serve, options, ready)
    except MountError:
        return 1
    return 0


def mount_in_background(options: MountOptions, start_logging: Callable[[], None]) -> int:
    """Fork a serving child; return 0 once it reports the mount ready, 1 if it failed."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: detach, serve, report through the pipe
        os.close(read_end)
        os.setsid()
        _detach_stdio()
        start_logging()
        report = os.fdopen(write_end, "w")

        def ready(error: str | None) -> None:
            report.write(error or "ok")
            report.close()

        try:
            status = run_foreground(options, ready)
        except BaseException:
            log.exception("lrrfs stopped on an internal error")
            status = 1
        os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as report:
        message = report.read()
    if message == "ok":
        return 0
    os.waitpid(pid, 0)
    print(
        f"lrrfs: {message or 'the mount process died before the mount was ready; see its log'}",
        file=sys.stderr,
    )
    return 1


def _detach_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
