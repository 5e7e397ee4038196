"""SDP session descriptions (RFC 8866, which obsoletes RFC 4566): parse, inspect, serialize.

``parse_sdp`` turns one SDP body into a ``SessionDescription`` and ``bytes(sdp)`` writes it back
with CRLF line ends in the order of RFC 8866 §5. Nothing the peer wrote is dropped: unknown
attributes keep their place among the attributes, ``r=``/``z=``/``k=`` lines are kept raw, and so
are lines whose type letter we do not know. For a description written in RFC order (every
capture in ``fixtures/vendor-siprec``) the bytes come back identical, apart from LF becoming CRLF.

What the parser requires (``SdpError``, a ``RemoteProtocolError`` with status hint 400, naming
the line number and the line):

- the first line is ``v=0`` (RFC 8866 §5.1);
- one ``o=`` line of six fields whose session id and version are numeric (§5.2), and one ``s=``
  line (§5.3) — every SRC and SRS we know sends both;
- every line is ``<letter>=<value>`` with no NUL and no stray CR; ``m=`` lines have a port in
  0-65535, an optional port count >= 1, a proto and at least one format (§5.14);
- ``c=``, ``b=``, ``t=`` and ``a=`` lines have the shape their section of RFC 8866 gives them;
- a line type appears at most once where the RFC says so (``o s i u c z k`` at session level,
  ``i k`` in a media description), and session-only lines (``o s u e p t r z``) do not appear
  inside a media description; ``r=`` follows a ``t=``.

What it tolerates, because peers send it:

- LF-only line ends, a missing final line end, and empty lines at the very end;
- no ``t=`` line at all (the Connectel SRC omits it); nothing is invented on serialization;
- known lines out of RFC order within their section (written back in RFC order);
- runs of spaces or tabs between the fields of structured lines (written back as one space);
- an empty ``s=`` line (§5.3 says it must not be empty; "-" is what we write);
- unknown line types: RFC 8866 §5 tells a parser to ignore a description with a type letter
  it does not understand; we keep such lines raw, at the end of their section, so a
  description from a peer that uses one (``y=``/``f=`` of some video SRCs) still works.

Attribute values are parsed when asked for (``rtpmap``, ``crypto``, ``rtcp``...), not while
parsing, so one odd attribute does not make the whole description unreadable; the accessors
raise ``SdpError`` when the value is malformed. Text is decoded as UTF-8 with surrogate escapes
(RFC 8866 §5 allows other charsets via ``a=charset``), so any byte survives the round trip.

The parser is one pass over the lines, linear in the input; the size of a description is
bounded by the SIP message limits before it gets here.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from enum import StrEnum

from siprec_src.errors import RemoteProtocolError

__all__ = [
    "STATIC_PAYLOAD_TYPES",
    "Attribute",
    "Bandwidth",
    "Connection",
    "CryptoAttribute",
    "Direction",
    "MediaDescription",
    "Origin",
    "RtcpAttribute",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "Timing",
    "parse_sdp",
]

# An attribute line as written: ``a=name`` gives (name, None), ``a=name:value`` gives (name, value).
Attribute = tuple[str, str | None]

_CRLF = "\r\n"
_FIELD_SEP = re.compile(r"[ \t]+")
# RFC 8866 §9 token: what att-field, media, proto parts and bwtype are made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+")
_PROTO = re.compile(r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+(?:/[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+)*")
_MAX_LINE_IN_ERROR = 80

# RFC 3551 §6 (tables 4 and 5): payload types whose meaning the profile fixes, so an m-line may
# list them without an rtpmap. Only the audio ones an SRC or SRS meets.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int | None]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),  # RFC 3551 §4.5.2: the RTP clock is 8000 although G.722 samples at 16 kHz
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    15: ("G728", 8000, 1),
    18: ("G729", 8000, 1),
}


class SdpError(RemoteProtocolError):
    """An SDP body from the peer is malformed.

    The status hint is 400: a description we cannot read is a malformed request (RFC 3261 §21.4.1);
    488 is for descriptions we can read but not accept (see ``sdp.siprec.NegotiationError``).
    ``detail`` is the bare reason; ``line_number`` (1-based) and ``line`` say where, when known.
    """

    def __init__(
        self, detail: str, *, line_number: int | None = None, line: str | None = None, status_hint: int = 400
    ) -> None:
        if line_number is not None and line is not None:
            shown = line if len(line) <= _MAX_LINE_IN_ERROR else line[:_MAX_LINE_IN_ERROR] + "..."
            reason = f"SDP line {line_number}: {detail} ({shown!r})"
        else:
            reason = f"SDP: {detail}"
        super().__init__(reason, status_hint)
        self.detail = detail
        self.line_number = line_number
        self.line = line


class Direction(StrEnum):
    """The direction attributes of RFC 8866 §6.7 (RFC 3264 §5.1 for their offer/answer meaning)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)


