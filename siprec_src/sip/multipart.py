"""multipart/mixed bodies (RFC 2046 §5.1), the envelope of every SIPREC offer.

An SRC's INVITE carries two parts (RFC 7866 §9.1): the SDP (``application/sdp``) and the
recording metadata (``application/rs-metadata+xml`` with ``Content-Disposition:
recording-session``). This module turns a list of ``BodyPart`` into the Content-Type value and
the body bytes, and back. It does no I/O and reads no clock.

What the decoder tolerates, because real SRCs send it (see the vendor captures in
``fixtures/vendor-siprec``):

- a preamble before the first delimiter and an epilogue after the close delimiter, both ignored
  (RFC 2046 §5.1.1 says they carry nothing);
- LF-only line endings instead of CRLF, and transport padding (spaces, tabs) after a delimiter;
- folded part headers and the SIP compact forms ``c``/``l``/``e`` (RFC 3261 §7.3.3);
- a missing close delimiter: several SRCs end the body after the last part without ``--b--``.
  The last part then runs to the end of the body (in SIP the Content-Length bounds it, so a
  truncated body is a transport problem, not ours to guess). A remainder that is empty or only
  whitespace is not counted as a part.

What it refuses with ``MultipartError`` (a ``RemoteProtocolError``, 400 unless said otherwise):
a Content-Type that is not multipart (415), no ``boundary`` parameter, a body with no delimiter
line at all (e.g. a bare SDP sent with a multipart Content-Type), a body without any part,
more than ``MAX_PARTS`` parts, malformed part headers.

Nested multiparts are returned as one opaque part; SIPREC does not need to look inside them.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from siprec_src.errors import LocalProtocolError, RemoteProtocolError
from siprec_src.sip.syntax import LWS, is_token, quote, read_quoted

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "MAX_PARTS",
    "BodyPart",
    "MultipartError",
    "decode_multipart",
    "encode_multipart",
    "parse_content_type",
]

# A SIPREC body has two parts, three with a nested extra; 32 leaves room for odd SRCs while
# bounding the work a hostile peer can make us do.
MAX_PARTS = 32

# RFC 2046 §5.1: "the absence of a Content-Type header usually indicates that the corresponding
# body has a content-type of text/plain" (the charset default is left to the reader).
DEFAULT_CONTENT_TYPE = "text/plain"

# RFC 2046 §5.1.1: boundary := 0*69<bchars> bcharsnospace
_BCHARS_NOSPACE = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?")
_BCHARS = _BCHARS_NOSPACE | frozenset(" ")
_MAX_BOUNDARY = 70

# RFC 3261 §7.3.3 compact header names that can occur in a MIME part of a SIP body.
_COMPACT_NAMES = {"c": "Content-Type", "l": "Content-Length", "e": "Content-Encoding"}

_CRLF = b"\r\n"
_LF = 0x0A
_CR = 0x0D


class MultipartError(RemoteProtocolError):
    """A multipart body (or its Content-Type) received from the peer is malformed."""


@dataclass(frozen=True, slots=True)
class BodyPart:
    """One part of a multipart body.

    ``content_type`` is the part's Content-Type value as written (parameters included);
    ``headers`` are the part's other header fields, in order (Content-Disposition, Content-ID...).
    """

    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        """Value of the first header called ``name`` (case-insensitive), Content-Type included."""
        lname = name.lower()
        if lname == "content-type":
            return self.content_type
        for hname, value in self.headers:
            if hname.lower() == lname:
                return value
        return None

    @property
    def media_type(self) -> str:
        """``type/subtype`` lowercased, without parameters; never raises.

        Best effort on purpose: a part with a mangled Content-Type (one capture has
        ``application/ +xml``) must still be inspectable, only the top-level one is parsed strictly.
        """
        return self.content_type.split(";", 1)[0].strip(LWS).lower()


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type value into the lowercased ``type/subtype`` and its parameters.

    RFC 3261 §20.15: ``m-type SLASH m-subtype *(SEMI m-parameter)``, ``m-value = token /
    quoted-string``. Parameter names are lowercased, quoted values are unescaped. Unquoted
    values are accepted up to the next ``;`` even when they hold non-token characters
    (``boundary=a:b``), because SRCs send them and nothing in them is ambiguous. Raises
    ``RemoteProtocolError`` naming what is wrong.
    """
    media, _, rest = value.partition(";")
    type_, slash, subtype = media.partition("/")
    type_ = type_.strip(LWS)
    subtype = subtype.strip(LWS)
    if not slash or not is_token(type_) or not is_token(subtype):
        raise RemoteProtocolError(f"malformed media type {media.strip(LWS)!r} in Content-Type {value!r}")
    params: dict[str, str] = {}
    i = 0
    n = len(rest)
    while i < n:
        ch = rest[i]
        if ch in LWS or ch == ";":
            i += 1  # an empty parameter (";;" or a trailing ";") carries nothing: skip it
            continue
        eq = _find_any(rest, "=;", i)
        name = rest[i:eq].strip(LWS).lower()
        if not is_token(name):
            raise RemoteProtocolError(f"malformed parameter name {name!r} in Content-Type {value!r}")
        if eq == n or rest[eq] != "=":
            raise RemoteProtocolError(f"parameter {name!r} has no value in Content-Type {value!r}")
        i = eq + 1
        while i < n and rest[i] in LWS:
            i += 1
        if i < n and rest[i] == '"':
            param_value, i = read_quoted(rest, i)
            while i < n and rest[i] in LWS:
                i += 1
            if i < n and rest[i] != ";":
                raise RemoteProtocolError(
                    f"text after the quoted value of {name!r} in Content-Type {value!r}"
                )
        else:
            end = _find_any(rest, ";", i)
            param_value = rest[i:end].strip(LWS)
            if not param_value or any(c == '"' or c in LWS or not c.isprintable() for c in param_value):
                raise RemoteProtocolError(f"malformed value of {name!r} in Content-Type {value!r}")
            i = end
        if name in params:
            # A second boundary= could make two parsers split the body differently: refuse.
            raise RemoteProtocolError(f"parameter {name!r} appears twice in Content-Type {value!r}")
        params[name] = param_value
    return f"{type_}/{subtype}".lower(), params


