"""Media benchmark: µs per packet of the fork pipelines, and packets/s through one media worker.

Run ``python -m benchmarks.bench_media [--quick] [--out DIR]`` from the checkout. It prints a table and writes
``media-<YYYYMMDD-HHMMSS>-<host>.json`` to ``DIR`` (default ``benchmarks/results``).

What is measured:

- **pipeline**: the per-packet code alone, in this process, with no sockets: a LegReceiver
  reading a 172-byte PCMU packet (12-byte header, 160 bytes of payload) from a fake socket and
  forking it to one ForkPipeline whose ``send`` does nothing, for the plain, rewrite and
  rewrite+SRTP (AES_CM_128_HMAC_SHA1_80) pipelines, and rewrite to 4 forks. The cost of the
  fake socket (a slice copy into the buffer) is measured alone and subtracted. Median of 5.
- **worker**: forwarded packets/s through one ``python -m siprec_src.media.worker`` process on
  real loopback sockets: ``streams`` tap legs, each forked to one SRS port. The load comes from
  the C paced sender and counting sink of ``benchmarks/loadgen`` (``rtpgen`` interleaves the
  streams evenly at the offered rate; ``rtpsink`` counts per SSRC and measures the latency
  from the sender's stamp to the kernel's receive time, so the figure includes the worker and
  two loopback hops). Without a C compiler it falls back to Python sender and sink processes,
  which cannot offer much more than ~50k packets/s. Loss = packets the sender handed to the
  kernel minus packets the sink received; the worker's own counters say where they went.
  ``worker_cpu`` is the worker's user+system CPU time (``/proc/<pid>/stat``) over the span
  from the first packet sent to the last one received; ``per_cpu_second`` = forwarded /
  worker_cpu. The kernel delivers each loopback send to the sink as softirq work on the
  sender's core, which is not charged to the process, so ``core_busy_percent`` and
  ``per_core_second`` take the worker's pinned core as a whole from ``/proc/stat`` (user,
  system, irq, softirq; hypervisor steal reported apart): ``per_core_second`` is the packets/s
  one fully busy worker core would forward. A remote SRS
  costs the worker's core less than this loopback sink does. A run **kept up** when nothing
  was lost and the last packet reached the sink within 0.1 s of the last send (zero loss
  alone can hide a worker seconds behind, its backlog in the socket buffers).
- **c_relay**: the C relay of ``benchmarks/loadgen`` (recvmmsg/sendmmsg, SSRC rewrite) on the
  same load and core: what this machine's kernel allows, the anchor for the Python figures.

With at least two CPUs the worker is pinned to the last one and the load generator to the
others, so they do not share a core. On a 2-CPU machine the generator and the sink share one
core, which caps the offered load near 150k packets/s: a worker that is not saturated at the
top rate shows it in ``core_busy_percent`` < 100 %. The load average at the start of each run is
in the report: other work on the machine makes every figure worse.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.report import RESULTS_DIR, Figure, ParamValue, format_table, machine, write_report
from siprec_src.media import ForkSpec, Leg, LegSpec, MediaConfig, MediaEngine, SrtpKeys
from siprec_src.media.pipeline import ForkPipeline, LegReceiver
from siprec_src.media.rtp import RtpPacket
from siprec_src.media.srtp import generate_key_params

SUITE = "AES_CM_128_HMAC_SHA1_80"
KEPT_UP_LAG = 0.1  # seconds
EPHEMERAL_START = 32768  # Linux's default ip_local_port_range starts here
# The sink looks at its sockets every millisecond instead of sleeping in epoll: otherwise every
# loopback send would also pay for waking the sink on the other CPU, a cost a remote SRS does not
# put on the sender. Latency figures then include up to 1 ms of the sink's polling.
SINK_POLL_US = 1000
MODES = ("plain", "rewrite", "srtp")
HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Counts:
    pipeline_packets: int
    repeats: int
    streams: int
    duration: float
    rates: dict[str, tuple[int, ...]]


QUICK = Counts(
    pipeline_packets=20_000,
    repeats=3,
    streams=100,
    duration=1.0,
    rates={"plain": (10_000,), "rewrite": (10_000,), "srtp": (10_000,)},
)
FULL = Counts(
    pipeline_packets=200_000,
    repeats=5,
    streams=2000,
    duration=5.0,
    rates={
        "plain": (50_000, 75_000, 100_000, 125_000, 150_000),
        "rewrite": (50_000, 75_000, 100_000, 125_000, 150_000),
        "srtp": (50_000, 75_000, 100_000, 125_000),
    },
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


def pipeline_figures(counts: Counts) -> list[Figure]:
    figures = []
    for mode in MODES:
        value = bench_pipeline(mode, counts.pipeline_packets, counts.repeats)
        figures.append(Figure(f"pipeline.{mode}.time", value, "µs/packet", {"packet_bytes": 172}))
    value = bench_pipeline("rewrite", counts.pipeline_packets, counts.repeats, forks=4)
    figures.append(
        Figure("pipeline.rewrite_4_forks.time", value, "µs/packet", {"packet_bytes": 172, "forks": 4})
    )
    return figures


# --- one worker on real sockets -------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _core_ticks(cpu: int) -> tuple[int, int, int]:
    """(busy, steal, total) clock ticks of one CPU from /proc/stat: busy is user, nice,
    system, irq and softirq, where the kernel's loopback delivery of the worker's sends runs."""
    with open("/proc/stat", encoding="ascii") as stat:
        for line in stat:
            if line.startswith(f"cpu{cpu} "):
                user, nice, system, idle, iowait, irq, softirq, steal = map(int, line.split()[1:9])
                busy = user + nice + system + irq + softirq
                return busy, steal, busy + steal + idle + iowait
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


def _cpus() -> tuple[set[int] | None, list[int] | None]:
    """(worker CPUs, load generator CPUs): separate cores when there are at least two."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return {available[-1]}, available[:-1]


