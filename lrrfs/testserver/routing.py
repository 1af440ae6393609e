"""The test server's routing core: the route table, requests, keys and the metadata
objects every route answers with. Routes themselves are in read_routes.py,
write_routes.py and search_routes.py; routes.py puts them together as `Api`.

Every answer (status, Content-Type, file headers, JSON shape and value types, error shapes)
follows the recordings of real servers in /work/shared/lrr-samples (0.9.81 and 0.7.9).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from .multipart import FilePart
from .names import extension_of, strip_extension
from .responses import Response, Shapes
from .store import Archive, Library
from .thumbnails import Minion

ARCHIVES_PER_PAGE = 100
UNTAGGED_IGNORED_NAMESPACES = ("date_added", "source")


@dataclass
class Config:
    generation: str = "0.9"
    api_key: str | None = field(default=None, repr=False)  # never in a repr or a log
    nofun: bool = False
    thumbnail_delay: float = 0.3
    missing_page_hang: float = 30.0


@dataclass
class Request:
    method: str
    raw_path: str  # path?query as received
    path: str  # percent-decoded path
    query: list[tuple[str, str]]
    form: list[tuple[str, str]]
    headers: Message
    body: bytes = b""
    files: dict[str, FilePart] = field(default_factory=dict)  # multipart uploads, on disk

    def param(self, name: str) -> str | None:
        """Like Mojolicious' param: query then body parameters, the last value wins."""
        value = None
        for key, val in (*self.query, *self.form):
            if key == name:
                value = val
        return value

    def query_param(self, name: str) -> str | None:
        return next((v for k, v in reversed(self.query) if k == name), None)


Handler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: str  # name of the Api method
    key: bool  # needs the API key
    generations: frozenset[str]
    archive_id: bool  # has an :id placeholder validated on 0.9


def _route(
    methods: str, pattern: str, handler: str, *, key: bool = False, gens: str = "0.9 0.7"
) -> Route:
    regex = re.compile("^" + re.sub(r":(\w+)", r"(?P<\1>[^/]+)", pattern) + "$")
    return Route(
        frozenset(methods.split()),
        regex,
        handler,
        key,
        frozenset(gens.split()),
        ":id" in pattern and pattern.startswith("/api/archives/"),
    )


# Order matters: fixed names before the :id placeholder.
ROUTES = [
    _route("GET", "/api/info", "info"),
    _route("GET", "/api/archives", "archives"),
    _route("GET", "/api/archives/untagged", "untagged"),
    _route("PUT", "/api/archives/upload", "upload", key=True, gens="0.9"),
    _route("GET", "/api/archives/:id", "metadata"),
    _route("DELETE", "/api/archives/:id", "delete_archive", key=True),
    _route("GET", "/api/archives/:id/metadata", "metadata"),
    _route("PUT", "/api/archives/:id/metadata", "put_metadata", key=True),
    _route("GET", "/api/archives/:id/files", "files", gens="0.9"),
    _route("POST", "/api/archives/:id/extract", "extract", gens="0.7"),
    _route("GET", "/api/archives/:id/page", "page"),
    _route("GET", "/api/archives/:id/download", "download"),
    _route("GET", "/api/archives/:id/thumbnail", "thumbnail"),
    _route("DELETE", "/api/archives/:id/isnew", "clear_new"),
    _route("PUT", "/api/archives/:id/isnew", "add_new", key=True, gens="0.9"),
    _route("PUT", "/api/archives/:id/progress/:page", "progress"),
    _route("GET", "/api/archives/:id/categories", "archive_categories"),
    _route("GET", "/api/archives/:id/tankoubons", "archive_tankoubons", gens="0.9"),
    _route("GET", "/api/search", "search"),
    _route("GET", "/api/search/ids", "search_ids", gens="0.9"),
    _route("GET", "/api/search/random", "search_random", gens="0.9"),
    _route("GET", "/api/categories", "categories"),
    _route("PUT", "/api/categories", "create_category", key=True),
    _route("GET", "/api/categories/:cat", "get_category"),
    _route("DELETE", "/api/categories/:cat", "delete_category", key=True),
    _route("PUT", "/api/categories/:cat", "update_category", key=True, gens="0.9"),
    _route("PUT", "/api/categories/:cat/:id", "add_to_category", key=True),
    _route("DELETE", "/api/categories/:cat/:id", "remove_from_category", key=True),
    _route("GET", "/api/database/stats", "database_stats"),
    _route("DELETE", "/api/database/isnew", "clear_all_new", key=True),
    _route("GET", "/api/minion/:job", "minion_job"),
    _route("GET", "/api/shinobu", "shinobu", key=True),
    _route("GET", "/api/tankoubons", "tankoubons", gens="0.9"),
    _route("PUT", "/api/tankoubons", "create_tankoubon", key=True, gens="0.9"),
    _route("GET", "/api/tankoubons/:tank", "get_tankoubon", gens="0.9"),
    _route("DELETE", "/api/tankoubons/:tank", "delete_tankoubon", key=True, gens="0.9"),
    _route("PUT", "/api/tankoubons/:tank", "update_tankoubon", key=True, gens="0.9"),
    _route("PUT", "/api/tankoubons/:tank/:archive", "add_to_tankoubon", key=True, gens="0.9"),
    _route(
        "DELETE", "/api/tankoubons/:tank/:archive", "remove_from_tankoubon", key=True, gens="0.9"
    ),
]


