"""Fuzz every parser that reads untrusted bytes (issue 9, part 1): the targets and the long run.

    python -m tests.robustness.run --seconds-per-target 60     # make robustness
    python -m tests.robustness.run --targets sdp,metadata --seconds-per-target 10
    python -m tests.robustness.run --list

One ``Target`` per entry point a peer can reach: its ``run(data)`` feeds the bytes to the parser
and checks what must hold. ``run`` returns normally when the parser accepted the input or
refused it with one of its documented error types; anything else escapes: an undocumented
exception, or a ``Finding`` (an ``AssertionError``) when a property is broken (a round trip that
does not parse again, a counter that does not add up, a buffer past its bound).

The same targets serve three drivers, so a bug found by one is replayed by the others:

- the short suite in ``make test`` (``test_fuzz_*.py``): hypothesis draws a seed and a list of
  edits (``mutations()``), derandomized, a few hundred inputs per target;
- the long run (``main`` below): each target in its own process for a bounded time, with
  atheris (coverage-guided libFuzzer, these edits as its custom mutator) when it is installed,
  else with the same edits drawn at random. It counts the inputs, catches hangs (10 s per input)
  and memory growth, saves every crashing input, and writes
  ``benchmarks/results/robustness-<date>-<host>.json``;
- the regression corpus (``corpus/<target>/``, replayed by ``test_fuzz_corpus.py``): every input
  that ever broke a target.

Edits are structure-aware on purpose: random bytes rarely get past a SIP start line or an XML
declaration, so most inputs are valid seeds (the RFC 4475 torture messages and the vendor SIPREC
captures, read in place from the shared fixtures, and what our own builders write) with a few
edits: bit flips, truncation, splicing two seeds, lines duplicated, deleted or swapped, numbers
replaced by huge or non-ASCII ones, long runs, and the target's own tokens (``Content-Length:``,
``<!ENTITY``, ``a=crypto:``...) inserted.

Inputs that hold several values (a content type and a body, a datagram sequence) are split on
the first newline or on ``SEP``, so every driver hands them over as one byte string.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import json
import random
import re
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from siprec_src.control.twiml import TwimlError, parse_twiml
from siprec_src.errors import ConfigError, RemoteProtocolError
from siprec_src.media.audio import AudioDecodeError, AudioFormat, Encoding, decode_wav
from siprec_src.media.events import MediaEvent
from siprec_src.media.pipeline import BUFFER_SIZE, ForkPipeline, LegReceiver
from siprec_src.media.rtp import RtpError, RtpPacket, parse_rtcp
from siprec_src.media.spec import Address, ForkSpec, Leg, LegSpec, SrtpKeys
from siprec_src.media.srtp import SrtpError, SrtpReceiver, SrtpSender, parse_key_params
from siprec_src.metadata.model import for_call
from siprec_src.metadata.reader import MetadataError, read_metadata, read_siprec_body
from siprec_src.metadata.xml import CONTENT_TYPE as METADATA_TYPE
from siprec_src.metadata.xml import to_xml
from siprec_src.sdp.session import SdpError, SessionDescription, parse_sdp
from siprec_src.sdp.siprec import (
    PCMA,
    PCMU,
    CryptoOffer,
    CryptoSuite,
    NegotiationError,
    StreamOffer,
    answer_srs_offer,
    build_answer_for_srs,
    build_offer,
    process_answer,
)
from siprec_src.sip.auth import (
    Credentials,
    DigestSession,
    parse_challenge,
    verify_authorization,
)
from siprec_src.sip.framer import FramingError, StreamFramer
from siprec_src.sip.headers import (
    MULTI_VALUE,
    CSeq,
    NameAddress,
    Via,
    check_date,
    parse_address_list,
    parse_call_id,
    parse_delta,
    parse_name_addr,
)
from siprec_src.sip.message import (
    ParseLimits,
    Request,
    Response,
    check_request,
    error_reason_phrase,
    parse_message,
    response_to,
)
from siprec_src.sip.multipart import MAX_PARTS, BodyPart, MultipartError, decode_multipart, encode_multipart
from siprec_src.sip.syntax import SipParseError, parse_params
from siprec_src.sip.target import Destination
from siprec_src.sip.uri import SipUri, parse_uri
from siprec_src.sip.useragent import UaConfig, UserAgentCore
from siprec_src.srs.jitter import DUPLICATE_WINDOW, MAX_SOURCES, Frame, Gap, JitterBuffer
from siprec_src.srs.session import Refusal, _read_invite, _read_update_body, check_recording_invite
from siprec_src.streams import MalformedMessageError, plivo_wire, twilio_wire
from tests.conftest import FIXTURES

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
# Separates the datagrams (or packets) of one input for the targets that take a sequence.
SEP = b"\n--8<--\n"
# No input grows past this: the parsers' own limits are far below, so it bounds the work only.
MAX_INPUT = 1 << 18


class Finding(AssertionError):  # noqa: N818 - what a fuzzer finds; an AssertionError for pytest
    """A property of a target does not hold (the parser did not crash, but it is still a bug)."""


@dataclass(frozen=True, slots=True)
class Target:
    """One fuzzed entry point: ``run`` checks an input, ``seeds`` are where mutations start."""

    name: str
    about: str
    run: Callable[[bytes], None]
    seeds: Callable[[], tuple[bytes, ...]]
    tokens: tuple[bytes, ...] = ()
    max_len: int = 65536  # the longest input libFuzzer makes (long packet sequences are slow)


# --- the mutation engine ------------------------------------------------------------------------------

# (kind, position, argument, blob): what one edit does is ``_OPS[kind % len(_OPS)]``; positions and
# arguments are taken modulo what fits, so any tuple is a valid edit (hypothesis shrinks them freely).
Op = tuple[int, int, int, bytes]

INTERESTING_BYTES = b"\x00\x01\x7f\x80\xff\r\n\t :;,<>\"'\\%=&/@[]?*{}"
NUMBERS = (
    b"0",
    b"00",
    b"1",
    b"-1",
    b"+1",
    b"127",
    b"128",
    b"255",
    b"256",
    b"65535",
    b"65536",
    b"2147483647",
    b"2147483648",
    b"4294967295",
    b"4294967296",
    b"18446744073709551616",
    b"9" * 40,
    b"1" * 5000,  # past int()'s 4300-digit limit
    b"0" * 300 + b"1",
    "²".encode(),  # str.isdigit() says yes, int() says no
    "١٢٣".encode(),  # Arabic-Indic digits: int() reads them
    "１２".encode(),  # fullwidth digits
    b"1e999",
    b"0x10",
    b"NaN",
    b"1.5",
    b" 1",
)
COMMON_TOKENS = (
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b"\x00",
    b"\xff\xfe",
    b"\xc3\x28",  # invalid UTF-8
    b"\xed\xa0\x80",  # an encoded surrogate
    "é".encode(),
    "\u2028".encode(),
    b'"',
    b"\\",
    b"%00",
    b"%",
    b"<",
    b">",
    b";",
    b",",
    b"=",
    b":",
    b"[",
    b"]",
    b"  ",
    b"\t",
)


def _at(buf: bytearray, pos: int) -> int:
    return pos % (len(buf) + 1)


def _line_bounds(buf: bytearray, pos: int) -> tuple[int, int]:
    """(start, end) of the line holding ``pos``, its line feed included."""
    at = _at(buf, pos)
    start = buf.rfind(b"\n", 0, at) + 1
    end = buf.find(b"\n", at)
    return start, (len(buf) if end < 0 else end + 1)


def _flip(buf: bytearray, pos: int, arg: int, blob: bytes, ctx: _Context) -> None:
    if buf:
        buf[pos % len(buf)] ^= 1 << (arg % 8)


def _set_byte(buf: bytearray, pos: int, arg: int, blob: bytes, ctx: _Context) -> None:
    if buf:
        buf[pos % len(buf)] = INTERESTING_BYTES[arg % len(INTERESTING_BYTES)]


def _truncate(buf: bytearray, pos: int, arg: int, blob: bytes, ctx: _Context) -> None:
    del buf[_at(buf, pos) :]


def _delete(buf: bytearray, pos: int, arg: int, blob: bytes, ctx: _Context) -> None:
    at = _at(buf, pos)
    del buf[at : at + 1 + arg % 64]


def _insert_blob(buf: bytearray, pos: int, arg: int, blob: bytes, ctx: _Context) -> None:
    at = _at(buf, pos)
    buf[at:at] = blob


def _insert_token(buf: bytearray, pos: int, arg: int, blob: bytes, ctx: _Context) -> None:
    at = _at(buf, pos)
    buf[at:at] = ctx.tokens[arg % len(ctx.tokens)]


def _replace_token(buf: bytearray, pos: int, arg: int, blob: bytes, ctx: _Context) -> None:
    """Overwrite the bytes at ``pos`` with a token (keeps the length roughly the same)."""
    at = _at(buf, pos)
    token = ctx.tokens[arg % len(ctx.tokens)]
    buf[at : at + len(token)] = token


def _duplicate(buf: bytearray, pos: int, arg: int, blob: bytes, ctx: _Context) -> None:
    at = _at(buf, pos)
    chunk = buf[at : at + 1 + arg % 256]
    buf[at:at] = chunk


def _splice(buf: bytearray, pos: int, arg: int, blob: bytes, ctx: _Context) -> None:
    """Keep this input up to ``pos`` and continue with another seed from the same relative place."""
    other = ctx.pool[arg % len(ctx.pool)]
    at = _at(buf, pos)
    cut = (at * len(other)) // max(1, len(buf))
    buf[at:] = other[cut:]


def _line_duplicate(buf: bytearray, pos: int, arg: int, blob: bytes, ctx: _Context) -> None:
    start, end = _line_bounds(buf, pos)
    line = bytes(buf[start:end])
    if line and not line.endswith(b"\n"):
        line += b"\n"
    buf[start:start] = line * (1 + arg % 4 if arg % 16 else 1 + arg % 400)


def _line_delete(buf: bytearray, pos: int, arg: int, blob: bytes, ctx: _Context) -> None:
    start, end = _line_bounds(buf, pos)
    del buf[start:end]


def _line_swap(buf: bytearray, pos: int, arg: int, blob: bytes, ctx: _Context) -> None:
    a_start, a_end = _line_bounds(buf, pos)
    b_start, b_end = _line_bounds(buf, arg)
    if (a_start, a_end) == (b_start, b_end):
        return
    if a_start > b_start:
        a_start, a_end, b_start, b_end = b_start, b_end, a_start, a_end
    if a_end > b_start:
        return
    first, second = bytes(buf[a_start:a_end]), bytes(buf[b_start:b_end])
    buf[b_start:b_end] = first
    buf[a_start:a_end] = second


_DIGITS = re.compile(rb"[0-9]+")


def _number(buf: bytearray, pos: int, arg: int, blob: bytes, ctx: _Context) -> None:
    """Replace the digit run at or after ``pos`` by an interesting number."""
    found = _DIGITS.search(bytes(buf), _at(buf, pos)) or _DIGITS.search(bytes(buf))
    value = NUMBERS[arg % len(NUMBERS)]
    if found is None:
        at = _at(buf, pos)
        buf[at:at] = value
    else:
        buf[found.start() : found.end()] = value


def _repeat(buf: bytearray, pos: int, arg: int, blob: bytes, ctx: _Context) -> None:
    """A long run of one token: deep nesting, huge values, many parameters."""
    at = _at(buf, pos)
    token = blob or ctx.tokens[arg % len(ctx.tokens)]
    buf[at:at] = token * (1 + (arg * 7919) % 3000)


def _swap_case(buf: bytearray, pos: int, arg: int, blob: bytes, ctx: _Context) -> None:
    at = _at(buf, pos)
    end = at + 1 + arg % 32
    buf[at:end] = bytes(buf[at:end]).swapcase()


@dataclass(frozen=True, slots=True)
class _Context:
    pool: tuple[bytes, ...]
    tokens: tuple[bytes, ...]


_OPS: tuple[Callable[[bytearray, int, int, bytes, _Context], None], ...] = (
    _flip,
    _set_byte,
    _truncate,
    _delete,
    _insert_blob,
    _insert_token,
    _replace_token,
    _duplicate,
    _splice,
    _line_duplicate,
    _line_delete,
    _line_swap,
    _number,
    _repeat,
    _swap_case,
    _insert_token,  # tokens twice: they carry most of the structure
)


def mutate(data: bytes, ops: Iterable[Op], pool: Sequence[bytes], tokens: Sequence[bytes]) -> bytes:
    """Apply ``ops`` to ``data``; ``pool`` holds the seeds to splice from, ``tokens`` what to insert."""
    ctx = _Context(tuple(pool) or (b"",), tuple(tokens) + COMMON_TOKENS)
    buf = bytearray(data)
    for kind, pos, arg, blob in ops:
        _OPS[kind % len(_OPS)](buf, pos, arg, blob, ctx)
        if len(buf) > MAX_INPUT:
            del buf[MAX_INPUT:]
    return bytes(buf)


def random_ops(rng: random.Random) -> list[Op]:
    """1 to 8 edits, mostly small (the long run's mutator when atheris is not there)."""
    count = min(8, 1 + int(rng.expovariate(0.6)))
    ops: list[Op] = []
    for _ in range(count):
        blob = rng.randbytes(rng.choice((0, 1, 2, 4, 8, 16)))
        ops.append((rng.randrange(len(_OPS)), rng.getrandbits(20), rng.getrandbits(16), blob))
    return ops


def random_input(target: Target, rng: random.Random) -> bytes:
    """One input for ``target``: a mutated seed, now and then plain random bytes."""
    seeds = target.seeds()
    if rng.random() < 0.03:
        return rng.randbytes(rng.randrange(0, 512))
    return mutate(rng.choice(seeds), random_ops(rng), seeds, target.tokens)


_op = st.tuples(
    st.integers(0, len(_OPS) - 1),
    st.integers(0, 1 << 20),
    st.integers(0, 1 << 16),
    st.binary(max_size=16),
)


def mutations(target: Target) -> st.SearchStrategy[bytes]:
    """Inputs for ``target``: a seed with up to 6 edits (shrinks towards the unedited first seed)."""
    seeds = target.seeds()
    edited = st.builds(
        lambda index, ops: mutate(seeds[index], ops, seeds, target.tokens),
        st.integers(0, len(seeds) - 1),
        st.lists(_op, max_size=6),
    )
    return st.one_of(edited, st.binary(max_size=600))


def fuzz_settings(max_examples: int) -> settings:
    """The short suite's settings: derandomized (the same inputs every run), no database, no deadline.

    ``deadline=None`` because a slow input is caught by the long run's per-input timer and by the
    explicit time bounds of the bomb tests, not by a wall-clock deadline that flakes on a busy CI.
    """
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# --- seeds --------------------------------------------------------------------------------------------


def _fixture_files(folder: str, pattern: str) -> tuple[Path, ...]:
    path = FIXTURES / folder
    files = tuple(sorted(path.glob(pattern)))
    if not files:
        raise Finding(f"no {pattern} in {path}: the fuzz seeds need the shared fixtures (SIPREC_FIXTURES)")
    return files


def _corpus_files(name: str) -> tuple[bytes, ...]:
    folder = CORPUS / name
    return tuple(path.read_bytes() for path in sorted(folder.iterdir())) if folder.is_dir() else ()


@functools.cache
def torture_messages() -> tuple[bytes, ...]:
    """The 49 RFC 4475 messages, read in place."""
    return tuple(path.read_bytes() for path in _fixture_files("rfc4475", "*.dat"))


@functools.cache
def vendor_bodies() -> tuple[tuple[str, bytes], ...]:
    """(Content-Type, body) of each vendor capture, as an SRS receives them."""
    out = []
    for path in _fixture_files("vendor-siprec", "*.txt"):
        raw = path.read_bytes()
        if raw.startswith(b"INVITE "):
            head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
            types = [
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\n")
                if line.lower().startswith(b"content-type:")
            ]
            out.append((types[0].decode(), body))
            continue
        delimiter = re.search(rb"^--(\S+?)\s*$", raw, re.M)
        content_type = (
            "application/sdp"
            if delimiter is None
            else f'multipart/mixed;boundary="{delimiter.group(1).decode()}"'
        )
        out.append((content_type, raw))
    return tuple(out)


def _counter_bytes() -> Callable[[int], bytes]:
    """A deterministic ``random_bytes``: every call returns new bytes, so the IDs differ."""
    state = random.Random(42)
    return state.randbytes


@functools.cache
def our_metadata() -> bytes:
    """What our own writer sends for a two-party call (fixed IDs and time)."""
    metadata = for_call(
        "call-42@pbx.example.com",
        [("sip:+15551230001@pbx.example.com", 'Alice "A" <&>'), ("sip:agent-7@pbx.example.com", None)],
        [("1", 0, [1]), ("2", 1, [0])],
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        _counter_bytes(),
        custom_parameters=(("X-Customer-Id", "42"),),
    )
    return to_xml(metadata)


SUITE_KEYS = {
    CryptoSuite.AES_CM_128_HMAC_SHA1_80: base64.b64encode(bytes(range(30))).decode(),
    CryptoSuite.AES_CM_128_HMAC_SHA1_32: base64.b64encode(bytes(range(1, 31))).decode(),
    CryptoSuite.AEAD_AES_128_GCM: base64.b64encode(bytes(range(2, 30))).decode(),
}


@functools.cache
def our_offers() -> tuple[SessionDescription, SessionDescription]:
    """The SDP offers our SRC writes: plain RTP and SRTP, two streams each."""
    streams = [
        StreamOffer("1", 20002, PCMU.with_telephone_event(101)),
        StreamOffer("2", 20004, PCMA, rtcp_port=20010),
    ]
    plain = build_offer(streams, address="192.0.2.10", session_id=1, session_version=1, secure=False)
    crypto = {label: [CryptoOffer(suite, key) for suite, key in SUITE_KEYS.items()] for label in ("1", "2")}
    secure = build_offer(
        streams, address="2001:db8::10", session_id=2, session_version=3, secure=True, crypto=crypto
    )
    return plain, secure


OUR_STREAMS = (StreamOffer("1", 20002, PCMU.with_telephone_event(101)), StreamOffer("2", 20004, PCMA))


def _srs_answer(offer: SessionDescription) -> SessionDescription:
    ports = [40000 + 2 * index for index in range(len(offer.media))]
    keys = [dict(SUITE_KEYS) for _ in offer.media]
    return build_answer_for_srs(offer, address="198.51.100.7", ports=ports, crypto_keys=keys)


@functools.cache
def sdp_seeds() -> tuple[bytes, ...]:
    found: list[bytes] = []
    for content_type, body in vendor_bodies():
        if content_type.startswith("application/sdp"):
            found.append(body)
            continue
        try:
            parts = decode_multipart(content_type, body)
        except MultipartError:
            continue
        found += [part.body for part in parts if part.media_type == "application/sdp"]
    for offer in our_offers():
        found += [bytes(offer), bytes(_srs_answer(offer))]
    return tuple(found)


@functools.cache
def metadata_seeds() -> tuple[bytes, ...]:
    found = [our_metadata()]
    for content_type, body in vendor_bodies():
        if not content_type.startswith("multipart/"):
            continue
        parts = decode_multipart(content_type, body)
        found += [part.body for part in parts if "xml" in part.media_type or "metadata" in part.media_type]
    found += [BILLION_LAUGHS, XXE, DEEP]
    return tuple(found)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<recording xmlns="urn:ietf:params:xml:ns:recording:1"><dataMode>&lol9;</dataMode></recording>
"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE recording [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<recording xmlns="urn:ietf:params:xml:ns:recording:1"><dataMode>&xxe;</dataMode></recording>
"""
DEEP = (
    b'<recording xmlns="urn:ietf:params:xml:ns:recording:1">' + b"<a>" * 40 + b"</a>" * 40 + b"</recording>"
)


def _joined(content_type: str, body: bytes) -> bytes:
    return content_type.encode() + b"\n" + body


def _split_type(data: bytes) -> tuple[str, bytes]:
    head, _, body = data.partition(b"\n")
    return head.decode("utf-8", "surrogateescape"), body


@functools.cache
def multipart_seeds() -> tuple[bytes, ...]:
    found = [_joined(content_type, body) for content_type, body in vendor_bodies()]
    plain, _ = our_offers()
    content_type, body = encode_multipart(
        [
            BodyPart("application/sdp", bytes(plain)),
            BodyPart(METADATA_TYPE, our_metadata(), (("Content-Disposition", "recording-session"),)),
        ],
        boundary="siprec-boundary",
    )
    found.append(_joined(content_type, body))
    return tuple(found)


def _invite(body_type: str, body: bytes, extra: str = "") -> bytes:
    head = (
        "INVITE sip:srs@198.51.100.7:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-fuzz-1;rport\r\n"
        "Max-Forwards: 70\r\n"
        'From: "SRC" <sip:src@192.0.2.10>;tag=src-1\r\n'
        "To: <sip:srs@198.51.100.7>\r\n"
        "Call-ID: fuzz-1@192.0.2.10\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:src@192.0.2.10:5060>;+sip.src\r\n"
        "Require: siprec\r\n"
        "Supported: timer, replaces\r\n"
        "Session-Expires: 1800;refresher=uac\r\n"
        "Min-SE: 90\r\n"
        "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE\r\n"
        f"Content-Type: {body_type}\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@functools.cache
def invite_seeds() -> tuple[bytes, ...]:
    """Whole SIPREC INVITEs around every vendor body, and ours."""
    found = []
    for seed in multipart_seeds():
        content_type, body = _split_type(seed)
        found.append(_invite(content_type, body))
    plain, _ = our_offers()
    found.append(_invite("application/sdp", bytes(plain)))
    found.append(_invite(METADATA_TYPE, our_metadata()))
    return tuple(found)


@functools.cache
def sip_seeds() -> tuple[bytes, ...]:
    response = (
        b"SIP/2.0 401 Unauthorized\r\n"
        b"Via: SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bK-x;received=2001:db8::2;rport=5061\r\n"
        b'From: "A \\"quoted\\" name" <sips:alice@example.com>;tag=1\r\n'
        b"To: <sips:srs@example.com>;tag=2\r\n"
        b"Call-ID: a@b\r\n"
        b"CSeq: 7 INVITE\r\n"
        b'WWW-Authenticate: Digest realm="srs", nonce="n0nce/+=", qop="auth,auth-int", algorithm=SHA-256\r\n'
        b"Retry-After: 30\r\n"
        b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    return (*torture_messages(), *invite_seeds()[-3:], response)


SIP_TOKENS = (
    b"Content-Length: ",
    b"l: ",
    b"Via: SIP/2.0/UDP ",
    b"v: SIP/2.0/TCP [::1]:5060",
    b";branch=z9hG4bK",
    b";received=[2001:db8::1]",
    b"CSeq: ",
    b"Call-ID: ",
    b"From: ",
    b"To: ",
    b"Contact: *",
    b"m: <sip:a@b>;expires=1",
    b"Max-Forwards: ",
    b"Expires: ",
    b"Date: ",
    b"Route: <sip:p;lr>",
    b"Record-Route: ",
    b"Require: siprec",
    b"Content-Type: multipart/mixed;boundary=",
    b"sip:",
    b"sips:",
    b"tel:+1",
    b"@",
    b"<sip:user:pass@[::1]:5060;transport=tcp?h=v>",
    b'"display name"',
    b";tag=",
    b";lr",
    b"SIP/2.0",
    b"SIP/3.0",
    b"INVITE ",
    b" SIP/2.0\r\n",
    b"SIP/2.0 200 OK\r\n",
    b"\r\n ",
    b"\r\n\t",
    b"WWW-Authenticate: Digest ",
    b'realm="',
    b"nonce=",
    b"qop=auth-int",
    b"algorithm=MD5-sess",
    b"stale=TRUE",
    b"opaque=",
    *NUMBERS,
)


# --- SIP ----------------------------------------------------------------------------------------------


def _check_sip_error(error: SipParseError) -> None:
    phrase = error_reason_phrase(error)
    if not (phrase.isascii() and phrase.isprintable() and len(phrase) <= 160):
        raise Finding(f"reason phrase {phrase!r} is not bounded printable ASCII")
    if not 400 <= error.status_hint <= 699:
        raise Finding(f"status hint {error.status_hint} is not an error status")


def _views(message: Request | Response) -> list[Callable[[], object]]:
    views: list[Callable[[], object]] = [
        lambda: message.via,
        lambda: message.top_via,
        lambda: message.from_,
        lambda: message.to,
        lambda: message.call_id,
        lambda: message.cseq,
        lambda: message.contacts,
        lambda: message.record_route,
        lambda: message.content_type,
        lambda: message.header_tokens("Require"),
    ]
    if isinstance(message, Request):
        views += [lambda: message.sip_uri, lambda: message.max_forwards, lambda: check_request(message)]
    return views


def run_sip_message(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError as exc:
        _check_sip_error(exc)
        return
    for view in _views(message):
        try:
            view()
        except SipParseError as exc:
            _check_sip_error(exc)
    for name in sorted(MULTI_VALUE):
        # Refused at the door if malformed: a parsed message's list headers always split.
        message.header_tokens(name)
    raw = bytes(message)
    try:
        again = parse_message(raw, UNFOLDED)
    except SipParseError as exc:
        raise Finding(f"our serialization of a parsed message does not parse: {exc.reason}") from exc
    if type(again) is not type(message) or _fields(again) != _fields(message) or again.body != message.body:
        raise Finding("a parsed message does not survive serialize + parse unchanged")
    if isinstance(message, Request) and message.method != "ACK":
        _answer(message)


def _fields(message: Request | Response) -> list[tuple[str, str]]:
    # Content-Length is rewritten on output (the body's real length, once): not compared.
    return [(name, value) for name, value in message.headers if name != "Content-Length"]


def _answer(request: Request) -> None:
    """What a UAS does with any request it parsed: answer it (with a To tag), and send that."""
    try:
        check_request(request)
    except SipParseError:
        # reject_malformed's path: the 400 copies what it can.
        response = response_to(request, 400, "Bad Request")
    else:
        response = response_to(request, 486, to_tag="fz-tag")
    raw = bytes(response)
    try:
        parse_message(raw)
    except SipParseError as exc:
        raise Finding(f"our response to a parsed request does not parse: {exc.reason}") from exc


def _frame(data: bytes, cuts: Sequence[int], limits: ParseLimits) -> tuple[list[tuple[str, object]], bool]:
    framer = StreamFramer(limits)
    items: list[tuple[str, object]] = []
    position = 0
    for size in cuts:
        chunk = data[position : position + size]
        position += size
        try:
            out = framer.feed(chunk)
        except FramingError as exc:
            _check_sip_error(exc)
            return items, True
        if framer.buffered > limits.max_message_size:
            raise Finding(
                f"the framer holds {framer.buffered} bytes, over its {limits.max_message_size} limit"
            )
        for item in out:
            if isinstance(item, SipParseError):
                _check_sip_error(item)
                items.append(("error", item.reason))
            else:
                items.append((type(item).__name__, bytes(item)))
    return items, False


# What we write back may be longer than what we read, in a line (folded lines are joined) and in
# all (compact names expanded, LF-only lines get CRLF, Content-Length is added): a message near
# a limit may not come back under it. Re-parse with room for that.
UNFOLDED = ParseLimits(max_message_size=1 << 20, max_line_length=1 << 20)
FRAMER_LIMITS = ParseLimits(max_message_size=4096, max_headers=64, max_line_length=1024)


def run_sip_framer(data: bytes) -> None:
    """The stream framer: one feed or random chunks, the same messages; never over its limit."""
    whole, whole_failed = _frame(data, [len(data)], FRAMER_LIMITS)
    rng = random.Random(zlib.crc32(data))
    cuts: list[int] = []
    while sum(cuts) < len(data):
        cuts.append(rng.choice((1, 2, 3, 7, 64, 512, 1500)))
    chunked, chunked_failed = _frame(data, cuts, FRAMER_LIMITS)
    if whole_failed != chunked_failed:
        raise Finding(f"framing error {'only' if whole_failed else 'not'} when fed in one piece")
    if not whole_failed and whole != chunked:
        raise Finding("the framer cuts a stream differently when it arrives in pieces")


def _header_text(data: bytes) -> list[str]:
    """The input's lines as header values: what parse_message hands on (surrogate escapes, no CR)."""
    lines = data.decode("utf-8", "surrogateescape").split("\n")
    return [line.removesuffix("\r") for line in lines if "\r" not in line.removesuffix("\r")]


def run_sip_uri(data: bytes) -> None:
    for text in _header_text(data):
        try:
            uri = parse_uri(text)
        except SipParseError as exc:
            _check_sip_error(exc)
            continue
        if isinstance(uri, SipUri):
            _ = (uri.transport, uri.host_port, uri.user_unescaped, uri.secure)
        try:
            again = parse_uri(str(uri))
        except SipParseError as exc:
            raise Finding(f"str() of a parsed URI does not parse: {exc.reason}") from exc
        if again != uri:
            raise Finding(f"URI {text!r} does not survive str() + parse: {uri!r} != {again!r}")


def run_sip_headers(data: bytes) -> None:
    """Every header-value parser on every line; parsed addresses round-trip."""
    parsers: tuple[Callable[[str], object], ...] = (
        Via.parse,
        CSeq.parse,
        parse_call_id,
        check_date,
        lambda text: parse_delta(text, name="Expires", maximum=2**32 - 1),
        lambda text: parse_params(text, context="fuzz"),
        lambda text: parse_address_list([text]),
    )
    for text in _header_text(data):
        for parser in parsers:
            try:
                parser(text)
            except SipParseError as exc:
                _check_sip_error(exc)
        try:
            address = parse_name_addr(text)
        except SipParseError as exc:
            _check_sip_error(exc)
            continue
        try:
            again = parse_name_addr(str(address))
        except SipParseError as exc:
            raise Finding(f"str() of a parsed address does not parse: {exc.reason}") from exc
        if again != address:
            raise Finding(f"address {text!r} does not survive str() + parse")


def run_sip_auth(data: bytes) -> None:
    """Challenge parsing, the answer we build, and the SRS's check of any Authorization value."""
    session = DigestSession([Credentials("src", "pässword")], cnonce_factory=lambda: "0a4f113b")
    for text in _header_text(data):
        try:
            challenge = parse_challenge(text)
        except RemoteProtocolError:
            pass
        else:
            try:
                answer = session.answer(challenge, "INVITE", "sip:srs@198.51.100.7")
            except RemoteProtocolError:
                answer = None
            if answer is not None:
                if "\r" in answer or "\n" in answer:
                    raise Finding(f"our Authorization value carries a line break: {answer!r}")
                if not verify_authorization(answer, "pässword", "INVITE"):
                    raise Finding("our own Authorization value does not verify")
            session = DigestSession([Credentials("src", "pässword")], cnonce_factory=lambda: "0a4f113b")
        with contextlib.suppress(RemoteProtocolError):
            verify_authorization(text, "pässword", "INVITE", b"body")


_UA_SOURCE = Destination("udp", "198.51.100.7", 5060)


def run_sip_ua_auth(data: bytes) -> None:
    """A UAC whose INVITE gets a 401/407 with the input's challenge lines: retries or gives up."""
    core = UserAgentCore(
        UaConfig(credentials=(Credentials("src", "secret"),)),
        local_addresses={"udp": ("192.0.2.10", 5060)},
        rng=random.Random(1),
    )
    invite = core.create_request(
        "INVITE",
        SipUri("sip", "198.51.100.7", "srs", None, 5060),
        NameAddress(SipUri("sip", "src.example.com", "src")),
        NameAddress(SipUri("sip", "srs.example.com", "srs")),
        body=b"v=0\r\n",
        content_type="application/sdp",
    )
    core.send(invite, _UA_SOURCE, 0.0)
    ((raw, _),) = core.messages_to_send()
    status = 407 if data[:1] == b"7" else 401
    header = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    lines = [f"SIP/2.0 {status} Auth".encode()]
    lines += [
        line for line in head if line.split(b":", 1)[0].lower() in (b"via", b"from", b"call-id", b"cseq")
    ]
    lines += [b"To: <sip:srs@srs.example.com>;tag=t1", b"Content-Length: 0"]
    lines += [header.encode() + b": " + value for value in data.split(b"\n") if b"\r" not in value]
    try:
        response = parse_message(b"\r\n".join(lines) + b"\r\n\r\n")
    except SipParseError:
        return
    core.receive(response, _UA_SOURCE, 0.1)
    for message, _ in core.messages_to_send():
        try:
            parse_message(message, UNFOLDED)
        except SipParseError as exc:
            raise Finding(f"the UAC sent a message that does not parse: {exc.reason}") from exc
    while core.next_event() is not None:
        pass


def run_multipart(data: bytes) -> None:
    content_type, body = _split_type(data)
    try:
        parts = decode_multipart(content_type, body)
    except MultipartError:
        return
    if not 1 <= len(parts) <= MAX_PARTS:
        raise Finding(f"decode_multipart returned {len(parts)} parts")
    for part in parts:
        _ = (part.media_type, part.header("Content-Disposition"), part.header("content-type"))


# --- SDP ----------------------------------------------------------------------------------------------


def _exercise_sdp(sdp: SessionDescription) -> None:
    """Every lazy accessor (they parse attribute values when asked): SdpError or a value."""
    for media in sdp.media:
        calls: list[tuple[Callable[..., object], tuple[object, ...]]] = [
            (getattr, (media, "label")),
            (getattr, (media, "ptime")),
            (getattr, (media, "rtcp")),
            (getattr, (media, "crypto")),
            (getattr, (media, "direction")),
            (sdp.direction_of, (media,)),
            (sdp.connection_for, (media,)),
        ]
        for fmt in media.formats[:8]:
            calls += [(media.rtpmap, (fmt,)), (media.fmtp, (fmt,)), (media.codec, (fmt,))]
        for function, args in calls:
            with contextlib.suppress(SdpError):
                function(*args)


def run_sdp(data: bytes) -> None:
    try:
        sdp = parse_sdp(data)
    except SdpError:
        return
    _exercise_sdp(sdp)
    try:
        again = parse_sdp(bytes(sdp))
    except SdpError as exc:
        raise Finding(f"our serialization of a parsed SDP does not parse: {exc.reason}") from exc
    if again != sdp:
        raise Finding("a parsed SDP does not survive serialize + parse unchanged")


def run_sdp_offer(data: bytes) -> None:
    """The SRS side: any offer gets an answer or a NegotiationError, and the answer satisfies the offer."""
    try:
        offer = parse_sdp(data)
    except SdpError:
        return
    try:
        answer = _srs_answer(offer)
    except (NegotiationError, SdpError):
        return
    try:
        again = parse_sdp(bytes(answer))
        process_answer(offer, again)
    except NegotiationError as exc:
        if isinstance(exc.__cause__, SdpError):
            # A malformed attribute of the offer that the SRS had no need to read (the rtpmap of
            # a format it did not pick; attributes are parsed lazily on purpose), which the
            # SRC-side check reads: the offer's fault, not the answer's.
            return
        raise Finding(f"the answer our SRS built does not satisfy the offer: {exc.reason}") from exc
    except SdpError as exc:
        raise Finding(f"the answer our SRS built does not parse: {exc.reason}") from exc


def run_sdp_answer(data: bytes) -> None:
    """The SRC side: any answer to our offers, and any offer an SRS makes in a re-INVITE."""
    try:
        sdp = parse_sdp(data)
    except SdpError:
        return
    for offer in our_offers():
        try:
            result = process_answer(offer, sdp)
        except NegotiationError:
            pass
        else:
            _ = (result.accepted, result.refused)
    crypto = {
        stream.label: [CryptoOffer(suite, key) for suite, key in SUITE_KEYS.items()] for stream in OUR_STREAMS
    }
    for secure in (False, True):
        with contextlib.suppress(NegotiationError, SdpError):
            answer_srs_offer(
                sdp,
                OUR_STREAMS,
                address="192.0.2.10",
                session_id=1,
                session_version=2,
                secure=secure,
                crypto=crypto if secure else None,
            )


SDP_TOKENS = (
    b"v=0\r\n",
    b"o=- 1 1 IN IP4 192.0.2.1\r\n",
    b"s=-\r\n",
    b"c=IN IP4 ",
    b"c=IN IP6 ::1\r\n",
    b"t=0 0\r\n",
    b"r=7d 1h 0 25h\r\n",
    b"b=AS:",
    b"m=audio ",
    b"m=video 0 RTP/AVP 31\r\n",
    b" RTP/AVP ",
    b" RTP/SAVP ",
    b"a=rtpmap:",
    b" PCMU/8000",
    b" telephone-event/8000",
    b"a=fmtp:101 0-16",
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:",
    b"|2^31|1:4",
    b"a=rtcp:",
    b"a=label:",
    b"a=sendonly",
    b"a=recvonly",
    b"a=inactive",
    b"a=sendrecv",
    b"a=ptime:",
    b"/",
    *NUMBERS,
)


# --- metadata -------------------------------------------------------------------------------------------


def run_metadata(data: bytes) -> None:
    try:
        read_metadata(data)
    except MetadataError:
        return


def run_siprec_body(data: bytes) -> None:
    content_type, body = _split_type(data)
    try:
        sdp, _ = read_siprec_body(content_type, body)
    except MetadataError:
        return
    try:
        parse_sdp(sdp)
    except SdpError:
        return


XML_TOKENS = (
    b"<?xml version='1.0' encoding='UTF-16'?>",
    b"<?xml version='1.0' encoding='x-unknown'?>",
    b"<!DOCTYPE r [<!ENTITY e 'x'>]>",
    b"<!doctype",
    b"<!ENTITY % p SYSTEM 'file:///etc/passwd'>",
    b"&e;",
    b"&amp;",
    b"&#0;",
    b"&#x110000;",
    b"<![CDATA[",
    b"]]>",
    b"<!-- -->",
    b"<?pi x?>",
    b'xmlns="urn:ietf:params:xml:ns:recording:1"',
    b'xmlns:x="urn:x"',
    b"x:",
    b"<participant participant_id='p1'>",
    b"<stream stream_id='s1' session_id='x'><label>1</label></stream>",
    b"<session session_id='x'>",
    b"<participantstreamassoc participant_id='p1'><send>s1</send></participantstreamassoc>",
    b"<extensiondata parent='p1'>",
    b"<dataMode>partial</dataMode>",
    b"<associate-time>0001-01-01T00:00:00+14:00</associate-time>",
    b"<start-time>9999-12-31T23:59:59-14:00</start-time>",
    b"2019-03-09T16:50:20",
    b"<a>",
    b"</a>",
    b"<a b='",
    b"'/>",
    b"<Response>",
    b"<Start><Siprec name='a' connectorName='c'/></Start>",
    b"<Stop><Siprec name='a'/></Stop>",
    b"<Parameter name='n' value='v'/>",
    b"<Say>hi</Say>",
)


# --- media: RTP, RTCP, SRTP, the receive path -------------------------------------------------------------


def _rtp(seq: int, ts: int, ssrc: int = 0x1234ABCD, pt: int = 0, payload: bytes = b"\xff" * 160) -> bytes:
    return bytes(RtpPacket(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload))


@functools.cache
def rtp_seeds() -> tuple[bytes, ...]:
    return (
        _rtp(1, 160),
        bytes(RtpPacket(8, 65535, 2**32 - 1, 7, b"\xd5" * 20, marker=True, csrcs=(1, 2, 3))),
        bytes(
            RtpPacket(
                101, 9, 1000, 7, b"\x01\x80\x00\xa0", extension=(0xBEDE, b"\x10\xff\x00\x00"), padding=4
            )
        ),
        bytes(RtpPacket(0, 5, 5, 5)),
    )


@functools.cache
def rtcp_seeds() -> tuple[bytes, ...]:
    sender = SrtpSender(
        SrtpKeys("AES_CM_128_HMAC_SHA1_80", "inline:" + SUITE_KEYS[CryptoSuite.AES_CM_128_HMAC_SHA1_80])
    )
    # An SR + SDES + BYE compound as the pipeline sends it, captured from a real fork below.
    out: list[bytes] = []
    fork = _fork("rtcp", send=lambda packet: None, rtcp=out.append)
    leg = LegReceiver(LegSpec("c", Leg.INBOUND), bytearray(BUFFER_SIZE), lambda event: None, 0.0, 5.0)
    leg.attach(fork)
    leg.feed(_rtp(1, 160), 0.0)
    fork.on_timer(10.0, 1.7e9)
    fork.close(10.1, 1.7e9 + 0.1)
    rr = bytes.fromhex("81c90007") + bytes(range(28))
    return (*out, rr, sender.protect_rtcp(out[0]), bytes.fromhex("80cc0002") + b"nameabcd")


RTP_TOKENS = (
    b"\x80\x00",
    b"\x80\x08",
    b"\x90\x00",
    b"\xa0\x00",
    b"\xbf\x00",
    b"\x80\xc8",
    b"\x81\xc9\x00\x07",
    b"\x81\xca\x00\x02",
    b"\x81\xcb\x00\x01",
    b"\xbe\xde\x00\x01",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00",
    SEP,
)


def run_rtp(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        return
    again = RtpPacket.parse(bytes(packet))
    if again != packet:
        raise Finding("a parsed RTP packet does not survive serialize + parse unchanged")


def run_rtcp(data: bytes) -> None:
    try:
        parse_rtcp(data)
    except RtpError:
        return


SRTP_KEYS = SrtpKeys("AES_CM_128_HMAC_SHA1_80", "inline:" + SUITE_KEYS[CryptoSuite.AES_CM_128_HMAC_SHA1_80])
GCM_KEYS = SrtpKeys("AEAD_AES_128_GCM", "inline:" + SUITE_KEYS[CryptoSuite.AEAD_AES_128_GCM])


@functools.cache
def srtp_seeds() -> tuple[bytes, ...]:
    out = []
    for keys in (SRTP_KEYS, GCM_KEYS):
        sender = SrtpSender(keys)
        packets = [sender.protect(_rtp(seq, seq * 160)) for seq in range(1, 4)]
        out.append(SEP.join(packets))
        out.append(SEP.join([*packets, packets[1], sender.protect_rtcp(rtcp_seeds()[1])]))
    return tuple(out)


def run_srtp(data: bytes) -> None:
    """SRTP/SRTCP unprotect of forged, tampered and replayed packets: SrtpError and nothing else."""
    receivers = (SrtpReceiver(SRTP_KEYS), SrtpReceiver(GCM_KEYS))
    for packet in data.split(SEP):
        for receiver in receivers:
            for unprotect in (receiver.unprotect, receiver.unprotect_rtcp):
                with contextlib.suppress(SrtpError):
                    unprotect(packet)


SRTP_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM", "AEAD_AES_256_GCM")


@functools.cache
def key_params_seeds() -> tuple[bytes, ...]:
    key80 = SUITE_KEYS[CryptoSuite.AES_CM_128_HMAC_SHA1_80]
    return (
        f"AES_CM_128_HMAC_SHA1_80 inline:{key80}".encode(),
        f"AES_CM_128_HMAC_SHA1_32 inline:{key80}|2^20|1:4".encode(),
        f"AEAD_AES_128_GCM inline:{SUITE_KEYS[CryptoSuite.AEAD_AES_128_GCM].rstrip('=')}|1048576".encode(),
        b"AEAD_AES_256_GCM inline:" + base64.b64encode(bytes(44)),
    )


def run_srtp_key_params(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    suite, _, key_params = text.partition(" ")
    for name in (suite, *SRTP_SUITES):
        with contextlib.suppress(SrtpError):
            parse_key_params(name, key_params)


def _fork(
    fork_id: str,
    *,
    send: Callable[[memoryview | bytes], object],
    rtcp: Callable[[bytes], object],
    srtp: SrtpKeys | None = None,
    rewrite: bool = True,
    paused: bool = False,
    remote_srtcp: SrtpKeys | None = None,
) -> ForkPipeline:
    spec = ForkSpec(
        fork_id=fork_id,
        call_id="c",
        leg=Leg.INBOUND,
        local=("127.0.0.1", 30000),
        remote_rtp=("127.0.0.1", 40000),
        remote_rtcp=("127.0.0.1", 40001),
        ssrc=0x5EC0DE,
        payload_map=((0, 0), (8, 8), (101, 101)) if not rewrite else ((0, 0), (8, 9), (101, 96)),
        srtp=srtp,
        paused=paused,
        rewrite=rewrite,
        remote_srtcp=remote_srtcp,
    )
    return ForkPipeline(
        spec, send_rtp=send, send_rtcp=rtcp, emit=lambda event: None, now=0.0, rng=random.Random(3)
    )


@functools.cache
def datagram_seeds() -> tuple[bytes, ...]:
    plain = [_rtp(seq, seq * 160) for seq in range(10, 16)]
    reordered = [plain[0], plain[2], plain[1], plain[1], _rtp(9000, 1, ssrc=99), _rtp(9001, 161, ssrc=99)]
    sender = SrtpSender(SRTP_KEYS)
    secured = [sender.protect(packet) for packet in plain[:4]]
    return (
        SEP.join(plain),
        SEP.join(reordered),
        SEP.join([*rtp_seeds(), *rtcp_seeds()[:2]]),
        SEP.join(secured),
    )


def run_leg_receiver(data: bytes) -> None:
    """A tap port receiving the input's datagrams: nothing raises, and every datagram is counted once."""
    datagrams = data.split(SEP)
    _run_leg(datagrams, None)
    _run_leg(datagrams, SRTP_KEYS)


def _run_leg(datagrams: list[bytes], keys: SrtpKeys | None) -> None:
    queue = list(datagrams)
    good: Address = ("192.0.2.1", 4000)
    intruder: Address = ("192.0.2.66", 4000)
    sources = [intruder if zlib.crc32(packet) % 11 == 0 else good for packet in queue]

    def recv_into(buffer: bytearray) -> tuple[int, Address]:
        if not queue:
            raise BlockingIOError
        packet = queue.pop(0)[: len(buffer)]  # a socket cuts what does not fit
        buffer[: len(packet)] = packet
        return len(packet), sources[len(datagrams) - len(queue) - 1]

    events: list[MediaEvent] = []
    sent: dict[str, list[bytes]] = {"plain": [], "rewrite": [], "srtp": []}
    leg = LegReceiver(
        LegSpec("c", Leg.INBOUND, srtp=keys), bytearray(BUFFER_SIZE), events.append, 0.0, 0.5, recv_into
    )
    forks = {
        "plain": _fork(
            "plain",
            send=lambda view: sent["plain"].append(bytes(view)),
            rtcp=lambda packet: None,
            rewrite=False,
        ),
        "rewrite": _fork(
            "rewrite", send=lambda view: sent["rewrite"].append(bytes(view)), rtcp=lambda packet: None
        ),
        "srtp": _fork(
            "srtp",
            send=lambda view: sent["srtp"].append(bytes(view)),
            rtcp=lambda packet: None,
            srtp=SRTP_KEYS,
        ),
        "paused": _fork("paused", send=lambda view: None, rtcp=lambda packet: None, paused=True),
    }
    for fork in forks.values():
        leg.attach(fork)
    listener = _fork("rtcp", send=lambda view: None, rtcp=lambda packet: None, remote_srtcp=SRTP_KEYS)
    now = 0.0
    for index, packet in enumerate(datagrams):
        now += 0.02 if index % 13 else 0.7  # now and then a silence long enough to re-base
        if not leg.on_readable(now):
            raise Finding("on_readable found no datagram although one was queued")
        listener.receive_rtcp(packet, now)
        leg.on_timer(now, 1.7e9 + now)
        for fork in forks.values():
            fork.on_timer(now, 1.7e9 + now)
    if leg.on_readable(now + 1):
        raise Finding("on_readable reported a datagram on an empty socket")
    counted = leg.packets + leg.malformed + leg.rtcp_packets + leg.rejected_source + leg.srtp_failures
    if counted != len(datagrams):
        raise Finding(f"{len(datagrams)} datagrams received, {counted} counted")
    for name, fork in forks.items():
        # srtp_failures: a packet SRTP refused to protect (a late one whose index was used).
        fate = fork.packets_sent + fork.dropped_payload_type + fork.dropped_paused + fork.send_errors
        fate += fork.srtp_failures
        if fate != leg.packets:
            raise Finding(f"fork {name}: {leg.packets} packets given, {fate} accounted for")
    for name in ("plain", "rewrite"):
        for packet in sent[name]:
            try:
                out = RtpPacket.parse(packet)
            except RtpError as exc:
                raise Finding(f"fork {name} forwarded a packet that is not RTP: {exc.reason}") from exc
            if name == "rewrite" and out.ssrc != 0x5EC0DE:
                raise Finding("the rewriting fork sent another SSRC than its own")
    for fork in forks.values():
        fork.close(now + 1, 1.7e9 + now + 1)


JITTER_RECORD = struct.Struct("!BHIBHB")


def _jitter_records(data: bytes) -> list[tuple[int, int, int, int, float, int]]:
    """11-byte records: SSRC selector, sequence, timestamp, payload type, arrival step (ms), flags.

    Flags: 0x80 not audio, 0x40 the selector is the SSRC (else one of three), 0x20 poll later,
    0x10 flush (a pause), 0x0F payload length.
    """
    out = []
    for offset in range(0, len(data) - JITTER_RECORD.size + 1, JITTER_RECORD.size):
        selector, seq, ts, pt, step, flags = JITTER_RECORD.unpack_from(data, offset)
        ssrc = selector if flags & 0x40 else (0xA1, 0xB2, 0xC3)[selector % 3]
        out.append((ssrc, seq, ts, pt & 0x7F, step / 1000.0, flags))
    return out


@functools.cache
def jitter_seeds() -> tuple[bytes, ...]:
    def records(rows: Iterable[tuple[int, int, int, int, int, int]]) -> bytes:
        return b"".join(JITTER_RECORD.pack(*row) for row in rows)

    steady = [(0, seq, seq * 160, 0, 20, 0) for seq in range(1, 40)]
    shuffled = [steady[i] for i in (0, 2, 1, 4, 3, 3, 7, 5, 6, 9)]
    restart = [*steady[:5], (0, 40000, 7, 0, 20, 0), (0, 40001, 167, 0, 20, 0), (1, 5, 5, 8, 5, 0)]
    events = [(0, seq, 800, 101, 50, 0x80) for seq in range(50, 60)]
    churn = [(seq % 256, seq, seq * 160, 0, 1, 0x40) for seq in range(100)]
    return tuple(records(rows) for rows in (steady, shuffled, restart, events, churn))


# Bounds the buffer must keep whatever arrives (the SRS keeps one per recorded stream for hours).
JITTER_BOUNDS = {"held": 16, "received": 2 * DUPLICATE_WINDOW + 1, "sources": MAX_SOURCES}


def run_jitter(data: bytes) -> None:
    """Random packet sequences: no exception, every packet accounted for, bounded state, sane timeline."""
    buffer = JitterBuffer(max_packets=3, depth=0.06)
    now = 0.0
    out: list[Frame | Gap] = []
    records = _jitter_records(data)
    for ssrc, seq, ts, pt, step, flags in records:
        now += step
        packet = RtpPacket(pt, seq, ts, ssrc, b"\x00" * (flags & 0x0F))
        out += buffer.push(packet, now, audio=not flags & 0x80)
        if flags & 0x20:
            out += buffer.poll(now + 0.05)
        if flags & 0x10:
            out += buffer.flush()
        _check_jitter_bounds(buffer)
    out += buffer.flush()
    stats = buffer.stats()
    frames = [item for item in out if isinstance(item, Frame)]
    fates = len(frames) + stats.duplicates + stats.late + stats.out_of_window
    if fates != stats.packets or stats.packets != len(records):
        raise Finding(f"{len(records)} packets pushed, {fates} accounted for ({stats})")
    last = None
    for item in out:
        if isinstance(item, Gap) and (item.duration < 0 or item.packets <= 0):
            raise Finding(f"impossible gap {item}")
        if isinstance(item, Frame) and item.audio:
            if last is not None and item.position < last:
                raise Finding(f"the timeline went back from {last} to {item.position}")
            last = item.position


def _check_jitter_bounds(buffer: JitterBuffer) -> None:
    sizes = {
        "held": len(buffer._held),
        "received": len(buffer._received),
        "sources": max(len(buffer._left), len(buffer._ssrcs)),
    }
    for name, size in sizes.items():
        if size > JITTER_BOUNDS[name]:
            raise Finding(f"the jitter buffer's {name} state grew to {size} entries")


# --- the SRS's INVITE handling ------------------------------------------------------------------------


def run_srs_invite(data: bytes) -> None:
    """What the reference SRS does with an out-of-dialog INVITE and an in-dialog update body."""
    try:
        request = parse_message(data)
    except SipParseError:
        return
    if not isinstance(request, Request):
        return
    check_recording_invite(request)
    verdict = _read_invite(request, 90)
    if isinstance(verdict, Refusal) and not 400 <= verdict.status <= 699:
        raise Finding(f"refusal with status {verdict.status}")
    with contextlib.suppress(RemoteProtocolError):
        _read_update_body(request)


# --- config, TwiML, stream wire formats, WAV ------------------------------------------------------------


@functools.cache
def config_seeds() -> tuple[bytes, ...]:
    found = [path.read_bytes() for path in sorted((REPO / "configs").glob("*.toml"))]
    found.append(
        b'[control]\ntoken = "${SIPREC_TOKEN}"\n[connectors.a]\nsrs = ["sip:srs@127.0.0.1;edge=x"]\n'
    )
    return tuple(found)


CONFIG_TOKENS = (
    b"[control]\n",
    b"[sip]\n",
    b"[sip.tls]\n",
    b"[media]\n",
    b"[edges.e]\n",
    b"[connectors.c]\n",
    b"[[connectors.c.headers]]\n",
    b'srs = ["sips:srs@[::1]:5061;edge=e"]\n',
    b'listen = ["udp:0.0.0.0:5060", "tls:[::]:5061"]\n',
    b'port_range = "10000-10001"\n',
    b"session_timeout = ",
    b"workers = ",
    b'"${UNDEFINED}"',
    b'"${SIPREC_TOKEN}"',
    b"= true\n",
    b"= 1e400\n",
    b"= nan\n",
    b"= -inf\n",
    b"= 1979-05-27T07:32:00Z\n",
    b"= [[]]\n",
    b"= {}\n",
    b'= """\n',
    b"'''",
    b"\\u0000",
    *NUMBERS,
)


def run_config(data: bytes) -> None:
    from siprec_src.config import parse_config

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # load_config refuses the file before parsing (ConfigFileError)
    try:
        parse_config(
            text,
            file="fuzz.toml",
            environ={"SIPREC_TOKEN": "fuzz-token-0123456789abcdef"},
            base_dir=REPO / "configs",
        )
    except ConfigError:
        return


@functools.cache
def twiml_seeds() -> tuple[bytes, ...]:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Response>\n  <Start>\n'
        b'    <Siprec name="my_stream_1" connectorName="Gridspace_1" track="outbound_track"\n'
        b'            statusCallback="https://example.com/siprec" statusCallbackMethod="GET">\n'
        b'      <Parameter name="Custom1" value="Bob"/>\n    </Siprec>\n  </Start>\n'
        b'  <Stop><Siprec name="my_stream_1"/></Stop>\n</Response>\n',
        b"<Response><Say>hello</Say><Start><Stream url='wss://x'/></Start></Response>",
        b'<Response><Start><Stream name="bot" url="wss://bot.example.com/media" track="both_tracks">'
        b'<Parameter name="a" value="b"/></Stream></Start><Connect><Stream url="wss://x.example/y"/>'
        b'</Connect><Stop><Siprec name="my_stream_1"/><Stream name="bot"/></Stop></Response>',
        BILLION_LAUGHS.replace(b"recording", b"Response"),
    )


@functools.cache
def plivo_xml_seeds() -> tuple[bytes, ...]:
    return (
        b'<Response>\n  <Stream bidirectional="false" audioTrack="both" streamTimeout="120"\n'
        b'          statusCallbackUrl="https://example.com/events" statusCallbackMethod="POST"\n'
        b'          contentType="audio/x-l16;rate=16000" extraHeaders="test1=12,test2=123">\n'
        b"    wss://yourstream.websocket.io/audiostream\n  </Stream>\n</Response>\n",
        b'<Response><Stream bidirectional="true" keepCallAlive="true" contentType="audio/x-mulaw;rate=8000">'
        b"wss://a.example/b?c=d</Stream><Speak>hi</Speak></Response>",
    )


def run_plivo_xml(data: bytes) -> None:
    from siprec_src.control.plivo import PlivoXmlError, parse_plivo_xml

    with contextlib.suppress(PlivoXmlError):
        parse_plivo_xml(data.decode("utf-8", "replace"))


def run_twiml(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    for limit in (4000, 1 << 20):
        with contextlib.suppress(TwimlError):
            parse_twiml(text, max_chars=limit)


STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
PLIVO_ID = "20170ada-f610-433b-8758-c02a2aab3662"


@functools.cache
def wire_seeds() -> tuple[bytes, ...]:
    payload = base64.b64encode(b"\xff" * 160).decode()
    wav = base64.b64encode(wav_seeds()[0]).decode()
    return (
        f'{{"event": "media", "streamSid": "{STREAM_SID}", "media": {{"payload": "{payload}"}}}}'.encode(),
        f'{{"event": "mark", "streamSid": "{STREAM_SID}", "mark": {{"name": "greeting"}}}}'.encode(),
        f'{{"event": "clear", "streamSid": "{STREAM_SID}"}}'.encode(),
        (
            f'{{"event": "playAudio", "media": {{"contentType": "audio/x-l16", "sampleRate": 16000, '
            f'"payload": "{base64.b64encode(bytes(640)).decode()}"}}}}'
        ).encode(),
        (
            f'{{"event": "playAudio", "streamId": "{PLIVO_ID}", "media": {{"contentType": "wav", '
            f'"sampleRate": "8000", "payload": "{wav}"}}}}'
        ).encode(),
        f'{{"event": "checkpoint", "streamId": "{PLIVO_ID}", "name": "c1"}}'.encode(),
        f'{{"event": "clearAudio", "streamId": "{PLIVO_ID}"}}'.encode(),
    )


WIRE_TOKENS = (
    b'"event"',
    b'"media"',
    b'"payload"',
    b'"streamSid"',
    b'"streamId"',
    b'"sampleRate"',
    b'"contentType"',
    b'"raw"',
    b'"audio/x-mulaw"',
    b'"wav"',
    b"null",
    b"true",
    b"[",
    b"]",
    b"{",
    b"}",
    b"[" * 3000,
    b'"\\ud800"',
    b'"\\u0000"',
    b"1e999",
    b"-0",
    b"1" * 5000,
)


def run_twilio_wire(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    try:
        message = twilio_wire.decode_server_message(text, stream_sid=STREAM_SID)
    except MalformedMessageError:
        return
    if isinstance(message, twilio_wire.MediaReceived):
        _ = message.samples


PLIVO_FORMATS = (AudioFormat(Encoding.L16, 16000), AudioFormat(Encoding.PCMU, 8000))


def run_plivo_wire(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    for stream_format in PLIVO_FORMATS:
        with contextlib.suppress(MalformedMessageError):
            plivo_wire.decode_server_message(text, stream_id=PLIVO_ID, stream_format=stream_format)


def _wav(tag: int, rate: int, bits: int, data: bytes, extra: bytes = b"") -> bytes:
    block = bits // 8
    fmt = struct.pack("<HHIIHH", tag, 1, rate, rate * block, block, bits) + extra
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"LIST" + struct.pack("<I", 3) + b"abc\x00"
    chunks += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


@functools.cache
def wav_seeds() -> tuple[bytes, ...]:
    extensible = struct.pack("<HHI", 22, 16, 4) + struct.pack("<H", 1) + bytes(14)
    return (
        _wav(7, 8000, 8, b"\xff" * 160),
        _wav(1, 16000, 16, bytes(640)),
        _wav(6, 8000, 8, b"\xd5" * 81),
        _wav(0xFFFE, 8000, 16, bytes(320), extensible),
    )


def run_wav(data: bytes) -> None:
    try:
        decode_wav(data)
    except AudioDecodeError:
        return


# --- the registry ---------------------------------------------------------------------------------------


def _with_corpus(name: str, seeds: Callable[[], tuple[bytes, ...]]) -> Callable[[], tuple[bytes, ...]]:
    """The seeds, plus the regression inputs found for this target (they reach deep paths)."""

    @functools.cache
    def both() -> tuple[bytes, ...]:
        return seeds() + _corpus_files(name)

    return both


def _target(
    name: str,
    about: str,
    run: Callable[[bytes], None],
    seeds: Callable[[], tuple[bytes, ...]],
    tokens: tuple[bytes, ...] = (),
    max_len: int = 65536,
) -> Target:
    return Target(name, about, run, _with_corpus(name, seeds), tokens, max_len)


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        _target(
            "sip_message",
            "parse_message + every typed header view + check_request; serialize+parse is stable; "
            "a UAS answer to any parsed request parses",
            run_sip_message,
            sip_seeds,
            SIP_TOKENS,
        ),
        _target(
            "sip_framer",
            "StreamFramer over a TCP byte stream: same messages in one piece or in chunks, "
            "never buffers past max_message_size, Content-Length abuse is a FramingError",
            run_sip_framer,
            lambda: (b"\r\n\r\n".join(torture_messages()[:8]), *sip_seeds()),
            SIP_TOKENS,
        ),
        _target(
            "sip_uri",
            "parse_uri on each line; str() + parse gives the same URI",
            run_sip_uri,
            lambda: (
                b"sip:alice:pw@[2001:db8::1]:5061;transport=tls;lr?subject=hi&x=%20\nsips:a@b\ntel:+1-555",
            ),
            SIP_TOKENS,
            max_len=16384,
        ),
        _target(
            "sip_headers",
            "Via, CSeq, Call-ID, Date, Expires, params, name-addr parsers on each line; addresses round-trip",
            run_sip_headers,
            lambda: (
                b'SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1;received=1.2.3.4\n"A \\" B" <sip:a@b;lr>;tag=x\n'
                b'314159 INVITE\nf81d4fae-7dec@foo.bar.com\nSat, 13 Nov 2010 23:29:00 GMT\n;a=b;c;d="q"\n'
                b"sip:a@b;tag=1",
            ),
            SIP_TOKENS,
            max_len=16384,
        ),
        _target(
            "sip_auth",
            "parse_challenge, DigestSession.answer (no line break, verifies) and verify_authorization",
            run_sip_auth,
            lambda: (
                b'Digest realm="srs.example.com", nonce="abc/+=", qop="auth,auth-int", algorithm=SHA-256, '
                b'opaque="o", stale=TRUE\nDigest realm=r, nonce=n, algorithm=MD5-sess, qop=auth\n'
                b'Digest username="src", realm="r", nonce="n", uri="sip:a@b", response="0123", '
                b'qop=auth, nc=00000001, cnonce="c"',
            ),
            SIP_TOKENS,
            max_len=16384,
        ),
        _target(
            "sip_ua_auth",
            "a UAC receiving 401/407 with any challenge lines: retries or gives up, never raises",
            run_sip_ua_auth,
            lambda: (
                b'Digest realm="srs", nonce="n1", qop="auth", algorithm=SHA-256',
                b'Basic realm="x"\nDigest realm="srs", nonce="n1"',
                b'7Digest realm="a", nonce="b", algorithm=MD5-sess, qop="auth-int"',
            ),
            SIP_TOKENS,
            max_len=16384,
        ),
        _target(
            "multipart",
            "decode_multipart of (Content-Type line, body): MultipartError only, 1..MAX_PARTS parts",
            run_multipart,
            multipart_seeds,
            (b"--", b"--siprec-boundary", b"--unique-boundary-1--", b"Content-Type: ", b"c: ", b"\r\n\r\n"),
        ),
        _target(
            "sdp",
            "parse_sdp + every attribute accessor; serialize+parse is stable",
            run_sdp,
            sdp_seeds,
            SDP_TOKENS,
        ),
        _target(
            "sdp_offer",
            "the SRS answering any offer (build_answer_for_srs); its answer passes process_answer",
            run_sdp_offer,
            sdp_seeds,
            SDP_TOKENS,
        ),
        _target(
            "sdp_answer",
            "the SRC reading any answer (process_answer) and any SRS offer (answer_srs_offer)",
            run_sdp_answer,
            sdp_seeds,
            SDP_TOKENS,
        ),
        _target(
            "metadata",
            "read_metadata: MetadataError only (bombs, XXE, DTDs, deep nesting refused)",
            run_metadata,
            metadata_seeds,
            XML_TOKENS,
        ),
        _target(
            "siprec_body",
            "read_siprec_body of (Content-Type line, multipart body), then parse_sdp of its SDP",
            run_siprec_body,
            multipart_seeds,
            (*XML_TOKENS, *SDP_TOKENS[:10], b"--", b"Content-Disposition: recording-session\r\n"),
        ),
        _target("rtp", "RtpPacket.parse; serialize+parse is stable", run_rtp, rtp_seeds, RTP_TOKENS, 4096),
        _target(
            "rtcp", "parse_rtcp of compound packets: RtpError only", run_rtcp, rtcp_seeds, RTP_TOKENS, 4096
        ),
        _target(
            "srtp",
            "SrtpReceiver.unprotect / unprotect_rtcp (AES-CM and GCM) of forged, tampered, replayed packets",
            run_srtp,
            srtp_seeds,
            RTP_TOKENS,
            max_len=8192,
        ),
        _target(
            "srtp_key_params",
            "parse_key_params of a=crypto key-params for every suite: SrtpError only",
            run_srtp_key_params,
            key_params_seeds,
            (b"inline:", b"|", b"2^", b":", b";inline:", b"=", *NUMBERS),
            max_len=2048,
        ),
        _target(
            "leg_receiver",
            "LegReceiver (RTP and SRTP legs, 4 forks) fed datagrams through a fake socket: never raises, "
            "every datagram counted once, forks forward only valid RTP",
            run_leg_receiver,
            datagram_seeds,
            RTP_TOKENS,
            max_len=8192,
        ),
        _target(
            "jitter",
            "JitterBuffer with random packet sequences: every packet accounted for, bounded state, "
            "timeline never goes back",
            run_jitter,
            jitter_seeds,
            (b"\x00" * 11, b"\xff" * 11, b"\x40", b"\x80", b"\x10", b"\x20"),
            max_len=11 * 120,
        ),
        _target(
            "srs_invite",
            "the SRS reading an INVITE: check_recording_invite, _read_invite (a Refusal, never an "
            "exception), _read_update_body",
            run_srs_invite,
            invite_seeds,
            (*SIP_TOKENS, *SDP_TOKENS[:10], *XML_TOKENS[:10]),
        ),
        _target(
            "config",
            "parse_config of mutated TOML: ConfigError family only",
            run_config,
            config_seeds,
            CONFIG_TOKENS,
        ),
        _target("twiml", "parse_twiml (bombs too): TwimlError only", run_twiml, twiml_seeds, XML_TOKENS),
        _target(
            "plivo_xml",
            "parse_plivo_xml of Plivo <Stream> documents (bombs too): PlivoXmlError only",
            run_plivo_xml,
            plivo_xml_seeds,
            (
                *XML_TOKENS,
                b"<Stream>",
                b"</Stream>",
                b'bidirectional="true"',
                b'audioTrack="inbound"',
                b'contentType="audio/x-l16;rate=8000"',
                b'extraHeaders="a=1,b=2"',
                b"wss://",
                b"ws://",
            ),
        ),
        _target(
            "twilio_wire",
            "Twilio <Stream> decode_server_message: MalformedMessageError only",
            run_twilio_wire,
            wire_seeds,
            WIRE_TOKENS,
        ),
        _target(
            "plivo_wire",
            "Plivo <Stream> decode_server_message (raw, L16, µ-law, WAV): MalformedMessageError only",
            run_plivo_wire,
            wire_seeds,
            WIRE_TOKENS,
        ),
        _target(
            "wav",
            "decode_wav: AudioDecodeError only",
            run_wav,
            wav_seeds,
            (b"RIFF", b"WAVE", b"fmt ", b"data", b"LIST", b"\xfe\xff", b"\x07\x00", b"\xff\xff\xff\x7f"),
        ),
    )
}


def _selftest(data: bytes) -> None:
    if b"boom" in data:
        raise ValueError("the self-test target found its planted bug")


# Not fuzzed by default (its name starts with "_"): a planted bug that proves the drivers catch,
# save and report crashes (test_fuzz_corpus.py runs it; ``--targets _selftest`` shows it by hand).
SELFTEST = Target(
    "_selftest",
    "a planted bug: ValueError on any input holding b'boom'",
    _selftest,
    lambda: (b"bo", b"om"),
    (b"om", b"boo"),
)


def target_named(name: str) -> Target:
    return SELFTEST if name == SELFTEST.name else TARGETS[name]


# --- the long run ---------------------------------------------------------------------------------------

INPUT_TIMEOUT = 10  # seconds one input may take before it counts as a hang
RSS_LIMIT_MB = 2048  # a target process growing past this is a memory finding
MAX_RESTARTS = 5  # libFuzzer stops at a crash: it is restarted this often within the target's time
# Imported by their targets when they run (so the short suite does not depend on them to load).
LAZY_MODULES = ("siprec_src.config", "siprec_src.control.plivo")
# The atheris child instruments siprec_src as it is imported, before anything else imports it
# (the lazily imported modules too: coverage is only seen in instrumented code).
ATHERIS_CHILD = (
    "import importlib, sys, atheris\n"
    "with atheris.instrument_imports(include=['siprec_src']):\n"
    "    import tests.robustness.run as run\n"
    "    for module in run.LAZY_MODULES:\n"
    "        importlib.import_module(module)\n"
    "run.atheris_child(sys.argv[1], int(sys.argv[2]), sys.argv[3])\n"
)


@dataclass(slots=True)
class Crash:
    """One distinct failure of a target: where it comes from, what it said, the input that did it."""

    kind: str
    message: str
    file: str = ""  # the saved input (empty when there is none, e.g. a memory finding)
    input_base64: str = ""  # its first 4 KiB


@dataclass(slots=True)
class RunResult:
    """What fuzzing one target for a while gave."""

    target: str
    about: str
    engine: str
    seeds: int
    seconds: float = 0.0  # wall-clock, process start-up included
    fuzz_seconds: float = 0.0  # spent running inputs
    inputs: int = 0
    crashes: list[Crash] = field(default_factory=list)
    coverage: dict[str, int] = field(default_factory=dict)  # atheris: edges, features, corpus
    slowest_input_seconds: float | None = None  # the built-in engine times each input
    peak_rss_mb: float | None = None

    @property
    def inputs_per_second(self) -> float:
        return self.inputs / self.fuzz_seconds if self.fuzz_seconds > 0 else 0.0

    def as_json(self) -> dict[str, object]:
        out = {name: getattr(self, name) for name in self.__slots__ if name != "crashes"}
        out["inputs_per_second"] = round(self.inputs_per_second, 1)
        out["crashes"] = [{name: getattr(crash, name) for name in crash.__slots__} for crash in self.crashes]
        return out


class Hang(BaseException):
    """Raised by the per-input timer of the built-in engine (a BaseException: no target catches it)."""


def _crash_key(exc: BaseException) -> str:
    """Where an exception comes from: its type and the innermost frame in siprec_src."""
    frames = [
        f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"
        for frame in traceback.extract_tb(exc.__traceback__)
        if "siprec_src" in frame.filename
    ]
    return f"{type(exc).__name__} at {frames[-1] if frames else 'the target'}"


def mutate_child(name: str, seconds: float, workdir: Path, seed: int) -> None:
    """The built-in engine, in the target's own process: random edits of the seeds for ``seconds``.

    Each input runs under a ``setitimer`` alarm (a hang is a finding, with its input saved) and
    the peak RSS is checked every 32 inputs. Writes ``result.json`` into ``workdir``.
    """
    target = target_named(name)
    rng = random.Random(seed)

    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"one input ran for more than {INPUT_TIMEOUT} s")

    signal.signal(signal.SIGALRM, alarm)
    crashes: dict[str, Crash] = {}
    inputs = 0
    slowest = 0.0
    peak_mb = 0.0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        for _ in range(32):
            data = random_input(target, rng)
            begin = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, INPUT_TIMEOUT)
            try:
                target.run(data)
            except (Exception, Hang) as exc:
                key = _crash_key(exc)
                if key not in crashes:
                    path = workdir / f"crash-{len(crashes)}"
                    path.write_bytes(data)
                    crashes[key] = Crash(key, f"{type(exc).__name__}: {exc}"[:500], str(path))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            slowest = max(slowest, time.perf_counter() - begin)
            inputs += 1
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if peak_mb > RSS_LIMIT_MB:
            crashes["memory"] = Crash("memory", f"RSS grew to {peak_mb:.0f} MB (limit {RSS_LIMIT_MB} MB)")
            break
    result = RunResult(name, target.about, "mutate", len(target.seeds()))
    result.fuzz_seconds = time.monotonic() - started
    result.inputs = inputs
    result.crashes = list(crashes.values())
    result.slowest_input_seconds = round(slowest, 4)
    result.peak_rss_mb = round(peak_mb, 1)
    (workdir / "result.json").write_text(json.dumps(result.as_json()), encoding="utf-8")


def _dict_line(token: bytes) -> str:
    """A libFuzzer dictionary entry: the token, quoted, with \\xNN escapes."""
    escaped = "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}" for b in token)
    return f'"{escaped}"'