_DIRECTIONS = {d.value: d for d in Direction}


def _fields(value: str) -> list[str]:
    stripped = value.strip(" \t")
    return _FIELD_SEP.split(stripped) if stripped else []


def _first_field(value: str) -> str:
    """``_fields(value)[0]`` ("" for a blank value) without splitting the rest."""
    stripped = value.lstrip(" \t")
    end = len(stripped)
    for separator in " \t":
        found = stripped.find(separator)
        if 0 <= found < end:
            end = found
    return stripped[:end]


def _is_digits(text: str, max_length: int) -> bool:
    # str.isdigit() alone accepts "²" and other non-ASCII digits; the length bound also keeps
    # int() away from its 4300-digit limit.
    return 0 < len(text) <= max_length and text.isascii() and text.isdigit()


def _number(text: str, what: str, max_length: int = 20) -> int:
    if not _is_digits(text, max_length):
        raise SdpError(f"{what} {text!r} is not a decimal number")
    return int(text)


def _token(text: str, what: str) -> str:
    if not _TOKEN.fullmatch(text):
        raise SdpError(f"{what} {text!r} is not a token (RFC 8866 §9)")
    return text


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`` (RFC 8866 §5.2).

    Session id and version are kept as the digit strings the peer wrote (they are identifiers, and
    RFC 3264 §8 only asks that the version grows); ``version_number`` gives the integer.
    """

    username: str
    session_id: str
    session_version: str
    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, value: str) -> Origin:
        parts = _fields(value)
        if len(parts) != 6:
            raise SdpError(f"o= needs 6 fields, found {len(parts)} (RFC 8866 §5.2)")
        username, session_id, session_version, nettype, addrtype, address = parts
        for text, what in ((session_id, "sess-id"), (session_version, "sess-version")):
            if not _is_digits(text, 64):
                raise SdpError(f"o= {what} {text!r} is not a numeric string (RFC 8866 §5.2)")
        return cls(username, session_id, session_version, nettype, addrtype, address)

    @property
    def version_number(self) -> int:
        return int(self.session_version)

    def __str__(self) -> str:
        return " ".join(
            (self.username, self.session_id, self.session_version, self.nettype, self.addrtype, self.address)
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>`` (RFC 8866 §5.7).

    ``address`` is kept as written, multicast ``/ttl/count`` suffixes included; ``host`` drops them.
    """

    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, value: str) -> Connection:
        parts = _fields(value)
        if len(parts) != 3:
            raise SdpError(f"c= needs 3 fields, found {len(parts)} (RFC 8866 §5.7)")
        return cls(*parts)

    @property
    def host(self) -> str:
        # IPv6 addresses contain no "/", so the first "/" always starts a multicast suffix.
        return self.address.split("/", 1)[0]

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """``b=<bwtype>:<bandwidth>`` (RFC 8866 §5.8), bandwidth in the unit the bwtype defines."""

    bwtype: str
    bandwidth: int

    @classmethod
    def parse(cls, value: str) -> Bandwidth:
        bwtype, colon, amount = value.partition(":")
        if not colon:
            raise SdpError("b= needs <bwtype>:<bandwidth> (RFC 8866 §5.8)")
        return cls(_token(bwtype, "b= bwtype"), _number(amount, "b= bandwidth", 10))

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.bandwidth}"


