"""Domain errors to errno, in one place: every FUSE handler goes through here.

pyfuse3 catches only `FUSEError`; anything else escaping a handler kills the
process and leaves the mount point dead. So every handler is wrapped: FUSE
errors pass, client errors become their errno with one log line, and any other
exception is logged with its traceback and becomes EIO.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import pyfuse3

from ..client import AuthRejected, LrrError, NotFound
from ..library.editing import EditConflict, EditError, EditNotAllowed, EditTooLarge

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


def errno_for(exc: LrrError | EditError) -> int:
    """EINVAL for bad content, EACCES for auth, EIO for the server (and the rest)."""
    if isinstance(exc, AuthRejected | EditNotAllowed):
        return errno.EACCES
    if isinstance(exc, NotFound):
        return errno.ENOENT
    if isinstance(exc, EditTooLarge):
        return errno.EFBIG
    if isinstance(exc, EditConflict):
        return errno.EBUSY
    if isinstance(exc, EditError):
        return errno.EINVAL
    return errno.EIO


def fuse_errors(handler: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Wrap a FUSE handler so that no exception but FUSEError leaves it."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except (LrrError, EditError) as exc:
            code = errno_for(exc)
            level = logging.DEBUG if code == errno.ENOENT else logging.WARNING
            log.log(level, "%s: %s", handler.__name__, exc)
            raise pyfuse3.FUSEError(code) from None
        except Exception:
            log.exception("internal error in %s", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper
