"""Signaling benchmark: SIPREC recording sessions set up and torn down per second against SIPp as the SRS.

Run ``python -m benchmarks.bench_signaling [--quick] [--out DIR]`` from the checkout. It prints
tables and writes ``signaling-<YYYYMMDD-HHMMSS>-<host>.json`` to ``DIR`` (default
``benchmarks/results``). ``--quick`` takes about 10 s, the full run about 90 s.

**What one session is.** What a sidecar does for a call recorded with one connector, through the
public API ``siprec_src.Engine`` (README "Embedding"): ``open_call`` with two tap legs (an even/odd
UDP port pair per leg, where the PBX would send copies of its RTP), ``call.record(connector=...,
track=both_tracks)``, ``recording.wait_started()`` (the SRS's 2xx came and both forks run), then
``call.close()`` (BYE, its 200, forks stopped with RTCP BYE, tap legs closed). On the wire, per
session: INVITE with the RFC 7866 multipart body (SDP offer with two ``a=sendonly`` m-lines and
RFC 7865 metadata), 200 OK with the SDP answer, ACK, BYE, 200 OK. Settings are what a real
deployment uses: plain RTP/AVP PCMU, the default session timer (``Session-Expires: 1800``, so no
refresh happens during the run), SIP over UDP (and TCP), the SRS on loopback. No RTP flows: this
measures the signaling and the media set-up, not the packet path (``bench_media``).

**The SRS** is SIPp (``benchmarks/sipp/srs_load.xml``): it answers every INVITE with 200 and an
SDP answer, takes the ACK and answers the BYE. SIPp's own counters (``-trace_stat``, final row)
must say that it completed exactly the sessions we completed and failed none; its message counts
(``-trace_counts``) give its retransmissions.

**Configurations.** ``transport`` (UDP, TCP) × media ``workers`` (0: fork pipelines in this
process, the embedding default; 1: one media worker process, the sidecar's shape, where each
fork's set-up and tear-down is a command over the worker's socketpair). Each configuration runs
in a fresh Python process of its own (spawned) with its own SIPp, so none inherits the memory or
the garbage of another.

**Figures per configuration.**

- *rate*: ``sessions`` sessions with ``window`` of them in flight at any time; sessions per wall
  second, and setup latency (``open_call`` to ``wait_started`` returning) and teardown latency
  (``call.close()``) p50/p99. SIPp shares the machine, so the wall rate depends on it too.
- *CPU per session*: CPU seconds of our process (``time.process_time``, every thread) plus, with
  ``workers=1``, the worker's (``/proc/<pid>/stat``), divided by the sessions of the rate run;
  **sessions per core** is its inverse (what the ≥ 500/s target is about). Also over the first
  and the last third of the run apart: state the SIP core keeps for 64*T1 = 32 s after each
  session (dialogs, transactions, their timers) grows during the run, and a cost that grows with
  it shows as a last third dearer than the first. SIPp's CPU per session is given apart
  (``/proc/<pid>/stat``). CPU used meanwhile by other processes of the machine is reported: a
  figure taken while it was high is marked, and each rate run first waits up to ``quiet_wait``
  seconds for the machine to calm down.
- *unloaded latency*: ``latency_sessions`` sessions one at a time (window 1).
- *RSS per active session* (configurations with ``hold``): after a warm-up and ``gc.collect()``,
  the resident set (``VmRSS``) of our process (and of the worker) is read; then N recordings are
  started and kept active (N = each of ``hold``, cumulatively), ``gc.collect()``, SIPp is seen
  holding N calls, and the RSS is read again: (RSS − baseline) / N. The sockets' kernel buffers
  are not in any RSS. The hold runs on an engine of its own (with its own warm-up), so it does
  not reuse memory the rate run's garbage left free, and every rate run starts from a fresh
  engine.

The event loop is uvloop when it is installed (the ``uvloop`` extra), else asyncio's; the report
names it.

Targets (issue 8 §4): ≥ 500 recording sessions set up and torn down per second per core; ≤ 50 KiB
RSS per active recording session. Timings on a shared 2-CPU machine drift; the report says so.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.bench_sip import event_loop_factory
from benchmarks.loadgen.measure import other_cpu_seconds, process_cpu, wait_quiet
from benchmarks.report import RESULTS_DIR, Figure, ParamValue, format_rows, machine, write_report
from benchmarks.sipp import HOST, SCENARIO, SippSrs, SippStats, cpu_seconds, sipp_version
from siprec_src import Call, Engine, EngineConfig, MediaConfig, Party, Recording, RecordingError, Track
from siprec_src.recording.connector import connector_for
from siprec_src.signaling.transport import ListenSpec

CONNECTOR = "srs"
CALLER = Party("sip:+15551230001@pbx.example.com", "Caller")
CALLEE = Party("sip:agent-7@pbx.example.com", "Agent 7")

# Issue 8 §4.
TARGET_SESSIONS_PER_CORE = 500.0
TARGET_RSS_KIB = 50.0

SETUP_TIMEOUT = 10.0  # one session's setup or teardown; a miss counts as a failed session
# Media ports: four even/odd pairs per session (two tap legs, two forks); room for 2,000 held
# sessions plus what others hold. Not the product default 20000-29999, which the sidecars and
# tests next to a benchmark use; ports taken by anyone are skipped (a failed bind each).
PORT_MIN, PORT_MAX = 36000, 55999
FDS_PER_SESSION = 8  # two sockets (RTP, RTCP) per pair
FD_RESERVE = 400  # SIP sockets, the event loop, files: what a process holds besides media
DISTURBED = 0.10  # other processes' CPU, in cores, above which a figure is marked
FORGET_AFTER = 32.0  # 64*T1: how long the SIP core keeps a dialog and its transactions after the end
SUSTAIN_INTERVAL = 4.0  # seconds per sample of a sustained run


@dataclass(frozen=True, slots=True)
class Config:
    """One configuration: SIP transport, media workers, whether RSS is measured, and for how
    many seconds a sustained run goes on (0: none)."""

    transport: str
    workers: int
    hold: bool
    sustain: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.transport}-w{self.workers}"


@dataclass(frozen=True, slots=True)
class Counts:
    """How much each configuration does (``FULL`` about 2 minutes in all, ``QUICK`` about 10 s)."""

    warmup: int
    sessions: int  # rate run
    window: int
    latency_sessions: int  # window 1
    hold: tuple[int, ...]  # active sessions held, cumulative levels
    configs: tuple[Config, ...]
    quiet_wait: float  # seconds to wait, before each rate run, for the machine to calm down


FULL = Counts(
    warmup=100,
    sessions=3000,
    window=20,
    latency_sessions=200,
    hold=(1000, 2000),
    configs=(
        Config("udp", 0, hold=True, sustain=40.0),
        Config("udp", 1, hold=True),
        Config("tcp", 0, hold=False),
        Config("tcp", 1, hold=False),
    ),
    quiet_wait=5.0,
)
QUICK = Counts(
    warmup=20,
    sessions=300,
    window=20,
    latency_sessions=20,
    hold=(150,),
    configs=(Config("udp", 0, hold=True), Config("udp", 1, hold=False), Config("tcp", 0, hold=False)),
    quiet_wait=0.5,
)


# --- /proc ---------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (``VmRSS`` of ``/proc/<pid>/status``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (the worker inherits it); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- sessions ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Session:
    """One recording session of the benchmark: its call, its recording, its timings (seconds)."""

    call: Call
    recording: Recording
    setup: float
    teardown: float = 0.0


async def open_session(engine: Engine, failures: Counter[str]) -> Session | None:
    """Open a call with two tap legs and record it on the connector; None (and the reason
    counted in ``failures``) if that failed."""
    start = time.perf_counter()
    call = await engine.open_call(caller=CALLER, callee=CALLEE)
    try:
        recording = await call.record(connector=CONNECTOR, track=Track.BOTH)
        await recording.wait_started(timeout=SETUP_TIMEOUT)
    except RecordingError as exc:
        failures[f"setup: {exc.status} {exc}"] += 1
    except TimeoutError:
        failures[f"setup: not started within {SETUP_TIMEOUT:g} s"] += 1
    else:
        return Session(call, recording, time.perf_counter() - start)
    await call.close()
    return None


async def close_session(session: Session, failures: Counter[str]) -> bool:
    """BYE, forks stopped, legs closed; True when the recording ended as stopped."""
    start = time.perf_counter()
    try:
        async with asyncio.timeout(SETUP_TIMEOUT):
            await session.call.close()
    except TimeoutError:
        failures[f"teardown: not done within {SETUP_TIMEOUT:g} s"] += 1
        return False
    session.teardown = time.perf_counter() - start
    if session.recording.status != "stopped":
        failures[f"teardown: recording {session.recording.status}"] += 1
        return False
    return True


async def in_window(work: Callable[[int], Awaitable[None]], count: int, window: int) -> None:
    """Run ``work(0..count-1)`` with at most ``window`` of them in flight."""
    next_index = 0

    async def lane() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            await work(index)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(window, count)):
            group.create_task(lane())


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


@dataclass(slots=True)
class Meter:
    """CPU seconds of our process, the media worker and SIPp, wall time, and other processes'
    CPU, between ``start()`` and ``stop()``."""

    worker_pid: int | None
    sipp: SippSrs
    wall: float = 0.0
    ours: float = 0.0
    worker: float = 0.0
    sipp_cpu: float = 0.0
    other: float = 0.0
    _marks: tuple[Any, ...] = ()

    def start(self) -> None:
        self._marks = (
            process_cpu(),
            time.perf_counter(),
            time.process_time(),
            cpu_seconds(self.worker_pid) if self.worker_pid else 0.0,
            self.sipp.cpu_seconds(),
        )

    def cpu_now(self) -> float:
        """CPU seconds of ours (control process + worker) so far."""
        return time.process_time() + (cpu_seconds(self.worker_pid) if self.worker_pid else 0.0)

    def stop(self) -> None:
        before, wall, ours, worker, sipp = self._marks
        self.wall = time.perf_counter() - wall
        self.ours = time.process_time() - ours
        self.worker = (cpu_seconds(self.worker_pid) - worker) if self.worker_pid else 0.0
        self.sipp_cpu = self.sipp.cpu_seconds() - sipp
        self.other = other_cpu_seconds(before, process_cpu())  # SIPp and the worker are our children

    @property
    def other_cores(self) -> float:
        return self.other / self.wall if self.wall > 0 else 0.0


@dataclass(slots=True)
class RateRun:
    """``sessions`` set up and torn down with ``window`` in flight."""

    window: int
    sessions: int
    completed: int
    failed: int
    wall: float
    cpu_ours: float
    cpu_worker: float
    cpu_sipp: float
    other_cores: float
    setup_ms: dict[str, float]
    teardown_ms: dict[str, float]
    # Our CPU ms per session over the first and the last third of the run: a cost that grows
    # with the sessions of the last minute (timers, dialogs kept 64*T1) shows as last > first.
    thirds_cpu_ms: tuple[float, float]

    @property
    def rate(self) -> float:
        return self.completed / self.wall if self.wall > 0 else 0.0

    @property
    def cpu_ms(self) -> float:
        """Our CPU (control process + media worker) per completed session, ms."""
        return (self.cpu_ours + self.cpu_worker) / max(self.completed, 1) * 1000

    @property
    def per_core(self) -> float:
        """Sessions set up and torn down per CPU-second of ours: the rate one core sustains."""
        cpu = self.cpu_ours + self.cpu_worker
        return self.completed / cpu if cpu > 0 else 0.0

    @property
    def sipp_cpu_ms(self) -> float:
        return self.cpu_sipp / max(self.completed, 1) * 1000

    @property
    def disturbed(self) -> bool:
        return self.other_cores > DISTURBED


async def rate_run(
    engine: Engine, meter: Meter, sessions: int, window: int, failures: Counter[str]
) -> RateRun:
    setups: list[float] = []
    teardowns: list[float] = []
    completed = 0
    third = sessions // 3
    marks: list[float] = []  # our CPU when 0, 1/3, 2/3 and all of the sessions completed

    async def one(_: int) -> None:
        nonlocal completed
        session = await open_session(engine, failures)
        if session is None:
            return
        setups.append(session.setup)
        if await close_session(session, failures):
            completed += 1
            teardowns.append(session.teardown)
            if third and completed in (third, 2 * third):
                marks.append(meter.cpu_now())

    gc.collect()
    meter.start()
    marks.append(meter.cpu_now())
    await in_window(one, sessions, window)
    marks.append(meter.cpu_now())
    meter.stop()
    thirds = (0.0, 0.0)
    if len(marks) == 4:
        thirds = (
            (marks[1] - marks[0]) / third * 1000,
            (marks[3] - marks[2]) / (completed - 2 * third) * 1000,
        )
    return RateRun(
        window=window,
        sessions=sessions,
        completed=completed,
        failed=sessions - completed,
        wall=meter.wall,
        cpu_ours=meter.ours,
        cpu_worker=meter.worker,
        cpu_sipp=meter.sipp_cpu,
        other_cores=meter.other_cores,
        setup_ms={"p50": percentile(setups, 0.5) * 1000, "p99": percentile(setups, 0.99) * 1000},
        teardown_ms={"p50": percentile(teardowns, 0.5) * 1000, "p99": percentile(teardowns, 0.99) * 1000},
        thirds_cpu_ms=thirds,
    )


@dataclass(frozen=True, slots=True)
class Interval:
    """One ``SUSTAIN_INTERVAL`` of a sustained run."""

    end_s: float  # since the run started
    sessions: int  # completed in it
    cpu_ms: float  # ours (control + worker) per completed session
    core_dialogs: int  # dialogs the SIP core holds at its end (kept 64*T1 after they ended)


@dataclass(slots=True)
class SustainedRun:
    """Sessions set up and torn down for ``seconds`` with ``window`` in flight: the rate one core
    keeps up once the state the SIP core keeps for 64*T1 = 32 s after each session has filled up."""

    seconds: float
    window: int
    interval: float  # seconds per sample
    completed: int
    failed: int
    intervals: list[Interval]

    @property
    def steady(self) -> list[Interval]:
        """The intervals that end after the core's 32 s memory of past sessions has filled up."""
        return [each for each in self.intervals if each.end_s > FORGET_AFTER + self.interval]

    def _over(self, intervals: Sequence[Interval]) -> tuple[float, float]:
        sessions = sum(interval.sessions for interval in intervals)
        cpu_ms = sum(interval.cpu_ms * interval.sessions for interval in intervals)
        seconds = len(intervals) * self.interval
        return (sessions / seconds if seconds else 0.0), (cpu_ms / sessions if sessions else 0.0)

    @property
    def first(self) -> tuple[float, float]:
        """(sessions/s, CPU ms/session) over the first interval."""
        return self._over(self.intervals[:1])

    @property
    def last(self) -> tuple[float, float]:
        """(sessions/s, CPU ms/session) over the steady intervals."""
        return self._over(self.steady)

    @property
    def per_core(self) -> float:
        """Sessions per CPU-second of ours in the steady state."""
        cpu_ms = self.last[1]
        return 1000 / cpu_ms if cpu_ms > 0 else 0.0


