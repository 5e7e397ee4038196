"""SIPREC offer/answer (siprec_src.sdp.siprec).

Covers: the offer for both_tracks (PCMU + telephone-event), plain and SDES-secure, opus, paused
and removed streams, and the misuse refused with LocalProtocolError; answer processing: the
happy path through bytes, a stream refused with port 0, inactive (paused), RTP/AVP vs RTP/SAVP
in both directions, crypto tag/suite/count/key errors, wrong m-line count, codec and
telephone-event chosen from the answer, a=rtcp and c= fallback, direction and label checks;
the reference SRS answer against every vendor offer, and label extraction from those offers.
Does not cover: SDP syntax (test_session.py), re-INVITE sequencing (the recording layer).
"""

from __future__ import annotations

import base64

import pytest

from siprec_src.errors import LocalProtocolError, RemoteProtocolError
from siprec_src.sdp import (
    G722,
    PCMA,
    PCMU,
    CodecSpec,
    CryptoAttribute,
    CryptoOffer,
    CryptoSuite,
    Direction,
    NegotiationError,
    RtpMap,
    SessionDescription,
    StreamOffer,
    build_answer_for_srs,
    build_offer,
    opus,
    parse_sdp,
    process_answer,
)
from tests.sdp.test_session import VENDOR_SDP

KEY_80 = base64.b64encode(bytes(range(30))).decode()
KEY_32 = base64.b64encode(bytes(range(30, 60))).decode()
KEY_GCM = base64.b64encode(bytes(range(28))).decode()
SRS_KEY = base64.b64encode(bytes(range(100, 130))).decode()

BOTH_TRACKS = (
    StreamOffer("1", 40000, PCMU.with_telephone_event(101)),
    StreamOffer("2", 40002, PCMU.with_telephone_event(101)),
)
SECURE_KEYS = {
    "1": [
        CryptoOffer(CryptoSuite.AES_CM_128_HMAC_SHA1_80, KEY_80),
        CryptoOffer(CryptoSuite.AES_CM_128_HMAC_SHA1_32, KEY_32),
    ],
    "2": [
        CryptoOffer(CryptoSuite.AES_CM_128_HMAC_SHA1_80, KEY_32),
        CryptoOffer(CryptoSuite.AES_CM_128_HMAC_SHA1_32, KEY_80),
    ],
}


def _plain_offer() -> SessionDescription:
    return build_offer(BOTH_TRACKS, address="192.0.2.10", session_id=1234, session_version=1, secure=False)


def _secure_offer() -> SessionDescription:
    return build_offer(
        BOTH_TRACKS, address="192.0.2.10", session_id=1234, session_version=1, secure=True, crypto=SECURE_KEYS
    )


def _srs_answer(offer: SessionDescription, **kwargs: object) -> SessionDescription:
    keys = [{CryptoSuite.AES_CM_128_HMAC_SHA1_80: SRS_KEY}] * len(offer.media)
    options: dict[str, object] = {"address": "198.51.100.7", "ports": [50000, 50002], "crypto_keys": keys}
    options.update(kwargs)
    return build_answer_for_srs(offer, **options)  # type: ignore[arg-type]


def _edit(answer: SessionDescription, old: bytes, new: bytes) -> SessionDescription:
    data = bytes(answer)
    assert old in data, f"{old!r} not in the answer"
    return parse_sdp(data.replace(old, new))


def test_plain_offer_for_both_tracks() -> None:
    assert bytes(_plain_offer()) == (
        b"v=0\r\n"
        b"o=siprec-src 1234 1 IN IP4 192.0.2.10\r\n"
        b"s=-\r\n"
        b"c=IN IP4 192.0.2.10\r\n"
        b"t=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0 101\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-16\r\n"
        b"a=ptime:20\r\n"
        b"a=sendonly\r\n"
        b"a=label:1\r\n"
        b"m=audio 40002 RTP/AVP 0 101\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-16\r\n"
        b"a=ptime:20\r\n"
        b"a=sendonly\r\n"
        b"a=label:2\r\n"
    )


