"""`lrrfs demo`: the README's first command ends in this."""

from __future__ import annotations

import os
import subprocess

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