@dataclass(slots=True)
class LoadResult:
    sent: int
    received: int
    send_seconds: float  # from the first packet sent to the last
    span_seconds: float  # from the first packet sent to the last one received
    latency_p50_us: float | None = None
    latency_p99_us: float | None = None
    rtcp_received: int = 0


class LoadGenerator:
    """The C instruments of benchmarks/loadgen, or a Python fallback."""

    def __init__(self) -> None:
        self.kind = "python"
        self._loadgen: Any = None
        with contextlib.suppress(Exception):
            from benchmarks import loadgen

            loadgen.build("rtpgen")
            loadgen.build("rtpsink")
            self._loadgen = loadgen
            self.kind = "c (benchmarks/loadgen rtpgen + rtpsink)"

    def free_base(self, ports: int) -> int:
        """A base such that ``ports`` consecutive UDP ports are free now, below the ephemeral range
        (where the senders' source ports come from)."""
        if self._loadgen is not None:
            return int(self._loadgen.free_port_base(ports, step=1, high=EPHEMERAL_START))
        return _free_base(ports)

    def run(
        self,
        *,
        taps: int,
        sink: int,
        streams: int,
        rate: int,
        duration: float,
        srtp: bool,
        cpus: list[int] | None,
    ) -> LoadResult:
        if self._loadgen is None:
            return _python_load(taps, sink, streams, rate, duration)
        loadgen = self._loadgen
        expect = round(rate * duration)
        # The sink stops once every packet arrived, or at the end of the run plus a margin (not
        # on idleness: the forks' RTCP reports keep its RTCP ports busy).
        with loadgen.start_sink(
            base_port=sink,
            count=streams,
            expect=expect,
            duration=duration + 3.0,
            srtp=srtp,
            rtcp=True,
            per_stream=False,
            poll_us=SINK_POLL_US,
            cpus=cpus,
        ) as receiver:
            gen = loadgen.run_gen(
                base_port=taps, streams=streams, rate=rate, packets=expect, per_stream=False, cpus=cpus
            )
            got = receiver.result(30.0)
        latency = got.latency_us
        span = (got.last_rx_ns - gen.first_stamp_ns) / 1e9 if got.packets else gen.elapsed_s
        return LoadResult(
            sent=gen.sent,
            received=got.packets,
            send_seconds=gen.elapsed_s,
            span_seconds=max(span, gen.elapsed_s),
            latency_p50_us=None if latency is None else latency.p50,
            latency_p99_us=None if latency is None else latency.p99,
            rtcp_received=got.rtcp_packets,
        )

    def relay(
        self, *, streams: int, rate: int, duration: float, cpus: tuple[set[int] | None, list[int] | None]
    ) -> Figure | None:
        """The C relay of benchmarks/loadgen (recvmmsg/sendmmsg, SSRC rewrite) on the same load:
        what this machine's kernel allows, the anchor for the Python worker's figures."""
        if self._loadgen is None:
            return None
        loadgen = self._loadgen
        relay_cpus, load_cpus = cpus
        taps = self.free_base(2 * streams)
        sink = self.free_base(2 * streams)
        expect = round(rate * duration)
        core = min(relay_cpus) if relay_cpus else None
        core_before = _core_ticks(core) if core is not None else (0, 0, 0)
        with loadgen.start_relay(
            in_base=taps, dest_base=sink, count=streams, rewrite=True, cpus=sorted(relay_cpus or ())
        ) as relay:
            with loadgen.start_sink(
                base_port=sink,
                count=streams,
                expect=expect,
                duration=duration + 3.0,
                per_stream=False,
                cpus=load_cpus,
            ) as receiver:
                gen = loadgen.run_gen(
                    base_port=taps,
                    streams=streams,
                    rate=rate,
                    packets=expect,
                    per_stream=False,
                    cpus=load_cpus,
                )
                got = receiver.result(30.0)
            counters = relay.stop()
        core_after = _core_ticks(core) if core is not None else (0, 0, 0)
        busy, steal, total = (after - before for after, before in zip(core_after, core_before, strict=True))
        span = (
            max((got.last_rx_ns - gen.first_stamp_ns) / 1e9, gen.elapsed_s) if got.packets else gen.elapsed_s
        )
        params: dict[str, ParamValue] = {
            "streams": streams,
            "offered_rate": rate,
            "sent": gen.sent,
            "sink_received": got.packets,
            "lost": gen.sent - got.packets,
            "relay_cpu_percent": round(100 * counters.cpu_s / span, 1),
            "per_cpu_second": round(counters.forwarded / counters.cpu_s) if counters.cpu_s else 0,
        }
        if total:
            params["core_busy_percent"] = round(100 * busy / total, 1)
            params["core_steal_percent"] = round(100 * steal / total, 1)
            params["per_core_second"] = (
                round(counters.forwarded * os.sysconf("SC_CLK_TCK") / busy) if busy else 0
            )
        if got.latency_us is not None:
            params["latency_p50_us"] = round(got.latency_us.p50, 1)
            params["latency_p99_us"] = round(got.latency_us.p99, 1)
        return Figure(f"c_relay.{rate}", got.packets / span, "packets/s", params)