def test_secure_offer_has_savp_and_one_crypto_line_per_key() -> None:
    offer = _secure_offer()
    assert parse_sdp(bytes(offer)) == offer
    first, second = offer.media
    assert first.proto == second.proto == "RTP/SAVP"
    assert first.crypto == (
        CryptoAttribute(1, "AES_CM_128_HMAC_SHA1_80", (f"inline:{KEY_80}",)),
        CryptoAttribute(2, "AES_CM_128_HMAC_SHA1_32", (f"inline:{KEY_32}",)),
    )
    assert [c.inline_key for c in second.crypto] == [KEY_32, KEY_80]
    assert f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}\r\n".encode() in bytes(offer)
    assert [m.label for m in offer.media] == ["1", "2"]


def test_offer_with_gcm_opus_rtcp_ipv6_paused_and_removed_streams() -> None:
    streams = [
        StreamOffer(
            "in", 40000, opus(telephone_event_pt=110, fmtp="useinbandfec=1"), ptime=40, rtcp_port=40011
        ),
        StreamOffer("out", 40002, G722, paused=True),
        StreamOffer("old", 0, PCMA),
    ]
    offer = build_offer(
        streams,
        address="2001:db8::5",
        session_id=9,
        session_version=3,
        secure=True,
        crypto={"in": [CryptoOffer(CryptoSuite.AEAD_AES_128_GCM, KEY_GCM)], "out": SECURE_KEYS["1"]},
        username="sbc",
    )
    data = bytes(offer)
    assert b"o=sbc 9 3 IN IP6 2001:db8::5\r\ns=-\r\nc=IN IP6 2001:db8::5\r\n" in data
    opus_media, g722_media, removed = offer.media
    assert opus_media.formats == ("111", "110")
    assert opus_media.rtpmap(111) == RtpMap(111, "opus", 48000, 2)
    assert opus_media.rtpmap(110) == RtpMap(110, "telephone-event", 48000)
    assert (opus_media.fmtp(111), opus_media.fmtp(110)) == ("useinbandfec=1", "0-16")
    assert (opus_media.ptime, opus_media.rtcp is not None and opus_media.rtcp.port) == (40, 40011)
    assert [c.suite for c in opus_media.crypto] == ["AEAD_AES_128_GCM"]
    assert g722_media.direction is Direction.INACTIVE
    assert g722_media.rtpmap(9) == RtpMap(9, "G722", 8000)
    assert (removed.port, removed.crypto) == (0, ())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"streams": []}, "at least one stream"),
        ({"streams": [BOTH_TRACKS[0], BOTH_TRACKS[0]]}, "unique"),
        ({"secure": True}, "without a crypto key"),
        ({"crypto": SECURE_KEYS}, "plain RTP/AVP"),
        ({"address": ""}, "address"),
        ({"address": "[::1]"}, "address"),
        ({"username": "two words"}, "username"),
        ({"session_id": -1}, "negative"),
    ],
)
def test_offer_misuse_is_a_local_error(kwargs: dict[str, object], message: str) -> None:
    options: dict[str, object] = {
        "streams": BOTH_TRACKS,
        "address": "192.0.2.10",
        "session_id": 1,
        "session_version": 1,
        "secure": False,
    }
    options.update(kwargs)
    streams = options.pop("streams")
    with pytest.raises(LocalProtocolError, match=message):
        build_offer(streams, **options)  # type: ignore[arg-type]


def test_invalid_specs_are_local_errors() -> None:
    with pytest.raises(LocalProtocolError, match="30 bytes"):
        CryptoOffer(CryptoSuite.AES_CM_128_HMAC_SHA1_80, KEY_GCM)
    with pytest.raises(LocalProtocolError, match="base64"):
        CryptoOffer(CryptoSuite.AES_CM_128_HMAC_SHA1_80, "not base64!")
    with pytest.raises(LocalProtocolError, match="telephone-event"):
        PCMU.with_telephone_event(0)
    with pytest.raises(LocalProtocolError, match="telephone-event"):
        PCMU.with_telephone_event(13)
    with pytest.raises(LocalProtocolError, match="0-127"):
        CodecSpec(128, "x", 8000)
    with pytest.raises(LocalProtocolError, match="token"):
        CodecSpec(96, "a/b", 8000)
    with pytest.raises(LocalProtocolError, match="dynamic"):
        opus(0)
    with pytest.raises(LocalProtocolError, match="label"):
        StreamOffer("a leg", 4000, PCMU)
    with pytest.raises(LocalProtocolError, match="label"):
        StreamOffer("", 4000, PCMU)
    with pytest.raises(LocalProtocolError, match="port"):
        StreamOffer("1", 65536, PCMU)
    with pytest.raises(LocalProtocolError, match="RTCP"):
        StreamOffer("1", 4000, PCMU, rtcp_port=0)
    assert (PCMU.payload_type, PCMA.payload_type, G722.payload_type) == (0, 8, 9)


