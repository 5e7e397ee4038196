"""The SRS jitter buffer, driven with a virtual clock (no sockets, no sleeping).

Covered: the start-up wait, in-order release, reordering, duplicates, loss turned into a gap of
the timestamp delta, late packets, 16-bit sequence and 32-bit timestamp wrap, an SSRC change
(timeline kept by arrival time, stragglers of the old source), an RFC 3550 §A.1 sequence
restart and a lone out-of-window packet, a timestamp jump, non-audio packets that do not move
the timeline, flush before a pause, and the RFC 3550 §A.8 jitter against a hand computation.

Not covered: decoding and files (tests/srs/test_media.py).
"""

from __future__ import annotations

import pytest

from siprec_src.errors import LocalProtocolError
from siprec_src.media.rtp import RtpPacket
from siprec_src.srs.jitter import Frame, Gap, JitterBuffer, Playout

SSRC = 0x1234ABCD
FRAME = 160  # 20 ms at 8 kHz


def rtp(sequence: int, timestamp: int, *, ssrc: int = SSRC, pt: int = 0, size: int = FRAME) -> RtpPacket:
    payload = bytes([sequence & 0xFF]) * size
    return RtpPacket(pt, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc, payload)


def frames(items: list[Playout]) -> list[Frame]:
    return [item for item in items if isinstance(item, Frame)]


def placed(items: list[Playout]) -> list[tuple[int, int]]:
    """(sequence, position) of each frame released."""
    return [(frame.sequence, frame.position) for frame in frames(items)]


def feed(buffer: JitterBuffer, packets: list[tuple[RtpPacket, float]]) -> list[Playout]:
    out: list[Playout] = []
    for packet, now in packets:
        out += buffer.push(packet, now)
    return out


def test_the_first_packet_waits_for_depth_then_packets_in_sequence_go_out_at_once() -> None:
    buffer = JitterBuffer(depth=0.060, max_packets=3)
    assert buffer.push(rtp(10, 1000), 5.000) == []
    assert buffer.deadline() == pytest.approx(5.060)
    assert buffer.poll(5.059) == []
    assert placed(buffer.poll(5.060)) == [(10, 0)]
    assert buffer.deadline() is None
    assert placed(buffer.push(rtp(11, 1160), 5.080)) == [(11, 160)]
    assert placed(buffer.push(rtp(12, 1320), 5.100)) == [(12, 320)]
    stats = buffer.stats()
    assert (stats.packets, stats.bytes, stats.lost, stats.reordered) == (3, 3 * FRAME, 0, 0)
    assert (stats.first_arrival, stats.last_arrival) == (5.000, 5.100)
    assert stats.ssrcs == (SSRC,) and stats.payload_types == (0,)


def test_a_stream_that_starts_out_of_order_starts_at_its_lowest_sequence_number() -> None:
    buffer = JitterBuffer()
    out = feed(buffer, [(rtp(101, 160), 0.0), (rtp(100, 0), 0.001), (rtp(102, 320), 0.02)])
    assert placed(out) == [(100, 0), (101, 160), (102, 320)]
    assert buffer.stats().lost == 0


def test_reordered_packets_are_put_in_their_slots() -> None:
    buffer = JitterBuffer()
    order = [1, 2, 3, 5, 4, 6, 8, 7, 9, 10]
    out = feed(buffer, [(rtp(seq, seq * FRAME), i * 0.02) for i, seq in enumerate(order)])
    out += buffer.flush()
    assert placed(out) == [(seq, (seq - 1) * FRAME) for seq in range(1, 11)]
    stats = buffer.stats()
    assert (stats.reordered, stats.lost, stats.late, stats.duplicates) == (2, 0, 0, 0)
    assert not any(isinstance(item, Gap) for item in out)


def test_duplicates_are_counted_and_played_once() -> None:
    buffer = JitterBuffer()
    out = feed(buffer, [(rtp(seq, seq * FRAME), i * 0.02) for i, seq in enumerate([1, 2, 3, 3, 4, 2, 5])])
    out += buffer.flush()
    assert [frame.sequence for frame in frames(out)] == [1, 2, 3, 4, 5]
    assert buffer.stats().duplicates == 2


def test_lost_packets_become_a_gap_as_long_as_their_timestamps() -> None:
    # 30 ms packets (240 timestamp units): the gap must follow the timestamps, not assume 160.
    buffer = JitterBuffer(max_packets=3)
    step = 240
    arrivals = [(rtp(seq, seq * step, size=step), seq * 0.03) for seq in (0, 1, 2, 5, 6, 7)]
    out = feed(buffer, arrivals) + buffer.flush()
    gaps = [item for item in out if isinstance(item, Gap)]
    assert gaps == [Gap(position=3 * step, duration=2 * step, packets=2)]
    assert placed(out) == [(0, 0), (1, 240), (2, 480), (5, 1200), (6, 1440), (7, 1680)]
    assert out.index(gaps[0]) == 3  # between frame 2 and frame 5
    assert buffer.stats().lost == 2
    assert frames(out)[-1].duration == step


