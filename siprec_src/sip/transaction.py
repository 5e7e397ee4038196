"""The SIP transaction layer (RFC 3261 §17, with the INVITE fixes of RFC 6026), sans-I/O.

``TransactionLayer`` is driven like an aioquic connection (STYLE.md #1): the caller feeds it
parsed messages with ``receive(message, source, now)``, fires its timers with
``handle_timer(now)`` once ``get_timer()`` is due, sends what ``messages_to_send()`` returns and
reads what happened from ``next_event()``. It never reads the clock and never touches a socket,
so every timer in this module is tested with a virtual clock in microseconds.

What the layer owns (and what it leaves to the transaction user, the dialog layer):

- retransmissions over UDP (Timers A, E, G) and none over TCP/TLS (§17.1.1.2, §17.1.2.2);
- the ACK for a 300-699 answer to our INVITE (§17.1.1.3); the ACK for a 2xx is the TU's, sent
  with ``send_stateless`` because it is not part of the transaction (§13.2.2.4, §17);
- absorbing retransmitted requests by answering them with the last response (§17.2.1, §17.2.2);
- the RFC 6026 "Accepted" states: every 2xx to our INVITE reaches the TU so it can ACK each
  one, and the server side leaves 2xx retransmission to the TU (RFC 6026 §8.4, §8.7);
- the §18.2.1 ``received``/``rport`` stamping of incoming requests and the §18.2.2 choice of
  where a response goes.

Decisions worth knowing:

- Transaction ids are opaque strings, unique within one layer while the transaction lives.
- A Timer B that fires after a provisional answer does nothing (§17.1.1.2: only "Calling"
  times out); an INVITE that stays in Proceeding is ended by the TU with CANCEL, and RFC 3261
  §9.1 lets us give up 64*T1 after that CANCEL if no final answer came: the layer does this
  itself (``TransactionTimedOut`` for the INVITE).
- Requests without the ``z9hG4bK`` cookie (RFC 2543 peers) are matched with the older rule of
  §17.2.3 (Request-URI, To tag, From tag, Call-ID, CSeq, top Via) rather than refused: it costs
  a few lines and keeps old gateways working. Requests *we* send must carry the cookie.
- A transport error ends every live transaction that sends to that destination, whatever its
  state; a TU that already has its final answer may ignore the ``TransportFailed``.
- A malformed request (a missing mandatory header) is answered statelessly with the parser's
  status hint when that is possible, and reported as ``MessageDiscarded``; nothing in
  ``receive`` raises for what a peer sent.
- The ``maddr`` Via parameter (multicast, §18.2.2) is not supported: responses go back to
  where the request came from.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from siprec_src.errors import LocalProtocolError
from siprec_src.sip.headers import Headers, Via
from siprec_src.sip.message import Request, Response, check_request, error_reason_phrase, response_to
from siprec_src.sip.syntax import SipParseError
from siprec_src.sip.target import Destination, response_destination, stamp_received
from siprec_src.sip.uri import Uri

# RFC 3261 §8.1.1.7: a branch that starts with this cookie was built by an RFC 3261 element,
# so it is unique on its own and can be used to match transactions.
MAGIC_COOKIE = "z9hG4bK"

# RFC 3261 §18.2.2: a response over UDP goes to the sent-by port, or 5060 when it is absent.
DEFAULT_SIP_PORT = 5060


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """The base timer values of RFC 3261 §17.1.1.1 and Table 4, in seconds."""

    t1: float = 0.5  # RTT estimate
    t2: float = 4.0  # maximum retransmit interval for non-INVITE requests and INVITE responses
    t4: float = 5.0  # maximum time a message stays in the network

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2:
            raise LocalProtocolError(f"timers need 0 < T1 <= T2, got T1={self.t1} T2={self.t2}")
        if self.t4 <= 0:
            raise LocalProtocolError(f"T4 must be positive, got {self.t4}")

    @property
    def transaction_timeout(self) -> float:
        """64*T1: Timers B, F, H, J, L and M (RFC 3261 Table 4, RFC 6026 §8.11)."""
        return 64 * self.t1

    @property
    def timer_d(self) -> float:
        """Timer D on UDP: "> 32 s" (Table 4), and never shorter than the peer's Timer G/H window.

        With a larger T1 the server keeps retransmitting its final answer for 64*T1 seconds, and
        each copy must still find our transaction to be re-ACKed.
        """
        return max(32.0, self.transaction_timeout)


DEFAULT_TIMERS = TimerConfig()


# --- Events (STYLE.md #3): a closed set, read with next_event() ----------------------------


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the TU.

    ``transaction_id`` is the server transaction to answer with ``send_response``; it is None
    for an ACK to a 2xx (RFC 3261 §17: not part of any transaction) and for an ACK that matches
    nothing; the dialog layer decides what such an ACK means.
    """

    transaction_id: str | None
    request: Request
    source: Destination


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response to one of our client transactions: provisional or final.

    In the RFC 6026 Accepted state every further 2xx (a retransmission or another fork's
    answer) comes up here too, because the TU must ACK each one (RFC 6026 §8.4).
    """

    transaction_id: str
    response: Response


@dataclass(frozen=True, slots=True)
class StrayResponseReceived:
    """A response that matches no live client transaction (RFC 3261 §17.1.3 found nothing).

    A 2xx to an INVITE whose transaction has ended must still be ACKed (and usually BYEd) by
    the TU, which is why it is surfaced rather than dropped.
    """

    response: Response
    source: Destination


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """No answer in time (Timer B, F, or the §9.1 CANCEL guard) or, for a server INVITE
    transaction, no ACK for our 300-699 answer (Timer H)."""

    transaction_id: str
    method: str


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The transport could not deliver to the transaction's destination (RFC 3261 §17.1.4, §17.2.4)."""

    transaction_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction is gone; its id means nothing any more. Always the last event of an id."""

    transaction_id: str


@dataclass(frozen=True, slots=True)
class MessageDiscarded:
    """A message was dropped because it could not be processed; ``reason`` says why (for logs)."""

    message: Request | Response
    reason: str


TransactionEvent = (
    RequestReceived
    | ResponseReceived
    | StrayResponseReceived
    | TransactionTimedOut
    | TransportFailed
    | TransactionTerminated
    | MessageDiscarded
)


class State(StrEnum):
    """Transaction states of RFC 3261 §17 and RFC 6026 (Accepted)."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


