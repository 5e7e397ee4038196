"""Measuring instruments for the forking benchmarks: a paced RTP sender, a counting sink and
a minimal C relay (the physical-limit anchor), compiled on demand, with Python wrappers.

- ``rtpgen``: N paced RTP streams (172-byte PCMU packets, 50 packets/s each by default), each
  packet stamped with its send time (CLOCK_REALTIME ns, first 8 payload bytes);
- ``rtpsink``: counts per SSRC (packets, bytes, lost, duplicates, reorders) and measures latency
  from the stamp to the kernel's receive time (SO_TIMESTAMPNS);
- ``relay``: epoll + recvmmsg/sendmmsg, input port i -> destination port i.

See ``build.py`` for compilation and ``runner.py`` for the API; ``python -m
benchmarks.loadgen.measure`` measures the instruments themselves on this machine.
"""

from benchmarks.loadgen.build import BUILD_DIR, PROGRAMS, BuildError, build, build_all
from benchmarks.loadgen.runner import (
    GenResult,
    LoadgenError,
    Percentiles,
    Program,
    Relay,
    RelayOptions,
    RelayResult,
    Sink,
    SinkOptions,
    SinkResult,
    StreamStats,
    free_port_base,
    free_port_range,
    run_gen,
    run_relay,
    run_sink,
    start_on_free_ports,
    start_relay,
    start_sink,
)

__all__ = [
    "BUILD_DIR",
    "PROGRAMS",
    "BuildError",
    "GenResult",
    "LoadgenError",
    "Percentiles",
    "Program",
    "Relay",
    "RelayOptions",
    "RelayResult",
    "Sink",
    "SinkOptions",
    "SinkResult",
    "StreamStats",
    "build",
    "build_all",
    "free_port_base",
    "free_port_range",
    "run_gen",
    "run_relay",
    "run_sink",
    "start_on_free_ports",
    "start_relay",
    "start_sink",
]
