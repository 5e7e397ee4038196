"""The reference SRS's recording sessions, sans-I/O: the rules of RFC 7866 §6, RFC 3264, RFC 4028.

``SrsCore`` is the transaction user of a ``UserAgentCore`` (STYLE.md #1): its driver feeds it
the core's events and the clock (``handle_ua_event(event, now)``, ``handle_timer(now)``,
``get_timer()``) and carries out the *actions* it queues (``next_action()``): open, configure
and close one media sink per answered m-line, write the session's file when it starts, changes
and ends. Opening a sink is the only step that waits, so a SIPREC offer is answered in two
halves: ``OpenStreams`` goes out, and the driver calls ``streams_opened(session_id, ports, now)``
(or ``streams_unavailable``) once the sockets are bound.

Session states and what moves them (STYLE.md #4)::

    state     input                                   action                          next
    --------  --------------------------------------  ------------------------------  --------
    -         INVITE that is not a recording session  488/415/400/413/422 + Warning   -
    -         SIPREC INVITE                           OpenStreams                     pending
    pending   streams_opened()                        200 (answer), ConfigureStream,  active
                                                      SessionStarted
    pending   streams_unavailable()                   503 + Warning, SessionEnded     ended
    pending   CANCEL (the core answered 487)          SessionEnded                    ended
    active    re-INVITE / UPDATE with SDP             200 (answer) or 488, maybe      active
                                                      OpenStreams first; Configure/
                                                      CloseStream, SessionUpdated
    active    offerless re-INVITE                     200 with our SDP as the offer   active
    active    refresh due (we are the refresher)      UPDATE (re-INVITE if the SRC    active
                                                      does not allow UPDATE)
    active    no refresh by expiry - min(32, SE/3)    BYE, SessionEnded               ended
    active    BYE from the SRC                        SessionEnded (bye-from-src)     ended
    active    stop() (shutdown)                       BYE, SessionEnded               ended
    active    dialog lost (no ACK, 408/481 on our     SessionEnded                    ended
              refresh, transport failure)

Decisions where the RFCs leave a choice:

- What is a recording session: RFC 7866 §6.1.2 says an SRS treats an INVITE as one only when it
  has both ``Require: siprec`` and a Contact with ``+sip.src``. This SRS takes nothing else, and
  refuses with **488 Not Acceptable Here** and a ``Warning: 399`` saying which of the two is
  missing. Not 420 Bad Extension: that is for a ``Require`` tag the UAS does *not* support
  (RFC 3261 §21.4.15), the opposite case (and the core answers it for unknown tags). Not 421
  Extension Required either: it asks the client to retry with the extension, which a plain
  UAC cannot do, and a Contact without ``+sip.src`` is no extension at all.
- A body that is not a SIPREC body is refused with the status of the metadata reader's verdict
  (415 with ``Accept`` when a part is missing, 400 malformed, 413 too large), an SDP we cannot
  read with 400, an offer with nothing we can record with 488. Every refusal has a Warning.
- Codecs: PCMU and PCMA (what the sinks decode), telephone-event alongside. Crypto: SDES with
  AES_CM_128_HMAC_SHA1_80 or _32, answered with the SRS's own key per stream (RFC 4568
  §5.1.2); the SRC's offered key is what unprotects its packets.
- Session timer (RFC 4028): only when the SRC sends ``Session-Expires``. Below our Min-SE -> 422
  with ``Min-SE`` (§8.1). ``refresher=uac|uas`` is honoured; without it the SRC refreshes when it
  said ``Supported: timer``, else we must (§9). When the SRC refreshes and no refresh arrives by
  expiry - min(guard, SE/3) we send BYE (§10). When we refresh we send UPDATE at half the
  interval (re-INVITE with our current SDP if the SRC's Allow lacks UPDATE, §7.4 allows both).
  A refresh without ``Session-Expires`` turns the timer off (§9: each 2xx sets it anew).
- Streams are matched across offers by ``a=label`` (RFC 4574; m-line position when there is
  none). An m-line set to port 0 closes its sink for good; the same label coming back later is
  answered with port 0 rather than overwriting the finished file.
- Metadata: each document received (initial, re-INVITE, UPDATE) is kept as a snapshot; the
  current view is every update folded in with ``merge`` (RFC 7865 §6: partial updates).
"""

from __future__ import annotations

import contextlib
import random
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from siprec_src.errors import LocalProtocolError, RemoteProtocolError
from siprec_src.media.spec import SrtpKeys
from siprec_src.media.srtp import generate_key_params
from siprec_src.metadata.model import RecordingMetadata, merge
from siprec_src.metadata.reader import METADATA_CONTENT_TYPES, read_metadata, read_siprec_body
from siprec_src.sdp.session import Direction, MediaDescription, SessionDescription, parse_sdp
from siprec_src.sdp.siprec import CryptoSuite, NegotiationError, build_answer_for_srs
from siprec_src.sip.dialog import DialogId
from siprec_src.sip.headers import NameAddress, parse_delta
from siprec_src.sip.message import Request, Response
from siprec_src.sip.multipart import decode_multipart, parse_content_type
from siprec_src.sip.syntax import SipParseError, get_param, parse_params, quote
from siprec_src.sip.target import Destination
from siprec_src.sip.useragent import (
    AckReceived,
    DialogTerminated,
    RequestCancelled,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    UaConfig,
    UaEvent,
    UserAgentCore,
)

