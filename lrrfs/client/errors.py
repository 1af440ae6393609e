"""Errors raised by the LANraragi client, and which answers are worth asking again.

Messages are safe to show and log: they never contain the API key or an
Authorization header, and text the server wrote reaches them only through
`printable` (no terminal control sequences).
"""

import re
import unicodedata

RETRY_STATUSES = frozenset({429, 502, 503, 504})  # a busy or restarting server: ask again
RETRY_DELAYS = (0.2, 0.6)  # seconds before the second and third attempt


class LrrError(Exception):
    """Base class: the server could not give what was asked."""


class ServerUnreachable(LrrError):
    """No answer in time: connection refused, reset, timed out or cut mid-body."""


class NoConnection(ServerUnreachable):
    """The server was not reached at all: connection refused, no route, a name that does
    not resolve, or no answer whatsoever within the deadline (a host that hangs). What
    the mount counts to tell that it is offline; an answer of any kind is not this."""


class Offline(ServerUnreachable):
    """Not asked: the mount is offline, and only what is cached can be read."""


class AuthRejected(LrrError):
    """The server wants an API key it was not given, or rejected the one it got."""


class NotFound(LrrError):
    """The server does not know the archive or resource."""


class BadResponse(LrrError):
    """The server answered something that breaks the API's contract."""


class TooLarge(BadResponse):
    """An answer longer than any real one of its kind (a body cap, see `transport.py`)."""


class CallTimedOut(LrrError):
    """A whole call (all its requests together) ran past its deadline."""


class Busy(LrrError):
    """Too many calls already wait on the server: this one is not queued behind them."""


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


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def server_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """What a server wrote, fit to show: its copies of our secrets (a server may echo the
    Authorization header) redacted, control characters gone."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return printable(text)


def printable(text: str, limit: int = 200) -> str:
    """Server text made safe for a terminal or a log line: control characters (ESC, BEL,
    bidi overrides...) become spaces, and the text is cut to `limit` characters."""
    text = unicodedata.normalize("NFC", text)[: limit * 2]
    return " ".join(_UNPRINTABLE.sub(" ", text).split())[:limit]
