"""What the parser reuses between messages, and that reusing it changes no answer.

Covers: parsed URIs, name-addrs and Vias are immutable values shared between messages with the
same text (what a call repeats in every message), long texts are parsed anew, and a malformed
text is refused every time (an error is never remembered as a value); the caches are bounded.
Header names: the remembered spellings stay bounded whatever names a peer sends, hold only
valid names, and lookups stay case-insensitive with compact forms expanded. Line ends: CRLF,
LF and a mix are read alike, a bare CR is refused on either path. List headers: a single value
is not split, a quote still has to balance, a comma still splits. Runtime: well under a second.
"""

from __future__ import annotations

import pytest

from siprec_src.errors import LocalProtocolError
from siprec_src.sip import headers as headers_module
from siprec_src.sip import uri as uri_module
from siprec_src.sip.headers import Headers, Via, is_header_name, parse_name_addr
from siprec_src.sip.message import Request, parse_message
from siprec_src.sip.syntax import SipParseError, is_word
from siprec_src.sip.uri import PARSE_CACHE_MAX_LENGTH, PARSE_CACHE_SIZE, parse_uri

FROM = "<sip:siprec-src@192.0.2.1>;tag=4dd53b8e"
VIA = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKe92691bc2e32ead3;rport"


def test_the_same_text_gives_the_same_immutable_value() -> None:
    assert parse_uri("sip:srs@192.0.2.2:5080") is parse_uri("sip:srs@192.0.2.2:5080")
    assert parse_name_addr(FROM) is parse_name_addr(FROM)
    assert Via.parse(VIA) is Via.parse(VIA)
    value = parse_name_addr(FROM)
    with pytest.raises(AttributeError):
        value.display_name = "changed"  # type: ignore[misc]
    assert value.tag == "4dd53b8e" and str(value.uri) == "sip:siprec-src@192.0.2.1"


def test_long_texts_are_parsed_anew_and_still_read_the_same() -> None:
    long_uri = "sip:" + "u" * PARSE_CACHE_MAX_LENGTH + "@example.com"
    assert parse_uri(long_uri) is not parse_uri(long_uri)
    assert parse_uri(long_uri) == parse_uri(long_uri)
    long_from = f"<{long_uri}>;tag=1"
    assert parse_name_addr(long_from) == parse_name_addr(long_from)
    assert parse_name_addr(long_from) is not parse_name_addr(long_from)


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_uri, "sip:user@exa mple.com"),
        (parse_name_addr, "<sip:a@b"),
        (Via.parse, "SIP/2.0/UDP host:99999"),
    ],
)
def test_a_malformed_text_is_refused_every_time(parse: object, text: str) -> None:
    for _ in range(3):
        with pytest.raises(SipParseError):
            parse(text)  # type: ignore[operator]


def test_the_caches_are_bounded() -> None:
    for cached in (uri_module._parse_uri_cached, headers_module._parse_name_addr_cached):
        assert cached.cache_info().maxsize == PARSE_CACHE_SIZE
    for n in range(PARSE_CACHE_SIZE + 10):
        parse_uri(f"sip:u{n}@example.com")
        Via.parse(f"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{n}")
    assert uri_module._parse_uri_cached.cache_info().currsize <= PARSE_CACHE_SIZE
    assert len(headers_module._VIAS) <= PARSE_CACHE_SIZE


def test_header_names_a_peer_makes_up_do_not_pile_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(headers_module, "_NAMES", dict(headers_module._NAMES))  # others keep theirs
    for n in range(3 * headers_module._NAMES_LIMIT):
        Headers([(f"X-Made-Up-{n}", "1")])
    assert len(headers_module._NAMES) <= headers_module._NAMES_LIMIT
    long_name = "X-" + "a" * 200
    Headers([(long_name, "1")])
    assert long_name not in headers_module._NAMES


