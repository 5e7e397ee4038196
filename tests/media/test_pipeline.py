"""Fork pipelines and leg receive state, driven with a fake clock and lists for sockets.

Covers: SSRC/sequence/timestamp rewriting and their wrap-around, re-basing on an SSRC change, a
sequence or timestamp jump, a frozen source clock, and resume; silence suppression kept as is;
payload type mapping and drops; plain forks beside rewriting forks on one leg; pause with RFC 6263
keepalives; SR/SDES/BYE contents (the NTP/RTP pair, counts) and the RFC 3550 §6.3.1 interval;
RR parsing into stats; source latching and refusal; malformed packets; idle legs; send failures;
SRTP out and in (checked with the SrtpReceiver/SrtpSender of srtp.py, whose own correctness is
test_srtp.py's business), several SRTP forks on one leg (the last encrypts in the shared buffer,
the others a copy); the reader of a socket connected to the admitted source, the checked drain
that precedes it and the hook that asks for it; the packet buffer's views; the Timers heap.
Does not cover sockets or processes (test_worker.py, test_engine.py).
"""

from __future__ import annotations

import random
import struct
from dataclasses import replace

import pytest

from siprec_src.errors import LocalProtocolError
from siprec_src.media.events import (
    FirstPacketReceived,
    ForkSendFailed,
    LegIdle,
    MediaEvent,
    ReceptionReported,
    SourceLatched,
    SrtpFailed,
)
from siprec_src.media.pipeline import (
    CACHED_VIEW_LENGTH,
    KEEPALIVE_SECONDS,
    ForkPipeline,
    LegReceiver,
    PacketBuffer,
    Timers,
)
from siprec_src.media.rtp import (
    CompoundPacket,
    Goodbye,
    ReceiverReport,
    ReportBlock,
    RtpPacket,
    SenderReport,
    SourceDescription,
    ntp_from_unix,
    parse_rtcp,
)
from siprec_src.media.spec import ForkSpec, Leg, LegSpec, SrtpKeys
from siprec_src.media.srtp import SrtpReceiver, SrtpSender, generate_key_params

CALL = "call-1"
PBX: tuple[str, int] = ("192.0.2.10", 40000)
INTRUDER: tuple[str, int] = ("198.51.100.7", 40000)
UNIX0 = 1_700_000_000.0


def rtp(
    seq: int, ts: int, ssrc: int = 0xAAAA0001, pt: int = 0, payload: bytes = b"\xd5" * 160, **kw: object
) -> bytes:
    return bytes(RtpPacket(payload_type=pt, sequence=seq, timestamp=ts, ssrc=ssrc, payload=payload, **kw))  # type: ignore[arg-type]


def fork_spec(**changes: object) -> ForkSpec:
    spec = ForkSpec(
        fork_id="f1",
        call_id=CALL,
        leg=Leg.INBOUND,
        local=("127.0.0.1", 30000),
        remote_rtp=("127.0.0.1", 31000),
        remote_rtcp=("127.0.0.1", 31001),
        ssrc=0x5EC0_0001,
        payload_map=((0, 0), (8, 8), (101, 100)),
        rtcp_interval=5.0,
    )
    return replace(spec, **changes)  # type: ignore[arg-type]


class Rig:
    """A leg and its forks with lists for sockets and a fake clock."""

    def __init__(self, leg_spec: LegSpec | None = None, stream_timeout: float = 30.0) -> None:
        self.now = 100.0
        self.events: list[MediaEvent] = []
        self.buffer = bytearray(65536)
        self.wire: list[tuple[bytes, tuple[str, int]]] = []
        self.leg = LegReceiver(
            leg_spec or LegSpec(CALL, Leg.INBOUND),
            self.buffer,
            self.events.append,
            self.now,
            stream_timeout,
            self._recv_into,
        )
        self.rtp_out: dict[str, list[bytes]] = {}
        self.rtcp_out: dict[str, list[bytes]] = {}

    def _recv_into(self, buffer: bytearray) -> tuple[int, tuple[str, int]]:
        """The tap socket: what send() queued, as recvfrom_into returns it."""
        if not self.wire:
            raise BlockingIOError
        data, source = self.wire.pop(0)
        buffer[: len(data)] = data
        return len(data), source

    def fork(self, spec: ForkSpec | None = None, *, seq: int = 1000, ts: int = 500_000) -> ForkPipeline:
        spec = spec or fork_spec()
        rtp_out = self.rtp_out.setdefault(spec.fork_id, [])
        rtcp_out = self.rtcp_out.setdefault(spec.fork_id, [])
        fork = ForkPipeline(
            spec,
            send_rtp=lambda data: rtp_out.append(bytes(data)),
            send_rtcp=rtcp_out.append,
            emit=self.events.append,
            now=self.now,
            rng=random.Random(7),
            initial_seq=seq,
            initial_ts=ts,
        )
        self.leg.attach(fork)
        return fork

    def send(self, packet: bytes, source: tuple[str, int] = PBX, advance: float = 0.02) -> None:
        """Deliver one datagram as the socket would, ``advance`` seconds after the previous one."""
        self.now += advance
        self.wire.append((packet, source))
        assert self.leg.on_readable(self.now)
        assert not self.leg.on_readable(self.now)  # one datagram per call; then the socket is empty

    def out(self, fork_id: str = "f1") -> list[RtpPacket]:
        return [RtpPacket.parse(data) for data in self.rtp_out[fork_id]]


