"""rtpengine as a real peer: start the daemon, drive it over its *ng* control protocol, fork a call.

Used by ``tests/interop/test_rtpengine.py`` and by the benchmarks. What is here:

- :func:`bencode` / :func:`bdecode`: the dictionary encoding of the ng protocol (strict: no
  booleans or floats on the way out; leading zeros, ``-0``, duplicate keys, truncation and
  trailing bytes refused on the way in).
- :class:`NgClient` (blocking) and :class:`AsyncNgClient` (asyncio): send
  ``cookie + " " + bencode(dict)`` over UDP, match the reply by its cookie, retransmit the same
  datagram (same cookie, so rtpengine answers a retransmission from its cookie cache instead of
  running the command twice) until a deadline, and raise :class:`NgError` carrying rtpengine's
  ``error-reason`` when the ``result`` is ``error``.
- :class:`RtpEngine`: a context manager that runs ``rtpengine`` in the foreground, userspace only
  (no kernel module, no Redis, no config file), waits for ``ping`` to answer ``pong``, and stops
  it with SIGTERM (then SIGKILL). It can pin the daemon to a CPU and exposes its pid and CPU time.
- The fork recipe: :meth:`NgClient.start_call` (``offer`` + ``answer`` for a two-party call) and
  :meth:`NgClient.fork` (``subscribe request`` for the legs, then ``subscribe answer`` with an SDP
  naming where each copy must go), so rtpengine sends a copy of each leg to a recorder.

The recipe, as ng dictionaries (docs ``ng_control_protocol.md``; checked against rtpengine 10.5.3.5,
Debian 12, by the interop test). Without an ``a=rtcp`` line RTCP goes to each sink's port + 1::

    {"command": "offer", "call-id": C, "from-tag": A, "sdp": <caller SDP>, "ICE": "remove", "DTLS": "off"}
        -> {"result": "ok", "sdp": <SDP for the callee: the port where the callee sends>}
    {"command": "answer", "call-id": C, "from-tag": A, "to-tag": B, "sdp": <callee SDP>, ...}
        -> {"result": "ok", "sdp": <SDP for the caller: the port where the caller sends>}
    {"command": "subscribe request", "call-id": C, "from-tags": [A, B],
     "transport-protocol": "RTP/AVP" (or "RTP/SAVP" + "SDES": ["no-<suite>" for every suite
     but AES_CM_128_HMAC_SHA1_80]),
     "ICE": "remove", "DTLS": "off", "flags": ["no rtcp attribute"]}
        -> {"result": "ok", "sdp": <sendonly offer: one m= per from-tag, in that order>,
            "to-tag": T, "from-tags": [A, B]}
    {"command": "subscribe answer", "call-id": C, "to-tag": T, "sdp": <recvonly answer whose
     m= lines carry the recorder's address and ports (and our a=crypto for SRTP)>}
        -> {"result": "ok"}        # each leg's packets now also go to its m= line's port
    {"command": "unsubscribe", "call-id": C, "to-tag": T} / {"command": "delete", "call-id": C}
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# --- bencode ---------------------------------------------------------------------------------

_MAX_DEPTH = 64
_INT = re.compile(rb"-?(?:0|[1-9][0-9]*)")
_LENGTH = re.compile(rb"0|[1-9][0-9]*")


class BencodeError(ValueError):
    """A value that cannot be bencoded, or bytes that are not one valid bencoded value."""


def bencode(value: object) -> bytes:
    """Bencode ``value``: ``int``, ``str`` (UTF-8), ``bytes``, lists/tuples and dicts with string keys.

    Dictionary keys are written in sorted raw-byte order, as bencoding requires (rtpengine does
    not insist on it, but other decoders do).
    """
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


def _encode(value: object, out: bytearray, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise BencodeError(f"structure nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, bool):
        # bool is an int subclass: refuse it rather than silently send i1e for True.
        raise BencodeError("bencode has no booleans; send the string rtpengine expects (e.g. 'yes')")
    if isinstance(value, int):
        out += b"i%de" % value
    elif isinstance(value, str):
        # surrogateescape: a str that came out of bdecode() goes back as the bytes it was.
        _encode(value.encode("utf-8", "surrogateescape"), out, depth)
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        out += b"%d:" % len(raw)
        out += raw
    elif isinstance(value, list | tuple):
        out += b"l"
        for item in value:
            _encode(item, out, depth + 1)
        out += b"e"
    elif isinstance(value, Mapping):
        items: dict[bytes, object] = {}
        for key, item in value.items():
            if isinstance(key, str):
                raw_key = key.encode()
            elif isinstance(key, bytes):
                raw_key = key
            else:
                raise BencodeError(f"dictionary key {key!r} is not a string")
            if raw_key in items:
                raise BencodeError(f"dictionary key {raw_key!r} given twice")
            items[raw_key] = item
        out += b"d"
        for raw_key in sorted(items):
            _encode(raw_key, out, depth + 1)
            _encode(items[raw_key], out, depth + 1)
        out += b"e"
    else:
        raise BencodeError(f"cannot bencode a {type(value).__name__}")


def bdecode(data: bytes, *, text: bool = True) -> Any:
    """Decode exactly one bencoded value that fills ``data``.

    Dictionary keys always come back as ``str``. With ``text`` (the default) string values do
    too, decoded as UTF-8 with ``surrogateescape`` so no byte is lost; otherwise as ``bytes``.
    """
    value, end = _decode(bytes(data), 0, text, 0)
    if end != len(data):
        raise BencodeError(f"{len(data) - end} bytes of trailing data after the value, at offset {end}")
    return value


def _decode(data: bytes, pos: int, text: bool, depth: int) -> tuple[Any, int]:
    if depth > _MAX_DEPTH:
        raise BencodeError(f"structure nested deeper than {_MAX_DEPTH} levels")
    if pos >= len(data):
        raise BencodeError(f"truncated: a value was expected at offset {pos}")
    lead = data[pos : pos + 1]
    if lead == b"i":
        end = data.find(b"e", pos + 1)
        if end < 0:
            raise BencodeError(f"truncated integer at offset {pos}")
        digits = data[pos + 1 : end]
        if not _INT.fullmatch(digits) or digits == b"-0":
            raise BencodeError(f"malformed integer {digits!r} at offset {pos}")
        return int(digits), end + 1
    if lead.isdigit():
        raw, end = _decode_string(data, pos)
        return (raw.decode("utf-8", "surrogateescape") if text else raw), end
    if lead == b"l":
        items: list[Any] = []
        pos += 1
        while data[pos : pos + 1] != b"e":
            item, pos = _decode(data, pos, text, depth + 1)
            items.append(item)
        return items, pos + 1
    if lead == b"d":
        result: dict[str, Any] = {}
        pos += 1
        while data[pos : pos + 1] != b"e":
            if not data[pos : pos + 1].isdigit():
                raise BencodeError(f"dictionary key at offset {pos} is not a string")
            raw_key, pos = _decode_string(data, pos)
            key = raw_key.decode("utf-8", "surrogateescape")
            if key in result:
                raise BencodeError(f"dictionary key {key!r} given twice")
            result[key], pos = _decode(data, pos, text, depth + 1)
        return result, pos + 1
    raise BencodeError(f"unexpected byte {lead!r} at offset {pos}")


def _decode_string(data: bytes, pos: int) -> tuple[bytes, int]:
    colon = data.find(b":", pos)
    if colon < 0:
        raise BencodeError(f"truncated string length at offset {pos}")
    length = data[pos:colon]
    if not _LENGTH.fullmatch(length):
        raise BencodeError(f"malformed string length {length!r} at offset {pos}")
    start = colon + 1
    end = start + int(length)
    if end > len(data):
        raise BencodeError(f"string of {int(length)} bytes at offset {pos} runs past the end")
    return data[start:end], end


# --- ng messages -----------------------------------------------------------------------------


class NgError(RuntimeError):
    """rtpengine answered ``result: error`` (or something that is not an answer at all)."""

    def __init__(self, command: str, reason: str) -> None:
        super().__init__(f"rtpengine refused {command!r}: {reason}")
        self.command = command
        self.reason = reason


class NgTimeoutError(TimeoutError):
    """No reply with our cookie arrived before the deadline, retransmissions included."""


def encode_request(cookie: str, message: Mapping[str, Any]) -> bytes:
    if not cookie or " " in cookie:
        raise ValueError(f"ng cookie {cookie!r} must be non-empty and without spaces")
    if "command" not in message:
        raise ValueError("an ng request needs a 'command' key")
    return cookie.encode() + b" " + bencode(message)


def split_reply(datagram: bytes) -> tuple[str, bytes]:
    """Cookie and bencoded body of an ng datagram."""
    cookie, space, body = datagram.partition(b" ")
    if not space:
        raise BencodeError("ng datagram without the space that ends the cookie")
    return cookie.decode("ascii", "replace"), body


def check_reply(command: str, body: bytes) -> dict[str, Any]:
    """The decoded reply, or :class:`NgError` with rtpengine's ``error-reason``."""
    try:
        reply = bdecode(body)
    except BencodeError as exc:
        raise NgError(command, f"undecodable reply ({exc})") from None
    if not isinstance(reply, dict):
        raise NgError(command, f"reply is a {type(reply).__name__}, not a dictionary")
    result = reply.get("result")
    if result == "error":
        raise NgError(command, str(reply.get("error-reason", "(no error-reason given)")))
    if result not in ("ok", "pong"):
        detail = reply.get("message", reply.get("error-reason", ""))
        raise NgError(command, f"result {result!r} {detail}".strip())
    return reply


