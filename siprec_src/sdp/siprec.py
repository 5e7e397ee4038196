"""SIPREC offer/answer: the SDP an SRC offers and what it learns from the SRS's answer.

RFC 7866 §8 shapes the offer: one ``m=audio`` per recorded stream, ``a=sendonly`` (the SRC only
sends), ``a=label`` so the metadata can point at the stream (RFC 4574). RFC 3264
gives the answer rules and RFC 4568 the SDES ``a=crypto`` exchange when the recording is secure.

The negotiator is three pure functions, after pjmedia's ``sdp_neg`` (STYLE.md #6), but without a
state object: the recording layer already knows whether it has an offer outstanding.

- ``build_offer`` — call when an offer is due: the initial INVITE, or a re-INVITE (a greater
  ``session_version``; a paused stream is offered ``a=inactive``, RFC 7866 §8, and resumed
  with ``a=sendonly``). Returns the offer; nothing is kept.
- ``process_answer`` — call with that offer and the answer from the 200 OK. Returns one
  ``StreamAnswer`` per offered m-line, or raises ``NegotiationError``.
- ``build_answer_for_srs`` — the answer a reference SRS gives to an offer; used by ``srs/`` and by
  the tests, never by the SRC itself.

Decisions:

- ``NegotiationError`` is a ``RemoteProtocolError`` (status hint 488, RFC 3261 §21.4.26): an
  answer that breaks RFC 3264 is the peer's fault. An answer comes in a 2xx, so there is no
  response to send; the recording layer ACKs and then sends BYE with a ``Reason`` carrying
  ``reason``. ``mline`` is the 1-based m-line the error is about (None for the whole answer).
- One stream refused (port 0) is not an error: the result says so and the others continue. An
  answer that refuses every stream is returned as such; deciding that is a failed recording is
  the recording layer's job.
- Accepted directions for our ``sendonly`` offer are ``recvonly`` and ``inactive`` (RFC 3264
  §6.1; inactive means the SRS paused the stream). ``sendrecv``, which an SRS that leaves the
  direction out implies (RFC 3264 §5.1 default), is tolerated as recvonly. ``sendonly`` is refused.
- The codec is the first format of the answer that was offered (RFC 3264 §6.1: the answer lists
  formats in the answerer's preference). A format matches an offered one by rtpmap (name, clock
  rate, channels), or by payload type when the answer gives no rtpmap for it. The payload type
  reported is the one the answer uses: RTP sent to the SRS carries the SRS's number.
- RTCP goes where ``a=rtcp`` says (RFC 3605 §2.1), else to port + 1 (RFC 3550 §11).
- Crypto keys are the caller's: the media layer generates them (it owns ``secrets`` and libsrtp).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from siprec_src.errors import LocalProtocolError, RemoteProtocolError
from siprec_src.sdp.session import (
    Attribute,
    Connection,
    CryptoAttribute,
    Direction,
    MediaDescription,
    Origin,
    RtpMap,
    SdpError,
    SessionDescription,
)

__all__ = [
    "G722",
    "PCMA",
    "PCMU",
    "TELEPHONE_EVENT_EVENTS",
    "CodecSpec",
    "CryptoOffer",
    "CryptoSuite",
    "NegotiationError",
    "NegotiationResult",
    "StreamAnswer",
    "StreamOffer",
    "answer_srs_offer",
    "build_answer_for_srs",
    "build_offer",
    "opus",
    "process_answer",
]

# RFC 4733 §3.2 events 0-15 are the DTMF digits, 16 is flash: what SIP phones and SBCs offer.
TELEPHONE_EVENT_EVENTS = "0-16"
_TELEPHONE_EVENT = "telephone-event"
# Formats that ride along with a codec but are not one (RFC 4733, RFC 3389, RFC 2198).
_AUXILIARY = frozenset({"telephone-event", "cn", "red"})
_PLAIN_PROTO = "RTP/AVP"
_SECURE_PROTO = "RTP/SAVP"
_SECURE_PROTOS = frozenset({"RTP/SAVP", "RTP/SAVPF"})


class NegotiationError(RemoteProtocolError):
    """The SRS's answer (or, for ``build_answer_for_srs``, the SRC's offer) cannot be used.

    ``mline`` is the 1-based m-line concerned, or None when the error is about the whole description.
    """

    def __init__(self, reason: str, *, mline: int | None = None, status_hint: int = 488) -> None:
        super().__init__(reason if mline is None else f"m-line {mline}: {reason}", status_hint)
        self.mline = mline


class CryptoSuite(StrEnum):
    """SDES crypto suites we offer (RFC 4568 §6.2, RFC 7714 §12 for AEAD_AES_128_GCM)."""

    AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
    AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"
    AEAD_AES_128_GCM = "AEAD_AES_128_GCM"

    @property
    def key_salt_length(self) -> int:
        """Bytes of master key || master salt carried in ``inline:`` (RFC 4568 §6.2.1, RFC 7714 §12)."""
        return 28 if self is CryptoSuite.AEAD_AES_128_GCM else 30


def _check_key(suite: CryptoSuite, key: str) -> str | None:
    """Why a base64 key||salt is wrong for a suite, or None when it is right."""
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return f"key {key[:8]!r}... is not base64 (RFC 4568 §6.1)"
    if len(raw) != suite.key_salt_length:
        return f"{suite} needs {suite.key_salt_length} bytes of key||salt, the key has {len(raw)}"
    return None


@dataclass(frozen=True, slots=True)
class CryptoOffer:
    """One SDES key the SRC offers for a stream: a suite and its base64 master key||salt (RFC 4568 §6.1).

    Tags are given by position in the stream's list, from 1 (RFC 4568 §9.1: the tag only names
    the line); with the default order AES_CM_128_HMAC_SHA1_80 is tag 1 and _32 tag 2.
    """

    suite: CryptoSuite
    key: str

    def __post_init__(self) -> None:
        problem = _check_key(self.suite, self.key)
        if problem is not None:
            raise LocalProtocolError(f"crypto offer: {problem}")

    def attribute(self, tag: int) -> CryptoAttribute:
        return CryptoAttribute(tag, str(self.suite), (f"inline:{self.key}",))


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """The codec of a forked stream, passed through by payload type, rtpmap and fmtp.

    ``telephone_event_pt`` adds RFC 4733 telephone-event at the codec's clock rate.
    """

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None
    fmtp: str | None = None
    telephone_event_pt: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise LocalProtocolError(f"payload type {self.payload_type} is not in 0-127 (RFC 3550 §5.1)")
        if not self.encoding or any(c in self.encoding for c in " \t/\r\n"):
            raise LocalProtocolError(f"encoding name {self.encoding!r} is not a single token")
        if self.clock_rate <= 0 or (self.channels is not None and self.channels <= 0):
            raise LocalProtocolError(f"{self.encoding}: clock rate and channels must be positive")
        te = self.telephone_event_pt
        # RFC 3551 §3: dynamic payload types are 96-127; telephone-event has no static one.
        if te is not None and (not 96 <= te <= 127 or te == self.payload_type):
            raise LocalProtocolError(
                f"telephone-event payload type {te} must be a free dynamic type (96-127)"
            )
        if self.fmtp is not None and any(c in self.fmtp for c in "\r\n\x00"):
            raise LocalProtocolError("fmtp parameters must stay on one line")

    @property
    def rtpmap(self) -> RtpMap:
        return RtpMap(self.payload_type, self.encoding, self.clock_rate, self.channels)

    def with_telephone_event(self, payload_type: int = 101) -> CodecSpec:
        return CodecSpec(
            self.payload_type, self.encoding, self.clock_rate, self.channels, self.fmtp, payload_type
        )


# RFC 3551 §6 static assignments. G.722's RTP clock is 8000 although it samples at 16 kHz (§4.5.2).
PCMU = CodecSpec(0, "PCMU", 8000)
PCMA = CodecSpec(8, "PCMA", 8000)
G722 = CodecSpec(9, "G722", 8000)


def opus(
    payload_type: int = 111, *, fmtp: str | None = None, telephone_event_pt: int | None = None
) -> CodecSpec:
    """Opus on a dynamic payload type; RFC 7587 §7 always writes it ``opus/48000/2``."""
    if not 96 <= payload_type <= 127:
        raise LocalProtocolError(f"opus needs a dynamic payload type (96-127), not {payload_type}")
    return CodecSpec(payload_type, "opus", 48000, 2, fmtp, telephone_event_pt)


@dataclass(frozen=True, slots=True)
class StreamOffer:
    """One recorded stream to offer: its label, our RTP port and its codec.

    ``paused`` offers it ``a=inactive`` instead of ``a=sendonly`` (pause without a new session).
    Port 0 offers the m-line as removed (RFC 3264 §8.2): m-lines are never deleted from a re-offer.
    """

    label: str
    port: int
    codec: CodecSpec
    ptime: int = 20
    rtcp_port: int | None = None
    paused: bool = False

    def __post_init__(self) -> None:
        # RFC 4574 §4: the label is a token; the metadata repeats it verbatim (RFC 7865 §6.4).
        if not self.label or not all(
            c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`{|}~") for c in self.label
        ):
            raise LocalProtocolError(f"stream label {self.label!r} is not a token (RFC 4574 §4)")
        if not 0 <= self.port <= 65535:
            raise LocalProtocolError(f"stream {self.label}: port {self.port} is not in 0-65535")
        if self.rtcp_port is not None and not 0 < self.rtcp_port <= 65535:
            raise LocalProtocolError(f"stream {self.label}: RTCP port {self.rtcp_port} is not in 1-65535")
        if self.ptime <= 0:
            raise LocalProtocolError(f"stream {self.label}: ptime must be positive")


def _addrtype(address: str) -> str:
    # RFC 8866 §5.7: IP6 addresses are written without brackets; a hostname is IP4 by convention.
    return "IP6" if ":" in address else "IP4"


def _check_address(address: str) -> None:
    if not address or any(c in address for c in " \t\r\n[]"):
        raise LocalProtocolError(f"address {address!r} must be a bare IP address or host name")


def _session(address: str, username: str, session_id: int, session_version: int) -> tuple[Origin, Connection]:
    _check_address(address)
    if not username or any(c in username for c in " \t\r\n"):
        raise LocalProtocolError(f"o= username {username!r} must be one non-empty word (RFC 8866 §5.2)")
    if session_id < 0 or session_version < 0:
        raise LocalProtocolError("session id and version must not be negative (RFC 8866 §5.2)")
    addrtype = _addrtype(address)
    origin = Origin(username, str(session_id), str(session_version), "IN", addrtype, address)
    return origin, Connection("IN", addrtype, address)


def build_offer(
    streams: Sequence[StreamOffer],
    *,
    address: str,
    session_id: int,
    session_version: int,
    secure: bool,
    crypto: Mapping[str, Sequence[CryptoOffer]] | None = None,
    username: str = "siprec-src",
) -> SessionDescription:
    """The SDP offer for a recording session (RFC 7866 §8.1), one ``m=audio`` per stream, in order.

    ``address`` is where the SRS sends RTCP (our advertised media address). ``secure`` makes the
    streams ``RTP/SAVP`` with one ``a=crypto`` per entry of ``crypto[label]`` (RFC 4568 §5);
    ``session_version`` must grow with every changed re-offer (RFC 3264 §8).
    Raises ``LocalProtocolError`` for no stream, duplicate labels, or crypto that does not fit ``secure``.
    """
    if not streams:
        raise LocalProtocolError("an offer needs at least one stream")
    labels = [stream.label for stream in streams]
    if len(set(labels)) != len(labels):
        raise LocalProtocolError(f"stream labels must be unique within a session (RFC 4574 §4): {labels}")
    if not secure and crypto:
        raise LocalProtocolError("crypto keys given for a plain RTP/AVP offer")
    origin, connection = _session(address, username, session_id, session_version)
    media = []
    for stream in streams:
        offers: Sequence[CryptoOffer] = ()
        if secure:
            offers = (crypto or {}).get(stream.label, ())
            if not offers and stream.port != 0:
                raise LocalProtocolError(f"stream {stream.label}: secure offer without a crypto key")
        media.append(_offer_media(stream, secure, offers))
    return SessionDescription(origin=origin, connection=connection, media=tuple(media))


def _offer_media(stream: StreamOffer, secure: bool, crypto: Sequence[CryptoOffer]) -> MediaDescription:
    codec = stream.codec
    formats = [str(codec.payload_type)]
    attributes: list[Attribute] = [("rtpmap", str(codec.rtpmap))]
    if codec.fmtp is not None:
        attributes.append(("fmtp", f"{codec.payload_type} {codec.fmtp}"))
    if codec.telephone_event_pt is not None:
        te = codec.telephone_event_pt
        formats.append(str(te))
        attributes.append(("rtpmap", f"{te} {_TELEPHONE_EVENT}/{codec.clock_rate}"))
        attributes.append(("fmtp", f"{te} {TELEPHONE_EVENT_EVENTS}"))
    attributes.append(("ptime", str(stream.ptime)))
    if stream.rtcp_port is not None:
        attributes.append(("rtcp", str(stream.rtcp_port)))
    attributes.extend(("crypto", str(offer.attribute(tag))) for tag, offer in enumerate(crypto, 1))
    direction = Direction.INACTIVE if stream.paused else Direction.SENDONLY  # RFC 7866 §8.1
    attributes.append((str(direction), None))
    attributes.append(("label", stream.label))  # RFC 7866 §8.1
    return MediaDescription(
        media="audio",
        port=stream.port,
        proto=_SECURE_PROTO if secure else _PLAIN_PROTO,
        formats=tuple(formats),
        attributes=tuple(attributes),
    )


@dataclass(frozen=True, slots=True)
class StreamAnswer:
    """What the answer says about one offered m-line.

    ``accepted`` False means the stream was refused (port 0) or removed by the offer, and
    ``reason`` says which; the address fields are then None. ``direction`` is the answer's
    (``inactive``: the SRS paused it). ``payload_type`` and ``telephone_event_pt`` are the
    answer's numbers; ``crypto`` is the SRS's chosen line, whose key protects its SRTCP.
    """

    index: int
    label: str | None
    accepted: bool
    reason: str | None = None
    remote_address: str | None = None
    remote_port: int = 0
    remote_rtcp: tuple[str, int] | None = None
    direction: Direction = Direction.INACTIVE
    payload_type: int | None = None
    codec: RtpMap | None = None
    telephone_event_pt: int | None = None
    crypto: CryptoAttribute | None = None

    @property
    def paused(self) -> bool:
        return self.accepted and self.direction is Direction.INACTIVE


@dataclass(frozen=True, slots=True)
class NegotiationResult:
    """The outcome of an offer/answer exchange, one ``StreamAnswer`` per offered m-line, in order."""

    streams: tuple[StreamAnswer, ...]
    remote_origin: Origin

    @property
    def accepted(self) -> tuple[StreamAnswer, ...]:
        return tuple(s for s in self.streams if s.accepted)

    @property
    def refused(self) -> tuple[StreamAnswer, ...]:
        return tuple(s for s in self.streams if not s.accepted)

    def stream(self, label: str) -> StreamAnswer:
        for answer in self.streams:
            if answer.label == label:
                return answer
        raise KeyError(label)


# RFC 3264 §6.1: the answer's direction for each offered one; sendrecv is tolerated (module docstring).
_ALLOWED_ANSWER: dict[Direction, frozenset[Direction]] = {
    Direction.SENDONLY: frozenset({Direction.RECVONLY, Direction.INACTIVE, Direction.SENDRECV}),
    Direction.RECVONLY: frozenset({Direction.SENDONLY, Direction.INACTIVE, Direction.SENDRECV}),
    Direction.SENDRECV: frozenset(Direction),
    Direction.INACTIVE: frozenset(Direction),
}


def process_answer(offer: SessionDescription, answer: SessionDescription) -> NegotiationResult:
    """Check an answer against the offer it answers (RFC 3264 §6, RFC 7866 §8, RFC 4568 §5.1.3).

    Raises ``NegotiationError`` for an answer that does not fit the offer; see the module docstring.
    """
    if len(answer.media) != len(offer.media):
        # RFC 3264 §6: "The answer MUST contain exactly the same number of m= lines as the offer."
        raise NegotiationError(
            f"the answer has {len(answer.media)} m-lines, the offer had {len(offer.media)} (RFC 3264 §6)"
        )
    results = []
    for index, (offered, answered) in enumerate(zip(offer.media, answer.media, strict=True)):
        try:
            results.append(_answer_stream(index, offer, offered, answer, answered))
        except SdpError as exc:
            # A malformed attribute (rtpmap, crypto, rtcp) is read lazily; name the m-line.
            raise NegotiationError(exc.reason, mline=index + 1) from exc
    return NegotiationResult(tuple(results), answer.origin)


def _answer_stream(
    index: int,
    offer: SessionDescription,
    offered: MediaDescription,
    answer: SessionDescription,
    answered: MediaDescription,
) -> StreamAnswer:
    mline = index + 1
    label = offered.label
    if answered.media.lower() != offered.media.lower():
        raise NegotiationError(
            f"answer media {answered.media!r} does not match the offered {offered.media!r} (RFC 3264 §6)",
            mline=mline,
        )
    if offered.port == 0:
        # RFC 3264 §8.2: a stream the offer removed stays removed, whatever the answer says.
        return StreamAnswer(index, label, accepted=False, reason="removed by the offer (port 0)")
    if answered.port == 0:
        return StreamAnswer(
            index, label, accepted=False, reason="refused by the answerer (port 0, RFC 3264 §6)"
        )
    if answered.proto.upper() != offered.proto.upper():
        raise NegotiationError(
            f"answer proto {answered.proto} does not match the offered {offered.proto} (RFC 3264 §6)",
            mline=mline,
        )
    answered_label = answered.label
    if label is not None and answered_label is not None and answered_label != label:
        raise NegotiationError(
            f"answer label {answered_label!r} does not match the offered {label!r}", mline=mline
        )
    offered_direction = offer.direction_of(offered)
    direction = answer.direction_of(answered)
    if direction not in _ALLOWED_ANSWER[offered_direction]:
        raise NegotiationError(
            f"answer direction {direction} cannot answer {offered_direction} (RFC 3264 §6.1)", mline=mline
        )
    if offered_direction is Direction.INACTIVE:
        # RFC 3264 §6.1: an inactive offer gets an inactive answer; whatever was written, nothing flows.
        direction = Direction.INACTIVE
    connection = answer.connection_for(answered)
    if connection is None:
        raise NegotiationError("no c= line for the stream nor at session level (RFC 8866 §5.7)", mline=mline)
    payload_type, codec = _chosen_codec(offered, answered, mline)
    telephone_event_pt = _telephone_event(offered, answered, codec)
    crypto = _chosen_crypto(offered, answered, mline)
    rtcp = answered.rtcp
    if rtcp is None:
        remote_rtcp = (connection.host, answered.port + 1)  # RFC 3550 §11
    else:
        remote_rtcp = (rtcp.address or connection.host, rtcp.port)  # RFC 3605 §2.1
    return StreamAnswer(
        index,
        label,
        accepted=True,
        remote_address=connection.host,
        remote_port=answered.port,
        remote_rtcp=remote_rtcp,
        direction=direction,
        payload_type=payload_type,
        codec=codec,
        telephone_event_pt=telephone_event_pt,
        crypto=crypto,
    )


def _meaning(media: MediaDescription, fallback: MediaDescription, fmt: str) -> RtpMap | None:
    """What a format means in ``media``; a dynamic type with no rtpmap borrows ``fallback``'s meaning."""
    found = media.codec(fmt)
    if found is None and fmt in fallback.formats:
        found = fallback.codec(fmt)
    return found


