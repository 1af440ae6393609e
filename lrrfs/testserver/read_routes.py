"""The test server's reading routes: info, archive lists, metadata, pages, files,
thumbnails and their jobs."""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Callable

from .archives import read_member, stored_span
from .names import page_content_type, page_url
from .responses import Response, file_headers, hang, json_response, ranged
from .routing import ARCHIVES_PER_PAGE, ApiBase, Request
from .store import Archive
from .thumbnails import make_thumbnail, placeholder_png


class ReadRoutes(ApiBase):
    """Routes that read."""

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
