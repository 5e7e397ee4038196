"""SIPp as the SRS of the signaling benchmark: ``srs_load.xml`` beside this file, run on a free
loopback port, with its statistics read back (what SIPp itself counted is the benchmark's check).

    sipp = SippSrs(workdir, "udp", time_limit=120)
    await sipp.start()          # returns once SIPp's SIP port is open
    ...                         # record toward sipp.uri
    stats = await sipp.finish() # SIGUSR1: SIPp ends once its calls are over, with final statistics

The test harness ``tests/interop/srs/harness.py`` runs single scenarios with every message
traced; this runs one long load scenario with counters only (tracing every message would cost
SIPp more than the SRC's work).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SCENARIO = Path(__file__).resolve().parent / "srs_load.xml"
HOST = "127.0.0.1"
READY_TIMEOUT = 8.0
EXIT_TIMEOUT = 8.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sipp_version() -> str:
    sipp = shutil.which("sipp")
    if sipp is None:
        return ""
    done = subprocess.run([sipp, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return next((line.strip() for line in (done.stdout + done.stderr).splitlines() if "SIPp v" in line), "")


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def listening(transport: str, port: int) -> bool:
    """Whether a socket is bound (UDP) or listening (TCP) on ``port``: asked of the kernel (``ss``,
    else ``/proc/net``), which touches no socket, so it cannot race SIPp for the port."""
    if shutil.which("ss") is None:
        # /proc/net/udp lists bound sockets in state 07 (TCP_CLOSE), /proc/net/tcp listeners in 0A.
        table, state = ("/proc/net/udp", "07") if transport == "udp" else ("/proc/net/tcp", "0A")
        with open(table, encoding="ascii") as rows:
            return any(
                int(fields[1].rpartition(":")[2], 16) == port and fields[3] == state
                for fields in (line.split() for line in rows.readlines()[1:])
            )
    proto = "-u" if transport == "udp" else "-t"
    command = ["ss", "-H", "-n", "-l", proto, f"sport = :{port}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=5, check=False)
    return bool(done.stdout.strip())


@dataclass(frozen=True, slots=True)
class SippStats:
    """SIPp's own account of the run (final row of its ``-trace_stat`` file, and message counts)."""

    returncode: int | None
    killed: bool
    created: int
    successful: int
    failed: int
    current: int
    retransmissions: int  # SIPp's 200 OK (INVITE) resent: our ACK came late or was lost
    invite_retransmissions: int  # INVITEs SIPp received again: its 200 came late or was lost
    unexpected: int
    cpu_seconds: float
    errors: str


