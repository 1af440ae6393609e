"""Drive an interactive program (vim, nano) in a pseudo-terminal, as a person would.

Each step waits for a text on the screen, then types keys. The whole output is
kept as a transcript (escape sequences removed) for assertions and notes.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import time
from collections.abc import Sequence
from pathlib import Path

ESCAPES = re.compile(rb"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-Za-z]|[=>])")


class Terminal:
    def __init__(self, argv: Sequence[str], cwd: Path, *, columns: int = 100, rows: int = 30):
        self.output = bytearray()
        self._mark = 0  # where in the transcript the next wait_for starts looking
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the program, in a terminal of a known size
            os.chdir(cwd)
            env = {**os.environ, "TERM": "xterm", "COLUMNS": str(columns), "LINES": str(rows)}
            os.execvpe(argv[0], list(argv), env)

    @property
    def text(self) -> str:
        return ESCAPES.sub(b"", bytes(self.output)).decode("utf-8", "replace")

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            with contextlib.suppress(OSError):  # EIO once the program has exited
                self.output += os.read(self.fd, 65536)

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        """Wait until `text` shows after what the previous wait found."""
        deadline = time.monotonic() + timeout
        while (found := self.text.find(text, self._mark)) < 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} did not show; screen so far:\n{self.text[-2000:]}")
            self._read(0.1)
        self._mark = found + len(text)

    def type(self, keys: str | bytes, pause: float = 0.05) -> None:
        os.write(self.fd, keys.encode() if isinstance(keys, str) else keys)
        time.sleep(pause)
        self._read(0)

    def finish(self, timeout: float = 20.0) -> int:
        """Wait for the program to exit; kill it (by its PID) if it does not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read(0.1)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)
        raise TimeoutError(f"{self.pid} did not exit; screen:\n{self.text[-2000:]}")
