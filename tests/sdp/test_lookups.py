"""Attribute lookups of a media description (siprec_src.sdp.session), as negotiation uses them.

Covers: ``rtpmap(pt)`` finds its line whatever spaces or tabs surround the payload type, reads
only the line asked for (a malformed rtpmap of another payload type does not spoil it), and an
rtpmap text gives one shared immutable value while a malformed one is refused every time.
Runtime: well under a second.
"""

from __future__ import annotations

import pytest

from siprec_src.sdp.session import RtpMap, SdpError, _fields, _first_field, parse_sdp


def _media(*rtpmaps: str) -> bytes:
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0 8 101",
    ]
    lines += [f"a=rtpmap:{value}" for value in rtpmaps]
    return ("\r\n".join(lines) + "\r\n").encode()


@pytest.mark.parametrize(
    "value", ["0 PCMU/8000", " \t0\tPCMU/8000", "0", "", " \t ", "101  x y", "\t8 PCMA/8000"]
)
def test_the_first_field_is_what_splitting_gives(value: str) -> None:
    fields = _fields(value)
    assert _first_field(value) == (fields[0] if fields else "")


def test_rtpmap_lookup_reads_only_the_line_asked_for() -> None:
    media = parse_sdp(_media("\t8  PCMA/8000", "0 PCMU/8000", "101 telephone-event")).media[0]
    assert media.rtpmap(8) == RtpMap(8, "PCMA", 8000)
    assert media.rtpmap("0") == RtpMap(0, "PCMU", 8000)
    assert media.rtpmap(9) is None
    with pytest.raises(SdpError, match="clock rate"):
        media.rtpmap(101)  # malformed, and refused when it is the one asked for


def test_an_rtpmap_text_is_one_value_and_a_bad_one_is_refused_every_time() -> None:
    assert RtpMap.parse("0 PCMU/8000") is RtpMap.parse("0 PCMU/8000")
    for _ in range(3):
        with pytest.raises(SdpError):
            RtpMap.parse("200 PCMU/8000")
