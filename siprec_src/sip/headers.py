"""SIP header fields: the ordered container and the typed values of the headers the core uses.

``Headers`` keeps every field in order as received (compact names expanded, folding undone)
so a message serializes back to what was parsed. Typed views (``Via``, ``NameAddress``,
``CSeq``) are parsed on first use and cached until the container changes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from siprec_src.errors import LocalProtocolError
from siprec_src.sip.syntax import (
    LWS,
    Params,
    SipParseError,
    format_params,
    get_param,
    is_digits,
    is_token,
    is_word,
    parse_params,
    quote,
    read_quoted,
    replace_param,
    split_outside_quotes,
)
from siprec_src.sip.uri import (
    PARSE_CACHE_MAX_LENGTH,
    PARSE_CACHE_SIZE,
    AbsoluteUri,
    SipUri,
    Uri,
    parse_host_port,
    parse_uri,
)

# RFC 3261 §7.3.3 and the later RFCs that define compact forms (3265, 3515, 3892, 4028, 3841, 4474).
COMPACT_FORMS = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_KNOWN = (
    "Accept Accept-Encoding Accept-Language Alert-Info Allow Allow-Events Authentication-Info Authorization "
    "Call-ID Call-Info Contact Content-Disposition Content-Encoding Content-Language Content-Length "
    "Content-Type CSeq Date Error-Info Event Expires From In-Reply-To Max-Forwards Min-Expires Min-SE "
    "MIME-Version Organization P-Asserted-Identity Priority Proxy-Authenticate Proxy-Authorization "
    "Proxy-Require Reason Record-Route Refer-To Referred-By Reply-To Require Retry-After Route RSeq RAck "
    "Server Session-Expires Subject Supported Timestamp To Unsupported User-Agent Via Warning "
    "WWW-Authenticate Path Service-Route"
).split()
_CANONICAL = {name.lower(): name for name in _KNOWN}

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1), so values may be split.
# The auth headers are absent on purpose: their single value contains commas.
MULTI_VALUE = frozenset(
    name.lower()
    for name in (
        "Accept Accept-Encoding Accept-Language Alert-Info Allow Allow-Events Call-Info Contact "
        "Content-Encoding Content-Language Error-Info In-Reply-To Path Proxy-Require Reason Record-Route "
        "Require Route Service-Route Supported Unsupported Via Warning"
    ).split()
)
# Headers that must appear once at most (RFC 3261 §20); a second copy is answered with 400.
SINGLE_VALUE = frozenset(
    ("call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type", "session-expires")
)


def canonical_name(name: str) -> str:
    """Expand compact forms and give known headers their usual spelling (``cseq`` -> ``CSeq``)."""
    lname = name.lower()
    if len(lname) == 1 and lname in COMPACT_FORMS:
        return COMPACT_FORMS[lname]
    return _CANONICAL.get(lname, name)


# Header names as written -> (canonical spelling, lowercase key). Every lookup, every field
# parsed and every field added resolves its name, a dozen times per message: remembering the
# answer for the names that come up is what keeps that cheap. Only token names go in (so a hit
# also means "valid name"), and only so many of them: the names a peer sends are its choice.
_NAMES: dict[str, tuple[str, str]] = {}
_NAMES_LIMIT = 2048
_NAME_LENGTH_LIMIT = 64


def _names(name: str) -> tuple[str, str]:
    """(canonical spelling, lowercase key) of a header name."""
    found = _NAMES.get(name)
    if found is None:
        canon = canonical_name(name)
        found = (canon, canon.lower())
        if len(_NAMES) < _NAMES_LIMIT and len(name) <= _NAME_LENGTH_LIMIT and is_token(name):
            _NAMES[name] = found
    return found


for _name in (*_KNOWN, *COMPACT_FORMS):
    for _spelling in (_name, _name.lower(), _name.upper()):
        _names(_spelling)


def is_header_name(name: str) -> bool:
    """Whether ``name`` is a valid header field name (a token, RFC 3261 §7.3.1)."""
    return name in _NAMES or is_token(name)


T = TypeVar("T")


def _checked(name: str, value: str) -> tuple[str, str]:
    """Refuse a field that would break the message framing (header injection); return its names."""
    if not is_header_name(name):
        raise LocalProtocolError(f"bad header name {name!r}")
    if "\r" in value or "\n" in value:
        raise LocalProtocolError(f"header {name} value contains CR or LF: {value!r}")
    return _names(name)


class Headers:
    """Ordered, case-insensitive multimap of header fields."""

    __slots__ = ("_cache", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []  # (lowercase key, canonical name, value)
        self._cache: dict[str, Any] = {}
        for name, value in items:
            canon, key = _names(name)
            self._items.append((key, canon, value))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _, name, value in self._items:
            yield name, value

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _names(name)[1]
        return any(item[0] == key for item in self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        new = Headers()
        new._items = list(self._items)
        return new

    def lower_names(self) -> list[str]:
        """The lowercase name of each field, in order (compact forms expanded, repeats kept)."""
        return [item[0] for item in self._items]

    def get(self, name: str) -> str | None:
        """The first field's value, as received (not split)."""
        key = _names(name)[1]
        for item in self._items:
            if item[0] == key:
                return item[2]
        return None

    def get_all_raw(self, name: str) -> list[str]:
        """Every field's value as received, in order (list-valued headers not split)."""
        key = _names(name)[1]
        return [item[2] for item in self._items if item[0] == key]

    def get_all(self, name: str) -> list[str]:
        """Every value: fields in order, and list-valued headers split at their commas."""
        key = _names(name)[1]
        raw = [item[2] for item in self._items if item[0] == key]
        if key not in MULTI_VALUE or not raw:
            return raw
        out: list[str] = []
        for value in raw:
            if "," not in value and '"' not in value:
                out.append(value.strip(LWS))  # one value, and no quote to check: nothing to split
            else:
                out.extend([part.strip(LWS) for part in split_outside_quotes(value, ",")])
        return out

    def count(self, name: str) -> int:
        key = _names(name)[1]
        return sum(1 for item in self._items if item[0] == key)

    def add(self, name: str, value: str) -> None:
        canon, key = _checked(name, value)
        self._items.append((key, canon, value))
        if self._cache:
            self._cache.clear()

    def prepend(self, name: str, value: str) -> None:
        """Insert before every other field (a new top Via, RFC 3261 §8.1.1.7)."""
        canon, key = _checked(name, value)
        self._items.insert(0, (key, canon, value))
        if self._cache:
            self._cache.clear()

    def set(self, name: str, value: str) -> None:
        """Replace every field called ``name`` by one, at the first one's place (or at the end)."""
        canon, key = _checked(name, value)
        out: list[tuple[str, str, str]] = []
        placed = False
        for item in self._items:
            if item[0] == key:
                if not placed:
                    out.append((key, item[1], value))
                    placed = True
            else:
                out.append(item)
        if not placed:
            out.append((key, canon, value))
        self._items = out
        self._cache.clear()

    def remove(self, name: str) -> None:
        key = _names(name)[1]
        self._items = [item for item in self._items if item[0] != key]
        self._cache.clear()

    def remove_first(self, name: str) -> None:
        key = _names(name)[1]
        for index, item in enumerate(self._items):
            if item[0] == key:
                del self._items[index]
                break
        self._cache.clear()

    def parsed(self, key: str, parse: Callable[[Headers], T]) -> T:
        """Parse once with ``parse(self)`` and cache the result until the next change."""
        try:
            return self._cache[key]  # type: ignore[no-any-return]
        except KeyError:
            value = parse(self)
            self._cache[key] = value
            return value


