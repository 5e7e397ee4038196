"""The reference SRS end to end on loopback: our own SRC (``Engine``) records synthetic calls to it.

Covers: a both_tracks recording over UDP (two WAV files of the right length whose dominant
frequencies are the caller's 440 Hz and the platform's 1250 Hz, ``session.json`` with the
participants, whose voice is in which file, every packet counted); the same over TLS with SRTP
(decrypted with the SRC's offered key, no authentication failure); pause and resume and a
participant change by re-INVITE (log, snapshots, merged metadata); refusal of hand-made
non-SIPREC INVITEs with 488 and a Warning; OPTIONS; shutdown (BYE to the live session, files
finished); ``siprec-src srs`` as a process stopped by SIGTERM; ``parse_listen``.

Not covered here: the session rules on a virtual clock (test_session.py: timers, refusals, vendor
bodies), the sink's jitter buffer and WAV writing (test_media.py, test_jitter.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from siprec_src import Engine, EngineConfig, Leg, Party, Track
from siprec_src.errors import ConfigError, LocalProtocolError
from siprec_src.recording.events import RecordingStopped
from siprec_src.signaling.transport import ListenSpec, TlsConfig
from siprec_src.signaling.useragent import UserAgent
from siprec_src.sip.headers import NameAddress
from siprec_src.sip.message import Request, Response
from siprec_src.sip.multipart import BodyPart, encode_multipart
from siprec_src.sip.uri import SipUri
from siprec_src.sip.useragent import UserAgentCore
from siprec_src.srs.media import StreamSink
from siprec_src.srs.plot import dominant_frequency
from siprec_src.srs.server import SessionRecord, SrsServer, parse_listen
from siprec_src.synthetic import TONES, SyntheticLeg, play
from tests.pki import make_pki

ALICE = Party("sip:alice@example.com", "Alice O'Brien")
BOB = Party("sip:bob@example.net", "Bob")
UDP = ListenSpec("udp", "127.0.0.1", 0)


class Pbx:
    """Sends each leg's tone to the call's tap ports from one socket (the taps latch the first source)."""

    def __init__(self, taps: dict[Leg, tuple[str, int]]) -> None:
        self.taps = taps
        self.legs = [SyntheticLeg(Leg.INBOUND), SyntheticLeg(Leg.OUTBOUND)]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    async def send(self, seconds: float) -> int:
        return await play(self.legs, self._out, seconds)

    def _out(self, leg: Leg, packet: bytes) -> None:
        self.sock.sendto(packet, self.taps[leg])

    def close(self) -> None:
        self.sock.close()


async def _send(taps: dict[Leg, tuple[str, int]], seconds: float) -> int:
    pbx = Pbx(taps)
    try:
        return await pbx.send(seconds)
    finally:
        pbx.close()


async def _settle(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def _wav(path: Path) -> tuple[np.ndarray[Any, Any], int]:
    with wave.open(str(path), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth()) == (1, 2)
        rate = reader.getframerate()
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    return samples, rate


def _document(record: SessionRecord) -> dict[str, Any]:
    document = json.loads(record.json_path.read_text())
    assert isinstance(document, dict)
    return document


def _check_tracks(record: SessionRecord, seconds: float) -> None:
    """Label 1 is the inbound leg (the caller's 440 Hz), label 2 the outbound leg (1250 Hz)."""
    for label, leg in (("1", Leg.INBOUND), ("2", Leg.OUTBOUND)):
        samples, rate = _wav(record.wav_path(label))
        assert rate == 8000
        assert samples.size / rate == pytest.approx(seconds, abs=0.1), label
        assert dominant_frequency(samples, rate) == pytest.approx(TONES[leg], abs=5), label


async def test_both_tracks_over_udp_make_two_wav_files_and_a_session_json(tmp_path: Path) -> None:
    async with SrsServer([UDP], tmp_path) as server, Engine(EngineConfig()) as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB)
        recording = await call.record(srs=[server.uri()], track=Track.BOTH, session_timeout=120)
        await recording.wait_started(timeout=5)
        (live,) = server.sessions
        assert live.live and json.loads(live.json_path.read_text())["state"] == "active"
        sent = await _send(call.taps, 1.0)
        await _settle(lambda: all(s.packets >= sent for s in live.stats().values()))
        await recording.stop()
        record = await server.next_ended(timeout=5)
    assert record is live and not record.live
    _check_tracks(record, 1.0)
    document = _document(record)
    assert document["state"] == "ended" and document["end_reason"] == "bye-from-src"
    assert document["sip"]["call_id"] == recording.session.sip_call_id
    assert document["sip"]["session_timer"] == {"interval_s": 120, "refresher": "src"}
    people = {(p["aor"], p["name"]) for p in document["metadata"]["participants"]}
    assert people == {(ALICE.aor, ALICE.name), (BOB.aor, BOB.name)}
    streams = {s["label"]: s for s in document["streams"]}
    assert [v["aor"] for v in streams["1"]["voice_of"]] == [ALICE.aor]
    assert [v["aor"] for v in streams["2"]["voice_of"]] == [BOB.aor]
    assert [v["aor"] for v in streams["1"]["heard_by"]] == [BOB.aor]
    for label in ("1", "2"):
        stream = streams[label]
        assert stream["file"] == f"stream-{label}.wav" and stream["codec"] == "PCMU"
        assert stream["srtp_suite"] is None
        assert stream["stats"]["packets"] == sent and stream["stats"]["lost"] == 0
        assert stream["stats"]["duration_s"] == pytest.approx(1.0, abs=0.1)
    assert len(document["snapshots"]) == 1 and document["snapshots"][0]["method"] == "INVITE"
    assert [entry["event"] for entry in document["log"]] == ["started", "ended"]
    assert sorted(p.name for p in record.directory.iterdir()) == [
        "session.json",
        "stream-1.wav",
        "stream-2.wav",
    ]


async def test_tls_with_srtp(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, "srs")
    tls = TlsConfig(certfile=str(pki.server_cert), keyfile=str(pki.server_key))
    out = tmp_path / "out"
    src_config = EngineConfig(tls=TlsConfig(cafile=str(pki.ca)))
    async with (
        SrsServer([ListenSpec("tls", "127.0.0.1", 0)], out, tls=tls) as server,
        Engine(src_config) as engine,
    ):
        call = await engine.open_call(caller=ALICE, callee=BOB)
        port = server.addresses[0].port
        recording = await call.record(srs=[f"sip:srs@localhost:{port}"], secure=True)
        await recording.wait_started(timeout=5)
        (live,) = server.sessions
        assert live.session.source.transport == "tls"
        sent = await _send(call.taps, 1.0)
        await _settle(lambda: all(s.packets >= sent for s in live.stats().values()))
        await recording.stop()
        record = await server.next_ended(timeout=5)
    _check_tracks(record, 1.0)
    for stream in _document(record)["streams"]:
        assert stream["srtp_suite"] == "AES_CM_128_HMAC_SHA1_80"
        assert stream["stats"]["srtp_failures"] == 0 and stream["stats"]["packets"] == sent


async def test_pause_resume_and_a_participant_change(tmp_path: Path) -> None:
    async with SrsServer([UDP], tmp_path) as server, Engine(EngineConfig()) as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB)
        recording = await call.record(srs=[server.uri()], track=Track.BOTH)
        await recording.wait_started(timeout=5)
        (live,) = server.sessions
        pbx = Pbx(call.taps)
        await pbx.send(0.4)
        await recording.pause()
        await _settle(lambda: all(s.paused for s in live.session.streams.values()))
        await pbx.send(0.2)  # not forwarded by the SRC while paused
        await recording.resume()
        await _settle(lambda: not any(s.paused for s in live.session.streams.values()))
        await pbx.send(0.4)
        pbx.close()
        carol = Party("sip:carol@example.net", "Carol")
        await call.update_participants(ALICE, carol)
        await _settle(lambda: len(live.session.snapshots) == 2)
        await call.close()
        record = await server.next_ended(timeout=5)
    document = _document(record)
    assert [e["event"] for e in document["log"]] == ["started", "paused", "resumed", "metadata", "ended"]
    assert [s["method"] for s in document["snapshots"]] == ["INVITE", "INVITE"]
    assert "sip:carol@example.net" in {p["aor"] for p in document["metadata"]["participants"]}
    streams = {s["label"]: s for s in document["streams"]}
    assert [v["aor"] for v in streams["2"]["voice_of"]] == ["sip:carol@example.net"]
    for label, leg in (("1", Leg.INBOUND), ("2", Leg.OUTBOUND)):
        samples, rate = _wav(record.wav_path(label))
        # What was sent before and after the pause; the SRC's fork keeps its timestamps running.
        assert 0.75 <= samples.size / rate <= 1.1
        assert dominant_frequency(samples, rate) == pytest.approx(TONES[leg], abs=5)


