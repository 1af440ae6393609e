"""The `lrrfs` command line.

`lrrfs URL|PROFILE MOUNTPOINT [-o OPTIONS]` is `lrrfs mount ...`, the form
mount(8) and /etc/fstab use (through mount.fuse3, for type fuse.lrrfs).
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .config import (
    DEFAULTS,
    SETTINGS,
    ConfigError,
    Settings,
    default_config_path,
    is_url,
    load_profile,
    parse_mount_options,
)

if TYPE_CHECKING:  # the mount machinery (pyfuse3, trio) loads only when needed
    from .client.connectivity import Mode
    from .mount import MountOptions

log = logging.getLogger("lrrfs")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# journald stamps every line itself and reads a "<N>" syslog priority at the start of a line.
JOURNAL_FORMAT = "%(name)s: %(message)s"
JOURNAL_PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6}
COMMANDS = ("mount", "umount", "status", "cache", "demo", "demo-server")


def default_log_file() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "lrrfs" / "lrrfs.log"


class JournalFormatter(logging.Formatter):
    """Lines for journald: no time stamp, a syslog priority prefix on every line."""

    def format(self, record: logging.LogRecord) -> str:
        priority = JOURNAL_PRIORITIES.get(record.levelno, 7)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def stderr_is_journal() -> bool:
    """Is stderr connected to journald (a systemd service)?"""
    stream = os.environ.get("JOURNAL_STREAM")
    if stream:  # "device:inode" of the journal stream; a child may have another stderr
        try:
            device, inode = (int(part) for part in stream.split(":"))
            info = os.fstat(sys.stderr.fileno())
        except (ValueError, OSError):
            return False
        return (info.st_dev, info.st_ino) == (device, inode)
    return bool(os.environ.get("INVOCATION_ID")) and not sys.stderr.isatty()


def setup_logging(verbose: bool, log_file: Path | None) -> None:
    if log_file is not None:
        # Titles and (with -v) requests are the user's business: a private folder and file.
        log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)  # one an older lrrfs made readable by all
        os.close(fd)
        handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    else:
        handler = logging.StreamHandler(sys.stderr)
        journal = stderr_is_journal()
        handler.setFormatter(
            JournalFormatter(JOURNAL_FORMAT) if journal else logging.Formatter(LOG_FORMAT)
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # httpx logs every request at INFO; URLs carry no key, but it is noise.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def read_api_key(key_file: Path | None) -> str | None:
    """The API key, from --api-key-file or LRR_API_KEY; never from the command line."""
    if key_file is None:
        return os.environ.get("LRR_API_KEY") or None
    try:
        mode = key_file.stat().st_mode
        key = key_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SystemExit(f"lrrfs: API key file {key_file}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(
            f"lrrfs: warning: API key file {key_file} is readable by other users "
            f"(chmod 600 {key_file})",
            file=sys.stderr,
        )
    if not key:
        raise SystemExit(f"lrrfs: API key file {key_file} is empty")
    return key


def setting_type(name: str) -> Callable[[str], object]:
    """An argparse type that parses like the config file and -o do."""

    def parse(text: str) -> object:
        try:
            return SETTINGS[name].parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name  # argparse names the type in its messages
    return parse


OPTIONS_HELP = """\
mount options, comma-separated, as in fstab (command-line flags and -o win over the
config file): api_key_file=FILE, refresh_interval=S, timeout=S, cache_size=SIZE (disk),
memory_cache=SIZE, cache_dir=DIR, thumbnail_wait=S, ro (read_only), uid=N|NAME,
gid=N|NAME, umask=OCTAL, allow_other, log_file=FILE, verbose (debug), debug_fuse,
no_views, no_progress, clear_new_on_read, comic_names, folder_icons, allow_delete, offline,
no_offline, probe_interval=S, no_thumbnails, config=FILE;
nosuid, nodev, noexec go to the kernel; rw, _netdev, nofail, noauto, user, x-* and other
fstab words are ignored"""


def add_mount_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="URL|PROFILE",
        help="the LANraragi server (e.g. http://nas:3000), or a profile in the config file",
    )
    parser.add_argument(
        "mountpoint", metavar="MOUNTPOINT", type=Path, help="an empty folder to mount on"
    )
    parser.add_argument(
        "-o", dest="options", action="append", default=[], metavar="OPT[=VAL],...",
        help=OPTIONS_HELP,
    )  # fmt: skip
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"config file with the profiles (default {default_config_path()})",
    )
    parser.add_argument(
        "-f", "--foreground", action="store_true", help="stay in the foreground, log to stderr"
    )
    parser.add_argument(
        "--api-key-file",
        type=setting_type("api_key_file"),
        metavar="FILE",
        help="file holding the API key (default: the LRR_API_KEY environment variable)",
    )
    for flag, metavar, text in (
        ("--refresh-interval", "SECONDS", "how often to look for new, changed and deleted "
         "archives (default 60)"),
        ("--timeout", "SECONDS", "longest wait for the server before a file call fails with "
         "EIO (default 30)"),
        ("--cache-size", "SIZE", "most disk space for this server's cached pages, thumbnails "
         "and lists, e.g. 500M, 20G; 0 turns the disk cache off (default 4G)"),
        ("--memory-cache", "SIZE", "memory for pages read lately, e.g. 128M (default 64M)"),
        ("--cache-dir", "DIR", "folder of the disk cache, one subfolder per server "
         "(default $XDG_CACHE_HOME/lrrfs, i.e. ~/.cache/lrrfs)"),
        ("--thumbnail-wait", "SECONDS", "how long to wait for the server to make a missing "
         "thumbnail (default 5)"),
        ("--probe-interval", "SECONDS", "offline: the most time between two looks for the "
         "server, which brings the mount back online (default 60)"),
    ):  # fmt: skip
        name = flag[2:].replace("-", "_")
        parser.add_argument(flag, type=setting_type(name), metavar=metavar, help=text)
    add_access_arguments(parser)
    add_browsing_arguments(parser)
    add_offline_arguments(parser)
    add_log_arguments(parser)


def add_offline_arguments(parser: argparse.ArgumentParser) -> None:
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--offline",
        action="store_true",
        default=None,
        help="mount from the disk cache without asking the server at all (it stays offline)",
    )
    choice.add_argument(
        "--no-offline",
        action="store_true",
        default=None,
        help="never go offline: fail to mount when the server cannot be reached, and let "
        "file calls wait for it (default: serve the disk cache until it answers again)",
    )


def add_access_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--read-only",
        "--ro",
        action="store_true",
        default=None,
        help="mount read-only: nothing on the server can be changed through the mount",
    )
    parser.add_argument(
        "--uid", type=setting_type("uid"), metavar="UID", help="owner of every file (default: you)"
    )
    parser.add_argument(
        "--gid",
        type=setting_type("gid"),
        metavar="GID",
        help="group of every file (default: yours)",
    )
    parser.add_argument(
        "--umask",
        type=setting_type("umask"),
        metavar="OCTAL",
        help="mode bits to clear, e.g. 027 (default 022)",
    )
    parser.add_argument(
        "--allow-other",
        action="store_true",
        default=None,
        help="let other users see the mount (non-root: needs user_allow_other in /etc/fuse.conf)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="do not verify an https server's certificate (unsafe: logged loudly)",
    )


def add_browsing_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, text in (
        ("--no-views", "only the archive folders: no @new, @untagged, @tags, @categories, "
         "@search"),
        ("--no-progress", "do not set the server's reading progress when pages are read"),
        ("--clear-new-on-read", 'clear an archive\'s "new" flag when a page of it is first '
         "read"),
        ("--comic-names", "name archive files as comic books (zip as .cbz, 7z .cb7, rar .cbr, "
         "tar .cbt): readers such as evince open them by that name"),
        ("--folder-icons", "a .directory file in each archive folder: Dolphin shows the cover "
         "as the folder's icon"),
        ("--allow-delete", "rm -r of an archive's folder deletes the archive on the server"),
        ("--no-thumbnails", "do not put thumbnails of listed folders' pages (made from the "
         "server's small pictures) in the file managers' thumbnail cache"),
    ):  # fmt: skip
        parser.add_argument(flag, action="store_true", default=None, help=text)


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-file",
        type=setting_type("log_file"),
        metavar="FILE",
        help=f"log file (default: stderr in the foreground, {default_log_file()} in the "
        "background)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        "--debug",
        action="store_true",
        default=None,
        help="log every request the mount makes (never the key)",
    )
    parser.add_argument(
        "--debug-fuse", action="store_true", default=None, help="log every FUSE call"
    )


# argparse destinations that are settings of the same name
FLAG_SETTINGS = ("api_key_file", "refresh_interval", "timeout", "cache_size", "memory_cache",
                 "cache_dir", "thumbnail_wait",
                 "read_only", "uid", "gid", "umask", "allow_other", "log_file", "verbose",
                 "debug_fuse", "insecure", "no_views", "no_progress",
                 "clear_new_on_read", "comic_names", "folder_icons", "allow_delete", "offline",
                 "no_offline", "probe_interval", "no_thumbnails")  # fmt: skip


def mount_settings(args: argparse.Namespace) -> tuple[Settings, frozenset[str]]:
    """Defaults, then the profile (if the source is not a URL), then the command line."""
    given = parse_mount_options(args.options)
    settings = dict(DEFAULTS)
    if is_url(args.source):
        try:
            settings["url"] = SETTINGS["url"].parse(args.source)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    else:
        config = args.config or given.config or default_config_path()
        settings |= load_profile(config, args.source)
    settings |= {k: getattr(args, k) for k in FLAG_SETTINGS if getattr(args, k) is not None}
    settings |= given.settings
    return settings, frozenset(given.kernel)


def public_source(source: str, url: str) -> tuple[str, str]:
    """The URL and the name df shows, without any user:password (lrrfs uses an API key)."""
    from .status import public_url

    clean = public_url(url)
    if clean != url:
        # A mount process lives long, and its command line is readable by every user.
        raise ConfigError(
            "the URL holds a user name or password, which every user of this machine could "
            "read in the process list; LANraragi takes none: give its API key with "
            "--api-key-file or LRR_API_KEY"
        )
    return clean, public_url(source) if is_url(source) else source


def absolute(path: object) -> Path | None:
    """A path that still means the same after the background mount leaves this folder."""
    return path.absolute() if isinstance(path, Path) else None


# A setting holds what its parser in config.SETTINGS made of it, or its default: these
# name that type (for the type checker) and check it.


def number(value: object) -> float:
    assert isinstance(value, int | float)
    return value


def integer(value: object) -> int:
    assert isinstance(value, int)
    return value


def optional_integer(value: object) -> int | None:
    return None if value is None else integer(value)


def optional_path(value: object) -> Path | None:
    assert value is None or isinstance(value, Path)
    return value


def mount_options(args: argparse.Namespace) -> tuple[MountOptions, Settings]:
    from .mount import MountOptions

    settings, kernel = mount_settings(args)
    url, fsname = public_source(args.source, str(settings["url"]))
    options = MountOptions(
        url=url,
        mountpoint=args.mountpoint.absolute(),
        api_key=read_api_key(optional_path(settings.get("api_key_file"))),
        refresh_interval=number(settings["refresh_interval"]),
        timeout=number(settings["timeout"]),
        cache_bytes=integer(settings["memory_cache"]),
        disk_cache_bytes=integer(settings["cache_size"]),
        cache_dir=absolute(settings.get("cache_dir")),
        thumbnail_wait=number(settings["thumbnail_wait"]),
        allow_other=bool(settings["allow_other"]),
        debug_fuse=bool(settings["debug_fuse"]),
        verify_tls=not settings["insecure"],
        read_only=bool(settings["read_only"]),
        uid=optional_integer(settings.get("uid")),
        gid=optional_integer(settings.get("gid")),
        umask=integer(settings["umask"]),
        fsname=fsname,
        kernel_options=kernel,
        views=not settings["no_views"],
        progress=not settings["no_progress"],
        clear_new_on_read=bool(settings["clear_new_on_read"]),
        comic_names=bool(settings["comic_names"]),
        folder_icons=bool(settings["folder_icons"]),
        offline=offline_mode(settings),
        probe_interval=number(settings["probe_interval"]),
        allow_delete=bool(settings["allow_delete"]),
        desktop_thumbnails=not settings["no_thumbnails"],
    )
    return options, settings


def offline_mode(settings: Settings) -> Mode:
    from .client.connectivity import Mode

    if settings["offline"] and settings["no_offline"]:
        raise ConfigError("offline and no_offline contradict each other: give one of them")
    if settings["offline"]:
        return Mode.FORCED
    return Mode.NEVER if settings["no_offline"] else Mode.AUTO


def cmd_mount(args: argparse.Namespace) -> int:
    """Mount a LANraragi server's library on a folder. Returns once the mount answers,
    and serves in the background (-f: stays in the foreground until Ctrl-C or unmount)."""
    from .mount import MountError, mount_in_background, prepare_mountpoint, run_foreground

    try:
        options, settings = mount_options(args)
        if prepare_mountpoint(options.mountpoint):
            print(
                f"lrrfs: {options.mountpoint}: cleared a dead mount (its lrrfs process had died)",
                file=sys.stderr,
            )
    except (ConfigError, MountError) as exc:
        print(f"lrrfs: {exc}", file=sys.stderr)
        return 1
    verbose, log_file = bool(settings["verbose"]), optional_path(settings.get("log_file"))
    if args.foreground:
        setup_logging(verbose, log_file)

        def ready(error: str | None) -> None:
            if error:
                print(f"lrrfs: {error}", file=sys.stderr)

        return run_foreground(options, ready)
    log_file = log_file or default_log_file()
    status = mount_in_background(options, lambda: setup_logging(verbose, log_file))
    if status == 0:
        print(f"lrrfs: mounted {options.url} on {options.mountpoint} (log: {log_file})")
    return status


def cmd_status(args: argparse.Namespace) -> int:
    from .status import run

    return run(args.mountpoint, args.json)


def cache_settings(args: argparse.Namespace) -> argparse.Namespace:
    """The cache commands take the mount's settings (profile, -o, flags) but no mount point."""
    for name in FLAG_SETTINGS:
        if not hasattr(args, name):
            setattr(args, name, None)
    args.mountpoint = Path.cwd()
    return args