__all__ = [
    "ACCEPT",
    "ACCEPTED_CODECS",
    "ALLOW",
    "MIN_SESSION_EXPIRES",
    "SRS_SUITES",
    "CloseStream",
    "ConfigureStream",
    "EndReason",
    "OpenStreams",
    "Refresher",
    "Refusal",
    "SessionEnded",
    "SessionLogEntry",
    "SessionStarted",
    "SessionTimer",
    "SessionUpdated",
    "Snapshot",
    "SrsAction",
    "SrsCore",
    "SrsSession",
    "StreamState",
    "check_recording_invite",
    "negotiate_timer",
    "srs_ua_config",
]

SDP = "application/sdp"
# What the SRS takes in bodies (RFC 3261 §20.1): the SIPREC envelope and its parts.
ACCEPT = ("application/sdp", "multipart/mixed", "application/rs-metadata+xml", "application/rs-metadata")
ALLOW = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO")
ACCEPTED_CODECS = ("PCMU", "PCMA")
SRS_SUITES = (CryptoSuite.AES_CM_128_HMAC_SHA1_80, CryptoSuite.AES_CM_128_HMAC_SHA1_32)
MIN_SESSION_EXPIRES = 90  # RFC 4028 §4: the smallest Min-SE there is
DEFAULT_GUARD = 32.0  # RFC 4028 §10: BYE at expiry minus min(32 s, SE/3)


def srs_ua_config(user_agent: str = "siprec-src srs") -> UaConfig:
    """The UA core settings of an SRS: ``siprec`` supported (else the core answers 420), our Accept."""
    return UaConfig(
        user_agent=user_agent,
        contact_user="srs",
        allow=ALLOW,
        supported=("timer", "siprec"),
        accept=ACCEPT,
    )


# --- refusals and the rules that produce them ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refusal:
    """A final non-2xx answer: ``status``, the ``Warning`` text saying why, and extra headers."""

    status: int
    warning: str
    headers: tuple[tuple[str, str], ...] = ()


def check_recording_invite(request: Request) -> Refusal | None:
    """None when an INVITE asks for a recording session (RFC 7866 §6.1.2), else why not."""
    if "siprec" not in request.header_tokens("Require"):
        return Refusal(488, "not a SIPREC INVITE: no 'Require: siprec' (RFC 7866 §6.1.2)")
    try:
        contacts = request.contacts
    except SipParseError as exc:
        return Refusal(400, f"unreadable Contact: {exc.reason}")
    if not any(contact.param("+sip.src") is not None for contact in contacts):
        return Refusal(
            488, "not a SIPREC INVITE: the Contact lacks the +sip.src feature tag (RFC 7866 §6.1.2)"
        )
    return None


class Refresher(StrEnum):
    """Who refreshes the session (RFC 4028), named by role, not by uac/uas of one transaction."""

    SRC = "src"
    SRS = "srs"


@dataclass(frozen=True, slots=True)
class SessionTimer:
    """The session interval in force and who refreshes it (RFC 4028 §9)."""

    interval: int
    refresher: Refresher

    def response_headers(self, request: Request) -> list[tuple[str, str]]:
        """``Session-Expires`` (and ``Require: timer``) of our 2xx to an SRC request (§9)."""
        # The SRC sent the request, so it is the uac of this transaction.
        who = "uac" if self.refresher is Refresher.SRC else "uas"
        headers = [("Session-Expires", f"{self.interval};refresher={who}")]
        # §9: MUST when the uac refreshes (it has to learn it); SHOULD when it supports timers.
        if self.refresher is Refresher.SRC or "timer" in request.header_tokens("Supported"):
            headers.append(("Require", "timer"))
        return headers


def _session_expires(message: Request | Response) -> tuple[int, str | None] | None:
    """(interval, refresher param) of a Session-Expires header, None when absent.

    Raises ``SipParseError`` when it is present but unreadable.
    """
    value = message.headers.get("Session-Expires")
    if value is None:
        return None
    head, _, params_text = value.partition(";")
    interval = parse_delta(head, name="Session-Expires", maximum=2**31)
    params = parse_params(";" + params_text, context="Session-Expires") if params_text else ()
    who = get_param(params, "refresher")
    return interval, (who or "").lower() or None


def negotiate_timer(request: Request, min_se: int) -> SessionTimer | Refusal | None:
    """The session timer an SRC request asks for (RFC 4028 §9), a 422/400 refusal, or None (no timer)."""
    try:
        found = _session_expires(request)
    except SipParseError as exc:
        return Refusal(400, f"unreadable Session-Expires: {exc.reason}")
    if found is None:
        return None
    interval, who = found
    if interval < min_se:
        # RFC 4028 §8.1: too small an interval is refused with our minimum, and the UAC retries.
        return Refusal(
            422,
            f"Session-Expires {interval} is below this SRS's Min-SE {min_se} (RFC 4028 §8.1)",
            (("Min-SE", str(min_se)),),
        )
    if who == "uac":
        refresher = Refresher.SRC
    elif who == "uas":
        refresher = Refresher.SRS
    elif "timer" in request.header_tokens("Supported"):
        refresher = Refresher.SRC  # §9: ours to choose; the SRC that asked for a timer keeps it
    else:
        refresher = Refresher.SRS  # §9: a UAC without timer support cannot refresh
    return SessionTimer(interval, refresher)


