"""Host names to IP addresses for SIP targets (RFC 3263 §4.2, A and AAAA only).

NAPTR and SRV are not looked up: ``siprec_src.sip.target.target_for_uri`` has already chosen
the transport and port from the URI alone, so what is left is the address lookup, done with
the loop's ``getaddrinfo`` so it never blocks the event loop. The order ``getaddrinfo`` gives
(RFC 6724 destination address selection) is kept: callers try the addresses in turn.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket

from siprec_src.errors import SiprecError
from siprec_src.sip.target import TRANSPORTS


class ResolutionError(SiprecError):
    """A host name could not be turned into addresses; ``host`` names it."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"cannot resolve {host!r}: {reason}")
        self.host = host
        self.reason = reason


@functools.lru_cache(maxsize=1024)
def ip_family(host: str) -> int | None:
    """AF_INET or AF_INET6 for an IP address, None for anything else (a host name).

    Asked on every send and every recording attempt, nearly always about the same few
    addresses, hence the cache.
    """
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None


async def resolve(host: str, port: int, transport: str) -> list[tuple[str, int]]:
    """The (IP, port) pairs to try for ``host``, IPv4 and IPv6 alike, without duplicates.

    An IP address (IPv6 with or without brackets) is returned as given, with no lookup.
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}; expected one of {TRANSPORTS}")
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ip_family(literal) is not None:
        return [(literal, port)]
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=socket.AF_UNSPEC, type=kind)
    except socket.gaierror as exc:
        raise ResolutionError(host, exc.strerror or str(exc)) from exc
    except (OSError, UnicodeError) as exc:
        # UnicodeError: a label the IDNA codec refuses (too long, bad characters).
        raise ResolutionError(host, str(exc)) from exc
    out: list[tuple[str, int]] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = (str(sockaddr[0]), int(sockaddr[1]))
        if address not in out:
            out.append(address)
    if not out:
        raise ResolutionError(host, "no IPv4 or IPv6 address")
    return out
