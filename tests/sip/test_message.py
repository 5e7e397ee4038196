"""Parser, serializer and framer: round trips, abuse limits, and arbitrary input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siprec_src.errors import LocalProtocolError
from siprec_src.sip import (
    FramingError,
    Headers,
    NameAddress,
    ParseLimits,
    Request,
    Response,
    SipParseError,
    SipUri,
    StreamFramer,
    parse_message,
    parse_uri,
    response_to,
)

INVITE = (
    b"INVITE sip:srs@192.0.2.10:5080;transport=tcp SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "O\'Brien" <sip:src@example.com>;tag=1928301774\r\n'
    b"To: <sip:srs@example.com>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:src@192.0.2.1:5060;transport=tcp>;+sip.src\r\n"
    b"Require: siprec\r\n"
    b"Supported: timer, replaces\r\n"
    b"k: 100rel\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def test_request_fields() -> None:
    request = parse_message(INVITE)
    assert isinstance(request, Request)
    assert request.method == "INVITE"
    assert request.sip_uri == SipUri("sip", "192.0.2.10", "srs", None, 5080, (("transport", "tcp"),))
    assert request.sip_uri.transport == "tcp"
    assert request.top_via.branch == "z9hG4bK776asdhds"
    assert request.top_via.rport == ""
    assert request.from_.display_name == "O'Brien"
    assert request.from_.tag == "1928301774"
    assert request.to.tag is None
    assert request.call_id == "a84b4c76e66710@pc33.example.com"
    assert (request.cseq.number, request.cseq.method) == (314159, "INVITE")
    assert request.contacts[0].param("+sip.src") == ""
    # compact "k" is Supported; list headers split at commas.
    assert request.header_tokens("Supported") == {"timer", "replaces", "100rel"}
    assert request.body == b"v=0\n"


def test_serialize_round_trip_is_stable() -> None:
    once = bytes(parse_message(INVITE))
    assert bytes(parse_message(once)) == once
    assert b"Supported: 100rel\r\n" in once  # compact name expanded on output


def test_content_length_is_rewritten_to_the_body() -> None:
    request = parse_message(INVITE)
    request.body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    assert f"Content-Length: {len(request.body)}\r\n".encode() in bytes(request)


def test_response_to_copies_the_rfc3261_headers() -> None:
    request = parse_message(INVITE)
    assert isinstance(request, Request)
    response = response_to(request, 200, to_tag="abc")
    assert response.reason == "OK"
    assert response.to.tag == "abc"
    assert response.call_id == request.call_id
    assert response.cseq == request.cseq
    again = parse_message(bytes(response))
    assert isinstance(again, Response) and again.status == 200


def test_headers_container() -> None:
    headers = Headers([("v", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("Via", "SIP/2.0/UDP b;branch=z9hG4bK2, x")])
    assert headers.get_all("via") == ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b;branch=z9hG4bK2", "x"]
    headers.prepend("Via", "SIP/2.0/TCP c;branch=z9hG4bK3")
    assert headers.get("VIA") == "SIP/2.0/TCP c;branch=z9hG4bK3"
    headers.set("Max-Forwards", "70")
    headers.set("max-forwards", "69")
    assert headers.count("Max-Forwards") == 1 and headers.get("Max-Forwards") == "69"
    headers.remove("via")
    assert "Via" not in headers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip:alice@example.com", SipUri("sip", "example.com", "alice")),
        (
            "SIPS:[2001:db8::1]:5061;transport=tls",
            SipUri("sips", "2001:db8::1", None, None, 5061, (("transport", "tls"),)),
        ),
        (
            "sip:u:pw@h.example;lr?Subject=hi",
            SipUri("sip", "h.example", "u", "pw", None, (("lr", None),), (("Subject", "hi"),)),
        ),
    ],
)
def test_uri_parse_and_format(text: str, expected: SipUri) -> None:
    uri = parse_uri(text)
    assert uri == expected
    assert parse_uri(str(uri)) == uri


@pytest.mark.parametrize(
    "text",
    ["sip:", "sip:a@", "sip:host:99999", "sip:host;", "sip:[::1", "sip:bad host", "sip:h?x", "<sip:x>"],
)
def test_bad_uris_are_refused(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_name_addr_forms() -> None:
    plain = NameAddress.parse("sip:a@example.com;tag=1")
    assert plain.tag == "1" and plain.display_name is None
    named = NameAddress.parse('"O\'Brien & Sons <sales>" <sip:a@example.com>;tag=2')
    assert named.display_name == "O'Brien & Sons <sales>"
    assert NameAddress.parse(str(named)) == named
    tokens = NameAddress.parse("Alice Smith <sip:a@example.com>")
    assert tokens.display_name == "Alice Smith"


def test_display_name_cannot_inject_header_lines() -> None:
    with pytest.raises(LocalProtocolError, match="CR or LF"):
        str(NameAddress(SipUri("sip", "example.com"), "Mallory\r\nX-Evil: 1"))


def test_header_values_cannot_inject_lines() -> None:
    with pytest.raises(LocalProtocolError, match="CR or LF"):
        Headers().add("X-Custom", "a\r\nVia: evil")
    with pytest.raises(LocalProtocolError, match="bad header name"):
        Headers().set("X Custom", "a")


def test_message_size_limit() -> None:
    big = INVITE.replace(b"Content-Length: 4", b"Content-Length: 70000") + b"x" * 70000
    with pytest.raises(SipParseError) as info:
        parse_message(big)
    assert info.value.status_hint == 513


def test_header_count_and_line_limits() -> None:
    many = INVITE.replace(b"Require: siprec\r\n", b"X-A: 1\r\n" * 300)
    with pytest.raises(SipParseError, match="more than 256 header fields"):
        parse_message(many)
    long_line = INVITE.replace(b"Require: siprec", b"X-Long: " + b"a" * 9000)
    with pytest.raises(SipParseError, match="longer than"):
        parse_message(long_line)
    assert parse_message(long_line, ParseLimits(max_line_length=10000)).headers.get("X-Long")


def test_short_body_is_refused() -> None:
    with pytest.raises(SipParseError, match="larger than"):
        parse_message(INVITE[:-2])


def test_lf_only_message_is_tolerated() -> None:
    message = parse_message(INVITE.replace(b"\r\n", b"\n"))
    assert isinstance(message, Request) and message.body == b"v=0\n"


# --- stream framer ------------------------------------------------------------------------


def test_framer_splits_segments_and_skips_keepalives() -> None:
    framer = StreamFramer()
    stream = b"\r\n\r\n" + INVITE + INVITE
    out: list[object] = []
    for i in range(0, len(stream), 7):
        out.extend(framer.feed(stream[i : i + 7]))
    assert [type(item) for item in out] == [Request, Request]
    assert framer.keepalives == 1 and framer.buffered == 0


def test_framer_counts_a_ping_split_across_reads() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r\n") == []
    assert framer.keepalives == 1


def test_bare_ipv6_received_parameter_is_accepted() -> None:
    # RFC 3261 §20.42: received = IPv4address / IPv6address, written without brackets.
    message = parse_message(INVITE.replace(b";rport\r\n", b";received=2001:db8::9;rport=5060\r\n"))
    assert message.top_via.received == "2001:db8::9"


def test_framer_reports_a_bad_message_but_keeps_framing() -> None:
    framer = StreamFramer()
    bad = INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: x INVITE")
    items = framer.feed(bad + INVITE)
    assert isinstance(items[0], SipParseError) and isinstance(items[1], Request)


@pytest.mark.parametrize(
    "change",
    [
        (b"Content-Length: 4\r\n", b""),
        (b"Content-Length: 4", b"Content-Length: -4"),
        (b"Content-Length: 4", b"Content-Length: 99999999"),
        (b"Content-Length: 4", b"Content-Length: 4\r\nl: 5"),
    ],
)
def test_framer_content_length_errors_are_fatal(change: tuple[bytes, bytes]) -> None:
    with pytest.raises(FramingError):
        StreamFramer().feed(INVITE.replace(*change))


def test_framer_bounds_a_header_section_without_end() -> None:
    framer = StreamFramer(ParseLimits(max_message_size=1000))
    with pytest.raises(FramingError):
        framer.feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 200)


# --- properties ---------------------------------------------------------------------------

_token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~", min_size=1
)
_value = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\,;<>'), min_size=1
)


@given(
    method=_token,
    user=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12),
    cseq=st.integers(min_value=0, max_value=2**31 - 1),
    extra=st.lists(
        st.tuples(_token.filter(lambda n: len(n) > 1 and n.lower().startswith("x")), _value), max_size=5
    ),
    body=st.binary(max_size=300),
    display=st.text(max_size=20).filter(lambda t: "\r" not in t and "\n" not in t),
)
@settings(max_examples=200, deadline=None)
def test_serialize_parse_round_trip(
    method: str, user: str, cseq: int, extra: list[tuple[str, str]], body: bytes, display: str
) -> None:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc"),
            ("From", str(NameAddress(SipUri("sip", "example.com", user), display or None, (("tag", "t1"),)))),
            ("To", f"<sip:{user}@example.org>"),
            ("Call-ID", "cid@example.com"),
            ("CSeq", f"{cseq} {method}"),
            *extra,
        ]
    )
    request = Request(method, SipUri("sip", "example.org", user), headers, body)
    again = parse_message(bytes(request))
    assert isinstance(again, Request)
    assert again.method == method and again.uri == request.uri and again.body == body
    assert again.from_.display_name == (display or None)
    assert again.cseq.number == cseq
    assert [(n, v) for n, v in again.headers if n != "Content-Length"] == list(headers)


@given(st.binary(max_size=2000))
@settings(max_examples=500, deadline=None)
def test_arbitrary_bytes_raise_only_parse_errors(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError:
        return
    bytes(message)


@given(st.binary(max_size=400), st.sampled_from([b"", b"\r\n", INVITE[:60]]))
@settings(max_examples=300, deadline=None)
def test_mutated_invites_raise_only_parse_errors(noise: bytes, prefix: bytes) -> None:
    data = prefix + noise + INVITE[len(prefix) :]
    with contextlib.suppress(SipParseError):
        parse_message(data)
    framer = StreamFramer()
    with contextlib.suppress(SipParseError):
        framer.feed(data)
