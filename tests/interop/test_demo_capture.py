"""tshark's independent view of ``siprec-src demo``'s traffic, plain and secure.

``run_demo`` (the reference SRS and the SRC engine in one process, random ports on 127.0.0.1)
runs inside a capture of every UDP and TCP packet on loopback; nothing of the product reads
the capture back. tshark's own dissectors (SIP, TLS, RTP and RTCP heuristics) and the few
lines of standard-library code below decide what crossed the wire:

- plain (SIP over UDP, RTP): the SIP flow INVITE (``Require: siprec``, multipart/mixed with
  SDP and metadata) → 200 → ACK → BYE → 200 between the SRC and the SRS port; ``-z
  rtp,streams`` finds exactly two lossless PCMU streams toward the SRS media ports that
  session.json names, one SSRC each, from the ports the offer advertised, carrying exactly the
  µ-law frames of each leg's tone; RTCP sender reports come from those SSRCs;
- secure (SIP over TLS, SRTP with SDES AES_CM_128_HMAC_SHA1_80): the SRS port carries a TLS
  handshake and application data and no cleartext SIP (the Call-ID is in no frame of the
  capture, while the plain run's check finds it); on the SRS media ports, RTP version 2
  headers with 160 bytes of ciphertext and a 10-byte tag (182 bytes of UDP payload),
  contiguous sequence numbers, no µ-law frame of the tone anywhere in them; SRTCP to port+1
  with the E bit and index trailer. The client's TLS secrets (``SSLKEYLOGFILE``) then let
  tshark decrypt the SIP, and the SDES keys of the offer let the test check every SRTP and
  SRTCP authentication tag and decrypt the audio back to the tone (RFC 3711, written here
  with the ``cryptography`` AES primitive only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from siprec_src.demo import DemoResult, run_demo
from siprec_src.media.spec import Leg
from siprec_src.synthetic import SyntheticLeg
from tests.interop.srs.capture import (
    SDP_TYPE,
    Capture,
    CapturedSip,
    body_parts,
    siprec_problems,
    split_sip_stream,
)

pytestmark = pytest.mark.interop

HEURISTICS = ("-o", "rtp.heuristic_rtp:TRUE", "-o", "rtcp.heuristic_rtcp:TRUE")
CAPTURE_LIMIT_KB = 64 * 1024  # every UDP/TCP packet on lo: bounded, the demo needs < 1 MB
RTP_HEADER = 12
FRAME_BYTES = 160  # 20 ms of 8 kHz µ-law
TAG_80 = 10  # AES_CM_128_HMAC_SHA1_80: 80-bit authentication tag
SRTCP_INDEX = 4  # E bit and 31-bit SRTCP index
SUITE = "AES_CM_128_HMAC_SHA1_80"
NTP_2023 = 3_880_000_000  # seconds since 1900 in 2023: a wall clock, not ciphertext by luck


@dataclass
class DemoCapture:
    result: DemoResult
    capture: Capture
    session: dict[str, Any]
    srs_port: int
    ports: dict[str, int]  # label -> SRS media port (session.json)
    legs: dict[str, Leg]  # label -> leg (the demo's own view)
    sent: dict[str, int]  # label -> RTP packets the SRC sent

    def label_of_port(self, port: int) -> str:
        return next(label for label, p in self.ports.items() if p == port)


async def _record_demo(tmp_path: Path, *, secure: bool) -> DemoCapture:
    async with Capture(
        tmp_path / "pcap", [], all_ports=True, max_kilobytes=CAPTURE_LIMIT_KB, name="demo"
    ) as capture:
        result = await run_demo(tmp_path / "demo", duration=1.0, secure=secure)
    assert capture.complete, f"dumpcap did not write the whole test ({capture.path})"
    assert result.problems == []
    assert result.session_json is not None
    session = json.loads(result.session_json.read_text())
    match = re.search(r"@[^:;>]+:(\d+)", result.srs_uri)
    assert match, result.srs_uri
    return DemoCapture(
        result=result,
        capture=capture,
        session=session,
        srs_port=int(match.group(1)),
        ports={s["label"]: int(s["port"]) for s in session["streams"]},
        legs={c.label: c.leg for c in result.streams},
        sent={c.label: c.sent for c in result.streams},
    )


# --- what tshark says ------------------------------------------------------------------------


def _fields(
    capture: Capture, display_filter: str, *fields: str, options: tuple[str, ...] = ()
) -> list[list[str]]:
    out = capture.tshark(
        *options, "-Y", display_filter, "-T", "fields", "-E", "separator=|", *(f"-e{f}" for f in fields)
    )
    return [line.split("|") for line in out.splitlines() if line.count("|") == len(fields) - 1]


def _port_set(ports: Iterable[int]) -> str:
    """A display-filter set: ``{1, 2}``."""
    return "{" + ", ".join(str(port) for port in ports) + "}"


def _frames_containing(capture: Capture, data: bytes) -> int:
    """How many frames of the whole capture hold ``data`` anywhere."""
    return len(_fields(capture, f"frame contains {data.hex(':')}", "frame.number"))


def _rtcp_source(attrs: dict[str, list[str]], rtp_port: int) -> int:
    """The RTCP port an m-line advertises: ``a=rtcp`` (RFC 3605), else RTP port + 1."""
    return int(attrs["rtcp"][0].split()[0]) if "rtcp" in attrs else rtp_port + 1


@dataclass(frozen=True)
class RtpPacket:
    src_port: int
    dst_port: int
    version: int
    payload_type: int
    seq: int
    ssrc: int
    data: bytes  # the whole UDP payload


def _rtp_packets(capture: Capture) -> dict[int, list[RtpPacket]]:
    """Every packet tshark's RTP heuristic decodes as RTP, by destination port, in capture order."""
    rows = _fields(
        capture,
        "rtp and udp",
        "udp.srcport",
        "udp.dstport",
        "rtp.version",
        "rtp.p_type",
        "rtp.seq",
        "rtp.ssrc",
        "udp.payload",
        options=HEURISTICS,
    )
    found: dict[int, list[RtpPacket]] = {}
    for src, dst, version, pt, seq, ssrc, payload in rows:
        found.setdefault(int(dst), []).append(
            RtpPacket(
                int(src),
                int(dst),
                int(version),
                int(pt),
                int(seq),
                int(ssrc, 16),
                bytes.fromhex(payload.replace(":", "")),
            )
        )
    return found