# --- actions for the driver ----------------------------------------------------------------------


class SrsAction:
    """Base of the closed set of things the driver must do for ``SrsCore``."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class OpenStreams(SrsAction):
    """Bind a sink (even RTP port, RTCP next) per label; then ``streams_opened`` with the ports."""

    session_id: str
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ConfigureStream(SrsAction):
    """(Re)configure a sink: payload types, the SRC's SRTP keys, paused or receiving."""

    session_id: str
    label: str
    payload_types: tuple[tuple[int, str], ...]
    srtp: SrtpKeys | None
    paused: bool


@dataclass(frozen=True, slots=True)
class CloseStream(SrsAction):
    """The SRC removed this stream (port 0): finalize its sink."""

    session_id: str
    label: str


@dataclass(frozen=True, slots=True)
class SessionStarted(SrsAction):
    session_id: str


@dataclass(frozen=True, slots=True)
class SessionUpdated(SrsAction):
    """Metadata, streams, pause state or timer changed: rewrite the session file."""

    session_id: str


@dataclass(frozen=True, slots=True)
class SessionEnded(SrsAction):
    """Close every sink of the session; ``started`` False means it was never answered 200 (no file)."""

    session_id: str
    reason: EndReason
    detail: str
    started: bool


class EndReason(StrEnum):
    BYE_FROM_SRC = "bye-from-src"
    REFRESH_TIMEOUT = "refresh-timeout"  # RFC 4028 §10: no refresh before expiry, we sent BYE
    SHUTDOWN = "shutdown"
    NO_ACK = "no-ack"  # RFC 3261 §13.3.1.4: our 2xx never got its ACK, the core sent BYE
    DIALOG_FAILED = "dialog-failed"  # our in-dialog request got 408/481 or hit a transport failure
    CANCELLED = "cancelled"  # the SRC cancelled its INVITE before we answered
    MEDIA_UNAVAILABLE = "media-unavailable"  # no sockets for the streams


# --- session state -------------------------------------------------------------------------------


