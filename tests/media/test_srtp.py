"""SRTP: SDES key-params, the libsrtp sessions, and an independent RFC 3711 / RFC 7714 decryptor.

Covered:
* ``parse_key_params``: good keys for every suite, and every refusal with its message.
* ``generate_key_params``: fresh, distinct, right-sized keys that parse back.
* ``SrtpSender`` -> ``SrtpReceiver`` for every suite, RTP and RTCP: sequence wrap (ROC), SSRC
  change, tampering, replay, wrong key, malformed and oversized packets.
* The in-place calls the packet path makes (``protect_in_place``/``unprotect_in_place`` on a
  buffer's address): the same bytes as the ``bytes`` API, the same refusals and limits, and a
  packet elsewhere in the buffer left alone.
* The wire format itself, checked without libsrtp: the bottom of this file re-implements the
  RFC 3711 key derivation, AES-CM and HMAC-SHA1, and the RFC 7714 AES-GCM layout, with the
  ``cryptography`` package, and decrypts what ``SrtpSender`` produced. The reference is itself
  pinned to RFC 3711 Appendix B.2 (AES-CM keystream) and B.3 (key derivation) vectors, and
  ``SrtpSender`` to a published libsrtp known-answer packet.

Not covered: key derivation rates other than 0 (SDES never signals one), MKIs (refused), SRTP
header extension encryption (RFC 6904, not offered), timing (measured outside the test suite).
"""

from __future__ import annotations

import base64
import hmac
import struct
from dataclasses import dataclass

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from siprec_src.errors import RemoteProtocolError
from siprec_src.media.rtp import ReceiverReport, ReportBlock, RtpPacket, SenderReport, SourceDescription
from siprec_src.media.spec import SrtpKeys
from siprec_src.media.srtp import (
    MAX_RTP_TO_PROTECT,
    WORKING_BUFFER,
    MasterKey,
    SrtpError,
    SrtpReceiver,
    SrtpSender,
    SrtpSuite,
    buffer_address,
    generate_key_params,
    parse_key_params,
    suite_of,
)

ALL_SUITES = list(SrtpSuite)
GCM_SUITES = [SrtpSuite.AEAD_AES_128_GCM, SrtpSuite.AEAD_AES_256_GCM]

SSRC = 0x5EC0DE01


def inline(material: bytes, *options: str) -> str:
    return "|".join(["inline:" + base64.b64encode(material).decode("ascii"), *options])


def counting_bytes(length: int) -> bytes:
    return bytes(range(1, length + 1))


def keys_for(suite: SrtpSuite) -> SrtpKeys:
    """A fixed, readable key: fine for tests, where nothing is secret."""
    return SrtpKeys(suite=suite.value, key_params=inline(counting_bytes(suite.master_length)))


def rtp(
    sequence: int,
    ssrc: int = SSRC,
    payload: bytes = b"\xd5" * 160,
    csrcs: tuple[int, ...] = (),
    extension: tuple[int, bytes] | None = None,
) -> bytes:
    """A PCMA RTP packet: 172 bytes with the default 20 ms payload."""
    return bytes(RtpPacket(8, sequence, sequence * 160, ssrc, payload, csrcs=csrcs, extension=extension))


def rtcp(ssrc: int = SSRC) -> bytes:
    """A compound SR + SDES, as a fork sends every few seconds (RFC 3550 §6.1)."""
    report = SenderReport(ssrc, 0xE1234567_89ABCDEF, 160_000, 1000, 160_000)
    sdes = SourceDescription(((ssrc, ((1, b"siprec-src"),)),))
    return bytes(report) + bytes(sdes)


def flip_bit(packet: bytes, index: int) -> bytes:
    """The packet with the low bit of byte ``index`` (negative: from the end) inverted."""
    changed = bytearray(packet)
    changed[index] ^= 0x01
    return bytes(changed)


# --- suites and key-params --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suite", "key", "salt", "tag", "srtcp_tag"),
    [
        (SrtpSuite.AES_CM_128_HMAC_SHA1_80, 16, 14, 10, 10),
        (SrtpSuite.AES_CM_128_HMAC_SHA1_32, 16, 14, 4, 10),  # RFC 4568 §6.2.2: SRTCP keeps 80 bits
        (SrtpSuite.AEAD_AES_128_GCM, 16, 12, 16, 16),
        (SrtpSuite.AEAD_AES_256_GCM, 32, 12, 16, 16),
    ],
)
def test_suite_sizes(suite: SrtpSuite, key: int, salt: int, tag: int, srtcp_tag: int) -> None:
    assert (suite.key_length, suite.salt_length, suite.master_length) == (key, salt, key + salt)
    assert (suite.auth_tag_length, suite.srtcp_auth_tag_length) == (tag, srtcp_tag)
    assert suite.max_lifetime == 2**48


