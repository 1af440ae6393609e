"""The peer a user would otherwise pick, for the benchmark: `rclone mount` (VFS cache, full
mode) of the same archive files served as plain files by nginx, both on 127.0.0.1.

Both come from Debian; they are installed here if missing (as root). Latency is added per
request by a small proxy in front of nginx, as the test server adds it for lrrfs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .conftest import wait_for


def program(name: str, package: str) -> str:
    """The path of a Debian program, installed first if missing and we are root."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
                       check=False, stdout=subprocess.DEVNULL)  # fmt: skip
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise SystemExit(f"the peer rows need {name}: apt-get install {package}")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        autoindex on;
    }}
}}
"""


@contextlib.contextmanager
def nginx(folder: Path, workdir: Path) -> Iterator[str]:
    """nginx serving `folder` as plain files; yields its URL."""
    work = workdir / "nginx"
    work.mkdir(exist_ok=True)
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(work=work, port=port, root=folder))
    process = subprocess.Popen([program("nginx", "nginx-light"), "-c", str(conf), "-p", str(work)])
    try:
        url = f"http://127.0.0.1:{port}/"
        if not wait_for(lambda: _answers(port), 10):
            raise RuntimeError("nginx did not start")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


@contextlib.contextmanager
def delayed(url: str, latency_ms: int) -> Iterator[str]:
    """`url` behind a proxy that holds each request `latency_ms` before passing it on;
    the answers flow back at once. With no latency, `url` itself."""
    if not latency_ms:
        yield url
        return
    target = int(url.rstrip("/").rsplit(":", 1)[1])
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def pump(source: socket.socket, sink: socket.socket, delay: float) -> None:
        buffer = bytearray(1 << 20)
        with contextlib.suppress(OSError):
            while count := source.recv_into(buffer):
                if delay:
                    time.sleep(delay)
                sink.sendall(memoryview(buffer)[:count])
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", target))
                for pair in ((client, upstream, latency_ms / 1000), (upstream, client, 0.0)):
                    threading.Thread(target=pump, args=pair, daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop.set()
        listener.close()


@contextlib.contextmanager
def rclone_mount(url: str, workdir: Path, name: str) -> Iterator[Path]:
    """`rclone mount :http:` of `url` with a fresh VFS cache (full mode); yields the path."""
    base = workdir / f"rclone-{name}"
    mountpoint, cache = base / "mnt", base / "cache"
    mountpoint.mkdir(parents=True)
    command = [program("rclone", "rclone"), "mount", ":http:", str(mountpoint),
               "--http-url", url, "--vfs-cache-mode", "full", "--cache-dir", str(cache),
               "--read-only", "--config", "/dev/null"]  # fmt: skip
    log = (base / "rclone.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_for(lambda: os.path.ismount(mountpoint), 30):
            raise RuntimeError(f"rclone did not mount: see {base / 'rclone.log'}")
        yield mountpoint
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True)
        if process.poll() is None:
            process.terminate()
        process.wait(20)
        log.close()
        shutil.rmtree(base, ignore_errors=True)