async def sustained_run(
    engine: Engine, meter: Meter, seconds: float, window: int, failures: Counter[str]
) -> SustainedRun:
    # A run shorter than four intervals (tests) is sampled in quarters.
    interval = min(SUSTAIN_INTERVAL, seconds / 4)
    completed = failed = 0
    stop_at = time.monotonic() + seconds
    intervals: list[Interval] = []
    core = engine.router.core

    async def lane() -> None:
        nonlocal completed, failed
        while time.monotonic() < stop_at:
            session = await open_session(engine, failures)
            if session is not None and await close_session(session, failures):
                completed += 1
            else:
                failed += 1

    async def sample() -> None:
        started = time.monotonic()
        done, cpu = completed, meter.cpu_now()
        while time.monotonic() < stop_at:
            await asyncio.sleep(interval)
            now_done, now_cpu = completed, meter.cpu_now()
            count = now_done - done
            intervals.append(
                Interval(
                    end_s=round(time.monotonic() - started, 3),
                    sessions=count,
                    cpu_ms=(now_cpu - cpu) / count * 1000 if count else 0.0,
                    core_dialogs=len(core.dialogs),
                )
            )
            done, cpu = now_done, now_cpu

    gc.collect()
    meter.start()
    await asyncio.gather(sample(), *(lane() for _ in range(window)))
    meter.stop()
    return SustainedRun(seconds, window, interval, completed, failed, intervals)