# A key in the layer's match tables: (branch, method) for clients, see _server_keys for servers.
_Key = tuple[object, ...]


# --- The transactions -----------------------------------------------------------------------


class _Transaction(ABC):
    """What every transaction shares: its id, where it sends, its timers, a link to the layer.

    Each subclass keeps its rules in a state table in its docstring; a state is entered only
    after the action that leads to it was taken (STYLE.md #4).
    """

    __slots__ = ("destination", "id", "keys", "layer", "method", "state", "timers")

    def __init__(self, layer: TransactionLayer, transaction_id: str, method: str, destination: Destination):
        self.layer = layer
        self.id = transaction_id
        self.method = method
        self.destination = destination  # where requests (client) or responses (server) go
        self.state = State.TRYING
        self.timers: dict[str, int] = {}  # timer name -> token of its live heap entry
        self.keys: tuple[_Key, ...] = ()  # the match-table keys to remove when the transaction ends

    @property
    def config(self) -> TimerConfig:
        return self.layer.timers

    @property
    def reliable(self) -> bool:
        return self.destination.reliable

    @abstractmethod
    def on_timer(self, name: str, now: float) -> None:
        """A timer this transaction armed has fired."""

    def _send(self, data: bytes) -> None:
        self.layer._outbox.append((data, self.destination))

    def _emit(self, event: TransactionEvent) -> None:
        self.layer._events.append(event)

    def _start_timer(self, name: str, delay: float, now: float) -> None:
        self.layer._schedule(self, name, now + delay)

    def _stop_timers(self, *names: str) -> None:
        for name in names:
            self.timers.pop(name, None)

    def _linger(self, name: str, delay: float, now: float) -> None:
        """Wait ``delay`` to absorb retransmissions, then end; a zero wait (reliable) ends now."""
        if delay > 0:
            self._start_timer(name, delay, now)
        else:
            self._terminate()

    def _time_out(self) -> None:
        self._emit(TransactionTimedOut(self.id, self.method))
        self._terminate()

    def _terminate(self) -> None:
        self.layer._remove(self)