# --- SDP: just what the recipe needs -----------------------------------------------------------

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class MediaSection:
    """One ``m=`` section: where it is (its ``c=`` or the session's), what, and its ``a=`` lines."""

    media: str
    address: str
    port: int
    protocol: str
    formats: tuple[str, ...]
    attributes: tuple[str, ...]

    @property
    def endpoint(self) -> Address:
        return (self.address, self.port)

    @property
    def direction(self) -> str:
        for attribute in self.attributes:
            if attribute in ("sendrecv", "sendonly", "recvonly", "inactive"):
                return attribute
        return "sendrecv"  # RFC 4566 §6: the default

    @property
    def crypto(self) -> tuple[str, ...]:
        """The values of the ``a=crypto`` lines (RFC 4568 §9.1): ``tag suite key-params...``."""
        return tuple(a[len("crypto:") :] for a in self.attributes if a.startswith("crypto:"))

    def attribute_lines(self, name: str) -> tuple[str, ...]:
        return tuple(a for a in self.attributes if a == name or a.startswith(name + ":"))


def parse_sdp(text: str) -> tuple[MediaSection, ...]:
    """The media sections of ``text``, each with its effective connection address (RFC 4566 §5.7)."""
    session_address = ""
    media_lines: list[tuple[str, list[str], list[str]]] = []  # (m= value, its c= addresses, its a= values)
    for line in text.replace("\r\n", "\n").split("\n"):
        kind, _, value = line.partition("=")
        if kind == "m":
            media_lines.append((value, [], []))
        elif kind == "c":
            address = value.split()[2].split("/")[0]
            if media_lines:
                media_lines[-1][1].append(address)
            else:
                session_address = address
        elif kind == "a" and media_lines:
            media_lines[-1][2].append(value)
    sections = []
    for value, addresses, attributes in media_lines:
        media, port, protocol, *formats = value.split()
        address = addresses[0] if addresses else session_address
        if not address:
            raise ValueError(f"m={value} has no c= line and the session has none")
        sections.append(
            MediaSection(media, address, int(port.split("/")[0]), protocol, tuple(formats), tuple(attributes))
        )
    return tuple(sections)