class ApiBase:
    """Routes requests to handlers; holds the library, the thumbnails and the job queue."""

    def __init__(self, library: Library, config: Config, stop: threading.Event) -> None:
        self.lib = library
        self.cfg = config
        self.modern = config.generation == "0.9"
        self.shapes = Shapes(config.generation)
        self.minion = Minion(config.thumbnail_delay, stop)
        self._thumbs: dict[tuple[str, int], bytes] = {}
        self._thumbs_lock = threading.Lock()
        self._started = int(time.time())
        self.routes = [r for r in ROUTES if config.generation in r.generations]

    # ----- dispatch -----
    def dispatch(self, req: Request) -> Response:
        method = "GET" if req.method == "HEAD" else req.method
        for route in self.routes:
            m = route.pattern.match(req.path)
            if m and method in route.methods:
                return self._call(route, m.groupdict(), req)
        if self.cfg.nofun and req.path.startswith("/api/") and not self.authorized(req):
            return self.shapes.unauthorized(legacy_shape=True)
        return self.shapes.not_found()

    def _call(self, route: Route, args: dict[str, str], req: Request) -> Response:
        if route.key and not self.authorized(req):
            return self.shapes.unauthorized()
        if self.cfg.nofun and not self.authorized(req):
            return self.shapes.unauthorized(legacy_shape=True)
        if "id" in args and not self.modern:
            # 0.7 reads the id with param('id'): a query/form `id` wins over the path
            args["id"] = req.param("id") or args["id"]
        if route.archive_id and self.modern:
            error = self._check_id(args["id"])
            if error is not None:
                return error
        handler: Callable[..., Response] = getattr(self, route.handler)
        return handler(req, **args)

    def _check_id(self, arcid: str) -> Response | None:
        """0.9.70+ validates ids against the OpenAPI spec: exactly 40 characters."""
        if len(arcid) < 40:
            return self.shapes.validation(400, f"String is too short: {len(arcid)}/40.", "/id")
        if len(arcid) > 40:
            return self.shapes.validation(400, f"String is too long: {len(arcid)}/40.", "/id")
        return None

    def authorized(self, req: Request) -> bool:
        """Bearer base64(key); 0.9 also takes ?key=. No key configured: everything is open."""
        key = self.cfg.api_key
        if key is None:
            return True
        auth = req.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            try:
                given = base64.b64decode(auth[7:].strip(), validate=True)
            except (binascii.Error, ValueError):
                given = b""
            if given and hmac.compare_digest(given, key.encode()):
                return True
        if self.modern:
            param = req.query_param("key")
            if param is not None and hmac.compare_digest(param.encode(), key.encode()):
                return True
        return False

    # ----- metadata objects -----
    def metadata_of(self, arc: Archive) -> dict[str, Any]:
        meta = self.lib.meta(arc)
        if not self.modern:
            pagecount = len(arc.scan.pages) if arc.arcid in self.lib.extracted else 0
            return {
                "arcid": arc.arcid,
                "isnew": "true" if meta["isnew"] else "false",
                "pagecount": pagecount,
                "progress": meta["progress"],
                "tags": meta["tags"],
                "title": meta["title"],
            }
        return {
            "arcid": arc.arcid,
            "extension": extension_of(arc.file_name),
            "filename": strip_extension(arc.file_name),
            "isnew": meta["isnew"],
            "lastreadtime": meta["lastreadtime"],
            "pagecount": len(arc.scan.pages),
            "progress": meta["progress"],
            "size": arc.size,
            "summary": meta["summary"],
            "tags": meta["tags"],
            "title": meta["title"],
            "toc": [],
        }

    def pagecount(self, arc: Archive) -> int:
        if self.modern or arc.arcid in self.lib.extracted:
            return len(arc.scan.pages)
        return 0

    def _is_untagged(self, arc: Archive) -> bool:
        for tag in split_tags(self.lib.meta(arc)["tags"]):
            if tag.partition(":")[0] not in UNTAGGED_IGNORED_NAMESPACES or ":" not in tag:
                return False
        return True


def clean_line(text: str) -> str:
    """What LRR does to titles and tags: CR/LF removed, surrounding blanks trimmed."""
    return text.replace("\r", "").replace("\n", "").strip()


def split_tags(tags: str) -> list[str]:
    """Comma-separated tags, each trimmed, empty ones dropped."""
    return [t.strip() for t in tags.split(",") if t.strip()]
