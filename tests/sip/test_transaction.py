"""The RFC 3261 §17 / RFC 6026 transaction layer, two layers back to back on a fake link.

Covers: the Timer A schedule over UDP and none over TCP/TLS; Timer B at 32 s in virtual time;
100 Trying at once; INVITE, 2xx, ACK and non-INVITE losses that still complete; Timer E capped
at T2 and at T2 once Proceeding; Timer F; servers absorbing retransmitted requests with their
last response; Timers G/H; the ends of transactions by Timers D, I, J, K (UDP) and at once on
TCP; RFC 6026 Accepted on both sides (2xx passed up, Timers L/M, INVITE retransmissions
absorbed); stray responses; CANCEL matching and the §9.1 CANCEL guard; transport errors; API
misuse; RFC 2543 matching; malformed requests answered 400; received/rport stamping.
Does not cover: dialogs (2xx retransmission and the ACK for 2xx are played by the test's TU),
DNS/RFC 3263 failover, maddr, stream framing (tests/sip/test_message.py).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from siprec_src.errors import LocalProtocolError
from siprec_src.sip.headers import Headers
from siprec_src.sip.message import Request, Response, parse_message, response_to
from siprec_src.sip.target import Destination
from siprec_src.sip.transaction import (
    DEFAULT_TIMERS,
    MessageDiscarded,
    RequestReceived,
    ResponseReceived,
    StrayResponseReceived,
    TimerConfig,
    TransactionEvent,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from siprec_src.sip.uri import SipUri
from tests.sip.fakenet import FakeLink, Node, Packet, VirtualClock, request, response, sent_by

UAC_HOST, UAS_HOST, PORT = "192.0.2.1", "192.0.2.2", 5060


# --- A scripted transaction user ------------------------------------------------------------


@dataclass
class Agent:
    """Plays the TU over a TransactionLayer: records events and lets the test react to them."""

    layer: TransactionLayer = field(default_factory=TransactionLayer)
    events: list[tuple[float, TransactionEvent]] = field(default_factory=list)
    react: Callable[[TransactionEvent, float], None] | None = None
    _jobs: list[tuple[float, int, Callable[[float], None]]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    # The Core surface the link drives.
    def receive(self, message: Request | Response, source: Destination, now: float) -> None:
        self.layer.receive(message, source, now)
        self._drain(now)

    def handle_timer(self, now: float) -> None:
        self.layer.handle_timer(now)
        while self._jobs and self._jobs[0][0] <= now:
            _, _, job = self._jobs.pop(0)
            job(now)
        self._drain(now)

    def get_timer(self) -> float | None:
        deadlines = [
            d for d in (self.layer.get_timer(), self._jobs[0][0] if self._jobs else None) if d is not None
        ]
        return min(deadlines, default=None)

    def messages_to_send(self) -> list[tuple[bytes, Destination]]:
        return self.layer.messages_to_send()

    def transport_error(self, destination: Destination, now: float, reason: str) -> None:
        self.layer.transport_error(destination, now, reason)
        self._drain(now)

    # TU helpers.
    def at(self, when: float, job: Callable[[float], None]) -> None:
        """Run ``job(now)`` at virtual time ``when`` (a TU timer, e.g. a 2xx retransmission)."""
        self._jobs.append((when, next(self._seq), job))
        self._jobs.sort()

    def of(self, kind: type[TransactionEvent]) -> list[tuple[float, TransactionEvent]]:
        return [(t, event) for t, event in self.events if isinstance(event, kind)]

    def responses(self) -> list[tuple[float, int]]:
        return [(t, e.response.status) for t, e in self.events if isinstance(e, ResponseReceived)]

    def requests(self) -> list[tuple[float, str, str | None]]:
        return [
            (t, e.request.method, e.transaction_id) for t, e in self.events if isinstance(e, RequestReceived)
        ]

    def ended(self, transaction_id: str) -> float:
        return next(
            t
            for t, e in self.events
            if isinstance(e, TransactionTerminated) and e.transaction_id == transaction_id
        )

    def _drain(self, now: float) -> None:
        while (event := self.layer.next_event()) is not None:
            self.events.append((now, event))
            if self.react is not None:
                self.react(event, now)


@dataclass
class Net:
    clock: VirtualClock
    link: FakeLink
    uac: Agent
    uas: Agent
    uac_node: Node
    uas_node: Node

    @property
    def now(self) -> float:
        return self.clock.now


def make_net(timers: TimerConfig = DEFAULT_TIMERS) -> Net:
    clock = VirtualClock()
    link = FakeLink(clock)
    uac, uas = Agent(TransactionLayer(timers)), Agent(TransactionLayer(timers))
    uac_node = link.attach("uac", uac, UAC_HOST, PORT)
    uas_node = link.attach("uas", uas, UAS_HOST, PORT)
    return Net(clock, link, uac, uas, uac_node, uas_node)


_branches = itertools.count(1)


def make_request(
    method: str,
    transport: str = "udp",
    *,
    branch: str | None = None,
    cseq: int = 1,
    to_tag: str | None = None,
    call_id: str = "call-1@192.0.2.1",
    host: str = UAC_HOST,
) -> Request:
    headers = Headers()
    headers.add(
        "Via", f"SIP/2.0/{transport.upper()} {host}:{PORT};branch={branch or f'z9hG4bK-{next(_branches)}'}"
    )
    headers.add("Max-Forwards", "70")
    headers.add("From", "<sip:src@example.com>;tag=src-tag")
    headers.add("To", "<sip:srs@example.com>" + (f";tag={to_tag}" if to_tag else ""))
    headers.add("Call-ID", call_id)
    headers.add("CSeq", f"{cseq} {method}")
    headers.add("Contact", f"<sip:src@{host}:{PORT}>")
    return Request(method, SipUri("sip", UAS_HOST, "srs", port=PORT), headers)


def make_ack_for_2xx(ok: Response, invite: Request) -> Request:
    """The TU's ACK to a 2xx (§13.2.2.4): its own branch, To with the tag, CSeq number of the INVITE."""
    ack = make_request("ACK", invite.top_via.transport.lower(), cseq=invite.cseq.number)
    ack.headers.set("To", ok.headers.get("To") or "")
    return ack


