"""Replay every recorded request to a real LANraragi server against the test server.

For each generation, one test server over the sample library answers the recorded requests in
the recorded order (writes, extractions and thumbnail jobs change later answers, as they did on
the real server). Recorded archive ids are mapped to the test server's archives of the same
title; ids the real server handed out (upload, category, job) are mapped to the ones the test
server hands out. Compared: status (or "no answer"), Content-Type, Content-Disposition,
Content-Length / Content-Range forms, the first bytes of binary bodies, JSON shapes and types,
and the JSON values that do not depend on the library's files or the clock.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lrrfs.testserver import TestServer
from lrrfs.testserver.samples import make_archive, make_sample_library

from .testserver_fixtures import (
    KEY,
    SAMPLES_DIR,
    Answer,
    Recording,
    form_body,
    multipart,
    parse_recording,
    recordings,
    send,
    shape_diff,
)

HANG = 0.5  # --missing-page-hang of the servers under test
THUMB_DELAY = 0.1

# Recordings the test server deliberately does not reproduce, with the reason.
SKIPPED = {
    "0.9": {"60-opds-head": "OPDS catalog (XML) is not served: lrrfs does not use OPDS"},
    "0.7": {"84-opds": "OPDS catalog (XML) is not served: lrrfs does not use OPDS"},
}

# JSON values that depend on the clock or on the library's actual files, not on behaviour.
VALUE_EXEMPT = {
    "size",
    "lastreadtime",
    "recordsFiltered",
    "recordsTotal",
    "cache_last_cleared",
    "total_archives",
    "pid",
    "created",
    "delayed",
    "finished",
    "started",
    "time",
    "last_used",
    "job",  # mapped: the next job number depends on earlier jobs
}

# Outside CI, a checkout without shared/ beside it skips; in CI a missing folder fails.
pytestmark = pytest.mark.skipif(
    not SAMPLES_DIR.is_dir() and not os.environ.get("CI"),
    reason=f"recordings not found in {SAMPLES_DIR}",
)


class Replay:
    """One generation's replay: the server, the id mappings, the failures found."""

    def __init__(self, generation: str, tmp: Path) -> None:
        self.generation = generation
        library = tmp / "library"
        make_sample_library(library, seed_state=False)
        self.upload_dir = tmp / "upload"
        make_archive(self.upload_dir / "Uploaded Book.cbz", 2, page_bytes=800)
        self.server = TestServer(
            library,
            generation=generation,
            api_key=KEY,
            missing_page_hang=HANG,
            thumbnail_delay=THUMB_DELAY,
        ).start()
        self.ids: dict[str, str] = {}
        self.jobs: dict[str, str] = {}
        self.failures: list[str] = []
        self._map_archives()

    def _map_archives(self) -> None:
        recorded = parse_recording(self._path("02-archives")).json
        ours = {a["title"]: a["arcid"] for a in self.get("/api/archives").json}
        for arc in recorded:
            self.ids[arc["arcid"]] = ours[arc["title"]]

    def _path(self, name: str) -> Path:
        return next(p for p in recordings(self.generation) if p.stem == name)

    def get(self, url: str) -> Answer:
        return send(self.server.url, "GET", url)

    def map(self, value: Any) -> Any:
        """A recorded value with the real server's ids replaced by ours."""
        if isinstance(value, str):
            for theirs, ours in self.ids.items():
                value = value.replace(theirs, ours)
            return value
        if isinstance(value, list):
            return [self.map(v) for v in value]
        if isinstance(value, dict):
            return {k: self.map(v) for k, v in value.items()}
        return value

    def map_url(self, url: str) -> str:
        url = self.map(url)
        return re.sub(
            r"(/api/minion/)(\d+)",
            lambda m: m.group(1) + self.jobs.get(m.group(2), m.group(2)),
            url,
        )

    # ----- one request -----
    def replay(self, rec: Recording) -> None:
        headers = list(rec.headers)
        body = None
        if rec.form:
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
            body = form_body(rec.form)
        elif rec.multipart:
            files = {"./upload/Uploaded Book.cbz": self.upload_dir / "Uploaded Book.cbz"}
            ctype, body = multipart(rec.multipart, files)
            headers.append(("Content-Type", ctype))
        ans = send(self.server.url, rec.method, self.map_url(rec.url), headers=headers, body=body)
        self.failures += [f"{rec.name}: {d}" for d in self.compare(rec, ans)]

    def compare(self, rec: Recording, ans: Answer) -> list[str]:
        if rec.status is None:
            if ans.status is not None:
                return [f"answered {ans.status}, the real server never answers"]
            if ans.elapsed < HANG * 0.8:
                return [f"closed after {ans.elapsed:.2f}s, expected a hang of {HANG}s"]
            return []
        if ans.status != rec.status:
            return [f"status {ans.status}, recorded {rec.status}: {ans.body[:300]!r}"]
        diffs = self.compare_headers(rec, ans)
        if rec.method == "HEAD":
            return diffs + ([f"HEAD answered {len(ans.body)} body bytes"] if ans.body else [])
        if rec.is_json:
            diffs += self.compare_json(rec, ans)
        elif rec.body_len is not None:
            diffs += self.compare_binary(rec, ans)
        return diffs

    def compare_headers(self, rec: Recording, ans: Answer) -> list[str]:
        diffs = []
        for name in ("content-type", "content-disposition"):
            want, got = self.map(rec.resp_headers.get(name)), ans.headers.get(name)
            if want != got:
                diffs.append(f"{name} {got!r}, recorded {want!r}")
        length = ans.headers.get("content-length")
        if length is None or not length.isdigit():
            return [*diffs, f"content-length {length!r}"]
        if rec.method != "HEAD" and int(length) != len(ans.body):
            diffs.append(f"content-length {length} but {len(ans.body)} body bytes")
        exact = rec.status == 416 or re.fullmatch(r"bytes=\d+-\d+", rec.range_header or "")
        if exact and length != rec.resp_headers["content-length"]:
            diffs.append(f"content-length {length}, recorded {rec.resp_headers['content-length']}")
        return diffs + self.compare_range(rec, ans)

    @staticmethod
    def compare_range(rec: Recording, ans: Answer) -> list[str]:
        want, got = rec.resp_headers.get("content-range"), ans.headers.get("content-range")
        if (want is None) != (got is None):
            return [f"content-range {got!r}, recorded {want!r}"]
        if want is None:
            return []
        form = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
        w, g = form.fullmatch(want), form.fullmatch(got or "")
        if g is None:
            return [f"content-range {got!r} malformed"]
        assert w is not None
        explicit_end = re.fullmatch(r"bytes=\d+-\d+", rec.range_header or "")
        if w.group(1) != g.group(1) or (explicit_end and w.group(2) != g.group(2)):
            return [f"content-range {got!r}, recorded {want!r}"]
        return []

    @staticmethod
    def compare_binary(rec: Recording, ans: Answer) -> list[str]:
        if not ans.body:
            return ["empty body, recorded a binary body"]
        rng = ans.headers.get("content-range", "bytes 0-")
        if rng.startswith("bytes 0-") and ans.body[:2] != rec.body_head[:2]:
            return [f"body starts {ans.body[:8]!r}, recorded {rec.body_head[:8]!r}"]
        return []

    def compare_json(self, rec: Recording, ans: Answer) -> list[str]:
        try:
            ours = ans.json
        except ValueError:
            return [f"invalid JSON body {ans.body[:200]!r}"]
        recorded = rec.json
        self.learn_ids(recorded, ours)
        recorded = self.map(recorded)
        return shape_diff(recorded, ours) + self.value_diff(recorded, ours)

    def learn_ids(self, recorded: Any, ours: Any) -> None:
        """Ids the server hands out (upload, new category, job) map to the ones we got."""
        if not (isinstance(recorded, dict) and isinstance(ours, dict)):
            return
        for key in ("id", "category_id"):
            theirs = recorded.get(key)
            if isinstance(theirs, str) and isinstance(ours.get(key), str):
                self.ids.setdefault(theirs, ours[key])
        if isinstance(recorded.get("job"), int) and isinstance(ours.get("job"), int):
            self.jobs[str(recorded["job"])] = str(ours["job"])

    def value_diff(self, recorded: Any, ours: Any, where: str = "$") -> list[str]:
        """Scalar values of objects (not inside lists, which are compared by shape) must match,
        except the ones depending on files or time; lists of strings (page URLs, ids, errors)
        must match too."""
        if isinstance(recorded, dict) and isinstance(ours, dict):
            diffs = []
            for key in set(recorded) & set(ours):
                if key in VALUE_EXEMPT or _file_dependent(key, recorded[key]):
                    continue
                diffs += self.value_diff(recorded[key], ours[key], f"{where}.{key}")
            return diffs
        if isinstance(recorded, list):
            if key_is_value_list(where) and recorded != ours:
                return [f"{where}: {ours!r}, recorded {recorded!r}"]
            return []
        if recorded != ours:
            return [f"{where}: {ours!r}, recorded {recorded!r}"]
        return []


