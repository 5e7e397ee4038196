"""What the sidecar fault tests run against: a paced RTP source, an SRS that timestamps every
forked packet in the kernel, misbehaving callback servers, and ``siprec-src serve`` as a process.

- ``RtpSource`` plays the PBX: one thread sends a 20 ms PCMU packet on every leg 50 times a
  second and notes when each left (``time.time()`` just before ``sendto``). Each payload starts
  with the leg's tag and the packet's number, which the fork pipelines never touch, so a packet
  that reaches the SRS names the packet it copies whatever its SSRC and sequence number became.
- ``TimedSrs`` is ``MiniSrs`` whose RTP sockets ask the kernel for each datagram's arrival time
  (``SO_TIMESTAMPNS``, the same ``CLOCK_REALTIME`` as ``time.time()``): the forwarding delay of
  a packet is measured at the socket, not when this process's event loop got round to reading
  it, so a busy test process does not blur what the sidecar did. It also counts BYEs and RTCP
  BYEs per stream.
- ``forwarding`` compares the two: per forked stream, packets sent in a window, received,
  missing, duplicated; forwarding delay (max, 99th percentile); the largest gap between two
  arrivals against the largest gap between the same packets' departures.
- ``BlackHole`` accepts TCP connections and never answers; ``SlowAnswer`` answers every HTTP
  request 204 after a delay; ``refusing_port`` holds a port bound but not listening (every
  connection attempt gets a reset, and no other process can take the port meanwhile);
  ``CallbackRecorder`` answers 204 at once and notes when each callback arrived.
- ``SidecarProcess`` runs ``python -m siprec_src serve --config FILE`` with its log in a file
  (a pipe nobody reads would fill and block the sidecar's logging), drives the native API,
  and finds its media worker processes in ``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

import aiohttp
from aiohttp import web

from siprec_src.media.rtp import Goodbye, RtpError, RtpPacket, is_rtcp, parse_rtcp
from siprec_src.sip.useragent import DialogTerminated, UaEvent
from tests.recording.minisrs import MediaSink, MiniSrs

PACKET_INTERVAL: Final = 0.020  # 20 ms of 8 kHz PCMU per packet: 50 packets/s per leg
SAMPLES: Final = 160
_TAG: Final = struct.Struct("!II")  # leg tag, packet number: the first 8 payload bytes
_SILENCE: Final = b"\xff" * (SAMPLES - _TAG.size)  # µ-law silence after the tag
# <asm-generic/socket.h>: SO_TIMESTAMPNS_OLD = SCM_TIMESTAMPNS = 35 (Python does not name it);
# the control message carries a struct timespec of CLOCK_REALTIME.
SO_TIMESTAMPNS: Final = 35
_TIMESPEC: Final = struct.Struct("@qq")


# --- the PBX side: a paced RTP source ---------------------------------------------------------------


@dataclass(eq=False)
class SourceLeg:
    """One leg the source sends on; ``sent[n]`` is when its packet number ``n`` left."""

    tag: int
    tap: tuple[str, int]
    ssrc: int
    sent: list[float] = field(default_factory=list)


class RtpSource:
    """A thread that sends a 20 ms packet on every leg at each tick (see the module doc).

    Late ticks are sent at once (a burst), as a PBX that was descheduled would; the departure
    times say what really happened, and delays are measured from them.
    """

    def __init__(self) -> None:
        self.legs: list[SourceLeg] = []
        self.send_errors = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtp-source", daemon=True)

    def __enter__(self) -> RtpSource:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def add(self, tap: tuple[str, int]) -> SourceLeg:
        leg = SourceLeg(tag=len(self.legs), tap=tap, ssrc=0x5EED0000 + len(self.legs))
        self.legs.append(leg)  # one append: the thread sees the leg whole or not at all
        return leg

    def _run(self) -> None:
        start = time.monotonic()
        tick = 0
        while not self._stop.is_set():
            delay = start + tick * PACKET_INTERVAL - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            tick += 1
            for leg in list(self.legs):
                self._send(leg)

    def _send(self, leg: SourceLeg) -> None:
        number = len(leg.sent)
        header = struct.pack("!BBHII", 0x80, 0, number & 0xFFFF, (number * SAMPLES) & 0xFFFFFFFF, leg.ssrc)
        leg.sent.append(time.time())
        try:
            self._sock.sendto(header + _TAG.pack(leg.tag, number) + _SILENCE, leg.tap)
        except OSError:
            self.send_errors += 1


# --- the SRS side: kernel arrival times ---------------------------------------------------------------


@dataclass(eq=False)
class Arrivals:
    """What one forked stream (one answered m-line) brought: (kernel time, leg tag, number)."""

    sink: MediaSink
    packets: list[tuple[float, int, int]] = field(default_factory=list)
    rtcp_byes: int = 0

    @property
    def tag(self) -> int | None:
        return self.packets[0][1] if self.packets else None

    def after(self, when: float) -> int:
        return sum(1 for arrived, _, _ in self.packets if arrived >= when)


@dataclass
class TimedSrs(MiniSrs):
    """``MiniSrs`` with kernel arrival times, BYE counts and RTCP BYEs per stream (module doc)."""

    streams: list[Arrivals] = field(default_factory=list)
    bye_times: list[float] = field(default_factory=list)  # time.time() of each BYE received
    _by_sink: dict[int, Arrivals] = field(default_factory=dict)  # id(sink) -> its arrivals

    async def __aenter__(self) -> TimedSrs:
        await super().__aenter__()
        return self

    def _sink(self, secure: bool) -> MediaSink:
        sink = super()._sink(secure)
        sink.rtp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        arrivals = self._by_sink[id(sink)] = Arrivals(sink)
        self.streams.append(arrivals)
        return sink

    def _read(self, sink: MediaSink, sock: socket.socket) -> None:
        arrivals = self._by_sink[id(sink)]
        while True:
            try:
                data, ancillary, _, _ = sock.recvmsg(2048, socket.CMSG_SPACE(_TIMESPEC.size))
            except BlockingIOError:
                return
            if is_rtcp(data):
                with contextlib.suppress(RtpError):  # a malformed compound is not a BYE
                    if any(isinstance(p, Goodbye) for p in parse_rtcp(data).packets):
                        arrivals.rtcp_byes += 1
                continue
            arrived = time.time()  # without a kernel timestamp: when it was read
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = _TIMESPEC.unpack(value[: _TIMESPEC.size])
                    arrived = seconds + nanoseconds / 1e9
            payload = RtpPacket.parse(data).payload
            if len(payload) >= _TAG.size:
                tag, number = _TAG.unpack_from(payload)
                arrivals.packets.append((arrived, tag, number))

    def _on_event(self, event: UaEvent) -> None:
        if (
            isinstance(event, DialogTerminated)
            and event.request is not None
            and event.request.method == "BYE"
        ):
            self.bye_times.append(time.time())
        super()._on_event(event)


@dataclass(frozen=True, slots=True)
class StreamForwarding:
    """How one forked stream carried its leg's packets sent in a window (times in seconds)."""

    tag: int
    sent: int
    received: int
    missing: int
    duplicates: int
    max_delay: float
    p99_delay: float
    max_arrival_gap: float
    max_departure_gap: float


