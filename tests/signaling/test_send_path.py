"""How messages leave: ``SipTransport.send_now`` and the ``UserAgent``'s outgoing queue, on loopback.

Covers: a datagram and a message on an open connection go out at once (``send_now`` True); a
message that needs a connection, a name resolved, a socket of another family, more room than a
datagram has, or a running transport is left to ``send`` (False, nothing sent or reported).
The adapter sends what the core queued from the next turn of the loop, in order: messages
behind one that waits for a connection wait too, and ``close()`` still sends what was queued.
Does not cover TLS (same path as TCP once connected). Runtime: about 0.2 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from siprec_src.signaling.transport import MAX_DATAGRAM, ListenSpec, SipTransport
from siprec_src.signaling.useragent import UserAgent
from siprec_src.sip.headers import NameAddress
from siprec_src.sip.message import Request, Response
from siprec_src.sip.target import Destination
from siprec_src.sip.uri import SipUri
from siprec_src.sip.useragent import UserAgentCore

HOST = "127.0.0.1"


def options(branch: str, cseq: int = 1, *, transport: str = "UDP") -> bytes:
    return (
        f"OPTIONS sip:srs@{HOST} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {HOST}:5060;rport;branch=z9hG4bK{branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:src@example.com>;tag=src1\r\n"
        "To: <sip:srs@example.com>\r\n"
        "Call-ID: call-1@example.com\r\n"
        f"CSeq: {cseq} OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Peer:
    """A SipTransport that queues what it receives and the failures it is told about."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[tuple[Request | Response, Destination]] = asyncio.Queue()
        self.failures: list[tuple[Destination, str]] = []
        self.sip = SipTransport(
            lambda message, source, _: self.messages.put_nowait((message, source)),
            lambda error, raw, source: None,
            lambda destination, reason: self.failures.append((destination, reason)),
        )

    def address(self, transport: str) -> Destination:
        return Destination(transport, *self.sip.local_address(transport))


@pytest.fixture
async def peers() -> AsyncIterator[Callable[..., asyncio.Future[Peer]]]:
    made: list[Peer] = []

    async def make(*transports: str) -> Peer:
        peer = Peer()
        made.append(peer)
        await peer.sip.start([ListenSpec(transport, HOST, 0) for transport in transports])
        return peer

    yield make  # type: ignore[misc]
    for peer in made:
        await peer.sip.close()


async def test_a_datagram_goes_out_at_once(peers: Callable[..., asyncio.Future[Peer]]) -> None:
    async with asyncio.timeout(5):
        src, srs = await peers("udp"), await peers("udp")
        assert src.sip.send_now(options("n1"), srs.address("udp"))
        message, source = await srs.messages.get()
        assert isinstance(message, Request) and message.method == "OPTIONS"
        assert source == src.address("udp")  # from the listening socket, as send() does


async def test_what_needs_waiting_or_reporting_is_left_to_send(
    peers: Callable[..., asyncio.Future[Peer]],
) -> None:
    async with asyncio.timeout(5):
        src, srs = await peers("udp", "tcp"), await peers("udp", "tcp")
        assert not src.sip.send_now(options("n2"), Destination("udp", "localhost", 5060))  # a name
        assert not src.sip.send_now(options("n3"), Destination("udp", "::1", 5060))  # no IPv6 socket
        assert not src.sip.send_now(b"x" * (MAX_DATAGRAM + 1), srs.address("udp"))
        assert not src.sip.send_now(options("n4", transport="TCP"), srs.address("tcp"))  # no connection
        assert src.failures == [] and srs.messages.empty()
        # Once send() opened the connection, the next message goes out at once over it.
        await src.sip.send(options("n5", 1, transport="TCP"), srs.address("tcp"))
        assert src.sip.send_now(options("n6", 2, transport="TCP"), srs.address("tcp"))
        first, source1 = await srs.messages.get()
        second, source2 = await srs.messages.get()
        assert isinstance(first, Request) and isinstance(second, Request)
        assert (first.cseq.number, second.cseq.number) == (1, 2) and source1 == source2
        await src.sip.close()
        assert not src.sip.send_now(options("n7"), srs.address("udp"))


def _options_request(ua: UserAgent, uri: SipUri, transport: str) -> Request:
    return ua.core.create_request(
        "OPTIONS",
        uri,
        NameAddress(SipUri("sip", "src.example.com", "src")),
        NameAddress(uri),
        transport=transport,
    )


