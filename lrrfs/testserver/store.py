"""The library: a folder of archive files, scanned like a LANraragi server indexes its content.

Scanning is cached per file, keyed by (path, size, mtime_ns), and the folder is walked again at
most once per second, so a library of 10,000+ archives lists quickly and files added or removed
while the server runs appear or disappear. Edits (metadata, isnew, progress, categories) live
in DIR/.lrrfs-server.json (format: see the package docstring), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .archives import Member, list_image_members, read_head
from .names import is_archive_name, legacy_key, natural_key, rename_non_ascii, strip_extension

log = logging.getLogger(__name__)

STATE_FILE = ".lrrfs-server.json"
RESCAN_INTERVAL = 1.0
STATE_FIELDS = ("title", "tags", "summary", "isnew", "progress", "lastreadtime")


@dataclass(frozen=True, slots=True)
class Scan:
    """What a file's content tells: id and pages. Cached while (path, size, mtime) holds."""

    arcid: str
    members: dict[str, Member]
    pages: tuple[str, ...]  # 0.9 reading order
    legacy_pages: tuple[str, ...]  # 0.7: renamed paths, 0.7 order
    legacy_names: dict[str, str]  # 0.7 renamed path -> served member name


@dataclass(slots=True)
class Archive:
    """One archive file of the library."""

    rel: str  # path relative to the library, '/'-separated: the key of its saved state
    path: Path
    size: int
    mtime_ns: int
    scan: Scan

    @property
    def arcid(self) -> str:
        return self.scan.arcid

    @property
    def file_name(self) -> str:
        return self.path.name


def scan_file(path: Path) -> Scan:
    head = read_head(path)
    members = {m.name: m for m in list_image_members(path, head)}
    pages = tuple(sorted(members, key=natural_key))
    legacy_names = {rename_non_ascii(name): name for name in members}
    legacy_pages = tuple(sorted(legacy_names, key=legacy_key))
    return Scan(hashlib.sha1(head).hexdigest(), members, pages, legacy_pages, legacy_names)