def _find_any(text: str, chars: str, start: int) -> int:
    """Index of the first character of ``chars`` at or after ``start``, else ``len(text)``."""
    for i in range(start, len(text)):
        if text[i] in chars:
            return i
    return len(text)


def encode_multipart(parts: Sequence[BodyPart], boundary: str | None = None) -> tuple[str, bytes]:
    """Encode ``parts`` as multipart/mixed; return (Content-Type value, body bytes).

    Lines end with CRLF. Without ``boundary`` a random one is drawn (``secrets``, so two calls
    never share one). Raises ``LocalProtocolError`` for an empty list, a bad boundary, a
    boundary found inside a part's body, or a part header that would break the framing.
    """
    if not parts:
        raise LocalProtocolError("a multipart body needs at least one part (RFC 2046 §5.1.1)")
    for number, part in enumerate(parts, start=1):
        _check_part(part, number)
    if boundary is None:
        boundary = _fresh_boundary(parts)
    else:
        _check_boundary(boundary)
        for number, part in enumerate(parts, start=1):
            # RFC 2046 §5.1.1: the boundary delimiter MUST NOT appear inside any encapsulated part.
            # Refusing the bare boundary anywhere is stricter than needed and never wrong.
            if boundary.encode("ascii") in part.body:
                raise LocalProtocolError(f"boundary {boundary!r} occurs in the body of part {number}")

    dash_boundary = b"--" + boundary.encode("ascii")
    out = bytearray()
    for part in parts:
        out += dash_boundary + _CRLF
        out += f"Content-Type: {part.content_type}".encode() + _CRLF
        for name, value in part.headers:
            out += f"{name}: {value}".encode() + _CRLF
        out += _CRLF
        out += part.body
        # This CRLF belongs to the next delimiter (RFC 2046 §5.1.1), so a body that ends
        # without a newline round-trips unchanged.
        out += _CRLF
    out += dash_boundary + b"--" + _CRLF
    # RFC 3261 §20.15 m-value = token / quoted-string: bchars such as ":" "=" "/" "?" " "
    # are not token characters and need quotes.
    param = boundary if is_token(boundary) else quote(boundary)
    return f"multipart/mixed;boundary={param}", bytes(out)