_STREAM_ROW = re.compile(
    r"^\s*[\d.]+\s+[\d.]+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s+0x([0-9A-Fa-f]{8})\s+(.+?)\s+(\d+)\s+(-?\d+)\s+\("
)


def _stream_rows(capture: Capture, ports: list[int]) -> list[tuple[int, int, int, str, int, int]]:
    """``-z rtp,streams`` rows toward ``ports``: (src port, dst port, SSRC, payload, packets, lost)."""
    out = capture.tshark(*HEURISTICS, "-q", "-z", "rtp,streams")
    rows = []
    for line in out.splitlines():
        match = _STREAM_ROW.match(line)
        if match and int(match.group(4)) in ports:
            rows.append(
                (
                    int(match.group(2)),
                    int(match.group(4)),
                    int(match.group(5), 16),
                    match.group(6),
                    int(match.group(7)),
                    int(match.group(8)),
                )
            )
    return rows


def _tone_frames(leg: Leg, count: int) -> list[bytes]:
    """The µ-law payloads the demo's PBX sends on ``leg`` (the same tone, the same frames)."""
    synthetic = SyntheticLeg(leg)
    return [synthetic.next_packet()[RTP_HEADER:] for _ in range(count)]


def _contiguous(packets: list[RtpPacket]) -> bool:
    return all((b.seq - a.seq) & 0xFFFF == 1 for a, b in itertools.pairwise(packets))


# --- SIP and SDP, read with plain string handling ----------------------------------------------


def _flow(messages: list[CapturedSip]) -> list[str]:
    """Requests by method, final responses as "status CSeq-method"; 1xx and retransmissions dropped."""
    seen: set[bytes] = set()
    flow = []
    for message in messages:
        if message.raw in seen:
            continue
        seen.add(message.raw)
        if message.method is not None:
            flow.append(message.method)
        elif message.status is not None and message.status >= 200:
            cseq = (message.header("CSeq") or "").split()
            flow.append(f"{message.status} {cseq[-1] if cseq else '?'}")
    return flow


EXPECTED_FLOW = ["INVITE", "200 INVITE", "ACK", "BYE", "200 BYE"]