# --- rewriting ------------------------------------------------------------------------------


def test_rewrite_sets_stable_ssrc_and_continuous_numbers() -> None:
    rig = Rig()
    rig.fork(seq=1000, ts=500_000)
    for i in range(3):
        rig.send(rtp(seq=7 + i, ts=9000 + 160 * i))
    out = rig.out()
    assert [p.ssrc for p in out] == [0x5EC0_0001] * 3
    assert [p.sequence for p in out] == [1000, 1001, 1002]
    assert [p.timestamp for p in out] == [500_000, 500_160, 500_320]
    assert [p.marker for p in out] == [True, False, False]  # the first packet starts a talkspurt
    assert all(p.payload == b"\xd5" * 160 for p in out)


def test_sequence_and_timestamp_wrap_around() -> None:
    rig = Rig()
    rig.fork(seq=0xFFFE, ts=0xFFFF_FF00)
    for i in range(4):  # the source wraps too, at a different point
        rig.send(rtp(seq=(0xFFFD + i) & 0xFFFF, ts=(0xFFFF_FFA0 + 160 * i) & 0xFFFFFFFF))
    out = rig.out()
    assert [p.sequence for p in out] == [0xFFFE, 0xFFFF, 0, 1]
    assert [p.timestamp for p in out] == [0xFFFF_FF00, 0xFFFF_FFA0, 0x40, 0xE0]
    assert rig.leg.packets == 4


def test_ssrc_change_mid_stream_continues_seq_and_wall_clock_timestamp() -> None:
    rig = Rig()
    fork = rig.fork(seq=100, ts=1000)
    rig.send(rtp(seq=500, ts=80_000, ssrc=1))
    rig.send(rtp(seq=501, ts=80_160, ssrc=1))
    # Transfer: another media server, another SSRC, numbers from anywhere, 60 ms later.
    rig.send(rtp(seq=40_000, ts=7, ssrc=2), advance=0.06)
    rig.send(rtp(seq=40_001, ts=167, ssrc=2))
    out = rig.out()
    assert [p.sequence for p in out] == [100, 101, 102, 103]
    assert [p.timestamp for p in out] == [1000, 1160, 1160 + 480, 1160 + 480 + 160]
    assert [p.marker for p in out] == [True, False, True, False]
    assert {p.ssrc for p in out} == {fork.spec.ssrc}
    assert fork.rebases == 2


def test_sequence_jump_rebases_but_reordering_does_not() -> None:
    rig = Rig()
    fork = rig.fork(seq=10, ts=0)
    rig.send(rtp(seq=100, ts=16_000))
    rig.send(rtp(seq=102, ts=16_320))  # 101 lost
    rig.send(rtp(seq=101, ts=16_160), advance=0.001)  # ...arrives late: keeps its place
    rig.send(rtp(seq=9000, ts=16_480), advance=0.019)  # restart (RFC 3550 §A.1 MAX_DROPOUT)
    out = rig.out()
    # The late packet did not move the stream back: the restart continues after 102, 20 ms on.
    assert [p.sequence for p in out] == [10, 12, 11, 13]
    assert out[3].marker and fork.rebases == 2
    assert out[3].timestamp == 320 + 160


def test_timestamp_jump_rebases() -> None:
    rig = Rig()
    fork = rig.fork(seq=10, ts=0)
    rig.send(rtp(seq=1, ts=1000))
    rig.send(rtp(seq=2, ts=1000 + 8000 * 3600))  # an hour ahead in one packet
    out = rig.out()
    assert out[1].sequence == 11 and out[1].timestamp == 160 and out[1].marker
    assert fork.rebases == 2


def test_silence_suppression_keeps_the_source_timestamps() -> None:
    rig = Rig()
    fork = rig.fork(seq=10, ts=0)
    rig.send(rtp(seq=1, ts=1000))
    # RFC 3551 §4.1: 2 s of silence not sent; the timestamp moved with the clock.
    rig.send(rtp(seq=2, ts=1000 + 16_000 + 160, marker=True), advance=2.02)
    out = rig.out()
    assert out[1].sequence == 11 and out[1].timestamp == 16_160 and out[1].marker
    assert fork.rebases == 1  # only the first packet


