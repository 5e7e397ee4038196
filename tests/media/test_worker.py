"""The media worker: its command protocol over a real socketpair, and MediaHost on its own.

Covers: frame splitting; a worker process started as the engine starts it, saying ready,
answering commands with results and typed errors (unknown ids, a malformed request that raises
inside, an unknown command), sending unsolicited events, exiting on ``close`` and on EOF of the
control socket; MediaHost's socket registration and release, the four-fork limit, a fork started
before its leg, and ``close``; a tap leg's admitted source served from a socket connected to it
(on this machine's kernel, real sockets: the tap socket keeps the strangers, order is kept across
the switch, every socket is released) and without one where the kernel cannot route it.
Does not cover the engine's side of the protocol (test_engine.py).
"""

from __future__ import annotations

import gc
import itertools
import pickle
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from siprec_src.errors import LocalProtocolError
from siprec_src.media import worker as worker_module
from siprec_src.media.engine import WORKER_ENTRY
from siprec_src.media.events import FirstPacketReceived, ForkStats, LegStats, MediaEvent, SourceLatched
from siprec_src.media.ports import PortAllocator
from siprec_src.media.rtp import RtpPacket
from siprec_src.media.spec import ForkSpec, Leg, LegSpec, SrtpKeys
from siprec_src.media.srtp import generate_key_params
from siprec_src.media.worker import FrameDecoder, MediaHost, Readable, Timers, encode_frame

HOST = "127.0.0.1"


def test_frames_split_anywhere_are_reassembled() -> None:
    stream = b"".join(encode_frame(("event", i)) for i in range(5))
    decoder = FrameDecoder()
    got = []
    for i in range(0, len(stream), 7):
        got += decoder.feed(stream[i : i + 7])
    assert got == [("event", i) for i in range(5)]
    with pytest.raises(LocalProtocolError, match="corrupt"):
        FrameDecoder().feed(b"\xff\xff\xff\xff")


class WorkerUnderTest:
    """A worker process started the way the engine starts it, spoken to synchronously."""

    def __init__(self, port_min: int, port_max: int) -> None:
        self.control, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER_ENTRY,
                "--control-fd",
                str(child.fileno()),
                "--index",
                "3",
                "--port-min",
                str(port_min),
                "--port-max",
                str(port_max),
                "--stream-timeout",
                "30",
            ],
            pass_fds=(child.fileno(),),
        )
        child.close()
        self.control.settimeout(5)
        self.decoder = FrameDecoder()
        self.backlog: list[Any] = []
        self.events: list[MediaEvent] = []
        self.next_id = 0

    def receive(self) -> Any:
        while not self.backlog:
            data = self.control.recv(65536)
            if not data:
                raise EOFError
            self.backlog += self.decoder.feed(data)
        return self.backlog.pop(0)

    def call(self, command: str, *args: object) -> tuple[str, Any]:
        self.next_id += 1
        self.control.sendall(encode_frame(("call", self.next_id, command, args)))
        while True:
            message = self.receive()
            if message[0] == "event":
                self.events.append(message[1])
                continue
            assert message[1] == self.next_id
            return message[0], message[2]

    def close(self) -> None:
        self.control.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def worker() -> Iterator[WorkerUnderTest]:
    under_test = WorkerUnderTest(52000, 52099)
    yield under_test
    under_test.close()


def test_worker_answers_commands_and_sends_events(worker: WorkerUnderTest) -> None:
    kind, index, pid = worker.receive()
    assert (kind, index, pid) == ("ready", 3, worker.process.pid)

    status, tap = worker.call("open_leg", LegSpec("c", Leg.INBOUND), True)
    assert status == "ok" and tap[0] == HOST and 52000 <= tap[1] <= 52098 and tap[1] % 2 == 0

    status, error = worker.call("stop_fork", "ghost")
    assert status == "error" and isinstance(error, LocalProtocolError) and "ghost" in str(error)

    status, error = worker.call("fork_stats")  # no argument: raises inside, the worker lives on
    assert status == "error" and "fork_stats failed" in str(error)
    status, error = worker.call("shutdown_everything")
    assert status == "error" and "bad control message" in str(error)

    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((HOST, 0))
    sender.sendto(bytes(RtpPacket(0, 1, 160, 5, b"\x00" * 160)), tuple(tap))
    deadline = time.monotonic() + 3
    while len(worker.events) < 2 and time.monotonic() < deadline:
        message = worker.receive()
        assert message[0] == "event"
        worker.events.append(message[1])
    source = sender.getsockname()
    assert worker.events == [
        SourceLatched("c", Leg.INBOUND, source),
        FirstPacketReceived("c", Leg.INBOUND, source),
    ]
    status, stats = worker.call("leg_stats", "c", Leg.INBOUND)
    assert status == "ok" and stats == LegStats(packets=1, octets=160)
    sender.close()

    status, result = worker.call("close")
    assert (status, result) == ("ok", None)
    assert worker.process.wait(5) == 0


def test_worker_exits_when_the_control_process_goes_away(worker: WorkerUnderTest) -> None:
    assert worker.receive()[0] == "ready"
    assert worker.call("reserve_fork_port", "c", "f", HOST)[0] == "ok"
    worker.control.close()
    assert worker.process.wait(5) == 0


def test_specs_and_events_survive_pickling() -> None:
    spec = ForkSpec("f", "c", Leg.OUTBOUND, (HOST, 1), (HOST, 2), (HOST, 3), 7, ((0, 0),))
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert pickle.loads(pickle.dumps(ForkStats(packets_sent=3))) == ForkStats(packets_sent=3)
    error = pickle.loads(pickle.dumps(LocalProtocolError("no fork x")))
    assert isinstance(error, LocalProtocolError) and str(error) == "no fork x"


# --- MediaHost alone -----------------------------------------------------------------------------


class FakeReactor:
    def __init__(self) -> None:
        self.readers: dict[int, Readable] = {}

    def add_reader(self, fd: int, callback: Readable) -> None:
        assert fd not in self.readers
        self.readers[fd] = callback

    def remove_reader(self, fd: int) -> None:
        del self.readers[fd]


def test_host_registers_and_releases_sockets_and_ports() -> None:
    reactor = FakeReactor()
    ports = PortAllocator(52200, 52299)
    events: list[MediaEvent] = []
    host = MediaHost(reactor, events.append, ports, 30.0)
    host.open_leg(LegSpec("c", Leg.INBOUND), tap=True, now=0.0)
    host.open_leg(LegSpec("c", Leg.OUTBOUND), tap=False, now=0.0)
    assert len(reactor.readers) == 2 and len(ports) == 1
    for i in range(4):
        host.reserve_fork_port("c", f"f{i}", HOST)
    with pytest.raises(LocalProtocolError, match="already has 4 forked streams"):
        host.reserve_fork_port("c", "f4", HOST)
    host.reserve_fork_port("other-call", "o", HOST)  # the limit is per call
    assert len(reactor.readers) == 2 + 2 * 5 and len(ports) == 6
    assert host.call_ids == {"c", "other-call"} and len(host.fork_ids) == 5
    host.stop_fork("f0", 1.0, 1.0)  # a stopped fork frees its place in the call
    host.reserve_fork_port("c", "f4", HOST)
    host.stop_fork("o", 1.0, 1.0)
    assert host.call_ids == {"c"} and host.fork_ids == {"f1", "f2", "f3", "f4"}
    host.close(1.0, 1.0)
    assert reactor.readers == {} and len(ports) == 0 and host.call_ids == set()
    assert len(host.timers) == 0


def test_host_attaches_a_fork_started_before_its_leg() -> None:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((HOST, 0))
    sink.settimeout(3)
    host = MediaHost(FakeReactor(), lambda event: None, PortAllocator(52400, 52499), 30.0)
    local = host.reserve_fork_port("c", "f", HOST)
    spec = ForkSpec("f", "c", Leg.OUTBOUND, local, sink.getsockname(), sink.getsockname(), 9, ((0, 0),))
    host.start_fork(spec, 0.0)
    with pytest.raises(LocalProtocolError, match="already started"):
        host.start_fork(spec, 0.0)
    host.open_leg(LegSpec("c", Leg.OUTBOUND), tap=False, now=0.0)
    host.feed("c", Leg.OUTBOUND, bytes(RtpPacket(0, 5, 800, 1, b"\x01" * 160)), 0.1)
    received = RtpPacket.parse(sink.recv(2048))
    assert received.ssrc == 9 and received.payload == b"\x01" * 160
    # Closing the leg leaves the fork; reopening attaches it again.
    host.close_leg("c", Leg.OUTBOUND)
    host.open_leg(LegSpec("c", Leg.OUTBOUND), tap=False, now=0.2)
    host.feed("c", Leg.OUTBOUND, bytes(RtpPacket(0, 6, 960, 1, b"\x02" * 160)), 0.22)
    assert RtpPacket.parse(sink.recv(2048)).sequence == (received.sequence + 1) & 0xFFFF
    assert host.stop_fork("f", 1.0, 1.0).packets_sent == 2
    host.close(1.0, 1.0)
    sink.close()


def _serve(reactor: FakeReactor, now: float) -> None:
    """Call every reader until none holds a datagram, as the worker's loop would."""
    busy = True
    while busy:
        busy = False
        for callback in list(reactor.readers.values()):
            while callback(now):
                busy = True


def _receive_all(sock: socket.socket, count: int) -> list[RtpPacket]:
    return [RtpPacket.parse(sock.recv(2048)) for _ in range(count)]