def _media(sdp: bytes) -> list[tuple[int, dict[str, list[str]]]]:
    """(port, attributes by name) of each m-line of an SDP body."""
    sections: list[tuple[int, dict[str, list[str]]]] = []
    for line in sdp.decode().splitlines():
        if line.startswith("m="):
            sections.append((int(line.split()[1]), {}))
        elif line.startswith("a=") and sections:
            name, _, value = line[2:].partition(":")
            sections[-1][1].setdefault(name, []).append(value)
    return sections


def _sdp_of(message: CapturedSip) -> bytes:
    parts = body_parts(message.header("Content-Type") or "", message.body)
    sdp = [body for kind, _, body in parts if kind == SDP_TYPE]
    assert len(sdp) == 1, message.text()
    return sdp[0]


def _check_siprec_offer_and_answer(messages: list[CapturedSip], demo: DemoCapture) -> dict[str, int]:
    """The INVITE is SIPREC, the answer names session.json's ports; returns label -> offered RTP port."""
    invite = next(m for m in messages if m.method == "INVITE")
    answer = next(m for m in messages if m.status == 200 and (m.header("CSeq") or "").endswith("INVITE"))
    assert "siprec" in [v.strip() for v in (invite.header("Require") or "").split(",")]
    assert (invite.header("Content-Type") or "").startswith("multipart/mixed;boundary=")
    assert siprec_problems(invite) == []
    offered = {attrs["label"][0]: port for port, attrs in _media(_sdp_of(invite))}
    answered = {attrs["label"][0]: port for port, attrs in _media(_sdp_of(answer))}
    assert set(offered) == set(demo.ports) == set(demo.legs)
    assert answered == demo.ports
    return offered


# --- the plain run ---------------------------------------------------------------------------


async def test_tshark_sees_the_plain_demo_sip_flow_and_two_lossless_rtp_streams(tmp_path: Path) -> None:
    demo = await _record_demo(tmp_path, secure=False)
    capture = demo.capture
    src = demo.session["sip"]["src_address"]  # "udp:127.0.0.1:PORT": where the SRC's SIP came from
    assert src.startswith("udp:")
    src_host_port = src.split(":", 1)[1]
    srs_host_port = f"127.0.0.1:{demo.srs_port}"

    # SIP: decoding forced on the SRS's port; only this dialog's messages (other tests share lo).
    capture.ports = (demo.srs_port,)
    messages = [
        m for m in capture.sip_messages() if {m.source, m.destination} == {src_host_port, srs_host_port}
    ]
    assert all(m.transport == "udp" for m in messages)
    assert _flow(messages) == EXPECTED_FLOW, [m.start_line for m in messages]
    assert all(m.destination == srs_host_port for m in messages if m.method)  # the SRC asks
    offered = _check_siprec_offer_and_answer(messages, demo)
    invite = next(m for m in messages if m.method == "INVITE")
    rtcp_from = {attrs["label"][0]: _rtcp_source(attrs, port) for port, attrs in _media(_sdp_of(invite))}
    # The positive control of the secure run's "the Call-ID is in no frame".
    assert _frames_containing(capture, demo.session["sip"]["call_id"].encode()) >= len(EXPECTED_FLOW)

    # RTP: exactly two streams toward the SRS's media ports, from the offered ports, lossless.
    ports = sorted(demo.ports.values())
    rows = _stream_rows(capture, ports)
    assert sorted(row[1] for row in rows) == ports, rows
    for src_port, dst_port, _ssrc, payload, count, lost in rows:
        label = demo.label_of_port(dst_port)
        assert (src_port, payload, count, lost) == (offered[label], "g711U", demo.sent[label], 0), rows
    ssrcs = {row[2] for row in rows}
    assert len(ssrcs) == 2

    packets = _rtp_packets(capture)
    ssrc_of_port = {}
    for port in ports:
        stream = packets.get(port, [])
        label = demo.label_of_port(port)
        assert len(stream) == demo.sent[label] == 50
        assert {(p.version, p.payload_type, p.src_port) for p in stream} == {(2, 0, offered[label])}
        assert len({p.ssrc for p in stream}) == 1 and _contiguous(stream)
        ssrc_of_port[port] = stream[0].ssrc
        # The SRC forwards the payload untouched: the leg's tone, frame by frame.
        assert [p.data[RTP_HEADER:] for p in stream] == _tone_frames(demo.legs[label], len(stream))
    assert set(ssrc_of_port.values()) == ssrcs

    # RTCP: sender reports from those SSRCs, from port+1 to the SRS's port+1.
    reports = _fields(
        capture,
        f"rtcp.pt == 200 and udp.dstport in {_port_set(p + 1 for p in ports)}",
        "udp.srcport",
        "udp.dstport",
        "rtcp.senderssrc",
        "rtcp.timestamp.ntp.msw",
        "rtcp.sender.packetcount",
        "rtcp.sender.octetcount",
        options=HEURISTICS,
    )
    reported = set()
    for sr_src, sr_dst, ssrc, ntp_msw, sr_count, octets in reports:
        label = demo.label_of_port(int(sr_dst) - 1)
        assert int(sr_src) == rtcp_from[label]
        assert int(ssrc, 16) == ssrc_of_port[int(sr_dst) - 1]
        assert int(ntp_msw) > NTP_2023
        assert 0 < int(sr_count) <= demo.sent[label] and int(octets) == FRAME_BYTES * int(sr_count)
        reported.add(int(ssrc, 16))
    assert reported == ssrcs, reports


