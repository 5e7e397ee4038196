"""A media worker process: a synchronous epoll loop over its sockets, commanded over a socketpair.

``python -m siprec_src.media.worker --control-fd N --index I --port-min A --port-max B
--stream-timeout T`` (the engine runs the same ``main()`` through ``python -c``) is started by
:class:`~siprec_src.media.engine.MediaEngine` with ``asyncio.create_subprocess_exec`` (never
``fork()`` from the asyncio process) and inherits one end of a Unix ``SOCK_STREAM`` socketpair.

Two parts:

- :class:`MediaHost` holds the legs and forks of one process, their sockets and ports, and runs
  the commands. It knows nothing of epoll or asyncio: it is given a :class:`Reactor` to watch
  sockets with, and owns the :class:`~siprec_src.media.pipeline.Timers` its owner must run. The
  in-process engine (``workers = 0``, feed-only calls) runs the very same class on the asyncio
  loop, so the two paths cannot drift apart.
- :class:`WorkerProcess` is the loop: ``epoll.poll(timeout)`` with the timeout of the earliest
  timer (RTCP reports, keepalives, idle legs), the clock read once per wakeup, datagrams read
  into the process's one preallocated buffer (one per ready socket when many are ready, as with
  thousands of 50 packet/s legs; drained when few are), then due timers, then the replies and
  events for the control process; after a light wakeup, a pause of up to 0.2 ms lets packets
  gather (COALESCE_SECONDS).

Command protocol (between our own processes, so pickle of the frozen specs is fine). Every
message is a 4-byte big-endian length and a pickled tuple:

================================  ===============================================================
control -> worker                 ``("call", id, command, args)``; command is one of ``COMMANDS``
worker -> control                 ``("ready", index, pid)`` once, when the loop starts
                                  ``("ok", id, result)`` / ``("error", id, exception)``
                                  ``("event", MediaEvent)``, unsolicited
================================  ===============================================================

The worker exits after the ``close`` command, and also when the control socket reaches EOF (the
control process is gone: it closes its forks with BYE first, so the SRSs know).
"""

from __future__ import annotations

import argparse
import errno
import functools
import gc
import os
import pickle
import platform
import re
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from siprec_src.errors import LocalProtocolError, SiprecError
from siprec_src.media.events import ForkStats, LegStats, MediaEvent
from siprec_src.media.pipeline import (
    EventSink,
    ForkPipeline,
    LegReceiver,
    PacketBuffer,
    Timers,
)
from siprec_src.media.ports import RECEIVE_BUFFER, PortAllocator
from siprec_src.media.spec import Address, ForkSpec, Leg, LegSpec

# DESIGN.md: at most 4 forked streams per call (both_tracks counts 2).
MAX_FORKS_PER_CALL = 4

# Wakeup strategy of the epoll loop (see WorkerProcess.run): with more than FEW_READY sockets
# ready, one datagram each; with fewer, up to HOT_DRAIN from each.
FEW_READY = 4
HOT_DRAIN = 64
# Interrupt moderation. Waking a sleeping process costs more CPU than forwarding a packet (~9 µs
# on a 2-vCPU VM), so a worker woken per packet at a moderate packet rate spends much of its core
# waking up. After a light wakeup (at most FEW_READY sockets ready) the loop does not poll again
# before COALESCE_SECONDS have passed since that wakeup: the packets arriving meanwhile share the
# next one, and the loop wakes at most 1 / COALESCE_SECONDS times a second while light (~5 % of a
# core). A packet waits at most that long, and only one that arrives within it after a wakeup:
# at a few packets per millisecond most packets wait for nothing, and a busy worker finds many
# sockets ready and never pauses. Measured with benchmarks/bench_media.py (100 and 250 calls,
# 10k and 25k packets/s): never pausing costs ~50 % more CPU per packet at 10k packets/s; the
# former fixed 0.5 ms sleep after every light wakeup put the median latency at 0.35-0.55 ms,
# this rule at ~0.2 ms, for ~10-20 % more CPU per packet at 10k packets/s and the same at 25k.
# Pausing after every wakeup that found packets was tried: no better at 25k packets/s, and in
# full runs 71k packets per CPU-second at 50k packets/s against 82k with this rule. A wakeup for
# control commands alone does not pause (see WorkerProcess.run).
COALESCE_SECONDS = 0.0002

FRAME_HEADER = struct.Struct("!I")
MAX_FRAME = 16 * 1024 * 1024  # far above any command or event; a bigger length is corruption

