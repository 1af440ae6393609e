"""The systemd units: `systemd-analyze verify`, and the user unit's command run the way systemd
runs it (there is no systemd as PID 1 in the test container): READY=1 and STOPPING=1 on its
notify socket, log lines for journald, SIGTERM unmounts."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import KEY, Server, archive_names, in_mount_table, is_live_mount, wait_for
from .test_config import books, keyed_server, lrrfs_env, secrets_of, write_key_file

__all__ = ["books", "keyed_server"]  # module fixtures shared with test_config

UNITS = Path(__file__).resolve().parent.parent / "systemd"
LRRFS = Path(sys.executable).parent / "lrrfs"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d")

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None and not os.environ.get("CI"),
    reason="systemd-analyze is not installed (bootstrap installs it; in CI this fails)",
)


# -- systemd-analyze verify -------------------------------------------------------------------


def verify(*units: Path, user: bool, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = ["systemd-analyze", *(["--user"] if user else []), "verify", *map(str, units)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def user_home(tmp_path: Path) -> Path:
    """A home with the lrrfs command where docs/install.md puts it (~/.local/bin)."""
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "lrrfs").symlink_to(LRRFS)
    return home


@needs_systemd_analyze
def test_the_system_mount_and_automount_units_verify(tmp_path: Path) -> None:
    done = verify(UNITS / "mnt-lrr.mount", UNITS / "mnt-lrr.automount", user=False, env={})
    assert (done.returncode, done.stderr) == (0, "")


@needs_systemd_analyze
def test_an_instance_of_the_user_unit_verifies(tmp_path: Path) -> None:
    home = user_home(tmp_path)
    instance = tmp_path / "lrrfs@books.service"
    shutil.copy(UNITS / "lrrfs@.service", instance)
    env = lrrfs_env(tmp_path, HOME=str(home))
    done = verify(instance, user=True, env=env)
    assert (done.returncode, done.stderr) == (0, "")
    # The check has teeth: without ~/.local/bin/lrrfs, ExecStart= is refused.
    (home / ".local" / "bin" / "lrrfs").unlink()
    refused = verify(instance, user=True, env=env)
    assert refused.returncode != 0
    assert ".local/bin/lrrfs is not executable" in refused.stderr


# -- the user unit's command, run like systemd runs it ---------------------------------------


def unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def expand(command: str, home: Path, instance: str) -> list[str]:
    """The specifiers the unit uses (%h, %i) and the leading "-" (ignore failure)."""
    command = command.removeprefix("-").replace("%h", str(home)).replace("%i", instance)
    return command.split()


class NotifySocket:
    """systemd's side of sd_notify: an abstract datagram socket to read messages from."""

    def __init__(self) -> None:
        self.name = f"lrrfs-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.settimeout(60)

    @property
    def address(self) -> str:
        return "@" + self.name

    def receive(self) -> dict[str, str]:
        message = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in message.splitlines())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def journal_env(env: dict[str, str], stderr_file: Path) -> dict[str, str]:
    """What systemd sets for a service logging to the journal: JOURNAL_STREAM names stderr."""
    info = os.stat(stderr_file)
    return env | {
        "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}",
        "INVOCATION_ID": uuid.uuid4().hex,
    }


def stop(process: subprocess.Popen, mountpoint: Path) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(30)
    if in_mount_table(mountpoint):
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