@dataclass(frozen=True, slots=True)
class Timing:
    """``t=<start-time> <stop-time>`` (RFC 8866 §5.9) with its ``r=`` lines kept raw (§5.10)."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> Timing:
        parts = _fields(value)
        if len(parts) != 2:
            raise SdpError(f"t= needs 2 fields, found {len(parts)} (RFC 8866 §5.9)")
        return cls(_number(parts[0], "t= start-time"), _number(parts[1], "t= stop-time"))

    def __str__(self) -> str:
        return f"{self.start} {self.stop}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """``a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]`` (RFC 8866 §6.6).

    For audio the encoding parameters are the channel count (None when not written).
    """

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, value: str) -> RtpMap:
        # The same few rtpmap lines ("0 PCMU/8000") come in every answer, and each is read several
        # times during negotiation: the result is immutable, so each text is parsed once.
        if len(value) <= _CACHED_VALUE_LENGTH:
            return _parse_rtpmap_cached(value)
        return _parse_rtpmap(value)

    @classmethod
    def _parse(cls, value: str) -> RtpMap:
        parts = _fields(value)
        if len(parts) != 2:
            raise SdpError(
                f"a=rtpmap:{value} is not '<payload type> <encoding>/<clock rate>' (RFC 8866 §6.6)"
            )
        pt_text, encoding_text = parts
        payload_type = _number(pt_text, "rtpmap payload type", 3)
        if payload_type > 127:
            raise SdpError(f"rtpmap payload type {payload_type} is not in 0-127 (RFC 3550 §5.1)")
        pieces = encoding_text.split("/")
        if len(pieces) not in (2, 3) or not pieces[0]:
            raise SdpError(f"a=rtpmap:{value} has no '<encoding>/<clock rate>' (RFC 8866 §6.6)")
        clock_rate = _number(pieces[1], "rtpmap clock rate", 10)
        channels = _number(pieces[2], "rtpmap channel count", 3) if len(pieces) == 3 else None
        return cls(payload_type, pieces[0], clock_rate, channels)

    def same_codec(self, other: RtpMap) -> bool:
        """Same encoding (names compare case-insensitively, RFC 4855 §3), clock rate and channels."""
        return (
            self.encoding.lower() == other.encoding.lower()
            and self.clock_rate == other.clock_rate
            and (self.channels or 1) == (other.channels or 1)
        )

    def __str__(self) -> str:
        text = f"{self.payload_type} {self.encoding}/{self.clock_rate}"
        return text if self.channels is None else f"{text}/{self.channels}"


_CACHED_VALUE_LENGTH = 64
_parse_rtpmap = RtpMap._parse
_parse_rtpmap_cached = functools.lru_cache(maxsize=256)(RtpMap._parse)


@dataclass(frozen=True, slots=True)
class CryptoAttribute:
    """``a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]`` (RFC 4568 §9.1).

    ``key_params`` are the ``;``-separated key parameters as written (``inline:<key||salt>[|...]``);
    ``session_params`` the space-separated session parameters (``UNENCRYPTED_SRTCP``...).
    """

    tag: int
    suite: str
    # Keys: never in a repr or an error message (descriptions end up in logs).
    key_params: tuple[str, ...] = field(repr=False)
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        parts = _fields(value)
        if len(parts) < 3:
            raise SdpError(
                f"a=crypto with {len(parts)} field(s) needs '<tag> <crypto-suite> <key-params>' "
                "(RFC 4568 §9.1)"
            )
        # RFC 4568 §9.1: tag = 1*9DIGIT
        tag = _number(parts[0], "crypto tag", 9)
        suite = _token(parts[1], "crypto suite")
        key_params = tuple(parts[2].split(";"))
        for param in key_params:
            method, colon, info = param.partition(":")
            # RFC 4568 §9.1: key-param = key-method ":" key-info
            if not colon or not method or not info:
                raise SdpError(
                    # Not the text: a key-param without its "inline:" is the key itself.
                    f"a crypto key parameter of a=crypto:{tag} is not '<key-method>:<key-info>' "
                    "(RFC 4568 §9.1)"
                )
        return cls(tag, suite, key_params, tuple(parts[3:]))

    @property
    def inline_key(self) -> str | None:
        """Base64 key||salt of the first ``inline`` key parameter, no lifetime or MKI (RFC 4568 §6.1)."""
        for param in self.key_params:
            method, _, info = param.partition(":")
            if method.lower() == "inline":
                return info.split("|", 1)[0]
        return None

    def __str__(self) -> str:
        return " ".join((str(self.tag), self.suite, ";".join(self.key_params), *self.session_params))


@dataclass(frozen=True, slots=True)
class RtcpAttribute:
    """``a=rtcp:<port> [<nettype> <addrtype> <connection-address>]`` (RFC 3605 §2.1)."""

    port: int
    nettype: str | None = None
    addrtype: str | None = None
    address: str | None = None

    @classmethod
    def parse(cls, value: str) -> RtcpAttribute:
        parts = _fields(value)
        if len(parts) not in (1, 4):
            raise SdpError(f"a=rtcp:{value} is not '<port> [<nettype> <addrtype> <address>]' (RFC 3605 §2.1)")
        port = _number(parts[0], "rtcp port", 5)
        if not 0 < port <= 65535:
            raise SdpError(f"rtcp port {port} is not in 1-65535 (RFC 3605 §2.1)")
        if len(parts) == 1:
            return cls(port)
        return cls(port, parts[1], parts[2], parts[3])

    def __str__(self) -> str:
        if self.address is None:
            return str(self.port)
        return f"{self.port} {self.nettype} {self.addrtype} {self.address}"


def _parse_attribute(value: str) -> Attribute:
    # RFC 8866 §5.13: a=<attribute-name> / a=<attribute-name>:<attribute-value>
    name, colon, rest = value.partition(":")
    return (_token(name, "attribute name"), rest if colon else None)


def _attribute_line(attribute: Attribute) -> str:
    name, value = attribute
    return f"a={name}" if value is None else f"a={name}:{value}"


class _Attributes:
    """Attribute lookups shared by session and media descriptions; names compare case-insensitively."""

    __slots__ = ()
    attributes: tuple[Attribute, ...]

    def has_attribute(self, name: str) -> bool:
        wanted = name.lower()
        return any(key.lower() == wanted for key, _ in self.attributes)

    def attribute(self, name: str) -> str | None:
        """Value of the first ``a=name:value``; None when absent or written without a value."""
        wanted = name.lower()
        for key, value in self.attributes:
            if key.lower() == wanted:
                return value
        return None

    def attributes_named(self, name: str) -> list[str | None]:
        """Values of every ``a=name`` line in order (None for those written without a value)."""
        wanted = name.lower()
        return [value for key, value in self.attributes if key.lower() == wanted]

    @property
    def direction(self) -> Direction | None:
        """The direction attribute written at this level, or None (RFC 8866 §6.7)."""
        for key, value in self.attributes:
            found = _DIRECTIONS.get(key.lower())
            if found is not None and value is None:
                return found
        return None


@dataclass(frozen=True, slots=True)
class MediaDescription(_Attributes):
    """One media description: the ``m=`` line and the lines after it up to the next ``m=`` (RFC 8866 §5.14).

    ``connections`` holds every ``c=`` line (RFC 8866 §5.7 allows several for multicast); most
    descriptions have zero or one, see ``connection``.
    """

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    title: str | None = None
    connections: tuple[Connection, ...] = ()
    bandwidths: tuple[Bandwidth, ...] = ()
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()
    # Lines of unknown type (letter, value), in order; written after the attributes.
    extra_lines: tuple[tuple[str, str], ...] = ()

    @property
    def connection(self) -> Connection | None:
        return self.connections[0] if self.connections else None

    @property
    def label(self) -> str | None:
        """``a=label`` (RFC 4574 §4), what SIPREC metadata uses to name a stream (RFC 7866 §8.1)."""
        return self.attribute("label")

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in milliseconds (RFC 8866 §6.4)."""
        value = self.attribute("ptime")
        if value is None:
            return None
        # Some peers write fractional ptimes ("20.0"); the integer part is what matters.
        whole = value.strip().split(".", 1)[0]
        return _number(whole, "ptime", 6)

    @property
    def rtcp(self) -> RtcpAttribute | None:
        """``a=rtcp`` (RFC 3605); None means RTCP is on port + 1 (RFC 3550 §11)."""
        value = self.attribute("rtcp")
        return None if value is None else RtcpAttribute.parse(value)

    @property
    def crypto(self) -> tuple[CryptoAttribute, ...]:
        """Every ``a=crypto`` line, in order (RFC 4568 §9.1)."""
        found = []
        for value in self.attributes_named("crypto"):
            if value is None:
                raise SdpError("a=crypto has no value (RFC 4568 §9.1)")
            found.append(CryptoAttribute.parse(value))
        tags = [crypto.tag for crypto in found]
        if len(set(tags)) != len(tags):
            # An answer names the offered line it accepts by its tag alone (RFC 4568 §5.1.2).
            raise SdpError(f"a=crypto tags {tags} are not unique in the m-line (RFC 4568 §9.1)")
        return tuple(found)

    def rtpmap(self, payload_type: int | str) -> RtpMap | None:
        """The ``a=rtpmap`` for a payload type, or None when there is none."""
        wanted = str(payload_type)
        for value in self.attributes_named("rtpmap"):
            if value is not None and _first_field(value) == wanted:
                return RtpMap.parse(value)
        return None

    def fmtp(self, payload_type: int | str) -> str | None:
        """The format parameters of ``a=fmtp:<payload type> <parameters>`` (RFC 8866 §6.15)."""
        wanted = str(payload_type)
        for value in self.attributes_named("fmtp"):
            if value is None:
                continue
            fmt, _, params = value.strip(" \t").partition(" ")
            if fmt == wanted:
                return params.strip(" \t")
        return None

    def codec(self, payload_type: int | str) -> RtpMap | None:
        """What a payload type means here: its rtpmap, else the RFC 3551 static assignment, else None."""
        found = self.rtpmap(payload_type)
        if found is not None:
            return found
        text = str(payload_type)
        if not _is_digits(text, 3):
            return None
        static = STATIC_PAYLOAD_TYPES.get(int(text))
        if static is None:
            return None
        encoding, clock_rate, channels = static
        return RtpMap(int(text), encoding, clock_rate, None if channels == 1 else channels)

    def lines(self) -> list[str]:
        """The description's lines in RFC 8866 §5 order, without line ends."""
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        out = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}"]
        if self.title is not None:
            out.append(f"i={self.title}")
        out.extend(f"c={c}" for c in self.connections)
        out.extend(f"b={b}" for b in self.bandwidths)
        if self.key is not None:
            out.append(f"k={self.key}")
        out.extend(_attribute_line(a) for a in self.attributes)
        out.extend(f"{kind}={value}" for kind, value in self.extra_lines)
        return out


