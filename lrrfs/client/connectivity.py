"""Is the server there? The mount's online/offline state, told by the calls themselves.

The client reports every call's outcome here: an answer of any kind (even an HTTP error)
proves the server is there; `NoConnection` (refused, no route, no such name, no answer at
all) counts against it. After `FAILURES_TO_OFFLINE` such failures in a row, with no answer
for `QUIET_SECONDS`, the mount is offline: said once in the log, and every call that would
need the server fails at once (`Offline`) instead of waiting for the deadline. Meanwhile
`watch` probes the server in the background, backing off, and brings the mount back
online as soon as the probe (and what the caller wants done then: a refresh) succeeds.

Probes pass the gate: they run with `PROBING` set, which tasks started from them inherit.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from enum import Enum

import trio

from .errors import LrrError, NoConnection, Offline

log = logging.getLogger(__name__)

FAILURES_TO_OFFLINE = 3  # calls that found no server, in a row
QUIET_SECONDS = 2.0  # ...and no answer from it for this long
FIRST_PROBE = 1.0  # seconds before the first probe; then doubled, up to the interval
PROBING: contextvars.ContextVar[bool] = contextvars.ContextVar("lrrfs_probing", default=False)


class Mode(Enum):
    """What the user asked for: go offline by itself, always, or never."""

    AUTO = "auto"
    FORCED = "forced"  # --offline: never asks the server
    NEVER = "never"  # --no-offline: every call asks the server, and waits for it


class Connectivity:
    """The mount's view of whether the server is reachable."""

    def __init__(self, mode: Mode = Mode.AUTO, probe_interval: float = 60.0) -> None:
        self.mode = mode
        self.probe_interval = probe_interval  # the most between two probes
        self.offline = mode is Mode.FORCED
        self.since = time.time()  # of the current state
        self.last_error = "--offline" if self.offline else ""
        self.last_error_at: float | None = None
        self._failures = 0
        self._last_answer = time.monotonic()
        self._went_offline = trio.Event()
        if self.offline:
            self._went_offline.set()

    # -- what calls report --------------------------------------------------------

    def check(self, what: str) -> None:
        """Raise `Offline` for a call that would need the server, unless it is a probe."""
        if self.offline and not PROBING.get():
            raise Offline(f"{what}: the server is offline ({self.describe()})")

    def answered(self) -> None:
        self._failures = 0
        self._last_answer = time.monotonic()

    def failed(self, exc: LrrError) -> None:
        """A call ended with `exc`; only `NoConnection` counts toward going offline."""
        if not isinstance(exc, NoConnection):
            return
        self.last_error = str(exc)
        self.last_error_at = time.time()
        self._failures += 1
        quiet = time.monotonic() - self._last_answer >= QUIET_SECONDS
        if (
            self.mode is Mode.AUTO
            and not self.offline
            and self._failures >= FAILURES_TO_OFFLINE
            and quiet
        ):
            self.go_offline(str(exc))

    # -- changes of state -----------------------------------------------------------

    def go_offline(self, reason: str) -> None:
        """Offline from now on (logged once), until a probe finds the server."""
        if self.offline or self.mode is Mode.NEVER:
            return
        self.offline = True
        self.since = time.time()
        self.last_error = reason
        self.last_error_at = self.since
        self._went_offline.set()
        log.warning(
            "the server cannot be reached (%s): offline; cached files still read, the rest "
            "fails at once; probing it every %g s at most",
            reason,
            self.probe_interval,
        )

    def go_online(self) -> None:
        if not self.offline:
            return
        was = time.time() - self.since
        self.offline = False
        self.since = time.time()
        self._failures = 0
        self._last_answer = time.monotonic()
        self._went_offline = trio.Event()
        log.info("the server answers again: online (offline for %.0f s)", was)

    def describe(self) -> str:
        """Since when, and why: for messages."""
        when = time.strftime("%H:%M:%S", time.localtime(self.since))
        return f"since {when}: {self.last_error}" if self.last_error else f"since {when}"

    def state(self) -> dict[str, object]:
        """For `lrrfs status`."""
        return {
            "online": not self.offline,
            "connectivity_since": self.since,
            "last_error": self.last_error or None,
            "last_error_at": self.last_error_at,
            "offline_mode": self.mode.value,
        }

    # -- the probe ------------------------------------------------------------------

    def next_delay(self, delay: float) -> float:
        """The wait before the probe after one that failed: doubled, up to the interval."""
        return min(self.probe_interval, delay * 2)

    async def watch(
        self,
        probe: Callable[[], Awaitable[object]],
        then: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """For ever: once offline, run `probe` (backing off) until it succeeds, then go
        online, then run `then` (as any call, through the gate). `probe` talks to the
        server past the gate; an `LrrError` is a failure. Online comes before `then`: what
        `then` shows (new archives) must not be seen while calls still fail as offline."""
        if self.mode is not Mode.AUTO:
            return  # forced offline stays offline; never offline needs no probe
        while True:
            await self._went_offline.wait()
            delay = min(FIRST_PROBE, self.probe_interval)
            while self.offline:
                await trio.sleep(delay)
                if await self._probe_once(probe):
                    self.go_online()
                    if then is not None:
                        await then()
                else:
                    delay = self.next_delay(delay)

    async def _probe_once(self, probe: Callable[[], Awaitable[object]]) -> bool:
        token = PROBING.set(True)
        try:
            await probe()
        except LrrError as exc:
            self.last_error = str(exc)
            self.last_error_at = time.time()
            log.debug("probe: %s", exc)
            return False
        finally:
            PROBING.reset(token)
        return True


__all__ = ["PROBING", "Connectivity", "Mode", "NoConnection", "Offline"]