def test_hold_with_a_frozen_source_clock_takes_the_wall_clock() -> None:
    rig = Rig()
    fork = rig.fork(seq=10, ts=0)
    rig.send(rtp(seq=1, ts=1000))
    rig.send(rtp(seq=2, ts=1160), advance=10.0)  # 10 s on hold, the source's clock stood still
    out = rig.out()
    assert out[1].sequence == 11 and out[1].timestamp == 80_000 and out[1].marker
    assert fork.rebases == 2


def test_payload_type_mapping_and_drops() -> None:
    rig = Rig()
    fork = rig.fork()
    rig.send(rtp(seq=1, ts=0, pt=0))
    rig.send(rtp(seq=2, ts=160, pt=101, payload=b"\x01\x0a\x00\xa0"))  # telephone-event, mapped
    rig.send(rtp(seq=3, ts=320, pt=18))  # G.729: not accepted by the SRS
    rig.send(rtp(seq=4, ts=480, pt=8, marker=True))
    out = rig.out()
    assert [p.payload_type for p in out] == [0, 100, 8]
    assert [p.marker for p in out] == [True, False, True]
    assert [p.sequence for p in out] == [1000, 1001, 1003]  # the SRS sees the gap of the drop
    stats = fork.stats()
    assert stats.dropped_payload_type == 1 and stats.packets_sent == 3
    assert stats.octets_sent == 160 + 4 + 160


def test_payload_octets_exclude_csrc_extension_and_padding() -> None:
    rig = Rig()
    fork = rig.fork()
    packet = rtp(
        seq=1, ts=0, payload=b"x" * 20, csrcs=(1, 2), extension=(0xBEDE, b"\x10\xff\x00\x00"), padding=4
    )
    rig.send(packet)
    assert fork.octets_sent == 20 and rig.leg.octets == 20
    parsed = rig.out()[0]
    assert parsed.csrcs == (1, 2) and parsed.extension == (0xBEDE, b"\x10\xff\x00\x00")
    assert parsed.payload == b"x" * 20 and parsed.ssrc == fork.spec.ssrc


def test_plain_fork_sends_the_leg_header_even_beside_a_rewriting_fork() -> None:
    rig = Rig()
    rig.fork(fork_spec(fork_id="rw"))  # attached first...
    plain = rig.fork(fork_spec(fork_id="plain", rewrite=False, payload_map=((0, 0),)))
    rig.send(rtp(seq=42, ts=4242, ssrc=0xABCDEF))
    rig.send(rtp(seq=43, ts=4402, ssrc=0xABCDEF, pt=8))
    (original,) = rig.out("plain")  # ...but the plain one runs before it rewrites
    assert (original.sequence, original.timestamp, original.ssrc) == (42, 4242, 0xABCDEF)
    assert plain.dropped_payload_type == 1
    assert [p.ssrc for p in rig.out("rw")] == [0x5EC0_0001] * 2


def test_plain_fork_refuses_mapping_and_srtp() -> None:
    with pytest.raises(LocalProtocolError, match="rewrite=False"):
        fork_spec(rewrite=False, payload_map=((0, 8),))


# --- pause, resume, keepalive ----------------------------------------------------------------


def test_pause_drops_and_resume_continues_with_the_paused_time() -> None:
    rig = Rig()
    fork = rig.fork(seq=10, ts=0)
    rig.send(rtp(seq=1, ts=0))
    fork.pause(rig.now)
    for i in range(50):  # 1 s of audio while paused
        rig.send(rtp(seq=2 + i, ts=160 * (1 + i)))
    fork.resume(rig.now)
    rig.send(rtp(seq=52, ts=160 * 51))
    out = rig.out()
    assert [p.sequence for p in out] == [10, 11]
    assert out[1].timestamp == 8160  # 1.02 s of wall clock at 8 kHz
    assert out[1].marker
    assert fork.stats().dropped_paused == 50


def test_keepalive_while_paused() -> None:
    rig = Rig()
    fork = rig.fork(fork_spec(keepalive=True), seq=10, ts=0)
    rig.send(rtp(seq=1, ts=0))
    fork.pause(rig.now)
    rig.now += KEEPALIVE_SECONDS + 0.01
    fork.on_timer(rig.now, UNIX0)
    keepalive = rig.out()[-1]
    # RFC 6263 §4.6: no payload, a payload type the SRS was not offered, the stream's numbering.
    assert keepalive.payload == b"" and keepalive.payload_type not in (0, 8, 100)
    assert keepalive.payload_type >= 96 and keepalive.sequence == 11 and keepalive.ssrc == fork.spec.ssrc
    assert keepalive.timestamp == round((KEEPALIVE_SECONDS + 0.01) * 8000)
    fork.resume(rig.now)
    rig.send(rtp(seq=900, ts=5), advance=1.0)
    assert rig.out()[-1].sequence == 12
    assert rig.out()[-1].timestamp == keepalive.timestamp + 8000
    assert fork.stats().keepalives_sent == 1 and fork.stats().packets_sent == 2