def test_suite_of_reads_names_case_insensitively() -> None:
    assert suite_of("AES_CM_128_HMAC_SHA1_80") is SrtpSuite.AES_CM_128_HMAC_SHA1_80
    assert suite_of(" aead_aes_256_gcm ") is SrtpSuite.AEAD_AES_256_GCM  # RFC 5234 §2.3
    assert suite_of(SrtpSuite.AEAD_AES_128_GCM) is SrtpSuite.AEAD_AES_128_GCM


def test_unknown_suite_names_the_supported_ones() -> None:
    with pytest.raises(SrtpError) as caught:
        suite_of("F8_128_HMAC_SHA1_80")
    assert str(caught.value) == (
        "unsupported SRTP crypto-suite 'F8_128_HMAC_SHA1_80'; supported: AES_CM_128_HMAC_SHA1_80, "
        "AES_CM_128_HMAC_SHA1_32, AEAD_AES_128_GCM, AEAD_AES_256_GCM"
    )
    assert isinstance(caught.value, RemoteProtocolError)
    assert caught.value.status_hint == 488


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_parse_good_key_for_each_suite(suite: SrtpSuite) -> None:
    material = counting_bytes(suite.master_length)
    master = parse_key_params(suite, inline(material))
    assert master == MasterKey(
        suite, material[: suite.key_length], material[suite.key_length :], lifetime=None, mki=None
    )
    assert len(master.salt) == suite.salt_length


@pytest.mark.parametrize(
    ("options", "lifetime"),
    [(("2^31",), 2**31), (("2^48",), 2**48), (("1048576",), 2**20), ((str(2**48),), 2**48), (("2^0",), 1)],
)
def test_parse_lifetime(options: tuple[str, ...], lifetime: int) -> None:
    material = counting_bytes(30)
    master = parse_key_params("AES_CM_128_HMAC_SHA1_80", inline(material, *options))
    assert master.lifetime == lifetime


def test_parse_tolerates_spelling_variants() -> None:
    material = counting_bytes(28)
    text = base64.b64encode(material).decode()
    assert text.endswith("=")
    # RFC 5234 §2.3: "inline" is an ABNF literal, so case-insensitive; GCM keys lose their '='.
    master = parse_key_params("aead_aes_128_gcm", " INLINE:" + text.rstrip("=") + " ")
    assert master.key + master.salt == material


def test_master_key_repr_hides_key_material() -> None:
    master = parse_key_params(SrtpSuite.AES_CM_128_HMAC_SHA1_80, inline(counting_bytes(30), "2^20"))
    assert repr(master) == (
        "MasterKey(suite=<SrtpSuite.AES_CM_128_HMAC_SHA1_80: 'AES_CM_128_HMAC_SHA1_80'>, "
        "lifetime=1048576, mki=None)"
    )


KEY30 = base64.b64encode(counting_bytes(30)).decode()
CM80 = "AES_CM_128_HMAC_SHA1_80: "