def forwarding(
    source: RtpSource, srs: TimedSrs, since: float, until: float, *, tags: Collection[int] | None = None
) -> list[StreamForwarding]:
    """Per forked stream of ``srs`` (of the legs ``tags``, default all): its leg's packets that
    left in [since, until] against what arrived (``until`` should leave the last packets time
    to arrive)."""
    results = []
    for stream in srs.streams:
        if stream.tag is None or (tags is not None and stream.tag not in tags):
            continue
        leg = source.legs[stream.tag]
        wanted = [n for n, left in enumerate(leg.sent) if since <= left <= until]
        if not wanted:
            continue
        first, last = wanted[0], wanted[-1]
        arrived: dict[int, float] = {}
        duplicates = 0
        for when, _, number in stream.packets:
            if first <= number <= last:
                duplicates += number in arrived
                arrived.setdefault(number, when)
        delays = sorted(arrived[n] - leg.sent[n] for n in arrived)
        present = sorted(arrived)
        arrival_gaps = [arrived[b] - arrived[a] for a, b in itertools.pairwise(present)]
        departure_gaps = [leg.sent[b] - leg.sent[a] for a, b in itertools.pairwise(wanted)]
        results.append(
            StreamForwarding(
                tag=stream.tag,
                sent=len(wanted),
                received=len(arrived),
                missing=len(wanted) - len(arrived),
                duplicates=duplicates,
                max_delay=delays[-1] if delays else math.inf,
                p99_delay=delays[min(len(delays) - 1, int(len(delays) * 0.99))] if delays else math.inf,
                max_arrival_gap=max(arrival_gaps, default=0.0),
                max_departure_gap=max(departure_gaps, default=0.0),
            )
        )
    return results


