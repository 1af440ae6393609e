"""An async client for the LANraragi HTTP API (both generations), under trio.

It knows LANraragi and nothing of FUSE. Every call has an overall deadline,
idempotent requests are retried briefly, and every request passes a
`trio.CapacityLimiter` so that cancelled waiters cannot leak httpcore pool
slots (httpcore issue 1093).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx
import trio

from .answers import (
    content_disposition_filename,
    error_message,
    expect_file,
    iter_archives,
    parse_archives,
)
from .downloads import DownloadStream
from .errors import (
    BadResponse,
    NotFound,
    ServerError,
    ServerUnreachable,
    printable,
)
from .models import (
    ARCID_RE,
    MAX_PAGES,
    ArchiveMeta,
    Category,
    DownloadInfo,
    PageRef,
    ServerInfo,
    Thumbnail,
    archive_id,
    number,
)
from .ranges import JobAborted, RangeJob
from .session import (
    ARCHIVE_LIST_CAP,
    FILE_HEADERS,
    MAX_JOB_POLL,
    PAGE_CAP,
    PLACEHOLDER_NAME,
    SEARCH_PAGES,
    THUMBNAIL_CAP,
    THUMBNAIL_POLL,
    ClientSession,
    ClientStats,
)
from .transport import BODY_CAP

log = logging.getLogger(__name__)

T = TypeVar("T")


class LrrClient(ClientSession):
    """A LANraragi server, reached over HTTP: the API's calls.

    `timeout` bounds each call as a whole (all retries included), and each
    chunk of a streamed download.
    """

    # -- reading --------------------------------------------------------------

    async def info(self) -> ServerInfo:
        try:
            info = ServerInfo.from_json(await self._get_json("/api/info", "server info"))
        except (NotFound, BadResponse) as exc:
            # Answered, but not as LANraragi does: the URL is wrong (a path, another service).
            raise BadResponse(
                f"no LANraragi server answers at {self.origin}{self.prefix} ({exc}); "
                "give the address its web interface has, such as http://nas:3000"
            ) from None
        self._use_extract = not info.has_files_route
        return info

    def assume(self, info: ServerInfo) -> None:
        """Take `info` as the server's (from the disk cache: a mount that starts offline)."""
        self._use_extract = not info.has_files_route

    async def check_key(self) -> None:
        """Raise AuthRejected unless the server accepts our key (or needs none)."""
        what = "API key check"
        response = await self._send("GET", self.api_url("/api/shinobu"), what=what)
        if response.status_code in (401, 403):
            self._raise_for_status(response, what)

    async def archives(self) -> list[ArchiveMeta]:
        """The whole library. Malformed entries are skipped with a warning."""
        return parse_archives(await self.archives_body())

    async def archives_body(self) -> bytes:
        """The archive list as the server sent it (see `parse_archives`): a caller can
        tell an unchanged list by its bytes without parsing it."""
        what = "archive list"
        response = await self._send(
            "GET", self.api_url("/api/archives"), what=what, cap=ARCHIVE_LIST_CAP
        )
        self._raise_for_status(response, what)
        return response.content

    async def untagged(self) -> list[str]:
        """Ids of the archives the server counts as untagged."""
        return await self._get_list("/api/archives/untagged", "untagged archives", archive_id)

    async def categories(self) -> list[Category]:
        """Every category; malformed entries are skipped with a warning."""
        return await self._get_list("/api/categories", "category list", Category.from_json)

    async def _get_list(self, path: str, what: str, parse: Callable[[Any], T]) -> list[T]:
        """A JSON array, each entry parsed; malformed entries are skipped with a warning."""
        body = await self._get_json(path, what)
        if not isinstance(body, list):
            raise BadResponse(f"{what}: the answer is not a JSON array")
        parsed = []
        for entry in body:
            try:
                parsed.append(parse(entry))
            except BadResponse as exc:
                log.warning("%s: skipping a malformed entry: %s", what, exc)
        return parsed

    async def search(self, query: str) -> list[str]:
        """Ids of the archives the server finds for `query`, in its order, all pages of them."""
        what = f"search for {query!r}"
        found, total = await self._search_page(query, -1, what)  # -1: unpaged
        if len(found) >= total:
            return found
        # A server that pages even so: ask page by page from the start, a bounded number
        # of pages (a server may claim a billion results and bring new ones every time).
        found, seen = [], set()
        for _ in range(SEARCH_PAGES):
            page, total = await self._search_page(query, len(found), what)
            page = [arcid for arcid in page if arcid not in seen]
            if not page:
                return found
            seen.update(page)
            found += page
            if len(found) >= total:
                return found
        raise BadResponse(f"{what}: still more results after {SEARCH_PAGES} pages of them")

    async def _search_page(self, query: str, start: int, what: str) -> tuple[list[str], int]:
        params = {"filter": query, "start": str(start)}
        response = await self._send("GET", self.api_url("/api/search"), what=what, params=params)
        if response.status_code == 204:
            raise ServerError(f"{what}: the server is still building its search index", 204)
        self._raise_for_status(response, what)
        body = self._json(response, what)
        data = body.get("data") if isinstance(body, dict) else None
        total = body.get("recordsFiltered") if isinstance(body, dict) else None
        total = number(str(total)) if isinstance(total, int | str) else None
        if not isinstance(data, list) or total is None:
            raise BadResponse(f"{what}: no data and recordsFiltered in the answer")
        ids = [entry.get("arcid") for entry in data if isinstance(entry, dict)]
        return [i for i in ids if isinstance(i, str) and ARCID_RE.fullmatch(i)], total

    async def metadata(self, arcid: str) -> ArchiveMeta:
        what = f"metadata of {arcid}"
        response = await self._send(
            "GET", self.api_url(f"/api/archives/{arcid}/metadata"), what=what
        )
        if response.status_code == 400 or (
            response.status_code == 200 and response.content in (b"", b'""')
        ):
            raise NotFound(f"{what}: {error_message(response, self._secrets)}")
        self._raise_for_status(response, what)
        return ArchiveMeta.from_json(self._json(response, what))

    async def page_list(self, arcid: str) -> list[PageRef]:
        """The archive's pages in reading order: `GET /files`, or `POST /extract` on old servers."""
        if not self._use_extract:
            what = f"page list of {arcid}"
            url = self.api_url(f"/api/archives/{arcid}/files")
            response = await self._send("GET", url, what=what)
            if response.status_code not in (404, 405) or self._use_extract is False:
                self._raise_for_status(response, what)
                return self._parse_pages(arcid, self._json(response, what), what)
            log.info("server has no GET /files; using POST /extract")
            self._use_extract = True
        return await self._extract(arcid)

    async def _extract(self, arcid: str) -> list[PageRef]:
        what = f"extraction of {arcid}"
        url = self.api_url(f"/api/archives/{arcid}/extract")
        # Extraction is idempotent on the server (it re-extracts the same pages).
        response = await self._send("POST", url, what=what)
        self._raise_for_status(response, what)
        return self._parse_pages(arcid, self._json(response, what), what)

    def _parse_pages(self, arcid: str, body: Any, what: str) -> list[PageRef]:
        pages = body.get("pages") if isinstance(body, dict) else None
        if not isinstance(pages, list) or not all(isinstance(p, str) for p in pages):
            raise BadResponse(f"{what}: no list of page URLs in the answer")
        if len(pages) > MAX_PAGES:
            raise BadResponse(f"{what}: {len(pages)} pages, more than any archive has")
        refs = []
        for url in pages:
            parts = urlsplit(url)
            if not parts.path.endswith(f"/api/archives/{arcid}/page"):
                raise BadResponse(f"{what}: a page URL points outside the archive")
            query = dict(parse_qsl(parts.query.replace("+", "%2B"), keep_blank_values=True))
            if "path" not in query:
                raise BadResponse(f"{what}: a page URL has no path")
            refs.append(PageRef(path=query["path"], url=self.resolve(url)))
        return refs

    async def page(self, arcid: str, ref: PageRef, size: int | None = None) -> bytes:
        """The bytes of one page, exactly as the server serves them; `size`, where a
        listing gave it, is the most it may have."""
        what = f"page {printable(ref.path)!r} of {arcid}"
        cap = PAGE_CAP if size is None else size

        async def get() -> httpx.Response:
            return await self._send("GET", ref.url, what=what, headers=FILE_HEADERS, cap=cap)

        response = await get()
        if response.status_code == 400 and self._use_extract:
            # Old servers forget extractions (temp folder cleaned): extract again.
            await self._extract(arcid)
            response = await get()
        self._raise_for_status(response, what)
        expect_file(response, what)
        return response.content

    async def thumbnail(self, arcid: str) -> Thumbnail:
        """The cover thumbnail; waits a bounded time for the server to make it.

        Current servers answer 202 with a job to poll; old ones hand out their
        placeholder (`noThumb.png`) until the real one exists.
        """
        what = f"thumbnail of {arcid}"
        url = self.api_url(f"/api/archives/{arcid}/thumbnail")
        with trio.move_on_after(self.thumbnail_wait):
            while True:
                response = await self._send(
                    "GET", url, what=what, params={"no_fallback": "true"},
                    headers=FILE_HEADERS, cap=THUMBNAIL_CAP,
                )  # fmt: skip
                self._raise_for_status(response, what)
                if response.status_code == 202:
                    job = self._job_number(self._json(response, what), what)
                    await self.wait_for_job(job, what)
                    continue
                expect_file(response, what)
                if content_disposition_filename(response.headers.raw) != PLACEHOLDER_NAME:
                    return Thumbnail(response.content, placeholder=False)
                await trio.sleep(THUMBNAIL_POLL * 2)
        response = await self._send("GET", url, what=what, headers=FILE_HEADERS, cap=THUMBNAIL_CAP)
        self._raise_for_status(response, what)
        if response.status_code != 200:
            raise BadResponse(f"{what}: HTTP {response.status_code} without a fallback")
        expect_file(response, what)
        return Thumbnail(response.content, placeholder=True)

    async def page_thumbnail(self, arcid: str, page: int) -> bytes | int:
        """The server's small picture of page `page` (1 = the first; 0.9 servers), or the
        number of the job making it (202): `wait_for_job`, then ask again."""
        what = f"thumbnail of page {page} of {arcid}"
        response = await self._send(
            "GET", self.api_url(f"/api/archives/{arcid}/thumbnail"), what=what,
            params={"page": str(page), "no_fallback": "true"}, headers=FILE_HEADERS,
            cap=THUMBNAIL_CAP,
        )  # fmt: skip
        self._raise_for_status(response, what)
        if response.status_code == 202:
            return self._job_number(self._json(response, what), what)
        expect_file(response, what)
        name = content_disposition_filename(response.headers.raw) or ""
        if name == PLACEHOLDER_NAME or name.startswith(arcid):  # the cover: no page thumbnails
            raise BadResponse(f"{what}: the server sent {name!r}, not a picture of the page")
        return response.content

    @staticmethod
    def _job_number(body: Any, what: str) -> int:
        job = body.get("job") if isinstance(body, dict) else None
        found = number(str(job)) if isinstance(job, int | str) else None
        if found is None:
            raise BadResponse(f"{what}: 202 without a job number")
        return found

    async def wait_for_job(self, job: int, what: str) -> None:
        """Poll a server job (Minion) until it finishes, less often as it goes on; the
        caller bounds the wait. ServerError if the job failed."""
        pause = THUMBNAIL_POLL
        while True:
            state = await self._get_json(f"/api/minion/{job}", f"{what} (job {job})")
            status = state.get("state") if isinstance(state, dict) else None
            if status == "finished":
                return
            if status == "failed":
                raise ServerError(f"{what}: the server's thumbnail job failed", 500)
            await trio.sleep(pause)
            pause = min(pause * 1.5, MAX_JOB_POLL)

    async def download_info(self, arcid: str) -> DownloadInfo:
        """HEAD of `/download`: the archive's exact length and its file name."""
        what = f"download of {arcid}"
        response = await self._send(
            "HEAD", self.api_url(f"/api/archives/{arcid}/download"), what=what,
            headers=FILE_HEADERS,
        )  # fmt: skip
        self._raise_for_status(response, what)
        length = number(response.headers.get("content-length", ""))
        if length is None:
            raise BadResponse(f"{what}: no Content-Length")
        return DownloadInfo(length, content_disposition_filename(response.headers.raw))

    async def open_download(self, arcid: str, start: int, end: int | None = None) -> DownloadStream:
        """Open a Range request for the archive file from byte `start` (to `end`, inclusive).

        The caller must `aclose()` the stream; it may do so from another task.
        """
        if not ARCID_RE.fullmatch(arcid):
            raise NotFound(f"{arcid!r} is not an archive id")
        what = f"download of {arcid}"
        byte_range = f"bytes={start}-" if end is None else f"bytes={start}-{end}"
        request = self._http.build_request(
            "GET", self.api_url(f"/api/archives/{arcid}/download"),
            headers={"Range": byte_range, **FILE_HEADERS}, extensions={BODY_CAP: None},
        )  # fmt: skip
        token = object()
        await self._stream_limiter.acquire_on_behalf_of(token)
        response: httpx.Response | None = None

        async def attempt() -> httpx.Response:
            answer = await self._counted(self._http.send(request, stream=True))
            if answer.status_code >= 400:
                await answer.aread()
            return answer

        try:
            response = await self._retrying(attempt, what)
            self._raise_for_status(response, what)
            return DownloadStream(response, start, what, self._release(token))
        except BaseException:
            if response is not None:
                await response.aclose()
            self._stream_limiter.release_on_behalf_of(token)
            raise

    def read_range(self, arcid: str, start: int, buffer: memoryview, total: int) -> RangeJob:
        """Start filling `buffer` with the archive file's bytes from `start`, in a worker
        thread; the file must be `total` bytes long. Give the job back with `forget_range`."""
        if not ARCID_RE.fullmatch(arcid):
            raise NotFound(f"{arcid!r} is not an archive id")
        self.link.check(f"download of {arcid}")
        self.stats.requests += 1
        return self._ranges.submit(arcid, start, buffer, total)

    def forget_range(self, job: RangeJob) -> None:
        self._ranges.forget(job)
        if job.error is not None and not isinstance(job.error, JobAborted):
            self.stats.errors += 1
            self.link.failed(job.error)
        elif job.stall is not None:
            self.link.failed(job.stall)
        elif job.filled:
            self.link.answered()

    def _release(self, token: object) -> Callable[[], None]:
        return lambda: self._stream_limiter.release_on_behalf_of(token)

    # -- writing --------------------------------------------------------------

    async def update_metadata(
        self, arcid: str, *, title: str, tags: list[str], summary: str | None
    ) -> None:
        """Set title, tags and (where the server keeps one) summary, always together:
        a PUT without tags clears them on real servers."""
        what = f"metadata update of {arcid}"
        form = {"title": title, "tags": ",".join(tags)}
        if summary is not None:
            form["summary"] = summary
        url = self.api_url(f"/api/archives/{arcid}/metadata")
        response = await self._send("PUT", url, what=what, data=form)
        self._check_success(response, what)

    async def set_isnew(self, arcid: str, isnew: bool) -> None:
        """Set (PUT, 0.9 only) or clear (DELETE) the archive's "new" flag."""
        what = f"{'setting' if isnew else 'clearing'} the new flag of {arcid}"
        url = self.api_url(f"/api/archives/{arcid}/isnew")
        response = await self._send("PUT" if isnew else "DELETE", url, what=what)
        if isnew and response.status_code in (404, 405):
            raise ServerError(f"{what}: this server cannot mark an archive new again", 404)
        self._check_success(response, what)

    async def set_progress(self, arcid: str, page: int) -> None:
        """Tell the server the archive was read up to `page` (1-based)."""
        what = f"reading progress of {arcid}"
        url = self.api_url(f"/api/archives/{arcid}/progress/{page}")
        self._check_success(await self._send("PUT", url, what=what), what)

    async def download_range(self, arcid: str, start: int, end: int) -> tuple[bytes, int]:
        """Bytes `start..end` (inclusive) of the archive file, and the file's total size."""
        stream = await self.open_download(arcid, start, end)
        try:
            with trio.fail_after(self.timeout):
                chunks = [chunk async for chunk in stream.chunks(end - start + 1)]
        except trio.TooSlowError:
            raise ServerUnreachable(f"download of {arcid}: stalled mid-body") from None
        finally:
            await stream.aclose()
        return b"".join(chunks), stream.total


__all__ = ["ClientStats", "DownloadStream", "LrrClient", "iter_archives", "parse_archives"]
