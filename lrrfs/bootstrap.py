"""Set up lrrfs from a clone on Debian/Ubuntu, then run the demo or the tests.

    python3 -m lrrfs.bootstrap demo [MOUNTPOINT]   # install, then `lrrfs demo`
    python3 -m lrrfs.bootstrap test [PYTEST ARGS]   # install, then ruff + mypy + pytest

Standard library only: it runs before anything is installed. It installs the
Debian packages that are missing (as root, with apt-get), makes a virtual
environment in .venv beside pyproject.toml, installs lrrfs into it and links the
`lrrfs` command into /usr/local/bin (as root; else ~/.local/bin).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
# fuse3 + libfuse3-dev + pkg-config + gcc + Python headers build pyfuse3; rsync, vim and
# nano are programs the tests drive through the mount; systemd gives systemd-analyze (the
# units are verified) and mount gives mount(8) (the fstab test mounts through mount.fuse3);
# libglib2.0-bin gives gio, the copy program of GNOME's file managers (tests copy with it).
DEBIAN_PACKAGES = ["fuse3", "libfuse3-dev", "pkg-config", "gcc", "python3-dev", "python3-venv",
                   "rsync", "vim", "nano", "systemd", "mount", "libglib2.0-bin"]  # fmt: skip


def missing_packages() -> list[str]:
    if not shutil.which("dpkg-query"):
        return []
    missing = []
    for package in DEBIAN_PACKAGES:
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
        )
        if "install ok installed" not in status.stdout:
            missing.append(package)
    return missing


def install_debian_packages() -> None:
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"bootstrap: please install as root: apt-get install {' '.join(missing)}")
    print(f"bootstrap: installing {' '.join(missing)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=env,
    )


def install_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"bootstrap: creating {VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-e", f"{ROOT}[demo,test]"],
        check=True,
    )  # fmt: skip
    return python


def link_command() -> None:
    """Put `lrrfs` where a shell finds it: /usr/local/bin as root, else ~/.local/bin.

    A link to the virtual environment's script (which runs with its own Python); a file
    of that name that is not a link is someone else's, and stays.
    """
    script = VENV / "bin" / "lrrfs"
    folder = Path("/usr/local/bin") if os.geteuid() == 0 else Path.home() / ".local" / "bin"
    link = folder / "lrrfs"
    if link.exists() and not link.is_symlink():
        print(f"bootstrap: {link} is not lrrfs's: run {script}", flush=True)
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / ".lrrfs.link"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(script)
        os.replace(temporary, link)
    except OSError as exc:
        print(f"bootstrap: cannot link {link} ({exc.strerror}): run {script}", flush=True)
        return
    found = shutil.which("lrrfs")
    hint = "" if found == str(link) else f" ({folder} is not on your PATH: add it, or run {link})"
    print(f"bootstrap: the lrrfs command is {link}{hint}", flush=True)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    install_debian_packages()
    python = install_venv()
    link_command()
    os.chdir(ROOT)
    if argv[0] == "demo":
        mountpoint = argv[1] if len(argv) > 1 else "/tmp/lrrfs-demo"
        return subprocess.run(
            [str(python), "-m", "lrrfs", "demo", mountpoint, *argv[2:]]
        ).returncode
    lint = subprocess.run([str(python), "-m", "ruff", "check", "lrrfs", "tests"])
    if lint.returncode != 0:
        return lint.returncode
    types = subprocess.run([str(python), "-m", "mypy", "lrrfs"])  # strict: pyproject.toml
    if types.returncode != 0:
        return types.returncode
    return subprocess.run([str(python), "-m", "pytest", *argv[1:]]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
