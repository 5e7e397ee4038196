"""Run rtpgen, rtpsink and relay as child processes and read their JSON reports.

Typical use (a sink first, so that its ports are bound before anything is sent)::

    sink_base = free_port_base(20)
    with start_sink(base_port=sink_base, count=20, expect=1000) as sink:
        gen = run_gen(base_port=sink_base, streams=20, pps=50, duration=1.0)
        got = sink.result()
    assert got.packets == gen.sent

``start_sink`` and ``start_relay`` return once the program reported that every port is bound
("ready" on its stderr); their ``result()`` / ``stop()`` return the parsed report. ``cpus``
pins a program (``--cpu``), e.g. ``cpus=[1]`` or ``cpus="0,1"``. Latency and lag figures are in
microseconds.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import json
import os
import random
import selectors
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Required, Self, TypedDict, TypeVar, Unpack

from benchmarks.loadgen.build import build

CpuList = str | Sequence[int] | None


class LoadgenError(RuntimeError):
    """A program failed to start, exited with an error, or printed an unexpected report."""


# ---- reading the JSON reports ----------------------------------------------------------------


def _int(obj: Mapping[str, object], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise LoadgenError(f"report field {key!r} is not an integer: {value!r}")
    return value


def _float(obj: Mapping[str, object], key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LoadgenError(f"report field {key!r} is not a number: {value!r}")
    return float(value)


def _bool(obj: Mapping[str, object], key: str) -> bool:
    value = obj.get(key)
    if not isinstance(value, bool):
        raise LoadgenError(f"report field {key!r} is not a boolean: {value!r}")
    return value


def _str(obj: Mapping[str, object], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise LoadgenError(f"report field {key!r} is not a string: {value!r}")
    return value


def _object(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise LoadgenError(f"{what} is not a JSON object: {value!r}")
    return {str(key): item for key, item in value.items()}


def _ints(obj: Mapping[str, object], key: str) -> tuple[int, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    ):
        raise LoadgenError(f"report field {key!r} is not a list of integers")
    return tuple(int(item) for item in value)


def _parse_report(stdout: bytes, program: str) -> dict[str, object]:
    text = stdout.decode("utf-8", "replace").strip()
    try:
        report = _object(json.loads(text.splitlines()[-1] if text else ""), f"{program} report")
    except json.JSONDecodeError as exc:
        raise LoadgenError(f"{program} printed no JSON report: {text[:500]!r}") from exc
    if report.get("program") != program:
        raise LoadgenError(f"expected a {program} report, got {report.get('program')!r}")
    return report


@dataclass(frozen=True, slots=True)
class Percentiles:
    """A distribution summary in microseconds (from the programs' log-linear histograms, ~1.6 %)."""

    count: int
    min: float
    mean: float
    p50: float
    p90: float
    p99: float
    p999: float
    max: float

    @classmethod
    def from_json(cls, value: object) -> Percentiles | None:
        """None for JSON null or an empty histogram."""
        if value is None:
            return None
        obj = _object(value, "histogram")
        if _int(obj, "count") == 0:
            return None
        return cls(
            count=_int(obj, "count"),
            min=_float(obj, "min"),
            mean=_float(obj, "mean"),
            p50=_float(obj, "p50"),
            p90=_float(obj, "p90"),
            p99=_float(obj, "p99"),
            p999=_float(obj, "p999"),
            max=_float(obj, "max"),
        )


@dataclass(frozen=True, slots=True)
class GenResult:
    """What rtpgen sent. ``lag_us``: how late each sendmmsg batch started against its schedule."""

    streams: int
    threads: int
    tick_us: int
    packet_size: int
    target_rate: float
    planned: int
    sent: int
    send_errors: int
    last_errno: int
    stopped: bool
    elapsed_s: float
    achieved_rate: float
    sendmmsg_calls: int
    first_stamp_ns: int
    last_stamp_ns: int
    lag_us: Percentiles | None
    cpu_user_s: float
    cpu_sys_s: float
    src_ports: tuple[int, ...]
    sent_per_stream: tuple[int, ...]
    """Empty when run with ``per_stream=False``."""

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> GenResult:
        return cls(
            streams=_int(obj, "streams"),
            threads=_int(obj, "threads"),
            tick_us=_int(obj, "tick_us"),
            packet_size=_int(obj, "packet_size"),
            target_rate=_float(obj, "target_rate"),
            planned=_int(obj, "planned"),
            sent=_int(obj, "sent"),
            send_errors=_int(obj, "send_errors"),
            last_errno=_int(obj, "last_errno"),
            stopped=_bool(obj, "stopped"),
            elapsed_s=_float(obj, "elapsed_s"),
            achieved_rate=_float(obj, "achieved_rate"),
            sendmmsg_calls=_int(obj, "sendmmsg_calls"),
            first_stamp_ns=_int(obj, "first_stamp_ns"),
            last_stamp_ns=_int(obj, "last_stamp_ns"),
            lag_us=Percentiles.from_json(obj.get("lag_us")),
            cpu_user_s=_float(obj, "cpu_user_s"),
            cpu_sys_s=_float(obj, "cpu_sys_s"),
            src_ports=_ints(obj, "src_ports"),
            sent_per_stream=_ints(obj, "sent_per_stream"),
        )


@dataclass(frozen=True, slots=True)
class StreamStats:
    """One SSRC as the sink saw it. ``expected`` spans the lowest to the highest sequence number
    seen, so packets lost before the first or after the last arrival are not in ``lost``:
    compare ``packets`` with what the sender sent for that."""

    ssrc: int
    port: int
    packets: int
    bytes: int
    first_seq: int
    expected: int
    lost: int
    duplicates: int
    reorders: int
    late: int

    @classmethod
    def from_json(cls, value: object) -> StreamStats:
        obj = _object(value, "stream")
        return cls(
            ssrc=_int(obj, "ssrc"),
            port=_int(obj, "port"),
            packets=_int(obj, "packets"),
            bytes=_int(obj, "bytes"),
            first_seq=_int(obj, "first_seq"),
            expected=_int(obj, "expected"),
            lost=_int(obj, "lost"),
            duplicates=_int(obj, "duplicates"),
            reorders=_int(obj, "reorders"),
            late=_int(obj, "late"),
        )


@dataclass(frozen=True, slots=True)
class SinkResult:
    """What rtpsink received. ``latency_us`` is None with ``srtp=True`` (the stamp is encrypted)
    or when nothing arrived; ``socket_drops`` are datagrams the kernel dropped because one of
    the sink's own receive queues was full (the sink, not the subject, was too slow)."""

    base_port: int
    count: int
    step: int
    srtp: bool
    stop_reason: str
    elapsed_s: float
    active_s: float
    packets: int
    bytes: int
    rate: float
    lost: int
    duplicates: int
    reorders: int
    late: int
    rtcp_packets: int
    not_rtp: int
    truncated: int
    overflow: int
    socket_drops: int
    no_kernel_ts: int
    recvmmsg_calls: int
    first_rx_ns: int
    last_rx_ns: int
    streams_seen: int
    latency_invalid: int
    latency_skipped: int
    """Packets received before ``latency_after`` (counted, not in ``latency_us``)."""
    latency_us: Percentiles | None
    cpu_user_s: float
    cpu_sys_s: float
    streams: dict[int, StreamStats]
    """By SSRC; empty when run with ``per_stream=False``."""

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> SinkResult:
        raw_streams = obj.get("streams", [])
        if not isinstance(raw_streams, list):
            raise LoadgenError("report field 'streams' is not a list")
        streams = [StreamStats.from_json(item) for item in raw_streams]
        return cls(
            base_port=_int(obj, "base_port"),
            count=_int(obj, "count"),
            step=_int(obj, "step"),
            srtp=_bool(obj, "srtp"),
            stop_reason=_str(obj, "stop_reason"),
            elapsed_s=_float(obj, "elapsed_s"),
            active_s=_float(obj, "active_s"),
            packets=_int(obj, "packets"),
            bytes=_int(obj, "bytes"),
            rate=_float(obj, "rate"),
            lost=_int(obj, "lost"),
            duplicates=_int(obj, "duplicates"),
            reorders=_int(obj, "reorders"),
            late=_int(obj, "late"),
            rtcp_packets=_int(obj, "rtcp_packets"),
            not_rtp=_int(obj, "not_rtp"),
            truncated=_int(obj, "truncated"),
            overflow=_int(obj, "overflow"),
            socket_drops=_int(obj, "socket_drops"),
            no_kernel_ts=_int(obj, "no_kernel_ts"),
            recvmmsg_calls=_int(obj, "recvmmsg_calls"),
            first_rx_ns=_int(obj, "first_rx_ns"),
            last_rx_ns=_int(obj, "last_rx_ns"),
            streams_seen=_int(obj, "streams_seen"),
            latency_invalid=_int(obj, "latency_invalid"),
            latency_skipped=_int(obj, "latency_skipped"),
            latency_us=Percentiles.from_json(obj.get("latency_us")),
            cpu_user_s=_float(obj, "cpu_user_s"),
            cpu_sys_s=_float(obj, "cpu_sys_s"),
            streams={stream.ssrc: stream for stream in streams},
        )


@dataclass(frozen=True, slots=True)
class RelayResult:
    """The relay's counters. ``socket_drops``: datagrams dropped at the relay's own input queues."""

    count: int
    rewrite: bool
    shared_tx: bool
    received: int
    forwarded: int
    send_errors: int
    last_errno: int
    truncated: int
    socket_drops: int
    active_ports: int
    recvmmsg_calls: int
    sendmmsg_calls: int
    epoll_wakeups: int
    elapsed_s: float
    active_s: float
    rate: float
    cpu_user_s: float
    cpu_sys_s: float

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> RelayResult:
        return cls(
            count=_int(obj, "count"),
            rewrite=_bool(obj, "rewrite"),
            shared_tx=_bool(obj, "shared_tx"),
            received=_int(obj, "received"),
            forwarded=_int(obj, "forwarded"),
            send_errors=_int(obj, "send_errors"),
            last_errno=_int(obj, "last_errno"),
            truncated=_int(obj, "truncated"),
            socket_drops=_int(obj, "socket_drops"),
            active_ports=_int(obj, "active_ports"),
            recvmmsg_calls=_int(obj, "recvmmsg_calls"),
            sendmmsg_calls=_int(obj, "sendmmsg_calls"),
            epoll_wakeups=_int(obj, "epoll_wakeups"),
            elapsed_s=_float(obj, "elapsed_s"),
            active_s=_float(obj, "active_s"),
            rate=_float(obj, "rate"),
            cpu_user_s=_float(obj, "cpu_user_s"),
            cpu_sys_s=_float(obj, "cpu_sys_s"),
        )


# ---- processes -------------------------------------------------------------------------------


def _cpu_arg(cpus: CpuList) -> list[str]:
    if cpus is None:
        return []
    text = cpus if isinstance(cpus, str) else ",".join(str(cpu) for cpu in cpus)
    return ["--cpu", text]


def _num(value: float) -> str:
    return repr(float(value))


class Program:
    """A started sink or relay: waits for its "ready" line, then for its JSON report."""

    def __init__(self, name: str, args: Sequence[str], ready_timeout: float = 10.0) -> None:
        self.name = name
        self.argv = [str(build(name)), *args]
        self._stderr = b""
        self._process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.kill()
            raise

    @property
    def pid(self) -> int:
        return self._process.pid

    def _wait_ready(self, timeout: float) -> None:
        stderr = self._process.stderr
        assert stderr is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(stderr, selectors.EVENT_READ)
            while f"{self.name}: ready".encode() not in self._stderr:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LoadgenError(f"{self.name} not ready after {timeout} s: {self._stderr!r}")
                if selector.select(left):
                    chunk = os.read(stderr.fileno(), 65536)
                    if not chunk:  # exited before it was ready, e.g. a port was taken
                        self._process.wait()
                        raise LoadgenError(
                            f"{self.name} exited ({self._process.returncode}) before it was ready: "
                            f"{self._stderr.decode('utf-8', 'replace').strip()}"
                        )
                    self._stderr += chunk

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self._process.poll() is None:
            self._process.send_signal(sig)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the program to exit by itself; True if it did."""
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.communicate()

    def report(self, timeout: float | None = None) -> dict[str, object]:
        """Wait for the program to exit and return its JSON report."""
        try:
            stdout, stderr = self._process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise LoadgenError(f"{self.name} still running after {timeout} s") from exc
        self._stderr += stderr
        if self._process.returncode != 0:
            raise LoadgenError(
                f"{self.name} exited with {self._process.returncode}: "
                f"{self._stderr.decode('utf-8', 'replace').strip()}"
            )
        return _parse_report(stdout, self.name)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.kill()


class Sink(Program):
    """A running rtpsink; it exits by itself on its idle timeout, duration or expected count."""

    def result(self, timeout: float | None = None) -> SinkResult:
        """Wait until the sink stops by itself and return what it counted."""
        return SinkResult.from_json(self.report(timeout))

    def stop(self, timeout: float = 10.0) -> SinkResult:
        """Stop it now (SIGTERM) and return what it counted."""
        self.signal(signal.SIGTERM)
        return self.result(timeout)


class Relay(Program):
    """A running relay; it forwards until stopped."""

    def result(self, timeout: float | None = None) -> RelayResult:
        """Wait until the relay stops (``duration`` given, or signalled) and return its counters."""
        return RelayResult.from_json(self.report(timeout))

    def stop(self, timeout: float = 10.0) -> RelayResult:
        """SIGTERM, then the relay's counters."""
        self.signal(signal.SIGTERM)
        return self.result(timeout)


class SinkOptions(TypedDict, total=False):
    """The keyword arguments of ``start_sink``, for ``run_sink``."""

    base_port: Required[int]
    count: int
    step: int
    bind: str
    idle_timeout: float
    start_timeout: float
    duration: float | None
    expect: int | None
    srtp: bool
    rtcp: bool
    latency_after: float
    poll_us: int
    batch: int
    rcvbuf: int | None
    per_stream: bool
    cpus: CpuList
    extra_args: Sequence[str]


def start_sink(
    *,
    base_port: int,
    count: int = 1,
    step: int = 2,
    bind: str = "127.0.0.1",
    idle_timeout: float = 2.0,
    start_timeout: float = 30.0,
    duration: float | None = None,
    expect: int | None = None,
    srtp: bool = False,
    rtcp: bool = False,
    latency_after: float = 0.0,
    poll_us: int = 0,
    batch: int = 64,
    rcvbuf: int | None = None,
    per_stream: bool = True,
    cpus: CpuList = None,
    extra_args: Sequence[str] = (),
) -> Sink:
    """Start rtpsink on ``count`` ports from ``base_port`` and return once they are bound.

    It stops by itself ``idle_timeout`` s after the last packet, after ``duration`` s, once
    ``expect`` RTP packets arrived, or when nothing came within ``start_timeout`` s.
    ``poll_us`` > 0 makes it look at its sockets on a timer instead of being woken per arrival.
    ``latency_after`` > 0 leaves the packets received in the first that many seconds (after the
    first packet) out of the latency percentiles; they are counted as usual.
    """
    args = ["--bind", bind, "--base-port", str(base_port), "--count", str(count), "--step", str(step)]
    args += ["--idle-timeout", _num(idle_timeout), "--start-timeout", _num(start_timeout)]
    args += ["--batch", str(batch), "--poll-us", str(poll_us)]
    if duration is not None:
        args += ["--duration", _num(duration)]
    if expect is not None:
        args += ["--expect", str(expect)]
    if srtp:
        args.append("--srtp")
    if rtcp:
        args.append("--rtcp")
    if latency_after > 0:
        args += ["--latency-after", _num(latency_after)]
    if rcvbuf is not None:
        args += ["--rcvbuf", str(rcvbuf)]
    if not per_stream:
        args.append("--no-per-stream")
    return Sink("rtpsink", [*args, *_cpu_arg(cpus), *extra_args])


def run_sink(*, timeout: float | None = None, **options: Unpack[SinkOptions]) -> SinkResult:
    """``start_sink(**options)``, then wait for it to stop by itself; mostly for a sink that is
    fed by something already running (a sink for a sender started later needs ``start_sink``)."""
    with start_sink(**options) as sink:
        return sink.result(timeout)


class RelayOptions(TypedDict, total=False):
    """The keyword arguments of ``start_relay``, for ``run_relay``."""

    in_base: Required[int]
    dest_base: Required[int]
    count: int
    in_step: int
    dest_step: int
    bind: str
    dest: str
    rewrite: bool
    shared_tx: bool
    batch: int
    cpus: CpuList
    extra_args: Sequence[str]


def start_relay(
    *,
    in_base: int,
    dest_base: int,
    count: int = 1,
    in_step: int = 2,
    dest_step: int = 2,
    bind: str = "127.0.0.1",
    dest: str = "127.0.0.1",
    rewrite: bool = False,
    shared_tx: bool = False,
    batch: int = 64,
    duration: float | None = None,
    cpus: CpuList = None,
    extra_args: Sequence[str] = (),
) -> Relay:
    """Start the C relay (input i -> dest_base + i * dest_step) and return once it is bound.
    It runs until ``stop()`` (or for ``duration`` s). ``rewrite``: per-output SSRC, shifted
    seq/timestamp; ``shared_tx``: send from one socket, batched across ports (an upper bound)."""
    args = ["--bind", bind, "--in-base", str(in_base), "--count", str(count), "--in-step", str(in_step)]
    args += ["--dest", dest, "--dest-base", str(dest_base), "--dest-step", str(dest_step)]
    args += ["--batch", str(batch)]
    if rewrite:
        args.append("--rewrite")
    if shared_tx:
        args.append("--shared-tx")
    if duration is not None:
        args += ["--duration", _num(duration)]
    return Relay("relay", [*args, *_cpu_arg(cpus), *extra_args])


def run_relay(
    *, duration: float, timeout: float | None = None, **options: Unpack[RelayOptions]
) -> RelayResult:
    """Run the relay for ``duration`` seconds (``start_relay(**options)``), then its counters."""
    with start_relay(duration=duration, **options) as relay:
        return relay.result(timeout if timeout is not None else duration + 10.0)


def run_gen(
    *,
    base_port: int = 0,
    ports: Sequence[int] | None = None,
    streams: int = 1,
    step: int = 2,
    dest: str = "127.0.0.1",
    pps: float = 50.0,
    rate: float | None = None,
    duration: float = 1.0,
    packets: int | None = None,
    threads: int = 1,
    tick_us: int = 100,
    batch: int = 64,
    payload: int = 160,
    ssrc_base: int = 0x10000000,
    seq_start: int = 0,
    per_stream: bool = True,
    cpus: CpuList = None,
    timeout: float | None = None,
    extra_args: Sequence[str] = (),
) -> GenResult:
    """Send ``streams`` paced streams to ``dest``:``base_port + i * step`` and return rtpgen's
    report; blocks for ``duration`` s. ``ports`` instead names each stream's destination port
    (stream i goes to ``ports[i]``; ``streams`` and ``base_port`` are then ignored). ``rate``
    (total packets/s) overrides ``pps`` (per stream); ``packets`` (total) overrides ``duration``.
    ``threads`` > 1 splits the streams over that many sending threads (one socket each): one
    thread tops out near 300k packets/s on a 2-core VM.
    ``tick_us``: the sender wakes at most that often and sends what is due (0 = every deadline).

    rtpgen exits with 1 when it could not hand every planned packet to the kernel; that is
    still a report (``sent < planned`` or ``send_errors``), not an exception.
    """
    with tempfile.NamedTemporaryFile("w", prefix="rtpgen-ports-", suffix=".txt") as ports_file:
        if ports is not None:
            ports_file.write("\n".join(str(port) for port in ports) + "\n")
            ports_file.flush()
            where = ["--ports-file", ports_file.name]
        else:
            where = ["--base-port", str(base_port), "--step", str(step), "--streams", str(streams)]
        return _run_gen(
            [*where, "--dest", dest, "--pps", _num(pps), "--duration", _num(duration)],
            rate=rate,
            duration=duration,
            packets=packets,
            threads=threads,
            tick_us=tick_us,
            batch=batch,
            payload=payload,
            ssrc_base=ssrc_base,
            seq_start=seq_start,
            per_stream=per_stream,
            cpus=cpus,
            timeout=timeout,
            extra_args=extra_args,
        )


def _run_gen(
    args: list[str],
    *,
    rate: float | None,
    duration: float,
    packets: int | None,
    threads: int,
    tick_us: int,
    batch: int,
    payload: int,
    ssrc_base: int,
    seq_start: int,
    per_stream: bool,
    cpus: CpuList,
    timeout: float | None,
    extra_args: Sequence[str],
) -> GenResult:
    args += ["--threads", str(threads), "--tick-us", str(tick_us), "--batch", str(batch)]
    args += ["--payload", str(payload)]
    args += ["--ssrc-base", str(ssrc_base), "--seq-start", str(seq_start)]
    if rate is not None:
        args += ["--rate", _num(rate)]
    if packets is not None:
        args += ["--packets", str(packets)]
    if not per_stream:
        args.append("--no-per-stream")
    argv = [str(build("rtpgen")), *args, *_cpu_arg(cpus), *extra_args]
    limit = timeout if timeout is not None else duration + 30.0
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LoadgenError(f"rtpgen still running after {limit} s") from exc
    if done.returncode not in (0, 1):
        raise LoadgenError(
            f"rtpgen exited with {done.returncode}: {done.stderr.decode('utf-8', 'replace').strip()}"
        )
    return GenResult.from_json(_parse_report(done.stdout, "rtpgen"))


# ---- ports -----------------------------------------------------------------------------------


def proc_net_rows(protocol: str) -> Iterator[list[str]]:
    """The fields of every socket row of /proc/net/PROTOCOL and PROTOCOL6 ("udp", "tcp") of this
    network namespace, header left out; a table that cannot be read yields nothing."""
    for table in (f"/proc/net/{protocol}", f"/proc/net/{protocol}6"):
        try:
            lines = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            yield line.split()


def bound_udp_ports() -> set[int]:
    """Local ports of every UDP socket in this network namespace (/proc/net/udp and udp6)."""
    return {
        int(fields[1].rsplit(":", 1)[1], 16)
        for fields in proc_net_rows("udp")
        if len(fields) > 1 and ":" in fields[1]
    }


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_base(
    count: int,
    step: int = 2,
    *,
    bind: str = "127.0.0.1",
    low: int = 10000,
    high: int = 65000,
    attempts: int = 20,
    even: bool = True,
) -> int:
    """A base port such that ``count`` UDP ports from it (``step`` apart) are free now; even
    (RTP's convention) unless ``even=False``, which lets a second range interleave with a first
    one on the odd ports when the machine has no other room (a relay's inputs, say).

    Candidates avoid every port bound on the machine (/proc/net/udp); one picked at random,
    below the ephemeral range (net.ipv4.ip_local_port_range) when one fits there, is probed by
    binding its ports, and released: start the program that binds them before asking for the
    next range. A port taken between the probe and the program's bind (likely only in the
    ephemeral range, where senders' source ports come from) makes the program fail to start:
    ``start_on_free_ports`` retries that with another range.
    """
    if count < 1 or step < 1:
        raise ValueError("count and step must be at least 1")
    span = (count - 1) * step
    if span + 1 > high - low:
        raise ValueError(f"{count} ports with step {step} do not fit in {low}..{high}")
    used = bound_udp_ports()
    by_class = {r: sorted(port for port in used if port % step == r) for r in range(step)}

    def clear(base: int) -> bool:
        taken = by_class[base % step]
        at = bisect.bisect_left(taken, base)
        return at == len(taken) or taken[at] > base + span

    first = low + (low & 1) if even else low
    candidates = [base for base in range(first, high - span, 2 if even else 1) if clear(base)]
    random.shuffle(candidates)
    ephemeral = _ephemeral_low()
    candidates.sort(key=lambda base: base + span >= ephemeral)  # stable: still random within
    for base in candidates[:attempts]:
        with contextlib.ExitStack() as held:
            try:
                for port in range(base, base + span + 1, step):
                    probe = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    probe.bind((bind, port))
            except OSError as exc:
                if exc.errno == errno.EMFILE:
                    raise LoadgenError(f"too many open files to probe {count} ports") from exc
                continue
            return base
    raise LoadgenError(
        f"no free range of {count} ports (step {step}) found in {low}..{high}; "
        f"{len(used)} UDP ports are bound"
    )


def free_port_range(
    count: int, *, low: int = 10000, high: int = 65000, spare: float = 0.1
) -> tuple[int, int]:
    """``(first, last)``: a range from an even port, ``count`` ports plus ``spare`` of that,
    in which nobody has bound a port right now (/proc/net/udp); the lowest such range below the
    ephemeral range (net.ipv4.ip_local_port_range) when one fits there. Nothing is probed: this
    is for a program that skips a port it cannot bind (rtpengine, the media worker's allocator),
    where a port someone takes meanwhile costs a port of the spare, not the run."""
    want = count + int(count * spare) + 2
    used = sorted(port for port in bound_udp_ports() if low <= port < high)
    ephemeral = _ephemeral_low()
    fallback: tuple[int, int] | None = None
    for before, after in zip([low - 1, *used], [*used, high], strict=True):
        first = before + 1 + ((before + 1) & 1)
        last = first + want - 1
        if last >= after:
            continue  # the gap between two bound ports is too small
        if last < ephemeral:
            return first, last
        fallback = fallback or (first, last)
    if fallback is None:
        raise LoadgenError(f"no {want} consecutive unbound ports in {low}..{high}")
    return fallback


ProgramT = TypeVar("ProgramT", bound=Program)


def start_on_free_ports(
    count: int, start: Callable[[int], ProgramT], *, step: int = 2, even: bool = True, attempts: int = 5
) -> tuple[int, ProgramT]:
    """``(base, start(base))`` for a free base from ``free_port_base(count, step)``, trying
    another range when the program lost a port to someone else between probe and bind."""
    for attempt in range(attempts):
        base = free_port_base(count, step, even=even)
        try:
            return base, start(base)
        except LoadgenError as exc:
            if "Address already in use" not in str(exc) or attempt + 1 == attempts:
                raise
    raise AssertionError("unreachable")
