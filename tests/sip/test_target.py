"""Choosing transport, host and port (siprec_src.sip.target).

Covers: transport and default port per scheme and ``transport`` parameter (RFC 3261 §18.1.1,
§19.1.2, §26.2.2), maddr, IPv6 hosts, the §18.1.1 1300-byte size rule and its transport=udp
exception; ``stamp_received`` (RFC 3261 §18.2.1, RFC 3581 §4) on single, comma-joined and
repeated Via fields, IPv4 and IPv6, and that the result re-parses; ``response_destination``
(RFC 3261 §18.2.2, RFC 3581 §4) for UDP, TCP and TLS.
Does not cover: NAPTR/SRV (not implemented) or name resolution (tests/signaling).
"""

from __future__ import annotations

import pytest

from siprec_src.errors import LocalProtocolError
from siprec_src.sip.headers import Via
from siprec_src.sip.message import Request, parse_message
from siprec_src.sip.target import (
    UDP_SIZE_LIMIT,
    Destination,
    Target,
    response_destination,
    stamp_received,
    target_for_uri,
)
from siprec_src.sip.uri import SipUri


def target(uri: str, *, message_size: int = 0, default_transport: str = "udp") -> Target:
    return target_for_uri(SipUri.parse(uri), message_size=message_size, default_transport=default_transport)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:srs@example.com", Target("udp", "example.com", 5060, None)),
        ("sip:srs@example.com:5080", Target("udp", "example.com", 5080, None)),
        ("sip:srs@example.com;transport=tcp", Target("tcp", "example.com", 5060, None)),
        ("sip:srs@example.com;transport=TCP", Target("tcp", "example.com", 5060, None)),
        ("sip:srs@example.com;transport=udp", Target("udp", "example.com", 5060, None)),
        # RFC 3261 §19.1.2: the default port follows the transport, so TLS gets 5061 even on sip:.
        ("sip:srs@example.com;transport=tls", Target("tls", "example.com", 5061, "example.com")),
        ("sips:srs@example.com", Target("tls", "example.com", 5061, "example.com")),
        ("sips:srs@example.com:5071", Target("tls", "example.com", 5071, "example.com")),
        # RFC 3261 §26.2.2: sips with transport=tcp is TLS over TCP.
        ("sips:srs@example.com;transport=tcp", Target("tls", "example.com", 5061, "example.com")),
        ("sip:192.0.2.7", Target("udp", "192.0.2.7", 5060, None)),
        ("sip:[2001:db8::7]:5070;transport=tcp", Target("tcp", "2001:db8::7", 5070, None)),
        ("sips:[2001:db8::7]", Target("tls", "2001:db8::7", 5061, "2001:db8::7")),
        # RFC 3263 §4.2: maddr replaces the host; the certificate name stays the URI's host.
        ("sip:srs@example.com;maddr=192.0.2.9", Target("udp", "192.0.2.9", 5060, None)),
        ("sips:srs@example.com;maddr=192.0.2.9", Target("tls", "192.0.2.9", 5061, "example.com")),
        ("sip:srs@example.com;maddr=[2001:db8::9]", Target("udp", "2001:db8::9", 5060, None)),
    ],
)
def test_transport_and_port_defaults(uri: str, expected: Target) -> None:
    assert target(uri) == expected


def test_default_transport_applies_only_without_a_transport_parameter() -> None:
    assert target("sip:example.com", default_transport="tcp") == Target("tcp", "example.com", 5060, None)
    assert target("sip:example.com", default_transport="tls") == Target(
        "tls", "example.com", 5061, "example.com"
    )
    assert target("sip:example.com;transport=udp", default_transport="tcp").transport == "udp"
    assert target("sips:example.com", default_transport="udp").transport == "tls"


@pytest.mark.parametrize(
    "uri",
    [
        "sips:example.com;transport=udp",  # RFC 3261 §26.2.2: sips is TLS on every hop
        "sip:example.com;transport=sctp",  # not implemented
        "sip:example.com;transport=ws",
        "sip:example.com;maddr=not_a_host",
        "sip:example.com:0",
    ],
)
def test_untargetable_uris_are_refused(uri: str) -> None:
    with pytest.raises(LocalProtocolError):
        target(uri)


def test_unknown_default_transport_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        target("sip:example.com", default_transport="sctp")


def test_size_rule_moves_large_requests_from_udp_to_tcp() -> None:
    # RFC 3261 §18.1.1: larger than 1300 bytes -> congestion-controlled transport.
    assert target("sip:example.com", message_size=UDP_SIZE_LIMIT).transport == "udp"
    large = target("sip:example.com", message_size=UDP_SIZE_LIMIT + 1)
    assert large == Target("tcp", "example.com", 5060, None)
    # The port given in the URI is kept when the transport changes.
    assert target("sip:example.com:5080", message_size=4000) == Target("tcp", "example.com", 5080, None)


def test_size_rule_respects_an_explicit_transport() -> None:
    # transport=udp says the peer only listens on UDP: keep it (documented decision).
    assert target("sip:example.com;transport=udp", message_size=4000).transport == "udp"
    assert target("sip:example.com;transport=tcp", message_size=4000).transport == "tcp"
    assert target("sips:example.com", message_size=4000).transport == "tls"
    assert target("sip:example.com", message_size=4000, default_transport="tls").transport == "tls"


