"""Frozen specifications the control process gives the data plane.

The media layer never sees SIP, SDP or metadata (docs/architecture.md): the recording layer
turns a negotiated SIPREC stream into a :class:`ForkSpec` and a call leg into a
:class:`LegSpec`. Both are plain, immutable and picklable, because they cross the Unix
socketpair to a media worker process unchanged.

Vocabulary: a **leg** is one direction of the call's media as it reaches us (``inbound`` =
what the platform receives from the caller side, ``outbound`` = what it sends toward it); a
**fork** is one forked stream toward one SRS m-line, fed by exactly one leg. One leg may feed
several forks (several recordings of the same call, at most 4 streams per call).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from siprec_src.errors import LocalProtocolError


class Leg(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    """SDES keying for one direction of one stream, in RFC 4568 words.

    ``suite`` is the crypto-suite name (``AES_CM_128_HMAC_SHA1_80``, ``AES_CM_128_HMAC_SHA1_32``,
    ``AEAD_AES_128_GCM``, ``AEAD_AES_256_GCM``); ``key_params`` is the key-params text of the
    ``a=crypto`` line (``inline:<base64 key||salt>[|lifetime][|MKI:length]``).
    """

    suite: str
    # Never in a repr: specs travel in log lines (a failed media command, a debug trace).
    key_params: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class LegSpec:
    """One call leg arriving at the engine, by tap port or by ``feed()``.

    ``expected_source``: only packets from this address are accepted on the tap port; when
    None the first source is latched and every other source is refused and counted, so nobody
    can inject audio into a recording. ``srtp``: the leg arrives as SRTP and is unprotected
    with these keys before forking (keys given by the embedding caller or the API).
    """

    call_id: str
    leg: Leg
    bind_host: str = "127.0.0.1"
    expected_source: Address | None = None
    srtp: SrtpKeys | None = None


@dataclass(frozen=True, slots=True)
class ForkSpec:
    """One forked stream toward an SRS, as negotiated by the recording session.

    ``local`` is the egress address returned by ``MediaEngine.reserve_fork_port`` (the RTP
    port we advertised in the SDP offer; RTCP is that port + 1, RFC 3550 §11), so the SRS's RTCP
    comes back to the socket that sends. ``payload_map`` maps each payload type of the leg to
    the one negotiated with the SRS; a payload type absent from it is dropped and counted
    (telephone-event is passed through by listing it). ``ssrc`` is the stream's own stable
    SSRC, whatever the leg's source does. ``srtp`` protects what we send (our offered key).
    """

    fork_id: str
    call_id: str
    leg: Leg
    local: Address
    remote_rtp: Address
    remote_rtcp: Address
    ssrc: int
    payload_map: tuple[tuple[int, int], ...]
    clock_rate: int = 8000
    srtp: SrtpKeys | None = None
    cname: str = "siprec-src"
    rtcp_interval: float = 5.0
    paused: bool = False
    keepalive: bool = False  # RFC 6263 §4.6: send an empty-payload RTP packet while paused
    remote_srtcp: SrtpKeys | None = field(default=None)  # the SRS's key, to read its SRTCP RRs
    # False = the "plain" pipeline: the leg's packets go out byte for byte (the source's SSRC,
    # sequence numbers and timestamps, jumps included), only unlisted payload types are dropped.
    # Needs an identity payload_map and no srtp. True (default) = rewrite (and SRTP if keyed).
    rewrite: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise LocalProtocolError(f"fork {self.fork_id}: SSRC {self.ssrc} is not a 32-bit value")
        for source_pt, srs_pt in self.payload_map:
            if not (0 <= source_pt <= 127 and 0 <= srs_pt <= 127):
                raise LocalProtocolError(
                    f"fork {self.fork_id}: payload map {source_pt}->{srs_pt} is outside 0-127"
                )
        if not self.rewrite and (self.srtp is not None or any(a != b for a, b in self.payload_map)):
            raise LocalProtocolError(
                f"fork {self.fork_id}: rewrite=False forwards packets unchanged, so it cannot map "
                "payload types or protect with SRTP"
            )
        if self.clock_rate <= 0 or self.rtcp_interval <= 0:
            raise LocalProtocolError(f"fork {self.fork_id}: clock rate and RTCP interval must be positive")