def cmd_cache_warm(args: argparse.Namespace) -> int:
    """Fetch the pages and thumbnails of the archives named (titles or views) into the disk
    cache (with --archives, their archive files too), so that they read offline; exits 1 if
    one is not wholly cached."""
    from .cachecmd import warm

    setup_logging(False, None)
    options, _ = mount_options(cache_settings(args))
    return warm(options, args.patterns, archives=args.archives)


def cmd_cache_show(args: argparse.Namespace) -> int:
    """Say how much the disk cache holds of each archive of a server, and which archives
    read fully offline (from the cache alone: the server is not asked)."""
    from .cachecmd import show

    setup_logging(False, None)
    logging.getLogger().setLevel(logging.WARNING)
    options, _ = mount_options(cache_settings(args))
    return show(options)


def cmd_cache_clear(args: argparse.Namespace) -> int:
    """Delete the disk cache of one server (or of all)."""
    from .cachecmd import clear

    url = None
    cache_dir = args.cache_dir
    if args.source is not None:
        settings, _ = mount_settings(cache_settings(args))
        url = str(settings["url"])
        cache_dir = absolute(settings.get("cache_dir")) or cache_dir
    return clear(url, cache_dir)


def add_cache_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cache = commands.add_parser(
        "cache", help="fill the disk cache ahead of time, see what it holds, or empty it"
    )
    actions = cache.add_subparsers(dest="action", required=True, metavar="ACTION")
    warm = actions.add_parser(
        "warm", help="cache archives' pages and thumbnails now", description=cmd_cache_warm.__doc__
    )
    warm.add_argument("source", metavar="URL|PROFILE", help="the server, or a profile")
    warm.add_argument(
        "patterns", nargs="+", metavar="TITLE|VIEW",
        help="titles or folder names (* and ? match), or views: @new, @categories/NAME, "
        "@search/QUERY, @tags/NAMESPACE/VALUE",
    )  # fmt: skip
    warm.set_defaults(func=cmd_cache_warm)
    show = actions.add_parser(
        "show", help="how much is cached of which archives", description=cmd_cache_show.__doc__
    )
    show.add_argument("source", metavar="URL|PROFILE", help="the server, or a profile")
    show.set_defaults(func=cmd_cache_show)
    warm.add_argument(
        "--archives",
        action="store_true",
        help="the whole archive files too (offline reading, backups); mind --cache-size",
    )
    for parser in (warm, show):
        parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPT=VAL")
        parser.add_argument("--config", type=Path, metavar="FILE")
        parser.add_argument("--api-key-file", type=setting_type("api_key_file"), metavar="FILE")
        parser.add_argument("--cache-dir", type=setting_type("cache_dir"), metavar="DIR")
        parser.add_argument("--cache-size", type=setting_type("cache_size"), metavar="SIZE")
        parser.add_argument("--timeout", type=setting_type("timeout"), metavar="SECONDS")
        parser.add_argument("--insecure", action="store_true", default=None)
    clear = actions.add_parser(
        "clear", help="delete cached pages and lists", description=cmd_cache_clear.__doc__
    )
    clear.add_argument(
        "source", nargs="?", metavar="URL|PROFILE", help="only this server's (default: all)"
    )
    clear.add_argument("--config", type=Path, metavar="FILE")
    clear.add_argument("--cache-dir", type=Path, metavar="DIR")
    clear.set_defaults(func=cmd_cache_clear, options=[])