@pytest.mark.parametrize(
    ("suite", "key_params", "message"),
    [
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            "uri:https://kms.example/key",
            CM80 + "key method 'uri' is not supported; expected 'inline:' (RFC 4568 §6.1)",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            KEY30,
            CM80 + f"key method {KEY30!r} is not supported; expected 'inline:' (RFC 4568 §6.1)",
        ),
        (SrtpSuite.AES_CM_128_HMAC_SHA1_80, "inline:", CM80 + "the inline key is empty"),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            f"inline:{KEY30[:10]}!{KEY30[11:]}",
            CM80 + "the inline key is not base64: '!' at position 10 (RFC 4568 §6.1)",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            f"inline:{KEY30[:10]}={KEY30[11:]}",
            CM80 + "the inline key is not base64: '=' at position 10 (RFC 4568 §6.1)",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            "inline:" + KEY30 + "A",
            CM80 + "the inline key is not valid base64 (41 characters and 0 '=' do not make whole bytes)",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            "inline:AAAAA==",
            CM80 + "the inline key is not valid base64 (5 characters and 2 '=' do not make whole bytes)",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            inline(counting_bytes(29)),
            CM80 + "the inline key must decode to 30 bytes (16-byte key + 14-byte salt), got 29 bytes",
        ),
        (
            SrtpSuite.AEAD_AES_128_GCM,
            inline(counting_bytes(30)),
            "AEAD_AES_128_GCM: the inline key must decode to 28 bytes (16-byte key + 12-byte salt), "
            "got 30 bytes",
        ),
        (
            SrtpSuite.AEAD_AES_256_GCM,
            inline(counting_bytes(30)),
            "AEAD_AES_256_GCM: the inline key must decode to 44 bytes (32-byte key + 12-byte salt), "
            "got 30 bytes",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            inline(counting_bytes(30), "2^49"),
            CM80 + "lifetime 2^49 exceeds the maximum of 2^48 packets (RFC 4568 §6.2.1)",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            inline(counting_bytes(30), str(2**48 + 1)),
            CM80 + "lifetime 281474976710657 exceeds the maximum of 2^48 packets (RFC 4568 §6.2.1)",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            inline(counting_bytes(30), "2^99999999"),
            CM80 + "lifetime 2^99999999 exceeds the maximum of 2^48 packets (RFC 4568 §6.2.1)",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            inline(counting_bytes(30), "9" * 5000),
            CM80
            + "lifetime 999999999999999999999999... exceeds the maximum of 2^48 packets (RFC 4568 §6.2.1)",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            inline(counting_bytes(30), "000"),
            CM80 + "lifetime 0 allows no packet at all",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            inline(counting_bytes(30), "2^x"),
            CM80 + "lifetime '2^x' is neither a decimal number nor '2^n' (RFC 4568 §6.1)",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            inline(counting_bytes(30), ""),
            CM80 + "lifetime '' is neither a decimal number nor '2^n' (RFC 4568 §6.1)",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            inline(counting_bytes(30), "1:4"),
            CM80 + "MKI is not supported (got MKI 1 of 4 bytes); offer the key without '|MKI:length'",
        ),
        (
            SrtpSuite.AEAD_AES_128_GCM,
            inline(counting_bytes(28), "2^20", "7:1"),
            "AEAD_AES_128_GCM: MKI is not supported (got MKI 7 of 1 bytes); "
            "offer the key without '|MKI:length'",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            inline(counting_bytes(30), "1:x"),
            CM80 + "MKI '1:x' is not 'value:length' in decimal (RFC 4568 §6.1)",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            inline(counting_bytes(30), "1:0"),
            CM80 + "MKI length 0 is outside 1-128 bytes (RFC 4568 §6.1)",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            inline(counting_bytes(30), "1:129"),
            CM80 + "MKI length 129 is outside 1-128 bytes (RFC 4568 §6.1)",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            inline(counting_bytes(30), "256:1"),
            CM80 + "MKI value 256 does not fit in 1 bytes",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            inline(counting_bytes(30), "1:4", "2^20"),
            CM80 + "lifetime '2^20' must come before the MKI (RFC 4568 §6.1)",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            inline(counting_bytes(30), "1:4", "2:4"),
            CM80 + "two MKIs (1:4|2:4); at most one (RFC 4568 §6.1)",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            inline(counting_bytes(30), "2^20", "2^30"),
            CM80 + "'2^30' in the MKI position is not 'MKI:length' (RFC 4568 §6.1)",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            inline(counting_bytes(30), "2^20", "1:4", "2:4"),
            CM80 + "3 '|' fields after the key; at most lifetime and MKI",
        ),
        (
            SrtpSuite.AES_CM_128_HMAC_SHA1_80,
            inline(counting_bytes(30), "2^20", "1:4") + ";" + inline(counting_bytes(30), "2^20", "2:4"),
            CM80 + "several keys in one key-params are not supported "
            "(they need MKIs, and MKI is not supported)",
        ),
    ],
)
def test_key_params_refusals(suite: SrtpSuite, key_params: str, message: str) -> None:
    with pytest.raises(SrtpError) as caught:
        parse_key_params(suite, key_params)
    assert str(caught.value) == message
    assert caught.value.status_hint == 488


