"""A fake network and a virtual clock for testing sans-I/O SIP cores back to back (STYLE.md #8).

Any object with the ``Core`` surface (the transaction layer, a dialog layer, a user agent)
can be attached to a ``FakeLink`` under an address. The link moves what each core puts in its
outbox to the core listening at the destination (parsed with ``parse_message``, so every
message crosses the wire format), and a ``VirtualClock`` jumps from deadline to deadline, so a
32-second Timer B takes microseconds.

    clock = VirtualClock()
    link = FakeLink(clock)
    uac = link.attach("uac", TransactionLayer(), "192.0.2.1", 5060)
    uas = link.attach("uas", TransactionLayer(), "192.0.2.2", 5060)
    link.drop(request("INVITE"))             # lose the first INVITE
    link.drop(response(200), count=None)     # lose every 200
    link.delay(request("ACK"), 0.3)          # hold every ACK back 0.3 s (reordering)
    uac.core.send_request(invite, uas.address(), clock.now)
    link.run(until=40.0)
    [p.sent_at for p in link.sent(request("INVITE"))]

What it models: a one-way ``latency`` for every packet, losses and extra delays chosen by
predicate or by position, UDP to an address where nobody listens (silently lost) and a stream
transport to such an address (the sender gets ``transport_error`` at once, as for a refused
connection). What it does not: partial stream delivery, MTU limits, duplication by the network.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from siprec_src.sip.message import Request, Response, parse_message
from siprec_src.sip.target import Destination


class Core(Protocol):
    """The sans-I/O surface the link drives (the aioquic pattern, STYLE.md #1)."""

    def receive(self, message: Request | Response, source: Destination, now: float) -> None: ...

    def handle_timer(self, now: float) -> None: ...

    def get_timer(self) -> float | None: ...

    def messages_to_send(self) -> list[tuple[bytes, Destination]]: ...

    def transport_error(self, destination: Destination, now: float, reason: str) -> None: ...


class VirtualClock:
    """Time that only moves when the test (or the link) says so; it never goes backwards."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def advance_to(self, when: float) -> None:
        if when < self.now:
            raise AssertionError(f"the clock cannot go back from {self.now} to {when}")
        self.now = when

    def advance(self, seconds: float) -> None:
        self.advance_to(self.now + seconds)


@dataclass(frozen=True, slots=True)
class Packet:
    """One message handed to the link, and what became of it."""

    index: int  # 1-based position among every packet sent on the link
    sent_at: float
    sender: str
    receiver: str | None  # None: nobody listens at the destination
    destination: Destination
    data: bytes
    message: Request | Response
    dropped: bool = False
    deliver_at: float | None = None  # None when the packet never arrives

    @property
    def summary(self) -> str:
        """``INVITE`` for a request, ``486 INVITE`` for a response (status and CSeq method)."""
        if isinstance(self.message, Request):
            return self.message.method
        return f"{self.message.status} {self.message.cseq.method}"


Predicate = Callable[[Packet], bool]


def request(method: str) -> Predicate:
    """Matches requests of ``method``."""
    return lambda packet: isinstance(packet.message, Request) and packet.message.method == method


def response(status: int | range, method: str | None = None) -> Predicate:
    """Matches responses with ``status`` (a code or a range), optionally to ``method`` (CSeq)."""
    statuses = range(status, status + 1) if isinstance(status, int) else status

    def match(packet: Packet) -> bool:
        message = packet.message
        return (
            isinstance(message, Response)
            and message.status in statuses
            and (method is None or message.cseq.method == method)
        )

    return match


def sent_by(name: str) -> Predicate:
    """Matches packets sent by the node called ``name``."""
    return lambda packet: packet.sender == name


@dataclass(slots=True)
class Node:
    """A core attached to the link at ``host:port`` (the same port for every transport)."""

    name: str
    core: Core
    host: str
    port: int

    def address(self, transport: str = "udp") -> Destination:
        return Destination(transport, self.host, self.port)


@dataclass(slots=True)
class _Rule:
    predicate: Predicate
    remaining: int | None  # None: applies forever
    extra_delay: float | None  # None: drop the packet

    def applies(self, packet: Packet) -> bool:
        if self.remaining == 0 or not self.predicate(packet):
            return False
        if self.remaining is not None:
            self.remaining -= 1
        return True


@dataclass(slots=True)
class FakeLink:
    """Connects cores by address and runs them on a virtual clock."""

    clock: VirtualClock = field(default_factory=VirtualClock)
    latency: float = 0.0
    max_steps: int = 100_000  # a guard against cores that keep each other busy forever
    packets: list[Packet] = field(default_factory=list)
    _nodes: dict[tuple[str, int], Node] = field(default_factory=dict)
    _rules: list[_Rule] = field(default_factory=list)
    _in_flight: list[tuple[float, int, Packet]] = field(default_factory=list)

    # -- wiring and faults ---------------------------------------------------------------------

    def attach(self, name: str, core: Core, host: str, port: int) -> Node:
        if (host, port) in self._nodes:
            raise AssertionError(f"{host}:{port} is already taken by {self._nodes[(host, port)].name}")
        node = Node(name, core, host, port)
        self._nodes[(host, port)] = node
        return node

    def drop(self, predicate: Predicate, count: int | None = 1) -> None:
        """Lose the next ``count`` packets that match (every one with ``count=None``)."""
        self._rules.append(_Rule(predicate, count, None))

    def drop_nth(self, n: int) -> None:
        """Lose the ``n``-th packet sent on the link (1-based, counting every sender)."""
        self._rules.append(_Rule(lambda packet: packet.index == n, 1, None))

    def delay(self, predicate: Predicate, seconds: float, count: int | None = None) -> None:
        """Deliver matching packets ``seconds`` later than the link latency."""
        self._rules.append(_Rule(predicate, count, seconds))

    # -- observation -----------------------------------------------------------------------

    def sent(self, *predicates: Predicate) -> list[Packet]:
        """Packets handed to the link (dropped ones included) that match every predicate."""
        return [packet for packet in self.packets if all(match(packet) for match in predicates)]

    def delivered(self, *predicates: Predicate) -> list[Packet]:
        return [packet for packet in self.sent(*predicates) if packet.deliver_at is not None]

    # -- running ---------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest core timer or packet arrival, or None when everything is idle."""
        deadlines = [when for node in self._nodes.values() if (when := node.core.get_timer()) is not None]
        if self._in_flight:
            deadlines.append(self._in_flight[0][0])
        return min(deadlines, default=None)

    def flush(self) -> None:
        """Move every outbox onto the wire and deliver what arrives by ``clock.now``."""
        for _ in range(self.max_steps):
            progressed = False
            for node in list(self._nodes.values()):
                for data, destination in node.core.messages_to_send():
                    self._send(node, data, destination)
                    progressed = True
            while self._in_flight and self._in_flight[0][0] <= self.clock.now:
                _, _, packet = heapq.heappop(self._in_flight)
                self._deliver(packet)
                progressed = True
            if not progressed:
                return
        raise AssertionError("messages kept flowing within one instant: are the cores looping?")

    def step(self) -> bool:
        """Advance the clock to the next deadline and process it; False when nothing is pending."""
        self.flush()
        deadline = self.next_deadline()
        if deadline is None:
            return False
        self.clock.advance_to(max(deadline, self.clock.now))
        now = self.clock.now
        for node in list(self._nodes.values()):
            when = node.core.get_timer()
            if when is not None and when <= now:
                node.core.handle_timer(now)
        self.flush()
        return True

    def run(self, until: float | None = None) -> None:
        """Process deadlines in order up to ``until`` (then set the clock there), or until idle."""
        self.flush()
        for _ in range(self.max_steps):
            deadline = self.next_deadline()
            if deadline is None or (until is not None and deadline > until):
                break
            self.step()
        else:
            raise AssertionError(f"still busy after {self.max_steps} steps at t={self.clock.now}")
        if until is not None and until > self.clock.now:
            self.clock.advance_to(until)

    # -- internals -------------------------------------------------------------------------

    def _send(self, sender: Node, data: bytes, destination: Destination) -> None:
        now = self.clock.now
        # A core that emits bytes its own parser refuses has a bug: let parse_message raise.
        receiver = self._nodes.get((destination.host, destination.port))
        packet = Packet(
            index=len(self.packets) + 1,
            sent_at=now,
            sender=sender.name,
            receiver=None if receiver is None else receiver.name,
            destination=destination,
            data=data,
            message=parse_message(data),
        )
        delay = self.latency
        dropped = False
        for rule in self._rules:
            if rule.applies(packet):
                if rule.extra_delay is None:
                    dropped = True
                else:
                    delay += rule.extra_delay
        if receiver is None and destination.reliable:
            self.packets.append(packet)
            sender.core.transport_error(destination, now, f"connection to {destination} refused")
            return
        if dropped or receiver is None:
            self.packets.append(replace(packet, dropped=dropped))
            return
        packet = replace(packet, deliver_at=now + delay)
        self.packets.append(packet)
        heapq.heappush(self._in_flight, (now + delay, packet.index, packet))

    def _deliver(self, packet: Packet) -> None:
        receiver = self._nodes[(packet.destination.host, packet.destination.port)]
        sender = next(node for node in self._nodes.values() if node.name == packet.sender)
        source = Destination(packet.destination.transport, sender.host, sender.port)
        # Each delivery parses the bytes afresh: cores may annotate the messages they receive.
        receiver.core.receive(parse_message(packet.data), source, self.clock.now)