def _siprec_invite(ua: UserAgent, uri: str, *, require: bool = True, src_tag: bool = True) -> Request:
    target = SipUri.parse(uri)
    content_type, body = encode_multipart(
        [
            BodyPart(
                "application/sdp",
                b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                b"t=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\na=label:1\r\n",
            ),
            BodyPart(
                "application/rs-metadata+xml",
                b"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>complete</datamode>"
                b"</recording>",
                (("Content-Disposition", "recording-session"),),
            ),
        ]
    )
    contact = ua.core.local_contact("udp")
    invite = ua.core.create_request(
        "INVITE",
        target,
        NameAddress(SipUri("sip", "pbx.example.com", "caller")),
        NameAddress(target),
        body=body,
        content_type=content_type,
        contact=contact.with_param("+sip.src") if src_tag else contact,
    )
    if require:
        invite.headers.add("Require", "siprec")
    return invite


async def _invite(ua: UserAgent, uri: str, *, require: bool, src_tag: bool) -> Response:
    outcome = await ua.request(_siprec_invite(ua, uri, require=require, src_tag=src_tag), timeout=5)
    assert isinstance(outcome, Response)
    return outcome


async def test_non_siprec_invites_are_refused_with_a_warning_and_options_answered(tmp_path: Path) -> None:
    async with SrsServer([UDP], tmp_path) as server:
        ua = UserAgent(UserAgentCore())
        await ua.start([ListenSpec("udp", "127.0.0.1", 0)])
        try:
            plain = await _invite(ua, server.uri(), require=False, src_tag=True)
            assert plain.status == 488
            assert "Require: siprec" in (plain.headers.get("Warning") or "")
            untagged = await _invite(ua, server.uri(), require=True, src_tag=False)
            assert untagged.status == 488 and "+sip.src" in (untagged.headers.get("Warning") or "")
            target = SipUri.parse(server.uri())
            options = ua.core.create_request(
                "OPTIONS", target, NameAddress(SipUri("sip", "pbx.example.com")), NameAddress(target)
            )
            ok = await ua.request(options, timeout=5)
            assert isinstance(ok, Response) and ok.status == 200
            assert "siprec" in ok.header_tokens("Supported")
            assert "multipart/mixed" in (ok.headers.get("Accept") or "")
        finally:
            await ua.close()
        assert server.sessions == ()
    assert list(tmp_path.iterdir()) == []


async def test_close_sends_bye_to_live_sessions_and_finishes_the_files(tmp_path: Path) -> None:
    ended: list[SessionRecord] = []
    server = SrsServer([UDP, ListenSpec("tcp", "127.0.0.1", 0)], tmp_path, on_session_end=ended.append)
    await server.start()
    async with Engine(EngineConfig()) as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB)
        recordings = [
            await call.record(srs=[server.uri("udp")], track=Track.INBOUND, name="over-udp"),
            await call.record(srs=[server.uri("tcp")], track=Track.OUTBOUND, name="over-tcp"),
        ]
        for recording in recordings:
            await recording.wait_started(timeout=5)
        await _send(call.taps, 0.5)
        await server.close()
        for recording in recordings:
            await recording.wait_ended(timeout=5)
            stopped = [e for e in recording.events if isinstance(e, RecordingStopped)]
            assert stopped and stopped[0].by == "srs"
        await call.close()
    assert len(ended) == 2 and {r.session.source.transport for r in ended} == {"udp", "tcp"}
    for record in ended:
        document = _document(record)
        assert document["end_reason"] == "shutdown" and document["state"] == "ended"
        (stream,) = document["streams"]
        samples, rate = _wav(record.wav_path(stream["label"]))
        assert samples.size / rate == pytest.approx(0.5, abs=0.1)


