"""The test server's hostile fault actions, checked byte by byte over raw HTTP.

Each answer is read from a plain socket (http.client would hide the framing, and inflate
nothing but would read a 2 GiB body whole); big bodies are read only in part.
"""

from __future__ import annotations

import base64
import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from lrrfs.testserver import TestServer
from lrrfs.testserver.faults import ECHO_SUFFIX, JSON_FILLER, REPEATED_HEAD, Rule
from lrrfs.testserver.samples import make_archive

from .conftest import KEY, Server, start_server, wait_for
from .testserver_fixtures import send

AUTH = "Bearer " + base64.b64encode(KEY.encode()).decode()
GIB = 1 << 30
MIB = 1 << 20
TIMEOUT = 20.0  # per socket read: the deadline of every wait here


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    library = tmp_path_factory.mktemp("hostile-library")
    make_archive(library / "Tiny.zip", 3, page_bytes=20_000)
    return library


@pytest.fixture(scope="module")
def running(library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(library, tmp_path_factory.mktemp("hostile-work")) as server:
        yield server


@pytest.fixture
def server(running: Server) -> Iterator[Server]:
    running.clear_faults()
    yield running
    running.clear_faults()


class Raw:
    """One keep-alive HTTP connection on a plain socket, its answers read byte-exactly."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT)
        self.buf = bytearray()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()

    def request(self, path: str, *headers: str) -> None:
        lines = [f"GET {path} HTTP/1.1", "Host: x", f"Authorization: {AUTH}", *headers]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n\r\n")
        lines = self.buf[:end].decode("latin-1").split("\r\n")
        del self.buf[: end + 4]
        fields = (line.partition(":") for line in lines[1:])
        return int(lines[0].split()[1]), {k.strip().lower(): v.strip() for k, _, v in fields}

    def read(self, size: int) -> bytes:
        while len(self.buf) < size:
            self._fill()
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        return self.read(self.buf.index(b"\r\n") + 2)

    def chunks(self) -> list[bytes]:
        """The chunks of a chunked body, up to and with the last (empty) one."""
        chunks = []
        while True:
            size = int(self.line().split(b";")[0], 16)
            chunks.append(self.read(size))
            assert self.read(2) == b"\r\n"
            if size == 0:
                return chunks

    def _fill(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buf += data


def get(server: Server, path: str, *headers: str) -> tuple[int, dict[str, str], bytes]:
    """A whole answer with a Content-Length, on a fresh connection."""
    with Raw(server.url) as raw:
        raw.request(path, *headers)
        status, heads = raw.head()
        return status, heads, raw.read(int(heads["content-length"]))


def download_url(server: Server) -> str:
    return f"/api/archives/{server.archives()[0]['arcid']}/download"


def still_serving(server: Server) -> bool:
    status, _, body = get(server, "/api/archives")
    return status == 200 and json.loads(body)[0]["title"] == "Tiny"


# ----- compression -----


def test_gzip_bomb_is_a_valid_gzip_stream_of_zeros(server: Server) -> None:
    server.faults(rules=[{"match": "^GET /api/archives$", "action": "gzip_bomb"}])
    status, heads, body = get(server, "/api/archives")
    assert status == 200
    assert heads["content-encoding"] == "gzip"
    assert heads["content-type"].startswith("application/json")
    assert 1 * MIB < len(body) < 3 * MIB  # 2 GiB of zeros, compressed about 1000:1
    inflate = zlib.decompressobj(31)
    first = inflate.decompress(body[:65536], MIB)
    assert first == bytes(MIB)
    assert inflate.unconsumed_tail  # far more where that came from

    size = 3 * MIB + 5  # small enough to inflate whole: also checks the CRC-32 trailer
    server.faults(rules=[{"match": "download", "action": "gzip_bomb", "inflated_bytes": size}])
    status, heads, body = get(server, download_url(server))
    assert heads["content-type"].startswith("application/x-download")
    assert gzip.decompress(body) == bytes(size)


def test_garbage_gzip_fails_to_inflate(server: Server) -> None:
    server.faults(rules=[{"match": "^GET /api/archives$", "action": "garbage_gzip"}])
    status, heads, body = get(server, "/api/archives")
    assert status == 200 and heads["content-encoding"] == "gzip"
    assert heads["content-type"].startswith("application/json")
    assert len(body) == 4096 and body.startswith(b"\x1f\x8b")
    with pytest.raises(zlib.error):
        zlib.decompressobj(31).decompress(body)


# ----- big and deep bodies -----


def test_huge_announces_2_gib_and_lets_the_client_hang_up(server: Server) -> None:
    server.faults(rules=[{"match": "^GET /api/archives$", "action": "huge", "times": 1}])
    with Raw(server.url) as raw:
        raw.request("/api/archives")
        status, heads = raw.head()
        first = raw.read(MIB)
    assert status == 200 and heads["content-length"] == str(2 * GIB)
    assert heads["content-type"].startswith("application/json")
    assert first == (b"[" + JSON_FILLER * (MIB // len(JSON_FILLER) + 1))[:MIB]
    assert still_serving(server)  # closed with 2 GiB unread: the server carries on


def test_huge_repeats_a_file_answer_to_the_exact_length(server: Server, library: Path) -> None:
    size = 2 * MIB + 12345
    server.faults(rules=[{"match": "download", "action": "huge", "body_bytes": size}])
    unit = (library / "Tiny.zip").read_bytes()[:REPEATED_HEAD]
    with Raw(server.url) as raw:
        raw.request(download_url(server), "Range: bytes=0-")
        status, heads = raw.head()
        body = raw.read(int(heads["content-length"]))
        raw.request("/api/info")  # the body was framed right: the connection goes on
        assert raw.head()[0] == 200
    assert status == 200 and "content-range" not in heads
    assert len(body) == size
    assert body == (unit * (size // len(unit) + 1))[:size]


def test_huge_chunked(server: Server) -> None:
    size = 2 * MIB + 5
    rule = {"match": "^GET /api/archives$", "action": "huge", "body_bytes": size,
            "chunked": True, "times": 1}  # fmt: skip
    server.faults(rules=[rule])
    with Raw(server.url) as raw:
        raw.request("/api/archives")
        status, heads = raw.head()
        chunks = raw.chunks()
        raw.request("/api/archives")  # the connection goes on after the last chunk
        again, again_heads = raw.head()
        listing = json.loads(raw.read(int(again_heads["content-length"])))
    assert status == 200 and heads["transfer-encoding"] == "chunked"
    assert "content-length" not in heads
    assert [len(c) for c in chunks[:-1]] and all(0 < len(c) <= MIB for c in chunks[:-1])
    assert chunks[-1] == b""
    body = b"".join(chunks)
    assert body == (b"[" + JSON_FILLER * (size // len(JSON_FILLER) + 1))[:size]
    assert again == 200 and listing[0]["title"] == "Tiny"


def test_deep_json(server: Server) -> None:
    server.faults(rules=[{"match": "^GET /api/archives$", "action": "deep_json"}])
    status, heads, body = get(server, "/api/archives")
    assert status == 200 and heads["content-type"].startswith("application/json")
    assert body == b"[" * 100_000 + b"]" * 100_000
    server.faults(rules=[{"match": "^GET /api/info", "action": "deep_json", "depth": 3}])
    assert get(server, "/api/info")[2] == b"[[[]]]"


# ----- slow and ignored -----


def test_trickle_sends_the_head_then_a_byte_per_interval(server: Server) -> None:
    full = get(server, "/api/archives")[2]
    assert len(full) > 100  # at 0.2 s a byte, the whole answer would take over 20 s
    server.faults(rules=[{"match": "^GET /api/archives$", "action": "trickle",
                          "interval": 0.2, "times": 1}])  # fmt: skip
    with Raw(server.url) as raw:
        start = time.monotonic()
        raw.request("/api/archives")
        status, heads = raw.head()
        head_at = time.monotonic()
        first = raw.read(2)
        body_at = time.monotonic()
    assert status == 200 and heads["content-length"] == str(len(full))
    assert head_at - start < 10  # the head did not wait for the body
    assert first == full[:2]
    assert body_at - head_at >= 0.35  # two bytes, 0.2 s apart
    assert still_serving(server)


def test_ignore_range_answers_the_whole_file(server: Server, library: Path) -> None:
    url = download_url(server)
    original = (library / "Tiny.zip").read_bytes()
    status, heads, body = get(server, url, "Range: bytes=0-99")
    assert status == 206 and body == original[:100]  # what a server that honours Range does
    server.faults(rules=[{"match": "download", "action": "ignore_range"}])
    status, heads, body = get(server, url, "Range: bytes=0-99")
    assert status == 200 and "content-range" not in heads
    assert heads["content-length"] == str(len(original)) and body == original


# ----- error answers -----


def test_echo_auth_echoes_the_authorization_header(server: Server) -> None:
    server.faults(rules=[{"match": "^GET /api/archives$", "action": "echo_auth"}])
    status, heads, body = get(server, "/api/archives")
    assert status == 500 and heads["content-type"].startswith("application/json")
    message = f"rejected {AUTH}{ECHO_SUFFIX}"
    assert json.loads(body) == {"errors": [{"message": message, "path": "/"}], "status": 500}
    assert "\x1b]0;pwned\x07" in message and AUTH in message
    server.faults(rules=[{"match": "^GET /api/info", "action": "echo_auth", "status": 403}])
    assert get(server, "/api/info")[0] == 403


def test_echo_auth_on_0_7(library: Path, tmp_path: Path) -> None:
    with start_server(library, tmp_path, generation="0.7") as server:
        server.faults(rules=[{"match": "^GET /api/archives$", "action": "echo_auth"}])
        status, _, body = get(server, "/api/archives")
    assert status == 500
    message = f"rejected {AUTH}{ECHO_SUFFIX}"
    assert json.loads(body) == {"error": message, "operation": "fault", "success": 0}


@pytest.mark.parametrize("code", [204, 304])
def test_status_without_a_body(server: Server, code: int) -> None:
    server.faults(rules=[{"match": "^GET /api/search", "action": "status", "status": code,
                          "times": 1}])  # fmt: skip
    with Raw(server.url) as raw:
        raw.request("/api/search?filter=x")
        status, heads = raw.head()
        raw.request("/api/info")  # what follows the head is the next answer, no body bytes
        after, after_heads = raw.head()
        info = json.loads(raw.read(int(after_heads["content-length"])))
    assert status == code
    assert "content-length" not in heads and "transfer-encoding" not in heads
    assert "content-type" not in heads
    assert after == 200 and "version" in info


def test_nonsense_content_type_override(server: Server) -> None:
    listing = [{"arcid": "f" * 40, "title": "Made up", "tags": ""}]
    made_up = {"body": json.dumps(listing), "content_type": "application/json"}
    server.faults(rules=[{"match": "^GET /api/archives$", "action": "nonsense", **made_up}])
    status, heads, body = get(server, "/api/archives")
    assert status == 200 and heads["content-type"] == "application/json"
    assert json.loads(body) == listing
    server.faults(rules=[{"match": "^GET /api/archives$", "action": "nonsense"}])
    status, heads, body = get(server, "/api/archives")
    assert heads["content-type"] == "application/json;charset=UTF-8" and body == b"not json{"


# ----- rule fields -----


@pytest.mark.parametrize(
    "fields",
    [
        {"inflated_bytes": -1},
        {"inflated_bytes": 1 << 40},
        {"body_bytes": "big"},
        {"body_bytes": 1.5},
        {"depth": True},
        {"depth": -3},
        {"interval": -0.1},
        {"interval": float("nan")},
        {"interval": "1"},
        {"chunked": 1},
        {"content_type": 5},
        {"content_type": "text/plain\r\nX-Injected: 1"},
        {"times": True},
    ],
)
def test_bad_rule_fields_are_refused(fields: dict) -> None:
    with pytest.raises(ValueError):
        Rule.parse({"match": "x", "action": "huge", **fields})


def test_rule_fields_are_described(server: Server) -> None:
    rule = {"match": "x", "action": "huge", "body_bytes": 7, "chunked": True, "inflated_bytes": 9,
            "depth": 4, "interval": 0.5, "content_type": "text/plain"}  # fmt: skip
    server.faults(rules=[rule, {"match": "y", "action": "echo_auth"}])
    described = server.get("/_lrrfs/faults").json()["rules"]
    assert {k: described[0][k] for k in rule} == rule
    assert described[1]["status"] == 500 and described[1]["body_bytes"] == 2 * GIB
    assert described[1]["interval"] == 1.0 and described[1]["chunked"] is False
    bad = send(server.url, "POST", "/_lrrfs/faults",
               body=b'{"rules": [{"action": "trickle", "interval": -1}]}')  # fmt: skip
    assert bad.status == 400 and "interval" in bad.json["error"]


# ----- the server itself -----


def handler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "process_request_thread" in t.name]


def test_hanging_up_mid_body_is_quiet(
    library: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """In-process, to see the handler threads end and anything they print or log."""
    others = set(handler_threads())  # of other tests' in-process servers

    def ours() -> set[threading.Thread]:
        return set(handler_threads()) - others

    with TestServer(library, faults=True) as srv:
        url = f"/api/archives/{send(srv.url, 'GET', '/api/archives').json[0]['arcid']}/download"
        rules = [
            {"match": "download", "action": "huge", "times": 1},
            {"match": "download", "action": "trickle", "interval": 0.05, "times": 1},
            {"match": "download", "action": "trickle", "interval": 60},
        ]
        srv.set_faults({"rules": rules})
        for _ in range(2):  # huge, then trickle: the client hangs up mid-body
            with Raw(srv.url) as raw:
                raw.request(url)
                assert raw.head()[0] == 200 and len(raw.read(2)) == 2
        assert wait_for(lambda: not ours()), "a handler kept sending to nobody"
        with Raw(srv.url) as raw:  # a minute a byte: only the server's stop ends this one
            raw.request(url)
            assert raw.head()[0] == 200
            srv.stop()
            assert wait_for(lambda: not ours(), timeout=5)
    assert "Traceback" not in capsys.readouterr().err
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
