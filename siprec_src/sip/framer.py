"""Cutting a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3).

Over a stream transport Content-Length is mandatory and is the only way to find where a
message ends. A missing, negative, non-numeric or oversized Content-Length leaves no way to
resynchronize, so it is a connection-fatal ``FramingError``: the adapter closes the
connection. CRLF keepalives between messages (RFC 5626 §3.5.1) are skipped.
"""

from __future__ import annotations

from siprec_src.sip.message import DEFAULT_LIMITS, ParseLimits, Request, Response, parse_message
from siprec_src.sip.syntax import SipParseError


class FramingError(SipParseError):
    """The stream cannot be split into messages any more; close the connection."""


class StreamFramer:
    """Feed bytes in, get complete messages out.

    ``feed`` returns the messages completed by the new bytes. A message that frames correctly
    but does not parse is returned as the ``SipParseError`` instance in its place, so the
    adapter can answer 400 and carry on: framing is still intact. A ``FramingError`` is raised.
    """

    __slots__ = ("_buffer", "_limits", "keepalives")

    def __init__(self, limits: ParseLimits = DEFAULT_LIMITS) -> None:
        self._buffer = bytearray()
        self._limits = limits
        self.keepalives = 0  # CRLF keepalive pings seen; a pong is the adapter's business

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Request | Response | SipParseError]:
        self._buffer += data
        out: list[Request | Response | SipParseError] = []
        while True:
            item = self._next()
            if item is None:
                return out
            out.append(item)

    def _next(self) -> Request | Response | SipParseError | None:
        buf = self._buffer
        # Skip keepalive CRLFs (RFC 5626 §3.5.1 "double CRLF" ping) and stray line ends.
        skip = 0
        while skip < len(buf) and buf[skip] in (0x0D, 0x0A):
            skip += 1
        if 0 < skip == len(buf) < 4:
            return None  # maybe the first half of a CRLFCRLF ping split across reads: wait
        if skip:
            if skip >= 4:
                self.keepalives += 1
            del buf[:skip]
        if not buf:
            return None
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self._limits.max_message_size:
                raise FramingError("header section exceeds the message size limit", 513)
            return None
        head_len = end + 4
        length = self._content_length(bytes(buf[:end]))
        total = head_len + length
        if total > self._limits.max_message_size:
            raise FramingError(
                f"message of {total} bytes exceeds the {self._limits.max_message_size}-byte limit", 513
            )
        if len(buf) < total:
            return None
        raw = bytes(buf[:total])
        del buf[:total]
        try:
            return parse_message(raw, self._limits)
        except SipParseError as exc:
            return exc

    @staticmethod
    def _content_length(head: bytes) -> int:
        found: set[bytes] = set()
        for line in head.split(b"\r\n")[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                continue
            lname = name.strip().lower()
            if lname in (b"content-length", b"l"):
                found.add(value.strip())
        if not found:
            raise FramingError("missing Content-Length on a stream transport (RFC 3261 §18.3)")
        if len(found) > 1:
            raise FramingError("conflicting Content-Length headers on a stream transport")
        (value,) = found
        if not value.isdigit() or len(value) > 9:
            raise FramingError(f"bad Content-Length {value.decode('latin-1')!r} on a stream transport")
        return int(value)
