"""The reference SRS's session logic (siprec_src.srs.session) on the fake link and virtual clock.

Covers: the rules alone (what is a recording INVITE, RFC 4028 negotiation); our own SRC
(``RecordingSession``) recording to ``SrsCore`` back to back: the answer and the actions, SRC
refreshes keeping the session alive, the SRS's BYE when refreshes stop (RFC 4028 §10, to the
millisecond on the virtual clock), pause/resume and metadata updates by re-INVITE, BYE from the
SRC; a hand-made SRC for what ours never sends: refusals (no Require, no +sip.src, SDP-only
body, 422, no codec, duplicate labels), refresher=uas (the SRS refreshes with UPDATE, or
re-INVITE when UPDATE is not allowed), new SRTP keys, streams added and removed, offerless
re-INVITE and UPDATE, a metadata-only UPDATE, CANCEL while the sinks open, no sinks, no ACK,
shutdown; and every vendor capture answered.

Not covered here: sockets, the sinks themselves and the files (tests/srs/test_server.py).
"""

from __future__ import annotations

import base64
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from siprec_src.media.spec import SrtpKeys
from siprec_src.metadata.model import RecordingMetadata, for_call, merge, participant_joined
from siprec_src.metadata.reader import read_siprec_body
from siprec_src.metadata.xml import to_xml
from siprec_src.recording.events import RecordingStarted
from siprec_src.recording.router import SessionRouter
from siprec_src.recording.session import RecordingSession, State
from siprec_src.sdp.session import Direction, parse_sdp
from siprec_src.sip.headers import NameAddress
from siprec_src.sip.message import Request, Response
from siprec_src.sip.multipart import BodyPart, encode_multipart
from siprec_src.sip.target import Destination
from siprec_src.sip.uri import SipUri
from siprec_src.sip.useragent import (
    DialogEstablished,
    RequestReceived,
    ResponseReceived,
    UaConfig,
    UaEvent,
    UserAgentCore,
)
from siprec_src.srs.session import (
    CloseStream,
    ConfigureStream,
    EndReason,
    OpenStreams,
    Refresher,
    Refusal,
    SessionEnded,
    SessionStarted,
    SessionTimer,
    SessionUpdated,
    SrsAction,
    SrsCore,
    SrsSession,
    check_recording_invite,
    negotiate_timer,
    srs_ua_config,
)
from tests.metadata.test_reader import CAPTURES, NOT_SIPREC, load
from tests.recording.harness import NOW, SRC_ADDR, SrcNode, connector, new_session
from tests.sip.fakenet import FakeLink, Packet, request, response, sent_by

SRS_ADDR = ("192.0.2.10", 5080)  # where harness.connector() sends
SRS_MEDIA = "192.0.2.60"
SRS_URI = SipUri("sip", SRS_ADDR[0], "srs", None, SRS_ADDR[1])
FIRST_PORT = 50000
A = TypeVar("A", bound=SrsAction)


def srs_key(suite: str) -> str:
    return "inline:" + base64.b64encode(bytes([0x5A] * 30)).decode()


@dataclass
class SrsNode:
    """``SrsCore`` on the link, with a driver that binds sinks at once (unless ``auto_open`` is off)."""

    core: UserAgentCore
    srs: SrsCore
    link: FakeLink
    auto_open: bool = True
    actions: list[SrsAction] = field(default_factory=list)
    ports: itertools.count[int] = field(default_factory=lambda: itertools.count(FIRST_PORT, 2))

    def pump(self) -> None:
        now = self.link.clock.now
        busy = True
        while busy:
            busy = False
            while (event := self.core.next_event()) is not None:
                self.srs.handle_ua_event(event, now)
                busy = True
            while (action := self.srs.next_action()) is not None:
                self.actions.append(action)
                busy = True
                if isinstance(action, OpenStreams) and self.auto_open:
                    self.srs.streams_opened(
                        action.session_id, {label: next(self.ports) for label in action.labels}, now
                    )

    def of(self, kind: type[A]) -> list[A]:
        return [a for a in self.actions if isinstance(a, kind)]

    def run(self, method: Callable[..., None], *args: object) -> None:
        method(*args, self.link.clock.now)
        self.pump()

    @property
    def only(self) -> SrsSession:
        (session,) = self.srs.sessions.values()
        return session

    # the FakeLink Core surface
    def receive(self, message: Request | Response, source: Destination, now: float) -> None:
        self.core.receive(message, source, now)
        self.pump()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self.srs.handle_timer(now)
        self.pump()

    def get_timer(self) -> float | None:
        timers = [t for t in (self.core.get_timer(), self.srs.get_timer()) if t is not None]
        return min(timers, default=None)

    def messages_to_send(self) -> list[tuple[bytes, Destination]]:
        return self.core.messages_to_send()

    def transport_error(self, destination: Destination, now: float, reason: str) -> None:
        self.core.transport_error(destination, now, reason)
        self.pump()