# --- RTCP -------------------------------------------------------------------------------------


def test_no_rtcp_before_the_first_rtp_packet() -> None:
    rig = Rig()
    fork = rig.fork()
    deadline = fork.first_deadline()
    assert rig.now + 0.25 * 5 <= deadline <= rig.now + 0.75 * 5
    fork.on_timer(deadline, UNIX0)
    assert rig.rtcp_out["f1"] == []


def test_sender_report_has_a_consistent_ntp_rtp_pair_and_counts() -> None:
    rig = Rig()
    fork = rig.fork(fork_spec(cname="rec-1@src"), seq=10, ts=1_000_000)
    for i in range(50):
        rig.send(rtp(seq=i, ts=160 * i))
    last_ts = rig.out()[-1].timestamp
    sr_time = max(rig.now + 0.25, fork.first_deadline())
    fork.on_timer(sr_time, UNIX0)
    (raw,) = rig.rtcp_out["f1"]
    compound = parse_rtcp(raw)
    sr, sdes = compound.packets
    assert isinstance(sr, SenderReport) and isinstance(sdes, SourceDescription)
    assert sr.ssrc == fork.spec.ssrc
    assert sr.packet_count == 50 and sr.octet_count == 50 * 160
    assert sr.ntp_timestamp == ntp_from_unix(UNIX0)
    # RFC 3550 §6.4.1: the RTP timestamp of the same instant as the NTP one.
    assert sr.rtp_timestamp == last_ts + round((sr_time - rig.now) * 8000)
    assert sdes.cname(fork.spec.ssrc) == b"rec-1@src"


def test_rtcp_interval_is_randomised_between_half_and_one_and_a_half() -> None:
    rig = Rig()
    fork = rig.fork(fork_spec(rtcp_interval=2.0))
    rig.send(rtp(seq=1, ts=0))
    when = fork.first_deadline()
    gaps = []
    for _ in range(200):
        following = fork.on_timer(when, UNIX0)
        assert following is not None
        gaps.append(following - when)
        when = following
    assert 1.0 <= min(gaps) < 1.2 and 2.8 < max(gaps) <= 3.0
    # After two intervals without RTP the report is an RR (RFC 3550 §6.4).
    assert isinstance(parse_rtcp(rig.rtcp_out["f1"][-1]).packets[0], ReceiverReport)
    assert isinstance(parse_rtcp(rig.rtcp_out["f1"][0]).packets[0], SenderReport)


def test_close_sends_bye_in_a_compound_packet_once() -> None:
    rig = Rig()
    fork = rig.fork()
    rig.send(rtp(seq=1, ts=0))
    fork.close(rig.now + 0.1, UNIX0)
    fork.close(rig.now + 0.2, UNIX0)
    (raw,) = rig.rtcp_out["f1"]
    sr, sdes, bye = parse_rtcp(raw).packets
    assert isinstance(sr, SenderReport) and isinstance(sdes, SourceDescription)
    assert bye == Goodbye((fork.spec.ssrc,))
    assert fork.on_timer(rig.now + 10, UNIX0) is None
    rig.send(rtp(seq=2, ts=160))  # detached from the leg
    assert len(rig.rtp_out["f1"]) == 1


def test_close_without_any_rtp_sends_no_bye() -> None:
    rig = Rig()
    rig.fork().close(rig.now, UNIX0)  # RFC 3550 §6.3.7
    assert rig.rtcp_out["f1"] == []


def test_receiver_report_about_our_ssrc_goes_to_stats_and_an_event() -> None:
    rig = Rig()
    fork = rig.fork()
    ours = ReportBlock(fork.spec.ssrc, 64, 12, 0x1_0010, 33, 0, 0)
    other = ReportBlock(0x999, 255, 1000, 5, 5, 0, 0)
    packet = bytes(
        CompoundPacket((ReceiverReport(0x5125, (other, ours)), SourceDescription(((0x5125, ()),))))
    )
    fork.receive_rtcp(packet, 123.0)
    fork.receive_rtcp(b"\x80\xc9", 124.0)  # truncated: counted, ignored
    stats = fork.stats()
    assert stats.rtcp_received == 2
    assert stats.last_report is not None
    assert stats.last_report.fraction_lost == 0.25 and stats.last_report.cumulative_lost == 12
    assert stats.last_report.highest_sequence == 0x1_0010 and stats.last_report.jitter == 33
    assert stats.last_report.received_at == 123.0
    assert [e for e in rig.events if isinstance(e, ReceptionReported)] == [
        ReceptionReported("f1", stats.last_report)
    ]