@dataclass(frozen=True, slots=True)
class HoldLevel:
    """RSS with ``active`` recordings held, over the baseline (KiB)."""

    active: int
    opened: int  # sessions actually active (the rest failed to start)
    sipp_current: int  # calls SIPp had in progress meanwhile
    control_kib: int
    worker_kib: int
    setup_rate: float  # sessions/s while this level was opened

    @property
    def kib_per_session(self) -> float:
        return (self.control_kib + self.worker_kib) / max(self.opened, 1)


async def hold_run(
    engine: Engine,
    sipp: SippSrs,
    levels: Sequence[int],
    worker_pid: int | None,
    window: int,
    failures: Counter[str],
) -> tuple[list[HoldLevel], int, int, float]:
    """Hold ``levels`` active sessions in turn; returns the levels, the sessions completed and
    failed (all held ones are closed at the end), and the teardown rate of closing them."""
    gc.collect()
    base_control = rss_kib(os.getpid())
    base_worker = rss_kib(worker_pid) if worker_pid else 0
    held: list[Session] = []
    failed = 0
    found: list[HoldLevel] = []
    for level in levels:
        wanted = level - len(held) - failed

        async def one(_: int) -> None:
            nonlocal failed
            session = await open_session(engine, failures)
            if session is None:
                failed += 1
            else:
                held.append(session)

        started = time.perf_counter()
        await in_window(one, wanted, window)
        elapsed = time.perf_counter() - started
        # SIPp must see every session as a call in progress (and the media commands settle).
        current = await sipp.wait_current_calls(len(held), timeout=5.0)
        gc.collect()
        found.append(
            HoldLevel(
                active=level,
                opened=len(held),
                sipp_current=current,
                control_kib=rss_kib(os.getpid()) - base_control,
                worker_kib=(rss_kib(worker_pid) - base_worker) if worker_pid else 0,
                setup_rate=wanted / elapsed if elapsed > 0 else 0.0,
            )
        )
    completed = 0

    async def close(index: int) -> None:
        nonlocal completed, failed
        if await close_session(held[index], failures):
            completed += 1
        else:
            failed += 1

    started = time.perf_counter()
    await in_window(close, len(held), window)
    elapsed = time.perf_counter() - started
    return found, completed, failed, (len(held) / elapsed if elapsed > 0 else 0.0)


