"""``RecordingSession``: one SIPREC session (RFC 7866) from the SRC to a connector's SRSs, sans-I/O.

It drives a ``UserAgentCore`` (which owns transactions, dialogs, ACK, CANCEL, auth and glare)
with ``now`` passed in, and tells its driver what to do through a queue of *actions*
(prepare the next SRS attempt, start/update/stop media forks) and a queue of domain
*events* (``recording/events.py``). Its own deadlines (attempt timeout, session refresh,
session expiry) come out of ``get_timer()`` and go back in through ``handle_timer(now)``.

States and what moves them (STYLE.md #4: state changes only after the action succeeded)::

    state      input                                   action                         next
    ---------  --------------------------------------  -----------------------------  ---------
    new        start()                                 PrepareAttempt(1)              starting
    starting   attempt_ready()                         INVITE (SDP + rs-metadata)     starting
    starting   attempt_unavailable() / 408 / 5xx /     PrepareAttempt(n+1)            starting
               transport failure / attempt timeout     (CANCEL the silent one)
    starting   ... and no SRS left                     -                              failed
    starting   422                                     INVITE again, Min-SE raised    starting
    starting   other 3xx-6xx                           -                              failed
    starting   2xx, usable answer                      StartForks                     active
    starting   2xx, unusable answer / all refused      BYE with Reason                failed
    starting   stop()                                  CANCEL (a 2xx that still comes stopped
                                                       is ACKed and BYEd)
    active     pause()                                 UpdateForks(paused), re-INVITE paused
                                                       a=inactive
    paused     resume()                                re-INVITE a=sendonly; on 2xx   active
                                                       UpdateForks(sending)
    act/paus   refresh due (we refresh)                re-INVITE with Session-Expires same
    act/paus   re-INVITE 2xx                           UpdateForks, re-arm refresh    same
    act/paus   re-INVITE 408/481/transport failure /   SessionLost, StopForks, BYE    starting
               no answer in attempt_timeout /          if the dialog lives,           (recovering)
               session expired without refresh         PrepareAttempt(next SRS)
    act/paus   ... and no recovery left                the same, no PrepareAttempt    failed
    act/paus   probe() (ICMP on a fork, connection     re-INVITE (a refresh) now      same
               to the SRS closed)
    recovering 2xx, usable answer                      StartForks, SessionRecovered   active/paused
    act/paus   SRS re-INVITE/UPDATE                    answer it, UpdateForks         same
    act/paus   SRS BYE                                 StopForks                      stopped
    act/paus   stop()                                  BYE, StopForks                 stopped

Decisions where the RFCs leave a choice:
- Failover (DESIGN.md): a timeout, 408, any 5xx or a transport failure moves to the next SRS;
  a 503's Retry-After is reported in ``AttemptFailed`` so the connector can avoid that SRS.
  Other final responses (403, 488, 6xx...) end the recording: another SRS of the same
  connector would most likely refuse the same offer, and retrying hides the real problem.
  Each attempt uses a fresh Call-ID; the metadata (group and session ids) stays the same so
  the SRS side can stitch.
- Session timer (RFC 4028): we offer ``refresher=uac``. When the 2xx has no Session-Expires
  (an SRS without timer support) we still refresh at half the interval, as a keepalive; a
  refresh that gets 408/481 or no answer ends the session (RFC 4028 §10). When the SRS makes
  itself the refresher we BYE if no refresh arrives by expiry - min(32, SE/3) (§10).
- One re-INVITE at a time: pause, resume, metadata updates and refreshes are coalesced into
  the next re-INVITE, which always says the whole current state. None leaves while the SRS's
  own re-INVITE awaits its ACK (RFC 3261 §14.1; RFC 3264 §4 when our offer is in that 2xx).
  A pause the SRS never saw (resumed before any re-INVITE carried it) is undone locally.
- Recovery (RFC 7866 leaves it to the SRC): when the SRS of a running session is gone (a
  re-INVITE unanswered within ``attempt_timeout``, 408/481 to it, a transport failure, no
  refresh from an SRS refresher), a new session is set up on the connector's SRSs, starting
  with the one after the lost SRS and ending with it (it may have restarted), up to
  ``recovery_attempts`` times per recording. The new session carries the same metadata
  (group, session and stream ids, RFC 7865 §6) so the SRS side can stitch the parts, fresh
  SRTP keys (the old key's packet indexes must never be reused, RFC 3711 §9.1) and a new SDP
  session. ``probe()`` turns a hint (ICMP port unreachable on a fork, the SRS closing the
  connection) into a re-INVITE at once instead of waiting for the next refresh.
- Metadata updates are sent as complete snapshots (RFC 7865 allows partial updates; a
  snapshot is always correct, and every SRS we know takes it).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from siprec_src.errors import LocalProtocolError, RemoteProtocolError
from siprec_src.media.spec import Address, ForkSpec, Leg, SrtpKeys
from siprec_src.metadata.model import RecordingMetadata
from siprec_src.metadata.xml import to_xml
from siprec_src.recording.connector import MIN_SESSION_EXPIRES, Connector, SrsTarget
from siprec_src.recording.events import (
    AttemptFailed,
    AttemptStarted,
    MetadataUpdated,
    RecordingEvent,
    RecordingFailed,
    RecordingPaused,
    RecordingResumed,
    RecordingStarted,
    RecordingStopped,
    SessionLost,
    SessionRecovered,
    SessionRefreshed,
    StreamRefused,
)
from siprec_src.recording.health import SrsHealth, marks_down
from siprec_src.sdp.session import Direction, SdpError, SessionDescription, parse_sdp
from siprec_src.sdp.siprec import (
    CodecSpec,
    CryptoOffer,
    CryptoSuite,
    NegotiationError,
    NegotiationResult,
    StreamAnswer,
    StreamOffer,
    answer_srs_offer,
    build_offer,
    process_answer,
)
from siprec_src.sip.dialog import DialogId, DialogState
from siprec_src.sip.headers import NameAddress, parse_delta
from siprec_src.sip.message import Request, Response
from siprec_src.sip.multipart import BodyPart, MultipartError, decode_multipart, encode_multipart
from siprec_src.sip.syntax import SipParseError, get_param, parse_params, quote
from siprec_src.sip.target import Destination
from siprec_src.sip.uri import SipUri
from siprec_src.sip.useragent import (
    AckReceived,
    DialogEstablished,
    DialogTerminated,
    GlareBackoffStarted,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    UaEvent,
    UserAgentCore,
)

SDP = "application/sdp"
RS_METADATA = "application/rs-metadata+xml"
RS_METADATA_REQUEST = "application/rs-metadata-request"
# RFC 7866 §6.1.1: what an SRC accepts in bodies from the SRS.
ACCEPT = "application/sdp, application/rs-metadata, application/rs-metadata-request"
MAX_422_RETRIES = 2
# Hints of a dead SRS (ICMP errors come in bursts, a connection can close and reopen) probe
# the session at most this often; a refresh or a probe in flight already answers the question.
MIN_PROBE_INTERVAL = 10.0
# The Reason (RFC 3326) of a BYE for a 2xx to an INVITE we had given up on.
ABANDONED_REASON = 'SIP;cause=487;text="recording attempt abandoned"'


class State(StrEnum):
    NEW = "new"
    STARTING = "starting"
    ACTIVE = "active"
    PAUSED = "paused"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (State.STOPPED, State.FAILED)


# --- what the session asks its driver to do ------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrepareAttempt:
    """Resolve ``target`` and reserve media ports on its edge, then call ``attempt_ready``."""

    recording_id: str
    attempt: int
    target: SrsTarget


@dataclass(frozen=True, slots=True)
class StartForks:
    recording_id: str
    forks: tuple[ForkSpec, ...]


@dataclass(frozen=True, slots=True)
class UpdateForks:
    recording_id: str
    forks: tuple[ForkSpec, ...]


@dataclass(frozen=True, slots=True)
class StopForks:
    """Stop these forks (RTCP BYE) and release their ports, reserved or started."""

    recording_id: str
    fork_ids: tuple[str, ...]


Action = PrepareAttempt | StartForks | UpdateForks | StopForks


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """One stream of the recording: its label (as in SDP and metadata), the leg it forks, its SSRC."""

    label: str
    leg: Leg
    ssrc: int


@dataclass(frozen=True, slots=True)
class AttemptResources:
    """What the driver prepared for one attempt: where to send and which local addresses to use."""

    destination: Destination
    contact: Address  # advertised SIP address (Via sent-by and Contact): the edge's, or the listener's
    media_host: str  # advertised media address (SDP c=/o=)
    ports: Mapping[str, int]  # our RTP port per stream label (RTCP = port + 1)
    media_bind: str  # local address the media sockets are bound to
    outbound_proxy: SipUri | None = None


@dataclass(slots=True)
class _Inflight:
    """The one re-INVITE of ours in progress and what it said."""

    request_id: int
    offer: SessionDescription
    paused: bool
    metadata: bool  # carried a metadata snapshot
    session_expires: int | None


@dataclass(slots=True)
class _Stream:
    plan: StreamPlan
    keys: dict[str, str] = field(default_factory=dict)  # suite -> our base64 key||salt
    refused: bool = False
    answer: StreamAnswer | None = None


class RecordingSession:
    def __init__(
        self,
        recording_id: str,
        core: UserAgentCore,
        connector: Connector,
        *,
        call_id: str,
        streams: tuple[StreamPlan, ...],
        codec: CodecSpec,
        metadata: RecordingMetadata,
        headers: tuple[tuple[str, str], ...] = (),
        session_expires: int | None = None,
        generate_key: Callable[[str], str] | None = None,
        rng: random.Random | None = None,
        cname: str = "siprec-src",
        health: SrsHealth | None = None,
    ) -> None:
        if not streams:
            raise LocalProtocolError("a recording needs at least one stream")
        self.recording_id = recording_id
        self.core = core
        self.connector = connector
        self.call_id = call_id  # the recorded call (media legs are named by it)
        self.codec = codec
        self.metadata = metadata
        self.headers = headers
        expires = connector.session_expires if session_expires is None else session_expires
        if expires != 0 and expires < MIN_SESSION_EXPIRES:
            raise LocalProtocolError(
                f"session_expires {expires} is below the RFC 4028 minimum of "
                f"{MIN_SESSION_EXPIRES} (0 disables)"
            )
        self.session_expires = expires
        self.min_se = MIN_SESSION_EXPIRES
        self.cname = cname
        self.state = State.NEW
        self.srs: SrsTarget | None = None
        self.sip_call_id: str | None = None
        self.dialog_id: DialogId | None = None
        self.refresher: str | None = None
        self.final_status: int | None = None
        self._rng = rng or random.SystemRandom()
        self._streams = [_Stream(plan) for plan in streams]
        if len({s.plan.label for s in self._streams}) != len(self._streams):
            raise LocalProtocolError("stream labels must be unique within a recording")
        if connector.secure and generate_key is None:
            raise LocalProtocolError("a secure recording needs generate_key(suite) -> 'inline:...'")
        self._generate_key = generate_key
        self._new_keys()
        self._configured_expires = expires
        # SRSs in the order this round of attempts tries them (a recovery starts after the lost one)
        self._order: tuple[SrsTarget, ...] = connector.srs
        self._health = health  # shared with the other sessions: SRSs known down are tried last
        self._round = 0  # 1-based position in _order of the current attempt
        self.recoveries = 0  # sessions re-established after the SRS was lost
        self.recovering = False
        self._lost_at = 0.0
        self._lost: str = ""  # "srs: status reason" of the last lost session
        self._last_probe = float("-inf")
        self._sdp_session_id = self._rng.getrandbits(62)
        self._sdp_version = 0
        self._last_offer: SessionDescription | None = None
        self._attempt = 0
        self._resources: AttemptResources | None = None
        self._invite_id: int | None = None
        self._invite: Request | None = None
        self._retries_422 = 0
        self._provisional = False
        self._inflight: _Inflight | None = None
        self._paused = False  # what we want the SRS to see
        self._sent_paused = False  # what the SRS last accepted
        self._metadata_dirty = False
        self._snapshot_requested = False
        self._refresh_due = False
        self._forks_started = False
        self._offerless_offer: SessionDescription | None = None
        self._awaiting_ack = False  # we sent a 2xx to an SRS re-INVITE and its ACK has not come
        # deadlines
        self._attempt_deadline: float | None = None
        self._inflight_deadline: float | None = None
        self._refresh_at: float | None = None
        self._expires_at: float | None = None
        self._actions: deque[Action] = deque()
        self._events: deque[RecordingEvent] = deque()
        self._new_request_ids: list[int] = []

    # --- the driver's side ------------------------------------------------------------------

    def next_action(self) -> Action | None:
        return self._actions.popleft() if self._actions else None

    def next_event(self) -> RecordingEvent | None:
        return self._events.popleft() if self._events else None

    def drain_request_ids(self) -> list[int]:
        """Ids of the requests sent since the last call, so a router can send their events here."""
        ids, self._new_request_ids = self._new_request_ids, []
        return ids

    def get_timer(self) -> float | None:
        deadlines = [
            d
            for d in (self._attempt_deadline, self._inflight_deadline, self._refresh_at, self._expires_at)
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    def fork_id(self, label: str) -> str:
        return f"{self.recording_id}/{label}"

    @property
    def fork_ids(self) -> tuple[str, ...]:
        return tuple(self.fork_id(s.plan.label) for s in self._streams)

    @property
    def plans(self) -> tuple[StreamPlan, ...]:
        return tuple(s.plan for s in self._streams)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(s.plan.label for s in self._streams)

    @property
    def destination(self) -> Destination | None:
        """Where the current attempt or session sends its requests (None before it is prepared)."""
        return None if self._resources is None else self._resources.destination

    def _new_keys(self) -> None:
        """Fresh SDES keys for every stream (RFC 4568 §6.1): at start and for each new session."""
        if not self.connector.secure:
            return
        assert self._generate_key is not None
        for stream in self._streams:
            for suite in self.connector.srtp_suites:
                params = self._generate_key(suite)
                stream.keys[suite] = params.removeprefix("inline:").split("|", 1)[0]

    # --- commands -----------------------------------------------------------------------------

    def start(self, now: float) -> None:
        if self.state is not State.NEW:
            raise LocalProtocolError(f"recording {self.recording_id} was already started")
        self.state = State.STARTING
        if self._health is not None:
            self._order = self._health.order(self.connector.srs, now)
        self._round = 0
        self._next_attempt(now)

    def attempt_ready(self, attempt: int, resources: AttemptResources, now: float) -> None:
        """The driver resolved the SRS and reserved media for ``attempt``: send the INVITE."""
        if self.state is not State.STARTING or attempt != self._attempt:
            return  # stopped or moved on while the driver was busy
        missing = [s.plan.label for s in self._streams if s.plan.label not in resources.ports]
        if missing:
            raise LocalProtocolError(f"no media port for stream(s) {missing}")
        self._resources = resources
        self._retries_422 = 0
        self.sip_call_id = self.core.new_call_id()
        self._send_invite(now, from_tag=None, cseq=1)

    def attempt_unavailable(self, attempt: int, reason: str, now: float) -> None:
        """The driver could not prepare ``attempt`` (name did not resolve, no port, no listener)."""
        if self.state is not State.STARTING or attempt != self._attempt:
            return
        self._attempt_failed(503, reason, now)

    def pause(self, now: float) -> None:
        """Stop the media at once and tell the SRS with an ``a=inactive`` re-INVITE (RFC 7866 §8.1.3)."""
        self._require_live("pause")
        if self._paused:
            return
        self._paused = True
        if self.state is State.ACTIVE:
            self.state = State.PAUSED
        if self._forks_started:
            self._actions.append(UpdateForks(self.recording_id, self._fork_specs()))
        self._events.append(RecordingPaused(self.recording_id, "src"))
        self._want_reinvite(now)

    def resume(self, now: float) -> None:
        self._require_live("resume")
        if not self._paused:
            return
        self._paused = False
        if not self._sent_paused and (self._inflight is None or not self._inflight.paused):
            # The pause never reached the SRS (it came while the INVITE or another re-INVITE
            # was pending, or its re-INVITE failed): undo it here, no re-INVITE needed.
            if self.state is State.PAUSED:
                self.state = State.ACTIVE
            if self._forks_started:
                self._actions.append(UpdateForks(self.recording_id, self._fork_specs()))
            self._events.append(RecordingResumed(self.recording_id, "src"))
            return
        self._want_reinvite(now)

    def update_metadata(self, metadata: RecordingMetadata, now: float) -> None:
        """New participants or streams: the next (re-)INVITE carries this snapshot."""
        self._require_live("update the metadata of")
        self.metadata = metadata
        self._metadata_dirty = True
        self._want_reinvite(now)

    def stop(self, now: float, reason: str = "stopped") -> None:
        """End the recording: CANCEL while it starts, BYE once it runs. Harmless when it ended."""
        if self.state.terminal:
            return
        if self.state is State.STARTING and self._invite_id is not None:
            self.core.cancel(self._invite_id, now)
        elif self._dialog_live():
            self._send_bye(now, None)
        self._finish(State.STOPPED, RecordingStopped(self.recording_id, "src", reason))

    def fail(self, now: float, status: int, reason: str) -> None:
        """The media side broke (worker died, SRS unreachable): BYE and report the failure."""
        if self.state.terminal:
            return
        if self.state is State.STARTING and self._invite_id is not None:
            self.core.cancel(self._invite_id, now)
        elif self._dialog_live():
            self._send_bye(now, f"SIP;cause={status};text={_quoted(reason)}")
        self._fail(status, reason)

    def probe(self, now: float) -> None:
        """A hint that the SRS may be gone (ICMP port unreachable on a fork, its connection
        closed): check the session with a re-INVITE now rather than at the next refresh.

        An answer keeps it; no answer within ``attempt_timeout``, or a transport failure, loses
        it (and recovers it elsewhere).
        """
        if self.state not in (State.ACTIVE, State.PAUSED) or not self._dialog_live():
            return
        if self._inflight is not None or now - self._last_probe < MIN_PROBE_INTERVAL:
            return
        self._last_probe = now
        self._refresh_due = True
        self._want_reinvite(now)

    def transport_failed(self, destination: Destination, now: float) -> None:
        """The transport lost ``destination`` (connection closed or refused): probe if it is ours."""
        if self._resources is not None and self._resources.destination == destination:
            self.probe(now)

    def _dialog_live(self) -> bool:
        """Whether there is a dialog to BYE: the core ends it on its own when an in-dialog request
        times out or gets 408/481 (RFC 3261 §12.2.1.2), before the session hears of it."""
        if self.dialog_id is None:
            return False
        dialog = self.core.dialog(self.dialog_id)
        return dialog is not None and dialog.state is not DialogState.TERMINATED

    def _require_live(self, what: str) -> None:
        if self.state.terminal or self.state is State.NEW:
            raise LocalProtocolError(
                f"cannot {what} recording {self.recording_id}: it is {self.state}",
                field="status",
                code="invalid_state",
            )

    # --- timers ---------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        if self.state.terminal:
            return
        if self._attempt_deadline is not None and now >= self._attempt_deadline:
            self._attempt_deadline = None
            if self.state is State.STARTING and self._invite_id is not None:
                self.core.cancel(self._invite_id, now)
                self._invite_id = None
                self._attempt_failed(408, f"no final answer within {self.connector.attempt_timeout:g} s", now)
        if self._inflight_deadline is not None and now >= self._inflight_deadline:
            self._inflight_deadline = None
            self._lose(now, 408, f"no answer to a re-INVITE within {self.connector.attempt_timeout:g} s")
            return
        if self._expires_at is not None and now >= self._expires_at:
            self._expires_at = None
            self._lose(now, 408, "session expired: no session refresh (RFC 4028 §10)")
            return
        if self._refresh_at is not None and now >= self._refresh_at:
            self._refresh_at = None
            self._refresh_due = True
            self._want_reinvite(now)

    # --- SIP events (routed here by request id or dialog id) -------------------------------------

    def handle_ua_event(self, event: UaEvent, now: float) -> None:
        if isinstance(event, DialogEstablished) and (
            self.state.terminal or event.request_id != self._invite_id
        ):
            # A 2xx to an INVITE we gave up on (attempt timeout, stop()) before any provisional
            # came, so no CANCEL could go (RFC 3261 §9.1): nobody records on it, take it down.
            self.core.bye(event.dialog_id, now, reason=ABANDONED_REASON)
            return
        if self.state.terminal:
            if isinstance(event, RequestReceived) and event.request.method != "ACK":
                self.core.respond(event.server_id, 481, now)
            return
        if isinstance(event, ResponseReceived):
            self._on_response(event.request_id, event.response, now)
        elif isinstance(event, RequestFailed):
            self._on_request_failed(event.request_id, event.status, event.reason, now)
        elif isinstance(event, DialogEstablished):
            self.dialog_id = event.dialog_id
        elif isinstance(event, RequestReceived):
            self._on_request(event, now)
        elif isinstance(event, AckReceived):
            self._on_ack(event, now)
        elif isinstance(event, DialogTerminated):
            self._on_dialog_terminated(event, now)
        elif (
            isinstance(event, GlareBackoffStarted)
            and self._inflight is not None
            and event.request_id == self._inflight.request_id
        ):
            # RFC 3261 §14.1: our re-INVITE goes again after the back-off; give it its time.
            self._inflight_deadline = now + event.delay + self.connector.attempt_timeout

    def _on_response(self, request_id: int, response: Response, now: float) -> None:
        if request_id == self._invite_id:
            self._on_invite_response(response, now)
        elif (
            self._inflight is not None and request_id == self._inflight.request_id and response.status >= 200
        ):
            self._on_reinvite_response(response, now)

    def _on_request_failed(self, request_id: int, status: int, reason: str, now: float) -> None:
        if request_id == self._invite_id:
            self._invite_id = None
            self._attempt_failed(status, reason, now)
        elif self._inflight is not None and request_id == self._inflight.request_id:
            self._inflight = None
            self._inflight_deadline = None
            self._lose(now, status, f"re-INVITE got no answer: {reason}")

    # --- the initial INVITE ---------------------------------------------------------------------

    def _next_attempt(self, now: float) -> None:
        self._invite_id = None
        self._attempt_deadline = None
        self._attempt += 1  # numbers every attempt of the recording, so stale ones are ignored
        self._round += 1
        if self._round > len(self._order):
            return
        self.srs = self._order[self._round - 1]
        self._actions.append(PrepareAttempt(self.recording_id, self._attempt, self.srs))

    def _attempt_failed(self, status: int, reason: str, now: float, retry_after: int | None = None) -> None:
        srs = str(self.srs)
        self._events.append(AttemptFailed(self.recording_id, srs, self._attempt, status, reason, retry_after))
        # DESIGN.md: timeout, 408, 5xx and transport failures move on to the next SRS.
        lost = f"the session on {self._lost} was lost and " if self.recovering else ""
        if marks_down(status):
            if self._round < len(self._order):
                self._next_attempt(now)
                return
            tried = len(self._order)
            last = f"last: {srs}: {status} {reason}"
            self._fail(status, f"{lost}no SRS took the recording ({tried} tried); {last}")
            return
        self._fail(status, f"{lost}{srs} refused the recording: {status} {reason}")

    def _send_invite(self, now: float, *, from_tag: str | None, cseq: int) -> None:
        resources = self._resources
        assert resources is not None and self.srs is not None and self.sip_call_id is not None
        offer = self._offer(resources)
        body_type, body = self._body(offer, metadata=True)
        transport = resources.destination.transport
        contact = self.core.local_contact(transport, resources.contact).with_param("+sip.src")
        from_ = NameAddress(SipUri.parse(self.connector.from_uri))
        if from_tag is not None:
            from_ = from_.with_tag(from_tag)
        to = NameAddress(replace(self.srs.uri, params=(), headers=()))
        request = self.core.create_request(
            "INVITE",
            self.srs.uri,
            from_,
            to,
            transport=transport,
            call_id=self.sip_call_id,
            cseq=cseq,
            body=body,
            content_type=body_type,
            contact=contact,
        )
        # RFC 7866 §6.1.1: the SRS must support siprec; RFC 4028 §7.1 for the timer headers.
        request.headers.add("Require", "siprec")
        request.headers.add("Accept", ACCEPT)
        if self.session_expires:
            request.headers.add("Session-Expires", f"{self.session_expires};refresher=uac")
            request.headers.add("Min-SE", str(self.min_se))
        if resources.outbound_proxy is not None:
            # RFC 3261 §8.1.2: a preloaded Route to a loose-routing outbound proxy.
            proxy = resources.outbound_proxy.params
            lr = proxy if any(n.lower() == "lr" for n, _ in proxy) else (*proxy, ("lr", None))
            request.headers.add("Route", str(NameAddress(replace(resources.outbound_proxy, params=lr))))
        for name, value in (*self.connector.headers, *self.headers):
            request.headers.add(name, value)
        self._invite = request
        self._provisional = False
        self._invite_id = self.core.send(
            request,
            resources.destination,
            now,
            via_address=resources.contact,
            credentials=self.connector.credentials,
        )
        self._new_request_ids.append(self._invite_id)
        self._last_offer = offer
        self._metadata_dirty = False
        self._sent_paused = self._paused
        self._attempt_deadline = now + self.connector.attempt_timeout
        if cseq == 1:
            self._events.append(AttemptStarted(self.recording_id, str(self.srs), self._attempt))

    def _on_invite_response(self, response: Response, now: float) -> None:
        status = response.status
        if status < 200:
            self._provisional = True
            return
        self._invite_id = None
        self._attempt_deadline = None
        self.final_status = status
        if status == 422 and self._invite is not None:
            self._retry_422(response, now)
            return
        if status >= 300:
            retry_after = _retry_after(response) if status == 503 else None
            reason = _reason_of(response)
            self._attempt_failed(status, reason, now, retry_after)
            return
        # 2xx: the core ACKed it and reported DialogEstablished just before this event.
        if self.dialog_id is None:
            self._fail(500, "2xx without a dialog")
            return
        try:
            result = self._read_answer(response)
        except (RemoteProtocolError, SipParseError) as exc:
            self.fail(now, 488, f"unusable SDP answer from {self.srs}: {exc}")
            return
        if not any(answer.accepted for answer in result.streams):
            # starting -> failed (the table): with every stream refused it never started.
            self._apply_answer(result, now, first=True)  # StreamRefused for each, then BYE
            return
        self._apply_timer(response, now)
        self.state = State.PAUSED if self._paused else State.ACTIVE
        if self.recovering:
            self.recovering = False
            interrupted = now - self._lost_at
            self._events.append(
                SessionRecovered(self.recording_id, str(self.srs), self.sip_call_id or "", interrupted)
            )
        else:
            started = RecordingStarted(
                self.recording_id, str(self.srs), self.sip_call_id or "", self._timer_value(), self.refresher
            )
            self._events.append(started)
        self._apply_answer(result, now, first=True)
        if self.state.terminal:
            return
        if self._paused != self._sent_paused or self._metadata_dirty:
            self._want_reinvite(now)

    def _retry_422(self, response: Response, now: float) -> None:
        # RFC 4028 §7.4: retry with the Min-SE of the 422 (same Call-ID and From tag, CSeq + 1).
        assert self._invite is not None
        min_se = _min_se(response)
        if self._retries_422 >= MAX_422_RETRIES or min_se <= self.session_expires or not self.session_expires:
            self._attempt_failed(422, f"422 without a usable Min-SE ({min_se or 'none'})", now)
            return
        self._retries_422 += 1
        self.session_expires = min_se
        self.min_se = min_se
        self._send_invite(now, from_tag=self._invite.from_.tag, cseq=self._invite.cseq.number + 1)

    # --- answers ------------------------------------------------------------------------------

    def _read_answer(self, response: Response) -> NegotiationResult:
        sdp = _sdp_of(response.content_type, response.body)
        if sdp is None:
            raise NegotiationError("the 2xx carries no SDP answer (RFC 3264 §5)")
        assert self._last_offer is not None
        return process_answer(self._last_offer, parse_sdp(sdp))

    def _apply_answer(self, result: NegotiationResult, now: float, *, first: bool) -> None:
        newly_refused: list[str] = []
        for stream, answer in zip(self._streams, result.streams, strict=True):
            if stream.refused:
                continue
            if not answer.accepted:
                stream.refused = True
                newly_refused.append(stream.plan.label)
                self._events.append(
                    StreamRefused(self.recording_id, stream.plan.label, answer.reason or "refused")
                )
                continue
            stream.answer = answer
        if all(s.refused for s in self._streams):
            self.fail(now, 488, f"{self.srs} refused every stream")
            return
        if newly_refused:
            self._actions.append(StopForks(self.recording_id, tuple(self.fork_id(x) for x in newly_refused)))
        specs = self._fork_specs()
        if first or not self._forks_started:
            self._forks_started = True
            self._actions.append(StartForks(self.recording_id, specs))
        else:
            self._actions.append(UpdateForks(self.recording_id, specs))

    def _fork_specs(self) -> tuple[ForkSpec, ...]:
        resources = self._resources
        assert resources is not None
        specs = []
        for stream in self._streams:
            answer = stream.answer
            if stream.refused or answer is None:
                continue
            assert answer.remote_address is not None and answer.payload_type is not None
            payload_map = [(self.codec.payload_type, answer.payload_type)]
            if self.codec.telephone_event_pt is not None and answer.telephone_event_pt is not None:
                payload_map.append((self.codec.telephone_event_pt, answer.telephone_event_pt))
            srtp = remote_srtcp = None
            if answer.crypto is not None:
                suite = answer.crypto.suite.upper()
                srtp = SrtpKeys(suite, f"inline:{stream.keys[suite]}")
                remote_srtcp = SrtpKeys(suite, answer.crypto.key_params[0])
            port = resources.ports[stream.plan.label]
            specs.append(
                ForkSpec(
                    fork_id=self.fork_id(stream.plan.label),
                    call_id=self.call_id,
                    leg=stream.plan.leg,
                    local=(resources.media_bind, port),
                    remote_rtp=(answer.remote_address, answer.remote_port),
                    remote_rtcp=answer.remote_rtcp or (answer.remote_address, answer.remote_port + 1),
                    ssrc=stream.plan.ssrc,
                    payload_map=tuple(payload_map),
                    clock_rate=self.codec.clock_rate,
                    srtp=srtp,
                    cname=self.cname,
                    paused=self._paused or answer.paused,
                    remote_srtcp=remote_srtcp,
                )
            )
        return tuple(specs)

    # --- offers and bodies --------------------------------------------------------------------

    def _stream_offers(self, resources: AttemptResources) -> list[StreamOffer]:
        # a=rtcp names our RTCP port explicitly (RFC 3605): the SRS's reports come back to the
        # socket that sends, even through a NAT that would not keep "RTP port + 1".
        offers = []
        for s in self._streams:
            port = 0 if s.refused else resources.ports[s.plan.label]
            offers.append(
                StreamOffer(
                    s.plan.label, port, self.codec, rtcp_port=port + 1 if port else None, paused=self._paused
                )
            )
        return offers

    def _crypto(self) -> dict[str, list[CryptoOffer]] | None:
        if not self.connector.secure:
            return None
        return {
            s.plan.label: [CryptoOffer(CryptoSuite(suite), key) for suite, key in s.keys.items()]
            for s in self._streams
            if not s.refused
        }

    def _offer(self, resources: AttemptResources) -> SessionDescription:
        def build(version: int) -> SessionDescription:
            return build_offer(
                self._stream_offers(resources),
                address=resources.media_host,
                session_id=self._sdp_session_id,
                session_version=version,
                secure=self.connector.secure,
                crypto=self._crypto(),
            )

        # RFC 3264 §8: the version grows when the description changes, and only then.
        offer = build(self._sdp_version)
        if self._last_offer is not None and _without_origin(offer) != _without_origin(self._last_offer):
            self._sdp_version += 1
            offer = build(self._sdp_version)
        return offer

    def _body(self, sdp: SessionDescription, *, metadata: bool) -> tuple[str, bytes]:
        if not metadata:
            return SDP, bytes(sdp)
        parts = [
            BodyPart(SDP, bytes(sdp)),
            # RFC 7866 §6.1.1: the metadata part is marked as the recording session's.
            BodyPart(RS_METADATA, to_xml(self.metadata), (("Content-Disposition", "recording-session"),)),
        ]
        return encode_multipart(parts)

    # --- re-INVITEs of ours -------------------------------------------------------------------

    def _want_reinvite(self, now: float) -> None:
        if self.state not in (State.ACTIVE, State.PAUSED) or self._inflight is not None:
            return
        if self._awaiting_ack:
            # RFC 3264 §4: no new offer while ours in a 2xx awaits its answer in the ACK; and
            # in any case not before the SRS's INVITE transaction is over (RFC 3261 §14.1).
            return
        if self.dialog_id is None or self._resources is None:
            return
        changes = self._paused != self._sent_paused or self._metadata_dirty or self._snapshot_requested
        if not (changes or self._refresh_due):
            return
        offer = self._offer(self._resources)
        with_metadata = self._metadata_dirty or self._snapshot_requested
        body_type, body = self._body(offer, metadata=with_metadata)
        headers: list[tuple[str, str]] = [("Accept", ACCEPT)]
        if self.session_expires:
            headers.append(("Session-Expires", f"{self.session_expires};refresher=uac"))
            headers.append(("Min-SE", str(self.min_se)))
        request_id = self.core.send_in_dialog(
            self.dialog_id,
            "INVITE",
            now,
            body=body,
            content_type=body_type,
            headers=headers,
            credentials=self.connector.credentials,
            rebody=self._rebody,
        )
        self._new_request_ids.append(request_id)
        self._inflight = _Inflight(
            request_id, offer, self._paused, with_metadata, self.session_expires or None
        )
        # An SRS that leaves a re-INVITE unanswered this long is as good as gone: no need to
        # wait for Timer B (64*T1 = 32 s) with the recording's media going nowhere.
        self._inflight_deadline = now + self.connector.attempt_timeout
        self._last_offer = offer
        self._metadata_dirty = False
        self._snapshot_requested = False
        self._refresh_due = False

    def _rebody(self) -> tuple[bytes, str | None]:
        """The body of our re-INVITE when the core retries it after a 491 (RFC 3261 §14.1).

        Between the 491 and the retry we may have answered the SRS's own offer, so the offer is
        rebuilt from the current state and the o= version keeps growing (RFC 3264 §8).
        """
        inflight = self._inflight
        assert inflight is not None and self._resources is not None
        offer = self._offer(self._resources)
        body_type, body = self._body(offer, metadata=inflight.metadata)
        inflight.offer = offer
        inflight.paused = self._paused
        self._last_offer = offer
        return body, body_type

    def _on_reinvite_response(self, response: Response, now: float) -> None:
        inflight = self._inflight
        assert inflight is not None
        self._inflight = None
        self._inflight_deadline = None
        status = response.status
        if 200 <= status < 300:
            try:
                result = self._read_answer(response)
            except (RemoteProtocolError, SipParseError) as exc:
                self.fail(now, 488, f"unusable SDP answer to a re-INVITE: {exc}")
                return
            was_paused = self._sent_paused
            self._sent_paused = inflight.paused
            self._apply_timer(response, now)
            if self.session_expires:
                self._events.append(SessionRefreshed(self.recording_id, self._timer_value() or 0, "src"))
            self._apply_answer(result, now, first=False)
            if self.state.terminal:
                return
            if was_paused and not inflight.paused and not self._paused:
                self.state = State.ACTIVE
                self._events.append(RecordingResumed(self.recording_id, "src"))
            if inflight.metadata:
                self._events.append(MetadataUpdated(self.recording_id))
            self._want_reinvite(now)
            return
        if status == 422:
            # RFC 4028 §7.4 applies to refreshes too: raise the interval and send again.
            min_se = _min_se(response)
            if min_se > self.session_expires:
                self.session_expires = self.min_se = min_se
                self._refresh_due = True
                self._metadata_dirty |= inflight.metadata
                self._want_reinvite(now)
                return
        if status in (408, 481):
            # RFC 3261 §12.2.1.2 / RFC 4028 §10: the dialog (or session) is gone.
            self._lose(now, status, f"re-INVITE refused: {status} {_reason_of(response)}")
            return
        if status == 422:
            self.fail(now, status, f"re-INVITE refused: {status} {_reason_of(response)}")
            return
        # RFC 3261 §14.1: any other failure leaves the session as it was. Try the refresh again
        # halfway to expiry, and carry unsent changes into that next attempt.
        self._metadata_dirty |= inflight.metadata
        if self._expires_at is not None:
            self._refresh_at = now + max(1.0, (self._expires_at - now) / 2)

    # --- session timer ---------------------------------------------------------------------------

    def _apply_timer(self, message: Request | Response, now: float, *, srs_request: bool = False) -> None:
        """Arm the refresh or the expiry from the Session-Expires of a 2xx (RFC 4028 §7.2, §9)."""
        value = message.headers.get("Session-Expires")
        interval: int | None = None
        refresher = "uac"
        if value:
            head, _, params_text = value.partition(";")
            try:
                interval = parse_delta(head.strip(), name="Session-Expires", maximum=2**31)
                params = parse_params(";" + params_text, context="Session-Expires") if params_text else ()
            except SipParseError:
                interval, params = None, ()
            who = (get_param(params, "refresher") or "").lower()
            if who in ("uac", "uas"):
                refresher = who
            if srs_request:
                # In a request from the SRS, "uac" means the SRS (it sent the request).
                refresher = "uas" if who in ("", "uac") else "uac"
        if interval is None or interval < MIN_SESSION_EXPIRES:
            interval = self.session_expires or None
        if interval is None:
            self.refresher = None
            self._refresh_at = self._expires_at = None
            return
        self.session_expires = interval
        self.refresher = refresher
        if refresher == "uac":
            self._refresh_at = now + interval / 2
            self._expires_at = now + interval
        else:
            # RFC 4028 §10: the side that does not refresh sends BYE at expiry - min(32, SE/3).
            self._refresh_at = None
            self._expires_at = now + interval - min(32.0, interval / 3)

    def _timer_value(self) -> int | None:
        return self.session_expires or None

    # --- requests from the SRS -------------------------------------------------------------------

    def _on_request(self, event: RequestReceived, now: float) -> None:
        request = event.request
        method = request.method
        if method in ("INVITE", "UPDATE"):
            self._on_srs_offer(event, now)
        elif method == "INFO":
            self.core.respond(event.server_id, 200, now)
        else:
            self.core.respond(
                event.server_id, 405, now, headers=[("Allow", ", ".join(self.core.config.allow))]
            )

    def _on_srs_offer(self, event: RequestReceived, now: float) -> None:
        request = event.request
        try:
            parts = _parts(request.content_type, request.body)
        except (MultipartError, SipParseError) as exc:
            self.core.respond(event.server_id, 400, now, reason=f"Bad body: {exc}"[:120])
            return
        sdp = parts.get(SDP)
        if request.method == "UPDATE" and self._inflight is not None and sdp is not None:
            # RFC 3311 §5.2: an UPDATE offer while our offer is outstanding is glare (an
            # UPDATE carrying only a metadata request makes no offer).
            self.core.respond(event.server_id, 491, now)
            return
        if RS_METADATA_REQUEST in parts:
            # RFC 7866 §9.2: answer the request, then send a complete snapshot in a re-INVITE.
            self._snapshot_requested = True
        if sdp is None:
            headers = self._timer_headers(request, now)
            if request.method == "INVITE":
                # An offerless re-INVITE: our offer goes in the 2xx, the answer comes in the ACK.
                assert self._resources is not None
                offer = self._offer(self._resources)
                self._offerless_offer = offer
                self._last_offer = offer
                self.core.respond(
                    event.server_id, 200, now, body=bytes(offer), content_type=SDP, headers=headers
                )
                self._awaiting_ack = True
            else:
                self.core.respond(event.server_id, 200, now, headers=headers)
            self._after_srs_request(request, now)
            return
        try:
            offer = parse_sdp(sdp)
            answer = self._answer(offer)
            result = process_answer(answer, _chosen_crypto_only(offer, answer))
        except (RemoteProtocolError, SipParseError, SdpError) as exc:
            reason = exc.reason if isinstance(exc, RemoteProtocolError | SipParseError) else str(exc)
            self.core.respond(
                event.server_id, 488, now, headers=[("Warning", f"399 siprec-src {_quoted(reason)}")]
            )
            return
        # Only an accepted request refreshes the session (RFC 4028 §9): a 488 leaves the timer.
        headers = self._timer_headers(request, now)
        self.core.respond(event.server_id, 200, now, body=bytes(answer), content_type=SDP, headers=headers)
        self._awaiting_ack = request.method == "INVITE"
        self._last_offer = answer
        self._apply_srs_offer(offer, result, now)
        self._after_srs_request(request, now)

    def _answer(self, offer: SessionDescription) -> SessionDescription:
        assert self._resources is not None
        streams = self._stream_offers(self._resources)
        self._sdp_version += 1
        return answer_srs_offer(
            offer,
            streams,
            address=self._resources.media_host,
            session_id=self._sdp_session_id,
            session_version=self._sdp_version,
            secure=self.connector.secure,
            crypto=self._crypto(),
        )

    def _apply_srs_offer(self, offer: SessionDescription, result: NegotiationResult, now: float) -> None:
        """Take the SRS's view from its offer: addresses, codec numbers, its pause (``inactive``).

        ``result`` reads the SRS's offer as if it answered ours (``process_answer`` with the
        roles swapped), so its entries are in the SRS's m-line order, matched here by label.
        """
        by_label = {a.label: a for a in result.streams if a.label is not None}
        srs_paused_before = self._srs_paused()
        for index, stream in enumerate(self._streams):
            answer = by_label.get(stream.plan.label)
            if answer is None and index < len(result.streams):
                answer = result.streams[index]
            if answer is None or stream.refused:
                continue
            if not answer.accepted:
                stream.refused = True
                self._events.append(
                    StreamRefused(self.recording_id, stream.plan.label, answer.reason or "removed")
                )
                self._actions.append(StopForks(self.recording_id, (self.fork_id(stream.plan.label),)))
                continue
            # What the SRS offered for this m-line says whether it wants media: recvonly or
            # sendrecv yes; inactive or sendonly means it paused the stream (RFC 3264 §6.1).
            offered = offer.direction_of(offer.media[answer.index])
            wants = offered in (Direction.RECVONLY, Direction.SENDRECV)
            stream.answer = replace(answer, direction=Direction.RECVONLY if wants else Direction.INACTIVE)
        if all(s.refused for s in self._streams):
            self.fail(now, 488, "the SRS removed every stream")
            return
        srs_paused = self._srs_paused()
        if self._forks_started:
            self._actions.append(UpdateForks(self.recording_id, self._fork_specs()))
        if srs_paused and not srs_paused_before:
            self._events.append(RecordingPaused(self.recording_id, "srs"))
        elif srs_paused_before and not srs_paused:
            self._events.append(RecordingResumed(self.recording_id, "srs"))

    def _srs_paused(self) -> bool:
        live = [s for s in self._streams if not s.refused]
        return bool(live) and all(s.answer is not None and s.answer.paused for s in live)

    def _timer_headers(self, request: Request, now: float) -> list[tuple[str, str]]:
        """Session-Expires for our 2xx to an SRS refresh (RFC 4028 §9), re-arming our side."""
        if not request.headers.get("Session-Expires"):
            return []
        self._apply_timer(request, now, srs_request=True)
        self._events.append(SessionRefreshed(self.recording_id, self.session_expires, "srs"))
        # We answer as UAS of this transaction: "uas" names us, "uac" the SRS.
        who = "uac" if self.refresher == "uas" else "uas"
        return [("Session-Expires", f"{self.session_expires};refresher={who}"), ("Require", "timer")]

    def _after_srs_request(self, request: Request, now: float) -> None:
        if self._snapshot_requested:
            self._want_reinvite(now)

    def _on_ack(self, event: AckReceived, now: float) -> None:
        self._awaiting_ack = False
        offer = self._offerless_offer
        if offer is None:
            self._want_reinvite(now)  # what waited for the SRS's INVITE transaction to end
            return
        self._offerless_offer = None
        sdp = _sdp_of(event.request.content_type, event.request.body)
        if sdp is None:
            self.fail(now, 488, "the ACK to our offer in a 2xx carries no SDP answer (RFC 3264 §5)")
            return
        try:
            result = process_answer(offer, parse_sdp(sdp))
        except (RemoteProtocolError, SipParseError) as exc:
            self.fail(now, 488, f"unusable SDP answer in ACK: {exc}")
            return
        self._apply_answer(result, now, first=False)
        if not self.state.terminal:
            self._want_reinvite(now)

    def _on_dialog_terminated(self, event: DialogTerminated, now: float) -> None:
        if event.dialog_id != self.dialog_id:
            return
        self.dialog_id = None
        if event.by_peer and event.request is not None:
            # The SRS's BYE; its Reason header (RFC 3326) says why.
            reason = event.request.headers.get("Reason") or "BYE from the SRS"
            self._finish(State.STOPPED, RecordingStopped(self.recording_id, "srs", reason))
        elif event.by_peer and self._inflight is not None:
            # A 408/481 to our re-INVITE ended the dialog (RFC 3261 §12.2.1.2); that response
            # comes next and fails the recording with its status (RFC 4028 §10).
            return
        else:
            self._lose(now, 500, f"dialog ended: {event.reason}")

    # --- endings --------------------------------------------------------------------------------

    def _send_bye(self, now: float, reason: str | None) -> None:
        assert self.dialog_id is not None
        request_id = self.core.bye(self.dialog_id, now, reason=reason, credentials=self.connector.credentials)
        self._new_request_ids.append(request_id)
        self.dialog_id = None

    def _lose(self, now: float, status: int, reason: str) -> None:
        """The SRS of the running session is gone: set up a new session, or fail when none is left."""
        exhausted = self.recoveries >= self.connector.recovery_attempts
        if self.state not in (State.ACTIVE, State.PAUSED) or exhausted:
            self.fail(now, status, reason)
            return
        lost = self.srs
        assert lost is not None
        if self._dialog_live():
            # Best effort: an SRS that only lost its network gets to close its side.
            self._send_bye(now, f"SIP;cause={status};text={_quoted(reason)}")
        self.dialog_id = None
        self._actions.append(StopForks(self.recording_id, self.fork_ids))
        self._events.append(SessionLost(self.recording_id, str(lost), status, reason))
        self.recoveries += 1
        self.recovering = True
        self._lost_at = now
        self._lost = f"{lost} ({status} {reason})"
        # Everything that belonged to the lost session goes; the metadata (and its ids) stays.
        self._inflight = None
        self._inflight_deadline = self._refresh_at = self._expires_at = None
        self._refresh_due = self._awaiting_ack = self._snapshot_requested = False
        self._metadata_dirty = self._forks_started = self._sent_paused = False
        self._offerless_offer = None
        self.refresher = None
        self.session_expires = self._configured_expires
        self.min_se = MIN_SESSION_EXPIRES
        for stream in self._streams:
            stream.refused = False
            stream.answer = None
        self._new_keys()
        self._sdp_session_id = self._rng.getrandbits(62)
        self._sdp_version = 0
        self._last_offer = None
        self._resources = None
        self.state = State.STARTING
        position = self.connector.srs.index(lost) + 1 if lost in self.connector.srs else 0
        self._order = self.connector.srs[position:] + self.connector.srs[:position]
        if self._health is not None:
            self._order = self._health.order(self._order, now)
        self._round = 0
        self._next_attempt(now)

    def _fail(self, status: int, reason: str) -> None:
        self._finish(State.FAILED, RecordingFailed(self.recording_id, status, reason))

    def _finish(self, state: State, event: RecordingEvent) -> None:
        if self.state.terminal:
            return
        self.state = state
        self.recovering = False
        self._attempt_deadline = self._inflight_deadline = self._refresh_at = self._expires_at = None
        self._actions.append(StopForks(self.recording_id, self.fork_ids))
        self._events.append(event)


# --- helpers ------------------------------------------------------------------------------------


def _parts(content_type: str | None, body: bytes) -> dict[str, bytes]:
    """Body parts by media type; a single-part body counts as one part."""
    if not body:
        return {}
    if content_type is None:
        raise SipParseError("a body without Content-Type")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type.startswith("multipart/"):
        return {part.media_type: part.body for part in decode_multipart(content_type, body)}
    return {media_type: body}


def _sdp_of(content_type: str | None, body: bytes) -> bytes | None:
    try:
        return _parts(content_type, body).get(SDP)
    except (MultipartError, SipParseError):
        return None


def _chosen_crypto_only(offer: SessionDescription, answer: SessionDescription) -> SessionDescription:
    """The SRS's offer with only the crypto line our answer picked per m-line (RFC 4568 §5.1.2),
    so that it reads like an answer: exactly one ``a=crypto`` per secure stream."""
    media = []
    for offered, answered in zip(offer.media, answer.media, strict=False):
        tags = {c.tag for c in answered.crypto}
        kept = tuple(
            (name, value)
            for name, value in offered.attributes
            if name != "crypto" or (value is not None and value.split(None, 1)[0] in {str(t) for t in tags})
        )
        media.append(replace(offered, attributes=kept))
    return replace(offer, media=tuple(media))


def _without_origin(sdp: SessionDescription) -> bytes:
    return bytes(replace(sdp, origin=replace(sdp.origin, session_version="0")))


def _min_se(response: Response) -> int:
    """The Min-SE of a 422 (RFC 4028 §6), 0 when it is missing or unreadable."""
    try:
        return parse_delta(response.headers.get("Min-SE") or "", name="Min-SE", maximum=2**31)
    except SipParseError:
        return 0


def _retry_after(response: Response) -> int | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return parse_delta(value.split(";", 1)[0].split("(", 1)[0].strip(), name="Retry-After", maximum=2**31)
    except SipParseError:
        return None


def _reason_of(response: Response) -> str:
    warning = response.headers.get("Warning")
    text = response.reason or ""
    return f"{text} ({warning})" if warning else text


def _quoted(text: str) -> str:
    """``text`` as a quoted-string for Reason/Warning; line breaks become spaces (quote() refuses them)."""
    return quote(text.replace("\r", " ").replace("\n", " "))


__all__ = [
    "ABANDONED_REASON",
    "Action",
    "AttemptResources",
    "PrepareAttempt",
    "RecordingSession",
    "StartForks",
    "State",
    "StopForks",
    "StreamPlan",
    "UpdateForks",
]
