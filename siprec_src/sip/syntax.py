"""Lexical building blocks of the SIP grammar (RFC 3261 §25.1) shared by the header parsers.

Everything here works on already-unfolded header values (str). The functions are small and
strict: a value that breaks the grammar raises ``SipParseError`` naming what is wrong, so the
message parser can refuse it with 400 instead of half-parsing it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from siprec_src.errors import LocalProtocolError, RemoteProtocolError


class SipParseError(RemoteProtocolError):
    """A SIP message (or one of its headers) is malformed; ``status_hint`` is the answer to send."""


# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
# word (Call-ID) adds the separators that are not structural.
WORD_CHARS = TOKEN_CHARS | frozenset('()<>:\\"/[]?{}')
LWS = " \t"


_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def is_digits(text: str, max_length: int) -> bool:
    """1 to ``max_length`` ASCII digits (RFC 3261 ``1*DIGIT``), which ``int()`` reads as written.

    ``str.isdigit()`` alone is not enough for text from the wire: it accepts "²" (which ``int()``
    refuses with ValueError) and other scripts' digits (which ``int()`` reads), and a long run of
    digits reaches ``int()``'s 4300-digit limit (ValueError again).
    """
    return 0 < len(text) <= max_length and text.isascii() and text.isdigit()


_WORD_RE = re.compile("[" + re.escape("".join(sorted(WORD_CHARS))) + "]+")  # one scan in C


def is_word(text: str) -> bool:
    return _WORD_RE.fullmatch(text) is not None


def quote(text: str) -> str:
    """Render ``text`` as a quoted-string (RFC 3261 §25.1).

    ``"``, ``\\`` and control characters are escaped as quoted-pairs. CR and LF cannot be
    escaped at all (quoted-pair excludes them), and letting them through would inject header
    lines, so they are refused.
    """
    out = ['"']
    for ch in text:
        if ch in "\r\n":
            raise LocalProtocolError(f"a quoted string cannot contain CR or LF: {text!r}")
        if ch in '"\\' or (ch < " " and ch != "\t") or ch == "\x7f":
            out.append("\\")
        out.append(ch)
    out.append('"')
    return "".join(out)


def read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read the quoted-string that opens at ``text[start]``; return (unescaped, index after it)."""
    if text[start] != '"':
        raise SipParseError(f"expected a quoted string at {text[start:]!r}")
    out: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            # RFC 3261 §25.1 quoted-pair: the backslash escapes any character but CR/LF.
            if i + 1 >= n:
                break
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise SipParseError(f"unterminated quoted string in {text!r}")


def split_outside_quotes(text: str, sep: str) -> Iterator[str]:
    """Split at ``sep`` where it is not inside a quoted string or an ``<...>`` URI.

    Used for comma-separated multi-value headers (RFC 3261 §7.3.1) and for ``;`` params.
    An unbalanced quote raises: a header such as ``"Mr. J. User <sip:...>`` (RFC 4475
    quotbal) must not be split into pieces that look valid.
    """
    if '"' not in text and "<" not in text:
        # The common case (no quoted string, no URI in brackets): nothing can hide a separator.
        yield from text.split(sep)
        return
    depth_angle = 0
    in_quote = False
    start = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if in_quote:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == "<":
            depth_angle += 1
        elif ch == ">":
            depth_angle = max(0, depth_angle - 1)
        elif ch == sep and depth_angle == 0:
            yield text[start:i]
            start = i + 1
        i += 1
    if in_quote:
        raise SipParseError(f"unbalanced quote in {text!r}")
    yield text[start:]


Params = tuple[tuple[str, str | None], ...]


def parse_params(text: str, *, context: str) -> Params:
    """Parse ``;name[=value]`` generic-params (RFC 3261 §25.1) that follow a header value.

    ``text`` starts right after the header's main part (it begins with ``;`` or is empty).
    Empty params (``;;``) are a syntax error (RFC 4475 badinv01).
    """
    stripped = text.strip(LWS)
    if not stripped:
        return ()
    if stripped[0] != ";":
        raise SipParseError(f"{context}: unexpected text {stripped!r} where parameters were expected")
    params: list[tuple[str, str | None]] = []
    pieces = list(split_outside_quotes(stripped[1:], ";"))
    for piece in pieces:
        name, eq, value = piece.partition("=")
        name = name.strip(LWS)
        if not is_token(name):
            raise SipParseError(f"{context}: bad parameter name {name!r}")
        if not eq:
            params.append((name, None))
            continue
        value = value.strip(LWS)
        if value.startswith('"'):
            unq, end = read_quoted(value, 0)
            if value[end:].strip(LWS):
                raise SipParseError(f"{context}: text after quoted value of parameter {name!r}")
            params.append((name, quote(unq)))
        elif value.startswith("[") and value.endswith("]"):
            params.append((name, value))  # IPv6 reference, e.g. received=[2001:db8::1]
        elif is_token(value) or _is_ipv6(value):
            # RFC 3261 §20.42 writes received= with a bare IPv6address, which is not a token.
            params.append((name, value))
        else:
            raise SipParseError(f"{context}: bad value {value!r} for parameter {name!r}")
    return tuple(params)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def format_params(params: Params) -> str:
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)


def get_param(params: Params, name: str) -> str | None:
    """Value of the first parameter called ``name`` (case-insensitive); ``""`` for a flag."""
    lname = name.lower()
    for pname, value in params:
        if pname.lower() == lname:
            return "" if value is None else value
    return None


def has_param(params: Params, name: str) -> bool:
    lname = name.lower()
    return any(pname.lower() == lname for pname, _ in params)


def replace_param(params: Params, name: str, value: str | None) -> Params:
    """Set ``name`` to ``value`` (added at the end when absent), keeping the order of the others."""
    lname = name.lower()
    out: list[tuple[str, str | None]] = []
    done = False
    for pname, pvalue in params:
        if pname.lower() == lname:
            if not done:
                out.append((pname, value))
                done = True
        else:
            out.append((pname, pvalue))
    if not done:
        out.append((name, value))
    return tuple(out)


def remove_param(params: Params, name: str) -> Params:
    lname = name.lower()
    return tuple((pname, value) for pname, value in params if pname.lower() != lname)
