"""What the SIP core keeps of a call once it is over, and that keeping less changes no behaviour.

A sidecar holds every call of the last 64*T1 = 32 s (RFC 3261 Timers D/K/M, the terminated
dialog); at 500 calls per second that is 16 000 calls, so what each leaves behind is kept
small: a request is dropped once its final answer is handled (only a 2xx to an INVITE can be
followed by more), a client transaction keeps no copy of its request once nothing will resend
it, a server transaction keeps no parsed request. What must still work: a retransmitted 200 to
a BYE is absorbed, a retransmitted 2xx to the INVITE after the BYE is ACKed again (and not
taken for a new dialog), a digest challenge to a BYE is answered. Virtual clock, fake link;
runtime well under a second.
"""

from __future__ import annotations

import re

from siprec_src.sip.auth import Credentials, verify_authorization
from siprec_src.sip.dialog import DialogId
from siprec_src.sip.message import Request, Response, parse_message, response_to
from siprec_src.sip.target import Destination
from siprec_src.sip.transaction import TransactionLayer
from siprec_src.sip.useragent import (
    DialogEstablished,
    RequestReceived,
    ResponseReceived,
    UaConfig,
)
from tests.sip.fakenet import FakeLink, request, response
from tests.sip.test_useragent import UAS_ADDR, Agent, pair, start_invite


def _finals(agent: Agent, method: str) -> list[int]:
    return [
        event.response.status
        for event in agent.of(ResponseReceived)
        if isinstance(event, ResponseReceived)
        and event.response.cseq.method == method
        and event.response.status >= 200
    ]


def in_call(uac_config: UaConfig | None = None) -> tuple[FakeLink, Agent, Agent, int, DialogId]:
    """A UAC and a UAS one virtual second into an answered call: link, uac, uas, the INVITE's
    request id and the dialog."""
    link, uac, uas = pair(uac_config=uac_config)
    request_id = start_invite(uac)
    link.run(until=1.0)
    dialog_id = uac.core.dialog_of(request_id)
    assert dialog_id is not None
    return link, uac, uas, request_id, dialog_id


def test_a_bye_is_forgotten_with_its_answer_and_its_transaction_still_absorbs() -> None:
    link, uac, _, request_id, dialog_id = in_call()
    bye_id = uac.core.bye(dialog_id, uac.now)
    link.run(until=2.0)
    assert _finals(uac, "BYE") == [200]
    # The BYE's answer is handled: only the INVITE is kept (its 2xx may come again until Timer M).
    assert set(uac.core._clients) == {request_id} and bye_id not in uac.core._clients
    assert uac.core.awaiting_answer() == 0
    # Its transaction lingers (Timer K) and absorbs a retransmitted 200 without a second event.
    (ok,) = link.sent(response(200, "BYE"))
    uac.receive(parse_message(ok.data), Destination("udp", *UAS_ADDR), uac.now)
    assert _finals(uac, "BYE") == [200]
    link.run()
    assert not uac.core._clients and not uac.core.dialogs


def test_a_2xx_retransmitted_after_the_bye_is_acked_again_not_taken_for_a_new_dialog() -> None:
    link, uac, _, _, dialog_id = in_call()
    uac.core.bye(dialog_id, uac.now)
    link.run(until=2.0)
    acks_before = len(link.sent(request("ACK")))
    byes_before = len(link.sent(request("BYE")))
    (ok,) = link.sent(response(200, "INVITE"))
    uac.receive(parse_message(ok.data), Destination("udp", *UAS_ADDR), uac.now)
    link.run(until=3.0)
    assert len(link.sent(request("ACK"))) == acks_before + 1  # RFC 3261 §13.2.2.4
    assert len(link.sent(request("BYE"))) == byes_before  # the same dialog, already ended
    assert len(uac.of(DialogEstablished)) == 1


