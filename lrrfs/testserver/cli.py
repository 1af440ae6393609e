"""Command line of the test server: `lrrfs demo-server` and `python -m lrrfs.testserver`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .server import GENERATIONS, TestServer, check_loopback


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--library", required=True, type=Path, help="folder of archive files")
    parser.add_argument("--port", type=int, default=3000, help="TCP port (0: pick a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument(
        "--api-key-file", type=Path, help="file holding the API key (none: no password)"
    )
    parser.add_argument("--api-generation", choices=GENERATIONS, default="0.9")
    parser.add_argument("--faults", action="store_true", help="enable the /_lrrfs/ routes")
    parser.add_argument("--latency-ms", type=float, default=0, help="delay of every /api call")
    parser.add_argument(
        "--thumbnail-delay",
        type=float,
        default=0.3,
        metavar="S",
        help="how long a thumbnail job takes (default 0.3)",
    )
    parser.add_argument(
        "--missing-page-hang",
        type=float,
        default=30.0,
        metavar="S",
        help="how long a missing page (0.9) or the download of an unknown id (0.7) is held "
        "without an answer before the connection is closed, like a real server (default 30)",
    )
    parser.add_argument("--no-fun-mode", action="store_true", help="every /api call needs the key")


def run(args: argparse.Namespace) -> int:
    try:
        check_loopback(args.host)
    except ValueError as exc:
        print(f"lrrfs demo-server: {exc}", file=sys.stderr)
        return 2
    api_key = None
    if args.api_key_file is not None:
        try:
            api_key = args.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            print(f"lrrfs demo-server: cannot read the API key file: {exc}", file=sys.stderr)
            return 2
    server = TestServer(
        args.library,
        generation=args.api_generation,
        api_key=api_key or None,
        host=args.host,
        port=args.port,
        faults=args.faults,
        latency_ms=args.latency_ms,
        thumbnail_delay=args.thumbnail_delay,
        missing_page_hang=args.missing_page_hang,
        nofun=args.no_fun_mode,
    )
    try:
        server.start()
    except (OSError, ValueError) as exc:
        print(f"lrrfs demo-server: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"lrrfs demo-server listening on {server.url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lrrfs.testserver", description="LANraragi-compatible test server"
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
