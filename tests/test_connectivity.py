"""The online/offline state's rules, as pure logic (the mounts' tests are test_offline.py)."""

from __future__ import annotations

import itertools
import socket

import httpx
import pytest
import trio
import trio.testing

from lrrfs.client.connectivity import FAILURES_TO_OFFLINE, Connectivity, Mode
from lrrfs.client.errors import LrrError, NoConnection, Offline, ServerError, ServerUnreachable
from lrrfs.client.transport import transport_error


def quiet(link: Connectivity) -> None:
    link._last_answer -= 60  # the server last answered a minute ago


def test_repeated_failures_to_reach_the_server_go_offline_and_calls_fail_at_once() -> None:
    link = Connectivity()
    quiet(link)
    for _ in range(FAILURES_TO_OFFLINE - 1):
        link.failed(NoConnection("refused"))
    assert not link.offline
    link.check("a page")  # still asks the server
    link.failed(NoConnection("refused"))
    assert link.offline and link.last_error == "refused"
    with pytest.raises(Offline, match="a page: the server is offline"):
        link.check("a page")


def test_answers_even_errors_keep_it_online() -> None:
    link = Connectivity()
    quiet(link)
    for _ in range(FAILURES_TO_OFFLINE * 2):
        link.failed(NoConnection("refused"))
        link.answered()  # a 404 or a 500 is an answer
    assert not link.offline
    for _ in range(FAILURES_TO_OFFLINE * 2):  # the server's errors, cut bodies: it is there
        link.failed(ServerError("HTTP 500", 500))
        link.failed(ServerUnreachable("the body ended early"))
    assert not link.offline


def test_a_server_that_answered_lately_is_not_called_offline() -> None:
    link = Connectivity()
    link.answered()
    for _ in range(FAILURES_TO_OFFLINE * 2):
        link.failed(NoConnection("no answer within 2 s"))
    assert not link.offline  # a busy moment, not gone


def test_never_and_forced_modes() -> None:
    never = Connectivity(Mode.NEVER)
    quiet(never)
    for _ in range(FAILURES_TO_OFFLINE * 2):
        never.failed(NoConnection("refused"))
    never.go_offline("refused")
    assert not never.offline
    forced = Connectivity(Mode.FORCED)
    assert forced.offline
    with pytest.raises(Offline):
        forced.check("a page")


def test_a_probe_passes_the_gate_and_brings_the_mount_online_with_backoff() -> None:
    link = Connectivity(probe_interval=4.0)
    link.go_offline("refused")
    assert [link.next_delay(d) for d in (1.0, 2.0, 4.0)] == [2.0, 4.0, 4.0]
    attempts: list[float] = []

    async def probe() -> None:
        link.check("server info")  # a probe is not stopped by the gate
        attempts.append(trio.current_time())
        if len(attempts) < 3:
            raise NoConnection("refused")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.watch, probe)
            while link.offline:
                await trio.sleep(0.5)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert not link.offline and len(attempts) == 3
    assert [round(b - a) for a, b in itertools.pairwise(attempts)] == [2, 4]


def test_the_work_after_a_probe_runs_online() -> None:
    """What follows the probe (the refresh that lists new archives) runs once the mount is
    online: no listing shows an archive that a call would then refuse as offline."""
    link = Connectivity(probe_interval=4.0)
    link.go_offline("refused")
    seen: list[bool] = []

    async def probe() -> None:
        pass

    async def then() -> None:
        link.check("the archive list")  # through the gate: raises Offline if still offline
        seen.append(link.offline)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.watch, probe, then)
            while not seen:
                await trio.sleep(0.5)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert seen == [False]


@pytest.mark.parametrize(
    "failure",
    [ConnectionRefusedError(111, "refused"), socket.gaierror(-3, "name resolution")],
    ids=["refused", "dns"],
)
def test_refused_and_unresolvable_are_connect_errors(failure: OSError) -> None:
    """What the transport makes of them: ConnectError, which the client counts as no
    server (NoConnection); the mounts' tests see the same with real sockets."""
    assert isinstance(transport_error(failure, connected=False), httpx.ConnectError)


def test_offline_is_an_lrr_error() -> None:
    assert issubclass(Offline, LrrError) and issubclass(NoConnection, ServerUnreachable)
