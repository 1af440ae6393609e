"""Telling others: systemd (Type=notify units) that the mount is ready or stopping, and
the user's desktop that a save failed.

systemd passes the address of a datagram socket in NOTIFY_SOCKET; a message is
newline-separated `NAME=value` lines (see sd_notify(3)). Outside systemd
NOTIFY_SOCKET is unset and every call does nothing. A desktop notification goes
through `notify-send` where a session bus exists (DBUS_SESSION_BUS_ADDRESS).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess

import trio

log = logging.getLogger(__name__)


def notify(*lines: str) -> bool:
    """Send `lines` (e.g. "READY=1") to systemd; True if sent, False if not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not address.startswith(("/", "@")):
        return False  # not under systemd (vsock: addresses are for VMs, not for a mount)
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode("utf-8"))
    except OSError as exc:  # systemd gone or socket unusable: the mount works anyway
        log.warning("could not notify systemd on %s: %s", address.lstrip("\0"), exc)
        return False
    return True


def ready(status: str) -> bool:
    return notify("READY=1", f"STATUS={status}")


def stopping(status: str) -> bool:
    return notify("STOPPING=1", f"STATUS={status}")


DESKTOP_TIMEOUT = 5.0  # seconds for notify-send to hand the message over


async def desktop(summary: str, body: str) -> bool:
    """Show a desktop notification, if there is a desktop; True if one was shown."""
    program = shutil.which("notify-send")
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS") or program is None:
        return False
    with trio.move_on_after(DESKTOP_TIMEOUT):
        done = await trio.run_process(
            [program, "--app-name=lrrfs", "--icon=dialog-error", summary, body],
            check=False,
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
        )
        return done.returncode == 0
    return False
