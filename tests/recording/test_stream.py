"""WebSocket audio streams end to end: a real Engine, real loopback sockets, an aiohttp service.

Covers: the Twilio message order and content (connected, start with custom parameters and
media format, media per track with chunks and RTP-timed timestamps, stop), the audio round trip
(the tone sent on each leg is the tone decoded from the messages, after µ-law and after L16 at
16 kHz, also through a media worker process), wss:// verified with a test CA (and refused
without it), connect failures and a handshake timeout, a stalled service (oldest frames dropped
and counted while the call's SIPREC recording receives every packet), a service that closes
(StreamDropped with the error, the recording untouched), a malformed message (1007), the
loss of the media worker, bidirectional playback reaching an RTP sink and a callback (the tone
played is the tone received, paced at 20 ms), checkpoints/marks answered after their audio,
clearAudio/clear, the four-stream budget and names shared with SIPREC recordings, streamTimeout,
and the pure pieces (send queue, RTP-timed framing with gaps and late packets).

Not covered here: the REST/TwiML/Plivo XML surfaces (tests/control), the wire formats
themselves (tests/streams).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import signal
import socket
import ssl
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from siprec_src import Engine, EngineConfig, Leg, MediaConfig, Party, Track
from siprec_src.errors import LocalProtocolError
from siprec_src.media.audio import L16_8K, PCMU_8K
from siprec_src.media.g711 import ulaw_decode, ulaw_encode
from siprec_src.media.rtp import RtpPacket
from siprec_src.recording.engine import Call
from siprec_src.recording.events import (
    StreamDropped,
    StreamEvent,
    StreamFramesDropped,
    StreamPlayed,
    StreamStarted,
    StreamStopped,
)
from siprec_src.recording.playback import UdpPlayback
from siprec_src.recording.stream import LegAudio, SendQueue, Stream, StreamError
from siprec_src.sdp.siprec import CodecSpec
from siprec_src.streams.options import (
    PlivoAudioTrack,
    PlivoContentType,
    PlivoStreamOptions,
    TwilioStreamOptions,
    TwilioTrack,
)
from siprec_src.synthetic import TONES, SyntheticLeg, play
from tests.pki import make_pki
from tests.recording.minisrs import MiniSrs
from tests.recording.wsserver import Connection, WsServer

ALICE = Party("sip:alice@example.com", "Alice")
BOB = Party("sip:bob@example.net", "Bob")


# --- helpers ----------------------------------------------------------------------------------


async def settle(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def tone(frequency: float, seconds: float, rate: int, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * frequency * t) * amplitude).astype(np.int16)


def media_of(connection: Connection, track: str) -> list[dict[str, object]]:
    return [m["media"] for m in connection.events("media") if m["media"]["track"] == track]


async def send_tones(call: Call, seconds: float) -> list[SyntheticLeg]:
    """Both legs' tones, paced in real time, to the call's tap ports."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    legs = [SyntheticLeg(Leg.INBOUND), SyntheticLeg(Leg.OUTBOUND)]

    def send(leg: Leg, packet: bytes) -> None:
        sock.sendto(packet, call.taps[leg])

    try:
        await play(legs, send, seconds)
    finally:
        sock.close()
    return legs


class Recorder:
    """The Engine's on_stream_event, kept per stream."""

    def __init__(self) -> None:
        self.events: list[tuple[Stream, StreamEvent]] = []

    def __call__(self, stream: Stream, event: StreamEvent) -> None:
        self.events.append((stream, event))

    def of(self, stream: Stream) -> list[StreamEvent]:
        return [event for s, event in self.events if s is stream]


def rtp_packet(seq: int, timestamp: int, payload: bytes, ssrc: int = 0x1234, pt: int = 0) -> bytes:
    return bytes(RtpPacket(pt, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc, payload))