class _ClientInvite(_Transaction):
    """Client INVITE transaction: RFC 3261 §17.1.1 (Figure 5) as amended by RFC 6026 §8.4.

    state       | input                        | action                                 | next
    ------------+------------------------------+----------------------------------------+-----------
    (start)     | send_request                 | send INVITE; A=T1 (UDP only); B=64*T1  | Calling
    Calling     | Timer A                      | resend INVITE; A doubles (no cap)      | Calling
    Calling     | Timer B                      | TransactionTimedOut                    | Terminated
    Calling     | 1xx                          | pass up; stop A and B                  | Proceeding
    Proceeding  | 1xx                          | pass up                                | Proceeding
    Calling/Pr. | 2xx                          | pass up; M=64*T1                       | Accepted
    Calling/Pr. | 300-699                      | pass up; send ACK; D=max(32s,64*T1)    | Completed
    Calling/Pr. | CANCEL sent (§9.1)           | guard=64*T1                            | (same)
    Calling/Pr. | guard fires                  | TransactionTimedOut                    | Terminated
    Accepted    | 2xx                          | pass up (the TU ACKs every 2xx)        | Accepted
    Accepted    | other responses              | absorb                                 | Accepted
    Accepted    | Timer M                      | -                                      | Terminated
    Completed   | 300-699                      | resend the same ACK, not passed up     | Completed
    Completed   | 2xx                          | StrayResponseReceived (TU ACKs + BYEs) | Completed
    Completed   | Timer D (0 on TCP/TLS)       | -                                      | Terminated
    any         | transport error              | TransportFailed                        | Terminated
    """

    __slots__ = ("ack", "ack_base", "interval", "wire")

    def __init__(
        self, layer: TransactionLayer, transaction_id: str, request: Request, destination: Destination
    ):
        super().__init__(layer, transaction_id, request.method, destination)
        self.wire = bytes(request)
        self.interval = self.config.t1
        self.ack: bytes | None = None
        # RFC 3261 §17.1.1.3: the ACK copies these from the INVITE. They are captured now so a TU
        # that reuses or changes its Request object afterwards cannot change our ACK.
        self.ack_base: _AckBase | None = _AckBase.of(request)

    def start(self, now: float) -> None:
        self._send(self.wire)
        if not self.reliable:
            self._start_timer("A", self.interval, now)
        self._start_timer("B", self.config.transaction_timeout, now)
        self.state = State.CALLING

    def cancel_sent(self, now: float) -> None:
        # RFC 3261 §9.1: with no final answer 64*T1 after the CANCEL, consider the INVITE
        # cancelled and destroy its transaction; the TU hears it as a timeout.
        if self.state in (State.CALLING, State.PROCEEDING) and "guard" not in self.timers:
            self._start_timer("guard", self.config.transaction_timeout, now)

    def on_response(self, response: Response, source: Destination, now: float) -> None:
        status = response.status
        if self.state in (State.CALLING, State.PROCEEDING):
            self._emit(ResponseReceived(self.id, response))
            if status < 200:
                self._stop_timers("A", "B")
                self.state = State.PROCEEDING
            elif status < 300:
                self._stop_timers("A", "B", "guard")
                self._start_timer("M", self.config.transaction_timeout, now)
                self.state = State.ACCEPTED
                self._settled()
            else:
                assert self.ack_base is not None  # kept until a final answer came
                self.ack = self.ack_base.build(response)
                self._send(self.ack)
                self._stop_timers("A", "B", "guard")
                self.state = State.COMPLETED
                self._settled()
                self._linger("D", 0.0 if self.reliable else self.config.timer_d, now)
        elif self.state == State.ACCEPTED:
            if 200 <= status < 300:
                self._emit(ResponseReceived(self.id, response))
        elif self.state == State.COMPLETED:
            if status >= 300 and self.ack is not None:
                self._send(self.ack)  # §17.1.1.2: the final answer was retransmitted, our ACK was lost
            elif 200 <= status < 300:
                self._emit(StrayResponseReceived(response, source))

    def _settled(self) -> None:
        # The INVITE is never sent again once a final answer came (only our ACK, in Completed),
        # and Accepted and Completed last 32 s: a sidecar holds the transactions of every call
        # of the last 32 s, so they keep no more than matching and absorbing need.
        self.wire = b""
        self.ack_base = None

    def on_timer(self, name: str, now: float) -> None:
        if name == "A" and self.state == State.CALLING:
            self._send(self.wire)
            self.interval *= 2
            self._start_timer("A", self.interval, now)
        elif (name == "B" and self.state == State.CALLING) or name == "guard":
            self._time_out()
        elif name in ("D", "M"):
            self._terminate()


