"""Shared fixtures: the LRR-compatible test server and real FUSE mounts, as subprocesses.

Every server and mount a test starts is stopped in a `finally`, by its own PID;
mounts are unmounted with `fusermount3 -u` (then `-u -z` if busy).
"""

from __future__ import annotations

import atexit
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

KEY = "lrr-test-key"
PYTHON = sys.executable
START_TIMEOUT = 60.0


@dataclass
class Server:
    """A running `lrrfs demo-server` (started with --faults)."""

    url: str
    library: Path
    process: subprocess.Popen
    key: str | None
    generation: str = "0.9"
    workdir: Path | None = None
    extra: tuple[str, ...] = ()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def restart(self) -> Server:
        """A new server process on the same port, library and settings."""
        self.stop()
        assert self.workdir is not None
        return start_server(
            self.library, self.workdir, generation=self.generation, key=self.key,
            extra=self.extra, port=self.port,
        )  # fmt: skip

    def page_urls(self, arcid: str) -> list[str]:
        """The page URLs as the server lists them (GET /files, or POST /extract on 0.7)."""
        with self.http() as client:
            if self.generation == "0.7":
                response = client.post(f"/api/archives/{arcid}/extract")
            else:
                response = client.get(f"/api/archives/{arcid}/files")
            response.raise_for_status()
            return [url.removeprefix(".") for url in response.json()["pages"]]

    def archive_file_name(self, entry: dict) -> str:
        """The archive's file name: from metadata, or the download's Content-Disposition."""
        if entry.get("filename") and entry.get("extension"):
            return f"{entry['filename']}.{entry['extension']}"
        with self.http() as client:
            response = client.head(f"/api/archives/{entry['arcid']}/download")
        disposition = response.headers.raw
        value = next(v for k, v in disposition if k.lower() == b"content-disposition")
        return value.decode().split('filename="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')

    def http(self, key: str | None = None) -> httpx.Client:
        headers = {}
        if key or self.key:
            token = base64.b64encode((key or self.key).encode()).decode()
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def get(self, path: str, **kwargs) -> httpx.Response:
        with self.http() as client:
            return client.get(path, **kwargs)

    def archives(self) -> list[dict]:
        return self.get("/api/archives").json()

    def faults(self, *, latency_ms: float = 0, rules: list[dict] | None = None) -> None:
        with self.http() as client:
            response = client.post(
                "/_lrrfs/faults", json={"latency_ms": latency_ms, "rules": rules or []}
            )
            response.raise_for_status()

    def clear_faults(self) -> None:
        with self.http() as client:
            client.delete("/_lrrfs/faults").raise_for_status()

    def requests(self) -> list[dict]:
        return self.get("/_lrrfs/requests").json()["requests"]

    def clear_requests(self) -> None:
        with self.http() as client:
            client.delete("/_lrrfs/requests").raise_for_status()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_server(
    library: Path,
    workdir: Path,
    *,
    generation: str = "0.9",
    key: str | None = KEY,
    extra: tuple[str, ...] = (),
    port: int = 0,
) -> Server:
    command = [
        PYTHON, "-m", "lrrfs", "demo-server", "--library", str(library), "--port", str(port),
        "--faults", "--api-generation", generation, "--thumbnail-delay", "0.3",
        "--missing-page-hang", "5", *extra,
    ]  # fmt: skip
    if key:
        key_file = workdir / f"server-key-{os.getpid()}-{time.monotonic_ns()}"
        key_file.write_text(key)
        key_file.chmod(0o600)
        command += ["--api-key-file", str(key_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if "listening on " not in line:
        process.kill()
        process.wait()
        raise RuntimeError(f"demo-server did not start: {line!r}")
    return Server(line.rsplit(" ", 1)[-1], library, process, key, generation, workdir, extra)


@dataclass
class Mount:
    """A running `lrrfs mount -f` on `path`."""

    path: Path
    process: subprocess.Popen
    log: Path
    args: list[str] = field(default_factory=list)

    def folders(self) -> list[Path]:
        """The archive folders at the top, sorted (not the views: their names start with @)."""
        return [self.path / name for name in archive_names(self.path)]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __enter__(self) -> Mount:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unmount()

    def unmount(self) -> None:
        if in_mount_table(self.path):
            done = subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True)
            if done.returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
        if self.process.poll() is None:
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()


def archive_names(path: Path) -> list[str]:
    """The archive folders' names at the top of a mount, sorted, without the views'."""
    return sorted(name for name in os.listdir(path) if not name.startswith("@"))


def served_pages(server: Server, title: str) -> list[bytes]:
    """Every page of an archive as the server's page API serves it, in reading order."""
    arcid = next(a["arcid"] for a in server.archives() if a["title"] == title)
    with server.http() as http:
        return [http.get(url).content for url in server.page_urls(arcid)]


def wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def in_mount_table(path: Path) -> bool:
    """Mounted, live or dead (os.path.ismount can say no for a dead FUSE mount)."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as table:
        return any(line.split()[4].replace("\\040", " ") == target for line in table)


def is_live_mount(path: Path) -> bool:
    """A mount that answers (a dead FUSE mount still looks like a mount point)."""
    try:
        os.listdir(path)
    except OSError:
        return False
    return os.path.ismount(path)


# Mounts started without `launch_mount` still never touch the user's disk cache.
TEST_CACHE_HOME = tempfile.mkdtemp(prefix="lrrfs-test-cache-")
atexit.register(shutil.rmtree, TEST_CACHE_HOME, ignore_errors=True)


def mount_env(key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LRR_API_KEY"}
    env["XDG_CACHE_HOME"] = TEST_CACHE_HOME
    if key:
        env["LRR_API_KEY"] = key
    return env


def start_mount(
    server: Server,
    mountpoint: Path,
    *,
    key: str | None = KEY,
    args: tuple[str, ...] = (),
    url: str | None = None,
) -> Mount:
    command = [
        PYTHON, "-m", "lrrfs", "mount", url or server.url, str(mountpoint), "-f",
        "--refresh-interval", "2", "--timeout", "20", *args,
    ]  # fmt: skip
    return launch_mount(command, mountpoint, mount_env(key))


def launch_mount(command: list[str], mountpoint: Path, env: dict[str, str]) -> Mount:
    """Run an `lrrfs mount -f` command line and wait until its mount answers."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    log = mountpoint.parent / f"{mountpoint.name}.log"
    # Each mount its own disk cache (tests count requests), never the user's; a test
    # that shares one says so with --cache-dir.
    env = {**env, "XDG_CACHE_HOME": str(mountpoint.parent / f"{mountpoint.name}.cache")}
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, stderr=log_file, env=env)
    mount = Mount(mountpoint, process, log, command)
    deadline = time.monotonic() + START_TIMEOUT
    while not is_live_mount(mountpoint):
        if process.poll() is not None or time.monotonic() > deadline:
            mount.unmount()
            raise RuntimeError(f"lrrfs mount did not come up:\n{mount.log_text()}")
        time.sleep(0.05)
    return mount


@pytest.fixture(scope="session")
def sample_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lrrfs.testserver.samples import make_sample_library

    library = tmp_path_factory.mktemp("library")
    make_sample_library(library, large_mb=40)
    return library


@pytest.fixture(scope="session", params=["0.9", "0.7"], ids=lambda g: f"lrr{g}")
def server(
    request: pytest.FixtureRequest,
    sample_library: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """The sample library served like a current (0.9) and an old (0.7) LANraragi."""
    with start_server(
        sample_library, tmp_path_factory.mktemp("server"), generation=request.param
    ) as running:
        yield running


@pytest.fixture(scope="module")
def mounted(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    """One mount of the sample library, shared by a module's read-only tests."""
    with start_mount(server, tmp_path_factory.mktemp("mnt") / "lrr") as mount:
        yield mount
