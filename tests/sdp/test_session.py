"""The SDP model: parse, inspect, serialize (siprec_src.sdp.session).

Covers: byte-exact round trip of every SDP in fixtures/vendor-siprec and of the RFC 4475 sdp01
body; every line type RFC 8866 §5 defines, unknown line types and attributes kept in order;
LF-only input and a missing final line end; the attribute accessors (rtpmap, fmtp, static
payload types, direction with session fallback, label, crypto, rtcp, ptime); each refusal with
its line number; and that arbitrary input raises only SdpError (hypothesis).
Does not cover: offer/answer (test_siprec.py), charsets other than UTF-8 beyond the byte round trip.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siprec_src.errors import RemoteProtocolError
from siprec_src.sdp import (
    Bandwidth,
    Connection,
    CryptoAttribute,
    Direction,
    MediaDescription,
    Origin,
    RtcpAttribute,
    RtpMap,
    SdpError,
    SessionDescription,
    Timing,
    parse_sdp,
)
from siprec_src.sip.multipart import decode_multipart
from tests.conftest import FIXTURES

# Whole INVITE (headers + body) rather than a bare multipart body.
WHOLE_INVITE = "intrado-siprec-invite.txt"
# A bare SDP (preceded by an empty line), the corpus's non-SIPREC case.
BARE_SDP = "non-siprec-payload.txt"


def _vendor_dir() -> Path:
    vendor = FIXTURES / "vendor-siprec"
    # Fail, not skip: a silently skipped corpus test is a corpus test that never runs.
    assert vendor.is_dir(), f"vendor SIPREC fixtures not found at {vendor} (set SIPREC_FIXTURES)"
    return vendor


def _sdp_of(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name == BARE_SDP:
        return data.lstrip(b"\r\n")
    if path.name == WHOLE_INVITE:
        head, _, data = data.partition(b"\n\n")
        content_type = next(
            line.split(":", 1)[1].strip()
            for line in head.decode("utf-8").splitlines()
            if line.lower().startswith("content-type:")
        )
    else:
        first = next(line for line in data.decode("utf-8").splitlines() if line.startswith("--"))
        content_type = f"multipart/mixed;boundary={first[2:].strip()}"
    parts = [p for p in decode_multipart(content_type, data) if p.media_type == "application/sdp"]
    assert len(parts) == 1, f"{path.name}: expected one application/sdp part"
    return parts[0].body


def vendor_sdp_bodies() -> dict[str, bytes]:
    """The SDP of every vendor capture, by file name (shared with test_siprec.py)."""
    files = sorted(p for p in _vendor_dir().iterdir() if p.is_file())
    assert len(files) >= 10, f"vendor corpus looks incomplete: {[p.name for p in files]}"
    return {p.name: _sdp_of(p) for p in files}


def _crlf(data: bytes) -> bytes:
    """What the serializer should give back: CRLF line ends, one final CRLF, no trailing empty lines."""
    return data.replace(b"\r\n", b"\n").rstrip(b"\n").replace(b"\n", b"\r\n") + b"\r\n"


VENDOR_SDP = vendor_sdp_bodies()


@pytest.mark.parametrize("name", sorted(VENDOR_SDP))
def test_vendor_sdp_round_trips_byte_for_byte(name: str) -> None:
    raw = VENDOR_SDP[name]
    sdp = parse_sdp(raw)
    assert bytes(sdp) == _crlf(raw)
    assert parse_sdp(bytes(sdp)) == sdp
    assert sdp.media, f"{name}: no m-line"
    assert all(m.media == "audio" and m.proto == "RTP/AVP" for m in sdp.media)


def test_rfc4475_sdp01_body_round_trips() -> None:
    path = FIXTURES / "rfc4475" / "sdp01.dat"
    assert path.is_file(), f"missing {path}"
    _, _, body = path.read_bytes().partition(b"\r\n\r\n")
    sdp = parse_sdp(body)
    assert bytes(sdp) == body
    assert [(m.media, m.port, m.formats) for m in sdp.media] == [
        ("audio", 49217, ("0", "12")),
        ("video", 3227, ("31",)),
    ]
    assert sdp.connection_for(sdp.media[1]) == Connection("IN", "IP4", "192.0.2.5")
    # "a=rtpmap:31 LPC" has no clock rate: kept as written, refused only when asked for.
    with pytest.raises(SdpError, match="clock rate"):
        sdp.media[1].rtpmap(31)
    assert sdp.media[0].codec(12) == RtpMap(12, "QCELP", 8000)


FULL = (
    b"v=0\r\n"
    b"o=jdoe 2890844526 2890842807 IN IP4 198.51.100.1\r\n"
    b"s=SDP Seminar\r\n"
    b"i=A Seminar on the session description protocol\r\n"
    b"u=http://www.example.com/seminars/sdp.pdf\r\n"
    b"e=j.doe@example.com (Jane Doe)\r\n"
    b"p=+1 617 555-6011\r\n"
    b"c=IN IP4 233.252.0.1/127\r\n"
    b"b=CT:128\r\n"
    b"t=2873397496 2873404696\r\n"
    b"r=7d 1h 0 25h\r\n"
    b"t=0 0\r\n"
    b"z=2882844526 -1h 2898848070 0\r\n"
    b"k=prompt\r\n"
    b"a=recvonly\r\n"
    b"a=tool:x-unknown value: with colon\r\n"
    b"y=0123456789\r\n"
    b"m=audio 49170/2 RTP/AVP 0 96\r\n"
    b"i=the audio\r\n"
    b"c=IN IP6 2001:db8::1\r\n"
    b"c=IN IP6 2001:db8::2\r\n"
    b"b=AS:64\r\n"
    b"k=clear:abc\r\n"
    b"a=rtpmap:96 opus/48000/2\r\n"
    b"a=fmtp:96 minptime=10;useinbandfec=1\r\n"
    b"a=x-flag\r\n"
    b"a=empty:\r\n"
    b"a=sendonly\r\n"
    b"f=v/2/25\r\n"
    b"m=video 51372 RTP/AVP 99\r\n"
    b"a=rtpmap:99 h263-1998/90000\r\n"
)


def test_every_line_type_is_kept() -> None:
    sdp = parse_sdp(FULL)
    assert bytes(sdp) == FULL
    assert sdp.origin == Origin("jdoe", "2890844526", "2890842807", "IN", "IP4", "198.51.100.1")
    assert sdp.origin.version_number == 2890842807
    assert (sdp.session_name, sdp.information) == (
        "SDP Seminar",
        "A Seminar on the session description protocol",
    )
    assert sdp.uri == "http://www.example.com/seminars/sdp.pdf"
    assert sdp.emails == ("j.doe@example.com (Jane Doe)",)
    assert sdp.phones == ("+1 617 555-6011",)
    assert sdp.connection == Connection("IN", "IP4", "233.252.0.1/127")
    assert sdp.connection.host == "233.252.0.1"
    assert sdp.bandwidths == (Bandwidth("CT", 128),)
    assert sdp.timings == (Timing(2873397496, 2873404696, ("7d 1h 0 25h",)), Timing(0, 0))
    assert (sdp.time_zones, sdp.key) == ("2882844526 -1h 2898848070 0", "prompt")
    assert sdp.attributes == (("recvonly", None), ("tool", "x-unknown value: with colon"))
    assert sdp.extra_lines == (("y", "0123456789"),)
    audio, video = sdp.media
    assert (audio.port, audio.port_count, audio.formats, audio.title) == (49170, 2, ("0", "96"), "the audio")
    assert audio.connections == (
        Connection("IN", "IP6", "2001:db8::1"),
        Connection("IN", "IP6", "2001:db8::2"),
    )
    assert audio.connection == Connection("IN", "IP6", "2001:db8::1")
    assert (audio.bandwidths, audio.key) == ((Bandwidth("AS", 64),), "clear:abc")
    assert audio.attributes[2:4] == (("x-flag", None), ("empty", ""))
    assert audio.extra_lines == (("f", "v/2/25"),)
    # Media-level direction wins; without one the session level applies (RFC 8866 §6.7).
    assert sdp.direction_of(audio) is Direction.SENDONLY
    assert sdp.direction_of(video) is Direction.RECVONLY
    assert video.direction is None
    assert sdp.connection_for(video) == sdp.connection


def test_lf_only_and_missing_final_line_end_are_tolerated() -> None:
    crlf = parse_sdp(FULL)
    assert parse_sdp(FULL.replace(b"\r\n", b"\n")) == crlf
    assert parse_sdp(FULL.rstrip(b"\r\n")) == crlf
    assert parse_sdp(FULL + b"\r\n\n") == crlf


def test_out_of_order_lines_are_accepted_and_written_in_rfc_order() -> None:
    data = (
        b"v=0\r\ns=-\r\nt=0 0\r\nc=IN IP4 192.0.2.1\r\no=- 1 1 IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\n"
    )
    data += b"a=sendonly\r\nc=IN IP4 192.0.2.2\r\n"
    sdp = parse_sdp(data)
    assert bytes(sdp) == (
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0\r\nc=IN IP4 192.0.2.2\r\na=sendonly\r\n"
    )


def test_missing_t_line_is_kept_missing() -> None:
    data = b"v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nm=audio 35011 RTP/AVP 0\r\n"
    sdp = parse_sdp(data)
    assert sdp.timings == ()
    assert bytes(sdp) == data


def test_whitespace_runs_in_structured_lines_are_normalized() -> None:
    sdp = parse_sdp(b"v=0\no=-  1 1\tIN IP4 192.0.2.1 \ns=\nt=0  0\nm=audio  4000 RTP/AVP 0  8 \n")
    assert sdp.origin.address == "192.0.2.1"
    assert sdp.session_name == ""
    assert sdp.media[0].formats == ("0", "8")
    assert parse_sdp(bytes(sdp)) == sdp


def test_built_description_serializes_in_rfc_order() -> None:
    sdp = SessionDescription(
        origin=Origin("-", "7", "8", "IN", "IP4", "192.0.2.1"),
        connection=Connection("IN", "IP4", "192.0.2.1"),
        media=(MediaDescription("audio", 4000, "RTP/AVP", ("0",), attributes=(("sendonly", None),)),),
    )
    assert bytes(sdp) == (
        b"v=0\r\no=- 7 8 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n"
    )
    assert SessionDescription.parse(bytes(sdp)) == sdp


MEDIA = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/SAVP 0 8 101 13\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=ptime:20\r\n"
    b"a=Label:a_leg\r\n"
    b"a=label:ignored\r\n"
    b"a=rtcp:4005 IN IP4 192.0.2.9\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32"
    b" UNENCRYPTED_SRTCP\r\n"
    b"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj;inline:QUJD\r\n"
    b"a=inactive\r\n"
)


def test_media_accessors() -> None:
    media = parse_sdp(MEDIA).media[0]
    assert media.rtpmap(101) == RtpMap(101, "telephone-event", 8000)
    assert media.rtpmap("8") == RtpMap(8, "PCMA", 8000)
    assert media.rtpmap(0) is None
    assert media.codec(0) == RtpMap(0, "PCMU", 8000)  # RFC 3551 static type
    assert media.codec(13) == RtpMap(13, "CN", 8000)
    assert media.codec(99) is None
    assert media.fmtp(101) == "0-16"
    assert media.fmtp(0) is None
    assert media.ptime == 20
    # Attribute names compare case-insensitively; the first one counts.
    assert media.label == "a_leg"
    assert media.attributes_named("label") == ["a_leg", "ignored"]
    assert media.has_attribute("INACTIVE") and not media.has_attribute("sendonly")
    assert media.attribute("inactive") is None
    assert media.direction is Direction.INACTIVE
    assert media.rtcp == RtcpAttribute(4005, "IN", "IP4", "192.0.2.9")
    first, second = media.crypto
    assert first == CryptoAttribute(
        1,
        "AES_CM_128_HMAC_SHA1_80",
        ("inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32",),
        ("UNENCRYPTED_SRTCP",),
    )
    assert first.inline_key == "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
    assert second.key_params == ("inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj", "inline:QUJD")
    assert str(first) == media.attributes_named("crypto")[0]
    assert str(second) == media.attributes_named("crypto")[1]


def test_rtcp_without_address_and_defaults() -> None:
    sdp = parse_sdp(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:4001\r\n")
    media = sdp.media[0]
    assert media.rtcp == RtcpAttribute(4001)
    assert str(media.rtcp) == "4001"
    assert media.crypto == ()
    assert media.label is None and media.ptime is None
    assert sdp.direction_of(media) is Direction.SENDRECV  # RFC 3264 §5.1 default


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ("rtpmap:96 opus", "clock rate"),
        ("rtpmap:96 x/8000/2/3", "rtpmap"),
        ("rtpmap:96", "rtpmap"),
        ("crypto:1 AES_CM_128_HMAC_SHA1_80", "crypto"),
        ("crypto:x AES_CM_128_HMAC_SHA1_80 inline:abc", "crypto tag"),
        ("crypto:1 AES_CM_128_HMAC_SHA1_80 inline", "key-method"),
        ("crypto", "no value"),
        ("rtcp:0", "rtcp port"),
        ("rtcp:4001 IN IP4", "rtcp"),
        ("ptime:abc", "ptime"),
    ],
)
def test_malformed_attributes_raise_when_read(attribute: str, message: str) -> None:
    sdp = parse_sdp(
        f"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nm=audio 4000 RTP/AVP 96\r\na={attribute}\r\n".encode()
    )
    media = sdp.media[0]
    with pytest.raises(SdpError, match=message):
        _ = (media.rtpmap(96), media.crypto, media.rtcp, media.ptime)


def test_rtpmap_payload_type_range() -> None:
    with pytest.raises(SdpError, match="0-127"):
        RtpMap.parse("200 x/8000")
    assert RtpMap.parse("96  opus/48000/2") == RtpMap(96, "opus", 48000, 2)
    assert str(RtpMap(96, "opus", 48000, 2)) == "96 opus/48000/2"


HEAD = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\n"


@pytest.mark.parametrize(
    ("text", "line_number", "message"),
    [
        ("", None, "empty body"),
        ("\r\n\r\n", None, "empty body"),
        ("v=1\no=- 1 1 IN IP4 a\ns=-\n", 1, "v=0"),
        ("\nv=0\no=- 1 1 IN IP4 a\ns=-\n", 1, "v=0"),
        ("o=- 1 1 IN IP4 a\nv=0\n", 1, "v=0"),
        ("v=0\ns=-\nt=0 0\n", None, "no o= line"),
        ("v=0\no=- 1 1 IN IP4 a\nt=0 0\n", None, "no s= line"),
        ("v=0\no=- 1 1 IN IP4\ns=-\n", 2, "6 fields"),
        ("v=0\no=- x 1 IN IP4 a\ns=-\n", 2, "sess-id"),
        (HEAD + "v=0\n", 4, "only as the first line"),
        (HEAD + "o=- 1 1 IN IP4 a\n", 4, "second o="),
        (HEAD + "s=again\n", 4, "second s="),
        (HEAD + "c=IN IP4\n", 4, "3 fields"),
        (HEAD + "b=AS\n", 4, "bwtype"),
        (HEAD + "b=AS:x\n", 4, "bandwidth"),
        (HEAD + "t=0\n", 4, "2 fields"),
        (HEAD + "r=7d 1h 0 25h\n", 4, "before any t="),
        (HEAD + "a=:value\n", 4, "attribute name"),
        (HEAD + "a=\n", 4, "attribute name"),
        (HEAD + "\nm=audio 4000 RTP/AVP 0\n", 4, "<type>=<value>"),
        (HEAD + "garbage\n", 4, "<type>=<value>"),
        (HEAD + "1=x\n", 4, "<type>=<value>"),
        (HEAD + "ab=x\n", 4, "<type>=<value>"),
        (HEAD + "a=x\ry\n", 4, "CR or NUL"),
        (HEAD + "a=x\x00\n", 4, "CR or NUL"),
        (HEAD + "m=audio 70000 RTP/AVP 0\n", 4, "0-65535"),
        (HEAD + "m=audio -1 RTP/AVP 0\n", 4, "port"),
        (HEAD + "m=audio 4000/0 RTP/AVP 0\n", 4, "number of ports"),
        (HEAD + "m=audio 4000/ RTP/AVP 0\n", 4, "number of ports"),
        (HEAD + "m=audio ４０００ RTP/AVP 0\n", 4, "port"),
        (HEAD + "m=audio 4000 RTP/AVP\n", 4, "at least one format"),
        (HEAD + "m=audio 4000 RTP//AVP 0\n", 4, "proto"),
        (HEAD + "m=audio 4000 RTP/AVP 0\nt=0 0\n", 5, "session-level"),
        (HEAD + "m=audio 4000 RTP/AVP 0\ni=a\ni=b\n", 6, "second i="),
    ],
)
def test_refusals_name_the_line(text: str, line_number: int | None, message: str) -> None:
    with pytest.raises(SdpError, match=message) as info:
        parse_sdp(text.encode())
    error = info.value
    assert isinstance(error, RemoteProtocolError)
    assert error.status_hint == 400
    assert error.line_number == line_number
    if line_number is not None:
        assert error.line is not None
        assert f"SDP line {line_number}:" in error.reason
        assert repr(error.line[:20])[1:-1][:10] in error.reason


def test_non_utf8_bytes_survive_the_round_trip() -> None:
    data = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=Caf\xe9\r\nt=0 0\r\n"
    assert bytes(parse_sdp(data)) == data


def test_long_line_is_shortened_in_the_error() -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp((HEAD + "m=audio 99999999 RTP/AVP " + "0 " * 200 + "\n").encode())
    assert info.value.line is not None and len(info.value.line) > 400
    assert len(info.value.reason) < 200


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_sdp_error(data: bytes) -> None:
    with contextlib.suppress(SdpError):
        parse_sdp(data)


_LINES = st.sampled_from(
    [
        "o=- 1 1 IN IP4 192.0.2.1",
        "o=x 99999999999999999999 2 IN IP6 ::1",
        "s=-",
        "s=",
        "i=info",
        "u=http://x",
        "e=a@b",
        "p=+1",
        "c=IN IP4 192.0.2.1",
        "c=IN IP4",
        "b=AS:64",
        "b=AS:",
        "t=0 0",
        "t=1 x",
        "r=1d 0",
        "z=0 -1h",
        "k=prompt",
        "a=sendonly",
        "a=label:1",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:96",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QUJD|2^20",
        "a=crypto:1",
        "a=rtcp:4001 IN IP4 192.0.2.2",
        "a=rtcp:x",
        "a=ptime:20",
        "a=fmtp:101 0-16",
        "m=audio 4000 RTP/AVP 0 101",
        "m=audio 0 RTP/SAVP 8",
        "m=audio 65536 RTP/AVP 0",
        "m=video 5000/2 RTP/AVP 31",
        "y=unknown",
        "",
        "x",
        "v=0",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_LINES, max_size=14), st.sampled_from(["\r\n", "\n"]))
def test_sdp_like_input_parses_or_raises_sdp_error_and_reparses_equal(lines: list[str], eol: str) -> None:
    data = ("v=0" + eol + eol.join(lines)).encode()
    try:
        sdp = parse_sdp(data)
    except SdpError:
        return
    assert parse_sdp(bytes(sdp)) == sdp
    for media in sdp.media:
        # Accessors either answer or raise SdpError, nothing else.
        with contextlib.suppress(SdpError):
            media.rtpmap(0)
        with contextlib.suppress(SdpError):
            _ = media.crypto
        with contextlib.suppress(SdpError):
            _ = media.rtcp
        with contextlib.suppress(SdpError):
            _ = media.ptime
