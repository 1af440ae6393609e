"""The LANraragi API of the test server: one method per route, per generation quirks inline.

Every answer (status, Content-Type, file headers, JSON shape and value types, error shapes)
follows the recordings of real servers in /work/shared/lrr-samples (0.9.81 and 0.7.9).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import posixpath
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from .archives import read_member, stored_span
from .names import extension_of, page_content_type, page_url, strip_extension
from .responses import (
    Response,
    Shapes,
    file_headers,
    hang,
    json_response,
    ranged,
)
from .store import Archive, Library
from .thumbnails import Minion, make_thumbnail, placeholder_png

log = logging.getLogger(__name__)

ARCHIVES_PER_PAGE = 100
UNTAGGED_IGNORED_NAMESPACES = ("date_added", "source")
_UPLOAD_SUFFIXES = (".zip", ".cbz", ".tar", ".tar.gz", ".tgz", ".cbt")


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
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # multipart uploads

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
    _route("PUT", "/api/categories/:cat/:id", "add_to_category", key=True),
    _route("DELETE", "/api/categories/:cat/:id", "remove_from_category", key=True),
    _route("GET", "/api/database/stats", "database_stats"),
    _route("DELETE", "/api/database/isnew", "clear_all_new", key=True),
    _route("GET", "/api/minion/:job", "minion_job"),
    _route("GET", "/api/shinobu", "shinobu", key=True),
    _route("GET", "/api/tankoubons", "tankoubons", gens="0.9"),
]


class Api:
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

    # ----- reading routes -----
    def info(self, req: Request) -> Response:
        has_password = self.cfg.api_key is not None
        common = {
            "motd": "Welcome to this Library running LANraragi!",
            "name": "LANraragi",
            "total_pages_read": 0,
            "version_desc": "I'm under Japanese influence and my honor's at stake!",
        }
        if self.modern:
            return json_response(
                {
                    **common,
                    "archives_per_page": ARCHIVES_PER_PAGE,
                    "authenticated_progress": False,
                    "cache_last_cleared": self._started,
                    "debug_mode": False,
                    "excluded_namespaces": ["source", "date_added"],
                    "has_password": has_password,
                    "nofun_mode": self.cfg.nofun,
                    "server_resizes_images": False,
                    "server_tracks_progress": True,
                    "total_archives": len(self.lib.archives()),
                    "version": "0.9.81",
                    "version_name": "Atomica",
                }
            )
        return json_response(
            {
                **common,
                "archives_per_page": str(ARCHIVES_PER_PAGE),
                "cache_last_cleared": str(self._started),
                "debug_mode": "0",
                "has_password": "1" if has_password else "0",
                "nofun_mode": "1" if self.cfg.nofun else "0",
                "server_resizes_images": "0",
                "server_tracks_progress": "1",
                "version": "0.7.9",
                "version_name": "Lucy Can’t Dance",
            }
        )

    def archives(self, req: Request) -> Response:
        return json_response([self.metadata_of(a) for a in self.lib.archives()])

    def untagged(self, req: Request) -> Response:
        return json_response([a.arcid for a in self.lib.archives() if self._is_untagged(a)])

    def _is_untagged(self, arc: Archive) -> bool:
        for tag in split_tags(self.lib.meta(arc)["tags"]):
            if tag.partition(":")[0] not in UNTAGGED_IGNORED_NAMESPACES or ":" not in tag:
                return False
        return True

    def metadata(self, req: Request, id: str) -> Response:
        arc = self.lib.get(id)
        if arc is None:
            if self.modern:
                return self.shapes.api_error("metadata", "This ID doesn't exist on the server.")
            return json_response("")  # 0.7 answers 200 with the JSON string ""
        return json_response(self.metadata_of(arc))

    def files(self, req: Request, id: str) -> Response:
        arc = self.lib.get(id)
        if arc is None:
            msg = "Expected string - got Mojo::Exception."
            return self.shapes.validation(500, msg, "/body/error")
        return json_response({"pages": [page_url(id, p, legacy=False) for p in arc.scan.pages]})

    def extract(self, req: Request, id: str) -> Response:
        arc = self.lib.get(id)
        if arc is None:
            msg = (
                "fileparse(): need a valid pathname at "
                "/srv/lanraragi/script/../lib/LANraragi/Model/Reader.pm line 68.\n"
            )
            return self.shapes.api_error("extract_archive", msg)
        with self.lib._lock:
            self.lib.extracted.add(arc.arcid)
        urls = [page_url(arc.arcid, p, legacy=True) for p in arc.scan.legacy_pages]
        return json_response({"pages": urls})

    def page(self, req: Request, id: str) -> Response:
        path = req.param("path")
        if self.modern:
            return self._page_modern(req, id, path)
        return self._page_legacy(req, id, path)

    def _page_modern(self, req: Request, id: str, path: str | None) -> Response:
        if path is None:
            return self.shapes.validation(400, "Missing property.", "/path")
        arc = self.lib.get(id)
        if arc is None:
            msg = "Expected string - got Mojo::Exception."
            return self.shapes.validation(500, msg, "/body/error")
        member = arc.scan.members.get(path)
        if member is None:
            return hang(self.cfg.missing_page_hang)  # 0.9.81 never answers a missing page
        return self._serve_member(req, arc, path, "page")

    def _page_legacy(self, req: Request, id: str, path: str | None) -> Response:
        path = "404.xyz" if path is None else path
        outside = "This API cannot render files outside of the temporary folder."
        arc = self.lib.get(id)
        if path.startswith("/") or ".." in path.split("/"):
            return self.shapes.api_error("serve_page", outside)
        if arc is None or arc.arcid not in self.lib.extracted:
            return self.shapes.api_error("serve_page", outside)
        name = arc.scan.legacy_names.get(path)
        if name is None:
            return self.shapes.api_error("serve_page", f"{path} does not exist.")
        return self._serve_member(req, arc, name, posixpath.basename(path))

    def _serve_member(self, req: Request, arc: Archive, name: str, shown: str) -> Response:
        member = arc.scan.members[name]
        headers = file_headers("inline", shown, page_content_type(name))
        rng = req.headers.get("Range")
        try:
            span = stored_span(arc.path, member)
            if span is not None:
                return ranged(headers, span[1], rng, file=(arc.path, span[0]))
            data = read_member(arc.path, member)
        except OSError:
            return self.shapes.server_error()
        return ranged(headers, len(data), rng, body=data)

    def download(self, req: Request, id: str) -> Response:
        arc = self.lib.get(id)
        if arc is None:
            if self.modern:
                return self.shapes.server_error()
            return hang(self.cfg.missing_page_hang)  # 0.7.9 never answers an unknown id
        try:
            size = os.stat(arc.path).st_size
        except OSError:
            return self.shapes.server_error()
        headers = file_headers("attachment", arc.file_name, "application/x-download")
        return ranged(headers, size, req.headers.get("Range"), file=(arc.path, 0))

    # ----- thumbnails -----
    def thumbnail(self, req: Request, id: str) -> Response:
        page = 0
        no_fallback = False
        if self.modern:
            try:
                page = max(0, int(req.param("page") or 0))
            except ValueError:
                return self.shapes.validation(400, "Expected integer - got string.", "/page")
            no_fallback = req.param("no_fallback") == "true"
        arc = self.lib.get(id)
        if arc is None:
            return self._placeholder(req)
        with self._thumbs_lock:
            data = self._thumbs.get((arc.arcid, page))
        if data is not None:
            name = f"{arc.arcid}.jpg" if page == 0 else f"{page}.jpg"
            headers = file_headers("attachment", name, "application/x-download")
            return ranged(headers, len(data), req.headers.get("Range"), body=data)
        job = self.minion.enqueue("thumbnail_task", (arc.arcid, page), self._thumb_work(arc, page))
        if no_fallback:
            return json_response({"job": job, "operation": "serve_thumbnail", "success": 1}, 202)
        return self._placeholder(req)

    def _placeholder(self, req: Request) -> Response:
        headers = file_headers("attachment", "noThumb.png", "application/x-download")
        data = placeholder_png()
        return ranged(headers, len(data), req.headers.get("Range"), body=data)

    def _thumb_work(self, arc: Archive, page: int) -> Callable[[], None]:
        def work() -> None:
            pages = arc.scan.pages if self.modern else arc.scan.legacy_pages
            index = max(0, page - 1)
            if index >= len(pages):
                raise ValueError(f"page {page} does not exist")
            name = pages[index] if self.modern else arc.scan.legacy_names[pages[index]]
            thumb = make_thumbnail(read_member(arc.path, arc.scan.members[name]))
            with self._thumbs_lock:
                self._thumbs[(arc.arcid, page)] = thumb

        return work

    def minion_job(self, req: Request, job: str) -> Response:
        found = self.minion.job(int(job)) if job.isdigit() else None
        if found is None:
            return self.shapes.api_error("minion_job_status", "No job with this ID.")
        if self.modern:
            return json_response(
                {
                    "error": found.error,
                    "notes": found.notes,
                    "state": found.state,
                    "task": found.task,
                }
            )

        def stamp(t: float | None) -> str | None:
            return None if t is None else str(int(t))

        return json_response(
            {
                "args": [],
                "attempts": 1,
                "children": [],
                "created": stamp(found.created),
                "delayed": stamp(found.created),
                "expires": None,
                "finished": stamp(found.finished),
                "id": found.id,
                "lax": 0,
                "notes": found.notes,
                "parents": [],
                "priority": 0,
                "queue": "default",
                "result": found.error or None,
                "retried": None,
                "retries": 0,
                "started": stamp(found.started),
                "state": found.state,
                "task": found.task,
                "time": str(int(time.time())),
                "worker": 1,
            }
        )

    # ----- writing routes -----
    def put_metadata(self, req: Request, id: str) -> Response:
        title, tags, summary = req.param("title"), req.param("tags"), req.param("summary")
        if title is None and tags is None:
            msg = (
                "No metadata parameters (Please supply title, tags or summary)"
                if self.modern
                else "No metadata parameters (Please supply title,tags or both)"
            )
            return self.shapes.api_error("update_metadata", msg)
        arc = self.lib.get(id)
        new_title = clean_line(title or "")
        fields: dict[str, Any] = {"tags": self._clean_tags(tags)}  # missing tags clear them
        if not self.modern and not fields["tags"]:
            del fields["tags"]  # 0.7 skips an empty value: tags sent empty are KEPT (success: 1)
        if new_title:
            fields["title"] = new_title
        if summary is not None and self.modern:
            fields["summary"] = summary
        if arc is not None:
            self.lib.update(arc, **fields)
            new_title = self.lib.meta(arc)["title"]
        return self.shapes.api_success("update_metadata", f'Updated metadata for "{new_title}"!')

    def _clean_tags(self, tags: str | None) -> str:
        if tags is None:
            return ""
        if not self.modern:
            return tags.strip()  # 0.7 stores tags as given, only trimmed
        return ",".join(dict.fromkeys(split_tags(clean_line(tags))))

    def clear_new(self, req: Request, id: str) -> Response:
        arc = self.lib.get(id)
        if arc is not None:
            self.lib.update(arc, isnew=False)
        return json_response({"id": id, "operation": "clear_new", "success": 1})

    def add_new(self, req: Request, id: str) -> Response:
        arc = self.lib.get(id)
        if arc is not None:
            self.lib.update(arc, isnew=True)
        return self.shapes.api_success("add_new")

    def progress(self, req: Request, id: str, page: str) -> Response:
        if not page.lstrip("-").isdigit():
            if self.modern:
                return self.shapes.validation(400, "Expected integer - got string.", "/page")
            return self.shapes.api_error("update_progress", "Invalid progress value.")
        arc = self.lib.get(id)
        if arc is None:
            return self.shapes.api_error("update_progress", "This ID doesn't exist on the server.")
        count = self.pagecount(arc)
        if count == 0 and not self.modern:
            msg = "Archive doesn't have a total page count recorded yet."
            return self.shapes.api_error("update_progress", msg)
        number = int(page)
        if number < 0 or number > count:
            return self.shapes.api_error("update_progress", "Invalid progress value.")
        now = int(time.time())
        self.lib.update(arc, progress=number, lastreadtime=now)
        body: dict[str, Any] = {"id": id, "operation": "update_progress", "page": number}
        if self.modern:
            body["lastreadtime"] = now
        return json_response({**body, "success": 1})

    def delete_archive(self, req: Request, id: str) -> Response:
        arc = self.lib.get(id)
        if arc is None:
            return json_response(
                {"filename": "0", "id": id, "operation": "delete_archive", "success": 0}
            )
        self.lib.delete(arc)
        return json_response(
            {"filename": str(arc.path), "id": id, "operation": "delete_archive", "success": 1}
        )

    def clear_all_new(self, req: Request) -> Response:
        self.lib.update_all(isnew=False)
        return self.shapes.api_success("clear_new_all")

    def upload(self, req: Request) -> Response:
        upload = req.files.get("file")
        if upload is None:
            return self.shapes.api_error("upload", "No file attached")
        name, data = posixpath.basename(upload[0].replace("\\", "/")), upload[1]
        if not name.lower().endswith(_UPLOAD_SUFFIXES) or name.startswith("."):
            ext = extension_of(name)
            return self.shapes.api_error("upload", f"Unsupported file extension ({ext})", 415)
        checksum = req.param("file_checksum")
        if checksum and checksum.lower() != hashlib.sha1(data).hexdigest():
            return self.shapes.api_error("upload", "Checksum mismatch", 417)
        arcid = hashlib.sha1(data[:512000]).hexdigest()
        if self.lib.get(arcid) is not None:
            msg = (
                "This file already exists in the Library. "
                "Enable replace duplicated archive in config to replace old ones."
            )
            body = {"error": msg, "id": arcid, "operation": "upload", "success": 0}
            return json_response(body, 409)
        if (self.lib.root / name).exists():
            return self.shapes.api_error("upload", "A file with this name already exists.", 409)
        arc = self.lib.archive_at(self.lib.add_file(name, data))
        if arc is None:
            return self.shapes.api_error("upload", "The file is not a readable archive.", 415)
        self._apply_upload_fields(req, arc)
        return json_response({"id": arc.arcid, "operation": "upload", "success": 1})

    def _apply_upload_fields(self, req: Request, arc: Archive) -> None:
        tags = split_tags(clean_line(req.param("tags") or ""))
        tags.append(f"date_added:{int(time.time())}")
        fields: dict[str, Any] = {"tags": ",".join(dict.fromkeys(tags))}
        title = clean_line(req.param("title") or "")
        if title:
            fields["title"] = title
        if req.param("summary") is not None:
            fields["summary"] = req.param("summary")
        self.lib.update(arc, **fields)
        cat = self.lib.category(req.param("category_id") or "")
        if cat is not None and arc.arcid not in cat["archives"]:
            with self.lib._lock:
                cat["archives"].append(arc.arcid)
                self.lib.save()

    # ----- search -----
    def _search(self, req: Request) -> tuple[list[Archive], int]:
        every = self.lib.archives()
        metas = {a.arcid: self.lib.meta(a) for a in every}
        found = every
        cat = self.lib.category(req.param("category") or "")
        if cat is not None:
            if cat["search"]:
                found = [a for a in found if matches(cat["search"], metas[a.arcid])]
            else:
                found = [a for a in found if a.arcid in cat["archives"]]
        found = [a for a in found if matches(req.param("filter") or "", metas[a.arcid])]
        if req.param("newonly") == "true":
            found = [a for a in found if metas[a.arcid]["isnew"]]
        if req.param("untaggedonly") == "true":
            found = [a for a in found if self._is_untagged(a)]
        found.sort(key=lambda a: self._sort_key(req.param("sortby") or "title", metas[a.arcid]))
        if req.param("order") == "desc":
            found.reverse()
        return found, len(every)

    @staticmethod
    def _sort_key(sortby: str, meta: dict[str, Any]) -> tuple[object, ...]:
        if sortby == "title":
            return (meta["title"].casefold(), meta["title"])
        if sortby == "lastread":
            return (meta["lastreadtime"], meta["title"].casefold())
        # any other value sorts by the value of that tag namespace
        for tag in split_tags(meta["tags"]):
            ns, _, value = tag.partition(":")
            if ns == sortby:
                return (0, value.casefold(), meta["title"].casefold())
        return (1, "", meta["title"].casefold())

    @staticmethod
    def _page(found: list[Archive], req: Request) -> list[Archive]:
        try:
            start = int(req.param("start") or 0)
        except ValueError:
            start = 0
        return found if start == -1 else found[max(0, start) : max(0, start) + ARCHIVES_PER_PAGE]

    def search(self, req: Request) -> Response:
        found, total = self._search(req)
        body: dict[str, Any] = {
            "data": [self.metadata_of(a) for a in self._page(found, req)],
            "recordsFiltered": len(found),
            "recordsTotal": total,
        }
        if not self.modern:
            body["draw"] = 0
        return json_response(body)

    def search_ids(self, req: Request) -> Response:
        found, total = self._search(req)
        ids = [a.arcid for a in self._page(found, req)]
        return json_response({"data": ids, "recordsFiltered": len(found), "recordsTotal": total})

    def search_random(self, req: Request) -> Response:
        found, _ = self._search(req)
        try:
            count = max(0, int(req.param("count") or 5))
        except ValueError:
            count = 5
        picked = random.sample(found, min(count, len(found)))
        return json_response(
            {"data": [self.metadata_of(a) for a in picked], "recordsTotal": len(picked)}
        )

    # ----- categories -----
    def _category_json(self, cat: dict[str, Any]) -> dict[str, Any]:
        out = {
            "archives": list(cat["archives"]),
            "id": cat["id"],
            "name": cat["name"],
            "pinned": int(cat["pinned"]),
            "search": cat["search"],
        }
        if not self.modern:
            out["pinned"] = str(out["pinned"])
            out["last_used"] = str(cat["last_used"])
        return out

    def categories(self, req: Request) -> Response:
        with self.lib._lock:
            return json_response([self._category_json(c) for c in self.lib.categories])

    def create_category(self, req: Request) -> Response:
        name = req.param("name")
        if not name:
            return self.shapes.api_error("create_category", "Category name not specified.")
        pinned = 1 if req.param("pinned") in ("1", "true") else 0
        cat = self.lib.create_category(name, req.param("search") or "", pinned)
        return json_response(
            {"category_id": cat["id"], "operation": "create_category", "success": 1}
        )

    def get_category(self, req: Request, cat: str) -> Response:
        found = self.lib.category(cat)
        if found is None:
            return self.shapes.api_error("get_category", "The given category does not exist.")
        return json_response(self._category_json(found))

    def delete_category(self, req: Request, cat: str) -> Response:
        if not self.lib.delete_category(cat):
            return self.shapes.api_error("delete_category", "The given category does not exist.")
        return self.shapes.api_success("delete_category")

    def add_to_category(self, req: Request, cat: str, id: str) -> Response:
        return self._edit_category(cat, id, add=True)

    def remove_from_category(self, req: Request, cat: str, id: str) -> Response:
        return self._edit_category(cat, id, add=False)

    def _edit_category(self, cat_id: str, arcid: str, *, add: bool) -> Response:
        operation = "add_to_category" if add else "remove_from_category"
        cat = self.lib.category(cat_id)
        if cat is None:
            return self.shapes.api_error(operation, "The given category does not exist.")
        if cat["search"]:
            return self.shapes.api_error(operation, "The given category is a dynamic one.")
        arc = self.lib.get(arcid)
        if arc is None:
            return self.shapes.api_error(operation, "The given archive does not exist.")
        with self.lib._lock:
            if add and arcid not in cat["archives"]:
                cat["archives"].append(arcid)
            elif not add and arcid in cat["archives"]:
                cat["archives"].remove(arcid)
            cat["last_used"] = int(time.time())
            self.lib.save()
        title = self.lib.meta(arc)["title"]
        verb = f"Added {title} to" if add else f"Removed {title} from"
        return self.shapes.api_success(operation, f"{verb} Category {cat['name']}!")

    def archive_categories(self, req: Request, id: str) -> Response:
        with self.lib._lock:
            cats = [self._category_json(c) for c in self.lib.categories if id in c["archives"]]
        return json_response({"categories": cats, "operation": "find_arc_categories", "success": 1})

    # ----- misc -----
    def database_stats(self, req: Request) -> Response:
        try:
            minweight = int(req.param("minweight") or 1)
        except ValueError:
            minweight = 1
        weights: dict[tuple[str, str], int] = {}
        for arc in self.lib.archives():
            for tag in split_tags(self.lib.meta(arc)["tags"]):
                ns, sep, text = tag.partition(":")
                key = (ns, text) if sep else ("", tag)
                weights[key] = weights.get(key, 0) + 1
        stats = [
            {"namespace": ns, "text": text, "weight": w}
            for (ns, text), w in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))
            if w >= minweight
        ]
        return json_response(stats)

    def shinobu(self, req: Request) -> Response:
        body = {"is_alive": 1, "operation": "shinobu_status", "pid": os.getpid(), "success": 1}
        return json_response(body)

    def tankoubons(self, req: Request) -> Response:
        return json_response({"filtered": 0, "result": [], "total": 0})

    def archive_tankoubons(self, req: Request, id: str) -> Response:
        body = {"operation": "find_arc_tankoubons", "success": 1, "tankoubons": []}
        return json_response(body)


def clean_line(text: str) -> str:
    """What LRR does to titles and tags: CR/LF removed, surrounding blanks trimmed."""
    return text.replace("\r", "").replace("\n", "").strip()


def split_tags(tags: str) -> list[str]:
    """Comma-separated tags, each trimmed, empty ones dropped."""
    return [t.strip() for t in tags.split(",") if t.strip()]


def matches(filter_text: str, meta: dict[str, Any]) -> bool:
    """A simplified LRR search: comma-separated terms, all must match (case-insensitive
    substring of the title or the tags); a leading '-' negates a term, quotes are dropped."""
    haystack = f"{meta['title']}\n{meta['tags']}".casefold()
    for term in split_tags(filter_text):
        negate = term.startswith("-")
        needle = term.lstrip("-").strip('"').replace("*", "").replace("?", "").casefold()
        needle = needle.rstrip("$")
        if (needle in haystack) == negate:
            return False
    return True