@pytest.mark.parametrize("secure", [False, True])
def test_happy_path_through_bytes(secure: bool) -> None:
    offer = _secure_offer() if secure else _plain_offer()
    # Both descriptions cross the wire: serialize and parse them as the peers would.
    answer = parse_sdp(bytes(_srs_answer(parse_sdp(bytes(offer)))))
    result = process_answer(offer, answer)
    assert result.remote_origin.username == "siprec-srs"
    assert [s.label for s in result.accepted] == ["1", "2"]
    assert result.refused == ()
    first = result.stream("1")
    assert (first.index, first.remote_address, first.remote_port) == (0, "198.51.100.7", 50000)
    assert first.remote_rtcp == ("198.51.100.7", 50001)  # RFC 3550 §11: port + 1
    assert first.direction is Direction.RECVONLY and not first.paused
    assert (first.payload_type, first.codec, first.telephone_event_pt) == (0, RtpMap(0, "PCMU", 8000), 101)
    if secure:
        assert first.crypto == CryptoAttribute(1, "AES_CM_128_HMAC_SHA1_80", (f"inline:{SRS_KEY}",))
    else:
        assert first.crypto is None
    assert result.stream("2").remote_port == 50002
    with pytest.raises(KeyError):
        result.stream("3")


def test_port_zero_refuses_one_stream_and_the_other_continues() -> None:
    offer = _plain_offer()
    answer = _edit(_srs_answer(offer), b"m=audio 50002 RTP/AVP", b"m=audio 0 RTP/AVP")
    result = process_answer(offer, answer)
    assert [s.label for s in result.accepted] == ["1"]
    (refused,) = result.refused
    assert (refused.label, refused.accepted, refused.remote_address, refused.payload_type) == (
        "2",
        False,
        None,
        None,
    )
    assert refused.reason is not None and "port 0" in refused.reason


def test_stream_removed_by_the_offer_stays_removed() -> None:
    offer = build_offer(
        [BOTH_TRACKS[0], StreamOffer("2", 0, PCMU)],
        address="192.0.2.10",
        session_id=1,
        session_version=2,
        secure=False,
    )
    answer = _srs_answer(offer)
    assert answer.media[1].port == 0
    result = process_answer(offer, answer)
    assert result.streams[1].reason == "removed by the offer (port 0)"


def test_inactive_answer_is_accepted_as_paused() -> None:
    offer = _plain_offer()
    answer = _edit(_srs_answer(offer), b"a=recvonly\r\na=label:2", b"a=inactive\r\na=label:2")
    result = process_answer(offer, answer)
    paused = result.stream("2")
    assert paused.accepted and paused.paused and paused.direction is Direction.INACTIVE
    assert not result.stream("1").paused


def test_session_level_direction_and_sendrecv_are_tolerated() -> None:
    offer = _plain_offer()
    answer = _srs_answer(offer)
    no_direction = parse_sdp(bytes(answer).replace(b"a=recvonly\r\n", b""))
    assert [s.direction for s in process_answer(offer, no_direction).streams] == [Direction.SENDRECV] * 2
    session_level = parse_sdp(bytes(no_direction).replace(b"t=0 0\r\n", b"t=0 0\r\na=inactive\r\n"))
    assert all(s.paused for s in process_answer(offer, session_level).streams)