@dataclass(frozen=True, slots=True)
class SessionDescription(_Attributes):
    """A whole SDP description (RFC 8866 §5): session-level fields, then the media descriptions."""

    origin: Origin
    session_name: str = "-"
    version: int = 0
    information: str | None = None
    uri: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    connection: Connection | None = None
    bandwidths: tuple[Bandwidth, ...] = ()
    timings: tuple[Timing, ...] = (Timing(),)
    time_zones: str | None = None  # the z= line, raw (RFC 8866 §5.11)
    key: str | None = None  # the k= line, raw (RFC 8866 §5.12, obsolete)
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()
    # Session-level lines of unknown type (letter, value), in order; written after the attributes.
    extra_lines: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, data: bytes) -> SessionDescription:
        return parse_sdp(data)

    def connection_for(self, media: MediaDescription) -> Connection | None:
        """The media-level c= line, else the session-level one (RFC 8866 §5.7)."""
        return media.connection or self.connection

    def direction_of(self, media: MediaDescription) -> Direction:
        """Media-level direction, else session-level, else sendrecv (RFC 3264 §5.1)."""
        return media.direction or self.direction or Direction.SENDRECV

    def lines(self) -> list[str]:
        """The description's lines in RFC 8866 §5 order, without line ends."""
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        if self.information is not None:
            out.append(f"i={self.information}")
        if self.uri is not None:
            out.append(f"u={self.uri}")
        out.extend(f"e={e}" for e in self.emails)
        out.extend(f"p={p}" for p in self.phones)
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"b={b}" for b in self.bandwidths)
        for timing in self.timings:
            out.append(f"t={timing}")
            out.extend(f"r={r}" for r in timing.repeats)
        if self.time_zones is not None:
            out.append(f"z={self.time_zones}")
        if self.key is not None:
            out.append(f"k={self.key}")
        out.extend(_attribute_line(a) for a in self.attributes)
        out.extend(f"{kind}={value}" for kind, value in self.extra_lines)
        for media in self.media:
            out.extend(media.lines())
        return out

    def __bytes__(self) -> bytes:
        text = _CRLF.join(self.lines()) + _CRLF
        return text.encode("utf-8", "surrogateescape")


