"""sshfs-style invocation and /etc/fstab: `lrrfs URL MOUNTPOINT -o ...`, and real
`mount -T FSTAB` / `umount` through mount(8) and mount.fuse3.

mount(8) clears PATH before it runs mount.fuse3, whose /bin/sh then finds `lrrfs` only in
the shell's default PATH (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin).
Putting .venv/bin first on PATH is not enough, so the fstab test runs in a private mount
namespace (unshare) where a folder holding an `lrrfs` link is bound over the first of those
folders: the machine's own folders are never touched. Checks inside the namespace run this
file as a script (`python -m tests.test_fstab MOUNTPOINT`), which prints what it sees.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import KEY, PYTHON, Server, archive_names, wait_for
from .test_config import books, keyed_server, lrrfs_env, run_lrrfs, secrets_of, write_key_file

__all__ = ["books", "keyed_server"]  # module fixtures shared with test_config

REPOSITORY = Path(__file__).resolve().parent.parent
LRRFS = Path(sys.executable).parent / "lrrfs"
SHELL_DEFAULT_PATH = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]


# -- what a mount looks like from inside (also run as a script inside the namespace) ----------


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def probe(mountpoint: Path) -> dict:
    """Everything the tests check about a mount, as JSON-able values."""
    from lrrfs.status import lrrfs_mounts, mount_state

    folder = mountpoint / archive_names(mountpoint)[0]
    page = folder / "001.jpg"
    try:
        with open(folder / "metadata.json", "r+b"):
            write_error = 0
    except OSError as exc:
        write_error = exc.errno or 0
    entry = next(e for e in lrrfs_mounts() if e.mountpoint == mountpoint)
    state = mount_state(entry)
    findmnt = subprocess.run(
        ["findmnt", "-J", "-o", "SOURCE,FSTYPE,OPTIONS", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    return {
        "listing": archive_names(mountpoint),
        "page_bytes": len(page.read_bytes()),
        "page_mode": stat.S_IMODE(page.stat().st_mode),
        "metadata_mode": stat.S_IMODE((folder / "metadata.json").stat().st_mode),
        "owner": [page.stat().st_uid, page.stat().st_gid],
        "write_error": write_error,
        "findmnt": json.loads(findmnt.stdout)["filesystems"][0],
        "status": state,
        "cmdline": cmdline(state["pid"]).decode(errors="replace"),
    }


def run_probe(mountpoint: Path, env: dict[str, str]) -> dict:
    """probe() in a process of its own, with the mount's environment (its status folder)."""
    done = subprocess.run(
        [PYTHON, "-m", "tests.test_fstab", str(mountpoint)],
        capture_output=True, text=True, env=env, cwd=REPOSITORY, timeout=60, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


# -- sshfs-style invocation, no mount(8) ---------------------------------------------------------


def test_sshfs_style_invocation_with_fuse_and_lrrfs_options(
    keyed_server: Server, tmp_path: Path
) -> None:
    mountpoint = tmp_path / "lrr"
    mountpoint.mkdir()
    key_file = write_key_file(tmp_path / "key")
    log = tmp_path / "log"
    options = (
        f"rw,dev,suid,_netdev,nofail,noauto,user,x-systemd.automount,comment=books,ro,"
        f"uid=1234,gid=2345,umask=027,allow_other,noexec,api_key_file={key_file},"
        f"memory_cache=16,log_file={log},verbose"
    )
    env = lrrfs_env(tmp_path)
    done = run_lrrfs(keyed_server.url, str(mountpoint), "-o", options, env=env)
    assert done.returncode == 0, done.stderr
    try:
        seen = run_probe(mountpoint, env)
    finally:
        assert run_lrrfs("umount", str(mountpoint), env=env).returncode == 0
    assert seen["listing"] == ["Book 0", "Book 1"]
    assert seen["page_mode"] == seen["metadata_mode"] == 0o440  # ro: metadata.json too
    assert seen["owner"] == [1234, 2345]
    assert seen["write_error"] == errno.EROFS  # ro: the kernel refuses every save
    kernel = seen["findmnt"]["options"].split(",")
    assert {"noexec", "nosuid", "nodev", "allow_other"} <= set(kernel)
    assert seen["findmnt"]["fstype"] == "fuse.lrrfs"
    assert seen["findmnt"]["source"] == keyed_server.url
    assert seen["status"]["cache_max_bytes"] == 16 << 20
    for text in (seen["cmdline"].encode(), log.read_bytes(), done.stdout.encode()):
        assert not any(secret in text for secret in secrets_of())
    assert b"HTTP Request: GET" in log.read_bytes()  # verbose took effect


# -- mount -T FSTAB through mount(8) and mount.fuse3 -----------------------------------------------


def shell_path_dir() -> str:
    return next(d for d in SHELL_DEFAULT_PATH if os.path.isdir(d))


def lrrfs_in_shell_default_path() -> bool:
    return any(os.access(f"{d}/lrrfs", os.X_OK) for d in SHELL_DEFAULT_PATH)


def mount_env(tmp_path: Path) -> dict[str, str]:
    return lrrfs_env(tmp_path, PATH=f"{LRRFS.parent}:{os.environ['PATH']}")


def test_mount_finds_lrrfs_only_in_the_shells_default_path(tmp_path: Path) -> None:
    """Why bootstrap (and the guide) link lrrfs into /usr/local/bin: PATH does not reach
    mount.fuse3. With the link, mount(8) runs lrrfs (which finds no server at port 9);
    without it, the shell does not find lrrfs at all."""
    mountpoint = tmp_path / "lrr"
    mountpoint.mkdir()
    done = subprocess.run(
        ["mount", "-t", "fuse.lrrfs", "http://127.0.0.1:9", str(mountpoint)],
        capture_output=True,
        text=True,
        env=mount_env(tmp_path),
        timeout=60,
    )
    assert done.returncode != 0
    if lrrfs_in_shell_default_path():
        assert "cannot mount http://127.0.0.1:9" in done.stderr, done.stderr
    else:
        assert "lrrfs: not found" in done.stderr, done.stderr
    assert not os.path.ismount(mountpoint)


def write_fstab(tmp_path: Path, server: Server) -> tuple[Path, Path, Path, Path]:
    """Two lines: a URL with FUSE and lrrfs options, and a profile from a config file."""
    key_file = write_key_file(tmp_path / "key")
    config = tmp_path / "lrrfs.toml"
    config.write_text(f'[books]\nurl = "{server.url}"\napi_key_file = "{key_file}"\n')
    by_url, by_profile, log = tmp_path / "by-url", tmp_path / "by-profile", tmp_path / "log"
    by_url.mkdir()
    by_profile.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(
        f"# lrrfs test fstab\n"
        f"{server.url} {by_url} fuse.lrrfs _netdev,nofail,ro,uid=1234,umask=077,allow_other,"
        f"api_key_file={key_file},log_file={log},verbose,x-systemd.automount,comment=x 0 0\n"
        f"books {by_profile} fuse.lrrfs _netdev,config={config},log_file={log} 0 0\n"
    )
    return fstab, by_url, by_profile, log


def namespace_script(tmp_path: Path, fstab: Path, mountpoints: list[Path]) -> str:
    """Mount everything in FSTAB, probe each mount, mount -a again, unmount; in a namespace."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "lrrfs").symlink_to(LRRFS)
    out = tmp_path / "out"
    out.mkdir()
    q = shlex.quote
    lines = [
        "set -e",
        f"trap 'for m in {' '.join(q(str(m)) for m in mountpoints)}; do "
        'umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done\' EXIT',
        f"mount --bind {q(str(bin_dir))} {q(shell_path_dir())}",
        f"mount -T {q(str(fstab))} -a > {out}/mount.txt 2>&1",
    ]
    for index, mountpoint in enumerate(mountpoints):
        lines.append(f"{q(PYTHON)} -m tests.test_fstab {q(str(mountpoint))} > {out}/probe{index}")
    lines += [
        f"mount -T {q(str(fstab))} -a -v > {out}/again.txt 2>&1",
        *(f"umount {q(str(m))}" for m in mountpoints),
        f"echo done > {out}/done",
    ]
    return "\n".join(lines)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_fstab_lines_mount_and_umount_through_mount_and_mount_fuse3(
    keyed_server: Server, tmp_path: Path
) -> None:
    fstab, by_url, by_profile, log = write_fstab(tmp_path, keyed_server)
    script = namespace_script(tmp_path, fstab, [by_url, by_profile])
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=mount_env(tmp_path),
        cwd=REPOSITORY,
        timeout=240,
    )
    out = tmp_path / "out"
    seen = [json.loads((out / f"probe{i}").read_text() or "{}") for i in range(2)]
    for state in seen:  # never leave a mount process behind, even if the script failed
        pid = state.get("status", {}).get("pid")
        if pid and not wait_for(lambda pid=pid: not cmdline(pid), 20):
            os.kill(pid, signal.SIGTERM)
    assert done.returncode == 0, done.stderr + (out / "mount.txt").read_text()
    assert (out / "done").exists()

    url_mount, profile_mount = seen
    assert url_mount["listing"] == profile_mount["listing"] == ["Book 0", "Book 1"]
    assert url_mount["findmnt"]["source"] == keyed_server.url  # as in fstab: mount -a matches
    assert profile_mount["findmnt"]["source"] == "books"
    assert {m["findmnt"]["fstype"] for m in seen} == {"fuse.lrrfs"}
    assert (url_mount["write_error"], url_mount["page_mode"]) == (errno.EROFS, 0o400)
    assert url_mount["owner"][0] == 1234
    assert "allow_other" in url_mount["findmnt"]["options"].split(",")
    assert (profile_mount["write_error"], profile_mount["page_mode"]) == (0, 0o444)
    assert (url_mount["metadata_mode"], profile_mount["metadata_mode"]) == (0o400, 0o644)
    assert [m["status"]["state"] for m in seen] == ["ok", "ok"]
    again = (out / "again.txt").read_text()
    assert again.count("already mounted") == 2, again
    for state in seen:
        assert not any(secret in state["cmdline"].encode() for secret in secrets_of())
    assert not any(secret in log.read_bytes() for secret in secrets_of(KEY))
    assert b"HTTP Request: GET" in log.read_bytes()
    assert not os.path.ismount(by_url) and not os.path.ismount(by_profile)


if __name__ == "__main__":
    print(json.dumps(probe(Path(sys.argv[1]))))