async def test_cancel_while_the_sinks_open_and_no_sinks_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()
    opened: list[StreamSink] = []
    real_open = StreamSink.open

    async def slow_open(host: str, *, label: str, out_path: Path | None) -> StreamSink:
        if host == "fail":
            raise LocalProtocolError("no free even/odd UDP port pair")
        sink = await real_open(host, label=label, out_path=out_path)
        opened.append(sink)
        await release.wait()  # bound, but the server hears of it only now
        return sink

    def port_free(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

    monkeypatch.setattr(StreamSink, "open", slow_open)
    async with SrsServer([UDP], tmp_path) as server:
        ua = UserAgent(UserAgentCore())
        await ua.start([ListenSpec("udp", "127.0.0.1", 0)])
        try:
            invite = _siprec_invite(ua, server.uri())
            request_id = ua.send(invite, await ua.destination_for(invite.sip_uri))
            await asyncio.sleep(0.2)  # the 100 Trying is in: CANCEL can go
            ua.cancel(request_id)
            outcome = await ua.wait(request_id, timeout=5)
            assert isinstance(outcome, Response) and outcome.status == 487
            (sink,) = opened
            assert not port_free(sink.port)
            release.set()
            await _settle(lambda: port_free(sink.port) and not list(tmp_path.iterdir()))
            assert server.sessions == ()
            server.media_host = "fail"
            refused = await ua.request(_siprec_invite(ua, server.uri()), timeout=5)
            assert isinstance(refused, Response) and refused.status == 503
            assert "no free even/odd UDP port pair" in (refused.headers.get("Warning") or "")
        finally:
            await ua.close()
    assert list(tmp_path.iterdir()) == []


def test_parse_listen() -> None:
    assert parse_listen("sip:127.0.0.1:5080") == [
        ListenSpec("udp", "127.0.0.1", 5080),
        ListenSpec("tcp", "127.0.0.1", 5080),
    ]
    assert parse_listen("sip:127.0.0.1:5080;transport=tcp") == [ListenSpec("tcp", "127.0.0.1", 5080)]
    assert parse_listen("sips:127.0.0.1") == [ListenSpec("tls", "127.0.0.1", 5061)]
    assert parse_listen("sip:[::1]:5070;transport=udp") == [ListenSpec("udp", "::1", 5070)]
    with pytest.raises(ConfigError, match="transport must be"):
        parse_listen("sip:127.0.0.1;transport=sctp")


CLI = """
import argparse, sys
from siprec_src.srs.server import add_srs_arguments, srs_main
parser = argparse.ArgumentParser()
add_srs_arguments(parser)
sys.exit(srs_main(parser.parse_args(sys.argv[1:])))
"""


async def test_the_command_runs_until_sigterm_and_shuts_down_gracefully(tmp_path: Path) -> None:
    out = tmp_path / "recordings"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLI,
        "--listen",
        "sip:127.0.0.1:0;transport=udp",
        "--out",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(15):
            banner = (await process.stdout.readline()).decode()
        assert banner.startswith("siprec-src srs listening on udp:127.0.0.1:"), banner
        port = int(banner.split("udp:127.0.0.1:")[1].split(",")[0].split()[0])
        async with Engine(EngineConfig()) as engine:
            call = await engine.open_call(caller=ALICE, callee=BOB)
            recording = await call.record(srs=[f"sip:srs@127.0.0.1:{port}"], track=Track.BOTH)
            await recording.wait_started(timeout=5)
            async with asyncio.timeout(5):
                started = (await process.stdout.readline()).decode()
            assert started.startswith("session ") and " started: " in started
            await _send(call.taps, 0.3)
            process.send_signal(signal.SIGTERM)
            await recording.wait_ended(timeout=5)
            await call.close()
        async with asyncio.timeout(15):
            rest, errors = await process.communicate()
        assert process.returncode == 0, errors.decode()
        assert " ended: shutdown " in rest.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    (folder,) = out.iterdir()
    document = json.loads((folder / "session.json").read_text())
    assert document["end_reason"] == "shutdown" and len(document["streams"]) == 2