# --- leg ingress -----------------------------------------------------------------------------


def test_first_source_is_latched_and_others_refused() -> None:
    rig = Rig()
    rig.fork()
    rig.send(rtp(seq=1, ts=0))
    rig.send(rtp(seq=2, ts=160), source=INTRUDER)
    rig.send(rtp(seq=3, ts=320))
    assert rig.events[:2] == [
        SourceLatched(CALL, Leg.INBOUND, PBX),
        FirstPacketReceived(CALL, Leg.INBOUND, PBX),
    ]
    assert rig.leg.rejected_source == 1 and rig.leg.packets == 2
    assert [p.sequence for p in rig.out()] == [1000, 1002]  # the SRS sees the refused one as lost


def test_expected_source_only() -> None:
    rig = Rig(LegSpec(CALL, Leg.OUTBOUND, expected_source=PBX))
    rig.fork(fork_spec(leg=Leg.OUTBOUND))
    rig.send(rtp(seq=1, ts=0), source=INTRUDER)
    rig.send(rtp(seq=2, ts=160))
    rig.send(rtp(seq=3, ts=320), source=INTRUDER)
    assert rig.events == [FirstPacketReceived(CALL, Leg.OUTBOUND, PBX)]
    stats = rig.leg.stats()
    assert stats.rejected_source == 2 and stats.packets == 1


def test_malformed_and_multiplexed_rtcp_are_counted_not_forwarded() -> None:
    rig = Rig()
    fork = rig.fork()
    rig.send(b"\x80\x00\x00")  # shorter than the fixed header
    rig.send(b"\x40" + rtp(seq=1, ts=0)[1:])  # version 1
    rig.send(b"\xa0" + rtp(seq=1, ts=0)[1:-1] + b"\x00")  # padding count 0
    rig.send(bytes(ReceiverReport(5, (ReportBlock(1, 0, 0, 0, 0, 0, 0),))))  # RFC 5761 §4: mux
    rig.leg.receive_rtcp(rig.now)  # and on the RTCP port
    assert rig.leg.stats().malformed == 3 and rig.leg.stats().rtcp_packets == 2
    assert rig.leg.packets == 0 and fork.packets_sent == 0


def test_feed_skips_the_source_check() -> None:
    rig = Rig(LegSpec(CALL, Leg.INBOUND, expected_source=PBX))
    rig.fork()
    rig.leg.feed(rtp(seq=1, ts=0), rig.now)
    rig.leg.feed(rtp(seq=2, ts=160), rig.now + 0.02)
    assert [p.sequence for p in rig.out()] == [1000, 1001]
    assert rig.events == [FirstPacketReceived(CALL, Leg.INBOUND, ("", 0))]


def test_idle_leg_is_reported_once_per_silence() -> None:
    rig = Rig(stream_timeout=3.0)
    leg = rig.leg
    assert leg.first_deadline() == rig.now + 3.0
    assert leg.on_timer(rig.now + 1.0, UNIX0) == rig.now + 3.0
    rig.send(rtp(seq=1, ts=0), advance=2.0)
    assert leg.on_timer(rig.now + 1.0, UNIX0) == rig.now + 3.0  # moved by the packet
    assert leg.on_timer(rig.now + 3.5, UNIX0) == rig.now + 6.5
    assert leg.on_timer(rig.now + 6.5, UNIX0) == rig.now + 9.5
    assert [e for e in rig.events if isinstance(e, LegIdle)] == [LegIdle(CALL, Leg.INBOUND, 3.5)]
    rig.send(rtp(seq=2, ts=160), advance=7.0)
    leg.on_timer(rig.now + 0.5, UNIX0)
    leg.on_timer(rig.now + 4.0, UNIX0)
    assert len([e for e in rig.events if isinstance(e, LegIdle)]) == 2


# --- failures ---------------------------------------------------------------------------------


def test_send_failures_are_counted_and_reported_once_per_burst() -> None:
    rig = Rig()
    spec = fork_spec()

    def refuse(data: object) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    fork = ForkPipeline(
        spec, send_rtp=refuse, send_rtcp=refuse, emit=rig.events.append, now=rig.now, initial_seq=1
    )
    rig.leg.attach(fork)
    for i in range(10):
        rig.send(rtp(seq=i, ts=160 * i))
    rig.send(rtp(seq=10, ts=1600), advance=5.0)  # a new burst after a quiet time
    failures = [e for e in rig.events if isinstance(e, ForkSendFailed)]
    assert failures == [ForkSendFailed("f1", "Connection refused")] * 2
    assert fork.stats().send_errors == 11 and fork.stats().packets_sent == 0