def answer_with(net: Net, status: int, *, method: str = "INVITE") -> None:
    """The UAS TU answers every new ``method`` request with ``status`` at once."""

    def react(event: TransactionEvent, now: float) -> None:
        if isinstance(event, RequestReceived) and event.transaction_id and event.request.method == method:
            net.uas.layer.send_response(
                event.transaction_id, response_to(event.request, status, to_tag="uas"), now
            )

    net.uas.react = react


def ack_every_2xx(net: Net, invite: Request) -> None:
    """The UAC TU ACKs every 2xx it is given, statelessly (RFC 3261 §13.2.2.4)."""

    def react(event: TransactionEvent, now: float) -> None:
        if isinstance(event, ResponseReceived | StrayResponseReceived) and event.response.is_success:
            ack = make_ack_for_2xx(event.response, invite)
            net.uac.layer.send_stateless(ack, net.uas_node.address(invite.top_via.transport.lower()))

    net.uac.react = react


def times(packets: list[Packet]) -> list[float]:
    return [packet.sent_at for packet in packets]


def gaps(values: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(values)]


# --- Client INVITE: Timers A and B, 100 Trying ---------------------------------------------


def test_timer_a_doubles_over_udp_and_timer_b_fires_at_32s_in_microseconds() -> None:
    started = time.perf_counter()
    clock = VirtualClock()
    link = FakeLink(clock)
    uac = Agent()
    link.attach("uac", uac, UAC_HOST, PORT)  # nobody listens at the UAS address: UDP is lost
    tx = uac.layer.send_request(make_request("INVITE"), Destination("udp", UAS_HOST, PORT), clock.now)
    link.run(until=100.0)
    elapsed = time.perf_counter() - started

    sends = times(link.sent(request("INVITE")))
    assert sends == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert gaps(sends) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert [(t, e) for t, e in uac.events] == [
        (32.0, TransactionTimedOut(tx, "INVITE")),
        (32.0, TransactionTerminated(tx)),
    ]
    assert uac.layer.get_timer() is None
    assert elapsed < 0.1  # 100 s of SIP time


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_no_retransmission_over_a_reliable_transport(transport: str) -> None:
    net = make_net()
    net.link.drop(request("INVITE"), count=None)  # a silent peer
    tx = net.uac.layer.send_request(make_request("INVITE", transport), net.uas_node.address(transport), 0.0)
    net.link.run(until=100.0)
    assert times(net.link.sent(request("INVITE"))) == [0.0]
    assert net.uac.of(TransactionTimedOut) == [(32.0, TransactionTimedOut(tx, "INVITE"))]


def test_100_trying_is_sent_at_once_and_stops_timer_a() -> None:
    net = make_net()
    tx = net.uac.layer.send_request(make_request("INVITE"), net.uas_node.address(), 0.0)
    net.link.run(until=60.0)
    trying = net.link.sent(response(100))
    assert [(p.sent_at, p.sender) for p in trying] == [(0.0, "uas")]
    assert net.uac.responses() == [(0.0, 100)]
    # Proceeding: no retransmission, and Timer B no longer applies (§17.1.1.2): the INVITE waits.
    assert len(net.link.sent(request("INVITE"))) == 1
    assert net.uac.of(TransactionTimedOut) == []
    assert net.uas.requests() == [(0.0, "INVITE", net.uas.requests()[0][2])]
    assert tx.startswith("client:INVITE:")


# --- Lossy links that still complete -------------------------------------------------------