def audio_sdp(
    address: str,
    port: int,
    *,
    payload_type: int = 0,
    encoding: str = "PCMU/8000",
    direction: str = "sendrecv",
    session_id: int | None = None,
) -> str:
    """A minimal valid RFC 4566 offer or answer: one plain RTP/AVP audio stream at ``address:port``."""
    family = "IP6" if ":" in address else "IP4"
    session_id = session_id if session_id is not None else secrets.randbits(31)
    return (
        "v=0\r\n"
        f"o=- {session_id} 1 IN {family} {address}\r\n"
        "s=-\r\n"
        f"c=IN {family} {address}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP {payload_type}\r\n"
        f"a=rtpmap:{payload_type} {encoding}\r\n"
        "a=ptime:20\r\n"
        f"a={direction}\r\n"
    )


SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"
# Every other suite rtpengine 10.5 offers by default, so its subscribe offer lists only SRTP_SUITE.
OTHER_SDES_SUITES = (
    "AEAD_AES_256_GCM",
    "AEAD_AES_128_GCM",
    "AES_256_CM_HMAC_SHA1_80",
    "AES_256_CM_HMAC_SHA1_32",
    "AES_192_CM_HMAC_SHA1_80",
    "AES_192_CM_HMAC_SHA1_32",
    "AES_CM_128_HMAC_SHA1_32",
    "F8_128_HMAC_SHA1_80",
    "F8_128_HMAC_SHA1_32",
    "NULL_HMAC_SHA1_80",
    "NULL_HMAC_SHA1_32",
)