def _chosen_codec(offered: MediaDescription, answered: MediaDescription, mline: int) -> tuple[int, RtpMap]:
    offered_codecs = [c for fmt in offered.formats if (c := offered.codec(fmt)) is not None]
    for fmt in answered.formats:
        meaning = _meaning(answered, offered, fmt)
        if meaning is None or meaning.encoding.lower() in _AUXILIARY:
            continue
        if any(meaning.same_codec(candidate) for candidate in offered_codecs):
            return meaning.payload_type, meaning
    raise NegotiationError(
        f"no offered codec in the answer's formats {' '.join(answered.formats)} (RFC 3264 §6.1)", mline=mline
    )


def _telephone_event(offered: MediaDescription, answered: MediaDescription, codec: RtpMap) -> int | None:
    """The answer's telephone-event type at the codec's clock rate, if both sides have one (RFC 4733)."""
    if not any(
        (c := offered.codec(fmt)) is not None and c.encoding.lower() == _TELEPHONE_EVENT
        for fmt in offered.formats
    ):
        return None
    for fmt in answered.formats:
        meaning = _meaning(answered, offered, fmt)
        if (
            meaning is not None
            and meaning.encoding.lower() == _TELEPHONE_EVENT
            and meaning.clock_rate == codec.clock_rate
        ):
            return meaning.payload_type
    return None


