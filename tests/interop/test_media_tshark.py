"""tshark's independent view of what the media engine sends to an SRS.

A both_tracks recording toward the in-test SRS is captured on loopback; tshark (its own RTP
and RTCP dissectors, heuristics on) must find exactly our two streams under the SSRCs the
recording announced, with no loss and no sequence errors (``-z rtp,streams``), and sender
reports from each of those SSRCs with well-formed NTP/RTP timestamps and packet counts.
"""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import pytest

from siprec_src import Engine, EngineConfig, Leg, MediaConfig, Party, Track
from siprec_src.synthetic import SyntheticLeg, play
from tests.interop.srs.capture import Capture
from tests.recording.minisrs import MiniSrs

pytestmark = pytest.mark.interop

HEURISTICS = ("-o", "rtp.heuristic_rtp:TRUE", "-o", "rtcp.heuristic_rtcp:TRUE")


def _free_range(size: int = 16) -> int:
    for base in range(31000, 39000, size):
        try:
            socks = []
            for port in range(base, base + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError("no free port range")


async def test_tshark_sees_two_lossless_streams_and_sender_reports(tmp_path: Path) -> None:
    base = _free_range()
    config = EngineConfig(media=MediaConfig(port_min=base, port_max=base + 15))
    async with MiniSrs() as srs, Engine(config) as engine:
        call = await engine.open_call(caller=Party("sip:a@example.com"), callee=Party("sip:b@example.com"))
        async with Capture(tmp_path, list(range(base, base + 16))) as capture:
            recording = await call.record(srs=[srs.uri()], track=Track.BOTH)
            await recording.wait_started(timeout=5)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            legs = [SyntheticLeg(Leg.INBOUND), SyntheticLeg(Leg.OUTBOUND)]
            await play(legs, lambda leg, packet: sock.sendto(packet, call.taps[leg]), 6.5)
            sock.close()
            await asyncio.sleep(0.2)
            await recording.stop()
    ssrcs = {ssrc for _, _, ssrc in recording.streams}
    sent = legs[0].sent
    streams = capture.tshark(*HEURISTICS, "-q", "-z", "rtp,streams")
    rows = {}
    for line in streams.splitlines():
        match = re.search(r"0x([0-9A-Fa-f]{8})\s+(\S+)\s+(\d+)\s+(-?\d+)\s+\((-?[\d.]+)%\)", line)
        if match and int(match.group(1), 16) in ssrcs:
            rows[int(match.group(1), 16)] = (int(match.group(3)), int(match.group(4)))
    assert set(rows) == ssrcs, streams
    for packets, lost in rows.values():
        assert (packets, lost) == (sent, 0), streams
    reports = capture.tshark(
        *HEURISTICS,
        "-Y",
        "rtcp.pt == 200",
        "-T",
        "fields",
        "-e",
        "rtcp.senderssrc",
        "-e",
        "rtcp.timestamp.ntp.msw",
        "-e",
        "rtcp.timestamp.rtp",
        "-e",
        "rtcp.sender.packetcount",
    )
    seen = set()
    for line in reports.splitlines():
        ssrc, ntp_msw, _rtp_ts, count = line.split("\t")[:4]
        seen.add(int(ssrc, 16) if ssrc.startswith("0x") else int(ssrc))
        assert int(ntp_msw) > 3_900_000_000  # seconds since 1900: a 21st-century wall clock
        assert 0 < int(count) <= sent
    assert seen == ssrcs, reports