class _ClientNonInvite(_Transaction):
    """Client non-INVITE transaction (CANCEL included): RFC 3261 §17.1.2 (Figure 6).

    state       | input                   | action                                  | next
    ------------+-------------------------+-----------------------------------------+-----------
    (start)     | send_request            | send request; E=T1 (UDP only); F=64*T1  | Trying
    Trying      | Timer E                 | resend; E=min(2E, T2)                   | Trying
    Trying/Pr.  | 1xx                     | pass up                                 | Proceeding
    Proceeding  | Timer E                 | resend; E=T2                            | Proceeding
    Trying/Pr.  | Timer F                 | TransactionTimedOut                     | Terminated
    Trying/Pr.  | 200-699                 | pass up; K=T4 (0 on TCP/TLS)            | Completed
    Completed   | any response            | absorb                                  | Completed
    Completed   | Timer K                 | -                                       | Terminated
    any         | transport error         | TransportFailed                         | Terminated
    """

    __slots__ = ("interval", "wire")

    def __init__(
        self, layer: TransactionLayer, transaction_id: str, request: Request, destination: Destination
    ):
        super().__init__(layer, transaction_id, request.method, destination)
        self.wire = bytes(request)
        self.interval = self.config.t1

    def start(self, now: float) -> None:
        self._send(self.wire)
        if not self.reliable:
            self._start_timer("E", self.interval, now)
        self._start_timer("F", self.config.transaction_timeout, now)
        self.state = State.TRYING

    def on_response(self, response: Response, source: Destination, now: float) -> None:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return  # Completed: §17.1.2.2 absorbs retransmitted finals
        self._emit(ResponseReceived(self.id, response))
        if response.status < 200:
            self.state = State.PROCEEDING
        else:
            self._stop_timers("E", "F")
            self.state = State.COMPLETED
            self.wire = b""  # never sent again: Completed only absorbs (kept for Timer K)
            self._linger("K", 0.0 if self.reliable else self.config.t4, now)

    def on_timer(self, name: str, now: float) -> None:
        if name == "E" and self.state in (State.TRYING, State.PROCEEDING):
            self._send(self.wire)
            # §17.1.2.2: back off up to T2 while Trying; once a provisional came, poll every T2.
            if self.state == State.PROCEEDING:
                self.interval = self.config.t2
            else:
                self.interval = min(2 * self.interval, self.config.t2)
            self._start_timer("E", self.interval, now)
        elif name == "F":
            self._time_out()
        elif name == "K":
            self._terminate()


class _ServerTransaction(_Transaction):
    """What both server transactions share: where the request came from, the last response's bytes.

    The request itself goes up to the TU at ``start`` and is not kept: retransmissions are
    matched by the layer's keys and answered from ``last_wire``, for up to 32 s (Timers J, L).
    """

    __slots__ = ("last_to_tag", "last_wire", "rfc2543", "source")

    def __init__(
        self,
        layer: TransactionLayer,
        transaction_id: str,
        method: str,
        source: Destination,
        destination: Destination,
        rfc2543: bool,
    ):
        super().__init__(layer, transaction_id, method, destination)
        self.source = source
        self.rfc2543 = rfc2543
        self.last_wire: bytes | None = None
        self.last_to_tag: str | None = None  # of the last response, for RFC 2543 ACK matching

    def _respond(self, response: Response) -> None:
        wire = bytes(response)
        self._send(wire)
        self.last_wire = wire
        if self.rfc2543:
            self.last_to_tag = response.to.tag

    def _resend_last(self) -> None:
        if self.last_wire is not None:
            self._send(self.last_wire)

    @abstractmethod
    def start(self, request: Request, now: float) -> None:
        """Pass ``request`` up and enter the first state (send, arm timers)."""

    @abstractmethod
    def on_request(self, request: Request, now: float) -> None:
        """A retransmission of the request (or an ACK) arrived."""

    @abstractmethod
    def send_response(self, response: Response, now: float) -> None:
        """The TU answers."""