# Line types RFC 8866 §5 allows only before the first m= line.
_SESSION_ONLY = frozenset("osuetrz")
# Line types RFC 8866 §5 allows at most once at session level.
_SESSION_SINGLE = frozenset("osiuczk")


@dataclass(slots=True)
class _MediaBuilder:
    first: _MediaLine
    title: str | None = None
    key: str | None = None
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    extra_lines: list[tuple[str, str]] = field(default_factory=list)

    def add(self, kind: str, value: str, number: int) -> None:
        if kind in _SESSION_ONLY:
            raise SdpError(f"{kind}= is a session-level line, not allowed in media description {number}")
        if kind == "i":
            if self.title is not None:
                raise SdpError(f"second i= line in media description {number}")
            self.title = value
        elif kind == "k":
            if self.key is not None:
                raise SdpError(f"second k= line in media description {number}")
            self.key = value
        elif kind == "c":
            self.connections.append(Connection.parse(value))
        elif kind == "b":
            self.bandwidths.append(Bandwidth.parse(value))
        elif kind == "a":
            self.attributes.append(_parse_attribute(value))
        else:
            self.extra_lines.append((kind, value))

    def build(self) -> MediaDescription:
        media, port, proto, formats, port_count = self.first
        return MediaDescription(
            media=media,
            port=port,
            proto=proto,
            formats=formats,
            port_count=port_count,
            title=self.title,
            connections=tuple(self.connections),
            bandwidths=tuple(self.bandwidths),
            key=self.key,
            attributes=tuple(self.attributes),
            extra_lines=tuple(self.extra_lines),
        )


