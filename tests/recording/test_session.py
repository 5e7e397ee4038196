"""RecordingSession against scripted SRSs on the fake link and virtual clock.

Covers the SIPREC INVITE (headers, multipart body, labels shared by SDP and metadata), the
fork specs that follow the answer, RFC 4028 refresh at half the interval, 422 retry, failover
ordering (silent SRS, 503, unresolvable, late 2xx), the refresher=uas expiry, refresh
failures, SRS BYE, pause/resume, protocol mismatch and SRTP keys, refused streams, SRS
re-INVITEs and UPDATEs, the metadata snapshot request, glare, stop(), the router and
metadata updates. Every test checks the SIP on the wire as well as the events and actions.

Not covered here: real sockets and the asyncio driver (tests/interop), the media engine that
carries out the fork actions, digest authentication of SIPREC requests (tests/sip).
"""

from __future__ import annotations

import random

from siprec_src.media.spec import Leg, SrtpKeys
from siprec_src.metadata.model import merge, participant_joined
from siprec_src.metadata.reader import read_siprec_body
from siprec_src.recording.connector import connector_for
from siprec_src.recording.events import (
    AttemptFailed,
    AttemptStarted,
    MetadataUpdated,
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
from siprec_src.recording.session import (
    ABANDONED_REASON,
    RecordingSession,
    StartForks,
    State,
    StopForks,
    UpdateForks,
)
from siprec_src.sdp.session import Direction, parse_sdp
from siprec_src.sdp.siprec import CryptoSuite, build_answer_for_srs
from siprec_src.sip.headers import NameAddress
from siprec_src.sip.message import Request, Response
from siprec_src.sip.multipart import BodyPart, decode_multipart, encode_multipart
from siprec_src.sip.target import Destination
from siprec_src.sip.uri import SipUri
from siprec_src.sip.useragent import RequestReceived
from tests.recording.harness import (
    NOW,
    SRC_ADDR,
    SRC_KEYS,
    SRS_ADDRS,
    SRS_KEY,
    Policy,
    SrcNode,
    SrsNode,
    accept,
    accept_with,
    connector,
    from_src,
    in_dialog,
    new_session,
    out_of_dialog,
    reply,
    ring,
    scripted,
    sdp_of,
    silent,
    srs_answer,
    to_srs,
    world,
)
from tests.sip.fakenet import FakeLink, Packet, request, response, sent_by

Started = tuple[FakeLink, SrcNode, SrsNode, RecordingSession]
TIMER_90 = [("Session-Expires", "90;refresher=uac"), ("Require", "timer")]
SRS1 = "sip:srs@192.0.2.10:5080"
SRS2 = "sip:srs@192.0.2.11:5080"
SRS3 = "sip:srs@192.0.2.12:5080"


def test_invite_is_a_siprec_invite_and_the_answer_starts_the_forks() -> None:
    link, src, (srs,) = world()
    session = new_session(src, connector())
    src.run(session, session.start)
    link.run(until=1.0)
    assert session.state is State.ACTIVE
    (invite,) = srs.invites()
    assert "siprec" in invite.header_tokens("Require")
    assert invite.contacts[0].param("+sip.src") is not None
    assert invite.headers.get("Session-Expires") == "1800;refresher=uac"
    _sdp, metadata = read_siprec_body(invite.content_type or "", invite.body)
    text = sdp_of(invite).decode()
    assert text.count("a=sendonly") == 2 and "a=label:1" in text and "a=label:2" in text
    assert sorted(s.label for s in metadata.streams) == ["1", "2"]
    (started,) = src.of(RecordingStarted)
    assert started.srs == "sip:srs@192.0.2.10:5080"
    (forks,) = src.of(StartForks)
    assert [f.leg for f in forks.forks] == [Leg.INBOUND, Leg.OUTBOUND]
    assert [f.remote_rtp for f in forks.forks] == [("192.0.2.50", 30000), ("192.0.2.50", 30002)]
    assert forks.forks[0].payload_map == ((0, 0), (101, 101))
    assert forks.forks[0].local == ("192.0.2.1", 40000)


# --- 1. session refresh (RFC 4028) ----------------------------------------------------------------


def reinvites_from_src(link: FakeLink) -> list[Packet]:
    return link.sent(from_src, request("INVITE"), in_dialog)


def last_update(src: SrcNode) -> UpdateForks:
    action = src.actions[-1]
    assert isinstance(action, UpdateForks), action
    return action


def test_refresh_at_half_the_interval_then_again_after_its_2xx() -> None:
    link, src, (srs,) = world()
    srs.policy = accept_with(TIMER_90)
    session = new_session(src, connector(), session_expires=90)
    src.run(session, session.start)
    link.run(until=44.9)
    (invite,) = srs.invites()
    assert invite.headers.get("Session-Expires") == "90;refresher=uac"
    assert invite.headers.get("Min-SE") == "90"
    assert "timer" in invite.header_tokens("Supported")
    assert src.of(RecordingStarted)[0].session_expires == 90
    assert src.of(RecordingStarted)[0].refresher == "uac"
    assert reinvites_from_src(link) == []
    assert session.get_timer() == 45.0
    link.run(until=100.0)
    refreshes = reinvites_from_src(link)
    assert [p.sent_at for p in refreshes] == [45.0, 90.0]
    for packet, cseq in zip(refreshes, (2, 3), strict=True):
        message = packet.message
        assert message.headers.get("Session-Expires") == "90;refresher=uac"
        assert message.headers.get("Min-SE") == "90"
        assert message.cseq.number == cseq
        assert message.call_id == invite.call_id
        # A plain refresh re-offers the same session: SDP only, still sendonly with the labels.
        assert message.content_type == "application/sdp"
        text = message.body.decode()
        assert text.count("a=sendonly") == 2 and "a=label:1" in text and "a=label:2" in text
    assert src.of(SessionRefreshed) == [SessionRefreshed("SR0001", 90, "src")] * 2
    assert session.state is State.ACTIVE
    assert session.get_timer() == 135.0


def test_refresh_as_a_keepalive_when_the_srs_has_no_session_timer() -> None:
    # RFC 4028 §7.2 allows a 2xx without Session-Expires; we still refresh at half our interval.
    link, src, _ = world()
    session = new_session(src, connector(), session_expires=90)
    src.run(session, session.start)
    link.run(until=50.0)
    assert [p.sent_at for p in reinvites_from_src(link)] == [45.0]
    assert reinvites_from_src(link)[0].message.headers.get("Session-Expires") == "90;refresher=uac"
    assert src.of(SessionRefreshed) == [SessionRefreshed("SR0001", 90, "src")]


def test_session_expires_0_sends_no_timer_headers_and_never_refreshes() -> None:
    link, src, (srs,) = world()
    session = new_session(src, connector(), session_expires=0)
    src.run(session, session.start)
    link.run(until=1.0)
    (invite,) = srs.invites()
    assert invite.headers.get("Session-Expires") is None
    assert invite.headers.get("Min-SE") is None
    (started,) = src.of(RecordingStarted)
    assert started.session_expires is None and started.refresher is None
    assert session.get_timer() is None
    link.run(until=4000.0)
    assert reinvites_from_src(link) == []
    assert src.of(SessionRefreshed) == []
    assert session.state is State.ACTIVE


# --- 2. 422 Session Interval Too Small ------------------------------------------------------------


def test_422_is_retried_with_the_min_se_it_names() -> None:
    link, src, (srs,) = world()
    srs.policy = scripted(reply(422, [("Min-SE", "1800")]))
    session = new_session(src, connector(), session_expires=90)
    src.run(session, session.start)
    link.run(until=5.0)
    first, second = srs.invites()
    assert first.headers.get("Session-Expires") == "90;refresher=uac"
    assert first.headers.get("Min-SE") == "90"
    # RFC 4028 §7.4: the same Call-ID and From tag, CSeq + 1, the 422's Min-SE in both headers.
    assert second.call_id == first.call_id
    assert second.from_.tag == first.from_.tag
    assert second.to.tag is None
    assert second.cseq.number == first.cseq.number + 1
    assert second.headers.get("Session-Expires") == "1800;refresher=uac"
    assert second.headers.get("Min-SE") == "1800"
    # The 422 was ACKed (same CSeq as the first INVITE), then the 2xx to the second.
    acks = link.sent(from_src, request("ACK"))
    assert [a.message.cseq.number for a in acks] == [first.cseq.number, second.cseq.number]
    assert session.state is State.ACTIVE
    assert src.kinds() == ["AttemptStarted", "RecordingStarted"]
    assert src.of(RecordingStarted)[0].session_expires == 1800
    link.run(until=1000.0)
    assert [p.sent_at for p in reinvites_from_src(link)] == [900.0]


def test_a_422_loop_is_bounded() -> None:
    link, src, nodes = world(2)

    def raise_the_floor(node: SrsNode, event: RequestReceived) -> None:
        asked = int((event.request.headers.get("Session-Expires") or "0").split(";")[0])
        reply(422, [("Min-SE", str(asked * 2))])(node, event)

    nodes[0].policy = raise_the_floor
    session = new_session(src, connector(2), session_expires=90)
    src.run(session, session.start)
    link.run(until=60.0)
    invites = nodes[0].invites()
    assert [i.headers.get("Session-Expires") for i in invites] == [
        "90;refresher=uac",
        "180;refresher=uac",
        "360;refresher=uac",
    ]
    assert len({i.call_id for i in invites}) == 1
    (failed,) = src.of(RecordingFailed)
    assert failed.status == 422
    assert session.state is State.FAILED
    # 422 is not a reason to fail over: the second SRS would ask the same.
    assert nodes[1].invites() == []


def test_a_422_without_a_larger_min_se_is_not_retried() -> None:
    link, src, (srs,) = world()
    srs.policy = reply(422, [("Min-SE", "90")])
    session = new_session(src, connector(), session_expires=90)
    src.run(session, session.start)
    link.run(until=5.0)
    assert len(srs.invites()) == 1
    assert [e.status for e in src.of(RecordingFailed)] == [422]


# --- 3. failover --------------------------------------------------------------------------------


def test_failover_silent_then_503_then_accepted() -> None:
    link, src, nodes = world(3, detached=(0,))
    nodes[1].policy = reply(503, [("Retry-After", "30")])
    session = new_session(src, connector(3, attempt_timeout=5.0))
    src.run(session, session.start)
    link.run(until=40.0)
    events = [e for e in src.events if isinstance(e, AttemptStarted | AttemptFailed | RecordingStarted)]
    assert [(type(e).__name__, getattr(e, "attempt", None)) for e in events] == [
        ("AttemptStarted", 1),
        ("AttemptFailed", 1),
        ("AttemptStarted", 2),
        ("AttemptFailed", 2),
        ("AttemptStarted", 3),
        ("RecordingStarted", None),
    ]
    failed = src.of(AttemptFailed)
    assert [(f.srs, f.status, f.retry_after) for f in failed] == [(SRS1, 408, None), (SRS2, 503, 30)]
    assert [s.srs for s in src.of(AttemptStarted)] == [SRS1, SRS2, SRS3]
    (started,) = src.of(RecordingStarted)
    assert started.srs == SRS3
    assert session.srs is not None and str(session.srs) == SRS3
    # On the wire: the INVITE to the second SRS leaves when the attempt timeout ends, the
    # third right after the 503, each with a fresh Call-ID.
    first = link.sent(from_src, request("INVITE"), to_srs(0))
    second = link.sent(from_src, request("INVITE"), to_srs(1))
    third = link.sent(from_src, request("INVITE"), to_srs(2))
    assert first[0].sent_at == 0.0
    assert [p.sent_at for p in second] == [5.0]
    assert [p.sent_at for p in third] == [5.0]
    call_ids = {first[0].message.call_id, second[0].message.call_id, third[0].message.call_id}
    assert len(call_ids) == 3
    assert started.sip_call_id == third[0].message.call_id
    # No CANCEL to the silent SRS: it never sent a provisional (RFC 3261 §9.1).
    assert link.sent(request("CANCEL")) == []
    # The metadata stays the same across attempts, so the SRS side can stitch.
    _, meta2 = read_siprec_body(second[0].message.content_type or "", second[0].message.body)
    _, meta3 = read_siprec_body(third[0].message.content_type or "", third[0].message.body)
    assert meta2.sessions == meta3.sessions and meta2.groups == meta3.groups
    assert session.state is State.ACTIVE
    assert len(src.of(StartForks)) == 1


def test_failover_cancels_an_srs_that_rings_too_long() -> None:
    link, src, nodes = world(2)
    nodes[0].policy = silent  # 100 Trying, then nothing
    session = new_session(src, connector(2, attempt_timeout=5.0))
    src.run(session, session.start)
    link.run(until=10.0)
    (cancel,) = link.sent(from_src, request("CANCEL"))
    assert cancel.sent_at == 5.0 and cancel.destination.host == SRS_ADDRS[0][0]
    assert link.delivered(sent_by("srs0"), response(487, "INVITE"))
    assert [(f.attempt, f.status) for f in src.of(AttemptFailed)] == [(1, 408)]
    assert src.of(RecordingStarted)[0].srs == SRS2
    assert session.state is State.ACTIVE


def test_every_srs_failing_fails_the_recording_with_the_last_status() -> None:
    link, src, nodes = world(3)
    nodes[0].policy = reply(500)
    nodes[1].policy = reply(408)
    nodes[2].policy = reply(503)
    session = new_session(src, connector(3))
    src.run(session, session.start)
    link.run(until=5.0)
    assert [(f.attempt, f.status) for f in src.of(AttemptFailed)] == [(1, 500), (2, 408), (3, 503)]
    (failed,) = src.of(RecordingFailed)
    assert failed.status == 503
    assert session.state is State.FAILED
    assert src.kinds()[-1] == "RecordingFailed"
    assert src.of(StopForks)[-1].fork_ids == ("SR0001/1", "SR0001/2")
    assert session.get_timer() is None


def test_403_and_488_end_the_recording_without_failover() -> None:
    for status in (403, 488):
        link, src, nodes = world(2)
        nodes[0].policy = reply(status)
        session = new_session(src, connector(2))
        src.run(session, session.start)
        link.run(until=5.0)
        assert nodes[1].invites() == [], status
        assert link.sent(from_src, request("INVITE"), to_srs(1)) == []
        assert [(f.attempt, f.status) for f in src.of(AttemptFailed)] == [(1, status)]
        assert [f.status for f in src.of(RecordingFailed)] == [status]
        assert session.state is State.FAILED


def test_an_unresolvable_srs_is_skipped() -> None:
    link, src, _ = world(2)
    src.unavailable.add(SRS_ADDRS[0][0])
    session = new_session(src, connector(2))
    src.run(session, session.start)
    link.run(until=5.0)
    assert link.sent(to_srs(0)) == []
    (failed,) = src.of(AttemptFailed)
    assert (failed.attempt, failed.srs, failed.status) == (1, SRS1, 503)
    assert "does not resolve" in failed.reason
    assert [s.attempt for s in src.of(AttemptStarted)] == [2]
    assert [p.sent_at for p in link.sent(from_src, request("INVITE"), to_srs(1))] == [0.0]
    assert src.of(RecordingStarted)[0].srs == SRS2


def test_a_refused_tcp_connection_fails_over_at_once() -> None:
    link, src, _ = world(2, detached=(0,))
    conn = connector_for(
        "test", [f"sip:srs@{SRS_ADDRS[0][0]}:5080;transport=tcp", f"sip:srs@{SRS_ADDRS[1][0]}:5080"]
    )
    session = new_session(src, conn)
    src.run(session, session.start)
    link.run(until=1.0)
    assert [(f.attempt, f.status) for f in src.of(AttemptFailed)] == [(1, 503)]
    assert [p.sent_at for p in link.sent(from_src, request("INVITE"), to_srs(1))] == [0.0]
    assert session.state is State.ACTIVE


def late_2xx_world(*, provisional: bool) -> tuple[FakeLink, SrcNode, list[SrsNode], RecordingSession]:
    """SRS 1 answers 200 at once, but the network holds its 200s back 9 s (attempt timeout 5 s)."""
    link, src, nodes = world(2)
    link.delay(lambda p: sent_by("srs0")(p) and response(200, "INVITE")(p), 9.0, count=None)
    if not provisional:
        link.drop(lambda p: p.sender == "srs0" and p.summary == "100 INVITE", count=None)
    session = new_session(src, connector(2, attempt_timeout=5.0))
    src.run(session, session.start)
    link.run(until=60.0)
    return link, src, nodes, session


def test_a_late_2xx_from_an_abandoned_srs_is_acked_and_byed() -> None:
    for provisional in (True, False):
        link, src, _, session = late_2xx_world(provisional=provisional)
        late = [p for p in link.delivered(sent_by("srs0"), response(200, "INVITE"))]
        assert late and late[0].deliver_at == 9.0
        invite_call_id = link.sent(request("INVITE"), to_srs(0))[0].message.call_id
        acks = link.sent(from_src, request("ACK"), to_srs(0))
        assert acks and acks[0].sent_at == 9.0 and acks[0].message.call_id == invite_call_id, provisional
        (bye,) = link.sent(from_src, request("BYE"), to_srs(0))
        assert bye.sent_at == 9.0 and bye.message.call_id == invite_call_id
        # The session is on the second SRS and never heard of it.
        assert session.state is State.ACTIVE
        assert session.srs is not None and str(session.srs) == SRS2
        assert src.kinds() == ["AttemptStarted", "AttemptFailed", "AttemptStarted", "RecordingStarted"]
        assert len(src.of(StartForks)) == 1
        assert link.sent(from_src, request("BYE"), to_srs(1)) == []


# --- 4. refresher=uas -------------------------------------------------------------------------------

UAS_REFRESHES = [("Session-Expires", "90;refresher=uas"), ("Require", "timer")]


def test_refresher_uas_without_a_refresh_ends_at_expiry_minus_a_third() -> None:
    link, src, (srs,) = world()
    srs.policy = accept_with(UAS_REFRESHES)
    session = new_session(src, connector(recovery_attempts=0), session_expires=90)
    src.run(session, session.start)
    link.run(until=59.9)
    (started,) = src.of(RecordingStarted)
    assert (started.session_expires, started.refresher) == (90, "uas")
    assert reinvites_from_src(link) == []  # the SRS refreshes, not us
    assert link.sent(from_src, request("BYE")) == []
    assert session.get_timer() == 60.0  # RFC 4028 §10: 90 - min(32, 90/3)
    link.run(until=200.0)
    assert reinvites_from_src(link) == []
    (bye,) = link.sent(from_src, request("BYE"))
    assert bye.sent_at == 60.0
    assert (bye.message.headers.get("Reason") or "").startswith("SIP;cause=408")
    (failed,) = src.of(RecordingFailed)
    assert failed.status == 408 and "expired" in failed.reason
    assert session.state is State.FAILED
    assert src.of(StopForks)[-1].fork_ids == ("SR0001/1", "SR0001/2")


def srs_refresh(srs: SrsNode, session_expires: str = "90;refresher=uac") -> int:
    """The SRS refreshes with a re-INVITE offering what it answered before (a new o= version)."""
    offer = srs_answer(srs.invites()[0], version=len(srs.responses()) + 1)
    return srs.send(
        "INVITE",
        body=offer,
        content_type="application/sdp",
        headers=[("Session-Expires", session_expires), ("Min-SE", "90"), ("Supported", "timer")],
    )


def test_refresher_uas_an_srs_refresh_moves_the_expiry() -> None:
    link, src, (srs,) = world()
    srs.policy = accept_with(UAS_REFRESHES)
    session = new_session(src, connector(recovery_attempts=0), session_expires=90)
    src.run(session, session.start)
    link.run(until=40.0)
    request_id = srs_refresh(srs)
    link.run(until=40.5)
    (ok,) = [r for r in srs.responses(request_id) if r.status == 200]
    # In our answer to its request "uac" names the SRS: it stays the refresher (RFC 4028 §9).
    assert ok.headers.get("Session-Expires") == "90;refresher=uac"
    assert "timer" in ok.header_tokens("Require")
    text = ok.body.decode()
    assert text.count("a=sendonly") == 2 and "a=label:1" in text and "a=label:2" in text
    assert src.of(SessionRefreshed) == [SessionRefreshed("SR0001", 90, "srs")]
    assert session.refresher == "uas"
    assert session.get_timer() == 100.0  # 40 + 90 - 30
    link.run(until=99.9)
    assert link.sent(from_src, request("BYE")) == []
    assert reinvites_from_src(link) == []
    assert session.state is State.ACTIVE
    link.run(until=101.0)
    (bye,) = link.sent(from_src, request("BYE"))
    assert bye.sent_at == 100.0
    assert [f.status for f in src.of(RecordingFailed)] == [408]


def test_an_srs_refresh_that_makes_us_the_refresher_arms_our_refresh() -> None:
    link, src, (srs,) = world()
    srs.policy = accept_with(UAS_REFRESHES)
    session = new_session(src, connector(), session_expires=90)
    src.run(session, session.start)
    link.run(until=40.0)
    request_id = srs_refresh(srs, "120;refresher=uas")
    link.run(until=40.5)
    (ok,) = [r for r in srs.responses(request_id) if r.status == 200]
    assert ok.headers.get("Session-Expires") == "120;refresher=uas"
    assert session.refresher == "uac"
    link.run(until=101.0)
    assert [p.sent_at for p in reinvites_from_src(link)] == [100.0]
    assert reinvites_from_src(link)[0].message.headers.get("Session-Expires") == "120;refresher=uac"
    assert link.sent(from_src, request("BYE")) == []


# --- 5. refresh failures --------------------------------------------------------------------------


def refresh_answered_by(policy: Policy, then: Policy = accept, *, recovery_attempts: int = 0) -> Started:
    link, src, (srs,) = world()
    srs.policy = scripted(accept_with(TIMER_90), policy, then=then)
    session = new_session(src, connector(recovery_attempts=recovery_attempts), session_expires=90)
    src.run(session, session.start)
    return link, src, srs, session


def test_a_481_or_408_to_the_refresh_fails_the_recording() -> None:
    # RFC 3261 §12.2.1.2 / RFC 4028 §10: the dialog is gone (the core ended it), so no BYE.
    for status in (481, 408):
        link, src, _, session = refresh_answered_by(reply(status))
        link.run(until=200.0)
        assert [p.sent_at for p in reinvites_from_src(link)] == [45.0], status
        (failed,) = src.of(RecordingFailed)
        assert failed.status == status, src.events
        assert src.kinds() == ["AttemptStarted", "RecordingStarted", "RecordingFailed"]
        assert session.state is State.FAILED
        assert src.of(StopForks)[-1].fork_ids == ("SR0001/1", "SR0001/2")
        assert link.sent(from_src, request("BYE")) == []
        assert session.get_timer() is None


def test_a_lost_refresh_fails_the_recording_after_the_attempt_timeout() -> None:
    link, src, _, session = refresh_answered_by(silent)
    link.drop(lambda p: from_src(p) and in_dialog(p) and p.summary == "INVITE", count=None)
    # No need to wait for Timer B (64*T1 = 32 s): an SRS that leaves a re-INVITE unanswered
    # for attempt_timeout (8 s) is as good as gone.
    link.run(until=52.9)
    assert session.state is State.ACTIVE
    link.run(until=53.1)
    assert min(p.sent_at for p in reinvites_from_src(link)) == 45.0
    assert all(p.dropped for p in reinvites_from_src(link))
    (failed,) = src.of(RecordingFailed)
    assert failed.status == 408 and "within 8 s" in failed.reason
    link.run(until=200.0)
    assert src.kinds() == ["AttemptStarted", "RecordingStarted", "RecordingFailed"]
    assert session.state is State.FAILED
    # The dialog still lives for the core (its transaction has not timed out): it gets a BYE.
    (bye,) = link.sent(from_src, request("BYE"))
    assert bye.sent_at == 53.0
    assert (bye.message.headers.get("Reason") or "").startswith("SIP;cause=408")


def test_a_refresh_that_is_never_answered_ends_the_session_after_the_attempt_timeout() -> None:
    # The SRS sends 100 Trying, so the transaction never times out: our deadline decides.
    link, src, _, _ = refresh_answered_by(silent)
    link.run(until=200.0)
    assert [p.sent_at for p in reinvites_from_src(link)] == [45.0]
    (bye,) = link.sent(from_src, request("BYE"))
    assert bye.sent_at == 53.0
    assert (bye.message.headers.get("Reason") or "").startswith("SIP;cause=408")
    assert [f.status for f in src.of(RecordingFailed)] == [408]


def test_a_500_to_the_refresh_keeps_the_session_and_retries_before_expiry() -> None:
    link, src, _, session = refresh_answered_by(reply(500), then=accept_with(TIMER_90))
    link.run(until=46.0)
    assert session.state is State.ACTIVE
    assert src.of(SessionRefreshed) == []
    assert session.get_timer() == 67.5  # halfway to the expiry at 90
    link.run(until=70.0)
    refreshes = reinvites_from_src(link)
    assert [p.sent_at for p in refreshes] == [45.0, 67.5]
    assert refreshes[1].message.cseq.number == refreshes[0].message.cseq.number + 1
    assert src.of(SessionRefreshed) == [SessionRefreshed("SR0001", 90, "src")]
    assert session.state is State.ACTIVE
    assert src.of(RecordingFailed) == []
    assert session.get_timer() == 67.5 + 45


# --- 5b. recovery after the SRS is lost mid-call ---------------------------------------------------


def _ids(request: Request) -> tuple[object, ...]:
    _sdp, metadata = read_siprec_body(request.content_type or "", request.body)
    return (
        [g.group_id for g in metadata.groups],
        [x.session_id for x in metadata.sessions],
        sorted((x.stream_id, x.label) for x in metadata.streams),
    )


def test_a_lost_session_is_recovered_on_the_next_srs_with_the_same_metadata_ids() -> None:
    link, src, (srs1, srs2) = world(2)
    srs1.policy = accept_with(TIMER_90)
    session = new_session(src, connector(2), session_expires=90)
    src.run(session, session.start)
    link.run(until=10.0)
    (first,) = srs1.invites()
    # SRS 1 dies: nothing reaches it any more. ICMP on a fork makes the driver probe.
    link.drop(to_srs(0), count=None)
    src.run(session, session.probe)
    link.flush()
    (probe,) = reinvites_from_src(link)
    assert probe.sent_at == 10.0 and probe.message.headers.get("Session-Expires") == "90;refresher=uac"
    link.run(until=17.9)
    assert session.state is State.ACTIVE and src.of(SessionLost) == []
    link.run(until=18.1)
    # attempt_timeout (8 s) without an answer: lost, BYE to it (best effort), forks stopped,
    # a new session on SRS 2 at once.
    (lost,) = src.of(SessionLost)
    assert (lost.srs, lost.status) == (SRS1, 408) and "within 8 s" in lost.reason
    (bye,) = link.sent(from_src, request("BYE"), to_srs(0))
    assert bye.sent_at == 18.0 and bye.message.call_id == first.call_id
    assert src.of(StopForks)[-1].fork_ids == ("SR0001/1", "SR0001/2")
    (second,) = srs2.invites()
    assert second.call_id != first.call_id
    assert _ids(second) == _ids(first)  # RFC 7865 §6: the SRS side stitches on these
    assert parse_sdp(sdp_of(second)).origin.session_id != parse_sdp(sdp_of(first)).origin.session_id
    (recovered,) = src.of(SessionRecovered)
    assert recovered.srs == SRS2 and recovered.interrupted_for == 0.0  # zero latency link
    assert session.state is State.ACTIVE and str(session.srs) == SRS2 and session.recoveries == 1
    assert src.kinds() == [
        "AttemptStarted",
        "RecordingStarted",
        "SessionLost",
        "AttemptStarted",
        "SessionRecovered",
    ]
    assert [type(a).__name__ for a in src.actions] == [
        "PrepareAttempt",
        "StartForks",
        "StopForks",
        "PrepareAttempt",
        "StartForks",
    ]
    assert [f.local for f in src.of(StartForks)[-1].forks] == [("192.0.2.1", 40000), ("192.0.2.1", 40002)]
    # The new session refreshes on its own timer, toward SRS 2 only.
    link.run(until=70.0)
    # (The abandoned probe's own retransmissions toward SRS 1 run out at Timer B, as any
    # client transaction's: RFC 3261 §17.1.1.2.)
    assert [p.sent_at for p in link.sent(from_src, request("INVITE"), in_dialog, to_srs(1))] == [63.0]
    assert session.state is State.ACTIVE


def test_recovery_tries_the_lost_srs_last_and_fails_when_none_takes_it() -> None:
    link, src, (srs1, _) = world(2, detached=[1])  # SRS 2 is not there: silence
    srs1.policy = scripted(accept_with(TIMER_90), reply(481), then=reply(503, [("Retry-After", "30")]))
    session = new_session(src, connector(2), session_expires=90)
    src.run(session, session.start)
    link.run(until=200.0)
    # 481 to the refresh at 45: the dialog is gone (no BYE); SRS 2 is silent for 8 s, then
    # SRS 1 (it may have restarted) answers 503.
    assert link.sent(from_src, request("BYE")) == []
    invites = link.sent(from_src, request("INVITE"), out_of_dialog)
    assert [(p.sent_at, to_srs(1)(p)) for p in invites if p.sent_at >= 45.0][:1] == [(45.0, True)]
    assert [p.sent_at for p in invites if to_srs(0)(p)] == [0.0, 53.0]
    assert [(f.srs, f.status) for f in src.of(AttemptFailed)] == [(SRS2, 408), (SRS1, 503)]
    (failed,) = src.of(RecordingFailed)
    assert failed.status == 503
    assert failed.reason.startswith(f"the session on {SRS1} (481 ")
    assert "no SRS took the recording (2 tried); last: " + SRS1 + ": 503" in failed.reason
    assert session.state is State.FAILED and session.get_timer() is None
    assert src.kinds() == [
        "AttemptStarted",
        "RecordingStarted",
        "SessionLost",
        "AttemptStarted",
        "AttemptFailed",
        "AttemptStarted",
        "AttemptFailed",
        "RecordingFailed",
    ]


def test_recoveries_are_bounded_by_recovery_attempts() -> None:
    link, src, (srs,) = world()
    srs.policy = scripted(accept_with(TIMER_90), reply(481), accept_with(TIMER_90), reply(481))
    session = new_session(src, connector(recovery_attempts=1), session_expires=90)
    src.run(session, session.start)
    link.run(until=200.0)
    # One SRS: the recovery goes back to it. The second loss is final.
    assert [p.sent_at for p in link.sent(from_src, request("INVITE"), out_of_dialog)] == [0.0, 45.0]
    assert src.kinds() == [
        "AttemptStarted",
        "RecordingStarted",
        "SessionLost",
        "AttemptStarted",
        "SessionRecovered",
        "RecordingFailed",
    ]
    (failed,) = src.of(RecordingFailed)
    assert failed.status == 481 and session.recoveries == 1


def test_a_probe_the_srs_answers_keeps_the_session_and_probes_are_rate_limited() -> None:
    link, src, (srs,) = world()
    session = new_session(src, connector(), session_expires=90)
    srs.policy = accept_with(TIMER_90)
    src.run(session, session.start)
    link.run(until=10.0)
    src.run(session, session.probe)
    link.run(until=11.0)
    assert [p.sent_at for p in reinvites_from_src(link)] == [10.0]
    assert session.state is State.ACTIVE and src.of(SessionLost) == []
    # The answer was a refresh: the next one is due 45 s after it, not at 45.
    assert session.get_timer() == 55.0
    src.run(session, session.probe)  # within MIN_PROBE_INTERVAL of the last: nothing sent
    link.run(until=19.9)
    assert len(reinvites_from_src(link)) == 1
    link.run(until=20.0)
    src.run(session, session.probe)
    link.run(until=21.0)
    assert [p.sent_at for p in reinvites_from_src(link)] == [10.0, 20.0]
    assert session.state is State.ACTIVE


def test_a_transport_failure_toward_the_srs_probes_its_sessions_only() -> None:
    link, src, _ = world(2)
    one = new_session(src, connector(), recording_id="SR0001")
    src.run(one, one.start)
    link.run(until=1.0)
    other = new_session(src, connector(2), recording_id="SR0002")
    # SR0002's INVITE to SRS 1 is lost (and its retransmissions)...
    link.drop(lambda p: to_srs(0)(p) and p.sent_at < 9.0, count=None)
    src.run(other, other.start)
    link.run(until=9.0)  # ... so it fails over to SRS 2
    assert str(other.srs) == SRS2 and other.state is State.ACTIVE
    assert one.destination is not None
    src.transport_error(one.destination, link.clock.now, "connection closed by peer")
    link.flush()
    reinvites = reinvites_from_src(link)
    assert [(p.sent_at, to_srs(0)(p)) for p in reinvites] == [(9.0, True)]
    link.run(until=10.0)
    assert one.state is State.ACTIVE and other.state is State.ACTIVE


def test_stop_during_recovery_cancels_the_new_attempt() -> None:
    link, src, (srs1, srs2) = world(2)
    srs1.policy = scripted(accept_with(TIMER_90), reply(481))
    srs2.policy = ring
    session = new_session(src, connector(2), session_expires=90)
    src.run(session, session.start)
    link.run(until=46.0)
    assert src.kinds()[-2:] == ["SessionLost", "AttemptStarted"]
    src.run(session, session.stop)
    link.run(until=50.0)
    assert link.sent(from_src, request("CANCEL"), to_srs(1))
    assert src.kinds()[-1] == "RecordingStopped"
    assert session.state is State.STOPPED and session.get_timer() is None


# --- 6. SRS BYE ----------------------------------------------------------------------------------


def test_srs_bye_stops_the_recording_with_its_reason() -> None:
    link, src, (srs,) = world()
    session = new_session(src, connector())
    src.run(session, session.start)
    link.run(until=10.0)
    reason = 'SIP;cause=200;text="recording complete"'
    srs.send("BYE", headers=[("Reason", reason)])
    link.run(until=11.0)
    assert link.delivered(sent_by("src"), response(200, "BYE"))
    (stopped,) = src.of(RecordingStopped)
    assert (stopped.by, stopped.reason) == ("srs", reason)
    assert src.of(StopForks)[-1].fork_ids == ("SR0001/1", "SR0001/2")
    assert session.state is State.STOPPED
    assert session.get_timer() is None
    assert link.sent(from_src, request("BYE")) == []
    assert src.kinds()[-1] == "RecordingStopped"


# --- 7. pause and resume ------------------------------------------------------------------------------


def origin_version(sdp: bytes) -> int:
    line = next(x for x in sdp.decode().splitlines() if x.startswith("o="))
    return int(line.split()[2])


def test_pause_stops_the_media_first_then_reinvites_inactive_and_resume_waits_for_the_2xx() -> None:
    link, src, (srs,) = world()
    session = new_session(src, connector())
    src.run(session, session.start)
    link.run(until=10.0)
    before = len(src.actions)
    src.run(session, session.pause)
    # The media stops at once, before the SRS hears of it (RFC 7866 §8.1.3).
    (update,) = src.actions[before:]
    assert isinstance(update, UpdateForks)
    assert [f.paused for f in update.forks] == [True, True]
    assert session.state is State.PAUSED
    assert src.of(RecordingPaused) == [RecordingPaused("SR0001", "src")]
    link.run(until=11.0)
    (pause,) = reinvites_from_src(link)
    assert pause.sent_at == 10.0
    text = pause.message.body.decode()
    assert text.count("m=audio") == 2 and text.count("a=inactive") == 2 and "a=sendonly" not in text
    assert "a=label:1" in text and "a=label:2" in text
    # RFC 3264 §8: a changed description has the next o= version.
    assert origin_version(pause.message.body) == origin_version(sdp_of(srs.invites()[0])) + 1
    assert session.state is State.PAUSED
    assert isinstance(src.actions[-1], UpdateForks) and all(f.paused for f in src.actions[-1].forks)

    before_events, before_actions = len(src.events), len(src.actions)
    src.run(session, session.resume)
    assert src.events[before_events:] == [] and src.actions[before_actions:] == []
    assert session.state is State.PAUSED  # nothing changes until the SRS accepts
    link.run(until=20.0)
    resume = reinvites_from_src(link)[1]
    assert resume.sent_at == 11.0
    text = resume.message.body.decode()
    assert text.count("a=sendonly") == 2 and "a=inactive" not in text
    assert origin_version(resume.message.body) == origin_version(pause.message.body) + 1
    # Every re-INVITE also refreshes the session timer (RFC 4028 §7.1).
    resumed = [e for e in src.events[before_events:] if not isinstance(e, SessionRefreshed)]
    assert resumed == [RecordingResumed("SR0001", "src")]
    (update,) = src.actions[before_actions:]
    assert isinstance(update, UpdateForks) and [f.paused for f in update.forks] == [False, False]
    assert session.state is State.ACTIVE


def test_pause_while_the_invite_is_pending_goes_in_the_first_reinvite() -> None:
    link, src, (srs,) = world()
    srs.policy = scripted(ring)
    session = new_session(src, connector())
    src.run(session, session.start)
    link.run(until=1.0)
    src.run(session, session.pause)
    assert src.of(RecordingPaused) == [RecordingPaused("SR0001", "src")]
    assert src.of(UpdateForks) == []  # no forks yet
    link.run(until=2.0)
    assert reinvites_from_src(link) == []  # no re-INVITE before the dialog exists
    (held,) = srs.held
    srs.answer(held)
    link.run(until=3.0)
    assert session.state is State.PAUSED
    (start,) = src.of(StartForks)
    assert [f.paused for f in start.forks] == [True, True]  # the media never starts
    (reinvite,) = reinvites_from_src(link)
    assert reinvite.sent_at == 2.0
    assert reinvite.message.body.decode().count("a=inactive") == 2
    assert src.of(RecordingResumed) == []


def test_pause_and_resume_before_the_2xx_needs_no_reinvite() -> None:
    link, src, (srs,) = world()
    srs.policy = scripted(ring)
    session = new_session(src, connector())
    src.run(session, session.start)
    link.run(until=1.0)
    src.run(session, session.pause)
    src.run(session, session.resume)
    (held,) = srs.held
    srs.answer(held)
    link.run(until=3.0)
    assert session.state is State.ACTIVE
    assert reinvites_from_src(link) == []
    (start,) = src.of(StartForks)
    assert [f.paused for f in start.forks] == [False, False]
    # Every pause event is matched by a resume, so the control layer ends up right.
    assert src.kinds() == [
        "AttemptStarted",
        "RecordingPaused",
        "RecordingResumed",
        "RecordingStarted",
    ]


# --- 8. SRTP and protocol mismatch ------------------------------------------------------------------


def test_secure_offer_has_two_crypto_lines_per_stream_and_the_forks_carry_both_keys() -> None:
    link, src, _ = world()
    session = new_session(src, connector(secure=True))
    src.run(session, session.start)
    link.run(until=1.0)
    (packet,) = link.sent(from_src, request("INVITE"))
    assert packet.destination.transport == "tls"
    offer = parse_sdp(sdp_of(packet.message))
    assert [m.proto for m in offer.media] == ["RTP/SAVP", "RTP/SAVP"]
    for media in offer.media:
        assert [(c.tag, c.suite, c.inline_key) for c in media.crypto] == [
            (1, "AES_CM_128_HMAC_SHA1_80", SRC_KEYS["AES_CM_128_HMAC_SHA1_80"]),
            (2, "AES_CM_128_HMAC_SHA1_32", SRC_KEYS["AES_CM_128_HMAC_SHA1_32"]),
        ]
    assert session.state is State.ACTIVE
    (start,) = src.of(StartForks)
    for fork in start.forks:
        assert fork.srtp == SrtpKeys(
            "AES_CM_128_HMAC_SHA1_80", "inline:" + SRC_KEYS["AES_CM_128_HMAC_SHA1_80"]
        )
        assert fork.remote_srtcp == SrtpKeys("AES_CM_128_HMAC_SHA1_80", "inline:" + SRS_KEY)


def test_secure_the_srs_choice_of_suite_picks_our_key() -> None:
    def answer_32(request: Request) -> bytes:
        offer = parse_sdp(sdp_of(request))
        keys = [{CryptoSuite.AES_CM_128_HMAC_SHA1_32: SRS_KEY}] * len(offer.media)
        ports = [30000, 30002]
        return bytes(build_answer_for_srs(offer, address="192.0.2.50", ports=ports, crypto_keys=keys))

    link, src, (srs,) = world()
    srs.policy = accept_with(answer=answer_32)
    session = new_session(src, connector(secure=True))
    src.run(session, session.start)
    link.run(until=1.0)
    (start,) = src.of(StartForks)
    suite = "AES_CM_128_HMAC_SHA1_32"
    assert [f.srtp for f in start.forks] == [SrtpKeys(suite, "inline:" + SRC_KEYS[suite])] * 2
    assert [f.remote_srtcp for f in start.forks] == [SrtpKeys(suite, "inline:" + SRS_KEY)] * 2


def test_a_plain_rtp_answer_to_a_secure_offer_is_a_protocol_mismatch() -> None:
    def downgrade(request: Request) -> bytes:
        text = srs_answer(request).decode()
        lines = [x for x in text.split("\r\n") if not x.startswith("a=crypto")]
        return "\r\n".join(lines).replace("RTP/SAVP", "RTP/AVP").encode()

    link, src, (srs,) = world()
    srs.policy = accept_with(answer=downgrade)
    session = new_session(src, connector(secure=True))
    src.run(session, session.start)
    link.run(until=5.0)
    (ack,) = link.sent(from_src, request("ACK"))
    (bye,) = link.sent(from_src, request("BYE"))
    assert bye.sent_at == ack.sent_at == 0.0
    reason = bye.message.headers.get("Reason") or ""
    assert reason.startswith("SIP;cause=488;text=") and "RTP/AVP" in reason
    (failed,) = src.of(RecordingFailed)
    assert failed.status == 488 and "RTP/AVP" in failed.reason
    assert src.of(RecordingStarted) == [] and src.of(StartForks) == []
    assert session.state is State.FAILED
    assert link.delivered(sent_by("srs0"), response(200, "BYE"))


# --- 9. refused streams ---------------------------------------------------------------------------------


def test_one_refused_stream_leaves_the_others_recording() -> None:
    link, src, (srs,) = world()
    srs.policy = accept_with(TIMER_90, answer=lambda r: srs_answer(r, ports=[30000, 0]))
    session = new_session(src, connector(), session_expires=90)
    src.run(session, session.start)
    link.run(until=1.0)
    assert session.state is State.ACTIVE
    (refused,) = src.of(StreamRefused)
    assert refused.label == "2" and "port 0" in refused.reason
    stops = src.of(StopForks)
    assert [s.fork_ids for s in stops] == [("SR0001/2",)]
    (start,) = src.of(StartForks)
    assert [f.fork_id for f in start.forks] == ["SR0001/1"]
    assert start.forks[0].remote_rtp == ("192.0.2.50", 30000)
    assert src.actions.index(stops[0]) < src.actions.index(start)
    # RFC 3264 §8.2: the refused m-line stays in every later offer, with port 0.
    link.run(until=50.0)
    (refresh,) = reinvites_from_src(link)
    media = parse_sdp(refresh.message.body).media
    assert [(m.port, m.label) for m in media] == [(40000, "1"), (0, "2")]
    assert len(src.of(StreamRefused)) == 1
    assert [f.fork_id for f in src.of(UpdateForks)[-1].forks] == ["SR0001/1"]
    assert session.state is State.ACTIVE


def test_every_stream_refused_fails_the_recording_with_bye() -> None:
    def refuse_all(request: Request) -> bytes:
        return (
            srs_answer(request)
            .replace(b"m=audio 30000 ", b"m=audio 0 ")
            .replace(b"m=audio 30002 ", b"m=audio 0 ")
        )

    link, src, (srs,) = world()
    srs.policy = accept_with(answer=refuse_all)
    session = new_session(src, connector())
    src.run(session, session.start)
    link.run(until=5.0)
    (bye,) = link.sent(from_src, request("BYE"))
    assert (bye.message.headers.get("Reason") or "").startswith("SIP;cause=488")
    assert [r.label for r in src.of(StreamRefused)] == ["1", "2"]
    (failed,) = src.of(RecordingFailed)
    assert failed.status == 488
    # It never started: the table goes starting -> failed, and no media was ever sent.
    assert src.of(RecordingStarted) == [] and src.of(StartForks) == []
    assert session.state is State.FAILED


def test_pause_during_a_pending_refresh_and_resume_before_it_ends_needs_no_reinvite() -> None:
    link, src, (srs,) = world()
    srs.policy = scripted(accept_with(TIMER_90), ring)
    session = new_session(src, connector(), session_expires=90)
    src.run(session, session.start)
    link.run(until=46.0)  # the refresh went at 45 and rings
    src.run(session, session.pause)
    src.run(session, session.resume)
    assert session.state is State.ACTIVE
    assert [f.paused for f in src.of(UpdateForks)[-1].forks] == [False, False]
    (held,) = srs.held
    srs.answer(held, headers=TIMER_90)
    link.run(until=50.0)
    assert len(reinvites_from_src(link)) == 1  # the SRS never needed to hear of the pause
    assert session.state is State.ACTIVE
    assert [f.paused for f in src.of(UpdateForks)[-1].forks] == [False, False]
    paused = [e for e in src.events if isinstance(e, RecordingPaused | RecordingResumed)]
    assert paused == [RecordingPaused("SR0001", "src"), RecordingResumed("SR0001", "src")]


# --- 10. SRS re-INVITEs ---------------------------------------------------------------------------------


def started_world(session_expires: int | None = None) -> Started:
    link, src, (srs,) = world()
    session = new_session(src, connector(), session_expires=session_expires)
    src.run(session, session.start)
    link.run(until=10.0)
    assert session.state is State.ACTIVE
    return link, src, srs, session


def final(srs: SrsNode, request_id: int) -> Response:
    (ok,) = [r for r in srs.responses(request_id) if r.status >= 200]
    return ok


def test_srs_reinvite_with_a_new_port_is_answered_and_moves_the_forks() -> None:
    link, src, srs, session = started_world()
    offer = srs_answer(srs.invites()[0], port=31000, version=1)
    request_id = srs.send("INVITE", body=offer, content_type="application/sdp")
    link.run(until=11.0)
    ok = final(srs, request_id)
    assert ok.status == 200 and ok.content_type == "application/sdp"
    answer = parse_sdp(ok.body)
    assert [(m.port, m.label, answer.direction_of(m)) for m in answer.media] == [
        (40000, "1", Direction.SENDONLY),
        (40002, "2", Direction.SENDONLY),
    ]
    assert [m.formats for m in answer.media] == [("0", "101"), ("0", "101")]
    update = src.actions[-1]
    assert isinstance(update, UpdateForks)
    assert [f.remote_rtp for f in update.forks] == [("192.0.2.50", 31000), ("192.0.2.50", 31002)]
    assert [f.remote_rtcp for f in update.forks] == [("192.0.2.50", 31001), ("192.0.2.50", 31003)]
    assert [f.paused for f in update.forks] == [False, False]
    assert reinvites_from_src(link) == []
    assert src.kinds() == ["AttemptStarted", "RecordingStarted"]
    assert session.state is State.ACTIVE


def test_srs_reinvite_inactive_pauses_and_recvonly_resumes() -> None:
    link, src, srs, session = started_world()
    offer = srs_answer(srs.invites()[0], version=1, inactive=True)
    request_id = srs.send("INVITE", body=offer, content_type="application/sdp")
    link.run(until=11.0)
    answer = parse_sdp(final(srs, request_id).body)
    assert [answer.direction_of(m) for m in answer.media] == [Direction.INACTIVE] * 2
    assert src.of(RecordingPaused) == [RecordingPaused("SR0001", "srs")]
    assert [f.paused for f in last_update(src).forks] == [True, True]
    request_id = srs.send(
        "INVITE", body=srs_answer(srs.invites()[0], version=2), content_type="application/sdp"
    )
    link.run(until=12.0)
    answer = parse_sdp(final(srs, request_id).body)
    assert [answer.direction_of(m) for m in answer.media] == [Direction.SENDONLY] * 2
    assert src.of(RecordingResumed) == [RecordingResumed("SR0001", "srs")]
    assert [f.paused for f in last_update(src).forks] == [False, False]
    assert reinvites_from_src(link) == []
    assert session.state is State.ACTIVE


def test_offerless_srs_reinvite_gets_our_offer_and_the_answer_in_the_ack_is_applied() -> None:
    link, src, srs, session = started_world()
    link.drop(lambda p: p.sender == "srs0" and p.summary == "ACK")  # the core's ACK has no answer
    request_id = srs.send("INVITE")
    link.run(until=10.0)
    ok = final(srs, request_id)
    offer = parse_sdp(ok.body)
    assert ok.content_type == "application/sdp"
    assert [(m.port, m.label, offer.direction_of(m)) for m in offer.media] == [
        (40000, "1", Direction.SENDONLY),
        (40002, "2", Direction.SENDONLY),
    ]
    srs.ack_with_answer(srs_answer(ok, port=32000, version=1))
    link.run(until=20.0)
    (ack,) = link.delivered(sent_by("srs0"), request("ACK"), lambda p: bool(p.message.body))
    assert ack.deliver_at == 10.0
    update = src.actions[-1]
    assert isinstance(update, UpdateForks)
    assert [f.remote_rtp for f in update.forks] == [("192.0.2.50", 32000), ("192.0.2.50", 32002)]
    # The ACK stopped the 2xx retransmissions (RFC 3261 §13.3.1.4).
    assert [p.sent_at for p in link.sent(from_src, response(200, "INVITE"))] == [10.0]
    assert session.state is State.ACTIVE
    assert src.of(RecordingFailed) == []


def test_an_ack_without_the_answer_to_our_offer_fails_the_recording() -> None:
    link, src, srs, session = started_world()
    srs.send("INVITE")  # the core's ACK carries no body
    link.run(until=11.0)
    (failed,) = src.of(RecordingFailed)
    assert failed.status == 488 and "ACK" in failed.reason
    (bye,) = link.sent(from_src, request("BYE"))
    assert (bye.message.headers.get("Reason") or "").startswith("SIP;cause=488")
    assert session.state is State.FAILED


def test_our_reinvite_waits_for_the_ack_that_answers_our_offer() -> None:
    # RFC 3264 §4: our offer in the 2xx to an offerless re-INVITE is outstanding until the ACK;
    # a pause in between must not make a second offer.
    link, src, srs, session = started_world()
    link.drop(lambda p: p.sender == "srs0" and p.summary == "ACK")
    request_id = srs.send("INVITE")
    link.run(until=10.0)
    src.run(session, session.pause)
    assert isinstance(src.actions[-1], UpdateForks)  # the media pauses at once
    link.run(until=10.2)
    assert reinvites_from_src(link) == []
    srs.ack_with_answer(srs_answer(final(srs, request_id), version=1))
    link.run(until=11.0)
    (reinvite,) = reinvites_from_src(link)
    assert reinvite.sent_at == 10.2
    assert reinvite.message.body.decode().count("a=inactive") == 2
    assert session.state is State.PAUSED


def test_an_srs_update_with_a_new_port_is_answered_in_its_200() -> None:
    link, src, srs, _ = started_world()
    offer = srs_answer(srs.invites()[0], port=33000, version=1)
    request_id = srs.send("UPDATE", body=offer, content_type="application/sdp")
    link.run(until=11.0)
    ok = final(srs, request_id)
    assert ok.status == 200
    assert [(m.port, m.label) for m in parse_sdp(ok.body).media] == [(40000, "1"), (40002, "2")]
    assert [f.remote_rtp[1] for f in last_update(src).forks] == [33000, 33002]
    assert reinvites_from_src(link) == []


def test_an_srs_update_offer_while_our_reinvite_is_pending_gets_491() -> None:
    link, src, srs, session = started_world()
    srs.policy = ring
    src.run(session, session.pause)
    link.run(until=11.0)
    request_id = srs.send(
        "UPDATE", body=srs_answer(srs.invites()[0], version=1), content_type="application/sdp"
    )
    link.run(until=12.0)
    assert final(srs, request_id).status == 491  # RFC 3311 §5.2
    assert src.of(RecordingPaused) == [RecordingPaused("SR0001", "src")]
    assert session.state is State.PAUSED


def test_an_srs_offer_we_cannot_take_gets_488_and_does_not_refresh_the_session() -> None:
    link, src, (srs,) = world()
    srs.policy = accept_with(UAS_REFRESHES)
    session = new_session(src, connector(), session_expires=90)
    src.run(session, session.start)
    link.run(until=40.0)
    secure_offer = srs_answer(srs.invites()[0], version=1).replace(b"RTP/AVP", b"RTP/SAVP")
    request_id = srs.send(
        "INVITE",
        body=secure_offer,
        content_type="application/sdp",
        headers=[("Session-Expires", "90;refresher=uac"), ("Supported", "timer")],
    )
    link.run(until=41.0)
    refused = final(srs, request_id)
    assert refused.status == 488
    assert "RTP/SAVP" in (refused.headers.get("Warning") or "")
    # Only a 2xx refreshes (RFC 4028 §9): the expiry stays at 60.
    assert src.of(SessionRefreshed) == []
    assert session.get_timer() == 60.0
    assert session.state is State.ACTIVE
    assert src.of(UpdateForks) == []


# --- 11. metadata snapshot requests (RFC 7866 §9.2) ---------------------------------------------------

SNAPSHOT_REQUEST = b"SRS internal error: send a complete snapshot\r\n"


def assert_snapshot_reinvite(packet: Packet, session: RecordingSession) -> None:
    message = packet.message
    assert (message.content_type or "").startswith("multipart/mixed")
    sdp, metadata = read_siprec_body(message.content_type or "", message.body)
    assert metadata.data_mode == "complete"
    assert metadata == session.metadata  # the whole current document, not a partial update
    assert [s.label for s in metadata.streams] == ["1", "2"]
    parts = decode_multipart(message.content_type or "", message.body)
    (meta_part,) = [p for p in parts if p.media_type == "application/rs-metadata+xml"]
    assert meta_part.header("Content-Disposition") == "recording-session"
    assert sdp.decode().count("a=sendonly") == 2


def test_an_update_with_a_metadata_request_alone_gets_200_then_a_snapshot_reinvite() -> None:
    link, src, srs, session = started_world()
    request_id = srs.send("UPDATE", body=SNAPSHOT_REQUEST, content_type="application/rs-metadata-request")
    link.run(until=11.0)
    ok = final(srs, request_id)
    assert ok.status == 200 and ok.body == b""
    (reinvite,) = reinvites_from_src(link)
    assert reinvite.sent_at == 10.0
    assert_snapshot_reinvite(reinvite, session)
    assert src.of(MetadataUpdated) == [MetadataUpdated("SR0001")]
    assert session.state is State.ACTIVE


def test_a_reinvite_with_sdp_and_a_metadata_request_is_answered_then_a_snapshot_follows() -> None:
    link, src, srs, session = started_world()
    content_type, body = encode_multipart(
        [
            BodyPart("application/sdp", srs_answer(srs.invites()[0], version=1)),
            BodyPart("application/rs-metadata-request", SNAPSHOT_REQUEST),
        ]
    )
    request_id = srs.send("INVITE", body=body, content_type=content_type)
    link.run(until=11.0)
    ok = final(srs, request_id)
    assert ok.status == 200 and ok.content_type == "application/sdp"
    assert parse_sdp(ok.body).media[0].label == "1"
    (reinvite,) = reinvites_from_src(link)
    assert_snapshot_reinvite(reinvite, session)
    # Our re-INVITE waits for the SRS's INVITE transaction to end with its ACK (RFC 3261
    # §14.1), and that ACK stops our 2xx retransmissions (§13.3.1.4).
    (answered,) = link.sent(from_src, response(200, "INVITE"))
    (ack,) = link.delivered(sent_by("srs0"), request("ACK"), lambda p: p.message.cseq.number == 1)
    assert answered.index < ack.index < reinvite.index
    assert src.of(MetadataUpdated) == [MetadataUpdated("SR0001")]


def test_a_metadata_request_while_our_refresh_is_pending_is_answered_then_served() -> None:
    link, src, (srs,) = world()
    srs.policy = scripted(accept_with(TIMER_90), ring)
    session = new_session(src, connector(), session_expires=90)
    src.run(session, session.start)
    link.run(until=46.0)  # our refresh rings at the SRS
    request_id = srs.send("UPDATE", body=SNAPSHOT_REQUEST, content_type="application/rs-metadata-request")
    link.run(until=47.0)
    assert final(srs, request_id).status == 200  # not an offer, so no glare (RFC 3311 §5.2)
    assert len(reinvites_from_src(link)) == 1
    srs.answer(srs.held[0], headers=TIMER_90)
    link.run(until=48.0)
    refresh, snapshot = reinvites_from_src(link)
    assert refresh.message.content_type == "application/sdp"
    assert snapshot.sent_at == 47.0
    assert_snapshot_reinvite(snapshot, session)
    assert src.of(MetadataUpdated) == [MetadataUpdated("SR0001")]


# --- 12. glare --------------------------------------------------------------------------------------------


def test_glare_between_our_refresh_and_an_srs_reinvite_resolves() -> None:
    link, src, (srs,) = world(latency=0.05)
    srs.policy = accept_with(TIMER_90)
    session = new_session(src, connector(), session_expires=90)
    src.run(session, session.start)
    link.run(until=45.0)  # our refresh leaves at 45.1 (45 + the answer's latency)
    refresh_at = session.get_timer()
    assert refresh_at is not None
    link.run(until=refresh_at)
    (ours,) = reinvites_from_src(link)
    # The SRS re-INVITEs at the same instant: the two cross on the wire.
    theirs_id = srs.send(
        "INVITE", body=srs_answer(srs.invites()[0], version=1), content_type="application/sdp"
    )
    link.run(until=refresh_at + 20.0)
    # Each side answered the other's re-INVITE with 491 (RFC 3261 §14.2).
    (to_theirs,) = link.delivered(from_src, response(491, "INVITE"))
    (to_ours,) = link.delivered(sent_by("srs0"), response(491, "INVITE"))
    # Both retried after their back-off (RFC 3261 §14.1: we own the Call-ID, so 2.1-4 s; the
    # SRS 0-2 s) with a new CSeq, and got a 200.
    ours_all = reinvites_from_src(link)
    assert len(ours_all) == 2 and ours_all[0].index == ours.index
    assert to_ours.deliver_at is not None and to_theirs.deliver_at is not None
    assert 2.1 <= ours_all[1].sent_at - to_ours.deliver_at <= 4.0
    assert ours_all[1].message.cseq.number > ours.message.cseq.number
    theirs_all = link.sent(sent_by("srs0"), request("INVITE"))
    assert len(theirs_all) == 2
    assert 0.0 <= theirs_all[1].sent_at - to_theirs.deliver_at <= 2.0
    assert [r.status for r in srs.responses(theirs_id) if r.status >= 200] == [200]
    assert link.delivered(sent_by("srs0"), response(200, "INVITE"), lambda p: p.sent_at > refresh_at)
    assert src.of(RecordingFailed) == []
    assert session.state is State.ACTIVE
    assert [e.by for e in src.of(SessionRefreshed)] == ["src"]
    # And the session keeps refreshing afterwards.
    link.run(until=refresh_at + 70.0)
    assert len(reinvites_from_src(link)) >= len(ours_all) + 1
    assert session.state is State.ACTIVE


def test_glare_retry_keeps_the_sdp_version_growing() -> None:
    """RFC 3264 §8: each SDP we send after the first has a greater o= version than the last."""
    link, src, (srs,) = world(latency=0.05)
    srs.policy = accept_with(TIMER_90)
    session = new_session(src, connector(), session_expires=90)
    src.run(session, session.start)
    link.run(until=45.0)
    refresh_at = session.get_timer()
    assert refresh_at is not None
    link.run(until=refresh_at)
    srs.send("INVITE", body=srs_answer(srs.invites()[0], version=1), content_type="application/sdp")
    link.run(until=refresh_at + 20.0)
    versions = [origin_version(sdp_of(p.message)) for p in link.sent(from_src) if p.message.body]
    assert versions == sorted(versions), versions


# --- 13. stop() ------------------------------------------------------------------------------------------


def test_stop_while_the_invite_rings_cancels_it() -> None:
    link, src, (srs,) = world()
    srs.policy = ring
    session = new_session(src, connector())
    src.run(session, session.start)
    link.run(until=1.0)
    assert link.delivered(sent_by("srs0"), response(180, "INVITE"))
    src.run(session, session.stop)
    link.run(until=40.0)
    (cancel,) = link.sent(from_src, request("CANCEL"))
    assert cancel.sent_at == 1.0
    (invite,) = link.sent(from_src, request("INVITE"))
    assert cancel.message.call_id == invite.message.call_id
    assert cancel.message.cseq.number == invite.message.cseq.number
    assert link.delivered(sent_by("srs0"), response(487, "INVITE"))
    assert link.sent(from_src, request("BYE")) == []
    (stopped,) = src.of(RecordingStopped)
    assert stopped.by == "src"
    assert src.of(StopForks)[-1].fork_ids == ("SR0001/1", "SR0001/2")
    assert src.kinds() == ["AttemptStarted", "RecordingStopped"]
    assert session.state is State.STOPPED
    assert session.get_timer() is None


def test_stop_before_any_provisional_then_a_2xx_gets_bye() -> None:
    # No provisional: the CANCEL must wait (RFC 3261 §9.1); the 2xx that comes instead is
    # ACKed and taken down with BYE although the recording is gone from the router.
    link, src, (srs,) = world()
    srs.policy = silent
    link.drop(lambda p: p.summary == "100 INVITE", count=None)
    session = new_session(src, connector())
    src.run(session, session.start)
    link.run(until=1.0)
    src.run(session, session.stop)
    assert session.recording_id not in src.router.sessions
    link.run(until=2.0)
    assert link.sent(request("CANCEL")) == []
    srs.answer(srs.held[0])
    link.run(until=10.0)
    (bye,) = link.sent(from_src, request("BYE"))
    assert bye.sent_at == 2.0
    assert bye.message.headers.get("Reason") == ABANDONED_REASON
    assert link.delivered(sent_by("srs0"), response(200, "BYE"))
    assert src.kinds() == ["AttemptStarted", "RecordingStopped"]


def test_stop_when_active_sends_bye() -> None:
    link, src, srs, session = started_world()
    src.run(session, lambda now: session.stop(now, "call ended"))
    link.run(until=20.0)
    (bye,) = link.sent(from_src, request("BYE"))
    assert bye.sent_at == 10.0
    assert bye.message.call_id == srs.invites()[0].call_id
    assert link.delivered(sent_by("srs0"), response(200, "BYE"))
    (stopped,) = src.of(RecordingStopped)
    assert (stopped.by, stopped.reason) == ("src", "call ended")
    assert src.of(StopForks)[-1].fork_ids == ("SR0001/1", "SR0001/2")
    assert session.state is State.STOPPED
    src.run(session, session.stop)  # harmless once ended
    assert len(link.sent(from_src, request("BYE"))) == 1


# --- 14. the router -------------------------------------------------------------------------------------


def test_two_sessions_on_one_core_stay_independent() -> None:
    link, src, nodes = world(3, detached=(0,))
    a_conn = connector_for("a", [SRS1, SRS2], attempt_timeout=5.0)
    b_conn = connector_for("b", [SRS3])
    a = new_session(src, a_conn, recording_id="A", session_expires=90)
    b = new_session(src, b_conn, recording_id="B")
    src.run(a, a.start)
    src.run(b, b.start)
    # The attempt timeouts (A: 5 s, B: the default 8 s): the router's timer is the earliest.
    assert (a.get_timer(), b.get_timer()) == (5.0, 8.0)
    assert src.router.get_timer() == 5.0
    link.run(until=10.0)
    assert a.state is State.ACTIVE and b.state is State.ACTIVE
    assert src.kinds("A") == ["AttemptStarted", "AttemptFailed", "AttemptStarted", "RecordingStarted"]
    assert src.kinds("B") == ["AttemptStarted", "RecordingStarted"]
    assert [e.srs for e in src.of(RecordingStarted)] == [SRS3, SRS2]
    assert [s.recording_id for s in src.of(StartForks)] == ["B", "A"]
    # A refreshes at 5 + 45 = 50, B at 900: the router's timer is the earliest.
    assert (a.get_timer(), b.get_timer()) == (50.0, 900.0)
    assert src.router.get_timer() == 50.0
    # The SRS of B ends it; A goes on and keeps refreshing.
    nodes[2].send("BYE")
    link.run(until=60.0)
    assert b.state is State.STOPPED and a.state is State.ACTIVE
    assert [p.sent_at for p in reinvites_from_src(link)] == [50.0]
    assert reinvites_from_src(link)[0].destination.host == SRS_ADDRS[1][0]
    assert src.router.get_timer() == a.get_timer() == 95.0
    assert src.kinds("A")[-1] == "SessionRefreshed"
    assert set(src.router.sessions) == {"A"}


def test_an_out_of_dialog_invite_to_the_src_gets_403() -> None:
    link, src, (srs,) = world()
    invite = srs.core.create_request(
        "INVITE",
        SipUri.parse("sip:siprec-src@192.0.2.1:5060"),
        NameAddress(SipUri.parse("sip:srs@192.0.2.10")),
        NameAddress(SipUri.parse("sip:siprec-src@192.0.2.1")),
        body=b"v=0\r\n",
        content_type="application/sdp",
    )
    request_id = srs.core.send(invite, Destination("udp", *SRC_ADDR), 0.0)
    link.run(until=5.0)
    (refused,) = [r for r in srs.responses(request_id) if r.status >= 200]
    assert refused.status == 403
    assert "recording client" in (refused.headers.get("Warning") or "")
    assert link.sent(from_src, response(403, "INVITE"))
    assert src.events == [] and src.actions == []


def test_a_request_in_the_dialog_of_an_ended_recording_gets_481() -> None:
    link, src, srs, session = started_world()
    link.drop(lambda p: from_src(p) and p.summary == "BYE")  # the SRS never hears of the end
    src.run(session, session.stop)
    request_id = srs.send(
        "INVITE", body=srs_answer(srs.invites()[0], version=1), content_type="application/sdp"
    )
    link.run(until=20.0)
    assert [r.status for r in srs.responses(request_id) if r.status >= 200] == [481]


# --- 15. metadata updates --------------------------------------------------------------------------------


def test_a_metadata_update_goes_in_a_reinvite_and_is_reported_after_its_2xx() -> None:
    link, src, _, session = started_world()
    rng = random.Random(9)
    old = session.metadata
    joined = participant_joined(
        old,
        "sip:carol@example.org",
        'Carol "C" <ops>',
        NOW,
        rng.randbytes,
        send_labels=["1"],
        recv_labels=["2"],
    )
    src.run(session, session.update_metadata, merge(old, joined))
    assert src.of(MetadataUpdated) == []
    link.run(until=10.0)
    (reinvite,) = reinvites_from_src(link)
    assert reinvite.sent_at == 10.0
    message = reinvite.message
    assert (message.content_type or "").startswith("multipart/mixed")
    sdp, metadata = read_siprec_body(message.content_type or "", message.body)
    assert metadata.data_mode == "complete"
    assert [p.aor for p in metadata.participants] == [
        "sip:alice@example.com",
        "sip:bob@example.net",
        "sip:carol@example.org",
    ]
    assert metadata.participants[2].name == 'Carol "C" <ops>'
    # IDs stay stable for the recording's life.
    assert metadata.groups == old.groups and metadata.sessions[0].session_id == old.sessions[0].session_id
    assert [s.stream_id for s in metadata.streams] == [s.stream_id for s in old.streams]
    assert sdp.decode().count("a=sendonly") == 2
    assert src.of(MetadataUpdated) == [MetadataUpdated("SR0001")]
    assert session.state is State.ACTIVE


def test_metadata_updated_only_after_the_2xx() -> None:
    link, src, srs, session = started_world()
    srs.policy = ring
    old = session.metadata
    joined = participant_joined(old, "sip:dave@example.org", None, NOW, random.Random(1).randbytes)
    src.run(session, session.update_metadata, merge(old, joined))
    link.run(until=12.0)
    assert len(reinvites_from_src(link)) == 1
    assert src.of(MetadataUpdated) == []
    srs.answer(srs.held[0])
    link.run(until=13.0)
    assert src.of(MetadataUpdated) == [MetadataUpdated("SR0001")]


def test_a_refused_metadata_update_is_carried_into_the_next_reinvite() -> None:
    link, src, srs, session = started_world(session_expires=90)
    srs.policy = scripted(reply(500), then=accept)
    old = session.metadata
    update = merge(
        old, participant_joined(old, "sip:erin@example.org", None, NOW, random.Random(2).randbytes)
    )
    src.run(session, session.update_metadata, update)
    link.run(until=60.0)
    first, second = reinvites_from_src(link)
    assert first.sent_at == 10.0
    assert second.sent_at == 10.0 + (90.0 - 10.0) / 2  # halfway to the expiry at 90
    _, metadata = read_siprec_body(second.message.content_type or "", second.message.body)
    assert metadata == update
    assert src.of(MetadataUpdated) == [MetadataUpdated("SR0001")]