def summary(streams: Sequence[StreamForwarding]) -> str:
    """One line of figures over ``streams``, for the report (``pytest -s``)."""
    return (
        f"{len(streams)} streams, {sum(s.sent for s in streams)} packets sent, "
        f"{sum(s.received for s in streams)} forwarded, {sum(s.missing for s in streams)} missing, "
        f"{sum(s.duplicates for s in streams)} duplicated; delay max "
        f"{max(s.max_delay for s in streams) * 1000:.1f} ms, p99 max "
        f"{max(s.p99_delay for s in streams) * 1000:.1f} ms; largest arrival gap "
        f"{max(s.max_arrival_gap for s in streams) * 1000:.1f} ms "
        f"(largest departure gap {max(s.max_departure_gap for s in streams) * 1000:.1f} ms)"
    )


# --- misbehaving and well-behaved HTTP peers ---------------------------------------------------------


class BlackHole:
    """Accepts TCP connections, reads what comes, never answers; counts the connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> BlackHole:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        while await reader.read(65536):
            pass  # read and drop: the client's request is sent, its answer never comes


@dataclass(frozen=True, slots=True)
class Callback:
    arrived: float  # time.time()
    url: str
    body: dict[str, Any]


class _HttpPeer:
    """An aiohttp server on 127.0.0.1 that notes every request; subclasses say how to answer."""

    def __init__(self) -> None:
        self.received: list[Callback] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        self.received.append(Callback(time.time(), str(request.url), body))
        await self._answer()
        return web.Response(status=204)

    async def _answer(self) -> None:
        return None

    def events(self, event: str, *, call_id: str | None = None) -> list[Callback]:
        return [
            c
            for c in self.received
            if c.body.get("event") == event and (call_id is None or c.body.get("call_id") == call_id)
        ]

    async def wait_for(self, condition: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)


class CallbackRecorder(_HttpPeer):
    """A healthy callback receiver: 204 at once."""


class SlowAnswer(_HttpPeer):
    """A callback server that answers 204, ``delay`` seconds after each request arrived."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.answered = 0

    async def _answer(self) -> None:
        await asyncio.sleep(self.delay)
        self.answered += 1


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that refuses connections: bound, never listening (RST to a SYN)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


# --- the sidecar as a process ----------------------------------------------------------------------

# Where media port ranges are looked for, in order: below the kernel's ephemeral range
# (32768-60999 here), so ports the OS hands out to other processes do not fill them, and away
# from the default 20000-29999 of other tests' sidecars and from well-known ports. Benchmarks
# run on this machine at the same time bind thousands of ports too, hence the probe.
_PORT_REGIONS: Final = ((30000, 32767), (10000, 19999))


def media_ports(pairs: int) -> tuple[int, int]:
    """A ``[media]`` port range of ``6 * pairs`` ports (three times the RTP/RTCP pairs asked
    for) of which at least ``2 * pairs`` pairs can be bound now."""
    size = 6 * pairs
    for low, high in _PORT_REGIONS:
        for start in range(low, high - size + 2, size):
            free = sum(1 for port in range(start, start + size, 2) if _bindable(port))
            if free >= 2 * pairs:
                return start, start + size - 1
    raise AssertionError(f"no range of {size} UDP ports with {2 * pairs} free pairs on 127.0.0.1")


def _bindable(port: int) -> bool:
    with contextlib.ExitStack() as stack:
        for candidate in (port, port + 1):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                return False
    return True


TOKEN: Final = "faults-test-token-0123456789"
AUTH: Final = {"Authorization": f"Bearer {TOKEN}"}


def sidecar_config(
    srs: str,
    *,
    workers: int,
    port_min: int,
    port_max: int,
    callbacks: str = "timeout = 5\nretries = 1\nbackoff = 0.5",
    streams: str = "",
    media: str = "",
) -> str:
    """A ``siprec-src serve`` config: API on a free port, SIP over UDP, connector ``main``."""
    return f"""
[log]
level = "info"
format = "json"

[api]
host = "127.0.0.1"
port = 0

[api.auth]
tokens = ["{TOKEN}"]

[callbacks]
signing_secret = "faults-test-signing-secret"
{callbacks}

[streams]
{streams}

[sip]
listen = ["udp:127.0.0.1:0"]

[media]
workers = {workers}
port_min = {port_min}
port_max = {port_max}
{media}

[connectors.main]
srs = ["{srs}"]
session_timeout = 0
attempt_timeout = 3
"""


@dataclass(frozen=True, slots=True)
class ApiAnswer:
    status: int
    body: Any  # the JSON value, or the text of another content type
    seconds: float  # from sending the request to having read the whole answer


