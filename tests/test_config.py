"""The config file: profiles, what they set on a real mount, what the command line overrides,
and messages for bad files that name the file and the line.

The helpers at the top (an environment with its own config and runtime folders, a
foreground mount from any arguments) are shared with the status, fstab and systemd tests.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from lrrfs.testserver.samples import make_archive

from .conftest import KEY, PYTHON, Mount, Server, archive_names, launch_mount, start_server

MIB = 1 << 20
# What a test's lrrfs must not inherit from whatever runs pytest (a key, a systemd service).
CLEARED_VARIABLES = ("LRR_API_KEY", "INVOCATION_ID", "JOURNAL_STREAM", "NOTIFY_SOCKET")


# -- helpers shared with test_status, test_fstab and test_systemd ------------------------------


def lrrfs_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment of its own: config under home/config, status files under home/run."""
    runtime = home / "run"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_VARIABLES}
    env |= {"XDG_CONFIG_HOME": str(home / "config"), "XDG_RUNTIME_DIR": str(runtime)}
    return env | extra


def run_lrrfs(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "lrrfs", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def foreground_mount(args: list[str], mountpoint: Path, env: dict[str, str]) -> Mount:
    """`lrrfs mount -f ARGS` in a subprocess, once its mount answers."""
    return launch_mount([PYTHON, "-m", "lrrfs", "mount", "-f", *args], mountpoint, env)


def write_key_file(path: Path, key: str = KEY) -> Path:
    path.write_text(key + "\n")
    path.chmod(0o600)
    return path


def secrets_of(key: str = KEY) -> list[bytes]:
    return [key.encode(), base64.b64encode(key.encode())]


def status_json(mountpoint: Path, env: dict[str, str]) -> dict:
    done = run_lrrfs("status", "--json", str(mountpoint), env=env)
    states = json.loads(done.stdout)
    assert len(states) == 1, done
    return states[0]


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> Path:
    library = tmp_path_factory.mktemp("config-library")
    for index in range(2):
        make_archive(library / f"Book {index}.zip", 3, page_bytes=4000)
    return library


@pytest.fixture(scope="module")
def keyed_server(books: Path, tmp_path_factory: pytest.TempPathFactory):
    with start_server(books, tmp_path_factory.mktemp("config-server")) as running:
        yield running


def write_config(home: Path, text: str) -> Path:
    path = home / "config" / "lrrfs" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- profiles on a real mount --------------------------------------------------------------------


def test_a_profile_gives_the_server_key_and_options_of_the_mount(
    keyed_server: Server, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    key_dir = home / "config" / "lrrfs"
    key_dir.mkdir(parents=True)
    write_key_file(key_dir / "books.key")
    write_config(
        home,
        f"""# my servers
[books]
url = "{keyed_server.url}"
api_key_file = "books.key"    # relative to this file's folder
memory_cache = 7
umask = "027"
uid = 1234
gid = 2345
read_only = true
""",
    )
    env = lrrfs_env(home)
    with foreground_mount(["books", str(tmp_path / "lrr")], tmp_path / "lrr", env) as mount:
        assert archive_names(mount.path) == ["Book 0", "Book 1"]  # the key worked
        page = mount.path / "Book 0" / "001.jpg"
        info = page.stat()
        assert stat.S_IMODE(info.st_mode) == 0o440
        assert stat.S_IMODE((mount.path / "Book 0").stat().st_mode) == 0o550
        assert (info.st_uid, info.st_gid) == (1234, 2345)
        with pytest.raises(OSError) as raised:
            open(mount.path / "Book 0" / "metadata.json", "r+b")  # noqa: SIM115
        assert raised.value.errno == errno.EROFS  # read_only: nothing can be saved
        assert "ro" in mount_options_of(mount.path)  # the kernel's mount is read-only too
        state = status_json(mount.path, env)
        assert state["cache_max_bytes"] == 7 * MIB
        assert state["read_only"] is True
        assert state["source"] == "books"  # what df and findmnt show: the profile


def test_the_command_line_wins_over_the_profile(keyed_server: Server, tmp_path: Path) -> None:
    home = tmp_path / "home"
    key_file = write_key_file(tmp_path / "key")
    write_config(
        home,
        f'[books]\nurl = "{keyed_server.url}"\napi_key_file = "{key_file}"\n'
        'memory_cache = 7\numask = "027"\n',
    )
    env = lrrfs_env(home)
    args = ["books", str(tmp_path / "lrr"), "--memory-cache", "9", "-o", "umask=077"]
    with foreground_mount(args, tmp_path / "lrr", env) as mount:
        page = mount.path / "Book 1" / "001.jpg"
        assert stat.S_IMODE(page.stat().st_mode) == 0o400
        assert status_json(mount.path, env)["cache_max_bytes"] == 9 * MIB


def test_config_names_another_config_file(keyed_server: Server, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.toml"
    key_file = write_key_file(tmp_path / "key")
    elsewhere.write_text(f'["my books"]\nurl = "{keyed_server.url}"\napi_key_file = "{key_file}"\n')
    env = lrrfs_env(tmp_path / "home")  # its own config folder holds no file at all
    for option in (["--config", str(elsewhere)], ["-o", f"config={elsewhere}"]):
        mountpoint = tmp_path / f"lrr{len(option[0])}"
        with foreground_mount(["my books", str(mountpoint), *option], mountpoint, env) as mount:
            assert len(archive_names(mount.path)) == 2


def test_the_key_from_a_profile_never_shows(keyed_server: Server, tmp_path: Path) -> None:
    home = tmp_path / "home"
    key_file = write_key_file(tmp_path / "key", "wrong-" + KEY)
    write_config(home, f'[books]\nurl = "{keyed_server.url}"\napi_key_file = "{key_file}"\n')
    (tmp_path / "lrr").mkdir()
    done = run_lrrfs("mount", "books", str(tmp_path / "lrr"), "-v", env=lrrfs_env(home))
    assert done.returncode == 1
    assert "rejected the API key" in done.stderr
    for text in (done.stdout, done.stderr):
        assert not any(secret in text.encode() for secret in secrets_of("wrong-" + KEY))
    assert not os.path.ismount(tmp_path / "lrr")


# -- bad config files: the message names the file and the line ----------------------------------


def mount_error(home: Path, profile: str, *extra: str) -> str:
    mountpoint = home / "mnt"
    mountpoint.mkdir(parents=True, exist_ok=True)
    done = run_lrrfs("mount", profile, str(mountpoint), *extra, env=lrrfs_env(home), timeout=30)
    assert done.returncode == 1, done
    assert not os.path.ismount(mountpoint)
    return done.stderr.strip()


def test_a_toml_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[nas]\nurl = "http://nas:3000"\ncache_size = = 5\n')
    message = mount_error(tmp_path, "nas")
    assert message.startswith(f"lrrfs: {path}, line 3, column 14: TOML syntax error")


def test_an_unknown_key_names_its_line_and_the_known_keys(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        '[other]\ncache_sise = 1\n\n[nas]\nurl = "http://nas:3000"\n\n  "cache_sise" = 5\n',
    )
    message = mount_error(tmp_path, "nas")
    assert message.startswith(f"lrrfs: {path}, line 7: unknown key 'cache_sise' in [nas]")
    assert "cache_size" in message  # the known keys


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('timeout = "soon"', "[nas] timeout: expected a number greater than 0"),
        ("memory_cache = 0", "[nas] memory_cache: expected a size greater than 0"),
        ('cache_size = "lots"', "[nas] cache_size: expected a size such as 500M"),
        ('read_only = "maybe"', "[nas] read_only: expected true or false"),
        ("umask = 22", "[nas] umask: expected octal digits in quotes"),  # 22 is not 0o22
        ('umask = "0999"', "[nas] umask: expected octal digits in quotes"),
        ("uid = -1", "[nas] uid: expected a number of 0 or more"),
        ('gid = "no-such-group-here"', "[nas] gid: no such user or group"),
        ("allow_other = 1", "[nas] allow_other: expected true or false"),
        ("api_key_file = 7", "[nas] api_key_file: expected a file name"),
    ],
)
def test_a_value_of_the_wrong_type_names_its_line(tmp_path: Path, line: str, says: str) -> None:
    path = write_config(tmp_path, f'[nas]\nurl = "http://127.0.0.1:9"\n\n{line}\n')
    message = mount_error(tmp_path, "nas")
    assert message.startswith(f"lrrfs: {path}, line 4: {says}"), message


def test_a_good_profile_gets_as_far_as_the_server(tmp_path: Path) -> None:
    write_config(tmp_path, '[nas]\nurl = "http://127.0.0.1:9"\numask = "027"\ntimeout = 2\n')
    assert mount_error(tmp_path, "nas").startswith("lrrfs: cannot mount http://127.0.0.1:9")


def test_a_profile_without_url_or_a_missing_profile_or_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, '# servers\n\n[nas]\ntimeout = 5\n\n[pi]\nurl = "http://pi"\n')
    assert mount_error(tmp_path, "nas") == f"lrrfs: {path}, line 3: profile [nas] has no url"
    assert mount_error(tmp_path, "cloud") == (
        f"lrrfs: no profile 'cloud' in {path} (profiles: nas, pi)"
    )
    path.unlink()
    assert mount_error(tmp_path, "nas") == (
        f"lrrfs: 'nas' is not an http(s) URL, and there is no config file {path} "
        "to find a profile of that name in"
    )


