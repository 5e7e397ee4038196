"""Load soak of the sidecar (issue 9 §3): many recorded calls with churn, for a bounded time.

``python -m tests.robustness.soak [--calls 500] [--churn 20] [--seconds 120] [--srtp]
[--workers N] [--out DIR]`` runs, as real processes on 127.0.0.1, in a network namespace of its
own when root (``--netns``, the default then: nothing else on the machine can take the ports
the soak uses, and the kernel's socket tables list only the soak's sockets):

- the reference SRS, ``siprec-src srs`` (``docs/srs.md``): a ``sips:`` listener with a throwaway
  PKI when ``--srtp`` (the default), so every recording is SIP over TLS and SRTP (SDES,
  AES_CM_128_HMAC_SHA1_80) toward it; ``--no-srtp``: SIP over TCP and plain RTP;
- the sidecar, ``siprec-src serve --config FILE`` (``docs/configuration.md``) with ``--workers``
  media worker processes, driven through its native REST API (``docs/api.md``);
- the feeder: the paced C sender ``rtpgen`` of ``benchmarks/loadgen``, one process per cohort
  of calls, sending each leg's 172-byte PCMU packets at 50 packets/s to the call's tap port.

Why the C sender: 500 calls are 1000 legs, 50 000 packets/s. A Python sender would need most
of one of the two cores for that alone (the sidecar's own worker, at ~150-200k packets/s per
core, is the fastest Python on the box), and a sender that falls behind turns into loss the
soak would blame on the sidecar. ``rtpgen`` sends on absolute deadlines with ``sendmmsg``,
reports exactly how many packets it handed to the kernel per stream (``sent_per_stream``) and
prints that report also when stopped early (SIGINT), which is what the ledger below needs. It
sends to a fixed list of ports for its lifetime, so each cohort of calls gets its own process.
``--tick-us 20000`` makes each one wake once per 20 ms packet interval and send that interval's
packets in one batch: 25 processes then cost ~1250 wake-ups/s instead of 50 000.

**The load.** Calls come in cohorts of ``--churn`` calls, one cohort per second; each call
lives ``calls / churn`` seconds (25 s for 500 calls at 20/s). After a ramp of one lifetime
``--calls`` calls are open, and every second ``--churn`` calls end and ``--churn`` begin. Each
call: ``POST /v1/calls``, ``POST .../recordings`` (``both_tracks``: two streams, labels 1 and 2)
on the ``soak`` connector, wait until the recording is ``in-progress`` with both forks started,
then RTP into both tap ports until one second before the call's end, then its ledger is read
(below) and it ends: even cohorts by ``DELETE /v1/calls/{id}`` alone (the call ends its
recording: BYE), odd cohorts by stopping the recording first (``{"status": "stopped"}``: BYE)
and then DELETE. At ``--seconds`` no cohort opens any more, the running senders are stopped
(SIGINT: they report what they sent) and every open call ends the same way.

**The ledger: every packet accounted for, per stream, hop by hop.** Before a call ends, the
driver waits until the kernel queues of its tap sockets and of the SRS's sockets are empty
(``rx_queue`` from sock_diag, what ``ss`` shows; twice, 100 ms apart), then reads
``GET /v1/calls/{id}`` (leg and fork counters) and the kernel's per-socket ``drops`` of those
sockets. After the BYE, the SRS's ``session.json`` of that recording gives what it received.
Then, per stream:

==========  ===================================================================================
tap hop     ``sent`` (rtpgen) = leg ``packets`` + leg ``rejected`` + tap socket kernel drops
fork hop    leg ``packets`` = fork ``packets`` + ``dropped_paused`` + ``dropped_payload_type`` +
            ``send_errors`` (the fork is started before the first packet is sent)
SRS hop     fork ``packets`` = SRS ``packets`` + ``malformed`` + ``srtp_failures`` +
            ``paused_packets`` + SRS socket kernel drops
==========  ===================================================================================

What does not balance is *unaccounted*; the soak wants 0 on every hop. A counted drop is
accounted for but reported (a soak at a sustainable load has none). The sum of the fork
``packets`` is also checked against the change of ``siprec_fork_packets_total`` in ``/metrics``.
Every recording the sidecar started must have a ``session.json`` at the SRS with
``end_reason: bye-from-src``, and no other session may exist there. (The WAVs are deleted as
each session ends, so disk use stays bounded by the open calls; a session whose count does not
balance keeps its files, and its statistics go in the report.)

When the SRS (or the sidecar) reads its sockets late, the drain waits, the call ends late and
more calls than ``--calls`` are open for a while: the report says which side the drains waited
for (``drain_waited_on``), how long (``cohort_timings_s``) and the peak of open calls. A drain
still waiting after 30 s is a problem.

**Returned resources.** Before the load, one warm-up call is recorded and ended (so the TLS
connection to the SRS, lazy imports and first allocations exist), and the *baseline* is taken:
open file descriptors and the set of bound UDP ports of the sidecar (control process and each
worker) and of the SRS. After the load, every count must come back to the baseline: the UDP
port sets exactly, the fd counts to at most the baseline (what is above it is named in the
report: "udp PORT", "tcp A->B", a path).

**Memory.** Every second: VmRSS, fd count, UDP sockets and CPU time of each process (from
``/proc``), and the calls and recordings open (``/healthz``). The RSS slope of each process is
the least-squares slope of its RSS against time, with the open calls as a second regressor (so
a moment with more calls open is read as live calls, not growth), over the steady state: from
the end of the warm-up (``--warmup``, default half the run and at least one call lifetime + 5 s)
to the stop, in KiB/min with its standard error; ``kib_per_call_churned`` divides it by the
calls that process saw begin and end per minute (a media worker sees its share). A leak of
``b`` KiB per call churned shows as ``b`` there; ``--leak-bytes-per-call`` injects exactly that
into the control process (a wrapper that keeps that many bytes per ``Sidecar.open_call``), to
check that the measurement sees one. RSS per call is (median steady RSS - baseline) / calls.
A sidecar process growing more than ``--max-kib-per-call-control`` / ``--max-kib-per-call-worker``
(default 10 KiB each) is a problem. The defaults catch a leak like the one this soak found (a
media worker kept every closed call: ~22 KiB per call) and pass a healthy sidecar in the steady
half of a 2-minute run (1.4-2.4 KiB per call in the control process there: GC high-water steps).
Resolving ~1 KiB per call takes longer: over the second half of 5 minutes at 10 calls/s, a
healthy control process grew 0.3 KiB per call and a worker 0.7.

The report is ``soak-<date>-<host>.json`` in ``--out`` (default ``benchmarks/results``), with
the samples; a table is printed. Exit status 0 when every property held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple

import aiohttp
import numpy as np

from benchmarks.loadgen import GenResult, free_port_range
from benchmarks.loadgen.build import build
from benchmarks.loadgen.runner import proc_net_rows
from benchmarks.report import RESULTS_DIR, format_rows, machine, write_report

HOST: Final = "127.0.0.1"
TOKEN: Final = "soak-token-0123456789abcdef"
AUTH: Final = {"Authorization": f"Bearer {TOKEN}"}
CONNECTOR: Final = "soak"
RECORDING: Final = "soak"  # the recording's name on every call
PPS: Final = 50  # 20 ms PCMU packets per leg
LEGS: Final = ("inbound", "outbound")
LABEL_OF_LEG: Final = {"inbound": "1", "outbound": "2"}  # both_tracks: label 1 inbound, 2 outbound
PORTS_PER_CALL: Final = 8  # two tap pairs and two fork pairs (RTP + RTCP each)

START_TIMEOUT: Final = 30.0  # a peer prints its ready line within this
SETUP_TIMEOUT: Final = 15.0  # a recording is in progress within this (attempt_timeout is 8 s)
# The kernel queues of a cohort's sockets empty within this. Long on purpose: a call is ended
# (BYE) only after its queues drained, else what the SRS still held would be lost at its close
# and what a lagging worker still forwarded could reach a port the SRS reused; past it, the
# cohort is reported as not drained (a lag, not a loss to blame on a hop).
DRAIN_TIMEOUT: Final = 30.0
DRAIN_POLL: Final = 0.1  # seconds between two readings of the socket queues
END_MARGIN: Final = 1.0  # a cohort's sender stops this long before the call ends (drain, ledger)
SETTLE_TIMEOUT: Final = 20.0  # after the load: SRS sessions ended, fds and ports back
STOP_TIMEOUT: Final = 20.0  # SIGTERM to exit
HTTP_CONNECTIONS: Final = 32


# --- /proc ------------------------------------------------------------------------------------------


class UdpSocket(NamedTuple):
    """One UDP socket: local port, bytes waiting to be read, datagrams the kernel dropped
    because its receive buffer was full, inode (to find its process). A named tuple: thousands
    are made several times a second."""

    port: int
    rx_queue: int
    drops: int
    inode: int


# sock_diag (linux/sock_diag.h, linux/inet_diag.h): what ``ss`` asks the kernel. The soak holds
# thousands of UDP sockets; /proc/net/udp costs ~35 ms per reading for 5000 of them (the kernel
# formats every line), a netlink dump a few ms, and the drain check reads it several times a
# second on the same two cores as what it measures.
_NETLINK_SOCK_DIAG: Final = 4
_SOCK_DIAG_BY_FAMILY: Final = 20
_NLM_F_REQUEST_DUMP: Final = 0x1 | 0x300
_NLMSG_ERROR: Final = 2
_NLMSG_DONE: Final = 3
_INET_DIAG_SKMEMINFO: Final = 7
_SK_MEMINFO_DROPS: Final = 8
_NLMSG_HEADER: Final = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_DIAG_REQUEST: Final = struct.Struct("=BBBxI48x")  # family, protocol, extensions, states, socket id
# family, state, timer, retransmits, sport, dport, (addresses), interface, (cookie), expires,
# rqueue, wqueue, uid, inode
_DIAG_MESSAGE: Final = struct.Struct("=BBBBHH32xI8xIIIII")
_RTATTR: Final = struct.Struct("=HH")
# header, message, then the SKMEMINFO attribute's header and its nine counters (SK_MEMINFO_VARS)
_DIAG_RECORD: Final = struct.Struct("=IHHII" + _DIAG_MESSAGE.format[1:] + "HH9I")


def _diag_dump(family: int) -> list[UdpSocket]:
    """Every UDP socket of ``family`` in this network namespace, from one sock_diag dump."""
    request = _DIAG_REQUEST.pack(family, socket.IPPROTO_UDP, 1 << (_INET_DIAG_SKMEMINFO - 1), 0xFFFFFFFF)
    header = _NLMSG_HEADER.pack(
        _NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0
    )
    found: list[UdpSocket] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as link:
        link.sendall(header + request)
        while True:
            data = link.recv(1 << 20)
            offset = 0
            while offset + _NLMSG_HEADER.size <= len(data):
                length, kind, _, _, _ = _NLMSG_HEADER.unpack_from(data, offset)
                if kind == _NLMSG_DONE:
                    return found
                if kind == _NLMSG_ERROR or length < _NLMSG_HEADER.size:
                    raise OSError("sock_diag dump refused")
                found.append(_diag_socket(data, offset, length))
                offset += (length + 3) & ~3


def _diag_socket(data: bytes, offset: int, length: int) -> UdpSocket:
    """One inet_diag_msg and its SKMEMINFO attribute (the drops)."""
    if length == _DIAG_RECORD.size:  # the usual shape: the message and one SKMEMINFO attribute
        fields = _DIAG_RECORD.unpack_from(data, offset)
        if fields[18] == _INET_DIAG_SKMEMINFO:
            return UdpSocket(socket.ntohs(fields[9]), fields[13], fields[19 + _SK_MEMINFO_DROPS], fields[16])
    body = offset + _NLMSG_HEADER.size
    message = _DIAG_MESSAGE.unpack_from(data, body)
    drops = 0
    at = body + _DIAG_MESSAGE.size
    while at + _RTATTR.size <= offset + length:
        size, attribute = _RTATTR.unpack_from(data, at)
        if size < _RTATTR.size:
            break
        if attribute == _INET_DIAG_SKMEMINFO:
            (drops,) = struct.unpack_from("=I", data, at + _RTATTR.size + 4 * _SK_MEMINFO_DROPS)
        at += (size + 3) & ~3
    return UdpSocket(socket.ntohs(message[4]), message[8], drops, message[11])


def _proc_udp() -> list[UdpSocket]:
    return [
        UdpSocket(
            port=int(fields[1].rsplit(":", 1)[1], 16),
            rx_queue=int(fields[4].split(":")[1], 16),
            drops=int(fields[12]),
            inode=int(fields[9]),
        )
        for fields in proc_net_rows("udp")
        if len(fields) >= 13
    ]


def udp_sockets() -> list[UdpSocket]:
    """Every UDP socket of this network namespace (IPv4 and IPv6): from sock_diag, or from
    /proc/net/udp where netlink is not available (the same fields)."""
    try:
        return _diag_dump(socket.AF_INET) + _diag_dump(socket.AF_INET6)
    except OSError:
        return _proc_udp()


def _by_port(sockets: Iterable[UdpSocket]) -> dict[int, UdpSocket]:
    """Per local port, the queued bytes and drops of every socket bound to it, summed: a tap
    port is served by two sockets once its source is latched (the tap socket and one connected
    to the source, SO_REUSEPORT), and the kernel queues a datagram on either."""
    ports: dict[int, UdpSocket] = {}
    for s in sockets:
        seen = ports.get(s.port)
        if seen is not None:
            s = UdpSocket(s.port, seen.rx_queue + s.rx_queue, seen.drops + s.drops, seen.inode)
        ports[s.port] = s
    return ports


def _socket_inodes(pid: int) -> tuple[int, set[int]]:
    """(open file descriptors, inodes of the sockets among them) of a process."""
    fd_dir = f"/proc/{pid}/fd"
    inodes: set[int] = set()
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return 0, inodes
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return len(names), inodes


def _tcp_inodes() -> dict[int, str]:
    """inode -> "tcp LOCALPORT->REMOTEPORT STATE" of every TCP socket (to name an fd)."""
    named: dict[int, str] = {}
    for fields in proc_net_rows("tcp"):
        if len(fields) > 9:
            local = int(fields[1].rsplit(":", 1)[1], 16)
            remote = int(fields[2].rsplit(":", 1)[1], 16)
            named[int(fields[9])] = f"tcp {local}->{remote} st{fields[3]}"
    return named


def fd_names(pid: int) -> list[str]:
    """What each open fd of a process is, for a report that says which ones were not returned:
    "udp PORT", "tcp LOCAL->REMOTE stXX", "socket" (Unix), "pipe", "anon_inode:[eventpoll]", a path."""
    udp = {s.inode: s.port for s in udp_sockets()}
    tcp = _tcp_inodes()
    names = []
    fd_dir = f"/proc/{pid}/fd"
    with contextlib.suppress(OSError):
        for name in os.listdir(fd_dir):
            try:
                target = os.readlink(f"{fd_dir}/{name}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                target = f"udp {udp[inode]}" if inode in udp else tcp.get(inode, "socket")
            elif target.startswith("pipe:"):
                target = "pipe"
            names.append(target)
    return sorted(names)


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


_TICK: Final = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        with contextlib.suppress(OSError):
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return sorted(set(found))


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One process at one instant."""

    role: str  # "control", "worker-N", "srs"
    pid: int
    rss_kib: int
    fds: int
    udp_ports: tuple[int, ...]
    cpu_s: float


