"""The asyncio UserAgent over real loopback sockets: a SIPREC-shaped INVITE dialog end to end.

Covers: INVITE with a multipart/mixed body -> 200 -> ACK -> BYE over UDP, TCP and TLS (with a
CA made by the test, and sips: URIs); the RFC 3261 §18.1.1 switch to TCP for a large request;
OPTIONS answered by the core; a TLS peer with an untrusted certificate fails the request with a
503 naming certificate verification. Does not cover timers (tests/sip uses a virtual clock).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from siprec_src.signaling.transport import ListenSpec, TlsConfig
from siprec_src.signaling.useragent import UserAgent
from siprec_src.sip.headers import NameAddress
from siprec_src.sip.message import Response
from siprec_src.sip.multipart import BodyPart, decode_multipart, encode_multipart
from siprec_src.sip.uri import SipUri
from siprec_src.sip.useragent import (
    AckReceived,
    DialogTerminated,
    RequestFailed,
    RequestReceived,
    UaConfig,
    UaEvent,
    UserAgentCore,
)
from tests.pki import Pki, make_pki

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\na=sendonly\r\na=label:1\r\n"
)
METADATA = (
    b'<?xml version="1.0" encoding="UTF-8"?>\r\n<recording xmlns="urn:ietf:params:xml:ns:recording:1"/>\r\n'
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "ua")


class Srs:
    """A minimal SRS transaction user: answers INVITEs with 200 and records what it saw."""

    def __init__(self) -> None:
        self.ua: UserAgent | None = None
        self.events: list[UaEvent] = []
        self.invites: list[RequestReceived] = []
        self.changed = asyncio.Event()

    def __call__(self, event: UaEvent) -> None:
        self.events.append(event)
        self.changed.set()
        if isinstance(event, RequestReceived) and event.request.method == "INVITE":
            self.invites.append(event)
            assert self.ua is not None
            self.ua.respond(
                event.server_id,
                200,
                body=SDP.replace(b"sendonly", b"recvonly"),
                content_type="application/sdp",
            )

    async def until(self, check: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not check():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def agents(pki: Pki) -> AsyncIterator[tuple[UserAgent, UserAgent, Srs]]:
    # The SRC listens on TLS too (its Via and Contact need a TLS address); it uses the same
    # localhost certificate as the SRS, which the SRS never has to verify here.
    tls_client = TlsConfig(certfile=pki.server_cert, keyfile=pki.server_key, cafile=pki.ca)
    tls_server = TlsConfig(certfile=pki.server_cert, keyfile=pki.server_key)
    listens = [ListenSpec(t, "127.0.0.1", 0) for t in ("udp", "tcp", "tls")]
    srs = Srs()
    src = UserAgent(UserAgentCore(), tls=tls_client)
    server = UserAgent(UserAgentCore(UaConfig(supported=("timer", "siprec"))), tls=tls_server, on_event=srs)
    srs.ua = server
    await src.start(listens)
    await server.start(listens)
    try:
        yield src, server, srs
    finally:
        await src.close()
        await server.close()


def srs_uri(server: UserAgent, transport: str) -> SipUri:
    host, port = server.transport.local_address(transport)
    if transport == "tls":
        return SipUri("sips", "localhost", "srs", None, port)
    params: tuple[tuple[str, str | None], ...] = (("transport", transport),) if transport == "tcp" else ()
    return SipUri("sip", host, "srs", None, port, params)


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_siprec_invite_dialog(agents: tuple[UserAgent, UserAgent, Srs], transport: str) -> None:
    src, server, srs = agents
    content_type, body = encode_multipart(
        [
            BodyPart("application/sdp", SDP),
            BodyPart(
                "application/rs-metadata+xml", METADATA, (("Content-Disposition", "recording-session"),)
            ),
        ]
    )
    uri = srs_uri(server, transport)
    destination = await src.destination_for(uri)
    assert destination.transport == transport
    invite = src.core.create_request(
        "INVITE",
        uri,
        NameAddress(SipUri("sip", "src.example.com", "src")),
        NameAddress(uri),
        transport=transport,
        body=body,
        content_type=content_type,
        contact=src.core.local_contact(transport).with_param("+sip.src"),
    )
    invite.headers.add("Require", "siprec")
    async with asyncio.timeout(5):
        outcome = await src.request(invite, destination)
    assert isinstance(outcome, Response) and outcome.status == 200, outcome
    await srs.until(lambda: any(isinstance(e, AckReceived) for e in srs.events))
    received = srs.invites[0].request
    assert received.header_tokens("Require") == {"siprec"}
    assert received.contacts[0].param("+sip.src") == ""
    parts = decode_multipart(received.content_type or "", received.body)
    assert [p.content_type for p in parts] == ["application/sdp", "application/rs-metadata+xml"]
    assert parts[1].header("Content-Disposition") == "recording-session"

    dialog_id = next(iter(src.core.dialogs))
    bye_id = src.bye(dialog_id)
    async with asyncio.timeout(5):
        bye_outcome = await src.wait(bye_id)
    assert isinstance(bye_outcome, Response) and bye_outcome.status == 200
    await srs.until(lambda: any(isinstance(e, DialogTerminated) for e in srs.events))


async def test_large_request_moves_to_tcp(agents: tuple[UserAgent, UserAgent, Srs]) -> None:
    src, server, srs = agents
    uri = srs_uri(server, "udp")
    invite = src.core.create_request(
        "INVITE",
        uri,
        NameAddress(SipUri("sip", "src.example.com", "src")),
        NameAddress(uri),
        transport="tcp",
        body=SDP + b"a=x-pad:" + b"p" * 1500 + b"\r\n",
        content_type="application/sdp",
    )
    invite.headers.add("Require", "siprec")
    # RFC 3261 §18.1.1: a request over 1300 bytes goes over TCP when the URI does not insist on UDP.
    # The UDP and TCP listeners share no port, so aim the TCP connection at the TCP listener.
    tcp_port = server.transport.local_address("tcp")[1]
    destination = await src.destination_for(
        SipUri("sip", "127.0.0.1", "srs", None, tcp_port), message_size=len(bytes(invite))
    )
    assert destination.transport == "tcp"
    async with asyncio.timeout(5):
        outcome = await src.request(invite, destination)
    assert isinstance(outcome, Response) and outcome.status == 200
    assert srs.invites[0].source.transport == "tcp"


async def test_options_is_answered_by_the_core(agents: tuple[UserAgent, UserAgent, Srs]) -> None:
    src, server, _ = agents
    uri = srs_uri(server, "udp")
    options = src.core.create_request(
        "OPTIONS", uri, NameAddress(SipUri("sip", "src.example.com")), NameAddress(uri)
    )
    async with asyncio.timeout(5):
        outcome = await src.request(options)
    assert isinstance(outcome, Response) and outcome.status == 200
    assert "siprec" in outcome.header_tokens("Supported")


async def test_untrusted_tls_certificate_fails_the_request(
    agents: tuple[UserAgent, UserAgent, Srs], tmp_path: Path
) -> None:
    _, server, _ = agents
    stranger = make_pki(tmp_path, "stranger")
    client = UserAgent(
        UserAgentCore(),
        tls=TlsConfig(certfile=stranger.server_cert, keyfile=stranger.server_key, cafile=stranger.ca),
    )
    await client.start([ListenSpec("tls", "127.0.0.1", 0)])
    try:
        uri = srs_uri(server, "tls")
        options = client.core.create_request(
            "OPTIONS", uri, NameAddress(SipUri("sip", "src.example.com")), NameAddress(uri), transport="tls"
        )
        async with asyncio.timeout(5):
            outcome = await client.request(options)
        assert isinstance(outcome, RequestFailed)
        assert outcome.status == 503 and "certificate verif" in outcome.reason
    finally:
        await client.close()