def test_lost_first_invite_is_retransmitted_and_the_call_completes() -> None:
    net = make_net()
    invite = make_request("INVITE")
    answer_with(net, 200)
    ack_every_2xx(net, invite)
    net.link.drop(request("INVITE"))
    tx = net.uac.layer.send_request(invite, net.uas_node.address(), 0.0)
    net.link.run(until=100.0)

    assert times(net.link.sent(request("INVITE"))) == [0.0, 0.5]
    assert net.uac.responses() == [(0.5, 100), (0.5, 200)]
    # The ACK to the 2xx reaches the UAS TU without a transaction (RFC 6026 §8.7).
    assert [(t, m, i) for t, m, i in net.uas.requests() if m == "ACK"] == [(0.5, "ACK", None)]
    # Timer M and Timer L end both sides 64*T1 after the 2xx.
    assert net.uac.ended(tx) == 32.5
    server_tx = net.uas.requests()[0][2]
    assert server_tx is not None and net.uas.ended(server_tx) == 32.5


def test_lost_first_200_is_retransmitted_by_the_tu_and_invite_retransmissions_are_absorbed() -> None:
    net = make_net()
    invite = make_request("INVITE")
    ack_every_2xx(net, invite)
    net.link.drop(response(200))
    net.link.drop(response(100))  # so the UAC keeps retransmitting the INVITE into Accepted
    acked: list[float] = []

    def uas_tu(event: TransactionEvent, now: float) -> None:
        if isinstance(event, RequestReceived) and event.request.method == "INVITE" and event.transaction_id:
            tx, ok = event.transaction_id, response_to(event.request, 200, to_tag="uas")
            net.uas.layer.send_response(tx, ok, now)

            # RFC 3261 §13.3.1.4: the UAS core retransmits its 2xx at T1, 2*T1, ... until the ACK.
            def retransmit(interval: float) -> Callable[[float], None]:
                def job(at: float) -> None:
                    if not acked:
                        net.uas.layer.send_stateless(ok, net.uac_node.address())
                        net.uas.at(at + interval * 2, retransmit(interval * 2))

                return job

            net.uas.at(now + 0.5, retransmit(0.5))
        elif isinstance(event, RequestReceived) and event.request.method == "ACK":
            acked.append(now)

    net.uas.react = uas_tu
    net.uac.layer.send_request(invite, net.uas_node.address(), 0.0)
    net.link.run(until=100.0)

    assert times(net.link.sent(response(200))) == [0.0, 0.5]
    assert net.uac.responses() == [(0.5, 200)]
    assert acked == [0.5]
    # The INVITE retransmission at 0.5 came while the UAS was in Accepted: absorbed, not passed up.
    assert times(net.link.delivered(request("INVITE"))) == [0.0, 0.5]
    assert [m for _, m, _ in net.uas.requests()] == ["INVITE", "ACK"]


def test_lost_ack_for_486_is_recovered_by_timer_g_and_the_same_ack() -> None:
    net = make_net()
    answer_with(net, 486)
    net.link.drop(request("ACK"))
    tx = net.uac.layer.send_request(make_request("INVITE"), net.uas_node.address(), 0.0)
    net.link.run(until=100.0)

    assert times(net.link.sent(response(486))) == [0.0, 0.5]
    acks = net.link.sent(request("ACK"))
    assert [(p.sent_at, p.dropped) for p in acks] == [(0.0, True), (0.5, False)]
    assert acks[0].data == acks[1].data  # §17.1.1.2: the ACK is the same each time
    assert net.uac.responses() == [(0.0, 100), (0.0, 486)]  # the retransmitted 486 is not passed up
    assert net.uas.of(TransactionTimedOut) == []
    assert net.uas.requests() == [(0.0, "INVITE", net.uas.requests()[0][2])]  # the ACK stayed inside
    server_tx = net.uas.requests()[0][2]
    assert server_tx is not None and net.uas.ended(server_tx) == 5.5  # Timer I = T4 after the ACK
    assert net.uac.ended(tx) == 32.0  # Timer D


def test_ack_for_a_non_2xx_follows_rfc3261_17_1_1_3() -> None:
    net = make_net()
    invite = make_request("INVITE")
    invite.headers.add("Route", "<sip:proxy1.example.com;lr>, <sip:proxy2.example.com;lr>")
    invite.headers.add("Via", "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bK-second")

    def uas_tu(event: TransactionEvent, now: float) -> None:
        if isinstance(event, RequestReceived) and event.transaction_id:
            busy = response_to(event.request, 486, to_tag="uas")
            # Play the proxy that added the second Via: it strips it on the way back (§16.7).
            busy.headers.set("Via", busy.headers.get_all("Via")[0])
            net.uas.layer.send_response(event.transaction_id, busy, now)

    net.uas.react = uas_tu
    net.uac.layer.send_request(invite, net.uas_node.address(), 0.0)
    net.link.run(until=1.0)

    (packet,) = net.link.sent(request("ACK"))
    ack = packet.message
    final = net.link.sent(response(486))[0].message
    assert isinstance(ack, Request)
    assert ack.uri == invite.uri
    assert ack.call_id == invite.call_id
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.headers.get("To") == final.headers.get("To") and ack.to.tag == "uas"
    assert str(ack.cseq) == "1 ACK"
    assert ack.headers.get_all("Via") == [invite.headers.get_all("Via")[0]]
    assert ack.headers.get_all("Route") == invite.headers.get_all("Route")
    assert ack.max_forwards == 70
    assert packet.destination == net.uas_node.address()


