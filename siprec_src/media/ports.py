"""UDP port pairs from a configured range: even RTP port, RTP + 1 for RTCP (RFC 3550 §11).

Each media process owns an allocator over its own slice of the range (``split_port_range``), so
two workers never race for a port. The allocator hands pairs out round robin rather than
lowest-first: a pair just released is reused last, so late packets of a finished call do not
land in a new one (and a PBX still sending to an old tap port is refused, not recorded).

A port that something else on the host already holds is skipped (the bind is the truth, not
our bookkeeping), which also lets the in-process host share the whole range with workers.
"""

from __future__ import annotations

import errno
import socket

from siprec_src.errors import ConfigError, LocalProtocolError
from siprec_src.media.spec import Address

# Receive buffer per socket: enough for a burst while the worker serves thousands of sockets
# (a 172-byte datagram costs about 1 KiB of kernel memory). Capped by net.core.rmem_max.
RECEIVE_BUFFER = 1 << 20
SEND_BUFFER = 1 << 20


class PortsExhaustedError(LocalProtocolError):
    """Every port pair of this process's slice of the range is in use."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="ports_exhausted")


def split_port_range(port_min: int, port_max: int, parts: int) -> list[tuple[int, int]]:
    """Split [port_min, port_max] into ``parts`` disjoint slices of whole even/odd pairs."""
    check_port_range(port_min, port_max)
    if parts < 1:
        raise ConfigError(f"cannot split a port range into {parts} parts", key="workers")
    first = port_min + (port_min & 1)
    pairs = (port_max - first + 1) // 2
    if pairs < parts:
        raise ConfigError(
            f"port range {port_min}-{port_max} holds {pairs} RTP/RTCP pairs, fewer than the "
            f"{parts} media processes that must share it",
            key="port_min",
        )
    slices = []
    start = first
    for index in range(parts):
        count = pairs // parts + (1 if index < pairs % parts else 0)
        slices.append((start, start + 2 * count - 1))
        start += 2 * count
    return slices


def check_port_range(port_min: int, port_max: int) -> None:
    if not (1024 <= port_min < port_max <= 65535):
        raise ConfigError(
            f"port range {port_min}-{port_max}: need 1024 <= port_min < port_max <= 65535",
            key="port_min",
        )
    if port_max - (port_min + (port_min & 1)) < 1:
        raise ConfigError(f"port range {port_min}-{port_max} holds no even/odd pair", key="port_min")


def udp_socket(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to (host, port), with large buffers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class PortAllocator:
    """Even/odd UDP port pairs in [port_min, port_max], bound on demand."""

    def __init__(self, port_min: int, port_max: int) -> None:
        check_port_range(port_min, port_max)
        self.port_min = port_min
        self.port_max = port_max
        self._first = port_min + (port_min & 1)
        self._pairs = (port_max - self._first + 1) // 2
        self._next = 0
        self._in_use: set[int] = set()

    def __len__(self) -> int:
        return len(self._in_use)

    @property
    def capacity(self) -> int:
        return self._pairs

    def bind_pair(self, host: str) -> tuple[socket.socket, socket.socket, Address]:
        """Bind the next free pair on ``host``: (RTP socket, RTCP socket, RTP address)."""
        for _ in range(self._pairs):
            port = self._first + 2 * self._next
            self._next = (self._next + 1) % self._pairs
            if port in self._in_use:
                continue
            try:
                rtp = udp_socket(host, port)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise LocalProtocolError(f"cannot bind UDP {host}:{port}: {exc.strerror}") from exc
            try:
                rtcp = udp_socket(host, port + 1)
            except OSError as exc:
                rtp.close()
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise LocalProtocolError(f"cannot bind UDP {host}:{port + 1}: {exc.strerror}") from exc
            self._in_use.add(port)
            return rtp, rtcp, (host, port)
        raise PortsExhaustedError(
            f"no free RTP/RTCP port pair on {host} in {self.port_min}-{self.port_max} "
            f"({len(self._in_use)} of {self._pairs} pairs in use here)"
        )

    def release(self, port: int) -> None:
        self._in_use.discard(port)
