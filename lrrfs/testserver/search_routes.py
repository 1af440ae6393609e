"""The test server's search, category and statistics routes."""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

from .responses import Response, json_response
from .routing import ARCHIVES_PER_PAGE, Request, split_tags
from .store import Archive
from .write_routes import WriteRoutes


class SearchRoutes(WriteRoutes):
    """Search, categories, statistics and the rest."""

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

    def update_category(self, req: Request, cat: str) -> Response:
        """Name and search kept unless given; `pinned` is reset unless given (Category.pm,
        update_category); the archives stay."""
        found = self.lib.category(cat)
        if found is None:
            return self.shapes.api_error("update_category", "The given category does not exist.")
        pinned = req.param("pinned")
        with self.lib._lock:
            found["name"] = req.param("name") or found["name"]
            found["search"] = req.param("search") or found["search"]
            found["pinned"] = 1 if pinned and pinned != "false" else 0
            self.lib.save()
        return json_response({"category_id": cat, "operation": "update_category", "success": 1})

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

    # ----- tankoubons (0.9; Controller/Api/Tankoubon.pm) -----
    def tankoubons(self, req: Request) -> Response:
        try:
            page = int(req.param("page") or 0)
        except ValueError:
            return self.shapes.validation(400, "Expected integer - got string.", "/page")
        with self.lib._lock:
            every = [dict(k) for k in sorted(self.lib.tankoubons, key=lambda k: k["id"])]
        shown = (
            every if page < 0 else every[page * ARCHIVES_PER_PAGE : (page + 1) * ARCHIVES_PER_PAGE]
        )
        return json_response({"filtered": len(shown), "result": shown, "total": len(every)})

    def get_tankoubon(self, req: Request, tank: str) -> Response:
        found = self.lib.tankoubon(tank)
        if found is None:
            return self.shapes.api_error("get_tankoubon", "The given tankoubon does not exist.")
        return json_response(dict(found))

    def create_tankoubon(self, req: Request) -> Response:
        name = req.param("name") or ""
        if not name:
            return self.shapes.api_error("create_tankoubon", "Tankoubon name not specified.")
        tank = self.lib.create_tankoubon(name)
        return json_response(
            {"operation": "create_tankoubon", "success": 1, "tankoubon_id": tank["id"]}
        )

    def delete_tankoubon(self, req: Request, tank: str) -> Response:
        self.lib.delete_tankoubon(tank)  # an unknown id: success too (Model/Tankoubon.pm)
        return self.shapes.api_success("delete_tankoubon")

    def update_tankoubon(self, req: Request, tank: str) -> Response:
        """A JSON body: its `archives` list, when there is one, is the new list in its
        order (Model/Tankoubon.pm, update_archive_list); of its `metadata`, the name is
        kept here (not the summary or tags). As on the real server, a list naming an
        archive it does not have, or a tankoubon that does not exist, changes nothing and
        still answers success: update_tankoubon returns update_metadata's result (a `my`
        hides update_archive_list's)."""
        found = self.lib.tankoubon(tank)
        try:
            data = json.loads(req.body or b"null")
        except ValueError:
            data = None
        data = data if isinstance(data, dict) else {}
        archives, metadata = data.get("archives"), data.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        known = isinstance(archives, list) and all(
            isinstance(arcid, str) and self.lib.get(arcid) is not None for arcid in archives
        )
        if found is not None:
            with self.lib._lock:
                if isinstance(name, str) and name:
                    found["name"] = name
                if known:
                    assert isinstance(archives, list)
                    found["archives"] = list(dict.fromkeys(archives))
                self.lib.save()
        message = f'Updated tankoubon "{"" if found is None else found["name"]}"!'
        return self.shapes.api_success("update_tankoubon", message)

    def add_to_tankoubon(self, req: Request, tank: str, archive: str) -> Response:
        return self._edit_tankoubon(tank, archive, add=True)

    def remove_from_tankoubon(self, req: Request, tank: str, archive: str) -> Response:
        return self._edit_tankoubon(tank, archive, add=False)

    def _edit_tankoubon(self, tank_id: str, arcid: str, *, add: bool) -> Response:
        operation = "add_to_tankoubon" if add else "remove_from_tankoubon"
        tank = self.lib.tankoubon(tank_id)
        if tank is None:
            return self.shapes.api_error(operation, f"{tank_id} doesn't exist in the database!")
        arc = self.lib.get(arcid)
        if arc is None:
            return self.shapes.api_error(operation, f"{arcid} does not exist in the database.")
        with self.lib._lock:
            if add and arcid not in tank["archives"]:
                tank["archives"].append(arcid)
            elif not add and arcid in tank["archives"]:
                tank["archives"].remove(arcid)
            self.lib.save()
        title = self.lib.meta(arc)["title"]
        verb = f'Added "{title}" to' if add else f'Removed "{title}" from'
        return self.shapes.api_success(operation, f'{verb} tankoubon "{tank["name"]}"!')

    def archive_tankoubons(self, req: Request, id: str) -> Response:
        with self.lib._lock:
            found = [k["id"] for k in self.lib.tankoubons if id in k["archives"]]
        body = {"operation": "find_arc_tankoubons", "success": 1, "tankoubons": found}
        return json_response(body)


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
