"""An async client for the LANraragi HTTP API (both generations), under trio.

It knows LANraragi and nothing of FUSE. Every call has an overall deadline,
idempotent requests are retried briefly, and every request passes a
`trio.CapacityLimiter` so that cancelled waiters cannot leak httpcore pool
slots (httpcore issue 1093).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx
import trio

from .connectivity import Connectivity
from .errors import (
    RETRY_DELAYS,
    RETRY_STATUSES,
    BadResponse,
    LrrError,
    NoConnection,
    NotFound,
    ServerError,
    ServerUnreachable,
    printable,
    server_text,
    status_error,
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
    json_int,
    number,
)
from .ranges import CONTENT_RANGE_RE, JobAborted, RangeJob, RangePool
from .transport import BODY_CAP, DEFAULT_BODY_CAP, ConnectionPool, Endpoint, ThreadTransport

log = logging.getLogger(__name__)

T = TypeVar("T")

THUMBNAIL_POLL = 0.25
MAX_JOB_POLL = 2.0  # seconds between polls of a long server job, at most
PLACEHOLDER_NAME = "noThumb.png"
# Body caps, by what an answer is: past them it is no real answer (transport.py).
ARCHIVE_LIST_CAP = 96 << 20  # ~150,000 archives of a real server's JSON
PAGE_CAP = 64 << 20  # a page whose length no listing gave
THUMBNAIL_CAP = 8 << 20  # real covers are 30-200 KB
SEARCH_PAGES = 1_000  # pages of a paged search followed, at most
FILE_HEADERS = {"Accept-Encoding": "identity"}  # pages and archives are compressed already
# Failures where no server answered at all: what tells that the mount is offline.
NOT_REACHED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadTimeout)


def describe_transport_error(exc: httpx.TransportError) -> str:
    """A short reason for a transport failure, without URLs or headers."""
    # httpx and trio wrap the telling error (a refused certificate, a reset) in errors
    # without text: say the innermost one that has some.
    text, inner = str(exc).strip(), exc.__cause__ or exc.__context__
    while inner is not None:
        text = str(inner).strip() or text
        inner = inner.__cause__ or inner.__context__
    text = printable(text)  # http.client quotes what the server sent
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def error_message(response: httpx.Response, secrets: tuple[str, ...] = ()) -> str:
    """The server's own words from either error shape, or the status line; fit to show."""
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):
        body = None
    message = ""
    if isinstance(body, dict):
        if isinstance(body.get("error"), str):
            message = html.unescape(body["error"])
        elif isinstance(body.get("errors"), list) and body["errors"]:
            first = body["errors"][0]
            if isinstance(first, dict):
                message = str(first.get("message", ""))
    message = server_text(message, secrets)
    return message or server_text(f"HTTP {response.status_code} {response.reason_phrase}")


def expect_file(response: httpx.Response, what: str) -> None:
    """A page, thumbnail or archive answer is never JSON or HTML: those are errors or
    nonsense, and their bytes must not be served as the file's."""
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if response.status_code < 300 and kind in ("application/json", "text/html"):
        raise BadResponse(f"{what}: the server answered {kind} instead of the file")


def content_disposition_filename(raw_headers: list[tuple[bytes, bytes]]) -> str | None:
    """The file name in `Content-Disposition`, which LRR sends as raw UTF-8."""
    for name, value in raw_headers:
        if name.lower() != b"content-disposition":
            continue
        text = value.decode("utf-8", "replace")
        match = re.search(r'filename="((?:[^"\\]|\\.)*)"', text)
        if match:
            return re.sub(r"\\(.)", r"\1", match.group(1))
        match = re.search(r"filename=([^;]+)", text)
        if match:
            return match.group(1).strip()
    return None


def parse_archives(body: bytes) -> list[ArchiveMeta]:
    """The archives of a `GET /api/archives` body; malformed entries are skipped."""
    return list(iter_archives(body))


JSON_SPACE = re.compile(r"[ \t\n\r]*")