Answer = Callable[["HandSrc", RequestReceived], None]


@dataclass
class HandSrc:
    """A bare UA core that sends hand-made SIPREC requests and answers the SRS's with ``policy``."""

    core: UserAgentCore
    link: FakeLink
    policy: Answer | None = None
    events: list[UaEvent] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def drain(self) -> None:
        while (event := self.core.next_event()) is not None:
            self.events.append(event)
            if isinstance(event, RequestReceived):
                self.requests.append(event.request)
                if self.policy is not None:
                    self.policy(self, event)

    def invite(
        self,
        *,
        sdp: bytes | None = None,
        metadata: bytes | None = None,
        headers: list[tuple[str, str]] | None = None,
        require: bool = True,
        src_tag: bool = True,
        content_type: str | None = None,
        body: bytes | None = None,
        allow: str | None = None,
    ) -> int:
        if body is None:
            parts = [
                BodyPart("application/sdp", sdp if sdp is not None else offer()),
                BodyPart(
                    "application/rs-metadata+xml",
                    metadata or to_xml(two_party()),
                    (("Content-Disposition", "recording-session"),),
                ),
            ]
            content_type, body = encode_multipart(parts)
        contact = self.core.local_contact("udp")
        request = self.core.create_request(
            "INVITE",
            SRS_URI,
            NameAddress(SipUri("sip", "pbx.example.com", "src"), "SRC"),
            NameAddress(SRS_URI),
            body=body,
            content_type=content_type,
            contact=contact.with_param("+sip.src") if src_tag else contact,
        )
        if require:
            request.headers.add("Require", "siprec")
        if allow is not None:
            request.headers.set("Allow", allow)
        for name, value in headers or []:
            request.headers.add(name, value)
        request_id = self.core.send(request, Destination("udp", *SRS_ADDR), self.link.clock.now)
        self.drain()
        return request_id

    def send(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> int:
        dialog = [e for e in self.events if isinstance(e, DialogEstablished)][-1].dialog_id
        request_id = self.core.send_in_dialog(
            dialog, method, self.link.clock.now, body=body, content_type=content_type, headers=headers
        )
        self.drain()
        return request_id

    def final(self, request_id: int) -> Response:
        found = [
            e.response
            for e in self.events
            if isinstance(e, ResponseReceived) and e.request_id == request_id and e.response.status >= 200
        ]
        assert found, f"no final response to request {request_id}"
        return found[-1]

    # the FakeLink Core surface
    def receive(self, message: Request | Response, source: Destination, now: float) -> None:
        self.core.receive(message, source, now)
        self.drain()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self.drain()

    def get_timer(self) -> float | None:
        return self.core.get_timer()

    def messages_to_send(self) -> list[tuple[bytes, Destination]]:
        return self.core.messages_to_send()

    def transport_error(self, destination: Destination, now: float, reason: str) -> None:
        self.core.transport_error(destination, now, reason)
        self.drain()


def offer(
    *,
    labels: tuple[str, ...] = ("1", "2"),
    formats: str = "0 101",
    direction: str = "sendonly",
    secure_keys: tuple[str, ...] = (),
    ports: tuple[int, ...] | None = None,
    version: int = 1,
) -> bytes:
    lines = ["v=0", f"o=src 7 {version} IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0"]
    proto = "RTP/SAVP" if secure_keys else "RTP/AVP"
    for index, label in enumerate(labels):
        port = ports[index] if ports is not None else 40000 + 2 * index
        lines += [f"m=audio {port} {proto} {formats}", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000"]
        lines += ["a=rtpmap:101 telephone-event/8000", "a=rtpmap:18 G729/8000"]
        if secure_keys:
            lines.append(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{secure_keys[index]}")
        lines += [f"a={direction}", f"a=label:{label}"]
    return ("\r\n".join(lines) + "\r\n").encode()


def two_party(labels: tuple[str, ...] = ("1", "2")) -> RecordingMetadata:
    return for_call(
        "call-7@pbx",
        [("sip:alice@example.com", "Alice"), ("sip:bob@example.net", "Bob")],
        [(label, i % 2, [1 - i % 2]) for i, label in enumerate(labels)],
        NOW,
        random.Random(7).randbytes,
    )


def srs_node(link: FakeLink, **options: object) -> SrsNode:
    core = UserAgentCore(
        srs_ua_config("test-srs"),
        local_addresses={t: SRS_ADDR for t in ("udp", "tcp", "tls")},
        rng=random.Random(11),
    )
    ids = (f"S{n}" for n in itertools.count(1))
    srs = SrsCore(
        core,
        media_host=SRS_MEDIA,
        new_session_id=lambda: next(ids),
        generate_key=srs_key,
        rng=random.Random(12),
        **options,  # type: ignore[arg-type]
    )
    node = SrsNode(core, srs, link)
    link.attach("srs", node, *SRS_ADDR)
    return node


def with_our_src(**options: object) -> tuple[FakeLink, SrcNode, SrsNode]:
    link = FakeLink()
    core = UserAgentCore(
        UaConfig(user_agent="siprec-src test"),
        local_addresses={t: SRC_ADDR for t in ("udp", "tcp", "tls")},
        rng=random.Random(3),
    )
    src = SrcNode(core, SessionRouter(core), link)
    link.attach("src", src, *SRC_ADDR)
    return link, src, srs_node(link, **options)


def with_hand_src(policy: Answer | None = None, **options: object) -> tuple[FakeLink, HandSrc, SrsNode]:
    link = FakeLink()
    core = UserAgentCore(
        UaConfig(user_agent="hand-src"),
        local_addresses={t: SRC_ADDR for t in ("udp", "tcp", "tls")},
        rng=random.Random(4),
    )
    src = HandSrc(core, link, policy)
    link.attach("src", src, *SRC_ADDR)
    return link, src, srs_node(link, **options)


def start(link: FakeLink, src: SrcNode, session_expires: int | None = None) -> RecordingSession:
    session = new_session(src, connector(), session_expires=session_expires)
    src.run(session, session.start)
    link.run(until=link.clock.now + 1.0)
    assert session.state is State.ACTIVE
    return session


def from_srs(packet: Packet) -> bool:
    return packet.sender == "srs"


def warning(message: Response) -> str:
    return message.headers.get("Warning") or ""


# --- the rules alone ------------------------------------------------------------------------------


def _request(*headers: tuple[str, str]) -> Request:
    core = UserAgentCore(local_addresses={"udp": SRC_ADDR})
    req = core.create_request(
        "INVITE", SRS_URI, NameAddress(SipUri("sip", "a.example")), NameAddress(SRS_URI)
    )
    req.headers.remove("Supported")  # only what the case gives
    for name, value in headers:
        req.headers.add(name, value)
    return req


def test_a_recording_invite_needs_require_siprec_and_a_src_contact() -> None:
    plain = _request()
    refusal = check_recording_invite(plain)
    assert refusal is not None and refusal.status == 488 and "Require: siprec" in refusal.warning
    no_tag = _request(("Require", "siprec"))
    refusal = check_recording_invite(no_tag)
    assert refusal is not None and refusal.status == 488 and "+sip.src" in refusal.warning
    good = _request(("Require", "timer, siprec"))
    good.headers.set("Contact", "<sip:src@192.0.2.1>;+sip.src")
    assert check_recording_invite(good) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ((), None),
        ((("Session-Expires", "1800;refresher=uac"),), SessionTimer(1800, Refresher.SRC)),
        (
            (("Session-Expires", "120;refresher=uas"), ("Supported", "timer")),
            SessionTimer(120, Refresher.SRS),
        ),
        ((("Session-Expires", "300"), ("Supported", "timer")), SessionTimer(300, Refresher.SRC)),
        # RFC 4028 §9: a UAC without timer support cannot refresh (a proxy added the header).
        ((("Session-Expires", "300"),), SessionTimer(300, Refresher.SRS)),
        ((("Session-Expires", "89;refresher=uac"),), Refusal(422, "", (("Min-SE", "90"),))),
        ((("Session-Expires", "soon"),), Refusal(400, "")),
    ],
)
def test_session_timer_negotiation(headers: tuple[tuple[str, str], ...], expected: object) -> None:
    found = negotiate_timer(_request(*headers), 90)
    if isinstance(expected, Refusal):
        assert isinstance(found, Refusal)
        assert (found.status, found.headers) == (expected.status, expected.headers)
        assert "Session-Expires" in found.warning
    else:
        assert found == expected


def test_timer_response_headers_follow_rfc_4028_section_9() -> None:
    asked = _request(("Supported", "timer"))
    assert SessionTimer(90, Refresher.SRC).response_headers(asked) == [
        ("Session-Expires", "90;refresher=uac"),
        ("Require", "timer"),
    ]
    assert SessionTimer(90, Refresher.SRS).response_headers(_request()) == [
        ("Session-Expires", "90;refresher=uas")
    ]


# --- our SRC against the SRS ---------------------------------------------------------------------


def test_our_src_records_and_the_answer_is_a_siprec_answer() -> None:
    link, src, srs = with_our_src()
    session = start(link, src, session_expires=120)
    (ok,) = [p.message for p in link.sent(from_srs, response(200, "INVITE"))]
    assert isinstance(ok, Response)
    answer = parse_sdp(ok.body)
    assert [m.label for m in answer.media] == ["1", "2"]
    assert [m.direction for m in answer.media] == [Direction.RECVONLY] * 2
    assert [m.port for m in answer.media] == [FIRST_PORT, FIRST_PORT + 2]
    assert answer.connection is not None and answer.connection.address == SRS_MEDIA
    assert ok.headers.get("Session-Expires") == "120;refresher=uac"
    assert "timer" in ok.header_tokens("Require")
    assert {"timer", "siprec"} <= ok.header_tokens("Supported")
    assert {"INVITE", "BYE", "UPDATE"} <= {m.upper() for m in ok.header_tokens("Allow")}
    assert ok.contacts[0].param("+sip.src") is None
    (opened,) = srs.of(OpenStreams)
    assert opened == OpenStreams("S1", ("1", "2"))
    configured = srs.of(ConfigureStream)
    assert [c.label for c in configured] == ["1", "2"]
    assert configured[0].payload_types == ((0, "PCMU"), (101, "telephone-event"))
    assert configured[0].srtp is None and not configured[0].paused
    assert srs.of(SessionStarted) == [SessionStarted("S1")]
    record = srs.only
    assert record.call_id == session.sip_call_id
    assert record.metadata is not None
    assert {p.name for p in record.metadata.participants} == {"Alice O'Brien & Sons <sales>", None}
    assert record.streams["1"].codec == "PCMU" and record.streams["1"].telephone_event == 101
    assert [e for e in src.events if isinstance(e, RecordingStarted)]
    src.run(session, session.stop)
    link.run(until=link.clock.now + 1)
    (ended,) = srs.of(SessionEnded)
    assert ended == SessionEnded("S1", EndReason.BYE_FROM_SRC, "", True)
    assert not record.live and record.ended_at == link.clock.now - 1


def test_src_refreshes_keep_the_session_and_missing_ones_end_it_at_expiry_minus_a_third() -> None:
    link, src, srs = with_our_src()
    session = start(link, src, session_expires=90)
    started = srs.only.started_at
    assert started is not None
    link.run(until=400.0)
    record = srs.only
    assert record.live and record.refreshes == 8  # at 45, 90, ... 360
    assert link.sent(from_srs, request("BYE")) == []
    # Now the SRC's refreshes are lost: the SRS ends the session at the last refresh + 90 - 30.
    link.drop(lambda p: p.sender == "src" and isinstance(p.message, Request), count=None)
    last_refresh = started + 360.0
    link.run(until=600.0)
    (bye,) = link.sent(from_srs, request("BYE"))
    assert bye.sent_at == pytest.approx(last_refresh + 60.0)
    assert "cause=408" in (bye.message.headers.get("Reason") or "")
    assert record.end_reason is EndReason.REFRESH_TIMEOUT
    assert srs.of(SessionEnded)[-1].reason is EndReason.REFRESH_TIMEOUT
    assert session.state.terminal


def test_pause_resume_and_metadata_update_by_reinvite() -> None:
    link, src, srs = with_our_src()
    session = start(link, src)
    src.run(session, session.pause)
    link.run(until=link.clock.now + 1)
    record = srs.only
    assert all(s.paused for s in record.streams.values())
    assert [c.paused for c in srs.of(ConfigureStream)[-2:]] == [True, True]
    (ok,) = [p.message for p in link.sent(from_srs, response(200, "INVITE"))][-1:]
    assert [m.direction for m in parse_sdp(ok.body).media] == [Direction.INACTIVE] * 2
    assert parse_sdp(ok.body).origin.session_version == "1"  # the answer changed: version + 1
    src.run(session, session.resume)
    link.run(until=link.clock.now + 1)
    assert not any(s.paused for s in record.streams.values())
    assert [e.event for e in record.log] == ["started", "paused", "resumed"]
    carol = participant_joined(
        session.metadata, "sip:carol@example.net", "Carol", NOW, random.Random(1).randbytes
    )
    src.run(session, session.update_metadata, merge(session.metadata, carol))
    link.run(until=link.clock.now + 1)
    assert len(record.snapshots) == 2 and record.snapshots[1].method == "INVITE"
    assert record.metadata is not None
    assert "sip:carol@example.net" in {p.aor for p in record.metadata.participants}
    assert srs.of(SessionUpdated)
    assert record.live


# --- refusals ---------------------------------------------------------------------------------


def final_from_srs(link: FakeLink) -> Response:
    finals = [p.message for p in link.sent(from_srs, response(range(200, 700), "INVITE"))]
    assert finals
    message = finals[-1]
    assert isinstance(message, Response)
    return message


@pytest.mark.parametrize(
    ("options", "status", "says"),
    [
        ({"require": False}, 488, "Require: siprec"),
        ({"src_tag": False}, 488, "+sip.src"),
        ({"content_type": "application/sdp", "body": offer()}, 415, "rs-metadata"),
        ({"headers": [("Session-Expires", "60")]}, 422, "Min-SE 90"),
        ({"sdp": offer(formats="18")}, 488, "no offered stream"),
        ({"sdp": offer(labels=("1", "1"))}, 488, "share a label"),
        ({"sdp": b"v=0\r\nnot sdp\r\n"}, 400, "SDP"),
        ({"metadata": b"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><bad"}, 400, ""),
    ],
)
def test_refusals_say_why(options: dict[str, object], status: int, says: str) -> None:
    link, src, srs = with_hand_src()
    src.invite(**options)  # type: ignore[arg-type]
    link.run(until=1.0)
    refused = final_from_srs(link)
    assert refused.status == status
    assert warning(refused).startswith(f'399 {SRS_ADDR[0]} "') and says in warning(refused)
    if status == 415:
        assert "multipart/mixed" in (refused.headers.get("Accept") or "")
    if status == 422:
        assert refused.headers.get("Min-SE") == "90"
    assert srs.srs.sessions == {} and srs.actions == []


def test_options_answers_with_capabilities() -> None:
    link, src, _srs = with_hand_src()
    options = src.core.create_request(
        "OPTIONS", SRS_URI, NameAddress(SipUri("sip", "a.example")), NameAddress(SRS_URI)
    )
    request_id = src.core.send(options, Destination("udp", *SRS_ADDR), 0.0)
    link.run(until=1.0)
    ok = src.final(request_id)
    assert ok.status == 200
    assert "multipart/mixed" in (ok.headers.get("Accept") or "")
    assert "siprec" in ok.header_tokens("Supported") and "INVITE" in (ok.headers.get("Allow") or "")


# --- what only a hand-made SRC sends ----------------------------------------------------------------


def answer_refresh(src: HandSrc, event: RequestReceived) -> None:
    # The SRC answers our refresh; "uac" in its 2xx names the SRS (the refresh's uac).
    body = offer() if event.request.method == "INVITE" else b""
    src.core.respond(
        event.server_id,
        200,
        src.link.clock.now,
        body=body,
        content_type="application/sdp" if body else None,
        headers=[("Session-Expires", "90;refresher=uac"), ("Require", "timer")],
    )


@pytest.mark.parametrize("allow", ["INVITE, ACK, BYE, CANCEL, UPDATE", "INVITE, ACK, BYE, CANCEL"])
def test_refresher_uas_means_the_srs_refreshes_at_half_the_interval(allow: str) -> None:
    link, src, srs = with_hand_src(answer_refresh)
    request_id = src.invite(headers=[("Session-Expires", "90;refresher=uas")], allow=allow)
    link.run(until=1.0)
    ok = src.final(request_id)
    assert ok.headers.get("Session-Expires") == "90;refresher=uas"
    link.run(until=200.0)
    method = "UPDATE" if "UPDATE" in allow else "INVITE"
    refreshes = link.sent(from_srs, request(method))
    assert [p.sent_at for p in refreshes] == [45.0, 90.0, 135.0, 180.0]
    assert all(p.message.headers.get("Session-Expires") == "90;refresher=uac" for p in refreshes)
    if method == "INVITE":
        assert parse_sdp(refreshes[0].message.body).media[0].direction is Direction.RECVONLY
    record = srs.only
    assert record.live and record.refreshes == 4 and record.timer == SessionTimer(90, Refresher.SRS)


def test_our_refresh_unanswered_ends_the_session() -> None:
    link, src, srs = with_hand_src(None)  # the SRC never answers the SRS's requests
    src.invite(headers=[("Session-Expires", "90;refresher=uas")])
    link.run(until=200.0)
    record = srs.only
    assert not record.live
    # UPDATE at 45 s times out (Timer F, 32 s): the core ends the dialog; no BYE is needed.
    assert record.end_reason is EndReason.DIALOG_FAILED
    assert record.ended_at == pytest.approx(45 + 32)


def test_new_keys_streams_added_and_removed_by_reinvite() -> None:
    keys = [base64.b64encode(bytes([i]) * 30).decode() for i in range(1, 6)]
    link, src, srs = with_hand_src()
    src.invite(sdp=offer(secure_keys=(keys[0], keys[1])))
    link.run(until=1.0)
    first = parse_sdp(final_from_srs(link).body)
    ours = [m.crypto[0] for m in first.media]
    assert [c.suite for c in ours] == ["AES_CM_128_HMAC_SHA1_80"] * 2
    assert ours[0].inline_key == base64.b64encode(bytes([0x5A] * 30)).decode()
    configured = srs.of(ConfigureStream)
    assert configured[0].srtp == SrtpKeys("AES_CM_128_HMAC_SHA1_80", f"inline:{keys[0]}")
    # New keys for stream 1, stream 2 removed (port 0), stream 3 added.
    sdp = offer(
        labels=("1", "2", "3"), secure_keys=(keys[2], keys[1], keys[4]), ports=(40000, 0, 40004), version=2
    )
    request_id = src.send("INVITE", body=sdp, content_type="application/sdp")
    link.run(until=2.0)
    assert src.final(request_id).status == 200
    answer = parse_sdp(src.final(request_id).body)
    assert [m.port for m in answer.media] == [FIRST_PORT, 0, FIRST_PORT + 4]
    assert srs.of(OpenStreams)[-1] == OpenStreams("S1", ("3",))
    assert srs.of(CloseStream) == [CloseStream("S1", "2")]
    latest = {c.label: c for c in srs.of(ConfigureStream)}
    assert latest["1"].srtp == SrtpKeys("AES_CM_128_HMAC_SHA1_80", f"inline:{keys[2]}")
    assert latest["3"].srtp == SrtpKeys("AES_CM_128_HMAC_SHA1_80", f"inline:{keys[4]}")
    record = srs.only
    assert record.streams["2"].closed_at == pytest.approx(1.0, abs=1.0)
    # The closed label coming back is refused rather than overwrite its finished file.
    again = offer(labels=("1", "2", "3"), secure_keys=(keys[2], keys[3], keys[4]), version=3)
    request_id = src.send("INVITE", body=again, content_type="application/sdp")
    link.run(until=3.0)
    assert [m.port for m in parse_sdp(src.final(request_id).body).media] == [FIRST_PORT, 0, FIRST_PORT + 4]


def test_offerless_reinvite_update_and_metadata_only_update() -> None:
    link, src, srs = with_hand_src()
    src.invite(headers=[("Session-Expires", "120;refresher=uac")])
    link.run(until=1.0)
    first = final_from_srs(link)
    record = srs.only
    request_id = src.send("INVITE", headers=[("Session-Expires", "120;refresher=uac")])
    link.run(until=2.0)
    ok = src.final(request_id)
    assert ok.status == 200 and ok.body == first.body  # our SDP as the offer, same version
    assert ok.headers.get("Session-Expires") == "120;refresher=uac"
    carol = participant_joined(two_party(), "sip:carol@example.net", "Carol", NOW, random.Random(2).randbytes)
    request_id = src.send(
        "UPDATE",
        body=to_xml(carol),
        content_type="application/rs-metadata+xml",
        headers=[("Session-Expires", "120;refresher=uac")],
    )
    link.run(until=3.0)
    assert src.final(request_id).status == 200
    assert [s.method for s in record.snapshots] == ["INVITE", "UPDATE"]
    assert record.snapshots[1].metadata.data_mode == "partial"
    assert record.metadata is not None
    assert {p.aor for p in record.metadata.participants} == {
        "sip:alice@example.com",
        "sip:bob@example.net",
        "sip:carol@example.net",
    }
    assert record.refreshes == 2 and record.expire_at == pytest.approx(2.0 + 120 - 32)
    request_id = src.send("UPDATE")  # no Session-Expires: the timer is off (RFC 4028 §9)
    link.run(until=4.0)
    assert src.final(request_id).status == 200
    assert record.timer is None and record.deadline() is None
    request_id = src.send("MESSAGE")
    link.run(until=5.0)
    assert src.final(request_id).status == 405


def test_cancel_while_the_sinks_open_and_no_sinks_at_all() -> None:
    link, src, srs = with_hand_src()
    srs.auto_open = False
    request_id = src.invite()
    link.run(until=0.5)
    (opened,) = srs.of(OpenStreams)
    src.core.cancel(request_id, link.clock.now)
    link.run(until=1.0)
    assert src.final(request_id).status == 487
    srs.run(srs.srs.streams_opened, opened.session_id, {"1": 1, "2": 3})
    assert [(e.session_id, e.reason, e.started) for e in srs.of(SessionEnded)] == [
        ("S1", EndReason.CANCELLED, False)
    ]
    assert link.sent(from_srs, response(200, "INVITE")) == []
    request_id = src.invite()
    link.run(until=2.0)
    srs.run(srs.srs.streams_unavailable, "S2", "port range exhausted")
    link.run(until=3.0)
    refused = src.final(request_id)
    assert refused.status == 503 and "port range exhausted" in warning(refused)
    assert srs.of(SessionEnded)[-1].reason is EndReason.MEDIA_UNAVAILABLE


def test_no_ack_and_shutdown() -> None:
    link, src, srs = with_hand_src()
    link.drop(
        lambda p: p.sender == "src" and isinstance(p.message, Request) and p.message.method == "ACK",
        count=None,
    )
    src.invite()
    link.run(until=40.0)
    assert srs.srs.sessions["S1"].end_reason is EndReason.NO_ACK
    link, src, srs = with_hand_src()
    src.invite()
    link.run(until=1.0)
    srs.auto_open = False
    pending_id = src.invite()
    link.run(until=2.0)
    srs.run(srs.srs.stop_all)
    link.run(until=3.0)
    (bye,) = link.sent(from_srs, request("BYE"))
    assert "cause=503" in (bye.message.headers.get("Reason") or "")
    assert src.final(pending_id).status == 503
    assert [(e.reason, e.started) for e in srs.of(SessionEnded)] == [
        (EndReason.SHUTDOWN, True),
        (EndReason.SHUTDOWN, False),
    ]


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_every_vendor_capture_is_answered(fixtures_dir: Path, name: str) -> None:
    content_type, body = load(fixtures_dir, name)
    link, src, srs = with_hand_src()
    request_id = src.invite(content_type=content_type, body=body)
    link.run(until=1.0)
    ok = src.final(request_id)
    assert ok.status == 200, warning(ok)
    answer = parse_sdp(ok.body)
    offered = [m.label for m in parse_sdp(read_sdp(content_type, body)).media]
    assert [m.label for m in answer.media] == offered
    assert all(m.port != 0 for m in answer.media)
    assert {m.direction for m in answer.media} <= {Direction.RECVONLY, Direction.INACTIVE}
    record = srs.only
    assert list(record.streams) == offered
    assert all(s.codec in ("PCMU", "PCMA") for s in record.streams.values())
    assert record.metadata is not None and len(record.snapshots) == 1


def read_sdp(content_type: str, body: bytes) -> bytes:
    return read_siprec_body(content_type, body)[0]


def test_the_non_siprec_capture_is_refused(fixtures_dir: Path) -> None:
    content_type, body = load(fixtures_dir, NOT_SIPREC)
    link, src, srs = with_hand_src()
    request_id = src.invite(content_type=content_type, body=body)
    link.run(until=1.0)
    refused = src.final(request_id)
    assert refused.status == 415 and "rs-metadata" in warning(refused)
    assert srs.srs.sessions == {}


def test_many_sessions_at_once() -> None:
    link, src, srs = with_hand_src()
    ids = [src.invite() for _ in range(20)]
    link.run(until=1.0)
    assert all(src.final(i).status == 200 for i in ids)
    assert len({s.session_id for s in srs.srs.sessions.values()}) == 20
    ports = [s.port for record in srs.srs.sessions.values() for s in record.streams.values()]
    assert len(set(ports)) == 40
    dialogs = [e.dialog_id for e in src.events if isinstance(e, DialogEstablished)]
    for dialog in dialogs[:5]:
        src.core.bye(dialog, link.clock.now)
    link.run(until=2.0)
    assert sum(not s.live for s in srs.srs.sessions.values()) == 5
    assert len(link.sent(sent_by("src"), request("BYE"))) == 5


def test_a_reinvite_waiting_for_its_sinks_gets_487_when_the_session_ends() -> None:
    link, src, srs = with_hand_src()
    src.invite()
    link.run(until=1.0)
    srs.auto_open = False
    reinvite = src.send(
        "INVITE", body=offer(labels=("1", "2", "3"), version=2), content_type="application/sdp"
    )
    link.run(until=2.0)
    assert srs.of(OpenStreams)[-1] == OpenStreams("S1", ("3",))
    bye = src.send("BYE")
    link.run(until=3.0)
    assert src.final(bye).status == 200
    assert src.final(reinvite).status == 487
    assert srs.of(SessionEnded)[-1].reason is EndReason.BYE_FROM_SRC
    srs.run(srs.srs.streams_opened, "S1", {"3": 1})  # late: nothing happens
    assert "3" not in srs.only.streams