def _chosen_crypto(
    offered: MediaDescription, answered: MediaDescription, mline: int
) -> CryptoAttribute | None:
    offered_crypto = offered.crypto
    if offered.proto.upper() not in _SECURE_PROTOS or not offered_crypto:
        return None  # a=crypto is defined for the secure RTP profiles only (RFC 4568 §6)
    answered_crypto = answered.crypto
    if len(answered_crypto) != 1:
        # RFC 4568 §5.1.2: the answer accepts exactly one of the offered crypto attributes.
        raise NegotiationError(
            f"the answer has {len(answered_crypto)} a=crypto lines, exactly one is required",
            mline=mline,
        )
    chosen = answered_crypto[0]
    by_tag = {c.tag: c for c in offered_crypto}
    match = by_tag.get(chosen.tag)
    if match is None:
        raise NegotiationError(
            f"answer crypto tag {chosen.tag} was not offered (offered {sorted(by_tag)}, RFC 4568 §5.1.3)",
            mline=mline,
        )
    if match.suite.upper() != chosen.suite.upper():
        raise NegotiationError(
            f"answer crypto tag {chosen.tag} has suite {chosen.suite}, the offer gave it {match.suite}"
            " (RFC 4568 §5.1.3)",
            mline=mline,
        )
    key = chosen.inline_key
    if key is None:
        raise NegotiationError(
            f"answer crypto tag {chosen.tag} has no inline key (RFC 4568 §6.1)", mline=mline
        )
    try:
        suite = CryptoSuite(chosen.suite.upper())
    except ValueError:
        return chosen  # a suite we did not build (a foreign offer): its key length is not ours to check
    problem = _check_key(suite, key)
    if problem is not None:
        raise NegotiationError(f"answer crypto tag {chosen.tag}: {problem}", mline=mline)
    return chosen


