"""Errors raised by the LANraragi client.

Messages are safe to show and log: they never contain the API key or an
Authorization header.
"""


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
