"""Views: the library the way LANraragi users browse it, beside the archive folders.

    @new/                       archives flagged new
    @untagged/                  the archives the server counts as untagged
    @tags/<namespace>/<value>/  archives with that tag; tags without a namespace in @tags/_/
    @categories/<name>/         a category's archives: its list, or its saved search's result
    @tankoubons/<name>/         a tankoubon's archives (0.9), numbered in its order
    @search/<query>/            the server's search for <query>, made when looked up
    @offline/                   archives whose every file the disk cache holds
    @files/                     every archive's original file, side by side (backups)

The folders at the bottom link to archive folders; this module decides which
archives are in which view: from the archive list (new, tags) and from what only
the server knows (untagged, categories, searches), asked again at every refresh.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar, Union

import trio
from cachetools import LRUCache

from ..client import ArchiveMeta, Category, LrrClient, LrrError
from ..client.writes import Tankoubon, tankoubons
from .background import quietly
from .names import safe_name
from .singleflight import SingleFlight

log = logging.getLogger(__name__)

NEW = "@new"
UNTAGGED = "@untagged"
TAGS = "@tags"
CATEGORIES = "@categories"
SEARCH = "@search"
OFFLINE = "@offline"
FILES = "@files"
TANKOUBONS = "@tankoubons"
VIEW_NAMES = (CATEGORIES, FILES, NEW, OFFLINE, SEARCH, TAGS, UNTAGGED)
BARE_TAGS = "_"  # @tags/_/<tag>: tags without a namespace
BARE_TAGS_ESCAPE = "\uff3f"  # FULLWIDTH LOW LINE: a namespace really named "_"
HIDDEN_NAMESPACES = frozenset({"date_added"})  # one value per archive: useless as folders
SEARCHES_KEPT = 64

# A view folder is a dict of subfolders, or the set of archive ids it links to.
Tree = dict[str, Union["Tree", frozenset[str]]]


@dataclass(frozen=True, slots=True)
class ViewFolder:
    """What a view folder holds: subfolders, or links to archives (by id).

    `any_name`: any name is a subfolder, made when looked up (like autofs); none is listed.
    `files`: it links to every archive's own file, not folder (`@files`; the library names
    the links, `Library.files_view`).
    """

    folders: tuple[str, ...] = ()
    members: frozenset[str] = frozenset()
    any_name: bool = False
    order: tuple[str, ...] = ()  # the members in their order (tankoubons): links numbered
    files: bool = False


PLACE_RE = re.compile(r"0*([0-9]{1,6}) (.+)", re.DOTALL)  # a tankoubon's link: "03 Name"


def numbered_links(names: list[str]) -> dict[str, int]:
    """A tankoubon's links, named so that a listing sorted by name shows their order
    ("01 Name", "02 Other"): link name -> index in `names`."""
    width = max(2, len(str(len(names))))
    return {f"{place:0{width}d} {name}": place - 1 for place, name in enumerate(names, 1)}


def place_of(link: str) -> tuple[int, str] | None:
    """(place from 1, folder name) of a tankoubon's link name, None if it is not one."""
    found = PLACE_RE.fullmatch(link)
    return None if found is None else (int(found[1]), found[2])


@functools.lru_cache(maxsize=1 << 16)  # tags repeat across archives; naming them is the cost
def tag_folder(tag: str) -> tuple[str, str] | None:
    """Where a tag lives under @tags: (namespace folder, value folder), or None if hidden."""
    namespace, colon, value = tag.partition(":")
    namespace, value = namespace.strip(), value.strip()
    if not colon or not namespace:
        return BARE_TAGS, safe_name(value if colon else tag)
    if namespace in HIDDEN_NAMESPACES:
        return None
    folder = safe_name(namespace)
    return (BARE_TAGS_ESCAPE if folder == BARE_TAGS else folder), safe_name(value)


def _arcids(saved: object) -> frozenset[str]:
    if not isinstance(saved, list) or not all(isinstance(arcid, str) for arcid in saved):
        raise TypeError("not a list of archive ids")
    return frozenset(saved)