def new_sdes_key() -> str:
    """Fresh ``inline:`` key-params for AES_CM_128_HMAC_SHA1_80: 16-byte key, 14-byte salt (RFC 4568 §6.1)."""
    return "inline:" + base64.b64encode(secrets.token_bytes(30)).decode()


def subscribe_answer_sdp(
    offer: Sequence[MediaSection], sinks: Sequence[Address]
) -> tuple[str, tuple[str, ...]]:
    """The ``recvonly`` answer to rtpengine's subscribe offer: m= line *i* receives at ``sinks[i]``.

    Every offered format is accepted (rtpengine refuses an answer that drops one unless told to
    transcode). For an SRTP offer each m= line gets our own ``a=crypto`` with the suite and tag
    rtpengine offered first (RFC 4568 §7.1.2: the answer picks one offered line and keeps its tag);
    those key-params are returned too (we never send, so they only complete the negotiation).
    """
    if len(sinks) != len(offer):
        raise ValueError(f"{len(offer)} media sections offered, {len(sinks)} sinks given")
    session_address = sinks[0][0]
    family = "IP6" if ":" in session_address else "IP4"
    lines = ["v=0", f"o=- {secrets.randbits(31)} 1 IN {family} {session_address}", "s=-", "t=0 0"]
    keys: list[str] = []
    for section, (address, port) in zip(offer, sinks, strict=True):
        family = "IP6" if ":" in address else "IP4"
        lines += [
            f"m={section.media} {port} {section.protocol} {' '.join(section.formats)}",
            f"c=IN {family} {address}",
        ]
        lines += [f"a={a}" for a in section.attributes if a.startswith(("rtpmap:", "fmtp:", "ptime:"))]
        if "SAVP" in section.protocol:
            offered = [c.split() for c in section.crypto]
            chosen = next((c for c in offered if c[1] == SRTP_SUITE), None)
            if chosen is None:
                raise ValueError(f"rtpengine offered no {SRTP_SUITE} crypto line: {section.crypto}")
            key = new_sdes_key()
            keys.append(key)
            lines.append(f"a=crypto:{chosen[0]} {SRTP_SUITE} {key}")
        lines.append("a=recvonly")
    return "\r\n".join(lines) + "\r\n", tuple(keys)


# --- the recipe's results --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelayedCall:
    """A two-party call anchored on rtpengine: each side sends its RTP to its ``*_target``."""

    call_id: str
    caller_tag: str
    callee_tag: str
    caller_target: Address  # rtpengine's port for the caller's RTP (from the answer's reply SDP)
    callee_target: Address  # rtpengine's port for the callee's RTP (from the offer's reply SDP)


@dataclass(frozen=True, slots=True)
class Fork:
    """A subscription: rtpengine sends a copy of leg ``from_tags[i]`` to ``sinks[i]`` from ``sources[i]``.

    ``keys[i]`` is the SDES key (``suite`` + ``inline:`` key-params) rtpengine encrypts copy *i*
    with, or ``None`` for plain RTP.
    """

    call_id: str
    to_tag: str
    from_tags: tuple[str, ...]
    sinks: tuple[Address, ...]
    sources: tuple[Address, ...]
    keys: tuple[tuple[str, str] | None, ...]
    offer_sdp: str
    answer_sdp: str


# Options shared by every message that produces SDP: no ICE, no DTLS, so what comes back is plain
# SDP with one address and port per stream.
_PLAIN = {"ICE": "remove", "DTLS": "off"}


def offer_request(call_id: str, from_tag: str, sdp: str, **options: Any) -> dict[str, Any]:
    return {"command": "offer", "call-id": call_id, "from-tag": from_tag, "sdp": sdp, **_PLAIN, **options}


def answer_request(call_id: str, from_tag: str, to_tag: str, sdp: str, **options: Any) -> dict[str, Any]:
    message = {"command": "answer", "call-id": call_id, "from-tag": from_tag, "to-tag": to_tag, "sdp": sdp}
    return {**message, **_PLAIN, **options}