def atheris_child(name: str, seconds: int, workdir: str) -> None:
    """Coverage-guided: libFuzzer's own mutations and ours (half each), from the target's seeds."""
    import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

    target = target_named(name)
    work = Path(workdir)
    seeds_dir = work / "seeds"
    corpus_dir = work / "corpus"  # what libFuzzer keeps across restarts within one target
    seeds_dir.mkdir(exist_ok=True)
    corpus_dir.mkdir(exist_ok=True)
    pool = target.seeds()
    for index, seed in enumerate(pool):
        (seeds_dir / f"seed-{index:03d}").write_bytes(seed)
    tokens = [token for token in (*target.tokens, *COMMON_TOKENS) if 0 < len(token) <= 64]
    dictionary = work / "tokens.dict"
    dictionary.write_text("\n".join(_dict_line(token) for token in tokens) + "\n", encoding="ascii")

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            return bytes(atheris.Mutate(data, max_size))
        return mutate(data, random_ops(rng), pool, target.tokens)[:max_size]

    atheris.Setup(
        [
            "fuzz-" + name,
            f"-max_total_time={seconds}",
            f"-timeout={INPUT_TIMEOUT}",
            f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-max_len={target.max_len}",
            f"-artifact_prefix={work}/",
            f"-dict={dictionary}",
            "-print_final_stats=1",
            str(corpus_dir),
            str(seeds_dir),
        ],
        target.run,
        custom_mutator=custom_mutator,
    )
    atheris.Fuzz()