@dataclass(slots=True)
class _SessionBuilder:
    singles: dict[str, str] = field(default_factory=dict)
    origin: Origin | None = None
    connection: Connection | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    extra_lines: list[tuple[str, str]] = field(default_factory=list)
    media: list[_MediaBuilder] = field(default_factory=list)

    def add(self, kind: str, value: str) -> None:
        if kind in _SESSION_SINGLE:
            if kind in self.singles:
                raise SdpError(f"second {kind}= line at session level (RFC 8866 §5)")
            self.singles[kind] = value
            if kind == "o":
                self.origin = Origin.parse(value)
            elif kind == "c":
                self.connection = Connection.parse(value)
        elif kind == "e":
            self.emails.append(value)
        elif kind == "p":
            self.phones.append(value)
        elif kind == "b":
            self.bandwidths.append(Bandwidth.parse(value))
        elif kind == "t":
            self.timings.append(Timing.parse(value))
        elif kind == "r":
            if not self.timings:
                raise SdpError("r= line before any t= line (RFC 8866 §5.10)")
            last = self.timings[-1]
            self.timings[-1] = Timing(last.start, last.stop, (*last.repeats, value))
        elif kind == "a":
            self.attributes.append(_parse_attribute(value))
        else:
            self.extra_lines.append((kind, value))

    def build(self) -> SessionDescription:
        if self.origin is None:
            raise SdpError("no o= line (RFC 8866 §5.2)")
        if "s" not in self.singles:
            raise SdpError("no s= line (RFC 8866 §5.3)")
        return SessionDescription(
            origin=self.origin,
            session_name=self.singles["s"],
            version=0,
            information=self.singles.get("i"),
            uri=self.singles.get("u"),
            emails=tuple(self.emails),
            phones=tuple(self.phones),
            connection=self.connection,
            bandwidths=tuple(self.bandwidths),
            timings=tuple(self.timings),
            time_zones=self.singles.get("z"),
            key=self.singles.get("k"),
            attributes=tuple(self.attributes),
            media=tuple(m.build() for m in self.media),
            extra_lines=tuple(self.extra_lines),
        )