# RFC 3264 §6.1: what an SRS (which only receives) answers to each offered direction.
_SRS_DIRECTION = {
    Direction.SENDONLY: Direction.RECVONLY,
    Direction.SENDRECV: Direction.RECVONLY,
    Direction.RECVONLY: Direction.INACTIVE,
    Direction.INACTIVE: Direction.INACTIVE,
}


def build_answer_for_srs(
    offer: SessionDescription,
    *,
    address: str,
    ports: Sequence[int],
    accept_codecs: Sequence[str] = ("PCMU", "PCMA", "G722", "opus"),
    crypto_keys: Sequence[Mapping[CryptoSuite, str]] | None = None,
    session_id: int = 0,
    session_version: int = 0,
    username: str = "siprec-srs",
) -> SessionDescription:
    """The answer a reference SRS gives to a SIPREC offer (RFC 7866 §8.1, RFC 3264 §6).

    ``ports[i]`` is the SRS's RTP port for m-line ``i``; ``crypto_keys[i]`` maps the suites the SRS
    accepts for that m-line to its own base64 key||salt. Each stream gets a ``recvonly`` m-line
    (``inactive`` if offered so) with its label, the first offered codec whose name is in
    ``accept_codecs``, telephone-event when offered, and the first offered crypto line whose
    suite has a key, echoing its tag with the SRS's key (RFC 4568 §5.1.2). A stream with no
    acceptable codec, proto or crypto is refused with port 0 (RFC 3264 §6).

    Raises ``LocalProtocolError`` when ``ports``/``crypto_keys`` do not cover every m-line, and
    ``NegotiationError`` (488) when no stream at all is acceptable.
    """
    if len(ports) != len(offer.media):
        raise LocalProtocolError(f"{len(ports)} ports for an offer of {len(offer.media)} m-lines")
    if crypto_keys is not None and len(crypto_keys) != len(offer.media):
        raise LocalProtocolError(
            f"{len(crypto_keys)} crypto key sets for an offer of {len(offer.media)} m-lines"
        )
    origin, connection = _session(address, username, session_id, session_version)
    accept = [name.lower() for name in accept_codecs]
    media = []
    for index, (offered, port) in enumerate(zip(offer.media, ports, strict=True)):
        keys = crypto_keys[index] if crypto_keys is not None else {}
        try:
            media.append(_srs_media(offer, offered, port, accept, keys))
        except SdpError as exc:
            raise NegotiationError(exc.reason, mline=index + 1) from exc
    if all(m.port == 0 for m in media) and any(m.port != 0 for m in offer.media):
        raise NegotiationError("no offered stream is acceptable (RFC 3264 §6)")
    return SessionDescription(origin=origin, connection=connection, media=tuple(media))


