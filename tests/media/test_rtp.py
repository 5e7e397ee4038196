"""RTP/RTCP codecs: round trips, wrap arithmetic, precise errors, and arbitrary input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siprec_src.media.rtp import (
    CompoundPacket,
    Goodbye,
    ReceiverReport,
    ReportBlock,
    RtpError,
    RtpPacket,
    SenderReport,
    SourceDescription,
    UnknownRtcp,
    is_rtcp,
    ntp_from_unix,
    ntp_middle,
    parse_rtcp,
    seq_add,
    seq_delta,
    ts_add,
    ts_delta,
)

PCMU_20MS = RtpPacket(
    payload_type=0, sequence=65535, timestamp=0xFFFFFF00, ssrc=0x11223344, payload=b"\xff" * 160
)


def test_rtp_round_trip_and_size() -> None:
    data = bytes(PCMU_20MS)
    assert len(data) == 172  # the 172-byte PCMU packet of the benchmarks
    assert RtpPacket.parse(data) == PCMU_20MS


def test_rtp_with_csrc_extension_padding_marker() -> None:
    packet = RtpPacket(101, 7, 8000, 5, b"\x01\x80\x00\xa0", True, (9, 10), (0xBEDE, b"\x10\xaa\x00\x00"), 4)
    assert RtpPacket.parse(bytes(packet)) == packet


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\x00\x00", "shorter than the 12-byte header"),
        (b"\x40" + bytes(11), "RTP version 1"),
        (b"\x82" + bytes(11), "2 CSRCs announced"),
        (b"\x90" + bytes(11) + b"\x00\x00\x00\x05", "runs past the packet end"),
        (b"\xa0" + bytes(10) + b"\x00\x00\x00\x00\x00\x20", "padding count 32"),
    ],
)
def test_rtp_errors_name_the_problem(data: bytes, reason: str) -> None:
    with pytest.raises(RtpError, match=reason):
        RtpPacket.parse(data)


def test_wrap_arithmetic() -> None:
    assert seq_add(65535, 1) == 0
    assert seq_delta(0, 65535) == 1
    assert seq_delta(65535, 0) == -1
    assert seq_delta(100, 99) == 1
    assert ts_add(0xFFFFFFFF, 160) == 159
    assert ts_delta(159, 0xFFFFFFFF) == 160
    assert ts_delta(0, 0x80000000) == -0x80000000


def test_rtcp_compound_round_trip() -> None:
    block = ReportBlock(0x11223344, 12, -3, 70000, 45, 0x12345678, 65536)
    compound = CompoundPacket(
        (
            SenderReport(0xAABBCCDD, ntp_from_unix(1_700_000_000.25), 160_000, 1000, 160_000, (block,)),
            SourceDescription(((0xAABBCCDD, ((1, b"siprec-src@example"),)),)),
            Goodbye((0xAABBCCDD,), b"recording stopped"),
        )
    )
    parsed = parse_rtcp(bytes(compound))
    assert parsed == compound
    sdes = parsed.packets[1]
    assert isinstance(sdes, SourceDescription) and sdes.cname(0xAABBCCDD) == b"siprec-src@example"
    rr = ReceiverReport(1, (block,))
    assert parse_rtcp(bytes(rr)).packets == (rr,)
    app = UnknownRtcp(204, 1, b"name" + b"data")
    assert parse_rtcp(bytes(app)).packets == (app,)


def test_ntp_helpers() -> None:
    ntp = ntp_from_unix(0.5)
    assert ntp >> 32 == 2_208_988_800 and ntp & 0xFFFFFFFF == 1 << 31
    assert ntp_middle(ntp) == ((2_208_988_800 & 0xFFFF) << 16) | 0x8000


def test_rtcp_errors() -> None:
    sr = bytes(SenderReport(1, 2, 3, 4, 5))
    with pytest.raises(RtpError, match="runs past the datagram end"):
        parse_rtcp(sr[:-4])
    with pytest.raises(RtpError, match="stray bytes"):
        parse_rtcp(sr + b"\x80")
    with pytest.raises(RtpError, match="RTCP version"):
        parse_rtcp(b"\x40" + sr[1:])


def test_rtcp_demultiplexing() -> None:
    assert is_rtcp(bytes(SenderReport(1, 2, 3, 4, 5)))
    assert not is_rtcp(bytes(PCMU_20MS))


@given(st.binary(max_size=200))
@settings(max_examples=500, deadline=None)
def test_arbitrary_bytes_raise_only_rtp_errors(data: bytes) -> None:
    for parse in (RtpPacket.parse, parse_rtcp):
        with contextlib.suppress(RtpError):
            parse(data)