# --- one configuration --------------------------------------------------------------------------------


@dataclass(slots=True)
class ConfigResult:
    config: Config
    rate: RateRun
    latency: RateRun
    hold: list[HoldLevel]
    hold_teardown_rate: float
    sustained: SustainedRun | None
    completed: int  # every session of ours that ended as stopped (warm-up and hold included)
    failed: int
    sipp: SippStats
    busy_before: float  # the machine's busy fraction (all CPUs) just before the rate run
    notes: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        """SIPp completed exactly our sessions, failed none, and saw no unexpected message."""
        return (
            self.sipp.successful == self.completed
            and self.sipp.failed == 0
            and self.sipp.unexpected == 0
            and self.failed == 0
        )


def hold_levels(counts: Counts, config: Config, fd_limit: int) -> tuple[list[int], list[str]]:
    """The hold levels this process's open-file limit allows (8 sockets per active session)."""
    if not config.hold:
        return [], []
    fit = (fd_limit - FD_RESERVE) // FDS_PER_SESSION
    levels = [level for level in counts.hold if level <= fit]
    notes = [
        f"{level} active sessions skipped: open-file limit {fd_limit} fits {fit}"
        for level in counts.hold
        if level > fit
    ]
    return levels, notes


async def run_config(counts: Counts, config: Config, workdir: Path, fd_limit: int) -> ConfigResult:
    levels, notes = hold_levels(counts, config, fd_limit)
    sipp = SippSrs(workdir, config.transport, time_limit=120 + 2 * config.sustain)
    await sipp.start()
    engine_config = EngineConfig(
        sip_listen=(ListenSpec(config.transport, HOST, 0),),
        media=MediaConfig(workers=config.workers, port_min=PORT_MIN, port_max=PORT_MAX),
        media_host=HOST,
        connectors={CONNECTOR: connector_for(CONNECTOR, [sipp.uri])},
    )
    completed = failed = 0
    failures: Counter[str] = Counter()  # why sessions of ours failed, if any did
    hold: list[HoldLevel] = []
    hold_teardown = 0.0
    sustained: SustainedRun | None = None

    async def warm_up(engine: Engine, meter: Meter) -> None:
        # Imports, caches, the TCP connection, the worker's first commands.
        nonlocal completed, failed
        warm = await rate_run(engine, meter, counts.warmup, min(counts.window, counts.warmup), failures)
        completed += warm.completed
        failed += warm.failed

    try:
        if levels:
            # Its own engine: the rate run then starts from the same state in every configuration,
            # and the held sessions' baseline is not lowered by memory the rate run left free.
            async with Engine(engine_config) as engine:
                worker_pid = engine.media.worker_pids[0] if config.workers else None
                await warm_up(engine, Meter(worker_pid, sipp))
                hold, done, missed, hold_teardown = await hold_run(
                    engine, sipp, levels, worker_pid, counts.window, failures
                )
                completed += done
                failed += missed
        async with Engine(engine_config) as engine:
            worker_pid = engine.media.worker_pids[0] if config.workers else None
            meter = Meter(worker_pid, sipp)
            await warm_up(engine, meter)
            # Other helpers' load shows in the wall rate and, through shared caches, in CPU time.
            busy = await asyncio.to_thread(wait_quiet, counts.quiet_wait) if counts.quiet_wait else 0.0
            rate = await rate_run(engine, meter, counts.sessions, counts.window, failures)
            latency = await rate_run(engine, meter, counts.latency_sessions, 1, failures)
            completed += rate.completed + latency.completed
            failed += rate.failed + latency.failed
        if config.sustain:
            async with Engine(engine_config) as engine:
                worker_pid = engine.media.worker_pids[0] if config.workers else None
                meter = Meter(worker_pid, sipp)
                await warm_up(engine, meter)
                sustained = await sustained_run(engine, meter, config.sustain, counts.window, failures)
                completed += sustained.completed
                failed += sustained.failed
    finally:
        stats = await sipp.finish()
    if stats.killed:
        notes.append("SIPp did not end when asked (calls still in progress): killed")
    notes += [f"{count} sessions failed: {reason}" for reason, count in failures.most_common()]
    return ConfigResult(
        config, rate, latency, hold, hold_teardown, sustained, completed, failed, stats, busy, notes
    )


