"""Per-packet forking: a leg's receive state, one pipeline per forked stream, RTCP, timers.

Pure in the aioquic sense (STYLE.md #1): nothing here opens a socket or reads the clock. The
owner (a media worker's epoll loop, or the asyncio engine in the control process) passes
``now`` (monotonic seconds) and, for RTCP, ``unix`` (wall-clock seconds for the NTP timestamp),
and gives each object the callables that touch the network: ``recv_into`` for a leg,
``send_rtp``/``send_rtcp`` for a fork. Tests pass lists and fake clocks instead.

The packet path, per datagram:

1. :meth:`LegReceiver.on_readable` receives into the process's one preallocated buffer
   (:class:`PacketBuffer`), checks the source (expected or latched,
   :class:`~siprec_src.media.spec.LegSpec`), parses the 12-byte fixed header **once** with a
   precompiled ``struct.Struct`` and hands the parsed fields to each fork's handler, with a
   writable ``memoryview`` of the packet (cut once per length, not per packet). Once the source
   is admitted, the owner may move it to a socket connected to it, read without a source address
   (:meth:`LegReceiver.connected_reader`).
2. Each :class:`ForkPipeline` handler writes its own header fields into that view in place
   (``pack_into``: second byte, sequence number, timestamp, SSRC) and sends the view. Forks of
   the same leg run one after the other over the same bytes: each writes every field it owns, and
   the leg runs ``plain`` forks (which send the leg's header unchanged) first, SRTP forks last.
   libsrtp encrypts where the packet lies: the last fork protects the shared bytes themselves, an
   SRTP fork before it a copy, so nothing is copied in the usual one-fork-per-leg case.

The handler of a fork is chosen once, when it is set up or its spec changes, from a table
(STYLE.md #10, after rtpengine's ``media_socket.c``), never by branching per packet on the mode:

========================  ======================================================================
``_forward_plain``        ``ForkSpec.rewrite=False``: the leg's packet as it came (source SSRC,
                          sequence, timestamp); only payload types outside the map are dropped.
``_forward_rewrite``      our stable SSRC, sequence/timestamp continuous across source changes,
                          payload type mapped; plain RTP out.
``_forward_srtp``         the same, then SRTP-protected with the fork's own libsrtp session.
``_drop_paused``          paused: count and drop (RFC 6263 keepalives go out from the timer).
========================  ======================================================================

Continuity (the "rewrite" modes). Output = source + offset, modulo 2^16 / 2^32. The offsets are
re-based, so that the output continues with sequence + 1 and a timestamp advanced by the
wall-clock time elapsed since the last packet we sent (times the clock rate, at least one 20 ms
frame), when:

- the source's SSRC changes (transfer, re-INVITE toward another media server, a new leg);
- the sequence number jumps by more than RFC 3550 §A.1's MAX_DROPOUT ahead or MAX_MISORDER
  behind;
- the timestamp jumps more than ``TS_JUMP_SECONDS`` ahead or ``TS_BACK_SECONDS`` behind, or after
  a silence of more than ``GAP_SECONDS`` the source's timestamps disagree with the wall clock by
  more than ``GAP_TOLERANCE_SECONDS`` (a hold where the source froze its clock); a silence whose
  timestamps agree with the wall clock (RFC 3551 §4.1 silence suppression) keeps its offsets;
- the fork was resumed after a pause (so the SRS sees no loss, and a timestamp gap equal to
  the paused time).

The first packet after a re-base carries the marker bit (RFC 3551 §4.1: the start of a talkspurt
after silence) so a receiver resynchronises its jitter buffer.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import random
import struct
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from siprec_src.errors import LocalProtocolError
from siprec_src.media.events import (
    FirstPacketReceived,
    ForkSendFailed,
    ForkStats,
    LegIdle,
    LegStats,
    MediaEvent,
    ReceptionReport,
    ReceptionReported,
    SourceLatched,
    SrtpFailed,
)
from siprec_src.media.rtp import (
    RTP_HEADER,
    SDES_CNAME,
    CompoundPacket,
    Goodbye,
    ReceiverReport,
    RtcpPacket,
    RtpError,
    SenderReport,
    SourceDescription,
    ntp_from_unix,
    parse_rtcp,
)
from siprec_src.media.spec import Address, ForkSpec, LegSpec
from siprec_src.media.srtp import SrtpError, SrtpReceiver, SrtpSender, buffer_address

EventSink = Callable[[MediaEvent], None]
RecvInto = Callable[[bytearray], tuple[int, Address]]
RecvConnected = Callable[[bytearray], int]
Admitted = Callable[[Address, float], None]
# unprotect_in_place(address, length) / protect_in_place(address, length) -> new length
UnprotectInPlace = Callable[[object, int], int]
ProtectInPlace = Callable[[object, int], int]
SendRtp = Callable[[memoryview | bytes], object]
SendRtcp = Callable[[bytes], object]
# handler(data, second_byte, sequence, timestamp, ssrc, payload_octets, now)
Forward = Callable[[memoryview, int, int, int, int, int, float], None]

# Big enough for any UDP datagram, so a packet is never silently cut (one per process).
BUFFER_SIZE = 65536
# Packet lengths whose view of a PacketBuffer is kept (an MTU and then some).
CACHED_VIEW_LENGTH = 2048
# Most datagrams LegReceiver.drain_checked reads in one go (a 1 MiB socket buffer holds ~1000).
DRAIN_LIMIT = 4096

# RFC 3550 §A.1: a sequence number further ahead than MAX_DROPOUT, or further behind than
# MAX_MISORDER, is not this stream's next packet but a restart.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
TS_JUMP_SECONDS = 30.0  # a source timestamp this far ahead is a new timeline, not a silence
TS_BACK_SECONDS = 2.0  # reordering never moves the clock this far back
GAP_SECONDS = 0.5  # after this much silence, compare the source's clock with ours
GAP_TOLERANCE_SECONDS = 0.2  # source timestamps this far from the wall clock: re-base
MIN_FRAME_SECONDS = 0.02  # a re-base advances the timestamp by at least one 20 ms frame

# Failures closer together than this are one burst: one event per burst, every failure counted.
BURST_QUIET_SECONDS = 1.0
# RFC 6263 §4.6 keepalive while paused; 15 s is the ICE keepalive period (RFC 8445 §11: Tr).
KEEPALIVE_SECONDS = 15.0

_SEQ_BACK = 0x10000 - MAX_MISORDER
_NEVER = -1  # no source SSRC yet (or a forced re-base): never equal to a 32-bit SSRC
_REWRITE = struct.Struct("!BHII")  # second byte (M/PT), sequence, timestamp, SSRC at offset 1
# Bound once: a module global and a call per packet, not a global, a method lookup and a call.
_pack_rewrite = _REWRITE.pack_into
_unpack_header = RTP_HEADER.unpack_from
_FEED_SOURCE: Address = ("", 0)  # the "source" of packets pushed with feed()
_UNSET: Address = ("<unset>", -1)  # no source admitted yet: the first packet takes the slow path


class TimerTarget(Protocol):
    def on_timer(self, now: float, unix: float) -> float | None:
        """Do what is due at ``now``; return the next deadline, or None to leave the timers."""


class Timers:
    """One heap of deadlines for all the legs and forks of a process.

    The owner waits until :meth:`earliest` (the epoll timeout, or one ``loop.call_at``) and calls
    :meth:`run`. Each target has at most one live entry: :meth:`schedule` supersedes the previous
    one (stale entries are skipped when they surface), :meth:`cancel` forgets the target.
    """

    __slots__ = ("_counter", "_generation", "_heap")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, TimerTarget]] = []
        self._generation: dict[TimerTarget, int] = {}
        self._counter = itertools.count()

    def schedule(self, target: TimerTarget, when: float) -> None:
        generation = self._generation.get(target, 0) + 1
        self._generation[target] = generation
        heapq.heappush(self._heap, (when, next(self._counter), generation, target))

    def cancel(self, target: TimerTarget) -> None:
        self._generation.pop(target, None)

    def earliest(self) -> float | None:
        heap = self._heap
        while heap:
            when, _, generation, target = heap[0]
            if self._generation.get(target) == generation:
                return when
            heapq.heappop(heap)
        return None

    def run(self, now: float, unix: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, generation, target = heapq.heappop(heap)
            if self._generation.get(target) != generation:
                continue
            following = target.on_timer(now, unix)
            if following is None:
                del self._generation[target]
            else:
                heapq.heappush(heap, (following, next(self._counter), generation, target))

    def __len__(self) -> int:
        return len(self._generation)


def _no_socket(buffer: bytearray) -> tuple[int, Address]:
    raise BlockingIOError("a feed-only leg has no socket")


def _not_connected(buffer: bytearray) -> int:
    raise BlockingIOError("no socket connected to the source")


def _no_keys(address: object, length: int) -> int:
    raise AssertionError("no SRTP keys")  # never chosen as the strategy of a stream without keys


# The strategies of a closed leg or fork. Closing puts these module functions in place of the
# bound methods a receiver or pipeline keeps on itself, which make it a reference cycle: only
# the cyclic garbage collector frees one, and a media worker runs it rarely (worker.main).


def _closed_read(now: float) -> bool:
    return False


def _closed_feed(length: int, now: float) -> None:
    return None


def _closed_forward(
    data: memoryview, second: int, seq: int, ts: int, ssrc: int, octets: int, now: float
) -> None:
    return None


def _payload_octets(buffer: bytearray, length: int, first: int) -> int:
    """Payload octets of an RTP packet whose first byte is not the common 0x80, or -1 if malformed.

    RFC 3550 §5.1: 4 bytes per CSRC, a header extension of 4 + 4 * length bytes, and padding whose
    count is the last octet. The SR octet count (§6.4.1) excludes header and padding.
    """
    if first >> 6 != 2:
        return -1
    offset = RTP_HEADER.size + 4 * (first & 0x0F)
    if first & 0x10:
        if length < offset + 4:
            return -1
        offset += 4 + 4 * ((buffer[offset + 2] << 8) | buffer[offset + 3])
    end = length
    if first & 0x20:
        padding = buffer[length - 1]
        if padding == 0:
            return -1
        end -= padding
    return end - offset if end >= offset else -1


class _Views(dict[int, memoryview]):
    """``views[n]``: the first n bytes of a buffer, cut once per length and kept.

    Slicing a memoryview per packet costs more than this lookup (a new object each time); a
    stream's packets have one or two lengths. Lengths beyond ``CACHED_VIEW_LENGTH`` are cut per
    packet, so a sender cycling through every length cannot make the cache grow past it.
    """

    __slots__ = ("_whole",)

    def __init__(self, buffer: bytearray) -> None:
        super().__init__()
        self._whole = memoryview(buffer)

    def __missing__(self, length: int) -> memoryview:
        view = self._whole[:length]
        if length <= CACHED_VIEW_LENGTH:
            self[length] = view
        return view


class PacketBuffer:
    """A packet buffer with what the packet path needs of it: views per length, the C address.

    A process has one for what its legs receive (every packet is handled to the end before the
    next is read, so all legs share it) and SRTP forks have one to protect a copy in (``_SCRATCH``).
    Sharing one buffer keeps the bytes every packet touches in the CPU cache whatever the number
    of streams. ``address`` is what libsrtp processes in place (``srtp.buffer_address``).
    """

    __slots__ = ("address", "data", "views")

    def __init__(self, data: bytearray | None = None) -> None:
        self.data = bytearray(BUFFER_SIZE) if data is None else data
        self.views = _Views(self.data)
        self.address = buffer_address(self.data)


def _nobody_admitted(source: Address, now: float) -> None:
    """The default on_admitted hook: the leg keeps reading its tap socket (tests, feed path)."""


class LegReceiver:
    """Receive state of one call leg: admission, counters, idle detection, the forks it feeds.

    Admission (LegSpec): with ``expected_source`` only that address is accepted; without, the
    first source is latched (SourceLatched) and every other one refused and counted, so nobody can
    inject audio into a recording. Packets pushed with :meth:`feed` skip the check. An SRTP leg is
    unprotected (in place, in the shared buffer) before anything else looks at the payload; a
    packet that fails is counted and dropped, never forwarded. RTCP on the RTP port (RFC 5761 §4
    demultiplexing: second byte 192-223) and on the leg's RTCP port is counted, not forwarded:
    the SRS gets our RTCP.

    Once a source is admitted, ``on_admitted(source, now)`` lets the owner serve that source from
    a socket connected to it (``connected_reader``): the kernel then delivers it only that
    source's datagrams, so the reader needs no source address, whose making is the dearest part
    of a ``recvfrom`` in Python (see MediaHost). The tap socket keeps receiving everybody else,
    still checked and counted.
    """

    __slots__ = (
        "_address",
        "_buffer",
        "_emit",
        "_expected",
        "_feed",
        "_first_reported",
        "_forks",
        "_forwards",
        "_idle_reported",
        "_last_at",
        "_last_srtp_failure",
        "_on_admitted",
        "_packets",
        "_recv_connected",
        "_recv_into",
        "_source",
        "_unprotect",
        "_views",
        "malformed",
        "octets",
        "on_readable",
        "packets",
        "rejected_source",
        "rtcp_packets",
        "spec",
        "srtp_failures",
        "stream_timeout",
    )

    def __init__(
        self,
        spec: LegSpec,
        buffer: bytearray | PacketBuffer,
        emit: EventSink,
        now: float,
        stream_timeout: float,
        recv_into: RecvInto | None = None,
        *,
        on_admitted: Admitted | None = None,
    ) -> None:
        self.spec = spec
        self._recv_into = recv_into if recv_into is not None else _no_socket
        self._recv_connected: RecvConnected = _not_connected
        self._on_admitted = on_admitted if on_admitted is not None else _nobody_admitted
        self.stream_timeout = stream_timeout
        packets = buffer if isinstance(buffer, PacketBuffer) else PacketBuffer(buffer)
        self._packets = packets
        self._buffer = packets.data
        self._views = packets.views
        self._address = packets.address
        self._emit = emit
        self._expected = spec.expected_source
        self._source = _UNSET
        self._first_reported = False
        self._idle_reported = False
        self._last_at = now
        self._last_srtp_failure = -1e9
        self._forks: list[ForkPipeline] = []
        self._forwards: tuple[Forward, ...] = ()
        self.packets = 0
        self.octets = 0
        self.rejected_source = 0
        self.malformed = 0
        self.srtp_failures = 0
        self.rtcp_packets = 0
        # The per-packet strategy, chosen once (STYLE.md #10).
        self.on_readable: Callable[[float], bool]
        self._feed: Callable[[int, float], None]
        self._unprotect: UnprotectInPlace
        if spec.srtp is None:
            self._unprotect = _no_keys
            self.on_readable = self._read_rtp
            self._feed = self._feed_rtp
        else:
            self._unprotect = SrtpReceiver(spec.srtp).unprotect_in_place
            self.on_readable = self._read_srtp
            self._feed = self._feed_srtp

    # --- forks ------------------------------------------------------------------------------

    def attach(self, fork: ForkPipeline) -> None:
        if fork not in self._forks:
            self._forks.append(fork)
            fork.leg_receiver = self
        self.refresh()

    def detach(self, fork: ForkPipeline) -> None:
        if fork in self._forks:
            self._forks.remove(fork)
            fork.leg_receiver = None
            fork.protect_in(None)
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the handler tuple after a fork was added, removed, paused or resumed.

        Forks run one after the other over the shared bytes (see the module docstring), so the
        order matters: plain forks first (they send the header as the leg received it), then the
        rewriting ones (each writes every header field it owns), SRTP forks last (encryption
        changes the payload). The last fork may change the bytes for good: an SRTP fork there
        protects the packet where it lies; one before it protects a copy.
        """
        ordered = sorted(self._forks, key=_fork_rank)
        for position, fork in enumerate(ordered, 1):
            fork.protect_in(self._packets if position == len(ordered) else None)
        self._forwards = tuple(fork.handler for fork in ordered)

    @property
    def forks(self) -> tuple[ForkPipeline, ...]:
        return tuple(self._forks)

    # --- packets ----------------------------------------------------------------------------

    # ``on_readable(now) -> bool`` is one of these two, chosen at setup. Each reads ONE datagram
    # from the tap socket and forks it, and says False when there was none.
    #
    # One per readiness, not a drain loop: a sidecar serves thousands of legs at 50 packets/s,
    # so a socket nearly always holds one datagram when epoll reports it, and the read that would
    # find it empty costs a syscall and a raised BlockingIOError for nothing. Level-triggered
    # epoll reports a socket that still holds data again on the next wakeup; the worker drains
    # when only a few sockets are ready, and the asyncio reactor calls again while this says True.

    def _read_rtp(self, now: float) -> bool:
        try:
            length, source = self._recv_into(self._buffer)
        except OSError:
            # BlockingIOError (a spurious wakeup), or an ICMP error queued on the socket
            # (nothing to do with the leg's media): either way, nothing to fork.
            return False
        if source == self._source:
            self._dispatch_rtp(length, now)
        elif self._admit(source, now):
            self._dispatch_rtp(length, now)
            self._on_admitted(source, now)
        return True

    def _read_srtp(self, now: float) -> bool:
        try:
            length, source = self._recv_into(self._buffer)
        except OSError:
            return False
        if source == self._source:
            self._dispatch_srtp(length, now)
        elif not self._admissible(source):
            self.rejected_source += 1  # refused before spending a decryption on it
        else:
            length = self._unprotect_packet(length, now)
            if length >= 0:
                # Only an authenticated packet latches its source: a forged packet arriving
                # first must not lock the real sender out.
                self._admit(source, now)
                self._dispatch_rtp(length, now)
                self._on_admitted(source, now)
        return True

    def connected_reader(self, recv: RecvConnected) -> Callable[[float], bool]:
        """The ``on_readable`` for a socket connected to the admitted source, reading with
        ``recv`` (``recv_into``): no source address to make or compare, the kernel delivers
        that socket nothing else. Like ``on_readable``, one datagram per call."""
        self._recv_connected = recv
        return self._read_connected_rtp if self.spec.srtp is None else self._read_connected_srtp

    def _read_connected_rtp(self, now: float) -> bool:
        recv = self._recv_connected
        try:
            length = recv(self._buffer)
        except OSError:
            return False
        self._dispatch_rtp(length, now)
        return True

    def _read_connected_srtp(self, now: float) -> bool:
        recv = self._recv_connected
        try:
            length = recv(self._buffer)
        except OSError:
            return False
        self._dispatch_srtp(length, now)
        return True

    def drain_checked(self, recv_into: RecvInto, now: float) -> None:
        """Read a socket empty, checking each datagram's source against the admitted one.

        For the datagrams a socket queued before it was connected (they may come from anyone),
        and those the tap socket still holds from the admitted source when its connected socket
        takes over: handled now, they go out before anything the connected socket receives.
        Bounded, so a flood on the tap port cannot hold the worker here.
        """
        dispatch = self._dispatch_rtp if self.spec.srtp is None else self._dispatch_srtp
        for _ in range(DRAIN_LIMIT):
            try:
                length, source = recv_into(self._buffer)
            except OSError:
                return
            if source == self._source:
                dispatch(length, now)
            else:
                self.rejected_source += 1

    def feed(self, packet: bytes, now: float) -> None:
        """The embedding path: a packet the caller already holds, no socket, no source check."""
        length = len(packet)
        if length > BUFFER_SIZE:
            self.malformed += 1
            return
        self._buffer[:length] = packet
        self._feed(length, now)

    def _feed_rtp(self, length: int, now: float) -> None:
        if self._source is _UNSET:
            self._admit(_FEED_SOURCE, now)
        self._dispatch_rtp(length, now)

    def _feed_srtp(self, length: int, now: float) -> None:
        length = self._unprotect_packet(length, now)
        if length >= 0:
            if self._source is _UNSET:
                self._admit(_FEED_SOURCE, now)
            self._dispatch_rtp(length, now)

    def receive_rtcp(self, now: float) -> None:
        """A datagram arrived on the leg's RTCP port (RFC 3550 §11: RTP port + 1): counted only."""
        self.rtcp_packets += 1

    def _admissible(self, source: Address) -> bool:
        """Whether a packet from ``source`` may be the first one admitted (and latch it)."""
        return self._source is _UNSET and (
            source is _FEED_SOURCE or self._expected is None or source == self._expected
        )

    def _admit(self, source: Address, now: float) -> bool:
        """Slow path for a packet whose source is not the admitted one (first packet, intruder)."""
        if not self._admissible(source):
            self.rejected_source += 1
            return False
        self._source = source
        spec = self.spec
        if self._expected is None and source is not _FEED_SOURCE:
            self._emit(SourceLatched(spec.call_id, spec.leg, source))
        if not self._first_reported:
            self._first_reported = True
            self._emit(FirstPacketReceived(spec.call_id, spec.leg, source))
        return True

    def _dispatch_rtp(self, length: int, now: float) -> None:
        if length < 12:
            self.malformed += 1
            return
        first, second, seq, ts, ssrc = _unpack_header(self._buffer)
        if first == 0x80:  # version 2, no padding, extension or CSRC: nearly every packet
            octets = length - 12
        else:
            octets = _payload_octets(self._buffer, length, first)
            if octets < 0:
                self.malformed += 1
                return
        if 191 < second < 224:  # RFC 5761 §4: RTCP multiplexed on the RTP port
            self.rtcp_packets += 1
            return
        self.packets += 1
        self.octets += octets
        self._last_at = now
        data = self._views[length]
        for forward in self._forwards:
            forward(data, second, seq, ts, ssrc, octets, now)

    def _dispatch_srtp(self, length: int, now: float) -> None:
        length = self._unprotect_packet(length, now)
        if length >= 0:
            self._dispatch_rtp(length, now)

    def _unprotect_packet(self, length: int, now: float) -> int:
        """Unprotect the SRTP packet in the buffer in place: its RTP length, or -1 when it was
        SRTCP on the RTP port or refused (counted either way, never forwarded)."""
        if length >= 2 and 191 < self._buffer[1] < 224:  # SRTCP on the RTP port (RFC 5761 §4)
            self.rtcp_packets += 1
            return -1
        unprotect = self._unprotect
        try:
            return unprotect(self._address, length)
        except SrtpError as exc:
            # RFC 3711 §3.3: a packet that fails authentication or the replay check is dropped.
            self.srtp_failures += 1
            if now - self._last_srtp_failure > BURST_QUIET_SECONDS:
                self._emit(SrtpFailed(self.spec.call_id, self.spec.leg, None, exc.reason))
            self._last_srtp_failure = now
            return -1

    def close(self) -> None:
        """The leg is closed: detach its forks and let refcounting free the receiver.

        ``on_readable`` and ``_feed`` are bound methods of this receiver: left in place they
        make it a reference cycle, and the media worker's rare collections (``gc.freeze`` and
        ``gc.set_threshold(50_000, 50, 100)`` in ``worker.main``) kept every closed leg in memory.
        """
        for fork in self.forks:
            self.detach(fork)
        self.on_readable = _closed_read
        self._feed = _closed_feed

    # --- timer and stats --------------------------------------------------------------------

    def first_deadline(self) -> float:
        return self._last_at + self.stream_timeout

    def on_timer(self, now: float, unix: float) -> float | None:
        """LegIdle once per silence longer than stream_timeout (also for a leg that never sent)."""
        idle_for = now - self._last_at
        if idle_for >= self.stream_timeout:
            if not self._idle_reported:
                self._idle_reported = True
                self._emit(LegIdle(self.spec.call_id, self.spec.leg, idle_for))
            return now + self.stream_timeout
        self._idle_reported = False
        return self._last_at + self.stream_timeout

    def stats(self) -> LegStats:
        return LegStats(
            packets=self.packets,
            octets=self.octets,
            rejected_source=self.rejected_source,
            malformed=self.malformed,
            srtp_failures=self.srtp_failures,
            rtcp_packets=self.rtcp_packets,
        )


