"""Recording sessions against scripted SRSs over the fake link and virtual clock (STYLE.md #8).

``SrcNode`` is the SRC side: a ``UserAgentCore`` plus a ``SessionRouter``, with a tiny driver
that answers ``PrepareAttempt`` at once (fixed media ports, the SRS address from the URI) and
records every action and event. ``SrsNode`` is a scripted SRS: by default it answers each
SIPREC INVITE with the reference SRS answer (``build_answer_for_srs``) and each re-INVITE with
the same; a test replaces ``policy`` to do anything else (``scripted``, ``reply``, ``ring``,
``silent`` and ``accept_with`` cover the usual scripts), and drives the SRS's own in-dialog
requests with ``SrsNode.send``.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from siprec_src.media.spec import Leg
from siprec_src.metadata.model import for_call
from siprec_src.recording.connector import Connector, connector_for
from siprec_src.recording.events import RecordingEvent
from siprec_src.recording.router import SessionRouter
from siprec_src.recording.session import (
    Action,
    AttemptResources,
    PrepareAttempt,
    RecordingSession,
    StreamPlan,
)
from siprec_src.sdp.session import parse_sdp
from siprec_src.sdp.siprec import PCMU, CodecSpec, CryptoSuite, build_answer_for_srs
from siprec_src.sip.dialog import DialogId
from siprec_src.sip.message import Request, Response
from siprec_src.sip.multipart import decode_multipart
from siprec_src.sip.target import Destination, target_for_uri
from siprec_src.sip.useragent import (
    DialogEstablished,
    RequestReceived,
    ResponseReceived,
    UaConfig,
    UaEvent,
    UserAgentCore,
)
from tests.sip.fakenet import FakeLink, Packet, Predicate

SRC_ADDR = ("192.0.2.1", 5060)
SRS_ADDRS = [("192.0.2.10", 5080), ("192.0.2.11", 5080), ("192.0.2.12", 5080)]
MEDIA_HOST = "192.0.2.1"
SRS_MEDIA_HOST = "192.0.2.50"
SRS_KEY = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk"  # 30 bytes of key||salt, base64
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
CODEC = PCMU.with_telephone_event(101)
# A different key per suite, so a test can tell which one the session picked.
SRC_KEYS = {
    "AES_CM_128_HMAC_SHA1_80": base64.b64encode(bytes([0x80] * 30)).decode(),
    "AES_CM_128_HMAC_SHA1_32": base64.b64encode(bytes([0x32] * 30)).decode(),
    "AEAD_AES_128_GCM": base64.b64encode(bytes([0x47] * 28)).decode(),
}


def fake_key(suite: str) -> str:
    return "inline:" + SRC_KEYS[suite]


@dataclass
class SrcNode:
    core: UserAgentCore
    router: SessionRouter
    link: FakeLink
    actions: list[Action] = field(default_factory=list)
    events: list[RecordingEvent] = field(default_factory=list)
    unavailable: set[str] = field(default_factory=set)  # SRS hosts the driver cannot prepare

    def _pump(self) -> None:
        while (event := self.core.next_event()) is not None:
            self.router.handle_ua_event(event, self.link.clock.now)
        self._drain()

    def _drain(self) -> None:
        for session, actions, events in self.router.drain():
            self.actions.extend(actions)
            self.events.extend(events)
            for action in actions:
                if isinstance(action, PrepareAttempt):
                    self._prepare(session, action)

    def _prepare(self, session: RecordingSession, action: PrepareAttempt) -> None:
        uri = action.target.uri
        if uri.host in self.unavailable:
            session.attempt_unavailable(action.attempt, f"{uri.host} does not resolve", self.link.clock.now)
        else:
            target = target_for_uri(uri)
            ports = {label: 40000 + 2 * i for i, label in enumerate(session.labels)}
            resources = AttemptResources(
                Destination(target.transport, target.host, target.port),
                SRC_ADDR,
                MEDIA_HOST,
                ports,
                MEDIA_HOST,
            )
            session.attempt_ready(action.attempt, resources, self.link.clock.now)
        self.router.sync(session)
        self._pump()

    def run(self, session: RecordingSession, method: Callable[..., None], *args: object) -> None:
        """Call a session command the way a driver does: then index, pump and drain."""
        method(*args, self.link.clock.now)
        self.router.sync(session)
        self._pump()

    # the FakeLink Core surface
    def receive(self, message: Request | Response, source: Destination, now: float) -> None:
        self.core.receive(message, source, now)
        self._pump()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self.router.handle_timer(now)
        self._pump()

    def get_timer(self) -> float | None:
        timers = [t for t in (self.core.get_timer(), self.router.get_timer()) if t is not None]
        return min(timers) if timers else None

    def messages_to_send(self) -> list[tuple[bytes, Destination]]:
        return self.core.messages_to_send()

    def transport_error(self, destination: Destination, now: float, reason: str) -> None:
        self.core.transport_error(destination, now, reason)
        self._pump()

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in [*self.events, *self.actions] if isinstance(e, kind)]

    def kinds(self, recording_id: str | None = None) -> list[str]:
        """The names of the events so far (of one recording), in order: for sequence checks."""
        return [
            type(e).__name__ for e in self.events if recording_id is None or e.recording_id == recording_id
        ]


def srs_answer(
    request: Request | Response,
    port: int = 30000,
    *,
    inactive: bool = False,
    ports: Sequence[int] | None = None,
    version: int = 0,
) -> bytes:
    """The reference SRS answer to the SDP in a (multipart) SIPREC message (request or 2xx).

    Read as an offer from the SRS, it is what an SRS re-INVITE offers: ``recvonly`` m-lines
    with the SRC's labels and codec numbers.
    """
    sdp = sdp_of(request)
    offer = parse_sdp(sdp)
    secure = any(m.proto.upper() == "RTP/SAVP" for m in offer.media)
    keys = [{CryptoSuite.AES_CM_128_HMAC_SHA1_80: SRS_KEY}] * len(offer.media) if secure else None
    if ports is None:
        ports = [port + 2 * i for i in range(len(offer.media))]
    answer = build_answer_for_srs(
        offer, address=SRS_MEDIA_HOST, ports=ports, crypto_keys=keys, session_version=version
    )
    data = bytes(answer)
    return data.replace(b"a=recvonly", b"a=inactive") if inactive else data


def sdp_of(message: Request | Response) -> bytes:
    ctype = message.content_type or ""
    if ctype.startswith("multipart/"):
        return next(
            p.body for p in decode_multipart(ctype, message.body) if p.media_type == "application/sdp"
        )
    return message.body


Policy = Callable[["SrsNode", RequestReceived], None]


def accept(node: SrsNode, event: RequestReceived, headers: list[tuple[str, str]] | None = None) -> None:
    node.core.respond(
        event.server_id,
        200,
        node.link.clock.now,
        body=srs_answer(event.request),
        content_type="application/sdp",
        headers=headers or [],
    )


def accept_with(
    headers: Sequence[tuple[str, str]] = (),
    *,
    answer: Callable[[Request], bytes] | None = None,
) -> Policy:
    """Answer 200 with ``headers`` and the SDP ``answer(request)`` (default: the reference answer)."""

    def policy(node: SrsNode, event: RequestReceived) -> None:
        body = (answer or srs_answer)(event.request)
        node.core.respond(
            event.server_id,
            200,
            node.link.clock.now,
            body=body,
            content_type="application/sdp",
            headers=list(headers),
        )

    return policy


def reply(status: int, headers: Sequence[tuple[str, str]] = ()) -> Policy:
    """Answer with a final non-2xx ``status``."""

    def policy(node: SrsNode, event: RequestReceived) -> None:
        node.core.respond(event.server_id, status, node.link.clock.now, headers=list(headers))

    return policy


def silent(node: SrsNode, event: RequestReceived) -> None:
    """Never answer (the transaction layer already sent 100 Trying); ``node.held`` keeps it."""
    node.held.append(event)


def ring(node: SrsNode, event: RequestReceived) -> None:
    """Answer 180 Ringing and hold the request for the test to answer with ``node.answer``."""
    node.core.respond(event.server_id, 180, node.link.clock.now)
    node.held.append(event)


def scripted(*steps: Policy, then: Policy = accept) -> Policy:
    """Answer the n-th INVITE/UPDATE/INFO with ``steps[n]`` and the later ones with ``then``."""
    remaining = list(steps)

    def policy(node: SrsNode, event: RequestReceived) -> None:
        (remaining.pop(0) if remaining else then)(node, event)

    return policy


@dataclass
class SrsNode:
    core: UserAgentCore
    link: FakeLink
    policy: Policy = accept
    requests: list[Request] = field(default_factory=list)
    events: list[UaEvent] = field(default_factory=list)
    held: list[RequestReceived] = field(default_factory=list)
    outbox: list[tuple[bytes, Destination]] = field(default_factory=list)  # hand-made messages

    def _drain(self) -> None:
        while (event := self.core.next_event()) is not None:
            self.events.append(event)
            if isinstance(event, RequestReceived):
                self.requests.append(event.request)
                self.policy(self, event)

    def receive(self, message: Request | Response, source: Destination, now: float) -> None:
        self.core.receive(message, source, now)
        self._drain()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self._drain()

    def get_timer(self) -> float | None:
        return self.core.get_timer()

    def messages_to_send(self) -> list[tuple[bytes, Destination]]:
        extra, self.outbox = self.outbox, []
        return [*self.core.messages_to_send(), *extra]

    def transport_error(self, destination: Destination, now: float, reason: str) -> None:
        self.core.transport_error(destination, now, reason)
        self._drain()

    def ack_with_answer(self, body: bytes, *, branch: str = "z9hG4bKhandmadeack") -> None:
        """An ACK carrying an SDP answer (RFC 3264 §5), which the core's automatic ACK cannot do.

        Drop the core's own ACK on the link (``link.drop``) before calling this.
        """
        dialog = self.core.dialog(self.dialog_id)
        assert dialog is not None and dialog.destination is not None
        ack = dialog.create_ack(body, "application/sdp")
        host, port = self.core.local_addresses["udp"]
        ack.headers.prepend("Via", f"SIP/2.0/UDP {host}:{port};branch={branch};rport")
        ack.headers.add("Max-Forwards", "70")
        self.outbox.append((bytes(ack), dialog.destination))

    def invites(self) -> list[Request]:
        return [r for r in self.requests if r.method == "INVITE"]

    @property
    def dialog_id(self) -> DialogId:
        """The SRS's side of the (last) recording dialog."""
        return [e for e in self.events if isinstance(e, DialogEstablished)][-1].dialog_id

    def send(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> int:
        """Send an in-dialog request from the SRS now; returns its request id."""
        request_id = self.core.send_in_dialog(
            self.dialog_id,
            method,
            self.link.clock.now,
            body=body,
            content_type=content_type,
            headers=headers,
        )
        self._drain()
        return request_id

    def answer(self, held: RequestReceived, status: int = 200, **kwargs: object) -> None:
        """Answer a held request now (200 with the reference SDP answer unless told otherwise)."""
        if status == 200 and "body" not in kwargs:
            kwargs = {"body": srs_answer(held.request), "content_type": "application/sdp", **kwargs}
        self.core.respond(held.server_id, status, self.link.clock.now, **kwargs)  # type: ignore[arg-type]
        self._drain()

    def responses(self, request_id: int | None = None) -> list[Response]:
        """Final and provisional responses to the SRS's own requests."""
        return [
            e.response
            for e in self.events
            if isinstance(e, ResponseReceived) and (request_id is None or e.request_id == request_id)
        ]


def world(
    srs_count: int = 1,
    *,
    attached: int | None = None,
    detached: Sequence[int] = (),
    seed: int = 3,
    latency: float = 0.0,
) -> tuple[FakeLink, SrcNode, list[SrsNode]]:
    """The SRC and ``srs_count`` SRSs; those in ``detached`` (or past ``attached``) are not on the link."""
    link = FakeLink(latency=latency)
    core = UserAgentCore(
        UaConfig(user_agent="siprec-src test"),
        local_addresses={transport: SRC_ADDR for transport in ("udp", "tcp", "tls")},
        rng=random.Random(seed),
    )
    src = SrcNode(core, SessionRouter(core), link)
    link.attach("src", src, *SRC_ADDR)
    nodes = []
    for i in range(srs_count):
        srs_core = UserAgentCore(
            UaConfig(user_agent="srs", supported=("timer", "siprec")),
            local_addresses={transport: SRS_ADDRS[i] for transport in ("udp", "tcp", "tls")},
            rng=random.Random(seed + 10 + i),
        )
        node = SrsNode(srs_core, link)
        if i not in detached and (attached is None or i < attached):
            link.attach(f"srs{i}", node, *SRS_ADDRS[i])
        nodes.append(node)
    return link, src, nodes


def connector(srs_count: int = 1, **options: object) -> Connector:
    uris = [f"sip:srs@{host}:{port}" for host, port in SRS_ADDRS[:srs_count]]
    return connector_for("test", uris, **options)  # type: ignore[arg-type]


def new_session(
    src: SrcNode,
    conn: Connector,
    *,
    labels: tuple[str, ...] = ("1", "2"),
    codec: CodecSpec = CODEC,
    recording_id: str = "SR0001",
    session_expires: int | None = None,
) -> RecordingSession:
    rng = random.Random(5)
    legs = (Leg.INBOUND, Leg.OUTBOUND)
    plans = tuple(StreamPlan(label, legs[i % 2], 0x1000 + i) for i, label in enumerate(labels))
    metadata = for_call(
        "call-1@pbx",
        [("sip:alice@example.com", "Alice O'Brien & Sons <sales>"), ("sip:bob@example.net", None)],
        [(label, i % 2, [1 - i % 2]) for i, label in enumerate(labels)],
        NOW,
        rng.randbytes,
    )
    session = RecordingSession(
        recording_id,
        src.core,
        conn,
        call_id="call-1@pbx",
        streams=plans,
        codec=codec,
        metadata=metadata,
        session_expires=session_expires,
        generate_key=fake_key,
        rng=rng,
    )
    src.router.add(session)
    return session


# --- packet predicates (for FakeLink.sent / delivered) ----------------------------------------


def to_srs(index: int) -> Predicate:
    host, port = SRS_ADDRS[index]
    return lambda packet: packet.destination.host == host and packet.destination.port == port


def from_src(packet: Packet) -> bool:
    return packet.sender == "src"


def in_dialog(packet: Packet) -> bool:
    """A request with a To tag (re-INVITE, BYE, ACK for 2xx...)."""
    return isinstance(packet.message, Request) and packet.message.to.tag is not None


def out_of_dialog(packet: Packet) -> bool:
    return isinstance(packet.message, Request) and packet.message.to.tag is None
