"""Media benchmark: siprec_src's media worker side by side with rtpengine and a C relay, in one run.

Run ``python -m benchmarks.bench_media [--quick] [--out DIR]`` from the checkout (``make bench``,
``make bench-quick``). It prints tables and writes ``media-<YYYYMMDD-HHMMSS>-<host>.json`` and a
PNG of the same name to ``DIR`` (default ``benchmarks/results``).

**The load.** N calls, each two legs (inbound and outbound audio) of 172-byte PCMU packets at 50
packets/s: 100·N packets/s, from the paced C sender of ``benchmarks/loadgen`` (``rtpgen``, one
socket, each packet stamped with its send time). Every subject is offered the same ladder of N in
the same run, step by step (all subjects at one N, then the next N), pinned to the same core: the
last CPU, with the sender and the sink on the others (on a 2-CPU machine the sender and the sink
share CPU 0, which caps the ladder near 150k packets/s). The recorder is the counting C sink
``rtpsink``: one port per forked leg, RTCP on port + 1; it counts per SSRC and takes the kernel's
receive time of each packet (SO_TIMESTAMPNS) for latency.

**The subjects** (each set up by one function, ``SETUPS``):

- ``direct``: no subject, the sender straight to the sink: the latency baseline.
- ``c-relay``: the C epoll + recvmmsg/sendmmsg relay of ``benchmarks/loadgen`` (SSRC rewrite):
  what the kernel's UDP path allows on this machine, the anchor.
- ``siprec`` / ``siprec-srtp``: one ``siprec_src`` media worker process: two tap legs per call,
  each forked to its recorder port with the product's default pipeline (own SSRC, continuous
  sequence numbers and timestamps), plain RTP or SRTP (AES_CM_128_HMAC_SHA1_80). Set up through
  the product's control path: the sidecar's REST API opens the calls and their both-track
  recordings, SIPREC INVITEs (over TLS for SRTP) go to a stub SRS that answers each fork toward
  its sink port (``benchmarks/siprec_subject.py``, ``benchmarks/stub_srs.py``).
- ``siprec-2w``: the same with two workers, calls spread over both. They get a core each when the
  machine has at least three CPUs; with two, both share the subject's core, so the figure shows
  what splitting costs, not what a second core gains (see the report's note).
- ``rtpengine`` / ``rtpengine-srtp``: Debian's ``rtpengine`` daemon, userspace only
  (``--table=-1``), one forwarding thread, all threads pinned to the subject's core. Each call is
  set up over ng: ``offer``/``answer`` (flag ``asymmetric``, so rtpengine keeps sending to the
  SDP addresses instead of learning the sender's) anchors both legs, then ``subscribe request`` /
  ``subscribe answer`` forks both legs to the recorder ports, plain RTP or SDES-SRTP
  (AES_CM_128_HMAC_SHA1_80 only) toward the recorder.

**What is comparable.** Our worker receives a copy of each leg and sends one packet to the
recorder per packet received. rtpengine relays the call *and* forks it: per packet received it
sends two, one to the other party and one to the recorder; that is what forking costs on
rtpengine, since it records only calls it relays. So each subject's CPU time is divided two ways:
per **fork packet** (packets that reached the recorder; the figure the targets use, what a
recording costs) and per **packet out** (every packet the subject sent, relayed ones included,
which flatters rtpengine: a send is cheaper than a receive plus a send). The true per-operation
ratio lies between the two. The relayed copies go to sockets nobody reads (``Blackholes``): the
kernel drops them at the socket and counts them, so they cost the load core nothing and rtpengine
only what sending costs. "out/in" in the table is the subject's packets out per packet in.

**Figures per subject and step.** Fork packets/s at the recorder; loss % (packets sent minus fork
packets counted, ``DRAIN`` s after the last send); the subject's CPU (user + system of every
process and thread, ``/proc/<pid>/stat``) in % of one core and in CPU seconds per million fork
packets; added latency p50/p99/p99.9 (the step's latency minus the ``direct`` baseline's at the
same step, percentile by percentile; none for SRTP, whose payload stamp is encrypted), over the
packets that reached the sink ``LATENCY_AFTER`` of the step's duration after its first one: every
leg of a step starts at the same instant, which no PBX does, and a subject that latches each new
source (ours creates a connected socket per leg, rtpengine learns its peers) queues the first
packets of thousands of legs at once; that start-up burst is left out of the steady-state
percentiles (all packets are counted for loss). The
kernel's loopback delivery of a subject's sends runs as softirq on the subject's core and is not
charged to the process: ``core_busy_percent`` in the JSON counts the whole core.
A step is **sustained** when loss < 0.1 % and the subject used < 70 % of one core (per core it
has); the **max sustained calls** is the highest such step. A subject that lost > 5 % or used
> 97 % of its core(s) is not offered the higher steps. **Ratios** compare packets per CPU-second
at the highest step both subjects sustained (or, failing that, the lowest step both ran), and
max sustained calls.

The pipeline figures (µs per packet of the fork code alone, no sockets) are measured first in
this process. The load average and how busy the machine was just before each step are in the
JSON: other work on the machine makes every figure worse.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.loadgen.measure import other_cpu_seconds, process_cpu, wait_quiet
from benchmarks.report import (
    RESULTS_DIR,
    Figure,
    ParamValue,
    format_rows,
    format_table,
    machine,
    write_report,
)
from siprec_src.errors import SiprecError
from siprec_src.media import ForkSpec, Leg, LegSpec, SrtpKeys
from siprec_src.media.pipeline import ForkPipeline, LegReceiver
from siprec_src.media.rtp import RtpPacket
from siprec_src.media.srtp import generate_key_params

SUITE = "AES_CM_128_HMAC_SHA1_80"
HOST = "127.0.0.1"
PPS_PER_LEG = 50
LEGS_PER_CALL = 2
LOSS_LIMIT = 0.1  # percent: a sustained step loses less
CPU_LIMIT = 70.0  # percent of one core (per core the subject has)
SATURATED_LOSS = 5.0  # percent: no higher step for a subject that lost this much
SATURATED_CPU = 97.0
DISTURBED = 5.0  # percent of one core used by other processes during a step: run it again
DRAIN = 1.0  # seconds after the last send for the last packets to arrive
KEPT_UP_LAG = 0.1  # seconds: the last packet arrived this soon after the last send
# The sink looks at its sockets every millisecond instead of sleeping in epoll, which spares the
# subject's core the sink's wake-ups (a remote recorder puts none on it). The latency figures do
# not include this polling: they use the kernel's receive time.
SINK_POLL_US = 1000
# What a step may raise when its subject cannot be set up or measured (RuntimeError covers the
# load generator's, rtpengine's and the build's errors; SiprecError the product's).
STEP_ERRORS = (RuntimeError, OSError, TimeoutError, SiprecError)
LATENCY_AFTER = 0.25  # of a step's duration: the start-up burst left out of its latency
NG_CONCURRENCY = 32  # ng requests in flight while setting up rtpengine's calls
RTPENGINE_PORTS_PER_CALL = 8  # 2 legs + 2 subscriptions, RTP and RTCP each
PIPELINE_MODES = ("plain", "rewrite", "srtp")


@dataclass(frozen=True, slots=True)
class Subject:
    name: str
    kind: str  # "direct", "c_relay", "siprec" or "rtpengine"
    label: str
    srtp: bool = False
    processes: int = 1  # processes pinned to cores of their own when the machine has them
    reference: str | None = None  # the rtpengine subject it is compared with


SUBJECTS = {
    subject.name: subject
    for subject in (
        Subject("direct", "direct", "no subject: sender -> sink (latency baseline)", processes=0),
        Subject("c-relay", "c_relay", "C recvmmsg/sendmmsg relay (the kernel's limit)"),
        Subject("siprec", "siprec", "siprec_src, 1 worker, RTP", reference="rtpengine"),
        Subject("siprec-srtp", "siprec", "siprec_src, 1 worker, SRTP", srtp=True, reference="rtpengine-srtp"),
        Subject("siprec-2w", "siprec", "siprec_src, 2 workers, RTP", processes=2, reference="rtpengine"),
        Subject("rtpengine", "rtpengine", "rtpengine userspace, relay + fork, RTP"),
        Subject(
            "rtpengine-srtp", "rtpengine", "rtpengine userspace, relay + fork, SRTP to recorder", srtp=True
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Ladder:
    pipeline_packets: int
    repeats: int
    calls: tuple[int, ...]
    duration: float  # seconds of load per step
    quiet_wait: float  # seconds to wait at most, before a step, for the machine to calm down
    retries: int  # runs again of a step that other processes disturbed


QUICK = Ladder(pipeline_packets=20_000, repeats=3, calls=(100, 400), duration=1.0, quiet_wait=0.0, retries=0)
FULL = Ladder(
    pipeline_packets=200_000,
    repeats=5,
    calls=(250, 500, 750, 1000, 1250, 1500),
    duration=4.0,
    quiet_wait=3.0,
    retries=2,
)


# --- the pipeline alone ---------------------------------------------------------------------------


def _fork_spec(mode: str, fork_id: str = "f", local: tuple[str, int] = (HOST, 1), **changes: Any) -> ForkSpec:
    spec = ForkSpec(fork_id, "call", Leg.INBOUND, local, (HOST, 2), (HOST, 3), 0x5EC0, ((0, 0),))
    if mode == "plain":
        spec = replace(spec, rewrite=False)
    elif mode == "srtp":
        spec = replace(spec, srtp=SrtpKeys(SUITE, generate_key_params(SUITE)))
    return replace(spec, **changes)


def bench_pipeline(mode: str, packets: int, repeats: int, forks: int = 1) -> float:
    """µs per packet for the leg's parse and ``forks`` forks of ``mode`` (fake socket subtracted)."""
    buffer = bytearray(65536)
    wire = [
        bytes(RtpPacket(0, i & 0xFFFF, (160 * i) & 0xFFFFFFFF, 0x77, b"\xd5" * 160)) for i in range(packets)
    ]
    source = (HOST, 4000)
    timings = []
    for _ in range(repeats):
        feed = iter(wire)

        def recv_into(into: bytearray, feed: Any = feed) -> tuple[int, tuple[str, int]]:
            packet = next(feed)
            into[:172] = packet
            return 172, source

        leg = LegReceiver(LegSpec("call", Leg.INBOUND), buffer, lambda event: None, 0.0, 30.0, recv_into)
        for index in range(forks):
            fork = ForkPipeline(
                _fork_spec(mode, f"f{index}"),
                send_rtp=lambda data: None,
                send_rtcp=lambda data: None,
                emit=lambda event: None,
                now=0.0,
            )
            leg.attach(fork)
        read = leg.on_readable
        start = time.perf_counter_ns()
        for i in range(packets):
            read(i * 0.02)
        elapsed = time.perf_counter_ns() - start
        baseline_feed = iter(wire)
        start = time.perf_counter_ns()
        for _ in range(packets):
            recv_into(buffer, baseline_feed)
        baseline = time.perf_counter_ns() - start
        timings.append((elapsed - baseline) / packets / 1000)
    return statistics.median(timings)