def atheris_available(python: str = sys.executable) -> bool:
    return subprocess.run([python, "-c", "import atheris"], capture_output=True, check=False).returncode == 0


@dataclass(slots=True)
class LibFuzzerRun:
    inputs: int
    seconds: float
    coverage: dict[str, int]
    crash: str | None  # the uncaught exception (or libFuzzer's own verdict: timeout, out-of-memory)


_EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]*(?:Error|Exception|Finding|Hang|Exit|Interrupt)\b"
)


def parse_libfuzzer(log: str) -> LibFuzzerRun:
    """What a libFuzzer (atheris) run printed: inputs run, time, coverage, and the crash if any."""
    executed = [int(n) for n in re.findall(r"stat::number_of_executed_units: (\d+)", log)]
    progress = [int(n) for n in re.findall(r"^#(\d+)\s", log, re.M)]
    done = re.findall(r"Done (\d+) runs in (\d+) second", log)
    inputs = max(executed or progress or [0])
    seconds = float(done[-1][1]) if done else 0.0
    coverage: dict[str, int] = {}
    found = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)/", log)
    if found:
        cov, ft, corp = found[-1]
        coverage = {"edges": int(cov), "features": int(ft), "corpus": int(corp)}
    crash = None
    if "Uncaught Python exception" in log:
        after = log.split("Uncaught Python exception", 1)[1].splitlines()
        crash = next((line for line in after if _EXCEPTION_LINE.match(line)), "uncaught Python exception")
    elif (verdict := re.search(r"ERROR: libFuzzer: ([^\n]+)", log)) is not None:
        crash = verdict.group(1).strip()
    return LibFuzzerRun(inputs, seconds, coverage, crash)