def test_paused_offer_answered_recvonly_is_still_inactive() -> None:
    offer = build_offer(
        [StreamOffer("1", 40000, PCMU, paused=True)],
        address="192.0.2.10",
        session_id=1,
        session_version=1,
        secure=False,
    )
    answer = _srs_answer(offer, ports=[50000])
    assert answer.media[0].direction is Direction.INACTIVE  # the reference SRS answers inactive
    recvonly = _edit(answer, b"a=inactive", b"a=recvonly")
    assert process_answer(offer, recvonly).streams[0].direction is Direction.INACTIVE


def test_sendonly_answer_is_refused() -> None:
    offer = _plain_offer()
    answer = _edit(_srs_answer(offer), b"a=recvonly\r\na=label:1", b"a=sendonly\r\na=label:1")
    with pytest.raises(
        NegotiationError, match=r"m-line 1: answer direction sendonly cannot answer sendonly"
    ) as info:
        process_answer(offer, answer)
    assert info.value.mline == 1
    assert isinstance(info.value, RemoteProtocolError) and info.value.status_hint == 488


def test_avp_answering_savp_is_an_error_and_the_reverse_too() -> None:
    secure = _secure_offer()
    plain_answer = _srs_answer(_plain_offer())
    with pytest.raises(
        NegotiationError, match=r"m-line 1: answer proto RTP/AVP does not match the offered RTP/SAVP"
    ):
        process_answer(secure, plain_answer)
    secure_answer = _srs_answer(secure)
    with pytest.raises(
        NegotiationError, match=r"m-line 1: answer proto RTP/SAVP does not match the offered RTP/AVP"
    ):
        process_answer(_plain_offer(), secure_answer)


def test_unknown_crypto_tag_is_an_error() -> None:
    offer = _secure_offer()
    answer = _edit(_srs_answer(offer), b"a=crypto:1 AES", b"a=crypto:7 AES")
    with pytest.raises(
        NegotiationError, match=r"m-line 1: answer crypto tag 7 was not offered \(offered \[1, 2\]"
    ):
        process_answer(offer, answer)


def test_crypto_suite_not_matching_the_tag_is_an_error() -> None:
    offer = _secure_offer()
    answer = _edit(
        _srs_answer(offer), b"a=crypto:1 AES_CM_128_HMAC_SHA1_80", b"a=crypto:2 AES_CM_128_HMAC_SHA1_80"
    )
    with pytest.raises(
        NegotiationError, match=r"tag 2 has suite AES_CM_128_HMAC_SHA1_80, the offer gave it .*_32"
    ):
        process_answer(offer, answer)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{SRS_KEY}\r\n", "", "0 a=crypto lines"),
        (
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{SRS_KEY}\r\n",
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{SRS_KEY}\r\n"
            f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{SRS_KEY}\r\n",
            "2 a=crypto lines",
        ),
        (f"inline:{SRS_KEY}", f"inline:{KEY_GCM}", "needs 30 bytes"),
        (f"inline:{SRS_KEY}", "inline:%%%", "not base64"),
        (f"inline:{SRS_KEY}", "foo:bar", "no inline key"),
        ("a=crypto:1 AES_CM_128_HMAC_SHA1_80", "a=crypto:1", "crypto"),
    ],
)
def test_bad_answer_crypto(old: str, new: str, message: str) -> None:
    offer = _secure_offer()
    answer = _edit(_srs_answer(offer), old.encode(), new.encode())
    with pytest.raises(NegotiationError, match=message) as info:
        process_answer(offer, answer)
    assert info.value.mline == 1


def test_wrong_m_line_count_is_an_error() -> None:
    offer = _plain_offer()
    answer = _srs_answer(offer)
    shorter = SessionDescription(origin=answer.origin, connection=answer.connection, media=answer.media[:1])
    with pytest.raises(NegotiationError, match=r"the answer has 1 m-lines, the offer had 2") as info:
        process_answer(offer, shorter)
    assert info.value.mline is None
    longer = SessionDescription(origin=answer.origin, connection=answer.connection, media=answer.media * 2)
    with pytest.raises(NegotiationError, match="the answer has 4 m-lines"):
        process_answer(offer, longer)


MULTI_CODEC_OFFER = parse_sdp(
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8 111 101\r\n"
    b"a=rtpmap:111 opus/48000/2\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=sendonly\r\na=label:1\r\n"
)