def pipeline_figures(ladder: Ladder) -> list[Figure]:
    figures = []
    for mode in PIPELINE_MODES:
        value = bench_pipeline(mode, ladder.pipeline_packets, ladder.repeats)
        figures.append(Figure(f"pipeline.{mode}.time", value, "µs/packet", {"packet_bytes": 172}))
    value = bench_pipeline("rewrite", ladder.pipeline_packets, ladder.repeats, forks=4)
    figures.append(
        Figure("pipeline.rewrite_4_forks.time", value, "µs/packet", {"packet_bytes": 172, "forks": 4})
    )
    return figures


# --- /proc ----------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _core_ticks(cpu: int) -> tuple[int, int, int]:
    """(busy, steal, total) clock ticks of one CPU from /proc/stat: busy is user, nice,
    system, irq and softirq, where the kernel's loopback delivery of the subject's sends runs."""
    with open("/proc/stat", encoding="ascii") as stat:
        for line in stat:
            if line.startswith(f"cpu{cpu} "):
                user, nice, system, idle, iowait, irq, softirq, steal = map(int, line.split()[1:9])
                busy = user + nice + system + irq + softirq
                return busy, steal, busy + steal + idle + iowait
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


def layout(processes: int) -> tuple[list[int] | None, list[int] | None]:
    """(one CPU per subject process, the load generator's CPUs). The subject takes the last
    CPUs, a core per process while at least one CPU is left for the load; otherwise its
    processes share the last CPU. None, None on a 1-CPU machine (nothing is pinned)."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    count = max(processes, 1)
    if len(available) > count:
        return available[-count:], available[:-count]
    return [available[-1]] * count, available[:-1]


# --- the subjects ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Running:
    """A subject ready for load: stream i (call i // 2, leg i % 2) goes to ``targets[i]``; its
    fork goes to the sink's port ``sink_base + 2 * i``."""

    targets: list[int]
    pids: list[int]
    counters: Callable[[], Awaitable[dict[str, ParamValue]]]
    info: dict[str, ParamValue] = field(default_factory=dict)


async def _nothing() -> dict[str, ParamValue]:
    return {}


SetUp = Callable[[Subject, int, int, list[int] | None], contextlib.AbstractAsyncContextManager[Running]]


@contextlib.asynccontextmanager
async def _direct(
    subject: Subject, calls: int, sink_base: int, cpus: list[int] | None
) -> AsyncIterator[Running]:
    yield Running([sink_base + 2 * i for i in range(LEGS_PER_CALL * calls)], [], _nothing)


@contextlib.asynccontextmanager
async def _c_relay(
    subject: Subject, calls: int, sink_base: int, cpus: list[int] | None
) -> AsyncIterator[Running]:
    from benchmarks import loadgen

    streams = LEGS_PER_CALL * calls
    in_base, relay = loadgen.start_on_free_ports(
        streams,
        lambda base: loadgen.start_relay(
            in_base=base, dest_base=sink_base, count=streams, rewrite=True, cpus=sorted(set(cpus or ()))
        ),
    )
    with relay:

        async def counters() -> dict[str, ParamValue]:
            done = relay.stop()
            return {
                "relay_received": done.received,
                "relay_forwarded": done.forwarded,
                "relay_send_errors": done.send_errors,
                "relay_socket_drops": done.socket_drops,
            }

        yield Running([in_base + 2 * i for i in range(streams)], [relay.pid], counters)


@contextlib.asynccontextmanager
async def _siprec(
    subject: Subject, calls: int, sink_base: int, cpus: list[int] | None
) -> AsyncIterator[Running]:
    """``calls`` calls on siprec_src media workers, set up as a user would: calls and both-track
    recordings created through the sidecar's REST API, SIPREC INVITEs answered by a stub SRS
    that sends each fork to its sink port (``benchmarks/stub_srs.py``); SRTP toward the SRS
    (and SIP over TLS) for ``subject.srtp``. The pipelines are the product's: rewrite, + SRTP.
    """
    from benchmarks import loadgen
    from benchmarks.siprec_subject import sidecar_subject

    workers = subject.processes
    streams = LEGS_PER_CALL * calls
    # A leg and a fork per stream, each an RTP/RTCP pair; split in equal halves between workers.
    port_range = loadgen.free_port_range(4 * streams + 16 * workers)
    async with sidecar_subject(
        host=HOST,
        calls=calls,
        workers=workers,
        srtp=subject.srtp,
        sink_base=sink_base,
        port_range=port_range,
        cpus=cpus,
    ) as (targets, pids, counters):
        yield Running(targets, pids, counters, {"workers": workers, "setup": "REST API + stub SRS"})


class Blackholes:
    """UDP sockets nobody reads, with the smallest receive buffer: where rtpengine relays each
    leg to (the other party). The kernel drops nearly every packet at the socket and counts it
    in /proc/net/udp; ``delivered()`` = those drops + what is still queued."""

    def __init__(self, count: int) -> None:
        self.sockets: list[socket.socket] = []
        try:
            for _ in range(count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
                sock.bind((HOST, 0))
                sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    def address(self, index: int) -> tuple[str, int]:
        host, port = self.sockets[index].getsockname()
        return str(host), int(port)

    def delivered(self) -> int:
        inodes = {os.fstat(sock.fileno()).st_ino for sock in self.sockets}
        drops = 0
        with open("/proc/net/udp", encoding="ascii") as table:
            next(table)
            for line in table:
                fields = line.split()
                if int(fields[9]) in inodes:
                    drops += int(fields[-1])
        queued = 0
        for sock in self.sockets:
            with contextlib.suppress(BlockingIOError):
                while True:
                    sock.recv(2048)
                    queued += 1
        return drops + queued

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@contextlib.asynccontextmanager
async def _rtpengine(
    subject: Subject, calls: int, sink_base: int, cpus: list[int] | None
) -> AsyncIterator[Running]:
    """rtpengine relaying ``calls`` calls (caller and callee are ``Blackholes``) and forking both
    legs of each to its sink ports: offer/answer, then subscribe request/answer, over ng."""
    from benchmarks import loadgen
    from benchmarks.rtpengine import AsyncNgClient, RtpEngine, audio_sdp, parse_sdp

    streams = LEGS_PER_CALL * calls
    port_min, port_max = loadgen.free_port_range(RTPENGINE_PORTS_PER_CALL * calls + 64)
    cpu = cpus[0] if cpus else None
    with contextlib.ExitStack() as stack:
        daemon = stack.enter_context(RtpEngine(cpu=cpu, port_min=port_min, port_max=port_max, num_threads=1))
        holes = Blackholes(streams)
        stack.callback(holes.close)
        targets = [0] * streams
        gate = asyncio.Semaphore(NG_CONCURRENCY)
        async with await AsyncNgClient.connect(daemon.ng_address, timeout=10.0, retransmit=1.0) as client:

            async def open_call(index: int) -> None:
                call, inbound, outbound = f"call-{index}", 2 * index, 2 * index + 1
                async with gate:
                    caller = audio_sdp(*holes.address(inbound))
                    offered = await client.offer(call, "caller", caller, flags=["asymmetric"])
                    callee = audio_sdp(*holes.address(outbound))
                    answered = await client.answer(call, "caller", "callee", callee, flags=["asymmetric"])
                    targets[inbound] = parse_sdp(answered)[0].port  # where the caller sends
                    targets[outbound] = parse_sdp(offered)[0].port  # where the callee sends
                    sinks = [(HOST, sink_base + 2 * inbound), (HOST, sink_base + 2 * outbound)]
                    await client.fork(call, ["caller", "callee"], sinks, srtp=subject.srtp)

            await asyncio.gather(*(open_call(index) for index in range(calls)))

        async def counters() -> dict[str, ParamValue]:
            return {"relayed": holes.delivered()}

        yield Running(targets, [daemon.pid], counters, {"rtpengine_threads": 1})


SETUPS: dict[str, SetUp] = {
    "direct": _direct,
    "c_relay": _c_relay,
    "siprec": _siprec,
    "rtpengine": _rtpengine,
}


def available(subject: Subject) -> str | None:
    """Why ``subject`` cannot run on this machine, or None."""
    if subject.kind == "rtpengine":
        from benchmarks.rtpengine import RtpEngineError, find_rtpengine

        try:
            find_rtpengine()
        except RtpEngineError as exc:
            return str(exc)
    return None


# --- one step -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Step:
    """One subject at one offered load."""

    subject: str
    calls: int
    offered_rate: int
    duration: float
    sent: int
    fork_received: int
    out_packets: int  # every packet the subject sent that arrived somewhere (forks + relayed)
    span_s: float  # first packet sent to last fork packet received
    lag_s: float  # last fork packet received after the last send
    cpu_s: float | None  # the subject's processes; None for "direct"
    cores: int  # distinct cores the subject ran on
    latency_us: dict[str, float] | None  # p50, p99, p999 from send to the sink (raw)
    added_latency_us: dict[str, float] | None = None  # minus "direct" at the same step
    params: dict[str, ParamValue] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.sent - self.fork_received

    @property
    def loss_percent(self) -> float:
        return 100.0 * self.lost / self.sent if self.sent else 0.0

    @property
    def fork_rate(self) -> float:
        return self.fork_received / self.span_s if self.span_s > 0 else 0.0

    @property
    def cpu_percent(self) -> float | None:
        """Of one core, all the subject's processes together."""
        return None if self.cpu_s is None or self.span_s <= 0 else 100.0 * self.cpu_s / self.span_s

    @property
    def fork_per_cpu_second(self) -> float | None:
        return self.fork_received / self.cpu_s if self.cpu_s else None

    @property
    def out_per_cpu_second(self) -> float | None:
        return self.out_packets / self.cpu_s if self.cpu_s else None

    @property
    def cpu_s_per_million(self) -> float | None:
        return (
            1e6 * self.cpu_s / self.fork_received if self.cpu_s is not None and self.fork_received else None
        )

    @property
    def out_per_in(self) -> float:
        return self.out_packets / self.fork_received if self.fork_received else 0.0

    @property
    def disturbed(self) -> bool:
        return float(self.params.get("other_cpu_percent", 0.0)) > DISTURBED

    @property
    def sustained(self) -> bool:
        cpu = self.cpu_percent
        return self.loss_percent < LOSS_LIMIT and (cpu is None or cpu / max(self.cores, 1) < CPU_LIMIT)

    @property
    def saturated(self) -> bool:
        cpu = self.cpu_percent
        return self.loss_percent > SATURATED_LOSS or (
            cpu is not None and cpu / max(self.cores, 1) > SATURATED_CPU
        )

    def figure(self) -> Figure:
        params: dict[str, ParamValue] = {
            "subject": self.subject,
            "calls": self.calls,
            "offered_rate": self.offered_rate,
            "duration_s": self.duration,
            "sent": self.sent,
            "fork_received": self.fork_received,
            "lost": self.lost,
            "loss_percent": round(self.loss_percent, 4),
            "out_packets": self.out_packets,
            "out_per_in": round(self.out_per_in, 3),
            "span_s": round(self.span_s, 3),
            "last_packet_lag_s": round(self.lag_s, 3),
            "kept_up": self.lost == 0 and self.lag_s <= KEPT_UP_LAG,
            "sustained": self.sustained,
            "cores": self.cores,
            "disturbed": self.disturbed,
        }
        if self.cpu_s is not None:
            params["cpu_s"] = round(self.cpu_s, 3)
            params["cpu_percent"] = round(self.cpu_percent or 0.0, 1)
            params["cpu_s_per_million_fork"] = round(self.cpu_s_per_million or 0.0, 3)
            params["fork_per_cpu_second"] = round(self.fork_per_cpu_second or 0.0)
            params["out_per_cpu_second"] = round(self.out_per_cpu_second or 0.0)
        for name, values in (("latency", self.latency_us), ("added_latency", self.added_latency_us)):
            for key, value in (values or {}).items():
                params[f"{name}_{key}_us"] = round(value, 1)
        params.update(self.params)
        return Figure(f"step.{self.subject}.{self.calls}", self.fork_rate, "packets/s", params)


async def run_step(subject: Subject, calls: int, duration: float, quiet_wait: float = 0.0) -> Step:
    """Offer ``calls`` calls to ``subject`` for ``duration`` s; count what reaches the sink.

    A port taken by another program between probe and bind starts the step over (3 times)."""
    from benchmarks.loadgen import LoadgenError

    for attempt in range(3):
        try:
            return await _run_step_once(subject, calls, duration, quiet_wait)
        except (LoadgenError, OSError) as exc:
            if "Address already in use" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _run_step_once(subject: Subject, calls: int, duration: float, quiet_wait: float) -> Step:
    from benchmarks import loadgen

    streams = LEGS_PER_CALL * calls
    rate = PPS_PER_LEG * streams
    planned = round(rate * duration)
    subject_cpus, load_cpus = layout(subject.processes)
    cores = sorted(set(subject_cpus or ())) if subject.processes else []
    busy_before = await asyncio.to_thread(wait_quiet, quiet_wait) if quiet_wait else None
    loadavg = os.getloadavg()[0]
    # The sink first, so the subject's port ranges avoid its ports. It stops once every packet
    # arrived, or when told DRAIN s after the last send; setting up many calls takes a while.
    sink_base, sink = loadgen.start_on_free_ports(
        2 * streams,
        lambda base: loadgen.start_sink(
            base_port=base,
            count=streams,
            expect=planned,
            idle_timeout=60.0,
            start_timeout=300.0,
            srtp=subject.srtp,
            rtcp=True,
            latency_after=LATENCY_AFTER * duration,
            poll_us=SINK_POLL_US,
            per_stream=False,
            cpus=load_cpus,
        ),
        step=1,
    )
    with sink:
        started = time.monotonic()
        async with SETUPS[subject.kind](subject, calls, sink_base, subject_cpus) as running:
            setup_s = time.monotonic() - started
            cpu_before = sum(_cpu_seconds(pid) for pid in running.pids)
            ticks_before = [_core_ticks(core) for core in cores]
            processes_before, window_start = process_cpu(), time.monotonic()
            gen = await asyncio.to_thread(
                loadgen.run_gen,
                ports=running.targets,
                rate=rate,
                packets=planned,
                duration=duration,
                per_stream=False,
                cpus=load_cpus,
            )
            await asyncio.to_thread(sink.wait, DRAIN)
            cpu_after = sum(_cpu_seconds(pid) for pid in running.pids)
            ticks_after = [_core_ticks(core) for core in cores]
            other = other_cpu_seconds(processes_before, process_cpu())
            window = time.monotonic() - window_start
            got = await asyncio.to_thread(sink.stop)
            counters = await running.counters()
            info = running.info
            has_processes = bool(running.pids)
    span = (got.last_rx_ns - gen.first_stamp_ns) / 1e9 if got.packets else gen.elapsed_s
    span = max(span, gen.elapsed_s)
    latency = got.latency_us
    params: dict[str, ParamValue] = {
        "setup_s": round(setup_s, 2),
        "loadavg_at_start": round(loadavg, 2),
        "gen_sent_rate": round(gen.achieved_rate),
        "gen_send_errors": gen.send_errors,
        "sink_socket_drops": got.socket_drops,
        "latency_after_s": round(LATENCY_AFTER * duration, 3),
        "latency_skipped": got.latency_skipped,
        "rtcp_at_sink": got.rtcp_packets,
        "subject_cpus": ",".join(str(cpu) for cpu in subject_cpus or ()) if has_processes else "",
        "load_cpus": ",".join(str(cpu) for cpu in load_cpus or ()),
        "other_cpu_percent": round(100 * other / window, 1),
        **info,
        **counters,
    }
    if busy_before is not None:
        params["machine_busy_before_percent"] = round(100 * busy_before, 1)
    if cores:
        busy = sum(after[0] - before[0] for after, before in zip(ticks_after, ticks_before, strict=True))
        steal = sum(after[1] - before[1] for after, before in zip(ticks_after, ticks_before, strict=True))
        total = sum(after[2] - before[2] for after, before in zip(ticks_after, ticks_before, strict=True))
        if total:
            params["core_busy_percent"] = round(100 * busy / total * len(cores), 1)
            params["core_steal_percent"] = round(100 * steal / total * len(cores), 1)
    relayed = int(counters.get("relayed", 0))
    return Step(
        subject=subject.name,
        calls=calls,
        offered_rate=rate,
        duration=duration,
        sent=gen.sent,
        fork_received=got.packets,
        out_packets=got.packets + relayed,
        span_s=span,
        lag_s=max(0.0, (got.last_rx_ns - gen.last_stamp_ns) / 1e9) if got.packets else 0.0,
        cpu_s=cpu_after - cpu_before if has_processes else None,
        cores=len(cores),
        latency_us=None
        if latency is None
        else {"p50": latency.p50, "p99": latency.p99, "p999": latency.p999},
        params=params,
    )


# --- the ladder, summaries and ratios -------------------------------------------------------------


def add_baseline_latency(steps: Sequence[Step]) -> None:
    """Fill each step's ``added_latency_us``: its latency minus the ``direct`` step's at the same
    number of calls, percentile by percentile."""
    baseline = {step.calls: step.latency_us for step in steps if step.subject == "direct"}
    for step in steps:
        base = baseline.get(step.calls)
        if step.subject != "direct" and step.latency_us is not None and base is not None:
            step.added_latency_us = {key: step.latency_us[key] - base[key] for key in step.latency_us}


@dataclass(frozen=True, slots=True)
class Ratio:
    subject: str
    reference: str
    calls: int  # the step compared
    fork_per_cpu: float  # subject's fork packets per CPU-second / reference's
    out_per_cpu: float  # subject's packets out per CPU-second / reference's
    capacity: float | None  # max sustained calls / reference's (None when either has none)
    both_sustained: bool


def max_sustained(steps: Sequence[Step], subject: str) -> Step | None:
    """The highest step of ``subject`` that was sustained, or None."""
    sustained = [step for step in steps if step.subject == subject and step.sustained]
    return max(sustained, key=lambda step: step.calls, default=None)


def ratio(steps: Sequence[Step], subject: str, reference: str) -> Ratio | None:
    """``subject`` against ``reference`` at the highest step both sustained, else at the lowest
    step both ran; None when they share no step with CPU figures."""
    mine = {step.calls: step for step in steps if step.subject == subject and step.cpu_s}
    theirs = {step.calls: step for step in steps if step.subject == reference and step.cpu_s}
    common = sorted(set(mine) & set(theirs))
    if not common:
        return None
    both = [calls for calls in common if mine[calls].sustained and theirs[calls].sustained]
    calls = both[-1] if both else common[0]
    a, b = mine[calls], theirs[calls]
    best_a, best_b = max_sustained(steps, subject), max_sustained(steps, reference)
    return Ratio(
        subject=subject,
        reference=reference,
        calls=calls,
        fork_per_cpu=(a.fork_per_cpu_second or 0.0) / (b.fork_per_cpu_second or 1.0),
        out_per_cpu=(a.out_per_cpu_second or 0.0) / (b.out_per_cpu_second or 1.0),
        capacity=best_a.calls / best_b.calls if best_a and best_b else None,
        both_sustained=bool(both),
    )


def ratios(steps: Sequence[Step]) -> list[Ratio]:
    ran = {step.subject for step in steps}
    found = []
    for subject in SUBJECTS.values():
        if subject.kind != "siprec" or subject.name not in ran:
            continue
        references = [subject.reference or "", "c-relay"]
        if subject.processes > 1:
            references.append("siprec")
        for reference in references:
            if reference in ran and (found_ratio := ratio(steps, subject.name, reference)) is not None:
                found.append(found_ratio)
    return found


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    goal: str
    measured: float | None
    threshold: float
    higher_is_better: bool = True
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.measured is None:
            return None
        return self.measured >= self.threshold if self.higher_is_better else self.measured < self.threshold


def targets(steps: Sequence[Step], found: Sequence[Ratio], *, workers_share_a_core: bool) -> list[Target]:
    """The issue's targets, as far as this run measured them. Two workers that shared one core
    say nothing about scaling: that target is then "not measured", the ratio in its note."""
    by_pair = {(r.subject, r.reference): r for r in found}

    def pair(subject: str, reference: str, attribute: str) -> float | None:
        value = by_pair.get((subject, reference))
        return None if value is None else getattr(value, attribute)

    two_workers = pair("siprec-2w", "siprec", "capacity")
    at_1000 = next((s for s in steps if s.subject == "siprec" and s.calls == 1000), None)
    rated = max_sustained(steps, "siprec")
    return [
        Target(
            "plain_vs_rtpengine",
            "siprec fork packets per CPU-s >= 2x rtpengine (RTP)",
            pair("siprec", "rtpengine", "fork_per_cpu"),
            2.0,
        ),
        Target(
            "plain_vs_c_relay",
            "siprec packets per CPU-s >= 60 % of the C relay",
            pair("siprec", "c-relay", "fork_per_cpu"),
            0.6,
        ),
        Target(
            "srtp_vs_rtpengine",
            "siprec-srtp fork packets per CPU-s >= 1.5x rtpengine-srtp",
            pair("siprec-srtp", "rtpengine-srtp", "fork_per_cpu"),
            1.5,
        ),
        Target(
            "p99_at_1000_calls",
            "siprec added p99 latency < 1000 us at 1000 calls",
            None if at_1000 is None or at_1000.added_latency_us is None else at_1000.added_latency_us["p99"],
            1000.0,
            higher_is_better=False,
        ),
        Target(
            "loss_at_rated_load",
            "siprec loses 0 packets at its max sustained step",
            None if rated is None else float(rated.lost),
            0.5,
            higher_is_better=False,
            note="" if rated is None else f"{rated.calls} calls",
        ),
        Target(
            "two_workers",
            "siprec-2w max sustained calls >= 1.8x siprec",
            None if workers_share_a_core else two_workers,
            1.8,
            note=(
                f"both workers shared one core (needs >= 3 CPUs); ratio there {_num(two_workers, 2)}x"
                if workers_share_a_core
                else "one core per worker"
            ),
        ),
    ]


async def run_ladder(
    subjects: Sequence[Subject],
    ladder: Ladder,
    *,
    log: Callable[[str], None] = print,
) -> tuple[list[Step], dict[str, str]]:
    """Every subject at every step of the ladder, step by step; a saturated subject is not
    offered the higher steps, a step that other processes disturbed is run again
    (``ladder.retries`` times at most; then it is kept, marked "disturbed"). Returns the
    steps and, by subject, why some steps did not run."""
    steps: list[Step] = []
    skipped: dict[str, str] = {}
    for subject in subjects:
        if (reason := available(subject)) is not None:
            skipped[subject.name] = reason
            log(f"  {subject.name}: not run: {reason}")
    for calls in ladder.calls:
        for subject in subjects:
            if subject.name in skipped:
                continue
            try:
                step = await run_step(subject, calls, ladder.duration, ladder.quiet_wait)
                for attempt in range(ladder.retries):
                    if not step.disturbed:
                        break
                    log(f"  {describe(step)}: disturbed, again ({attempt + 1}/{ladder.retries})")
                    step = await run_step(subject, calls, ladder.duration, ladder.quiet_wait)
            except STEP_ERRORS as exc:
                # One subject that cannot be set up (an SRS answer lost on a crowded machine, a
                # daemon refusing) ends that subject's ladder, not the whole benchmark.
                skipped[subject.name] = f"failed at {calls} calls: {type(exc).__name__}: {exc}"
                log(f"  {subject.name} {calls} calls: {skipped[subject.name]}")
                continue
            steps.append(step)
            log(f"  {describe(step)}")
            if step.saturated:
                skipped[subject.name] = f"saturated at {calls} calls: not offered more"
    add_baseline_latency(steps)
    return steps, skipped


def describe(step: Step) -> str:
    text = (
        f"{step.subject} {step.calls} calls: {step.fork_rate:,.0f} fork pkt/s of "
        f"{step.offered_rate:,} offered, loss {step.loss_percent:.3f} %, lag {step.lag_s:.3f} s"
    )
    if step.cpu_s is not None:
        text += f", CPU {step.cpu_percent:.0f} % = {step.fork_per_cpu_second or 0:,.0f} fork pkt/CPU-s"
    if step.latency_us is not None:
        text += f", latency p50 {step.latency_us['p50']:.0f} p99 {step.latency_us['p99']:.0f} µs"
    text += f" (setup {step.params.get('setup_s')} s, others used {step.params.get('other_cpu_percent')} %)"
    return text


# --- tables ---------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def steps_table(steps: Sequence[Step]) -> str:
    columns = (
        "subject",
        "calls",
        "offered/s",
        "fork pkt/s",
        "loss %",
        "CPU %",
        "CPU s/M fork",
        "out/in",
        "+p50 µs",
        "+p99 µs",
        "+p99.9 µs",
        "ok",
    )
    rows = []
    for step in sorted(steps, key=lambda s: (list(SUBJECTS).index(s.subject), s.calls)):
        added = step.added_latency_us or {}
        raw = step.latency_us or {}
        latency = added if step.subject != "direct" else raw  # the baseline shows its own latency
        rows.append(
            (
                step.subject,
                str(step.calls),
                _num(step.offered_rate),
                _num(step.fork_rate),
                f"{step.loss_percent:.3f}",
                _num(step.cpu_percent),
                _num(step.cpu_s_per_million, 2),
                f"{step.out_per_in:.1f}",
                _num(latency.get("p50")),
                _num(latency.get("p99")),
                _num(latency.get("p999")),
                ("yes" if step.sustained else "no") + ("*" if step.disturbed else ""),
            )
        )
    return format_rows(columns, rows)


def summary_table(steps: Sequence[Step], subjects: Sequence[Subject]) -> str:
    columns = ("subject", "max calls", "fork pkt/CPU-s", "pkt out/CPU-s", "at calls", "what")
    rows = []
    for subject in subjects:
        mine = [step for step in steps if step.subject == subject.name]
        if not mine:
            continue
        best = max_sustained(steps, subject.name)
        shown = best or min(mine, key=lambda step: step.calls)
        rows.append(
            (
                subject.name,
                "none" if best is None else str(best.calls),
                _num(shown.fork_per_cpu_second),
                _num(shown.out_per_cpu_second),
                str(shown.calls),
                subject.label,
            )
        )
    return format_rows(columns, rows)


def ratio_table(found: Sequence[Ratio]) -> str:
    columns = ("subject", "vs", "at calls", "per fork pkt", "per pkt out", "max calls")
    rows = [
        (
            r.subject,
            r.reference,
            f"{r.calls}{'' if r.both_sustained else ' (not both sustained)'}",
            f"{r.fork_per_cpu:.2f}x",
            f"{r.out_per_cpu:.2f}x",
            "-" if r.capacity is None else f"{r.capacity:.2f}x",
        )
        for r in found
    ]
    return format_rows(columns, rows)


def target_table(found: Sequence[Target]) -> str:
    columns = ("target", "measured", "verdict", "note")
    rows = []
    for target in found:
        measured = target.measured
        if measured is None:
            verdict = "not measured"
        elif target.met:
            verdict = "met"
        elif target.higher_is_better:
            verdict = f"missed ({measured / target.threshold:.0%} of goal)"
        else:
            verdict = f"missed (goal: under {target.threshold:g})"
        rows.append((target.goal, _num(target.measured, 2), verdict, target.note))
    return format_rows(columns, rows)


# --- running and reporting ------------------------------------------------------------------------


def workers_share_a_core() -> bool:
    subject_cpus, _ = layout(2)
    return subject_cpus is None or len(set(subject_cpus)) < 2


def build_report(
    figures: Sequence[Figure], ladder: Ladder, skipped: dict[str, str], *, quick: bool
) -> dict[str, Any]:
    return {
        **machine("media"),
        "quick": quick,
        "load_generator": "c (benchmarks/loadgen rtpgen + rtpsink)",
        "ladder": asdict(ladder),
        "subjects": {name: asdict(subject) for name, subject in SUBJECTS.items()},
        "limits": {"loss_percent": LOSS_LIMIT, "cpu_percent_of_one_core": CPU_LIMIT, "drain_s": DRAIN},
        "skipped": skipped,
        "figures": [asdict(figure) for figure in figures],
    }


def summary_figures(steps: Sequence[Step], found: Sequence[Ratio], goals: Sequence[Target]) -> list[Figure]:
    figures = []
    for subject in dict.fromkeys(step.subject for step in steps):
        best = max_sustained(steps, subject)
        params: dict[str, ParamValue] = {}
        if best is not None:
            params = {"fork_per_cpu_second": round(best.fork_per_cpu_second or 0), "loss": best.lost}
        figures.append(
            Figure(
                f"summary.{subject}.max_sustained_calls", float(best.calls if best else 0), "calls", params
            )
        )
    for r in found:
        params = {
            "calls": r.calls,
            "both_sustained": r.both_sustained,
            "out_per_cpu": round(r.out_per_cpu, 3),
        }
        if r.capacity is not None:
            params["capacity"] = round(r.capacity, 3)
        figures.append(Figure(f"ratio.{r.subject}.vs.{r.reference}", r.fork_per_cpu, "x", params))
    for goal in goals:
        if goal.measured is not None:
            params = {"goal": goal.goal, "threshold": goal.threshold, "met": bool(goal.met)}
            if goal.note:
                params["note"] = goal.note
            figures.append(Figure(f"target.{goal.name}", goal.measured, "", params))
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="reduced ladder, under a minute")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSON and PNG")
    parser.add_argument("--subjects", default=",".join(SUBJECTS), help=f"of {', '.join(SUBJECTS)}")
    parser.add_argument("--calls", help="the ladder: offered calls per step, comma separated")
    parser.add_argument("--duration", type=float, help="seconds of load per step")
    parser.add_argument("--pipeline-only", action="store_true", help="skip the subjects")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every program and daemon a step started is stopped.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _main(args, parser)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    ladder = QUICK if args.quick else FULL
    if args.calls:
        ladder = replace(ladder, calls=tuple(int(calls) for calls in args.calls.split(",") if calls))
    if args.duration:
        ladder = replace(ladder, duration=args.duration)
    names = [name for name in args.subjects.split(",") if name]
    if unknown := set(names) - set(SUBJECTS):
        parser.error(f"unknown subjects {sorted(unknown)}; allowed: {', '.join(SUBJECTS)}")
    if any(SUBJECTS[name].kind != "direct" for name in names) and "direct" not in names:
        names.insert(0, "direct")  # the latency baseline
    subjects = [SUBJECTS[name] for name in SUBJECTS if name in names]

    figures = pipeline_figures(ladder)
    steps: list[Step] = []
    skipped: dict[str, str] = {}
    if not args.pipeline_only:
        from benchmarks import loadgen

        loadgen.build_all()
        print(
            f"ladder: {', '.join(map(str, ladder.calls))} calls x {LEGS_PER_CALL} legs x "
            f"{PPS_PER_LEG} packets/s, {ladder.duration} s per step; "
            f"subject CPUs / load CPUs: {layout(1)[0]} / {layout(1)[1]}",
            flush=True,
        )
        steps, skipped = asyncio.run(run_ladder(subjects, ladder, log=lambda line: print(line, flush=True)))
    found = ratios(steps)
    goals = targets(steps, found, workers_share_a_core=workers_share_a_core()) if steps else []
    figures += [step.figure() for step in steps] + summary_figures(steps, found, goals)
    report = build_report(figures, ladder, skipped, quick=args.quick)
    print(f"\n{report['host']}  Python {report['python']}  {report['cpu_count']} CPUs  {report['platform']}")
    print(format_table([figure for figure in figures if figure.name.startswith("pipeline.")]))
    if steps:
        print(
            "\nper step (+p50/+p99/+p99.9: latency added over the direct baseline, whose own is shown; "
            f"*: other processes used > {DISTURBED:.0f} % of a core meanwhile):"
        )
        print(steps_table(steps))
        print(
            f"\nper subject (max calls: highest step with < {LOSS_LIMIT} % loss "
            f"and < {CPU_LIMIT:.0f} % of a core):"
        )
        print(summary_table(steps, subjects))
        if found:
            print("\nratios (packets per CPU-second; rtpengine sends 2 packets per packet in, we send 1):")
            print(ratio_table(found))
        print("\ntargets:")
        print(target_table(goals))
    for name, reason in skipped.items():
        print(f"note: {name}: {reason}")
    path = write_report(report, args.out)
    print(f"wrote {path}")
    if steps and not args.no_plot:
        from benchmarks.plot import plot_media

        try:
            print(f"wrote {plot_media(report, path.with_suffix('.png'))}")
        except ImportError as exc:
            print(f"no plot: {exc} (pip install -e '.[plot]')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