@dataclass(slots=True)
class StreamState:
    """One answered m-line, by label: where it is received and how it is decoded."""

    label: str
    index: int  # m-line position in the offer (0-based)
    port: int
    opened_at: float
    payload_types: dict[int, str] = field(default_factory=dict)
    codec: str | None = None  # the first answered format: PCMU or PCMA
    payload_type: int | None = None
    clock_rate: int = 8000
    telephone_event: int | None = None
    srtp_suite: str | None = None
    srtp: SrtpKeys | None = None
    paused: bool = False
    closed_at: float | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One metadata document as received (``method`` is the request that carried it)."""

    received_at: float
    method: str
    metadata: RecordingMetadata


@dataclass(frozen=True, slots=True)
class SessionLogEntry:
    at: float
    event: str
    detail: str = ""


@dataclass(slots=True)
class _PendingOffer:
    """An SRC offer waiting for its sinks before it can be answered."""

    server_id: str
    request: Request
    offer: SessionDescription
    labels: tuple[str, ...]  # per m-line
    accepted: frozenset[str]  # labels the dry-run answer accepts
    metadata: RecordingMetadata | None
    timer: SessionTimer | None


@dataclass(slots=True)
class SrsSession:
    """Everything the SRS knows about one recording session; ``output.py`` writes it out."""

    session_id: str
    call_id: str
    from_: NameAddress
    to: NameAddress
    request_uri: str
    source: Destination
    user_agent: str | None
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    end_reason: EndReason | None = None
    end_detail: str = ""
    dialog_id: DialogId | None = None
    timer: SessionTimer | None = None
    refreshes: int = 0
    metadata: RecordingMetadata | None = None
    snapshots: list[Snapshot] = field(default_factory=list)
    streams: dict[str, StreamState] = field(default_factory=dict)
    log: list[SessionLogEntry] = field(default_factory=list)
    acked: bool = False
    peer_allows_update: bool = False
    # RFC 3264 §5: our o= line; the version grows only when the answer changes (§8).
    sdp_session_id: int = 0
    sdp_version: int = 0
    last_answer: SessionDescription | None = None
    keys: dict[str, dict[CryptoSuite, str]] = field(default_factory=dict)  # our SDES keys per label
    pending: _PendingOffer | None = None
    refresh_at: float | None = None
    expire_at: float | None = None
    refresh_request: int | None = None
    refresh_method: str = "UPDATE"
    bye_request: int | None = None  # our BYE, when we ended the session

    @property
    def live(self) -> bool:
        return self.end_reason is None

    @property
    def started(self) -> bool:
        return self.started_at is not None

    def deadline(self) -> float | None:
        candidates = [t for t in (self.refresh_at, self.expire_at) if t is not None]
        return min(candidates) if candidates else None


# --- the core ------------------------------------------------------------------------------------


class SrsCore:
    """Every recording session of one SRS, driven through a ``UserAgentCore`` with ``now`` passed in."""

    def __init__(
        self,
        core: UserAgentCore,
        *,
        media_host: str,
        min_session_expires: int = MIN_SESSION_EXPIRES,
        session_timeout_guard: float = DEFAULT_GUARD,
        new_session_id: Callable[[], str] | None = None,
        generate_key: Callable[[str], str] = generate_key_params,
        rng: random.Random | None = None,
    ) -> None:
        if min_session_expires < MIN_SESSION_EXPIRES:
            raise LocalProtocolError(
                f"min_session_expires {min_session_expires} is below the RFC 4028 floor "
                f"of {MIN_SESSION_EXPIRES}"
            )
        if session_timeout_guard < 0:
            raise LocalProtocolError("session_timeout_guard must not be negative")
        self.core = core
        self.media_host = media_host
        self.min_se = min_session_expires
        self.guard = session_timeout_guard
        self._rng = rng or random.SystemRandom()
        self._new_session_id = new_session_id or (lambda: secrets.token_hex(8))
        self._generate_key = generate_key
        self.sessions: dict[str, SrsSession] = {}  # every session, live and ended, in arrival order
        self._by_dialog: dict[DialogId, SrsSession] = {}
        self._by_invite: dict[str, SrsSession] = {}  # server id of an unanswered initial INVITE
        self._by_refresh: dict[int, SrsSession] = {}
        self._actions: deque[SrsAction] = deque()

    # --- the driving surface -----------------------------------------------------------------

    def next_action(self) -> SrsAction | None:
        return self._actions.popleft() if self._actions else None

    def get_timer(self) -> float | None:
        deadlines = [d for s in self.sessions.values() if s.live and (d := s.deadline()) is not None]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        for session in list(self.sessions.values()):
            if not session.live or session.dialog_id is None:
                continue
            if session.expire_at is not None and session.expire_at <= now:
                interval = session.timer.interval if session.timer else 0
                detail = f"no session refresh within {interval} s (RFC 4028 §10)"
                self._bye(session, now, EndReason.REFRESH_TIMEOUT, detail, cause=408)
            elif session.refresh_at is not None and session.refresh_at <= now:
                self._send_refresh(session, now)

    def handle_ua_event(self, event: UaEvent, now: float) -> None:
        if isinstance(event, RequestReceived):
            if event.dialog_id is None:
                self._on_out_of_dialog(event, now)
            elif (session := self._by_dialog.get(event.dialog_id)) is not None and session.live:
                self._on_in_dialog(session, event, now)
            else:
                self.core.respond(event.server_id, 481, now)
        elif isinstance(event, AckReceived):
            if (session := self._by_dialog.get(event.dialog_id)) is not None:
                session.acked = True
        elif isinstance(event, RequestCancelled):
            if (session := self._by_invite.pop(event.server_id, None)) is not None:
                self._finish(session, now, EndReason.CANCELLED, "the SRC sent CANCEL before our answer")
        elif isinstance(event, DialogTerminated):
            if (session := self._by_dialog.get(event.dialog_id)) is not None and session.live:
                self._on_dialog_terminated(session, event, now)
        elif isinstance(event, ResponseReceived):
            if event.response.status >= 200 and (session := self._by_refresh.pop(event.request_id, None)):
                self._on_refresh_answer(session, event.response, now)
        elif isinstance(event, RequestFailed):
            # The core ends the dialog itself (DialogTerminated follows): nothing more to do here.
            self._by_refresh.pop(event.request_id, None)

    def streams_opened(self, session_id: str, ports: Mapping[str, int], now: float) -> None:
        """The sinks asked for by ``OpenStreams`` are bound: answer the offer that waited for them."""
        session = self.sessions[session_id]
        pending = session.pending
        if not session.live or pending is None:
            return  # cancelled or ended meanwhile: the driver closes what it opened
        for label, port in ports.items():
            session.streams[label] = StreamState(label, pending.labels.index(label), port, now)
        session.pending = None
        self._answer(session, pending, now)

    def streams_unavailable(self, session_id: str, reason: str, now: float) -> None:
        session = self.sessions[session_id]
        pending = session.pending
        if not session.live or pending is None:
            return
        session.pending = None
        self._respond_refusal(pending.server_id, Refusal(503, f"no media ports: {reason}"), now)
        if not session.started:
            self._by_invite.pop(pending.server_id, None)
            self._finish(session, now, EndReason.MEDIA_UNAVAILABLE, reason)

    def stop(self, session_id: str, now: float, detail: str = "SRS shutting down") -> None:
        """End one session: BYE when established, 503 to an INVITE still being set up."""
        session = self.sessions[session_id]
        if not session.live:
            return
        if session.pending is not None:
            self._respond_refusal(session.pending.server_id, Refusal(503, detail), now)
            session.pending = None
        if session.dialog_id is None:
            self._by_invite = {k: v for k, v in self._by_invite.items() if v is not session}
            self._finish(session, now, EndReason.SHUTDOWN, detail)
        else:
            self._bye(session, now, EndReason.SHUTDOWN, detail, cause=503)

    def stop_all(self, now: float, detail: str = "SRS shutting down") -> None:
        for session_id in list(self.sessions):
            self.stop(session_id, now, detail)

    # --- a new INVITE --------------------------------------------------------------------------

    def _on_out_of_dialog(self, event: RequestReceived, now: float) -> None:
        request = event.request
        if request.method != "INVITE":
            # UPDATE and INFO only make sense inside a dialog (RFC 3311 §5.2).
            status = 481 if request.method in ("UPDATE", "INFO") else 405
            headers = [("Allow", ", ".join(self.core.config.allow))] if status == 405 else []
            self.core.respond(event.server_id, status, now, headers=headers)
            return
        verdict = _read_invite(request, self.min_se)
        if isinstance(verdict, Refusal):
            self._respond_refusal(event.server_id, verdict, now)
            return
        offer, metadata, timer = verdict
        session = SrsSession(
            session_id=self._new_session_id(),
            call_id=request.call_id,
            from_=request.from_,
            to=request.to,
            request_uri=str(request.uri),
            source=event.source,
            user_agent=request.headers.get("User-Agent"),
            created_at=now,
            peer_allows_update="update" in request.header_tokens("Allow"),
            sdp_session_id=self._rng.getrandbits(62),
        )
        if session.session_id in self.sessions:
            raise LocalProtocolError(f"session id {session.session_id} was handed out twice")
        if self._take_offer(session, event.server_id, request, offer, metadata, timer, now):
            # Every stream of a first offer is new, so the answer waits for OpenStreams.
            self.sessions[session.session_id] = session
            self._by_invite[event.server_id] = session

    # --- offers --------------------------------------------------------------------------------

    def _take_offer(
        self,
        session: SrsSession,
        server_id: str,
        request: Request,
        offer: SessionDescription,
        metadata: RecordingMetadata | None,
        timer: SessionTimer | None,
        now: float,
    ) -> bool:
        """Check an SRC offer with a dry-run answer; open sinks for new streams, or answer now.

        False when the offer was refused (the session is as it was before it).
        """
        labels = tuple(media.label or str(index + 1) for index, media in enumerate(offer.media))
        if len(set(labels)) != len(labels):
            refusal = Refusal(488, f"two m-lines share a label: {', '.join(labels)} (RFC 4574 §4)")
            self._respond_refusal(server_id, refusal, now)
            return False
        for media, label in zip(offer.media, labels, strict=True):
            if media.proto.upper() in ("RTP/SAVP", "RTP/SAVPF") and label not in session.keys:
                session.keys[label] = {
                    suite: self._generate_key(str(suite)).removeprefix("inline:") for suite in SRS_SUITES
                }
        ports = [9 if self._usable(session, label) else 0 for label in labels]
        try:
            dry_run = self._build_answer(session, offer, labels, ports, session.sdp_version)
        except NegotiationError as exc:
            self._respond_refusal(server_id, _refusal_for(exc), now)
            return False
        accepted = frozenset(label for label, m in zip(labels, dry_run.media, strict=True) if m.port != 0)
        pending = _PendingOffer(server_id, request, offer, labels, accepted, metadata, timer)
        missing = tuple(label for label in labels if label in accepted and label not in session.streams)
        if missing:
            session.pending = pending
            self._actions.append(OpenStreams(session.session_id, missing))
        else:
            self._answer(session, pending, now)
        return True

    def _usable(self, session: SrsSession, label: str) -> bool:
        stream = session.streams.get(label)
        return stream is None or stream.closed_at is None

    def _build_answer(
        self,
        session: SrsSession,
        offer: SessionDescription,
        labels: tuple[str, ...],
        ports: list[int],
        version: int,
    ) -> SessionDescription:
        crypto = [session.keys.get(label, {}) for label in labels]
        return build_answer_for_srs(
            offer,
            address=self.media_host,
            ports=ports,
            accept_codecs=ACCEPTED_CODECS,
            crypto_keys=crypto,
            session_id=session.sdp_session_id,
            session_version=version,
            username="siprec-srs",
        )

    def _answer(self, session: SrsSession, pending: _PendingOffer, now: float) -> None:
        labels = pending.labels
        ports = [
            session.streams[label].port
            if label in pending.accepted and label in session.streams and self._usable(session, label)
            else 0
            for label in labels
        ]
        try:
            answer = self._build_answer(session, pending.offer, labels, ports, session.sdp_version)
            if session.last_answer is not None and _without_origin(answer) != _without_origin(
                session.last_answer
            ):
                # RFC 3264 §8: a changed description carries a version one greater.
                session.sdp_version += 1
                answer = self._build_answer(session, pending.offer, labels, ports, session.sdp_version)
        except NegotiationError as exc:
            self._respond_refusal(pending.server_id, _refusal_for(exc), now)
            if not session.started:
                self._by_invite.pop(pending.server_id, None)
                self._finish(session, now, EndReason.MEDIA_UNAVAILABLE, exc.reason)
            return
        headers = pending.timer.response_headers(pending.request) if pending.timer else []
        try:
            response = self.core.respond(
                pending.server_id, 200, now, body=bytes(answer), content_type=SDP, headers=headers
            )
        except LocalProtocolError:
            # The request was answered meanwhile (CANCEL -> 487, or the core's own guard).
            if not session.started:
                self._by_invite.pop(pending.server_id, None)
                self._finish(session, now, EndReason.CANCELLED, "the INVITE was cancelled")
            return
        session.last_answer = answer
        method = pending.request.method
        if not session.started:
            self._by_invite.pop(pending.server_id, None)
            to_tag = response.to.tag
            from_tag = pending.request.from_.tag
            assert to_tag is not None and from_tag is not None  # the core refuses a dialog without them
            session.dialog_id = DialogId(session.call_id, to_tag, from_tag)
            self._by_dialog[session.dialog_id] = session
            session.started_at = now
            session.log.append(SessionLogEntry(now, "started", f"{len(session.streams)} stream(s)"))
            self._apply_answer(session, pending, answer, now)
            self._apply_metadata(session, pending.metadata, method, now)
            self._apply_timer(session, pending.timer, now, refreshed=False)
            self._actions.append(SessionStarted(session.session_id))
            return
        self._apply_answer(session, pending, answer, now)
        self._apply_metadata(session, pending.metadata, method, now)
        self._apply_timer(session, pending.timer, now, refreshed=True)
        self._actions.append(SessionUpdated(session.session_id))

    def _apply_answer(
        self, session: SrsSession, pending: _PendingOffer, answer: SessionDescription, now: float
    ) -> None:
        paused: list[str] = []
        resumed: list[str] = []
        for index, (label, answered) in enumerate(zip(pending.labels, answer.media, strict=True)):
            stream = session.streams.get(label)
            if stream is None or stream.closed_at is not None:
                continue
            if answered.port == 0:
                stream.closed_at = now
                session.log.append(SessionLogEntry(now, "stream-removed", label))
                self._actions.append(CloseStream(session.session_id, label))
                continue
            stream.index = index
            _describe(stream, answered, pending.offer.media[index])
            now_paused = answered.direction is Direction.INACTIVE
            if now_paused != stream.paused:
                (paused if now_paused else resumed).append(label)
            stream.paused = now_paused
            self._actions.append(
                ConfigureStream(
                    session.session_id,
                    label,
                    tuple(sorted(stream.payload_types.items())),
                    stream.srtp,
                    stream.paused,
                )
            )
        if paused:
            session.log.append(SessionLogEntry(now, "paused", ", ".join(paused)))
        if resumed:
            session.log.append(SessionLogEntry(now, "resumed", ", ".join(resumed)))

    def _apply_metadata(
        self, session: SrsSession, metadata: RecordingMetadata | None, method: str, now: float
    ) -> None:
        if metadata is None:
            return
        session.snapshots.append(Snapshot(now, method, metadata))
        session.metadata = metadata if session.metadata is None else merge(session.metadata, metadata)
        if len(session.snapshots) > 1:
            session.log.append(SessionLogEntry(now, "metadata", f"{metadata.data_mode} update by {method}"))

    def _apply_timer(
        self, session: SrsSession, timer: SessionTimer | None, now: float, *, refreshed: bool
    ) -> None:
        if refreshed and (session.timer is not None or timer is not None):
            session.refreshes += 1
            if timer is None:
                session.log.append(SessionLogEntry(now, "timer-off", "a refresh without Session-Expires"))
        session.timer = timer
        self._arm(session, now)

    def _arm(self, session: SrsSession, now: float) -> None:
        timer = session.timer
        if timer is None:
            session.refresh_at = session.expire_at = None
            return
        if timer.refresher is Refresher.SRS:
            # We refresh at half the interval (RFC 4028 §7.2); unrefreshed, it is over at expiry.
            session.refresh_at = now + timer.interval / 2
            session.expire_at = now + timer.interval
        else:
            # RFC 4028 §10: the side that does not refresh ends the session a little before expiry.
            session.refresh_at = None
            session.expire_at = now + timer.interval - min(self.guard, timer.interval / 3)

    # --- requests inside a session ---------------------------------------------------------------

    def _on_in_dialog(self, session: SrsSession, event: RequestReceived, now: float) -> None:
        request = event.request
        method = request.method
        if method == "INFO":
            self.core.respond(event.server_id, 200, now)
            return
        if method not in ("INVITE", "UPDATE"):
            self.core.respond(
                event.server_id, 405, now, headers=[("Allow", ", ".join(self.core.config.allow))]
            )
            return
        if method == "INVITE":
            session.peer_allows_update = "update" in request.header_tokens("Allow")
        try:
            sdp, metadata = _read_update_body(request)
            offer = parse_sdp(sdp) if sdp is not None else None
            timer = negotiate_timer(request, self.min_se)
        except RemoteProtocolError as exc:
            self._respond_refusal(event.server_id, _refusal_for(exc), now)
            return
        if isinstance(timer, Refusal):
            self._respond_refusal(event.server_id, timer, now)
            return
        if session.pending is not None:
            # RFC 3311 §5.2: an UPDATE while the previous offer is unanswered gets 500 + Retry-After
            # (an overlapping re-INVITE never reaches us: the core answers it, RFC 3261 §14.2).
            self.core.respond(event.server_id, 500, now, headers=[("Retry-After", "1")])
            return
        if offer is None:
            self._on_offerless(session, event, metadata, timer, now)
            return
        self._take_offer(session, event.server_id, request, offer, metadata, timer, now)

    def _on_offerless(
        self,
        session: SrsSession,
        event: RequestReceived,
        metadata: RecordingMetadata | None,
        timer: SessionTimer | None,
        now: float,
    ) -> None:
        """A refresh or metadata update without SDP: UPDATE gets 200; re-INVITE gets our SDP as the offer.

        RFC 3261 §14.2: the offer in our 2xx to an offerless re-INVITE is our current description
        (unchanged version, RFC 3264 §8); the SRC's answer in the ACK changes nothing we receive.
        """
        request = event.request
        headers = timer.response_headers(request) if timer else []
        if request.method == "INVITE" and session.last_answer is not None:
            self.core.respond(
                event.server_id, 200, now, body=bytes(session.last_answer), content_type=SDP, headers=headers
            )
        else:
            self.core.respond(event.server_id, 200, now, headers=headers)
        self._apply_metadata(session, metadata, request.method, now)
        self._apply_timer(session, timer, now, refreshed=True)
        self._actions.append(SessionUpdated(session.session_id))

    # --- our own refreshes -------------------------------------------------------------------------

    def _send_refresh(self, session: SrsSession, now: float) -> None:
        assert session.dialog_id is not None and session.timer is not None
        session.refresh_at = None
        if session.refresh_request is not None and session.refresh_request in self._by_refresh:
            return  # the previous one is still out
        method = session.refresh_method if session.peer_allows_update else "INVITE"
        # We send the request, so we are its uac (RFC 4028 §7.4).
        headers = [("Session-Expires", f"{session.timer.interval};refresher=uac")]
        body = b""
        content_type = None
        if method == "INVITE" and session.last_answer is not None:
            body, content_type = bytes(session.last_answer), SDP
        request_id = self.core.send_in_dialog(
            session.dialog_id, method, now, body=body, content_type=content_type, headers=headers
        )
        session.refresh_request = request_id
        self._by_refresh[request_id] = session

    def _on_refresh_answer(self, session: SrsSession, response: Response, now: float) -> None:
        session.refresh_request = None
        if not session.live or session.timer is None:
            return
        if 200 <= response.status < 300:
            interval = session.timer.interval
            refresher = Refresher.SRS
            try:
                found = _session_expires(response)
            except SipParseError:
                found = None
            if found is not None:
                interval = max(found[0], self.min_se)
                # In the SRC's answer to our request "uac" names us.
                refresher = Refresher.SRC if found[1] == "uas" else Refresher.SRS
            session.timer = SessionTimer(interval, refresher)
            session.refreshes += 1
            session.log.append(SessionLogEntry(now, "refreshed", f"by the SRS with {response.cseq.method}"))
            self._arm(session, now)
            return
        if response.status in (405, 501) and response.cseq.method == "UPDATE":
            session.refresh_method = "INVITE"  # RFC 4028 §7.4: the re-INVITE refresh works everywhere
            session.refresh_at = now
            return
        # Try again halfway to expiry; at expiry the BYE goes out anyway (RFC 4028 §10).
        if session.expire_at is not None and session.expire_at > now:
            session.refresh_at = now + max(1.0, (session.expire_at - now) / 2)

    # --- the end -----------------------------------------------------------------------------------

    def _on_dialog_terminated(self, session: SrsSession, event: DialogTerminated, now: float) -> None:
        if event.by_peer and event.request is not None and event.request.method == "BYE":
            reason = event.request.headers.get("Reason") or ""
            self._finish(session, now, EndReason.BYE_FROM_SRC, reason)
        elif not event.by_peer and not session.acked:
            self._finish(session, now, EndReason.NO_ACK, "no ACK for our 200 (RFC 3261 §13.3.1.4)")
        else:
            self._finish(session, now, EndReason.DIALOG_FAILED, event.reason)

    def _bye(self, session: SrsSession, now: float, reason: EndReason, detail: str, *, cause: int) -> None:
        assert session.dialog_id is not None
        # Finish first: the core reports the dialog's end (DialogTerminated) for a session already over.
        self._finish(session, now, reason, detail)
        with contextlib.suppress(LocalProtocolError):  # the dialog is already gone
            session.bye_request = self.core.bye(
                session.dialog_id, now, reason=f"SIP;cause={cause};text={_quoted(detail)}"
            )

    def _finish(self, session: SrsSession, now: float, reason: EndReason, detail: str) -> None:
        if not session.live:
            return
        if session.pending is not None:
            # RFC 3261 §15.1.2: a request still unanswered when the session ends gets 487.
            self._respond_refusal(session.pending.server_id, Refusal(487, "the session ended"), now)
            session.pending = None
        session.end_reason = reason
        session.end_detail = detail
        session.ended_at = now
        session.refresh_at = session.expire_at = None
        session.log.append(SessionLogEntry(now, "ended", f"{reason}: {detail}" if detail else str(reason)))
        for stream in session.streams.values():
            if stream.closed_at is None:
                stream.closed_at = now
        self._actions.append(SessionEnded(session.session_id, reason, detail, session.started))

    def _respond_refusal(self, server_id: str, refusal: Refusal, now: float) -> None:
        host = self.core.local_addresses.get("udp") or next(iter(self.core.local_addresses.values()), None)
        agent = host[0] if host else "siprec-srs"
        headers = [*refusal.headers, ("Warning", f"399 {agent} {_quoted(refusal.warning)}")]
        if refusal.status == 415:
            headers.append(("Accept", ", ".join(ACCEPT)))  # RFC 3261 §21.4.13
        with contextlib.suppress(LocalProtocolError):  # already answered (a CANCEL got there first)
            self.core.respond(server_id, refusal.status, now, headers=headers)


# --- helpers ---------------------------------------------------------------------------------------


def _read_invite(
    request: Request, min_se: int
) -> tuple[SessionDescription, RecordingMetadata, SessionTimer | None] | Refusal:
    """What a new INVITE asks for, or why it is refused (checks in the order of the module docstring)."""
    refusal = check_recording_invite(request)
    if refusal is not None:
        return refusal
    try:
        sdp, metadata = read_siprec_body(request.content_type or "", request.body)
        offer = parse_sdp(sdp)
    except RemoteProtocolError as exc:
        return _refusal_for(exc)
    timer = negotiate_timer(request, min_se)
    if isinstance(timer, Refusal):
        return timer
    return offer, metadata, timer


def _refusal_for(error: RemoteProtocolError) -> Refusal:
    status = error.status_hint if 400 <= error.status_hint < 700 else 400
    return Refusal(status, error.reason)


def _read_update_body(request: Request) -> tuple[bytes | None, RecordingMetadata | None]:
    """The SDP and metadata of a re-INVITE or UPDATE, either of which may be absent (RFC 7866 §6.2)."""
    if not request.body:
        return None, None
    media_type, _ = parse_content_type(request.content_type or "application/sdp")
    if media_type == SDP:
        return request.body, None
    if media_type in METADATA_CONTENT_TYPES:
        return None, read_metadata(request.body)
    if not media_type.startswith("multipart/"):
        raise RemoteProtocolError(f"a {media_type} body is neither SDP nor recording metadata", 415)
    parts = decode_multipart(request.content_type or "", request.body)
    kinds = {part.media_type for part in parts}
    has_metadata = bool(kinds & set(METADATA_CONTENT_TYPES)) or any(
        (part.header("Content-Disposition") or "").split(";", 1)[0].strip().lower() == "recording-session"
        for part in parts
    )
    if SDP in kinds and has_metadata:
        sdp, metadata = read_siprec_body(request.content_type or "", request.body)
        return sdp, metadata
    if SDP in kinds:
        return next(part.body for part in parts if part.media_type == SDP), None
    if has_metadata:
        chosen = [p for p in parts if p.media_type in METADATA_CONTENT_TYPES] or [
            p
            for p in parts
            if (p.header("Content-Disposition") or "").lower().startswith("recording-session")
        ]
        return None, read_metadata(chosen[0].body)
    return None, None


def _describe(stream: StreamState, answered: MediaDescription, offered: MediaDescription) -> None:
    """Fill a stream's codec, payload types and the SRC's SRTP keys from our answer and its offer."""
    stream.payload_types = {}
    stream.telephone_event = None
    for index, fmt in enumerate(answered.formats):
        codec = answered.codec(fmt)
        if codec is None:
            continue
        name = codec.encoding.upper() if codec.encoding.lower() != "telephone-event" else "telephone-event"
        stream.payload_types[codec.payload_type] = name
        if name == "telephone-event":
            stream.telephone_event = codec.payload_type
        elif index == 0:
            stream.codec, stream.payload_type, stream.clock_rate = name, codec.payload_type, codec.clock_rate
    chosen = answered.crypto
    if chosen:
        # RFC 4568 §5.1.2: our answer echoes the tag of the offered line we took; the SRC
        # protects what it sends with the key of that line.
        offered_line = next((c for c in offered.crypto if c.tag == chosen[0].tag), None)
        if offered_line is not None:
            stream.srtp_suite = offered_line.suite.upper()
            stream.srtp = SrtpKeys(stream.srtp_suite, offered_line.key_params[0])
    else:
        stream.srtp_suite = None
        stream.srtp = None


def _without_origin(sdp: SessionDescription) -> bytes:
    return bytes(replace(sdp, origin=replace(sdp.origin, session_version="0")))


def _quoted(text: str) -> str:
    """``text`` as a quoted-string for Warning/Reason; line breaks become spaces (quote() refuses them)."""
    return quote(text.replace("\r", " ").replace("\n", " "))
