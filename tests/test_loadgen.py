"""The benchmark's measuring instruments (benchmarks/loadgen) on real sockets on 127.0.0.1.

Covers: the C programs compile warning-free; rtpgen -> rtpsink and rtpgen (2 threads) -> relay
-> rtpsink at a modest load (20 streams x 50 packets/s for 1 s) deliver every packet to the port and SSRC
they belong to, with no gap, duplicate or reorder, across a sequence-number wrap, with a
positive latency per packet; the sink's loss/duplicate/reorder bookkeeping on a hand-made
sequence; SRTP mode counts without reading the encrypted stamp; rtpgen sends stream i to the
i-th port of a port list (for subjects that pick their own ports); free_port_range finds a
range with enough unbound ports.
Does not cover throughput: nothing here is a timing assertion (see benchmarks/loadgen/measure.py).
"""

from __future__ import annotations

import socket
import struct
import time

from benchmarks.loadgen import (
    GenResult,
    SinkResult,
    build,
    build_all,
    free_port_base,
    free_port_range,
    run_gen,
    start_relay,
    start_sink,
)
from benchmarks.loadgen.runner import bound_udp_ports

STREAMS = 20
PPS = 50.0
DURATION = 1.0
EXPECTED = 1000  # STREAMS * PPS * DURATION
GEN_SSRC = 0x10000000
RELAY_SSRC = 0x20000000  # the relay's default --ssrc-base with --rewrite


