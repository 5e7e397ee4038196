"""Measure the instruments themselves on this machine: how fast rtpgen -> rtpsink goes without
loss, and what the C relay (the physical-limit anchor) forwards between them.

Run ``python -m benchmarks.loadgen.measure [--quick] [--json PATH]``. Every step offers
``rate`` packets/s as ``rate / 50`` streams of 50 packets/s (172-byte PCMU packets) for
``--duration`` seconds, and reports per step: what the generator achieved, loss (packets sent
minus packets counted by the sink), latency p50/p99/p99.9 (kernel receive stamp minus send
stamp), CPU seconds per million packets of each process, and the CPU time the rest of the
machine used meanwhile ("other", from /proc/stat): a busy neighbour spoils a run, so a step
first waits (``--quiet-wait``) for the machine to calm down.

Pinning (``--cpu`` of each program) is given by the layouts in ``LAYOUTS``: ``direct`` puts the
generator on CPU 0 and the sink on CPU 1; the relay layouts put the relay alone on CPU 1 and the
generator and the sink on CPU 0. The loopback's receive path (IP/UDP input, socket lookup,
enqueue, wake-up) runs in the sending process's context, so the relay's CPU also pays for
delivering to the sink, and the generator's for delivering to the relay.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.loadgen.build import build_all
from benchmarks.loadgen.runner import (
    GenResult,
    Relay,
    RelayResult,
    SinkResult,
    run_gen,
    start_on_free_ports,
    start_relay,
    start_sink,
)

PPS_PER_STREAM = 50.0
OTHER_CPU_LIMIT = 0.05
"""A step is disturbed when other processes used more than this many CPU-seconds per second."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each process runs (a ``--cpu`` list, or None for anywhere) and how."""

    name: str
    gen_cpus: str | None
    sink_cpus: str | None
    relay_cpus: str | None = None
    gen_threads: int = 1
    sink_poll_us: int = 0
    relay_shared_tx: bool = False


LAYOUTS: dict[str, tuple[str, Layout]] = {
    "direct": ("direct", Layout("gen@0 sink@1", gen_cpus="0", sink_cpus="1")),
    "direct-2t": (
        "direct",
        Layout("gen(2 threads)@0,1 sink@any", gen_cpus="0,1", sink_cpus=None, gen_threads=2),
    ),
    "relay": ("relay", Layout("gen@0 relay@1 sink@0", gen_cpus="0", sink_cpus="0", relay_cpus="1")),
    "relay-poll": (
        "relay",
        Layout(
            "gen@0 relay@1 sink@0, sink polls", gen_cpus="0", sink_cpus="0", relay_cpus="1", sink_poll_us=200
        ),
    ),
    "relay-shared": (
        "relay",
        Layout(
            "gen@0 relay@1 sink@0, sink polls, relay --shared-tx",
            gen_cpus="0",
            sink_cpus="0",
            relay_cpus="1",
            sink_poll_us=200,
            relay_shared_tx=True,
        ),
    ),
}
"""By name: (scenario, layout). "relay-poll" spares the relay the sink's wake-ups; "relay-shared"
also lets it batch its sends across ports from one socket (an upper bound, not a fork)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One load step: what was offered and what each instrument reported."""

    scenario: str
    layout: str
    target_rate: float
    streams: int
    gen: GenResult
    sink: SinkResult
    relay: RelayResult | None
    other_cpu_s: float
    wall_s: float

    @property
    def loss_pct(self) -> float:
        return 100.0 * (self.gen.sent - self.sink.packets) / self.gen.sent if self.gen.sent else 0.0

    @property
    def rate_ok(self) -> bool:
        """The generator kept its schedule (99.5 % of the target rate)."""
        return self.gen.achieved_rate >= 0.995 * self.target_rate

    @property
    def sustained(self) -> bool:
        """Offered rate sent and received with < 0.1 % loss and no growing queue (p99 latency
        under 10 ms: a saturated relay loses nothing for a while, its big queues just grow)."""
        latency = self.sink.latency_us
        return (
            self.rate_ok
            and self.loss_pct < 0.1
            and self.sink.rate >= 0.99 * self.target_rate
            and latency is not None
            and latency.p99 < 10_000
        )

    def row(self) -> dict[str, float | int | str | None]:
        latency = self.sink.latency_us
        mpkt = self.gen.sent / 1e6 if self.gen.sent else 1.0
        return {
            "scenario": self.scenario,
            "layout": self.layout,
            "target_pps": round(self.target_rate),
            "streams": self.streams,
            "gen_pps": round(self.gen.achieved_rate),
            "gen_lag_p99_us": round(self.gen.lag_us.p99, 1) if self.gen.lag_us else None,
            "sink_pps": round(self.sink.rate),
            "loss_pct": round(self.loss_pct, 4),
            "sink_drops": self.sink.socket_drops,
            "relay_drops": self.relay.socket_drops if self.relay else None,
            "lat_p50_us": round(latency.p50, 1) if latency else None,
            "lat_p99_us": round(latency.p99, 1) if latency else None,
            "lat_p999_us": round(latency.p999, 1) if latency else None,
            "gen_cpu_s_per_mpkt": round(self.gen.cpu_s / mpkt, 2),
            "relay_cpu_s_per_mpkt": round(self.relay.cpu_s / mpkt, 2) if self.relay else None,
            "sink_cpu_s_per_mpkt": round(self.sink.cpu_s / mpkt, 2),
            "other_cpu_s": round(self.other_cpu_s, 2),
            "sustained": "yes" if self.sustained else "no",
        }