# --- targets and tables ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    goal: str
    measured: float | None
    threshold: float
    higher_is_better: bool
    unit: str
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """Measured over the goal, oriented so that >= 1 means met."""
        if self.measured is None or self.measured <= 0:
            return None
        return self.measured / self.threshold if self.higher_is_better else self.threshold / self.measured

    @property
    def met(self) -> bool | None:
        ratio = self.ratio
        return None if ratio is None else ratio >= 1.0

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "not measured"
        return "met" if self.met else f"missed ({self.ratio:.0%} of goal)"


def targets(results: Sequence[ConfigResult]) -> list[Target]:
    found = []
    for result in results:
        label = result.config.label
        found.append(
            Target(
                f"{label}.sessions_per_core",
                f"{label}: sessions set up + torn down per CPU-s >= {TARGET_SESSIONS_PER_CORE:g}",
                result.rate.per_core,
                TARGET_SESSIONS_PER_CORE,
                True,
                "sessions/CPU-s",
                "other processes busy meanwhile" if result.rate.disturbed else "",
            )
        )
        if result.sustained is not None and result.sustained.steady:
            found.append(
                Target(
                    f"{label}.sustained_per_core",
                    f"{label}, sustained {result.sustained.seconds:g} s: sessions per CPU-s >= "
                    f"{TARGET_SESSIONS_PER_CORE:g}",
                    result.sustained.per_core,
                    TARGET_SESSIONS_PER_CORE,
                    True,
                    "sessions/CPU-s",
                    f"steady state (after {FORGET_AFTER:g} s)",
                )
            )
        if result.hold:
            top = result.hold[-1]
            found.append(
                Target(
                    f"{label}.rss_per_session",
                    f"{label}: RSS per active session <= {TARGET_RSS_KIB:g} KiB",
                    top.kib_per_session,
                    TARGET_RSS_KIB,
                    False,
                    "KiB",
                    f"at {top.opened} active" + (", control + worker" if result.config.workers else ""),
                )
            )
    return found