# --- Via (RFC 3261 §20.42) ---------------------------------------------------------------

_VIA = re.compile(r"[ \t]*([^ \t/]+)[ \t]*/[ \t]*([^ \t/]+)[ \t]*/[ \t]*([^ \t/;]+)[ \t]+([^;]*)(.*)\Z", re.S)


@dataclass(frozen=True, slots=True)
class Via:
    transport: str
    host: str
    port: int | None = None
    params: Params = ()

    @classmethod
    def parse(cls, text: str) -> Via:
        # The Via of a request we send comes back in each of its responses: the value we wrote
        # is remembered (``remember``) and the responses' copies are not parsed again.
        value = _VIAS.get(text)
        if value is None:
            value = cls._parse(text)
            if len(text) <= PARSE_CACHE_MAX_LENGTH:
                _VIAS.remember(text, value)
        return value

    def remember(self) -> str:
        """This Via as text, which ``Via.parse`` then gives back as this value without parsing."""
        text = str(self)
        if len(text) <= PARSE_CACHE_MAX_LENGTH:
            _VIAS.remember(text, self)
        return text

    @classmethod
    def _parse(cls, text: str) -> Via:
        match = _VIA.match(text)
        if not match:
            raise SipParseError(f"bad Via {text!r}")
        name, version, transport, sent_by, rest = match.groups()
        if name.upper() != "SIP" or version != "2.0":
            raise SipParseError(f"Via names an unsupported protocol {name}/{version}", 505)
        if not is_token(transport):
            raise SipParseError(f"bad Via transport {transport!r}")
        # sent-by = host [ COLON port ], and COLON may have LWS around it (RFC 3261 §25.1)
        host_port = sent_by.strip(LWS)
        if "[" not in host_port:
            host_port = re.sub(r"[ \t]*:[ \t]*", ":", host_port)
        host, port = parse_host_port(host_port, context="Via")
        return cls(transport.upper(), host, port, parse_params(rest, context="Via"))

    @property
    def branch(self) -> str | None:
        return get_param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return get_param(self.params, "received")

    @property
    def rport(self) -> str | None:
        return get_param(self.params, "rport")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def with_param(self, name: str, value: str | None) -> Via:
        return replace(self, params=replace_param(self.params, name, value))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port is None else f":{self.port}"
        return f"SIP/2.0/{self.transport} {host}{port}{format_params(self.params)}"