def subscribe_request(
    call_id: str, from_tags: Sequence[str], *, srtp: bool = False, to_tag: str | None = None, **options: Any
) -> dict[str, Any]:
    """``subscribe request`` for the legs sent by ``from_tags``: plain RTP/AVP, or SDES-SRTP."""
    message: dict[str, Any] = {
        "command": "subscribe request",
        "call-id": call_id,
        "from-tags": list(from_tags),
        **_PLAIN,
        "transport-protocol": "RTP/SAVP" if srtp else "RTP/AVP",
        # The recorder is receive-only and we answer with one port per stream: RTCP goes to port+1.
        "flags": ["no rtcp attribute"],
    }
    if srtp:
        # rtpengine 10.5 ignores "only-SUITE" (a later addition) but honours "no-SUITE".
        message["SDES"] = [f"no-{suite}" for suite in OTHER_SDES_SUITES]
    if to_tag is not None:
        message["to-tag"] = to_tag
    message.update(options)
    return message


def subscribe_answer_request(call_id: str, to_tag: str, sdp: str, **options: Any) -> dict[str, Any]:
    return {"command": "subscribe answer", "call-id": call_id, "to-tag": to_tag, "sdp": sdp, **options}


def unsubscribe_request(call_id: str, to_tag: str) -> dict[str, Any]:
    return {"command": "unsubscribe", "call-id": call_id, "to-tag": to_tag}


def delete_request(call_id: str, from_tag: str | None = None) -> dict[str, Any]:
    message = {"command": "delete", "call-id": call_id}
    if from_tag is not None:
        message["from-tag"] = from_tag
    return message


def _single_endpoint(sdp: str, what: str) -> Address:
    sections = parse_sdp(sdp)
    if len(sections) != 1:
        raise NgError(what, f"expected one media section in the reply SDP, got {len(sections)}")
    return sections[0].endpoint


def _fork_from_offer(
    call_id: str, reply: Mapping[str, Any], from_tags: Sequence[str], sinks: Sequence[Address]
) -> tuple[Fork, str]:
    offer_sdp = str(reply["sdp"])
    sections = parse_sdp(offer_sdp)
    answer_sdp, _ = subscribe_answer_sdp(sections, sinks)
    keys: list[tuple[str, str] | None] = []
    for section in sections:
        if "SAVP" in section.protocol:
            tag_suite_key = next(c.split() for c in section.crypto if c.split()[1] == SRTP_SUITE)
            keys.append((tag_suite_key[1], tag_suite_key[2]))
        else:
            keys.append(None)
    fork = Fork(
        call_id=call_id,
        to_tag=str(reply["to-tag"]),
        from_tags=tuple(reply.get("from-tags", from_tags)),
        sinks=tuple(sinks),
        sources=tuple(section.endpoint for section in sections),
        keys=tuple(keys),
        offer_sdp=offer_sdp,
        answer_sdp=answer_sdp,
    )
    return fork, answer_sdp


# --- clients ---------------------------------------------------------------------------------


class _Cookies:
    def __init__(self) -> None:
        self._prefix = f"{os.getpid():x}{secrets.token_hex(3)}"
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}_{next(self._counter)}"