def _ms(values: dict[str, float]) -> str:
    return f"{values['p50']:.1f}/{values['p99']:.1f}"


def rate_table(results: Sequence[ConfigResult]) -> str:
    columns = (
        "config",
        "sessions",
        "window",
        "sessions/s",
        "per core",
        "CPU ms/session",
        "first/last third",
        "SIPp CPU ms",
        "setup p50/p99 ms",
        "teardown p50/p99",
        "window-1 setup",
        "SIPp ok/failed",
        "check",
    )
    rows = []
    for result in results:
        rate = result.rate
        cpu = f"{rate.cpu_ms:.2f}"
        if result.config.workers:
            share = rate.cpu_worker / max(rate.cpu_ours + rate.cpu_worker, 1e-9)
            cpu += f" ({share:.0%} worker)"
        rows.append(
            (
                result.config.label + ("*" if rate.disturbed else ""),
                str(rate.sessions),
                str(rate.window),
                f"{rate.rate:,.0f}",
                f"{rate.per_core:,.0f}",
                cpu,
                f"{rate.thirds_cpu_ms[0]:.2f}/{rate.thirds_cpu_ms[1]:.2f}",
                f"{rate.sipp_cpu_ms:.2f}",
                _ms(rate.setup_ms),
                _ms(rate.teardown_ms),
                _ms(result.latency.setup_ms),
                f"{result.sipp.successful}/{result.sipp.failed}",
                "ok" if result.consistent else "MISMATCH",
            )
        )
    return format_rows(columns, rows)


def hold_table(results: Sequence[ConfigResult]) -> str:
    columns = (
        "config",
        "active",
        "SIPp calls",
        "opened/s",
        "control ΔRSS MiB",
        "worker ΔRSS MiB",
        "KiB/session",
        "MiB/1000",
    )
    rows = []
    for result in results:
        for level in result.hold:
            rows.append(
                (
                    result.config.label,
                    str(level.opened),
                    str(level.sipp_current),
                    f"{level.setup_rate:,.0f}",
                    f"{level.control_kib / 1024:.1f}",
                    f"{level.worker_kib / 1024:.1f}" if result.config.workers else "-",
                    f"{level.kib_per_session:.1f}",
                    f"{level.kib_per_session * 1000 / 1024:.1f}",
                )
            )
    return format_rows(columns, rows)


def sustained_table(results: Sequence[ConfigResult]) -> str:
    columns = (
        "config",
        "seconds",
        "window",
        "sessions",
        "first interval: sessions/s",
        "CPU ms",
        "steady: sessions/s",
        "CPU ms",
        "per core",
        "core dialogs",
    )
    rows = []
    for result in results:
        run = result.sustained
        if run is None:
            continue
        (first_rate, first_cpu), (last_rate, last_cpu) = run.first, run.last
        rows.append(
            (
                result.config.label,
                f"{run.seconds:g}",
                str(run.window),
                str(run.completed),
                f"{first_rate:,.0f}",
                f"{first_cpu:.2f}",
                f"{last_rate:,.0f}",
                f"{last_cpu:.2f}",
                f"{run.per_core:,.0f}",
                str(run.intervals[-1].core_dialogs if run.intervals else 0),
            )
        )
    return format_rows(columns, rows)


def target_table(found: Sequence[Target]) -> str:
    columns = ("target", "measured", "ratio", "verdict", "note")
    rows = [
        (
            target.goal,
            "-" if target.measured is None else f"{target.measured:,.1f}",
            "-" if target.ratio is None else f"{target.ratio:.2f}",
            target.verdict,
            target.note,
        )
        for target in found
    ]
    return format_rows(columns, rows)