async def test_messages_queued_behind_a_connection_attempt_keep_their_order(
    peers: Callable[..., asyncio.Future[Peer]],
) -> None:
    async with asyncio.timeout(5):
        srs = await peers("tcp")
        ua = UserAgent(UserAgentCore())
        await ua.start([ListenSpec("tcp", HOST, 0)])
        try:
            uri = SipUri("sip", HOST, "srs", None, srs.address("tcp").port, (("transport", "tcp"),))
            requests = [_options_request(ua, uri, "tcp") for _ in range(4)]
            for request in requests:
                ua.send(request, srs.address("tcp"))
            # Nothing leaves before the loop turns (as with a task per message).
            assert srs.messages.empty()
            received = [await srs.messages.get() for _ in requests]
            assert [message.headers.get("Call-ID") for message, _ in received] == [
                request.headers.get("Call-ID") for request in requests
            ]
            assert len({source for _, source in received}) == 1  # one connection for all
        finally:
            await ua.close()


class GatedTransport:
    """Stands in for the SipTransport toward one peer whose connection is being opened: a send
    waits for ``opened``; ``send_now`` works once the connection is ``usable``, which happens
    (as in asyncio) before the waiting sends have resumed."""

    def __init__(self) -> None:
        self.usable = False
        self.opened = asyncio.Event()
        self.wire: list[bytes] = []

    def send_now(self, data: bytes, destination: Destination) -> bool:
        if not self.usable:
            return False
        self.wire.append(data)
        return True

    async def send(self, data: bytes, destination: Destination, *, server_name: str | None = None) -> None:
        await self.opened.wait()
        self.wire.append(data)


async def test_no_message_overtakes_one_that_waits_for_its_connection() -> None:
    async with asyncio.timeout(5):
        ua = UserAgent(UserAgentCore(local_addresses={"tcp": (HOST, 5060)}))
        srs = Destination("tcp", HOST, 5070)
        gated = GatedTransport()
        ua.transport.send_now = gated.send_now  # type: ignore[method-assign]
        ua.transport.send = gated.send  # type: ignore[method-assign]
        uri = SipUri("sip", HOST, "srs", None, 5070, (("transport", "tcp"),))
        first, second = _options_request(ua, uri, "tcp"), _options_request(ua, uri, "tcp")
        ua.send(first, srs)
        await asyncio.sleep(0)  # the first goes out through a task that waits for the connection
        gated.usable = True  # connected; the waiting send has not resumed yet
        ua.send(second, srs)
        await asyncio.sleep(0.01)
        assert gated.wire == []  # the second could have gone at once, but would have overtaken
        gated.opened.set()
        while len(gated.wire) < 2:
            await asyncio.sleep(0.001)
        assert [call_id_of(data) for data in gated.wire] == [first.call_id, second.call_id]
        ua.forget(1)
        ua.forget(2)


def call_id_of(data: bytes) -> str:
    return next(line for line in data.decode().split("\r\n") if line.startswith("Call-ID:"))[9:]


async def test_the_order_of_sending_is_the_order_of_queueing(
    peers: Callable[..., asyncio.Future[Peer]],
) -> None:
    async with asyncio.timeout(5):
        srs = await peers("udp")
        ua = UserAgent(UserAgentCore())
        await ua.start([ListenSpec("udp", HOST, 0)])
        try:
            uri = SipUri("sip", HOST, "srs", None, srs.address("udp").port)
            requests = [_options_request(ua, uri, "udp") for _ in range(5)]
            for request in requests:
                ua.send(request, srs.address("udp"))
            received = [await srs.messages.get() for _ in requests]
            assert [message.headers.get("Call-ID") for message, _ in received] == [
                request.headers.get("Call-ID") for request in requests
            ]
        finally:
            await ua.close()


async def test_close_sends_what_was_queued_last(peers: Callable[..., asyncio.Future[Peer]]) -> None:
    async with asyncio.timeout(5):
        srs = await peers("udp")
        ua = UserAgent(UserAgentCore())
        await ua.start([ListenSpec("udp", HOST, 0)])
        uri = SipUri("sip", HOST, "srs", None, srs.address("udp").port)
        ua.send(_options_request(ua, uri, "udp"), srs.address("udp"))
        await ua.close()  # before the loop turned: a shutdown's last BYEs must still go out
        message, _ = await srs.messages.get()
        assert isinstance(message, Request) and message.method == "OPTIONS"