# --- SRTP -------------------------------------------------------------------------------------

SUITE = "AES_CM_128_HMAC_SHA1_80"


def test_srtp_fork_output_decrypts_with_the_fork_key() -> None:
    keys = SrtpKeys(SUITE, generate_key_params(SUITE))
    rig = Rig()
    fork = rig.fork(fork_spec(srtp=keys), seq=500, ts=0)
    for i in range(5):
        rig.send(rtp(seq=i, ts=160 * i, payload=bytes([i]) * 160))
    receiver = SrtpReceiver(keys)
    plain = [RtpPacket.parse(receiver.unprotect(data)) for data in rig.rtp_out["f1"]]
    assert [p.sequence for p in plain] == [500, 501, 502, 503, 504]
    assert [p.payload[0] for p in plain] == [0, 1, 2, 3, 4]
    assert all(len(data) == 172 + 10 for data in rig.rtp_out["f1"])  # 80-bit tag
    fork.close(rig.now + 1, UNIX0)
    (srtcp,) = rig.rtcp_out["f1"]
    assert isinstance(parse_rtcp(receiver.unprotect_rtcp(srtcp)).packets[-1], Goodbye)


def test_srtp_leg_is_unprotected_and_forged_packets_never_forwarded() -> None:
    keys = SrtpKeys(SUITE, generate_key_params(SUITE))
    sender = SrtpSender(keys)
    rig = Rig(LegSpec(CALL, Leg.INBOUND, srtp=keys))
    rig.fork()
    good = [sender.protect(rtp(seq=i, ts=160 * i)) for i in range(4)]
    rig.send(good[0])
    forged = bytearray(good[1])
    forged[20] ^= 0xFF
    rig.send(bytes(forged))
    rig.send(bytes(forged), advance=0.01)  # same burst
    rig.send(good[2])
    rig.send(good[2])  # replayed
    rig.send(good[3])
    assert [p.sequence for p in rig.out()] == [1000, 1002, 1003]
    assert rig.leg.stats().srtp_failures == 3
    failures = [e for e in rig.events if isinstance(e, SrtpFailed)]
    assert len(failures) == 1 and failures[0].fork_id is None and failures[0].leg == Leg.INBOUND


def test_srtp_leg_latches_only_an_authenticated_source() -> None:
    keys = SrtpKeys(SUITE, generate_key_params(SUITE))
    rig = Rig(LegSpec(CALL, Leg.INBOUND, srtp=keys))
    rig.fork()
    forged = SrtpSender(SrtpKeys(SUITE, generate_key_params(SUITE))).protect(rtp(seq=1, ts=0))
    rig.send(forged, source=INTRUDER)  # first, but cannot authenticate: not latched
    rig.send(SrtpSender(keys).protect(rtp(seq=1, ts=0)))
    rig.send(forged, source=INTRUDER)  # now refused before any decryption
    assert [p.sequence for p in rig.out()] == [1000]
    assert rig.leg.stats().srtp_failures == 1 and rig.leg.stats().rejected_source == 1
    assert SourceLatched(CALL, Leg.INBOUND, PBX) in rig.events


def test_srtcp_from_the_srs_is_read_with_its_key() -> None:
    ours = SrtpKeys(SUITE, generate_key_params(SUITE))
    theirs = SrtpKeys(SUITE, generate_key_params(SUITE))
    rig = Rig()
    fork = rig.fork(fork_spec(srtp=ours, remote_srtcp=theirs))
    block = ReportBlock(fork.spec.ssrc, 0, 0, 7, 2, 0, 0)
    srtcp = SrtpSender(theirs).protect_rtcp(bytes(ReceiverReport(0x77, (block,))))
    fork.receive_rtcp(srtcp, rig.now)
    assert fork.last_report is not None and fork.last_report.highest_sequence == 7
    fork.receive_rtcp(srtcp, rig.now)  # replay
    assert fork.stats().srtp_failures == 1
    assert [type(e) for e in rig.events].count(SrtpFailed) == 1