COMMANDS = frozenset(
    {
        "open_leg",
        "close_leg",
        "reserve_fork_port",
        "start_fork",
        "update_fork",
        "pause_fork",
        "resume_fork",
        "stop_fork",
        "fork_stats",
        "leg_stats",
        "close",
    }
)

# callback(now) reads at most one datagram and says whether it got one.
Readable = Callable[[float], bool]


def _nothing_to_read(now: float) -> bool:
    """The handler of a descriptor no longer watched (closed by an earlier handler this round)."""
    return False


class Reactor(Protocol):
    """What a MediaHost needs from its loop: call ``callback(now)`` when ``fd`` is readable.

    A callback reads one datagram per call (see ``LegReceiver.on_readable`` for why); a reactor
    may call it again while it returns True.
    """

    def add_reader(self, fd: int, callback: Readable) -> None: ...

    def remove_reader(self, fd: int) -> None: ...


def encode_frame(message: object) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME_HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Splits the control stream into messages (length-prefixed pickles)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        messages = []
        buffer = self._buffer
        while len(buffer) >= FRAME_HEADER.size:
            (length,) = FRAME_HEADER.unpack_from(buffer)
            if length > MAX_FRAME:
                raise LocalProtocolError(f"control frame of {length} bytes: the stream is corrupt")
            end = FRAME_HEADER.size + length
            if len(buffer) < end:
                break
            messages.append(pickle.loads(buffer[FRAME_HEADER.size : end]))
            del buffer[:end]
        return messages


def kernel_routes_connected_udp(system: str, release: str) -> bool:
    """Whether the kernel gives a connected UDP socket every datagram of its 4-tuple, and only
    those, when it shares its port with an unconnected one through SO_REUSEPORT: Linux 5.4 on
    (commit acdcecc61285, "udp: correct reuseport selection with connected sockets"; before it,
    a reuseport group could hand a stranger's datagram to the connected socket)."""
    if system != "linux" or not hasattr(socket, "SO_REUSEPORT"):
        return False
    match = re.match(r"(\d+)\.(\d+)", release)
    return match is not None and (int(match[1]), int(match[2])) >= (5, 4)


# Serve an admitted source from a socket connected to it (see MediaHost._source_admitted).
CONNECT_ADMITTED_SOURCES = kernel_routes_connected_udp(sys.platform, platform.release())


