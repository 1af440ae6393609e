"""Work nobody waits for (prefetch, retries of placeholders): it must never end the mount.

Such work runs in the mount's own nursery, where an escaping exception would stop the
whole file system. A nursery inside it may raise a group mixing a cancellation with the
real failure: the failure is logged, the cancellation still passes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Coroutine
from typing import Any

import trio

log = logging.getLogger(__name__)


async def quietly(job: Awaitable[object], what: str) -> None:
    try:
        await job
    except BaseExceptionGroup as group:
        cancelled, failures = group.split(trio.Cancelled)
        if failures is not None:
            log.info("%s failed: %s", what, "; ".join(map(str, failures.exceptions)))
        if cancelled is not None:
            raise cancelled from None
    except Exception as exc:
        log.info("%s failed: %s", what, exc)


def start_quietly(
    nursery: trio.Nursery | None, job: Coroutine[Any, Any, object], what: str
) -> None:
    """Run `job` in `nursery`, `quietly`; before there is a nursery (not mounted), drop it."""
    if nursery is None:
        job.close()
    else:
        nursery.start_soon(quietly, job, what)