def _run_mutate(result: RunResult, seconds: int, seed: int, work: Path) -> None:
    command = [sys.executable, "-m", "tests.robustness.run", "--child", result.target]
    command += ["--seconds-per-target", str(seconds), "--workdir", str(work), "--seed", str(seed)]
    proc = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    report = work / "result.json"
    if not report.is_file():
        tail = (proc.stderr or proc.stdout)[-2000:]
        result.crashes.append(Crash("process", f"the fuzzing process exited {proc.returncode}: {tail}"))
        return
    child = json.loads(report.read_text(encoding="utf-8"))
    result.inputs = int(child["inputs"])
    result.fuzz_seconds = float(child["fuzz_seconds"])
    result.slowest_input_seconds = child["slowest_input_seconds"]
    result.peak_rss_mb = child["peak_rss_mb"]
    result.crashes = [Crash(**crash) for crash in child["crashes"]]


def _run_atheris(result: RunResult, seconds: int, work: Path) -> None:
    started = time.monotonic()
    seen: set[Path] = set()
    for _ in range(MAX_RESTARTS + 1):
        left = int(seconds - (time.monotonic() - started))
        if left < 1:
            return
        command = [sys.executable, "-c", ATHERIS_CHILD, result.target, str(left), str(work)]
        begin = time.monotonic()
        proc = subprocess.run(
            command,
            cwd=REPO,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=left + 120,
            check=False,
        )
        run = parse_libfuzzer(proc.stdout + proc.stderr)
        result.inputs += run.inputs
        # libFuzzer says how long it fuzzed unless it stopped at a crash: then the process's time.
        result.fuzz_seconds += run.seconds or time.monotonic() - begin
        result.coverage = run.coverage or result.coverage
        if run.crash is None and proc.returncode == 0:
            return
        artifacts = [path for kind in ("crash", "timeout", "oom") for path in sorted(work.glob(f"{kind}-*"))]
        fresh = [path for path in artifacts if path not in seen]
        seen.update(fresh)
        kind = run.crash or f"the fuzzing process exited {proc.returncode}"
        if all(crash.kind != kind for crash in result.crashes):
            result.crashes.append(Crash(kind, kind, str(fresh[0]) if fresh else ""))


