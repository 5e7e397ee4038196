"""The asyncio SIP transport (siprec_src.signaling.transport) and resolver, over real loopback sockets.

Covers: UDP request/response between two SipTransports (IPv4, and IPv6 when ::1 can be bound),
sent from the listening port; UDP parse errors with the raw datagram; TCP connection reuse in
both directions (RFC 3261 §18.2.2) and for concurrent sends; messages split across segments and
coalesced in one; CRLF keepalive pong (RFC 5626 §4.4.1); framing errors close the connection,
parse errors do not; refused connections; the idle timeout; the connection limit; TLS with a CA
made here (success, wrong CA, wrong host name, optional client certificate, listener without
a certificate); local addresses with port 0; resolve() for IPs, names and failures.
Does not cover: real DNS (only /etc/hosts "localhost"), SRV/NAPTR, ICMP errors on UDP.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from siprec_src.errors import ConfigError, LocalProtocolError
from siprec_src.signaling import (
    ListenSpec,
    ResolutionError,
    SipTransport,
    TlsConfig,
    TransportError,
    resolve,
)
from siprec_src.sip.message import Request, Response, response_to
from siprec_src.sip.syntax import SipParseError
from siprec_src.sip.target import Destination, stamp_received
from tests.pki import Pki, make_pki


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# IPv6 is tested here only when the host has ::1; tests/sip/test_target.py covers it without sockets.
LOOPBACKS = ["127.0.0.1", "::1"] if _ipv6_loopback() else ["127.0.0.1"]


def options(branch: str, cseq: int = 1, *, transport: str = "UDP", sent_by: str = "127.0.0.1:5060") -> bytes:
    return (
        "OPTIONS sip:srs@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {sent_by};rport;branch=z9hG4bK{branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:src@example.com>;tag=src1\r\n"
        "To: <sip:srs@example.com>\r\n"
        "Call-ID: call-1@example.com\r\n"
        f"CSeq: {cseq} OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@dataclass
class Peer:
    """A SipTransport whose callbacks fill queues the test can await."""

    sip: SipTransport
    messages: asyncio.Queue[tuple[Request | Response, Destination, Destination]]
    parse_errors: asyncio.Queue[tuple[SipParseError, bytes | None, Destination]]
    transport_errors: asyncio.Queue[tuple[Destination, str]]

    def address(self, transport: str) -> Destination:
        host, port = self.sip.local_address(transport)
        return Destination(transport, host, port)


PeerFactory = Callable[..., Any]


@pytest.fixture
async def make_peer() -> AsyncIterator[PeerFactory]:
    made: list[Peer] = []

    async def make(*listens: tuple[str, str], **options: Any) -> Peer:
        messages: asyncio.Queue[tuple[Request | Response, Destination, Destination]] = asyncio.Queue()
        parse_errors: asyncio.Queue[tuple[SipParseError, bytes | None, Destination]] = asyncio.Queue()
        transport_errors: asyncio.Queue[tuple[Destination, str]] = asyncio.Queue()
        sip = SipTransport(
            lambda message, source, local: messages.put_nowait((message, source, local)),
            lambda error, raw, source: parse_errors.put_nowait((error, raw, source)),
            lambda destination, reason: transport_errors.put_nowait((destination, reason)),
            **options,
        )
        peer = Peer(sip, messages, parse_errors, transport_errors)
        made.append(peer)
        await sip.start([ListenSpec(transport, host, 0) for transport, host in listens])
        return peer

    yield make
    for peer in made:
        await peer.sip.close()


async def wait_until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


# --- UDP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("host", LOOPBACKS)
async def test_udp_request_and_response_between_two_transports(make_peer: PeerFactory, host: str) -> None:
    async with asyncio.timeout(5):
        src = await make_peer(("udp", host))
        srs = await make_peer(("udp", host))
        src_address = src.address("udp")
        assert src_address.port != 0
        await src.sip.send(options("u1"), srs.address("udp"))

        request, source, local = await srs.messages.get()
        assert isinstance(request, Request) and request.method == "OPTIONS"
        # Sent from the listening socket, so the SRS sees the port we advertise.
        assert source == src_address
        assert local == srs.address("udp")

        stamp_received(request, source)
        await srs.sip.send(bytes(response_to(request, 200)), source)
        response, source, _ = await src.messages.get()
        assert isinstance(response, Response) and response.status == 200
        assert source == srs.address("udp")
        assert response.top_via.rport == str(src_address.port)


async def test_udp_parse_error_reports_the_datagram(make_peer: PeerFactory) -> None:
    async with asyncio.timeout(5):
        srs = await make_peer(("udp", "127.0.0.1"))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.sendto(b"NOT SIP AT ALL\r\n\r\n", srs.sip.local_address("udp"))
            error, raw, source = await srs.parse_errors.get()
            assert raw == b"NOT SIP AT ALL\r\n\r\n"
            assert source == Destination("udp", *sock.getsockname())
            assert error.status_hint == 400
        assert srs.messages.empty()


async def test_udp_without_a_socket_of_that_family_fails(make_peer: PeerFactory) -> None:
    async with asyncio.timeout(5):
        src = await make_peer(("udp", "127.0.0.1"))
        with pytest.raises(TransportError, match="no IPv6 UDP socket"):
            await src.sip.send(options("u2"), Destination("udp", "::1", 5060))
        assert (await src.transport_errors.get())[0] == Destination("udp", "::1", 5060)


# --- TCP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("host", LOOPBACKS)
async def test_tcp_reuses_one_connection_both_ways(make_peer: PeerFactory, host: str) -> None:
    async with asyncio.timeout(5):
        src = await make_peer(("tcp", host))
        srs = await make_peer(("tcp", host))
        srs_address = srs.address("tcp")
        await src.sip.send(options("t1", 1, transport="TCP"), srs_address)
        await src.sip.send(options("t2", 2, transport="TCP"), srs_address)

        first, source1, _ = await srs.messages.get()
        second, source2, _ = await srs.messages.get()
        assert isinstance(first, Request) and isinstance(second, Request)
        assert (first.cseq.number, second.cseq.number) == (1, 2)
        assert source1 == source2  # one connection carried both
        assert source1.port != src.address("tcp").port  # the client's ephemeral port
        assert srs.sip.connections == (source1,)

        # RFC 3261 §18.2.2: the response goes back over the connection the request came on.
        await srs.sip.send(bytes(response_to(second, 200)), source1)
        response, source, _ = await src.messages.get()
        assert isinstance(response, Response) and response.cseq.number == 2
        assert source == srs_address
        assert src.sip.connections == (srs_address,)
        assert srs.sip.connections == (source1,)


async def test_concurrent_sends_share_one_connection_attempt(make_peer: PeerFactory) -> None:
    async with asyncio.timeout(5):
        src = await make_peer(("tcp", "127.0.0.1"))
        srs = await make_peer(("tcp", "127.0.0.1"))
        await asyncio.gather(*(src.sip.send(options(f"c{n}", n), srs.address("tcp")) for n in range(1, 4)))
        sources = {(await srs.messages.get())[1] for _ in range(3)}
        assert len(sources) == 1
        assert len(srs.sip.connections) == 1


async def test_stream_split_across_segments_and_coalesced(make_peer: PeerFactory) -> None:
    async with asyncio.timeout(5):
        srs = await make_peer(("tcp", "127.0.0.1"))
        _, writer = await asyncio.open_connection(*srs.sip.local_address("tcp"))
        first = options("s1", 1, transport="TCP")
        for start in range(0, len(first), 7):
            writer.write(first[start : start + 7])
            await writer.drain()
            await asyncio.sleep(0.002)
        writer.write(options("s2", 2, transport="TCP") + options("s3", 3, transport="TCP"))
        await writer.drain()
        numbers = []
        for _ in range(3):
            message, _, _ = await srs.messages.get()
            numbers.append(message.cseq.number)
        assert numbers == [1, 2, 3]
        writer.close()
        await writer.wait_closed()


async def test_crlf_ping_gets_a_crlf_pong(make_peer: PeerFactory) -> None:
    async with asyncio.timeout(5):
        srs = await make_peer(("tcp", "127.0.0.1"))
        reader, writer = await asyncio.open_connection(*srs.sip.local_address("tcp"))
        writer.write(b"\r\n\r\n")
        await writer.drain()
        assert await reader.readexactly(2) == b"\r\n"
        # The connection still carries SIP after the ping.
        writer.write(options("p1", transport="TCP"))
        await writer.drain()
        message, _, _ = await srs.messages.get()
        assert isinstance(message, Request)
        writer.close()
        await writer.wait_closed()


async def test_framing_error_closes_the_connection_and_reports(make_peer: PeerFactory) -> None:
    async with asyncio.timeout(5):
        srs = await make_peer(("tcp", "127.0.0.1"))
        reader, writer = await asyncio.open_connection(*srs.sip.local_address("tcp"))
        client = Destination("tcp", *writer.get_extra_info("sockname"))
        no_length = options("f1", transport="TCP").replace(b"Content-Length: 0\r\n", b"")
        writer.write(no_length)
        await writer.drain()
        destination, reason = await srs.transport_errors.get()
        assert destination == client
        assert "Content-Length" in reason
        assert await reader.read() == b""  # closed by the server
        await wait_until(lambda: not srs.sip.connections)
        assert srs.messages.empty()
        writer.close()
        await writer.wait_closed()


async def test_parse_error_keeps_the_connection(make_peer: PeerFactory) -> None:
    async with asyncio.timeout(5):
        srs = await make_peer(("tcp", "127.0.0.1"))
        _, writer = await asyncio.open_connection(*srs.sip.local_address("tcp"))
        bad = options("e1", transport="TCP").replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
        writer.write(bad + options("e2", 2, transport="TCP"))
        await writer.drain()
        error, raw, source = await srs.parse_errors.get()
        assert "CSeq" in error.reason and raw is None
        assert source == Destination("tcp", *writer.get_extra_info("sockname"))
        message, _, _ = await srs.messages.get()
        assert message.cseq.number == 2
        assert srs.sip.connections == (source,)
        writer.close()
        await writer.wait_closed()


async def test_refused_connection_is_reported_and_raised(make_peer: PeerFactory) -> None:
    async with asyncio.timeout(5):
        src = await make_peer(("tcp", "127.0.0.1"))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed_port = sock.getsockname()[1]
        nowhere = Destination("tcp", "127.0.0.1", closed_port)
        with pytest.raises(TransportError, match="connection failed") as caught:
            await src.sip.send(options("r1", transport="TCP"), nowhere)
        assert caught.value.destination == nowhere
        assert await src.transport_errors.get() == (nowhere, caught.value.reason)


async def test_idle_connection_is_closed(make_peer: PeerFactory) -> None:
    async with asyncio.timeout(5):
        srs = await make_peer(("tcp", "127.0.0.1"), idle_timeout=0.2)
        reader, writer = await asyncio.open_connection(*srs.sip.local_address("tcp"))
        writer.write(options("i1", transport="TCP"))
        await writer.drain()
        await srs.messages.get()
        assert len(srs.sip.connections) == 1
        assert await reader.read() == b""  # the server closed it after 0.2 s of silence
        await wait_until(lambda: not srs.sip.connections)
        assert srs.transport_errors.empty()  # an idle close is not an error
        writer.close()
        await writer.wait_closed()


async def test_connection_limit_refuses_extra_inbound_connections(make_peer: PeerFactory) -> None:
    async with asyncio.timeout(5):
        srs = await make_peer(("tcp", "127.0.0.1"), max_connections=1)
        _, writer1 = await asyncio.open_connection(*srs.sip.local_address("tcp"))
        await wait_until(lambda: len(srs.sip.connections) == 1)
        reader2, writer2 = await asyncio.open_connection(*srs.sip.local_address("tcp"))
        destination, reason = await srs.transport_errors.get()
        assert destination == Destination("tcp", *writer2.get_extra_info("sockname"))
        assert "limit of 1" in reason
        try:
            data = await reader2.read()
        except ConnectionResetError:
            data = b""  # aborted: the client sees a reset or an EOF, depending on timing
        assert data == b""
        assert len(srs.sip.connections) == 1
        for writer in (writer1, writer2):
            writer.close()
        await asyncio.sleep(0)


async def test_send_needs_an_ip_address(make_peer: PeerFactory) -> None:
    async with asyncio.timeout(5):
        src = await make_peer(("udp", "127.0.0.1"))
        with pytest.raises(LocalProtocolError, match="resolve"):
            await src.sip.send(options("n1"), Destination("udp", "localhost", 5060))


async def test_addresses_report_the_bound_ports(make_peer: PeerFactory) -> None:
    async with asyncio.timeout(5):
        peer = await make_peer(("udp", "127.0.0.1"), ("tcp", "127.0.0.1"))
        udp, tcp = peer.sip.addresses
        assert udp.transport == "udp" and udp.port != 0
        assert tcp.transport == "tcp" and tcp.port != 0
        assert peer.sip.local_address("udp") == (udp.host, udp.port)
        with pytest.raises(LocalProtocolError):
            peer.sip.local_address("tls")


# --- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "good")


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki-other"), "other")


async def tls_exchange(src: Peer, srs: Peer, server_name: str | None) -> None:
    srs_address = srs.address("tls")
    await src.sip.send(options("tls1", transport="TLS"), srs_address, server_name=server_name)
    request, source, _ = await srs.messages.get()
    assert isinstance(request, Request) and source.transport == "tls"
    await srs.sip.send(bytes(response_to(request, 200)), source)
    response, source, _ = await src.messages.get()
    assert isinstance(response, Response) and response.status == 200
    assert source == srs_address


@pytest.mark.parametrize("host", LOOPBACKS)
async def test_tls_with_a_trusted_ca(make_peer: PeerFactory, pki: Pki, host: str) -> None:
    async with asyncio.timeout(5):
        srs = await make_peer(("tls", host), tls=TlsConfig(pki.server_cert, pki.server_key))
        src = await make_peer(tls=TlsConfig(cafile=pki.ca))
        await tls_exchange(src, srs, "localhost")
        assert len(src.sip.connections) == 1 and len(srs.sip.connections) == 1


async def test_tls_checks_the_ip_address_without_a_server_name(make_peer: PeerFactory, pki: Pki) -> None:
    async with asyncio.timeout(5):
        srs = await make_peer(("tls", "127.0.0.1"), tls=TlsConfig(pki.server_cert, pki.server_key))
        src = await make_peer(tls=TlsConfig(cafile=pki.ca))
        await tls_exchange(src, srs, None)


async def test_tls_with_an_untrusted_ca_fails_verification(
    make_peer: PeerFactory, pki: Pki, other_pki: Pki
) -> None:
    async with asyncio.timeout(5):
        srs = await make_peer(("tls", "127.0.0.1"), tls=TlsConfig(pki.server_cert, pki.server_key))
        src = await make_peer(tls=TlsConfig(cafile=other_pki.ca))
        with pytest.raises(TransportError, match="certificate verification failed") as caught:
            await src.sip.send(options("x1", transport="TLS"), srs.address("tls"), server_name="localhost")
        assert "unable to get local issuer certificate" in caught.value.reason
        destination, reason = await src.transport_errors.get()
        assert destination == srs.address("tls") and reason == caught.value.reason
        assert srs.messages.empty() and not src.sip.connections


async def test_tls_with_the_wrong_host_name_fails_verification(make_peer: PeerFactory, pki: Pki) -> None:
    async with asyncio.timeout(5):
        srs = await make_peer(("tls", "127.0.0.1"), tls=TlsConfig(pki.server_cert, pki.server_key))
        src = await make_peer(tls=TlsConfig(cafile=pki.ca))
        with pytest.raises(TransportError, match="certificate verification failed") as caught:
            await src.sip.send(
                options("x2", transport="TLS"), srs.address("tls"), server_name="srs.example.com"
            )
        assert "srs.example.com" in caught.value.reason
        assert (await src.transport_errors.get())[1] == caught.value.reason


async def test_tls_without_verification_accepts_any_certificate(
    make_peer: PeerFactory, pki: Pki, other_pki: Pki
) -> None:
    async with asyncio.timeout(5):
        srs = await make_peer(("tls", "127.0.0.1"), tls=TlsConfig(pki.server_cert, pki.server_key))
        src = await make_peer(tls=TlsConfig(cafile=other_pki.ca, verify=False))
        await tls_exchange(src, srs, "srs.example.com")


@pytest.mark.parametrize("with_client_cert", [True, False])
async def test_tls_client_certificate_is_optional(
    make_peer: PeerFactory, pki: Pki, with_client_cert: bool
) -> None:
    async with asyncio.timeout(5):
        # With a cafile the listener asks for a client certificate and verifies one if sent.
        server = TlsConfig(pki.server_cert, pki.server_key, cafile=pki.ca)
        srs = await make_peer(("tls", "127.0.0.1"), tls=server)
        client = (
            TlsConfig(pki.client_cert, pki.client_key, cafile=pki.ca)
            if with_client_cert
            else TlsConfig(cafile=pki.ca)
        )
        src = await make_peer(tls=client)
        await tls_exchange(src, srs, "localhost")


async def test_tls_listener_needs_a_certificate(make_peer: PeerFactory) -> None:
    with pytest.raises(ConfigError, match="certfile and a keyfile"):
        await make_peer(("tls", "127.0.0.1"), tls=TlsConfig())


async def test_unreadable_certificate_names_the_file(make_peer: PeerFactory, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match=r"missing\.pem"):
        await make_peer(("tls", "127.0.0.1"), tls=TlsConfig(missing, missing))


# --- resolver ----------------------------------------------------------------------------


async def test_resolve_passes_ip_addresses_through() -> None:
    assert await resolve("192.0.2.1", 5060, "udp") == [("192.0.2.1", 5060)]
    assert await resolve("2001:db8::1", 5061, "tls") == [("2001:db8::1", 5061)]
    assert await resolve("[2001:db8::1]", 5061, "tls") == [("2001:db8::1", 5061)]


async def test_resolve_a_name_from_the_hosts_file() -> None:
    async with asyncio.timeout(5):
        addresses = await resolve("localhost", 5070, "tcp")
    assert addresses
    assert all(ipaddress.ip_address(ip).is_loopback and port == 5070 for ip, port in addresses)
    assert len(addresses) == len(set(addresses))


async def test_resolution_failure_names_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fail(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fail)
    with pytest.raises(ResolutionError, match=r"srs\.example\.invalid") as caught:
        await resolve("srs.example.invalid", 5060, "udp")
    assert caught.value.host == "srs.example.invalid"
    assert "not known" in caught.value.reason
