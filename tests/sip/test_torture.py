"""RFC 4475 SIP torture messages: one parametrized test over the 49 files of the corpus.

Covers: that every §3.1.1 "valid" and every §3.2-3.4 "odd but well-formed" message parses and
re-serializes to something that parses to the same start line, headers and body; that every
§3.1.2 "invalid" message is refused with ``SipParseError`` (never another exception, never a
half-parse) and with the status hint a UAS should send. Does not cover the UA's reaction to
the odd messages beyond ``check_request`` (416/420/415/483 belong to the UA layer's tests).

Decisions on the two messages RFC 4475 leaves to the implementation:
- ``multi01`` (duplicated To/From/Call-ID/CSeq/Max-Forwards) parses, and ``check_request``
  refuses it with 400: the parser keeps every field, the UA decides.
- ``mcl01`` (two Content-Length values, 13 and 5) is refused by the parser: with two
  lengths the message has no single extent, which on a stream transport is the classic
  request-smuggling ambiguity, so no layer should guess.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from siprec_src.sip import Request, Response, SipParseError, check_request, parse_message

VALID = (
    "wsinv intmeth esc01 escnull esc02 lwsdisp longreq dblreq semiuri transports mpart01 unreason noreason"
)
ODD = (
    "badbranch insuf unkscm novelsc unksm2 bext01 invut regaut01 multi01 bcast zeromf cparam01 cparam02 "
    "regescrt sdp01 inv2543"
)
INVALID = (
    "badinv01 clerr ncl scalar02 scalarlg quotbal ltgtruri lwsruri lwsstart trws escruri baddate regbadct "
    "badaspec baddn badvers mismatch01 mismatch02 bigcode mcl01"
)
# Status a UAS should answer an invalid message with, where it is not plain 400.
INVALID_STATUS = {"badvers": 505}


def _corpus(fixtures: Path) -> Path:
    folder = fixtures / "rfc4475"
    assert len(list(folder.glob("*.dat"))) == 49, "the RFC 4475 corpus should hold 49 messages"
    return folder


def test_every_corpus_file_has_a_verdict(fixtures_dir: Path) -> None:
    names = {path.stem for path in _corpus(fixtures_dir).glob("*.dat")}
    assert names == set((VALID + " " + ODD + " " + INVALID).split())


@pytest.mark.parametrize("name", (VALID + " " + ODD).split())
def test_valid_message_parses_and_round_trips(fixtures_dir: Path, name: str) -> None:
    message = parse_message((_corpus(fixtures_dir) / f"{name}.dat").read_bytes())
    again = parse_message(bytes(message))
    assert type(again) is type(message)
    if isinstance(message, Request):
        assert isinstance(again, Request)
        assert (again.method, str(again.uri)) == (message.method, str(message.uri))
    else:
        assert isinstance(again, Response)
        assert (again.status, again.reason) == (message.status, message.reason)
    # The serializer always writes one Content-Length equal to the body (inv2543 had none).
    without_length = [(n, v) for n, v in message.headers if n != "Content-Length"]
    assert [(n, v) for n, v in again.headers if n != "Content-Length"] == without_length
    assert again.headers.get("Content-Length") == str(len(message.body))
    assert again.body == message.body


@pytest.mark.parametrize("name", INVALID.split())
def test_invalid_message_is_refused(fixtures_dir: Path, name: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message((_corpus(fixtures_dir) / f"{name}.dat").read_bytes())
    assert info.value.reason
    assert info.value.status_hint == INVALID_STATUS.get(name, 400)


def test_wsinv_details(fixtures_dir: Path) -> None:
    message = parse_message((_corpus(fixtures_dir) / "wsinv.dat").read_bytes())
    assert isinstance(message, Request)
    assert message.from_.display_name == 'J Rosenberg \\"'
    assert message.from_.tag == "98asjd8"
    assert message.to.tag == "1918181833n"
    assert message.cseq.number == 9 and message.cseq.method == "INVITE"
    assert message.max_forwards == 68
    assert [via.transport for via in message.via] == ["UDP", "TCP", "UDP"]
    assert message.via[1].branch == "z9hG4bK9ikj8"
    assert message.via[2].branch == "z9hG4bK30239"
    assert message.contacts[0].display_name == 'Quoted string ""'
    assert message.contacts[0].param("q") == "0.33"
    assert message.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert len(message.body) == 150


def test_dblreq_keeps_only_the_first_message(fixtures_dir: Path) -> None:
    # RFC 4475 §3.1.1.11: the bytes after Content-Length in a datagram are discarded.
    message = parse_message((_corpus(fixtures_dir) / "dblreq.dat").read_bytes())
    assert isinstance(message, Request) and message.method == "REGISTER" and message.body == b""


def test_esc01_keeps_escapes_and_unescapes_on_demand(fixtures_dir: Path) -> None:
    message = parse_message((_corpus(fixtures_dir) / "esc01.dat").read_bytes())
    assert isinstance(message, Request)
    assert message.sip_uri.user == "sips%3Auser%40example.com"
    assert message.sip_uri.user_unescaped == "sips:user@example.com"


def test_odd_messages_are_judged_by_the_ua_checks(fixtures_dir: Path) -> None:
    folder = _corpus(fixtures_dir)
    insuf = parse_message((folder / "insuf.dat").read_bytes())
    assert isinstance(insuf, Request)
    with pytest.raises(SipParseError, match="missing mandatory header"):
        check_request(insuf)
    multi = parse_message((folder / "multi01.dat").read_bytes())
    assert isinstance(multi, Request)
    with pytest.raises(SipParseError, match="more than once"):
        check_request(multi)
    unkscm = parse_message((folder / "unkscm.dat").read_bytes())
    assert isinstance(unkscm, Request)
    with pytest.raises(SipParseError) as info:
        _ = unkscm.sip_uri
    assert info.value.status_hint == 416
    check_request(parse_message((folder / "wsinv.dat").read_bytes()))  # type: ignore[arg-type]
