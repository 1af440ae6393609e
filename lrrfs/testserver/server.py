"""The HTTP server object and the TestServer API used by tests, benchmarks and `lrrfs demo`."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import socketserver
import threading
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from .faults import Faults, RequestLog
from .handler import LrrHandler
from .routes import Api, Config
from .store import Library

GENERATIONS = ("0.9", "0.7")
# What socketserver hands a server as a request: a socket, or for UDP (data, socket).
SocketRequest = socket.socket | tuple[bytes, socket.socket]


def check_loopback(host: str) -> str:
    """The address to bind: loopback only, this server must never be reachable from outside."""
    address = "127.0.0.1" if host == "localhost" else host
    try:
        ip = ipaddress.ip_address(address)
    except ValueError as exc:
        raise ValueError(f"--host must be a loopback address, not {host!r}") from exc
    if not ip.is_loopback:
        raise ValueError(f"--host must be a loopback address, not {host!r}")
    return address


@dataclass
class App:
    """What request handlers share."""

    api: Api
    faults: Faults
    faults_enabled: bool
    stop_event: threading.Event
    requests: RequestLog = field(default_factory=RequestLog)


class LrrHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, LrrHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host name (getfqdn): skip that.
        socketserver.TCPServer.server_bind(self)
        host, self.server_port = self.server_address[:2]
        assert isinstance(host, str)  # an AF_INET or AF_INET6 socket's name
        self.server_name = host

    def process_request(self, request: SocketRequest, client_address: object) -> None:
        assert isinstance(request, socket.socket)  # TCP: a connection
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: SocketRequest) -> None:
        assert isinstance(request, socket.socket)
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut open keep-alive and hanging connections so that their threads end."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class TestServer:
    """An LRR-compatible server for a folder of archives, served from a background thread.

    with TestServer(Path("lib"), generation="0.9", api_key="k") as srv:
        httpx.get(srv.url + "/api/archives")
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        library: Path,
        *,
        generation: str = "0.9",
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: bool = False,
        latency_ms: float = 0,
        thumbnail_delay: float = 0.3,
        missing_page_hang: float = 30.0,
        nofun: bool = False,
    ) -> None:
        if generation not in GENERATIONS:
            raise ValueError(f"generation must be one of {GENERATIONS}, not {generation!r}")
        self.library_dir = Path(library)
        self.host = check_loopback(host)
        self.port = port
        self.config = Config(generation, api_key, nofun, thumbnail_delay, missing_page_hang)
        self.faults_enabled = faults
        self.faults = Faults(latency_ms)
        self._stop = threading.Event()
        self._httpd: LrrHttpServer | None = None
        self._thread: threading.Thread | None = None
        self.library: Library | None = None
        self.app: App | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> TestServer:
        if self._httpd is not None:
            return self
        if not self.library_dir.is_dir():
            raise FileNotFoundError(f"library folder not found: {self.library_dir}")
        self.library = Library(self.library_dir, self.config.generation)
        self.library.refresh(force=True)
        api = Api(self.library, self.config, self._stop)
        self.app = App(api, self.faults, self.faults_enabled, self._stop)
        self._httpd = LrrHttpServer((self.host, self.port), self.app)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            daemon=True,
            name=f"lrrfs-testserver-{self.port}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    # ----- in-process shortcuts of the /_lrrfs/ control routes -----
    def set_faults(self, config: dict[str, Any]) -> None:
        """Same as POST /_lrrfs/faults (works without faults=True too)."""
        self.faults.configure(config)

    def clear_faults(self) -> None:
        self.faults.clear()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Same as GET /_lrrfs/requests: [{"method", "path", "status"}, ...]."""
        return self.app.requests.entries() if self.app is not None else []

    def clear_requests(self) -> None:
        if self.app is not None:
            self.app.requests.clear()

    def __enter__(self) -> TestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