def _answer_with(media_lines: bytes) -> SessionDescription:
    return parse_sdp(
        b"v=0\r\no=srs 5 5 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n" + media_lines
    )


@pytest.mark.parametrize(
    ("media", "payload_type", "codec", "telephone_event_pt"),
    [
        # The answer's order decides (RFC 3264 §6.1), auxiliary formats are skipped.
        (
            b"m=audio 50000 RTP/AVP 101 8 0\r\na=rtpmap:101 telephone-event/8000\r\n",
            8,
            RtpMap(8, "PCMA", 8000),
            101,
        ),
        # A different dynamic number for the same codec: the answer's number is the one to send.
        (b"m=audio 50000 RTP/AVP 96\r\na=rtpmap:96 OPUS/48000/2\r\n", 96, RtpMap(96, "OPUS", 48000, 2), None),
        # A dynamic type without rtpmap borrows the offer's meaning.
        (
            b"m=audio 50000 RTP/AVP 111 97\r\na=rtpmap:97 telephone-event/48000\r\n",
            111,
            RtpMap(111, "opus", 48000, 2),
            97,
        ),
        # Telephone-event at another clock rate does not go with the codec.
        (
            b"m=audio 50000 RTP/AVP 0 96\r\na=rtpmap:96 telephone-event/16000\r\n",
            0,
            RtpMap(0, "PCMU", 8000),
            None,
        ),
    ],
)
def test_codec_is_chosen_from_the_answer(
    media: bytes, payload_type: int, codec: RtpMap, telephone_event_pt: int | None
) -> None:
    (stream,) = process_answer(MULTI_CODEC_OFFER, _answer_with(media)).streams
    assert (stream.payload_type, stream.codec, stream.telephone_event_pt) == (
        payload_type,
        codec,
        telephone_event_pt,
    )


@pytest.mark.parametrize(
    ("media", "message"),
    [
        (b"m=audio 50000 RTP/AVP 18 101\r\na=rtpmap:101 telephone-event/8000\r\n", "no offered codec"),
        (b"m=audio 50000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/1\r\n", "no offered codec"),
        (b"m=audio 50000 RTP/AVP 96\r\na=rtpmap:96 opus\r\n", "clock rate"),
        (b"m=video 50000 RTP/AVP 0\r\n", "answer media 'video'"),
        (b"m=audio 50000 RTP/AVP 0\r\na=label:2\r\n", "answer label '2' does not match the offered '1'"),
    ],
)
def test_unusable_answer_media(media: bytes, message: str) -> None:
    with pytest.raises(NegotiationError, match=message) as info:
        process_answer(MULTI_CODEC_OFFER, _answer_with(media))
    assert info.value.mline == 1