@pytest.mark.parametrize("connect", [True, False])
def test_host_serves_the_admitted_source_from_a_connected_socket(
    connect: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "CONNECT_ADMITTED_SOURCES", connect)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((HOST, 0))
    sink.settimeout(3)
    reactor = FakeReactor()
    host = MediaHost(reactor, lambda event: None, PortAllocator(52600, 52699), 30.0)
    tap = host.open_leg(LegSpec("c", Leg.INBOUND, bind_host=HOST), tap=True, now=0.0)
    assert tap is not None
    local = host.reserve_fork_port("c", "f", HOST)
    host.start_fork(
        ForkSpec("f", "c", Leg.INBOUND, local, sink.getsockname(), sink.getsockname(), 9, ((0, 0),)), 0.0
    )
    tap_reader = next(iter(reactor.readers.values()))
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.bind((HOST, 0))
    intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    intruder.bind((HOST, 0))

    # Queued before the worker reads anything: the first packet latches the PBX, the rest of the
    # tap socket's queue is forwarded right then, in order, and the intruder counted.
    for seq in range(1, 6):
        pbx.sendto(bytes(RtpPacket(0, seq, 160 * seq, 1, bytes([seq]) * 160)), tap)
    intruder.sendto(bytes(RtpPacket(0, 99, 0, 2, b"\x00" * 160)), tap)
    assert tap_reader(0.1)
    assert len(reactor.readers) == (5 if connect else 4)  # tap RTP/RTCP, fork RTP/RTCP, connected
    if connect:
        assert not tap_reader(0.1)  # drained at the switch
    for seq in range(6, 11):
        pbx.sendto(bytes(RtpPacket(0, seq, 160 * seq, 1, bytes([seq]) * 160)), tap)
    intruder.sendto(bytes(RtpPacket(0, 98, 0, 2, b"\x00" * 160)), tap)
    if connect:
        # The kernel routes the PBX to the connected socket: the tap socket holds the intruder only.
        assert tap_reader(0.2) and not tap_reader(0.2)
        assert host.leg_stats("c", Leg.INBOUND).rejected_source == 2
    _serve(reactor, 0.2)
    got = _receive_all(sink, 10)
    assert [packet.payload[0] for packet in got] == list(range(1, 11))
    assert all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in itertools.pairwise(got))
    stats = host.leg_stats("c", Leg.INBOUND)
    assert (stats.packets, stats.rejected_source) == (10, 2)

    host.close_leg("c", Leg.INBOUND)
    assert len(reactor.readers) == 2  # the fork's; the tap's three sockets are closed
    rebound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rebound.bind(tuple(tap))  # the port is free again (no connected socket left on it)
    rebound.close()
    host.close(1.0, 1.0)
    for sock in (sink, pbx, intruder):
        sock.close()


@pytest.mark.parametrize(
    ("system", "release", "expected"),
    [
        ("linux", "6.1.0-18-amd64", True),
        ("linux", "5.4.0", True),
        ("linux", "5.3.18", False),
        ("linux", "4.19.0", False),
        ("darwin", "23.1.0", False),
    ],
)
def test_connected_sources_only_where_the_kernel_routes_them(
    system: str, release: str, expected: bool
) -> None:
    assert worker_module.kernel_routes_connected_udp(system, release) is expected


def test_closed_legs_and_forks_leave_no_reference_cycles() -> None:
    # The worker runs the cyclic collector rarely (gc thresholds in worker.main): a closed leg or
    # fork that is a reference cycle (bound methods kept on itself) stays in memory. The load
    # soak found ~28 KiB per call kept that way; refcounting alone must free them.
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((HOST, 0))
    sink.settimeout(3)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    keys = SrtpKeys("AES_CM_128_HMAC_SHA1_80", generate_key_params("AES_CM_128_HMAC_SHA1_80"))
    gc.collect()
    gc.disable()
    try:
        reactor = FakeReactor()
        host = MediaHost(reactor, lambda event: None, PortAllocator(52600, 52699), 30.0)
        for call in ("c1", "c2"):
            for number, leg in enumerate((Leg.INBOUND, Leg.OUTBOUND)):
                tap = host.open_leg(LegSpec(call, leg, HOST), tap=True, now=0.0)
                assert tap is not None
                fork = f"{call}/{number}"
                local = host.reserve_fork_port(call, fork, HOST)
                srtp = keys if number else None
                spec = ForkSpec(fork, call, leg, local, sink.getsockname(), sink.getsockname(), 9, ((0, 0),))
                host.start_fork(replace(spec, srtp=srtp), 0.0)
                sender.sendto(bytes(RtpPacket(0, 5, 800, 1, b"\x01" * 160)), tap)
        time.sleep(0.05)
        _serve(reactor, 0.1)
        assert len(_receive_all(sink, 4)) == 4
        for call in ("c1", "c2"):
            for number, leg in enumerate((Leg.INBOUND, Leg.OUTBOUND)):
                host.stop_fork(f"{call}/{number}", 1.0, 1.0)
                host.close_leg(call, leg)
        host.timers = Timers()  # cancelled entries hold their targets until their deadline
        del host, reactor
        assert gc.collect() == 0
    finally:
        gc.enable()
        sink.close()
        sender.close()
