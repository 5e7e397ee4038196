"""The asyncio adapter around the sans-I/O SIP core: sockets, name resolution, timers.

This is the only package where SIP meets the network (docs: DESIGN.md, "Layers").
"""

from __future__ import annotations

from siprec_src.signaling.resolver import ResolutionError, resolve
from siprec_src.signaling.transport import ListenSpec, SipTransport, TlsConfig, TransportError

__all__ = [
    "ListenSpec",
    "ResolutionError",
    "SipTransport",
    "TlsConfig",
    "TransportError",
    "resolve",
]