def assert_every_packet_counted(gen: GenResult, got: SinkResult) -> None:
    assert gen.planned == gen.sent == EXPECTED and gen.send_errors == 0 and not gen.stopped
    assert gen.sent_per_stream == (EXPECTED // STREAMS,) * STREAMS
    assert got.packets == EXPECTED and got.bytes == EXPECTED * 172
    assert got.streams_seen == STREAMS and len(got.streams) == STREAMS
    assert (got.lost, got.duplicates, got.reorders, got.late) == (0, 0, 0, 0)
    assert (got.not_rtp, got.truncated, got.overflow, got.socket_drops) == (0, 0, 0, 0)
    for stream in got.streams.values():
        assert stream.packets == stream.expected == EXPECTED // STREAMS
        assert stream.lost == stream.duplicates == stream.reorders == 0
    latency = got.latency_us
    assert latency is not None and got.latency_invalid == 0 and got.no_kernel_ts == 0
    assert latency.count == EXPECTED
    assert 0 < latency.min <= latency.p50 <= latency.p99 <= latency.p999 <= latency.max


def test_programs_build_and_are_reused() -> None:
    paths = build_all()
    assert all(path.is_file() for path in paths.values())
    before = paths["rtpsink"].stat().st_mtime_ns
    assert build("rtpsink") == paths["rtpsink"]
    assert paths["rtpsink"].stat().st_mtime_ns == before  # fresh binary: not rebuilt


def test_gen_to_sink_counts_every_packet_across_a_sequence_wrap() -> None:
    base = free_port_base(STREAMS)
    with start_sink(base_port=base, count=STREAMS, expect=EXPECTED, idle_timeout=2.0) as sink:
        gen = run_gen(base_port=base, streams=STREAMS, pps=PPS, duration=DURATION, seq_start=65530)
        got = sink.result(timeout=10.0)
    assert got.stop_reason == "expect"
    assert_every_packet_counted(gen, got)
    for i in range(STREAMS):
        stream = got.streams[GEN_SSRC + i]
        assert stream.port == base + 2 * i and stream.first_seq == 65530  # wrapped after 6 packets


def test_gen_relay_sink_forwards_every_packet_to_its_port() -> None:
    sink_base = free_port_base(STREAMS)
    with start_sink(base_port=sink_base, count=STREAMS, expect=EXPECTED, idle_timeout=2.0) as sink:
        relay_base = free_port_base(STREAMS)
        with start_relay(in_base=relay_base, dest_base=sink_base, count=STREAMS, rewrite=True) as relay:
            gen = run_gen(base_port=relay_base, streams=STREAMS, pps=PPS, duration=DURATION, threads=2)
            got = sink.result(timeout=10.0)
            counters = relay.stop()
    assert gen.threads == 2 and len(set(gen.src_ports)) == 2  # two sockets share the streams
    assert counters.received == counters.forwarded == EXPECTED
    assert counters.send_errors == counters.socket_drops == 0 and counters.active_ports == STREAMS
    assert_every_packet_counted(gen, got)
    for i in range(STREAMS):  # input i went to sink port i, with the SSRC the relay gave it
        assert got.streams[RELAY_SSRC + i].port == sink_base + 2 * i


def rtp(seq: int, ssrc: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + payload


def test_sink_counts_loss_duplicates_and_reorders() -> None:
    base = free_port_base(1)
    sequence = [65534, 65535, 0, 0, 2, 1, 4, 5]  # wrap, a duplicate, 1 late, 3 never sent
    stamp = struct.pack("!Q", time.time_ns()) + bytes(152)
    with start_sink(base_port=base, count=1, expect=len(sequence), idle_timeout=2.0) as sink:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for seq in sequence:
                sender.sendto(rtp(seq, 42, stamp), ("127.0.0.1", base))
        got = sink.result(timeout=10.0)
    stream = got.streams[42]
    assert (stream.packets, stream.expected, stream.lost) == (8, 8, 1)  # 65534..5 is 8 numbers
    assert (stream.duplicates, stream.reorders) == (1, 1)
    assert got.latency_us is not None and got.latency_us.count == 8


def test_sink_leaves_the_start_out_of_latency_but_counts_it() -> None:
    base = free_port_base(1)
    stamp = struct.pack("!Q", time.time_ns()) + bytes(152)
    with start_sink(base_port=base, count=1, expect=6, latency_after=0.3, idle_timeout=2.0) as sink:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for seq in range(6):
                if seq == 3:
                    time.sleep(0.5)  # the first three arrive within 0.3 s of the first one
                sender.sendto(rtp(seq, 7, stamp), ("127.0.0.1", base))
        got = sink.result(timeout=10.0)
    assert (got.packets, got.lost, got.latency_skipped) == (6, 0, 3)
    assert got.latency_us is not None and got.latency_us.count == 3


def test_sink_in_srtp_mode_counts_without_latency() -> None:
    base = free_port_base(1)
    encrypted = bytes(range(160)) + bytes(10)  # garbage where the stamp was, 10-byte auth tag
    with start_sink(base_port=base, count=1, expect=3, srtp=True, idle_timeout=2.0) as sink:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for seq in (7, 8, 10):
                sender.sendto(rtp(seq, 99, encrypted), ("127.0.0.1", base))
        got = sink.result(timeout=10.0)
    assert got.srtp and got.latency_us is None and got.latency_invalid == 0
    assert (got.packets, got.lost, got.bytes) == (3, 1, 3 * 182)


def test_gen_sends_each_stream_to_its_port_from_a_list() -> None:
    base = free_port_base(4)
    ports = [base + 6, base, base + 4, base + 2]  # any order, as rtpengine hands them out
    with start_sink(base_port=base, count=4, expect=40, idle_timeout=2.0) as sink:
        gen = run_gen(base_port=1, ports=ports, pps=50, duration=0.2, streams=99)  # both ignored
        got = sink.result(timeout=10.0)
    assert gen.streams == 4 and gen.sent == got.packets == 40
    assert {ssrc - GEN_SSRC: stream.port for ssrc, stream in got.streams.items()} == dict(enumerate(ports))


def test_free_port_range_holds_no_bound_port() -> None:
    first, last = free_port_range(1000, spare=0.1)
    assert first % 2 == 0 and last - first + 1 == 1102
    assert not any(first <= port <= last for port in bound_udp_ports())
