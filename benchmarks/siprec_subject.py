"""siprec_src as a media benchmark subject, set up the way a user runs it (issue 8).

An ``Engine`` with ``workers`` media processes, the sidecar's REST API on loopback in front of
it, and the stub SRS of ``stub_srs.py``: each call is opened with ``POST /v1/calls`` and
recorded with ``POST /v1/calls/{id}/recordings`` (both tracks, the connector ``bench``, plain
RTP over UDP signaling, or SRTP with SIP over TLS), exactly as a PBX integration does; the SRS
answers so each fork goes to the load generator's sink. Only the packets are measured: the
setup happens before the clock starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from benchmarks.report import ParamValue
from benchmarks.stub_srs import StubSrs
from siprec_src.control.http import build_app
from siprec_src.control.metrics import Registry
from siprec_src.control.settings import ApiCredentials, ControlSettings
from siprec_src.control.sidecar import Sidecar
from siprec_src.media.engine import MediaConfig
from siprec_src.media.spec import Leg
from siprec_src.pki import make_pki
from siprec_src.recording.connector import connector_for
from siprec_src.recording.engine import Engine, EngineConfig
from siprec_src.sdp.siprec import PCMU
from siprec_src.signaling.transport import ListenSpec, TlsConfig

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SETUP_CONCURRENCY = 32  # API requests in flight while the calls are set up


@contextlib.asynccontextmanager
async def sidecar_subject(
    *,
    host: str,
    calls: int,
    workers: int,
    srtp: bool,
    sink_base: int,
    port_range: tuple[int, int],
    cpus: list[int] | None,
) -> AsyncIterator[tuple[list[int], list[int], Any]]:
    """``(targets, worker pids, counters)``: stream ``i`` of the load (call ``i // 2``, leg
    ``i % 2``) goes to port ``targets[i]``; ``counters()`` sums the API's per-stream figures."""
    with tempfile.TemporaryDirectory(prefix="siprec-bench-") as scratch:
        tls = client_tls = None
        if srtp:
            pki = make_pki(Path(scratch), "bench")
            tls = TlsConfig(certfile=pki.server_cert, keyfile=pki.server_key, cafile=pki.ca)
            client_tls = TlsConfig(cafile=pki.ca)  # the SRC verifies the stub SRS's certificate
        srs = StubSrs(host, sink_base, tls=tls)
        await srs.start()
        connector = connector_for("bench", [srs.uri], secure=srtp, session_expires=0, attempt_timeout=30.0)
        listens = [ListenSpec("udp", host, 0), ListenSpec("tcp", host, 0)]
        config = EngineConfig(
            sip_listen=tuple(listens),
            tls=client_tls,
            media=MediaConfig(
                workers=workers, port_min=port_range[0], port_max=port_range[1], stream_timeout=3600.0
            ),
            media_host=host,
            connectors={"bench": connector},
        )
        engine = Engine(config)
        await engine.start()
        settings = ControlSettings(
            host=host,
            credentials=ApiCredentials(tokens=(TOKEN,)),
            max_calls=max(calls, 1) + 10,
            **_unlimited_rate(),
        )
        sidecar = Sidecar(engine, settings, codecs={"PCMU": PCMU})
        runner = web.AppRunner(build_app(sidecar, Registry()), shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        address = runner.addresses[0]
        url = f"http://{address[0]}:{address[1]}"
        try:
            pids = [pid for pid in engine.media.worker_pids if pid is not None]
            for index, pid in enumerate(pids):
                if cpus is not None:
                    os.sched_setaffinity(pid, {cpus[index % len(cpus)]})
            async with aiohttp.ClientSession(headers=AUTH) as client:
                targets = await _open_calls(client, url, calls)
                await _until_recording(engine, calls)

                async def counters() -> dict[str, ParamValue]:
                    totals = {"leg_received": 0, "forwarded": 0, "send_errors": 0}
                    for recording in list(engine.recordings.values()):
                        for stats in (await engine.fork_stats(recording)).values():
                            totals["forwarded"] += stats.packets_sent
                            totals["send_errors"] += stats.send_errors
                    for call in list(engine.calls.values()):
                        for leg in (Leg.INBOUND, Leg.OUTBOUND):
                            leg_stats = await engine.media.leg_stats(call.call_id, leg)
                            totals["leg_received"] += leg_stats.packets
                    return {**totals, "srs_answered": srs.answered, "srs_refused": srs.refused}

                yield targets, pids, counters
        finally:
            await sidecar.shutdown()
            await runner.cleanup()
            await engine.close()
            await srs.close()


def _unlimited_rate() -> dict[str, Any]:
    """The control API's rate limit, lifted: the setup opens thousands of calls at once."""
    names = ControlSettings.__dataclass_fields__
    limits: dict[str, Any] = {}
    if "rate_limit" in names:
        limits["rate_limit"] = 1_000_000.0
    if "rate_burst" in names:
        limits["rate_burst"] = 1_000_000
    return limits


async def _open_calls(client: aiohttp.ClientSession, url: str, calls: int) -> list[int]:
    targets = [0] * (2 * calls)
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(index: int) -> None:
        async with gate:
            body = {
                "call_id": f"bench-{index}",
                "from": {"aor": f"sip:+1555{index:07d}@pbx.example.com"},
                "to": {"aor": "sip:agent@pbx.example.com"},
            }
            async with client.post(f"{url}/v1/calls", json=body) as response:
                call = await response.json()
                if response.status != 201:
                    raise RuntimeError(f"POST /v1/calls: {response.status} {call}")
            for number, leg in enumerate(("inbound", "outbound")):
                targets[2 * index + number] = int(call["legs"][leg]["rtp"].rsplit(":", 1)[1])
            recording = {"connector": "bench", "track": "both_tracks", "params": {"Bench-Call": str(index)}}
            async with client.post(f"{url}/v1/calls/bench-{index}/recordings", json=recording) as response:
                created = await response.json()
                if response.status != 201:
                    raise RuntimeError(f"POST recordings: {response.status} {created}")

    await asyncio.gather(*(one(index) for index in range(calls)))
    return targets


async def _until_recording(engine: Engine, calls: int, timeout: float = 120.0) -> None:
    """Every recording answered and its forks started (``wait_started`` waits for the forks)."""
    async with asyncio.timeout(timeout):
        while len(engine.recordings) < calls:
            await asyncio.sleep(0.01)
        for recording in list(engine.recordings.values()):
            await recording.wait_started()
