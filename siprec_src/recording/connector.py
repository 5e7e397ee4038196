"""Connectors, SRS targets and edges: where recordings go and which way they leave.

A **connector** is a named, ordered list of SRS URIs with everything a session toward them
needs (security, SRTP suites, session timer, digest credentials, extra headers). It lives in
configuration, never in an API call (as the Twilio and Telnyx seeds explain). An **edge** is an
egress of a multi-homed host: which local address media leaves from, which address we
advertise in Via/Contact/SDP, and an optional outbound proxy. An SRS URI picks an edge with a
``;edge=NAME`` parameter, which is ours and is removed before the URI goes on the wire.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace

from siprec_src.errors import ConfigError
from siprec_src.sip.auth import Credentials
from siprec_src.sip.syntax import SipParseError
from siprec_src.sip.target import target_for_uri
from siprec_src.sip.uri import SipUri

# RFC 4028 §4: Min-SE can never be below 90 s; we default to the RFC's recommended 1800 s.
MIN_SESSION_EXPIRES = 90
DEFAULT_SESSION_EXPIRES = 1800
SRTP_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM")
DEFAULT_SRTP_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")


@dataclass(frozen=True, slots=True)
class Edge:
    name: str
    bind_host: str  # local address the media sockets are bound to
    advertised_host: str | None = None  # what Via/Contact/SDP say, when NAT sits in between
    outbound_proxy: SipUri | None = None

    def __post_init__(self) -> None:
        for key, value in (("bind", self.bind_host), ("advertised", self.advertised_host)):
            if value is None:
                continue
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ConfigError(
                    f"edge {self.name!r}: {key} address {value!r} is not an IP address"
                ) from None

    @property
    def media_host(self) -> str:
        return self.advertised_host or self.bind_host


@dataclass(frozen=True, slots=True)
class SrsTarget:
    """One SRS of a connector: the Request-URI to send to (edge removed) and the edge it named."""

    uri: SipUri
    edge: str | None = None

    def __str__(self) -> str:
        return str(self.uri)


def parse_srs(text: str, *, secure: bool = False, edges: Mapping[str, Edge] | None = None) -> SrsTarget:
    """Parse an SRS URI as written in config or an API call.

    ``secure`` asks for TLS: a ``sip:`` URI without ``transport`` gets ``transport=tls`` (so
    port 5061 by default, RFC 3261 §26.2.2), ``sips:`` stays, and a URI that names another
    transport is refused rather than silently sent in clear. ``edges`` are the known edges; an
    ``;edge=`` naming another is refused here, so the error comes at start, not at call time.
    """
    try:
        uri = SipUri.parse(text.strip())
    except SipParseError as exc:
        raise ConfigError(f"SRS URI {text!r}: {exc.reason}") from None
    edge = uri.param("edge")
    if uri.has_param("edge"):
        if not edge:
            raise ConfigError(f"SRS URI {text!r}: ;edge= needs a name")
        if edges is not None and edge not in edges:
            known = ", ".join(sorted(edges)) or "none configured"
            raise ConfigError(f"SRS URI {text!r}: unknown edge {edge!r} (known edges: {known})")
        uri = replace(uri, params=tuple(p for p in uri.params if p[0].lower() != "edge"))
    if secure and not uri.secure:
        transport = uri.transport
        if transport is None:
            uri = replace(uri, params=(*uri.params, ("transport", "tls")))
        elif transport != "tls":
            raise ConfigError(
                f"SRS URI {text!r}: secure recording needs TLS, the URI says transport={transport}"
            )
    try:
        target_for_uri(uri)
    except Exception as exc:  # LocalProtocolError: unsupported transport, port 0...
        raise ConfigError(f"SRS URI {text!r}: {exc}") from None
    return SrsTarget(uri, edge)


@dataclass(frozen=True, slots=True)
class Connector:
    """A named recording destination: the ordered SRS list and how to talk to it."""

    name: str
    srs: tuple[SrsTarget, ...]
    secure: bool = False
    srtp_suites: tuple[str, ...] = DEFAULT_SRTP_SUITES
    session_expires: int = DEFAULT_SESSION_EXPIRES  # 0 disables the session timer
    attempt_timeout: float = 8.0  # an SRS silent this long is skipped (well before Timer B's 32 s)
    credentials: tuple[Credentials, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    options_interval: float = 0.0  # 0: no OPTIONS pings
    # Times one recording may set up a new session after its SRS was lost mid-call (0: never).
    recovery_attempts: int = 3
    from_uri: str = "sip:siprec-src@localhost"

    def __post_init__(self) -> None:
        where = f"connector {self.name!r}"
        if not self.srs:
            raise ConfigError(f"{where}: needs at least one SRS URI", key="srs")
        if self.session_expires != 0 and self.session_expires < MIN_SESSION_EXPIRES:
            raise ConfigError(
                f"{where}: session_expires {self.session_expires} is below the RFC 4028 minimum of "
                f"{MIN_SESSION_EXPIRES} s (0 disables the session timer)",
                key="session_expires",
            )
        for suite in self.srtp_suites:
            if suite not in SRTP_SUITES:
                raise ConfigError(
                    f"{where}: SRTP suite {suite!r} is not one of {', '.join(SRTP_SUITES)}", key="srtp_suites"
                )
        if self.secure and not self.srtp_suites:
            raise ConfigError(f"{where}: secure needs at least one SRTP suite", key="srtp_suites")
        if self.recovery_attempts < 0:
            raise ConfigError(f"{where}: recovery_attempts must be 0 or more", key="recovery_attempts")
        if self.attempt_timeout <= 0:
            raise ConfigError(f"{where}: attempt_timeout must be positive", key="attempt_timeout")
        for name, _ in self.headers:
            if not name.lower().startswith("x-"):
                raise ConfigError(f"{where}: extra header {name!r} must start with X-", key="headers")


def connector_for(
    name: str,
    srs: list[str] | tuple[str, ...],
    *,
    secure: bool = False,
    edges: Mapping[str, Edge] | None = None,
    **options: object,
) -> Connector:
    """A connector from SRS URI strings (the shape config files and ``siprec-src record`` use)."""
    targets = tuple(parse_srs(text, secure=secure, edges=edges) for text in srs)
    return Connector(name, targets, secure=secure, **options)  # type: ignore[arg-type]