# What an m= line holds: media, port, proto, formats, number of ports.
_MediaLine = tuple[str, int, str, tuple[str, ...], int | None]


def _parse_media_line(value: str) -> _MediaLine:
    # RFC 8866 §5.14: m=<media> <port>[/<number of ports>] <proto> <fmt> ...
    parts = _fields(value)
    if len(parts) < 4:
        raise SdpError(
            "m= needs '<media> <port> <proto> <fmt> ...' with at least one format (RFC 8866 §5.14)"
        )
    media, port_text, proto, *formats = parts
    _token(media, "m= media")
    port_part, slash, count_part = port_text.partition("/")
    port = _number(port_part, "m= port", 5)
    if port > 65535:
        raise SdpError(f"m= port {port} is not in 0-65535")
    port_count: int | None = None
    if slash:
        port_count = _number(count_part, "m= number of ports", 5)
        if port_count < 1:
            raise SdpError("m= number of ports must be at least 1 (RFC 8866 §5.14)")
    if not _PROTO.fullmatch(proto):
        raise SdpError(f"m= proto {proto!r} is not token *('/' token) (RFC 8866 §9)")
    return media, port, proto, tuple(formats), port_count


def _split_line(line: str) -> tuple[str, str]:
    # RFC 8866 §5: <type>=<value>, type exactly one case-significant letter; no NUL or CR in text.
    if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z" or "A" <= line[0] <= "Z"):
        raise SdpError("not a '<type>=<value>' line (RFC 8866 §5)")
    if "\r" in line or "\x00" in line:
        raise SdpError("CR or NUL inside a line (RFC 8866 §5)")
    return line[0], line[2:]


def _lines(data: bytes) -> list[str]:
    text = data.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    # LF-only and CRLF line ends both accepted; a CR is a line end only right before the LF.
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    while lines and lines[-1] == "":
        lines.pop()  # the final line end, or empty lines after the last line
    return lines


def parse_sdp(data: bytes) -> SessionDescription:
    """Parse one SDP body; raises ``SdpError`` (and nothing else) for any input.

    See the module docstring for what is required and what is tolerated.
    """
    lines = _lines(data)
    if not lines:
        raise SdpError("empty body, expected 'v=0' (RFC 8866 §5.1)")
    session = _SessionBuilder()
    for number, line in enumerate(lines, 1):
        try:
            _add_line(session, number, line)
        except SdpError as exc:
            if exc.line_number is not None:
                raise
            raise SdpError(exc.detail, line_number=number, line=line, status_hint=exc.status_hint) from None
    return session.build()


def _add_line(session: _SessionBuilder, number: int, line: str) -> None:
    if number == 1:
        if line != "v=0":
            raise SdpError("the first line must be 'v=0' (RFC 8866 §5.1)")
        return
    kind, value = _split_line(line)
    if kind == "v":
        raise SdpError("v= is allowed only as the first line (RFC 8866 §5.1)")
    if kind == "m":
        session.media.append(_MediaBuilder(_parse_media_line(value)))
    elif session.media:
        session.media[-1].add(kind, value, len(session.media))
    else:
        session.add(kind, value)