# --- the secure run --------------------------------------------------------------------------


def _decrypted_sip(capture: Capture, port: int, stream: str, keylog: Path) -> list[CapturedSip]:
    """The SIP messages tshark decrypts on TCP ``stream`` (to ``port``) with the TLS key log."""
    out = capture.tshark(
        "-o",
        f"tls.keylog_file:{keylog}",
        "-d",
        f"tcp.port=={port},tls",
        "-q",
        "-z",
        f"follow,tls,raw,{stream}",
    )
    messages = []
    for line in out.splitlines():
        chunk = line.strip()
        if not chunk or not re.fullmatch(r"[0-9a-fA-F]+", chunk):
            continue
        for raw in split_sip_stream(bytes.fromhex(chunk)):
            messages.append(CapturedSip(0, "tls", "", "", raw))
    return messages


class TagMismatchError(Exception):
    """An SRTP or SRTCP authentication tag is not the HMAC of the packet."""


class SrtpContext:
    """RFC 3711 AES-CM / HMAC-SHA1-80, receive side, for one SSRC: the test's own implementation."""

    def __init__(self, inline: str) -> None:
        material = base64.b64decode(inline.split("|", maxsplit=1)[0])
        assert len(material) == 30, "AES_CM_128: 16-byte key + 14-byte salt"
        key, salt = material[:16], material[16:]
        self.rtp = tuple(self._derive(key, salt, label, n) for label, n in ((0, 16), (1, 20), (2, 14)))
        self.rtcp = tuple(self._derive(key, salt, label, n) for label, n in ((3, 16), (4, 20), (5, 14)))

    @staticmethod
    def _keystream(key: bytes, iv: int, length: int) -> bytes:
        encryptor = Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
        return encryptor.update(bytes(length)) + encryptor.finalize()

    @classmethod
    def _derive(cls, key: bytes, salt: bytes, label: int, length: int) -> bytes:
        # §4.3.1 with key_derivation_rate 0: x = (label || 0^48) XOR master salt, IV = x * 2^16.
        x = int.from_bytes(salt, "big") ^ (label << 48)
        return cls._keystream(key, x << 16, length)

    @classmethod
    def _crypt(cls, keys: tuple[bytes, ...], ssrc: int, index: int, data: bytes) -> bytes:
        iv = (int.from_bytes(keys[2], "big") << 16) ^ (ssrc << 64) ^ (index << 16)
        stream = cls._keystream(keys[0], iv, len(data))
        return bytes(a ^ b for a, b in zip(data, stream, strict=True))

    def rtp_payload(self, packet: bytes, roc: int) -> bytes:
        """Check the tag of an SRTP packet, return its decrypted payload."""
        body, tag = packet[:-TAG_80], packet[-TAG_80:]
        expected = hmac.new(self.rtp[1], body + roc.to_bytes(4, "big"), hashlib.sha1).digest()[:TAG_80]
        if not hmac.compare_digest(tag, expected):
            raise TagMismatchError(f"SRTP tag {tag.hex()} is not {expected.hex()}")
        seq, ssrc = struct.unpack_from("!H", packet, 2)[0], struct.unpack_from("!I", packet, 8)[0]
        return self._crypt(self.rtp, ssrc, (roc << 16) | seq, body[RTP_HEADER:])

    def rtcp_compound(self, packet: bytes) -> tuple[int, bytes]:
        """Check the tag of an SRTCP packet; return (E bit and index word, decrypted compound)."""
        body, tag = packet[:-TAG_80], packet[-TAG_80:]
        expected = hmac.new(self.rtcp[1], body, hashlib.sha1).digest()[:TAG_80]
        if not hmac.compare_digest(tag, expected):
            raise TagMismatchError(f"SRTCP tag {tag.hex()} is not {expected.hex()}")
        word = int.from_bytes(body[-SRTCP_INDEX:], "big")
        ssrc = struct.unpack_from("!I", packet, 4)[0]
        clear = body[:8] + self._crypt(self.rtcp, ssrc, word & 0x7FFFFFFF, body[8:-SRTCP_INDEX])
        return word, clear


