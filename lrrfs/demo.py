"""`lrrfs demo`: a sample library, served on loopback and mounted, to try lrrfs at once.

The demo makes real archives with real images, starts the bundled
LANraragi-compatible server on a free loopback port, mounts it, says what to
try, and on Ctrl-C unmounts and stops everything. `--tour` walks the mount
with ordinary commands instead of waiting, then cleans up.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER_START_TIMEOUT = 60.0


def start_server(library: Path, key_file: Path) -> tuple[subprocess.Popen[str], str]:
    """Start `lrrfs demo-server` on a free loopback port; return it and its URL."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lrrfs",
            "demo-server",
            "--library",
            str(library),
            "--port",
            "0",
            "--api-key-file",
            str(key_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline().strip()
    if "listening on " not in line:
        server.terminate()
        server.wait(10)
        raise SystemExit(f"lrrfs demo: the demo server did not start ({line!r})")
    return server, line.rsplit(" ", 1)[-1]


def _instructions(mountpoint: Path, url: str) -> str:
    return f"""
lrrfs demo: the sample library on {url} is mounted on {mountpoint}
Try, in another terminal:
  ls {mountpoint}
  ls -l "{mountpoint}/Simple Comic [Tester]"
  cat "{mountpoint}/Simple Comic [Tester]/metadata.json"
  ls -l {mountpoint}/@new {mountpoint}/@tags "{mountpoint}/@search/Comic"
  cp -r "{mountpoint}/Nested Folder Test" /tmp/
  rsync -a --include='*/' --include='*.zip' --include='*.cbz' --exclude='*' \\
      {mountpoint}/ /tmp/backup/
Press Ctrl-C here to unmount and stop.
"""


def tour(mountpoint: Path, library: Path) -> None:
    """Walk the mount like a user would, and check what it shows against the files served."""
    originals = {
        hashlib.sha256(path.read_bytes()).hexdigest()
        for path in library.rglob("*")
        if path.is_file()
    }
    names = sorted(os.listdir(mountpoint))
    print(f"$ ls {mountpoint}\n  " + "\n  ".join(names))
    for view in ("@new", "@tags"):
        print(f"{view}: " + ", ".join(sorted(os.listdir(mountpoint / view))))
    for folder in [name for name in names if not name.startswith("@")]:
        entries = sorted(os.listdir(mountpoint / folder))
        pages = [e for e in entries if e.split(".")[0].isdigit()]
        archives = set(entries) - set(pages) - {"metadata.json", "thumbnail.jpg"}
        print(f"{folder}: {len(pages)} pages, {', '.join(sorted(archives))}")
        for name in sorted(archives):
            served = hashlib.sha256((mountpoint / folder / name).read_bytes()).hexdigest()
            verdict = "matches the served file" if served in originals else "DIFFERS"
            print(f"  {name}: sha256 {served[:16]}... {verdict}")


def run_demo(mountpoint: Path, *, large_mb: int = 64, tour_only: bool = False) -> int:
    from .testserver.samples import make_sample_library

    workdir = Path(tempfile.mkdtemp(prefix="lrrfs-demo-"))
    server = None
    mounted = False
    try:
        library = workdir / "library"
        print(f"lrrfs demo: writing a sample library to {library} ...")
        make_sample_library(library, large_mb=large_mb)
        key = secrets.token_hex(16)
        key_file = workdir / "api-key"
        key_file.write_text(key)
        key_file.chmod(0o600)
        server, url = start_server(library, key_file)
        mountpoint.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "lrrfs",
                "mount",
                url,
                str(mountpoint),
                "--api-key-file",
                str(key_file),
                "--refresh-interval",
                "10",
                "--log-file",
                str(workdir / "lrrfs.log"),
            ],
            check=False,
        )
        if result.returncode != 0:
            return result.returncode
        mounted = True
        if tour_only:
            tour(mountpoint, library)
            return 0
        print(_instructions(mountpoint, url))
        with contextlib.suppress(KeyboardInterrupt):
            while os.path.ismount(mountpoint):
                time.sleep(1)
        print("\nlrrfs demo: stopping")
        return 0
    finally:
        if mounted:
            subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False)
        if server is not None:
            server.terminate()
            server.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)
