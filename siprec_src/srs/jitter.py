"""A sans-I/O jitter buffer for one received RTP stream, and that stream's statistics.

The reference SRS writes each recorded stream to a WAV file whose timeline must stay true:
a lost 20 ms packet becomes 20 ms of silence, a reordered packet lands in its slot, and a
change of source never turns into an hour of silence. :class:`JitterBuffer` does the ordering
and the timing; it never reads a clock (``now`` is passed in, in seconds, any monotonic base)
and never decodes (the caller says which packets are audio).

Rules, in the order a packet meets them:

=================================  ==========================================================
the packet                         what happens
=================================  ==========================================================
a new SSRC                         a source change: everything held of the old source is
                                   released, the sequence space restarts, the timeline goes
                                   on (placed by arrival time, see below); ``ssrc_changes`` + 1
an earlier SSRC, not newer than    a straggler of the previous source: ``late``, dropped
its last packet
sequence far outside the window    RFC 3550 §A.1 probation: held aside; if the very next
(> 3000 ahead, > 100 behind)       packet follows it, the sender restarted its sequence
                                   numbers (``sequence_restarts`` + 1, timeline by arrival);
                                   otherwise it is dropped (``out_of_window``)
already received                   ``duplicates``, dropped
its slot was already played out    ``late``, dropped (its slot was written as silence)
older than the newest one held     ``reordered``, put in its slot
=================================  ==========================================================

Playout: packets are released in extended-sequence order. The packet right after the last one
released goes out at once; a hole is waited for until ``depth`` seconds have passed since the
earliest held packet arrived or ``max_packets`` are held behind it, then the missing packets are
declared ``lost`` and a :class:`Gap` says how much silence replaces them. A stream's first packet
(and the first after :meth:`JitterBuffer.flush`) waits the same way, so a stream that starts
out of order still starts at its lowest sequence number.

Timeline: every released :class:`Frame` carries a ``position``, in timestamp units from the first
frame (8 kHz G.711: the WAV sample index). Within one source the position advances by the RTP
timestamp difference (RFC 3550 §5.1: timestamps advance with the sampling clock, so DTX, holds
and losses keep their real length). Where timestamps cannot be trusted (a new SSRC, a sequence
restart, a timestamp that goes backwards or runs more than ``resync_after`` seconds ahead of the
arrival times) the frame is placed by arrival time instead, rounded to whole frames, and never
before the end of the previous frame. Only audio moves the timeline: non-audio packets (RFC 4733
telephone-events repeat one timestamp for a whole event) are ordered but do not move it.

Interarrival jitter is RFC 3550 §6.4.1 / §A.8: ``J += (|D| - J) / 16`` over consecutive audio
packets of the current source, in timestamp units, restarted (not reset) at a source change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from siprec_src.errors import LocalProtocolError
from siprec_src.media.rtp import RtpPacket, seq_add, seq_delta, ts_delta

# RFC 3550 §A.1: how far a sequence number may jump before it is taken for a restart.
MAX_DROPOUT: Final = 3000
MAX_MISORDER: Final = 100
# Received sequence numbers remembered to tell a duplicate from a late packet; beyond the
# misorder window a packet is out of window anyway.
DUPLICATE_WINDOW: Final = 4 * MAX_MISORDER
# Sources remembered (to tell a straggler of an earlier SSRC, and to list them in the stats):
# a sender that changes SSRC on every packet must not make the SRS's state grow without end.
MAX_SOURCES: Final = 32
# Extended sequence numbers start here so a reordered first packet stays positive.
_SEQUENCE_BASE: Final = 0x10000


@dataclass(frozen=True, slots=True)
class StreamStats:
    """What one recorded stream received. Counts are packets unless the name says otherwise.

    ``packets``/``bytes``: RTP packets (and their payload bytes) that reached the jitter buffer,
    duplicates and late ones included. ``lost``: slots written as silence because their packet
    never came in time (a late arrival is counted in ``late``, not taken off ``lost``).
    ``jitter_ms``: RFC 3550 interarrival jitter. ``ssrcs`` in order of appearance (the first
    ``MAX_SOURCES``; ``ssrc_changes`` counts them all),
    ``payload_types`` sorted. ``first_arrival``/``last_arrival``: in the clock of ``now``.

    The fields after ``rtcp_packets`` are filled by the stream sink: packets that never reached
    the buffer (malformed, failed SRTP authentication, received while paused) and what became of
    the payloads (``samples_written`` is the length of the recording, 8000 per second).
    """

    packets: int = 0
    bytes: int = 0
    lost: int = 0
    duplicates: int = 0
    late: int = 0
    reordered: int = 0
    jitter_ms: float = 0.0
    ssrc_changes: int = 0
    ssrcs: tuple[int, ...] = ()
    payload_types: tuple[int, ...] = ()
    first_arrival: float | None = None
    last_arrival: float | None = None
    srtp_failures: int = 0
    rtcp_packets: int = 0
    sequence_restarts: int = 0
    out_of_window: int = 0
    timestamp_jumps: int = 0
    malformed: int = 0
    rtcp_malformed: int = 0
    sender_reports: int = 0
    unknown_payload: int = 0
    undecodable: int = 0
    telephone_events: int = 0
    paused_packets: int = 0
    samples_written: int = 0


@dataclass(frozen=True, slots=True)
class Frame:
    """One received packet, released in playout order.

    ``position``: where it belongs on the output timeline, in timestamp units from the first
    frame. ``duration``: the stream's current frame length in timestamp units (from the
    timestamp step between consecutive packets), for a caller that cannot decode the payload
    and writes silence instead. ``audio`` is what the caller said when it pushed the packet.
    """

    position: int
    duration: int
    timestamp: int
    sequence: int
    ssrc: int
    payload_type: int
    payload: bytes
    marker: bool
    audio: bool


@dataclass(frozen=True, slots=True)
class Gap:
    """``packets`` lost packets: ``duration`` timestamp units of silence from ``position``."""

    position: int
    duration: int
    packets: int


Playout = Frame | Gap


@dataclass(slots=True)
class _Held:
    ext: int  # extended sequence number in the current sequence space
    packet: RtpPacket
    arrival: float
    audio: bool
    epoch: int  # which sequence space: bumped at every source change or sequence restart


@dataclass(frozen=True, slots=True)
class _Placed:
    """The last audio frame released: what the next one is placed against."""

    position: int
    timestamp: int
    arrival: float
    ext: int
    epoch: int


class JitterBuffer:
    """Orders one stream's RTP packets and places them on a gap-free timeline (see module doc).

    Drive it with :meth:`push` for every RTP packet, :meth:`poll` when :meth:`deadline` passes,
    and :meth:`flush` at the end (or before a pause); each returns what is ready to play out.
    """

    def __init__(
        self,
        *,
        clock_rate: int = 8000,
        depth: float = 0.060,
        max_packets: int = 3,
        frame_ms: int = 20,
        resync_after: float = 5.0,
    ) -> None:
        if clock_rate <= 0 or depth < 0 or max_packets < 1 or frame_ms <= 0 or resync_after <= 0:
            raise LocalProtocolError(
                "jitter buffer: clock_rate, frame_ms and resync_after must be positive, depth >= 0 "
                f"and max_packets >= 1 (got {clock_rate}, {frame_ms}, {resync_after}, {depth}, "
                f"{max_packets})"
            )
        self.clock_rate = clock_rate
        self.depth = depth
        self.max_packets = max_packets
        self._resync_units = resync_after * clock_rate
        self._step = max(1, clock_rate * frame_ms // 1000)  # until the stream shows its own
        # The current source and its sequence space.
        self._ssrc: int | None = None
        self._epoch = 0
        self._highest: int | None = None  # highest extended sequence number accepted
        self._last_ext: int | None = None  # last one released
        self._in_sequence = False  # the next release is expected at _last_ext + 1
        self._held: dict[int, _Held] = {}
        self._received: set[int] = set()
        self._left: dict[int, int] = {}  # earlier SSRC -> its highest sequence number
        self._candidate: tuple[RtpPacket, float, bool] | None = None  # §A.1 probation
        self._prev: _Placed | None = None
        self._jitter_ref: tuple[float, int] | None = None  # (arrival, timestamp) of the last one
        self._jitter = 0.0
        # Counters.
        self._packets = 0
        self._bytes = 0
        self._lost = 0
        self._duplicates = 0
        self._late = 0
        self._reordered = 0
        self._ssrc_changes = 0
        self._sequence_restarts = 0
        self._out_of_window = 0
        self._timestamp_jumps = 0
        self._ssrcs: list[int] = []
        self._payload_types: set[int] = set()
        self._first_arrival: float | None = None
        self._last_arrival: float | None = None

    # --- input -------------------------------------------------------------------------------

    def push(self, packet: RtpPacket, now: float, *, audio: bool = True) -> list[Playout]:
        """Take one RTP packet that arrived at ``now``; returns what became ready to play out."""
        self._packets += 1
        self._bytes += len(packet.payload)
        if self._first_arrival is None:
            self._first_arrival = now
        self._last_arrival = now
        self._payload_types.add(packet.payload_type)
        if len(self._ssrcs) < MAX_SOURCES and packet.ssrc not in self._ssrcs:
            self._ssrcs.append(packet.ssrc)
        out: list[Playout] = []
        if packet.ssrc != self._ssrc:
            earlier = self._left.get(packet.ssrc)
            if earlier is not None and seq_delta(packet.sequence, earlier) <= 0:
                self._late += 1  # a straggler of a source we already left
                return self.poll(now)
            out += self._change_source(packet.ssrc)
        if self._extend(packet.sequence) is None:
            out += self._probation(packet, now, audio)
        else:
            if self._candidate is not None:  # §A.1: the jump was not followed, so it was noise
                self._candidate = None
                self._out_of_window += 1
            self._accept(packet, now, audio)
        out += self.poll(now)
        return out

    def poll(self, now: float) -> list[Playout]:
        """Release every packet that is next in sequence or has waited long enough for a hole."""
        out: list[Playout] = []
        while self._held:
            head = min(self._held)
            if not (self._in_sequence and self._last_ext is not None and head == self._last_ext + 1):
                oldest = min(held.arrival for held in self._held.values())
                if len(self._held) < self.max_packets and now < oldest + self.depth:
                    break  # (the same sum as deadline(), so polling at the deadline releases)
            out += self._release(self._held.pop(head))
        return out

    def deadline(self) -> float | None:
        """When :meth:`poll` will release something without a new packet (None: not before one)."""
        if not self._held:
            return None
        return min(held.arrival for held in self._held.values()) + self.depth

    def flush(self) -> list[Playout]:
        """Release everything held (end of stream, or a pause); the next packet starts afresh.

        Holes between the released packets are losses; the packets between the last one released
        and the next one pushed are not (a paused stream's packets are not lost, just not kept).
        """
        out: list[Playout] = []
        while self._held:
            out += self._release(self._held.pop(min(self._held)))
        if self._candidate is not None:
            self._candidate = None
            self._out_of_window += 1
        self._in_sequence = False
        return out

    # --- state ---------------------------------------------------------------------------------

    @property
    def jitter(self) -> float:
        """RFC 3550 §6.4.1 interarrival jitter, in timestamp units."""
        return self._jitter

    @property
    def jitter_ms(self) -> float:
        return self._jitter * 1000.0 / self.clock_rate

    def stats(self) -> StreamStats:
        """The buffer's counters; the sink-level fields are left at zero."""
        return StreamStats(
            packets=self._packets,
            bytes=self._bytes,
            lost=self._lost,
            duplicates=self._duplicates,
            late=self._late,
            reordered=self._reordered,
            jitter_ms=self.jitter_ms,
            ssrc_changes=self._ssrc_changes,
            ssrcs=tuple(self._ssrcs),
            payload_types=tuple(sorted(self._payload_types)),
            first_arrival=self._first_arrival,
            last_arrival=self._last_arrival,
            sequence_restarts=self._sequence_restarts,
            out_of_window=self._out_of_window,
            timestamp_jumps=self._timestamp_jumps,
        )

    # --- internals ----------------------------------------------------------------------------

    def _extend(self, sequence: int) -> int | None:
        """The extended sequence number (RFC 3550 §A.1), or None if far outside the window."""
        if self._highest is None:
            return _SEQUENCE_BASE + sequence
        delta = seq_delta(sequence, self._highest & 0xFFFF)
        if delta > MAX_DROPOUT or delta < -MAX_MISORDER:
            return None
        return self._highest + delta

    def _change_source(self, ssrc: int) -> list[Playout]:
        out = self.flush()
        if self._ssrc is not None:
            assert self._highest is not None
            self._left[self._ssrc] = self._highest & 0xFFFF
            self._ssrc_changes += 1
        self._left.pop(ssrc, None)
        while len(self._left) > MAX_SOURCES:
            del self._left[next(iter(self._left))]  # forget the source left longest ago
        self._ssrc = ssrc
        self._new_sequence_space()
        return out

    def _new_sequence_space(self) -> None:
        self._epoch += 1
        self._highest = None
        self._last_ext = None
        self._in_sequence = False
        self._received.clear()
        self._jitter_ref = None  # the timestamp base changed: D across it means nothing

    def _probation(self, packet: RtpPacket, now: float, audio: bool) -> list[Playout]:
        candidate = self._candidate
        if candidate is None or packet.sequence != seq_add(candidate[0].sequence, 1):
            if candidate is not None:
                self._out_of_window += 1
            self._candidate = (packet, now, audio)
            return []
        # RFC 3550 §A.1: two packets in sequence far from the old ones: the sender restarted.
        self._candidate = None
        out = self.flush()
        self._sequence_restarts += 1
        self._new_sequence_space()
        self._accept(*candidate)
        self._accept(packet, now, audio)
        return out

    def _accept(self, packet: RtpPacket, now: float, audio: bool) -> None:
        ext = self._extend(packet.sequence)
        assert ext is not None
        if ext in self._received:
            self._duplicates += 1
            return
        if audio:
            self._update_jitter(packet.timestamp, now)
        if self._last_ext is not None and ext <= self._last_ext:
            self._late += 1  # its slot is already written (as silence)
            return
        if self._highest is not None and ext < self._highest:
            self._reordered += 1
        self._received.add(ext)
        if self._highest is None or ext > self._highest:
            self._highest = ext
            if len(self._received) > 2 * DUPLICATE_WINDOW:
                floor = ext - DUPLICATE_WINDOW
                self._received = {seen for seen in self._received if seen > floor}
        self._held[ext] = _Held(ext, packet, now, audio, self._epoch)

    def _update_jitter(self, timestamp: int, now: float) -> None:
        # RFC 3550 §A.8: D(i-1, i) = (R_i - R_{i-1}) - (S_i - S_{i-1}), in timestamp units.
        if self._jitter_ref is not None:
            arrival, previous = self._jitter_ref
            d = (now - arrival) * self.clock_rate - ts_delta(timestamp, previous)
            self._jitter += (abs(d) - self._jitter) / 16.0
        self._jitter_ref = (now, timestamp)

    def _release(self, held: _Held) -> list[Playout]:
        out: list[Playout] = []
        position, from_timestamps = self._place(held)
        prev = self._prev
        if self._in_sequence and self._last_ext is not None and held.ext > self._last_ext + 1:
            missing = held.ext - self._last_ext - 1
            self._lost += missing
            start = position if prev is None else min(position, prev.position + self._step)
            out.append(Gap(start, position - start, missing))
        if held.audio:
            if (
                from_timestamps
                and prev is not None
                and held.ext == prev.ext + 1
                and 0 < position - prev.position <= self._resync_units
            ):
                self._step = position - prev.position
            self._prev = _Placed(position, held.packet.timestamp, held.arrival, held.ext, held.epoch)
        self._last_ext = held.ext
        self._in_sequence = True
        packet = held.packet
        out.append(
            Frame(
                position=position,
                duration=self._step,
                timestamp=packet.timestamp,
                sequence=packet.sequence,
                ssrc=packet.ssrc,
                payload_type=packet.payload_type,
                payload=packet.payload,
                marker=packet.marker,
                audio=held.audio,
            )
        )
        return out

    def _place(self, held: _Held) -> tuple[int, bool]:
        """(position, whether it came from the RTP timestamps rather than the arrival time)."""
        prev = self._prev
        if prev is None:
            return 0, True
        if prev.epoch == held.epoch:
            delta = ts_delta(held.packet.timestamp, prev.timestamp)
            lead = delta - (held.arrival - prev.arrival) * self.clock_rate
            if delta >= 0 and lead <= self._resync_units:
                return prev.position + delta, True
            if not held.audio:
                return prev.position, False  # a non-audio packet never moves the timeline
            self._timestamp_jumps += 1
        # Timestamps of different sources (or a jump) say nothing: place by arrival time, in
        # whole frames, and at least one frame after the previous one so nothing is overwritten.
        elapsed = max(0.0, (held.arrival - prev.arrival) * self.clock_rate)
        frames = max(1, round(elapsed / self._step))
        return prev.position + frames * self._step, False