class _Group(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...


G = TypeVar("G", bound=_Group)


def group_folders(groups: Iterable[G], what: str) -> dict[str, G]:
    """Folder name -> category or tankoubon (`what`); a name two share gets ` [<id>]` on
    the later one."""
    named: dict[str, G] = {}
    for group in sorted(groups, key=lambda g: g.id):
        name = safe_name(group.name)
        if name in named:
            name = safe_name(group.name, suffix=f" [{group.id}]")
        if name in named:  # named like another's suffixed name: rare, skipped
            log.warning("views: %s %r has no free folder name", what, group.name)
            continue
        named[name] = group
    return named


# Names programs probe for in every folder: `*/metadata.json` globs, file managers' covers
# and settings. A query never looks like a file name.
FILE_NAME_RE = re.compile(r".*\.[A-Za-z][A-Za-z0-9]{1,4}")


def searchable(query: str) -> bool:
    """A folder name that can be sent as a query: not a hidden name (file managers look up
    `.hidden`, `.directory`, `.Trash-1000` in every folder), not a file's name
    (`metadata.json`, `folder.jpg`, `desktop.ini`), no undecodable bytes."""
    if query.startswith(".") or FILE_NAME_RE.fullmatch(query):
        return False
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Views:
    """Which archives are in which view; refreshed with the archive list."""

    def __init__(self, client: LrrClient) -> None:
        self._client = client
        self._new: frozenset[str] = frozenset()
        self._tags: Tree = {}
        self._untagged: frozenset[str] = frozenset()
        self._categories: Tree = {}
        self._searches: LRUCache[str, frozenset[str]] = LRUCache(SEARCHES_KEPT)
        self._flights: SingleFlight[frozenset[str]] = SingleFlight()
        self.categories: dict[str, Category] = {}  # folder name -> category
        self.tankoubons: dict[str, Tankoubon] | None = (
            None  # folder name -> tankoubon; None: no API
        )
        # The archives readable offline: the library's to say (it knows the disk cache).
        self.offline: Callable[[], Awaitable[frozenset[str]]] = _nothing

    def update(self, metas: Iterable[ArchiveMeta]) -> None:
        """What the archive list tells: the new archives and the tags."""
        new: set[str] = set()
        tags: dict[str, dict[str, set[str]]] = {}
        for meta in metas:
            if meta.isnew:
                new.add(meta.arcid)
            for tag in meta.tags:
                where = tag_folder(tag)
                if where is not None:
                    tags.setdefault(where[0], {}).setdefault(where[1], set()).add(meta.arcid)
        self._new = frozenset(new)
        self._tags = {
            namespace: {value: frozenset(ids) for value, ids in values.items()}
            for namespace, values in tags.items()
        }

    async def refresh(self) -> None:
        """Ask the server again what only it knows. A part that fails keeps its last
        answer, and says why in the log: a refresh never raises."""
        self._searches.clear()  # searches are asked again when next looked at
        async with trio.open_nursery() as nursery:
            nursery.start_soon(quietly, self._refresh_untagged(), "views: untagged archives")
            nursery.start_soon(quietly, self.refresh_categories(), "views: categories")
            if self.tankoubons is not None:
                nursery.start_soon(quietly, self.refresh_tankoubons(), "views: tankoubons")

    async def refresh_tankoubons(self) -> None:
        self.tankoubons = group_folders(await tankoubons(self._client), "tankoubon")

    async def _refresh_untagged(self) -> None:
        self._untagged = frozenset(await self._client.untagged())

    async def refresh_categories(self) -> None:
        named = group_folders(await self._client.categories(), "category")
        folders: Tree = {}

        async def fill(name: str, category: Category) -> None:
            # A category with a search holds what the server finds for it; if the server
            # cannot say now, what it found last time.
            if not category.search:
                folders[name] = frozenset(category.archives)
                return
            previous = self._categories.get(name)
            folders[name] = previous if isinstance(previous, frozenset) else frozenset()
            folders[name] = await self.search(category.search)

        async with trio.open_nursery() as nursery:
            for name, category in named.items():
                nursery.start_soon(quietly, fill(name, category), f"views: category {name!r}")
        self._categories = folders
        self.categories = named

    def saved(self) -> bytes:
        """What only the server knows of the views (untagged, categories and what their
        searches found, tankoubons), for `restore` by a mount that starts without the
        server: offline, or from the disk cache before its first refresh."""
        state = {
            "untagged": sorted(self._untagged),
            "categories": [
                {
                    "id": c.id,
                    "name": c.name,
                    "archives": c.archives,
                    "search": c.search,
                    "pinned": int(c.pinned),
                }
                for c in self.categories.values()
            ],
            "found": {name: sorted(ids) for name, ids in self._categories.items()},
            "tankoubons": None
            if self.tankoubons is None
            else [
                {"id": t.id, "name": t.name, "archives": t.archives}
                for t in self.tankoubons.values()
            ],
        }
        return json.dumps(state).encode()

    def restore(self, saved: bytes) -> None:
        """The views as `saved` left them; a text that does not read is ignored (said
        in the log): the views stay empty until the server answers."""
        try:
            state = json.loads(saved)
            categories = [Category.from_json(entry) for entry in state["categories"]]
            found = {name: _arcids(ids) for name, ids in state["found"].items()}
            untagged = _arcids(state["untagged"])
            tanks = state["tankoubons"]
            tanks = None if tanks is None else [Tankoubon.from_json(entry) for entry in tanks]
        except (ValueError, KeyError, TypeError, AttributeError, LrrError) as exc:
            log.warning("disk cache: the views saved last time are unusable: %s", exc)
            return
        named = group_folders(categories, "category")
        self._categories = {
            name: found.get(name, frozenset(category.archives)) for name, category in named.items()
        }
        self.categories = named
        self._untagged = untagged
        if tanks is not None:
            self.tankoubons = group_folders(tanks, "tankoubon")

    async def search(self, query: str) -> frozenset[str]:
        """The archives the server finds for `query`, kept until the next refresh."""
        found = self._searches.get(query)
        if found is None:
            found = await self._flights.run(("search", query), lambda: self._search(query))
        return found

    async def _search(self, query: str) -> frozenset[str]:
        found = frozenset(await self._client.search(query))
        self._searches[query] = found
        return found

    async def folder(self, path: tuple[str, ...]) -> ViewFolder | None:
        """The view folder at `path` (its names from the root down), None if there is none."""
        if path[0] == FILES:
            return ViewFolder(files=True) if len(path) == 1 else None
        if path[0] == OFFLINE:
            return ViewFolder(members=await self.offline()) if len(path) == 1 else None
        if path[0] == SEARCH:
            if len(path) == 1:
                return ViewFolder(any_name=True)
            if len(path) == 2 and searchable(path[1]):
                return ViewFolder(members=await self.search(path[1]))
            return None
        if path[0] == TANKOUBONS:
            return self._tankoubon_folder(path)
        node: Tree | frozenset[str] = {
            NEW: self._new,
            UNTAGGED: self._untagged,
            TAGS: self._tags,
            CATEGORIES: self._categories,
        }
        for name in path:
            if not isinstance(node, dict) or name not in node:
                return None
            node = node[name]
        if isinstance(node, dict):
            return ViewFolder(folders=tuple(sorted(node)))
        return ViewFolder(members=node)

    def _tankoubon_folder(self, path: tuple[str, ...]) -> ViewFolder | None:
        tanks = self.tankoubons or {}
        if len(path) == 1:
            return ViewFolder(folders=tuple(sorted(tanks)))
        tank = tanks.get(path[1])
        if len(path) > 2 or tank is None:
            return None
        return ViewFolder(members=frozenset(tank.archives), order=tank.archives)


async def _nothing() -> frozenset[str]:
    return frozenset()
