"""Mount settings from the config file and from `-o` options.

The config file (`~/.config/lrrfs/config.toml`) holds named profiles:

    [nas]
    url = "http://nas:3000"
    api_key_file = "~/.config/lrrfs/nas.key"
    cache_size = "20G"

Every setting has one name, used alike as a key in the file and as an
`-o name=value` mount option (`-o ro`, `-o allow_other`: flags need no value).
Settings are merged as defaults < profile < command line. Errors are
`ConfigError`s whose message names the file and line, or the `-o` option.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

Value = object
Settings = dict[str, Value]


class ConfigError(Exception):
    """A bad config file or option; the message is for the user."""


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "lrrfs" / "config.toml"


def is_url(text: str) -> bool:
    return re.match(r"https?://", text, re.IGNORECASE) is not None


# -- parsing one value (a TOML value, or the text of an -o option) ---------------------


def _positive(value: Value) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"expected a number greater than 0, not {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"expected a number greater than 0, not {value!r}")
    return float(value)


TRUE_WORDS = {"true", "yes", "on", "1"}
FALSE_WORDS = {"false", "no", "off", "0"}


def _flag(value: Value) -> bool:
    if isinstance(value, str) and value.lower() in TRUE_WORDS | FALSE_WORDS:
        return value.lower() in TRUE_WORDS
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, not {value!r}")
    return value


def _owner_id(lookup: Callable[[str], int]) -> Callable[[Value], int]:
    """A uid or gid: a number, or a user or group name (resolved now, like sshfs)."""

    def parse(value: Value) -> int:
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, str):
            try:
                return lookup(value)
            except KeyError:
                raise ValueError(f"no such user or group {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"expected a number of 0 or more, or a name, not {value!r}")
        return value

    return parse


def _umask(value: Value) -> int:
    # Only text: a TOML integer 22 would be decimal (0o026), not the 022 a user means.
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{1,3}", value):
        raise ValueError(f'expected octal digits in quotes, such as "022", not {value!r}')
    return int(value, 8)


SIZE_UNITS = {"": 1 << 20, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _size(value: Value) -> int:
    """Bytes, from a number of MiB or a text such as "500M", "4G", "1.5T", "100K"."""
    number: Value = value
    unit = ""
    if isinstance(value, str):
        text = value.strip().lower().removesuffix("ib").removesuffix("b")
        unit = text[-1:] if text[-1:] in SIZE_UNITS else ""
        try:
            number = float(text[: len(text) - len(unit)])
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
        raise ValueError(f'expected a size such as 500M or "4G", not {value!r}')
    return int(number * SIZE_UNITS[unit])


def _positive_size(value: Value) -> int:
    size = _size(value)
    if size <= 0:
        raise ValueError(f"expected a size greater than 0, not {value!r}")
    return size


def _path(value: Value) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a file name, not {value!r}")
    return Path(value).expanduser()


def _url(value: Value) -> str:
    try:
        valid = isinstance(value, str) and is_url(value) and bool(urlsplit(value).hostname)
    except ValueError:  # "Invalid IPv6 URL", a bad port
        valid = False
    if not valid:
        raise ValueError(f"expected an http:// or https:// URL, not {value!r}")
    assert isinstance(value, str)
    return value


@dataclass(frozen=True, slots=True)
class Setting:
    parse: Callable[[Value], Value]
    help: str


SETTINGS: dict[str, Setting] = {
    "url": Setting(_url, "the LANraragi server, e.g. http://nas:3000"),
    "api_key_file": Setting(_path, "file holding the API key"),
    "refresh_interval": Setting(_positive, "seconds between looks for new archives"),
    "timeout": Setting(_positive, "longest wait for the server, in seconds"),
    "cache_size": Setting(_size, "most disk space for cached pages (MiB, or 4G...); 0: none"),
    "memory_cache": Setting(_positive_size, "memory for pages read lately (MiB, or 64M...)"),
    "cache_dir": Setting(_path, "folder of the disk cache (one subfolder per server)"),
    "thumbnail_wait": Setting(_positive, "longest wait for a missing thumbnail, in seconds"),
    "read_only": Setting(_flag, "never change anything on the server"),
    "uid": Setting(_owner_id(lambda name: pwd.getpwnam(name).pw_uid), "owner of every file"),
    "gid": Setting(_owner_id(lambda name: grp.getgrnam(name).gr_gid), "group of every file"),
    "umask": Setting(_umask, "mode bits to clear, in octal"),
    "allow_other": Setting(_flag, "let other users see the mount"),
    "log_file": Setting(_path, "log file in the background"),
    "verbose": Setting(_flag, "log every request"),
    "debug_fuse": Setting(_flag, "log every FUSE call"),
    "insecure": Setting(_flag, "do not verify the https server's certificate (unsafe)"),
    "no_views": Setting(_flag, "no @new, @untagged, @tags, @categories, @search, @offline folders"),
    "no_progress": Setting(_flag, "never set the server's reading progress"),
    "clear_new_on_read": Setting(_flag, 'clear an archive\'s "new" flag when it is first read'),
    "comic_names": Setting(_flag, "name archive files .cbz, .cb7, .cbr, .cbt (comic books)"),
    "folder_icons": Setting(_flag, "a .directory in each archive folder (Dolphin's covers)"),
    "offline": Setting(_flag, "never ask the server: read only what the disk cache holds"),
    "no_offline": Setting(_flag, "never go offline: fail to mount, and wait, without the server"),
    "probe_interval": Setting(_positive, "offline: the most seconds between looks for the server"),
    "allow_delete": Setting(_flag, "rm -r of an archive's folder deletes it on the server"),
    "no_thumbnails": Setting(_flag, "do not fill file managers' thumbnail cache"),
}

DEFAULTS: Settings = {
    "refresh_interval": 60.0,
    "timeout": 30.0,
    "cache_size": 4 << 30,
    "memory_cache": 64 << 20,
    "thumbnail_wait": 5.0,
    "read_only": False,
    "umask": 0o022,
    "allow_other": False,
    "verbose": False,
    "debug_fuse": False,
    "insecure": False,
    "no_views": False,
    "no_progress": False,
    "clear_new_on_read": False,
    "comic_names": False,
    "folder_icons": False,
    "offline": False,
    "no_offline": False,
    "probe_interval": 60.0,
    "allow_delete": False,
    "no_thumbnails": False,
}

# -o names users bring from other FUSE file systems and fstab, as lrrfs settings.
OPTION_ALIASES = {"ro": "read_only", "debug": "verbose"}
# Mount flags handed on to the kernel as they are.
KERNEL_OPTIONS = frozenset({"nosuid", "nodev", "noexec"})
# What mount(8) and mount.fuse3 add or pass on, and what has no meaning here: `rw` is
# always added by mount(8) (so it must not undo a profile's read_only); dev and suid are
# dropped on purpose so the mount keeps FUSE's safe nodev,nosuid; default_permissions and
# noatime are always on.
IGNORED_OPTIONS = frozenset(
    ("rw", "dev", "suid", "exec", "atime", "noatime", "relatime", "norelatime", "strictatime",
     "nodiratime", "diratime", "lazytime", "nolazytime", "async", "sync", "dirsync",
     "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "_netdev",
     "nofail", "default_permissions", "nonempty", "silent", "loud")
)  # fmt: skip
IGNORED_PREFIXES = ("x-", "comment=")


# -- -o options --------------------------------------------------------------------------


@dataclass(slots=True)
class MountOptionText:
    """What `-o a,b=c,...` asked for."""

    settings: Settings
    kernel: set[str]
    config: Path | None = None


def parse_mount_options(texts: Iterable[str]) -> MountOptionText:
    """Parse every `-o` argument; unknown names are errors (a typo must not pass silently)."""
    result = MountOptionText({}, set())
    for text in texts:
        for item in filter(None, (part.strip() for part in text.split(","))):
            _parse_one_option(item, result)
    return result


def _parse_one_option(item: str, result: MountOptionText) -> None:
    name, has_value, raw = item.partition("=")
    name = name.replace("-", "_") if not name.startswith("_") else name
    if name in IGNORED_OPTIONS or item.startswith(IGNORED_PREFIXES):
        return
    if name in KERNEL_OPTIONS and not has_value:
        result.kernel.add(name)
        return
    if name == "config":
        result.config = _path(raw) if raw else None
        if result.config is None:
            raise ConfigError("-o config: expected a file name")
        return
    key = OPTION_ALIASES.get(name, name)
    setting = SETTINGS.get(key)
    if setting is None or key == "url":
        raise ConfigError(f"unknown mount option -o {name} (see lrrfs mount --help)")
    value: Value = raw if has_value else True
    try:
        result.settings[key] = setting.parse(value)
    except ValueError as exc:
        raise ConfigError(f"-o {item}: {exc}") from None


# -- the config file -----------------------------------------------------------------------


def load_profile(path: Path, name: str) -> Settings:
    """The settings of profile `name` in the file at `path`, checked."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{name!r} is not an http(s) URL, and there is no config file {path} "
            "to find a profile of that name in"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    profiles: dict[str, dict[str, Value]] = {}
    for key, value in _parse_toml(path, text).items():
        if not isinstance(value, dict):
            line = _line_of(text, None, key)
            raise ConfigError(
                f"{_where(path, line)}: {key!r} is not a profile; profiles are tables, like [{key}]"
            )
        profiles[key] = value
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"no profile {name!r} in {path} (profiles: {known})")
    return _check_profile(path, text, name, profiles[name])


