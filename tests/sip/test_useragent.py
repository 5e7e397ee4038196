"""The user agent core back to back over a fake link and a virtual clock.

Covers the INVITE usage end to end (INVITE/200/ACK/BYE), 2xx retransmission and re-ACK,
the missing-ACK BYE, CANCEL (immediate, deferred until a provisional, and crossing a 200),
re-INVITE glare with the RFC 3261 §14.1 back-off, digest authentication (success and no loop
on a wrong password), 481/500/420/416/501 answers, OPTIONS, timeouts and transport failures,
and the 400 answer to a malformed request. Timers run on the virtual clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from siprec_src.sip.auth import Credentials, verify_authorization
from siprec_src.sip.headers import NameAddress
from siprec_src.sip.message import Request, Response, parse_message
from siprec_src.sip.syntax import SipParseError
from siprec_src.sip.target import Destination
from siprec_src.sip.uri import SipUri
from siprec_src.sip.useragent import (
    AckReceived,
    DialogEstablished,
    DialogTerminated,
    GlareBackoffStarted,
    RequestCancelled,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    UaConfig,
    UaEvent,
    UserAgentCore,
)
from tests.sip.fakenet import FakeLink, request, response

UAC_ADDR = ("192.0.2.1", 5060)
UAS_ADDR = ("192.0.2.2", 5080)


@dataclass
class Agent:
    """A core plus a scripted transaction user that reacts to each event as it happens."""

    core: UserAgentCore
    link: FakeLink
    on_event: Callable[[Agent, UaEvent], None] | None = None
    events: list[UaEvent] = field(default_factory=list)

    def _drain(self) -> None:
        while (event := self.core.next_event()) is not None:
            self.events.append(event)
            if self.on_event is not None:
                self.on_event(self, event)

    def receive(self, message: Request | Response, source: Destination, now: float) -> None:
        self.core.receive(message, source, now)
        self._drain()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self._drain()

    def get_timer(self) -> float | None:
        return self.core.get_timer()

    def messages_to_send(self) -> list[tuple[bytes, Destination]]:
        return self.core.messages_to_send()

    def transport_error(self, destination: Destination, now: float, reason: str) -> None:
        self.core.transport_error(destination, now, reason)
        self._drain()

    def of(self, kind: type[UaEvent]) -> list[UaEvent]:
        return [event for event in self.events if isinstance(event, kind)]

    @property
    def now(self) -> float:
        return self.link.clock.now


def answer_with(status: int, **kwargs: object) -> Callable[[Agent, UaEvent], None]:
    def react(agent: Agent, event: UaEvent) -> None:
        if isinstance(event, RequestReceived):
            agent.core.respond(event.server_id, status, agent.now, **kwargs)  # type: ignore[arg-type]

    return react


def pair(
    uas_policy: Callable[[Agent, UaEvent], None] | None = None,
    *,
    uac_config: UaConfig | None = None,
    seed: int = 7,
) -> tuple[FakeLink, Agent, Agent]:
    link = FakeLink()
    uac = Agent(UserAgentCore(uac_config, local_addresses={"udp": UAC_ADDR}, rng=random.Random(seed)), link)
    uas = Agent(
        UserAgentCore(
            UaConfig(supported=("timer", "siprec")),
            local_addresses={"udp": UAS_ADDR},
            rng=random.Random(seed + 1),
        ),
        link,
        uas_policy
        if uas_policy is not None
        else answer_with(200, body=b"v=0\r\n", content_type="application/sdp"),
    )
    link.attach("uac", uac, *UAC_ADDR)
    link.attach("uas", uas, *UAS_ADDR)
    return link, uac, uas


def start_invite(uac: Agent, *, method: str = "INVITE") -> int:
    core = uac.core
    invite = core.create_request(
        method,
        SipUri("sip", UAS_ADDR[0], "srs", None, UAS_ADDR[1]),
        NameAddress(SipUri("sip", "src.example.com", "src")),
        NameAddress(SipUri("sip", "srs.example.com", "srs")),
        body=b"v=0\r\n",
        content_type="application/sdp",
    )
    invite.headers.add("Require", "siprec")
    return core.send(invite, Destination("udp", *UAS_ADDR), uac.now)


def test_invite_ack_bye() -> None:
    link, uac, uas = pair()
    request_id = start_invite(uac)
    link.run()
    finals = [
        e for e in uac.of(ResponseReceived) if isinstance(e, ResponseReceived) and e.response.status >= 200
    ]
    assert [e.response.status for e in finals] == [200]
    dialog_id = uac.core.dialog_of(request_id)
    assert dialog_id is not None
    assert len(uac.of(DialogEstablished)) == 1 and len(uas.of(DialogEstablished)) == 1
    assert len(uas.of(AckReceived)) == 1
    assert len(link.sent(request("ACK"))) == 1
    ack = link.sent(request("ACK"))[0].message
    assert isinstance(ack, Request) and ack.cseq.number == 1 and ack.top_via.rport == ""
    uac.core.bye(dialog_id, uac.now)
    link.run()
    assert [e.by_peer for e in uas.of(DialogTerminated) if isinstance(e, DialogTerminated)] == [True]
    assert [p.message.status for p in link.sent(response(range(200, 700), "BYE"))] == [200]  # type: ignore[union-attr]


def test_finished_calls_leave_nothing_behind() -> None:
    # A long-running sidecar must not grow with every call: once the call is over and late
    # retransmissions can no longer arrive, the core holds no request or dialog state.
    link, uac, uas = pair()
    request_id = start_invite(uac)
    link.run(until=1.0)
    dialog_id = uac.core.dialog_of(request_id)
    assert dialog_id is not None
    uac.core.bye(dialog_id, uac.now)
    link.run()
    for core in (uac.core, uas.core):
        assert not core._clients and not core.dialogs and not core._dialog_by_request
        assert core.get_timer() is None
    assert uac.core.dialog_of(request_id) is None


def test_lost_ack_makes_the_uas_retransmit_the_2xx_and_the_uac_ack_again() -> None:
    link, uac, uas = pair()
    link.drop(request("ACK"))
    start_invite(uac)
    link.run()
    assert len(link.sent(response(200, "INVITE"))) == 2
    assert len(link.sent(request("ACK"))) == 2
    assert len(uas.of(AckReceived)) == 1
    assert not uas.of(DialogTerminated)


def test_no_ack_at_all_ends_the_dialog_with_bye_after_64_t1() -> None:
    link, uac, _uas = pair()
    link.drop(request("ACK"), count=None)
    start_invite(uac)
    link.run()
    retransmits = [p.sent_at for p in link.sent(response(200, "INVITE"))]
    # RFC 3261 §13.3.1.4: T1, doubling, capped at T2 (0.5, 1, 2, 4, 4, ...)
    assert retransmits[:5] == [0.0, 0.5, 1.5, 3.5, 7.5]
    byes = link.sent(request("BYE"))
    assert len(byes) >= 1 and byes[0].sender == "uas" and byes[0].sent_at == 32.0


def test_cancel_after_provisional() -> None:
    def ring(agent: Agent, event: UaEvent) -> None:
        if isinstance(event, RequestReceived):
            agent.core.respond(event.server_id, 180, agent.now)

    link, uac, uas = pair(ring)
    request_id = start_invite(uac)
    link.run(until=1.0)
    uac.core.cancel(request_id, uac.now)
    link.run()
    assert len(uas.of(RequestCancelled)) == 1
    statuses = [e.response.status for e in uac.of(ResponseReceived) if isinstance(e, ResponseReceived)]
    assert statuses[-1] == 487
    assert [p.message.status for p in link.sent(response(range(200, 700), "CANCEL"))] == [200]  # type: ignore[union-attr]


def test_cancel_waits_for_a_provisional_response() -> None:
    answers: list[str] = []

    def hold(agent: Agent, event: UaEvent) -> None:
        if isinstance(event, RequestReceived):
            answers.append(event.server_id)

    link, uac, uas = pair(hold)
    link.drop(response(100))
    request_id = start_invite(uac)
    link.run(until=0.1)
    uac.core.cancel(request_id, uac.now)
    link.run(until=0.2)
    assert not link.sent(request("CANCEL")), "RFC 3261 §9.1: no CANCEL before a provisional response"
    uas.core.respond(answers[0], 183, uas.now)
    link.run()
    assert len(link.sent(request("CANCEL"))) == 1
    assert len(uas.of(RequestCancelled)) == 1


def test_200_crossing_cancel_is_acked_and_byed() -> None:
    link, uac, uas = pair()
    link.delay(response(200, "INVITE"), 0.5, count=1)
    request_id = start_invite(uac)
    link.run(until=0.1)
    uac.core.cancel(request_id, uac.now)
    link.run()
    # The UAS retransmitted its 2xx while the first copy was delayed: each copy is ACKed.
    assert len(link.sent(request("ACK"))) >= 1
    byes = link.sent(request("BYE"))
    assert len(byes) == 1 and byes[0].sender == "uac"
    assert len(uas.of(DialogTerminated)) == 1


def test_reinvite_glare_backs_off_and_retries() -> None:
    link, uac, uas = pair()
    request_id = start_invite(uac)
    link.run()
    uac_dialog = uac.core.dialog_of(request_id)
    uas_dialog = next(e.dialog_id for e in uas.of(DialogEstablished) if isinstance(e, DialogEstablished))
    assert uac_dialog is not None
    # Both sides send a re-INVITE at the same instant: each sees the other's while its own is pending.
    uac.on_event = answer_with(200, body=b"v=0\r\n", content_type="application/sdp")
    link.latency = 0.05
    uac.core.send_in_dialog(uac_dialog, "INVITE", uac.now, body=b"v=0\r\n", content_type="application/sdp")
    uas.core.send_in_dialog(uas_dialog, "INVITE", uas.now, body=b"v=0\r\n", content_type="application/sdp")
    link.run()
    assert len(link.sent(response(491))) == 2
    backoffs = {
        name: [e.delay for e in agent.of(GlareBackoffStarted) if isinstance(e, GlareBackoffStarted)]
        for name, agent in (("uac", uac), ("uas", uas))
    }
    assert 2.1 <= backoffs["uac"][0] <= 4.0, "the Call-ID owner waits 2.1-4 s"
    assert 0.0 <= backoffs["uas"][0] <= 2.0, "the other side waits 0-2 s"
    finals = [
        e.response.status
        for a in (uac, uas)
        for e in a.of(ResponseReceived)
        if isinstance(e, ResponseReceived) and e.response.cseq.method == "INVITE" and e.response.status >= 200
    ]
    assert finals.count(200) == 3  # initial INVITE + both retried re-INVITEs


def test_a_reinvite_in_glare_back_off_is_given_up_when_the_dialog_ends() -> None:
    # RFC 3261 §15: after the BYE no request may be sent in the dialog, not even the re-INVITE
    # that was waiting out its §14.1 back-off; the TU hears that it failed.
    link, uac, uas = pair()
    request_id = start_invite(uac)
    link.run(until=1.0)
    uac_dialog = uac.core.dialog_of(request_id)
    uas_dialog = next(e.dialog_id for e in uas.of(DialogEstablished) if isinstance(e, DialogEstablished))
    assert uac_dialog is not None
    uac.on_event = answer_with(200, body=b"v=0\r\n", content_type="application/sdp")
    link.latency = 0.05
    reinvite = uac.core.send_in_dialog(
        uac_dialog, "INVITE", uac.now, body=b"v=0\r\n", content_type="application/sdp"
    )
    uas.core.send_in_dialog(uas_dialog, "INVITE", uas.now, body=b"v=0\r\n", content_type="application/sdp")
    link.run(until=1.5)
    assert uac.of(GlareBackoffStarted)  # the UAC waits 2.1-4 s before retrying
    uac.core.bye(uac_dialog, uac.now)
    link.run()
    bye_at = link.sent(request("BYE"))[0].sent_at
    assert not [p for p in link.sent(request("INVITE")) if p.sender == "uac" and p.sent_at > bye_at]
    failed = [e for e in uac.of(RequestFailed) if isinstance(e, RequestFailed) and e.request_id == reinvite]
    assert [(e.status, e.reason) for e in failed] == [(481, "dialog ended during the glare back-off")]
    assert not uac.core._clients  # nothing left waiting for a retry that will not come


def test_digest_authentication_succeeds_and_never_loops() -> None:
    def challenge(agent: Agent, event: UaEvent) -> None:
        if not isinstance(event, RequestReceived):
            return
        auth = event.request.headers.get("Authorization")
        if auth and verify_authorization(auth, "secret", event.request.method):
            agent.core.respond(event.server_id, 200, agent.now)
            return
        header = 'Digest realm="srs.example.com", nonce="abc123", qop="auth", algorithm=SHA-256'
        agent.core.respond(event.server_id, 401, agent.now, headers=[("WWW-Authenticate", header)])

    good = UaConfig(credentials=(Credentials("src", "secret"),))
    link, uac, _ = pair(challenge, uac_config=good)
    start_invite(uac)
    link.run()
    invites = link.sent(request("INVITE"))
    assert len(invites) == 2
    assert invites[1].message.cseq.number == 2 and invites[1].message.headers.get("Authorization")
    assert uac.of(DialogEstablished)

    bad = UaConfig(credentials=(Credentials("src", "wrong"),))
    link, uac, _ = pair(challenge, uac_config=bad)
    start_invite(uac)
    link.run()
    assert len(link.sent(request("INVITE"))) == 2, "one retry with credentials, then give up"
    finals = [e.response.status for e in uac.of(ResponseReceived) if isinstance(e, ResponseReceived)]
    assert finals[-1] == 401


def test_uas_refusals() -> None:
    link, uac, _ = pair()
    core = uac.core
    target = Destination("udp", *UAS_ADDR)
    uri = SipUri("sip", UAS_ADDR[0], "srs", None, UAS_ADDR[1])
    me = NameAddress(SipUri("sip", "src.example.com", "src"))

    unknown_dialog = core.create_request("BYE", uri, me, NameAddress(uri).with_tag("nope"))
    core.send(unknown_dialog, target, uac.now)
    options = core.create_request("OPTIONS", uri, me, NameAddress(uri))
    core.send(options, target, uac.now)
    needs = core.create_request("INVITE", uri, me, NameAddress(uri))
    needs.headers.add("Require", "foo, siprec")
    core.send(needs, target, uac.now)
    strange = core.create_request("FROBNICATE", uri, me, NameAddress(uri))
    core.send(strange, target, uac.now)
    link.run()
    by_method = {
        e.response.cseq.method: e.response
        for e in uac.of(ResponseReceived)
        if isinstance(e, ResponseReceived)
    }
    assert by_method["BYE"].status == 481
    assert by_method["OPTIONS"].status == 200 and "INVITE" in by_method["OPTIONS"].header_tokens("Allow") | {
        t.upper() for t in by_method["OPTIONS"].header_tokens("Allow")
    }
    assert by_method["INVITE"].status == 420 and by_method["INVITE"].header_tokens("Unsupported") == {"foo"}
    assert by_method["FROBNICATE"].status == 501


def test_out_of_order_cseq_gets_500() -> None:
    link, uac, _uas = pair(answer_with(200))
    request_id = start_invite(uac)
    link.run()
    dialog_id = uac.core.dialog_of(request_id)
    assert dialog_id is not None
    uac.core.send_in_dialog(dialog_id, "OPTIONS", uac.now)
    link.run()
    uac.core.dialogs[dialog_id].local_cseq = 1  # a buggy peer reusing an old CSeq
    uac.core.send_in_dialog(dialog_id, "UPDATE", uac.now)
    link.run()
    statuses = [e.response.status for e in uac.of(ResponseReceived) if isinstance(e, ResponseReceived)]
    assert statuses[-1] == 500


def test_timeout_and_transport_failure_become_request_failed() -> None:
    link, uac, _ = pair()
    link.drop(request("INVITE"), count=None)
    request_id = start_invite(uac)
    link.run()
    failed = [e for e in uac.of(RequestFailed) if isinstance(e, RequestFailed)]
    assert [(e.request_id, e.status) for e in failed] == [(request_id, 408)]
    assert link.sent(request("INVITE"))[-1].sent_at == 31.5  # Timer A: 0, .5, 1.5, ... 31.5 < 32 (Timer B)

    link, uac, _ = pair()
    request_id = start_invite(uac)
    uac.core.transport_error(Destination("udp", *UAS_ADDR), uac.now, "ICMP port unreachable")
    uac._drain()
    failed = [e for e in uac.of(RequestFailed) if isinstance(e, RequestFailed)]
    assert failed and failed[0].status == 503 and "ICMP" in failed[0].reason


def test_in_dialog_481_ends_the_dialog() -> None:
    link, uac, uas = pair()
    request_id = start_invite(uac)
    link.run()
    dialog_id = uac.core.dialog_of(request_id)
    assert dialog_id is not None
    uas.core.dialogs.clear()  # the SRS lost the session (restart)
    uac.core.send_in_dialog(dialog_id, "INVITE", uac.now)
    link.run()
    ended = [e for e in uac.of(DialogTerminated) if isinstance(e, DialogTerminated)]
    assert ended and "481" in ended[0].reason


def test_malformed_request_gets_400_with_the_reason() -> None:
    core = UserAgentCore(local_addresses={"udp": UAS_ADDR}, rng=random.Random(1))
    raw = (
        b"INVITE sip:srs@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x@y\r\nCSeq: 9 INVITE\r\nMax-Forwards: 900\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    try:
        parse_message(raw)
    except SipParseError as exc:
        core.reject_malformed(raw, exc, Destination("udp", *UAC_ADDR))
    out = core.messages_to_send()
    assert len(out) == 1
    answer = parse_message(out[0][0])
    assert isinstance(answer, Response) and answer.status == 400 and "Max-Forwards" in answer.reason