def _refused(offered: MediaDescription) -> MediaDescription:
    # RFC 3264 §6: a refused stream keeps the offered formats, with port 0.
    return MediaDescription(offered.media, 0, offered.proto, offered.formats)


def _srs_media(
    offer: SessionDescription,
    offered: MediaDescription,
    port: int,
    accept: Sequence[str],
    keys: Mapping[CryptoSuite, str],
) -> MediaDescription:
    if offered.port == 0 or port == 0 or offered.media.lower() != "audio":
        return _refused(offered)
    proto = offered.proto.upper()
    if proto not in (_PLAIN_PROTO, *_SECURE_PROTOS):
        return _refused(offered)
    chosen: RtpMap | None = None
    for fmt in offered.formats:
        codec = offered.codec(fmt)
        if codec is not None and codec.encoding.lower() in accept:
            chosen = codec
            break
    if chosen is None:
        return _refused(offered)
    formats = [str(chosen.payload_type)]
    attributes: list[Attribute] = [("rtpmap", str(chosen))]
    fmtp = offered.fmtp(chosen.payload_type)
    if fmtp is not None:
        attributes.append(("fmtp", f"{chosen.payload_type} {fmtp}"))
    for fmt in offered.formats:
        codec = offered.codec(fmt)
        if (
            codec is not None
            and codec.encoding.lower() == _TELEPHONE_EVENT
            and codec.clock_rate == chosen.clock_rate
        ):
            formats.append(fmt)
            attributes.append(("rtpmap", str(codec)))
            events = offered.fmtp(fmt)
            if events is not None:
                attributes.append(("fmtp", f"{fmt} {events}"))
            break
    if proto in _SECURE_PROTOS:
        picked = _srs_crypto(offered, keys)
        if picked is None:
            return _refused(offered)
        attributes.append(("crypto", str(picked)))
    attributes.append((str(_SRS_DIRECTION[offer.direction_of(offered)]), None))
    if offered.label is not None:
        attributes.append(("label", offered.label))
    return MediaDescription(offered.media, port, offered.proto, tuple(formats), attributes=tuple(attributes))