# --- Client non-INVITE: Timers E, F, K ------------------------------------------------------


def test_timer_e_doubles_up_to_t2_and_timer_f_times_out() -> None:
    clock = VirtualClock()
    link = FakeLink(clock)
    uac = Agent()
    link.attach("uac", uac, UAC_HOST, PORT)
    tx = uac.layer.send_request(make_request("OPTIONS"), Destination("udp", UAS_HOST, PORT), 0.0)
    link.run(until=100.0)
    sends = times(link.sent(request("OPTIONS")))
    assert gaps(sends) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert sends[-1] == 31.5
    assert uac.events == [(32.0, TransactionTimedOut(tx, "OPTIONS")), (32.0, TransactionTerminated(tx))]


def test_timer_e_is_t2_once_proceeding_and_the_server_repeats_its_provisional() -> None:
    net = make_net()

    def uas_tu(event: TransactionEvent, now: float) -> None:
        if isinstance(event, RequestReceived) and event.transaction_id:
            server_tx, req = event.transaction_id, event.request
            net.uas.layer.send_response(server_tx, response_to(req, 100), now)
            net.uas.at(
                10.0, lambda at: net.uas.layer.send_response(server_tx, response_to(req, 200, to_tag="u"), at)
            )

    net.uas.react = uas_tu
    tx = net.uac.layer.send_request(make_request("BYE"), net.uas_node.address(), 0.0)
    net.link.run(until=100.0)

    # Proceeding from t=0: the next Timer E (armed at T1) resends, then every T2.
    assert times(net.link.sent(request("BYE"))) == [0.0, 0.5, 4.5, 8.5]
    # Each retransmission was answered with the last provisional, then the TU's 200 at 10 s.
    assert [(p.sent_at, p.summary) for p in net.link.sent(sent_by("uas"))] == [
        (0.0, "100 BYE"),
        (0.5, "100 BYE"),
        (4.5, "100 BYE"),
        (8.5, "100 BYE"),
        (10.0, "200 BYE"),
    ]
    assert net.uac.responses() == [(0.0, 100), (0.5, 100), (4.5, 100), (8.5, 100), (10.0, 200)]
    assert len(net.uas.requests()) == 1
    assert net.uac.ended(tx) == 15.0  # Timer K = T4
    assert net.uac.of(TransactionTimedOut) == []


# --- Server side: absorbing retransmissions, Timers G, H ------------------------------------


def test_server_answers_a_retransmitted_request_with_its_last_response_without_passing_it_up() -> None:
    net = make_net()
    answer_with(net, 200, method="OPTIONS")
    net.link.drop(response(200))
    tx = net.uac.layer.send_request(make_request("OPTIONS"), net.uas_node.address(), 0.0)
    net.link.run(until=100.0)

    assert times(net.link.sent(request("OPTIONS"))) == [0.0, 0.5]
    assert times(net.link.sent(response(200))) == [0.0, 0.5]
    assert net.link.sent(response(200))[0].data == net.link.sent(response(200))[1].data
    assert len(net.uas.requests()) == 1
    assert net.uac.responses() == [(0.5, 200)]
    assert net.uac.ended(tx) == 5.5  # Timer K
    server_tx = net.uas.requests()[0][2]
    assert server_tx is not None and net.uas.ended(server_tx) == 32.0  # Timer J = 64*T1


def test_server_invite_repeats_its_last_provisional_for_a_retransmitted_invite() -> None:
    net = make_net()
    net.link.drop(response(100))
    net.link.drop(response(180))

    def uas_tu(event: TransactionEvent, now: float) -> None:
        if isinstance(event, RequestReceived) and event.transaction_id:
            net.uas.layer.send_response(
                event.transaction_id, response_to(event.request, 180, to_tag="u"), now
            )

    net.uas.react = uas_tu
    net.uac.layer.send_request(make_request("INVITE"), net.uas_node.address(), 0.0)
    net.link.run(until=5.0)
    assert [(p.sent_at, p.summary, p.dropped) for p in net.link.sent(sent_by("uas"))] == [
        (0.0, "100 INVITE", True),
        (0.0, "180 INVITE", True),
        (0.5, "180 INVITE", False),
    ]
    assert len(net.uas.requests()) == 1
    assert net.uac.responses() == [(0.5, 180)]
    assert len(net.link.sent(request("INVITE"))) == 2


def test_timer_g_retransmits_the_final_answer_and_timer_h_gives_up_without_ack() -> None:
    net = make_net()
    answer_with(net, 486)
    net.link.drop(request("ACK"), count=None)
    net.uac.layer.send_request(make_request("INVITE"), net.uas_node.address(), 0.0)
    net.link.run(until=100.0)

    finals = times(net.link.sent(response(486)))
    assert gaps(finals) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    server_tx = net.uas.requests()[0][2]
    assert server_tx is not None
    assert net.uas.of(TransactionTimedOut) == [(32.0, TransactionTimedOut(server_tx, "INVITE"))]
    assert net.uas.ended(server_tx) == 32.0
    # The UAC re-ACKed every copy and told its TU once.
    assert len(net.link.sent(request("ACK"))) == len(finals)
    assert net.uac.responses() == [(0.0, 100), (0.0, 486)]


