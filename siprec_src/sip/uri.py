"""SIP and SIPS URIs (RFC 3261 §19.1) and the absolute URIs other schemes use.

A ``SipUri`` keeps its user part, parameters and headers exactly as written (escapes
included) so that a message round-trips byte for byte; comparison helpers unescape where
RFC 3261 §19.1.4 says to. Anything that is not sip/sips is an ``AbsoluteUri`` (tel:, http:,
an unknown scheme): the parser accepts it and the UA layer decides (416, RFC 4475 §3.3.1).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, replace
from urllib.parse import unquote

from siprec_src.sip.syntax import (
    Params,
    SipParseError,
    format_params,
    get_param,
    has_param,
    is_digits,
    remove_param,
    replace_param,
)

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?\Z")
# RFC 3261 §25.1 user / password / param / header characters (unreserved + escaped + extras).
_USER = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+\Z")
_PASSWORD = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*\Z")
_PARAMCHARS = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+\Z")
_HEADERCHARS = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})*\Z")
_OPAQUE_BAD = re.compile(r"[\s<>\"]")

DEFAULT_PORTS = {"sip": 5060, "sips": 5061}


@dataclass(frozen=True, slots=True)
class SipUri:
    """``sip:`` or ``sips:`` URI. ``host`` is stored without IPv6 brackets."""

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> SipUri:
        uri = parse_uri(text)
        if not isinstance(uri, SipUri):
            raise SipParseError(f"not a sip: or sips: URI: {text!r}", 416)
        return uri

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    @property
    def transport(self) -> str | None:
        """The ``transport=`` parameter, lowercased, or None."""
        value = get_param(self.params, "transport")
        return value.lower() if value else None

    @property
    def host_port(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unquote(self.user)

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def has_param(self, name: str) -> bool:
        return has_param(self.params, name)

    def with_param(self, name: str, value: str | None = None) -> SipUri:
        return replace(self, params=replace_param(self.params, name, value))

    def without_param(self, name: str) -> SipUri:
        return replace(self, params=remove_param(self.params, name))

    def without_headers(self) -> SipUri:
        return replace(self, headers=())

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host_port)
        out.append(format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{name}={value}" for name, value in self.headers))
        return "".join(out)


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """A URI of another scheme, kept opaque (RFC 3261 §19.1: absoluteURI)."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


Uri = SipUri | AbsoluteUri


def parse_host(text: str, *, context: str) -> str:
    """Validate a host (hostname, IPv4 address or bracketed IPv6 reference); return it unbracketed."""
    if text.startswith("["):
        if not text.endswith("]"):
            raise SipParseError(f"{context}: unterminated IPv6 reference {text!r}")
        inner = text[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise SipParseError(f"{context}: bad IPv6 address {inner!r}") from None
        return inner
    if not text or not _HOSTNAME.match(text):
        raise SipParseError(f"{context}: bad host {text!r}")
    return text


def parse_host_port(text: str, *, context: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (host may be ``[v6]``) and validate both parts."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"{context}: unterminated IPv6 reference {text!r}")
        host_text, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"{context}: unexpected {rest!r} after host")
        port_text = rest[1:] if rest else None
    else:
        host_text, colon, port_text_s = text.partition(":")
        port_text = port_text_s if colon else None
    host = parse_host(host_text, context=context)
    if port_text is None:
        return host, None
    if not is_digits(port_text, 5) or int(port_text) > 65535:
        raise SipParseError(f"{context}: bad port {port_text!r}")
    return host, int(port_text)


# Parsed URIs are immutable values, and the same few come back in every message of every call
# (our Contact, the SRS's, the From URI): each is parsed once and then shared. What a peer sends
# can only evict entries; long texts are parsed every time rather than kept.
PARSE_CACHE_SIZE = 1024
PARSE_CACHE_MAX_LENGTH = 256


def parse_uri(text: str) -> Uri:
    """Parse a URI as it appears in a Request-URI or inside ``<...>``."""
    if len(text) <= PARSE_CACHE_MAX_LENGTH:
        return _parse_uri_cached(text)
    return _parse_uri(text)


def _parse_uri(text: str) -> Uri:
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.match(scheme):
        raise SipParseError(f"bad URI {text!r}: no scheme")
    lscheme = scheme.lower()
    if lscheme not in ("sip", "sips"):
        if not rest or _OPAQUE_BAD.search(rest):
            raise SipParseError(f"bad URI {text!r}")
        return AbsoluteUri(lscheme, rest)
    context = f"URI {text!r}"
    # RFC 3261 §25.1: userinfo ends at the first '@' (it cannot contain an unescaped '@',
    # and neither can the params or headers that follow the host).
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user_text, pcolon, pw = userinfo.partition(":")
        if not _USER.match(user_text):
            raise SipParseError(f"{context}: bad user part {user_text!r}")
        if pcolon and not _PASSWORD.match(pw):
            raise SipParseError(f"{context}: bad password")
        user, password = user_text, (pw if pcolon else None)
    hostport, qmark, headers_text = rest.partition("?")
    hostport, semi, params_text = hostport.partition(";")
    host, port = parse_host_port(hostport, context=context)
    params: list[tuple[str, str | None]] = []
    if semi:
        for piece in params_text.split(";"):
            name, eq, value = piece.partition("=")
            if not _PARAMCHARS.match(name) or (eq and not _PARAMCHARS.match(value)):
                raise SipParseError(f"{context}: bad URI parameter {piece!r}")
            params.append((name, value if eq else None))
    headers: list[tuple[str, str]] = []
    if qmark:
        for piece in headers_text.split("&"):
            name, eq, value = piece.partition("=")
            if not name or not eq or not _HEADERCHARS.match(name) or not _HEADERCHARS.match(value):
                raise SipParseError(f"{context}: bad URI header {piece!r}")
            headers.append((name, value))
    return SipUri(lscheme, host, user, password, port, tuple(params), tuple(headers))


_parse_uri_cached = functools.lru_cache(maxsize=PARSE_CACHE_SIZE)(_parse_uri)
