"""`lrrfs demo`: the README's first command ends in this."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from .conftest import PYTHON


def test_demo_tour_mounts_walks_and_cleans_up(tmp_path):
    mountpoint = tmp_path / "demo"
    done = subprocess.run(
        [PYTHON, "-m", "lrrfs", "demo", str(mountpoint), "--tour", "--large-mb", "4"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Nested Folder Test" in done.stdout
    assert "@new: " in done.stdout and "Simple Comic [Tester]" in done.stdout
    assert "matches the served file" in done.stdout and "DIFFERS" not in done.stdout
    assert not os.path.ismount(mountpoint)


def test_ctrl_c_stops_the_demo_cleanly_even_with_a_program_in_the_mount(tmp_path):
    """Ctrl-C while a program sits in the mount: exit 0, no traceback, the mount detached
    (naming the program), the mount and server processes ended, the temp folder gone."""
    mountpoint = tmp_path / "demo"
    demo = subprocess.Popen(
        [PYTHON, "-m", "lrrfs", "demo", str(mountpoint), "--large-mb", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    squatter = None
    try:
        assert demo.stdout is not None
        lines = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any("Ctrl-C" in line for line in lines):
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
        assert any("Ctrl-C" in line for line in lines), "".join(lines)
        written = next(line for line in lines if "writing a sample library" in line)
        workdir = Path(written.split()[-2])
        children = _children(demo.pid)
        squatter = subprocess.Popen(["sleep", "300"], cwd=mountpoint)  # like a shell cd'd in
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=60)
        assert demo.returncode == 0, err
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
        assert "sleep" in out and "in use" in out, out
        assert not os.path.ismount(mountpoint)
        assert not workdir.exists()
        assert children and all(not _alive(pid) for pid in children)
    finally:
        if squatter is not None:
            squatter.kill()
            squatter.wait()
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