# --- How each transaction ends: Timers D, I, J, K on UDP, at once on TCP --------------------


@pytest.mark.parametrize(
    ("transport", "d", "i", "j", "k"), [("udp", 32.0, 5.0, 32.0, 5.0), ("tcp", 0, 0, 0, 0)]
)
def test_transactions_end_by_timers_d_i_j_k(transport: str, d: float, i: float, j: float, k: float) -> None:
    net = make_net()
    answer_with(net, 486)
    invite_tx = net.uac.layer.send_request(
        make_request("INVITE", transport), net.uas_node.address(transport), 0.0
    )
    net.link.run(until=40.0)
    uas_invite = net.uas.requests()[0][2]
    assert uas_invite is not None
    assert net.uac.ended(invite_tx) == d  # Timer D
    assert net.uas.ended(uas_invite) == i  # Timer I

    answer_with(net, 200, method="OPTIONS")
    start = net.now
    options_tx = net.uac.layer.send_request(
        make_request("OPTIONS", transport), net.uas_node.address(transport), start
    )
    net.link.run(until=100.0)
    uas_options = net.uas.requests()[1][2]
    assert uas_options is not None
    assert net.uac.ended(options_tx) == start + k  # Timer K
    assert net.uas.ended(uas_options) == start + j  # Timer J


def test_timers_follow_the_configured_t1_t2_t4() -> None:
    timers = TimerConfig(t1=0.1, t2=0.4, t4=1.0)
    net = make_net(timers)
    net.link.drop(request("OPTIONS"), count=None)
    tx = net.uac.layer.send_request(make_request("OPTIONS"), net.uas_node.address(), 0.0)
    net.link.run(until=20.0)
    assert gaps(times(net.link.sent(request("OPTIONS"))))[:4] == pytest.approx([0.1, 0.2, 0.4, 0.4])
    assert net.uac.of(TransactionTimedOut)[0][0] == pytest.approx(6.4)
    assert net.uac.ended(tx) == pytest.approx(6.4)
    assert timers.timer_d == 32.0 and TimerConfig(t1=1.0, t2=4.0).timer_d == 64.0
    with pytest.raises(LocalProtocolError):
        TimerConfig(t1=5.0, t2=4.0)


# --- RFC 6026 Accepted ----------------------------------------------------------------------


def test_rfc6026_every_2xx_in_accepted_reaches_the_tu_and_timer_m_ends_it() -> None:
    net = make_net()
    invite = make_request("INVITE")
    ack_every_2xx(net, invite)
    oks: list[Response] = []

    def uas_tu(event: TransactionEvent, now: float) -> None:
        if isinstance(event, RequestReceived) and event.request.method == "INVITE" and event.transaction_id:
            ok = response_to(event.request, 200, to_tag="uas")
            oks.append(ok)
            tx = event.transaction_id
            net.uas.layer.send_response(tx, ok, now)
            # A TU that did not see the ACK in time retransmits through the Accepted transaction.
            net.uas.at(1.0, lambda at: net.uas.layer.send_response(tx, ok, at))
            net.uas.at(2.0, lambda at: net.uas.layer.send_stateless(ok, net.uac_node.address()))
            # A non-2xx after the 2xx is a TU bug the transaction refuses.
            with pytest.raises(LocalProtocolError):
                net.uas.layer.send_response(tx, response_to(event.request, 486), now)
            # Long after Timer M and L: the 2xx now matches nothing and comes up as stray.
            net.uas.at(40.0, lambda at: net.uas.layer.send_stateless(ok, net.uac_node.address()))

    net.uas.react = uas_tu
    tx = net.uac.layer.send_request(invite, net.uas_node.address(), 0.0)
    net.link.run(until=100.0)

    assert net.uac.responses() == [(0.0, 100), (0.0, 200), (1.0, 200), (2.0, 200)]
    assert net.uac.ended(tx) == 32.0  # Timer M
    strays = net.uac.of(StrayResponseReceived)
    assert [(t, e.response.status) for t, e in strays if isinstance(e, StrayResponseReceived)] == [
        (40.0, 200)
    ]
    # Every 2xx was ACKed by the UAC TU, and each ACK reached the UAS TU without a transaction.
    assert len(net.link.sent(request("ACK"))) == 4
    assert [(t, m, i) for t, m, i in net.uas.requests() if m == "ACK"] == [
        (0.0, "ACK", None),
        (1.0, "ACK", None),
        (2.0, "ACK", None),
        (40.0, "ACK", None),
    ]
    server_tx = net.uas.requests()[0][2]
    assert server_tx is not None and net.uas.ended(server_tx) == 32.0  # Timer L