class _ServerInvite(_ServerTransaction):
    """Server INVITE transaction: RFC 3261 §17.2.1 (Figure 7) as amended by RFC 6026 §8.7.

    state       | input                   | action                                      | next
    ------------+-------------------------+---------------------------------------------+-----------
    (start)     | INVITE                  | pass up; send 100 Trying                    | Proceeding
    Proceeding  | INVITE retransmission   | resend the last provisional                 | Proceeding
    Proceeding  | TU sends 1xx            | send                                        | Proceeding
    Proceeding  | TU sends 2xx            | send; L=64*T1                               | Accepted
    Proceeding  | TU sends 300-699        | send; G=T1 (UDP only); H=64*T1              | Completed
    Accepted    | INVITE retransmission   | absorb (the TU retransmits its 2xx)         | Accepted
    Accepted    | ACK                     | pass up as RequestReceived(None, ...)       | Accepted
    Accepted    | TU sends 2xx            | send (a TU retransmission)                  | Accepted
    Accepted    | Timer L                 | -                                           | Terminated
    Completed   | INVITE retransmission   | resend the final answer                     | Completed
    Completed   | Timer G                 | resend the final answer; G=min(2G, T2)      | Completed
    Completed   | Timer H                 | TransactionTimedOut (the ACK never came)    | Terminated
    Completed   | ACK                     | absorb; I=T4 (0 on TCP/TLS)                 | Confirmed
    Confirmed   | INVITE or ACK           | absorb                                      | Confirmed
    Confirmed   | Timer I                 | -                                           | Terminated
    any         | transport error         | TransportFailed                             | Terminated
    """

    __slots__ = ("interval",)

    def __init__(
        self,
        layer: TransactionLayer,
        transaction_id: str,
        method: str,
        source: Destination,
        destination: Destination,
        rfc2543: bool,
    ):
        super().__init__(layer, transaction_id, method, source, destination, rfc2543)
        self.interval = self.config.t1

    def start(self, request: Request, now: float) -> None:
        self._emit(RequestReceived(self.id, request, self.source))
        # §17.2.1: answer 100 at once (we cannot know the TU will answer within 200 ms), so the
        # client stops retransmitting; §8.2.6.1 copies a Timestamp into it.
        trying = response_to(request, 100)
        timestamp = request.headers.get("Timestamp")
        if timestamp is not None:
            trying.headers.add("Timestamp", timestamp)
        self._respond(trying)
        self.state = State.PROCEEDING

    def on_request(self, request: Request, now: float) -> None:
        # Accepted and Confirmed absorb: RFC 6026 §8.7 and §17.2.1.
        if self.state in (State.PROCEEDING, State.COMPLETED):
            self._resend_last()

    def acknowledged_by(self, ack: Request) -> bool:
        """Whether ``ack`` belongs to this transaction (always, unless matched by the 2543 rule)."""
        if not self.rfc2543:
            return True
        # §17.2.3: an RFC 2543 ACK also has the To tag of the response it acknowledges.
        return self.last_wire is not None and self.last_to_tag == ack.to.tag

    def on_ack(self, ack: Request, source: Destination, now: float) -> None:
        if self.state == State.ACCEPTED:
            # RFC 6026 §8.7: the ACK to a 2xx belongs to the TU (it is outside the transaction).
            self._emit(RequestReceived(None, ack, source))
        elif self.state == State.COMPLETED:
            self._stop_timers("G", "H")
            self.state = State.CONFIRMED
            self._linger("I", 0.0 if self.reliable else self.config.t4, now)
        # Proceeding (no final answer yet, the ACK is meaningless) and Confirmed: absorb.

    def send_response(self, response: Response, now: float) -> None:
        status = response.status
        if self.state == State.PROCEEDING:
            self._respond(response)
            if status < 200:
                return
            if status < 300:
                self._start_timer("L", self.config.transaction_timeout, now)
                self.state = State.ACCEPTED
            else:
                if not self.reliable:
                    self._start_timer("G", self.interval, now)
                self._start_timer("H", self.config.transaction_timeout, now)
                self.state = State.COMPLETED
        elif self.state == State.ACCEPTED and 200 <= status < 300:
            # RFC 6026 §8.7: 2xx retransmissions from the TU go out; we never make our own.
            self._respond(response)
        else:
            raise LocalProtocolError(
                f"cannot send {status} on INVITE server transaction {self.id} in state {self.state}"
            )

    def on_timer(self, name: str, now: float) -> None:
        if name == "G" and self.state == State.COMPLETED:
            self._resend_last()
            self.interval = min(2 * self.interval, self.config.t2)
            self._start_timer("G", self.interval, now)
        elif name == "H":
            self._time_out()
        elif name in ("I", "L"):
            self._terminate()


class _ServerNonInvite(_ServerTransaction):
    """Server non-INVITE transaction (CANCEL included): RFC 3261 §17.2.2 (Figure 8).

    state       | input                   | action                                  | next
    ------------+-------------------------+-----------------------------------------+-----------
    (start)     | request                 | pass up                                 | Trying
    Trying      | retransmission          | absorb (nothing to answer with yet)     | Trying
    Trying/Pr.  | TU sends 1xx            | send                                    | Proceeding
    Proceeding  | retransmission          | resend the last provisional             | Proceeding
    Trying/Pr.  | TU sends 200-699        | send; J=64*T1 (0 on TCP/TLS)            | Completed
    Completed   | retransmission          | resend the final answer                 | Completed
    Completed   | Timer J                 | -                                       | Terminated
    any         | transport error         | TransportFailed                         | Terminated
    """

    __slots__ = ()

    def start(self, request: Request, now: float) -> None:
        self._emit(RequestReceived(self.id, request, self.source))
        self.state = State.TRYING

    def on_request(self, request: Request, now: float) -> None:
        if self.state in (State.PROCEEDING, State.COMPLETED):
            self._resend_last()

    def send_response(self, response: Response, now: float) -> None:
        if self.state not in (State.TRYING, State.PROCEEDING):
            raise LocalProtocolError(
                f"cannot send {response.status} on {self.method} server transaction {self.id} "
                f"in state {self.state}: its final answer was already sent"
            )
        self._respond(response)
        if response.status < 200:
            self.state = State.PROCEEDING
        else:
            self.state = State.COMPLETED
            self._linger("J", 0.0 if self.reliable else self.config.transaction_timeout, now)

    def on_timer(self, name: str, now: float) -> None:
        if name == "J":
            self._terminate()