class _Remembered(Generic[T]):
    """Values parsed from short texts, the oldest forgotten first past ``size`` of them."""

    __slots__ = ("_size", "_values")

    def __init__(self, size: int) -> None:
        self._size = size
        self._values: dict[str, T] = {}

    def get(self, text: str) -> T | None:
        return self._values.get(text)

    def remember(self, text: str, value: T) -> None:
        values = self._values
        if text not in values and len(values) >= self._size:
            del values[next(iter(values))]
        values[text] = value

    def __len__(self) -> int:
        return len(self._values)


_VIAS: _Remembered[Via] = _Remembered(PARSE_CACHE_SIZE)


def parse_via_list(values: Iterable[str]) -> list[Via]:
    out = []
    for value in values:
        if not value.strip(LWS):
            raise SipParseError("empty Via value")
        out.append(Via.parse(value))
    return out


# --- name-addr / addr-spec (RFC 3261 §20.10, §25.1) -------------------------------------


@dataclass(frozen=True, slots=True)
class NameAddress:
    """``"Display" <uri>;params`` as used by From, To, Contact, Route and Record-Route."""

    uri: Uri
    display_name: str | None = None
    params: Params = ()

    @classmethod
    def parse(cls, text: str) -> NameAddress:
        return parse_name_addr(text)

    @property
    def tag(self) -> str | None:
        return get_param(self.params, "tag")

    @property
    def sip_uri(self) -> SipUri:
        if not isinstance(self.uri, SipUri):
            raise SipParseError(f"not a SIP URI: {self.uri}", 416)
        return self.uri

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def with_param(self, name: str, value: str | None = None) -> NameAddress:
        return replace(self, params=replace_param(self.params, name, value))

    def with_tag(self, tag: str) -> NameAddress:
        return self.with_param("tag", tag)

    def __str__(self) -> str:
        name = "" if self.display_name is None else quote(self.display_name) + " "
        return f"{name}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(text: str) -> NameAddress:
    """Parse a name-addr or addr-spec with its header parameters (From, To, Contact, Route...).

    The result is an immutable value, and within a dialog the same From, To and Contact texts
    come back in every message: each text is parsed once and the value shared (the cache is
    bounded, as for ``parse_uri``).
    """
    if len(text) <= PARSE_CACHE_MAX_LENGTH:
        return _parse_name_addr_cached(text)
    return _parse_name_addr(text)