def iter_archives(body: bytes) -> Iterator[ArchiveMeta]:
    """The archives of a `GET /api/archives` body, decoded one at a time: the list of
    dicts of a 100,000-archive library at once would take 100 MB. Malformed entries are
    skipped with a warning."""
    what = "archive list"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadResponse(f"{what}: the answer is not valid JSON") from None
    decoder = json.JSONDecoder()
    pos = _skip_space(text, 0)
    if not text.startswith("[", pos):
        raise BadResponse(f"{what}: the answer is not a JSON array")
    pos = _skip_space(text, pos + 1)
    closed = text.startswith("]", pos)
    while not closed:
        entry, pos = _decode_entry(decoder, text, pos, what)
        try:
            yield ArchiveMeta.from_json(entry)
        except BadResponse as exc:
            log.warning("%s: skipping a malformed entry: %s", what, exc)
        pos = _skip_space(text, pos)
        closed = text.startswith("]", pos)
        if not closed and not text.startswith(",", pos):
            raise BadResponse(f"{what}: the answer is not valid JSON")
        pos = _skip_space(text, pos + 1) if not closed else pos
    if _skip_space(text, pos + 1) != len(text):
        raise BadResponse(f"{what}: the answer is not valid JSON")


# For an entry the fast decoder refused: one integer too long for int() spoils that entry
# (no field takes a LongNumber), not the whole list.
LONG_NUMBER_DECODER = json.JSONDecoder(parse_int=json_int)


def _decode_entry(decoder: json.JSONDecoder, text: str, pos: int, what: str) -> tuple[Any, int]:
    """The JSON value at `pos` and the position after it."""
    for attempt in (decoder, LONG_NUMBER_DECODER):
        try:
            return attempt.raw_decode(text, pos)
        except ValueError:
            continue  # maybe an integer of 5,000 digits: the second decoder takes it
        except RecursionError:  # nested past any real answer
            break
    raise BadResponse(f"{what}: the answer is not valid JSON") from None


def _skip_space(text: str, pos: int) -> int:
    match = JSON_SPACE.match(text, pos)
    assert match is not None  # it matches the empty text too
    return match.end()


@dataclass
class ClientStats:
    """Counters for `lrrfs status`: requests sent, failed and in flight."""

    requests: int = 0
    errors: int = 0
    in_flight: int = 0


