"""The API key stays with the server it belongs to; names cannot escape; modes tell the truth."""

from __future__ import annotations

import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .conftest import KEY, PYTHON, mount_env


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
