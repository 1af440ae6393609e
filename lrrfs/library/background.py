"""Work nobody waits for (refreshes, prefetch, kernel updates): it must never end the mount.

Such work runs in the mount's own nursery, where an escaping exception would stop the
whole file system. Every piece of it runs `quietly`: a failure is reported to `FAILURES`
(logged once per kind a minute, kept for `lrrfs status`) and the mount goes on. A nursery
inside may raise a group mixing a cancellation with real failures (trio's strict
exception groups): the failures are reported, the cancellation still passes.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import trio

from ..client import LrrError
from ..client.errors import printable

log = logging.getLogger(__name__)

LOG_EVERY = 60.0  # seconds: one log line per kind of failure at most this often
KEPT = 10  # recent failures `lrrfs status` shows


class Throttle:
    """Say a repeated complaint once in a while (once a minute), not once per call."""

    def __init__(self, every: float = LOG_EVERY) -> None:
        self._every = every
        self._last: dict[object, float] = {}

    def due(self, key: object) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -self._every) < self._every:
            return False
        self._last[key] = now
        return True


class Failures:
    """Failures of background work: logged, throttled, and the last few kept."""

    def __init__(self, every: float = LOG_EVERY, kept: int = KEPT) -> None:
        self._throttle = Throttle(every)
        self._silenced: dict[tuple[str, str], int] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=kept)
        self.count = 0

    def record(self, what: str, reason: str, bug: bool = False) -> None:
        """Keep a failure for `lrrfs status` (the caller logged it)."""
        self.count += 1
        text = printable(reason, 300)
        self.recent.append({"time": time.time(), "what": what, "error": text, "bug": bug})

    def report(self, what: str, exc: BaseException) -> None:
        """A server's fault is a warning; anything else is a bug in lrrfs, with its traceback."""
        bug = not isinstance(exc, LrrError)
        text = printable(str(exc) or type(exc).__name__, 300)
        self.record(what, text, bug)
        kind = (what.split(" ", 1)[0], type(exc).__name__)
        if not self._throttle.due(kind):
            self._silenced[kind] = self._silenced.get(kind, 0) + 1
            return
        silenced = self._silenced.pop(kind, 0)
        more = f" ({silenced} more like it not logged)" if silenced else ""
        if bug:
            log.error("%s failed (a bug in lrrfs; the mount goes on)%s", what, more, exc_info=exc)
        else:
            log.warning("%s failed: %s%s", what, text, more)


FAILURES = Failures()  # one mount per process


def failures_in(group: BaseExceptionGroup) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from failures_in(exc)
        else:
            yield exc


async def quietly(job: Awaitable[object], what: str) -> None:
    """Await `job`; a failure is reported, never raised (a cancellation still is)."""
    try:
        await job
    except BaseExceptionGroup as group:
        cancelled, failures = group.split(trio.Cancelled)
        if failures is not None:
            for exc in failures_in(failures):
                FAILURES.report(what, exc)
        if cancelled is not None:
            raise cancelled from None
    except Exception as exc:
        FAILURES.report(what, exc)


async def repeat(
    work: Callable[[], Awaitable[object]], interval: float, what: str, first: float | None = None
) -> None:
    """`work()` every `interval` seconds (the first after `first`), quietly, for ever."""
    delay = interval if first is None else first
    while True:
        await trio.sleep(delay)
        delay = interval
        await quietly(work(), what)


def start_quietly(
    nursery: trio.Nursery | None, job: Coroutine[Any, Any, object], what: str
) -> None:
    """Run `job` in `nursery`, `quietly`; before there is a nursery (not mounted), drop it."""
    if nursery is None:
        job.close()
    else:
        nursery.start_soon(quietly, job, what)