def figures_of(results: Sequence[ConfigResult], found: Sequence[Target]) -> list[Figure]:
    figures: list[Figure] = []
    for result in results:
        label = result.config.label
        rate = result.rate
        params: dict[str, ParamValue] = {
            "transport": result.config.transport,
            "workers": result.config.workers,
            "sessions": rate.sessions,
            "window": rate.window,
            "completed": rate.completed,
            "wall_s": round(rate.wall, 4),
            "other_cores": round(rate.other_cores, 3),
        }
        per_session = 1000 / max(rate.completed, 1)
        figures += [
            Figure(f"{label}.rate", rate.rate, "sessions/s", params),
            Figure(f"{label}.per_core", rate.per_core, "sessions/CPU-s", params),
            Figure(f"{label}.cpu", rate.cpu_ms, "CPU ms/session", params),
            Figure(f"{label}.cpu_control", rate.cpu_ours * per_session, "CPU ms/session", params),
            Figure(f"{label}.cpu_worker", rate.cpu_worker * per_session, "CPU ms/session", params),
            Figure(f"{label}.cpu_first_third", rate.thirds_cpu_ms[0], "CPU ms/session", params),
            Figure(f"{label}.cpu_last_third", rate.thirds_cpu_ms[1], "CPU ms/session", params),
            Figure(f"{label}.sipp_cpu", rate.sipp_cpu_ms, "CPU ms/session", params),
            Figure(f"{label}.setup_p50", rate.setup_ms["p50"], "ms", params),
            Figure(f"{label}.setup_p99", rate.setup_ms["p99"], "ms", params),
            Figure(f"{label}.teardown_p50", rate.teardown_ms["p50"], "ms", params),
            Figure(f"{label}.teardown_p99", rate.teardown_ms["p99"], "ms", params),
        ]
        unloaded: dict[str, ParamValue] = {**params, "sessions": result.latency.sessions, "window": 1}
        figures += [
            Figure(f"{label}.window1_setup_p50", result.latency.setup_ms["p50"], "ms", unloaded),
            Figure(f"{label}.window1_setup_p99", result.latency.setup_ms["p99"], "ms", unloaded),
        ]
        if result.sustained is not None:
            run = result.sustained
            steady: dict[str, ParamValue] = {
                "transport": result.config.transport,
                "workers": result.config.workers,
                "seconds": run.seconds,
                "window": run.window,
                "completed": run.completed,
                "steady_intervals": len(run.steady),
            }
            figures += [
                Figure(f"{label}.sustained.first_rate", run.first[0], "sessions/s", steady),
                Figure(f"{label}.sustained.first_cpu", run.first[1], "CPU ms/session", steady),
                Figure(f"{label}.sustained.steady_rate", run.last[0], "sessions/s", steady),
                Figure(f"{label}.sustained.steady_cpu", run.last[1], "CPU ms/session", steady),
                Figure(f"{label}.sustained.per_core", run.per_core, "sessions/CPU-s", steady),
            ]
        for level in result.hold:
            held: dict[str, ParamValue] = {
                "transport": result.config.transport,
                "workers": result.config.workers,
                "active": level.opened,
                "control_kib": level.control_kib,
                "worker_kib": level.worker_kib,
            }
            name = f"{label}.rss_per_session.{level.active}"
            figures.append(Figure(name, level.kib_per_session, "KiB", held))
    for target in found:
        if target.ratio is not None:
            figures.append(Figure(f"target.{target.name}", target.ratio, "x goal", {"goal": target.goal}))
    return figures


def result_json(result: ConfigResult) -> dict[str, Any]:
    return {
        "config": asdict(result.config),
        "label": result.config.label,
        "rate": {**asdict(result.rate), "rate": result.rate.rate, "per_core": result.rate.per_core},
        "window1": {
            **asdict(result.latency),
            "rate": result.latency.rate,
            "per_core": result.latency.per_core,
        },
        "hold": [{**asdict(level), "kib_per_session": level.kib_per_session} for level in result.hold],
        "hold_teardown_rate": result.hold_teardown_rate,
        "sustained": None
        if result.sustained is None
        else {
            **asdict(result.sustained),
            "first": result.sustained.first,
            "steady": result.sustained.last,
            "per_core": result.sustained.per_core,
        },
        "completed": result.completed,
        "failed": result.failed,
        "sipp": asdict(result.sipp),
        "busy_before": result.busy_before,
        "consistent": result.consistent,
        "notes": result.notes,
    }


def build_report(
    results: Sequence[ConfigResult], counts: Counts, loop_name: str, fd_limit: int, *, quick: bool
) -> dict[str, Any]:
    found = targets(results)
    return {
        **machine("signaling"),
        "loop": loop_name,
        "quick": quick,
        "sipp": sipp_version(),
        "counts": asdict(counts),
        "settings": {
            "session": "open_call (2 tap legs) + record(connector, both_tracks) + wait_started + close",
            "media": "RTP/AVP PCMU, no SRTP, no RTP sent",
            "session_expires": 1800,
            "ports": [PORT_MIN, PORT_MAX],
            "fd_limit": fd_limit,
            "scenario": str(SCENARIO.relative_to(SCENARIO.parents[2])),
        },
        "configs": [result_json(result) for result in results],
        "targets": [
            {**asdict(target), "ratio": target.ratio, "met": target.met, "verdict": target.verdict}
            for target in found
        ],
        "consistent": all(result.consistent for result in results),
        "figures": [asdict(figure) for figure in figures_of(results, found)],
    }