class SippSrs:
    """SIPp running ``srs_load.xml`` on a free loopback port until ``finish()`` (at most
    ``time_limit`` seconds)."""

    def __init__(self, workdir: Path, transport: str, time_limit: float) -> None:
        self.workdir = workdir
        self.transport = transport
        self.time_limit = time_limit
        self.process: subprocess.Popen[bytes] | None = None
        self._choose_ports()

    def _choose_ports(self) -> None:
        """Ports free right now (the kernel's choice); someone may take one before SIPp binds
        it, so ``start()`` chooses again when SIPp cannot bind."""
        self.port = free_port(socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM)
        self.media_port = free_port(socket.SOCK_DGRAM) & ~1  # SIPp binds it and media_port + 2
        self.control_port = free_port(socket.SOCK_DGRAM)
        stem = f"sipp-{self.transport}-{self.port}"
        self.stat_file = self.workdir / f"{stem}-stat.csv"
        self.error_file = self.workdir / f"{stem}-errors.log"
        self.stderr_file = self.workdir / f"{stem}-stderr.log"

    @property
    def uri(self) -> str:
        # The transport is named: a SIPREC INVITE exceeds 1300 bytes, and without it RFC 3261
        # §18.1.1 would move the request to TCP, where a UDP SIPp does not listen.
        return f"sip:srs@{HOST}:{self.port};transport={self.transport}"

    def command(self) -> list[str]:
        sipp = shutil.which("sipp")
        assert sipp, "sipp is not installed: `make bench` installs sip-tester (scripts/install-peers.sh)"
        options = {
            "-sf": str(SCENARIO),
            "-i": HOST,
            "-p": str(self.port),
            "-t": "u1" if self.transport == "udp" else "t1",
            "-mp": str(self.media_port),
            "-cp": str(self.control_port),
            "-timeout": f"{int(self.time_limit) + 5}s",  # a second line of defence: finish() kills it
            "-stf": str(self.stat_file),
            "-fd": "1",  # statistics every second (and at exit)
            "-error_file": str(self.error_file),
        }
        flags = ["-bind_local", "-nostdin", "-trace_stat", "-trace_counts", "-trace_err"]
        return [
            sipp,
            *(item for pair in options.items() for item in pair),
            *flags,
            "-key",
            "srs_contact",
            self.uri,
        ]

    async def start(self, attempts: int = 3) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(attempts):
            if attempt:
                self._choose_ports()
            if await self._start_once():
                return
        assert self.process is not None
        raise RuntimeError(
            f"SIPp did not come up on {HOST}:{self.port}/{self.transport} (exit {self.process.returncode}): "
            f"{self.stderr_file.read_text(errors='replace')[-1500:]}"
        )

    async def _start_once(self) -> bool:
        """Start SIPp; True once its SIP port is open, False if it exited (a port taken) or
        never opened it (then it is killed)."""
        with self.stderr_file.open("wb") as stderr:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,  # -trace_counts writes srs_load_<pid>_counts.csv here
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while not listening(self.transport, self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                await self.finish(timeout=0)
                return False
            await asyncio.sleep(0.02)
        return True

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def stat_row(self) -> dict[str, str]:
        """The last row SIPp wrote to its statistics file (every second, and at exit)."""
        try:
            with self.stat_file.open(encoding="ascii", errors="replace", newline="") as rows:
                table = list(csv.reader(rows, delimiter=";"))
        except OSError:
            return {}
        if len(table) < 2:
            return {}
        return dict(zip(table[0], table[-1], strict=False))

    async def wait_current_calls(self, count: int, timeout: float) -> int:
        """Wait until SIPp's statistics show ``count`` calls in progress; return the last seen."""
        deadline = time.monotonic() + timeout
        while True:
            current = int(self.stat_row().get("CurrentCall", "-1") or -1)
            if current == count or time.monotonic() > deadline:
                return current
            await asyncio.sleep(0.1)

    async def finish(self, timeout: float = EXIT_TIMEOUT) -> SippStats:
        """Ask SIPp to end (SIGUSR1: no new calls, exit once the calls in progress are over, with
        its final statistics and an exit status that says whether every call succeeded); past
        ``timeout`` it is killed (``killed``)."""
        process = self.process
        assert process is not None
        cpu = 0.0
        killed = False
        if process.poll() is None:
            with contextlib.suppress(OSError):
                cpu = self.cpu_seconds()  # the last reading before it exits
            process.send_signal(signal.SIGUSR1)
            try:
                await asyncio.wait_for(asyncio.to_thread(process.wait), timeout)
            except TimeoutError:
                killed = True
                process.kill()
                await asyncio.to_thread(process.wait)
        row = self.stat_row()
        counts = self._counts(process.pid)
        return SippStats(
            returncode=process.returncode,
            killed=killed,
            created=int(row.get("TotalCallCreated", 0) or 0),
            successful=int(row.get("SuccessfulCall(C)", 0) or 0),
            failed=int(row.get("FailedCall(C)", 0) or 0),
            current=int(row.get("CurrentCall", 0) or 0),
            retransmissions=counts.get("1_200_Retrans", 0),
            invite_retransmissions=counts.get("0_INVITE_Retrans", 0),
            unexpected=sum(value for name, value in counts.items() if name.endswith("_Unexp")),
            cpu_seconds=cpu,
            errors=self.error_file.read_text(errors="replace")[-2000:] if self.error_file.exists() else "",
        )

    def _counts(self, pid: int) -> dict[str, int]:
        """The last row of SIPp's ``-trace_counts`` file, by column name."""
        path = self.workdir / f"{SCENARIO.stem}_{pid}_counts.csv"
        try:
            with path.open(encoding="ascii", errors="replace", newline="") as rows:
                table = list(csv.reader(rows, delimiter=";"))
        except OSError:
            return {}
        if len(table) < 2:
            return {}
        found = {}
        for name, value in zip(table[0], table[-1], strict=False):
            with contextlib.suppress(ValueError):
                found[name] = int(value)
        return found