def test_every_fork_of_a_leg_gets_the_clear_packet_whatever_the_attach_order() -> None:
    """SRTP encrypts in place: the leg runs plain, then rewriting, then SRTP forks, and only the
    last one works in the shared buffer (the others protect a copy)."""
    first_keys, second_keys = (SrtpKeys(SUITE, generate_key_params(SUITE)) for _ in range(2))
    rig = Rig()
    rig.fork(fork_spec(fork_id="srtp-1", ssrc=11, srtp=first_keys), seq=100)
    rig.fork(fork_spec(fork_id="rewrite", ssrc=22), seq=200)
    rig.fork(fork_spec(fork_id="srtp-2", ssrc=33, srtp=second_keys), seq=300)
    rig.fork(fork_spec(fork_id="plain", rewrite=False, payload_map=((0, 0),)))
    sent = [rtp(seq=i, ts=160 * i, payload=bytes([i]) * 160) for i in range(1, 4)]
    for packet in sent:
        rig.send(packet)
    assert rig.rtp_out["plain"] == sent
    assert [(p.ssrc, p.sequence, p.payload) for p in rig.out("rewrite")] == [
        (22, 200 + i, bytes([i + 1]) * 160) for i in range(3)
    ]
    for fork_id, keys, ssrc, seq in (("srtp-1", first_keys, 11, 100), ("srtp-2", second_keys, 33, 300)):
        receiver = SrtpReceiver(keys)
        plain = [RtpPacket.parse(receiver.unprotect(data)) for data in rig.rtp_out[fork_id]]
        assert [(p.ssrc, p.sequence, p.payload) for p in plain] == [
            (ssrc, seq + i, bytes([i + 1]) * 160) for i in range(3)
        ]


def test_srtp_fork_refuses_an_oversized_packet_that_a_rewrite_fork_forwards() -> None:
    keys = SrtpKeys(SUITE, generate_key_params(SUITE))
    rig = Rig()
    rig.fork(fork_spec(fork_id="srtp", srtp=keys))
    rig.fork(fork_spec(fork_id="rewrite"))
    rig.send(rtp(seq=1, ts=0, payload=bytes(1400)))  # more than an MTU once protected
    rig.send(rtp(seq=2, ts=160))
    assert [p.sequence for p in rig.out("rewrite")] == [1000, 1001]
    assert len(rig.rtp_out["srtp"]) == 1
    fork = next(fork for fork in rig.leg.forks if fork.spec.fork_id == "srtp")
    assert fork.stats().srtp_failures == 1 and fork.stats().packets_sent == 1


class ConnectedSocket:
    """What a socket connected to the admitted source gives ``recv_into``: datagrams, no address."""

    def __init__(self) -> None:
        self.queue: list[bytes] = []

    def recv_into(self, buffer: bytearray) -> int:
        if not self.queue:
            raise BlockingIOError
        data = self.queue.pop(0)
        buffer[: len(data)] = data
        return len(data)


def test_admission_asks_once_for_a_connected_socket_after_the_first_packet_went_out() -> None:
    admitted: list[tuple[tuple[str, int], float, int]] = []
    rig = Rig()
    rig.leg = LegReceiver(
        LegSpec(CALL, Leg.INBOUND),
        rig.buffer,
        rig.events.append,
        rig.now,
        30.0,
        rig._recv_into,
        on_admitted=lambda source, now: admitted.append((source, now, len(rig.rtp_out["f1"]))),
    )
    rig.fork()
    rig.send(rtp(seq=1, ts=0), source=INTRUDER)  # latched: the intruder was first
    latched_at = rig.now
    rig.send(rtp(seq=2, ts=160))  # refused
    assert admitted == [(INTRUDER, latched_at, 1)]
    assert rig.leg.stats().rejected_source == 1


def test_srtp_leg_asks_for_a_connected_socket_only_once_a_packet_authenticated() -> None:
    keys = SrtpKeys(SUITE, generate_key_params(SUITE))
    admitted: list[tuple[str, int]] = []
    rig = Rig()
    rig.leg = LegReceiver(
        LegSpec(CALL, Leg.INBOUND, srtp=keys),
        rig.buffer,
        rig.events.append,
        rig.now,
        30.0,
        rig._recv_into,
        on_admitted=lambda source, now: admitted.append(source),
    )
    rig.fork()
    forged = SrtpSender(SrtpKeys(SUITE, generate_key_params(SUITE))).protect(rtp(seq=1, ts=0))
    rig.send(forged, source=INTRUDER)
    assert admitted == []
    rig.send(SrtpSender(keys).protect(rtp(seq=1, ts=0)))
    assert admitted == [PBX]


def test_connected_reader_forwards_what_the_connected_socket_holds() -> None:
    rig = Rig()
    rig.fork(seq=1000)
    rig.send(rtp(seq=1, ts=0))
    connected = ConnectedSocket()
    read = rig.leg.connected_reader(connected.recv_into)
    connected.queue += [rtp(seq=2, ts=160), b"\x80", rtp(seq=3, ts=320)]
    assert read(rig.now) and read(rig.now) and read(rig.now)
    assert not read(rig.now)
    assert [p.sequence for p in rig.out()] == [1000, 1001, 1002]
    stats = rig.leg.stats()
    assert (stats.packets, stats.malformed, stats.rejected_source) == (3, 1, 0)


