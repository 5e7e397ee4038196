"""RTP and RTCP packet codecs (RFC 3550) and sequence/timestamp wrap arithmetic.

These dataclasses are for the control path, tests and tools: they parse and build whole
packets with precise errors. The packet hot path (fork pipelines) does not build objects per
packet; it rewrites headers in place with precompiled ``struct.Struct`` instances and uses
only the arithmetic helpers here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from siprec_src.errors import RemoteProtocolError

RTP_VERSION = 2
RTP_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
RTCP_HEADER = struct.Struct("!BBH")  # V/P/count, packet type, length in 32-bit words minus one

# RFC 3550 §12.1 RTCP packet types.
RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204

SDES_CNAME = 1


class RtpError(RemoteProtocolError):
    """A packet that is not valid RTP/RTCP; the reason says which field and why."""


# --- wrap-around arithmetic (RFC 3550 §A.1) ------------------------------------------------


def seq_add(seq: int, delta: int) -> int:
    return (seq + delta) & 0xFFFF


def seq_delta(newer: int, older: int) -> int:
    """Signed distance from ``older`` to ``newer`` on the 16-bit circle (-32768..32767)."""
    diff = (newer - older) & 0xFFFF
    return diff - 0x10000 if diff >= 0x8000 else diff


def ts_add(timestamp: int, delta: int) -> int:
    return (timestamp + delta) & 0xFFFFFFFF


def ts_delta(newer: int, older: int) -> int:
    """Signed distance between two 32-bit RTP timestamps."""
    diff = (newer - older) & 0xFFFFFFFF
    return diff - 0x100000000 if diff >= 0x80000000 else diff


# --- RTP ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """An RTP packet (RFC 3550 §5.1). ``padding`` is the count of padding bytes (0 = none)."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile-defined 16 bits, data: multiple of 4 bytes)
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < RTP_HEADER.size:
            raise RtpError(f"RTP packet of {len(data)} bytes is shorter than the 12-byte header")
        first, second, sequence, timestamp, ssrc = RTP_HEADER.unpack_from(data)
        version = first >> 6
        if version != RTP_VERSION:
            raise RtpError(f"RTP version {version}, expected 2")
        csrc_count = first & 0x0F
        offset = RTP_HEADER.size + 4 * csrc_count
        if len(data) < offset:
            raise RtpError(f"RTP packet truncated: {csrc_count} CSRCs announced, {len(data)} bytes")
        csrcs = struct.unpack_from(f"!{csrc_count}I", data, RTP_HEADER.size) if csrc_count else ()
        extension: tuple[int, bytes] | None = None
        if first & 0x10:
            if len(data) < offset + 4:
                raise RtpError("RTP packet truncated in its header extension")
            profile, words = struct.unpack_from("!HH", data, offset)
            end = offset + 4 + 4 * words
            if len(data) < end:
                raise RtpError(f"RTP header extension of {words} words runs past the packet end")
            extension = (profile, bytes(data[offset + 4 : end]))
            offset = end
        padding = 0
        payload_end = len(data)
        if first & 0x20:
            # RFC 3550 §5.1: the last octet counts the padding, itself included.
            padding = data[-1]
            if padding == 0 or payload_end - padding < offset:
                raise RtpError(f"RTP padding count {padding} is impossible for this packet")
            payload_end -= padding
        return cls(
            payload_type=second & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[offset:payload_end]),
            marker=bool(second & 0x80),
            csrcs=tuple(csrcs),
            extension=extension,
            padding=padding,
        )

    def __bytes__(self) -> bytes:
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} out of range 0-127")
        if len(self.csrcs) > 15:
            raise ValueError("at most 15 CSRCs")
        first = (RTP_VERSION << 6) | len(self.csrcs)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        second = (0x80 if self.marker else 0) | self.payload_type
        out = bytearray(RTP_HEADER.pack(first, second, self.sequence, self.timestamp, self.ssrc))
        for csrc in self.csrcs:
            out += struct.pack("!I", csrc)
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise ValueError("RTP header extension data must be a multiple of 4 bytes")
            out += struct.pack("!HH", profile, len(data) // 4) + data
        out += self.payload
        if self.padding:
            out += bytes(self.padding - 1) + bytes([self.padding])
        return bytes(out)


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: on a muxed port, packet types 192-223 (as the RTP PT byte) are RTCP."""
    return len(data) >= 2 and 192 <= data[1] <= 223


# --- RTCP -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """RFC 3550 §6.4.1 reception report block."""

    ssrc: int
    fraction_lost: int  # 0-255, the fraction of packets lost since the last report, * 256
    cumulative_lost: int  # signed 24-bit
    highest_sequence: int  # extended highest sequence number received
    jitter: int  # interarrival jitter in timestamp units
    last_sr: int  # middle 32 bits of the last SR's NTP timestamp
    delay_since_last_sr: int  # in 1/65536 s

    _STRUCT = struct.Struct("!IB3sIIII")

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = cls._STRUCT.unpack_from(data, offset)
        cumulative = int.from_bytes(lost, "big", signed=True)
        return cls(ssrc, fraction, cumulative, highest, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        lost = self.cumulative_lost.to_bytes(3, "big", signed=True)
        return self._STRUCT.pack(
            self.ssrc,
            self.fraction_lost,
            lost,
            self.highest_sequence,
            self.jitter,
            self.last_sr,
            self.delay_since_last_sr,
        )


@dataclass(frozen=True, slots=True)
class SenderReport:
    """RFC 3550 §6.4.1 SR: the NTP/RTP timestamp pair that lets a receiver sync and measure."""

    ssrc: int
    ntp_timestamp: int  # 64-bit NTP format
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    _STRUCT = struct.Struct("!IQIII")

    def __bytes__(self) -> bytes:
        body = self._STRUCT.pack(
            self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
        ) + b"".join(bytes(report) for report in self.reports)
        return _rtcp_header(len(self.reports), RTCP_SR, body) + body


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def __bytes__(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(bytes(report) for report in self.reports)
        return _rtcp_header(len(self.reports), RTCP_RR, body) + body


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """RFC 3550 §6.5 SDES: here one chunk per source with its items (CNAME is type 1)."""

    chunks: tuple[tuple[int, tuple[tuple[int, bytes], ...]], ...]

    def __bytes__(self) -> bytes:
        body = bytearray()
        for ssrc, items in self.chunks:
            chunk = bytearray(struct.pack("!I", ssrc))
            for kind, value in items:
                if len(value) > 255:
                    raise ValueError("an SDES item holds at most 255 bytes")
                chunk += bytes([kind, len(value)]) + value
            chunk += b"\x00"  # end of the item list
            chunk += bytes(-len(chunk) % 4)  # pad the chunk to a 32-bit boundary
            body += chunk
        return _rtcp_header(len(self.chunks), RTCP_SDES, bytes(body)) + bytes(body)

    def cname(self, ssrc: int) -> bytes | None:
        for source, items in self.chunks:
            if source == ssrc:
                for kind, value in items:
                    if kind == SDES_CNAME:
                        return value
        return None


@dataclass(frozen=True, slots=True)
class Goodbye:
    """RFC 3550 §6.6 BYE, optionally with a reason."""

    ssrcs: tuple[int, ...]
    reason: bytes = b""

    def __bytes__(self) -> bytes:
        body = b"".join(struct.pack("!I", ssrc) for ssrc in self.ssrcs)
        if self.reason:
            tail = bytes([len(self.reason)]) + self.reason
            body += tail + bytes(-len(tail) % 4)
        return _rtcp_header(len(self.ssrcs), RTCP_BYE, body) + body


@dataclass(frozen=True, slots=True)
class UnknownRtcp:
    packet_type: int
    count: int
    body: bytes

    def __bytes__(self) -> bytes:
        return _rtcp_header(self.count, self.packet_type, self.body) + self.body


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Goodbye | UnknownRtcp


@dataclass(frozen=True, slots=True)
class CompoundPacket:
    packets: tuple[RtcpPacket, ...] = field(default=())

    def __bytes__(self) -> bytes:
        return b"".join(bytes(packet) for packet in self.packets)


def _rtcp_header(count: int, packet_type: int, body: bytes) -> bytes:
    if count > 31:
        raise ValueError("an RTCP packet holds at most 31 report blocks, chunks or sources")
    if len(body) % 4:
        raise ValueError("an RTCP packet body must be a multiple of 32 bits")
    return RTCP_HEADER.pack((RTP_VERSION << 6) | count, packet_type, len(body) // 4)


def parse_rtcp(data: bytes) -> CompoundPacket:
    """Parse a compound RTCP packet (RFC 3550 §6.1); every sub-packet must be well formed."""
    packets: list[RtcpPacket] = []
    offset = 0
    if len(data) < RTCP_HEADER.size:
        raise RtpError(f"RTCP packet of {len(data)} bytes is shorter than its 4-byte header")
    while offset < len(data):
        if len(data) - offset < RTCP_HEADER.size:
            raise RtpError(f"{len(data) - offset} stray bytes after the last RTCP packet")
        first, packet_type, words = RTCP_HEADER.unpack_from(data, offset)
        if first >> 6 != RTP_VERSION:
            raise RtpError(f"RTCP version {first >> 6} at byte {offset}, expected 2")
        end = offset + 4 + 4 * words
        if end > len(data):
            raise RtpError(f"RTCP packet type {packet_type} at byte {offset} runs past the datagram end")
        count = first & 0x1F
        body_end = end
        if first & 0x20:
            padding = data[end - 1]
            if padding == 0 or end - padding < offset + 4:
                raise RtpError(f"RTCP padding count {padding} is impossible")
            body_end = end - padding
        body = bytes(data[offset + 4 : body_end])
        packets.append(_parse_one(packet_type, count, body))
        offset = end
    return CompoundPacket(tuple(packets))


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    if packet_type == RTCP_SR:
        need = 24 + 24 * count
        if len(body) < need:
            raise RtpError(f"RTCP SR with {count} report blocks needs {need} bytes, has {len(body)}")
        ssrc, ntp, rtp_ts, packets, octets = SenderReport._STRUCT.unpack_from(body)
        reports = tuple(ReportBlock.parse(body, 24 + 24 * i) for i in range(count))
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, reports)
    if packet_type == RTCP_RR:
        need = 4 + 24 * count
        if len(body) < need:
            raise RtpError(f"RTCP RR with {count} report blocks needs {need} bytes, has {len(body)}")
        (ssrc,) = struct.unpack_from("!I", body)
        return ReceiverReport(ssrc, tuple(ReportBlock.parse(body, 4 + 24 * i) for i in range(count)))
    if packet_type == RTCP_SDES:
        return _parse_sdes(count, body)
    if packet_type == RTCP_BYE:
        if len(body) < 4 * count:
            raise RtpError(f"RTCP BYE with {count} sources needs {4 * count} bytes, has {len(body)}")
        ssrcs = struct.unpack_from(f"!{count}I", body) if count else ()
        reason = b""
        rest = body[4 * count :]
        if rest:
            length = rest[0]
            if 1 + length > len(rest):
                raise RtpError("RTCP BYE reason runs past the packet end")
            reason = rest[1 : 1 + length]
        return Goodbye(tuple(ssrcs), reason)
    return UnknownRtcp(packet_type, count, body)


def _parse_sdes(count: int, body: bytes) -> SourceDescription:
    chunks: list[tuple[int, tuple[tuple[int, bytes], ...]]] = []
    offset = 0
    for _ in range(count):
        if offset + 4 > len(body):
            raise RtpError("RTCP SDES chunk truncated")
        (ssrc,) = struct.unpack_from("!I", body, offset)
        offset += 4
        items: list[tuple[int, bytes]] = []
        while True:
            if offset >= len(body):
                raise RtpError("RTCP SDES item list is not terminated")
            kind = body[offset]
            if kind == 0:
                offset += 1
                offset += -offset % 4  # chunks end on a 32-bit boundary
                break
            if offset + 2 > len(body) or offset + 2 + body[offset + 1] > len(body):
                raise RtpError("RTCP SDES item runs past the packet end")
            length = body[offset + 1]
            items.append((kind, bytes(body[offset + 2 : offset + 2 + length])))
            offset += 2 + length
        chunks.append((ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


# --- NTP time (RFC 3550 §4) ------------------------------------------------------------------

NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01


def ntp_from_unix(unix_seconds: float) -> int:
    """64-bit NTP timestamp for a Unix time (the caller reads the clock, not this module)."""
    seconds = int(unix_seconds) + NTP_UNIX_OFFSET
    fraction = int((unix_seconds % 1) * (1 << 32)) & 0xFFFFFFFF
    return ((seconds & 0xFFFFFFFF) << 32) | fraction


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits, as carried in LSR (RFC 3550 §6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF
