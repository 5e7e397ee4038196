"""SIP requests and responses: parsing one complete message, and serializing it back.

``parse_message`` takes one whole message (a UDP datagram, or what the stream framer cut
from a TCP/TLS byte stream) and either returns a ``Request``/``Response`` or raises
``SipParseError`` whose ``status_hint`` says how a UAS should answer. It refuses what RFC 4475
§3.1.2 calls invalid and accepts what §3.1.1 and §3.2-3.4 call valid or merely odd; the
checks that need a UA's judgement (missing mandatory headers, duplicated single-value
headers) live in ``check_request`` so a UA can answer 400 after parsing.

Limits against abuse are part of the parser: message size, header count and header line
length are bounded, and the body must match Content-Length.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from siprec_src.sip.headers import (
    MULTI_VALUE,
    SINGLE_VALUE,
    CSeq,
    Headers,
    NameAddress,
    Via,
    check_date,
    is_header_name,
    parse_address_list,
    parse_call_id,
    parse_delta,
    parse_name_addr,
    parse_via_list,
)
from siprec_src.sip.syntax import LWS, SipParseError, is_digits, is_token, split_outside_quotes
from siprec_src.sip.uri import SipUri, Uri, parse_uri

SIP_VERSION = "SIP/2.0"

# RFC 3261 §21 reason phrases for the codes the core emits itself.
REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    603: "Decline",
}


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds that keep a hostile peer from making the parser work without end."""

    max_message_size: int = 65536
    max_headers: int = 256
    max_line_length: int = 8192


DEFAULT_LIMITS = ParseLimits()


class _Message:
    """What requests and responses share: headers, body and the typed header views."""

    __slots__ = ()
    headers: Headers
    body: bytes

    @property
    def via(self) -> list[Via]:
        return self.headers.parsed("via", lambda h: parse_via_list(h.get_all("Via")))

    def set_via(self, via: Via) -> None:
        """Make ``via`` the only Via of the message, its parsed view included.

        For a request we send (RFC 3261 §8.1.1.7: a new top Via for each): the transaction
        layer reads its branch, and neither it nor the responses (which carry the same Via
        back) need parse the value just written.
        """
        self.headers.remove("Via")
        self.headers.prepend("Via", via.remember())
        self.headers.parsed("via", lambda _: [via])

    @property
    def top_via(self) -> Via:
        vias = self.via
        if not vias:
            raise SipParseError("missing Via header")
        return vias[0]

    @property
    def from_(self) -> NameAddress:
        return self.headers.parsed("from", lambda h: parse_name_addr(_required(h, "From")))

    @property
    def to(self) -> NameAddress:
        return self.headers.parsed("to", lambda h: parse_name_addr(_required(h, "To")))

    @property
    def call_id(self) -> str:
        return self.headers.parsed("call-id", lambda h: parse_call_id(_required(h, "Call-ID")))

    @property
    def cseq(self) -> CSeq:
        return self.headers.parsed("cseq", lambda h: CSeq.parse(_required(h, "CSeq")))

    @property
    def contacts(self) -> list[NameAddress]:
        return self.headers.parsed("contact", lambda h: parse_address_list(h.get_all("Contact")))

    @property
    def record_route(self) -> list[NameAddress]:
        return self.headers.parsed("record-route", lambda h: parse_address_list(h.get_all("Record-Route")))

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return None if value is None else value.strip(LWS)

    def header_tokens(self, name: str) -> set[str]:
        """Lowercased tokens of a list header such as Require, Supported or Allow."""
        return {value.lower() for value in self.headers.get_all(name) if value}

    def _encode(self, start_line: str) -> bytes:
        lines = [start_line]
        have_length = False
        for name, value in self.headers:
            if name == "Content-Length":
                if have_length:
                    continue
                have_length = True
                value = str(len(self.body))
            lines.append(f"{name}: {value}")
        if not have_length:
            lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body


def _required(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise SipParseError(f"missing {name} header")
    return value


@dataclass(slots=True, eq=False)
class Request(_Message):
    method: str
    uri: Uri
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @property
    def sip_uri(self) -> SipUri:
        if not isinstance(self.uri, SipUri):
            raise SipParseError(f"unsupported URI scheme in {self.uri}", 416)
        return self.uri

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        return None if value is None else parse_delta(value, name="Max-Forwards", maximum=255)

    def __bytes__(self) -> bytes:
        return self._encode(f"{self.method} {self.uri} {SIP_VERSION}")

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


@dataclass(slots=True, eq=False)
class Response(_Message):
    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def __bytes__(self) -> bytes:
        return self._encode(f"{SIP_VERSION} {self.status} {self.reason}")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300


Message = Request | Response


def parse_message(data: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> Request | Response:
    """Parse one complete SIP message; raise ``SipParseError`` on anything malformed."""
    if len(data) > limits.max_message_size:
        raise SipParseError(
            f"message of {len(data)} bytes exceeds the {limits.max_message_size}-byte limit", 513
        )
    head_end = data.find(b"\r\n\r\n")
    sep_len = 4
    if head_end < 0:
        # Tolerate LF-only messages (RFC 3261 §7: CRLF is required, but robust parsers accept LF).
        head_end = data.find(b"\n\n")
        sep_len = 2
    if head_end < 0:
        # No empty line: a header-only datagram whose final CRLF ends the last header.
        head, body = data.rstrip(b"\r\n"), b""
    else:
        head, body = data[:head_end], data[head_end + sep_len :]
    text = head.decode("utf-8", "surrogateescape")
    crlf = text.count("\r\n")
    if crlf == text.count("\n") == text.count("\r"):
        lines = text.split("\r\n")  # every line ends with CRLF, as RFC 3261 §7 wants
    else:
        lines = text.split("\n")
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
        for line in lines:
            if "\r" in line:
                # RFC 3261 §25.1: CR only ever comes as part of CRLF (qdtext and quoted-pair
                # exclude it); a bare one would reach every header we copy into a response.
                raise SipParseError(f"bare CR in line {line[:80]!r}")
    # RFC 3261 §7.5: ignore empty lines before the start line.
    while lines and not lines[0]:
        lines.pop(0)
    if not lines:
        raise SipParseError("empty message")
    start = lines[0]
    header_lines = lines[1:]

    fields: list[tuple[str, str]] = []
    for line in header_lines:
        if len(line) > limits.max_line_length:
            raise SipParseError(f"header line longer than {limits.max_line_length} characters")
        if not line:
            raise SipParseError("empty line inside the header section")
        if line[0] in LWS:
            # RFC 3261 §7.3.1: a line that starts with white space continues the previous one.
            if not fields:
                raise SipParseError(f"continuation line before any header: {line!r}")
            name, value = fields[-1]
            more = line.strip(LWS)
            fields[-1] = (name, f"{value} {more}" if value and more else value or more)
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(LWS)
        if not colon or not is_header_name(name):
            raise SipParseError(f"malformed header line {line!r}")
        fields.append((name, value.strip(LWS)))
        if len(fields) > limits.max_headers:
            raise SipParseError(f"more than {limits.max_headers} header fields")
    headers = Headers(fields)

    message: Request | Response
    if start.startswith("SIP/") or start[:4].upper() == "SIP/":
        message = Response(*_parse_status_line(start), headers=headers)
    else:
        method, uri = _parse_request_line(start)
        message = Request(method, uri, headers=headers)
    message.body = _take_body(headers, body)
    _validate(message)
    return message


def _parse_request_line(line: str) -> tuple[str, Uri]:
    # RFC 3261 §7.1: Method SP Request-URI SP SIP-Version, single spaces, nothing else.
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(f"malformed request line {line!r}")
    method, uri_text, version = parts
    if not is_token(method):
        raise SipParseError(f"bad method in request line {line!r}")
    if version.upper() != SIP_VERSION:
        if version.upper().startswith("SIP/"):
            raise SipParseError(f"unsupported SIP version {version!r}", 505)
        raise SipParseError(f"malformed request line {line!r}")
    uri = parse_uri(uri_text)
    if isinstance(uri, SipUri) and uri.headers:
        # RFC 3261 §19.1.1: headers are not allowed in a Request-URI (RFC 4475 escruri).
        raise SipParseError(f"Request-URI must not contain headers: {uri_text!r}")
    return method, uri


def _parse_status_line(line: str) -> tuple[int, str]:
    version, _, rest = line.partition(" ")
    if version.upper() != SIP_VERSION:
        raise SipParseError(f"unsupported SIP version in status line {line!r}", 505)
    code, _, reason = rest.partition(" ")
    # RFC 3261 §7.2 / §21: Status-Code is exactly 3 digits, 100-699 (RFC 4475 bigcode).
    if not is_digits(code, 3) or not 100 <= int(code) <= 699:
        raise SipParseError(f"bad status code in status line {line!r}")
    return int(code), reason


def _take_body(headers: Headers, body: bytes) -> bytes:
    values = {value.strip(LWS) for value in headers.get_all("Content-Length")}
    if not values:
        return body  # RFC 3261 §18.3: over UDP the body runs to the end of the datagram
    if len(values) > 1:
        raise SipParseError(f"conflicting Content-Length headers: {sorted(values)}")
    (value,) = values
    if not is_digits(value, 10):
        raise SipParseError(f"bad Content-Length {value[:40]!r}")
    length = int(value)
    if length > len(body):
        raise SipParseError(f"Content-Length {length} is larger than the {len(body)}-byte body")
    # RFC 3261 §18.3: bytes past Content-Length in a datagram are discarded.
    return body[:length]


# List headers parsed in full by _validate anyway (which also catches their unbalanced quotes).
_PARSED_LISTS = frozenset(("via", "contact", "record-route", "route"))


def _validate(message: Request | Response) -> None:
    """Parse the headers every layer relies on now, so malformed ones are refused at the door."""
    headers = message.headers
    present = set(headers.lower_names())
    _ = message.via
    # List headers are split at their commas on every read (header_tokens, get_all): an
    # unbalanced quote in any of them (Supported: ", RFC 4475 quotbal) is refused here, once.
    # Only a value with a quote can hold an unbalanced one.
    for name in (present & MULTI_VALUE) - _PARSED_LISTS:
        for value in headers.get_all_raw(name):
            if '"' in value:
                list(split_outside_quotes(value, ","))
    # A header that appears once (the rule) is parsed through its cached view, so the layers
    # above read it without parsing it again; extra copies are only checked (check_request
    # refuses them in requests).
    cseqs: list[CSeq] = []
    if "from" in present:
        _parse_each(headers.get_all("From"), lambda: message.from_, parse_name_addr)
    if "to" in present:
        _parse_each(headers.get_all("To"), lambda: message.to, parse_name_addr)
    if "call-id" in present:
        _parse_each(headers.get_all("Call-ID"), lambda: message.call_id, parse_call_id)
    if "cseq" in present:
        cseqs = _parse_each(headers.get_all("CSeq"), lambda: message.cseq, CSeq.parse)
    if "contact" in present:
        _ = message.contacts
    if "record-route" in present:
        _ = message.record_route
    if "route" in present:
        parse_address_list(headers.get_all("Route"))
    if "max-forwards" in present:
        for value in headers.get_all("Max-Forwards"):
            parse_delta(value, name="Max-Forwards", maximum=255)
    if "expires" in present:
        for value in headers.get_all("Expires"):
            parse_delta(value, name="Expires", maximum=2**32 - 1)
    if "date" in present:
        for value in headers.get_all("Date"):
            check_date(value)
    if isinstance(message, Request):
        # RFC 3261 §8.1.1.5 / §12.2.1.1: the CSeq method matches the request method (RFC 4475 mismatch01/02).
        for cseq in cseqs:
            if cseq.method != message.method:
                raise SipParseError(
                    f"CSeq method {cseq.method} does not match request method {message.method}"
                )


_V = TypeVar("_V")


def _parse_each(values: list[str], cached: Callable[[], _V], parse: Callable[[str], _V]) -> list[_V]:
    if len(values) == 1:
        return [cached()]
    return [parse(value) for value in values]


def error_reason_phrase(error: SipParseError) -> str:
    """A reason phrase that says what was wrong: "Bad Request - <reason>" (RFC 3261 §21.4.1).

    Printable ASCII only and bounded, so the peer's bytes never reach our status line raw.
    """
    phrase = f"{REASON_PHRASES.get(error.status_hint, 'Bad Request')} - {error.reason}"
    return re.sub(r"[^\x20-\x7e]", "?", phrase)[:160]


MANDATORY_REQUEST_HEADERS = ("To", "From", "CSeq", "Call-ID", "Via")


def check_request(request: Request) -> None:
    """The checks a UAS makes before processing a parsed request (RFC 3261 §8.2).

    Raises ``SipParseError`` with status 400 naming the missing or duplicated header, 483 for
    Max-Forwards 0 on a request that would be forwarded is a proxy matter and not checked.
    """
    present: set[str] = set()
    twice: set[str] = set()
    for key in request.headers.lower_names():
        if key in present and key in SINGLE_VALUE:
            twice.add(key)
        present.add(key)
    missing = [name for name in MANDATORY_REQUEST_HEADERS if name.lower() not in present]
    if missing:
        raise SipParseError(f"missing mandatory header(s): {', '.join(missing)}")
    if twice:
        raise SipParseError(f"header {min(twice)} appears more than once")


def response_to(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """Build a response to ``request`` as RFC 3261 §8.2.6.2 says: copy Via, From, To, Call-ID, CSeq."""
    headers = Headers()
    for value in request.headers.get_all("Via"):
        headers.add("Via", value)
    for name in ("From", "To", "Call-ID", "CSeq"):
        copied = request.headers.get(name)
        if copied is not None:
            headers.add(name, copied)
    if to_tag is not None and status != 100 and request.headers.get("To") is not None and not request.to.tag:
        headers.set("To", str(request.to.with_tag(to_tag)))
    if content_type is not None:
        headers.add("Content-Type", content_type)
    return Response(status, reason if reason is not None else REASON_PHRASES.get(status, ""), headers, body)
