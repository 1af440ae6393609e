"""Bounds on FUSE calls: one overall deadline each, and a cap on calls waiting at once.

pyfuse3 ignores FUSE_INTERRUPT: a program in a call that waits sits in D state, immune
even to SIGKILL, until the handler returns. So every call that may wait on the server
runs under one deadline, whatever it loops over inside.

pyfuse3 runs at most `MAX_TASKS` calls at once; once they all wait on the network, even
a call answered from memory (the root's listing, `stat` of a known file) queues behind
them. So at most `WAITING_CALLS` bounded calls run at once: one past that runs only as
far as memory takes it. Its cancel scope is cancelled from the start, so it fails with
`Busy` at its first wait, and a call that needs no wait answers as usual.

The kernel retries a failed read of a cached file at once, itself (its read-ahead
failed, so it reads the page again): one `read()` would wait twice the deadline. So
a read that comes within `RETRY_WINDOW` of a failed one on the same open file is the
same caller's retry: it gets what was left of the failed read's deadline, not a new one.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import trio

from ..client.errors import Busy, CallTimedOut

MAX_TASKS = 128  # calls pyfuse3 serves at once
WAITING_CALLS = 96  # of them, calls that may wait on the server: the rest stay for memory
RETRY_WINDOW = 1.0  # seconds: the kernel's own retry of a failed read comes sooner

P = ParamSpec("P")
T = TypeVar("T")


class CallLimits:
    """The deadline of each bounded call, and how many run now."""

    def __init__(self, timeout: float, waiting: int = WAITING_CALLS) -> None:
        self.timeout = timeout
        self.most = waiting
        self.running = 0

    @contextmanager
    def bounded(self, what: str, since: float | None = None) -> Iterator[None]:
        """Run the body within the deadline from `since` (default: now; CallTimedOut past
        it), or, with too many calls running already, only as long as it does not wait
        (Busy). A body that needs no wait runs even past the deadline."""
        self.running += 1
        crowded = self.running > self.most
        start = trio.current_time() if since is None else since
        try:
            with trio.CancelScope(deadline=start + self.timeout) as scope:
                if crowded:
                    scope.cancel()
                yield
        finally:
            self.running -= 1
        if scope.cancelled_caught:
            if crowded:
                raise Busy(f"{what}: {self.most} calls already wait on the server")
            raise CallTimedOut(f"{what}: no answer within {self.timeout:g} s")


class ReadRetries:
    """When the last failed read of one open file began and ended: the kernel's retry of
    it shares its deadline (see the module's docstring)."""

    __slots__ = ("began", "ended")

    def __init__(self) -> None:
        self.began = self.ended = -RETRY_WINDOW

    @contextmanager
    def bounded(self, calls: CallLimits) -> Iterator[None]:
        """`calls.bounded("read")`, from the failed read's start if this is its retry."""
        now = trio.current_time()
        since = self.began if now - self.ended < RETRY_WINDOW else now
        try:
            with calls.bounded("read", since):
                yield
        except Exception:
            self.began, self.ended = since, trio.current_time()
            raise


class HasCallLimits(Protocol):
    calls: CallLimits


S = TypeVar("S", bound=HasCallLimits)


def bounded(
    handler: Callable[Concatenate[S, P], Awaitable[T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """A handler that may wait on the server: run it under `self.calls.bounded`."""

    @functools.wraps(handler)
    async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with self.calls.bounded(handler.__name__):
            return await handler(self, *args, **kwargs)

    return wrapper
