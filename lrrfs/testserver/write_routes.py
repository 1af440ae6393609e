"""The test server's writing routes: metadata, the new flag, progress, deletes and
uploads."""

from __future__ import annotations

import hashlib
import posixpath
import time
from typing import Any

from .names import extension_of
from .read_routes import ReadRoutes
from .responses import Response, json_response
from .routing import Request, clean_line, split_tags
from .store import Archive

_UPLOAD_SUFFIXES = (".zip", ".cbz", ".tar", ".tar.gz", ".tgz", ".cbt")


class WriteRoutes(ReadRoutes):
    """Routes that change archives."""

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
        name = posixpath.basename(upload.filename.replace("\\", "/"))
        checksum = req.param("file_checksum")
        if checksum:  # checked first, as LRR does (it reads the whole file for it)
            digest = hashlib.sha1()
            for chunk in upload.chunks():
                digest.update(chunk)
            actual = digest.hexdigest()
            if checksum != actual:
                msg = f"Checksum mismatch: expected {checksum}, got {actual}."
                return self.shapes.api_error("upload", msg, 417)
        if not name.lower().endswith(_UPLOAD_SUFFIXES) or name.startswith("."):
            ext = extension_of(name)
            return self.shapes.api_error("upload", f"Unsupported file extension ({ext})", 415)
        arcid = hashlib.sha1(upload.head(512000)).hexdigest()
        # One upload at a time from the duplicate check to the file in place, as a real
        # server's single worker handles them: two at once must not both pass the check.
        with self.lib._lock:
            if self.lib.get(arcid) is not None:
                msg = (
                    "This file already exists in the Library. "
                    "Enable replace duplicated archive in config to replace old ones."
                )
                body = {"error": msg, "id": arcid, "operation": "upload", "success": 0}
                return json_response(body, 409)
            if (self.lib.root / name).exists():
                msg = "A file with this name already exists."
                return self.shapes.api_error("upload", msg, 409)
            arc = self.lib.archive_at(self.lib.add_file(name, upload.chunks()))
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
