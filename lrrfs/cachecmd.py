"""`lrrfs cache warm`, `show` and `clear`: fill the disk cache ahead of time, see what it
holds, or empty it.

Warming fetches the pages and thumbnails of the archives named (titles, or views such as
`@new`, `@categories/Name`, `@search/query`) into the same disk cache the mounts of that
server use, so that reading them later (on a train, with the NAS asleep) costs no request:
they are then in `@offline/`. It is not reading: it sends no reading progress. What is
being warmed is pinned: no eviction deletes it meanwhile, in this process or a mount's.
With `--archives` it fetches the archive files too, block by block, as a mount's reads
would store them (a backup or a comic reader opening the file then reads the disk).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from dataclasses import replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TextIO

import trio

from .client import LrrError
from .client.connectivity import Mode
from .fs.spool import SPOOL_FOLDER
from .library import Archive, Library
from .library.diskcache import DiskCache, default_cache_root, server_folder_name
from .library.offline import Holding, file_complete, holding, holdings, page_key
from .mount import MountError, MountOptions, connect

WRITE_WAIT = 120.0  # seconds for the disk to take what was warmed
VIEW_DEPTH = 4  # a view folder of folders is warmed down to this depth
NO_CAP = 1 << 62


class NothingToWarm(Exception):
    """The patterns name no archive; the message says which."""


def matching(library: Library, patterns: list[str]) -> list[Archive]:
    """Archives whose title or folder name matches one of the patterns (shell wildcards)."""
    chosen = []
    for name in library.names:
        archive = library.find(name)
        if archive is not None and any(
            fnmatchcase(archive.meta.title, p) or fnmatchcase(name, p) for p in patterns
        ):
            chosen.append(archive)
    return chosen


ARCHIVE_STEP = 8 << 20  # bytes of the archive file asked for at a time
QUEUE_ROOM = 24 << 20  # wait for the disk when the write queue has less room than this


async def chosen_archives(library: Library, patterns: list[str]) -> list[Archive]:
    """The archives named: titles (wildcards), or views (`@new`, `@categories/Name`...)."""
    chosen: dict[str, Archive] = {}
    titles = [p for p in patterns if not p.startswith("@")]
    for archive in matching(library, titles) if titles else []:
        chosen[archive.arcid] = archive
    for pattern in patterns:
        if pattern.startswith("@"):
            path = tuple(part for part in pattern.split("/") if part)
            found = await _view_members(library, path, VIEW_DEPTH)
            if found is None:
                raise NothingToWarm(f"no view {pattern!r} (see lrrfs mount's views)")
            for arcid in found:
                chosen.setdefault(arcid, library.get(arcid))
    if not chosen:
        raise NothingToWarm(f"no archive matches {' '.join(map(repr, patterns))}")
    return [chosen[a] for a in sorted(chosen, key=lambda a: chosen[a].name)]


async def _view_members(library: Library, path: tuple[str, ...], depth: int) -> set[str] | None:
    folder = await library.view(path)
    if folder is None:
        return None
    found = set(library.view_links(folder).values())
    for name in folder.folders if depth > 0 else ():
        found |= await _view_members(library, (*path, name), depth - 1) or set()
    return found


async def _warm(options: MountOptions, patterns: list[str], out: TextIO, archives: bool) -> int:
    # Warming needs the server: never offline.
    client, library = await connect(replace(options, offline=Mode.NEVER), doing="reach")
    try:
        if library.disk is None:
            print("lrrfs: the disk cache is off (--cache-size 0): nothing to warm", file=out)
            return 1
        if library.index_from_cache:
            await library.refresh()  # the views as the server has them now
        try:
            chosen = await chosen_archives(library, patterns)
        except NothingToWarm as exc:
            print(f"lrrfs: {exc}", file=out)
            return 1
        complete = True
        for archive in chosen:
            complete = await _warm_one(library, library.disk, archive, out) and complete
            if archives:
                await _warm_archive_file(library, archive, out)
        return 0 if complete else 1
    finally:
        if library.disk is not None:
            library.disk.close()  # writes what is queued, then stops its writer
        await client.aclose()


async def _warm_one(library: Library, disk: DiskCache, archive: Archive, out: TextIO) -> bool:
    """Warm one archive, pinned; True if it is then readable offline."""
    pages = await library.pages(archive.arcid)
    keys = library.archive_keys(archive)
    blobs = [("pages", keys.page_list), ("thumb", keys.thumbnail)]
    blobs += [("page", page_key(keys.page_prefix, page.ref.path)) for page in pages]
    blobs += [("file", keys.file)] if keys.file is not None else []
    with disk.pinned(blobs):
        await library.archive_file(archive.arcid)  # old servers: its name and size, cached
        for index in range(len(pages)):
            await library.warm_page(archive.arcid, index)
            out.write(f"\r{archive.name}: {index + 1}/{len(pages)} pages")
            out.flush()
        try:
            await library.thumbnail(archive.arcid)
        except LrrError as exc:
            out.write(f" (no thumbnail: {exc})")
        await trio.to_thread.run_sync(disk.wait_written, WRITE_WAIT)
        held = await trio.to_thread.run_sync(holding, disk, keys)
    if held.readable_offline:
        out.write(f"\r{archive.name}: {len(pages)} pages cached, readable offline\n")
    else:
        out.write(f"\r{archive.name}: NOT all cached: {_missing(held)}\n")
    return held.readable_offline


def _missing(held: Holding) -> str:
    parts = []
    if held.pages is None or held.pages_cached < held.pages:
        parts.append(f"{held.pages_cached}/{held.pages or '?'} pages")
    if not held.thumbnail:
        parts.append("no thumbnail (the server has none yet?)")
    if not held.file_named:
        parts.append("no file name")
    return ", ".join(parts) or "?"


async def _warm_archive_file(library: Library, archive: Archive, out: TextIO) -> None:
    """Read the whole archive file through a reader, so that its blocks are stored; wait
    for the disk whenever the write queue fills (a full queue drops blocks)."""
    disk = library.archive_files
    assert disk is not None
    reader = await library.open_archive(archive.arcid)
    try:
        offset = 0
        while offset < reader.size:
            offset += len(await reader.read(offset, ARCHIVE_STEP))
            if disk.room() < QUEUE_ROOM:
                await trio.to_thread.run_sync(disk.drain, library.client.timeout)
            out.write(f"\r{archive.name}: {offset >> 20}/{reader.size >> 20} MiB of the archive")
            out.flush()
    finally:
        await reader.aclose()
    await trio.to_thread.run_sync(disk.drain, library.client.timeout)
    out.write(f"\r{archive.name}: archive file cached ({reader.size / (1 << 20):.1f} MiB)\n")


def warm(
    options: MountOptions, patterns: list[str], out: TextIO = sys.stderr, archives: bool = False
) -> int:
    try:
        return trio.run(_warm, options, patterns, out, archives)
    except (MountError, LrrError) as exc:
        print(f"lrrfs: {exc}", file=out)
        return 1


async def _show(options: MountOptions, out: TextIO) -> int:
    """What the disk cache holds, per archive (from the cache alone: no request)."""
    # Looking changes nothing: no request (offline), no eviction (no cap to keep).
    looking = replace(options, offline=Mode.FORCED, disk_cache_bytes=NO_CAP)
    client, library = await connect(looking, doing="show")
    try:
        disk = library.disk
        if disk is None:
            print("lrrfs: the disk cache is off (--cache-size 0)", file=out)
            return 1
        keys = library.all_archive_keys()
        held = await trio.to_thread.run_sync(lambda: holdings(disk, keys))
        used = await trio.to_thread.run_sync(lambda: sum(e.stat().st_size for e in disk.blobs()))
    finally:
        if library.disk is not None:
            library.disk.close()
        await client.aclose()
    for item in held:
        pages = f"{item.pages_cached}/{item.pages}" if item.pages is not None else "-"
        ready = "offline" if item.readable_offline else "partly"
        blocks = item.file_blocks
        file = (
            "-"
            if blocks is None
            else "whole"
            if file_complete(item)
            else f"{blocks[0]}/{blocks[1]}"
        )
        print(f"{_mib(item.bytes):>9}  {pages:>9} pages  {ready:<7}  file {file:<9}  {item.title}",
              file=out)  # fmt: skip
    ready_count = sum(h.readable_offline for h in held)
    print(
        f"{_mib(used)} held of {_mib(options.disk_cache_bytes)}: "
        f"{len(held)} of {len(library)} archives, "
        f"{ready_count} readable offline; {_mib(used - sum(h.bytes for h in held))} in "
        "archive lists and blobs of archives gone from the server",
        file=out,
    )
    return 0


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def show(options: MountOptions, out: TextIO = sys.stdout) -> int:
    try:
        return trio.run(_show, options, out)
    except (MountError, LrrError) as exc:
        print(f"lrrfs: {exc}", file=sys.stderr)
        return 1


def clear(url: str | None, cache_dir: Path | None, out: TextIO = sys.stdout) -> int:
    """Delete one server's cache (or every server's when `url` is None). A server's spool
    folder stays: copies into a mount under way, and files the server never got (`unsent/`),
    are the user's, not a cache."""
    root = cache_dir or default_cache_root()
    target = root / server_folder_name(url) if url else root
    if not target.exists():
        print(f"lrrfs: nothing cached in {target}", file=out)
        return 0
    servers = [target] if url else [p for p in target.iterdir() if p.is_dir()]
    size = 0
    kept: list[Path] = []
    for folder in servers:
        for entry in list(folder.iterdir()):
            if entry.name == SPOOL_FOLDER and _holds_files(entry):
                kept.append(entry)
                continue
            size += _remove(entry)
        with contextlib.suppress(OSError):
            folder.rmdir()  # empty now, unless a spool folder stays
    if not url:
        for entry in list(target.iterdir()):
            if entry.is_file():
                size += _remove(entry)
        with contextlib.suppress(OSError):
            target.rmdir()
    print(f"lrrfs: removed the cache in {target} ({size / (1 << 20):.1f} MiB)", file=out)
    for folder in kept:
        print(f"lrrfs: kept {folder}: files copied into a mount that the server has not got",
              file=out)  # fmt: skip
    return 0


def _holds_files(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() for p in folder.rglob("*"))


def _remove(path: Path) -> int:
    """Delete a file or a folder; the bytes it held."""
    if path.is_dir() and not path.is_symlink():
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        shutil.rmtree(path)
        return size
    size = path.lstat().st_size
    path.unlink()
    return size
