"""SRTP/SRTCP for the fork pipelines (RFC 3711, RFC 7714) with SDES keys (RFC 4568), on libsrtp.

What is here and why:

* :class:`SrtpSuite` names the crypto-suites we offer and accept, with their key, salt and tag
  sizes; :func:`parse_key_params` checks the key-params of an ``a=crypto`` line down to the byte
  and says precisely what is wrong, so the recording layer can refuse an SDP answer with a reason
  instead of failing later on the first packet; :func:`generate_key_params` makes our own keys.
* :class:`SrtpSender` protects what a fork sends toward the SRS; :class:`SrtpReceiver`
  unprotects a leg that arrives as SRTP, or the SRS's SRTCP. Each owns one libsrtp session.

The cryptography itself is libsrtp's: it is the implementation every SBC and SRS we talk to
interoperates with, and it is C, so a 172-byte packet costs about a microsecond. We call libsrtp 2
through the compiled cffi binding that ``pylibsrtp`` ships (``pylibsrtp._binding``; importing
``pylibsrtp`` runs ``srtp_init``), not through ``pylibsrtp.Session``, so that the packet path can
protect and unprotect the packet where it lies in the worker's buffer (``protect_in_place``,
``unprotect_in_place``): no copy, no allocation, no per-session buffer (see :class:`_Session`).
The ``bytes`` API (``protect``, ``unprotect``, RTCP) serves the control path, the reference SRS
and the tests with pylibsrtp's former behaviour and limits. This module prepares each session
once and maps libsrtp's status codes to :class:`SrtpError` messages that say what happened; the
``try`` around a call is free in CPython 3.11+ until an exception is raised, and messages are only
built on failure.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import pylibsrtp  # first: its import initialises libsrtp (srtp_init)
from pylibsrtp._binding import ffi, lib  # type: ignore[import-not-found]

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

# Refuse to run on a binding that is not libsrtp 2's in-place API: libsrtp 3 changed these
# signatures (separate input and output buffers), and calling it with ours would corrupt memory.
_PROCESS_SIGNATURE: Final = (ffi.typeof("srtp_t"), ffi.typeof("void *"), ffi.typeof("int *"))
for _function in (lib.srtp_protect, lib.srtp_unprotect, lib.srtp_protect_rtcp, lib.srtp_unprotect_rtcp):
    if tuple(ffi.typeof(_function).args) != _PROCESS_SIGNATURE:
        raise ImportError(
            f"pylibsrtp {pylibsrtp.__version__}: {ffi.typeof(_function)} is not libsrtp 2's "
            "(srtp_t, void *, int *) in-place call that siprec_src.media.srtp makes"
        )

# libsrtp 2's srtp_err_status_t in enum order (srtp.h): the text of each status code.
_STATUS: Final = (
    "nothing to report",
    "unspecified failure",
    "unsupported parameter",
    "couldn't allocate memory",
    "couldn't deallocate properly",
    "couldn't initialize",
    "can't process as much data as requested",
    "authentication failure",
    "cipher failure",
    "replay check failed (bad index)",
    "replay check failed (index too old)",
    "algorithm failed test routine",
    "unsupported operation",
    "no appropriate context found",
    "unable to perform desired validation",
    "can't use key any more",
    "error in use of socket",
    "error in use POSIX signals",
    "nonce check failed",
    "couldn't read data",
    "couldn't write data",
    "error parsing data",
    "error encoding data",
    "error while using semaphores",
    "error while using pfkey",
    "error MKI present in packet is invalid",
    "packet index is too old to consider",
    "packet index advanced, reset needed",
)

# libsrtp status text -> what it means for the packet at hand.
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

# Packet sizes. libsrtp protects in place and appends up to SRTP_MAX_TAG_LEN + SRTP_MAX_MKI_LEN
# bytes to an RTP packet (4 more, the E flag and index, to RTCP), so the buffer must have that
# room after the packet. A packet is at most WORKING_BUFFER bytes on either side of the call:
# one Ethernet MTU, the limit pylibsrtp's own working buffer set before we called libsrtp
# directly, kept so that a recording stream behaves as it always did (a longer packet is an
# SRTP failure, counted and dropped).
WORKING_BUFFER: Final = 1500
_RTP_TRAILER: Final = 16 + 128
_RTCP_TRAILER: Final = 4 + 16 + 128
MAX_RTP_TO_PROTECT: Final = WORKING_BUFFER - _RTP_TRAILER
MAX_RTCP_TO_PROTECT: Final = WORKING_BUFFER - _RTCP_TRAILER

# srtp_protect(ctx, packet address, in/out length) and its three siblings.
_Process = Callable[[object, object, object], int]
_srtp_protect = lib.srtp_protect
_srtp_unprotect = lib.srtp_unprotect


def _refused(action: str, length: int, status: int) -> SrtpError:
    """The SrtpError for a packet libsrtp refused; built only on the failure path."""
    detail = _STATUS[status] if 0 <= status < len(_STATUS) else f"status {status}"
    if action == "protect" and detail.startswith("replay check failed"):
        # RFC 3711 §9.1: reusing an index would reuse keystream (and a GCM nonce), so libsrtp
        # refuses to protect a sequence number twice; the fork's renumbering must never do it.
        reason = "sequence number already protected (an SRTP index is never reused)"
    else:
        reason = _REASONS.get(detail, "refused by libsrtp")
    return SrtpError(f"{reason} ({action}, {length} bytes; libsrtp: {detail})")


def _too_long(action: str, length: int, limit: int) -> SrtpError:
    return SrtpError(f"packet too long ({action}, {length} bytes; at most {limit})")


def buffer_address(buffer: bytearray) -> object:
    """The C address of ``buffer`` for the ``*_in_place`` methods (take it once per buffer).

    While the address lives, the bytearray cannot be resized (a buffer export pins it), so the
    address can never dangle.
    """
    if len(buffer) < WORKING_BUFFER:
        raise ValueError(f"an SRTP packet buffer needs at least {WORKING_BUFFER} bytes")
    address: object = ffi.from_buffer(buffer, require_writable=True)
    return address


class _Session:
    """One libsrtp session (``srtp_t``), called through pylibsrtp's compiled cffi binding.

    Why not ``pylibsrtp.Session``: each of its calls copies the packet into a 1500-byte buffer of
    its own (one per session: with thousands of streams, a cache miss per packet), allocates a
    length cell and returns new ``bytes``; measured with 1200 sessions, 4.6 µs per protect
    against 1.8 µs for libsrtp on the packet in place (benchmarks/bench_media.py). Here the
    packet path processes the caller's buffer in place, and the bytes API (control path, tests,
    the reference SRS) keeps pylibsrtp's behaviour and limits.
    """

    __slots__ = ("ctx", "owner", "size", "work")

    def __init__(self, keys: SrtpKeys, ssrc_type: int) -> None:
        master = parse_key_params(keys.suite, keys.key_params)
        profile = _SUITES[master.suite].profile
        policy = ffi.new("srtp_policy_t *")
        _require(lib.srtp_crypto_policy_set_from_profile_for_rtp(ffi.addressof(policy.rtp), profile))
        _require(lib.srtp_crypto_policy_set_from_profile_for_rtcp(ffi.addressof(policy.rtcp), profile))
        material = master.key + master.salt
        key = ffi.new("unsigned char[]", material)
        policy.key = key
        policy.ssrc.type = ssrc_type
        # allow_repeat_tx stays 0 (RFC 3711 §9.1, see _refused). window_size stays 0, which
        # libsrtp reads as its default of 128 packets (RFC 3711 §3.3.2 asks for at least 64):
        # 2.5 s of 20 ms audio, far more reordering than a recording leg ever shows.
        session = ffi.new("srtp_t *")
        status = lib.srtp_create(session, policy)
        ffi.memmove(key, bytes(len(material)), len(material))  # libsrtp keeps derived keys only
        if status:
            raise SrtpError(f"libsrtp cannot create a session: {_STATUS[status]}")
        self.owner = ffi.gc(session, _deallocate)
        self.ctx = session[0]
        self.size = ffi.new("int *")
        self.work: object = None  # the bytes API's 1500-byte buffer, made on first use

    def process_bytes(self, function: _Process, action: str, packet: bytes, limit: int) -> bytes:
        """``packet`` through libsrtp in a copy (the bytes API); SrtpError if refused."""
        length = len(packet)
        if length > limit:
            raise _too_long(action, length, limit)
        work = self.work
        if work is None:
            work = self.work = ffi.new("char[]", WORKING_BUFFER)
        ffi.memmove(work, packet, length)
        size = self.size
        size[0] = length
        status = function(self.ctx, work, size)
        if status:
            raise _refused(action, length, status)
        out: bytes = ffi.buffer(work, size[0])[:]
        return out


def _require(status: int) -> None:
    if status:
        raise SrtpError(f"libsrtp refused the crypto policy: {_STATUS[status]}")


def _deallocate(session: Any) -> None:
    lib.srtp_dealloc(session[0])


class SrtpSender:
    """Protects one stream we send toward the SRS: SRTP for media, SRTCP for our reports.

    One sender per key for the key's whole life: libsrtp's per-SSRC state (ROC, SRTCP index) is
    what keeps every packet index unique, and a second sender built from the same key for the
    same SSRC would start again at index 0 and reuse keystream (RFC 3711 §9.1; for GCM a reused
    nonce also gives the authentication key away). A new SDP offer (failover to another SRS, a
    restarted recording) takes a fresh key from :func:`generate_key_params`.
    """

    __slots__ = ("_ctx", "_session", "_size", "suite")

    def __init__(self, keys: SrtpKeys) -> None:
        self._session = _Session(keys, lib.ssrc_any_outbound)
        self.suite = suite_of(keys.suite)
        # The packet path reads these two per packet: slots, not a walk through _session.
        self._ctx = self._session.ctx
        self._size = self._session.size

    def protect(self, packet: bytes) -> bytes:
        """The SRTP packet for an RTP packet (``bytes``; at most 1356 bytes in)."""
        return self._session.process_bytes(lib.srtp_protect, "protect", packet, MAX_RTP_TO_PROTECT)

    def protect_in_place(self, address: object, length: int) -> int:
        """Protect the RTP packet of ``length`` bytes at ``address`` (from :func:`buffer_address`)
        in place; return the SRTP packet's length. The buffer must have room for the tag after
        the packet (it has: it holds WORKING_BUFFER bytes and the packet at most 1356)."""
        if length > MAX_RTP_TO_PROTECT:
            raise _too_long("protect", length, MAX_RTP_TO_PROTECT)
        size = self._size
        size[0] = length
        status = _srtp_protect(self._ctx, address, size)
        if status:
            raise _refused("protect", length, status)
        protected: int = size[0]
        return protected

    def protect_rtcp(self, packet: bytes) -> bytes:
        """The SRTCP packet for a (compound) RTCP packet, encrypted, with E flag and index."""
        return self._session.process_bytes(lib.srtp_protect_rtcp, "protect_rtcp", packet, MAX_RTCP_TO_PROTECT)

    def __repr__(self) -> str:
        return f"SrtpSender({self.suite})"


class SrtpReceiver:
    """Unprotects one incoming stream: a leg that arrives as SRTP, or the SRS's SRTCP.

    Returns only packets that authenticated and passed the replay check; everything else raises
    SrtpError and must be dropped (and counted) by the caller.
    """

    __slots__ = ("_ctx", "_session", "_size", "suite")

    def __init__(self, keys: SrtpKeys) -> None:
        self._session = _Session(keys, lib.ssrc_any_inbound)
        self.suite = suite_of(keys.suite)
        self._ctx = self._session.ctx
        self._size = self._session.size

    def unprotect(self, packet: bytes) -> bytes:
        """The RTP packet inside an SRTP packet; SrtpError if it is forged, replayed or malformed."""
        return self._session.process_bytes(lib.srtp_unprotect, "unprotect", packet, WORKING_BUFFER)

    def unprotect_in_place(self, address: object, length: int) -> int:
        """Unprotect the SRTP packet of ``length`` bytes at ``address`` in place; return the RTP
        packet's length (it starts at the same address). SrtpError if it is forged, replayed or
        malformed; the buffer's bytes are then undefined."""
        if length > WORKING_BUFFER:
            raise _too_long("unprotect", length, WORKING_BUFFER)
        size = self._size
        size[0] = length
        status = _srtp_unprotect(self._ctx, address, size)
        if status:
            raise _refused("unprotect", length, status)
        plain: int = size[0]
        return plain

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        """The RTCP packet inside an SRTCP packet; SrtpError if it is forged, replayed or malformed."""
        return self._session.process_bytes(lib.srtp_unprotect_rtcp, "unprotect_rtcp", packet, WORKING_BUFFER)

    def __repr__(self) -> str:
        return f"SrtpReceiver({self.suite})"