def sample_process(role: str, pid: int, udp_by_inode: dict[int, UdpSocket]) -> ProcessSample:
    fds, inodes = _socket_inodes(pid)
    ports = sorted(udp_by_inode[i].port for i in inodes if i in udp_by_inode)
    return ProcessSample(role, pid, _rss_kib(pid), fds, tuple(ports), _cpu_seconds(pid))


@dataclass(frozen=True, slots=True)
class Sample:
    """Every process of the soak at one instant, and what the sidecar says it holds."""

    t: float  # seconds since the load started (negative: before)
    calls: int
    recordings: int
    processes: tuple[ProcessSample, ...]

    def of(self, prefix: str) -> list[ProcessSample]:
        return [p for p in self.processes if p.role.startswith(prefix)]

    @property
    def sidecar_rss_kib(self) -> int:
        """Control process and workers together: a leak anywhere in the sidecar counts."""
        return sum(p.rss_kib for p in self.processes if p.role != "srs")

    def row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"t": round(self.t, 2), "calls": self.calls, "recordings": self.recordings}
        for p in self.processes:
            row[p.role] = {"rss_kib": p.rss_kib, "fds": p.fds, "udp": len(p.udp_ports), "cpu_s": p.cpu_s}
        return row


# --- the ledger -------------------------------------------------------------------------------------


