"""Telling the kernel that cached entries or attributes went stale.

`pyfuse3.invalidate_*` called on the trio thread can freeze the whole mount
(the kernel may wait on a request that thread must answer), so the calls run
in a worker thread under a timeout.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TypeVarTuple

import pyfuse3
import trio

log = logging.getLogger(__name__)

TIMEOUT = 5.0

Ts = TypeVarTuple("Ts")


async def _in_thread(call: Callable[[*Ts], object], *args: *Ts) -> None:
    with trio.move_on_after(TIMEOUT) as scope:
        # OSError: the kernel did not have it cached, so there is nothing to drop.
        with contextlib.suppress(OSError):
            await trio.to_thread.run_sync(call, *args, abandon_on_cancel=True)
    if scope.cancelled_caught:
        log.warning("kernel cache invalidation timed out (%s)", call.__name__)


async def forget_entry(parent_inode: int, name: str) -> None:
    await _in_thread(pyfuse3.invalidate_entry, parent_inode, name.encode("utf-8"))


async def forget_attributes(inode: int) -> None:
    """Drop the kernel's cached attributes and data of an inode."""
    await _in_thread(pyfuse3.invalidate_inode, inode, False)