def test_connected_reader_of_an_srtp_leg_unprotects() -> None:
    keys = SrtpKeys(SUITE, generate_key_params(SUITE))
    sender = SrtpSender(keys)
    rig = Rig(LegSpec(CALL, Leg.INBOUND, srtp=keys))
    rig.fork(seq=1000)
    rig.send(sender.protect(rtp(seq=1, ts=0)))
    connected = ConnectedSocket()
    read = rig.leg.connected_reader(connected.recv_into)
    second = sender.protect(rtp(seq=2, ts=160))
    connected.queue += [second, second]  # the second time, a replay
    assert read(rig.now) and read(rig.now)
    assert [p.sequence for p in rig.out()] == [1000, 1001]
    assert rig.leg.stats().srtp_failures == 1


def test_checked_drain_keeps_order_and_counts_strangers() -> None:
    rig = Rig()
    rig.fork(seq=1000)
    rig.send(rtp(seq=1, ts=0))
    rig.wire += [(rtp(seq=2, ts=160), PBX), (rtp(seq=50, ts=0), INTRUDER), (rtp(seq=3, ts=320), PBX)]
    rig.leg.drain_checked(rig._recv_into, rig.now)
    assert rig.wire == []
    assert [p.sequence for p in rig.out()] == [1000, 1001, 1002]
    assert rig.leg.stats().rejected_source == 1


def test_packet_views_are_cut_once_per_length_and_kept_for_short_packets_only() -> None:
    packets = PacketBuffer()
    view = packets.views[172]
    assert view is packets.views[172] and len(view) == 172
    packets.data[:3] = b"abc"
    assert bytes(view[:3]) == b"abc"  # a view, not a copy
    long = CACHED_VIEW_LENGTH + 1
    assert len(packets.views[long]) == long and long not in packets.views
    assert list(packets.views) == [172]


# --- updates ----------------------------------------------------------------------------------


def test_update_changes_the_map_and_keeps_numbering() -> None:
    rig = Rig()
    fork = rig.fork(seq=10, ts=0)
    rig.send(rtp(seq=1, ts=0, pt=8))
    fork.update(fork_spec(payload_map=((8, 9),), remote_rtp=("127.0.0.1", 32000)), rig.now)
    rig.send(rtp(seq=2, ts=160, pt=8))
    out = rig.out()
    assert [(p.payload_type, p.sequence, p.timestamp) for p in out] == [(8, 10, 0), (9, 11, 160)]
    with pytest.raises(LocalProtocolError, match="SSRC"):
        fork.update(fork_spec(ssrc=5), rig.now)


def test_update_adds_srtp_keys_and_stays_continuous() -> None:
    keys = SrtpKeys(SUITE, generate_key_params(SUITE))
    rig = Rig()
    fork = rig.fork(seq=10, ts=0)
    rig.send(rtp(seq=1, ts=0))
    fork.update(fork_spec(srtp=keys), rig.now)
    rig.send(rtp(seq=2, ts=160))
    second = RtpPacket.parse(SrtpReceiver(keys).unprotect(rig.rtp_out["f1"][1]))
    assert (second.sequence, second.timestamp) == (11, 160)


# --- timers -----------------------------------------------------------------------------------


class _Ticker:
    def __init__(self, period: float | None) -> None:
        self.period = period
        self.calls: list[float] = []

    def on_timer(self, now: float, unix: float) -> float | None:
        self.calls.append(now)
        return None if self.period is None else now + self.period


def test_timers_run_supersede_and_cancel() -> None:
    timers = Timers()
    every_second, once, cancelled = _Ticker(1.0), _Ticker(None), _Ticker(1.0)
    timers.schedule(every_second, 1.0)
    timers.schedule(once, 0.5)
    timers.schedule(once, 2.5)  # supersedes 0.5
    timers.schedule(cancelled, 0.1)
    timers.cancel(cancelled)
    assert timers.earliest() == 1.0
    timers.run(3.0, UNIX0)
    assert every_second.calls == [3.0] and once.calls == [3.0] and cancelled.calls == []
    assert timers.earliest() == 4.0 and len(timers) == 1


def test_header_struct_layout() -> None:
    # The in-place rewrite writes bytes 1-11 and nothing else.
    data = bytearray(rtp(seq=1, ts=2, ssrc=3))
    struct.Struct("!BHII").pack_into(data, 1, 0x88, 0xBEEF, 0xDEADBEEF, 0xCAFEF00D)
    assert RtpPacket.parse(bytes(data)) == RtpPacket(8, 0xBEEF, 0xDEADBEEF, 0xCAFEF00D, b"\xd5" * 160, True)
