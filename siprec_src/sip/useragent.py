"""The SIP user agent core: transactions, dialogs and the INVITE usage, without I/O.

``UserAgentCore`` is what the asyncio adapter drives (STYLE.md #1): ``receive(message,
source, now)``, ``handle_timer(now)``, ``get_timer()``, ``messages_to_send()`` and
``next_event()``. The transaction user above it (a recording session, the reference SRS)
sends requests and answers through handles and reacts to the events below.

What the core does on its own, because every UA must and no TU should get it wrong:
- Via (with ``rport``, RFC 3581), branch, Max-Forwards and User-Agent on every request;
- ACK for a 2xx to INVITE (RFC 3261 §13.2.2.4), re-ACK of retransmitted 2xx, ACK+BYE for a
  2xx that arrives after a CANCEL or on a second fork;
- CANCEL of a pending INVITE, deferred until a provisional response arrived (§9.1), and the
  64*T1 guard after it;
- digest authentication on 401/407 (RFC 3261 §22.2), giving up rather than looping;
- 491 glare back-off for re-INVITEs (§14.1): retry after 2.1-4 s when we own the Call-ID,
  0-2 s otherwise;
- UAS: 2xx retransmission until ACK (§13.3.1.4; BYE when it never comes), 481 for unknown
  dialogs, 500 for out-of-order CSeq (§12.2.2), 491/500 for overlapping re-INVITEs (§14.2),
  automatic 200 to OPTIONS and BYE, 200+487 for CANCEL, 400/416/420/501 for requests it can
  refuse without the TU.
"""

from __future__ import annotations

import heapq
import itertools
import random
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum, auto

