"""A tone as G.711 μ-law RTP in a pcap file, with the standard library only.

SIPp's ``<exec play_pcap_audio=...>`` replays the UDP payloads of a capture toward the media
address of the peer's SDP, with the capture's timing. This writes such a capture without the
code under test: its own μ-law encoder (ITU-T G.711 §3, the bias-and-segment form), RTP
headers (RFC 3550 §5.1), and the classic pcap format (magic a1b2c3d4, Ethernet link type 1,
IPv4 and UDP headers in front of each datagram).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

_PCAP_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_RTP = struct.Struct("!BBHII")
ETHERNET = 1
RATE = 8000
FRAME = 160  # 20 ms at 8 kHz


def ulaw(sample: int) -> int:
    """One 16-bit linear sample as a μ-law byte (G.711: bias 0x84, clip at 32635, bits inverted)."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84  # >= 0x84, so some segment bit is set
    exponent = next(bit for bit in range(7, -1, -1) if magnitude & (0x80 << bit))
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def tone_frames(frequency: float, seconds: float, amplitude: int = 10000) -> list[bytes]:
    """``seconds`` of a sine tone, cut into 20 ms μ-law frames."""
    count = round(seconds * RATE / FRAME)
    samples = [round(amplitude * math.sin(2 * math.pi * frequency * n / RATE)) for n in range(count * FRAME)]
    encoded = bytes(ulaw(s) for s in samples)
    return [encoded[i : i + FRAME] for i in range(0, len(encoded), FRAME)]


def rtp_packets(
    frames: list[bytes], *, ssrc: int, payload_type: int = 0, sequence: int = 1000
) -> list[bytes]:
    return [
        _RTP.pack(
            0x80,
            (0x80 if index == 0 else 0) | payload_type,
            (sequence + index) & 0xFFFF,
            (index * FRAME) & 0xFFFFFFFF,
            ssrc,
        )
        + frame
        for index, frame in enumerate(frames)
    ]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4_udp(payload: bytes, source: tuple[str, int], destination: tuple[str, int], ident: int) -> bytes:
    src = bytes(int(part) for part in source[0].split("."))
    dst = bytes(int(part) for part in destination[0].split("."))
    udp_length = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, udp_length)
    udp = struct.pack("!HHHH", source[1], destination[1], udp_length, 0) + payload
    udp = udp[:6] + struct.pack("!H", _checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_length, ident & 0xFFFF, 0, 64, 17, 0, src, dst)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


def write_rtp_pcap(
    path: Path,
    packets: list[bytes],
    *,
    source: tuple[str, int] = ("127.0.0.1", 40000),
    destination: tuple[str, int] = ("127.0.0.1", 40002),
    interval: float = FRAME / RATE,
) -> Path:
    """Write ``packets`` as UDP datagrams ``interval`` seconds apart in an Ethernet pcap."""
    out = [_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, ETHERNET)]
    ethernet = bytes.fromhex("020000000002020000000001") + struct.pack("!H", 0x0800)
    for index, payload in enumerate(packets):
        frame = ethernet + _ipv4_udp(payload, source, destination, index)
        micros = round(index * interval * 1_000_000)
        out.append(
            _RECORD.pack(1_700_000_000 + micros // 1_000_000, micros % 1_000_000, len(frame), len(frame))
        )
        out.append(frame)
    path.write_bytes(b"".join(out))
    return path
