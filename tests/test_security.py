"""The API key stays with the server it belongs to; names cannot escape; modes tell the truth."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lrrfs.testserver.samples import make_archive

from .conftest import KEY, PYTHON, mount_env, start_mount, start_server


class Recorder(BaseHTTPRequestHandler):
    """Answers every request with a redirect (or 200) and remembers its headers."""

    seen: list[dict[str, str]]
    location: str | None

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers))
        if self.location:
            self.send_response(302)
            self.send_header("Location", self.location + self.path)
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def serve(location: str | None) -> tuple[ThreadingHTTPServer, list[dict[str, str]]]:
    seen: list[dict[str, str]] = []
    handler = type("Handler", (Recorder,), {"seen": seen, "location": location})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def test_a_redirect_is_not_followed_and_the_key_goes_nowhere_else(tmp_path):
    elsewhere, elsewhere_seen = serve(None)
    redirector, redirector_seen = serve(f"http://127.0.0.1:{elsewhere.server_port}")
    mountpoint = tmp_path / "lrr"
    mountpoint.mkdir()
    try:
        done = subprocess.run(
            [PYTHON, "-m", "lrrfs", "mount", f"http://127.0.0.1:{redirector.server_port}",
             str(mountpoint), "--timeout", "5"],
            capture_output=True, text=True, timeout=60, env=mount_env(KEY),
        )  # fmt: skip
    finally:
        redirector.shutdown()
        elsewhere.shutdown()
    assert done.returncode != 0
    assert "redirects to http://127.0.0.1" in done.stderr and "mount that address" in done.stderr
    assert redirector_seen  # the key went to the server named on the command line...
    assert elsewhere_seen == []  # ...and nowhere else
    assert KEY not in done.stderr
    assert not os.path.ismount(mountpoint)


class TlsFront:
    """An https front on 127.0.0.1 for the plain test server, with a self-signed
    certificate: each TLS connection is relayed byte for byte."""

    def __init__(self, backend_port: int, workdir) -> None:
        cert, key = workdir / "cert.pem", workdir / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.backend_port = backend_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(raw,), daemon=True).start()

    def _relay(self, raw: socket.socket) -> None:
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()  # the client refused our certificate
            return
        backend = socket.create_connection(("127.0.0.1", self.backend_port))
        threading.Thread(target=_pipe, args=(backend, client), daemon=True).start()
        _pipe(client, backend)

    def close(self) -> None:
        self.listener.close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.close()


def test_https_certificates_are_verified_unless_insecure_is_asked_for(tmp_path):
    library = tmp_path / "library"
    make_archive(library / "Secure.zip", 2, page_bytes=3000)
    with start_server(library, tmp_path) as server:
        front = TlsFront(server.port, tmp_path)
        url = f"https://127.0.0.1:{front.port}"
        mountpoint = tmp_path / "lrr"
        mountpoint.mkdir()
        try:
            refused = subprocess.run(
                [PYTHON, "-m", "lrrfs", "mount", url, str(mountpoint), "--timeout", "5"],
                capture_output=True, text=True, timeout=60, env=mount_env(KEY),
            )  # fmt: skip
            assert refused.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr
            assert not os.path.ismount(mountpoint)
            with start_mount(server, mountpoint, url=url, args=("--insecure",)) as mount:
                assert (mount.path / "Secure" / "Secure.zip").read_bytes() == (
                    library / "Secure.zip"
                ).read_bytes()
                assert "NOT verifying the certificate" in mount.log_text()
        finally:
            front.close()
