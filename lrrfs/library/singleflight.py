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
        self.error: BaseException | None = None


class SingleFlight(Generic[T]):
    """Coalesces concurrent calls for the same key into one."""

    def __init__(self) -> None:
        self._calls: dict[Hashable, _Call[T]] = {}

    async def run(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        call = self._calls.get(key)
        if call is not None:
            await call.done.wait()
            if call.error is not None:
                raise call.error
            return call.result  # type: ignore[return-value]
        call = _Call()
        self._calls[key] = call
        try:
            call.result = await fetch()
            return call.result
        except Exception as exc:
            call.error = exc
            raise
        except BaseException:
            call.error = trio.TooSlowError()  # the first asker was cancelled
            raise
        finally:
            del self._calls[key]
            call.done.set()