def test_rtcp_attribute_and_connection_fallback() -> None:
    offer = _plain_offer()
    answer = _srs_answer(offer)
    data = bytes(answer).replace(b"a=label:1\r\n", b"a=label:1\r\na=rtcp:50009\r\n")
    data = data.replace(
        b"a=label:2\r\n", b"a=label:2\r\nc=IN IP4 203.0.113.2\r\na=rtcp:50019 IN IP4 203.0.113.9\r\n"
    )
    result = process_answer(offer, parse_sdp(data))
    first, second = result.streams
    assert (first.remote_address, first.remote_rtcp) == ("198.51.100.7", ("198.51.100.7", 50009))
    assert (second.remote_address, second.remote_rtcp) == ("203.0.113.2", ("203.0.113.9", 50019))
    no_connection = parse_sdp(bytes(answer).replace(b"c=IN IP4 198.51.100.7\r\n", b""))
    with pytest.raises(NegotiationError, match="m-line 1: no c= line"):
        process_answer(offer, no_connection)


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("acme-siprec-offer.txt", ["16777227", "16777228"]),
        ("avaya-siprec-offer.txt", ["201835599", "201835600"]),
        ("broadworks-offer-2.txt", ["10", "20"]),
        ("broadworks-offer.txt", ["1"]),
        ("cisco-siprec-offer.txt", ["1", "2"]),
        ("connectel-offer.txt", ["1", "2"]),
        ("connectel-offer2.txt", ["1", "2"]),
        ("connectel-offer3.txt", ["1", "2"]),
        ("inactive-sdp-offer.txt", ["1", "2"]),
        ("intrado-siprec-invite.txt", ["1"]),
        ("non-siprec-payload.txt", ["1"]),
        ("procomm-siprec-offer.txt", ["a_leg", "b_leg"]),
        ("sonus-siprec-offer.txt", ["1", "2"]),
    ],
)
def test_vendor_offer_labels_and_reference_answer(name: str, labels: list[str]) -> None:
    offer = parse_sdp(VENDOR_SDP[name])
    assert [m.label for m in offer.media] == labels
    ports = [50000 + 2 * i for i in range(len(offer.media))]
    answer = parse_sdp(bytes(build_answer_for_srs(offer, address="198.51.100.7", ports=ports)))
    assert [m.label for m in answer.media] == labels
    result = process_answer(offer, answer)
    assert [s.label for s in result.accepted] == labels
    expected = Direction.INACTIVE if name == "inactive-sdp-offer.txt" else Direction.RECVONLY
    assert all(s.direction is expected for s in result.streams)
    for stream, media in zip(result.streams, offer.media, strict=True):
        # The SRS takes the SRC's first listed codec it knows.
        assert stream.payload_type == int(media.formats[0])
        assert stream.remote_port in ports


def test_avaya_second_stream_has_static_pcma_without_rtpmap() -> None:
    offer = parse_sdp(VENDOR_SDP["avaya-siprec-offer.txt"])
    answer = build_answer_for_srs(offer, address="198.51.100.7", ports=[50000, 50002])
    assert answer.media[1].rtpmap(8) == RtpMap(8, "PCMA", 8000)
    second = process_answer(offer, answer).streams[1]
    assert (second.payload_type, second.telephone_event_pt) == (8, 101)
    assert answer.media[1].fmtp(101) is None  # the offer gave none, the answer invents none


def test_reference_srs_refuses_what_it_cannot_take() -> None:
    offer = parse_sdp(VENDOR_SDP["connectel-offer.txt"])
    # Only PCMA: the first stream lists PCMU first, but PCMA is offered too.
    answer = build_answer_for_srs(offer, address="198.51.100.7", ports=[50000, 50002], accept_codecs=["pcma"])
    assert [m.formats[0] for m in answer.media] == ["8", "8"]
    partly = build_answer_for_srs(offer, address="198.51.100.7", ports=[50000, 0], accept_codecs=["GSM"])
    assert [(m.port, m.formats) for m in partly.media] == [(50000, ("3", "101")), (0, ("8", "0", "101"))]
    with pytest.raises(NegotiationError, match="no offered stream is acceptable") as info:
        build_answer_for_srs(offer, address="198.51.100.7", ports=[50000, 50002], accept_codecs=["G729"])
    assert info.value.status_hint == 488
    with pytest.raises(LocalProtocolError, match="1 ports"):
        build_answer_for_srs(offer, address="198.51.100.7", ports=[50000])
    with pytest.raises(LocalProtocolError, match="crypto key sets"):
        build_answer_for_srs(offer, address="198.51.100.7", ports=[50000, 50002], crypto_keys=[])


def test_reference_srs_picks_the_first_offered_suite_it_has_a_key_for() -> None:
    offer = _secure_offer()
    keys = [{CryptoSuite.AES_CM_128_HMAC_SHA1_32: SRS_KEY}, {CryptoSuite.AEAD_AES_128_GCM: KEY_GCM}]
    answer = build_answer_for_srs(offer, address="198.51.100.7", ports=[50000, 50002], crypto_keys=keys)
    assert answer.media[0].crypto == (CryptoAttribute(2, "AES_CM_128_HMAC_SHA1_32", (f"inline:{SRS_KEY}",)),)
    assert answer.media[1].port == 0  # no key for any offered suite: refused (RFC 3264 §6)
    result = process_answer(offer, answer)
    chosen = result.stream("1").crypto
    assert chosen is not None and chosen.tag == 2
    assert not result.stream("2").accepted
