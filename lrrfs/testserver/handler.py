"""HTTP plumbing: parse a request, apply latency and faults, send the answer.

Headers are written as UTF-8 (LRR sends raw UTF-8 file names in Content-Disposition). Files
are streamed with socket.sendfile, bodies made while sending (Response.stream) chunk by chunk.
A client that goes away mid-answer only ends its connection. The request log never holds
headers, and nothing here logs the Authorization header or the `key` parameter.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from . import multipart
from .faults import Mangle, apply, hidden_headers, refusal
from .responses import Response, Stream, json_response
from .routes import Request

if TYPE_CHECKING:
    from .server import App, LrrHttpServer

log = logging.getLogger(__name__)

_KEY_PARAM = re.compile(r"([?&]key=)[^&]*")
MAX_BODY = 4 << 30
SMALL_BODY = 1 << 20


def redact(path: str) -> str:
    return _KEY_PARAM.sub(r"\1<redacted>", path)


class LrrHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lrrfs-testserver"
    sys_version = ""
    timeout = 300  # an idle keep-alive connection is closed after this many seconds
    server: LrrHttpServer

    def setup(self) -> None:
        super().setup()
        # Head and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every small answer.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], redact(format % args))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s -> %s", self.command, redact(self.path), code)

    # ----- serving -----
    def _serve(self) -> None:
        app: App = self.server.app
        self._spooled: Path | None = None
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send(json_response({"error": "Bad request body"}, 400))
            return
        try:
            self._serve_body(app, body)
        finally:
            if self._spooled is not None:
                self._spooled.unlink(missing_ok=True)

    def _serve_body(self, app: App, body: bytes) -> None:
        if app.faults_enabled and self.path.startswith("/_lrrfs/"):
            self._send(self._control(app, body))
            return
        entry = app.requests.add(self.command, self.path)
        if app.faults.latency_ms > 0 and self.path.startswith("/api"):
            app.stop_event.wait(app.faults.latency_ms / 1000)
        resp, mangle = self._answer(app, body)
        entry["status"] = None if resp.hang is not None else resp.status
        self.log_request(entry["status"] or "-")
        self._send(resp, mangle)

    def _answer(self, app: App, body: bytes) -> tuple[Response, Mangle | None]:
        # Rules are only ever set through the control routes (--faults) or in-process.
        rule = app.faults.take(f"{self.command} {self.path}")
        if rule is not None:
            refused = refusal(rule, app.api.shapes, self.headers.get("Authorization", ""))
            if refused is not None:
                return refused, None
        try:
            resp = app.api.dispatch(self._request(body, hidden_headers(rule)))
        except Exception:
            log.exception("error answering %s %s", self.command, redact(self.path))
            resp = app.api.shapes.server_error()
        if rule is None:
            return resp, None
        return apply(rule, resp)

    def _request(self, body: bytes, hidden: tuple[str, ...] = ()) -> Request:
        split = urlsplit(self.path)
        headers = self.headers
        if hidden:  # a copy without them (routes read the headers, e.g. Range)
            headers = http.client.HTTPMessage()
            dropped = {name.lower() for name in hidden}
            for key, value in self.headers.items():
                if key.lower() not in dropped:
                    headers[key] = value
        ctype = self.headers.get("Content-Type", "")
        form: list[tuple[str, str]] = []
        files: dict[str, multipart.FilePart] = {}
        if ctype.startswith("application/x-www-form-urlencoded"):
            form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        elif self._spooled is not None:
            form, files = multipart.parse(ctype, self._spooled)
        return Request(
            method=self.command,
            raw_path=self.path,
            path=unquote(split.path, errors="replace"),
            query=parse_qsl(split.query, keep_blank_values=True, errors="replace"),
            form=form,
            headers=headers,
            body=body,
            files=files,
        )

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            raise ValueError("bad Content-Length")
        if self.headers.get("Content-Type", "").startswith("multipart/form-data"):
            # Uploads go to disk, as Mojolicious puts large ones (a file of gigabytes).
            self._spooled = multipart.spool(self.rfile, length, self.server.app.api.lib.root)
            return b""
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    # ----- control routes (only with --faults) -----
    def _control(self, app: App, body: bytes) -> Response:
        route = (self.command, urlsplit(self.path).path)
        if route == ("GET", "/_lrrfs/requests"):
            return json_response({"requests": app.requests.entries()})
        if route == ("DELETE", "/_lrrfs/requests"):
            app.requests.clear()
            return json_response({"ok": True})
        if route == ("GET", "/_lrrfs/faults"):
            return json_response(app.faults.describe())
        if route == ("DELETE", "/_lrrfs/faults"):
            app.faults.clear()
            return json_response({"ok": True})
        if route == ("POST", "/_lrrfs/faults"):
            try:
                app.faults.configure(json.loads(body or b"{}"))
            except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
                return json_response({"error": str(exc)}, 400)
            return json_response({"ok": True, **app.faults.describe()})
        return json_response({"error": "no such control route"}, 404)

    # ----- sending -----
    def _send(self, resp: Response, mangle: Mangle | None = None) -> None:
        if resp.hang is not None:
            # Hold the connection without a byte of answer, then close it (as LRR does).
            self.server.app.stop_event.wait(resp.hang)
            self.close_connection = True
            return
        try:
            head = self._head(resp)
            if self.command == "HEAD" or resp.bodiless:
                self.wfile.write(head)
            elif resp.stream is not None:
                self.wfile.write(head)
                if not self._write_stream(resp.stream):
                    self.close_connection = True
            elif resp.file is None and mangle is None and resp.length <= SMALL_BODY:
                self.wfile.write(head + resp.body)  # one write, one packet for small answers
            else:
                self.wfile.write(head)
                self._write_body(resp, mangle)
        except OSError:  # the client went away (or the server is stopping)
            self.close_connection = True
        finally:
            if resp.stream is not None:
                resp.stream.chunks.close()  # closes a file it may have open
        if mangle is not None:
            self.close_connection = True

    def _head(self, resp: Response) -> bytes:
        try:
            phrase = HTTPStatus(resp.status).phrase
        except ValueError:
            phrase = "Status"
        lines = [f"HTTP/1.1 {resp.status} {phrase}"]
        lines += [f"{k}: {v}" for k, v in resp.headers]
        if resp.stream is not None and resp.stream.chunked:
            lines.append("Transfer-Encoding: chunked")
        elif not resp.bodiless:
            lines.append(f"Content-Length: {resp.length}")
        lines += [f"Date: {self.date_time_string()}", f"Server: {self.server_version}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

    def _write_stream(self, stream: Stream) -> bool:
        """Send the chunks `pace` seconds apart; False if cut short (the server is stopping)."""
        stop = self.server.app.stop_event
        sent = 0
        for chunk in stream.chunks:
            if stop.wait(stream.pace) if stream.pace else stop.is_set():
                return False
            if not chunk:
                continue  # an empty chunk would end a chunked body
            self.wfile.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if stream.chunked else chunk)
            sent += len(chunk)
        if stream.chunked:
            self.wfile.write(b"0\r\n\r\n")
        return stream.chunked or sent == stream.length

    def _write_body(self, resp: Response, mangle: Mangle | None) -> None:
        limit = resp.length if mangle is None or mangle.limit is None else mangle.limit
        if resp.file is not None:
            path, offset, _ = resp.file
            if limit:
                with open(path, "rb") as f:
                    self.connection.sendfile(f, offset, limit)
        elif limit:
            self.wfile.write(memoryview(resp.body)[:limit])
        if mangle is not None and mangle.extra:
            self.wfile.write(mangle.extra)