def _parse_name_addr(text: str) -> NameAddress:
    value = text.strip(LWS)
    if not value:
        raise SipParseError("empty address")
    display: str | None = None
    rest: str
    if value.startswith('"'):
        display, end = read_quoted(value, 0)
        rest = value[end:].lstrip(LWS)
        if not rest.startswith("<"):
            raise SipParseError(f"expected <URI> after display name in {text!r}")
    elif "<" in value:
        lt = value.index("<")
        words = value[:lt].split()
        # display-name = *(token LWS) / quoted-string: an unquoted name with a comma or other
        # separator is refused (RFC 4475 baddn).
        if any(not is_token(word) for word in words):
            raise SipParseError(f"unquoted display name with illegal characters in {text!r}")
        display = " ".join(words) if words else None
        rest = value[lt:]
    else:
        # addr-spec form: parameters after the URI belong to the header, and a URI with a
        # comma, question mark or semicolon would be ambiguous (RFC 3261 §20, RFC 4475 regbadct).
        uri_text, semi, params_text = value.partition(";")
        uri_text = uri_text.rstrip(LWS)
        if "?" in uri_text or "," in uri_text or any(ch in uri_text for ch in " \t"):
            raise SipParseError(f"URI with '?' or ',' must be enclosed in <> in {text!r}")
        return NameAddress(parse_uri(uri_text), None, parse_params(semi + params_text, context="address"))
    gt = rest.find(">")
    if gt < 0:
        raise SipParseError(f"missing '>' in {text!r}")
    uri_text = rest[1:gt]
    if uri_text != uri_text.strip(LWS + "\r\n") or not uri_text:
        # RFC 4475 badaspec: no whitespace inside the angle brackets.
        raise SipParseError(f"whitespace inside <> in {text!r}")
    return NameAddress(parse_uri(uri_text), display, parse_params(rest[gt + 1 :], context="address"))


_parse_name_addr_cached = functools.lru_cache(maxsize=PARSE_CACHE_SIZE)(_parse_name_addr)


def parse_address_list(values: Iterable[str]) -> list[NameAddress]:
    out = []
    for value in values:
        if value.strip(LWS) == "*":
            continue  # Contact: * (REGISTER) carries no address
        out.append(parse_name_addr(value))
    return out


# --- CSeq, Call-ID and the numeric headers ----------------------------------------------


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if len(parts) != 2 or not is_digits(parts[0], 10) or not is_token(parts[1]):
            raise SipParseError(f"bad CSeq {text!r}")
        number = int(parts[0])
        # RFC 3261 §8.1.1.5: the sequence number MUST be less than 2**31.
        if number >= 2**31:
            raise SipParseError(f"CSeq number out of range: {parts[0]}")
        return cls(number, parts[1])

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_call_id(text: str) -> str:
    value = text.strip(LWS)
    # RFC 3261 §25.1: callid = word [ "@" word ]
    local, at, host = value.partition("@")
    if not is_word(local) or (at and not is_word(host)):
        raise SipParseError(f"bad Call-ID {text!r}")
    return value


def parse_delta(text: str, *, name: str, maximum: int) -> int:
    value = text.strip(LWS)
    if not is_digits(value, 12):
        raise SipParseError(f"bad {name} value {text!r}")
    number = int(value)
    if number > maximum:
        raise SipParseError(f"{name} value out of range: {value}")
    return number


_RFC1123 = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    r"\d{2}:\d{2}:\d{2} GMT\Z"
)


def check_date(text: str) -> None:
    # RFC 3261 §20.17: SIP-date is rfc1123-date and only GMT is allowed (RFC 4475 baddate).
    if not _RFC1123.match(text.strip(LWS)):
        raise SipParseError(f"bad Date {text!r}: must be an RFC 1123 date in GMT")


__all__ = [
    "COMPACT_FORMS",
    "MULTI_VALUE",
    "SINGLE_VALUE",
    "AbsoluteUri",
    "CSeq",
    "Headers",
    "NameAddress",
    "Via",
    "canonical_name",
    "check_date",
    "is_header_name",
    "parse_address_list",
    "parse_call_id",
    "parse_delta",
    "parse_name_addr",
    "parse_via_list",
]