def _check_boundary(boundary: str) -> None:
    if not 1 <= len(boundary) <= _MAX_BOUNDARY:
        raise LocalProtocolError(f"boundary must be 1-{_MAX_BOUNDARY} characters (RFC 2046 §5.1.1)")
    if any(ch not in _BCHARS for ch in boundary) or boundary[-1] not in _BCHARS_NOSPACE:
        raise LocalProtocolError(
            f"boundary {boundary!r} has characters outside RFC 2046 §5.1.1 bchars or ends with a space"
        )


def _fresh_boundary(parts: Sequence[BodyPart]) -> str:
    # 96 random bits: a collision with a body is practically impossible, but the check is
    # cheap and turns "practically" into "never".
    for _ in range(8):
        candidate = secrets.token_hex(12)
        if not any(candidate.encode("ascii") in part.body for part in parts):
            return candidate
    raise LocalProtocolError("could not draw a boundary that does not occur in the part bodies")


def _check_part(part: BodyPart, number: int) -> None:
    try:
        parse_content_type(part.content_type)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"part {number}: {exc.reason}") from exc
    if _breaks_line(part.content_type):
        raise LocalProtocolError(f"part {number}: Content-Type contains a line break")
    for name, value in part.headers:
        if not is_token(name):
            raise LocalProtocolError(f"part {number}: header name {name!r} is not a token (RFC 3261 §25.1)")
        if name.lower() in ("content-type", "c"):
            raise LocalProtocolError(f"part {number}: give the Content-Type as BodyPart.content_type")
        if _breaks_line(value):
            # A CR or LF would end the header early and let the value forge headers or a delimiter.
            raise LocalProtocolError(f"part {number}: value of {name!r} contains a line break")


def _breaks_line(text: str) -> bool:
    return "\r" in text or "\n" in text or "\x00" in text


def decode_multipart(content_type: str, body: bytes) -> list[BodyPart]:
    """Split a multipart body into its parts; ``content_type`` is the message's Content-Type value.

    Raises ``MultipartError`` and nothing else for any input; see the module docstring for
    what is tolerated.
    """
    try:
        media_type, params = parse_content_type(content_type)
    except RemoteProtocolError as exc:
        raise MultipartError(f"bad Content-Type: {exc.reason}") from exc
    if not media_type.startswith("multipart/"):
        raise MultipartError(f"Content-Type {media_type!r} is not a multipart type", status_hint=415)
    boundary = params.get("boundary")
    if boundary is None:
        raise MultipartError(f"Content-Type {content_type!r} has no boundary parameter (RFC 2046 §5.1.1)")
    # Reading, we only require what the search needs; the bchars rule is enforced when we write.
    if not 1 <= len(boundary) <= _MAX_BOUNDARY or not boundary.isascii() or not boundary.isprintable():
        raise MultipartError(f"boundary {boundary!r} is not 1-{_MAX_BOUNDARY} printable ASCII characters")
    dash_boundary = b"--" + boundary.encode("ascii")

    first = _find_delimiter(body, dash_boundary, 0)
    if first is None:
        raise MultipartError(f"multipart body has no delimiter line '--{boundary}'")
    _, pos, closed = first
    parts: list[BodyPart] = []
    while not closed:
        found = _find_delimiter(body, dash_boundary, pos)
        if found is None:
            # Missing close delimiter (tolerated, see module docstring): the last part runs to
            # the end, unless nothing but whitespace follows the last delimiter.
            rest = body[pos:]
            if rest.strip(b" \t\r\n"):
                _check_count(len(parts) + 1)
                parts.append(_parse_part(rest, len(parts) + 1))
            break
        line_start, after, closed = found
        _check_count(len(parts) + 1)
        # max(): with an empty part the delimiter's own line break may precede ``pos``.
        parts.append(_parse_part(body[pos : max(line_start, pos)], len(parts) + 1))
        pos = after
    # After the close delimiter comes the epilogue, which RFC 2046 §5.1.1 says to ignore.
    if not parts:
        raise MultipartError(f"multipart body with boundary {boundary!r} has no body part")
    return parts


