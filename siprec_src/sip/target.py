"""Where a SIP message goes: the transport-level address the core hands to the adapter.

``Destination`` is the resolved (transport, IP, port) triple that transactions remember and the
asyncio adapter sends to. It is deliberately plain and hashable so it can key connections
and transactions alike.

``Target`` is one step earlier: what a URI says to contact (transport, host name or IP, port,
and the name a TLS certificate must carry) before DNS. The functions below are the pure parts of
RFC 3261 §18 and RFC 3263 §4 that need no resolver: choosing transport and port for a request
(``target_for_uri``), stamping ``received``/``rport`` on a request that arrived
(``stamp_received``), and choosing where a response goes (``response_destination``).
NAPTR and SRV (RFC 3263 §4.1, §4.2) are not done: a URI without a port goes to the default port
of its transport, which is what an SRS reachable by A/AAAA records needs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from siprec_src.errors import LocalProtocolError
from siprec_src.sip.headers import Via
from siprec_src.sip.message import Request
from siprec_src.sip.syntax import LWS, SipParseError, split_outside_quotes
from siprec_src.sip.uri import SipUri, parse_host

TRANSPORTS = ("udp", "tcp", "tls")

# RFC 3261 §19.1.2: 5060 for sip over UDP/TCP, 5061 for TLS (sips, or sip;transport=tls).
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}

# RFC 3261 §18.1.1: a request within 200 bytes of the path MTU, or larger than 1300 bytes when
# the MTU is unknown, MUST use a congestion-controlled transport. We never know the path MTU, and
# with the usual 1500-byte Ethernet MTU both rules give the same 1300-byte threshold.
UDP_SIZE_LIMIT = 1300


@dataclass(frozen=True, slots=True)
class Destination:
    """A resolved transport address: ``transport`` is ``udp``, ``tcp`` or ``tls``; ``host`` an IP."""

    transport: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {self.transport!r}; expected one of {TRANSPORTS}")

    @property
    def reliable(self) -> bool:
        """Stream transports deliver reliably: no retransmissions (RFC 3261 §17.1.1.2)."""
        return self.transport != "udp"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Target:
    """What to contact for a URI, before name resolution.

    ``host`` is a host name or an IP address, without IPv6 brackets. ``server_name`` is the name
    the peer's certificate must match and the TLS SNI: the host of the URI (RFC 5922 §4), even
    when ``maddr`` redirects the connection elsewhere. It is None for udp and tcp.
    """

    transport: str
    host: str
    port: int
    server_name: str | None


def target_for_uri(uri: SipUri, *, message_size: int = 0, default_transport: str = "udp") -> Target:
    """Transport, host and port for sending a request to ``uri`` (RFC 3261 §18.1.1, RFC 3263 §4).

    ``message_size`` is the encoded size of the request, for the §18.1.1 size rule: a request
    over ``UDP_SIZE_LIMIT`` bytes that would go over UDP goes over TCP instead. We apply the
    rule only when UDP was our choice (no ``transport`` parameter): a URI that says
    ``transport=udp`` names the only transport its owner listens on, so switching would turn a
    fragmented-but-deliverable request into a certain failure. The caller must write the
    transport it gets here into the top Via (§18.1.1 says so when the rule changes it).
    ``default_transport`` is what a ``sip:`` URI without ``transport`` uses (RFC 3263 §4.1 with no
    NAPTR records: UDP).
    """
    if default_transport not in TRANSPORTS:
        raise LocalProtocolError(
            f"unknown default transport {default_transport!r}; expected one of {TRANSPORTS}"
        )
    param = uri.transport
    if param is not None and param not in TRANSPORTS:
        raise LocalProtocolError(f"cannot send to {uri}: transport {param!r} is not supported")
    if uri.secure:
        # RFC 3261 §26.2.2: a SIPS URI means TLS on every hop; transport=tcp is how it is
        # written (TLS runs over TCP), transport=tls is the deprecated spelling of the same.
        if param == "udp":
            raise LocalProtocolError(f"cannot send to {uri}: a sips URI cannot use transport=udp")
        transport = "tls"
    elif param is not None:
        transport = param
    else:
        transport = default_transport
        if transport == "udp" and message_size > UDP_SIZE_LIMIT:
            transport = "tcp"
    maddr = uri.param("maddr")
    if maddr:
        # RFC 3263 §4.2 (and RFC 3261 §19.1.1): maddr replaces the host as the address to contact.
        try:
            host = parse_host(maddr, context="maddr")
        except SipParseError as exc:
            raise LocalProtocolError(f"cannot send to {uri}: {exc.reason}") from None
    else:
        host = uri.host
    port = uri.port if uri.port is not None else DEFAULT_PORTS[transport]
    if port == 0:
        raise LocalProtocolError(f"cannot send to {uri}: port 0")
    return Target(transport, host, port, uri.host if transport == "tls" else None)


def _same_ip(host: str, ip: str) -> bool:
    try:
        return ipaddress.ip_address(host) == ipaddress.ip_address(ip)
    except ValueError:
        return False  # a host name is never "the same" as the packet's source (RFC 3261 §18.2.1)


def _ip_param(ip: str) -> str:
    # RFC 3261's grammar has received=IPv6address without brackets, but that does not survive a
    # generic-param parser (':' is not a token character); RFC 5118 §4.5 shows the bracketed
    # form in use, and our own Via parser accepts it, so IPv6 is written as [addr].
    return f"[{ip}]" if ":" in ip else ip


def stamp_received(request: Request, source: Destination) -> None:
    """Record where ``request`` really came from in its top Via, in place.

    RFC 3261 §18.2.1: add ``received`` when the sent-by host is a name or an IP other than the
    packet's source. RFC 3581 §4: when the client asked with an empty ``rport``, fill in the
    source port, and add ``received`` even if sent-by matched. Only the top Via changes; the
    other Via values, whether on the same line (comma list) or on lines of their own, are kept.
    """
    via = request.top_via
    stamped = via
    if not _same_ip(via.host, source.host):
        stamped = stamped.with_param("received", _ip_param(source.host))
    if via.rport == "":
        stamped = stamped.with_param("rport", str(source.port))
        stamped = stamped.with_param("received", _ip_param(source.host))
    if stamped is via:
        return
    # The top Via is the first element of the first Via field; that field may hold more
    # elements after a comma (RFC 3261 §7.3.1), which stay as they were.
    first_field = next(value for name, value in request.headers if name == "Via")
    rest = [part.strip(LWS) for part in split_outside_quotes(first_field, ",")][1:]
    request.headers.remove_first("Via")
    # RFC 3261 §7.3.1: only the order of same-named fields matters, so the rewritten field may
    # move to the top of the header section; it stays before the other Via fields.
    request.headers.prepend("Via", ", ".join([str(stamped), *rest]))


def response_destination(via: Via, source: Destination) -> Destination:
    """Where responses to a request that came from ``source`` go (RFC 3261 §18.2.2, RFC 3581 §4).

    Over TCP/TLS: back over the connection the request came on. Over UDP with ``rport``: the
    source address and port, which is what gets back through a NAT. Plain UDP: the source IP
    (``received``, which ``stamp_received`` always makes true) and the sent-by port.
    """
    if source.reliable or via.rport is not None:
        return source
    return Destination(source.transport, source.host, via.port or DEFAULT_PORTS["udp"])
