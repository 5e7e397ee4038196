"""Fault injection toward the SRS, on real loopback sockets (issue 9, part 2).

1. The SRS dies mid-call (its process is killed with SIGKILL): the SRC notices (ICMP port
   unreachable on a fork over UDP, the connection closing over TCP), checks with a re-INVITE,
   and sets up a new recording session on the connector's second SRS carrying the same
   RFC 7865 metadata ids (group, session, streams) so the SRS side can stitch; the recording
   gap, from the kill to the first packet the second SRS records, is measured and bounded.
2. The first SRSs of a connector are silent, refuse with 503 + Retry-After, or present a
   certificate we do not trust: the recording fails over to the next one, and the status
   callbacks say so, attempt by attempt.

Each test takes 3-5 s. Run with ``-s`` to see the figures (docs/robustness.md has a table).
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from siprec_src import Engine, EngineConfig, Leg, Party, Track
from siprec_src.media.engine import MediaConfig
from siprec_src.recording.connector import Connector, connector_for
from siprec_src.recording.engine import Recording
from siprec_src.recording.events import (
    RecordingEvent,
    RecordingStarted,
    SessionLost,
    SessionRecovered,
)
from siprec_src.signaling.transport import ListenSpec, TlsConfig
from siprec_src.sip.message import Request, parse_message, response_to
from siprec_src.srs.server import SrsServer
from siprec_src.synthetic import SyntheticLeg
from tests.control.test_native import callback_sink, running_api
from tests.pki import Pki, make_pki
from tests.recording.minisrs import MiniSrs

ALICE = Party("sip:alice@example.com", "Alice")
BOB = Party("sip:bob@example.net", "Bob")
ATTEMPT_TIMEOUT = 1.0


async def _srs_process(out: Path, transport: str, pki: Pki) -> tuple[asyncio.subprocess.Process, int]:
    """``siprec-src srs`` as its own process (so it can be killed), and its SIP port."""
    listen = ["sips:127.0.0.1:0"] if transport == "tls" else [f"sip:127.0.0.1:0;transport={transport}"]
    certificates = ["--tls-cert", pki.server_cert, "--tls-key", pki.server_key]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "siprec_src",
        "srs",
        "--listen",
        *listen,
        *(certificates if transport == "tls" else []),
        "--out",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
    assert line.startswith("siprec-src srs listening on "), line
    address = line.split("listening on ", 1)[1].split(",")[0]  # "udp:127.0.0.1:PORT"
    return process, int(address.rsplit(":", 1)[1])


class Sender:
    """Both legs of a call at 50 packets/s on absolute deadlines, until stopped."""

    def __init__(self, taps: dict[Leg, tuple[str, int]]) -> None:
        self.taps = taps
        self.legs = [SyntheticLeg(Leg.INBOUND), SyntheticLeg(Leg.OUTBOUND)]
        self.sent_at: list[float] = []  # monotonic time of each 20 ms tick
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            for tick in range(1_000_000):
                for leg in self.legs:
                    sock.sendto(leg.next_packet(), self.taps[leg.leg])
                self.sent_at.append(time.monotonic())
                await asyncio.sleep(max(0.0, start + (tick + 1) * 0.02 - loop.time()))
        finally:
            sock.close()


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def _metadata_ids(document: dict[str, Any]) -> tuple[object, ...]:
    metadata = document["metadata"]
    return (
        [(s["id"], s["group_id"]) for s in metadata["sessions"]],
        sorted((s["id"], s["label"]) for s in metadata["streams"]),
    )


@pytest.mark.parametrize(
    ("transport", "secure", "workers"),
    [("udp", False, 0), ("tcp", False, 1), ("tls", True, 1)],
    ids=["udp", "tcp-worker", "tls-srtp-worker"],
)
async def test_srs_killed_mid_call_the_recording_moves_to_the_second_srs(
    transport: str, secure: bool, workers: int, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path, "test")
    tls = TlsConfig(certfile=pki.server_cert, keyfile=pki.server_key, cafile=pki.ca)
    process, port = await _srs_process(tmp_path / "srs1", transport, pki)
    try:  # from here on the process is killed whatever happens
        async with SrsServer(
            [ListenSpec(transport, "127.0.0.1", 0)],
            tmp_path / "srs2",
            media_host="127.0.0.1",
            tls=tls if secure else None,
        ) as srs2:
            if transport == "tls":
                first_uri = f"sips:srs@127.0.0.1:{port}"
            else:
                first_uri = f"sip:srs@127.0.0.1:{port};transport={transport}"
            connector = connector_for(
                "main",
                [first_uri, srs2.uri(transport)],
                secure=secure,
                attempt_timeout=ATTEMPT_TIMEOUT,
                srtp_suites=("AES_CM_128_HMAC_SHA1_80",),
            )
            events: list[tuple[float, RecordingEvent]] = []

            def on_event(_recording: Recording, event: RecordingEvent) -> None:
                events.append((time.monotonic(), event))

            def seen(kind: type) -> list[tuple[float, Any]]:
                return [(at, e) for at, e in events if isinstance(e, kind)]

            config = EngineConfig(
                connectors={"main": connector},
                media=MediaConfig(workers=workers),
                tls=TlsConfig(cafile=pki.ca) if secure else None,
            )
            async with Engine(config, on_event=on_event) as engine:
                call = await engine.open_call(caller=ALICE, callee=BOB)
                recording = await call.record(connector="main", track=Track.BOTH, secure=secure)
                await recording.wait_started(timeout=5)
                (_, started), *_ = seen(RecordingStarted)
                assert started.srs == first_uri
                sender = Sender(call.taps)
                sender.start()
                await asyncio.sleep(1.0)
                # The first SRS wrote its session.json at the start: read it before it dies.
                (first_json,) = (tmp_path / "srs1").glob("*/session.json")
                first = json.loads(first_json.read_text())
                killed_at = time.monotonic()
                process.send_signal(signal.SIGKILL)
                await process.wait()
                await _until(lambda: bool(seen(SessionRecovered)), 10)
                assert recording.status == "in-progress" and recording.session.recoveries == 1
                await asyncio.sleep(1.0)
                await sender.stop()
                await asyncio.sleep(0.1)
                await recording.stop()
                stats = recording.fork_stats
            record = await srs2.next_ended(timeout=5)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    ((lost_at, lost),) = seen(SessionLost)
    ((_, recovered),) = seen(SessionRecovered)
    assert lost.srs == first_uri and recovered.srs == srs2.uri(transport)
    kinds = [type(e).__name__ for _, e in events]
    assert kinds == [
        "AttemptStarted",
        "RecordingStarted",
        "SessionLost",
        "AttemptStarted",
        "SessionRecovered",
        "RecordingStopped",
    ], kinds
    # How it was noticed: over TCP the connection closes at the kill and the probe cannot
    # reconnect (503); over UDP ICMP errors on the forks probe, and the re-INVITE goes
    # unanswered for attempt_timeout.
    detection = lost_at - killed_at
    if transport != "udp":
        assert lost.status == 503, lost
        assert detection < 0.5, detection
    else:
        assert lost.status == 408 and "within 1 s" in lost.reason, lost
        assert ATTEMPT_TIMEOUT <= detection < ATTEMPT_TIMEOUT + 0.5, detection

    # The second SRS got the same metadata ids: the SRS side can stitch the two parts.
    second = json.loads(record.json_path.read_text())
    assert _metadata_ids(second) == _metadata_ids(first)
    assert second["sip"]["call_id"] != first["sip"]["call_id"]
    assert second["end_reason"] == "bye-from-src"
    arrivals = []
    for stream in second["streams"]:
        assert (stream["srtp_suite"] is not None) == secure
        assert stream["stats"]["srtp_failures"] == 0
        assert stream["stats"]["packets"] >= 40  # about a second of audio after the recovery
        arrivals.append(record.stats()[stream["label"]].first_arrival)
    # Every packet the new forks sent reached the second SRS.
    assert sum(s["stats"]["packets"] for s in second["streams"]) == sum(
        s.packets_sent for s in stats.values()
    )
    # The gap: from the kill to the first packet the second SRS recorded (the first SRS had
    # everything up to the kill, give or take one 20 ms packet).
    gap = max(a for a in arrivals if a is not None) - killed_at
    missing = sum(1 for at in sender.sent_at if killed_at <= at < killed_at + gap)
    bound = (0.5 if transport != "udp" else ATTEMPT_TIMEOUT + 0.6) + 0.3
    assert gap < bound, gap
    print(
        f"\n{transport}{' srtp' if secure else ''} workers={workers}: detected {detection * 1000:.0f} ms "
        f"after the kill ({lost.status} {lost.reason}); new session "
        f"{recovered.interrupted_for * 1000:.0f} ms later; "
        f"recording gap {gap * 1000:.0f} ms ({missing} packets per stream)"
    )


# --- failover at start, and what the callbacks say -------------------------------------------------


class _Refusing(asyncio.DatagramProtocol):
    """A UDP "SRS" that answers every INVITE 503 with Retry-After (an ACK needs no answer)."""

    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        message = parse_message(data)
        if isinstance(message, Request) and message.method == "INVITE":
            response = response_to(message, 503, "Service Unavailable", to_tag="refuser")
            response.headers.add("Retry-After", "120")
            self.transport.sendto(bytes(response), addr)


async def test_silent_refusing_and_untrusted_srss_fail_over_and_callbacks_say_so(tmp_path: Path) -> None:
    stranger = make_pki(tmp_path, "stranger")  # a CA nobody told the SRC to trust
    loop = asyncio.get_running_loop()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    refusing, _ = await loop.create_datagram_endpoint(_Refusing, local_addr=("127.0.0.1", 0))
    untrusted_tls = TlsConfig(certfile=stranger.server_cert, keyfile=stranger.server_key)
    untrusted = MiniSrs(listen=ListenSpec("tls", "127.0.0.1", 0), tls=untrusted_tls)
    try:
        async with untrusted:
            srs: list[str] = []

            def four(good: MiniSrs) -> dict[str, Connector]:
                srs.extend(
                    [
                        f"sip:srs@127.0.0.1:{silent.getsockname()[1]};transport=udp",
                        f"sip:srs@127.0.0.1:{refusing.get_extra_info('sockname')[1]};transport=udp",
                        untrusted.uri(),
                        good.uri(),
                    ]
                )
                return {"main": connector_for("main", srs, attempt_timeout=ATTEMPT_TIMEOUT)}

            # The engine has no TLS settings at all: certificates are verified against the
            # system's CAs by default, and the stranger's is not among them.
            async with callback_sink() as sink, running_api(connectors=four) as api:
                call = await api.new_call()
                created = await api.new_recording(call["call_id"], status_callback=sink.url)
                events = [e.json() for e in await sink.until("recording.started", timeout=10)]
                body = await api.wait_status(call["call_id"], created["sid"], "in-progress")
    finally:
        silent.close()
        refusing.close()
    assert [e["event"] for e in events] == ["recording.attempt-failed"] * 3 + ["recording.started"]
    failed = events[:3]
    assert [(e["srs"], e["sip_status"], e["attempt"]) for e in failed] == [
        (srs[0], 408, 1),
        (srs[1], 503, 2),
        (srs[2], 503, 3),
    ]
    assert failed[1]["retry_after"] == 120 and "retry_after" not in failed[0]
    assert "TLS certificate verification failed" in failed[2]["reason"], failed[2]
    assert events[3]["srs"] == srs[3]
    assert [(a["attempt"], a["sip_status"]) for a in body["attempts"]] == [
        (1, 408),
        (2, 503),
        (3, 503),
        (4, 200),
    ]
    assert untrusted.invites == []  # nothing was said over the connection we did not trust