def test_refusal_never_echoes_key_material() -> None:
    for damaged in (f"inline:{KEY30}?", f"inline:{KEY30}A"):  # a real key with one stray character
        with pytest.raises(SrtpError) as caught:
            parse_key_params(SrtpSuite.AES_CM_128_HMAC_SHA1_80, damaged)
        assert KEY30[:8] not in str(caught.value)


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_generate_key_params(suite: SrtpSuite) -> None:
    generated = {generate_key_params(suite) for _ in range(8)}
    assert len(generated) == 8
    for key_params in generated:
        assert key_params.startswith("inline:")
        # base64 of key||salt: 40 characters for 30 and 28 bytes, 60 for 44 (RFC 4648 §4).
        assert len(key_params) == len("inline:") + 4 * -(-suite.master_length // 3)
        master = parse_key_params(suite, key_params)
        assert len(master.key) == suite.key_length and len(master.salt) == suite.salt_length
    assert generate_key_params(suite.value.lower()).startswith("inline:")


# --- sender -> receiver through libsrtp --------------------------------------------------------


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_round_trip_rtp_and_rtcp_across_sequence_wrap(suite: SrtpSuite) -> None:
    keys = SrtpKeys(suite.value, generate_key_params(suite))
    sender, receiver = SrtpSender(keys), SrtpReceiver(keys)
    # 65533 -> 2 crosses the 16-bit wrap: libsrtp must move to ROC 1 on both sides (RFC 3711 §3.3.1).
    for sequence in [65533, 65534, 65535, 0, 1, 2]:
        packet = rtp(sequence)
        protected = sender.protect(packet)
        assert len(protected) == len(packet) + suite.auth_tag_length
        assert protected[:12] == packet[:12]  # the header travels in the clear
        assert protected[12:172] != packet[12:]
        assert receiver.unprotect(protected) == packet
    report = rtcp()
    protected_rtcp = sender.protect_rtcp(report)
    assert len(protected_rtcp) == len(report) + 4 + suite.srtcp_auth_tag_length  # E|index + tag
    assert receiver.unprotect_rtcp(protected_rtcp) == report


def test_header_with_csrc_and_extension_round_trips() -> None:
    keys = keys_for(SrtpSuite.AES_CM_128_HMAC_SHA1_80)
    packet = rtp(7, csrcs=(0x01020304,), extension=(0xBEDE, b"\x10\xaa\x00\x00"))
    assert SrtpReceiver(keys).unprotect(SrtpSender(keys).protect(packet)) == packet


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_receiver_follows_an_ssrc_change(suite: SrtpSuite) -> None:
    """A leg's source may restart with a new SSRC and sequence (RFC 3550 §8.2); SSRC_ANY_INBOUND follows."""
    keys = keys_for(suite)
    first_source, second_source = SrtpSender(keys), SrtpSender(keys)
    receiver = SrtpReceiver(keys)
    for sequence in range(100, 105):
        assert receiver.unprotect(first_source.protect(rtp(sequence))) == rtp(sequence)
    for sequence in range(40000, 40005):  # new SSRC, unrelated sequence numbers
        packet = rtp(sequence, ssrc=0xCAFE0002)
        assert receiver.unprotect(second_source.protect(packet)) == packet
    # A straggler of the first SSRC still has its own context (own ROC and replay window).
    assert receiver.unprotect(first_source.protect(rtp(105))) == rtp(105)


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_tampered_packets_are_refused(suite: SrtpSuite) -> None:
    keys = keys_for(suite)
    sender, receiver = SrtpSender(keys), SrtpReceiver(keys)
    payload_flip = flip_bit(sender.protect(rtp(1)), 40)
    tag_flip = flip_bit(sender.protect(rtp(2)), -1)
    header_flip = flip_bit(sender.protect(rtp(3)), 5)  # the timestamp is authenticated too
    for forged in (payload_flip, tag_flip, header_flip):
        expected = rf"^authentication failed \(unprotect, {172 + suite.auth_tag_length} bytes;"
        with pytest.raises(SrtpError, match=expected):
            receiver.unprotect(forged)
    with pytest.raises(SrtpError, match=r"^authentication failed \(unprotect_rtcp"):
        receiver.unprotect_rtcp(flip_bit(sender.protect_rtcp(rtcp()), 12))
    # The genuine packets were never accepted, so they still pass: a forgery cannot burn an index.
    assert receiver.unprotect(sender.protect(rtp(4))) == rtp(4)


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_replayed_packets_are_refused(suite: SrtpSuite) -> None:
    keys = keys_for(suite)
    sender, receiver = SrtpSender(keys), SrtpReceiver(keys)
    first = sender.protect(rtp(1))
    receiver.unprotect(first)
    with pytest.raises(SrtpError, match=r"^replayed packet \(unprotect"):
        receiver.unprotect(first)
    report = sender.protect_rtcp(rtcp())
    receiver.unprotect_rtcp(report)
    with pytest.raises(SrtpError, match=r"^replayed packet \(unprotect_rtcp"):
        receiver.unprotect_rtcp(report)
    # Beyond the 128-packet replay window (RFC 3711 §3.3.2) an unseen old packet is refused too.
    old = sender.protect(rtp(2))
    for sequence in range(3, 200):
        receiver.unprotect(sender.protect(rtp(sequence)))
    with pytest.raises(SrtpError, match=r"^packet too old for the replay window"):
        receiver.unprotect(old)


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_wrong_key_is_refused(suite: SrtpSuite) -> None:
    sender = SrtpSender(SrtpKeys(suite.value, generate_key_params(suite)))
    receiver = SrtpReceiver(SrtpKeys(suite.value, generate_key_params(suite)))
    with pytest.raises(SrtpError, match=r"^authentication failed"):
        receiver.unprotect(sender.protect(rtp(1)))
    with pytest.raises(SrtpError, match=r"^authentication failed"):
        receiver.unprotect_rtcp(sender.protect_rtcp(rtcp()))


def test_malformed_and_oversized_packets_are_refused() -> None:
    keys = keys_for(SrtpSuite.AES_CM_128_HMAC_SHA1_80)
    sender, receiver = SrtpSender(keys), SrtpReceiver(keys)
    with pytest.raises(SrtpError, match=r"^malformed or truncated packet \(unprotect, 2 bytes"):
        receiver.unprotect(b"\x80\x08")
    with pytest.raises(SrtpError, match=r"^malformed or truncated packet \(unprotect_rtcp, 4 bytes"):
        receiver.unprotect_rtcp(b"\x80\xc8\x00\x01")
    with pytest.raises(SrtpError, match=r"^malformed or truncated packet \(protect, 1 bytes"):
        sender.protect(b"\x80")
    with pytest.raises(SrtpError, match=r"^packet too long \(protect, 1400 bytes"):
        sender.protect(rtp(1, payload=bytes(1388)))
    with pytest.raises(SrtpError, match=r"^packet too long \(unprotect, 1600 bytes"):
        receiver.unprotect(bytes(1600))


def test_sender_never_protects_a_sequence_number_twice() -> None:
    """RFC 3711 §9.1: a repeated index would reuse keystream; libsrtp refuses and so do we."""
    sender = SrtpSender(keys_for(SrtpSuite.AEAD_AES_128_GCM))
    sender.protect(rtp(10))
    with pytest.raises(SrtpError, match=r"^sequence number already protected"):
        sender.protect(rtp(10, payload=b"\x00" * 160))


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_in_place_calls_match_the_bytes_api(suite: SrtpSuite) -> None:
    """Two senders with one key produce the same bytes for the same packet (the keystream and
    the tag depend only on key, SSRC and index), whichever call protects it."""
    keys = keys_for(suite)
    by_bytes, in_place, receiver = SrtpSender(keys), SrtpSender(keys), SrtpReceiver(keys)
    buffer = bytearray(4096)
    address = buffer_address(buffer)
    for sequence in (65534, 65535, 0, 1):
        packet = rtp(sequence)
        buffer[: len(packet)] = packet
        buffer[len(packet) : len(packet) + 64] = b"\xee" * 64  # what lies after the packet
        length = in_place.protect_in_place(address, len(packet))
        assert bytes(buffer[:length]) == by_bytes.protect(packet)
        assert length == len(packet) + suite.auth_tag_length
        assert bytes(buffer[length : len(packet) + 64]) == b"\xee" * (len(packet) + 64 - length)
        assert receiver.unprotect_in_place(address, length) == len(packet)
        assert bytes(buffer[: len(packet)]) == packet


def test_in_place_refusals_say_what_happened() -> None:
    keys = keys_for(SrtpSuite.AES_CM_128_HMAC_SHA1_80)
    sender, receiver = SrtpSender(keys), SrtpReceiver(keys)
    buffer = bytearray(WORKING_BUFFER)
    address = buffer_address(buffer)
    protected = sender.protect(rtp(1))
    buffer[: len(protected)] = flip_bit(protected, 40)
    with pytest.raises(SrtpError, match=r"^authentication failed \(unprotect, 182 bytes;"):
        receiver.unprotect_in_place(address, len(protected))
    buffer[: len(protected)] = protected
    assert receiver.unprotect_in_place(address, len(protected)) == 172
    buffer[: len(protected)] = protected
    with pytest.raises(SrtpError, match=r"^replayed packet \(unprotect, 182 bytes;"):
        receiver.unprotect_in_place(address, len(protected))
    with pytest.raises(SrtpError, match=r"^malformed or truncated packet \(unprotect, 2 bytes"):
        receiver.unprotect_in_place(address, 2)
    # The limits of the bytes API hold here too: one MTU on either side of the call.
    with pytest.raises(SrtpError, match=rf"^packet too long \(protect, {MAX_RTP_TO_PROTECT + 1} bytes"):
        sender.protect_in_place(address, MAX_RTP_TO_PROTECT + 1)
    with pytest.raises(SrtpError, match=rf"^packet too long \(unprotect, {WORKING_BUFFER + 1} bytes"):
        receiver.unprotect_in_place(address, WORKING_BUFFER + 1)
    buffer[:172] = rtp(2)
    sender.protect_in_place(address, 172)
    buffer[:172] = rtp(2)
    with pytest.raises(SrtpError, match=r"^sequence number already protected"):
        sender.protect_in_place(address, 172)


def test_buffer_address_needs_room_for_a_whole_packet() -> None:
    with pytest.raises(ValueError, match="at least 1500 bytes"):
        buffer_address(bytearray(WORKING_BUFFER - 1))
    buffer = bytearray(WORKING_BUFFER)
    address = buffer_address(buffer)
    with pytest.raises(BufferError):
        buffer.append(0)  # pinned while libsrtp may write into it
    assert address is not None


def test_sessions_refuse_bad_keys_at_setup() -> None:
    with pytest.raises(SrtpError, match="must decode to 30 bytes"):
        SrtpSender(SrtpKeys("AES_CM_128_HMAC_SHA1_80", inline(counting_bytes(28))))
    with pytest.raises(SrtpError, match="unsupported SRTP crypto-suite 'NULL_HMAC_SHA1_80'"):
        SrtpReceiver(SrtpKeys("NULL_HMAC_SHA1_80", inline(counting_bytes(30))))
    assert repr(SrtpSender(keys_for(SrtpSuite.AEAD_AES_256_GCM))) == "SrtpSender(AEAD_AES_256_GCM)"


# --- an independent RFC 3711 / RFC 7714 implementation -----------------------------------------
#
# Written from the RFC text with `cryptography` primitives only, to check the bytes libsrtp puts
# on the wire (the SRS decrypts them with its own implementation, not ours).


class TagMismatchError(Exception):
    pass


def aes_cm_keystream(key: bytes, iv: bytes, length: int) -> bytes:
    """RFC 3711 §4.1.1: E(k, IV) || E(k, IV + 1) || ... truncated; CTR mode is exactly that."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(bytes(length)) + encryptor.finalize()


def kdf(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 §4.3.1 with key_derivation_rate 0, so r = index DIV kdr = 0.

    key_id = label || r (8 + 48 bits); x = key_id XOR master_salt, both aligned on their least
    significant bit in 112 bits; the PRF is AES-CM keyed with the master key and IV = x * 2^16
    (§4.3.3). RFC 7714 §11 reuses this KDF with a 96-bit salt without saying how it is aligned;
    deployed implementations (libsrtp, pion; cisco/libsrtp#179) append 16 zero bits, so do we.
    """
    salt = int.from_bytes(master_salt.ljust(14, b"\x00"), "big")
    x = salt ^ (label << 48)
    return aes_cm_keystream(master_key, (x << 16).to_bytes(16, "big"), length)


@dataclass(frozen=True)
class SessionKeys:
    cipher: bytes
    auth: bytes
    salt: bytes


def session_keys(suite: SrtpSuite, material: bytes, *, rtcp: bool) -> SessionKeys:
    """RFC 3711 §4.3.1-4.3.2 labels: 0x00/0x01/0x02 for SRTP, 0x03/0x04/0x05 for SRTCP."""
    master_key, master_salt = material[: suite.key_length], material[suite.key_length :]
    base = 3 if rtcp else 0
    return SessionKeys(
        cipher=kdf(master_key, master_salt, base, suite.key_length),
        auth=kdf(master_key, master_salt, base + 1, 20),  # HMAC-SHA1 key: 160 bits (§4.2.1)
        salt=kdf(master_key, master_salt, base + 2, suite.salt_length),
    )


def rtp_header_length(packet: bytes) -> int:
    """RFC 3550 §5.1/§5.3.1: fixed header, CSRC list, then the header extension if X is set."""
    length = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        (words,) = struct.unpack_from("!H", packet, length + 2)
        length += 4 + 4 * words
    return length


def hmac_sha1(key: bytes, data: bytes) -> bytes:
    mac = crypto_hmac.HMAC(key, hashes.SHA1())
    mac.update(data)
    return mac.finalize()


def aes_cm_iv(salt: bytes, ssrc: int, index: int) -> bytes:
    """RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)."""
    iv = (int.from_bytes(salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
    return iv.to_bytes(16, "big")


def decrypt_srtp_aes_cm(suite: SrtpSuite, material: bytes, packet: bytes, roc: int) -> bytes:
    """RFC 3711 §3.1: header || encrypted payload || tag; tag = HMAC(header || payload || ROC)."""
    keys = session_keys(suite, material, rtcp=False)
    tag_length = suite.auth_tag_length
    body, tag = packet[:-tag_length], packet[-tag_length:]
    # §4.2: the authenticated portion is the packet then the 32-bit ROC, truncated to the tag size.
    expected = hmac_sha1(keys.auth, body + roc.to_bytes(4, "big"))[:tag_length]
    if not hmac.compare_digest(expected, tag):
        raise TagMismatchError("SRTP tag")
    sequence, ssrc = struct.unpack_from("!H", body, 2)[0], struct.unpack_from("!I", body, 8)[0]
    index = (roc << 16) | sequence  # §3.3.1: i = 2^16 * ROC + SEQ
    header = rtp_header_length(body)
    stream = aes_cm_keystream(keys.cipher, aes_cm_iv(keys.salt, ssrc, index), len(body) - header)
    return body[:header] + bytes(a ^ b for a, b in zip(body[header:], stream, strict=True))


def decrypt_srtcp_aes_cm(suite: SrtpSuite, material: bytes, packet: bytes) -> tuple[bytes, int]:
    """RFC 3711 §3.4: header+SSRC (8) || encrypted || E|index (4) || tag (80 bits for both suites)."""
    keys = session_keys(suite, material, rtcp=True)
    body, tag = packet[:-10], packet[-10:]
    if not hmac.compare_digest(hmac_sha1(keys.auth, body)[:10], tag):
        raise TagMismatchError("SRTCP tag")
    (e_and_index,) = struct.unpack_from("!I", body, len(body) - 4)
    assert e_and_index >> 31 == 1, "E flag: the compound packet is encrypted"
    index = e_and_index & 0x7FFFFFFF
    (ssrc,) = struct.unpack_from("!I", body, 4)
    encrypted = body[8:-4]
    stream = aes_cm_keystream(keys.cipher, aes_cm_iv(keys.salt, ssrc, index), len(encrypted))
    return body[:8] + bytes(a ^ b for a, b in zip(encrypted, stream, strict=True)), index


def decrypt_srtp_gcm(suite: SrtpSuite, material: bytes, packet: bytes, roc: int) -> bytes:
    """RFC 7714 §8: header as AAD, payload || 16-byte tag as ciphertext, 12-byte IV from the salt."""
    keys = session_keys(suite, material, rtcp=False)
    sequence, ssrc = struct.unpack_from("!H", packet, 2)[0], struct.unpack_from("!I", packet, 8)[0]
    # §8.1: IV = (0x0000 || SSRC || ROC || SEQ) XOR salt, 12 octets.
    iv = bytes(a ^ b for a, b in zip(struct.pack("!HIIH", 0, ssrc, roc, sequence), keys.salt, strict=True))
    header = rtp_header_length(packet)
    try:
        plain = AESGCM(keys.cipher).decrypt(iv, packet[header:], packet[:header])  # §8.2: AAD = header
    except InvalidTag:
        raise TagMismatchError("SRTP GCM tag") from None
    return packet[:header] + plain


def decrypt_srtcp_gcm(suite: SrtpSuite, material: bytes, packet: bytes) -> tuple[bytes, int]:
    """RFC 7714 §9: header+SSRC (8) || ciphertext || tag (16) || E|index (4)."""
    keys = session_keys(suite, material, rtcp=True)
    (e_and_index,) = struct.unpack_from("!I", packet, len(packet) - 4)
    assert e_and_index >> 31 == 1, "E flag: the compound packet is encrypted"
    index = e_and_index & 0x7FFFFFFF
    (ssrc,) = struct.unpack_from("!I", packet, 4)
    # §9.1: IV = (0x0000 || SSRC || 0x0000 || 0 || SRTCP index) XOR salt.
    nonce = struct.pack("!HIHI", 0, ssrc, 0, index)
    iv = bytes(a ^ b for a, b in zip(nonce, keys.salt, strict=True))
    # §9.2: the AAD is the first 8 octets then the E flag and index.
    aad = packet[:8] + packet[-4:]
    try:
        plain = AESGCM(keys.cipher).decrypt(iv, packet[8:-4], aad)
    except InvalidTag:
        raise TagMismatchError("SRTCP GCM tag") from None
    return packet[:8] + plain, index


def reference_decrypt(suite: SrtpSuite, material: bytes, packet: bytes, roc: int) -> bytes:
    if suite in GCM_SUITES:
        return decrypt_srtp_gcm(suite, material, packet, roc)
    return decrypt_srtp_aes_cm(suite, material, packet, roc)


def reference_decrypt_rtcp(suite: SrtpSuite, material: bytes, packet: bytes) -> tuple[bytes, int]:
    if suite in GCM_SUITES:
        return decrypt_srtcp_gcm(suite, material, packet)
    return decrypt_srtcp_aes_cm(suite, material, packet)


# The reference is itself checked against the RFC's own vectors first.

RFC3711_MASTER_KEY = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139")
RFC3711_MASTER_SALT = bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")


def test_reference_kdf_matches_rfc3711_b3() -> None:
    """RFC 3711 Appendix B.3: session keys derived from the example master key and salt."""
    keys = session_keys(
        SrtpSuite.AES_CM_128_HMAC_SHA1_80, RFC3711_MASTER_KEY + RFC3711_MASTER_SALT, rtcp=False
    )
    assert keys.cipher == bytes.fromhex("C61E7A93744F39EE10734AFE3FF7A087")
    assert keys.salt == bytes.fromhex("30CBBC08863D8C85D49DB34A9AE1")
    assert keys.auth == bytes.fromhex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")


def test_reference_keystream_matches_rfc3711_b2() -> None:
    """RFC 3711 Appendix B.2: the AES-CM keystream for the example session key and IV."""
    stream = aes_cm_keystream(
        bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C"),
        bytes.fromhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"),
        32,
    )
    assert stream == bytes.fromhex("E03EAD0935C95E80E166B16DD92B4EB4D23513162B02D0F72A43A2FE4A5F97AB")


def test_sender_matches_the_libsrtp_known_answer_packet() -> None:
    """libsrtp's validation vector (test/srtp_driver.c): the B.3 master key, SSRC 0xCAFEBABE.

    The expected bytes are computed by neither of the two implementations under test here, so
    both ``SrtpSender`` and the reference decryptor are pinned to an outside answer.
    """
    material = RFC3711_MASTER_KEY + RFC3711_MASTER_SALT
    plain = bytes.fromhex("800f1234decafbadcafebabe" + "ab" * 16)
    expected = bytes.fromhex("800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb")
    sender = SrtpSender(SrtpKeys("AES_CM_128_HMAC_SHA1_80", inline(material)))
    assert sender.protect(plain) == expected
    assert decrypt_srtp_aes_cm(SrtpSuite.AES_CM_128_HMAC_SHA1_80, material, expected, roc=0) == plain


# Then what SrtpSender puts on the wire is decrypted with it.


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_reference_decrypts_what_the_sender_protects(suite: SrtpSuite) -> None:
    material = base64.b64decode(generate_key_params(suite).removeprefix("inline:"))
    sender = SrtpSender(SrtpKeys(suite.value, inline(material)))
    # Across the sequence wrap, with the ROC the reference expects: a wrong ROC in libsrtp's
    # index would change the keystream and the tag (RFC 3711 §3.3.1), so this checks it too.
    history = [(65534, 0), (65535, 0), (0, 1), (1, 1)]
    for sequence, roc in history:
        packet = rtp(sequence, payload=bytes(range(160)))
        protected = sender.protect(packet)
        assert reference_decrypt(suite, material, protected, roc) == packet
        with pytest.raises(TagMismatchError):
            reference_decrypt(suite, material, flip_bit(protected, 50), roc)
        with pytest.raises(TagMismatchError):
            reference_decrypt(suite, material, flip_bit(protected, -1), roc)
        with pytest.raises(TagMismatchError):
            reference_decrypt(suite, material, protected, roc + 1)
    extended = rtp(2, csrcs=(0x0A0B0C0D,), extension=(0xBEDE, b"\x22\x01\x02\x03"))
    assert reference_decrypt(suite, material, sender.protect(extended), roc=1) == extended


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_reference_decrypts_what_the_sender_protects_rtcp(suite: SrtpSuite) -> None:
    material = base64.b64decode(generate_key_params(suite).removeprefix("inline:"))
    sender = SrtpSender(SrtpKeys(suite.value, inline(material)))
    indexes = []
    for report in (rtcp(), bytes(ReceiverReport(SSRC, (ReportBlock(0xABCD, 3, 7, 70000, 12, 0, 0),)))):
        protected = sender.protect_rtcp(report)
        plain, index = reference_decrypt_rtcp(suite, material, protected)
        assert plain == report
        indexes.append(index)
        with pytest.raises(TagMismatchError):
            reference_decrypt_rtcp(suite, material, flip_bit(protected, 10))
    # RFC 3711 §3.4: the SRTCP index counts the sender's SRTCP packets.
    assert indexes[1] == indexes[0] + 1
