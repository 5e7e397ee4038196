"""MediaEngine on real loopback sockets, in-process (workers=0) and with worker processes.

Covers: N tap legs fed by a sender and forked to sink sockets with every packet accounted for
(sent = forwarded + counted drops, per leg and per fork), sequence numbers contiguous per fork,
SR/SDES well formed at the sink and BYE at stop and at close; an SRTP fork decrypted at the sink;
the SRS's RR (on the RTCP port and muxed on the RTP port) reaching fork_stats and an event; the
feed() path; placement rules and unknown ids; update_fork and pause/resume over sockets; send
failures (ICMP port unreachable); idle legs; a killed worker reported as WorkerDied while the
other worker keeps forwarding, and its calls forgotten once their legs and forks are closed (the
id of a lost call serves a new call).
Does not cover throughput (benchmarks/bench_media.py) or the pipelines' arithmetic
(test_pipeline.py).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import TypeVar

import pytest

from siprec_src.errors import ConfigError, LocalProtocolError
from siprec_src.media import (
    FirstPacketReceived,
    ForkSendFailed,
    ForkSpec,
    Leg,
    LegIdle,
    LegSpec,
    MediaConfig,
    MediaEngine,
    MediaEvent,
    ReceptionReported,
    SourceLatched,
    SrtpKeys,
    WorkerDied,
    WorkerLostError,
)
from siprec_src.media.engine import LOCAL
from siprec_src.media.rtp import (
    Goodbye,
    ReceiverReport,
    ReportBlock,
    RtpPacket,
    SenderReport,
    SourceDescription,
    parse_rtcp,
)
from siprec_src.media.srtp import SrtpReceiver, generate_key_params

HOST = "127.0.0.1"
EventT = TypeVar("EventT")
SUITE = "AES_CM_128_HMAC_SHA1_80"


class UdpSink:
    """A socket on the loop that keeps every datagram it receives (an SRS, or its RTCP port)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.received: list[bytes] = []
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._drain)

    def _drain(self) -> None:
        while True:
            try:
                self.received.append(self.sock.recv(4096))
            except BlockingIOError:
                return

    def rtp(self) -> list[RtpPacket]:
        return [RtpPacket.parse(data) for data in self.received if not 191 < data[1] < 224]

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


class Srs:
    """One SRS m-line: an RTP sink and an RTCP sink."""

    def __init__(self) -> None:
        self.rtp = UdpSink()
        self.rtcp = UdpSink()

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


@pytest.fixture
async def srs_factory() -> AsyncIterator[Callable[[], Srs]]:
    made: list[Srs] = []

    def make() -> Srs:
        srs = Srs()
        made.append(srs)
        return srs

    yield make
    for srs in made:
        srs.close()


def rtp(seq: int, pt: int = 0, ssrc: int = 0x0BADCAFE) -> bytes:
    return bytes(RtpPacket(pt, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc, bytes([seq & 0xFF]) * 160))


def fork_spec(fork_id: str, call_id: str, local: tuple[str, int], srs: Srs, **changes: object) -> ForkSpec:
    spec = ForkSpec(
        fork_id=fork_id,
        call_id=call_id,
        leg=Leg.INBOUND,
        local=local,
        remote_rtp=srs.rtp.address,
        remote_rtcp=srs.rtcp.address,
        ssrc=0x51C0000 + int.from_bytes(fork_id.encode()[-2:], "big"),
        payload_map=((0, 0),),
        rtcp_interval=0.2,
        cname=f"{fork_id}@test",
    )
    return replace(spec, **changes)  # type: ignore[arg-type]


async def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def wait_stats(check: Callable[[], object], timeout: float = 3.0) -> None:
    """Poll an async condition (stats come from another process)."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():  # type: ignore[misc]
            return
        if time.monotonic() > deadline:
            raise AssertionError("stats did not settle in time")
        await asyncio.sleep(0.02)


def drain_events(engine: MediaEngine) -> list[MediaEvent]:
    events = []
    while not engine._events.empty():
        events.append(engine._events.get_nowait())
    return events


def contiguous(numbers: list[int]) -> bool:
    return all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(numbers))


def config(workers: int, base: int, **changes: object) -> MediaConfig:
    return replace(MediaConfig(workers=workers, port_min=base, port_max=base + 399), **changes)  # type: ignore[arg-type]


# --- forwarding, accounted for ------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1, 2])
async def test_every_packet_is_accounted_for(workers: int, srs_factory: Callable[[], Srs]) -> None:
    legs, per_leg = 4, 150
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((HOST, 0))
    intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    async with MediaEngine(config(workers, 47000 + 400 * workers)) as engine:
        taps: list[tuple[str, int]] = []
        all_srs: list[Srs] = []
        pcmu_srs: list[Srs] = []
        for i in range(legs):
            call = f"call-{i}"
            tap = await engine.open_leg(LegSpec(call, Leg.INBOUND, bind_host=HOST))
            assert tap is not None and tap[1] % 2 == 0
            taps.append(tap)
            # Two forks per leg: one takes PCMU and G.729 (contiguous), one PCMU only (drops).
            for fork_id, mapping, sinks in (
                ("all", ((0, 0), (18, 18)), all_srs),
                ("pcmu", ((0, 0),), pcmu_srs),
            ):
                srs = srs_factory()
                sinks.append(srs)
                local = await engine.reserve_fork_port(call, f"{fork_id}-{i}", HOST)
                await engine.start_fork(fork_spec(f"{fork_id}-{i}", call, local, srs, payload_map=mapping))
        if workers:
            assert {engine.placement(f"call-{i}") for i in range(legs)} == set(range(workers))
        else:
            assert {engine.placement(f"call-{i}") for i in range(legs)} == {LOCAL}

        for seq in range(per_leg):
            for tap in taps:
                sender.sendto(rtp(seq, pt=18 if seq % 10 == 9 else 0), tap)
            if seq % 50 == 0:
                intruder.sendto(rtp(seq), taps[0])
                await asyncio.sleep(0.005)  # let the first packets latch the sender first
        await wait_until(lambda: all(len(s.rtp.rtp()) == per_leg for s in all_srs))
        await wait_until(lambda: all(len(s.rtp.rtp()) == per_leg * 9 // 10 for s in pcmu_srs))

        for i in range(legs):
            leg = await engine.leg_stats(f"call-{i}", Leg.INBOUND)
            assert leg.packets == per_leg and leg.malformed == 0
            assert leg.rejected_source == (3 if i == 0 else 0)
            every = await engine.fork_stats(f"all-{i}")
            pcmu = await engine.fork_stats(f"pcmu-{i}")
            assert every.packets_sent == per_leg and every.dropped_payload_type == 0
            assert pcmu.packets_sent + pcmu.dropped_payload_type == per_leg
            assert pcmu.dropped_payload_type == per_leg // 10
            got = all_srs[i].rtp.rtp()
            assert contiguous([p.sequence for p in got])
            assert {p.ssrc for p in got} == {fork_spec(f"all-{i}", "", ("", 0), all_srs[i]).ssrc}
            assert [p.payload[0] for p in got] == [seq & 0xFF for seq in range(per_leg)]

        # RTCP: SR + SDES CNAME every ~0.2 s once RTP flowed (RFC 3550 §6.4.1, §6.5).
        await wait_until(lambda: all(s.rtcp.received for s in all_srs))
        for i, srs in enumerate(all_srs):
            sr, sdes = parse_rtcp(srs.rtcp.received[0]).packets[:2]
            assert isinstance(sr, SenderReport) and isinstance(sdes, SourceDescription)
            assert sdes.cname(sr.ssrc) == f"all-{i}@test".encode()
            assert 0 < sr.packet_count <= per_leg and sr.octet_count == 160 * sr.packet_count

        stats = await engine.stop_fork("all-0")
        assert stats.packets_sent == per_leg and stats.rtcp_sent >= 1
        await wait_until(lambda: _ends_with_bye(all_srs[0]))
        events = drain_events(engine)
        latched = [e for e in events if isinstance(e, SourceLatched)]
        assert sorted(e.call_id for e in latched) == [f"call-{i}" for i in range(legs)]
        assert all(e.source == sender.getsockname() for e in latched)
        assert len([e for e in events if isinstance(e, FirstPacketReceived)]) == legs
    # close(): BYE on every fork still running.
    await wait_until(lambda: all(_ends_with_bye(s) for s in pcmu_srs))
    sender.close()
    intruder.close()


def _ends_with_bye(srs: Srs) -> bool:
    received = srs.rtcp.received
    return bool(received) and isinstance(parse_rtcp(received[-1]).packets[-1], Goodbye)


@pytest.mark.parametrize("workers", [0, 1])
async def test_srtp_fork_decrypts_at_the_sink(workers: int, srs_factory: Callable[[], Srs]) -> None:
    keys = SrtpKeys(SUITE, generate_key_params(SUITE))
    srs = srs_factory()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((HOST, 0))
    async with MediaEngine(config(workers, 48200 + 400 * workers)) as engine:
        tap = await engine.open_leg(LegSpec("c", Leg.INBOUND, expected_source=sender.getsockname()))
        assert tap is not None
        local = await engine.reserve_fork_port("c", "s", HOST)
        await engine.start_fork(fork_spec("s", "c", local, srs, srtp=keys))
        for seq in range(60):
            sender.sendto(rtp(seq), tap)
        await wait_until(lambda: len(srs.rtp.received) == 60)
        await wait_until(lambda: len(srs.rtcp.received) >= 1)
        receiver = SrtpReceiver(keys)
        plain = [RtpPacket.parse(receiver.unprotect(data)) for data in srs.rtp.received]
        assert contiguous([p.sequence for p in plain])
        assert [p.payload[0] for p in plain] == list(range(60))
        report = parse_rtcp(receiver.unprotect_rtcp(srs.rtcp.received[0]))
        assert isinstance(report.packets[0], SenderReport)
    sender.close()


async def test_reports_from_the_srs_reach_fork_stats(srs_factory: Callable[[], Srs]) -> None:
    srs = srs_factory()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    async with MediaEngine(config(1, 49000)) as engine:
        tap = await engine.open_leg(LegSpec("c", Leg.INBOUND))
        assert tap is not None
        local = await engine.reserve_fork_port("c", "f", HOST)
        spec = fork_spec("f", "c", local, srs)
        await engine.start_fork(spec)
        sender.sendto(rtp(1), tap)
        await wait_until(lambda: len(srs.rtp.received) == 1)
        block = ReportBlock(spec.ssrc, 128, 3, 77, 12, 0, 0)
        # An RR on our RTCP port (RFC 3550 §11: RTP + 1), then one muxed on the RTP port.
        srs.rtcp.sock.sendto(bytes(ReceiverReport(0xABC, (block,))), (HOST, local[1] + 1))
        await wait_stats(lambda: _has_report(engine, "f", 77))
        muxed = replace(block, highest_sequence=78)
        srs.rtp.sock.sendto(bytes(ReceiverReport(0xABC, (muxed,))), local)
        await wait_stats(lambda: _has_report(engine, "f", 78))
        stats = await engine.fork_stats("f")
        assert stats.rtcp_received == 2 and stats.last_report is not None
        assert stats.last_report.fraction_lost == 0.5 and stats.last_report.jitter == 12
        reports = [e for e in drain_events(engine) if isinstance(e, ReceptionReported)]
        assert [r.report.highest_sequence for r in reports] == [77, 78]
    sender.close()


async def _has_report(engine: MediaEngine, fork_id: str, highest: int) -> bool:
    report = (await engine.fork_stats(fork_id)).last_report
    return report is not None and report.highest_sequence == highest


# --- the embedding path ----------------------------------------------------------------------------


async def test_feed_path_runs_in_process(srs_factory: Callable[[], Srs]) -> None:
    srs = srs_factory()
    async with MediaEngine(config(1, 49400)) as engine:
        assert await engine.open_leg(LegSpec("emb", Leg.OUTBOUND), tap=False) is None
        assert engine.placement("emb") == LOCAL
        local = await engine.reserve_fork_port("emb", "e1", HOST)
        await engine.start_fork(fork_spec("e1", "emb", local, srs, leg=Leg.OUTBOUND))
        for seq in range(40):
            engine.feed("emb", Leg.OUTBOUND, rtp(seq))
        await wait_until(lambda: len(srs.rtp.received) == 40)
        assert contiguous([p.sequence for p in srs.rtp.rtp()])
        assert (await engine.leg_stats("emb", Leg.OUTBOUND)).packets == 40
        with pytest.raises(LocalProtocolError, match="no inbound leg"):
            engine.feed("emb", Leg.INBOUND, rtp(1))
        with pytest.raises(LocalProtocolError, match="no call nobody"):
            engine.feed("nobody", Leg.INBOUND, rtp(1))
        # A call placed on the worker cannot be fed.
        await engine.open_leg(LegSpec("tapped", Leg.INBOUND))
        assert engine.placement("tapped") == 0
        with pytest.raises(LocalProtocolError, match="runs in media worker 0"):
            engine.feed("tapped", Leg.INBOUND, rtp(1))
        with pytest.raises(LocalProtocolError, match="cannot have a feed-only leg"):
            await engine.open_leg(LegSpec("tapped", Leg.OUTBOUND), tap=False)
        with pytest.raises(LocalProtocolError, match="cannot have a tap leg"):
            await engine.open_leg(LegSpec("emb", Leg.INBOUND))


async def test_unknown_ids_and_limits_are_clear_errors(srs_factory: Callable[[], Srs]) -> None:
    async with MediaEngine(config(1, 49800)) as engine:
        with pytest.raises(LocalProtocolError, match="no fork ghost"):
            await engine.stop_fork("ghost")
        with pytest.raises(LocalProtocolError, match="no call ghost-call"):
            await engine.leg_stats("ghost-call", Leg.INBOUND)
        await engine.open_leg(LegSpec("c", Leg.INBOUND))
        with pytest.raises(LocalProtocolError, match="already open"):
            await engine.open_leg(LegSpec("c", Leg.INBOUND))
        with pytest.raises(LocalProtocolError, match="no outbound leg"):
            await engine.leg_stats("c", Leg.OUTBOUND)
        locals_ = [await engine.reserve_fork_port("c", f"f{i}", HOST) for i in range(4)]
        with pytest.raises(LocalProtocolError, match="already has 4 forked streams"):
            await engine.reserve_fork_port("c", "f4", HOST)
        with pytest.raises(LocalProtocolError, match="fork f0 already exists"):
            await engine.reserve_fork_port("c", "f0", HOST)
        srs = srs_factory()
        with pytest.raises(LocalProtocolError, match="not the reserved address"):
            await engine.start_fork(fork_spec("f0", "c", (HOST, locals_[1][1]), srs))
        with pytest.raises(LocalProtocolError, match="reserved but not started"):
            await engine.pause_fork("f0")
        # A reserved fork that never started stops cleanly, with zero counters and no BYE.
        assert (await engine.stop_fork("f3")).packets_sent == 0
        await engine.reserve_fork_port("c", "f3", HOST)
        # Released ports are reusable; the call is forgotten once empty.
        for i in range(4):
            await engine.stop_fork(f"f{i}")
        await engine.close_leg("c", Leg.INBOUND)
        assert engine.placement("c") is None
    with pytest.raises(ConfigError, match="workers"):
        MediaConfig(workers=-1)
    with pytest.raises(ConfigError, match="port range"):
        MediaConfig(port_min=30000, port_max=20000)


# --- changes over sockets ----------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1])
async def test_update_pause_resume_keep_the_stream_continuous(
    workers: int, srs_factory: Callable[[], Srs]
) -> None:
    first, second = srs_factory(), srs_factory()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    async with MediaEngine(config(workers, 50200 + 400 * workers)) as engine:
        tap = await engine.open_leg(LegSpec("c", Leg.INBOUND))
        assert tap is not None
        local = await engine.reserve_fork_port("c", "f", HOST)
        spec = fork_spec("f", "c", local, first)
        await engine.start_fork(spec)
        for seq in range(10):
            sender.sendto(rtp(seq), tap)
        await wait_until(lambda: len(first.rtp.received) == 10)
        # A re-INVITE moved the SRS's media; the SSRC and numbering continue there.
        await engine.update_fork(
            replace(spec, remote_rtp=second.rtp.address, remote_rtcp=second.rtcp.address)
        )
        for seq in range(10, 20):
            sender.sendto(rtp(seq), tap)
        await wait_until(lambda: len(second.rtp.rtp()) == 10)
        await engine.pause_fork("f")
        for seq in range(20, 30):
            sender.sendto(rtp(seq), tap)
        await wait_stats(lambda: _dropped_paused(engine, "f", 10))
        await asyncio.sleep(0.1)
        await engine.resume_fork("f")
        for seq in range(30, 35):
            sender.sendto(rtp(seq), tap)
        await wait_until(lambda: len(second.rtp.rtp()) == 15)
        numbers = [p.sequence for p in first.rtp.rtp() + second.rtp.rtp()]
        assert contiguous(numbers)
        after = second.rtp.rtp()
        gap = (after[10].timestamp - after[9].timestamp) & 0xFFFFFFFF
        assert after[10].marker and gap >= 0.1 * 8000  # the paused wall time is in the timestamps
        assert len({p.ssrc for p in first.rtp.rtp() + after}) == 1
    sender.close()


async def _dropped_paused(engine: MediaEngine, fork_id: str, count: int) -> bool:
    return (await engine.fork_stats(fork_id)).dropped_paused == count


async def test_send_failure_and_idle_leg_are_reported(srs_factory: Callable[[], Srs]) -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind((HOST, 0))
    nobody = closed.getsockname()
    closed.close()  # nothing listens there now: ICMP port unreachable
    srs = srs_factory()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    async with MediaEngine(config(1, 50800, stream_timeout=0.3)) as engine:
        tap = await engine.open_leg(LegSpec("c", Leg.INBOUND))
        assert tap is not None
        local = await engine.reserve_fork_port("c", "f", HOST)
        await engine.start_fork(replace(fork_spec("f", "c", local, srs), remote_rtp=nobody))
        for seq in range(20):
            sender.sendto(rtp(seq), tap)
            await asyncio.sleep(0.002)
        event = await asyncio.wait_for(_next_of(engine, ForkSendFailed), 3)
        assert event.fork_id == "f" and "refused" in event.reason.lower()
        assert (await engine.fork_stats("f")).send_errors >= 1
        idle = await asyncio.wait_for(_next_of(engine, LegIdle), 3)
        assert idle.call_id == "c" and idle.idle_for >= 0.3
    sender.close()


async def _next_of(engine: MediaEngine, kind: type[EventT]) -> EventT:
    while True:
        event = await engine.next_event()
        if isinstance(event, kind):
            return event


# --- worker failure ------------------------------------------------------------------------------


async def test_a_dead_worker_is_reported_and_the_others_keep_forwarding(
    srs_factory: Callable[[], Srs],
) -> None:
    doomed_srs, survivor_srs = srs_factory(), srs_factory()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    async with MediaEngine(config(2, 51200, worker_restart=0.0)) as engine:  # never replaced
        taps: dict[str, tuple[str, int]] = {}
        for call, srs in (("doomed", doomed_srs), ("survivor", survivor_srs)):
            tap = await engine.open_leg(LegSpec(call, Leg.INBOUND))
            assert tap is not None
            taps[call] = tap
            local = await engine.reserve_fork_port(call, f"{call}-fork", HOST)
            await engine.start_fork(fork_spec(f"{call}-fork", call, local, srs))
        assert engine.placement("doomed") == 0 and engine.placement("survivor") == 1
        for seq in range(10):
            for tap in taps.values():
                sender.sendto(rtp(seq), tap)
        await wait_until(lambda: len(survivor_srs.rtp.received) == 10 and len(doomed_srs.rtp.received) == 10)

        pid = engine.worker_pids[0]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        died = await asyncio.wait_for(_next_of(engine, WorkerDied), 5)
        assert died.worker == 0 and "SIGKILL" in died.reason
        assert died.call_ids == ("doomed",) and died.fork_ids == ("doomed-fork",)

        for seq in range(10, 30):
            sender.sendto(rtp(seq), taps["survivor"])
        await wait_until(lambda: len(survivor_srs.rtp.received) == 30)
        assert contiguous([p.sequence for p in survivor_srs.rtp.rtp()])
        with pytest.raises(WorkerLostError, match="media worker 0, which died"):
            await engine.fork_stats("doomed-fork")
        # New calls go to the live worker.
        await engine.open_leg(LegSpec("new", Leg.INBOUND))
        assert engine.placement("new") == 1
        # The lost call is closed although its worker cannot answer: it is forgotten, so its id
        # serves a new call (it used to stay placed on the dead worker: WorkerLostError forever).
        with pytest.raises(WorkerLostError):
            await engine.stop_fork("doomed-fork")
        with pytest.raises(WorkerLostError):
            await engine.close_leg("doomed", Leg.INBOUND)
        assert engine.placement("doomed") is None
        await engine.open_leg(LegSpec("doomed", Leg.INBOUND))
        assert engine.placement("doomed") == 1
    sender.close()


async def test_a_dead_worker_is_replaced_and_its_lost_calls_stay_apart(
    srs_factory: Callable[[], Srs],
) -> None:
    fresh_srs = srs_factory()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    async with MediaEngine(config(2, 51600, worker_restart=0.2)) as engine:
        assert await engine.open_leg(LegSpec("doomed", Leg.INBOUND)) is not None
        assert engine.placement("doomed") == 0
        local = await engine.reserve_fork_port("doomed", "doomed-fork", HOST)
        await engine.start_fork(fork_spec("doomed-fork", "doomed", local, srs_factory()))
        await engine.open_leg(LegSpec("survivor", Leg.INBOUND))
        assert engine.placement("survivor") == 1
        old_pid = engine.worker_pids[0]
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        died = await asyncio.wait_for(_next_of(engine, WorkerDied), 5)
        assert died.worker == 0 and died.call_ids == ("doomed",)
        assert engine.workers == (2, 1)

        await wait_until(lambda: engine.workers == (2, 2), timeout=5)  # replaced after 0.2 s
        new_pid = engine.worker_pids[0]
        assert new_pid is not None and new_pid != old_pid
        # The lost call's commands never reach the replacement (it never had that call).
        with pytest.raises(WorkerLostError, match="media worker 0, which died"):
            await engine.fork_stats("doomed-fork")
        with pytest.raises(WorkerLostError):
            await engine.open_leg(LegSpec("doomed", Leg.OUTBOUND))
        # A new call goes to the replacement (it carries the fewest calls) and forks there,
        # from the same port slice.
        fresh_tap = await engine.open_leg(LegSpec("fresh", Leg.INBOUND))
        assert fresh_tap is not None and engine.placement("fresh") == 0
        local = await engine.reserve_fork_port("fresh", "fresh-fork", HOST)
        await engine.start_fork(fork_spec("fresh-fork", "fresh", local, fresh_srs))
        for seq in range(20):
            sender.sendto(rtp(seq), fresh_tap)
        await wait_until(lambda: len(fresh_srs.rtp.received) == 20)
        assert contiguous([p.sequence for p in fresh_srs.rtp.rtp()])
        # Releasing the lost call frees its id.
        with pytest.raises(WorkerLostError):
            await engine.stop_fork("doomed-fork")
        with pytest.raises(WorkerLostError):
            await engine.close_leg("doomed", Leg.INBOUND)
        await engine.open_leg(LegSpec("doomed", Leg.INBOUND))
        assert engine.placement("doomed") in (0, 1)
    sender.close()


def test_worker_restart_is_bounded() -> None:
    with pytest.raises(ConfigError, match="worker_restart"):
        MediaConfig(worker_restart=-1.0)
    with pytest.raises(ConfigError, match="worker_restart"):
        MediaConfig(worker_restart=3600.0)