def test_a_challenged_bye_is_answered_with_credentials() -> None:
    # Digest state is made only when a request meets its first challenge (most never do).
    link, uac, uas, _, dialog_id = in_call(UaConfig(credentials=(Credentials("src", "secret"),)))
    link.drop(request("BYE"))  # the SRS "answers" the first BYE with the 401 below
    uac.core.bye(dialog_id, uac.now)
    link.run(until=1.1)  # before Timer E would resend it
    (first,) = link.sent(request("BYE"))
    bye = first.message
    assert isinstance(bye, Request)
    challenge = 'Digest realm="srs.example.com", nonce="n1", qop="auth", algorithm=SHA-256'
    unauthorized = response_to(bye, 401, to_tag=bye.to.tag)
    unauthorized.headers.add("WWW-Authenticate", challenge)
    uac.receive(parse_message(bytes(unauthorized)), Destination("udp", *UAS_ADDR), uac.now)
    link.run(until=3.0)
    byes = link.sent(request("BYE"))
    assert len(byes) == 2
    retried = byes[1].message
    assert isinstance(retried, Request)
    authorization = retried.headers.get("Authorization")
    assert authorization and verify_authorization(authorization, "secret", "BYE")
    assert retried.cseq.number == bye.cseq.number + 1  # RFC 3261 §22.2: a new request
    assert _finals(uac, "BYE") == [200]
    assert not [e for e in uas.of(ResponseReceived) if isinstance(e, ResponseReceived)]


def test_client_transactions_keep_no_copy_of_a_request_nothing_will_resend() -> None:
    link, uac, _, _, dialog_id = in_call()
    uac.core.bye(dialog_id, uac.now)
    link.run(until=2.0)
    layer: TransactionLayer = uac.core.transactions
    invite_tx = next(tx for tx in layer._transactions.values() if tx.method == "INVITE")
    bye_tx = next(tx for tx in layer._transactions.values() if tx.method == "BYE")
    # Accepted (RFC 6026 §8.4) and Completed (§17.1.2.2) never send the request again.
    assert invite_tx.wire == b"" and invite_tx.ack_base is None  # type: ignore[attr-defined]
    assert bye_tx.wire == b""  # type: ignore[attr-defined]


def test_server_transactions_keep_the_last_answer_not_the_request() -> None:
    link, uac, uas = pair()
    start_invite(uac)
    link.run(until=1.0)
    layer: TransactionLayer = uas.core.transactions
    (server,) = [tx for tx in layer._transactions.values() if tx.method == "INVITE"]
    assert not hasattr(server, "request") and not hasattr(server, "last_response")
    assert server.last_wire is not None and b"200 OK" in server.last_wire  # type: ignore[attr-defined]
    # A retransmitted INVITE in Accepted is absorbed (RFC 6026 §8.7): no second request upward.
    (invite,) = link.sent(request("INVITE"))
    uas.receive(parse_message(invite.data), Destination("udp", "192.0.2.1", 5060), uas.now)
    assert len([e for e in uas.of(RequestReceived) if isinstance(e, RequestReceived)]) == 1
    assert isinstance(parse_message(server.last_wire), Response)  # type: ignore[attr-defined]


def test_another_forks_2xx_is_acked_and_ended_and_the_invite_body_is_not_kept() -> None:
    # RFC 3261 §13.2.2.4: each 2xx from another fork makes a dialog of its own; a UA that wants
    # one dialog ACKs and BYEs the others. That needs the INVITE's headers, not its body.
    link, uac, _ = pair()
    request_id = start_invite(uac)
    link.run(until=1.0)
    (client,) = uac.core._clients.values()
    assert client.request.body == b"" and client.request.from_.tag  # headers kept, body let go
    (ok,) = link.sent(response(200, "INVITE"))
    other_fork = re.sub(r"(\r\nTo: [^\r]*;tag=)", r"\1fork2", ok.data.decode())
    uac.receive(parse_message(other_fork.encode()), Destination("udp", *UAS_ADDR), uac.now)
    link.run(until=2.0)
    byes = [p for p in link.sent(request("BYE")) if p.sender == "uac"]
    assert len(byes) == 1 and "tag=fork2" in (byes[0].message.headers.get("To") or "")
    established = [e for e in uac.of(DialogEstablished) if isinstance(e, DialogEstablished)]
    assert len(established) == 1 and uac.core.dialog_of(request_id) == established[0].dialog_id