def test_a_hole_is_waited_for_depth_seconds_before_it_is_declared_lost() -> None:
    buffer = JitterBuffer(depth=0.060, max_packets=10)
    feed(buffer, [(rtp(0, 0), 0.0), (rtp(1, 160), 0.02)])
    assert placed(buffer.poll(0.06)) == [(0, 0), (1, 160)]
    assert buffer.push(rtp(3, 480), 0.06) == []
    assert buffer.deadline() == pytest.approx(0.12)
    assert buffer.poll(0.119) == []
    out = buffer.poll(0.12)
    assert out[0] == Gap(position=320, duration=160, packets=1)
    assert placed(out) == [(3, 480)]


def test_a_packet_after_its_slot_was_played_out_is_late_and_dropped() -> None:
    buffer = JitterBuffer(max_packets=3)
    out = feed(buffer, [(rtp(seq, seq * FRAME), seq * 0.02) for seq in (1, 2, 4, 5, 6)])
    assert buffer.stats().lost == 1  # three packets held behind the hole: 3 is given up
    assert buffer.push(rtp(3, 3 * FRAME), 0.2) == []
    out += buffer.flush()
    assert [frame.sequence for frame in frames(out)] == [1, 2, 4, 5, 6]
    stats = buffer.stats()
    assert (stats.late, stats.lost, stats.duplicates) == (1, 1, 0)


def test_sequence_and_timestamp_wrap_around() -> None:
    buffer = JitterBuffer()
    sequences = [65533, 65534, 0, 65535, 1, 2]  # wraps, with one reordered across the wrap
    base = 0xFFFFFFFF - 300  # the timestamp wraps too
    packets = [
        (rtp(seq, base + ((seq - 65533) % 65536) * FRAME), i * 0.02) for i, seq in enumerate(sequences)
    ]
    out = feed(buffer, packets) + buffer.flush()
    assert placed(out) == [(65533, 0), (65534, 160), (65535, 320), (0, 480), (1, 640), (2, 800)]
    stats = buffer.stats()
    assert (stats.lost, stats.reordered, stats.late, stats.sequence_restarts) == (0, 1, 0, 0)


def test_an_ssrc_change_keeps_the_timeline_and_drops_stragglers_of_the_old_source() -> None:
    buffer = JitterBuffer()
    old = [(rtp(1000 + i, 3_000_000_000 + i * FRAME), i * 0.02) for i in range(5)]
    # The new source's sequence numbers and timestamps have nothing to do with the old ones.
    new = [(rtp(7 + i, 12345 + i * FRAME, ssrc=0xBEEF), (5 + i) * 0.02) for i in range(5)]
    out = feed(buffer, old + new)
    out += buffer.push(rtp(1003, 3_000_000_000 + 3 * FRAME), 0.2)  # an old straggler
    out += buffer.flush()
    assert [frame.position for frame in frames(out)] == [i * FRAME for i in range(10)]
    assert [frame.ssrc for frame in frames(out)] == [SSRC] * 5 + [0xBEEF] * 5
    stats = buffer.stats()
    assert (stats.ssrc_changes, stats.ssrcs, stats.late, stats.lost) == (1, (SSRC, 0xBEEF), 1, 0)
    assert stats.timestamp_jumps == 0


def test_a_new_source_after_a_silence_is_placed_by_its_arrival_time() -> None:
    buffer = JitterBuffer()
    out = feed(buffer, [(rtp(i, i * FRAME), i * 0.02) for i in range(3)])
    # One second after the last old packet (+ 3 ms of network jitter, rounded away).
    out += feed(buffer, [(rtp(500 + i, 99 + i * FRAME, ssrc=7), 1.043 + i * 0.02) for i in range(3)])
    out += buffer.flush()
    assert [frame.position for frame in frames(out)] == [0, 160, 320, 8320, 8480, 8640]


def test_an_earlier_source_that_resumes_is_a_new_change_not_a_straggler() -> None:
    buffer = JitterBuffer()
    out = feed(buffer, [(rtp(i, i * FRAME), i * 0.02) for i in range(3)])
    out += feed(buffer, [(rtp(50 + i, 7 + i * FRAME, ssrc=9), (3 + i) * 0.02) for i in range(3)])
    out += feed(buffer, [(rtp(3 + i, 480 + i * FRAME), (6 + i) * 0.02) for i in range(3)])
    out += buffer.flush()
    assert [frame.position for frame in frames(out)] == [i * FRAME for i in range(9)]
    assert buffer.stats().ssrc_changes == 2


