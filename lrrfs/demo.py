"""`lrrfs demo`: a sample library, served on loopback and mounted, to try lrrfs at once.

The demo makes real archives with real images, starts the bundled
LANraragi-compatible server on a free loopback port, mounts it, says what to
try, and on Ctrl-C unmounts and stops everything: the server, the mount (a busy
one is detached lazily, naming the programs in it) and its temp folder, which
holds the demo's disk cache and log too. `--tour` walks the mount with ordinary
commands instead of waiting, then cleans up.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MOUNT_TIMEOUT = 60.0  # seconds for the mount to answer
STOP_TIMEOUT = 20.0  # seconds for a child to end after SIGTERM


def start_server(library: Path, key_file: Path) -> tuple[subprocess.Popen[str], str]:
    """Start `lrrfs demo-server` on a free loopback port; return it and its URL."""
    server = subprocess.Popen(
        [sys.executable, "-m", "lrrfs", "demo-server", "--library", str(library),
         "--port", "0", "--api-key-file", str(key_file)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ctrl-C is the demo's to handle, not the server's
    )  # fmt: skip
    assert server.stdout is not None
    line = server.stdout.readline().strip()
    if "listening on " not in line:
        stop_process(server)
        raise SystemExit(f"lrrfs demo: the demo server did not start ({line!r})")
    return server, line.rsplit(" ", 1)[-1]


def start_mount(
    url: str, mountpoint: Path, key_file: Path, workdir: Path
) -> subprocess.Popen[bytes] | None:
    """Mount in a child process of the demo's (so that it knows what to stop), with the
    demo's own disk cache and log; None if it did not come up (the log says why)."""
    log = workdir / "lrrfs.log"
    mount = subprocess.Popen(
        [sys.executable, "-m", "lrrfs", "mount", url, str(mountpoint), "-f",
         "--api-key-file", str(key_file), "--refresh-interval", "10",
         "--log-file", str(log), "--cache-dir", str(workdir / "cache")],
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while not _answers(mountpoint):
        if mount.poll() is not None or time.monotonic() > deadline:
            stop_process(mount)
            text = log.read_text(errors="replace") if log.exists() else ""
            print(f"lrrfs demo: the mount did not come up:\n{text}", file=sys.stderr)
            return None
        time.sleep(0.1)
    return mount


def _answers(mountpoint: Path) -> bool:
    try:
        os.listdir(mountpoint)
    except OSError:
        return False
    return os.path.ismount(mountpoint)


def stop_process(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def programs_using(mountpoint: Path) -> list[str]:
    """Programs whose folder or open files are in the mount ("bash (pid 123)")."""
    top = os.path.realpath(mountpoint)
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            links = [f"/proc/{entry.name}/cwd", f"/proc/{entry.name}/root"]
            links += [f"/proc/{entry.name}/fd/{fd}" for fd in os.listdir(f"/proc/{entry.name}/fd")]
            paths = [os.readlink(link) for link in links]
            name = Path(f"/proc/{entry.name}/comm").read_text().strip()
        except OSError:
            continue  # gone meanwhile, or another user's
        if any(path == top or path.startswith(top + "/") for path in paths):
            found.append(f"{name} (pid {entry.name})")
    return found


def unmount(mountpoint: Path) -> None:
    """Unmount; a busy mount (a shell in it) is detached lazily, saying who holds it."""
    done = subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True)
    if done.returncode == 0 or not os.path.ismount(mountpoint):
        return
    holders = ", ".join(programs_using(mountpoint)) or "a program"
    print(
        f"lrrfs demo: {mountpoint} is in use by {holders}: detached now; "
        "it is gone for them too (their next look in it fails)"
    )
    subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)


def lrrfs_command() -> str:
    """How to call lrrfs from a shell: the name if the PATH finds it, else its path."""
    script = Path(sys.executable).parent / "lrrfs"
    if shutil.which("lrrfs"):
        return "lrrfs"
    return str(script) if script.exists() else f"{sys.executable} -m lrrfs"


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
  {lrrfs_command()} status
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
    server = mount = None
    try:
        library = workdir / "library"
        print(f"lrrfs demo: writing a sample library to {library} ...")
        make_sample_library(library, large_mb=large_mb)
        key_file = workdir / "api-key"
        key_file.write_text(secrets.token_hex(16))
        key_file.chmod(0o600)
        server, url = start_server(library, key_file)
        mountpoint.mkdir(parents=True, exist_ok=True)
        mount = start_mount(url, mountpoint, key_file, workdir)
        if mount is None:
            return 1
        if tour_only:
            tour(mountpoint, library)
            return 0
        print(_instructions(mountpoint, url), flush=True)
        while os.path.ismount(mountpoint) and mount.poll() is None:
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0  # the way to stop it
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the clean-up runs to its end
        if mount is not None:
            print("\nlrrfs demo: stopping", flush=True)
            unmount(mountpoint)
            stop_process(mount)
        if server is not None:
            stop_process(server)
        shutil.rmtree(workdir, ignore_errors=True)  # the library, the key, the cache, the log
        signal.signal(signal.SIGINT, signal.default_int_handler)
