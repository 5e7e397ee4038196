"""What the data plane tells the control process: counters and a closed set of events.

Events are small frozen dataclasses with past-tense names; a worker process sends them over
its socketpair and the in-process engine produces the same ones, so the recording layer
cannot tell the two apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from siprec_src.media.spec import Address, Leg


@dataclass(frozen=True, slots=True)
class LegStats:
    packets: int = 0  # RTP packets accepted from the leg's source
    octets: int = 0
    rejected_source: int = 0  # from another address than the expected/latched one
    malformed: int = 0  # not RTP version 2, truncated
    srtp_failures: int = 0  # authentication or replay failure on an SRTP leg
    rtcp_packets: int = 0


@dataclass(frozen=True, slots=True)
class ReceptionReport:
    """How the SRS says it receives a fork (the report block of its RR/SR about our SSRC)."""

    fraction_lost: float  # 0.0-1.0 over the last report interval
    cumulative_lost: int
    highest_sequence: int
    jitter: int  # in RTP timestamp units (RFC 3550 §6.4.1)
    received_at: float  # monotonic seconds


@dataclass(frozen=True, slots=True)
class ForkStats:
    packets_sent: int = 0
    octets_sent: int = 0  # payload octets, as counted in our SR (RFC 3550 §6.4.1)
    dropped_payload_type: int = 0  # payload type the SRS did not accept
    dropped_paused: int = 0
    send_errors: int = 0  # sendto failed (ICMP port unreachable, no buffer space)
    srtp_failures: int = 0  # protect failed, or an SRTCP packet from the SRS did not authenticate
    rtcp_sent: int = 0
    rtcp_received: int = 0
    last_report: ReceptionReport | None = None
    keepalives_sent: int = 0  # RFC 6263 §4.6 empty packets sent while paused (not in packets_sent)


@dataclass(frozen=True, slots=True)
class FirstPacketReceived:
    call_id: str
    leg: Leg
    source: Address


@dataclass(frozen=True, slots=True)
class SourceLatched:
    """No expected source was given; this one was latched and others will be refused."""

    call_id: str
    leg: Leg
    source: Address


@dataclass(frozen=True, slots=True)
class LegIdle:
    """No RTP on the leg for ``stream_timeout`` seconds (reported once until packets resume)."""

    call_id: str
    leg: Leg
    idle_for: float


@dataclass(frozen=True, slots=True)
class SrtpFailed:
    """A leg's SRTP or an SRS's SRTCP failed to authenticate; reported once per burst."""

    call_id: str
    leg: Leg
    fork_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class ReceptionReported:
    """The SRS sent RTCP about a fork (its view of loss and jitter)."""

    fork_id: str
    report: ReceptionReport


@dataclass(frozen=True, slots=True)
class ForkSendFailed:
    """Sending toward the SRS failed (e.g. ICMP port unreachable: the SRS is gone)."""

    fork_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class WorkerDied:
    """A media worker process exited; every call and fork it carried is lost."""

    worker: int
    reason: str
    call_ids: tuple[str, ...]
    fork_ids: tuple[str, ...]


MediaEvent = (
    FirstPacketReceived
    | SourceLatched
    | LegIdle
    | SrtpFailed
    | ReceptionReported
    | ForkSendFailed
    | WorkerDied
)