def _srs_crypto(offered: MediaDescription, keys: Mapping[CryptoSuite, str]) -> CryptoAttribute | None:
    for line in offered.crypto:
        try:
            suite = CryptoSuite(line.suite.upper())
        except ValueError:
            continue
        key = keys.get(suite)
        if key is not None:
            return CryptoOffer(suite, key).attribute(line.tag)
    return None


# RFC 3264 §6.1: what the SRC (which only sends) answers to each direction an SRS offers it.
_SRC_DIRECTION = {
    Direction.RECVONLY: Direction.SENDONLY,
    Direction.SENDRECV: Direction.SENDONLY,
    Direction.SENDONLY: Direction.INACTIVE,
    Direction.INACTIVE: Direction.INACTIVE,
}


def answer_srs_offer(
    srs_offer: SessionDescription,
    streams: Sequence[StreamOffer],
    *,
    address: str,
    session_id: int,
    session_version: int,
    secure: bool,
    crypto: Mapping[str, Sequence[CryptoOffer]] | None = None,
    username: str = "siprec-src",
) -> SessionDescription:
    """The SRC's answer when the SRS makes the offer (its re-INVITE or UPDATE, RFC 7866 §8.1.2).

    Each offered m-line is matched to one of our ``streams`` by ``a=label``, else by position;
    it is answered with our port, our codec under the SRS's payload type number (RFC 3264
    §6.1), ``sendonly`` (``inactive`` when the SRS offers ``inactive``/``sendonly`` or the stream
    is paused), and, when secure, our key for the first offered crypto suite we have a key for,
    under the SRS's tag (RFC 4568 §5.1.2). What the SRS offers and we cannot take (no stream,
    no codec, port 0) is answered with port 0. Read the SRS's side of the result with
    ``process_answer(answer, srs_offer)`` (the roles are symmetric for what it checks).

    Raises ``NegotiationError`` (488) when the SRS offers plain RTP to a secure session or the
    reverse (RFC 4568 §7.5: no downgrade), or when no stream at all is acceptable.
    """
    origin, connection = _session(address, username, session_id, session_version)
    by_label = {s.label: s for s in streams}
    media: list[MediaDescription] = []
    for index, offered in enumerate(srs_offer.media):
        mline = index + 1
        stream = by_label.get(offered.label or "") or (streams[index] if index < len(streams) else None)
        if stream is None or offered.port == 0 or stream.port == 0 or offered.media.lower() != "audio":
            media.append(_refused(offered))
            continue
        offered_secure = offered.proto.upper() in _SECURE_PROTOS
        if offered_secure != secure:
            want = _SECURE_PROTO if secure else _PLAIN_PROTO
            raise NegotiationError(
                f"the SRS offers {offered.proto} to a session that is {want} (RFC 4568 §7.5)", mline=mline
            )
        try:
            ours = stream.codec.rtpmap
            payload_type = next(
                (
                    c.payload_type
                    for fmt in offered.formats
                    if (c := offered.codec(fmt)) and c.same_codec(ours)
                ),
                None,
            )
        except SdpError as exc:
            raise NegotiationError(exc.reason, mline=mline) from exc
        if payload_type is None:
            media.append(_refused(offered))
            continue
        formats = [str(payload_type)]
        attributes: list[Attribute] = [
            ("rtpmap", str(RtpMap(payload_type, ours.encoding, ours.clock_rate, ours.channels)))
        ]
        if stream.codec.fmtp is not None:
            attributes.append(("fmtp", f"{payload_type} {stream.codec.fmtp}"))
        if stream.codec.telephone_event_pt is not None:
            te = next(
                (
                    c.payload_type
                    for fmt in offered.formats
                    if (c := offered.codec(fmt))
                    and c.encoding.lower() == _TELEPHONE_EVENT
                    and c.clock_rate == ours.clock_rate
                ),
                None,
            )
            if te is not None:
                formats.append(str(te))
                attributes.append(("rtpmap", f"{te} {_TELEPHONE_EVENT}/{ours.clock_rate}"))
        attributes.append(("ptime", str(stream.ptime)))
        if stream.rtcp_port is not None:
            attributes.append(("rtcp", str(stream.rtcp_port)))
        if secure:
            ours_by_suite = {str(c.suite): c for c in (crypto or {}).get(stream.label, ())}
            chosen = next((c for c in offered.crypto if c.suite.upper() in ours_by_suite), None)
            if chosen is None:
                media.append(_refused(offered))
                continue
            key = ours_by_suite[chosen.suite.upper()]
            attributes.append(("crypto", str(key.attribute(chosen.tag))))
        direction = _SRC_DIRECTION[srs_offer.direction_of(offered)]
        if stream.paused:
            direction = Direction.INACTIVE
        attributes.append((str(direction), None))
        attributes.append(("label", stream.label))
        media.append(
            MediaDescription(
                "audio", stream.port, offered.proto, tuple(formats), attributes=tuple(attributes)
            )
        )
    if all(m.port == 0 for m in media) and any(m.port != 0 for m in srs_offer.media):
        raise NegotiationError("none of the SRS's offered streams can be answered (RFC 3264 §6)")
    return SessionDescription(origin=origin, connection=connection, media=tuple(media))
