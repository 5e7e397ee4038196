"""SRTP/SRTCP for the fork pipelines (RFC 3711, RFC 7714) with SDES keys (RFC 4568), on libsrtp.

What is here and why:

* :class:`SrtpSuite` names the crypto-suites we offer and accept, with their key, salt and tag
  sizes; :func:`parse_key_params` checks the key-params of an ``a=crypto`` line down to the byte
  and says precisely what is wrong, so the recording layer can refuse an SDP answer with a reason
  instead of failing later on the first packet; :func:`generate_key_params` makes our own keys.
* :class:`SrtpSender` protects what a fork sends toward the SRS; :class:`SrtpReceiver`
  unprotects a leg that arrives as SRTP, or the SRS's SRTCP. Each owns one libsrtp session.

The cryptography itself is libsrtp's (through ``pylibsrtp``): it is the implementation every SBC
and SRS we talk to interoperates with, and it is C, so a 172-byte packet costs about a
microsecond. This module only prepares the session once and maps libsrtp's status codes to
:class:`SrtpError` messages that say what happened.

Hot path: ``protect``/``unprotect`` are one Python call around the bound pylibsrtp method; all
parsing, policy building and name lookups happen in ``__init__``. The ``try`` around the call is
free in CPython 3.11+ until an exception is raised, and messages are only built on failure.
pylibsrtp wants ``bytes`` (not ``bytearray``/``memoryview``) and returns new ``bytes``.

Rollover counter (RFC 3711 §3.3.1): SRTP's packet index is ROC * 2^16 + SEQ, and the ROC is never
sent. libsrtp keeps it per SSRC and estimates the index of each packet from its sequence number
(RFC 3711 §3.3.1 and Appendix A), so wrap-around from 65535 to 0 is handled as long as sequence
numbers stay continuous: a jump of 2^15 or more is read as a step backwards and the receiver
computes the wrong index, so authentication fails. Our forks renumber sequence numbers
continuously, whatever the leg's source does, so the SRS never sees such a jump.

SSRC changes: a sender session is made with ``SSRC_ANY_OUTBOUND`` and a receiver session with
``SSRC_ANY_INBOUND``: libsrtp then clones a per-SSRC stream context (own ROC, own replay window)
for each new SSRC from the same master key. Our forks always send with their own stable SSRC, so
a sender sees one SSRC; a leg's source may change SSRC mid-call (a transfer, a media server
restart) and the receiver follows it. libsrtp clones a context only after the first packet of
the new SSRC has authenticated, so nobody without the key can make it grow.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import pylibsrtp

from siprec_src.errors import RemoteProtocolError
from siprec_src.media.spec import SrtpKeys


class SrtpError(RemoteProtocolError):
    """Bad SDES keying or a packet libsrtp refused; the reason says precisely what and why.

    The status hint is 488 (RFC 3261 §21.4.26 Not Acceptable Here): a UAS refusing an offer's
    crypto answers with it. For a refused packet the hint is irrelevant: the packet is dropped.
    """

    def __init__(self, reason: str, status_hint: int = 488) -> None:
        super().__init__(reason, status_hint)


class SrtpSuite(StrEnum):
    """The SDES crypto-suites we support (RFC 4568 §6.2, RFC 7714 §12), in our order of preference."""

    AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
    AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"
    AEAD_AES_128_GCM = "AEAD_AES_128_GCM"
    AEAD_AES_256_GCM = "AEAD_AES_256_GCM"

    @property
    def key_length(self) -> int:
        """Master key length in bytes."""
        return _SUITES[self].key_length

    @property
    def salt_length(self) -> int:
        """Master salt length in bytes: 14 for AES-CM (RFC 3711 §8.2), 12 for GCM (RFC 7714 §12)."""
        return _SUITES[self].salt_length

    @property
    def master_length(self) -> int:
        """Length of the decoded ``inline:`` key-salt, key || salt (RFC 4568 §6.1)."""
        return _SUITES[self].key_length + _SUITES[self].salt_length

    @property
    def auth_tag_length(self) -> int:
        """Bytes the authentication tag adds to each SRTP packet."""
        return _SUITES[self].rtp_tag_length

    @property
    def srtcp_auth_tag_length(self) -> int:
        """Bytes of the SRTCP tag; the E flag and SRTCP index add 4 more (RFC 3711 §3.4)."""
        return _SUITES[self].rtcp_tag_length

    @property
    def max_lifetime(self) -> int:
        """Most SRTP packets one master key may protect (RFC 4568 §6.2.1, RFC 7714 §12)."""
        return 1 << MAX_LIFETIME_EXPONENT


@dataclass(frozen=True, slots=True)
class _SuiteParams:
    key_length: int
    salt_length: int
    rtp_tag_length: int
    rtcp_tag_length: int
    profile: int  # the libsrtp profile that implements the suite


# RFC 3711 §9.2 limits SRTP to 2^48 packets per master key and RFC 4568 §6.2.1 makes that the
# largest lifetime a key may announce; SRTCP's own 2^31 limit is enforced by libsrtp itself.
MAX_LIFETIME_EXPONENT: Final = 48

_SUITES: Final[dict[SrtpSuite, _SuiteParams]] = {
    SrtpSuite.AES_CM_128_HMAC_SHA1_80: _SuiteParams(
        16, 14, 10, 10, pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    ),
    # RFC 4568 §6.2.2: the 32-bit tag is for SRTP only; SRTCP keeps the 80-bit tag.
    SrtpSuite.AES_CM_128_HMAC_SHA1_32: _SuiteParams(
        16, 14, 4, 10, pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32
    ),
    # RFC 7714 §12: 16-octet tag for both SRTP and SRTCP, 96-bit salt.
    SrtpSuite.AEAD_AES_128_GCM: _SuiteParams(16, 12, 16, 16, pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM),
    SrtpSuite.AEAD_AES_256_GCM: _SuiteParams(32, 12, 16, 16, pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM),
}

_SUPPORTED: Final = ", ".join(SrtpSuite)

# RFC 5234 §2.3: ABNF literals are case-insensitive, and RFC 4568 §9.2 writes suite names and
# "inline" as literals, so "aes_cm_128_hmac_sha1_80" and "INLINE:" are valid spellings.
_BY_UPPER_NAME: Final = {suite.value.upper(): suite for suite in SrtpSuite}


def suite_of(name: str) -> SrtpSuite:
    """The suite an ``a=crypto`` line names; SrtpError naming the supported suites otherwise."""
    suite = _BY_UPPER_NAME.get(name.strip().upper())
    if suite is None:
        raise SrtpError(f"unsupported SRTP crypto-suite {name!r}; supported: {_SUPPORTED}")
    return suite


def generate_key_params(suite: SrtpSuite | str) -> str:
    """Fresh key-params ``inline:<base64 key||salt>`` for an offer (RFC 4568 §6.1).

    The key and salt come from :mod:`secrets` (the OS CSPRNG): SRTP is only as strong as a
    master key nobody can guess (RFC 4086). No lifetime (the suite maximum applies) and no MKI.
    """
    suite = suite_of(suite)
    material = secrets.token_bytes(suite.master_length)
    return "inline:" + base64.b64encode(material).decode("ascii")


@dataclass(frozen=True, slots=True)
class MasterKey:
    """One SDES master key as parsed from key-params (RFC 4568 §6.1).

    ``lifetime`` is the announced number of packets (None: the suite maximum). ``mki`` is
    ``(value, length in bytes)``; :func:`parse_key_params` refuses an MKI today because libsrtp
    through pylibsrtp cannot add one to packets, so it is always None. Key and salt are kept out
    of ``repr`` so a log line never carries key material.
    """

    suite: SrtpSuite
    key: bytes = field(repr=False)
    salt: bytes = field(repr=False)
    lifetime: int | None = None
    mki: tuple[int, int] | None = None


_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_BASE64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_LIFETIME = re.compile(r"(2\^)?([0-9]+)")
# An MKI of at most 128 bytes has at most 309 decimal digits: bounding them keeps int() cheap.
_MKI = re.compile(r"([0-9]{1,309}):([0-9]{1,3})")


def parse_key_params(suite: SrtpSuite | str, key_params: str) -> MasterKey:
    """Parse ``inline:<key||salt>[|lifetime][|MKI:length]`` for ``suite`` (RFC 4568 §6.1).

    Refuses, with an SrtpError saying which part is wrong: another key method than ``inline``,
    several keys (``;``-separated), text that is not base64, a key-salt of the wrong length for
    the suite, a malformed, zero or too large lifetime, a malformed MKI, and any MKI at all.
    """
    suite = suite_of(suite)
    text = key_params.strip()
    if ";" in text:
        # RFC 4568 §6.1: several key-params are only meaningful with MKIs to pick between them.
        raise SrtpError(
            f"{suite}: several keys in one key-params are not supported "
            "(they need MKIs, and MKI is not supported)"
        )
    method, colon, key_info = text.partition(":")
    if not colon or method.lower() != "inline":
        raise SrtpError(
            f"{suite}: key method {method!r} is not supported; expected 'inline:' (RFC 4568 §6.1)"
        )
    key_salt_text, *options = key_info.split("|")
    key_salt = _decode_key_salt(suite, key_salt_text)
    lifetime, mki = _parse_options(suite, options)
    if mki is not None:
        raise SrtpError(
            f"{suite}: MKI is not supported (got MKI {mki[0]} of {mki[1]} bytes); "
            "offer the key without '|MKI:length'"
        )
    return MasterKey(
        suite=suite,
        key=key_salt[: suite.key_length],
        salt=key_salt[suite.key_length :],
        lifetime=lifetime,
        mki=mki,
    )


def _decode_key_salt(suite: SrtpSuite, text: str) -> bytes:
    # The messages never echo the text: it may be a real key with one stray character.
    if not text:
        raise SrtpError(f"{suite}: the inline key is empty")
    if not _BASE64.fullmatch(text):
        position = next(i for i, char in enumerate(text) if char not in _BASE64_ALPHABET)
        raise SrtpError(
            f"{suite}: the inline key is not base64: {text[position]!r} at position {position} "
            "(RFC 4568 §6.1)"
        )
    try:
        # Tolerate missing '=' padding: some implementations strip it from the 28- and 44-byte
        # GCM key-salts, and the length check below catches any real truncation.
        key_salt = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        data_chars = len(text.rstrip("="))
        raise SrtpError(
            f"{suite}: the inline key is not valid base64 ({data_chars} characters and "
            f"{len(text) - data_chars} '=' do not make whole bytes)"
        ) from None
    if len(key_salt) != suite.master_length:
        raise SrtpError(
            f"{suite}: the inline key must decode to {suite.master_length} bytes "
            f"({suite.key_length}-byte key + {suite.salt_length}-byte salt), got {len(key_salt)} bytes"
        )
    return key_salt


def _parse_options(suite: SrtpSuite, options: list[str]) -> tuple[int | None, tuple[int, int] | None]:
    """The optional ``|lifetime`` and ``|MKI:length`` fields, in that order (RFC 4568 §6.1)."""
    if len(options) > 2:
        raise SrtpError(f"{suite}: {len(options)} '|' fields after the key; at most lifetime and MKI")
    lifetime: int | None = None
    mki: tuple[int, int] | None = None
    for position, option in enumerate(options):
        if ":" in option:  # only an MKI has a colon
            if mki is not None:
                raise SrtpError(f"{suite}: two MKIs ({'|'.join(options)}); at most one (RFC 4568 §6.1)")
            mki = _parse_mki(suite, option)
        elif mki is not None:
            raise SrtpError(f"{suite}: lifetime {option!r} must come before the MKI (RFC 4568 §6.1)")
        elif position == 1:
            raise SrtpError(f"{suite}: {option!r} in the MKI position is not 'MKI:length' (RFC 4568 §6.1)")
        else:
            lifetime = _parse_lifetime(suite, option)
    return lifetime, mki


def _parse_lifetime(suite: SrtpSuite, text: str) -> int:
    match = _LIFETIME.fullmatch(text)
    if match is None:
        raise SrtpError(f"{suite}: lifetime {text!r} is neither a decimal number nor '2^n' (RFC 4568 §6.1)")
    power, digits = match.groups()
    significant = digits.lstrip("0") or "0"
    # Compare lengths before converting, so a hostile "2^99999999" or a 5000-digit number costs
    # nothing: 2^48 has 15 decimal digits and an exponent of 2.
    too_large = len(significant) > (2 if power else 15) or int(significant) > (
        MAX_LIFETIME_EXPONENT if power else suite.max_lifetime
    )
    if too_large:
        shown = text if len(text) <= 24 else text[:24] + "..."
        raise SrtpError(
            f"{suite}: lifetime {shown} exceeds the maximum of 2^{MAX_LIFETIME_EXPONENT} packets "
            "(RFC 4568 §6.2.1)"
        )
    lifetime = 1 << int(significant) if power else int(significant)
    if lifetime == 0:
        raise SrtpError(f"{suite}: lifetime 0 allows no packet at all")
    return lifetime


def _parse_mki(suite: SrtpSuite, text: str) -> tuple[int, int]:
    match = _MKI.fullmatch(text)
    if match is None:
        raise SrtpError(f"{suite}: MKI {text!r} is not 'value:length' in decimal (RFC 4568 §6.1)")
    value, length = int(match.group(1)), int(match.group(2))
    # RFC 4568 §6.1: the MKI length is 1 to 128 bytes, and the value must fit in it.
    if not 1 <= length <= 128:
        raise SrtpError(f"{suite}: MKI length {length} is outside 1-128 bytes (RFC 4568 §6.1)")
    if value >= 1 << (8 * length):
        raise SrtpError(f"{suite}: MKI value {value} does not fit in {length} bytes")
    return value, length


# --- sessions -------------------------------------------------------------------------------

# libsrtp status text (pylibsrtp.ERRORS) -> what it means for the packet at hand.
_REASONS: Final = {
    "authentication failure": "authentication failed",
    "replay check failed (bad index)": "replayed packet",
    "replay check failed (index too old)": "packet too old for the replay window",
    "can't use key any more": "master key exhausted (2^48 SRTP or 2^31 SRTCP packets); rekey",
    "unsupported parameter": "malformed or truncated packet",
    "error parsing data": "malformed or truncated packet",
    "cipher failure": "malformed or truncated packet",
    "unable to perform desired validation": "malformed or truncated packet",
}


def _packet_error(action: str, packet: bytes, exc: Exception) -> SrtpError:
    """Build the SrtpError for a refused packet; called only on the failure path."""
    detail = str(exc)
    if isinstance(exc, ValueError):  # pylibsrtp's fixed 1500-byte working buffer
        reason = "packet too long"
    elif action == "protect" and detail.startswith("replay check failed"):
        # RFC 3711 §9.1: reusing an index would reuse keystream (and a GCM nonce), so libsrtp
        # refuses to protect a sequence number twice; the fork's renumbering must never do it.
        reason = "sequence number already protected (an SRTP index is never reused)"
    else:
        reason = _REASONS.get(detail, "refused by libsrtp")
    return SrtpError(f"{reason} ({action}, {len(packet)} bytes; libsrtp: {detail})")


def _session(keys: SrtpKeys, ssrc_type: int) -> pylibsrtp.Session:
    master = parse_key_params(keys.suite, keys.key_params)
    policy = pylibsrtp.Policy(
        key=master.key + master.salt,
        ssrc_type=ssrc_type,
        srtp_profile=_SUITES[master.suite].profile,
    )
    # allow_repeat_tx stays False (RFC 3711 §9.1, see _packet_error). window_size stays 0, which
    # libsrtp reads as its default of 128 packets (RFC 3711 §3.3.2 asks for at least 64): 2.5 s of
    # 20 ms audio, far more reordering than a recording leg ever shows.
    return pylibsrtp.Session(policy)


class SrtpSender:
    """Protects one stream we send toward the SRS: SRTP for media, SRTCP for our reports.

    One sender per key for the key's whole life: libsrtp's per-SSRC state (ROC, SRTCP index) is
    what keeps every packet index unique, and a second sender built from the same key for the
    same SSRC would start again at index 0 and reuse keystream (RFC 3711 §9.1; for GCM a reused
    nonce also gives the authentication key away). A new SDP offer (failover to another SRS, a
    restarted recording) takes a fresh key from :func:`generate_key_params`.
    """

    __slots__ = ("_protect", "_protect_rtcp", "suite")

    def __init__(self, keys: SrtpKeys) -> None:
        session = _session(keys, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        self.suite = suite_of(keys.suite)
        # Bound once: the hot path costs one attribute load and the C call.
        self._protect = session.protect
        self._protect_rtcp = session.protect_rtcp

    def protect(self, packet: bytes) -> bytes:
        """The SRTP packet for an RTP packet (``bytes``; at most 1356 bytes in)."""
        try:
            return self._protect(packet)
        except (pylibsrtp.Error, ValueError) as exc:
            raise _packet_error("protect", packet, exc) from None

    def protect_rtcp(self, packet: bytes) -> bytes:
        """The SRTCP packet for a (compound) RTCP packet, encrypted, with E flag and index."""
        try:
            return self._protect_rtcp(packet)
        except (pylibsrtp.Error, ValueError) as exc:
            raise _packet_error("protect_rtcp", packet, exc) from None

    def __repr__(self) -> str:
        return f"SrtpSender({self.suite})"


class SrtpReceiver:
    """Unprotects one incoming stream: a leg that arrives as SRTP, or the SRS's SRTCP.

    Returns only packets that authenticated and passed the replay check; everything else raises
    SrtpError and must be dropped (and counted) by the caller.
    """

    __slots__ = ("_unprotect", "_unprotect_rtcp", "suite")

    def __init__(self, keys: SrtpKeys) -> None:
        session = _session(keys, pylibsrtp.Policy.SSRC_ANY_INBOUND)
        self.suite = suite_of(keys.suite)
        self._unprotect = session.unprotect
        self._unprotect_rtcp = session.unprotect_rtcp

    def unprotect(self, packet: bytes) -> bytes:
        """The RTP packet inside an SRTP packet; SrtpError if it is forged, replayed or malformed."""
        try:
            return self._unprotect(packet)
        except (pylibsrtp.Error, ValueError) as exc:
            raise _packet_error("unprotect", packet, exc) from None

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        """The RTCP packet inside an SRTCP packet; SrtpError if it is forged, replayed or malformed."""
        try:
            return self._unprotect_rtcp(packet)
        except (pylibsrtp.Error, ValueError) as exc:
            raise _packet_error("unprotect_rtcp", packet, exc) from None

    def __repr__(self) -> str:
        return f"SrtpReceiver({self.suite})"
