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
from collections.abc import Awaitable, Callable, Coroutine
from types import UnionType
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from ..client import AuthRejected, LrrError, NotFound
from ..client.errors import Busy, Offline
from ..library.background import Throttle, failures_in
from ..library.changes import AlreadyThere, NotPermitted, NotSupported, ReadOnlyView
from ..library.editing import EditConflict, EditError, EditNotAllowed, EditNotKept, EditTooLarge

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


# The first class an error is an instance of decides its errno; the order matters (an
# EditNotKept is an EditError, and is the server's doing, not the text's).
ERRNOS: tuple[tuple[type[Exception] | UnionType, int], ...] = (
    (Offline, errno.EHOSTUNREACH),
    (AlreadyThere, errno.EEXIST),
    (NotPermitted, errno.EPERM),
    (ReadOnlyView, errno.EROFS),
    (NotSupported, errno.ENOTSUP),
    (AuthRejected | EditNotAllowed, errno.EACCES),
    (Busy, errno.EAGAIN),
    (NotFound, errno.ENOENT),
    (EditTooLarge, errno.EFBIG),
    (EditConflict, errno.EBUSY),
    (EditNotKept, errno.EIO),
    (EditError, errno.EINVAL),
)


def errno_for(exc: LrrError | EditError) -> int:
    """EINVAL for bad content, EACCES for auth, EAGAIN for too many calls waiting,
    EHOSTUNREACH for what needs the server while the mount is offline, EIO for the server
    (and the rest)."""
    return next((code for kind, code in ERRNOS if isinstance(exc, kind)), errno.EIO)


_auth_complaints = Throttle()
_busy_complaints = Throttle()


def _log_failure(name: str, exc: LrrError | EditError, code: int) -> None:
    if code in (errno.ENOENT, errno.EHOSTUNREACH):  # offline: logged once, when it began
        log.debug("%s: %s", name, exc)
    elif isinstance(exc, AuthRejected):
        if _auth_complaints.due(str(exc).rsplit(": ", 1)[-1]):
            log.error("%s: %s; file calls get EACCES until the key is fixed", name, exc)
    elif isinstance(exc, Busy):
        if _busy_complaints.due("busy"):
            log.warning("%s; calls that need the server get EAGAIN meanwhile", exc)
    else:
        log.warning("%s: %s", name, exc)


def _domain_error(group: BaseExceptionGroup) -> LrrError | EditError | None:
    return next((e for e in failures_in(group) if isinstance(e, LrrError | EditError)), None)


def fuse_errors(handler: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Wrap a FUSE handler so that no exception but FUSEError leaves it."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except (LrrError, EditError) as exc:
            code = errno_for(exc)
            _log_failure(handler.__name__, exc, code)
            raise pyfuse3.FUSEError(code) from None
        except ExceptionGroup as group:  # from a nursery: the first domain error speaks
            found = _domain_error(group)
            if found is None:
                log.exception("internal error in %s", handler.__name__)
                raise pyfuse3.FUSEError(errno.EIO) from None
            code = errno_for(found)
            _log_failure(handler.__name__, found, code)
            raise pyfuse3.FUSEError(code) from None
        except Exception:
            log.exception("internal error in %s", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper
