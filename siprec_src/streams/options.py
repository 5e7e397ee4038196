"""What a WebSocket stream request says, in the two shapes people already write.

**Twilio** ``<Start><Stream url name track statusCallback statusCallbackMethod>`` with nested
``<Parameter name value/>`` (``<Connect><Stream>`` makes it bidirectional):

- ``url``: required; here an absolute ``ws://`` or ``wss://`` URL (Twilio itself only dials
  ``wss`` and resolves relative URLs against the TwiML's; we have no TwiML URL, and a sidecar
  often talks to a service on the same host in clear);
- ``name``: optional, unique per call (the recording layer checks uniqueness), used to stop it;
- ``track``: ``inbound_track`` (default), ``outbound_track`` or ``both_tracks``; a
  bidirectional stream carries ``inbound_track`` only;
- ``statusCallback``: optional absolute http(s) URL; ``statusCallbackMethod`` ``GET`` or
  ``POST`` (default);
- ``<Parameter>``: name/value pairs delivered in the ``start`` message's ``customParameters``
  object, so names must be unique; at most 99 (the REST resource's ``Parameter1..99``).

**Plivo** ``<Stream attributes…>wss://…</Stream>`` (seed 004 and Plivo's current XML reference):

- the element text is the URL (``ws://`` or ``wss://``, surrounding whitespace ignored);
- ``bidirectional`` (default false); ``audioTrack`` ``inbound`` (default), ``outbound`` or
  ``both`` — "when bidirectional is true, audioTrack should not be outbound or both";
- ``streamTimeout``: seconds, a positive integer, default 86400;
- ``statusCallbackUrl``, ``statusCallbackMethod`` (``GET`` or ``POST``, default ``POST``);
- ``contentType``: ``audio/x-l16;rate=8000`` (default), ``audio/x-l16;rate=16000`` or
  ``audio/x-mulaw;rate=8000``;
- ``extraHeaders``: ``key=value`` pairs separated by commas (``test1=12,test2=123``), keys and
  values of ``[A-Za-z0-9]`` only, at most 512 bytes in all;
- ``keepCallAlive`` (default false): kept for the control layer, which owns the call flow;
- ``noiseCancellation`` (default false) and ``noiseCancellationLevel`` (60-100, default 85):
  accepted as written, but ``true`` is refused: we fork audio as it is and do not pretend to
  clean it.

Errors are ``LocalProtocolError`` whose ``field`` is the attribute as the shape spells it
(``audioTrack``, ``statusCallbackMethod``...), whose message lists the allowed values, and whose
``code`` is stable for API clients.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar
from urllib.parse import urlsplit

from siprec_src.errors import LocalProtocolError
from siprec_src.media.audio import L16_8K, L16_16K, PCMU_8K, AudioFormat
from siprec_src.media.spec import Leg

MAX_TWILIO_PARAMETERS = 99
MAX_EXTRA_HEADERS_BYTES = 512
DEFAULT_STREAM_TIMEOUT = 86_400  # seconds (24 hours)
MAX_NAME_LENGTH = 64
_EXTRA_HEADER = re.compile(r"([A-Za-z0-9]+)=([A-Za-z0-9]+)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_E = TypeVar("_E", bound=StrEnum)


class CallbackMethod(StrEnum):
    GET = "GET"
    POST = "POST"


class TwilioTrack(StrEnum):
    INBOUND = "inbound_track"
    OUTBOUND = "outbound_track"
    BOTH = "both_tracks"

    @property
    def legs(self) -> tuple[Leg, ...]:
        return _LEGS[self.value.split("_")[0]]


class PlivoAudioTrack(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    BOTH = "both"

    @property
    def legs(self) -> tuple[Leg, ...]:
        return _LEGS[self.value]


_LEGS = {"inbound": (Leg.INBOUND,), "outbound": (Leg.OUTBOUND,), "both": (Leg.INBOUND, Leg.OUTBOUND)}


class PlivoContentType(StrEnum):
    L16_8K = "audio/x-l16;rate=8000"
    L16_16K = "audio/x-l16;rate=16000"
    MULAW_8K = "audio/x-mulaw;rate=8000"

    @property
    def audio_format(self) -> AudioFormat:
        if self is PlivoContentType.L16_8K:
            return L16_8K
        return L16_16K if self is PlivoContentType.L16_16K else PCMU_8K


@dataclass(frozen=True, slots=True)
class TwilioStreamOptions:
    """A Twilio-shaped stream request. Build from TwiML with ``from_twiml``."""

    url: str
    name: str | None = None
    track: TwilioTrack = TwilioTrack.INBOUND
    status_callback: str | None = None
    status_callback_method: CallbackMethod = CallbackMethod.POST
    parameters: tuple[tuple[str, str], ...] = ()
    bidirectional: bool = False  # <Connect><Stream> rather than <Start><Stream>

    def __post_init__(self) -> None:
        check_stream_url(self.url, field="url")
        if self.name is not None:
            check_stream_name(self.name, field="name")
        _check_enum(self.track, TwilioTrack, "track", "invalid_track")
        if self.status_callback is not None:
            check_callback_url(self.status_callback, field="statusCallback")
        _check_enum(self.status_callback_method, CallbackMethod, "statusCallbackMethod", "invalid_method")
        if self.bidirectional and self.track is not TwilioTrack.INBOUND:
            raise LocalProtocolError(
                f"a bidirectional stream carries inbound_track only, not {self.track.value}",
                field="track",
                code="invalid_track",
            )
        self._check_parameters()

    @property
    def legs(self) -> tuple[Leg, ...]:
        return self.track.legs

    @property
    def audio_format(self) -> AudioFormat:
        """Twilio Media Streams carry µ-law at 8000 Hz, always."""
        return PCMU_8K

    @property
    def custom_parameters(self) -> dict[str, str]:
        """The ``start.customParameters`` object."""
        return dict(self.parameters)

    @classmethod
    def from_twiml(
        cls,
        attributes: Mapping[str, str],
        parameters: Iterable[Mapping[str, str]] = (),
        *,
        bidirectional: bool = False,
    ) -> TwilioStreamOptions:
        """From the attributes of ``<Stream>`` and of each nested ``<Parameter>``, as written."""
        _check_known(attributes, ("url", "name", "track", "statusCallback", "statusCallbackMethod"))
        if "url" not in attributes:
            raise LocalProtocolError("<Stream> needs a url attribute", field="url", code="missing_url")
        pairs: list[tuple[str, str]] = []
        for parameter in parameters:
            _check_known(parameter, ("name", "value"), element="Parameter")
            if "name" not in parameter:
                raise LocalProtocolError(
                    "<Parameter> needs a name attribute", field="Parameter.name", code="invalid_parameter"
                )
            pairs.append((parameter["name"], parameter.get("value", "")))
        return cls(
            url=attributes["url"],
            name=attributes.get("name"),
            track=_parse_enum(
                attributes.get("track"), TwilioTrack, TwilioTrack.INBOUND, "track", "invalid_track"
            ),
            status_callback=attributes.get("statusCallback"),
            status_callback_method=_parse_method(
                attributes.get("statusCallbackMethod"), "statusCallbackMethod"
            ),
            parameters=tuple(pairs),
            bidirectional=bidirectional,
        )

    def _check_parameters(self) -> None:
        if len(self.parameters) > MAX_TWILIO_PARAMETERS:
            raise LocalProtocolError(
                f"{len(self.parameters)} <Parameter>s: at most {MAX_TWILIO_PARAMETERS} are allowed",
                field="Parameter",
                code="invalid_parameter",
            )
        seen: set[str] = set()
        for name, value in self.parameters:
            if not name or _CONTROL.search(name) or _CONTROL.search(value):
                raise LocalProtocolError(
                    f"<Parameter> name {name!r} / value {value!r}: the name must be non-empty and "
                    "neither may hold control characters",
                    field="Parameter.name",
                    code="invalid_parameter",
                )
            if name in seen:
                # They become the keys of one JSON object (start.customParameters).
                raise LocalProtocolError(
                    f"<Parameter> name {name!r} is given twice; names must be unique",
                    field="Parameter.name",
                    code="duplicate_parameter",
                )
            seen.add(name)


@dataclass(frozen=True, slots=True)
class PlivoStreamOptions:
    """A Plivo-shaped stream request. Build from Plivo XML with ``from_xml``."""

    url: str
    bidirectional: bool = False
    audio_track: PlivoAudioTrack = PlivoAudioTrack.INBOUND
    stream_timeout: int = DEFAULT_STREAM_TIMEOUT
    status_callback_url: str | None = None
    status_callback_method: CallbackMethod = CallbackMethod.POST
    content_type: PlivoContentType = PlivoContentType.L16_8K
    extra_headers: tuple[tuple[str, str], ...] = ()
    keep_call_alive: bool = False
    noise_cancellation: bool = False
    noise_cancellation_level: int = 85

    def __post_init__(self) -> None:
        check_stream_url(self.url, field="url")
        _check_enum(self.audio_track, PlivoAudioTrack, "audioTrack", "invalid_track")
        if self.bidirectional and self.audio_track is not PlivoAudioTrack.INBOUND:
            raise LocalProtocolError(
                f"audioTrack {self.audio_track.value} is not allowed with bidirectional=true: "
                "a bidirectional stream carries the inbound track only",
                field="audioTrack",
                code="invalid_track",
            )
        if isinstance(self.stream_timeout, bool) or self.stream_timeout <= 0:
            raise LocalProtocolError(
                f"streamTimeout {self.stream_timeout!r} must be a positive integer (seconds)",
                field="streamTimeout",
                code="invalid_timeout",
            )
        if self.status_callback_url is not None:
            check_callback_url(self.status_callback_url, field="statusCallbackUrl")
        _check_enum(self.status_callback_method, CallbackMethod, "statusCallbackMethod", "invalid_method")
        _check_enum(self.content_type, PlivoContentType, "contentType", "invalid_content_type")
        for key, value in self.extra_headers:
            if not _EXTRA_HEADER.fullmatch(f"{key}={value}"):
                raise LocalProtocolError(
                    f"extraHeaders pair {key!r}={value!r}: keys and values are [A-Za-z0-9]+",
                    field="extraHeaders",
                    code="invalid_extra_headers",
                )
        if len(self.extra_headers_text) > MAX_EXTRA_HEADERS_BYTES:
            raise LocalProtocolError(
                f"extraHeaders is {len(self.extra_headers_text)} bytes, more than {MAX_EXTRA_HEADERS_BYTES}",
                field="extraHeaders",
                code="invalid_extra_headers",
            )
        if not 60 <= self.noise_cancellation_level <= 100:
            raise LocalProtocolError(
                f"noiseCancellationLevel {self.noise_cancellation_level} is not between 60 and 100",
                field="noiseCancellationLevel",
                code="invalid_value",
            )
        if self.noise_cancellation:
            raise LocalProtocolError(
                "noiseCancellation=true is not supported: streams carry the call's audio unaltered",
                field="noiseCancellation",
                code="not_supported",
            )

    @property
    def legs(self) -> tuple[Leg, ...]:
        return self.audio_track.legs

    @property
    def audio_format(self) -> AudioFormat:
        return self.content_type.audio_format

    @property
    def extra_headers_text(self) -> str:
        """``extraHeaders`` as written (``k1=v1,k2=v2``), as the ``start`` message carries it."""
        return ",".join(f"{key}={value}" for key, value in self.extra_headers)

    @classmethod
    def from_xml(cls, text: str, attributes: Mapping[str, str]) -> PlivoStreamOptions:
        """From the text and attributes of a Plivo ``<Stream>`` element, as written."""
        _check_known(
            attributes,
            (
                "bidirectional",
                "audioTrack",
                "streamTimeout",
                "statusCallbackUrl",
                "statusCallbackMethod",
                "contentType",
                "extraHeaders",
                "keepCallAlive",
                "noiseCancellation",
                "noiseCancellationLevel",
            ),
        )
        get = attributes.get
        return cls(
            url=text.strip(),
            bidirectional=_parse_bool(get("bidirectional"), "bidirectional"),
            audio_track=_parse_enum(
                get("audioTrack"), PlivoAudioTrack, PlivoAudioTrack.INBOUND, "audioTrack", "invalid_track"
            ),
            stream_timeout=_parse_positive_int(get("streamTimeout"), DEFAULT_STREAM_TIMEOUT, "streamTimeout"),
            status_callback_url=get("statusCallbackUrl"),
            status_callback_method=_parse_method(get("statusCallbackMethod"), "statusCallbackMethod"),
            content_type=_parse_enum(
                get("contentType"),
                PlivoContentType,
                PlivoContentType.L16_8K,
                "contentType",
                "invalid_content_type",
            ),
            extra_headers=parse_extra_headers(get("extraHeaders", "")),
            keep_call_alive=_parse_bool(get("keepCallAlive"), "keepCallAlive"),
            noise_cancellation=_parse_bool(get("noiseCancellation"), "noiseCancellation"),
            noise_cancellation_level=_parse_level(get("noiseCancellationLevel")),
        )


StreamOptions = TwilioStreamOptions | PlivoStreamOptions


# --- the checks both shapes share ----------------------------------------------------------------


def check_stream_url(url: str, *, field: str) -> str:
    """An absolute ``ws://`` or ``wss://`` URL with a host, no fragment, no spaces or controls."""
    _check_url(url, ("ws", "wss"), field=field)
    return url


def check_callback_url(url: str, *, field: str) -> str:
    """An absolute ``http://`` or ``https://`` URL with a host."""
    _check_url(url, ("http", "https"), field=field)
    return url


def check_stream_name(name: str, *, field: str) -> str:
    """1 to 64 characters, no control characters (names go into logs and callback forms as-is)."""
    if not name or len(name) > MAX_NAME_LENGTH or _CONTROL.search(name):
        raise LocalProtocolError(
            f"{field} {name!r} must be 1-{MAX_NAME_LENGTH} characters without control characters",
            field=field,
            code="invalid_name",
        )
    return name


def parse_extra_headers(text: str) -> tuple[tuple[str, str], ...]:
    """``test1=12,test2=123`` → ``(("test1", "12"), ("test2", "123"))``; ``""`` → ``()``."""
    if len(text.encode("utf-8")) > MAX_EXTRA_HEADERS_BYTES:
        raise LocalProtocolError(
            f"extraHeaders is {len(text.encode('utf-8'))} bytes, more than {MAX_EXTRA_HEADERS_BYTES}",
            field="extraHeaders",
            code="invalid_extra_headers",
        )
    if not text:
        return ()
    pairs = []
    for item in text.split(","):
        match = _EXTRA_HEADER.fullmatch(item)
        if match is None:
            raise LocalProtocolError(
                f"extraHeaders item {item!r} is not key=value with [A-Za-z0-9]+ on both sides "
                "(items are separated by commas, e.g. test1=12,test2=123)",
                field="extraHeaders",
                code="invalid_extra_headers",
            )
        pairs.append((match[1], match[2]))
    return tuple(pairs)


def _check_url(url: str, schemes: tuple[str, ...], *, field: str) -> None:
    allowed = " or ".join(f"{scheme}://" for scheme in schemes)
    if not url or any(c.isspace() for c in url) or _CONTROL.search(url):
        raise LocalProtocolError(
            f"{field} {url!r} must be an absolute {allowed} URL without spaces",
            field=field,
            code="invalid_url",
        )
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a port that is not a number or out of range
    except ValueError as exc:
        raise LocalProtocolError(
            f"{field} {url!r} is not a valid URL: {exc}", field=field, code="invalid_url"
        ) from None
    if parts.scheme.lower() not in schemes or not parts.hostname or parts.fragment:
        raise LocalProtocolError(
            f"{field} {url!r} must be an absolute {allowed} URL with a host and no #fragment",
            field=field,
            code="invalid_url",
        )


def _check_enum(value: object, enum: type[StrEnum], field: str, code: str) -> None:
    if not isinstance(value, enum):
        raise LocalProtocolError(f"{field} {value!r} is not one of {_allowed(enum)}", field=field, code=code)


def _parse_enum(text: str | None, enum: type[_E], default: _E, field: str, code: str) -> _E:
    if text is None:
        return default
    try:
        return enum(text)
    except ValueError:
        raise LocalProtocolError(
            f"{field} {text!r} is not one of {_allowed(enum)}", field=field, code=code
        ) from None


def _parse_method(text: str | None, field: str) -> CallbackMethod:
    # HTTP method names are case-sensitive (RFC 9110 §9.1), but TwiML and Plivo XML writers
    # use "get"/"post" freely and both platforms accept them.
    return _parse_enum(
        None if text is None else text.upper(), CallbackMethod, CallbackMethod.POST, field, "invalid_method"
    )


def _parse_bool(text: str | None, field: str) -> bool:
    if text is None:
        return False
    lowered = text.strip().lower()  # Plivo's own .NET example writes "False"
    if lowered not in ("true", "false"):
        raise LocalProtocolError(
            f"{field} {text!r} is not true or false", field=field, code="invalid_boolean"
        )
    return lowered == "true"


def _parse_positive_int(text: str | None, default: int, field: str) -> int:
    if text is None:
        return default
    stripped = text.strip()
    # At most 18 digits: far from int()'s 4300-digit limit, which raises ValueError.
    if not (0 < len(stripped) <= 18 and stripped.isascii() and stripped.isdigit()) or int(stripped) == 0:
        raise LocalProtocolError(
            f"{field} {text!r} must be a positive integer (seconds)", field=field, code="invalid_timeout"
        )
    return int(stripped)


def _parse_level(text: str | None) -> int:
    if text is None:
        return 85
    stripped = text.strip()
    if not (0 < len(stripped) <= 18 and stripped.isascii() and stripped.isdigit()):
        raise LocalProtocolError(
            f"noiseCancellationLevel {text!r} must be an integer between 60 and 100",
            field="noiseCancellationLevel",
            code="invalid_value",
        )
    return int(stripped)


def _check_known(attributes: Mapping[str, str], known: tuple[str, ...], *, element: str = "Stream") -> None:
    for name in attributes:
        if name not in known:
            raise LocalProtocolError(
                f"<{element}> has no attribute {name!r}; it takes {', '.join(known)}",
                field=name,
                code="unknown_attribute",
            )


def _allowed(enum: type[StrEnum]) -> str:
    return ", ".join(member.value for member in enum)