def test_the_user_unit_is_ready_once_mounted_and_unmounts_on_stop(
    keyed_server: Server, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    home = user_home(tmp_path)
    config = home / ".config" / "lrrfs"
    config.mkdir(parents=True)
    write_key_file(config / "books.key")
    (config / "config.toml").write_text(
        f'[books]\nurl = "{keyed_server.url}"\napi_key_file = "books.key"\n'
    )
    unit = unit_settings(UNITS / "lrrfs@.service")
    assert unit["Type"] == ["notify"]
    assert unit["Restart"] == ["on-failure"]
    env = lrrfs_env(tmp_path, HOME=str(home), NOTIFY_SOCKET=notify_socket.address)
    del env["XDG_CONFIG_HOME"]  # as in a user service: the config is in ~/.config
    for pre in unit["ExecStartPre"]:
        subprocess.run(expand(pre, home, "books"), check=True)
    mountpoint = home / "lrr" / "books"
    log = tmp_path / "journal"
    log.touch()
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            expand(unit["ExecStart"][0], home, "books"),
            stderr=stderr,
            env=journal_env(env, log),
        )
    try:
        ready = notify_socket.receive()
        # At READY=1 the mount already answers: a dependent unit may use it at once.
        assert ready["READY"] == "1"
        assert is_live_mount(mountpoint)
        assert archive_names(mountpoint) == ["Book 0", "Book 1"]
        assert "2 archives" in ready["STATUS"]
        argv = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert not any(secret in argv for secret in secrets_of())
        process.send_signal(signal.SIGTERM)  # what `systemctl --user stop` sends (KillSignal)
        assert notify_socket.receive()["STOPPING"] == "1"
        assert process.wait(30) == 0
        assert not os.path.ismount(mountpoint)
    finally:
        stop(process, mountpoint)
    lines = log.read_text().splitlines()
    assert lines and all(re.match(r"<[0-7]>", line) for line in lines), lines
    assert any(line.startswith("<6>lrrfs.mount: connected to LANraragi") for line in lines)
    assert not any(TIMESTAMP.search(line) for line in lines)
    assert not any(secret in log.read_bytes() for secret in secrets_of())  # key from the profile


def test_journal_lines_carry_the_level_and_show_requests_without_the_key(
    keyed_server: Server, tmp_path: Path
) -> None:
    mountpoint = tmp_path / "lrr"
    mountpoint.mkdir()
    key_file = write_key_file(tmp_path / "key")
    log = tmp_path / "journal"
    log.touch()
    env = journal_env(lrrfs_env(tmp_path), log)
    command = [str(LRRFS), "mount", "-f", "-v", keyed_server.url, str(mountpoint),
               "--api-key-file", str(key_file), "--refresh-interval", "0.5"]  # fmt: skip
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, stderr=stderr, env=env)
    try:
        assert wait_for(lambda: is_live_mount(mountpoint), 60)
        # Every look at the archive list now fails: retried (debug), then a warning.
        keyed_server.faults(rules=[{"match": r"^GET /api/archives$", "action": "status"}])
        assert wait_for(lambda: "refresh of the archive list failed" in log.read_text(), 30)
    finally:
        keyed_server.clear_faults()
        stop(process, mountpoint)
    text = log.read_text()
    failed = r"^<4>lrrfs\.library\.background: refresh of the archive list failed"
    assert re.search(failed, text, re.M)
    assert re.search(r"^<7>lrrfs\.client\.session: .*HTTP 503, retrying", text, re.M)
    request = r'^<6>httpx: HTTP Request: GET http://127\.0\.0\.1:\d+/api/archives "HTTP/1\.1 503'
    assert re.search(request, text, re.M)
    assert not TIMESTAMP.search(text)
    assert not any(secret in text.encode() for secret in secrets_of(KEY))


@pytest.mark.parametrize(
    ("variables", "journal"),
    [
        ("JOURNAL_STREAM of another file", False),  # a terminal or file inside a service
        ("INVOCATION_ID only", True),  # a service that does not say where stderr goes
        ("none", False),  # a terminal
    ],
)
def test_journal_format_only_when_stderr_goes_to_the_journal(
    keyed_server: Server, tmp_path: Path, variables: str, journal: bool
) -> None:
    mountpoint = tmp_path / "lrr"
    mountpoint.mkdir()
    other, log = tmp_path / "other", tmp_path / "log"
    other.touch()
    env = lrrfs_env(tmp_path, LRR_API_KEY=KEY)
    if variables == "JOURNAL_STREAM of another file":
        env = journal_env(env, other)
    elif variables == "INVOCATION_ID only":
        env["INVOCATION_ID"] = uuid.uuid4().hex
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [str(LRRFS), "mount", "-f", keyed_server.url, str(mountpoint)], stderr=stderr, env=env
        )
    try:
        assert wait_for(lambda: "mounted" in log.read_text(), 60)
    finally:
        stop(process, mountpoint)
    first = log.read_text().splitlines()[0]
    if journal:
        assert first.startswith("<6>lrrfs.mount: connected to") and not TIMESTAMP.search(first)
    else:
        assert TIMESTAMP.match(first) and " INFO lrrfs.mount: connected to" in first