@dataclass(frozen=True, slots=True)
class _AckBase:
    """The parts of an INVITE that its non-2xx ACK repeats (RFC 3261 §17.1.1.3)."""

    uri: Uri
    top_via: str
    from_: str
    call_id: str
    cseq_number: int
    routes: tuple[str, ...]

    @classmethod
    def of(cls, invite: Request) -> _AckBase:
        return cls(
            uri=invite.uri,
            top_via=invite.headers.get_all("Via")[0],
            from_=invite.headers.get("From") or "",
            call_id=invite.headers.get("Call-ID") or "",
            cseq_number=invite.cseq.number,
            routes=tuple(invite.headers.get_all("Route")),
        )

    def build(self, response: Response) -> bytes:
        # §17.1.1.3: same Request-URI, Call-ID, From and CSeq number as the INVITE, To from the
        # response (it carries the tag), one Via equal to the INVITE's top Via, and the INVITE's
        # Route set so the ACK follows the INVITE hop by hop. Max-Forwards is mandatory (§8.1.1).
        headers = Headers()
        headers.add("Via", self.top_via)
        for route in self.routes:
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", self.from_)
        headers.add("To", response.headers.get("To") or "")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.cseq_number} ACK")
        return bytes(Request("ACK", self.uri, headers))


# --- The layer ------------------------------------------------------------------------------