def connected_socket(tap: socket.socket, source: Address) -> socket.socket:
    """A second socket on ``tap``'s address, connected to ``source``.

    SO_REUSEPORT on both lets them share the port; the kernel's lookup then prefers the socket
    whose 4-tuple matches (a connected socket scores higher and refuses other sources), so
    ``source``'s datagrams go to the new socket and everybody else's stay on ``tap``. Only the
    same user can join the port this way, who could read the worker's memory anyway.
    """
    sock = socket.socket(tap.family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        tap.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(tap.getsockname())
        sock.connect(source)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(slots=True)
class _LegEntry:
    receiver: LegReceiver
    rtp: socket.socket | None = None
    rtcp: socket.socket | None = None
    port: int | None = None
    connected: socket.socket | None = None  # on the tap's port, connected to the admitted source


@dataclass(slots=True)
class _ForkEntry:
    call_id: str
    fork_id: str
    rtp: socket.socket
    rtcp: socket.socket
    local: Address
    remote_rtcp: Address = ("", 0)
    pipeline: ForkPipeline | None = None

    def send_rtcp(self, packet: bytes) -> object:
        return self.rtcp.sendto(packet, self.remote_rtcp)


class MediaHost:
    """The calls of one process: legs, forks, their sockets, ports and timers.

    Every method is synchronous and raises :class:`LocalProtocolError` naming the id it could not
    find or the rule it would break; state changes only after the step that can fail succeeded
    (STYLE.md #4).
    """

    def __init__(
        self, reactor: Reactor, emit: EventSink, ports: PortAllocator, stream_timeout: float
    ) -> None:
        self._reactor = reactor
        self._emit = emit
        self._ports = ports
        self.stream_timeout = stream_timeout
        self.timers = Timers()
        # The one receive buffer of the process: every packet is handled to the end before the
        # next is read, so all legs share it (no per-leg or per-packet allocation).
        self.packets = PacketBuffer()
        self.buffer = self.packets.data
        self._legs: dict[tuple[str, Leg], _LegEntry] = {}
        self._forks: dict[str, _ForkEntry] = {}
        # The forks of each call: a call's commands look at its own (at most MAX_FORKS_PER_CALL),
        # never at every fork of the process (O(n) per command is O(n²) to set up n calls).
        self._call_forks: dict[str, dict[str, _ForkEntry]] = {}

    # --- introspection ----------------------------------------------------------------------

    @property
    def call_ids(self) -> set[str]:
        return {call_id for call_id, _ in self._legs} | set(self._call_forks)

    @property
    def fork_ids(self) -> set[str]:
        return set(self._forks)

    # --- the command dispatcher (shared by the worker's socket and the in-process engine) ---

    def execute(self, command: str, args: tuple[Any, ...], now: float, unix: float) -> object:
        match command:
            case "open_leg":
                spec, tap = args
                return self.open_leg(spec, tap=tap, now=now)
            case "close_leg":
                return self.close_leg(*args)
            case "reserve_fork_port":
                return self.reserve_fork_port(*args)
            case "start_fork":
                self.start_fork(args[0], now)
                return None
            case "update_fork":
                self.update_fork(args[0], now)
                return None
            case "pause_fork":
                self.pause_fork(args[0], now)
                return None
            case "resume_fork":
                self.resume_fork(args[0], now)
                return None
            case "stop_fork":
                return self.stop_fork(args[0], now, unix)
            case "fork_stats":
                return self.fork_stats(args[0])
            case "leg_stats":
                return self.leg_stats(*args)
            case "close":
                self.close(now, unix)
                return None
        raise LocalProtocolError(f"unknown media command {command!r}")

    # --- legs -------------------------------------------------------------------------------

    def open_leg(self, spec: LegSpec, *, tap: bool, now: float) -> Address | None:
        key = (spec.call_id, spec.leg)
        if key in self._legs:
            raise LocalProtocolError(f"call {spec.call_id}: the {spec.leg} leg is already open")
        if not tap:
            receiver = LegReceiver(spec, self.packets, self._emit, now, self.stream_timeout)
            entry = _LegEntry(receiver)
            address: Address | None = None
        else:
            rtp, rtcp, address = self._ports.bind_pair(spec.bind_host)
            receiver = LegReceiver(
                spec,
                self.packets,
                self._emit,
                now,
                self.stream_timeout,
                rtp.recvfrom_into,
                on_admitted=functools.partial(self._source_admitted, key),
            )
            entry = _LegEntry(receiver, rtp, rtcp, address[1])
            self._reactor.add_reader(rtp.fileno(), receiver.on_readable)
            self._reactor.add_reader(rtcp.fileno(), functools.partial(self._leg_rtcp, receiver, rtcp))
        self._legs[key] = entry
        for fork in self._call_forks.get(spec.call_id, {}).values():
            pipeline = fork.pipeline
            if pipeline is not None and pipeline.spec.leg == spec.leg:
                receiver.attach(pipeline)
        self.timers.schedule(receiver, receiver.first_deadline())
        return address

    def close_leg(self, call_id: str, leg: Leg) -> LegStats:
        entry = self._leg(call_id, leg)
        receiver = entry.receiver
        receiver.close()  # its forks stay, idle, until stopped or the leg reopens
        self.timers.cancel(receiver)
        self._release_leg_sockets(entry)
        del self._legs[(call_id, leg)]
        return receiver.stats()

    def leg_stats(self, call_id: str, leg: Leg) -> LegStats:
        return self._leg(call_id, leg).receiver.stats()

    def feed(self, call_id: str, leg: Leg, packet: bytes, now: float) -> None:
        self._leg(call_id, leg).receiver.feed(packet, now)

    def _leg(self, call_id: str, leg: Leg) -> _LegEntry:
        entry = self._legs.get((call_id, leg))
        if entry is None:
            raise LocalProtocolError(f"call {call_id}: no {leg} leg is open")
        return entry

    def _leg_rtcp(self, receiver: LegReceiver, sock: socket.socket, now: float) -> bool:
        try:
            sock.recv_into(self.buffer)
        except OSError:
            return False
        receiver.receive_rtcp(now)
        return True

    def _source_admitted(self, key: tuple[str, Leg], source: Address, now: float) -> None:
        """A tap leg admitted its source: serve it from a socket connected to that source.

        ``recvfrom_into`` makes a (host, port) tuple and a host string per datagram, a good part
        of what a packet costs in Python (measured: ``recv_into`` is 0.6-1 µs cheaper per
        datagram); a connected socket needs no address, as the kernel delivers it nothing but
        its peer's datagrams (``connected_socket``). Order is kept: what the tap socket still
        holds, then what the new socket queued before its connect (anybody's: checked), go out
        now, before the connected reader runs. Without SO_REUSEPORT routing the tap socket
        keeps serving the leg, checking every source as before.
        """
        entry = self._legs.get(key)
        if not CONNECT_ADMITTED_SOURCES or entry is None or entry.rtp is None or entry.connected:
            return
        try:
            connected = connected_socket(entry.rtp, source)
        except OSError:
            return
        receiver = entry.receiver
        receiver.drain_checked(entry.rtp.recvfrom_into, now)
        receiver.drain_checked(connected.recvfrom_into, now)
        entry.connected = connected
        self._reactor.add_reader(connected.fileno(), receiver.connected_reader(connected.recv_into))

    def _release_leg_sockets(self, entry: _LegEntry) -> None:
        for sock in (entry.connected, entry.rtp, entry.rtcp):
            if sock is not None:
                self._reactor.remove_reader(sock.fileno())
                sock.close()
        if entry.port is not None:
            self._ports.release(entry.port)

    # --- forks ------------------------------------------------------------------------------

    def reserve_fork_port(self, call_id: str, fork_id: str, bind_host: str) -> Address:
        if fork_id in self._forks:
            raise LocalProtocolError(f"fork {fork_id} already exists (call {self._forks[fork_id].call_id})")
        count = len(self._call_forks.get(call_id, ()))
        if count >= MAX_FORKS_PER_CALL:
            raise LocalProtocolError(
                f"call {call_id} already has {count} forked streams, the most a call may have"
            )
        rtp, rtcp, address = self._ports.bind_pair(bind_host)
        entry = _ForkEntry(call_id, fork_id, rtp, rtcp, address)
        self._reactor.add_reader(rtp.fileno(), functools.partial(self._fork_readable, entry, rtp, True))
        self._reactor.add_reader(rtcp.fileno(), functools.partial(self._fork_readable, entry, rtcp, False))
        self._forks[fork_id] = entry
        self._call_forks.setdefault(call_id, {})[fork_id] = entry
        return address

    def start_fork(self, spec: ForkSpec, now: float) -> None:
        entry = self._fork(spec.fork_id)
        if entry.pipeline is not None:
            raise LocalProtocolError(f"fork {spec.fork_id} is already started; use update_fork")
        if entry.call_id != spec.call_id:
            raise LocalProtocolError(
                f"fork {spec.fork_id} was reserved for call {entry.call_id}, not {spec.call_id}"
            )
        if tuple(spec.local) != entry.local:
            raise LocalProtocolError(
                f"fork {spec.fork_id}: local {spec.local} is not the reserved address {entry.local}"
            )
        self._connect(entry, spec)
        pipeline = ForkPipeline(
            spec, send_rtp=entry.rtp.send, send_rtcp=entry.send_rtcp, emit=self._emit, now=now
        )
        entry.pipeline = pipeline
        leg = self._legs.get((spec.call_id, spec.leg))
        if leg is not None:
            leg.receiver.attach(pipeline)
        self.timers.schedule(pipeline, pipeline.first_deadline())

    def update_fork(self, spec: ForkSpec, now: float) -> None:
        pipeline = self._started(spec.fork_id)
        entry = self._forks[spec.fork_id]
        old = pipeline.spec
        pipeline.update(spec, now)  # validates first: nothing changed if it raises
        if (spec.remote_rtp, spec.remote_rtcp) != (old.remote_rtp, old.remote_rtcp):
            self._connect(entry, spec)
        self.timers.schedule(pipeline, pipeline.first_deadline())

    def pause_fork(self, fork_id: str, now: float) -> None:
        pipeline = self._started(fork_id)
        pipeline.pause(now)
        self.timers.schedule(pipeline, pipeline.first_deadline())

    def resume_fork(self, fork_id: str, now: float) -> None:
        pipeline = self._started(fork_id)
        pipeline.resume(now)
        self.timers.schedule(pipeline, pipeline.first_deadline())

    def stop_fork(self, fork_id: str, now: float, unix: float) -> ForkStats:
        entry = self._fork(fork_id)
        stats = ForkStats()
        if entry.pipeline is not None:
            entry.pipeline.close(now, unix)  # RTCP BYE (RFC 3550 §6.6)
            self.timers.cancel(entry.pipeline)
            stats = entry.pipeline.stats()
        for sock in (entry.rtp, entry.rtcp):
            self._reactor.remove_reader(sock.fileno())
            sock.close()
        self._ports.release(entry.local[1])
        del self._forks[fork_id]
        of_call = self._call_forks[entry.call_id]
        del of_call[fork_id]
        if not of_call:
            del self._call_forks[entry.call_id]
        entry.pipeline = None  # it holds entry.send_rtcp: a reference cycle otherwise
        return stats

    def fork_stats(self, fork_id: str) -> ForkStats:
        entry = self._fork(fork_id)
        return ForkStats() if entry.pipeline is None else entry.pipeline.stats()

    def _fork(self, fork_id: str) -> _ForkEntry:
        entry = self._forks.get(fork_id)
        if entry is None:
            raise LocalProtocolError(f"no fork {fork_id} (reserve_fork_port first)")
        return entry

    def _started(self, fork_id: str) -> ForkPipeline:
        pipeline = self._fork(fork_id).pipeline
        if pipeline is None:
            raise LocalProtocolError(f"fork {fork_id} is reserved but not started (start_fork first)")
        return pipeline

    def _connect(self, entry: _ForkEntry, spec: ForkSpec) -> None:
        """Connect the RTP socket to the SRS: ``send`` without an address per packet, and the
        kernel reports ICMP port unreachable as ECONNREFUSED (Linux does so only for connected
        UDP sockets). RTCP stays unconnected so an SRS that reports from another port is heard."""
        try:
            entry.rtp.connect(spec.remote_rtp)
        except OSError as exc:
            raise LocalProtocolError(
                f"fork {spec.fork_id}: cannot send from {entry.local} to {spec.remote_rtp}: {exc.strerror}"
            ) from exc
        entry.remote_rtcp = spec.remote_rtcp

    def _fork_readable(self, entry: _ForkEntry, sock: socket.socket, rtp_port: bool, now: float) -> bool:
        """RTCP from the SRS: on the RTCP port, or muxed on the RTP port (RFC 5761 §4)."""
        buffer = self.buffer
        try:
            length = sock.recv_into(buffer)
        except BlockingIOError:
            return False
        except OSError as exc:
            # The RTP socket is connected: a queued ICMP port unreachable surfaces here.
            if entry.pipeline is not None:
                entry.pipeline.socket_error(exc, now)
            return True
        pipeline = entry.pipeline
        if pipeline is None or length < 2:
            return True
        if rtp_port and not 191 < buffer[1] < 224:
            return True  # RTP from a sendonly stream's peer: nothing to do with it
        pipeline.receive_rtcp(bytes(buffer[:length]), now)
        return True

    # --- shutdown ---------------------------------------------------------------------------

    def close(self, now: float, unix: float) -> None:
        """RTCP BYE on every fork, then every socket closed."""
        for fork_id in list(self._forks):
            self.stop_fork(fork_id, now, unix)
        for call_id, leg in list(self._legs):
            self.close_leg(call_id, leg)


class WorkerProcess:
    """The epoll loop of one media worker and its end of the control socketpair."""

    def __init__(
        self, index: int, control: socket.socket, ports: PortAllocator, stream_timeout: float
    ) -> None:
        self.index = index
        self._control = control
        control.setblocking(False)
        self._epoll = select.epoll()
        # Indexed by file descriptor (a list index is cheaper than a dict lookup per datagram);
        # a closed descriptor's slot holds _nothing_to_read.
        self._handlers: list[Readable] = []
        self._pending_events: list[MediaEvent] = []
        self._out = bytearray()
        self._want_write = False
        self._decoder = FrameDecoder()
        self._running = True
        self.host = MediaHost(self, self._pending_events.append, ports, stream_timeout)
        self.add_reader(control.fileno(), self._control_ready)

    # Reactor
    def add_reader(self, fd: int, callback: Readable) -> None:
        self._epoll.register(fd, select.EPOLLIN)
        handlers = self._handlers
        if fd >= len(handlers):
            handlers.extend([_nothing_to_read] * (fd + 1 - len(handlers)))
        handlers[fd] = callback

    def remove_reader(self, fd: int) -> None:
        self._epoll.unregister(fd)
        self._handlers[fd] = _nothing_to_read

    def run(self) -> None:
        self._send(("ready", self.index, os.getpid()))
        self._flush()
        # Locals: no attribute lookups per wakeup (the packet loops are in the handlers).
        poll = self._epoll.poll
        handlers = self._handlers
        timers = self.host.timers
        events = self._pending_events
        monotonic = time.monotonic
        hot_batch = range(HOT_DRAIN)
        coalesce = COALESCE_SECONDS
        sleep = time.sleep
        control_only = [(self._control.fileno(), select.EPOLLIN)]
        now = monotonic()
        while self._running:
            deadline = timers.earliest()
            # The clock is read once per wakeup; this timeout uses the previous reading, so the
            # wait can be longer by the time spent handling it (microseconds to a millisecond).
            timeout = -1.0 if deadline is None else max(0.0, deadline - now)
            ready = poll(timeout)
            now = monotonic()
            if len(ready) > FEW_READY:
                # Many sockets ready (thousands of 50 packet/s legs): each nearly always holds
                # one datagram, so read one each; a socket holding more is reported again.
                for fd, _mask in ready:
                    handlers[fd](now)  # _nothing_to_read if an earlier handler closed it
            else:
                # A few hot sockets: drain them, so the cost of a wakeup is shared by many
                # packets (the one read that finds a socket empty is paid once per wakeup).
                for fd, _mask in ready:
                    handler = handlers[fd]
                    for _ in hot_batch:
                        if not handler(now):
                            break
            deadline = timers.earliest()
            if deadline is not None and deadline <= now:
                timers.run(now, time.time())
            if events:
                for event in events:
                    self._out += encode_frame(("event", event))
                events.clear()
            if self._out:
                self._flush()
            if 0 < len(ready) <= FEW_READY and ready != control_only:
                # A light wakeup: no other before COALESCE_SECONDS after it (see there).
                # Replies and events are already out. A wakeup for commands alone does not
                # pause: the next command of a call being set up (a round trip each) would
                # wait for it.
                pause = now + coalesce - monotonic()
                if pause > 0:
                    sleep(pause)
        self._epoll.close()

    # --- control socket ---------------------------------------------------------------------

    def _control_ready(self, now: float) -> bool:
        while True:
            try:
                data = self._control.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                # The control process is gone: say BYE to the SRSs and stop.
                self.host.close(now, time.time())
                self._running = False
                return False
            for message in self._decoder.feed(data):
                self._handle(message, now)
        self._flush()
        return False

    def _handle(self, message: Any, now: float) -> None:
        kind, request_id, command, args = message
        if kind != "call" or command not in COMMANDS:
            self._send(("error", request_id, LocalProtocolError(f"bad control message {kind}/{command}")))
            return
        try:
            result = self.host.execute(command, args, now, time.time())
        except SiprecError as exc:
            self._send(("error", request_id, exc))
            return
        except Exception as exc:  # a bug: keep serving the other calls, tell the caller what broke
            traceback.print_exc(file=sys.stderr)
            error = LocalProtocolError(f"media worker {self.index}: {command} failed: {exc!r}")
            self._send(("error", request_id, error))
            return
        self._send(("ok", request_id, result))
        if command == "close":
            self._running = False

    def _send(self, message: object) -> None:
        self._out += encode_frame(message)

    def _flush(self) -> None:
        """Write what the control socket takes; wait for EPOLLOUT for the rest (never block)."""
        out = self._out
        while out:
            try:
                sent = self._control.send(out)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                    out.clear()
                    self._running = False
                    return
                raise
            del out[:sent]
        want_write = bool(out)
        if want_write != self._want_write:
            mask = select.EPOLLIN | (select.EPOLLOUT if want_write else 0)
            self._epoll.modify(self._control.fileno(), mask)
            self._want_write = want_write


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m siprec_src.media.worker")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--port-min", type=int, required=True)
    parser.add_argument("--port-max", type=int, required=True)
    parser.add_argument("--stream-timeout", type=float, required=True)
    args = parser.parse_args(argv)
    # The control process decides when workers stop (it sends BYEs through them first); a
    # Ctrl-C reaching the whole process group must not kill them under its feet.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = socket.socket(fileno=args.control_fd)
    worker = WorkerProcess(
        args.index, control, PortAllocator(args.port_min, args.port_max), args.stream_timeout
    )
    # Everything allocated so far lives as long as the process: keep the collector off it, and
    # let it run rarely (the packet path allocates only short-lived, acyclic objects).
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    worker.run()
    control.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