from siprec_src.errors import LocalProtocolError, RemoteProtocolError
from siprec_src.sip.auth import Credentials, DigestSession, select_challenge
from siprec_src.sip.dialog import Dialog, DialogId, DialogState, dialog_id_of
from siprec_src.sip.headers import Headers, NameAddress, Via, canonical_name
from siprec_src.sip.message import (
    REASON_PHRASES,
    Request,
    Response,
    error_reason_phrase,
    parse_message,
    response_to,
)
from siprec_src.sip.syntax import SipParseError
from siprec_src.sip.target import Destination
from siprec_src.sip.transaction import (
    RequestReceived as TxRequestReceived,
)
from siprec_src.sip.transaction import (
    ResponseReceived as TxResponseReceived,
)
from siprec_src.sip.transaction import (
    StrayResponseReceived,
    TimerConfig,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from siprec_src.sip.uri import SipUri

BRANCH_MAGIC = "z9hG4bK"  # RFC 3261 §8.1.1.7


@dataclass(frozen=True, slots=True)
class UaConfig:
    user_agent: str = "siprec_src"
    contact_user: str = "siprec-src"
    allow: tuple[str, ...] = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE")
    supported: tuple[str, ...] = ("timer",)
    accept: tuple[str, ...] = ("application/sdp",)
    max_forwards: int = 70
    timers: TimerConfig = field(default_factory=TimerConfig)
    glare_retries: int = 3
    credentials: tuple[Credentials, ...] = ()


# --- events -------------------------------------------------------------------------------


class UaEvent:
    """Base class of the closed set of events the core reports to its transaction user."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ResponseReceived(UaEvent):
    """A provisional or final response to one of our requests (after auth and glare handling)."""

    request_id: int
    response: Response


@dataclass(frozen=True, slots=True)
class RequestFailed(UaEvent):
    """Our request got no final response: 408 for a timeout, 503 for a transport failure
    (§8.1.3.1), 481 for a re-INVITE whose dialog ended during its glare back-off (§14.1, §15)."""

    request_id: int
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class RequestReceived(UaEvent):
    """A request the TU must answer with ``UserAgentCore.respond(server_id, ...)``."""

    server_id: str
    request: Request
    dialog_id: DialogId | None
    source: Destination


@dataclass(frozen=True, slots=True)
class RequestCancelled(UaEvent):
    """The peer cancelled its INVITE; the core already answered 200 (CANCEL) and 487 (INVITE)."""

    server_id: str


@dataclass(frozen=True, slots=True)
class AckReceived(UaEvent):
    dialog_id: DialogId
    request: Request


@dataclass(frozen=True, slots=True)
class DialogEstablished(UaEvent):
    dialog_id: DialogId
    request_id: int | None  # our INVITE's id, or None when the peer's INVITE created it


@dataclass(frozen=True, slots=True)
class DialogTerminated(UaEvent):
    dialog_id: DialogId
    reason: str
    by_peer: bool
    request: Request | None = None  # the peer's BYE, when that is what ended it


@dataclass(frozen=True, slots=True)
class TransportLost(UaEvent):
    """The adapter could not reach ``destination``, or the peer closed the connection to it.

    Reported after the transactions toward it failed (their ``RequestFailed`` come first). A
    dialog does not end with its connection (RFC 3261 §18: the next request opens a new one),
    but a TU may take it as a hint that the peer is gone and check.
    """

    destination: Destination
    reason: str


@dataclass(frozen=True, slots=True)
class GlareBackoffStarted(UaEvent):
    """A re-INVITE met 491; it is sent again after ``delay`` seconds (RFC 3261 §14.1)."""

    request_id: int
    delay: float


# --- per-request state --------------------------------------------------------------------


class _Kind(Enum):
    RETRY = auto()  # send a request again (glare back-off)
    CANCEL_GUARD = auto()  # 64*T1 after CANCEL without a final response (§9.1)
    RETRANSMIT_2XX = auto()  # UAS 2xx retransmission (§13.3.1.4)
    FORGET_DIALOG = auto()  # drop a terminated dialog once late retransmissions are over


@dataclass(slots=True)
class _ClientRequest:
    id: int
    request: Request
    destination: Destination
    via_address: tuple[str, int] | None
    dialog_id: DialogId | None
    credentials: tuple[Credentials, ...]
    auth: DigestSession | None = None  # made at the first 401/407: most requests meet none
    tx_id: str | None = None
    provisional_seen: bool = False
    cancel_wanted: bool = False
    cancelled: bool = False
    final: bool = False
    glare_attempts: int = 0
    backing_off: bool = False  # between a 491 and the retry no re-INVITE is in progress (§14.1)
    established: DialogId | None = None
    rebody: Callable[[], tuple[bytes, str | None]] | None = None  # fresh body for a glare retry


@dataclass(slots=True)
class _ServerRequest:
    id: str
    request: Request
    source: Destination
    dialog_id: DialogId | None
    answered: bool = False


@dataclass(slots=True)
class _PendingAck:
    """A 2xx we sent to an INVITE and keep retransmitting until the ACK (§13.3.1.4)."""

    dialog_id: DialogId
    response: bytes
    destination: Destination
    interval: float
    give_up_at: float


class UserAgentCore:
    def __init__(
        self,
        config: UaConfig | None = None,
        *,
        local_addresses: dict[str, tuple[str, int]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or UaConfig()
        self.transactions = TransactionLayer(self.config.timers)
        self.local_addresses: dict[str, tuple[str, int]] = dict(local_addresses or {})
        self.dialogs: dict[DialogId, Dialog] = {}
        self._rng = rng or random.SystemRandom()
        self._next_id = 1
        # Requests are kept until their final answer and the end of their transaction; the
        # dialog an INVITE established stays findable by its request id while the dialog lives.
        self._clients: dict[int, _ClientRequest] = {}
        self._dialog_by_request: dict[int, DialogId] = {}
        self._request_by_dialog: dict[DialogId, int] = {}
        self._client_by_tx: dict[str, int] = {}
        self._servers: dict[str, _ServerRequest] = {}
        self._pending_acks: dict[DialogId, _PendingAck] = {}
        # A heap of (when, order, kind, key): a sidecar holds every dialog of the last 32 s here
        # (Timer H/J-long waits), and a scan per call was the signaling rate's first cost.
        self._deadlines: list[tuple[float, int, _Kind, object]] = []
        self._deadline_order = itertools.count()
        self._events: deque[UaEvent] = deque()
        self._outbox: list[tuple[bytes, Destination]] = []

    # --- identifiers ----------------------------------------------------------------------

    def new_tag(self) -> str:
        return f"{self._rng.getrandbits(64):016x}"

    def new_call_id(self) -> str:
        host = next(iter(self.local_addresses.values()), ("siprec-src", 0))[0]
        return f"{self._rng.getrandbits(128):032x}@{host}"

    def _new_branch(self) -> str:
        return f"{BRANCH_MAGIC}{self._rng.getrandbits(96):024x}"

    def local_contact(self, transport: str, address: tuple[str, int] | None = None) -> NameAddress:
        host, port = address or self._local(transport)
        # RFC 3261 §19.1.4 / §26.2: a TLS Contact is a sips: URI; TCP needs transport=tcp.
        scheme = "sips" if transport == "tls" else "sip"
        params: tuple[tuple[str, str | None], ...] = (("transport", "tcp"),) if transport == "tcp" else ()
        return NameAddress(SipUri(scheme, host, self.config.contact_user, None, port, params))

    def _local(self, transport: str) -> tuple[str, int]:
        try:
            return self.local_addresses[transport]
        except KeyError:
            raise LocalProtocolError(f"no local {transport} address: is that transport listening?") from None

    # --- building and sending requests ----------------------------------------------------

    def create_request(
        self,
        method: str,
        uri: SipUri,
        from_: NameAddress,
        to: NameAddress,
        *,
        transport: str = "udp",
        call_id: str | None = None,
        cseq: int = 1,
        body: bytes = b"",
        content_type: str | None = None,
        contact: NameAddress | None = None,
    ) -> Request:
        """An out-of-dialog request with a fresh From tag and Call-ID (RFC 3261 §8.1.1)."""
        headers = Headers()
        headers.add("From", str(from_ if from_.tag else from_.with_tag(self.new_tag())))
        headers.add("To", str(to))
        headers.add("Call-ID", call_id or self.new_call_id())
        headers.add("CSeq", f"{cseq} {method}")
        if method in ("INVITE", "UPDATE", "SUBSCRIBE", "REFER"):
            headers.add("Contact", str(contact or self.local_contact(transport)))
        if method in ("INVITE", "OPTIONS", "UPDATE"):
            headers.add("Allow", ", ".join(self.config.allow))
        if method in ("INVITE", "UPDATE", "OPTIONS") and self.config.supported:
            headers.add("Supported", ", ".join(self.config.supported))
        if content_type is not None:
            headers.add("Content-Type", content_type)
        return Request(method, uri, headers, body)

    def send(
        self,
        request: Request,
        destination: Destination,
        now: float,
        *,
        via_address: tuple[str, int] | None = None,
        credentials: Sequence[Credentials] | None = None,
    ) -> int:
        """Send an out-of-dialog request; returns the id its events carry."""
        if request.method in ("ACK", "CANCEL"):
            raise LocalProtocolError(f"{request.method} is sent by the core, not with send()")
        client = _ClientRequest(
            id=self._take_id(),
            request=request,
            destination=destination,
            via_address=via_address,
            dialog_id=None,
            credentials=tuple(credentials if credentials is not None else self.config.credentials),
        )
        self._clients[client.id] = client
        self._transmit(client, now)
        return client.id

    def send_in_dialog(
        self,
        dialog_id: DialogId,
        method: str,
        now: float,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        credentials: Sequence[Credentials] | None = None,
        rebody: Callable[[], tuple[bytes, str | None]] | None = None,
    ) -> int:
        """Send BYE, re-INVITE, UPDATE, OPTIONS, INFO... inside a dialog.

        ``credentials`` answer a digest challenge to this request (default: the UA's own).
        ``rebody`` gives the (body, Content-Type) to send when a 491 makes the core retry a
        re-INVITE after the §14.1 back-off; without it the first body is sent again.
        """
        dialog = self._dialog(dialog_id)
        request = dialog.create_request(method, body=body, content_type=content_type)
        for name, value in headers:
            request.headers.add(name, value)
        if method in ("INVITE", "UPDATE"):
            request.headers.add("Allow", ", ".join(self.config.allow))
            if self.config.supported:
                request.headers.add("Supported", ", ".join(self.config.supported))
        client = _ClientRequest(
            id=self._take_id(),
            request=request,
            destination=self._next_hop(dialog),
            via_address=None,
            dialog_id=dialog_id,
            credentials=tuple(credentials if credentials is not None else self.config.credentials),
            rebody=rebody,
        )
        self._clients[client.id] = client
        self._transmit(client, now)
        if method == "BYE":
            # RFC 3261 §15.1.1: the dialog ends when the BYE is sent, whatever the answer.
            self._terminate(dialog_id, "BYE sent", now, by_peer=False)
        return client.id

    def bye(
        self,
        dialog_id: DialogId,
        now: float,
        *,
        reason: str | None = None,
        credentials: Sequence[Credentials] | None = None,
    ) -> int:
        headers = [("Reason", reason)] if reason else []
        return self.send_in_dialog(dialog_id, "BYE", now, headers=headers, credentials=credentials)

    def cancel(self, request_id: int, now: float) -> None:
        """Cancel our pending INVITE (RFC 3261 §9.1); harmless when it already got a final answer."""
        client = self._clients.get(request_id)
        if client is None or client.request.method != "INVITE" or client.final or client.cancelled:
            return
        client.cancel_wanted = True
        if client.provisional_seen:
            self._send_cancel(client, now)

    def dialog_of(self, request_id: int) -> DialogId | None:
        client = self._clients.get(request_id)
        if client is None:
            return self._dialog_by_request.get(request_id)
        return client.established or client.dialog_id

    def awaiting_answer(self, method: str | None = None) -> int:
        """Requests we sent (of ``method``, or any) that have no final answer yet.

        A TU that is shutting down waits for this to reach 0 (bounded) before it closes the
        transport: a BYE lost on the wire is only resent while the transport lives (RFC 3261
        §17.1.2.2, Timer E).
        """
        return sum(
            1
            for client in self._clients.values()
            if not client.final and (method is None or client.request.method == method)
        )

    def dialog(self, dialog_id: DialogId) -> Dialog | None:
        return self.dialogs.get(dialog_id)

    def _take_id(self) -> int:
        value = self._next_id
        self._next_id += 1
        return value

    def _dialog(self, dialog_id: DialogId) -> Dialog:
        dialog = self.dialogs.get(dialog_id)
        if dialog is None or dialog.state is DialogState.TERMINATED:
            raise LocalProtocolError(f"no such dialog: {dialog_id}")
        return dialog

    def _stamp(self, request: Request, destination: Destination, via_address: tuple[str, int] | None) -> None:
        """Top Via with a new branch and rport (RFC 3261 §8.1.1.7, RFC 3581), plus the fixed headers."""
        host, port = via_address or self._local(destination.transport)
        if "Max-Forwards" not in request.headers:
            request.headers.add("Max-Forwards", str(self.config.max_forwards))
        if self.config.user_agent and "User-Agent" not in request.headers:
            request.headers.add("User-Agent", self.config.user_agent)
        # Last, so that the parsed view it leaves is not dropped by another change.
        branch = (("branch", self._new_branch()), ("rport", None))
        request.set_via(Via(destination.transport.upper(), host, port, branch))

    def _transmit(self, client: _ClientRequest, now: float) -> None:
        self._stamp(client.request, client.destination, client.via_address)
        if client.tx_id is not None:
            self._client_by_tx.pop(client.tx_id, None)
        client.tx_id = self.transactions.send_request(client.request, client.destination, now)
        self._client_by_tx[client.tx_id] = client.id
        self._pump(now)

    def _send_cancel(self, client: _ClientRequest, now: float) -> None:
        # RFC 3261 §9.1: same Request-URI, Call-ID, From, To, CSeq number and top Via as the INVITE.
        invite = client.request
        headers = Headers()
        headers.add("Via", invite.headers.get_all("Via")[0])
        for name in ("Route",):
            for value in invite.headers.get_all(name):
                headers.add(name, value)
        for name in ("From", "To", "Call-ID"):
            headers.add(name, invite.headers.get(name) or "")
        headers.add("CSeq", f"{invite.cseq.number} CANCEL")
        headers.add("Max-Forwards", str(self.config.max_forwards))
        cancel = Request("CANCEL", invite.uri, headers)
        client.cancelled = True
        self.transactions.send_request(cancel, client.destination, now)
        self._add_deadline(now + 64 * self.config.timers.t1, _Kind.CANCEL_GUARD, client.id)
        self._pump(now)

    def _next_hop(self, dialog: Dialog) -> Destination:
        """Where an in-dialog request goes: the first route, else the remote target (§12.2.1.1).

        The core cannot resolve host names; when the next hop is not an IP literal the dialog's
        original destination is used (for SIPREC the SRS's Contact is its own address).
        """
        hop = dialog.route_set[0].uri if dialog.route_set else dialog.remote_target
        fallback = dialog.destination
        if isinstance(hop, SipUri) and _is_ip(hop.host):
            transport = hop.transport or (fallback.transport if fallback else "udp")
            if hop.secure:
                transport = "tls"
            port = hop.port or (5061 if transport == "tls" else 5060)
            if transport in ("udp", "tcp", "tls"):
                return Destination(transport, hop.host, port)
        if fallback is None:
            raise LocalProtocolError(f"cannot route an in-dialog request to {hop}")
        return fallback

    # --- answering requests ---------------------------------------------------------------

    def respond(
        self,
        server_id: str,
        status: int,
        now: float,
        *,
        reason: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Response:
        """Answer a request the core reported with ``RequestReceived``."""
        server = self._servers.get(server_id)
        if server is None or server.answered:
            raise LocalProtocolError(f"no unanswered request {server_id}")
        request = server.request
        dialog = self.dialogs.get(server.dialog_id) if server.dialog_id else None
        to_tag = dialog.id.local_tag if dialog else self.new_tag()
        response = response_to(request, status, reason, to_tag=to_tag, body=body, content_type=content_type)
        for name, value in headers:
            response.headers.add(name, value)
        if request.method in ("INVITE", "UPDATE") and 200 <= status < 300:
            contact = dialog.local_contact if dialog else self.local_contact(server.source.transport)
            response.headers.set("Contact", str(contact))
            response.headers.set("Allow", ", ".join(self.config.allow))
            if self.config.supported:
                response.headers.set("Supported", ", ".join(self.config.supported))
        if self.config.user_agent:
            response.headers.add("Server", self.config.user_agent)
        if status >= 200:
            server.answered = True
        self.transactions.send_response(server_id, response, now)
        if request.method == "INVITE" and 200 <= status < 300:
            self._start_uas_dialog(server, response, to_tag, now)
        if status >= 200:
            self._servers.pop(server_id, None)
        self._pump(now)
        return response

    def _start_uas_dialog(self, server: _ServerRequest, response: Response, to_tag: str, now: float) -> None:
        request = server.request
        dialog_id = server.dialog_id
        if dialog_id is None:
            dialog = Dialog.from_uas(request, to_tag, self.local_contact(server.source.transport))
            dialog.destination = server.source
            self.dialogs[dialog.id] = dialog
            dialog_id = dialog.id
            self._events.append(DialogEstablished(dialog_id, None))
        else:
            self.dialogs[dialog_id].invite_cseq = request.cseq.number
        # RFC 3261 §13.3.1.4: the UAS core retransmits the 2xx until the ACK arrives.
        t1 = self.config.timers.t1
        pending = _PendingAck(dialog_id, bytes(response), server.source, t1, now + 64 * t1)
        self._pending_acks[dialog_id] = pending
        if not server.source.reliable:
            self._add_deadline(now + t1, _Kind.RETRANSMIT_2XX, dialog_id)
        else:
            self._add_deadline(now + 64 * t1, _Kind.RETRANSMIT_2XX, dialog_id)

    # --- the sans-I/O driving surface -------------------------------------------------------

    def receive(self, message: Request | Response, source: Destination, now: float) -> None:
        self.transactions.receive(message, source, now)
        self._pump(now)

    def transport_error(self, destination: Destination, now: float, reason: str) -> None:
        """The adapter could not deliver to ``destination``: its transactions fail (§8.1.3.1)."""
        self.transactions.transport_error(destination, now, reason)
        self._pump(now)
        self._events.append(TransportLost(destination, reason))

    def reject_malformed(self, raw: bytes, error: SipParseError, source: Destination) -> None:
        """Answer an unparseable request with 400 and the reason, when enough of it is legible.

        RFC 3261 §8.2: a malformed request gets a 400 that says why; a response or a request
        whose Via, From, To, Call-ID and CSeq cannot be found is dropped (nobody to answer).
        """
        text = raw.decode("utf-8", "replace")
        if text.startswith("SIP/") or " SIP/2.0" not in text.split("\n", 1)[0]:
            return
        found: dict[str, str] = {}
        for line in text.split("\n")[1:]:
            line = line.rstrip("\r")
            if not line:
                break
            match = re.match(r"(Via|v|From|f|To|t|Call-ID|i|CSeq)[ \t]*:[ \t]*(.+)", line, re.I)
            if match:
                found.setdefault(canonical_name(match.group(1)), match.group(2))
        if set(found) != {"Via", "From", "To", "Call-ID", "CSeq"} or "ACK" in found["CSeq"]:
            return
        headers = Headers()
        try:
            for name in ("Via", "From", "To", "Call-ID", "CSeq"):
                headers.add(name, found[name])
        except LocalProtocolError:
            return
        status = error.status_hint if error.status_hint >= 400 else 400
        response = Response(status, error_reason_phrase(error), headers)
        try:
            parse_message(bytes(response))
        except SipParseError:
            return  # the fields a response must echo are themselves broken: nobody to answer
        self.transactions.send_stateless(response, source)
        self._outbox.extend(self.transactions.messages_to_send())

    def handle_timer(self, now: float) -> None:
        self.transactions.handle_timer(now)
        # What is due now, in deadline order (ties in the order they were set); deadlines a
        # firing sets for later wait for the next call, as before.
        due = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            due.append(heapq.heappop(deadlines))
        for _, _, kind, key in due:
            self._fire(kind, key, now)
        self._pump(now)

    def get_timer(self) -> float | None:
        mine = self._deadlines[0][0] if self._deadlines else None
        tx = self.transactions.get_timer()
        if mine is None or (tx is not None and tx < mine):
            return tx
        return mine

    def messages_to_send(self) -> list[tuple[bytes, Destination]]:
        out = self._outbox
        self._outbox = []
        return out

    def next_event(self) -> UaEvent | None:
        return self._events.popleft() if self._events else None

    # --- internals ------------------------------------------------------------------------

    def _add_deadline(self, when: float, kind: _Kind, key: object) -> None:
        heapq.heappush(self._deadlines, (when, next(self._deadline_order), kind, key))

    def _fire(self, kind: _Kind, key: object, now: float) -> None:
        if kind is _Kind.RETRY:
            assert isinstance(key, int)
            client = self._clients.get(key)
            if client is None:
                return
            client.backing_off = False
            dialog = self.dialogs.get(client.dialog_id) if client.dialog_id is not None else None
            if dialog is None or dialog.state is DialogState.TERMINATED:
                # RFC 3261 §15: once a BYE (ours or the peer's) ended the dialog during the
                # back-off, no request may be sent in it; the retry is given up.
                client.final = True
                self._forget(client)
                self._events.append(RequestFailed(client.id, 481, "dialog ended during the glare back-off"))
                return
            # A retried request is a new request: new CSeq (RFC 3261 §14.1 "attempt once more").
            dialog.local_cseq += 1
            dialog.invite_cseq = dialog.local_cseq
            client.request.headers.set("CSeq", f"{dialog.local_cseq} {client.request.method}")
            if client.rebody is not None:
                # The TU's session may have moved on during the back-off (it answered the peer's
                # offer): the retried offer must be current, with a greater o= version (RFC 3264 §8).
                body, content_type = client.rebody()
                client.request.body = body
                if content_type is not None:
                    client.request.headers.set("Content-Type", content_type)
            self._transmit(client, now)
        elif kind is _Kind.CANCEL_GUARD:
            assert isinstance(key, int)
            client = self._clients.get(key)
            if client is not None and not client.final:
                client.final = True
                self._events.append(RequestFailed(client.id, 408, "no final response after CANCEL"))
        elif kind is _Kind.FORGET_DIALOG:
            assert isinstance(key, DialogId)
            self.dialogs.pop(key, None)
            request_id = self._request_by_dialog.pop(key, None)
            if request_id is not None:
                self._dialog_by_request.pop(request_id, None)
        elif kind is _Kind.RETRANSMIT_2XX:
            assert isinstance(key, DialogId)
            pending = self._pending_acks.get(key)
            if pending is None:
                return
            if now >= pending.give_up_at:
                # RFC 3261 §13.3.1.4: no ACK within 64*T1 -> confirm then terminate with BYE.
                del self._pending_acks[key]
                if key in self.dialogs and self.dialogs[key].state is not DialogState.TERMINATED:
                    self.bye(key, now, reason='SIP;cause=408;text="no ACK"')
                return
            self._outbox.append((pending.response, pending.destination))
            pending.interval = min(pending.interval * 2, self.config.timers.t2)
            self._add_deadline(min(now + pending.interval, pending.give_up_at), _Kind.RETRANSMIT_2XX, key)

    def _pump(self, now: float) -> None:
        """Move transaction events up through the dialog logic and collect what to send."""
        while (event := self.transactions.next_event()) is not None:
            if isinstance(event, TxResponseReceived):
                self._on_response(event.transaction_id, event.response, now)
            elif isinstance(event, StrayResponseReceived):
                self._on_stray_response(event.response, now)
            elif isinstance(event, TxRequestReceived):
                self._on_request(event.transaction_id, event.request, event.source, now)
            elif isinstance(event, TransactionTimedOut):
                self._on_failure(event.transaction_id, 408, "Request Timeout", now)
            elif isinstance(event, TransportFailed):
                self._on_failure(event.transaction_id, 503, f"transport failure: {event.reason}", now)
            elif isinstance(event, TransactionTerminated):
                self._on_transaction_ended(event.transaction_id)
        self._outbox.extend(self.transactions.messages_to_send())

    # client side

    def _client_for(self, tx_id: str) -> _ClientRequest | None:
        request_id = self._client_by_tx.get(tx_id)
        return None if request_id is None else self._clients.get(request_id)

    def _on_failure(self, tx_id: str, status: int, reason: str, now: float) -> None:
        client = self._client_for(tx_id)
        if client is None or client.final:
            return
        client.final = True
        self._forget(client)
        self._events.append(RequestFailed(client.id, status, reason))
        if client.dialog_id is not None and client.dialog_id in self.dialogs:
            # RFC 3261 §12.2.1.2: a 408 or no answer to an in-dialog request ends the dialog.
            self._terminate(client.dialog_id, reason, now, by_peer=False)

    def _forget(self, client: _ClientRequest) -> None:
        """Drop a request that got its final answer, unless more may come for it.

        Only a 2xx to an INVITE is followed by more: retransmissions to ACK and other forks'
        answers, for as long as its transaction stays in Accepted (RFC 6026 §8.4). After any
        other final answer the transaction absorbs what comes (RFC 3261 §17.1.1.2, §17.1.2.2)
        and nothing reaches the request any more, so a sidecar does not keep every BYE of the
        last Timer K (or INVITE of the last Timer D) seconds.
        """
        del self._clients[client.id]
        if client.tx_id is not None:
            self._client_by_tx.pop(client.tx_id, None)

    def _on_response(self, tx_id: str, response: Response, now: float) -> None:
        client = self._client_for(tx_id)
        if client is None:
            return  # a response to our CANCEL, or to a request whose handle is gone
        method = client.request.method
        status = response.status
        if status < 200:
            if not client.final:
                client.provisional_seen = True
                self._events.append(ResponseReceived(client.id, response))
                if client.cancel_wanted and not client.cancelled:
                    self._send_cancel(client, now)
            return
        if method == "INVITE" and 200 <= status < 300:
            self._on_invite_2xx(client, response, now)
            return
        if client.final:
            return
        if status in (401, 407) and self._retry_with_auth(client, response, now):
            return
        glare = status == 491 and method == "INVITE" and client.dialog_id is not None
        if glare and self._glare_backoff(client, now):
            return
        client.final = True
        self._forget(client)
        if client.dialog_id is not None and status in (408, 481):
            self._terminate(client.dialog_id, f"{status} {response.reason}", now, by_peer=True)
        self._events.append(ResponseReceived(client.id, response))

    def _retry_with_auth(self, client: _ClientRequest, response: Response, now: float) -> bool:
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        request = client.request
        try:
            challenge = select_challenge(response.headers.get_all(header))
            if client.auth is None:
                client.auth = DigestSession(client.credentials)
            answer = client.auth.answer(challenge, request.method, str(request.uri), request.body)
        except RemoteProtocolError:
            # A challenge we cannot answer (another scheme, an unknown algorithm or qop, -sess
            # without qop) ends the request with its 401/407, as a wrong password does.
            return False
        if answer is None:
            return False
        auth_header = "Authorization" if response.status == 401 else "Proxy-Authorization"
        request.headers.set(auth_header, answer)
        # RFC 3261 §22.2: the retried request is new, so its CSeq grows.
        if client.dialog_id is not None and client.dialog_id in self.dialogs:
            dialog = self.dialogs[client.dialog_id]
            dialog.local_cseq += 1
            number = dialog.local_cseq
            if request.method == "INVITE":
                dialog.invite_cseq = number
        else:
            number = request.cseq.number + 1
        request.headers.set("CSeq", f"{number} {request.method}")
        self._transmit(client, now)
        return True

    def _glare_backoff(self, client: _ClientRequest, now: float) -> bool:
        if client.glare_attempts >= self.config.glare_retries:
            return False
        client.glare_attempts += 1
        client.backing_off = True
        dialog = self.dialogs.get(client.dialog_id) if client.dialog_id else None
        if dialog is None:
            return False
        # RFC 3261 §14.1: the owner of the Call-ID (the UAC that created the dialog) waits
        # 2.1-4 s in 10 ms units, the other side 0-2 s.
        delay = self._rng.randint(210, 400) / 100 if dialog.is_uac else self._rng.randint(0, 200) / 100
        self._add_deadline(now + delay, _Kind.RETRY, client.id)
        self._events.append(GlareBackoffStarted(client.id, delay))
        return True

    def _on_invite_2xx(self, client: _ClientRequest, response: Response, now: float) -> None:
        if client.request.body:
            # After a 2xx the INVITE is never sent again (no auth or glare retry, RFC 6026 §8.4),
            # yet it is kept until Timer M for other forks' 2xx, which need its headers only:
            # its body (SDP and metadata, a few KiB) is not kept for those 32 s.
            invite = client.request
            client.request = Request(invite.method, invite.uri, invite.headers)
        dialog_id = dialog_id_of(response)
        if dialog_id is None:
            return
        dialog = self.dialogs.get(dialog_id)
        if client.dialog_id is not None:
            # 2xx to a re-INVITE: target refresh and ACK with the re-INVITE's CSeq.
            if dialog is None:
                return
            dialog.refresh_target(response)
            self._send_ack(dialog)
            if not client.final:
                client.final = True
                self._events.append(ResponseReceived(client.id, response))
            return
        if dialog is not None:
            self._send_ack(dialog)  # retransmitted 2xx: ACK again (RFC 3261 §13.2.2.4)
            return
        dialog = Dialog.from_uac(client.request, response)
        dialog.destination = client.destination
        dialog_id = dialog.id  # the same value, one object for every table that keys on it
        self.dialogs[dialog_id] = dialog
        self._send_ack(dialog)
        if client.established is not None or client.cancelled:
            # A second fork, or a 2xx that crossed our CANCEL: take it down at once (§13.2.2.4, §9.1).
            self.bye(dialog_id, now, reason='SIP;cause=487;text="cancelled"' if client.cancelled else None)
            if client.established is None:
                client.final = True
                self._events.append(ResponseReceived(client.id, response))
            return
        client.established = dialog_id
        self._dialog_by_request[client.id] = dialog_id
        self._request_by_dialog[dialog_id] = client.id
        client.final = True
        self._events.append(DialogEstablished(dialog_id, client.id))
        self._events.append(ResponseReceived(client.id, response))

    def _on_stray_response(self, response: Response, now: float) -> None:
        if response.cseq.method != "INVITE" or not 200 <= response.status < 300:
            return
        dialog_id = dialog_id_of(response)
        dialog = self.dialogs.get(dialog_id) if dialog_id else None
        if dialog is not None and dialog.state is not DialogState.TERMINATED:
            self._send_ack(dialog)  # RFC 3261 §13.2.2.4: every 2xx retransmission is ACKed

    def _send_ack(self, dialog: Dialog) -> None:
        ack = dialog.create_ack()
        destination = self._next_hop(dialog)
        self._stamp(ack, destination, None)
        self.transactions.send_stateless(ack, destination)

    # server side

    def _on_request(self, tx_id: str | None, request: Request, source: Destination, now: float) -> None:
        if request.method == "ACK":
            self._on_ack(request)
            return
        if tx_id is None:
            return
        # Missing or duplicated mandatory headers were refused (400) by the transaction layer.
        if not isinstance(request.uri, SipUri):
            self._reply(tx_id, request, 416, now)  # RFC 3261 §8.2.2.1
            return
        unsupported = [tag for tag in request.header_tokens("Require") if tag not in self.config.supported]
        if unsupported and request.method not in ("CANCEL", "ACK"):
            # RFC 3261 §8.2.2.3: 420 listing what we do not support.
            self._reply(tx_id, request, 420, now, headers=[("Unsupported", ", ".join(sorted(unsupported)))])
            return
        if request.method == "CANCEL":
            self._on_cancel(tx_id, request, now)
            return
        if request.to.tag:
            self._on_in_dialog_request(tx_id, request, source, now)
            return
        if request.method == "OPTIONS":
            self._reply(tx_id, request, 200, now, with_capabilities=True)
            return
        if request.method == "BYE":
            self._reply(tx_id, request, 481, now)
            return
        if request.method not in self.config.allow:
            self._reply(tx_id, request, 501 if request.method not in _KNOWN_METHODS else 405, now)
            return
        self._servers[tx_id] = _ServerRequest(tx_id, request, source, None)
        self._events.append(RequestReceived(tx_id, request, None, source))

    def _on_in_dialog_request(self, tx_id: str, request: Request, source: Destination, now: float) -> None:
        dialog_id = dialog_id_of(request)
        dialog = self.dialogs.get(dialog_id) if dialog_id else None
        if dialog is None or dialog.state is DialogState.TERMINATED:
            self._reply(tx_id, request, 481, now)  # RFC 3261 §12.2.2
            return
        assert dialog_id is not None
        if not dialog.check_remote_cseq(request):
            self._reply(tx_id, request, 500, now, reason="Server Internal Error - CSeq out of order")
            return
        if request.method == "BYE":
            self._reply(tx_id, request, 200, now)
            # The BYE itself travels with the event: its Reason header (RFC 3326) says why.
            self._terminate(dialog_id, "BYE received", now, by_peer=True, request=request)
            return
        if request.method == "OPTIONS":
            self._reply(tx_id, request, 200, now, with_capabilities=True)
            return
        if request.method == "INVITE":
            # RFC 3261 §14.2: our own re-INVITE pending -> 491; theirs still unanswered -> 500.
            if any(
                c.dialog_id == dialog_id
                and c.request.method == "INVITE"
                and not c.final
                and not c.backing_off
                for c in self._clients.values()
            ):
                self._reply(tx_id, request, 491, now)
                return
            if any(s.dialog_id == dialog_id and s.request.method == "INVITE" for s in self._servers.values()):
                self._reply(
                    tx_id, request, 500, now, headers=[("Retry-After", str(self._rng.randint(0, 10)))]
                )
                return
        if request.method in ("INVITE", "UPDATE"):
            dialog.refresh_target(request)
        self._servers[tx_id] = _ServerRequest(tx_id, request, source, dialog_id)
        self._events.append(RequestReceived(tx_id, request, dialog_id, source))

    def _on_cancel(self, tx_id: str, cancel: Request, now: float) -> None:
        invite_tx = self.transactions.find_invite_server_transaction(cancel)
        server = self._servers.get(invite_tx) if invite_tx else None
        if invite_tx is None or server is None or server.answered:
            self._reply(tx_id, cancel, 481, now)  # RFC 3261 §9.2: nothing to cancel
            return
        self._reply(tx_id, cancel, 200, now)
        self.respond(invite_tx, 487, now)
        self._events.append(RequestCancelled(invite_tx))

    def _on_ack(self, request: Request) -> None:
        dialog_id = dialog_id_of(request)
        if dialog_id is None:
            return
        pending = self._pending_acks.get(dialog_id)
        if pending is not None and request.cseq.number >= self.dialogs[dialog_id].invite_cseq:
            del self._pending_acks[dialog_id]
        if dialog_id in self.dialogs:
            self._events.append(AckReceived(dialog_id, request))

    def _reply(
        self,
        tx_id: str,
        request: Request,
        status: int,
        now: float,
        *,
        reason: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        with_capabilities: bool = False,
    ) -> None:
        dialog_id = dialog_id_of(request) if request.headers.get("To") else None
        to_tag = dialog_id.local_tag if dialog_id else self.new_tag()
        response = response_to(request, status, reason or REASON_PHRASES.get(status, ""), to_tag=to_tag)
        for name, value in headers:
            response.headers.add(name, value)
        if with_capabilities or status in (405, 501):
            response.headers.add("Allow", ", ".join(self.config.allow))
        if with_capabilities:
            response.headers.add("Accept", ", ".join(self.config.accept))
            if self.config.supported:
                response.headers.add("Supported", ", ".join(self.config.supported))
        if self.config.user_agent:
            response.headers.add("Server", self.config.user_agent)
        self.transactions.send_response(tx_id, response, now)

    def _terminate(
        self, dialog_id: DialogId, reason: str, now: float, *, by_peer: bool, request: Request | None = None
    ) -> None:
        dialog = self.dialogs.get(dialog_id)
        if dialog is None or dialog.state is DialogState.TERMINATED:
            return
        dialog.state = DialogState.TERMINATED
        self._pending_acks.pop(dialog_id, None)
        self._events.append(DialogTerminated(dialog_id, reason, by_peer, request))
        # Kept for 64*T1 so late retransmissions still match it (and are not taken for a new
        # dialog), then dropped: a sidecar runs for months and must not grow with every call.
        self._add_deadline(now + 64 * self.config.timers.t1, _Kind.FORGET_DIALOG, dialog_id)

    def _on_transaction_ended(self, tx_id: str) -> None:
        request_id = self._client_by_tx.pop(tx_id, None)
        client = self._clients.get(request_id) if request_id is not None else None
        # A request is done once it has its final answer and its (latest) transaction is over;
        # a retried request (auth, glare) lives on under a new transaction.
        if client is not None and client.final and client.tx_id == tx_id:
            del self._clients[client.id]


_KNOWN_METHODS = frozenset(
    "INVITE ACK BYE CANCEL OPTIONS REGISTER PRACK SUBSCRIBE NOTIFY PUBLISH INFO REFER MESSAGE UPDATE".split()
)


def _is_ip(host: str) -> bool:
    if ":" in host:
        return True
    parts = host.split(".")
    return len(parts) == 4 and all(part.isdigit() and int(part) < 256 for part in parts)