@dataclass(slots=True)
class StreamLedger:
    """One forked stream (one leg) of one call, hop by hop (module doc)."""

    sent: int = 0
    tap_packets: int = 0
    tap_rejected: int = 0
    tap_kernel_drops: int = 0
    fork_packets: int = 0
    fork_dropped: int = 0  # paused + payload type + send errors
    srs_received: int = 0  # packets + malformed + srtp_failures + paused_packets
    srs_kernel_drops: int = 0
    srs_port: int = 0
    srs_seen: bool = False
    srs_detail: dict[str, Any] | None = None  # the SRS's statistics, when they do not balance

    @property
    def tap_unaccounted(self) -> int:
        return self.sent - self.tap_packets - self.tap_rejected - self.tap_kernel_drops

    @property
    def fork_unaccounted(self) -> int:
        return self.tap_packets - self.fork_packets - self.fork_dropped

    @property
    def srs_unaccounted(self) -> int:
        return self.fork_packets - self.srs_received - self.srs_kernel_drops


@dataclass(slots=True)
class CallOutcome:
    call_id: str
    cohort: int
    taps: dict[str, int] = field(default_factory=dict)  # leg -> tap RTP port
    streams: dict[str, StreamLedger] = field(default_factory=dict)  # label -> ledger
    recorded: bool = False  # the recording reached in-progress with both forks started
    ended: bool = False  # DELETE answered 204
    srs_end_reason: str | None = None
    errors: list[str] = field(default_factory=list)


# --- the processes ----------------------------------------------------------------------------------

LEAKY_SERVE: Final = """\
import sys
from siprec_src.__main__ import main
from siprec_src.control.sidecar import Sidecar

# The soak's leak detector check: keep {size} bytes per call opened, for the process's life.
_kept = []
_open_call = Sidecar.open_call


async def open_call(self, **options):
    _kept.append(bytearray({size}))
    return await _open_call(self, **options)


Sidecar.open_call = open_call
sys.exit(main(sys.argv[1:]))
"""


def sidecar_config(
    *, srs_uri: str, srtp: bool, workers: int, ports: tuple[int, int], max_calls: int, ca: str | None
) -> str:
    tls = f'\n[sip.tls]\nca = "{ca}"\n' if ca else ""
    return f"""\
[log]
level = "warning"

[api]
host = "{HOST}"
port = 0
max_calls = {max_calls}

rate_limit = 0  # the driver polls recordings it starts; a PBX's rate is not what is measured

[api.auth]
tokens = ["{TOKEN}"]

[callbacks]
signing_secret = "soak-callback-secret"  # none are asked for; the config wants one with tokens

[sip]
listen = ["udp:{HOST}:0", "tcp:{HOST}:0"]  # TLS toward the SRS leaves from the TCP side
{tls}
[media]
host = "{HOST}"
port_min = {ports[0]}
port_max = {ports[1]}
workers = {workers}

[connectors.{CONNECTOR}]
srs = ["{srs_uri}"]
secure = {"true" if srtp else "false"}
srtp_suites = ["AES_CM_128_HMAC_SHA1_80"]
attempt_timeout = 8
"""


class Peer:
    """A child process whose stdout lines are read as they come (so its pipe never fills)."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.name = name
        self.process = process
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self._log = log_path.open("a", encoding="utf-8")
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, name: str, argv: Sequence[str], work: Path) -> Peer:
        stderr = (work / f"{name}.stderr").open("wb")
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=Path(__file__).resolve().parents[2],
            )
        finally:
            stderr.close()  # the child holds its copy
        return cls(name, process, work / f"{name}.stdout")

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            text = line.decode("utf-8", "replace").rstrip("\n")
            self._log.write(text + "\n")
            self._log.flush()
            self.lines.put_nowait(text)

    async def expect(self, prefix: str, timeout: float = START_TIMEOUT) -> str:
        """The first line that starts with ``prefix``; an error if the process exits first."""
        async with asyncio.timeout(timeout):
            while True:
                getter = asyncio.ensure_future(self.lines.get())
                exited = asyncio.ensure_future(self.process.wait())
                done, _ = await asyncio.wait({getter, exited}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    exited.cancel()
                    line = getter.result()
                    if line.startswith(prefix):
                        return line
                    continue
                getter.cancel()
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} before {prefix!r}")

    async def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then the exit status (None and SIGKILL when it did not exit in time)."""
        code: int | None = self.process.returncode
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    code = await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
                code = None
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(2):
                await self._reader
        self._log.close()
        return code