# --- stamp_received ------------------------------------------------------------------------


def request_with_vias(*via_lines: str) -> Request:
    vias = "".join(f"Via: {line}\r\n" for line in via_lines)
    raw = (
        "INVITE sip:srs@192.0.2.1 SIP/2.0\r\n"
        f"{vias}"
        "Max-Forwards: 70\r\n"
        "From: <sip:src@example.com>;tag=1\r\n"
        "To: <sip:srs@example.com>\r\n"
        "Call-ID: abc@192.0.2.2\r\n"
        "CSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    message = parse_message(raw)
    assert isinstance(message, Request)
    return message


def reparsed(request: Request) -> Request:
    message = parse_message(bytes(request))
    assert isinstance(message, Request)
    return message


def test_no_received_when_sent_by_is_the_source_ip() -> None:
    request = request_with_vias("SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK1")
    before = bytes(request)
    stamp_received(request, Destination("udp", "192.0.2.2", 5060))
    assert bytes(request) == before


def test_received_added_when_the_source_ip_differs() -> None:
    request = request_with_vias("SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1")
    stamp_received(request, Destination("udp", "192.0.2.2", 5060))
    via = reparsed(request).top_via
    assert via.received == "192.0.2.2"
    assert via.branch == "z9hG4bK1"
    assert via.rport is None  # not asked for, not added


def test_received_added_when_sent_by_is_a_name() -> None:
    # RFC 3261 §18.2.1: a domain name in sent-by always gets a received parameter.
    request = request_with_vias("SIP/2.0/TCP src.example.com;branch=z9hG4bK1")
    stamp_received(request, Destination("tcp", "192.0.2.2", 40000))
    assert reparsed(request).top_via.received == "192.0.2.2"


def test_empty_rport_is_filled_and_received_added_even_if_sent_by_matches() -> None:
    # RFC 3581 §4: rport gets the source port, and received is added unconditionally.
    request = request_with_vias("SIP/2.0/UDP 192.0.2.2:5060;rport;branch=z9hG4bK1")
    stamp_received(request, Destination("udp", "192.0.2.2", 61000))
    via = reparsed(request).top_via
    assert via.rport == "61000"
    assert via.received == "192.0.2.2"


def test_rport_with_a_value_is_left_alone() -> None:
    request = request_with_vias("SIP/2.0/UDP 192.0.2.2:5060;rport=5060;branch=z9hG4bK1")
    before = bytes(request)
    stamp_received(request, Destination("udp", "192.0.2.2", 61000))
    assert bytes(request) == before


def test_only_the_top_via_of_a_comma_list_changes() -> None:
    request = request_with_vias(
        "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1;rport , SIP/2.0/UDP proxy.example.com;branch=z9hG4bK0",
        "SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKx",
    )
    stamp_received(request, Destination("udp", "192.0.2.2", 40000))
    vias = reparsed(request).via
    assert [via.branch for via in vias] == ["z9hG4bK1", "z9hG4bK0", "z9hG4bKx"]
    assert (vias[0].received, vias[0].rport) == ("192.0.2.2", "40000")
    assert vias[1].received is None and vias[2].received is None
    # The other Via line is untouched, byte for byte.
    assert "Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKx" in bytes(request).decode()


def test_ipv6_received_is_bracketed_and_reparses() -> None:
    request = request_with_vias("SIP/2.0/UDP [2001:db8::2]:5060;rport;branch=z9hG4bK1")
    stamp_received(request, Destination("udp", "2001:db8::99", 5062))
    via = reparsed(request).top_via
    assert via.received == "[2001:db8::99]"
    assert via.rport == "5062"


def test_ipv6_sent_by_equal_to_source_in_another_spelling() -> None:
    request = request_with_vias("SIP/2.0/UDP [2001:db8:0:0::2];branch=z9hG4bK1")
    before = bytes(request)
    stamp_received(request, Destination("udp", "2001:db8::2", 5060))
    assert bytes(request) == before


# --- response_destination ------------------------------------------------------------------

SRC = "192.0.2.2"


@pytest.mark.parametrize(
    ("via", "source", "expected"),
    [
        # A stream: back over the connection the request came on.
        (
            "SIP/2.0/TCP 10.0.0.2:5070;branch=z9hG4bK1",
            Destination("tcp", "192.0.2.2", 61000),
            ("192.0.2.2", 61000),
        ),
        # UDP with rport (RFC 3581 §4): the source port, through the NAT.
        (
            "SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bK1;rport",
            Destination("udp", "192.0.2.2", 61000),
            ("192.0.2.2", 61000),
        ),
        # Plain UDP: the source IP and the sent-by port (RFC 3261 §18.2.2).
        (
            "SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bK1",
            Destination("udp", "192.0.2.2", 61000),
            ("192.0.2.2", 5070),
        ),
        ("SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1", Destination("udp", "192.0.2.2", 61000), ("192.0.2.2", 5060)),
    ],
)
def test_response_destination(via: str, source: Destination, expected: tuple[str, int]) -> None:
    found = response_destination(Via.parse(via), source)
    assert (found.transport, found.host, found.port) == (source.transport, *expected)
