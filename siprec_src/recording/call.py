"""The recorded call as the SRC domain sees it: parties, tracks, and the stream budget.

Words from the seeds: a recording's ``track`` is ``inbound_track`` (the audio the platform
receives from the call's far end: the caller's voice on an inbound call), ``outbound_track``
(what the platform sends toward it) or ``both_tracks`` (two streams, labels 1 and 2, one per
direction). A call carries at most four forked streams in all (``both_tracks`` counts two;
WebSocket streams count too), as Twilio and Telnyx document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from siprec_src.errors import LocalProtocolError
from siprec_src.media.spec import Leg, SrtpKeys
from siprec_src.media.srtp import SrtpError, parse_key_params

MAX_STREAMS_PER_CALL = 4
_NAME = re.compile(r"[A-Za-z0-9_.:@+-]{1,64}")


class Track(StrEnum):
    INBOUND = "inbound_track"
    OUTBOUND = "outbound_track"
    BOTH = "both_tracks"

    @property
    def legs(self) -> tuple[Leg, ...]:
        if self is Track.INBOUND:
            return (Leg.INBOUND,)
        if self is Track.OUTBOUND:
            return (Leg.OUTBOUND,)
        return (Leg.INBOUND, Leg.OUTBOUND)

    @classmethod
    def parse(cls, text: str) -> Track:
        try:
            return cls(text)
        except ValueError:
            allowed = ", ".join(t.value for t in cls)
            raise LocalProtocolError(
                f"track {text!r} is not one of {allowed}", field="track", code="invalid_track"
            ) from None


@dataclass(frozen=True, slots=True)
class Party:
    """One participant of the call: its address of record and display name (RFC 7865 §6.5)."""

    aor: str
    name: str | None = None

    def __post_init__(self) -> None:
        if not self.aor or any(c in self.aor for c in "\r\n\x00<> "):
            raise LocalProtocolError(
                f"participant AOR {self.aor!r} is not a URI", field="aor", code="invalid_party"
            )


def stream_roles(track: Track) -> list[tuple[str, Leg, int, list[int]]]:
    """(label, leg, index of the party whose voice it is, indexes of who hears it) per stream.

    Party 0 is the far end (caller on an inbound call, whose audio arrives on the inbound leg),
    party 1 the platform side. Labels are 1 and 2 for both tracks, 1 for a single track.
    """
    roles = {Leg.INBOUND: (0, [1]), Leg.OUTBOUND: (1, [0])}
    return [(str(i), leg, *roles[leg]) for i, leg in enumerate(track.legs, start=1)]


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise LocalProtocolError(
            f"name {name!r} must be 1-64 characters of letters, digits and _ . : @ + -",
            field="name",
            code="invalid_name",
        )
    return name


def tap_srtp_keys(suite: str, key_params: str, *, field: str) -> SrtpKeys:
    """SDES keys of a tap leg that arrives as SRTP (the PBX's ``a=crypto``), checked now.

    A key that libsrtp would refuse later is refused here, naming ``field``, so the API
    answers 400 instead of the leg failing silently when its first packet arrives.
    """
    try:
        parse_key_params(suite, key_params)
    except SrtpError as exc:
        raise LocalProtocolError(str(exc), field=field, code="invalid_srtp") from None
    return SrtpKeys(suite, key_params.strip())
