"""One fetch at a time per key: concurrent askers share the first one's result."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar, cast

import trio

T = TypeVar("T")
Deliver = Callable[[Hashable, T], None]  # hands over one key's value


class _Call(Generic[T]):
    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: T | None = None
        self.error: Exception | None = None
        self.cancelled = False


class SingleFlight(Generic[T]):
    """Coalesces concurrent calls for the same key into one.

    If the first asker is cancelled (a background prefetch given up, a deadline),
    the others do not fail with it: one of them fetches again.
    """

    def __init__(self) -> None:
        self._calls: dict[Hashable, _Call[T]] = {}

    async def run(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        while True:
            call = self._calls.get(key)
            if call is None:
                return await self._lead(key, fetch)
            await call.done.wait()
            if call.error is not None:
                raise call.error
            if not call.cancelled:
                # Neither failed nor cancelled: the leader set the result (None only if
                # T allows it).
                return cast(T, call.result)

    def running(self, key: Hashable) -> bool:
        return key in self._calls

    async def run_many(
        self, keys: list[Hashable], fetch: Callable[[Deliver[T]], Awaitable[None]]
    ) -> None:
        """Fetch several keys with one call (the caller checked that none is running).
        The call hands each value to `deliver(key, value)` as soon as it has it, and that
        key's askers go on at once. A key the call did not deliver leaves its askers to
        fetch it themselves."""
        calls: dict[Hashable, _Call[T]] = {key: _Call() for key in keys}
        self._calls.update(calls)

        def deliver(key: Hashable, value: T) -> None:
            call = calls.pop(key, None)
            if call is not None:
                call.result = value
                self._finish(key, call)

        try:
            await fetch(deliver)
            for call in calls.values():
                call.cancelled = True  # not delivered
        except Exception as exc:
            for call in calls.values():
                call.error = exc
            raise
        except BaseException:
            for call in calls.values():
                call.cancelled = True
            raise
        finally:
            for key, call in calls.items():
                self._finish(key, call)

    def _finish(self, key: Hashable, call: _Call[T]) -> None:
        del self._calls[key]
        call.done.set()

    async def _lead(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        call: _Call[T] = _Call()
        self._calls[key] = call
        try:
            call.result = await fetch()
            return call.result
        except Exception as exc:
            call.error = exc
            raise
        except BaseException:
            call.cancelled = True
            raise
        finally:
            del self._calls[key]
            call.done.set()