def run_target(name: str, seconds: int, engine: str, seed: int, crash_dir: Path) -> RunResult:
    """Fuzz one target for ``seconds`` in a process of its own; crashing inputs go to ``crash_dir``."""
    target = target_named(name)
    result = RunResult(name, target.about, engine, len(target.seeds()))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as tmp:
        if engine == "mutate":
            _run_mutate(result, seconds, seed, Path(tmp))
        else:
            _run_atheris(result, seconds, Path(tmp))
        result.crashes = [_keep(name, crash, crash_dir) for crash in result.crashes]
    result.seconds = round(time.monotonic() - started, 1)
    result.fuzz_seconds = round(result.fuzz_seconds, 1)
    return result


def _keep(name: str, crash: Crash, crash_dir: Path) -> Crash:
    """Copy a crashing input out of the temporary directory (content-addressed), to join the corpus."""
    source = Path(crash.file)
    if not crash.file or not source.is_file():
        return crash
    data = source.read_bytes()
    crash_dir.mkdir(parents=True, exist_ok=True)
    path = crash_dir / f"{name}-{hashlib.sha1(data).hexdigest()[:12]}"
    path.write_bytes(data)
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    return Crash(crash.kind, crash.message, str(shown), base64.b64encode(data[:4096]).decode("ascii"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.robustness.run",
        description="Fuzz every parser that reads untrusted bytes, for a bounded time per target.",
    )
    parser.add_argument("--seconds-per-target", type=int, default=60, help="default 60")
    parser.add_argument("--targets", default="", help="comma-separated names (default: all; see --list)")
    parser.add_argument(
        "--engine",
        choices=("auto", "atheris", "mutate"),
        default="auto",
        help="atheris (coverage-guided) if it is installed, else the built-in mutator (default auto)",
    )
    parser.add_argument("--seed", type=int, default=20261121, help="seed of the built-in mutator")
    parser.add_argument("--out", type=Path, default=None, help="report directory (benchmarks/results)")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mutate_child(args.child, args.seconds_per_target, args.workdir, args.seed)
        return 0
    if args.list:
        for target in TARGETS.values():
            print(f"{target.name:<16} {target.about}")
        return 0
    names = [name for name in args.targets.split(",") if name] or list(TARGETS)
    unknown = [name for name in names if name not in TARGETS and name != SELFTEST.name]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; see --list")
    if args.seconds_per_target < 1:
        parser.error("--seconds-per-target must be at least 1")
    engine = args.engine
    if engine != "mutate" and not atheris_available():
        if engine == "atheris":
            parser.error("atheris is not installed in this Python (pip install atheris)")
        engine = "mutate"
    elif engine == "auto":
        engine = "atheris"

    from benchmarks.report import RESULTS_DIR, format_rows, machine, write_report

    out_dir: Path = args.out or RESULTS_DIR
    print(f"fuzzing {len(names)} target(s) for {args.seconds_per_target} s each with {engine}", flush=True)
    results = []
    for name in names:
        result = run_target(name, args.seconds_per_target, engine, args.seed, out_dir / "robustness-crashes")
        results.append(result)
        print(
            f"  {name:<16} {result.inputs:>11,} inputs {result.inputs_per_second:>9,.0f}/s  "
            f"{len(result.crashes)} crash(es)",
            flush=True,
        )
        for crash in result.crashes:
            print(f"      {crash.kind}  {crash.file}", flush=True)
    total_crashes = sum(len(result.crashes) for result in results)
    report = {
        **machine("robustness"),
        "engine": engine,
        "seconds_per_target": args.seconds_per_target,
        "input_timeout_seconds": INPUT_TIMEOUT,
        "rss_limit_mb": RSS_LIMIT_MB,
        "total_inputs": sum(result.inputs for result in results),
        "total_crashes": total_crashes,
        "targets": [result.as_json() for result in results],
    }
    path = write_report(report, out_dir)
    rows = [
        (r.target, f"{r.inputs:,}", f"{r.inputs_per_second:,.0f}", str(len(r.crashes)), r.engine)
        for r in results
    ]
    print(format_rows(("target", "inputs", "inputs/s", "crashes", "engine"), rows))
    print(f"wrote {path}")
    return 1 if total_crashes else 0


if __name__ == "__main__":
    sys.exit(main())
