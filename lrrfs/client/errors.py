"""Errors raised by the LANraragi client, and which answers are worth asking again.

Messages are safe to show and log: they never contain the API key or an
Authorization header.
"""

RETRY_STATUSES = frozenset({429, 502, 503, 504})  # a busy or restarting server: ask again
RETRY_DELAYS = (0.2, 0.6)  # seconds before the second and third attempt


class LrrError(Exception):
    """Base class: the server could not give what was asked."""


class ServerUnreachable(LrrError):
    """No answer in time: connection refused, reset, timed out or cut mid-body."""


class AuthRejected(LrrError):
    """The server wants an API key it was not given, or rejected the one it got."""


class NotFound(LrrError):
    """The server does not know the archive or resource."""


class BadResponse(LrrError):
    """The server answered something that breaks the API's contract."""


class ServerError(LrrError):
    """The server answered with an error status (4xx other than auth, or 5xx)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Locked(ServerError):
    """The resource is being written by the server (HTTP 423); try again later."""


def status_error(
    what: str, status: int, detail: str, refusal: str = "refused the request"
) -> LrrError:
    """The error for an HTTP error status (400 and up), the same for every request:
    `detail` says what the server said, `refusal` why it refused (401, 403)."""
    if status in (401, 403):
        return AuthRejected(f"{what}: the server {refusal} (HTTP {status})")
    message = f"{what}: {detail}"
    if status == 404:
        return NotFound(message)
    if status == 423:
        return Locked(message, status)
    return ServerError(message, status)