def test_only_valid_names_are_remembered_and_lookups_stay_case_insensitive() -> None:
    headers = Headers([("v", VIA), ("cSeQ", "1 INVITE"), ("X-Custom", "a")])
    assert headers.get("Via") == VIA and headers.get("VIA") == VIA
    assert headers.get("CSeq") == "1 INVITE" and "cseq" in headers
    assert headers.get("x-custom") == "a"
    assert [name for name, _ in headers] == ["Via", "CSeq", "X-Custom"]
    for bad in ("Bad Name", "Bad:Name", "", "Caf\u00e9"):
        headers.get(bad)
        assert bad not in headers_module._NAMES and not is_header_name(bad)
        with pytest.raises(LocalProtocolError, match="bad header name"):
            Headers().add(bad, "x")


def test_is_word_accepts_exactly_the_word_characters() -> None:
    # RFC 3261 §25.1 word: alphanum / "-" "." "!" "%" "*" "_" "+" "`" "'" "~" "(" ")" "<" ">"
    # ":" "\" DQUOTE "/" "[" "]" "?" "{" "}"
    allowed = set("-.!%*_+`'~()<>:\\\"/[]?{}")
    for code in range(0x250):
        char = chr(code)
        assert is_word(char) == (char.isascii() and (char.isalnum() or char in allowed)), repr(char)
    assert not is_word("") and is_word("a84b4c76e66710@") is False and is_word("a84b4c76e66710")


def _message(line_end: str) -> bytes:
    lines = [
        "OPTIONS sip:srs@192.0.2.2 SIP/2.0",
        f"Via: {VIA}",
        "Max-Forwards: 70",
        f"From: {FROM}",
        "To: <sip:srs@192.0.2.2>",
        "Call-ID: c1@192.0.2.1",
        "CSeq: 1 OPTIONS",
        'Supported: timer, "quoted,comma"',
        "Content-Length: 0",
    ]
    return (line_end.join(lines) + line_end + line_end).encode()


def test_crlf_lf_and_mixed_line_ends_read_alike() -> None:
    crlf = parse_message(_message("\r\n"))
    lf = parse_message(_message("\n"))
    mixed = parse_message(_message("\r\n").replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\n"))
    for message in (crlf, lf, mixed):
        assert isinstance(message, Request)
        assert list(message.headers) == list(crlf.headers)
        assert message.headers.get_all("Supported") == ["timer", '"quoted,comma"']


@pytest.mark.parametrize("line_end", ["\r\n", "\n"])
def test_a_bare_cr_is_refused_whatever_the_line_ends(line_end: str) -> None:
    data = _message(line_end).replace(b"To: <sip:srs", b"To: <sip:\rsrs")
    with pytest.raises(SipParseError, match="bare CR"):
        parse_message(data)


def test_list_headers_split_at_commas_and_quotes_must_balance() -> None:
    headers = Headers([("Supported", "timer"), ("Allow", "INVITE, ACK,BYE"), ("Require", '"a,b", c')])
    assert headers.get_all("Supported") == ["timer"]
    assert headers.get_all("Allow") == ["INVITE", "ACK", "BYE"]
    assert headers.get_all("Require") == ['"a,b"', "c"]
    assert headers.get_all_raw("Allow") == ["INVITE, ACK,BYE"]
    with pytest.raises(SipParseError, match="unbalanced quote"):
        Headers([("Supported", '"timer')]).get_all("Supported")
    # And a message carrying one is refused at the door (RFC 4475 quotbal).
    with pytest.raises(SipParseError, match="unbalanced quote"):
        parse_message(_message("\r\n").replace(b"Supported: timer, ", b'Supported: "timer, '))


@pytest.mark.parametrize("host", ["192.0.2.1", "2001:db8::1", "src.example.com"])
def test_a_via_set_on_a_request_reads_as_its_text_would(host: str) -> None:
    request = parse_message(_message("\r\n"))
    assert isinstance(request, Request)
    via = Via("TCP", host, 5061, (("branch", "z9hG4bK" + host.replace(":", "")), ("rport", None)))
    request.set_via(via)
    assert request.via == [via] and request.headers.get_all("Via") == [str(via)]
    assert Via.parse(str(via)) is via  # the responses' copy of it is not parsed again
    assert Via._parse(str(via)) == via  # and it is what parsing the text gives
    request.headers.add("X-Later", "1")  # a change drops the view; reading the text again agrees
    assert request.via == [via]
    sent = parse_message(bytes(request))
    assert sent.via == [via]