def busy_cpu_s() -> float:
    """CPU seconds spent not idle by all CPUs since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()[1:9]
    ticks = [int(value) for value in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait: float, threshold: float = 0.10, window: float = 0.5) -> float:
    """Wait (up to max_wait s) until the machine is below `threshold` busy over `window` s;
    returns the last busy fraction seen."""
    cpus = os.cpu_count() or 1
    deadline = time.monotonic() + max_wait
    while True:
        before = busy_cpu_s()
        time.sleep(window)
        fraction = (busy_cpu_s() - before) / (window * cpus)
        if fraction < threshold or time.monotonic() >= deadline:
            return fraction


def process_cpu() -> dict[int, tuple[int, float]]:
    """Every user-space process: pid -> (parent pid, CPU seconds so far)."""
    found = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parent, flags = int(fields[1]), int(fields[6])
        if flags & 0x00200000 or parent == 2:  # PF_KTHREAD: the kernel's own threads
            continue
        found[int(entry.name)] = (parent, (int(fields[11]) + int(fields[12])) / ticks)
    return found


def other_cpu_seconds(before: dict[int, tuple[int, float]], after: dict[int, tuple[int, float]]) -> float:
    """CPU seconds that processes other than this one and its descendants (the subject, the
    load generator, the sink) used between two ``process_cpu()`` snapshots: a neighbour that
    disturbed the step. A process that started and ended in between is not seen."""
    ours = {os.getpid()}
    grew = True
    while grew:
        grew = False
        for pid, (parent, _) in after.items():
            if parent in ours and pid not in ours:
                ours.add(pid)
                grew = True
    other = 0.0
    for pid, (_, cpu) in after.items():
        if pid not in ours:
            other += cpu - before[pid][1] if pid in before else cpu
    return max(other, 0.0)


def run_step(scenario: str, layout: Layout, rate: float, duration: float, quiet_wait: float) -> Step:
    streams = max(1, round(rate / PPS_PER_STREAM))
    planned = round(rate * duration)
    wait_quiet(quiet_wait)
    started = time.monotonic()
    busy_before = busy_cpu_s()
    relay_result: RelayResult | None = None
    sink_base, sink = start_on_free_ports(
        streams,
        lambda base: start_sink(
            base_port=base,
            count=streams,
            expect=planned,
            idle_timeout=1.0,
            per_stream=False,
            poll_us=layout.sink_poll_us,
            cpus=layout.sink_cpus,
        ),
    )
    with sink:
        gen_base = sink_base
        with contextlib.ExitStack() as stack:
            relay: Relay | None = None
            if scenario == "relay":
                gen_base, relay = start_on_free_ports(
                    streams,
                    lambda base: start_relay(
                        in_base=base,
                        dest_base=sink_base,
                        count=streams,
                        cpus=layout.relay_cpus,
                        shared_tx=layout.relay_shared_tx,
                    ),
                    even=False,  # may interleave with the sink's even ports
                )
                stack.enter_context(relay)
            gen = run_gen(
                base_port=gen_base,
                streams=streams,
                rate=rate,
                duration=duration,
                threads=layout.gen_threads,
                per_stream=False,
                cpus=layout.gen_cpus,
            )
            sink_result = sink.result(timeout=duration + 30.0)
            if relay is not None:
                relay_result = relay.stop()
    busy = busy_cpu_s() - busy_before
    ours = gen.cpu_s + sink_result.cpu_s + (relay_result.cpu_s if relay_result else 0.0)
    return Step(
        scenario=scenario,
        layout=layout.name,
        target_rate=rate,
        streams=streams,
        gen=gen,
        sink=sink_result,
        relay=relay_result,
        other_cpu_s=max(0.0, busy - ours),
        wall_s=time.monotonic() - started,
    )


def format_table(steps: Sequence[Step]) -> str:
    columns = [
        ("scenario", "scenario", 8),
        ("target_pps", "offered/s", 9),
        ("gen_pps", "sent/s", 8),
        ("sink_pps", "recv/s", 8),
        ("loss_pct", "loss%", 7),
        ("lat_p50_us", "p50us", 7),
        ("lat_p99_us", "p99us", 7),
        ("lat_p999_us", "p999us", 8),
        ("gen_cpu_s_per_mpkt", "gen s/M", 7),
        ("relay_cpu_s_per_mpkt", "rly s/M", 7),
        ("sink_cpu_s_per_mpkt", "snk s/M", 7),
        ("other_cpu_s", "other s", 7),
        ("sustained", "ok", 3),
        ("layout", "layout", 0),
    ]
    lines = [" ".join(f"{title:>{width}}" for _, title, width in columns)]
    for step in steps:
        row = step.row()
        cells = []
        for key, _, width in columns:
            value = row[key]
            cells.append(f"{'-' if value is None else value!s:>{width}}")
        lines.append(" ".join(cells))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 s steps, fewer rates")
    parser.add_argument("--duration", type=float, default=None, help="seconds per step (default 3)")
    parser.add_argument(
        "--direct-rates", type=str, default="100000,200000,300000,400000", help="gen -> sink ladder"
    )
    parser.add_argument("--relay-rates", type=str, default="100000,200000,300000", help="relay ladder")
    parser.add_argument("--quiet-wait", type=float, default=20.0, help="max s to wait for an idle machine")
    parser.add_argument("--layouts", type=str, default=",".join(LAYOUTS), help=f"of {', '.join(LAYOUTS)}")
    parser.add_argument("--retries", type=int, default=2, help="reruns of a step a neighbour disturbed")
    parser.add_argument("--json", type=Path, default=None, help="write the steps as JSON here")
    args = parser.parse_args(argv)
    duration = args.duration if args.duration is not None else (1.0 if args.quick else 3.0)
    direct_rates = [float(rate) for rate in args.direct_rates.split(",") if rate]
    relay_rates = [float(rate) for rate in args.relay_rates.split(",") if rate]
    if args.quick:
        direct_rates, relay_rates = direct_rates[:2], relay_rates[:2]

    build_all()
    steps: list[Step] = []
    plan: list[tuple[str, Layout, list[float]]] = []
    for name in args.layouts.split(","):
        if name not in LAYOUTS:
            parser.error(f"unknown layout {name!r}; allowed: {', '.join(LAYOUTS)}")
        scenario, layout = LAYOUTS[name]
        plan.append((scenario, layout, direct_rates if scenario == "direct" else relay_rates))
    for scenario, layout, rates in plan:
        for rate in rates:
            step = run_step(scenario, layout, rate, duration, args.quiet_wait)
            for _ in range(args.retries):  # a neighbour used the CPUs meanwhile: try again
                if step.other_cpu_s <= OTHER_CPU_LIMIT * step.wall_s:
                    break
                print(format_table([step]).splitlines()[1] + "  (disturbed, again)", flush=True)
                step = run_step(scenario, layout, rate, duration, args.quiet_wait)
            steps.append(step)
            print(format_table([step]).splitlines()[1], flush=True)
    print()
    print(format_table(steps))
    for scenario, layout, _ in plan:
        clean = [step.target_rate for step in steps if step.layout == layout.name and step.sustained]
        best = f"{max(clean):.0f} packets/s" if clean else "none of the steps"
        print(f"highest step sustained ({scenario}, {layout.name}): {best}")
    if args.json is not None:
        report = {
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": platform.node(),
            "cpu_count": os.cpu_count(),
            "duration_s": duration,
            "steps": [
                {
                    **step.row(),
                    "gen": asdict(step.gen) | {"sent_per_stream": []},
                    "sink": asdict(step.sink) | {"streams": {}},
                    "relay": asdict(step.relay) if step.relay else None,
                }
                for step in steps
            ],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