def cmd_umount(args: argparse.Namespace) -> int:
    result = subprocess.run(["fusermount3", "-u", str(args.mountpoint)], check=False)
    return result.returncode


DEMO_EXTRA = "lrrfs: {command} needs Pillow: pip install 'lrrfs[demo]'"


def has_pillow() -> bool:
    """Pillow (the [demo] extra) makes the demo's images; mounting never needs it."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        return False
    return True


def cmd_demo_server(args: argparse.Namespace) -> int:
    from .testserver.cli import run

    return run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    if not has_pillow():
        print(DEMO_EXTRA.format(command="demo"), file=sys.stderr)
        return 1
    from .demo import run_demo

    return run_demo(args.mountpoint, large_mb=args.large_mb, tour_only=args.tour)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrrfs",
        description="Mount a LANraragi library as a folder tree.",
        epilog="`lrrfs URL|PROFILE MOUNTPOINT [-o OPTIONS]` is short for `lrrfs mount ...` "
        "(the form mount(8) and /etc/fstab use, with type fuse.lrrfs). "
        "`lrrfs COMMAND --help` tells more; the guide is docs/guide.md.",
    )
    parser.add_argument("--version", action="version", version=f"lrrfs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mount = commands.add_parser(
        "mount",
        help="mount a server's library on a folder",
        description=cmd_mount.__doc__,
        epilog=f"Profiles live in {default_config_path()} (--config to choose another file); "
        "the API key is read from a file or LRR_API_KEY, never from the command line.",
    )
    add_mount_arguments(mount)
    mount.set_defaults(func=cmd_mount)

    add_cache_commands(commands)

    umount = commands.add_parser("umount", help="unmount (same as fusermount3 -u)")
    umount.add_argument("mountpoint", type=Path)
    umount.set_defaults(func=cmd_umount)

    status = commands.add_parser(
        "status",
        help="show each lrrfs mount: server, archives, cache, requests, errors",
        description="Show every lrrfs mount (or one): its server and version, archives, "
        "cache use, requests made, errors and requests in flight, and whether its process "
        "is alive. Exits 1 if a mount is dead or stuck, or MOUNTPOINT is not an lrrfs mount.",
    )
    status.add_argument("mountpoint", type=Path, nargs="?", help="only this mount")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=cmd_status)

    demo = commands.add_parser(
        "demo", help="make a sample library, serve it on loopback and mount it"
    )
    demo.add_argument("mountpoint", type=Path)
    demo.add_argument(
        "--large-mb", type=int, default=64, help="size of the sample's large archive (default 64)"
    )
    demo.add_argument(
        "--tour",
        action="store_true",
        help="walk the mount with a few commands and stop, instead of waiting for Ctrl-C",
    )
    demo.set_defaults(func=cmd_demo)

    server = commands.add_parser(
        "demo-server", help="serve a folder of archives like a LANraragi server (for tests)"
    )
    if has_pillow():  # without the [demo] extra every other command must still work
        from .testserver.cli import add_arguments as add_server_arguments

        add_server_arguments(server)
    server.set_defaults(func=cmd_demo_server)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] not in (*COMMANDS, "-h", "--help", "--version"):
        argv.insert(0, "mount")  # sshfs-style `lrrfs SOURCE MOUNTPOINT -o ...` (mount.fuse3)
    if argv[:1] == ["demo-server"] and not has_pillow():
        print(DEMO_EXTRA.format(command="demo-server"), file=sys.stderr)
        return 1
    args = build_parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.func  # each parser sets its cmd_*
    return command(args)