@functools.lru_cache(maxsize=256)
def _header_table(payload_map: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    """The output second byte (marker kept, PT mapped) for every input second byte; -1 = drop.

    Shared by every fork with the same map (a 256-entry table is 2 KiB: per fork, it was a tenth
    of an active recording session's memory).
    """
    table = [-1] * 256
    for source_pt, srs_pt in payload_map:
        table[source_pt] = srs_pt
        table[0x80 | source_pt] = 0x80 | srs_pt
    return tuple(table)


def _keepalive_payload_type(spec: ForkSpec) -> int:
    """RFC 6263 §4.6: a dynamic payload type the SRS was not offered, so it discards the packet."""
    used = {srs_pt for _, srs_pt in spec.payload_map}
    return next(pt for pt in range(127, 95, -1) if pt not in used)


def _fork_rank(fork: ForkPipeline) -> int:
    """A fork's place among its leg's forks (LegReceiver.refresh): plain, rewriting, SRTP."""
    spec = fork.spec
    if not spec.rewrite:
        return 0
    return 2 if spec.srtp is not None and not spec.paused else 1


# The initial sequence numbers, timestamps and report times of forks (RFC 3550 §5.1, §6.2): one
# generator per process drawing from the OS (a ``random.Random()`` per fork seeds itself from the
# OS anyway, at ~10 µs per fork set-up).
_RNG: random.Random = random.SystemRandom()

# Where SRTP forks that are not their leg's last protect a copy of the packet (one per process,
# like the receive buffer: a packet is handled to the end before the next is read).
_SCRATCH = PacketBuffer()


class ForkPipeline:
    """One forked stream toward an SRS m-line: header rewrite, SRTP, counters, RTCP.

    ``handler`` is what the leg calls per packet, with the fixed-header fields it parsed once:
    ``handler(data, second_byte, sequence, timestamp, ssrc, payload_octets, now)``. ``data`` is a
    writable view of the packet in the process's buffer.
    """

    __slots__ = (
        "_emit",
        "_gap_tolerance",
        "_header",
        "_initial_seq",
        "_initial_ts",
        "_keepalive",
        "_keepalive_packet",
        "_keepalive_pt",
        "_last_send_failure",
        "_last_srtcp_failure",
        "_min_advance",
        "_next_keepalive",
        "_next_rtcp",
        "_out_ssrc",
        "_protect",
        "_protect_buffer",
        "_protect_copy",
        "_protect_in_place",
        "_protect_rtcp",
        "_rng",
        "_send_rtcp",
        "_send_rtp",
        "_sent_at",
        "_seq_off",
        "_src_seq",
        "_src_ssrc",
        "_src_ts",
        "_started",
        "_ts_back",
        "_ts_jump",
        "_ts_off",
        "_unprotect_rtcp",
        "closed",
        "dropped_paused",
        "dropped_payload_type",
        "handler",
        "keepalives_sent",
        "last_report",
        "leg_receiver",
        "octets_sent",
        "packets_sent",
        "rebases",
        "rtcp_received",
        "rtcp_sent",
        "send_errors",
        "spec",
        "srtp_failures",
    )

    def __init__(
        self,
        spec: ForkSpec,
        *,
        send_rtp: SendRtp,
        send_rtcp: SendRtcp,
        emit: EventSink,
        now: float,
        rng: random.Random | None = None,
        initial_seq: int | None = None,
        initial_ts: int | None = None,
    ) -> None:
        self._rng = rng if rng is not None else _RNG
        self._send_rtp = send_rtp
        self._send_rtcp = send_rtcp
        self._emit = emit
        self.leg_receiver: LegReceiver | None = None
        # RFC 3550 §5.1: the initial sequence number and timestamp are random.
        self._initial_seq = self._rng.getrandbits(16) if initial_seq is None else initial_seq & 0xFFFF
        self._initial_ts = self._rng.getrandbits(32) if initial_ts is None else initial_ts & 0xFFFFFFFF
        self._src_ssrc = _NEVER
        self._src_seq = 0
        self._src_ts = 0
        self._seq_off = 0
        self._ts_off = 0
        self._sent_at = now
        self._started = False
        self._out_ssrc = spec.ssrc
        self._last_send_failure = -1e9
        self._last_srtcp_failure = -1e9
        self._keepalive_packet = bytearray(RTP_HEADER.size)
        # Where an SRTP fork protects: a copy in the scratch buffer, until its leg makes it the
        # last fork and lets it work in the leg's buffer (LegReceiver.refresh).
        self._protect_buffer = _SCRATCH
        self._protect_copy = True
        self.closed = False
        self.packets_sent = 0
        self.octets_sent = 0
        self.dropped_payload_type = 0
        self.dropped_paused = 0
        self.send_errors = 0
        self.srtp_failures = 0
        self.rtcp_sent = 0
        self.rtcp_received = 0
        self.keepalives_sent = 0
        self.rebases = 0
        self.last_report: ReceptionReport | None = None
        # RFC 3550 §6.2: the first report may go out after half the interval (randomised below).
        self._next_rtcp = now + spec.rtcp_interval * self._rng.uniform(0.25, 0.75)
        self._next_keepalive = now + KEEPALIVE_SECONDS
        self.spec = spec
        self._set_send_keys(spec)
        self._set_receive_keys(spec)
        self._configure(spec)

    def protect_in(self, leg_buffer: PacketBuffer | None) -> None:
        """Where the SRTP handler protects: ``leg_buffer`` in place (this fork is its leg's last,
        nothing reads the bytes after it), or None for a copy in the scratch buffer."""
        self._protect_buffer = _SCRATCH if leg_buffer is None else leg_buffer
        self._protect_copy = leg_buffer is None

    # --- setup: the handler table -----------------------------------------------------------

    def _configure(self, spec: ForkSpec) -> None:
        """Apply the parts of a spec that the per-packet code reads (at setup and on update)."""
        self.spec = spec
        self._header = _header_table(spec.payload_map)
        self._keepalive = spec.keepalive and spec.rewrite
        self._keepalive_pt = _keepalive_payload_type(spec) if self._keepalive else 0
        rate = spec.clock_rate
        self._min_advance = max(1, round(rate * MIN_FRAME_SECONDS))
        self._ts_jump = round(rate * TS_JUMP_SECONDS)
        self._ts_back = 0x100000000 - round(rate * TS_BACK_SECONDS)
        self._gap_tolerance = round(rate * GAP_TOLERANCE_SECONDS)
        self._choose_handler()

    def _set_send_keys(self, spec: ForkSpec) -> None:
        """One libsrtp session per stream (kept across updates that keep the key)."""
        if spec.srtp is None:
            self._protect = None
            self._protect_rtcp = None
            self._protect_in_place: ProtectInPlace = _no_keys
        else:
            sender = SrtpSender(spec.srtp)
            self._protect = sender.protect
            self._protect_rtcp = sender.protect_rtcp
            self._protect_in_place = sender.protect_in_place

    def _set_receive_keys(self, spec: ForkSpec) -> None:
        if spec.remote_srtcp is None:
            self._unprotect_rtcp = None
        else:
            self._unprotect_rtcp = SrtpReceiver(spec.remote_srtcp).unprotect_rtcp

    def _choose_handler(self) -> None:
        spec = self.spec
        handler: Forward
        if spec.paused:
            handler = self._drop_paused
        elif not spec.rewrite:
            handler = self._forward_plain
        elif spec.srtp is None:
            handler = self._forward_rewrite
        else:
            handler = self._forward_srtp
        self.handler = handler
        if self.leg_receiver is not None:
            self.leg_receiver.refresh()

    def update(self, spec: ForkSpec, now: float) -> None:
        """A re-INVITE changed the stream: remote, payload map, keys, paused. SSRC stays."""
        old = self.spec
        if (spec.fork_id, spec.call_id, spec.leg, spec.ssrc, spec.rewrite) != (
            old.fork_id,
            old.call_id,
            old.leg,
            old.ssrc,
            old.rewrite,
        ):
            raise LocalProtocolError(
                f"fork {old.fork_id}: an update may change the remote, payload map, keys and pause "
                "state, not the fork id, call, leg, SSRC or rewrite mode "
                f"(had {old.call_id}/{old.leg}/ssrc {old.ssrc}/rewrite={old.rewrite}, "
                f"got {spec.call_id}/{spec.leg}/ssrc {spec.ssrc}/rewrite={spec.rewrite})"
            )
        if spec.srtp != old.srtp:
            self._set_send_keys(spec)
        if spec.remote_srtcp != old.remote_srtcp:
            self._set_receive_keys(spec)
        was_paused = old.paused
        self._configure(spec)
        if was_paused and not spec.paused:
            self._src_ssrc = _NEVER  # resume: re-base at the next packet
        elif spec.paused and not was_paused:
            self._next_keepalive = now + KEEPALIVE_SECONDS

    def pause(self, now: float) -> None:
        if not self.spec.paused:
            self.update(replace(self.spec, paused=True), now)

    def resume(self, now: float) -> None:
        if self.spec.paused:
            self.update(replace(self.spec, paused=False), now)

    # --- per-packet handlers ----------------------------------------------------------------

    def _forward_plain(
        self, data: memoryview, second: int, seq: int, ts: int, ssrc: int, octets: int, now: float
    ) -> None:
        if self._header[second] < 0:
            self.dropped_payload_type += 1
            return
        send = self._send_rtp  # a slot read, then a call (not an unspecialised method lookup)
        try:
            send(data)
        except OSError as exc:
            self._send_failed(exc, now)
            return
        # What the SR needs: the SSRC, timestamp and time of what went out (RFC 3550 §6.4.1).
        self._out_ssrc = ssrc
        self._src_ts = ts
        self._sent_at = now
        self._started = True
        self.packets_sent += 1
        self.octets_sent += octets

    def _forward_rewrite(
        self, data: memoryview, second: int, seq: int, ts: int, ssrc: int, octets: int, now: float
    ) -> None:
        out = self._header[second]
        if out < 0:
            self.dropped_payload_type += 1
            return
        # The usual packet: same source, 1 to MAX_DROPOUT ahead, a plausible timestamp, no gap.
        if (
            ssrc != self._src_ssrc
            or not 0 < ((seq - self._src_seq) & 0xFFFF) <= MAX_DROPOUT
            or self._ts_jump < ((ts - self._src_ts) & 0xFFFFFFFF) < self._ts_back
            or now - self._sent_at > GAP_SECONDS
        ):
            out = self._resync(out, seq, ts, ssrc, now)
        else:
            self._src_seq = seq
            self._src_ts = ts
            self._sent_at = now
        _pack_rewrite(
            data, 1, out, (seq + self._seq_off) & 0xFFFF, (ts + self._ts_off) & 0xFFFFFFFF, self._out_ssrc
        )
        send = self._send_rtp
        try:
            send(data)
        except OSError as exc:
            self._send_failed(exc, now)
            return
        self.packets_sent += 1
        self.octets_sent += octets

    def _forward_srtp(
        self, data: memoryview, second: int, seq: int, ts: int, ssrc: int, octets: int, now: float
    ) -> None:
        # The continuity check repeats _forward_rewrite's on purpose: this is the per-packet
        # path, and a shared helper would cost a Python call per packet (measured ~0.1 µs).
        out = self._header[second]
        if out < 0:
            self.dropped_payload_type += 1
            return
        # The usual packet: same source, 1 to MAX_DROPOUT ahead, a plausible timestamp, no gap.
        if (
            ssrc != self._src_ssrc
            or not 0 < ((seq - self._src_seq) & 0xFFFF) <= MAX_DROPOUT
            or self._ts_jump < ((ts - self._src_ts) & 0xFFFFFFFF) < self._ts_back
            or now - self._sent_at > GAP_SECONDS
        ):
            out = self._resync(out, seq, ts, ssrc, now)
        else:
            self._src_seq = seq
            self._src_ts = ts
            self._sent_at = now
        _pack_rewrite(
            data, 1, out, (seq + self._seq_off) & 0xFFFF, (ts + self._ts_off) & 0xFFFFFFFF, self._out_ssrc
        )
        # libsrtp encrypts in place: in the leg's buffer when this is its last fork, else in a
        # copy, so the forks after this one still read the clear payload.
        length = len(data)
        target = self._protect_buffer
        if self._protect_copy:
            target.data[:length] = data
        protect = self._protect_in_place
        try:
            length = protect(target.address, length)
        except SrtpError:
            self.srtp_failures += 1
            return
        send = self._send_rtp
        try:
            send(target.views[length])
        except OSError as exc:
            self._send_failed(exc, now)
            return
        self.packets_sent += 1
        self.octets_sent += octets

    def _drop_paused(
        self, data: memoryview, second: int, seq: int, ts: int, ssrc: int, octets: int, now: float
    ) -> None:
        self.dropped_paused += 1

    # --- continuity (slow path) -------------------------------------------------------------

    def _resync(self, out: int, seq: int, ts: int, ssrc: int, now: float) -> int:
        """The unusual packet: decide whether it starts a new timeline, and re-base if so.

        Returns the output second byte: with the marker bit when the offsets changed. A late or
        duplicated packet keeps its place (current offsets) and does not move the stream's
        state back, so a later re-base never reuses a sequence number (which SRTP would refuse,
        RFC 3711 §9.1).
        """
        if ssrc == self._src_ssrc:
            seq_step = (seq - self._src_seq) & 0xFFFF
            if seq_step == 0 or seq_step >= _SEQ_BACK:
                return out  # RFC 3550 §A.1: within MAX_MISORDER behind, a late packet
            ts_step = (ts - self._src_ts) & 0xFFFFFFFF
            jumped = seq_step > MAX_DROPOUT or self._ts_jump < ts_step < self._ts_back
            if not jumped:
                # Only a silence. Keep the offsets if the source's clock moved with ours
                # (silence suppression); re-base if it froze or raced (a hold that kept the SSRC).
                if ts_step >= 0x80000000:
                    ts_step -= 0x100000000
                wall = (now - self._sent_at) * self.spec.clock_rate
                if abs(ts_step - wall) <= self._gap_tolerance:
                    self._src_seq = seq
                    self._src_ts = ts
                    self._sent_at = now
                    return out
        if not self._started:
            out_seq = self._initial_seq
            out_ts = self._initial_ts
            self._started = True
        else:
            # Continue right after the last packet we sent, with the elapsed wall-clock time.
            out_seq = (self._src_seq + self._seq_off + 1) & 0xFFFF
            advance = max(round((now - self._sent_at) * self.spec.clock_rate), self._min_advance)
            out_ts = (self._src_ts + self._ts_off + advance) & 0xFFFFFFFF
        self._seq_off = (out_seq - seq) & 0xFFFF
        self._ts_off = (out_ts - ts) & 0xFFFFFFFF
        self._src_ssrc = ssrc
        self._src_seq = seq
        self._src_ts = ts
        self._sent_at = now
        self.rebases += 1
        return out | 0x80

    def _rtp_timestamp_at(self, now: float) -> int:
        """Our RTP clock at ``now``: the last timestamp sent plus the time since (RFC 3550 §6.4.1)."""
        elapsed = round((now - self._sent_at) * self.spec.clock_rate)
        return (self._src_ts + self._ts_off + elapsed) & 0xFFFFFFFF

    # --- failures ---------------------------------------------------------------------------

    def _send_failed(self, exc: OSError, now: float) -> None:
        """ECONNREFUSED (the SRS answered with ICMP port unreachable), ENOBUFS, EAGAIN."""
        self.send_errors += 1
        if now - self._last_send_failure > BURST_QUIET_SECONDS:
            self._emit(ForkSendFailed(self.spec.fork_id, exc.strerror or type(exc).__name__))
        self._last_send_failure = now

    def socket_error(self, exc: OSError, now: float) -> None:
        """An asynchronous error read from the fork's socket (a queued ICMP error)."""
        self._send_failed(exc, now)

    # --- RTCP -------------------------------------------------------------------------------

    def _report_packets(self, now: float, unix: float) -> list[RtcpPacket]:
        """SR if we sent RTP in the last two intervals, else RR (RFC 3550 §6.4), then SDES CNAME."""
        ssrc = self._out_ssrc
        report: RtcpPacket
        if self._started and now - self._sent_at < 2 * self.spec.rtcp_interval:
            report = SenderReport(
                ssrc=ssrc,
                ntp_timestamp=ntp_from_unix(unix),
                rtp_timestamp=self._rtp_timestamp_at(now),
                # RFC 3550 §6.4.1: every RTP packet sent, keepalives included; payload octets only.
                packet_count=(self.packets_sent + self.keepalives_sent) & 0xFFFFFFFF,
                octet_count=self.octets_sent & 0xFFFFFFFF,
            )
        else:
            report = ReceiverReport(ssrc=ssrc)
        # RFC 3550 §6.1: every compound packet carries SDES with a CNAME.
        cname = SourceDescription(((ssrc, ((SDES_CNAME, self.spec.cname.encode()[:255]),)),))
        return [report, cname]

    def _send_compound(self, packets: list[RtcpPacket], now: float) -> None:
        packet = bytes(CompoundPacket(tuple(packets)))
        if self._protect_rtcp is not None:
            try:
                packet = self._protect_rtcp(packet)
            except SrtpError:
                self.srtp_failures += 1
                return
        try:
            self._send_rtcp(packet)
        except OSError as exc:
            self._send_failed(exc, now)
            return
        self.rtcp_sent += 1

    def on_timer(self, now: float, unix: float) -> float | None:
        """Send the RTCP report and the paused keepalive that are due; return the next deadline."""
        if self.closed:
            return None
        spec = self.spec
        if now >= self._next_rtcp:
            # Nothing to report before the first RTP packet (the brief keeps the SRS quiet until
            # media flows); afterwards every interval, SR or RR.
            if self._started:
                self._send_compound(self._report_packets(now, unix), now)
            # RFC 3550 §6.3.1: randomise over [0.5, 1.5] x the interval so reports from many
            # forks do not synchronise. No timer reconsideration (one sender, one receiver, a
            # fixed interval), hence no division by e - 3/2.
            self._next_rtcp = now + spec.rtcp_interval * self._rng.uniform(0.5, 1.5)
        if spec.paused and self._keepalive and now >= self._next_keepalive:
            self._send_keepalive(now)
            self._next_keepalive = now + KEEPALIVE_SECONDS
        if spec.paused and self._keepalive:
            return min(self._next_rtcp, self._next_keepalive)
        return self._next_rtcp

    def first_deadline(self) -> float:
        return min(self._next_rtcp, self._next_keepalive) if self._keepalive else self._next_rtcp

    def _send_keepalive(self, now: float) -> None:
        """RFC 6263 §4.6: an RTP packet with no payload and a payload type the SRS did not accept.

        It uses the stream's SSRC and the next sequence number, so the SRS's loss count stays
        right; resuming continues after it.
        """
        if not self._started:
            return  # nothing sent yet: no sequence to continue, no binding to keep
        seq = (self._src_seq + self._seq_off + 1) & 0xFFFF
        ts = self._rtp_timestamp_at(now)
        packet = self._keepalive_packet
        RTP_HEADER.pack_into(packet, 0, 0x80, self._keepalive_pt, seq, ts, self._out_ssrc)
        out: bytes = bytes(packet)
        if self._protect is not None:
            try:
                out = self._protect(out)
            except SrtpError:
                self.srtp_failures += 1
                return
        try:
            self._send_rtp(out)
        except OSError as exc:
            self._send_failed(exc, now)
            return
        # Move the bases so "the last packet sent" is the keepalive.
        self._seq_off = (self._seq_off + 1) & 0xFFFF
        self._ts_off = (ts - self._src_ts) & 0xFFFFFFFF
        self._sent_at = now
        self.keepalives_sent += 1

    def receive_rtcp(self, packet: bytes, now: float) -> None:
        """RTCP from the SRS (on the egress RTCP port, or muxed on the RTP port, RFC 5761).

        The report block about our SSRC (RFC 3550 §6.4.1) becomes ``last_report`` and a
        ReceptionReported event. SRTCP is unprotected with the SRS's key when we have it.
        """
        self.rtcp_received += 1
        if self._unprotect_rtcp is not None:
            try:
                packet = self._unprotect_rtcp(packet)
            except SrtpError as exc:
                self.srtp_failures += 1
                if now - self._last_srtcp_failure > BURST_QUIET_SECONDS:
                    spec = self.spec
                    self._emit(SrtpFailed(spec.call_id, spec.leg, spec.fork_id, exc.reason))
                self._last_srtcp_failure = now
                return
        try:
            compound = parse_rtcp(packet)
        except RtpError:
            return  # not ours to fix; counted in rtcp_received
        for item in compound.packets:
            if not isinstance(item, SenderReport | ReceiverReport):
                continue
            for block in item.reports:
                if block.ssrc != self._out_ssrc:
                    continue
                report = ReceptionReport(
                    fraction_lost=block.fraction_lost / 256,
                    cumulative_lost=block.cumulative_lost,
                    highest_sequence=block.highest_sequence,
                    jitter=block.jitter,
                    received_at=now,
                )
                self.last_report = report
                self._emit(ReceptionReported(self.spec.fork_id, report))

    def close(self, now: float, unix: float) -> None:
        """Stop: RTCP BYE (RFC 3550 §6.6) in a compound after a last report, then no more timers.

        RFC 3550 §6.3.7: a participant that never sent RTP or RTCP sends no BYE.
        """
        if self.closed:
            return
        self.closed = True
        if self.leg_receiver is not None:
            self.leg_receiver.detach(self)
        if self._started:
            packets = self._report_packets(now, unix)
            packets.append(Goodbye((self._out_ssrc,)))
            self._send_compound(packets, now)
        # ``handler`` is a bound method of this pipeline: a reference cycle (LegReceiver.close).
        self.handler = _closed_forward

    def stats(self) -> ForkStats:
        return ForkStats(
            packets_sent=self.packets_sent,
            octets_sent=self.octets_sent,
            dropped_payload_type=self.dropped_payload_type,
            dropped_paused=self.dropped_paused,
            send_errors=self.send_errors,
            srtp_failures=self.srtp_failures,
            rtcp_sent=self.rtcp_sent,
            rtcp_received=self.rtcp_received,
            last_report=self.last_report,
            keepalives_sent=self.keepalives_sent,
        )
