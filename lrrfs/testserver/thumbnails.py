"""Thumbnails and the job queue ("Minion") that makes them, as on a real server.

Thumbnails are not made at start: the first request queues a job, which finishes after the
configured delay; until then the server answers a placeholder PNG (or 202 + job id on 0.9 with
no_fallback=true). Jobs run one at a time on one worker thread, in order.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

# A real 0.9.81 made a 500x926 picture of a 200 KB page: fit in 500 wide, 1000 high.
THUMB_BOX = (500, 1000)


@cache
def placeholder_png() -> bytes:
    """Our own "noThumb.png" (203x280 like the real one), made once."""
    img = Image.new("RGB", (203, 280), (202, 236, 246))
    draw = ImageDraw.Draw(img)
    draw.rectangle((20, 40, 182, 240), outline=(80, 80, 120), width=4)
    draw.line((20, 40, 182, 240), fill=(80, 80, 120), width=4)
    draw.line((182, 40, 20, 240), fill=(80, 80, 120), width=4)
    draw.text((60, 250), "no thumbnail", fill=(40, 40, 60))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def make_thumbnail(image_bytes: bytes) -> bytes:
    """A JPEG of the image resized to fit THUMB_BOX (as large as fits, keeping its shape)."""
    with Image.open(io.BytesIO(image_bytes)) as img:
        img.seek(0)
        rgb = img.convert("RGB")
    scale = min(THUMB_BOX[0] / max(1, rgb.width), THUMB_BOX[1] / max(1, rgb.height))
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=85)
    return out.getvalue()


@dataclass
class Job:
    id: int
    task: str
    key: Any
    work: Callable[[], None] | None
    created: float
    due: float
    state: str = "inactive"
    error: str = ""
    started: float | None = None
    finished: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)


class Minion:
    """A queue of delayed jobs run by one worker thread."""

    def __init__(self, delay: float, stop: threading.Event) -> None:
        self.delay = delay
        self._stop = stop
        self._cond = threading.Condition()
        self._jobs: dict[int, Job] = {}
        self._queue: list[Job] = []
        self._pending: dict[Any, Job] = {}
        now = time.time()
        # Job 1 is the cache warm-up a real server runs at start (0.7.9/83-minion-job).
        warm = Job(1, "warm_cache", None, None, now, now, "finished", started=now, finished=now)
        self._jobs[1] = warm
        self._next = 2
        self._thread = threading.Thread(target=self._run, name="lrrfs-minion", daemon=True)
        self._thread.start()

    def enqueue(self, task: str, key: Any, work: Callable[[], None]) -> int:
        """Queue `work` (or return the id of the job already pending for `key`)."""
        with self._cond:
            pending = self._pending.get(key)
            if pending is not None:
                return pending.id
            now = time.time()
            job = Job(self._next, task, key, work, now, now + self.delay)
            self._next += 1
            self._jobs[job.id] = job
            self._pending[key] = job
            self._queue.append(job)
            self._cond.notify()
            return job.id

    def job(self, job_id: int) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                if not self._queue:
                    self._cond.wait(0.5)
                    continue
                job = self._queue[0]
                now = time.time()
                half = (job.created + job.due) / 2
                if now >= half and job.state == "inactive":
                    # inactive during the first half of the delay, active in the second
                    job.state, job.started = "active", now
                if now < job.due:
                    self._cond.wait(min((half if now < half else job.due) - now, 0.5))
                    continue
                self._queue.pop(0)
                job.state, job.started = "active", job.started or now
            self._execute(job)

    def _execute(self, job: Job) -> None:
        try:
            if job.work is not None:
                job.work()
            state, error = "finished", ""
        except Exception as exc:
            log.debug("job %d failed: %s", job.id, exc)
            state, error = "failed", str(exc)
        with self._cond:
            job.state, job.error, job.finished = state, error, time.time()
            self._pending.pop(job.key, None)