class LrrClient:
    """A LANraragi server, reached over HTTP.

    `timeout` bounds each call as a whole (all retries included), and each
    chunk of a streamed download.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        connections: int = 6,
        streams: int = 4,
        ranges: int = 5,  # Range requests of archive files in flight: hides a slow link
        thumbnail_wait: float = 5.0,
        verify: bool = True,
        link: Connectivity | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
        self.prefix = url.path.rstrip("/")
        self.timeout = timeout
        self.thumbnail_wait = thumbnail_wait
        self.has_key = bool(api_key)
        self.link = link or Connectivity()  # online or offline: see connectivity.py
        headers = {"Accept": "application/json, */*", "Accept-Encoding": "gzip, deflate"}
        self._secrets: tuple[str, ...] = ()  # never shown, even when a server echoes them
        if api_key:
            token = base64.b64encode(api_key.encode("utf-8")).decode("ascii")
            headers["Authorization"] = f"Bearer {token}"
            self._secrets = (token, api_key)
        # Bytes move in worker threads (transport.py): httpx under trio would parse
        # every body on the trio thread, which also serves the kernel.
        endpoint = Endpoint.from_url(base_url, timeout, verify)
        pool = ConnectionPool(endpoint, connections + streams + ranges)
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,  # the key must never travel to another host
            transport=ThreadTransport(pool),
        )
        self._limiter = trio.CapacityLimiter(connections)
        self._stream_limiter = trio.CapacityLimiter(streams)
        self._use_extract: bool | None = None  # None until the server tells
        self.stats = ClientStats()
        auth = {k: v for k, v in headers.items() if k == "Authorization"}
        self._ranges = RangePool(pool, self.prefix, auth, ranges, self._secrets)
        self.endpoint = endpoint  # for requests that stream a body of their own (writes.py)
        self.auth_headers = auth

    async def aclose(self) -> None:
        self._ranges.close()
        await self._http.aclose()

    # -- plumbing -------------------------------------------------------------

    def api_url(self, path: str) -> str:
        return f"{self.origin}{self.prefix}{path}"

    def resolve(self, url: str) -> str:
        """A URL the server handed out (page URLs), made absolute on this server.

        Old servers send `./api/...`, new ones `/api/...`; a base-URL prefix may
        or may not be part of it. Absolute URLs must point at this server.
        """
        if url.startswith("./"):
            url = url[1:]
        parts = urlsplit(url)
        if parts.scheme or parts.netloc:
            if f"{parts.scheme}://{parts.netloc}" != self.origin:
                raise BadResponse("the server listed a page on another host")
            url = url[len(self.origin) :]
        if not url.startswith("/"):
            url = "/" + url
        if self.prefix and not url.startswith(self.prefix + "/"):
            url = self.prefix + url
        return self.origin + url

    async def _send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        idempotent: bool = True,
        cap: int = DEFAULT_BODY_CAP,
    ) -> httpx.Response:
        """One API call, retried while idempotent, under one overall deadline; its body
        at most `cap` bytes (else TooLarge)."""

        async def attempt() -> httpx.Response:
            async with self._limiter:
                return await self._counted(
                    self._http.request(
                        method,
                        url,
                        params=params,
                        data=data,
                        headers=headers,
                        extensions={BODY_CAP: cap},
                    )
                )

        return await self._retrying(attempt, what, idempotent)

    async def _retrying(
        self, attempt: Callable[[], Awaitable[httpx.Response]], what: str, idempotent: bool = True
    ) -> httpx.Response:
        """Run `attempt` until it answers, retrying transport errors and 429/502/503/504
        a few times while the request is idempotent, all under one deadline."""
        self.link.check(what)  # offline: fail now, not after the deadline
        try:
            response = await self._attempts(attempt, what, idempotent)
        except LrrError as exc:
            self.link.failed(exc)
            raise
        self.link.answered()
        return response

    async def _attempts(
        self, attempt: Callable[[], Awaitable[httpx.Response]], what: str, idempotent: bool
    ) -> httpx.Response:
        attempts = len(RETRY_DELAYS) + 1 if idempotent else 1
        try:
            with trio.fail_after(self.timeout):
                for number in range(attempts):
                    last = number == attempts - 1
                    try:
                        response = await attempt()
                    except httpx.TransportError as exc:
                        if last:
                            reached = not isinstance(exc, NOT_REACHED)
                            error = ServerUnreachable if reached else NoConnection
                            raise error(f"{what}: {describe_transport_error(exc)}") from None
                        log.debug("%s: %s, retrying", what, describe_transport_error(exc))
                    else:
                        if response.status_code not in RETRY_STATUSES or last:
                            return response
                        await response.aclose()
                        log.debug("%s: HTTP %d, retrying", what, response.status_code)
                    await trio.sleep(RETRY_DELAYS[number])
        except trio.TooSlowError:
            raise NoConnection(f"{what}: no answer within {self.timeout:g} s") from None
        raise AssertionError("unreachable")

    async def _counted(self, request: Awaitable[httpx.Response]) -> httpx.Response:
        self.stats.requests += 1
        self.stats.in_flight += 1
        try:
            response = await request
        except BaseException:
            self.stats.errors += 1
            raise
        finally:
            self.stats.in_flight -= 1
        if response.status_code >= 400:
            self.stats.errors += 1
        return response

    def _raise_for_status(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if 300 <= status < 400:
            target = urlsplit(response.headers.get("location", ""))
            where = (
                printable(f"{target.scheme}://{target.hostname or ''}{target.path}")
                if target.scheme
                else "?"
            )
            raise ServerError(
                f"{what}: the server redirects to {where}; mount that address instead "
                "(lrrfs follows no redirect, so the API key never leaves this server)",
                status,
            )
        if status < 400:
            return
        refusal = "rejected the API key" if self.has_key else "requires an API key"
        raise status_error(what, status, error_message(response, self._secrets), refusal)

    @staticmethod
    def _json(response: httpx.Response, what: str) -> Any:
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError):  # RecursionError: nested past any real answer
            raise BadResponse(f"{what}: the answer is not valid JSON") from None

    async def write(
        self, method: str, path: str, what: str, *, params: dict[str, str] | None = None
    ) -> Any:
        """A write that answers `success: 1` in JSON (writes.py), sent once: its JSON."""
        response = await self._send(
            method, self.api_url(path), what=what, params=params, idempotent=False
        )
        self._check_success(response, what)
        return self._json(response, what)

    async def read_json(self, path: str, what: str, **params: str) -> Any:
        """A GET's JSON answer (writes.py reads back what it wrote)."""
        return await self._get_json(path, what, **params)

    def error_text(self, response: httpx.Response) -> str:
        """The server's words for an error answer, fit to show."""
        return error_message(response, self._secrets)

    async def _get_json(self, path: str, what: str, **params: str) -> Any:
        response = await self._send("GET", self.api_url(path), what=what, params=params or None)
        self._raise_for_status(response, what)
        return self._json(response, what)

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

    def _check_success(self, response: httpx.Response, what: str) -> None:
        self._raise_for_status(response, what)
        body = self._json(response, what)
        if not isinstance(body, dict) or body.get("success") not in (1, "1", True):
            raise ServerError(
                f"{what}: {error_message(response, self._secrets)}", response.status_code
            )

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


