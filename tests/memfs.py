"""The smallest pyfuse3 file system: a folder's files served from memory, read-only.

    python -m tests.memfs FOLDER MOUNTPOINT

The benchmark mounts it beside lrrfs to show the floor of any Python FUSE file
system on this machine: what opening, reading and closing a file costs when
the handlers do nothing but hand out bytes already in memory.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import sys
from pathlib import Path

import pyfuse3
import trio

from lrrfs.fs.readahead import set_read_ahead


class MemoryFiles(pyfuse3.Operations):
    def __init__(self, folder: Path) -> None:
        super().__init__()
        files = sorted(p for p in folder.iterdir() if p.is_file())
        self.names = [p.name.encode() for p in files]
        self.data = [p.read_bytes() for p in files]
        self.inodes = {name: pyfuse3.ROOT_INODE + 1 + i for i, name in enumerate(self.names)}

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None):  # type: ignore[no-untyped-def]
        index = inode - pyfuse3.ROOT_INODE - 1
        return attributes(inode, len(self.data[index]) if index >= 0 else 0)

    async def lookup(self, parent: int, name: bytes, ctx: pyfuse3.RequestContext):  # type: ignore[no-untyped-def]
        if parent != pyfuse3.ROOT_INODE or name not in self.inodes:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self.getattr(self.inodes[name])

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return inode

    async def readdir(self, fh: int, start: int, token: pyfuse3.ReaddirToken) -> None:
        for index in range(start, len(self.names)):
            attr = await self.getattr(pyfuse3.ROOT_INODE + 1 + index)
            if not pyfuse3.readdir_reply(token, self.names[index], attr, index + 1):
                return

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        return self.data[fh - pyfuse3.ROOT_INODE - 1][offset : offset + size]


def attributes(inode: int, size: int) -> pyfuse3.EntryAttributes:
    """The root folder, or a read-only file of `size` bytes; kept a minute."""
    attr = pyfuse3.EntryAttributes()
    attr.st_ino = inode
    attr.entry_timeout = attr.attr_timeout = 60
    if inode == pyfuse3.ROOT_INODE:
        attr.st_mode = stat.S_IFDIR | 0o555
    else:
        attr.st_mode = stat.S_IFREG | 0o444
        attr.st_size = size
    return attr


async def same_read_ahead(mountpoint: str) -> None:
    """The read-ahead lrrfs sets (once the kernel has the mount), so that the floor's reads
    go through the kernel as lrrfs's do."""
    await trio.to_thread.run_sync(os.stat, mountpoint)
    await trio.to_thread.run_sync(set_read_ahead, Path(mountpoint))


async def serve(mountpoint: str) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(same_read_ahead, mountpoint)

            async def stop() -> None:
                async for _ in signals:
                    pyfuse3.terminate()
                    return

            nursery.start_soon(stop)
            await pyfuse3.main(min_tasks=4, max_tasks=64)
            nursery.cancel_scope.cancel()


def main() -> None:
    folder, mountpoint = Path(sys.argv[1]), sys.argv[2]
    pyfuse3.init(MemoryFiles(folder), mountpoint, set(pyfuse3.default_options) | {"fsname=memfs"})
    try:
        trio.run(serve, mountpoint)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