def test_accepted_server_passes_an_ack_with_the_invite_branch_up() -> None:
    # Some UAs reuse the INVITE's branch for the ACK to a 2xx; it then matches the Accepted
    # transaction, which hands it to the TU (RFC 6026 §8.7) instead of swallowing it.
    uas = TransactionLayer()
    source = Destination("udp", UAC_HOST, PORT)
    invite = make_request("INVITE", branch="z9hG4bK-reused")
    uas.receive(invite, source, 0.0)
    first = uas.next_event()
    assert isinstance(first, RequestReceived) and first.transaction_id is not None
    ok = response_to(invite, 200, to_tag="uas")
    uas.send_response(first.transaction_id, ok, 0.0)
    ack = make_request("ACK", branch="z9hG4bK-reused", to_tag="uas")
    uas.receive(ack, source, 0.1)
    assert uas.next_event() == RequestReceived(None, ack, source)
    uas.receive(make_request("INVITE", branch="z9hG4bK-reused"), source, 0.2)
    assert uas.next_event() is None  # absorbed: the TU, not the transaction, retransmits 2xx
    assert [parse_message(data).status for data, _ in uas.messages_to_send()] == [100, 200]  # type: ignore[union-attr]


# --- CANCEL ---------------------------------------------------------------------------------


def _cancel_for(invite: Request) -> Request:
    """RFC 3261 §9.1: same Request-URI, Call-ID, To, From, CSeq number and top Via as the INVITE."""
    headers = Headers()
    headers.add("Via", invite.headers.get_all("Via")[0])
    for name in ("Max-Forwards", "From", "To", "Call-ID"):
        headers.add(name, invite.headers.get(name) or "")
    headers.add("CSeq", f"{invite.cseq.number} CANCEL")
    return Request("CANCEL", invite.uri, headers)


def test_cancel_finds_its_invite_server_transaction() -> None:
    net = make_net()
    found: list[str | None] = []
    invites: dict[str, Request] = {}  # server transaction id -> the INVITE it serves

    def uas_tu(event: TransactionEvent, now: float) -> None:
        if not isinstance(event, RequestReceived) or event.transaction_id is None:
            return
        req = event.request
        if req.method == "INVITE":
            invites[event.transaction_id] = req
            net.uas.layer.send_response(event.transaction_id, response_to(req, 180, to_tag="u"), now)
        elif req.method == "CANCEL":
            # §9.2: answer the CANCEL itself with 200, then the INVITE it matched with 487.
            invite_tx = net.uas.layer.find_invite_server_transaction(req)
            found.append(invite_tx)
            net.uas.layer.send_response(event.transaction_id, response_to(req, 200, to_tag="u"), now)
            assert invite_tx is not None
            net.uas.layer.send_response(invite_tx, response_to(invites[invite_tx], 487, to_tag="u"), now)

    net.uas.react = uas_tu
    invite = make_request("INVITE")
    invite_tx = net.uac.layer.send_request(invite, net.uas_node.address(), 0.0)
    net.link.run(until=1.0)
    cancel_tx = net.uac.layer.send_request(_cancel_for(invite), net.uas_node.address(), net.now)
    net.link.run(until=100.0)

    server_invite = net.uas.requests()[0][2]
    assert found == [server_invite]
    by_tx = [
        (e.transaction_id, e.response.status) for _, e in net.uac.events if isinstance(e, ResponseReceived)
    ]
    assert by_tx == [(invite_tx, 100), (invite_tx, 180), (cancel_tx, 200), (invite_tx, 487)]
    assert len(net.link.sent(request("ACK"))) == 1  # the 487 was ACKed by the transaction
    assert net.uac.of(TransactionTimedOut) == [] and net.uas.of(TransactionTimedOut) == []
    # A CANCEL for an INVITE nobody knows finds nothing (the TU answers 481, §9.2).
    assert net.uas.layer.find_invite_server_transaction(_cancel_for(make_request("INVITE"))) is None
    with pytest.raises(LocalProtocolError):
        net.uas.layer.find_invite_server_transaction(invite)


def test_an_invite_left_in_proceeding_is_given_up_64_t1_after_its_cancel() -> None:
    net = make_net()
    net.link.drop(request("CANCEL"), count=None)  # the peer never hears the CANCEL, never answers
    invite = make_request("INVITE")
    invite_tx = net.uac.layer.send_request(invite, net.uas_node.address(), 0.0)
    net.link.run(until=50.0)
    assert net.uac.of(TransactionTimedOut) == []  # Proceeding: Timer B does not apply
    cancel_tx = net.uac.layer.send_request(_cancel_for(invite), net.uas_node.address(), net.now)
    net.link.run(until=200.0)
    assert net.uac.of(TransactionTimedOut) == [
        (82.0, TransactionTimedOut(cancel_tx, "CANCEL")),  # Timer F of the CANCEL
        (82.0, TransactionTimedOut(invite_tx, "INVITE")),  # RFC 3261 §9.1 guard of the INVITE
    ]


# --- Transport errors -----------------------------------------------------------------------