def key_is_value_list(where: str) -> bool:
    return where.rsplit(".", 1)[-1] in ("pages", "errors", "excluded_namespaces")


def _file_dependent(key: str, value: Any) -> bool:
    if key == "tags" and isinstance(value, str) and "date_added:" in value:
        return True  # the epoch is when the archive was added
    return key == "filename" and isinstance(value, str) and value.startswith("/")


# Steps before some recordings, reproducing what had happened on the real server meanwhile.
def _make_cover(replay: Replay) -> None:
    """The real 0.9 server had made the cover of Simple Comic when it indexed the archive."""
    arcid = replay.map("c55fb05ea9e801e716bdb6b8ea9efcb5f557e2a4")
    job = replay.get(f"/api/archives/{arcid}/thumbnail?no_fallback=true").json["job"]
    _wait_job(replay, job)


def _wait_job(replay: Replay, job: int) -> None:
    deadline = time.monotonic() + 10
    while replay.get(f"/api/minion/{job}").json["state"] not in ("finished", "failed"):
        assert time.monotonic() < deadline, f"job {job} did not finish"
        time.sleep(0.02)


def _wait_jobs(replay: Replay) -> None:
    """The recording was made after the queued thumbnail jobs had run."""
    time.sleep(THUMB_DELAY * 4)


