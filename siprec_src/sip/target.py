"""Where a SIP message goes: the transport-level address the core hands to the adapter.

``Destination`` is the resolved (transport, IP, port) triple that transactions remember and the
asyncio adapter sends to. It is deliberately plain and hashable so it can key connections
and transactions alike.
"""

from __future__ import annotations

from dataclasses import dataclass

TRANSPORTS = ("udp", "tcp", "tls")


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
