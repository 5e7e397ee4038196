"""StreamSink on real loopback sockets: RTP and SRTP in, a WAV file out.

Covered: the even/odd port pair on IPv4 and IPv6; PCMU and PCMA tones, plain and SRTP
(AES_CM_128_HMAC_SHA1_80, AEAD_AES_128_GCM) recorded with the right length and frequency; a
tampered SRTP packet counted and its slot left silent; garbage datagrams on both ports; RTCP
(plain and multiplexed, RFC 5761) with its sender report; telephone-event, unknown and
undecodable payloads; an SSRC change; pause/resume; a re-INVITE changing the keys mid-stream;
the hole timer releasing held packets without a new packet; recording without a file;
configure() refusing bad input without losing its state.

Not covered: the ordering rules themselves (tests/srs/test_jitter.py), SIP (the SRS session).
Every wait is bounded; loopback UDP neither drops nor reorders these few packets.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from siprec_src.errors import LocalProtocolError
from siprec_src.media.audio import decode_wav
from siprec_src.media.g711 import Samples
from siprec_src.media.rtp import ReceiverReport, RtpPacket, SenderReport
from siprec_src.media.spec import Leg, SrtpKeys
from siprec_src.media.srtp import SrtpError, SrtpSender, SrtpSuite, generate_key_params
from siprec_src.srs.jitter import StreamStats
from siprec_src.srs.media import StreamSink
from siprec_src.srs.plot import dominant_frequency
from siprec_src.synthetic import SyntheticLeg

FRAME = 160
WAIT = 3.0  # seconds any condition below may take on a loaded machine; typically a few ms


def keys(suite: SrtpSuite) -> SrtpKeys:
    return SrtpKeys(suite.value, generate_key_params(suite))


def leg(which: Leg = Leg.INBOUND, codec: str = "PCMU", seed: int = 1) -> SyntheticLeg:
    return SyntheticLeg(which, codec, rng=random.Random(seed))


@contextmanager
def sender(host: str = "127.0.0.1") -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        yield sock


async def until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.005)
    assert condition(), what


def slots(samples: Samples) -> list[bool]:
    """For each 20 ms slot of a recording: does it hold sound?"""
    return [bool(np.any(samples[i : i + FRAME])) for i in range(0, len(samples), FRAME)]


async def record(
    tmp_path: Path,
    payload_types: dict[int, str],
    datagrams: list[bytes],
    *,
    srtp: SrtpKeys | None = None,
    expect: Callable[[StreamStats], bool] | None = None,
) -> tuple[StreamStats, Samples]:
    """Send ``datagrams`` to a fresh sink, wait until it has seen them, close; stats and samples."""
    out = tmp_path / "track.wav"
    sink = await StreamSink.open("127.0.0.1", label="1", out_path=out)
    sink.configure(payload_types, srtp)
    with sender() as sock:
        for datagram in datagrams:
            sock.sendto(datagram, ("127.0.0.1", sink.port))
    seen = expect or (
        lambda s: s.packets + s.srtp_failures + s.malformed + s.paused_packets >= len(datagrams)
    )
    await until(lambda: seen(sink.stats()), "the sink received every datagram")
    stats = await sink.close()
    audio = decode_wav(out.read_bytes())
    assert audio.sample_rate == 8000
    assert stats.samples_written == len(audio.samples)
    return stats, audio.samples


async def test_a_pcmu_tone_is_recorded_with_its_length_and_frequency(tmp_path: Path) -> None:
    source = leg(Leg.INBOUND, "PCMU")
    stats, samples = await record(tmp_path, {0: "PCMU"}, [source.next_packet() for _ in range(50)])
    assert len(samples) == 50 * FRAME  # one second
    assert dominant_frequency(samples, 8000) == pytest.approx(440, abs=2)
    assert (stats.packets, stats.lost, stats.late, stats.duplicates) == (50, 0, 0, 0)
    assert stats.ssrcs == (source.ssrc,) and stats.payload_types == (0,)
    assert stats.bytes == 50 * FRAME and stats.first_arrival is not None


@pytest.mark.parametrize(
    ("codec", "payload_type", "suite"),
    [("PCMU", 0, SrtpSuite.AES_CM_128_HMAC_SHA1_80), ("PCMA", 8, SrtpSuite.AEAD_AES_128_GCM)],
)
async def test_srtp_is_recorded_and_a_tampered_packet_is_never_written(
    tmp_path: Path, codec: str, payload_type: int, suite: SrtpSuite
) -> None:
    source = leg(Leg.OUTBOUND, codec)
    key = keys(suite)
    protect = SrtpSender(key).protect
    datagrams = [protect(source.next_packet()) for _ in range(50)]
    tampered = bytearray(datagrams[20])
    tampered[30] ^= 0x01  # one bit of the encrypted payload
    datagrams[20] = bytes(tampered)
    stats, samples = await record(tmp_path, {payload_type: f"{codec}/8000"}, datagrams, srtp=key)
    assert (stats.srtp_failures, stats.lost, stats.packets) == (1, 1, 49)
    assert len(samples) == 50 * FRAME  # the lost slot is kept, as silence
    assert slots(samples) == [i != 20 for i in range(50)]
    assert dominant_frequency(samples, 8000) == pytest.approx(1250, abs=2)


async def test_srtp_with_the_wrong_key_records_nothing(tmp_path: Path) -> None:
    source = leg()
    protect = SrtpSender(keys(SrtpSuite.AES_CM_128_HMAC_SHA1_80)).protect
    datagrams = [protect(source.next_packet()) for _ in range(10)]
    stats, samples = await record(
        tmp_path, {0: "PCMU"}, datagrams, srtp=keys(SrtpSuite.AES_CM_128_HMAC_SHA1_80)
    )
    assert (stats.srtp_failures, stats.packets, len(samples)) == (10, 0, 0)


async def test_garbage_and_rtcp_are_counted_and_never_crash_the_sink(tmp_path: Path) -> None:
    out = tmp_path / "track.wav"
    sink = await StreamSink.open("127.0.0.1", label="1", out_path=out)
    sink.configure({0: "PCMU"}, None)
    source = leg()
    report = SenderReport(source.ssrc, 0x1122334455667788, 4242, 10, 1600)
    bad_padding = bytearray(source.next_packet())
    bad_padding[0] |= 0x20  # padding flag, and a last byte larger than the payload
    bad_padding[-1] = 0xFF
    with sender() as sock:
        rtp, rtcp = ("127.0.0.1", sink.port), ("127.0.0.1", sink.rtcp_port)
        for junk in (b"", b"x", b"hello, this is not RTP", bytes(12), bytes(bad_padding)):
            sock.sendto(junk, rtp)
        sock.sendto(bytes(report), rtcp)
        sock.sendto(bytes(ReceiverReport(7)), rtp)  # RFC 5761 mux: RTCP on the RTP port
        sock.sendto(b"\x80\xc8\x00\x09short", rtcp)  # an SR header announcing 40 bytes
        sock.sendto(b"\x00", rtcp)
        for _ in range(10):
            sock.sendto(source.next_packet(), rtp)
    await until(lambda: sink.stats().packets == 10, "the good packets after the junk")
    await until(lambda: sink.stats().rtcp_malformed == 2, "the bad RTCP")
    stats = await sink.close()
    assert (stats.malformed, stats.rtcp_packets, stats.sender_reports) == (5, 2, 1)
    assert sink.last_sender_report == report
    assert len(decode_wav(out.read_bytes()).samples) == 10 * FRAME


async def test_events_unknown_and_undecodable_payloads_keep_the_timeline(tmp_path: Path) -> None:
    # Slots 0-9 PCMU, 10-14 telephone-event (RFC 4733: one timestamp for the whole event),
    # 15-19 PCMU, 20 an unnegotiated PT 96, 21-24 G.722 (not decoded), 25-29 PCMU.
    source = leg()
    datagrams = []
    for slot in range(30):
        raw = RtpPacket.parse(source.next_packet())
        if 10 <= slot < 15:
            raw = RtpPacket(101, raw.sequence, raw.timestamp - (slot - 10) * FRAME, raw.ssrc, bytes(4))
        elif slot == 20:
            raw = RtpPacket(96, raw.sequence, raw.timestamp, raw.ssrc, raw.payload)
        elif 21 <= slot < 25:
            raw = RtpPacket(9, raw.sequence, raw.timestamp, raw.ssrc, raw.payload)
        datagrams.append(bytes(raw))
    payload_types = {0: "PCMU", 9: "G722/8000", 101: "telephone-event/8000"}
    stats, samples = await record(tmp_path, payload_types, datagrams)
    assert (stats.telephone_events, stats.unknown_payload, stats.undecodable) == (5, 1, 4)
    assert (stats.lost, stats.payload_types) == (0, (0, 9, 96, 101))
    assert len(samples) == 30 * FRAME
    assert slots(samples) == [not (10 <= i < 15 or 20 <= i < 25) for i in range(30)]


async def test_an_ssrc_change_continues_the_recording(tmp_path: Path) -> None:
    first, second = leg(seed=1), leg(seed=2)  # different SSRC, sequence and timestamp bases
    datagrams = [first.next_packet() for _ in range(20)] + [second.next_packet() for _ in range(20)]
    stats, samples = await record(tmp_path, {0: "PCMU"}, datagrams)
    assert (stats.ssrc_changes, stats.ssrcs) == (1, (first.ssrc, second.ssrc))
    assert len(samples) == 40 * FRAME and all(slots(samples))


async def test_packets_while_paused_are_counted_not_recorded(tmp_path: Path) -> None:
    out = tmp_path / "track.wav"
    sink = await StreamSink.open("127.0.0.1", label="1", out_path=out)
    sink.configure({0: "PCMU"}, None)
    source = leg()

    async def received(count: int) -> None:
        await until(lambda: sink.stats().packets + sink.stats().paused_packets == count, f"{count} packets")

    with sender() as sock:
        for round_, paused in enumerate((False, True, False)):
            if paused:
                sink.pause()
            else:
                sink.resume()
            assert sink.paused is paused
            for _ in range(10):
                sock.sendto(source.next_packet(), ("127.0.0.1", sink.port))
            await received(10 * (round_ + 1))
    stats = await sink.close()
    samples = decode_wav(out.read_bytes()).samples
    assert (stats.packets, stats.paused_packets, stats.lost) == (20, 10, 0)
    # The sender's timestamps ran on through the pause: the paused time is silence.
    assert slots(samples) == [not 10 <= i < 20 for i in range(30)]


async def test_a_reinvite_changing_the_keys_keeps_what_was_recorded(tmp_path: Path) -> None:
    out = tmp_path / "track.wav"
    sink = await StreamSink.open("127.0.0.1", label="1", out_path=out)
    sink.configure({0: "PCMU"}, None)
    source = leg()
    key = keys(SrtpSuite.AES_CM_128_HMAC_SHA1_80)
    protect = SrtpSender(key).protect
    with sender() as sock:
        address = ("127.0.0.1", sink.port)
        for _ in range(20):
            sock.sendto(source.next_packet(), address)
        await until(lambda: sink.stats().packets == 20, "the plain part")
        # A recording in progress is already a valid WAV file holding what was released.
        assert len(decode_wav(out.read_bytes()).samples) == 20 * FRAME
        sink.configure({0: "PCMU", 101: "telephone-event"}, key)
        sock.sendto(leg(seed=9).next_packet(), address)  # plain RTP is no longer accepted
        for _ in range(20):
            sock.sendto(protect(source.next_packet()), address)
        await until(lambda: sink.stats().packets == 40, "the SRTP part")
    stats = await sink.close()
    assert (stats.srtp_failures, stats.lost) == (1, 0)
    samples = decode_wav(out.read_bytes()).samples
    assert len(samples) == 40 * FRAME and all(slots(samples))


async def test_the_hole_timer_releases_held_packets_without_another_packet(tmp_path: Path) -> None:
    sink = await StreamSink.open("127.0.0.1", label="1", out_path=None, depth=0.05, max_packets=10)
    sink.configure({0: "PCMU"}, None)
    source = leg()
    packets = [source.next_packet() for _ in range(4)]
    with sender() as sock:
        for index in (0, 1, 3):  # 2 is lost
            sock.sendto(packets[index], ("127.0.0.1", sink.port))
        await until(lambda: sink.stats().samples_written == 4 * FRAME, "the timer released packet 3")
    assert sink.stats().lost == 1
    stats = await sink.close()
    assert stats.samples_written == 4 * FRAME and sink.out_path is None


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]"])
async def test_the_sink_binds_an_even_rtp_port_and_the_rtcp_port_above(host: str) -> None:
    sink = await StreamSink.open(host, label="2", out_path=None)
    try:
        assert sink.port % 2 == 0 and sink.rtcp_port == sink.port + 1
        assert sink.host == host.strip("[]") and sink.label == "2"
        sink.configure({8: "PCMA"}, None)
        source = leg(codec="PCMA")
        with sender(sink.host) as sock:
            for _ in range(5):
                sock.sendto(source.next_packet(), (sink.host, sink.port))
            sock.sendto(bytes(SenderReport(1, 2, 3, 4, 5)), (sink.host, sink.rtcp_port))
        await until(lambda: sink.stats().packets == 5 and sink.stats().rtcp_packets == 1, "received")
    finally:
        stats = await sink.close()
    assert stats.samples_written == 5 * FRAME
    assert await sink.close() is stats  # closing twice is harmless
    for port in (sink.port, sink.rtcp_port):  # both sockets are released
        family = socket.AF_INET6 if ":" in sink.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((sink.host, port))


async def test_configure_refuses_bad_input_and_keeps_its_state(tmp_path: Path) -> None:
    sink = await StreamSink.open("127.0.0.1", label="1", out_path=tmp_path / "t.wav")
    key = keys(SrtpSuite.AEAD_AES_128_GCM)
    sink.configure({0: "PCMU"}, key)
    with pytest.raises(LocalProtocolError, match="payload type 200"):
        sink.configure({200: "PCMU"}, None)
    with pytest.raises(SrtpError):
        sink.configure({0: "PCMU"}, SrtpKeys("AES_CM_128_HMAC_SHA1_80", "inline:short"))
    source = leg()
    protect = SrtpSender(key).protect
    with sender() as sock:
        for _ in range(5):
            sock.sendto(protect(source.next_packet()), ("127.0.0.1", sink.port))
    await until(lambda: sink.stats().packets == 5, "still keyed as before")
    stats = await sink.close()
    assert (stats.srtp_failures, stats.samples_written) == (0, 5 * FRAME)
    with pytest.raises(LocalProtocolError):
        sink.configure({0: "PCMU"}, None)