class SidecarProcess:
    """``python -m siprec_src serve`` with a config file, its log in ``log_path`` (module doc)."""

    def __init__(self, config: str, workdir: Path) -> None:
        self.config_path = workdir / "siprec-src.toml"
        self.config_path.write_text(config)
        self.log_path = workdir / "sidecar.log"
        self.url = ""
        self.process: asyncio.subprocess.Process | None = None
        self.api_times: list[float] = []  # seconds of every API request made through request()
        self._session: aiohttp.ClientSession | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def __aenter__(self) -> SidecarProcess:
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "siprec_src",
                "serve",
                "--config",
                str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=Path(__file__).resolve().parents[2],
            )
        assert self.process.stdout is not None
        line = (await asyncio.wait_for(self.process.stdout.readline(), 30)).decode()
        assert line.startswith("siprec-src serving on http://"), (line, self.log_text())
        self.url = line.split()[-1]
        self._session = aiohttp.ClientSession(headers=AUTH, timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        if self.process is not None and self.process.returncode is None:
            self.process.kill()  # a test that failed midway: never leave the sidecar running
            await self.process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_entries(self) -> list[dict[str, Any]]:
        """Every JSON log line (every line must be one)."""
        return [json.loads(line) for line in self.log_text().splitlines() if line.strip()]

    def log_messages(self) -> list[str]:
        return [str(entry["message"]) for entry in self.log_entries()]

    def log_levels(self) -> set[str]:
        return {str(entry["level"]) for entry in self.log_entries()}

    async def request(self, method: str, path: str, body: object | None = None) -> ApiAnswer:
        assert self._session is not None
        began = time.monotonic()
        async with self._session.request(method, self.url + path, json=body) as response:
            text = await response.text()
            is_json = response.content_type == "application/json"
        seconds = time.monotonic() - began
        self.api_times.append(seconds)
        return ApiAnswer(response.status, json.loads(text) if is_json and text else text, seconds)

    async def open_call(self, call_id: str) -> dict[str, tuple[str, int]]:
        """Open a call; the tap address of each leg ("inbound", "outbound")."""
        body = {
            "call_id": call_id,
            "from": {"aor": f"sip:caller-{call_id}@pbx.example.com"},
            "to": {"aor": "sip:agent@pbx.example.com"},
        }
        answer = await self.request("POST", "/v1/calls", body)
        assert answer.status == 201, answer
        taps = {}
        for leg, info in answer.body["legs"].items():
            host, _, port = info["rtp"].rpartition(":")
            taps[leg] = (host, int(port))
        return taps

    async def record(self, call_id: str, callback: str | None = None) -> str:
        """Start a both-tracks recording on connector ``main``; its sid."""
        body: dict[str, Any] = {"connector": "main", "track": "both_tracks"}
        if callback is not None:
            body["status_callback"] = callback
        answer = await self.request("POST", f"/v1/calls/{call_id}/recordings", body)
        assert answer.status == 201, answer
        return str(answer.body["sid"])

    async def stream(self, call_id: str, url: str, callback: str | None = None) -> str:
        """Start a both-tracks Twilio-format WebSocket stream to ``url``; its sid."""
        body: dict[str, Any] = {"url": url, "track": "both_tracks"}
        if callback is not None:
            body["status_callback"] = callback
        answer = await self.request("POST", f"/v1/calls/{call_id}/streams", body)
        assert answer.status == 201, answer
        return str(answer.body["sid"])

    async def wait_status(self, path: str, status: str, timeout: float) -> dict[str, Any]:
        """Poll ``GET path`` until its ``status`` is ``status``; the resource."""
        async with asyncio.timeout(timeout):
            while True:
                answer = await self.request("GET", path)
                if answer.status == 200 and answer.body["status"] == status:
                    return dict(answer.body)
                await asyncio.sleep(0.05)

    def worker_pids(self) -> dict[int, int]:
        """Media worker index -> pid, from the children of the sidecar in ``/proc``."""
        workers = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue  # gone meanwhile
            parent = int(stat.rpartition(")")[2].split()[1])  # after "(comm)": state, ppid
            if parent == self.pid and b"--index" in argv:
                workers[int(argv[argv.index(b"--index") + 1])] = int(entry.name)
        return workers

    def signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout)


def pid_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def kill(pid: int) -> None:
    """SIGKILL one process this test started (directly or through the sidecar), by its id."""
    os.kill(pid, signal.SIGKILL)
