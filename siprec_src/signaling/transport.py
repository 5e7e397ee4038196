"""The asyncio SIP transport layer: the only place SIP meets sockets (RFC 3261 §18).

It turns datagrams and stream bytes into parsed messages and sends bytes where it is told;
it knows nothing of transactions or dialogs. What it does own:

- UDP: one socket per listen address, used both to receive and to send, so a peer's responses
  and in-dialog requests come back to the port we advertise in Via and Contact (RFC 3261
  §18.1.1 sends the request from the advertised port; RFC 3581 §4 sends the response back to
  the port the request came from).
- TCP/TLS: one ``StreamFramer`` per connection (RFC 3261 §18.3). Connections are indexed by
  the peer's transport address, whichever side opened them, so a response goes back over the
  connection its request came on (RFC 3261 §18.2.2) and requests reuse an open connection
  (RFC 3261 §18.1.1). A ``FramingError`` leaves no way to find the next message, so it closes
  the connection; a message that frames but does not parse is reported and the connection
  lives on. A double-CRLF ping is answered with a CRLF pong (RFC 5626 §3.5.1, §4.4.1).
- Limits: connections per transport, the framer's message size limit per connection, a write
  buffer limit (a peer that stops reading is cut off), and an idle timeout.

Callbacks are plain functions called from the event loop; an exception in one is logged and
does not take a shared connection down with it.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from siprec_src.errors import ConfigError, LocalProtocolError, SiprecError
from siprec_src.signaling.resolver import ip_family
from siprec_src.sip.framer import FramingError, StreamFramer
from siprec_src.sip.message import DEFAULT_LIMITS, ParseLimits, Request, Response, parse_message
from siprec_src.sip.syntax import SipParseError
from siprec_src.sip.target import TRANSPORTS, Destination

log = logging.getLogger(__name__)

OnMessage = Callable[[Request | Response, Destination, Destination], None]
OnParseError = Callable[[SipParseError, bytes | None, Destination], None]
OnTransportError = Callable[[Destination, str], None]

# The largest UDP payload over IPv4 (65535 - 20-byte IP header - 8-byte UDP header).
MAX_DATAGRAM = 65507
# A peer that leaves this much of our output unread is not reading; cut it off.
MAX_WRITE_BUFFER = 4 * 1024 * 1024


class TransportError(SiprecError):
    """A message could not be sent: no connection, TLS failure, peer not reading."""

    def __init__(self, destination: Destination, reason: str) -> None:
        super().__init__(f"{destination}: {reason}")
        self.destination = destination
        self.reason = reason


@dataclass(frozen=True)
class ListenSpec:
    """An address to listen on; port 0 picks a free port (read it back with ``local_address``)."""

    transport: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"unknown transport {self.transport!r}; expected one of {TRANSPORTS}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range 0-65535")


@dataclass(frozen=True)
class TlsConfig:
    """Certificates for TLS, used both when we connect and when we accept.

    As a client we verify the server's certificate unless ``verify`` is False: against
    ``cafile``, or the system's trust store when it is None, and the name must match the
    target's server name (RFC 5922 §7.2). ``certfile``/``keyfile`` are presented as a client
    certificate when a server asks. A TLS listener needs ``certfile`` and ``keyfile``; with a
    ``cafile`` it asks connecting clients for a certificate and refuses one that does not chain
    to it, but still accepts clients that send none (a SIP server cannot expect every peer to
    hold a certificate, RFC 5922 §7.3 makes mutual TLS a matter of local policy).
    """

    certfile: str | None = None
    keyfile: str | None = None
    cafile: str | None = None
    verify: bool = True

    def client_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load CA certificates: {exc}", file=self.cafile) from exc
        # RFC 8996: TLS 1.0 and 1.1 are gone.
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.certfile is not None:
            self._load_chain(context)
        return context

    def server_context(self) -> ssl.SSLContext:
        if self.certfile is None or self.keyfile is None:
            raise ConfigError("a TLS listener needs a certfile and a keyfile", key="tls")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load_chain(context)
        if self.cafile is not None and self.verify:
            try:
                context.load_verify_locations(cafile=self.cafile)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot load CA certificates: {exc}", file=self.cafile) from exc
            context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def _load_chain(self, context: ssl.SSLContext) -> None:
        try:
            context.load_cert_chain(cast(str, self.certfile), self.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load certificate and key: {exc}", file=self.certfile) from exc


def _destination(transport: str, sockaddr: tuple[str, int] | tuple[str, int, int, int]) -> Destination:
    # IPv6 socket addresses carry flowinfo and scope id as well; SIP only needs IP and port.
    return Destination(transport, str(sockaddr[0]), int(sockaddr[1]))


class _DatagramEndpoint(asyncio.DatagramProtocol):
    """One listening UDP socket; it hands datagrams to the owner and sends for it."""

    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner
        self.transport: asyncio.DatagramTransport | None = None
        self.local = Destination("udp", "0.0.0.0", 0)
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.local = _destination("udp", transport.get_extra_info("sockname"))

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._owner._datagram_received(data, Destination("udp", str(addr[0]), int(addr[1])), self.local)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors on an unconnected socket name no peer we could report; they are noise
        # that the transaction timers already cover (RFC 3261 §17.1.1.2 Timer B/F).
        log.debug("UDP socket %s: %s", self.local, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection, whoever opened it."""

    def __init__(self, owner: SipTransport, transport_name: str, peer: Destination | None) -> None:
        self._owner = owner
        self.transport_name = transport_name
        self._loop = asyncio.get_running_loop()
        self._framer = StreamFramer(owner.limits)
        self._idle_timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        # Outbound connections are known by the address we dialled, inbound ones by the peer's.
        self.peer = peer
        self.outbound = peer is not None
        self.local = Destination(transport_name, "0.0.0.0", 0)
        self.last_activity = self._loop.time()
        self.closed_locally = False  # set when we close it, so the close is not reported as a failure
        self.closed: asyncio.Future[None] = self._loop.create_future()

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.local = _destination(self.transport_name, transport.get_extra_info("sockname"))
        if self.peer is None:
            self.peer = _destination(self.transport_name, transport.get_extra_info("peername"))
        self.last_activity = self._loop.time()
        if self._owner._connection_opened(self):
            self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        self.last_activity = self._loop.time()
        pings = self._framer.keepalives
        try:
            items = self._framer.feed(data)
        except FramingError as exc:
            self.closed_locally = True
            self.transport.close()
            self._owner._report(self.peer, f"framing error, connection closed: {exc.reason}")
            return
        pings = self._framer.keepalives - pings
        if pings:
            # RFC 5626 §4.4.1: each CRLFCRLF ping is answered with one CRLF pong.
            self.transport.write(b"\r\n" * pings)
        for item in items:
            if isinstance(item, SipParseError):
                # The raw bytes of a stream message are not kept by the framer.
                self._owner._parse_failed(item, None, self.peer)
            else:
                self._owner._message_received(item, self.peer, self.local)

    def eof_received(self) -> bool | None:
        # The peer is done sending; SIP has no use for a half-open connection, so close ours too.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._owner._connection_closed(self, exc)
        if not self.closed.done():
            self.closed.set_result(None)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.last_activity = self._loop.time()
        self.transport.write(data)

    def _arm_idle_timer(self) -> None:
        self._idle_timer = self._loop.call_at(self.last_activity + self._owner.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        # Activity moves last_activity without touching the timer (cheaper per message); the
        # timer re-arms itself for the remaining time instead.
        if self._loop.time() >= self.last_activity + self._owner.idle_timeout:
            log.debug("closing idle %s connection to %s", self.transport_name, self.peer)
            self.closed_locally = True
            if self.transport is not None:
                self.transport.close()
        else:
            self._arm_idle_timer()


class SipTransport:
    """Listens, receives and sends SIP messages over UDP, TCP and TLS.

    ``on_message(message, source, local)`` gets every parsed message with the peer's address
    and our address it arrived on; ``on_parse_error(error, raw, source)`` gets what could not be
    parsed (``raw`` is the datagram for UDP, None for streams); ``on_transport_error(destination,
    reason)`` hears about connections that failed or broke.
    """

    def __init__(
        self,
        on_message: OnMessage,
        on_parse_error: OnParseError,
        on_transport_error: OnTransportError,
        *,
        tls: TlsConfig | None = None,
        idle_timeout: float = 300.0,
        connect_timeout: float = 10.0,
        max_connections: int = 1024,
        limits: ParseLimits = DEFAULT_LIMITS,
    ) -> None:
        self._on_message = on_message
        self._on_parse_error = on_parse_error
        self._on_transport_error = on_transport_error
        self._tls = tls if tls is not None else TlsConfig()
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.limits = limits
        self._client_context: ssl.SSLContext | None = None
        self._udp: list[_DatagramEndpoint] = []
        self._servers: list[asyncio.Server] = []
        self._bound: list[Destination] = []
        self._streams: set[_StreamConnection] = set()
        self._by_peer: dict[Destination, _StreamConnection] = {}
        self._connecting: dict[Destination, asyncio.Task[_StreamConnection]] = {}
        self._started = False
        self._closed = False

    # --- setup -------------------------------------------------------------------------

    async def start(self, listens: Sequence[ListenSpec]) -> None:
        """Open every listening socket, or none: a failure closes what was opened and raises."""
        if self._started:
            raise LocalProtocolError("SipTransport.start() was already called")
        self._started = True
        loop = asyncio.get_running_loop()
        server_context = None
        if any(spec.transport == "tls" for spec in listens):
            server_context = self._tls.server_context()
        for spec in listens:
            try:
                if spec.transport == "udp":
                    _, endpoint = await loop.create_datagram_endpoint(
                        functools.partial(_DatagramEndpoint, self), local_addr=(spec.host, spec.port)
                    )
                    self._udp.append(endpoint)
                    self._bound.append(endpoint.local)
                    continue
                server = await loop.create_server(
                    functools.partial(_StreamConnection, self, spec.transport, None),
                    spec.host,
                    spec.port,
                    ssl=server_context if spec.transport == "tls" else None,
                    ssl_handshake_timeout=self.connect_timeout if spec.transport == "tls" else None,
                )
            except OSError as exc:
                await self.close()
                where = Destination(spec.transport, spec.host, spec.port)
                raise TransportError(where, f"cannot listen: {exc.strerror or exc}") from exc
            self._servers.append(server)
            self._bound.extend(_destination(spec.transport, sock.getsockname()) for sock in server.sockets)

    @property
    def addresses(self) -> tuple[Destination, ...]:
        """Every bound listening address, with the real port when 0 was asked for."""
        return tuple(self._bound)

    @property
    def connections(self) -> tuple[Destination, ...]:
        """Peers of the open TCP/TLS connections."""
        return tuple(conn.peer for conn in self._streams if conn.peer is not None and conn.usable)

    def local_address(self, transport: str) -> tuple[str, int]:
        """The first bound address of ``transport``, for Via sent-by and Contact."""
        for bound in self._bound:
            if bound.transport == transport:
                return bound.host, bound.port
        raise LocalProtocolError(f"no {transport} listener")

    # --- sending -----------------------------------------------------------------------

    async def send(self, data: bytes, destination: Destination, *, server_name: str | None = None) -> None:
        """Send one encoded message; raise ``TransportError`` (after reporting it) if it cannot go.

        ``destination.host`` must be an IP address (see ``signaling.resolver``). ``server_name``
        is the name a TLS server's certificate must carry; without it the IP address is checked.
        """
        if self._closed or not self._started:
            raise LocalProtocolError("SipTransport is not running")
        if ip_family(destination.host) is None:
            raise LocalProtocolError(f"cannot send to {destination}: resolve the host to an IP address first")
        if destination.transport == "udp":
            self._send_datagram(data, destination)
            return
        conn = self._by_peer.get(destination)
        if conn is None or not conn.usable:
            conn = await self._connection_to(destination, server_name)
        assert conn.transport is not None
        if conn.transport.get_write_buffer_size() + len(data) > MAX_WRITE_BUFFER:
            conn.transport.abort()
            raise self._failure(destination, "peer is not reading; connection aborted")
        conn.write(data)

    def send_now(self, data: bytes, destination: Destination) -> bool:
        """Send one encoded message at once if nothing needs waiting for; True when it was sent.

        That is a datagram, or a message for a peer whose TCP/TLS connection is open. Otherwise
        (a connection to open, or a failure to report) nothing is sent or reported, and the
        caller uses ``send``. A sender with many messages saves the task ``send`` would need.
        """
        if self._closed or not self._started:
            return False
        if destination.transport == "udp":
            endpoint = self._datagram_endpoint(destination.host)
            if endpoint is None or endpoint.transport is None or len(data) > MAX_DATAGRAM:
                return False
            endpoint.transport.sendto(data, (destination.host, destination.port))
            return True
        conn = self._by_peer.get(destination)
        if conn is None or not conn.usable or conn.transport is None:
            return False
        if conn.transport.get_write_buffer_size() + len(data) > MAX_WRITE_BUFFER:
            return False
        conn.write(data)
        return True

    def _datagram_endpoint(self, host: str) -> _DatagramEndpoint | None:
        """The UDP socket to send to ``host`` from: the first one of its address family."""
        family = ip_family(host)
        for endpoint in self._udp:
            if endpoint.transport is not None and ip_family(endpoint.local.host) == family:
                return endpoint
        return None

    def _send_datagram(self, data: bytes, destination: Destination) -> None:
        if len(data) > MAX_DATAGRAM:
            raise self._failure(destination, f"{len(data)} bytes do not fit in a UDP datagram")
        endpoint = self._datagram_endpoint(destination.host)
        if endpoint is None or endpoint.transport is None:
            version = "IPv6" if ip_family(destination.host) == socket.AF_INET6 else "IPv4"
            raise self._failure(destination, f"no {version} UDP socket to send from")
        endpoint.transport.sendto(data, (destination.host, destination.port))

    async def _connection_to(self, destination: Destination, server_name: str | None) -> _StreamConnection:
        # Concurrent sends to the same peer share one connection attempt rather than racing.
        task = self._connecting.get(destination)
        if task is None:
            task = asyncio.create_task(self._connect(destination, server_name))
            self._connecting[destination] = task
            task.add_done_callback(functools.partial(self._connect_done, destination))
        # shield: a sender that gives up must not cancel the attempt others are waiting on.
        return await asyncio.shield(task)

    def _connect_done(self, destination: Destination, task: asyncio.Task[_StreamConnection]) -> None:
        if self._connecting.get(destination) is task:
            del self._connecting[destination]
        if not task.cancelled():
            task.exception()  # retrieved here so an attempt nobody awaits any more is not logged

    async def _connect(self, destination: Destination, server_name: str | None) -> _StreamConnection:
        if self._count(destination.transport) >= self.max_connections:
            raise self._failure(destination, f"limit of {self.max_connections} connections reached")
        loop = asyncio.get_running_loop()
        context = None
        if destination.transport == "tls":
            if self._client_context is None:
                self._client_context = self._tls.client_context()
            context = self._client_context
        name = server_name or destination.host
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    functools.partial(_StreamConnection, self, destination.transport, destination),
                    destination.host,
                    destination.port,
                    ssl=context,
                    server_hostname=name if context is not None else None,
                    local_addr=self._source_address(destination),
                )
        except ssl.SSLCertVerificationError as exc:
            reason = f"TLS certificate verification failed for {name!r}: {exc.verify_message or exc.reason}"
        except ssl.SSLError as exc:
            reason = f"TLS handshake failed: {exc.reason or exc}"
        except TimeoutError:
            reason = f"connection timed out after {self.connect_timeout:g} s"
        except OSError as exc:
            reason = f"connection failed: {exc.strerror or exc}"
        else:
            return conn
        raise self._failure(destination, reason)

    def _source_address(self, destination: Destination) -> tuple[str, int] | None:
        # A listener bound to one address of a multi-homed host (an edge) means "speak from
        # here": connect from that address so the peer sees the address our Via advertises.
        family = ip_family(destination.host)
        for bound in self._bound:
            if bound.transport == destination.transport and ip_family(bound.host) == family:
                if ipaddress.ip_address(bound.host).is_unspecified:
                    return None
                return bound.host, 0
        return None

    def _failure(self, destination: Destination, reason: str) -> TransportError:
        self._report(destination, reason)
        return TransportError(destination, reason)

    # --- events from the protocols -----------------------------------------------------

    def _count(self, transport: str) -> int:
        return sum(1 for conn in self._streams if conn.transport_name == transport)

    def _connection_opened(self, conn: _StreamConnection) -> bool:
        assert conn.peer is not None and conn.transport is not None
        if self._closed or (not conn.outbound and self._count(conn.transport_name) >= self.max_connections):
            conn.transport.abort()
            if not self._closed:
                self._report(conn.peer, f"limit of {self.max_connections} connections reached; refused")
            return False
        self._streams.add(conn)
        self._by_peer[conn.peer] = conn
        return True

    def _connection_closed(self, conn: _StreamConnection, exc: Exception | None) -> None:
        self._streams.discard(conn)
        if conn.peer is not None and self._by_peer.get(conn.peer) is conn:
            del self._by_peer[conn.peer]
        # Our own close (idle, framing error, shutdown) is not news. A close by the peer is:
        # transactions still waiting on that connection can get no answer over it any more
        # (RFC 3261 §18.4), and a TLS peer that rejects us after the handshake closes this way.
        if conn.peer is None or self._closed or conn.closed_locally:
            return
        self._report(conn.peer, f"connection lost: {exc}" if exc is not None else "connection closed by peer")

    def _datagram_received(self, data: bytes, source: Destination, local: Destination) -> None:
        if not data.strip(b"\r\n"):
            return  # a CRLF keepalive sent over UDP; RFC 5626 §4.4.2 uses STUN there, nothing to answer
        try:
            message = parse_message(data, self.limits)
        except SipParseError as exc:
            self._parse_failed(exc, data, source)
            return
        self._message_received(message, source, local)

    def _message_received(self, message: Request | Response, source: Destination, local: Destination) -> None:
        try:
            self._on_message(message, source, local)
        except Exception:
            log.exception("on_message failed for %r from %s", message, source)

    def _parse_failed(self, error: SipParseError, raw: bytes | None, source: Destination) -> None:
        try:
            self._on_parse_error(error, raw, source)
        except Exception:
            log.exception("on_parse_error failed for a message from %s", source)

    def _report(self, destination: Destination, reason: str) -> None:
        try:
            self._on_transport_error(destination, reason)
        except Exception:
            log.exception("on_transport_error failed for %s", destination)

    # --- shutdown ----------------------------------------------------------------------

    async def close(self) -> None:
        """Stop listening and close every connection and socket; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._connecting.values()):
            task.cancel()
        for server in self._servers:
            server.close()
        waiting: list[asyncio.Future[None]] = []
        for conn in list(self._streams):
            if conn.transport is not None:
                conn.transport.close()  # close, not abort: what was just sent (a BYE) still goes out
            waiting.append(conn.closed)
        for endpoint in self._udp:
            if endpoint.transport is not None:
                endpoint.transport.close()
            waiting.append(endpoint.closed)
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=1.0)
            for conn in list(self._streams):
                if conn.closed in late and conn.transport is not None:
                    conn.transport.abort()
        for server in self._servers:
            await server.wait_closed()