def _rtcp_lengths(compound: bytes) -> list[tuple[int, int]]:
    """(packet type, byte length) of each RTCP packet of a compound, walking the length fields."""
    found = []
    offset = 0
    while offset + 4 <= len(compound):
        assert compound[offset] >> 6 == 2, compound.hex()
        length = (struct.unpack_from("!H", compound, offset + 2)[0] + 1) * 4
        found.append((compound[offset + 1], length))
        offset += length
    assert offset == len(compound), compound.hex()
    return found


async def test_tshark_sees_tls_and_srtp_in_the_secure_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keylog = tmp_path / "tls-keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))  # read by ssl.create_default_context (the SRC)
    demo = await _record_demo(tmp_path, secure=True)
    capture = demo.capture
    port = demo.srs_port
    assert {s["srtp_suite"] for s in demo.session["streams"]} == {SUITE}
    assert demo.session["sip"]["src_address"].startswith("tls:")

    # TLS on the SRS's SIP port: a handshake both ways, then only encrypted application data.
    on_port = f"tcp.port == {port}"
    records = _fields(
        capture,
        f"{on_port} and (tls.handshake or tls.app_data)",
        "tcp.stream",
        "tcp.dstport",
        "tls.handshake.type",
        "tls.app_data",
        options=("-d", f"tcp.port=={port},tls"),
    )
    assert len({row[0] for row in records}) == 1, records  # one TLS connection
    handshakes = [(int(dst) == port, kinds.split(",")[0]) for _, dst, kinds, _ in records if kinds]
    assert handshakes[0] == (True, "1")  # ClientHello to the SRS
    assert (False, "2") in handshakes  # ServerHello back
    app_data = {int(dst) == port for _, dst, _, data in records if data}
    assert app_data == {True, False}, records  # application data both ways
    # No cleartext SIP: decoded as SIP the port yields no request or status line, its payload has
    # no SIP word, and the Call-ID is in no frame of the capture (the plain run finds it).
    cleartext = " or ".join(
        ["sip.Request-Line", "sip.Status-Line"]
        + [f'tcp.payload contains "{word}"' for word in ("INVITE", "SIP/2.0", "siprec")]
    )
    forced_sip = ("-d", f"tcp.port=={port},sip")
    assert _fields(capture, f"{on_port} and ({cleartext})", "frame.number", options=forced_sip) == []
    assert _frames_containing(capture, demo.session["sip"]["call_id"].encode()) == 0

    # With the client's TLS secrets, tshark decrypts the same SIPREC flow as in the plain run.
    messages = _decrypted_sip(capture, port, records[0][0], keylog)
    assert _flow(messages) == EXPECTED_FLOW, [m.start_line for m in messages]
    invite = next(m for m in messages if m.method == "INVITE")
    assert (invite.header("Call-ID") or "") == demo.session["sip"]["call_id"]
    offered = _check_siprec_offer_and_answer(messages, demo)
    offer = {attrs["label"][0]: (p, attrs) for p, attrs in _media(_sdp_of(invite))}
    answer = next(m for m in messages if m.status == 200 and "INVITE" in (m.header("CSeq") or ""))
    chosen = {attrs["label"][0]: attrs["crypto"] for _, attrs in _media(_sdp_of(answer))}

    # SRTP on the SRS's media ports: RTP v2 headers, 160 bytes of ciphertext, a 10-byte tag.
    ports = sorted(demo.ports.values())
    rows = _stream_rows(capture, ports)
    assert sorted(row[1] for row in rows) == ports, rows
    for _src, dst_port, _ssrc, _payload, count, lost in rows:
        assert (count, lost) == (demo.sent[demo.label_of_port(dst_port)], 0), rows
    packets = _rtp_packets(capture)
    srtcp_rows = _fields(
        capture,
        f"udp.dstport in {_port_set(p + 1 for p in ports)}",
        "udp.srcport",
        "udp.dstport",
        "udp.payload",
    )
    plain_frames = {f for leg in Leg for f in _tone_frames(leg, 50)}
    assert len(plain_frames) == 6  # 440 Hz: 5 distinct 20 ms frames a period; 1250 Hz: 1
    ssrc_of_port = {}
    for media_port in ports:
        stream = packets.get(media_port, [])
        label = demo.label_of_port(media_port)
        assert len(stream) == demo.sent[label] == 50
        assert {(p.version, p.payload_type, p.src_port) for p in stream} == {(2, 0, offered[label])}
        assert {len(p.data) for p in stream} == {RTP_HEADER + FRAME_BYTES + TAG_80}
        assert len({p.ssrc for p in stream}) == 1 and _contiguous(stream)
        ssrc_of_port[media_port] = stream[0].ssrc
        ciphertexts = [p.data[RTP_HEADER:-TAG_80] for p in stream]
        # The tone's µ-law frames are nowhere in what goes to the SRS.
        assert not any(frame in p.data for frame in plain_frames for p in stream)
        assert len(set(ciphertexts)) == len(ciphertexts)  # even 50 identical 1250 Hz frames differ

        # The answer chose the offer's first suite; its key authenticates and decrypts the stream.
        (tag_suite,) = chosen[label]
        tag, suite = tag_suite.split()[:2]
        assert suite == SUITE
        inline = next(c for c in offer[label][1]["crypto"] if c.split()[0] == tag).split("inline:")[1]
        srtp = SrtpContext(inline.split()[0])
        roc, previous, decrypted = 0, -1, []
        for packet in stream:
            roc += packet.seq < previous  # the sequence number wrapped: the rollover counter counts
            previous = packet.seq
            decrypted.append(srtp.rtp_payload(packet.data, roc))
        assert decrypted == _tone_frames(demo.legs[label], len(stream))
        with pytest.raises(TagMismatchError):  # the check can fail: one flipped bit
            srtp.rtp_payload(stream[0].data[:-1] + bytes([stream[0].data[-1] ^ 1]), 0)

        # SRTCP from the offered RTCP port to the SRS's port+1: RTCP header, E||index, tag.
        rtcp_port = _rtcp_source(offer[label][1], offered[label])
        srtcp = [row[2:] for row in srtcp_rows if row[:2] == [str(rtcp_port), str(media_port + 1)]]
        assert srtcp, f"no SRTCP from {rtcp_port} to {media_port + 1}"
        indices = []
        for (payload,) in srtcp:
            data = bytes.fromhex(payload.replace(":", ""))
            assert data[0] >> 6 == 2 and data[1] == 200  # a sender report first, header in clear
            assert struct.unpack_from("!I", data, 4)[0] == ssrc_of_port[media_port]
            word, compound = srtp.rtcp_compound(data)
            assert word >> 31 == 1  # E: the compound is encrypted
            indices.append(word & 0x7FFFFFFF)
            lengths = _rtcp_lengths(compound)
            assert len(data) == sum(n for _, n in lengths) + SRTCP_INDEX + TAG_80
            assert compound[8:] != data[8 : len(compound)]  # the report was encrypted
            ntp_msw, _lsw, _rtp_ts, count, octets = struct.unpack_from("!IIIII", compound, 8)
            assert ntp_msw > NTP_2023 and 0 < count <= 50 and octets == FRAME_BYTES * count
        # One index per packet, counting up from the start (libsrtp's first SRTCP index is 1).
        assert indices == sorted(set(indices)) and indices[-1] <= len(indices), indices
    assert len(set(ssrc_of_port.values())) == 2

    # The positive control of the search for plain frames: the PBX's copies to the taps are plain.
    elsewhere = {p.data[RTP_HEADER:] for dst, ps in packets.items() if dst not in ports for p in ps}
    assert plain_frames <= elsewhere