@dataclass
class Library:
    """Archives of one folder plus their saved state; every method is thread-safe."""

    root: Path
    generation: str = "0.9"
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _cache: dict[tuple[str, int, int], Archive] = field(default_factory=dict)
    _by_id: dict[str, Archive] = field(default_factory=dict)
    _last_scan: float = float("-inf")
    _state: dict[str, dict[str, Any]] = field(default_factory=dict)
    categories: list[dict[str, Any]] = field(default_factory=list)
    extracted: set[str] = field(default_factory=set)  # 0.7: arcids extracted once

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self._load_state()

    # ----- scanning -----
    def refresh(self, *, force: bool = False) -> None:
        """Walk the folder again unless that was done less than RESCAN_INTERVAL ago."""
        with self._lock:
            if not force and time.monotonic() - self._last_scan < RESCAN_INTERVAL:
                return
            cache: dict[tuple[str, int, int], Archive] = {}
            found: dict[str, Archive] = {}
            for path, rel, st in self._walk(str(self.root), ""):
                key = (path, st.st_size, st.st_mtime_ns)
                arc = self._cache.get(key) or self._scan_or_none(path, rel, st)
                if arc is None:
                    continue
                cache[key] = arc
                # Identical files share an id; like LRR keep one (the first by path).
                prev = found.get(arc.arcid)
                if prev is None or rel < prev.rel:
                    found[arc.arcid] = arc
            self._cache = cache
            self._by_id = found
            self._last_scan = time.monotonic()

    @staticmethod
    def _scan_or_none(path: str, rel: str, st: os.stat_result) -> Archive | None:
        try:
            scan = scan_file(Path(path))
        except OSError as exc:  # vanished or unreadable while scanning
            log.debug("cannot scan %s: %s", path, exc)
            return None
        return Archive(rel, Path(path), st.st_size, st.st_mtime_ns, scan)

    @classmethod
    def _walk(cls, directory: str, prefix: str) -> Iterator[tuple[str, str, os.stat_result]]:
        """(path, relative path, stat) of the archive files under `directory`, hidden skipped."""
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    yield from cls._walk(entry.path, f"{prefix}{entry.name}/")
                elif is_archive_name(entry.name) and entry.is_file():
                    yield entry.path, prefix + entry.name, entry.stat()
            except OSError:
                continue

    def archives(self) -> list[Archive]:
        self.refresh()
        with self._lock:
            return sorted(self._by_id.values(), key=lambda a: a.rel)

    def get(self, arcid: str) -> Archive | None:
        self.refresh()
        with self._lock:
            return self._by_id.get(arcid)

    # ----- per-archive state -----
    def meta(self, arc: Archive) -> dict[str, Any]:
        """title, tags, summary, isnew, progress, lastreadtime of an archive."""
        with self._lock:
            saved = self._state.get(arc.rel, {})
        default_tags = f"date_added:{arc.mtime_ns // 1_000_000_000}"
        return {
            "title": _str(saved.get("title"), strip_extension(arc.file_name)),
            "tags": _str(saved.get("tags"), default_tags if self.generation == "0.9" else ""),
            "summary": _str(saved.get("summary"), ""),
            "isnew": _bool(saved.get("isnew"), True),
            "progress": _int(saved.get("progress")),
            "lastreadtime": _int(saved.get("lastreadtime")),
        }

    def update(self, arc: Archive, **fields: Any) -> None:
        with self._lock:
            entry = self._state.setdefault(arc.rel, {})
            if "tags" not in entry and "tags" not in fields and self.generation == "0.9":
                entry["tags"] = self.meta(arc)["tags"]  # freeze date_added at first edit
            entry.update(fields)
            self.save()

    def update_all(self, **fields: Any) -> None:
        with self._lock:
            for arc in self._by_id.values():
                self._state.setdefault(arc.rel, {}).update(fields)
            self.save()

    def delete(self, arc: Archive) -> None:
        with self._lock:
            arc.path.unlink(missing_ok=True)
            self._state.pop(arc.rel, None)
            self._by_id.pop(arc.arcid, None)
            for group in (*self.categories, *self.tankoubons):
                if arc.arcid in group["archives"]:
                    group["archives"].remove(arc.arcid)
            self.save()

    def add_file(self, name: str, chunks: Iterable[bytes]) -> Path:
        """Write an uploaded file into the library root and index it at once."""
        with self._lock:
            path = self.root / name
            tmp = path.with_name(f".{name}.upload")
            with open(tmp, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
            os.replace(tmp, path)
            self.refresh(force=True)
            return path

    def archive_at(self, path: Path) -> Archive | None:
        with self._lock:
            for arc in self._by_id.values():
                if arc.path == path:
                    return arc
        return None

    # ----- persistence -----
    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    def _load_state(self) -> None:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.state_path, exc)
            data = {}
        archives = data.get("archives", {}) if isinstance(data, dict) else {}
        self._state = {
            str(rel): {k: v for k, v in entry.items() if k in STATE_FIELDS}
            for rel, entry in archives.items()
            if isinstance(entry, dict)
        }
        cats = data.get("categories") if isinstance(data, dict) else None
        self.categories = [c for c in cats if isinstance(c, dict)] if cats else []
        for cat in self.categories:
            cat.setdefault("archives", [])
            cat.setdefault("search", "")
            cat.setdefault("pinned", 0)
            cat.setdefault("name", "")
            cat.setdefault("last_used", int(time.time()))
        tanks = data.get("tankoubons") if isinstance(data, dict) else None
        self.tankoubons = [k for k in tanks if isinstance(k, dict)] if tanks else []
        if cats is None and self.generation == "0.9":
            # A fresh 0.9 server has a "Favorites" category (see 0.9.81/57-categories-list).
            self.categories = [_category("🔖 Favorites", int(time.time()))]

    def save(self) -> None:
        """Write the state file atomically (temp file + os.replace)."""
        with self._lock:
            data = {
                "archives": self._state,
                "categories": self.categories,
                "tankoubons": self.tankoubons,
            }
            tmp = self.state_path.with_name(f"{STATE_FILE}.{os.getpid()}.tmp")
            try:
                tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
                os.replace(tmp, self.state_path)
            except OSError as exc:
                log.warning("cannot save %s: %s", self.state_path, exc)

    # ----- tankoubons (0.9) -----
    def create_tankoubon(self, name: str) -> dict[str, Any]:
        with self._lock:
            stamp = int(time.time())
            taken = {k["id"] for k in self.tankoubons}
            while f"TANK_{stamp}" in taken:
                stamp += 1
            tank = {"archives": [], "id": f"TANK_{stamp}", "name": name, "summary": "", "tags": ""}
            self.tankoubons.append(tank)
            self.save()
            return tank

    def tankoubon(self, tank_id: str) -> dict[str, Any] | None:
        with self._lock:
            return next((k for k in self.tankoubons if k["id"] == tank_id), None)

    def delete_tankoubon(self, tank_id: str) -> None:
        with self._lock:
            self.tankoubons = [k for k in self.tankoubons if k["id"] != tank_id]
            self.save()

    # ----- categories -----
    def create_category(self, name: str, search: str = "", pinned: int = 0) -> dict[str, Any]:
        with self._lock:
            stamp = int(time.time())
            taken = {c["id"] for c in self.categories}
            while f"SET_{stamp}" in taken:
                stamp += 1
            cat = _category(name, stamp, search=search, pinned=pinned)
            self.categories.append(cat)
            self.save()
            return cat

    def category(self, cat_id: str) -> dict[str, Any] | None:
        with self._lock:
            return next((c for c in self.categories if c["id"] == cat_id), None)

    def delete_category(self, cat_id: str) -> bool:
        with self._lock:
            before = len(self.categories)
            self.categories = [c for c in self.categories if c["id"] != cat_id]
            self.save()
            return len(self.categories) != before


def _category(name: str, stamp: int, *, search: str = "", pinned: int = 0) -> dict[str, Any]:
    return {
        "id": f"SET_{stamp}",
        "name": name,
        "archives": [],
        "pinned": pinned,
        "search": search,
        "last_used": stamp,
    }


def _str(value: Any, default: str) -> str:
    return default if value is None else str(value)


def _bool(value: Any, default: bool) -> bool:
    """Seeded files may say "false": only real booleans and "true"/"false" count."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return default if value is None else bool(value)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0
