"""File names from server-given strings: valid, unique and stable.

A title can hold anything: `/`, NUL, control characters, lone surrogates,
thousands of bytes, or be empty. Folder names must be valid Linux file names
(no `/` or NUL, not `.`/`..`, at most 255 bytes of UTF-8), unique in their
folder, and the same for the same archive across refreshes and remounts while
its title is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

NAME_MAX = 255
EMPTY_NAME = "(untitled)"
VIEW_MARK = "@"  # names of the views start with it; archive folders' names never do
VIEW_MARK_ESCAPE = "\uff20"  # FULLWIDTH COMMERCIAL AT


def _safe_char(char: str) -> str:
    code = ord(char)
    if char == "/":
        return "\uff0f"  # FULLWIDTH SOLIDUS, as rclone does
    if code < 0x20:
        return chr(0x2400 + code)  # the control picture of the character, e.g. ␀
    if code == 0x7F:
        return "\u2421"  # ␡
    if 0xD800 <= code <= 0xDFFF:
        return "\ufffd"  # a lone surrogate cannot be encoded as UTF-8
    return char


def truncate_utf8(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, on a character boundary."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


def clean_name(text: str) -> str:
    """`text` with every character a file name cannot or should not hold replaced."""
    name = "".join(_safe_char(c) for c in text).strip()
    if not name:
        return EMPTY_NAME
    if name in (".", ".."):
        return name.replace(".", "\uff0e")  # FULLWIDTH FULL STOP
    return name


def escape_view_mark(name: str) -> str:
    """A name that cannot be taken for a view's: a leading `@` becomes `＠`."""
    return VIEW_MARK_ESCAPE + name[1:] if name.startswith(VIEW_MARK) else name


def fit_name(clean: str, suffix: str = "") -> str:
    """A cleaned name cut to fit NAME_MAX bytes, with `suffix` kept whole at the end."""
    return truncate_utf8(clean, NAME_MAX - len(suffix.encode("utf-8"))) + suffix


def safe_name(text: str, *, suffix: str = "") -> str:
    """A valid file name that shows `text`, with `suffix` kept whole at the end."""
    return fit_name(clean_name(text), suffix)


@dataclass(frozen=True, slots=True)
class NameRequest:
    """An archive asking for a folder name; older archives win a contested name."""

    arcid: str
    title: str
    added: int  # date_added epoch, 0 when the server does not say


def assign_names(
    requests: Iterable[NameRequest],
    previous: dict[str, tuple[str, str]] | None = None,
    reserved: frozenset[str] = frozenset(),
    *,
    escape_views: bool = False,
) -> dict[str, str]:
    """Map arcid -> unique folder name.

    `previous` maps arcid -> (title, name) from the last assignment: an archive
    whose title did not change keeps its name, so names never move under a
    running program. Otherwise, among archives that want the same name, the one
    added first (then the lowest arcid) gets it plain and the others get
    ` [<arcid prefix>]`, which is deterministic across remounts. With
    `escape_views`, a title starting with `@` is shown with `＠` instead, so
    that no folder can pass for a view.
    """
    previous = previous or {}
    wanted = sorted(requests, key=lambda r: (r.added, r.arcid))
    taken: set[str] = set(reserved)
    names: dict[str, str] = {}
    pending: list[NameRequest] = []
    for request in wanted:
        old = previous.get(request.arcid)
        if old and old[0] == request.title and old[1] not in taken:
            names[request.arcid] = old[1]
            taken.add(old[1])
        else:
            pending.append(request)
    for request in pending:
        clean = clean_name(request.title)
        if escape_views:
            clean = escape_view_mark(clean)
        names[request.arcid] = _free_name(clean, request.arcid, taken)
    return names


def assign_file_names(requests: Iterable[NameRequest]) -> dict[str, str]:
    """Map unique file name -> arcid, for archives' files side by side (`@files`).

    `title` is the file's own name (valid already, `x.cbz`). Among files of the same
    name, the archive added first (then the lowest arcid) keeps it and the others get
    ` [<arcid prefix>]` before the extension (`x [0123abcd].cbz`), so a program still
    knows the file by its extension.
    """
    taken: set[str] = set()
    files: dict[str, str] = {}
    for request in sorted(requests, key=lambda r: (r.added, r.arcid)):
        stem, dot, extension = request.title.rpartition(".")
        if not (dot and stem):
            stem, extension = request.title, ""
        files[_free_name(stem, request.arcid, taken, dot + extension)] = request.arcid
    return files


def _free_name(clean: str, arcid: str, taken: set[str], extension: str = "") -> str:
    """`clean` + `extension`, or with ` [<arcid prefix>]` before the extension when that
    name is taken; the name returned is added to `taken`."""
    name = fit_name(clean, extension)
    length = 8
    while name in taken:
        # A clash with another suffix: lengthen it (arcids are unique); past the
        # whole arcid (a title made to clash) count up.
        tag = arcid[:length] if length <= 40 else f"{arcid} {length - 40}"
        name = fit_name(clean, f" [{tag}]{extension}")
        length += 4 if length < 40 else 1
    taken.add(name)
    return name