SETUP: dict[tuple[str, str], Callable[[Replay], None]] = {
    ("0.9", "07-thumbnail"): _make_cover,
    ("0.9", "10-minion-job-status"): _wait_jobs,
    ("0.7", "09-thumbnail-after-job"): _wait_jobs,
}


@pytest.mark.parametrize("generation", ["0.9", "0.7"])
def test_replay_recordings(generation: str, tmp_path: Path) -> None:
    replay = Replay(generation, tmp_path)
    try:
        for path in recordings(generation):
            if path.stem in SKIPPED[generation]:
                continue
            setup = SETUP.get((generation, path.stem))
            if setup is not None:
                setup(replay)
            replay.replay(parse_recording(path))
    finally:
        replay.server.stop()
    assert not replay.failures, "\n".join(replay.failures)


@pytest.mark.parametrize("generation", ["0.9", "0.7"])
def test_skip_and_setup_lists_name_existing_recordings(generation: str) -> None:
    names = {p.stem for p in recordings(generation)}
    assert names, "no recordings found"
    assert set(SKIPPED[generation]) <= names
    assert {name for gen, name in SETUP if gen == generation} <= names


@pytest.mark.parametrize("generation", ["0.9", "0.7"])
def test_every_recording_parses(generation: str) -> None:
    for path in recordings(generation):
        rec = parse_recording(path)
        assert rec.method in ("GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"), path
        assert rec.url.startswith("/api/"), path
        if rec.status is not None and rec.is_json:
            rec.json  # noqa: B018 - must be valid JSON