class DownloadStream:
    """An open Range response; yields bytes from the requested start, checked."""

    def __init__(
        self,
        response: httpx.Response,
        start: int,
        what: str,
        on_close: Callable[[], None],
    ) -> None:
        self._response = response
        self._on_close: Callable[[], None] | None = on_close
        self._what = what
        self.start = start
        self.total, self._skip = self._parse_range(response, start)

    def _parse_range(self, response: httpx.Response, start: int) -> tuple[int, int]:
        expect_file(response, self._what)
        if response.status_code == 206:
            match = CONTENT_RANGE_RE.fullmatch(response.headers.get("content-range", ""))
            if not match or int(match.group(1)) != start:
                raise BadResponse(f"{self._what}: the server sent the wrong range")
            return int(match.group(3)), 0
        if response.status_code == 200:
            # A server that ignores Range: skip to the start ourselves.
            length = number(response.headers.get("content-length", ""))
            if length is None:
                raise BadResponse(f"{self._what}: no Content-Length")
            return length, start
        raise BadResponse(f"{self._what}: unexpected HTTP {response.status_code}")

    async def aclose(self) -> None:
        """Close the connection (mid-body it is dropped, not reused) and free the slot."""
        try:
            with trio.CancelScope(shield=True):
                await self._response.aclose()
        finally:
            if self._on_close is not None:
                self._on_close()
                self._on_close = None

    async def chunks(self, limit: int | None = None) -> AsyncIterator[bytes]:
        """Up to `limit` bytes from `start`, chunk by chunk.

        No deadline of its own (a cancel scope per chunk costs a tenth of the
        throughput): the caller bounds its reads.
        """
        raw = self._response.aiter_raw()
        remaining = limit
        while remaining is None or remaining > 0:
            try:
                chunk = await anext(raw, None)
            except httpx.TransportError as exc:
                raise ServerUnreachable(f"{self._what}: {describe_transport_error(exc)}") from None
            if chunk is None:
                if remaining:
                    raise ServerUnreachable(f"{self._what}: the body ended early")
                return
            if self._skip:
                cut = min(self._skip, len(chunk))
                self._skip -= cut
                chunk = chunk[cut:]
            if remaining is not None:
                chunk = chunk[:remaining]
                remaining -= len(chunk)
            if chunk:
                yield chunk


__all__ = ["DownloadStream", "LrrClient", "LrrError", "iter_archives", "parse_archives"]