class TransactionLayer:
    """All transactions of one SIP element, and the matching that routes messages to them."""

    def __init__(self, timers: TimerConfig = DEFAULT_TIMERS) -> None:
        self.timers = timers
        self._outbox: list[tuple[bytes, Destination]] = []
        self._events: deque[TransactionEvent] = deque()
        self._transactions: dict[str, _Transaction] = {}  # by id, in creation order
        self._clients: dict[_Key, _ClientInvite | _ClientNonInvite] = {}
        self._servers: dict[_Key, _ServerInvite | _ServerNonInvite] = {}
        # Deadlines as a heap of (when, token, transaction id, timer name). Cancelling a timer
        # only forgets its token, and stale entries are skipped when they reach the top, so
        # starting and stopping are O(log n) and get_timer() is O(1) amortized.
        self._heap: list[tuple[float, int, str, str]] = []
        self._tokens = itertools.count()
        self._rfc2543_ids = itertools.count(1)

    # -- sending ----------------------------------------------------------------------------

    def send_request(self, request: Request, destination: Destination, now: float) -> str:
        """Start a client transaction for ``request`` and send it; return the transaction id.

        The request's top Via must carry a ``z9hG4bK`` branch unique to this request (CANCEL
        reuses its INVITE's, §9.1). INVITE starts an INVITE transaction, anything else a
        non-INVITE one; ACK is refused: the ACK for a 2xx goes through ``send_stateless`` and
        the ACK for a 300-699 is sent by the transaction itself.
        """
        if request.method == "ACK":
            raise LocalProtocolError(
                "ACK is not sent through a client transaction: the layer ACKs 300-699 itself "
                "(RFC 3261 §17.1.1.3) and the TU sends the ACK for a 2xx with send_stateless (§13.2.2.4)"
            )
        try:
            check_request(request)  # §8.1.1: To, From, CSeq, Call-ID, Via, each once where it must be
            via = request.top_via
            cseq = request.cseq
        except SipParseError as exc:
            raise LocalProtocolError(f"cannot send {request.method}: {exc.reason}") from exc
        branch = via.branch
        if not branch or not branch.startswith(MAGIC_COOKIE) or branch == MAGIC_COOKIE:
            raise LocalProtocolError(
                f"top Via branch {branch!r} of {request.method} must start with {MAGIC_COOKIE} "
                "and be unique (RFC 3261 §8.1.1.7)"
            )
        if cseq.method != request.method:
            raise LocalProtocolError(
                f"CSeq method {cseq.method} differs from request method {request.method}"
            )
        key: _Key = (branch, request.method)
        if key in self._clients:
            raise LocalProtocolError(
                f"branch {branch} is already used by a live {request.method} transaction"
            )
        transaction_id = f"client:{request.method}:{branch}"
        tx: _ClientInvite | _ClientNonInvite
        if request.method == "INVITE":
            tx = _ClientInvite(self, transaction_id, request, destination)
        else:
            tx = _ClientNonInvite(self, transaction_id, request, destination)
        tx.keys = (key,)
        self._clients[key] = tx
        self._transactions[transaction_id] = tx
        tx.start(now)
        if request.method == "CANCEL":
            invite = self._clients.get((branch, "INVITE"))
            if isinstance(invite, _ClientInvite):
                invite.cancel_sent(now)
        return transaction_id

    def send_response(self, transaction_id: str, response: Response, now: float) -> None:
        """Send ``response`` on the server transaction ``transaction_id`` (from RequestReceived)."""
        tx = self._transactions.get(transaction_id)
        if not isinstance(tx, _ServerInvite | _ServerNonInvite):
            raise LocalProtocolError(f"no live server transaction {transaction_id!r}")
        if not 100 <= response.status <= 699:
            raise LocalProtocolError(f"status {response.status} is not a SIP status code (RFC 3261 §7.2)")
        try:
            method = response.cseq.method
        except SipParseError as exc:
            raise LocalProtocolError(f"cannot send {response.status}: {exc.reason}") from exc
        if method != tx.method:
            # §8.2.6.2: the response copies the request's CSeq; another method means another request.
            raise LocalProtocolError(f"a response to {method} cannot be sent on {transaction_id}")
        tx.send_response(response, now)

    def send_stateless(self, message: Request | Response, destination: Destination) -> None:
        """Send outside any transaction: the ACK to a 2xx, a 2xx retransmitted by the dialog layer."""
        if isinstance(message, Request) and message.method != "ACK":
            raise LocalProtocolError(
                f"{message.method} must be sent with send_request: only ACK travels without a transaction"
            )
        self._outbox.append((bytes(message), destination))

    # -- receiving --------------------------------------------------------------------------

    def receive(self, message: Request | Response, source: Destination, now: float) -> None:
        """Route one parsed message that arrived from ``source``."""
        if isinstance(message, Response):
            self._receive_response(message, source, now)
        else:
            self._receive_request(message, source, now)

    def _receive_response(self, response: Response, source: Destination, now: float) -> None:
        try:
            vias = response.via
            method = response.cseq.method
        except SipParseError as exc:
            self._events.append(MessageDiscarded(response, exc.reason))
            return
        if len(vias) != 1:
            # §8.1.3.3: a response with several Vias (or none) was not meant for a UA.
            self._events.append(MessageDiscarded(response, f"response carries {len(vias)} Via values"))
            return
        # §17.1.3: the branch of the top Via and the CSeq method identify the transaction.
        tx = self._clients.get((vias[0].branch, method))
        if tx is None:
            self._events.append(StrayResponseReceived(response, source))
            return
        tx.on_response(response, source, now)

    def _receive_request(self, request: Request, source: Destination, now: float) -> None:
        try:
            check_request(request)
            via = request.top_via
            keys = _server_keys(request, via, request.method)
        except SipParseError as exc:
            self._reject(request, source, exc)
            return
        # §18.2.1: stamp where the request really came from before anyone copies the Via.
        stamp_received(request, source)
        tx = next((self._servers[key] for key in keys if key in self._servers), None)
        if request.method == "ACK":
            if isinstance(tx, _ServerInvite) and tx.acknowledged_by(request):
                tx.on_ack(request, source, now)
            else:
                # The ACK to a 2xx has its own branch (§17.1.1.3 vs §13.2.2.4): the TU's business.
                self._events.append(RequestReceived(None, request, source))
            return
        if tx is not None:
            tx.on_request(request, now)  # a retransmission
            return
        rfc2543 = not _has_cookie(via)
        if rfc2543:
            transaction_id = f"server:{request.method}:rfc2543-{next(self._rfc2543_ids)}"
        else:
            transaction_id = f"server:{request.method}:{via.branch}@{_sent_by(via)}"
        destination = response_destination(via, source)
        server: _ServerInvite | _ServerNonInvite
        if request.method == "INVITE":
            server = _ServerInvite(self, transaction_id, request.method, source, destination, rfc2543)
        else:
            server = _ServerNonInvite(self, transaction_id, request.method, source, destination, rfc2543)
        server.keys = (keys[0],)
        self._servers[keys[0]] = server
        self._transactions[transaction_id] = server
        server.start(request, now)

    def _reject(self, request: Request, source: Destination, error: SipParseError) -> None:
        """Answer a request we cannot process statelessly, when it can be answered at all."""
        self._events.append(MessageDiscarded(request, error.reason))
        if request.method == "ACK":
            return  # §17: an ACK is never answered
        try:
            via = request.top_via
        except SipParseError:
            return  # no Via: nowhere to send an answer (§18.2.2)
        # §8.2.6.2: a final answer carries a To tag; this one belongs to no dialog.
        reason = error_reason_phrase(error)
        answer = response_to(request, error.status_hint, reason, to_tag=secrets.token_hex(8))
        self._outbox.append((bytes(answer), response_destination(via, source)))

    def find_invite_server_transaction(self, cancel: Request) -> str | None:
        """The live INVITE server transaction that ``cancel`` cancels, or None (RFC 3261 §9.2).

        §9.2 matches a CANCEL with the §17.2.3 rules, as if its method were INVITE. The
        transaction is returned in any state: a TU that already sent its final answer only
        answers the CANCEL with 200 (§9.2), one that finds None answers it with 481.
        """
        if cancel.method != "CANCEL":
            raise LocalProtocolError(f"find_invite_server_transaction takes a CANCEL, not {cancel.method}")
        try:
            keys = _server_keys(cancel, cancel.top_via, "INVITE")
        except SipParseError:
            return None
        for key in keys:
            tx = self._servers.get(key)
            if isinstance(tx, _ServerInvite):
                return tx.id
        return None

    def transport_error(self, destination: Destination, now: float, reason: str) -> None:
        """The adapter could not send to ``destination``: every live transaction using it fails."""
        for tx in [tx for tx in self._transactions.values() if tx.destination == destination]:
            self._events.append(TransportFailed(tx.id, reason))
            self._remove(tx)

    # -- time -------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest deadline at which ``handle_timer`` must be called, or None."""
        heap = self._heap
        while heap and not self._is_live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now`` (in deadline order; a timer may start another)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._is_live(entry):
                continue
            _, _, transaction_id, name = entry
            tx = self._transactions[transaction_id]
            del tx.timers[name]
            tx.on_timer(name, now)

    # -- output -----------------------------------------------------------------------------

    def messages_to_send(self) -> list[tuple[bytes, Destination]]:
        """Drain the outbox: (wire bytes, where to send them), in order."""
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> TransactionEvent | None:
        return self._events.popleft() if self._events else None

    # -- internals used by the transactions ---------------------------------------------------

    def _schedule(self, tx: _Transaction, name: str, deadline: float) -> None:
        token = next(self._tokens)
        tx.timers[name] = token
        heapq.heappush(self._heap, (deadline, token, tx.id, name))

    def _is_live(self, entry: tuple[float, int, str, str]) -> bool:
        _, token, transaction_id, name = entry
        tx = self._transactions.get(transaction_id)
        return tx is not None and tx.timers.get(name) == token

    def _remove(self, tx: _Transaction) -> None:
        if self._transactions.pop(tx.id, None) is None:
            return
        table: dict[_Key, _ClientInvite | _ClientNonInvite] | dict[_Key, _ServerInvite | _ServerNonInvite]
        table = self._clients if isinstance(tx, _ClientInvite | _ClientNonInvite) else self._servers
        for key in tx.keys:
            table.pop(key, None)
        tx.timers.clear()
        tx.state = State.TERMINATED
        self._events.append(TransactionTerminated(tx.id))