# --- running ------------------------------------------------------------------------------------------


def run_config_in_child(counts: Counts, config: Config, workdir: Path, fd_limit: int) -> ConfigResult:
    """``run_config`` in a fresh Python process (spawned, not forked).

    Each configuration then starts from nothing: its resident set has not already grown for a
    previous configuration (memory Python freed stays in the process and would be reused without
    raising RSS), and no earlier run's objects burden its garbage collector.
    """
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_run_config_here, counts, config, workdir, fd_limit).result()


def _run_config_here(counts: Counts, config: Config, workdir: Path, fd_limit: int) -> ConfigResult:
    raise_fd_limit()
    factory, _ = event_loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(run_config(counts, config, workdir, fd_limit))


def run_all(counts: Counts, workdir: Path, fd_limit: int, log: Callable[[str], None]) -> list[ConfigResult]:
    results = []
    for config in counts.configs:
        log(f"{config.label}: ...")
        result = run_config_in_child(counts, config, workdir, fd_limit)
        log(
            f"{config.label}: {result.rate.rate:,.0f} sessions/s, {result.rate.per_core:,.0f} per core, "
            f"SIPp {result.sipp.successful} ok / {result.sipp.failed} failed, ours {result.completed} ok"
        )
        results.append(result)
    return results


def execute(
    counts: Counts, out_dir: Path, *, quick: bool, log: Callable[[str], None] = print
) -> tuple[dict[str, Any], Path]:
    """Run every configuration, print the tables, write the JSON; return the report and its path."""
    fd_limit = raise_fd_limit()
    _, loop_name = event_loop_factory()
    with tempfile.TemporaryDirectory(prefix="bench-signaling-") as tmp:
        results = run_all(counts, Path(tmp), fd_limit, log)
    report = build_report(results, counts, loop_name, fd_limit, quick=quick)
    log(
        f"\n{report['host']}  Python {report['python']}  loop {loop_name}  {report['cpu_count']} CPUs  "
        f"{report['sipp']}"
    )
    log(
        "\nrate (per core: sessions per CPU-second of ours, control + worker; window-1 setup: one at a "
        f"time; *: other processes used > {DISTURBED:.0%} of a core meanwhile):"
    )
    log(rate_table(results))
    if any(result.hold for result in results):
        log("\nRSS per active session (over the baseline after warm-up, gc.collect()):")
        log(hold_table(results))
    if any(result.sustained for result in results):
        log(
            f"\nsustained (steady: the {SUSTAIN_INTERVAL:g} s intervals after the SIP core's "
            f"{FORGET_AFTER:g} s memory of ended sessions filled up):"
        )
        log(sustained_table(results))
    log("\ntargets:")
    log(target_table(targets(results)))
    for result in results:
        for note in result.notes:
            log(f"note: {result.config.label}: {note}")
        if not result.consistent:
            sipp = result.sipp
            log(
                f"note: {result.config.label}: SIPp {sipp.successful} ok / {sipp.failed} failed / "
                f"{sipp.unexpected} unexpected messages (exit {sipp.returncode}), "
                f"ours {result.completed} ok / {result.failed} failed; "
                f"SIPp's error log ends:\n{sipp.errors[-600:]}"
            )
    path = write_report(report, out_dir)
    log(f"wrote {path}")
    return report, path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts, about 10 s")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSON report")
    parser.add_argument("--sessions", type=int, help="sessions of each rate run")
    parser.add_argument("--window", type=int, help="sessions in flight during the rate run")
    parser.add_argument("--warmup", type=int, help="sessions before anything is measured")
    parser.add_argument("--latency-sessions", type=int, help="sessions of the window-1 run")
    parser.add_argument("--hold", help="active sessions to hold for RSS, comma separated levels")
    parser.add_argument("--quiet-wait", type=float, help="seconds to wait for a quiet machine")
    parser.add_argument("--sustain", type=float, help="seconds of the first configuration's sustained run")
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else FULL
    changes: dict[str, Any] = {
        name: value
        for name, value in (
            ("sessions", args.sessions),
            ("window", args.window),
            ("warmup", args.warmup),
            ("latency_sessions", args.latency_sessions),
            ("quiet_wait", args.quiet_wait),
        )
        if value is not None
    }
    if args.hold is not None:
        changes["hold"] = tuple(sorted({int(level) for level in args.hold.split(",") if level}))
    if any(value < (0 if name == "quiet_wait" else 1) for name, value in changes.items() if name != "hold"):
        parser.error("counts must be positive")
    if args.sustain is not None:
        if args.sustain < 0:
            parser.error("--sustain must be 0 or more seconds")
        first, *others = counts.configs
        changes["configs"] = (replace(first, sustain=args.sustain), *others)
    report, _ = execute(replace(counts, **changes), args.out, quick=args.quick)
    return 0 if report["consistent"] else 1


if __name__ == "__main__":
    sys.exit(main())