def test_a_key_outside_any_table_is_not_a_profile(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'url = "http://nas:3000"\n')
    assert mount_error(tmp_path, "nas") == (
        f"lrrfs: {path}, line 1: 'url' is not a profile; profiles are tables, like [url]"
    )


def test_a_bad_mount_option_is_named(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9"
    assert mount_error(tmp_path, url, "-o", "cache_sise=5") == (
        "lrrfs: unknown mount option -o cache_sise (see lrrfs mount --help)"
    )
    assert mount_error(tmp_path, url, "-o", "ro,timeout=never") == (
        "lrrfs: -o timeout=never: expected a number greater than 0, not 'never'"
    )


# -- the command line and its documentation ------------------------------------------------------


def without_pillow(*args: str) -> subprocess.CompletedProcess:
    """lrrfs as `pip install lrrfs` gives it: the [demo] extra (Pillow) missing."""
    code = "import sys; sys.modules['PIL'] = None; from lrrfs.cli import main; sys.exit(main())"
    return subprocess.run(
        [PYTHON, "-c", code, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_everything_but_the_demo_works_without_the_demo_extra(tmp_path: Path) -> None:
    assert without_pillow("--version").stdout.strip().startswith("lrrfs ")
    assert "--cache-size" in without_pillow("mount", "--help").stdout
    assert without_pillow("status", str(tmp_path)).stderr.strip().endswith("not an lrrfs mount")
    for command in ("demo", "demo-server"):
        done = without_pillow(command, str(tmp_path))
        assert done.returncode == 1
        assert done.stderr.strip() == f"lrrfs: {command} needs Pillow: pip install 'lrrfs[demo]'"


def test_every_documented_option_is_in_the_help_and_the_config_keys() -> None:
    from lrrfs.config import SETTINGS

    usage = (Path(__file__).resolve().parent.parent / "docs" / "usage.md").read_text()
    table = usage.split("## Options", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:5] for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) >= 14
    help_text = run_lrrfs("mount", "--help", env=dict(os.environ)).stdout
    for flags, keys, _default, _meaning in rows:
        for flag in re_flags(flags):
            assert flag in help_text, flag
        for key in re_flags(keys):
            assert key in SETTINGS or key in {"ro", "debug", "config"}, key
    for key in set(SETTINGS) - {"url"}:
        assert f"`{key}`" in table, key  # every config key is documented


def re_flags(cell: str) -> list[str]:
    """The words in backquotes of a table cell, without metavariables (`--timeout S`)."""
    import re

    return [w.split()[0].split("=")[0] for w in re.findall(r"`([^`]+)`", cell)]


def mount_options_of(path: Path) -> list[str]:
    """The per-mount options the kernel shows for `path` (findmnt's OPTIONS: rw or ro...)."""
    with open("/proc/self/mountinfo") as table:
        for line in table:
            fields = line.split()
            if fields[4] == str(path):
                return fields[5].split(",")
    raise AssertionError(f"{path} is not mounted")
