"""One fetch at a time per key: concurrent askers share the first one's result."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


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
                return call.result  # type: ignore[return-value]

    def running(self, key: Hashable) -> bool:
        return key in self._calls

    async def run_many(
        self, keys: list[Hashable], fetch: Callable[[], Awaitable[dict[Hashable, T]]]
    ) -> None:
        """Fetch several keys with one call (the caller checked that none is running);
        an asker of any of them gets its share. A key the call did not deliver leaves its
        askers to fetch it themselves."""
        calls: dict[Hashable, _Call[T]] = {key: _Call() for key in keys}
        self._calls.update(calls)
        try:
            results = await fetch()
            for key, call in calls.items():
                call.result = results.get(key)
                call.cancelled = key not in results
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
