"""The pyfuse3 floor fed by curl: one file served while curl downloads it.

    python -m tests.curlfs URL SIZE NAME MOUNTPOINT   # headers for curl on stdin

The benchmark mounts it beside lrrfs for a cold `cat`: on opening, curl (the
server's fastest client) starts writing URL's body into a file in /dev/shm,
and each read waits until curl has written past its end, then hands out the
bytes straight from that file's memory (a shared map: no copy of ours). It is
the most any Python FUSE file system serving bytes as they arrive can reach
on this machine: curl and the kernel do all the moving, the handlers nothing
but wait and slice. Headers come on stdin, never in a command line (the API key).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import subprocess
import sys
import tempfile

import pyfuse3
import trio

from .memfs import attributes, serve

IN_MODIFY = 0x2


class CurlFile(pyfuse3.Operations):
    def __init__(self, url: str, size: int, name: bytes, headers: bytes) -> None:
        super().__init__()
        self.url, self.size, self.name, self.headers = url, size, name, headers
        self.folder = tempfile.TemporaryDirectory(dir="/dev/shm")
        self.target = os.path.join(self.folder.name, "download")
        self.curl: subprocess.Popen[bytes] | None = None
        self.memory: mmap.mmap | None = None
        self.fd = -1
        self.written = trio.Event()  # set (and renewed) whenever curl writes

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None):  # type: ignore[no-untyped-def]
        return attributes(inode, self.size)

    async def lookup(self, parent: int, name: bytes, ctx: pyfuse3.RequestContext):  # type: ignore[no-untyped-def]
        if parent != pyfuse3.ROOT_INODE or name != self.name:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self.getattr(pyfuse3.ROOT_INODE + 1)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if self.curl is None:
            self._start()
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    def _start(self) -> None:
        # The file made whole and mapped first; curl writes it in order through its
        # stdout, which shares our descriptor's offset: bytes below it are in.
        self.fd = os.open(self.target, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self.fd, self.size)
        self.memory = mmap.mmap(self.fd, self.size, prot=mmap.PROT_READ)
        libc = ctypes.CDLL(None, use_errno=True)
        watch = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if watch < 0 or libc.inotify_add_watch(watch, self.target.encode(), IN_MODIFY) < 0:
            raise OSError(ctypes.get_errno(), "inotify")
        trio.lowlevel.spawn_system_task(self._follow, watch)
        self.curl = subprocess.Popen(
            ["curl", "-sSf", "-H", "@-", self.url], stdin=subprocess.PIPE, stdout=self.fd
        )
        assert self.curl.stdin is not None
        self.curl.stdin.write(self.headers)
        self.curl.stdin.close()

    async def _follow(self, watch: int) -> None:
        """Wake the waiting reads at each of curl's writes (inotify: no polling delay)."""
        try:
            while True:
                await trio.lowlevel.wait_readable(watch)
                os.read(watch, 1 << 16)
                self.written.set()
                self.written = trio.Event()
        finally:
            os.close(watch)

    async def read(self, fh: int, offset: int, size: int) -> memoryview:  # type: ignore[override]
        assert self.curl is not None and self.memory is not None
        end = min(offset + size, self.size)
        while os.lseek(self.fd, 0, os.SEEK_CUR) < end:
            if self.curl.poll() is not None:
                raise pyfuse3.FUSEError(errno.EIO)  # curl ended (failed) short of the read
            with trio.move_on_after(0.1):  # curl's end writes nothing: look again then
                await self.written.wait()
        return memoryview(self.memory)[offset:end]

    def close(self) -> None:
        if self.curl is not None and self.curl.poll() is None:
            self.curl.kill()
            self.curl.wait()
        self.folder.cleanup()


def main() -> None:
    url, size, name, mountpoint = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    files = CurlFile(url, size, name.encode(), sys.stdin.buffer.read())
    pyfuse3.init(files, mountpoint, set(pyfuse3.default_options) | {"fsname=curlfs"})
    try:
        trio.run(serve, mountpoint)
    finally:
        pyfuse3.close(unmount=True)
        files.close()


if __name__ == "__main__":
    main()
