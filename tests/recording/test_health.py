"""``SrsHealth`` (which SRSs answered lately) and how new sessions and OPTIONS pings use it.

Covers: the order (up first, each group in the given order, nobody skipped), what marks an
SRS down (408, 5xx, not 4xx/6xx) and for how long (Retry-After, capped; the default),
recovery on any answer, pruning; a session starting with an SRS known down tries it last;
on real sockets, OPTIONS pings mark a silent SRS down so a new recording goes straight to
the live one.
"""

from __future__ import annotations

import asyncio
import socket

from siprec_src import Engine, EngineConfig, Party, Track
from siprec_src.recording.connector import connector_for, parse_srs
from siprec_src.recording.health import DOWN_FOR, MAX_DOWN_FOR, SrsHealth
from tests.recording.harness import connector, new_session, world
from tests.recording.minisrs import MiniSrs

A, B, C = (parse_srs(f"sip:srs@192.0.2.{n}:5060") for n in (1, 2, 3))


def test_order_puts_the_srss_that_are_up_first_and_skips_none() -> None:
    health = SrsHealth()
    assert health.order((A, B, C), 0.0) == (A, B, C)
    health.failed(str(A), 408, 0.0)
    health.failed(str(B), 503, 0.0, retry_after=5)
    assert health.order((A, B, C), 1.0) == (C, A, B)
    assert health.order((C, B, A), 1.0) == (C, B, A)
    assert health.order((A, B, C), 5.0) == (B, C, A)  # B's Retry-After is over
    assert health.order((A, B, C), DOWN_FOR) == (A, B, C)
    assert health.down(DOWN_FOR) == {}


def test_only_unavailability_marks_an_srs_down_and_any_answer_brings_it_back() -> None:
    health = SrsHealth(down_for=10.0)
    for status in (403, 404, 481, 488, 603):
        health.failed(str(A), status, 0.0)  # it answered: it refused this session, it is there
    assert not health.is_down(A, 0.0)
    health.failed(str(A), 500, 0.0)
    assert health.is_down(A, 9.9) and not health.is_down(A, 10.0)
    health.answered(str(A))
    assert not health.is_down(A, 1.0)
    health.failed(str(B), 503, 0.0, retry_after=10**9)
    assert health.down(0.0) == {str(B): MAX_DOWN_FOR}
    health.failed(str(C), 408, MAX_DOWN_FOR + 1)  # B expired meanwhile: forgotten
    assert set(health.down(MAX_DOWN_FOR + 1)) == {str(C)}
    assert str(B) not in health._down_until


def test_a_session_tries_an_srs_known_down_last() -> None:
    link, src, (srs1, srs2) = world(2)
    health = SrsHealth()
    conn = connector(2)
    health.failed(str(conn.srs[0]), 408, 0.0)
    session = new_session(src, conn)
    session._health = health  # what the engine passes in the constructor
    src.run(session, session.start)
    link.run(until=1.0)
    assert srs1.invites() == [] and len(srs2.invites()) == 1
    assert [type(e).__name__ for e in src.events] == ["AttemptStarted", "RecordingStarted"]


async def test_options_pings_mark_a_silent_srs_down_and_new_recordings_skip_it() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers: no ICMP
    silent.bind(("127.0.0.1", 0))
    silent_uri = f"sip:srs@127.0.0.1:{silent.getsockname()[1]}"
    try:
        async with MiniSrs() as good:
            main = connector_for("main", [silent_uri, good.uri()], attempt_timeout=0.5, options_interval=0.2)
            async with Engine(EngineConfig(connectors={"main": main})) as engine:
                async with asyncio.timeout(5):
                    while not engine.health.is_down(silent_uri, engine.now()):
                        await asyncio.sleep(0.05)
                assert not engine.health.is_down(good.uri(), engine.now())  # it answers OPTIONS
                call = await engine.open_call(
                    caller=Party("sip:a@example.com"), callee=Party("sip:b@example.com")
                )
                recording = await call.record(connector="main", track=Track.BOTH)
                await recording.wait_started(timeout=5)
                assert recording.srs == good.uri()
                kinds = [type(e).__name__ for e in recording.events]
                assert kinds == ["AttemptStarted", "RecordingStarted"], kinds
                await recording.stop()
    finally:
        silent.close()