async def run_rtpgen(ports: Sequence[int], duration: float, ssrc_base: int, stop: asyncio.Event) -> GenResult:
    """``rtpgen`` to ``ports`` (one stream each) for ``duration`` s, or until ``stop`` is set
    (SIGINT: it reports what it sent so far)."""
    with tempfile.NamedTemporaryFile("w", prefix="soak-ports-", suffix=".txt") as ports_file:
        ports_file.write("\n".join(str(port) for port in ports) + "\n")
        ports_file.flush()
        process = await asyncio.create_subprocess_exec(
            str(build("rtpgen")),
            "--ports-file",
            ports_file.name,
            "--dest",
            HOST,
            "--pps",
            str(PPS),
            "--duration",
            f"{max(duration, 0.0):.3f}",
            "--tick-us",
            "20000",
            "--ssrc-base",
            str(ssrc_base),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        communicate = asyncio.ensure_future(process.communicate())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            async with asyncio.timeout(duration + 30.0):
                await asyncio.wait({communicate, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not communicate.done():
                    with contextlib.suppress(ProcessLookupError):
                        process.send_signal(signal.SIGINT)
                out, err = await communicate
        finally:
            stopped.cancel()
            if process.returncode is None:
                process.kill()
                await process.wait()
    if process.returncode not in (0, 1):
        raise RuntimeError(f"rtpgen exited with {process.returncode}: {err.decode(errors='replace')}")
    lines = out.decode("utf-8", "replace").strip().splitlines()
    return GenResult.from_json(json.loads(lines[-1]))


# --- the soak ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SoakOptions:
    calls: int = 500
    churn: int = 20  # calls ended and opened per second
    seconds: float = 120.0
    srtp: bool = True
    workers: int = 2
    out: Path = RESULTS_DIR
    warmup: float | None = None  # left out of the RSS slope; default: one lifetime + 5 s
    leak_bytes_per_call: int = 0
    keep_files: bool = False  # keep the SRS's recordings (else deleted as each session ends)
    # The most RSS growth per call churned (steady slope, KiB) judged healthy, per process;
    # the defaults suit the steady half of a run of two minutes or more (see the module doc).
    max_kib_per_call_control: float = 10.0
    max_kib_per_call_worker: float = 10.0

    @property
    def lifetime(self) -> float:
        """Seconds each call lives: the concurrent count is then ``calls``."""
        return self.calls / self.churn

    @property
    def warmup_s(self) -> float:
        """Seconds left out of the RSS slope: by default the first half of the run, and at least
        one call lifetime + 5 s (the ramp). A fresh sidecar keeps growing for a while at constant
        load (SIP dialogs kept 32 s after their end, allocator high-water marks): about 50 s at
        20 calls/s on the machine this was written on."""
        if self.warmup is not None:
            return self.warmup
        return max(self.lifetime + 5.0, self.seconds / 2)


class Soak:
    def __init__(self, options: SoakOptions, work: Path) -> None:
        self.options = options
        self.work = work
        self.srs_out = work / "srs"
        self.outcomes: dict[str, CallOutcome] = {}
        self.samples: list[Sample] = []
        self.stop_feeding = asyncio.Event()
        self.load_started = 0.0  # monotonic
        self.load_stopped: float | None = None  # seconds since load_started
        self.unknown_sessions: list[str] = []  # SRS sessions no call of ours explains
        self.srs_sessions = 0
        self.http_errors: list[str] = []
        self.cohort_timings: list[dict[str, float]] = []
        self.lags: list[str] = []
        self.drain_waits: Counter[str] = Counter()  # which side's queues a drain waited for
        self._udp_read_at = -1.0
        self._udp_ports: dict[int, UdpSocket] = {}
        self.feeder_cpu_s = 0.0
        self.driver_cpu_at_start = 0.0
        self.load_before = os.getloadavg()
        self._session_seen = asyncio.Event()
        self.srs: Peer
        self.sidecar: Peer
        self.url = ""
        self.http: aiohttp.ClientSession
        self.probe: aiohttp.ClientSession

    # --- start -----------------------------------------------------------------------------------

    async def start(self) -> None:
        options = self.options
        self.srs_out.mkdir(parents=True, exist_ok=True)
        ca: str | None = None
        if options.srtp:
            from siprec_src.pki import make_pki

            pki = make_pki(self.work, "soak")
            ca = pki.ca
            srs_argv = [
                "--listen",
                f"sips:{HOST}:0",
                "--tls-cert",
                pki.server_cert,
                "--tls-key",
                pki.server_key,
            ]
        else:
            srs_argv = ["--listen", f"sip:{HOST}:0;transport=tcp"]
        self.srs = await Peer.start(
            "srs",
            [sys.executable, "-m", "siprec_src", "srs", *srs_argv, "--out", str(self.srs_out)],
            self.work,
        )
        line = await self.srs.expect("siprec-src srs listening on ")
        # "siprec-src srs listening on tls:127.0.0.1:PORT, recording to DIR"
        address = line.removeprefix("siprec-src srs listening on ").split(",")[0]
        port = int(address.rsplit(":", 1)[1])
        srs_uri = f"sips:srs@{HOST}:{port}" if options.srtp else f"sip:srs@{HOST}:{port};transport=tcp"
        # Room for calls that end late (a drain waiting for a busy SRS), so that a slow sink
        # shows as longer drains and more calls open, not as refused calls; and ports for all
        # of them, below the ephemeral range when they fit there, split among the workers. The
        # range's low end is drawn at random: without a network namespace of our own, other
        # programs that take the lowest free range (free_port_range's habit) then miss ours.
        max_calls = 3 * options.calls + 10 * options.churn
        wanted = PORTS_PER_CALL * max_calls + 64
        low = random.randrange(10000, max(10001, 32000 - int(1.2 * wanted)))
        ports = free_port_range(wanted, low=low, spare=0.1)
        config = self.work / "sidecar.toml"
        config.write_text(
            sidecar_config(
                srs_uri=srs_uri,
                srtp=options.srtp,
                workers=options.workers,
                ports=ports,
                max_calls=max_calls,
                ca=ca,
            )
        )
        serve = ["serve", "--config", str(config)]
        if options.leak_bytes_per_call:
            argv = [sys.executable, "-c", LEAKY_SERVE.format(size=options.leak_bytes_per_call), *serve]
        else:
            argv = [sys.executable, "-m", "siprec_src", *serve]
        self.sidecar = await Peer.start("sidecar", argv, self.work)
        self.url = (await self.sidecar.expect("siprec-src serving on ")).split()[-1]
        self.http = self._client()
        # /healthz and /metrics on one connection of their own, kept open from before the
        # baseline to the end: the sidecar always holds exactly one fd for it.
        self.probe = self._client(connections=1)
        self._srs_watcher = asyncio.get_running_loop().create_task(self._watch_srs())
        deadline = time.monotonic() + START_TIMEOUT
        while len(self.workers()) < options.workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{options.workers} media workers did not start")
            await asyncio.sleep(0.1)

    @staticmethod
    def _client(connections: int = HTTP_CONNECTIONS) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            headers=AUTH,
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def _fresh_client(self) -> None:
        """Close our keep-alive connections to the API (each is an fd of the sidecar's) before
        a baseline or a final count, so the count is the sidecar's own, not our pool's size."""
        await self.http.close()
        self.http = self._client()
        await asyncio.sleep(0.2)  # the server sees the FINs and closes its ends

    def workers(self) -> list[int]:
        return _children(self.sidecar.process.pid)

    async def close(self) -> dict[str, int | None]:
        with contextlib.suppress(AttributeError):
            self._srs_watcher.cancel()
        with contextlib.suppress(AttributeError):
            await self.http.close()
        with contextlib.suppress(AttributeError):
            await self.probe.close()
        codes: dict[str, int | None] = {}
        for peer in ("sidecar", "srs"):
            with contextlib.suppress(AttributeError):
                codes[peer] = await getattr(self, peer).stop()
        return codes

    # --- the SRS's side: one session.json per ended session --------------------------------------

    async def _watch_srs(self) -> None:
        while True:
            line = await self.srs.lines.get()
            # "session ID ended: REASON after S s, N RTP packets -> PATH/session.json"
            if line.startswith("session ") and " ended: " in line and " -> " in line:
                self._read_session(Path(line.rsplit(" -> ", 1)[1]))

    def _read_session(self, path: Path) -> None:
        self.srs_sessions += 1
        self._session_seen.set()
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            self.unknown_sessions.append(f"{path}: {exc}")
            return
        unbalanced = self._account_session(path, document)
        if not self.options.keep_files and not unbalanced:
            shutil.rmtree(path.parent, ignore_errors=True)  # the WAVs: disk stays bounded

    def _account_session(self, path: Path, document: dict[str, Any]) -> bool:
        """Put a session's statistics in its call's ledger; True when a stream's count differs
        from what the fork sent (its files are then kept, and its statistics reported)."""
        aors = [p.get("aor", "") for p in document.get("metadata", {}).get("participants", [])]
        call_id = next((a[4:].split("@")[0] for a in aors if a.startswith("sip:soak-")), None)
        outcome = self.outcomes.get(call_id or "")
        if outcome is None or outcome.srs_end_reason is not None:
            self.unknown_sessions.append(f"{path.parent.name}: participants {aors}")
            return True
        outcome.srs_end_reason = document.get("end_reason")
        unbalanced = False
        for stream in document.get("streams", []):
            ledger = outcome.streams.setdefault(str(stream["label"]), StreamLedger())
            stats = stream.get("stats") or {}
            ledger.srs_seen = True
            ledger.srs_received = sum(
                int(stats.get(key, 0)) for key in ("packets", "malformed", "srtp_failures", "paused_packets")
            )
            if ledger.srs_unaccounted:
                unbalanced = True
                ledger.srs_detail = {"session": str(path.parent), "port": stream.get("port"), **stats}
        return unbalanced

    # --- one cohort ------------------------------------------------------------------------------

    def udp_table(self, *, fresh: bool = False) -> tuple[float, dict[int, UdpSocket]]:
        """(when it was read, the UDP sockets by port), read at most every DRAIN_POLL seconds:
        the cohorts draining at the same moment share one reading (/proc/net/udp lists
        thousands of sockets, and this process shares the two cores with what it measures)."""
        now = time.monotonic()
        if fresh or now - self._udp_read_at >= DRAIN_POLL:
            self._udp_read_at, self._udp_ports = now, _by_port(udp_sockets())
        return self._udp_read_at, self._udp_ports

    async def _request(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        async with self.http.request(method, f"{self.url}{path}", json=body) as response:
            if response.status != expect:
                raise RuntimeError(f"{method} {path}: {response.status} {(await response.text())[:300]}")
            return None if response.status == 204 else await response.json()

    async def _open(self, outcome: CallOutcome) -> None:
        call = await self._request(
            "POST",
            "/v1/calls",
            {
                "call_id": outcome.call_id,
                # The SRS's metadata names this caller: how its session.json finds the call.
                "from": {"aor": f"sip:{outcome.call_id}@caller.soak.invalid", "name": "Caller"},
                "to": {"aor": "sip:agent@soak.invalid", "name": "Agent"},
            },
            expect=201,
        )
        outcome.taps = {leg: int(call["legs"][leg]["rtp"].rsplit(":", 1)[1]) for leg in LEGS}
        await self._request(
            "POST",
            f"/v1/calls/{outcome.call_id}/recordings",
            {"connector": CONNECTOR, "track": "both_tracks", "name": RECORDING},
            expect=201,
        )
        # In progress *and* both forks started (``remote`` is set once the media side started
        # the fork): a packet sent before would be counted by the leg and forwarded by no fork.
        deadline = time.monotonic() + SETUP_TIMEOUT
        while True:
            await asyncio.sleep(0.2)
            recording = await self._request("GET", f"/v1/calls/{outcome.call_id}/recordings/{RECORDING}")
            status = recording["status"]
            if status == "in-progress" and all(s["remote"] for s in recording["streams"]):
                outcome.recorded = True
                for stream in recording["streams"]:
                    ledger = outcome.streams.setdefault(stream["label"], StreamLedger())
                    ledger.srs_port = int(stream["remote"].rsplit(":", 1)[1])
                return
            if status in ("failed", "stopped") or time.monotonic() > deadline:
                raise RuntimeError(f"recording {status}: {recording.get('error')}")

    async def _ledger(self, outcomes: Sequence[CallOutcome]) -> float:
        """Wait for the cohort's sockets to drain, then read counters and kernel drops; returns
        how long the drain took."""
        taps = {p for o in outcomes for p in o.taps.values()}
        srs = {s.srs_port for o in outcomes for s in o.streams.values()}
        started = time.monotonic()
        deadline = started + DRAIN_TIMEOUT
        quiet = 0
        last_read = 0.0
        waited_on: set[str] = set()
        while quiet < 2 and time.monotonic() < deadline:
            read_at, table = self.udp_table()
            if read_at != last_read:  # two distinct readings, at least DRAIN_POLL apart
                last_read = read_at
                busy = {
                    side
                    for side, ports in (("tap", taps), ("srs", srs))
                    if any(table[p].rx_queue for p in ports if p in table)
                }
                waited_on |= busy
                quiet = 0 if busy else quiet + 1
            await asyncio.sleep(DRAIN_POLL)
        drained = time.monotonic() - started
        self.drain_waits.update(waited_on)
        if quiet < 2:
            self.lags.append(
                f"cohort {outcomes[0].cohort}: {'/'.join(sorted(waited_on))} socket queues not empty "
                f"after {DRAIN_TIMEOUT:.0f} s"
            )
        counters = await asyncio.gather(
            *(self._request("GET", f"/v1/calls/{o.call_id}") for o in outcomes), return_exceptions=True
        )
        table = self.udp_table(fresh=True)[1]
        for outcome, call in zip(outcomes, counters, strict=True):
            if isinstance(call, BaseException):
                outcome.errors.append(f"ledger: {call}")
                continue
            forks = {s["label"]: s for r in call["recordings"] for s in r["streams"]}
            for leg in LEGS:
                ledger = outcome.streams.setdefault(LABEL_OF_LEG[leg], StreamLedger())
                counted = call["legs"][leg]
                ledger.tap_packets = counted["packets"]
                ledger.tap_rejected = counted["rejected"]
                tap = table.get(outcome.taps[leg])
                ledger.tap_kernel_drops = tap.drops if tap else 0
                fork = forks.get(LABEL_OF_LEG[leg])
                if fork is not None:
                    ledger.fork_packets = fork["packets"]
                    ledger.fork_dropped = fork["dropped_paused"] + fork["dropped_payload_type"]
                    ledger.fork_dropped += fork["send_errors"]
                received = table.get(ledger.srs_port)
                ledger.srs_kernel_drops = received.drops if received else 0
        return drained

    async def _end(self, outcome: CallOutcome, stop_recording_first: bool) -> None:
        try:
            if stop_recording_first and outcome.recorded:
                await self._request(
                    "POST", f"/v1/calls/{outcome.call_id}/recordings/{RECORDING}", {"status": "stopped"}
                )
        finally:
            # The call is ended whatever happened to its recording: its ports must come back.
            await self._request("DELETE", f"/v1/calls/{outcome.call_id}", expect=204)
            outcome.ended = True

    async def cohort(self, index: int, opens_at: float) -> None:
        options = self.options
        ends_at = opens_at + options.lifetime
        outcomes = [CallOutcome(f"soak-{index:05d}-{i:03d}", index) for i in range(options.churn)]
        for outcome in outcomes:
            self.outcomes[outcome.call_id] = outcome
        timing: dict[str, float] = {"cohort": index}
        self.cohort_timings.append(timing)
        clock = time.monotonic()
        opened = await asyncio.gather(*(self._open(o) for o in outcomes), return_exceptions=True)
        timing["setup_s"] = time.monotonic() - clock
        for outcome, result in zip(outcomes, opened, strict=True):
            if isinstance(result, BaseException):
                outcome.errors.append(f"open: {result}")
        fed = [o for o in outcomes if o.recorded]
        ports = [o.taps[leg] for o in fed for leg in LEGS]
        if ports and not self.stop_feeding.is_set():
            duration = ends_at - END_MARGIN - time.monotonic()
            try:
                gen = await run_rtpgen(ports, duration, 0x10000000 + index * 1024, self.stop_feeding)
            except (RuntimeError, OSError, ValueError) as exc:
                for outcome in fed:
                    outcome.errors.append(f"feeder: {exc}")
            else:
                self.feeder_cpu_s += gen.cpu_s
                for position, sent in enumerate(gen.sent_per_stream):
                    outcome = fed[position // 2]
                    label = LABEL_OF_LEG[LEGS[position % 2]]
                    outcome.streams.setdefault(label, StreamLedger()).sent = sent
        clock = time.monotonic()
        timing["drain_s"] = await self._ledger([o for o in outcomes if o.taps])
        timing["ledger_s"] = time.monotonic() - clock
        if not self.stop_feeding.is_set():
            await asyncio.sleep(max(0.0, ends_at - time.monotonic()))
        clock = time.monotonic()
        timing["late_s"] = clock - ends_at  # how much later than planned the calls end
        ended = await asyncio.gather(
            *(self._end(o, stop_recording_first=index % 2 == 1) for o in outcomes if o.taps),
            return_exceptions=True,
        )
        for outcome, result in zip([o for o in outcomes if o.taps], ended, strict=True):
            if isinstance(result, BaseException):
                outcome.errors.append(f"end: {result}")
        timing["end_s"] = time.monotonic() - clock

    # --- sampling -------------------------------------------------------------------------------

    async def sample(self) -> Sample:
        table = {s.inode: s for s in udp_sockets()}
        processes = [sample_process("control", self.sidecar.process.pid, table)]
        processes += [sample_process(f"worker-{i}", pid, table) for i, pid in enumerate(self.workers())]
        processes.append(sample_process("srs", self.srs.process.pid, table))
        calls = recordings = -1
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            async with self.probe.get(f"{self.url}/healthz") as response:
                health = await response.json()
                calls, recordings = int(health["calls"]), int(health["recordings"])
        return Sample(time.monotonic() - self.load_started, calls, recordings, tuple(processes))

    async def _sampler(self) -> None:
        next_at = time.monotonic()
        while True:
            self.samples.append(await self.sample())
            next_at += 1.0
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def fork_packets_total(self) -> int:
        async with self.probe.get(f"{self.url}/metrics") as response:
            text = await response.text()
        for line in text.splitlines():
            if line.startswith("siprec_fork_packets_total "):
                return int(float(line.split()[1]))
        raise RuntimeError("/metrics has no siprec_fork_packets_total")

    # --- the whole run ---------------------------------------------------------------------------

    async def warm_up(self) -> None:
        """One call recorded and ended before the baseline: the TLS connection to the SRS,
        lazy imports and first allocations are then part of the baseline, not of the load."""
        outcome = CallOutcome("soak-warmup", -1)
        self.outcomes[outcome.call_id] = outcome
        await self._open(outcome)
        gen = await run_rtpgen(list(outcome.taps.values()), 1.0, 0x0F000000, asyncio.Event())
        for position, sent in enumerate(gen.sent_per_stream):
            outcome.streams[LABEL_OF_LEG[LEGS[position]]].sent = sent
        await self._ledger([outcome])
        await self._end(outcome, stop_recording_first=False)
        async with asyncio.timeout(SETTLE_TIMEOUT):
            while outcome.srs_end_reason is None:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the last RTCP and BYE handling settle

    async def run(self) -> dict[str, Any]:
        options = self.options
        await self.start()
        await self.warm_up()
        await self._fresh_client()
        metrics_before = await self.fork_packets_total()
        baseline = await self.sample()
        baseline_fds = {p.role: fd_names(p.pid) for p in baseline.processes}
        self.load_started = time.monotonic()
        self.driver_cpu_at_start = _own_cpu_seconds()
        sampler = asyncio.get_running_loop().create_task(self._sampler())
        cohorts: list[asyncio.Task[None]] = []
        index = 0
        while (at := self.load_started + index) < self.load_started + options.seconds:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            cohorts.append(asyncio.get_running_loop().create_task(self.cohort(index, at)))
            index += 1
        await asyncio.sleep(max(0.0, self.load_started + options.seconds - time.monotonic()))
        self.load_stopped = time.monotonic() - self.load_started
        self.stop_feeding.set()
        try:
            async with asyncio.timeout(options.lifetime + 60.0):
                await asyncio.gather(*cohorts)
        except TimeoutError:
            self.http_errors.append("cohorts did not finish in time")
        recorded = sum(1 for o in self.outcomes.values() if o.recorded)
        settled = await self._settle(baseline, recorded)
        metrics_after = await self.fork_packets_total()
        final = await self.sample()
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        report = self.report(baseline, final, settled, metrics_after - metrics_before)
        kept: dict[str, list[str]] = {}
        for p in final.processes:
            extra = Counter(fd_names(p.pid)) - Counter(baseline_fds.get(p.role, []))
            if extra:
                kept[p.role] = sorted(extra.elements())[:50]
        report["returned"]["fds_above_baseline"] = kept
        return report

    async def _settle(self, baseline: Sample, recorded: int) -> float | None:
        """Seconds until every recording's SRS session ended and every fd and UDP port of every
        process is back to the baseline; None if that did not happen within SETTLE_TIMEOUT."""
        started = time.monotonic()
        deadline = started + SETTLE_TIMEOUT
        await self._fresh_client()
        while time.monotonic() < deadline:
            now = await self.sample()
            ended = sum(1 for o in self.outcomes.values() if o.srs_end_reason is not None)
            if ended >= recorded and _returned(baseline, now):
                return time.monotonic() - started
            await asyncio.sleep(0.25)
        return None

    # --- the report ------------------------------------------------------------------------------

    def report(
        self, baseline: Sample, final: Sample, settled: float | None, metrics_delta: int
    ) -> dict[str, Any]:
        options = self.options
        soak = [o for o in self.outcomes.values() if o.cohort >= 0]
        ledgers = [s for o in soak for s in o.streams.values()]
        totals = {
            name: sum(getattr(s, name) for s in ledgers)
            for name in (
                "sent",
                "tap_packets",
                "tap_rejected",
                "tap_kernel_drops",
                "fork_packets",
                "fork_dropped",
                "srs_received",
                "srs_kernel_drops",
                "tap_unaccounted",
                "fork_unaccounted",
                "srs_unaccounted",
            )
        }
        end_reasons: dict[str, int] = {}
        for o in soak:
            if o.recorded:
                reason = o.srs_end_reason or "missing"
                end_reasons[reason] = end_reasons.get(reason, 0) + 1
        steady = self.steady_samples()
        rss = regression([(s.t, s.calls, s.sidecar_rss_kib) for s in steady])
        roles = sorted({p.role for s in self.samples for p in s.processes})
        per_process = {}
        for role in roles:
            series = [(s.t, s.calls, p.rss_kib) for s in steady for p in s.processes if p.role == role]
            slope, stderr = regression(series)
            base = next((p for p in baseline.processes if p.role == role), None)
            end = next((p for p in final.processes if p.role == role), None)
            peak = [p for s in self.samples for p in s.processes if p.role == role]
            per_process[role] = {
                "rss_baseline_kib": base.rss_kib if base else None,
                "rss_steady_median_kib": statistics.median(v for _, _, v in series) if series else None,
                "rss_final_kib": end.rss_kib if end else None,
                "rss_slope_kib_per_min": slope,
                "rss_slope_stderr_kib_per_min": stderr,
                # The slope per call this process saw begin and end: what a leak per call is.
                "kib_per_call_churned": None
                if slope is None
                else round(slope / calls_churned_per_minute(role, options), 2),
                "fds_baseline": base.fds if base else None,
                "fds_peak": max((p.fds for p in peak), default=None),
                "fds_final": end.fds if end else None,
                "udp_baseline": len(base.udp_ports) if base else None,
                "udp_peak": max((len(p.udp_ports) for p in peak), default=None),
                "udp_final": len(end.udp_ports) if end else None,
                "cpu_s": round(end.cpu_s - base.cpu_s, 2) if base and end else None,
            }
        baseline_rss = baseline.sidecar_rss_kib
        steady_rss = statistics.median(s.sidecar_rss_kib for s in steady) if steady else None
        problems = self.problems(totals, end_reasons, settled, metrics_delta, baseline, final, per_process)
        elapsed = (self.load_stopped or 0.0) or options.seconds
        return {
            **machine("soak"),
            "options": {
                "calls": options.calls,
                "churn_per_s": options.churn,
                "seconds": options.seconds,
                "srtp": options.srtp,
                "workers": options.workers,
                "lifetime_s": options.lifetime,
                "warmup_s": options.warmup_s,
                "leak_bytes_per_call": options.leak_bytes_per_call,
                "max_kib_per_call_control": options.max_kib_per_call_control,
                "max_kib_per_call_worker": options.max_kib_per_call_worker,
            },
            # 1, 5 and 15 min load averages before the soak started (other work on the machine)
            # and at its end (the soak's own processes included).
            "load_average_before": self.load_before,
            "load_average": os.getloadavg(),
            "measurement_cpu_s": {
                # What measuring cost, on the same two cores: this driver (HTTP, /proc, the
                # ledger) and the C senders.
                "driver": round(_own_cpu_seconds() - self.driver_cpu_at_start, 2),
                "feeder": round(self.feeder_cpu_s, 2),
            },
            "calls": {
                "opened": sum(1 for o in soak if o.taps),
                "recorded": sum(1 for o in soak if o.recorded),
                "ended": sum(1 for o in soak if o.ended),
                "with_errors": sum(1 for o in soak if o.errors),
                "errors": [f"{o.call_id}: {e}" for o in soak for e in o.errors][:50],
                "peak_open": max((s.calls for s in self.samples), default=0),
                "steady_open_median": statistics.median(s.calls for s in steady) if steady else None,
            },
            "packets": {
                **totals,
                "offered_rate_pps": round(totals["sent"] / elapsed, 1),
                "metrics_fork_packets_delta": metrics_delta,
                "streams": len(ledgers),
                "streams_unbalanced": [
                    {"call_id": o.call_id, "label": label, **asdict(s)}
                    for o in soak
                    for label, s in o.streams.items()
                    if s.tap_unaccounted or s.fork_unaccounted or s.srs_unaccounted or not s.srs_seen
                ][:50],
            },
            "cohort_timings_s": {
                name: _spread([t[name] for t in self.cohort_timings if name in t])
                for name in ("setup_s", "drain_s", "ledger_s", "late_s", "end_s")
            },
            # Cohorts whose drain had to wait for queued packets, by side: "tap" (the sidecar
            # had not read them yet) or "srs" (the SRS had not).
            "drain_waited_on": dict(self.drain_waits),
            "cohorts": self.cohort_timings,
            "srs_sessions": {
                "ended": self.srs_sessions - 1,  # the warm-up call's is not the load's
                "end_reasons": end_reasons,
                "unknown": self.unknown_sessions[:50],
            },
            "memory": {
                "sidecar_rss_baseline_kib": baseline_rss,
                "sidecar_rss_steady_median_kib": steady_rss,
                "sidecar_rss_slope_kib_per_min": rss[0],
                "sidecar_rss_slope_stderr_kib_per_min": rss[1],
                "rss_per_call_kib": None
                if steady_rss is None
                else round((steady_rss - baseline_rss) / options.calls, 2),
                "leak_signal_kib_per_min_per_kib_per_call": options.churn * 60,
                "steady_window_s": [steady[0].t, steady[-1].t] if steady else None,
                "per_process": per_process,
            },
            "returned": {
                "settled_after_s": settled,
                "baseline": {
                    p.role: {"fds": p.fds, "udp_ports": list(p.udp_ports)} for p in baseline.processes
                },
                "final": {p.role: {"fds": p.fds, "udp_ports": list(p.udp_ports)} for p in final.processes},
            },
            "problems": problems,
            "samples": [s.row() for s in self.samples],
        }

    def steady_samples(self) -> list[Sample]:
        stop = self.load_stopped if self.load_stopped is not None else math.inf
        return [s for s in self.samples if self.options.warmup_s <= s.t <= stop]

    def problems(
        self,
        totals: dict[str, int],
        end_reasons: dict[str, int],
        settled: float | None,
        metrics_delta: int,
        baseline: Sample,
        final: Sample,
        memory: dict[str, dict[str, Any]],
    ) -> list[str]:
        soak = [o for o in self.outcomes.values() if o.cohort >= 0]
        found: list[str] = []
        for hop in ("tap", "fork", "srs"):
            if totals[f"{hop}_unaccounted"]:
                found.append(f"{totals[f'{hop}_unaccounted']} packets unaccounted at the {hop} hop")
        for kind in ("tap_rejected", "tap_kernel_drops", "fork_dropped", "srs_kernel_drops"):
            if totals[kind]:
                found.append(f"{totals[kind]} packets counted as {kind}")
        if metrics_delta != totals["fork_packets"]:
            found.append(
                f"/metrics siprec_fork_packets_total grew by {metrics_delta}, the calls forwarded "
                f"{totals['fork_packets']}"
            )
        failed = [o for o in soak if o.errors]
        if failed:
            found.append(f"{len(failed)} calls had errors, e.g. {failed[0].call_id}: {failed[0].errors[0]}")
        unseen = sum(1 for o in soak for s in o.streams.values() if o.recorded and not s.srs_seen)
        if unseen:
            found.append(f"{unseen} recorded streams have no statistics at the SRS")
        others = {reason: n for reason, n in end_reasons.items() if reason != "bye-from-src"}
        if others:
            found.append(f"SRS sessions not ended by the SRC's BYE: {others}")
        if self.unknown_sessions:
            found.append(f"{len(self.unknown_sessions)} SRS sessions no call explains")
        if settled is None:
            found.append(f"fds, UDP ports or SRS sessions not back within {SETTLE_TIMEOUT:.0f} s")
        found += [f"not returned: {line}" for line in _not_returned(baseline, final)]
        found += self.http_errors
        found += self.lags[:10]
        found += self.memory_problems(memory)
        return found

    def memory_problems(self, memory: dict[str, dict[str, Any]]) -> list[str]:
        """Sidecar processes whose RSS grew more per call churned than the bound (not the SRS:
        the reference server keeps every session record it answered, by design)."""
        options = self.options
        found = []
        for role, figures in memory.items():
            if role == "srs":
                continue
            bound = options.max_kib_per_call_control if role == "control" else options.max_kib_per_call_worker
            growth = figures["kib_per_call_churned"]
            if growth is None:
                found.append(f"{role}: too few samples in the steady window for an RSS slope")
            elif growth > bound:
                found.append(
                    f"{role}: RSS grew {growth} KiB per call churned "
                    f"({figures['rss_slope_kib_per_min']} KiB/min), more than {bound}"
                )
        return found


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _spread(values: Sequence[float]) -> dict[str, float] | None:
    """median, 95th percentile and max of a few hundred values."""
    if not values:
        return None
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 3),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
        "max": round(ordered[-1], 3),
    }


def _returned(baseline: Sample, now: Sample) -> bool:
    return not _not_returned(baseline, now)


def _not_returned(baseline: Sample, now: Sample) -> list[str]:
    """Processes whose UDP ports differ from the baseline, or with more fds than it had."""
    lines = []
    current = {p.role: p for p in now.processes}
    for before in baseline.processes:
        after = current.get(before.role)
        if after is None:
            lines.append(f"{before.role} is gone")
            continue
        if after.udp_ports != before.udp_ports:
            extra = sorted(set(after.udp_ports) - set(before.udp_ports))
            lines.append(
                f"{before.role}: UDP ports {len(before.udp_ports)} -> {len(after.udp_ports)} {extra[:10]}"
            )
        if after.fds > before.fds:
            lines.append(f"{before.role}: fds {before.fds} -> {after.fds}")
    return lines


def regression(points: Sequence[tuple[float, float, float]]) -> tuple[float | None, float | None]:
    """Slope of RSS against time in KiB/min, and its standard error, from ``(seconds, open
    calls, KiB)`` points: least squares of ``KiB = a + b * seconds + c * open calls``.

    The open calls are a second regressor so that a moment with more calls than the target (a
    cohort that ended late on a busy machine) is read as what it is, memory of live calls,
    and not as growth; at a constant count the slope is the plain one.
    """
    if len(points) < 4:
        return None, None
    t = np.array([p[0] for p in points], dtype=float)
    calls = np.array([p[1] for p in points], dtype=float)
    kib = np.array([p[2] for p in points], dtype=float)
    if np.ptp(t) == 0:
        return None, None
    design = np.column_stack([np.ones_like(t), t - t.mean(), calls - calls.mean()])
    coefficients, _, rank, _ = np.linalg.lstsq(design, kib, rcond=None)
    residuals = kib - design @ coefficients
    dof = max(1, len(points) - int(rank))
    covariance = np.linalg.pinv(design.T @ design) * float(residuals @ residuals) / dof
    return round(float(coefficients[1]) * 60, 1), round(math.sqrt(max(0.0, float(covariance[1, 1]))) * 60, 1)


def calls_churned_per_minute(role: str, options: SoakOptions) -> float:
    """The calls a process sees begin and end per minute: all of them for the control process
    (and the SRS), its share for a media worker (calls are spread evenly over the workers)."""
    share = options.workers if role.startswith("worker-") else 1
    return options.churn * 60 / share


# --- the table --------------------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    options, calls, packets = report["options"], report["calls"], report["packets"]
    memory, sessions = report["memory"], report["srs_sessions"]
    lines = [
        f"soak: {options['calls']} calls, churn {options['churn_per_s']}/s (each call "
        f"{options['lifetime_s']:.1f} s), {options['seconds']:.0f} s, "
        f"{'TLS + SRTP' if options['srtp'] else 'TCP + RTP'} to the SRS, {options['workers']} workers",
        f"calls: {calls['opened']} opened, {calls['recorded']} recorded, {calls['ended']} ended, "
        f"{calls['with_errors']} with errors; open at once: median {calls['steady_open_median']}, "
        f"peak {calls['peak_open']}",
        f"SRS sessions: {sessions['ended']} ended, by reason {sessions['end_reasons']}, "
        f"{len(sessions['unknown'])} unexplained",
        "",
    ]
    hops = [
        (
            "tap",
            packets["sent"],
            packets["tap_packets"],
            packets["tap_rejected"] + packets["tap_kernel_drops"],
        ),
        ("fork", packets["tap_packets"], packets["fork_packets"], packets["fork_dropped"]),
        ("srs", packets["fork_packets"], packets["srs_received"], packets["srs_kernel_drops"]),
    ]
    rows = [
        [hop, f"{into:,}", f"{out:,}", f"{dropped:,}", f"{packets[f'{hop}_unaccounted']:,}"]
        for hop, into, out, dropped in hops
    ]
    lines.append(format_rows(["hop", "packets in", "counted on", "counted drops", "unaccounted"], rows))
    lines.append(
        f"offered {packets['offered_rate_pps']:,.0f} packets/s; /metrics fork packets "
        f"{packets['metrics_fork_packets_delta']:,}"
    )
    lines.append("")
    rows = []
    for role, p in memory["per_process"].items():
        rows.append(
            [
                role,
                str(p["rss_baseline_kib"]),
                str(p["rss_steady_median_kib"]),
                str(p["rss_final_kib"]),
                f"{p['rss_slope_kib_per_min']} ± {p['rss_slope_stderr_kib_per_min']}",
                str(p["kib_per_call_churned"]),
                f"{p['fds_baseline']}/{p['fds_peak']}/{p['fds_final']}",
                f"{p['udp_baseline']}/{p['udp_peak']}/{p['udp_final']}",
                str(p["cpu_s"]),
            ]
        )
    lines.append(
        format_rows(
            [
                "process",
                "RSS base KiB",
                "steady",
                "final",
                "slope KiB/min",
                "KiB/call churned",
                "fds base/peak/final",
                "UDP base/peak/final",
                "CPU s",
            ],
            rows,
        )
    )
    lines.append(
        f"sidecar RSS slope {memory['sidecar_rss_slope_kib_per_min']} ± "
        f"{memory['sidecar_rss_slope_stderr_kib_per_min']} KiB/min over t = {memory['steady_window_s']} s; "
        f"{memory['rss_per_call_kib']} KiB per open call; a leak of 1 KiB per call churned would add "
        f"{memory['leak_signal_kib_per_min_per_kib_per_call']} KiB/min"
    )
    lines.append(f"resources back to the baseline after {report['returned']['settled_after_s']} s")
    timings = report["cohort_timings_s"]
    lines.append(
        "per cohort (median/p95/max s): "
        + "; ".join(
            f"{name.removesuffix('_s')} {t['median']}/{t['p95']}/{t['max']}"
            for name, t in timings.items()
            if t is not None
        )
    )
    lines.append("")
    lines.append("OK: every property held" if not report["problems"] else "PROBLEMS:")
    lines += [f"  - {p}" for p in report["problems"]]
    return "\n".join(lines)


# --- entry points -----------------------------------------------------------------------------------


async def run_soak(options: SoakOptions, work: Path | None = None) -> dict[str, Any]:
    """Run one soak and return its report (``work``: where the peers' logs and the SRS's files go;
    a temporary directory, removed afterwards, when None)."""
    with contextlib.ExitStack() as stack:
        if work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        work.mkdir(parents=True, exist_ok=True)
        soak = Soak(options, work)
        try:
            report = await soak.run()
        finally:
            codes = await soak.close()
        report["exit_codes"] = codes
        for peer, code in codes.items():
            if code != 0:
                report["problems"].append(f"{peer} exited with {code} on SIGTERM")
        return report


def parse_args(argv: Sequence[str] | None = None) -> tuple[SoakOptions, Path | None, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m tests.robustness.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--calls", type=int, default=500, help="calls open at once (default 500)")
    parser.add_argument(
        "--churn", type=int, default=20, help="calls ended and opened per second (default 20)"
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the load (default 120)")
    parser.add_argument(
        "--srtp",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="TLS + SRTP toward the SRS (default); --no-srtp: TCP + RTP",
    )
    parser.add_argument("--workers", type=int, default=2, help="media worker processes (default 2)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON report goes")
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds left out of the RSS slope (default: half the run)"
    )
    parser.add_argument(
        "--leak-bytes-per-call", type=int, default=0, help="inject a leak (checks the detector)"
    )
    parser.add_argument("--work", type=Path, default=None, help="keep the peers' logs here")
    parser.add_argument("--keep-files", action="store_true", help="keep the SRS's recordings (in --work)")
    parser.add_argument(
        "--max-kib-per-call-control",
        type=float,
        default=10.0,
        help="RSS growth per call churned judged a leak in the control process (default 10 KiB)",
    )
    parser.add_argument(
        "--max-kib-per-call-worker",
        type=float,
        default=10.0,
        help="the same for each media worker (default 10 KiB)",
    )
    parser.add_argument(
        "--netns",
        action=argparse.BooleanOptionalAction,
        default=os.geteuid() == 0,
        help="run in a network namespace of its own (default when root)",
    )
    args = parser.parse_args(argv)
    if args.calls < 1 or args.churn < 1 or args.churn > args.calls or args.seconds <= 0:
        parser.error("need 1 <= --churn <= --calls and --seconds > 0")
    options = SoakOptions(
        calls=args.calls,
        churn=args.churn,
        seconds=args.seconds,
        srtp=args.srtp,
        workers=args.workers,
        out=args.out,
        warmup=args.warmup,
        leak_bytes_per_call=args.leak_bytes_per_call,
        keep_files=args.keep_files,
        max_kib_per_call_control=args.max_kib_per_call_control,
        max_kib_per_call_worker=args.max_kib_per_call_worker,
    )
    return options, args.work, args.netns


_CLONE_NEWNET: Final = 0x40000000


def enter_private_network() -> None:
    """Move this process into a network namespace of its own, with only ``lo`` (up).

    Everything the soak starts inherits it: nothing else on the machine can take the ports the
    sidecar, the SRS and the senders use (a benchmark binding thousands of ports at the same
    time did), and ``/proc/net/udp`` lists only the soak's sockets. Needs CAP_SYS_ADMIN (root).
    Call it before any thread exists: a network namespace belongs to the calling thread.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"unshare(CLONE_NEWNET): {os.strerror(error)} (run as root, or --no-netns)")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def main(argv: Sequence[str] | None = None) -> int:
    options, work, netns = parse_args(argv)
    if netns:
        enter_private_network()
    report = asyncio.run(run_soak(options, work))
    report["private_network_namespace"] = netns
    path = write_report(report, options.out)
    print(table(report))
    print(f"report: {path}")
    return 0 if not report["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