def _check_count(count: int) -> None:
    if count > MAX_PARTS:
        raise MultipartError(f"multipart body has more than {MAX_PARTS} parts")


def _find_delimiter(body: bytes, dash_boundary: bytes, start: int) -> tuple[int, int, bool] | None:
    """Find the next delimiter line at or after ``start``.

    Returns (index where the line break before it starts, index after the line, is close
    delimiter). RFC 2046 §5.1.1: the delimiter is CRLF "--" boundary, so the line break in
    front of it is part of the delimiter, not of the preceding part; it may be followed by
    transport padding (LWSP) before its own line break. A line such as ``--boundaryX`` is
    content, not a delimiter. LF alone is accepted wherever CRLF is expected.
    """
    n = len(body)
    search = start
    while True:
        idx = body.find(dash_boundary, search)
        if idx < 0:
            return None
        search = idx + 1
        if idx > 0 and body[idx - 1] != _LF:
            continue  # not at the start of a line
        j = idx + len(dash_boundary)
        closing = body.startswith(b"--", j)
        if closing:
            j += 2
        while j < n and body[j] in b" \t":
            j += 1
        if j == n:
            after = n
        elif body[j] == _LF:
            after = j + 1
        elif body.startswith(_CRLF, j):
            after = j + 2
        else:
            continue
        if idx >= 2 and body[idx - 2] == _CR:
            line_start = idx - 2
        elif idx >= 1:
            line_start = idx - 1
        else:
            line_start = 0
        return line_start, after, closing


def _parse_part(raw: bytes, number: int) -> BodyPart:
    """Parse one encapsulated part: header fields, an empty line, then the body (RFC 2046 §5.1.1)."""
    header_lines: list[bytes] = []
    body: bytes | None = None
    i = 0
    n = len(raw)
    while i < n:
        nl = raw.find(b"\n", i)
        line_end, next_i = (n, n) if nl < 0 else (nl, nl + 1)
        line = raw[i:line_end]
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            body = raw[next_i:]
            break
        header_lines.append(line)
        i = next_i
    if body is None:
        # No empty line: valid only for a part that has headers and no body, since the line
        # break that would end the last header is the delimiter's.
        try:
            content_type, headers = _parse_headers(header_lines, number)
        except MultipartError as exc:
            raise MultipartError(
                f"part {number}: no empty line between its headers and its body ({exc.reason})"
            ) from exc
        return BodyPart(content_type, b"", headers)
    content_type, headers = _parse_headers(header_lines, number)
    return BodyPart(content_type, body, headers)


def _parse_headers(lines: list[bytes], number: int) -> tuple[str, tuple[tuple[str, str], ...]]:
    fields: list[str] = []
    for raw_line in lines:
        try:
            text = raw_line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MultipartError(f"part {number}: header line {raw_line[:40]!r} is not UTF-8") from exc
        if text[0] in LWS:
            # RFC 3261 §7.3.1 (after RFC 5322 §2.2.3): a line that starts with whitespace
            # continues the previous field; the fold is one space.
            if not fields:
                raise MultipartError(f"part {number}: continuation line {text!r} before any header")
            fields[-1] = fields[-1].rstrip(LWS) + " " + text.strip(LWS)
        else:
            fields.append(text)
    content_type: str | None = None
    headers: list[tuple[str, str]] = []
    for field in fields:
        name, colon, value = field.partition(":")
        # RFC 3261 §7.3.1: whitespace may sit between the name and the colon.
        name = name.strip(LWS)
        if not colon or not is_token(name):
            raise MultipartError(f"part {number}: malformed header line {field[:80]!r}")
        name = _COMPACT_NAMES.get(name.lower(), name)
        value = value.strip(LWS)
        if name.lower() == "content-type":
            if content_type is not None:
                raise MultipartError(f"part {number}: more than one Content-Type")
            if not value:
                raise MultipartError(f"part {number}: empty Content-Type")
            content_type = value
        else:
            headers.append((name, value))
    return content_type or DEFAULT_CONTENT_TYPE, tuple(headers)
