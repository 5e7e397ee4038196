"""multipart/mixed codec (siprec_src.sip.multipart).

Covers: encode/decode round trip (fixed and property-based), boundary validation and quoting,
preamble/epilogue, LF-only input, transport padding, folded and compact part headers, the
tolerated missing close delimiter, the part limit, Content-Type parsing, every vendor capture
in fixtures/vendor-siprec, and that arbitrary input raises only MultipartError.
Does not cover: nested multiparts (returned opaque), Content-Transfer-Encoding (SIP bodies are binary).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siprec_src.errors import LocalProtocolError, RemoteProtocolError
from siprec_src.sip.multipart import (
    MAX_PARTS,
    BodyPart,
    MultipartError,
    decode_multipart,
    encode_multipart,
    parse_content_type,
)

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
METADATA = (
    b"<?xml version='1.0' encoding='UTF-8'?>\r\n<recording xmlns='urn:ietf:params:xml:ns:recording:1'/>"
)


def _fixtures_dir() -> Path:
    env = os.environ.get("SIPREC_FIXTURES")
    base = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
    vendor = base / "vendor-siprec"
    if not vendor.is_dir():
        # Fail, not skip: a silently skipped corpus test is a corpus test that never runs.
        raise AssertionError(f"vendor SIPREC fixtures not found at {vendor} (set SIPREC_FIXTURES)")
    return vendor


VENDOR = _fixtures_dir()
# Whole INVITE (headers + body) rather than a bare body.
WHOLE_INVITE = "intrado-siprec-invite.txt"
# A plain SDP offer (no multipart at all), kept in the corpus as the negative case.
NOT_MULTIPART = "non-siprec-payload.txt"


def _siprec_parts() -> tuple[BodyPart, BodyPart]:
    return (
        BodyPart("application/sdp", SDP),
        BodyPart("application/rs-metadata+xml", METADATA, (("Content-Disposition", "recording-session"),)),
    )


def test_round_trip_siprec_body() -> None:
    parts = _siprec_parts()
    content_type, body = encode_multipart(parts, boundary="unique-boundary-1")
    assert content_type == "multipart/mixed;boundary=unique-boundary-1"
    assert body.startswith(b"--unique-boundary-1\r\nContent-Type: application/sdp\r\n\r\nv=0")
    assert body.endswith(b"--unique-boundary-1--\r\n")
    decoded = decode_multipart(content_type, body)
    assert decoded == list(parts)
    assert decoded[1].header("content-disposition") == "recording-session"
    assert decoded[1].header("Content-Type") == "application/rs-metadata+xml"
    assert decoded[1].header("Content-ID") is None


def test_generated_boundary_is_random_and_round_trips() -> None:
    parts = _siprec_parts()
    ct1, body1 = encode_multipart(parts)
    ct2, _ = encode_multipart(parts)
    assert ct1 != ct2
    assert decode_multipart(ct1, body1) == list(parts)


def test_boundary_needing_quotes_is_quoted() -> None:
    content_type, body = encode_multipart(_siprec_parts(), boundary="a=b:c/d?e f")
    assert content_type == 'multipart/mixed;boundary="a=b:c/d?e f"'
    assert decode_multipart(content_type, body) == list(_siprec_parts())


@pytest.mark.parametrize("boundary", ["", "x" * 71, "ends-with-space ", 'bad"quote', "tab\there", "é"])
def test_invalid_boundary_refused(boundary: str) -> None:
    with pytest.raises(LocalProtocolError):
        encode_multipart(_siprec_parts(), boundary=boundary)


def test_boundary_inside_body_refused() -> None:
    parts = [BodyPart("text/plain", b"line\r\n--sep\r\nmore")]
    with pytest.raises(LocalProtocolError, match="occurs in the body of part 1"):
        encode_multipart(parts, boundary="sep")


def test_header_injection_and_misuse_refused() -> None:
    with pytest.raises(LocalProtocolError):
        encode_multipart([])
    with pytest.raises(LocalProtocolError):
        encode_multipart([BodyPart("text/plain", b"x", (("X-A", "1\r\n--b"),))], boundary="b")
    with pytest.raises(LocalProtocolError):
        encode_multipart([BodyPart("text/plain", b"x", (("Content-Type", "text/html"),))])
    with pytest.raises(LocalProtocolError):
        encode_multipart([BodyPart("not a type", b"x")])
    with pytest.raises(LocalProtocolError):
        encode_multipart([BodyPart('text/plain;x="a\r\nb"', b"x")])


def test_preamble_epilogue_padding_and_lf_only() -> None:
    body = (
        b"This is the preamble.\n\n"
        b"--b1  \t\n"
        b"c: application/sdp\n"
        b"\n"
        b"v=0\n"
        b"--b1\n"
        b"Content-Disposition: recording-session;\n"
        b"  handling=required\n"
        b"\n"
        b"<xml/>\n"
        b"--b1-- \n"
        b"epilogue --b1\n"
    )
    parts = decode_multipart('Multipart/Mixed; Boundary="b1"', body)
    assert [p.content_type for p in parts] == ["application/sdp", "text/plain"]
    # RFC 2046 §5.1.1: the line break before a delimiter belongs to the delimiter.
    assert parts[0].body == b"v=0"
    assert parts[1].body == b"<xml/>"
    assert parts[1].headers == (("Content-Disposition", "recording-session; handling=required"),)


def test_crlf_before_delimiter_belongs_to_delimiter() -> None:
    body = b"--b\r\nContent-Type: text/plain\r\n\r\nends with newline\r\n\r\n--b--"
    (part,) = decode_multipart("multipart/mixed;boundary=b", body)
    assert part.body == b"ends with newline\r\n"


def test_empty_parts_and_missing_content_type() -> None:
    body = b"--b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n\r\n--b\r\n--b--\r\n"
    parts = decode_multipart("multipart/mixed;boundary=b", body)
    assert parts == [
        BodyPart("text/plain", b""),
        BodyPart("text/html", b""),
        BodyPart("text/plain", b""),
    ]


def test_line_that_only_starts_with_boundary_is_content() -> None:
    body = b"--b\r\n\r\n--bx is content\r\n  --b not at line start\r\n--b--"
    (part,) = decode_multipart("multipart/mixed;boundary=b", body)
    assert part.body == b"--bx is content\r\n  --b not at line start"


def test_missing_close_delimiter_tolerated() -> None:
    body = b"--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--b\r\nContent-Type: text/x\r\n\r\nlast\r\n"
    parts = decode_multipart("multipart/mixed;boundary=b", body)
    assert [p.body for p in parts] == [b"v=0", b"last\r\n"]
    # Only whitespace after the last delimiter is not a part.
    parts = decode_multipart("multipart/mixed;boundary=b", b"--b\r\n\r\nx\r\n--b\r\n\r\n")
    assert [p.body for p in parts] == [b"x"]


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("multipart/mixed", b"--b\r\n\r\nx\r\n--b--", "no boundary parameter"),
        ("application/sdp", b"v=0\r\n", "not a multipart type"),
        ("multipart/mixed;boundary=b", b"v=0\r\nno delimiter\r\n", "no delimiter line"),
        ("multipart/mixed;boundary=b", b"preamble\r\n--b--\r\n", "no body part"),
        ("multipart/mixed;boundary=b", b"--b\r\n   \r\n", "no body part"),
        ("multipart/mixed;boundary=b", b"--b\r\nno colon here\r\n--b--", "no empty line"),
        ("multipart/mixed;boundary=b", b"--b\r\nBad Name: x\r\n\r\n--b--", "malformed header"),
        ("multipart/mixed;boundary=b", b"--b\r\n folded: first\r\n\r\n--b--", "continuation line"),
        ("multipart/mixed;boundary=b", b"--b\r\nc: a/b\r\nContent-Type: a/c\r\n\r\n--b--", "more than one"),
        ("multipart/mixed;boundary=b", b"--b\r\nX: \xff\r\n\r\n--b--", "not UTF-8"),
        ('multipart/mixed;boundary="b', b"--b\r\n\r\n--b--", "bad Content-Type"),
    ],
)
def test_malformed_bodies(content_type: str, body: bytes, reason: str) -> None:
    with pytest.raises(MultipartError, match=reason) as info:
        decode_multipart(content_type, body)
    assert info.value.status_hint == (415 if "not a multipart" in reason else 400)


def test_part_limit() -> None:
    body = b"".join(b"--b\r\n\r\nx\r\n" for _ in range(MAX_PARTS)) + b"--b--\r\n"
    assert len(decode_multipart("multipart/mixed;boundary=b", body)) == MAX_PARTS
    body = b"".join(b"--b\r\n\r\nx\r\n" for _ in range(MAX_PARTS + 1)) + b"--b--\r\n"
    with pytest.raises(MultipartError, match="more than 32 parts"):
        decode_multipart("multipart/mixed;boundary=b", body)


def test_parse_content_type() -> None:
    assert parse_content_type("application/SDP") == ("application/sdp", {})
    assert parse_content_type('Multipart/Mixed ; Boundary="a \\"q\\" b";x=y;') == (
        "multipart/mixed",
        {"boundary": 'a "q" b', "x": "y"},
    )
    # Unquoted values with non-token characters are accepted (SRCs send them).
    assert parse_content_type("multipart/mixed;boundary=a:b=c")[1] == {"boundary": "a:b=c"}
    for bad in ("multipart", "/mixed", "a/b;x", "a/b;x=", "a/b;x=1;X=2", 'a/b;x="1" junk', "a b/c"):
        with pytest.raises(RemoteProtocolError):
            parse_content_type(bad)


def _vendor_files() -> list[Path]:
    files = sorted(p for p in VENDOR.iterdir() if p.is_file() and p.name != NOT_MULTIPART)
    assert len(files) >= 10, f"vendor corpus at {VENDOR} looks incomplete: {[p.name for p in files]}"
    return files


def _vendor_message(path: Path) -> tuple[str, bytes]:
    """(Content-Type, body) of a capture.

    A whole INVITE gives its Content-Type header; a bare body's first ``--`` line names the boundary.
    """
    data = path.read_bytes()
    if path.name == WHOLE_INVITE:
        head, sep, body = data.partition(b"\n\n")
        assert sep, f"{path.name}: no blank line after the headers"
        for line in head.decode("utf-8").splitlines():
            name, _, value = line.partition(":")
            if name.strip().lower() in ("content-type", "c"):
                return value.strip(), body
        raise AssertionError(f"{path.name}: no Content-Type header")
    for line in data.decode("utf-8").splitlines():
        if line.startswith("--"):
            return f'multipart/mixed;boundary="{line[2:].rstrip()}"', data
    raise AssertionError(f"{path.name}: no boundary line")


@pytest.mark.parametrize("path", _vendor_files(), ids=lambda p: p.name)
def test_vendor_bodies(path: Path) -> None:
    content_type, body = _vendor_message(path)
    parts = decode_multipart(content_type, body)
    assert len(parts) >= 2
    sdp = [p for p in parts if p.media_type == "application/sdp"]
    assert len(sdp) == 1
    assert sdp[0].body.startswith(b"v=0")
    # The metadata part is the one with Content-Disposition: recording-session (RFC 7866 §9.1).
    dispositions = [(p.header("Content-Disposition") or "").split(";")[0].strip() for p in parts]
    assert "recording-session" in dispositions
    for part in parts:
        # No part swallowed a delimiter.
        assert not part.body.rstrip().endswith(b"--")


def test_vendor_bare_sdp_is_refused() -> None:
    body = (VENDOR / NOT_MULTIPART).read_bytes()
    with pytest.raises(MultipartError, match="no delimiter line"):
        decode_multipart("multipart/mixed;boundary=uniqueBoundary", body)


_header_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=20
).map(lambda s: s.strip(" \t") or "v")
_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.+", min_size=1, max_size=12)
_part = st.builds(
    BodyPart,
    content_type=st.tuples(_token, _token).map(lambda t: f"{t[0]}/{t[1]}"),
    body=st.binary(max_size=200),
    headers=st.lists(
        st.tuples(
            _token.filter(lambda n: n not in ("c", "content-type")).map(lambda n: "X-" + n), _header_text
        ),
        max_size=3,
    ).map(tuple),
)


@given(parts=st.lists(_part, min_size=1, max_size=5))
@settings(max_examples=300)
def test_property_round_trip(parts: list[BodyPart]) -> None:
    content_type, body = encode_multipart(parts)
    assert decode_multipart(content_type, body) == parts


@given(
    content_type=st.one_of(st.just("multipart/mixed;boundary=b"), st.text(max_size=60)),
    body=st.one_of(
        st.binary(max_size=300),
        st.lists(
            st.sampled_from([b"--b", b"--b--", b"\r\n", b"\n", b" ", b"c: x/y", b":", b"\xff", b"a"])
        ).map(b"".join),
    ),
)
@settings(max_examples=500)
def test_property_garbage_raises_only_multipart_error(content_type: str, body: bytes) -> None:
    try:
        parts = decode_multipart(content_type, body)
    except MultipartError:
        return
    assert 1 <= len(parts) <= MAX_PARTS