# --- Matching and Via helpers ---------------------------------------------------------------


def _has_cookie(via: Via) -> bool:
    branch = via.branch
    return branch is not None and branch.startswith(MAGIC_COOKIE)


def _sent_by(via: Via) -> str:
    host = via.host.lower()
    host = f"[{host}]" if ":" in host else host
    return host if via.port is None else f"{host}:{via.port}"


def _server_keys(request: Request, via: Via, method: str) -> list[_Key]:
    """The match-table keys a request may be found under (RFC 3261 §17.2.3).

    ``method`` is the request's method, except that an ACK looks for its INVITE and a CANCEL
    looked up for §9.2 looks for the INVITE it cancels.
    """
    if method == "ACK":
        method = "INVITE"
    if _has_cookie(via):
        # RFC 3261 rule: branch, sent-by and method.
        return [("3261", via.branch, via.host.lower(), via.port, method)]
    # RFC 2543 rule: Request-URI, To tag, From tag, Call-ID, CSeq number and top Via (the
    # method stands in for the CSeq method so that ACK and CANCEL find their INVITE).
    base = (str(request.uri), request.from_.tag, request.call_id, request.cseq.number, method, via)
    if request.method != "ACK":
        return [("2543", request.to.tag, *base)]
    # An ACK carries the To tag of the response; the INVITE had none (an initial INVITE) or
    # that same tag (a re-INVITE). _ServerInvite.acknowledged_by checks the response's tag.
    return [("2543", None, *base), ("2543", request.to.tag, *base)]


__all__ = [
    "DEFAULT_TIMERS",
    "MAGIC_COOKIE",
    "MessageDiscarded",
    "RequestReceived",
    "ResponseReceived",
    "StrayResponseReceived",
    "TimerConfig",
    "TransactionEvent",
    "TransactionLayer",
    "TransactionTerminated",
    "TransactionTimedOut",
    "TransportFailed",
]