def test_a_refused_connection_fails_the_transaction() -> None:
    clock = VirtualClock()
    link = FakeLink(clock)
    uac = Agent()
    link.attach("uac", uac, UAC_HOST, PORT)
    tx = uac.layer.send_request(make_request("INVITE", "tcp"), Destination("tcp", UAS_HOST, PORT), 0.0)
    link.run(until=100.0)
    assert uac.events == [
        (0.0, TransportFailed(tx, f"connection to tcp:{UAS_HOST}:{PORT} refused")),
        (0.0, TransactionTerminated(tx)),
    ]
    assert uac.layer.get_timer() is None


def test_transport_error_fails_only_the_transactions_sending_there() -> None:
    layer = TransactionLayer()
    there, elsewhere = Destination("tls", UAS_HOST, 5061), Destination("tls", "192.0.2.3", 5061)
    a = layer.send_request(make_request("INVITE", "tls"), there, 0.0)
    b = layer.send_request(make_request("OPTIONS", "tls"), there, 0.0)
    unaffected = make_request("OPTIONS", "tls")
    c = layer.send_request(unaffected, elsewhere, 0.0)
    layer.receive(make_request("BYE", "tls", to_tag="x"), there, 0.0)  # a server tx answering there
    served = layer.next_event()
    assert isinstance(served, RequestReceived) and served.transaction_id is not None
    layer.transport_error(there, 1.0, "connection reset")
    events = [layer.next_event() for _ in range(6)]
    assert events == [
        TransportFailed(a, "connection reset"),
        TransactionTerminated(a),
        TransportFailed(b, "connection reset"),
        TransactionTerminated(b),
        TransportFailed(served.transaction_id, "connection reset"),
        TransactionTerminated(served.transaction_id),
    ]
    assert layer.next_event() is None
    with pytest.raises(LocalProtocolError):
        layer.send_response(served.transaction_id, response_to(served.request, 200), 1.0)
    layer.receive(response_to(unaffected, 200, to_tag="x"), elsewhere, 2.0)
    received = layer.next_event()
    assert isinstance(received, ResponseReceived) and received.transaction_id == c


# --- Matching edge cases --------------------------------------------------------------------


def test_a_response_for_no_transaction_is_stray_and_one_with_two_vias_is_discarded() -> None:
    layer = TransactionLayer()
    source = Destination("udp", UAS_HOST, PORT)
    unknown = response_to(make_request("INVITE"), 200, to_tag="x")
    layer.receive(unknown, source, 0.0)
    assert layer.next_event() == StrayResponseReceived(unknown, source)

    invite = make_request("INVITE")
    tx = layer.send_request(invite, source, 0.0)
    twice = response_to(invite, 180, to_tag="x")
    twice.headers.add("Via", "SIP/2.0/UDP 192.0.2.77;branch=z9hG4bK-proxy")
    layer.receive(twice, source, 0.1)
    discarded = layer.next_event()
    assert isinstance(discarded, MessageDiscarded) and "2 Via" in discarded.reason
    # A matching branch with another CSeq method is another transaction (§17.1.3).
    other = response_to(invite, 200)
    other.headers.set("CSeq", "1 OPTIONS")
    layer.receive(other, source, 0.2)
    assert isinstance(layer.next_event(), StrayResponseReceived)
    layer.receive(response_to(invite, 180, to_tag="x"), source, 0.3)
    got = layer.next_event()
    assert isinstance(got, ResponseReceived) and got.transaction_id == tx


def test_an_ack_to_a_2xx_with_its_own_branch_has_no_transaction() -> None:
    layer = TransactionLayer()
    source = Destination("udp", UAC_HOST, PORT)
    ack = make_request("ACK", to_tag="uas")
    layer.receive(ack, source, 0.0)
    assert layer.next_event() == RequestReceived(None, ack, source)
    assert layer.messages_to_send() == []


def test_rfc2543_requests_are_matched_by_the_old_rule() -> None:
    uas = TransactionLayer()
    source = Destination("udp", UAC_HOST, PORT)

    def old(method: str, to_tag: str | None = None) -> Request:
        req = make_request(method, to_tag=to_tag, call_id="old@192.0.2.1")
        req.headers.set("Via", f"SIP/2.0/UDP {UAC_HOST}:{PORT}")  # no branch at all
        return req

    invite = old("INVITE")
    uas.receive(invite, source, 0.0)
    first = uas.next_event()
    assert isinstance(first, RequestReceived) and first.transaction_id is not None
    tx = first.transaction_id
    assert [parse_message(data).status for data, _ in uas.messages_to_send()] == [100]  # type: ignore[union-attr]

    uas.receive(old("INVITE"), source, 0.1)  # a retransmission
    assert uas.next_event() is None
    assert len(uas.messages_to_send()) == 1  # the 100 again

    cancel = old("CANCEL")
    uas.receive(cancel, source, 0.2)
    cancel_event = uas.next_event()
    assert isinstance(cancel_event, RequestReceived) and cancel_event.transaction_id not in (None, tx)
    assert uas.find_invite_server_transaction(cancel) == tx

    uas.send_response(tx, response_to(invite, 486, to_tag="t1"), 0.3)
    uas.receive(old("ACK", to_tag="other"), source, 0.4)  # the To tag of no response of ours
    stray_ack = uas.next_event()
    assert isinstance(stray_ack, RequestReceived) and stray_ack.transaction_id is None
    uas.receive(old("ACK", to_tag="t1"), source, 0.5)  # acknowledges our 486
    assert uas.next_event() is None
    uas.handle_timer(5.5)  # Timer I = T4 after the ACK
    assert uas.next_event() == TransactionTerminated(tx)