def test_a_sequence_restart_is_confirmed_by_two_packets_in_a_row() -> None:
    # RFC 3550 §A.1: one packet far out of the window is dropped; two in sequence restart it.
    buffer = JitterBuffer()
    out = feed(buffer, [(rtp(i, i * FRAME), i * 0.02) for i in range(4)])
    out += buffer.push(rtp(30000, 4 * FRAME), 0.08)  # a stray
    out += feed(buffer, [(rtp(4 + i, (4 + i) * FRAME), (4 + i) * 0.02) for i in range(2)])
    assert buffer.stats().out_of_window == 1
    restart = [(rtp(40000 + i, 777 + i * FRAME), (6 + i) * 0.02) for i in range(4)]
    out += feed(buffer, restart) + buffer.flush()
    assert [frame.position for frame in frames(out)] == [i * FRAME for i in range(10)]
    assert [frame.sequence for frame in frames(out)][-4:] == [40000, 40001, 40002, 40003]
    stats = buffer.stats()
    assert (stats.sequence_restarts, stats.out_of_window, stats.lost) == (1, 1, 0)


def test_a_timestamp_that_leaps_ahead_of_the_arrival_times_is_resynchronised() -> None:
    buffer = JitterBuffer(resync_after=5.0)
    packets = [(rtp(i, i * FRAME), i * 0.02) for i in range(3)]
    packets += [(rtp(3 + i, 0x7000_0000 + i * FRAME), (3 + i) * 0.02) for i in range(3)]
    out = feed(buffer, packets) + buffer.flush()
    assert [frame.position for frame in frames(out)] == [i * FRAME for i in range(6)]
    assert buffer.stats().timestamp_jumps == 1


def test_a_timestamp_gap_that_the_arrival_times_confirm_is_kept_as_silence() -> None:
    # Silence suppression: two seconds without packets, timestamps moved on by two seconds.
    buffer = JitterBuffer()
    packets = [(rtp(i, i * FRAME), i * 0.02) for i in range(3)] + [(rtp(3, 2 * 8000 + 320), 2.04)]
    out = feed(buffer, packets) + buffer.flush()
    assert [frame.position for frame in frames(out)] == [0, 160, 320, 16320]
    assert (buffer.stats().timestamp_jumps, buffer.stats().lost) == (0, 0)


def test_non_audio_packets_are_ordered_but_do_not_move_the_timeline() -> None:
    # RFC 4733: a telephone-event repeats the timestamp of the event's start in every packet.
    buffer = JitterBuffer()
    out = feed(buffer, [(rtp(i, i * FRAME), i * 0.02) for i in range(3)])
    for i in range(3, 6):
        out += buffer.push(rtp(i, 3 * FRAME, pt=101, size=4), i * 0.02, audio=False)
    out += feed(buffer, [(rtp(i, i * FRAME), i * 0.02) for i in range(6, 9)]) + buffer.flush()
    audio = [frame.position for frame in frames(out) if frame.audio]
    assert audio == [0, 160, 320, 960, 1120, 1280]
    assert [frame.sequence for frame in frames(out) if not frame.audio] == [3, 4, 5]
    assert buffer.stats().lost == 0
    assert buffer.jitter == pytest.approx(0.0, abs=1e-9)  # the events' timestamps were left out


def test_packets_not_pushed_between_a_flush_and_the_next_packet_are_not_lost() -> None:
    buffer = JitterBuffer()
    out = feed(buffer, [(rtp(i, i * FRAME), i * 0.02) for i in range(3)])
    out += buffer.flush()  # pause: packets 3-9 are received but not pushed
    out += feed(buffer, [(rtp(i, i * FRAME), i * 0.02) for i in range(10, 13)]) + buffer.flush()
    assert [frame.position for frame in frames(out)] == [0, 160, 320, 1600, 1760, 1920]
    assert buffer.stats().lost == 0
    assert buffer.push(rtp(5, 5 * FRAME), 0.3) == [] and buffer.stats().late == 1


def test_interarrival_jitter_matches_rfc_3550_a8_by_hand() -> None:
    # Transit times (arrival * 8000 - timestamp): 0, 0, 40, 0, so D = 0, 40, -40 and
    # J = 0 -> 0 + (0 - 0)/16 = 0 -> 0 + (40 - 0)/16 = 2.5 -> 2.5 + (40 - 2.5)/16 = 4.84375.
    buffer = JitterBuffer()
    feed(buffer, [(rtp(1, 0), 0.0), (rtp(2, 160), 0.020), (rtp(3, 320), 0.045), (rtp(4, 480), 0.060)])
    assert buffer.jitter == pytest.approx(4.84375)
    assert buffer.jitter_ms == pytest.approx(4.84375 / 8)
    assert buffer.stats().jitter_ms == pytest.approx(0.60546875)


@pytest.mark.parametrize(
    "kwargs",
    [{"clock_rate": 0}, {"depth": -0.1}, {"max_packets": 0}, {"frame_ms": 0}, {"resync_after": 0.0}],
)
def test_impossible_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(LocalProtocolError):
        JitterBuffer(**kwargs)  # type: ignore[arg-type]