class RtpSink:
    """A UDP socket standing in for the PBX that plays what the stream service sends."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.packets: list[RtpPacket] = []
        self.arrivals: list[float] = []
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.fileno(), self._read)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()
        return host, port

    def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                return
            self.packets.append(RtpPacket.parse(data))
            self.arrivals.append(loop.time())

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


# --- the Twilio shape: message order and content, the µ-law round trip --------------------------


async def test_twilio_stream_sends_connected_start_media_stop_with_the_tones() -> None:
    recorder = Recorder()
    async with WsServer() as server, Engine(on_stream_event=recorder) as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB)
        options = TwilioStreamOptions(
            url=server.url(),
            name="analytics",
            track=TwilioTrack.BOTH,
            parameters=(("CustomerId", "42"), ("Queue", "sales & support")),
        )
        stream = await call.stream(options, account_sid="AC" + "0" * 32, call_sid="CA" + "1" * 32)
        assert stream.sid.startswith("MZ") and len(stream.sid) == 34
        assert call.get_stream("analytics") is stream and call.get_stream(stream.sid) is stream
        await stream.wait_started(timeout=5)
        assert stream.status == "in-progress"
        legs = await send_tones(call, 1.0)
        connection = await server.connection()
        await connection.wait_for(lambda: len(connection.events("media")) >= 2 * legs[0].sent)
        await stream.stop()
        await connection.wait_closed()

    assert stream.status == "stopped"
    assert connection.close_code == 1000
    messages = connection.messages
    assert [m["event"] for m in messages[:2]] == ["connected", "start"]
    assert messages[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert messages[-1]["event"] == "stop"
    assert {m["event"] for m in messages[2:-1]} == {"media"}
    # sequenceNumber: "1" for start, +1 per message; every message but connected names the stream.
    assert [m["sequenceNumber"] for m in messages[1:]] == [str(n) for n in range(1, len(messages))]
    assert all(m["streamSid"] == stream.sid for m in messages[1:])
    start = messages[1]["start"]
    assert start["callSid"] == "CA" + "1" * 32 and start["accountSid"] == "AC" + "0" * 32
    assert start["tracks"] == ["inbound", "outbound"]
    assert start["customParameters"] == {"CustomerId": "42", "Queue": "sales & support"}
    assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert messages[-1]["stop"] == {"accountSid": "AC" + "0" * 32, "callSid": "CA" + "1" * 32}
    for leg, synthetic in zip((Leg.INBOUND, Leg.OUTBOUND), legs, strict=True):
        media = media_of(connection, leg.value)
        assert len(media) == synthetic.sent  # one 20 ms frame per packet, none invented or lost
        assert [m["chunk"] for m in media] == [str(n) for n in range(1, len(media) + 1)]
        stamps = [int(str(m["timestamp"])) for m in media]
        assert all(b - a == 20 for a, b in itertools.pairwise(stamps))  # from RTP timestamps
        assert 0 <= stamps[0] < 1000
        audio = np.concatenate([ulaw_decode(base64.b64decode(str(m["payload"]))) for m in media])
        assert abs(dominant_hz(audio, 8000) - TONES[leg]) < 10
    stats = stream.stats
    assert stats.frames_sent == stats.frames == 2 * legs[0].sent
    assert stats.frames_dropped == 0 and stats.reconnects == 0
    assert stats.messages_sent == len(messages) - 0 and stats.bytes_sent > 0
    kinds = [type(e) for e in recorder.of(stream)]
    assert kinds == [StreamStarted, StreamStopped]
    assert recorder.of(stream)[-1] == StreamStopped(stream.sid, "stopped", 0)


# --- the Plivo shape: L16 at 16 kHz through a media worker -------------------------------------


async def test_plivo_l16_16k_both_tracks_through_a_media_worker() -> None:
    config = EngineConfig(media=MediaConfig(workers=1))
    async with WsServer() as server, Engine(config) as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB)
        assert engine.media.placement(call.call_id) == 0  # the legs live in the worker
        options = PlivoStreamOptions.from_xml(
            server.url(),
            {
                "audioTrack": "both",
                "contentType": "audio/x-l16;rate=16000",
                "extraHeaders": "test1=12,test2=123",
            },
        )
        stream = await call.stream(options, account_sid="MA123")
        await stream.wait_started(timeout=5)
        started_ms = round(stream.started_at * 1000) if stream.started_at else 0
        legs = await send_tones(call, 1.0)
        connection = await server.connection()
        await connection.wait_for(lambda: len(connection.events("media")) >= 2 * legs[0].sent)
        await call.close()
        await connection.wait_closed()

    assert stream.status == "stopped"
    assert stream.events[-1] == StreamStopped(stream.sid, "call ended", 0)
    assert connection.close_code == 1000  # Plivo has no stop message: the close says it
    messages = connection.messages
    start = messages[0]
    assert start["event"] == "start" and start["sequenceNumber"] == 1
    assert start["start"]["streamId"] == stream.sid and start["start"]["callId"] == call.call_id
    assert start["start"]["accountId"] == "MA123"
    assert start["start"]["tracks"] == ["inbound", "outbound"]
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-l16", "sampleRate": 16000}
    assert start["extra_headers"] == "test1=12,test2=123"
    assert {m["event"] for m in messages[1:]} == {"media"}
    assert [m["sequenceNumber"] for m in messages] == list(range(1, len(messages) + 1))
    for leg in (Leg.INBOUND, Leg.OUTBOUND):
        media = media_of(connection, leg.value)
        assert len(media) == legs[0].sent
        assert [m["chunk"] for m in media] == list(range(1, len(media) + 1))
        stamps = [int(str(m["timestamp"])) for m in media]
        assert started_ms <= stamps[0] < started_ms + 1000  # Unix milliseconds
        assert all(b - a == 20 for a, b in itertools.pairwise(stamps))
        frames = [base64.b64decode(str(m["payload"])) for m in media]
        assert {len(f) for f in frames} == {640}  # 20 ms of 16-bit samples at 16 kHz
        audio = np.frombuffer(b"".join(frames), dtype="<i2")
        assert abs(dominant_hz(audio[1600:], 16000) - TONES[leg]) < 10
        # Nothing above the 8 kHz source's band: the resampler's images are filtered out.
        spectrum = np.abs(np.fft.rfft(audio[1600:].astype(np.float64) * np.hanning(len(audio) - 1600)))
        image = spectrum[round(len(spectrum) * (8000 - TONES[leg]) / 8000)]
        assert image < spectrum.max() / 1000


# --- TLS, connect failures ---------------------------------------------------------------------


async def test_wss_verified_with_the_test_ca_and_refused_without_it(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, "ws")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(pki.server_cert, pki.server_key)
    client_tls = ssl.create_default_context(cafile=pki.ca)
    async with WsServer(ssl_context=server_tls) as server, Engine() as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB, tap=False)
        url = server.url(host="localhost")
        trusted = await call.stream(TwilioStreamOptions(url=url), ssl=client_tls)
        await trusted.wait_started(timeout=5)
        leg = SyntheticLeg(Leg.INBOUND)
        for _ in range(10):
            call.feed(Leg.INBOUND, leg.next_packet())
        connection = await server.connection()
        await connection.wait_for(lambda: len(connection.events("media")) == 10)
        assert connection.request.secure

        untrusted = await call.stream(TwilioStreamOptions(url=url))  # the system trust store
        with pytest.raises(StreamError, match="Could not establish connection with the remote service"):
            await untrusted.wait_started(timeout=5)
        assert untrusted.status == "failed"
        (dropped,) = untrusted.events
        assert isinstance(dropped, StreamDropped)
        assert "CERTIFICATE_VERIFY_FAILED" in dropped.error
        assert len(server.connections) == 1
        assert call.active_streams == 1  # the failed one gave its slot back
        await call.close()
    assert trusted.events[-1] == StreamStopped(trusted.sid, "call ended", 0)


async def test_connection_refused_and_handshake_timeout_drop_the_stream() -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there
    async with WsServer(hang=True) as hanging, Engine() as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB)
        refused = await call.stream(PlivoStreamOptions(url=f"ws://127.0.0.1:{port}/x"))
        silent = await call.stream(TwilioStreamOptions(url=hanging.url()), connect_timeout=0.3)
        await refused.wait_ended(timeout=5)
        await silent.wait_ended(timeout=5)
        (event,) = refused.events
        assert isinstance(event, StreamDropped)
        assert event.error.startswith("Could not establish connection with the remote service: ")
        assert f"127.0.0.1:{port}" in event.error
        (event,) = silent.events
        assert isinstance(event, StreamDropped)
        assert event.error.endswith("no WebSocket handshake within 0.3 s")
        assert call.active_streams == 0
        await call.close()


async def test_stop_while_connecting_ends_at_once() -> None:
    async with WsServer(hang=True) as hanging, Engine() as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB)
        stream = await call.stream(TwilioStreamOptions(url=hanging.url()))
        await asyncio.sleep(0.1)
        async with asyncio.timeout(1):
            await stream.stop()
        assert stream.status == "stopped"
        assert stream.events == [StreamStopped(stream.sid, "stopped", 0)]
        with pytest.raises(StreamError):
            await stream.wait_started()


# --- a stalled service, a closing service, a malformed message -----------------------------------


async def test_stalled_service_drops_oldest_frames_while_the_siprec_recording_gets_everything() -> None:
    recorder = Recorder()
    async with (
        MiniSrs() as srs,
        WsServer(stall=True) as server,
        Engine(on_stream_event=recorder) as engine,
    ):
        call = await engine.open_call(caller=ALICE, callee=BOB, tap=False)
        recording = await call.record(srs=[srs.uri()], track=Track.INBOUND)
        await recording.wait_started(timeout=5)
        options = PlivoStreamOptions(
            url=server.url(), audio_track=PlivoAudioTrack.BOTH, content_type=PlivoContentType.L16_16K
        )
        stream = await call.stream(options, queue_frames=20)
        await stream.wait_started(timeout=5)
        legs = [SyntheticLeg(Leg.INBOUND), SyntheticLeg(Leg.OUTBOUND)]
        # 10 s of audio in 1 s: ~1 MB of messages toward a service that reads nothing.
        for _ in range(50):
            for _ in range(10):
                for leg in legs:
                    call.feed(leg.leg, leg.next_packet())
            await asyncio.sleep(0.02)
        await settle(lambda: stream.stats.packets_received == 1000)
        sink = srs.sinks[0]
        await settle(lambda: len(sink.packets) == 500)  # the SIPREC fork never noticed
        stats = stream.stats
        assert stats.frames == 1000
        assert stats.frames_dropped > 400
        assert stats.frames == stats.frames_sent + stats.frames_dropped + stats.queued
        assert stats.queued <= 20 + 1  # the queue, and the frame being written
        reports = [e for e in recorder.of(stream) if isinstance(e, StreamFramesDropped)]
        assert 1 <= len(reports) <= 2  # at most one a second
        assert recording.status == "in-progress"
        loop = asyncio.get_running_loop()
        began = loop.time()
        await stream.stop()
        assert loop.time() - began < 4  # CLOSE_TIMEOUT, then a reset: a stall never holds us
        final = stream.events[-1]
        assert isinstance(final, StreamStopped) and final.frames_dropped == stream.stats.frames_dropped
        assert recording.status == "in-progress"
        await call.close()


async def test_service_that_closes_drops_only_its_stream() -> None:
    async with MiniSrs() as srs, WsServer() as server, Engine() as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB)
        recording = await call.record(srs=[srs.uri()], track=Track.BOTH)
        closing = await call.stream(TwilioStreamOptions(url=server.url("/one")))
        staying = await call.stream(PlivoStreamOptions(url=server.url("/two")))
        await recording.wait_started(timeout=5)
        await closing.wait_started(timeout=5)
        await staying.wait_started(timeout=5)
        one = next(c for c in server.connections if c.request.path == "/one")
        two = next(c for c in server.connections if c.request.path == "/two")
        sending = asyncio.create_task(send_tones(call, 1.0))
        await one.wait_for(lambda: len(one.events("media")) >= 10)
        await one.ws.close(code=1011, message=b"going away")
        await closing.wait_ended(timeout=5)
        legs = await sending
        assert closing.status == "failed"
        (dropped,) = [e for e in closing.events if isinstance(e, StreamDropped)]
        assert dropped.error == (
            "Connection disconnected with the remote service: the service closed the WebSocket (code 1011)"
        )
        assert closing.error == dropped.error
        # The other stream and the SIPREC recording got every packet, before and after the drop.
        await two.wait_for(lambda: len(two.events("media")) == legs[0].sent)
        await settle(lambda: all(len(sink.packets) == legs[0].sent for sink in srs.sinks))
        assert recording.status == "in-progress" and staying.status == "in-progress"
        assert call.active_streams == 3
        await call.close()
        assert recording.status == "stopped" and staying.status == "stopped"


async def test_malformed_message_from_a_bidirectional_service_closes_with_1007() -> None:
    async with WsServer() as server, Engine() as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB, playback=lambda packet: None)
        stream = await call.stream(PlivoStreamOptions(url=server.url(), bidirectional=True))
        await stream.wait_started(timeout=5)
        connection = await server.connection()
        await connection.send({"event": "playAudio", "media": {"contentType": "audio/x-l16"}})
        await stream.wait_ended(timeout=5)
        await connection.wait_closed()
        assert connection.close_code == 1007
        assert stream.status == "failed"
        assert stream.error == ("Malformed message from the remote service: media.sampleRate: missing")
        await call.close()


async def test_losing_the_media_worker_drops_the_stream_with_the_reason() -> None:
    async with WsServer() as server, Engine(EngineConfig(media=MediaConfig(workers=1))) as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB)
        stream = await call.stream(TwilioStreamOptions(url=server.url()))
        await stream.wait_started(timeout=5)
        (pid,) = engine.media.worker_pids
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # the worker this test's engine started
        await stream.wait_ended(timeout=5)
        assert stream.status == "failed"
        assert stream.error is not None and stream.error.startswith("media: media worker 0 died")
        assert "SIGKILL" in stream.error
        connection = await server.connection()
        await connection.wait_closed()
        assert connection.events("stop") == []  # dropped, not stopped
        await call.close()


# --- bidirectional playback ----------------------------------------------------------------------


async def test_plivo_play_audio_reaches_the_rtp_sink_then_checkpoint_and_clear() -> None:
    sink = RtpSink()
    try:
        async with WsServer() as server, Engine() as engine:
            call = await engine.open_call(caller=ALICE, callee=BOB, playback=sink.address)
            stream = await call.stream(PlivoStreamOptions(url=server.url(), bidirectional=True))
            await stream.wait_started(timeout=5)
            connection = await server.connection()
            played = tone(1000, 0.5, 16000)  # 0.5 s at 16 kHz, L16 little-endian
            await connection.send(
                {
                    "event": "playAudio",
                    "media": {
                        "contentType": "audio/x-l16",
                        "sampleRate": 16000,
                        "payload": base64.b64encode(played.astype("<i2").tobytes()).decode(),
                    },
                }
            )
            await connection.send({"event": "checkpoint", "streamId": stream.sid, "name": "greeting"})
            await connection.wait_for(lambda: bool(connection.events("playedStream")))
            loop_time_of_played = connection.received_at[
                connection.texts.index(next(t for t in connection.texts if "playedStream" in t))
            ]
            assert len(sink.packets) == 25  # 0.5 s in 20 ms packets: nothing before it is left
            assert connection.events("playedStream")[0]["name"] == "greeting"
            assert connection.events("playedStream")[0]["streamId"] == stream.sid
            assert loop_time_of_played >= sink.arrivals[-1]
            packets = sink.packets
            assert {p.payload_type for p in packets} == {0} and len({p.ssrc for p in packets}) == 1
            assert [p.marker for p in packets] == [True] + [False] * 24
            assert all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in itertools.pairwise(packets))
            assert all(
                (b.timestamp - a.timestamp) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(packets)
            )
            assert sink.arrivals[-1] - sink.arrivals[0] >= 0.45  # paced in real time
            audio = np.concatenate([ulaw_decode(p.payload) for p in packets])
            assert abs(dominant_hz(audio, 8000) - 1000) < 10
            await settle(lambda: StreamPlayed(stream.sid, None) in stream.events)
            assert [e for e in stream.events if isinstance(e, StreamPlayed)] == [
                StreamPlayed(stream.sid, "greeting"),
                StreamPlayed(stream.sid, None),
            ]

            # clearAudio: 3 s queued, cleared after a few packets; the pending checkpoint is dropped.
            long = ulaw_encode(tone(400, 3.0, 8000)).tobytes()
            await connection.send(
                {
                    "event": "playAudio",
                    "media": {
                        "contentType": "audio/x-mulaw",
                        "sampleRate": 8000,
                        "payload": base64.b64encode(long).decode(),
                    },
                }
            )
            await connection.send({"event": "checkpoint", "streamId": stream.sid, "name": "never"})
            await settle(lambda: len(sink.packets) >= 30)
            await connection.send({"event": "clearAudio", "streamId": stream.sid})
            await connection.wait_for(lambda: bool(connection.events("clearedAudio")))
            count = len(sink.packets)
            await asyncio.sleep(0.2)
            assert len(sink.packets) <= count + 1  # one may have been on its way
            assert len(sink.packets) < 25 + 150
            assert sink.packets[25].marker  # a new talkspurt after the idle time
            gap = (sink.packets[25].timestamp - sink.packets[24].timestamp) & 0xFFFFFFFF
            assert gap > 160  # the idle time shows in the timestamps (RFC 3551 §4.1)
            assert len(connection.events("playedStream")) == 1
            assert stream.stats.frames_played == len(sink.packets)
            await call.close()
    finally:
        sink.close()


async def test_twilio_marks_echo_after_their_audio_and_clear_echoes_pending_marks() -> None:
    packets: list[bytes] = []
    async with WsServer() as server, Engine() as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB, tap=False, playback=packets.append)
        options = TwilioStreamOptions(url=server.url(), bidirectional=True)
        stream = await call.stream(options)
        await stream.wait_started(timeout=5)
        connection = await server.connection()
        short = ulaw_encode(tone(600, 0.2, 8000)).tobytes()

        async def media(payload: bytes) -> None:
            await connection.send(
                {
                    "event": "media",
                    "streamSid": stream.sid,
                    "media": {"payload": base64.b64encode(payload).decode()},
                }
            )

        await media(short)
        await connection.send({"event": "mark", "streamSid": stream.sid, "mark": {"name": "first"}})
        await connection.wait_for(lambda: bool(connection.events("mark")))
        assert len(packets) == 10
        assert connection.events("mark")[0]["mark"] == {"name": "first"}
        audio = np.concatenate([ulaw_decode(RtpPacket.parse(p).payload) for p in packets])
        assert abs(dominant_hz(audio, 8000) - 600) < 10

        await media(ulaw_encode(tone(600, 2.0, 8000)).tobytes())
        await connection.send({"event": "mark", "streamSid": stream.sid, "mark": {"name": "second"}})
        await settle(lambda: len(packets) >= 15)
        await connection.send({"event": "clear", "streamSid": stream.sid})
        await connection.wait_for(lambda: len(connection.events("mark")) == 2)
        assert connection.events("mark")[1]["mark"] == {"name": "second"}  # echoed on clear
        assert len(packets) < 10 + 100
        assert [e.name for e in stream.events if isinstance(e, StreamPlayed)] == ["first", None]
        await call.close()


async def test_bidirectional_needs_a_playback_destination_and_only_one_per_call() -> None:
    async with WsServer() as server, Engine() as engine:
        deaf = await engine.open_call(caller=ALICE, callee=BOB)
        with pytest.raises(LocalProtocolError) as refused:
            await deaf.stream(TwilioStreamOptions(url=server.url(), bidirectional=True))
        assert refused.value.code == "no_playback"
        call = await engine.open_call(caller=ALICE, callee=BOB, playback=("127.0.0.1", 9))
        first = await call.stream(PlivoStreamOptions(url=server.url(), bidirectional=True))
        with pytest.raises(LocalProtocolError) as busy:
            await call.stream(TwilioStreamOptions(url=server.url(), bidirectional=True))
        assert busy.value.code == "bidirectional_in_use"
        await first.stop()
        second = await call.stream(TwilioStreamOptions(url=server.url(), bidirectional=True))
        await second.wait_started(timeout=5)
        g722 = await engine.open_call(caller=ALICE, callee=BOB, codec=CodecSpec(9, "G722", 8000))
        with pytest.raises(LocalProtocolError) as codec:
            await g722.stream(TwilioStreamOptions(url=server.url()))
        assert codec.value.code == "unsupported_codec"
        assert deaf.active_streams == 0 and g722.active_streams == 0


# --- the call's stream budget, names, streamTimeout --------------------------------------------


async def test_four_stream_budget_and_names_shared_with_siprec_recordings() -> None:
    async with MiniSrs() as srs, WsServer() as server, Engine() as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB)
        recording = await call.record(srs=[srs.uri()], track=Track.BOTH, name="rec")
        with pytest.raises(LocalProtocolError) as duplicate:
            await call.stream(TwilioStreamOptions(url=server.url(), name="rec"))
        assert duplicate.value.code == "duplicate_name"
        named = await call.stream(TwilioStreamOptions(url=server.url(), name="ws1"))
        with pytest.raises(LocalProtocolError) as duplicate:
            await call.record(srs=[srs.uri()], track=Track.INBOUND, name="ws1")
        assert duplicate.value.code == "duplicate_name"
        plivo = await call.stream(PlivoStreamOptions(url=server.url()))
        assert call.active_streams == 4  # both_tracks counts 2
        with pytest.raises(LocalProtocolError) as full:
            await call.stream(TwilioStreamOptions(url=server.url(), name="ws3"))
        assert full.value.code == "stream_limit"
        with pytest.raises(LocalProtocolError, match="limit is 4 per call"):
            await call.record(srs=[srs.uri()], track=Track.INBOUND)
        await recording.wait_started(timeout=5)
        await named.wait_started(timeout=5)
        await plivo.wait_started(timeout=5)
        await call.get_stream("ws1").stop()
        assert call.active_streams == 3
        again = await call.stream(TwilioStreamOptions(url=server.url(), name="ws1"))  # free again
        assert call.get_stream("ws1") is again and call.get_stream(named.sid) is named
        with pytest.raises(LocalProtocolError) as missing:
            call.get_stream("nope")
        assert missing.value.code == "no_such_stream"
        await again.wait_started(timeout=5)
    # Engine.close() closed the call: every stream ended as the call did.
    assert again.events[-1] == StreamStopped(again.sid, "call ended", 0)
    assert plivo.events[-1] == StreamStopped(plivo.sid, "call ended", 0)
    assert recording.status == "stopped"


async def test_stream_timeout_stops_a_plivo_stream() -> None:
    async with WsServer() as server, Engine() as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB, tap=False)
        stream = await call.stream(PlivoStreamOptions(url=server.url(), stream_timeout=1))
        await stream.wait_started(timeout=5)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await stream.wait_ended(timeout=5)
        assert 0.9 < loop.time() - began < 2.0
        assert stream.events == [StreamStarted(stream.sid), StreamStopped(stream.sid, "stream timeout", 0)]
        connection = await server.connection()
        await connection.wait_closed()
        assert connection.close_code == 1000
        assert call.active_streams == 0
        await call.close()


# --- RTP timing on the feed() path, and the pure pieces -------------------------------------------


async def test_feed_path_frames_are_timed_by_rtp_timestamps_gaps_shown_late_packets_dropped() -> None:
    async with WsServer() as server, Engine() as engine:
        call = await engine.open_call(caller=ALICE, callee=BOB, tap=False)
        stream = await call.stream(TwilioStreamOptions(url=server.url()))
        await stream.wait_started(timeout=5)
        frame = ulaw_encode(tone(440, 0.02, 8000)).tobytes()
        # 5 packets, then 200 ms of silence suppression (timestamps jump, sequence does not),
        # 5 packets, then a late duplicate of the third.
        for seq in range(5):
            call.feed(Leg.INBOUND, rtp_packet(100 + seq, 8000 + 160 * seq, frame))
        for seq in range(5, 10):
            call.feed(Leg.INBOUND, rtp_packet(100 + seq, 8000 + 1600 + 160 * seq, frame))
        call.feed(Leg.INBOUND, rtp_packet(102, 8000 + 320, frame))
        call.feed(Leg.OUTBOUND, rtp_packet(7, 0, frame))  # not this stream's track
        connection = await server.connection()
        await connection.wait_for(lambda: len(connection.events("media")) == 10)
        await settle(lambda: stream.stats.packets_late == 1)
        stamps = [int(str(m["timestamp"])) for m in media_of(connection, "inbound")]
        steps = [b - a for a, b in itertools.pairwise(stamps)]
        assert steps == [20, 20, 20, 20, 220, 20, 20, 20, 20]
        assert stream.stats.packets_received == 11 and stream.stats.frames == 10
        await call.close()
        assert len(connection.events("media")) == 10


def test_send_queue_drops_the_oldest_frame_and_keeps_control_messages() -> None:
    queue = SendQueue(max_frames=3)
    queue.put_control("start")
    assert all(queue.put_media(f"m{n}") for n in range(3))
    assert not queue.put_media("m3")  # full: m0 goes, the start message stays
    queue.put_control("mark")
    assert not queue.put_media("m4")
    assert (queue.frames, queue.dropped) == (3, 2)
    drained = [queue.pop() for _ in range(len(queue))]
    assert drained == [(False, "start"), (True, "m2"), (True, "m3"), (False, "mark"), (True, "m4")]
    assert queue.pop() is None and queue.frames == 0
    with pytest.raises(LocalProtocolError):
        SendQueue(0)


def test_leg_audio_frames_30ms_packets_and_pads_the_frame_cut_by_a_gap() -> None:
    leg = LegAudio(Leg.INBOUND, PCMU_8K, 8000)
    samples = tone(440, 0.09, 8000)
    payloads = [ulaw_encode(samples[i : i + 240]).tobytes() for i in range(0, 720, 240)]
    out = [leg.push(1000 + 240 * n, payloads[n], arrival_ms=35) for n in range(2)]
    assert [[ms for _, ms in frames] for frames in out] == [[35], [55, 75]]  # 480 samples: 3 frames
    # 100 ms lost (the frames so far were whole, nothing to pad): a new run at its own time.
    frames = leg.push(1000 + 480 + 800, payloads[2], arrival_ms=500)
    assert [ms for _, ms in frames] == [195]  # 35 + (480 + 800) / 8
    assert leg.push(1000, payloads[0], arrival_ms=600) == [] and leg.late == 1
    partial = LegAudio(Leg.INBOUND, L16_8K, 16000)
    assert partial.push(0, struct.pack("<100h", *range(100)), arrival_ms=0) == []  # 200 of 320
    frames = partial.push(1000, struct.pack("<100h", *range(100)), arrival_ms=0)
    assert [(len(f), ms) for f, ms in frames] == [(320, 0)]  # the cut frame, padded with silence
    assert not frames[0][0][200:].any()


@pytest.mark.parametrize(
    ("destination", "media_host", "source"),
    [
        ("127.0.0.1", "127.0.0.1", "127.0.0.1"),  # the call's media host when it can reach it
        ("192.0.2.10", "127.0.0.1", "0.0.0.0"),  # loopback cannot reach another host
        ("::1", "127.0.0.1", "::"),  # another address family
    ],
)
def test_udp_playback_sends_from_the_media_host_when_it_can(
    destination: str, media_host: str, source: str
) -> None:
    playback = UdpPlayback((destination, 9), media_host)
    try:
        assert playback.local[0] == source
    finally:
        playback.close()