class NgClient:
    """Blocking ng client over UDP. Not thread-safe: one request at a time."""

    def __init__(self, address: Address, *, timeout: float = 2.0, retransmit: float = 0.25) -> None:
        self.address = address
        self.timeout = timeout
        self.retransmit = retransmit
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.connect(address)
        self._cookies = _Cookies()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> NgClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, message: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Send ``message`` and return rtpengine's reply; :class:`NgError` or :class:`NgTimeoutError`."""
        command = str(message.get("command"))
        cookie = self._cookies.next()
        datagram = encode_request(cookie, message)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        sends = 0
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise NgTimeoutError(
                    f"no reply from rtpengine at {self.address[0]}:{self.address[1]} to {command!r} "
                    f"after {sends} sends"
                )
            with contextlib.suppress(ConnectionRefusedError):
                self._sock.send(datagram)
            sends += 1
            resend_at = min(now + self.retransmit, deadline)
            while (wait := resend_at - time.monotonic()) > 0:
                self._sock.settimeout(wait)
                try:
                    data = self._sock.recv(65535)
                except TimeoutError:
                    break
                except ConnectionRefusedError:
                    # ICMP port unreachable from an earlier send: nobody listens (yet). Retry later.
                    time.sleep(min(wait, 0.02))
                    continue
                reply_cookie, body = split_reply(data)
                if reply_cookie == cookie:
                    return check_reply(command, body)
                # A late reply to an earlier, already answered or abandoned request: drop it.

    # The recipe ----------------------------------------------------------------------------

    def ping(self, *, timeout: float | None = None) -> bool:
        return self.request({"command": "ping"}, timeout=timeout).get("result") == "pong"

    def offer(self, call_id: str, from_tag: str, sdp: str, **options: Any) -> str:
        return str(self.request(offer_request(call_id, from_tag, sdp, **options))["sdp"])

    def answer(self, call_id: str, from_tag: str, to_tag: str, sdp: str, **options: Any) -> str:
        return str(self.request(answer_request(call_id, from_tag, to_tag, sdp, **options))["sdp"])

    def start_call(
        self,
        call_id: str,
        caller: Address,
        callee: Address,
        *,
        caller_tag: str = "caller",
        callee_tag: str = "callee",
        payload_type: int = 0,
        encoding: str = "PCMU/8000",
    ) -> RelayedCall:
        """``offer`` with the caller's SDP then ``answer`` with the callee's: rtpengine relays both ways."""
        offered = self.offer(
            call_id, caller_tag, audio_sdp(*caller, payload_type=payload_type, encoding=encoding)
        )
        callee_sdp = audio_sdp(*callee, payload_type=payload_type, encoding=encoding)
        answered = self.answer(call_id, caller_tag, callee_tag, callee_sdp)
        return RelayedCall(
            call_id=call_id,
            caller_tag=caller_tag,
            callee_tag=callee_tag,
            caller_target=_single_endpoint(answered, "answer"),
            callee_target=_single_endpoint(offered, "offer"),
        )

    def fork(
        self,
        call_id: str,
        from_tags: Sequence[str],
        sinks: Sequence[Address],
        *,
        srtp: bool = False,
        to_tag: str | None = None,
    ) -> Fork:
        """Subscribe to the legs sent by ``from_tags``; leg *i*'s copy goes to ``sinks[i]``."""
        reply = self.request(subscribe_request(call_id, from_tags, srtp=srtp, to_tag=to_tag))
        fork, answer_sdp = _fork_from_offer(call_id, reply, from_tags, sinks)
        self.request(subscribe_answer_request(call_id, fork.to_tag, answer_sdp))
        return fork

    def unsubscribe(self, call_id: str, to_tag: str) -> None:
        self.request(unsubscribe_request(call_id, to_tag))

    def query(self, call_id: str) -> dict[str, Any]:
        return self.request({"command": "query", "call-id": call_id})

    def delete(self, call_id: str, from_tag: str | None = None) -> dict[str, Any]:
        return self.request(delete_request(call_id, from_tag))


class _NgProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.pending: dict[str, asyncio.Future[bytes]] = {}

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            cookie, body = split_reply(data)
        except BencodeError:
            return
        future = self.pending.pop(cookie, None)
        if future is not None and not future.done():
            future.set_result(body)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from an earlier send: the retransmission timer tries again.
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("ng client closed"))
        self.pending.clear()