def test_received_and_rport_are_stamped_and_the_response_goes_where_they_say() -> None:
    uas = TransactionLayer()
    nat = Destination("udp", "203.0.113.9", 40000)
    behind_nat = make_request("OPTIONS")
    behind_nat.headers.set("Via", "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-nat;rport")
    uas.receive(behind_nat, nat, 0.0)
    event = uas.next_event()
    assert isinstance(event, RequestReceived) and event.transaction_id is not None
    assert (
        str(event.request.top_via)
        == "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-nat;rport=40000;received=203.0.113.9"
    )
    uas.send_response(event.transaction_id, response_to(event.request, 200, to_tag="x"), 0.0)
    ((data, where),) = uas.messages_to_send()
    assert where == nat  # RFC 3581: back to the source port
    assert b"received=203.0.113.9" in data

    # No rport: the sent-by port (RFC 3261 §18.2.2), on the source address.
    plain = make_request("OPTIONS", host="10.0.0.6")
    plain.headers.set("Via", "SIP/2.0/UDP 10.0.0.6:5070;branch=z9hG4bK-plain")
    uas.receive(plain, nat, 0.0)
    event = uas.next_event()
    assert isinstance(event, RequestReceived) and event.transaction_id is not None
    uas.send_response(event.transaction_id, response_to(event.request, 200, to_tag="x"), 0.0)
    assert uas.messages_to_send()[0][1] == Destination("udp", "203.0.113.9", 5070)


def test_a_malformed_request_is_answered_400_statelessly() -> None:
    uas = TransactionLayer()
    source = Destination("udp", UAC_HOST, PORT)
    broken = make_request("OPTIONS")
    broken.headers.remove("Call-ID")
    uas.receive(broken, source, 0.0)
    discarded = uas.next_event()
    assert isinstance(discarded, MessageDiscarded) and "Call-ID" in discarded.reason
    ((data, where),) = uas.messages_to_send()
    answer = parse_message(data)
    assert isinstance(answer, Response) and answer.status == 400 and answer.to.tag
    assert where == source
    assert uas.get_timer() is None

    no_via = make_request("OPTIONS")
    no_via.headers.remove("Via")
    uas.receive(no_via, source, 0.0)
    assert isinstance(uas.next_event(), MessageDiscarded)
    assert uas.messages_to_send() == []


# --- API misuse is a LocalProtocolError -----------------------------------------------------


def test_misuse_is_refused() -> None:
    layer = TransactionLayer()
    where = Destination("udp", UAS_HOST, PORT)
    with pytest.raises(LocalProtocolError, match="ACK"):
        layer.send_request(make_request("ACK"), where, 0.0)
    with pytest.raises(LocalProtocolError, match="z9hG4bK"):
        layer.send_request(make_request("OPTIONS", branch="1234"), where, 0.0)
    no_via = make_request("OPTIONS")
    no_via.headers.remove("Via")
    with pytest.raises(LocalProtocolError, match="Via"):
        layer.send_request(no_via, where, 0.0)
    layer.send_request(make_request("OPTIONS", branch="z9hG4bK-once"), where, 0.0)
    with pytest.raises(LocalProtocolError, match="already used"):
        layer.send_request(make_request("OPTIONS", branch="z9hG4bK-once"), where, 0.0)
    with pytest.raises(LocalProtocolError, match="no live server transaction"):
        layer.send_response("server:OPTIONS:nothing", response_to(make_request("OPTIONS"), 200), 0.0)
    with pytest.raises(LocalProtocolError, match="send_request"):
        layer.send_stateless(make_request("BYE"), where)
    no_from = make_request("OPTIONS")
    no_from.headers.remove("From")
    with pytest.raises(LocalProtocolError, match="From"):
        layer.send_request(no_from, where, 0.0)

    layer.receive(make_request("MESSAGE"), Destination("udp", UAC_HOST, PORT), 0.0)
    event = layer.next_event()
    assert isinstance(event, RequestReceived) and event.transaction_id is not None
    with pytest.raises(LocalProtocolError, match="response to OPTIONS"):
        layer.send_response(event.transaction_id, response_to(make_request("OPTIONS"), 200), 0.0)
    layer.send_response(event.transaction_id, response_to(event.request, 200, to_tag="x"), 0.0)
    with pytest.raises(LocalProtocolError, match="already sent"):
        layer.send_response(event.transaction_id, response_to(event.request, 500, to_tag="x"), 0.0)
