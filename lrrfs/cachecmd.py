"""`lrrfs cache warm` and `lrrfs cache clear`: fill the disk cache ahead of time, or empty it.

Warming fetches the pages and thumbnails of the archives named into the same disk cache the
mounts of that server use, so that reading them later (on a train, with the NAS asleep) costs
no request. It is not reading: it sends no reading progress. With `--archives` it fetches the
archive files too, block by block, as a mount's reads would store them (a backup or a comic
reader opening the file then reads the disk).
"""

from __future__ import annotations

import shutil
import sys
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TextIO

import trio

from .client import LrrError
from .library import Archive, Library
from .library.diskcache import default_cache_root, server_folder_name
from .mount import MountError, MountOptions, connect


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


async def _warm(options: MountOptions, patterns: list[str], out: TextIO, archives: bool) -> int:
    client, library = await connect(options, doing="reach")
    try:
        if library.disk is None:
            print("lrrfs: the disk cache is off (--cache-size 0): nothing to warm", file=out)
            return 1
        chosen = matching(library, patterns)
        if not chosen:
            print(f"lrrfs: no archive matches {' '.join(map(repr, patterns))}", file=out)
            return 1
        for archive in chosen:
            await _warm_one(library, archive, out)
            if archives:
                await _warm_archive_file(library, archive, out)
        return 0
    finally:
        if library.disk is not None:
            library.disk.close()  # writes what is queued, then stops its writer
        await client.aclose()


async def _warm_one(library: Library, archive: Archive, out: TextIO) -> None:
    pages = await library.pages(archive.arcid)
    for index in range(len(pages)):
        await library.warm_page(archive.arcid, index)
        out.write(f"\r{archive.name}: {index + 1}/{len(pages)} pages")
        out.flush()
    try:
        await library.thumbnail(archive.arcid)
    except LrrError as exc:
        out.write(f" (no thumbnail: {exc})")
    out.write(f"\r{archive.name}: {len(pages)} pages cached\n")


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


def clear(url: str | None, cache_dir: Path | None, out: TextIO = sys.stdout) -> int:
    """Delete one server's cache (or every server's when `url` is None)."""
    root = cache_dir or default_cache_root()
    target = root / server_folder_name(url) if url else root
    if not target.exists():
        print(f"lrrfs: nothing cached in {target}", file=out)
        return 0
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    shutil.rmtree(target)
    print(f"lrrfs: removed {target} ({size / (1 << 20):.1f} MiB)", file=out)
    return 0