def _parse_toml(path: Path, text: str) -> dict[str, Value]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's error has no line attribute; the message ends "(at line L, column C)".
        message = str(exc)
        match = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message, re.DOTALL)
        if match is None:
            raise ConfigError(f"config file {path}: {message}") from None
        raise ConfigError(
            f"{path}, line {match[2]}, column {match[3]}: TOML syntax error: {match[1]}"
        ) from None


def _check_profile(path: Path, text: str, name: str, table: dict[str, Value]) -> Settings:
    settings: Settings = {}
    for key, value in table.items():
        line = _line_of(text, name, key) or _line_of(text, name, None) or _line_of(text, None, name)
        setting = SETTINGS.get(key)
        if setting is None:
            raise ConfigError(
                f"{_where(path, line)}: unknown key {key!r} in [{name}] "
                f"(known keys: {', '.join(SETTINGS)})"
            )
        try:
            parsed = setting.parse(value)
        except ValueError as exc:
            raise ConfigError(f"{_where(path, line)}: [{name}] {key}: {exc}") from None
        if isinstance(parsed, Path) and not parsed.is_absolute():
            parsed = path.parent / parsed  # relative to the config file, not to where it runs
        settings[key] = parsed
    if "url" not in settings:
        raise ConfigError(
            f"{_where(path, _line_of(text, name, None))}: profile [{name}] has no url"
        )
    return settings


def _where(path: Path, line: int | None) -> str:
    return f"{path}, line {line}" if line else str(path)


# -- finding the line of a key, for messages (tomllib does not say where a value was) -----

KEY_RE = re.compile(r"""\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")


def _toml_key(text: str) -> str | None:
    """The name a TOML key or header spells (quoted or bare), or None."""
    try:
        parsed = tomllib.loads(f"{text} = 0")
    except tomllib.TOMLDecodeError:
        return None
    parts = []
    while isinstance(parsed, dict) and len(parsed) == 1:
        key, parsed = next(iter(parsed.items()))
        parts.append(key)
    return ".".join(parts)


def _line_of(text: str, table: str | None, key: str | None) -> int | None:
    """The line of `key` in `[table]` (table None: the top level; key None: the header)."""
    current: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("["):
            header = re.match(r"\[\s*(.*?)\s*\]\s*(#.*)?$", stripped)
            current = _toml_key(header[1]) if header else None
            if key is None and current == table:
                return number
            continue
        match = KEY_RE.match(line)
        if key is not None and current == table and match and _toml_key(match[1]) == key:
            return number
    return None
