"""The `lrrfs` command line."""

from __future__ import annotations

import argparse
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:  # the mount machinery (pyfuse3, trio) loads only when needed
    from .mount import MountOptions

log = logging.getLogger("lrrfs")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def default_log_file() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "lrrfs" / "lrrfs.log"


def setup_logging(verbose: bool, log_file: Path | None) -> None:
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
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


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def add_mount_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the LANraragi server, e.g. http://nas:3000")
    parser.add_argument("mountpoint", type=Path, help="an empty folder to mount on")
    parser.add_argument(
        "-f", "--foreground", action="store_true", help="stay in the foreground, log to stderr"
    )
    parser.add_argument(
        "--api-key-file",
        type=Path,
        help="file holding the API key (default: the LRR_API_KEY environment variable)",
    )
    parser.add_argument(
        "--refresh-interval",
        type=positive,
        default=60.0,
        metavar="SECONDS",
        help="how often to look for new, changed and deleted archives (default 60)",
    )
    parser.add_argument(
        "--timeout",
        type=positive,
        default=30.0,
        metavar="SECONDS",
        help="longest wait for the server before a file call fails with EIO (default 30)",
    )
    parser.add_argument(
        "--cache-size",
        type=positive,
        default=256,
        metavar="MIB",
        help="memory for cached pages, in MiB (default 256)",
    )
    parser.add_argument(
        "--thumbnail-wait",
        type=positive,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for the server to make a missing thumbnail (default 5)",
    )
    parser.add_argument("--allow-other", action="store_true", help="let other users see the mount")
    parser.add_argument(
        "--no-views",
        action="store_true",
        help="only the archive folders: no @new, @untagged, @tags, @categories, @search",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="do not set the server's reading progress when pages are read",
    )
    parser.add_argument(
        "--clear-new-on-read",
        action="store_true",
        help='clear an archive\'s "new" flag when one of its pages is first read',
    )
    parser.add_argument(
        "--log-file",
        type=Path,
        help=f"log file in the background (default {default_log_file()})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    parser.add_argument("--debug-fuse", action="store_true", help="log every FUSE call")


def mount_options(args: argparse.Namespace) -> MountOptions:
    from .mount import MountOptions

    return MountOptions(
        url=args.url,
        mountpoint=args.mountpoint.absolute(),
        api_key=read_api_key(args.api_key_file),
        refresh_interval=args.refresh_interval,
        timeout=args.timeout,
        cache_bytes=int(args.cache_size * (1 << 20)),
        thumbnail_wait=args.thumbnail_wait,
        allow_other=args.allow_other,
        debug_fuse=args.debug_fuse,
        views=not args.no_views,
        progress=not args.no_progress,
        clear_new_on_read=args.clear_new_on_read,
    )


def cmd_mount(args: argparse.Namespace) -> int:
    from .mount import MountError, mount_in_background, prepare_mountpoint, run_foreground

    options = mount_options(args)
    try:
        if prepare_mountpoint(options.mountpoint):
            print(
                f"lrrfs: {options.mountpoint}: cleared a dead mount (its lrrfs process had died)",
                file=sys.stderr,
            )
    except MountError as exc:
        print(f"lrrfs: {exc}", file=sys.stderr)
        return 1
    if args.foreground:
        setup_logging(args.verbose, args.log_file)

        def ready(error: str | None) -> None:
            if error:
                print(f"lrrfs: {error}", file=sys.stderr)

        return run_foreground(options, ready)
    log_file = args.log_file or default_log_file()
    status = mount_in_background(options, lambda: setup_logging(args.verbose, log_file))
    if status == 0:
        print(f"lrrfs: mounted {args.url} on {options.mountpoint} (log: {log_file})")
    return status


def cmd_umount(args: argparse.Namespace) -> int:
    result = subprocess.run(["fusermount3", "-u", str(args.mountpoint)], check=False)
    return result.returncode


def cmd_demo_server(args: argparse.Namespace) -> int:
    from .testserver.cli import run

    return run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.mountpoint, large_mb=args.large_mb, tour_only=args.tour)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrrfs", description="Mount a LANraragi library as a folder tree."
    )
    parser.add_argument("--version", action="version", version=f"lrrfs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mount = commands.add_parser(
        "mount", help="mount a server's library on a folder", description=cmd_mount.__doc__
    )
    add_mount_arguments(mount)
    mount.set_defaults(func=cmd_mount)

    umount = commands.add_parser("umount", help="unmount (same as fusermount3 -u)")
    umount.add_argument("mountpoint", type=Path)
    umount.set_defaults(func=cmd_umount)

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

    from .testserver.cli import add_arguments as add_server_arguments

    server = commands.add_parser(
        "demo-server", help="serve a folder of archives like a LANraragi server (for tests)"
    )
    add_server_arguments(server)
    server.set_defaults(func=cmd_demo_server)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
