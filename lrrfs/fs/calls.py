"""Bounds on FUSE calls: one overall deadline each, and a cap on calls waiting at once.

pyfuse3 ignores FUSE_INTERRUPT: a program in a call that waits sits in D state, immune
even to SIGKILL, until the handler returns. So every call that may wait on the server
runs under one deadline, whatever it loops over inside.

pyfuse3 runs at most `MAX_TASKS` calls at once; once they all wait on the network, even
a call answered from memory (the root's listing, `stat` of a known file) queues behind
them. So at most `WAITING_CALLS` bounded calls run at once: one past that runs only as
far as memory takes it. Its cancel scope is cancelled from the start, so it fails with
`Busy` at its first wait, and a call that needs no wait answers as usual.
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

P = ParamSpec("P")
T = TypeVar("T")


class CallLimits:
    """The deadline of each bounded call, and how many run now."""

    def __init__(self, timeout: float, waiting: int = WAITING_CALLS) -> None:
        self.timeout = timeout
        self.most = waiting
        self.running = 0

    @contextmanager
    def bounded(self, what: str) -> Iterator[None]:
        """Run the body within the deadline (CallTimedOut past it), or, with too many
        calls running already, only as long as it does not wait (Busy)."""
        self.running += 1
        crowded = self.running > self.most
        try:
            with trio.CancelScope(deadline=trio.current_time() + self.timeout) as scope:
                if crowded:
                    scope.cancel()
                yield
        finally:
            self.running -= 1
        if scope.cancelled_caught:
            if crowded:
                raise Busy(f"{what}: {self.most} calls already wait on the server")
            raise CallTimedOut(f"{what}: no answer within {self.timeout:g} s")


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