def _free_base(ports: int) -> int:
    for base in range(20000, EPHEMERAL_START - ports, ports + (ports & 1)):
        held = []
        try:
            for port in range(base, base + ports):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind((HOST, port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError(f"no {ports} consecutive free ports")


# Python fallback: sender processes pace their share of the streams in 1 ms slots; a sink process
# counts datagrams. Each is one short script run with ``python -c``.
_SENDER = """
import socket, struct, sys, time
base, first, count = (int(arg) for arg in sys.argv[1:4])
rate, duration = float(sys.argv[4]), float(sys.argv[5])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = bytes(160)
header = struct.Struct("!BBHII")
total = round(rate * duration)
start = time.monotonic()
print(start, flush=True)
sent = 0
while sent < total:
    due = min(total, int((time.monotonic() - start) * rate) + 1)
    while sent < due:
        index, seq = sent % count, sent // count
        packet = header.pack(0x80, 0, seq & 0xFFFF, 160 * seq & 0xFFFFFFFF, first + index) + payload
        sock.sendto(packet, ("127.0.0.1", base + 2 * index))
        sent += 1
    time.sleep(0.001)
print(time.monotonic(), sent)
"""
_SINK = """
import select, socket, sys, time
base, count, idle = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
poller = select.epoll()
socks = {}
for i in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    s.bind(("127.0.0.1", base + 2 * i))
    s.setblocking(False)
    socks[s.fileno()] = s
    poller.register(s.fileno(), select.EPOLLIN)
print("ready", flush=True)
received = 0
last = None
while True:
    events = poller.poll(0.1)
    for fd, _ in events:
        while True:
            try:
                socks[fd].recv(2048)
                received += 1
            except BlockingIOError:
                break
    if events:
        last = time.monotonic()
    elif last is not None and time.monotonic() - last > idle:
        break
print(last, received)
"""


def _python_load(taps: int, sink: int, streams: int, rate: int, duration: float) -> LoadResult:
    senders = max(1, min(4, (os.cpu_count() or 2) - 1))
    receiver = subprocess.Popen(
        [sys.executable, "-c", _SINK, str(sink), str(streams), "1.0"], stdout=subprocess.PIPE, text=True
    )
    assert receiver.stdout is not None
    receiver.stdout.readline()  # "ready"
    share = streams // senders
    processes = []
    for index in range(senders):
        first = index * share
        count = share if index < senders - 1 else streams - first
        argv = [str(taps + 2 * first), str(first), str(count), str(rate / senders), str(duration)]
        processes.append(
            subprocess.Popen([sys.executable, "-c", _SENDER, *argv], stdout=subprocess.PIPE, text=True)
        )
    reports = [process.communicate()[0].split() for process in processes]
    first = min(float(report[0]) for report in reports)
    sent = sum(int(report[-1]) for report in reports)
    send_seconds = max(float(report[1]) for report in reports) - first
    last, received = receiver.communicate()[0].split()[-2:]
    span = float(last) - first if last != "None" else send_seconds
    return LoadResult(sent, int(received), send_seconds, max(span, send_seconds))


async def _worker_with_taps(
    stack: contextlib.AsyncExitStack, streams: int, load: LoadGenerator
) -> tuple[MediaEngine, int, list[int]]:
    """One worker with ``streams`` tap legs on consecutive even ports (what rtpgen sends to).

    Another program on the machine can take a port between the probe and the bind; then the
    taps are not consecutive and it starts over on another range.
    """
    worker_cpus, _ = _cpus()
    for _attempt in range(5):
        base = load.free_base(4 * streams)  # legs, then forks: 2 * streams pairs
        config = MediaConfig(workers=1, port_min=base, port_max=base + 4 * streams - 1, stream_timeout=60.0)
        engine = MediaEngine(config)
        await engine.start()
        pid = engine.worker_pids[0]
        assert pid is not None
        if worker_cpus is not None:
            os.sched_setaffinity(pid, worker_cpus)
        taps = []
        for index in range(streams):
            tap = await engine.open_leg(LegSpec(f"call-{index}", Leg.INBOUND, bind_host=HOST))
            assert tap is not None
            taps.append(tap[1])
        if taps == list(range(taps[0], taps[0] + 2 * streams, 2)):
            stack.push_async_callback(engine.close)
            return engine, pid, taps
        await engine.close()
    raise RuntimeError("could not bind consecutive tap ports (other programs keep taking ports)")


async def bench_worker(mode: str, streams: int, rate: int, duration: float, load: LoadGenerator) -> Figure:
    """Offer ``rate`` packets/s over ``streams`` legs to one worker; count what comes out.

    Other programs on the machine may take one of the probed ports before the sink binds it;
    such a run is started over (three times at most).
    """
    for attempt in range(3):
        try:
            return await _bench_worker_once(mode, streams, rate, duration, load)
        except Exception as exc:
            if "Address already in use" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _bench_worker_once(
    mode: str, streams: int, rate: int, duration: float, load: LoadGenerator
) -> Figure:
    worker_cpus, load_cpus = _cpus()
    loadavg = os.getloadavg()[0]
    async with contextlib.AsyncExitStack() as stack:
        engine, pid, taps = await _worker_with_taps(stack, streams, load)
        locals_ = [await engine.reserve_fork_port(f"call-{i}", f"fork-{i}", HOST) for i in range(streams)]
        sink = load.free_base(2 * streams)  # RTP and RTCP ports, once every port of ours is bound
        for index, local in enumerate(locals_):
            call = f"call-{index}"
            spec = _fork_spec(
                mode,
                f"fork-{index}",
                local,
                call_id=call,
                remote_rtp=(HOST, sink + 2 * index),
                remote_rtcp=(HOST, sink + 2 * index + 1),
                ssrc=0x5EC00000 + index,
            )
            await engine.start_fork(spec)
        core = min(worker_cpus) if worker_cpus else None
        core_before = _core_ticks(core) if core is not None else (0, 0, 0)
        cpu_before = _cpu_seconds(pid)
        result = await asyncio.to_thread(
            load.run,
            taps=taps[0],
            sink=sink,
            streams=streams,
            rate=rate,
            duration=duration,
            srtp=mode == "srtp",
            cpus=load_cpus,
        )
        cpu = _cpu_seconds(pid) - cpu_before
        core_after = _core_ticks(core) if core is not None else (0, 0, 0)
        forks = [await engine.fork_stats(f"fork-{index}") for index in range(streams)]
        legs = [await engine.leg_stats(f"call-{index}", Leg.INBOUND) for index in range(streams)]
    forwarded = sum(f.packets_sent for f in forks)
    span = result.span_seconds
    # Kept up: nothing lost, and the last packet arrived within KEPT_UP_LAG of the last send
    # (zero loss alone can hide a worker that fell seconds behind into its socket buffers).
    lag = span - result.send_seconds
    params: dict[str, ParamValue] = {
        "mode": mode,
        "streams": streams,
        "offered_rate": rate,
        "sent": result.sent,
        "leg_received": sum(leg.packets for leg in legs),
        "forwarded": forwarded,
        "send_errors": sum(f.send_errors for f in forks),
        "srtp_failures": sum(f.srtp_failures for f in forks),
        "sink_received": result.received,
        "lost": result.sent - result.received,
        "last_packet_lag_s": round(lag, 3),
        "kept_up": result.sent == result.received and lag <= KEPT_UP_LAG,
        "worker_cpu_percent": round(100 * cpu / span, 1),
        "per_cpu_second": round(forwarded / cpu) if cpu else 0,
        "rtcp_at_sink": result.rtcp_received,
        "loadavg_at_start": round(loadavg, 2),
        "load": load.kind,
    }
    busy, steal, total = (after - before for after, before in zip(core_after, core_before, strict=True))
    if total:
        # The worker's core as a whole: the process, plus the softirq work its sends cause, plus
        # what the hypervisor took (steal). per_core_second = what one such core forwards.
        params["core_busy_percent"] = round(100 * busy / total, 1)
        params["core_steal_percent"] = round(100 * steal / total, 1)
        ticks = os.sysconf("SC_CLK_TCK")
        params["per_core_second"] = round(forwarded * ticks / busy) if busy else 0
    if result.latency_p50_us is not None:
        params["latency_p50_us"] = round(result.latency_p50_us, 1)
        params["latency_p99_us"] = round(result.latency_p99_us or 0.0, 1)
    return Figure(f"worker.{mode}.{rate}", result.received / span, "packets/s", params)


async def worker_figures(
    counts: Counts, modes: Sequence[str], load: LoadGenerator, *, with_relay: bool = True
) -> list[Figure]:
    figures = []
    for mode in modes:
        runs = []
        for rate in counts.rates[mode]:
            figure = await bench_worker(mode, counts.streams, rate, counts.duration, load)
            runs.append(figure)
            print(f"  {figure.name}: {_describe(figure)}", flush=True)
        figures += runs
        kept_up = [run for run in runs if run.params["kept_up"]]
        if kept_up:
            best = kept_up[-1]
            params = {k: best.params[k] for k in ("offered_rate", "worker_cpu_percent", "per_cpu_second")}
            figures.append(Figure(f"worker.{mode}.max_kept_up", best.value, "packets/s", params))
        # At the highest load tried: packets per second of the worker process's CPU time, and
        # per second of its whole core (with the kernel's softirq work for it), the rate one
        # fully busy core reaches.
        top = runs[-1]
        figures.append(
            Figure(
                f"worker.{mode}.per_cpu_second",
                float(top.params["per_cpu_second"]),
                "packets/cpu-s",
                {k: top.params[k] for k in ("offered_rate", "worker_cpu_percent")},
            )
        )
        if "per_core_second" in top.params:
            figures.append(
                Figure(
                    f"worker.{mode}.per_core_second",
                    float(top.params["per_core_second"]),
                    "packets/core-s",
                    {k: top.params[k] for k in ("offered_rate", "core_busy_percent", "core_steal_percent")},
                )
            )
    relay_rate = max(counts.rates.get("rewrite", (0,)))
    if relay_rate and with_relay:
        relay = None
        for attempt in range(3):
            try:
                relay = await asyncio.to_thread(
                    load.relay,
                    streams=counts.streams,
                    rate=relay_rate,
                    duration=counts.duration,
                    cpus=_cpus(),
                )
                break
            except Exception as exc:  # a port taken by another program: start over
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
        if relay is not None:
            print(
                f"  {relay.name}: {relay.value:,.0f} pkt/s, {relay.params['relay_cpu_percent']}% CPU",
                flush=True,
            )
            figures.append(relay)
    return figures


def _describe(figure: Figure) -> str:
    p = figure.params
    text = (
        f"{figure.value:,.0f} pkt/s of {p['offered_rate']:,} offered, lost {p['lost']}, "
        f"last packet {p['last_packet_lag_s']} s after the last send, "
        f"worker {p['worker_cpu_percent']}% CPU = {p['per_cpu_second']:,} pkt/cpu-s"
    )
    if "core_busy_percent" in p:
        text += (
            f", its core {p['core_busy_percent']}% busy (steal {p['core_steal_percent']}%)"
            f" = {p['per_core_second']:,} pkt/core-s"
        )
    if "latency_p50_us" in p:
        text += f", latency p50 {p['latency_p50_us']} µs p99 {p['latency_p99_us']} µs"
    return text


# --- running and reporting ------------------------------------------------------------------------


def build_report(figures: Sequence[Figure], counts: Counts, load: str, *, quick: bool) -> dict[str, Any]:
    return {
        **machine("media"),
        "quick": quick,
        "load_generator": load,
        "counts": asdict(counts),
        "figures": [asdict(figure) for figure in figures],
    }


def run(counts: Counts, modes: Sequence[str], *, with_worker: bool = True) -> tuple[list[Figure], str]:
    figures = pipeline_figures(counts)
    load = LoadGenerator()
    if with_worker:
        print(f"worker runs: {counts.streams} streams, {counts.duration} s each, load from {load.kind}")
        figures += asyncio.run(worker_figures(counts, modes, load))
    return figures, load.kind


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts, about 15 s")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSON report")
    parser.add_argument("--modes", default=",".join(MODES), help="worker runs for these pipelines")
    parser.add_argument("--streams", type=int, help="legs (and forks) in the worker runs")
    parser.add_argument("--duration", type=float, help="seconds of load per worker run")
    parser.add_argument("--rates", help="offered packets/s, comma separated, for every mode")
    parser.add_argument("--pipeline-only", action="store_true", help="skip the worker runs")
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else FULL
    modes = [mode for mode in args.modes.split(",") if mode]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes {sorted(unknown)}; allowed: {', '.join(MODES)}")
    if args.streams or args.duration or args.rates:
        rates = counts.rates
        if args.rates:
            chosen = tuple(int(rate) for rate in args.rates.split(","))
            rates = dict.fromkeys(MODES, chosen)
        counts = Counts(
            counts.pipeline_packets,
            counts.repeats,
            args.streams or counts.streams,
            args.duration or counts.duration,
            rates,
        )
    figures, load = run(counts, modes, with_worker=not args.pipeline_only)
    report = build_report(figures, counts, load, quick=args.quick)
    print(f"{report['host']}  Python {report['python']}  {report['cpu_count']} CPUs  load: {load}")
    print(format_table(figures))
    print(f"wrote {write_report(report, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
