"""A synthetic two-party call: each leg a distinct tone, packetised as 20 ms RTP and paced in real time.

``siprec-src record`` and ``siprec-src demo`` record it, and the reference SRS checks what it
got by the dominant frequency of each track, so the tones are far apart and neither is a
harmonic of the other: the caller side (inbound leg) at 440 Hz, the platform side (outbound
leg) at 1250 Hz.
"""

from __future__ import annotations

import asyncio
import math
import random
import struct
from collections.abc import Callable

import numpy as np

from siprec_src.errors import LocalProtocolError
from siprec_src.media.g711 import alaw_encode, ulaw_encode
from siprec_src.media.spec import Leg

TONES = {Leg.INBOUND: 440.0, Leg.OUTBOUND: 1250.0}
FRAME_MS = 20
_HEADER = struct.Struct("!BBHII")


class SyntheticLeg:
    """One leg's RTP: a continuous tone in G.711, 160 samples (20 ms) per packet at 8 kHz."""

    def __init__(self, leg: Leg, codec: str = "PCMU", *, rng: random.Random | None = None) -> None:
        encoders = {"PCMU": (0, ulaw_encode), "PCMA": (8, alaw_encode)}
        if codec.upper() not in encoders:
            raise LocalProtocolError(f"synthetic audio is G.711 only (PCMU or PCMA), not {codec!r}")
        rng = rng or random.SystemRandom()
        self.leg = leg
        self.payload_type, encode = encoders[codec.upper()]
        self.frequency = TONES[leg]
        self.ssrc = rng.getrandbits(32)
        self.sequence = rng.getrandbits(16)
        self.timestamp = rng.getrandbits(32)
        samples = 8000 * FRAME_MS // 1000
        # One period-aligned second of tone, so consecutive frames join without a click.
        t = np.arange(8000) / 8000.0
        tone = (np.sin(2 * math.pi * self.frequency * t) * 10000).astype(np.int16)
        self._frames = [bytes(encode(tone[i : i + samples])) for i in range(0, 8000, samples)]
        self._samples = samples
        self.sent = 0

    def next_packet(self) -> bytes:
        payload = self._frames[self.sent % len(self._frames)]
        marker = 0x80 if self.sent == 0 else 0
        header = _HEADER.pack(0x80, marker | self.payload_type, self.sequence, self.timestamp, self.ssrc)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + self._samples) & 0xFFFFFFFF
        self.sent += 1
        return header + payload


async def play(legs: list[SyntheticLeg], send: Callable[[Leg, bytes], None], duration: float) -> int:
    """Send every leg's packets every 20 ms for ``duration`` seconds, on absolute deadlines."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    count = max(1, round(duration * 1000 / FRAME_MS))
    for index in range(count):
        for leg in legs:
            send(leg.leg, leg.next_packet())
        delay = start + (index + 1) * FRAME_MS / 1000 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    return count
