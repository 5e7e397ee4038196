"""The embedding API end to end on real loopback sockets, against a minimal in-test SRS.

Covers: a both_tracks recording of a tapped call (every packet the sender sent reaches the
SRS's sockets, under the fork's own SSRC with contiguous sequence numbers, and SRs arrive),
the feed() path, SRTP over TLS with the test CA (the SRS decrypts with the key we offered),
failover from a silent SRS to a second one, pause/resume, the 4-stream limit, custom
parameters as X- headers and in the metadata, and an SRS that refuses. Bounded in time.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import sys
from pathlib import Path

import pytest

from siprec_src import Engine, EngineConfig, Leg, Party, RecordingError, Track
from siprec_src.media.rtp import SenderReport, parse_rtcp
from siprec_src.metadata.reader import read_siprec_body
from siprec_src.recording.connector import connector_for
from siprec_src.recording.events import AttemptFailed, RecordingPaused, RecordingResumed, RecordingStarted
from siprec_src.signaling.transport import ListenSpec, TlsConfig
from siprec_src.synthetic import SyntheticLeg, play
from tests.pki import make_pki
from tests.recording.minisrs import MiniSrs

ALICE = Party("sip:alice@example.com", "Alice O'Brien & Sons <sales>")
BOB = Party("sip:bob@example.net", "Bob")


async def _send(call_taps: dict[Leg, tuple[str, int]], seconds: float) -> list[SyntheticLeg]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    legs = [SyntheticLeg(Leg.INBOUND), SyntheticLeg(Leg.OUTBOUND)]
    try:
        await play(legs, lambda leg, packet: sock.sendto(packet, call_taps[leg]), seconds)
    finally:
        sock.close()
    return legs


async def _settle(condition, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_both_tracks_recording_delivers_every_packet_with_stable_ssrc_and_sr() -> None:
    async with MiniSrs() as srs, Engine(EngineConfig()) as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB)
        recording = await call.record(srs=[srs.uri()], track=Track.BOTH, session_timeout=90)
        await recording.wait_started(timeout=5)
        assert recording.status == "in-progress"
        legs = await _send(call.taps, 1.0)
        await _settle(lambda: all(len(s.packets) >= legs[0].sent for s in srs.sinks))
        await recording.stop()
        assert recording.status == "stopped"
        await _settle(lambda: srs.byes == 1)
        (invite,) = srs.invites
        _, metadata = read_siprec_body(invite.content_type or "", invite.body)
        assert {p.name for p in metadata.participants} == {ALICE.name, BOB.name}
        ssrcs = {label: ssrc for label, _, ssrc in recording.streams}
        for sink, label in zip(srs.sinks, ("1", "2"), strict=True):
            assert {p.ssrc for p in sink.packets} == {ssrcs[label]}
            seqs = [p.sequence for p in sink.packets]
            assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
            assert len(sink.packets) == legs[0].sent
            # RTCP BYE at stop; a sender report carries our SSRC and packet count (RFC 3550 §6.4.1).
            reports = [
                p for raw in sink.rtcp_packets for p in parse_rtcp(raw).packets if isinstance(p, SenderReport)
            ]
            assert reports and reports[-1].ssrc == ssrcs[label]
        stats = recording.fork_stats
        assert stats["1"].packets_sent == legs[0].sent and stats["2"].packets_sent == legs[1].sent


async def test_feed_path_and_single_track() -> None:
    async with MiniSrs() as srs, Engine(EngineConfig()) as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB, tap=False)
        recording = await call.record(srs=[srs.uri()], track="inbound_track")
        await recording.wait_started(timeout=5)
        leg = SyntheticLeg(Leg.INBOUND)
        for _ in range(50):
            call.feed(Leg.INBOUND, leg.next_packet())
            call.feed(Leg.OUTBOUND, SyntheticLeg(Leg.OUTBOUND).next_packet())  # not recorded
        await _settle(lambda: len(srs.sinks) == 1 and len(srs.sinks[0].packets) == 50)
        await call.close()
        assert recording.status == "stopped"


async def test_secure_recording_over_tls_with_srtp(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, "siprec")
    srs_tls = TlsConfig(certfile=str(pki.server_cert), keyfile=str(pki.server_key), cafile=str(pki.ca))
    async with MiniSrs(ListenSpec("tls", "127.0.0.1", 0), tls=srs_tls) as srs:
        src_tls = TlsConfig(cafile=str(pki.ca))
        config = EngineConfig(tls=src_tls)
        async with Engine(config) as engine:
            call = await engine.open_call(caller=ALICE, callee=BOB)
            _host, port = srs.ua.transport.local_address("tls")  # type: ignore[union-attr]
            recording = await call.record(srs=[f"sip:srs@localhost:{port}"], secure=True)
            await recording.wait_started(timeout=5)
            (invite,) = srs.invites
            assert b"RTP/SAVP" in invite.body and b"AES_CM_128_HMAC_SHA1_80" in invite.body
            legs = await _send(call.taps, 0.5)
            await _settle(lambda: all(len(s.packets) >= legs[0].sent for s in srs.sinks))
            await recording.stop()
            assert all(s.undecryptable == 0 for s in srs.sinks)
            payload = legs[0]._frames[0]
            assert srs.sinks[0].packets[0].payload == payload  # decrypted with the key we offered


async def test_silent_srs_fails_over_to_the_next() -> None:
    async with MiniSrs(answer=False) as silent, MiniSrs() as good, Engine() as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB)
        connector = connector_for("two", [silent.uri(), good.uri()], attempt_timeout=0.5)
        recording = await call.record(connector=connector)
        await recording.wait_started(timeout=5)
        failed = [e for e in recording.events if isinstance(e, AttemptFailed)]
        assert [(e.attempt, e.status) for e in failed] == [(1, 408)]
        (started,) = [e for e in recording.events if isinstance(e, RecordingStarted)]
        assert started.srs == good.uri()
        assert len(silent.invites) >= 1 and len(good.invites) == 1
        await call.close()


async def test_pause_resume_and_stream_limit() -> None:
    async with MiniSrs() as srs, Engine() as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB)
        first = await call.record(srs=[srs.uri()], track=Track.BOTH, name="first")
        second = await call.record(srs=[srs.uri()], track=Track.BOTH, name="second")
        with pytest.raises(Exception, match="limit is 4 per call"):
            await call.record(srs=[srs.uri()], track=Track.INBOUND)
        with pytest.raises(Exception, match="already has a recording named"):
            await call.record(srs=[srs.uri()], track=Track.INBOUND, name="first")
        await first.wait_started(timeout=5)
        await second.wait_started(timeout=5)
        await call.recording("first").pause()
        await _settle(lambda: len(srs.invites) == 3)
        assert srs.invites[-1].body.count(b"a=inactive") == 2
        await first.resume()
        await _settle(lambda: any(isinstance(e, RecordingResumed) for e in first.events))
        assert any(isinstance(e, RecordingPaused) for e in first.events)
        await second.stop()
        third = await call.record(srs=[srs.uri()], track=Track.INBOUND)  # room again
        await third.wait_started(timeout=5)
        await call.close()


async def test_custom_parameters_as_headers_or_metadata() -> None:
    async with MiniSrs() as srs, Engine() as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB)
        one = await call.record(srs=[srs.uri()], params={"CustomerId": "42"})
        two = await call.record(srs=[srs.uri()], params={"CustomerId": "43"}, params_in_metadata=True)
        await one.wait_started(timeout=5)
        await two.wait_started(timeout=5)
        assert srs.invites[0].headers.get("X-CustomerId") == "42"
        _, metadata = read_siprec_body(srs.invites[1].content_type or "", srs.invites[1].body)
        assert ("CustomerId", "43") in metadata.extensions[0].elements
        assert srs.invites[1].headers.get("X-CustomerId") is None
        await call.close()


async def test_refusing_srs_fails_the_recording_with_its_status() -> None:
    async with Engine() as engine:
        refusing = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # nothing listens: ICMP → 503
        refusing.bind(("127.0.0.1", 0))
        port = refusing.getsockname()[1]
        refusing.close()
        call = await engine.open_call(caller=ALICE, callee=BOB)
        recording = await call.record(srs=[f"sip:srs@127.0.0.1:{port};transport=tcp"])
        with pytest.raises(RecordingError) as failure:
            await recording.wait_started(timeout=5)
        assert failure.value.status == 503
        assert recording.status == "failed"
        await call.close()


async def test_the_embedding_example_runs() -> None:
    example = Path(__file__).parents[2] / "examples" / "embed.py"
    async with MiniSrs() as srs:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(example),
            srs.uri(),
            "0.5",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(20):
            out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        assert b"25 packets sent" in out
        assert len(srs.sinks) == 2 and all(len(s.packets) == 25 for s in srs.sinks)


async def test_update_participants_reinvites_with_the_same_ids() -> None:
    async with MiniSrs() as srs, Engine() as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB)
        recording = await call.record(srs=[srs.uri()], params={"Queue": "7"}, params_in_metadata=True)
        await recording.wait_started(timeout=5)
        await call.update_participants(ALICE, Party("sip:carol@example.net", "Carol"))
        await _settle(lambda: len(srs.invites) == 2)
        _, first = read_siprec_body(srs.invites[0].content_type or "", srs.invites[0].body)
        _, second = read_siprec_body(srs.invites[1].content_type or "", srs.invites[1].body)
        assert second.sessions[0].session_id == first.sessions[0].session_id
        assert [s.stream_id for s in second.streams] == [s.stream_id for s in first.streams]
        assert "sip:carol@example.net" in {p.aor for p in second.participants}
        assert ("Queue", "7") in second.extensions[0].elements
        await call.close()


async def test_a_closed_call_is_forgotten_by_the_engine() -> None:
    """A sidecar opens calls for months: nothing of a closed call may stay in the engine."""
    async with MiniSrs() as srs, Engine() as engine:
        for _ in range(3):
            call = await engine.open_call(caller=ALICE, callee=BOB)
            recording = await call.record(srs=[srs.uri()], track=Track.BOTH)
            await recording.wait_started(timeout=5)
            await call.close()
            assert recording.status == "stopped" and call.recordings  # the caller's objects stay whole
        assert engine.calls == {} and engine.recordings == {} and engine.streams == {}
        assert engine.router.sessions == {}