class AsyncNgClient:
    """asyncio ng client over UDP; many requests may be in flight at once (one cookie each)."""

    def __init__(
        self,
        transport: asyncio.DatagramTransport,
        protocol: _NgProtocol,
        address: Address,
        *,
        timeout: float,
        retransmit: float,
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._cookies = _Cookies()
        self.address = address
        self.timeout = timeout
        self.retransmit = retransmit

    @classmethod
    async def connect(
        cls, address: Address, *, timeout: float = 2.0, retransmit: float = 0.25
    ) -> AsyncNgClient:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(_NgProtocol, remote_addr=address)
        return cls(transport, protocol, address, timeout=timeout, retransmit=retransmit)

    async def close(self) -> None:
        self._transport.close()

    async def __aenter__(self) -> AsyncNgClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(self, message: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        command = str(message.get("command"))
        cookie = self._cookies.next()
        datagram = encode_request(cookie, message)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._protocol.pending[cookie] = future
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        sends = 0
        try:
            while (remaining := deadline - loop.time()) > 0:
                self._transport.sendto(datagram)
                sends += 1
                done, _ = await asyncio.wait({future}, timeout=min(self.retransmit, remaining))
                if done:
                    return check_reply(command, future.result())
        finally:
            self._protocol.pending.pop(cookie, None)
        where = f"{self.address[0]}:{self.address[1]}"
        raise NgTimeoutError(f"no reply from rtpengine at {where} to {command!r} after {sends} sends")

    async def ping(self, *, timeout: float | None = None) -> bool:
        return (await self.request({"command": "ping"}, timeout=timeout)).get("result") == "pong"

    async def start_call(
        self,
        call_id: str,
        caller: Address,
        callee: Address,
        *,
        caller_tag: str = "caller",
        callee_tag: str = "callee",
        payload_type: int = 0,
        encoding: str = "PCMU/8000",
    ) -> RelayedCall:
        caller_sdp = audio_sdp(*caller, payload_type=payload_type, encoding=encoding)
        offered = await self.offer(call_id, caller_tag, caller_sdp)
        callee_sdp = audio_sdp(*callee, payload_type=payload_type, encoding=encoding)
        answered = await self.answer(call_id, caller_tag, callee_tag, callee_sdp)
        return RelayedCall(
            call_id=call_id,
            caller_tag=caller_tag,
            callee_tag=callee_tag,
            caller_target=_single_endpoint(answered, "answer"),
            callee_target=_single_endpoint(offered, "offer"),
        )

    async def fork(
        self,
        call_id: str,
        from_tags: Sequence[str],
        sinks: Sequence[Address],
        *,
        srtp: bool = False,
        to_tag: str | None = None,
    ) -> Fork:
        reply = await self.request(subscribe_request(call_id, from_tags, srtp=srtp, to_tag=to_tag))
        fork, answer_sdp = _fork_from_offer(call_id, reply, from_tags, sinks)
        await self.request(subscribe_answer_request(call_id, fork.to_tag, answer_sdp))
        return fork

    async def offer(self, call_id: str, from_tag: str, sdp: str, **options: Any) -> str:
        return str((await self.request(offer_request(call_id, from_tag, sdp, **options)))["sdp"])

    async def answer(self, call_id: str, from_tag: str, to_tag: str, sdp: str, **options: Any) -> str:
        return str((await self.request(answer_request(call_id, from_tag, to_tag, sdp, **options)))["sdp"])

    async def unsubscribe(self, call_id: str, to_tag: str) -> None:
        await self.request(unsubscribe_request(call_id, to_tag))

    async def query(self, call_id: str) -> dict[str, Any]:
        return await self.request({"command": "query", "call-id": call_id})

    async def delete(self, call_id: str, from_tag: str | None = None) -> dict[str, Any]:
        return await self.request(delete_request(call_id, from_tag))


# --- the daemon ------------------------------------------------------------------------------


class RtpEngineError(RuntimeError):
    """rtpengine is missing, did not start, or died; the message says which and shows its log."""


START_ATTEMPTS = 3  # daemon starts when a port we picked was taken before it bound it

INSTALL_HINT = (
    "apt-get install rtpengine-daemon (scripts/install-peers.sh installs it; `make test` runs that)"
)


def find_rtpengine(binary: str = "rtpengine") -> str:
    path = shutil.which(binary) or shutil.which(binary, path="/usr/bin:/usr/sbin:/usr/local/bin")
    if path is None:
        raise RtpEngineError(f"{binary!r} not found on PATH: {INSTALL_HINT}")
    return path


def _free_udp_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port_block(host: str, size: int, *, low: int = 44000, high: int = 52000) -> int:
    """The first (even) port of ``size`` consecutive UDP ports on ``host`` that are free right now.

    The search starts at a pid-dependent offset so that concurrent test processes rarely probe
    the same block; rtpengine itself skips a port it cannot bind, so a late collision costs a port,
    not a call.
    """
    size += size & 1
    blocks = list(range(low, high - size, size))
    start = os.getpid() % len(blocks)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for base in blocks[start:] + blocks[:start]:
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + size):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((host, port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return base
    raise RtpEngineError(f"no {size} consecutive free UDP ports on {host} in {low}-{high}")


class RtpEngine:
    """Runs ``rtpengine`` in the foreground for the life of a ``with`` block.

    Userspace forwarding only (``--table=-1``), no config file (``--config-file=none``), no Redis,
    control over ng/UDP on ``ng_host:ng_port``, media on ``interface`` within
    ``port_min``-``port_max``. Log lines go to ``log_path`` (default: a temporary file, removed
    on exit) at syslog ``log_level`` (5 = notice; 6 logs every ng command, 7 every packet).
    ``cpu`` pins every thread of the daemon to that CPU (``taskset``), for benchmarks.
    """

    def __init__(
        self,
        *,
        interface: str = "127.0.0.1",
        ng_host: str = "127.0.0.1",
        ng_port: int = 0,
        port_min: int = 0,
        port_max: int = 0,
        ports: int = 200,
        log_level: int = 5,
        log_path: Path | None = None,
        cpu: int | None = None,
        num_threads: int = 2,
        binary: str = "rtpengine",
        extra_args: Sequence[str] = (),
        startup_timeout: float = 10.0,
    ) -> None:
        self.interface = interface
        # "name/addr" or "addr!advertised" (rtpengine(8) INTERFACES): the address media flows on.
        self.media_address = interface.rpartition("/")[2].partition("!")[0]
        self.ng_host = ng_host
        self.ng_port = ng_port
        self.port_min = port_min
        self.port_max = port_max
        self.ports = ports
        self.log_level = log_level
        self.log_path = log_path
        self.cpu = cpu
        self.num_threads = num_threads
        self.binary = binary
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._client: NgClient | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def ng_address(self) -> Address:
        return (self.ng_host, self.ng_port)

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RtpEngineError("rtpengine is not running")
        return self.process.pid

    @property
    def client(self) -> NgClient:
        """A blocking ng client to this daemon, made on first use and closed on stop."""
        if self._client is None:
            self._client = NgClient(self.ng_address)
        return self._client

    def argv(self, binary: str) -> list[str]:
        argv = [
            binary,
            "--config-file=none",  # do not read /etc/rtpengine/rtpengine.conf
            "--table=-1",  # no kernel module: userspace forwarding
            "--foreground",
            "--log-stderr",
            f"--log-level={self.log_level}",
            f"--interface={self.interface}",
            f"--listen-ng={self.ng_host}:{self.ng_port}",
            f"--port-min={self.port_min}",
            f"--port-max={self.port_max}",
            f"--num-threads={self.num_threads}",
            "--media-num-threads=0",  # no media playback
            "--delete-delay=0",  # `delete` forgets the call at once
            *self.extra_args,
        ]
        if self.cpu is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", str(self.cpu), *argv]
        return argv

    def start(self) -> RtpEngine:
        if self.process is not None:
            raise RtpEngineError("rtpengine already started")
        binary = find_rtpengine(self.binary)
        # Ports we pick are only probed free: another program may take one before the daemon
        # binds it. Then pick again (a port given by the caller is the caller's to choose).
        chosen_ng, chosen_media = not self.ng_port, not self.port_min
        for attempt in range(START_ATTEMPTS):
            if chosen_ng:
                self.ng_port = _free_udp_port(self.ng_host)
            if chosen_media:
                self.port_min = free_port_block(self.media_address, self.ports)
                self.port_max = self.port_min + self.ports - 1
            try:
                self._start_once(binary)
                return self
            except RtpEngineError as exc:
                taken = "Address already in use" in str(exc) and (chosen_ng or chosen_media)
                if not taken or attempt == START_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, binary: str) -> None:
        if self.log_path is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="rtpengine-")
            self.log_path = Path(self._tmpdir.name) / "rtpengine.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv(binary), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self._wait_ready()
            if self.cpu is not None and not shutil.which("taskset"):
                self._pin_threads(self.cpu)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        # Short retransmissions: the port answers within milliseconds of the daemon binding it.
        with NgClient(self.ng_address, retransmit=0.01) as probe:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RtpEngineError(
                        f"rtpengine exited with status {self.process.returncode} at start:\n{self.log_tail()}"
                    )
                with contextlib.suppress(NgTimeoutError):
                    if probe.ping(timeout=0.2):
                        return
        raise RtpEngineError(
            f"rtpengine did not answer ping on {self.ng_host}:{self.ng_port} within "
            f"{self.startup_timeout} s:\n{self.log_tail()}"
        )

    def _pin_threads(self, cpu: int) -> None:
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(task.name), {cpu})

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` s; the exit status (None if never started)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def __enter__(self) -> RtpEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
            self.log_path = None

    def cpu_seconds(self) -> float:
        """User + system CPU time of the daemon so far, all threads (``/proc/<pid>/stat``)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        # Fields 14 and 15 of proc(5) (utime, stime) are 11 and 12 after "pid (comm) ".
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def threads(self) -> Iterator[int]:
        """Thread ids of the daemon, e.g. for per-thread accounting."""
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            yield int(task.name)
