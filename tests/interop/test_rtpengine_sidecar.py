"""The rtpengine recipe end to end: rtpengine forks a relayed call to ``siprec-src serve``.

A real rtpengine (userspace, ``--table=-1``) relays a two-party call between two UDP sockets
playing the caller and the callee. The test, acting as the controller a Kamailio or OpenSIPS
deployment would have, drives the recipe of docs/rtpengine.md: ``subscribe request`` for both
legs, ``POST /v1/calls`` on the sidecar with each leg's source pinned to the port rtpengine's
subscribe offer names, ``subscribe answer`` pointing each m-line at its tap port, a
``both_tracks`` recording toward the reference SRS, then unsubscribe, ``DELETE`` and
rtpengine's ``delete``. The sidecar runs in process from configs/rtpengine-sidecar.toml (API,
SIP port and SRS URI swapped for test ones; one media worker process).

Covers: the relayed call keeps flowing both ways before, during and after the fork; a stray
sender is refused by the pinned tap (counted as ``rejected``, never recorded); the SRS gets two
WAV files, the one whose metadata names the caller holds the caller's 440 Hz tone and the
callee's holds 1250 Hz, with as many packets as were sent while recording; ``unsubscribe``
stops the copies and not the call; ``delete`` makes rtpengine forget the call and stop relaying;
the shipped config passes ``siprec-src check-config``.

Not covered: SRTP on the rtpengine -> sidecar hop (the REST API has no tap SRTP keys; the
SRS hop's SRTP is tested in tests/srs/test_server.py), Kamailio or OpenSIPS themselves,
rtpengine's kernel forwarding, RTCP, IPv6.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import tomllib
import wave
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aiohttp
import numpy as np
import pytest

from benchmarks.rtpengine import (
    AsyncNgClient,
    NgError,
    RtpEngine,
    parse_sdp,
    subscribe_answer_request,
    subscribe_answer_sdp,
    subscribe_request,
)
from siprec_src.app import serve
from siprec_src.config import check_main, parse_config
from siprec_src.media.rtp import RtpPacket
from siprec_src.media.spec import Leg
from siprec_src.signaling.transport import ListenSpec
from siprec_src.srs.plot import dominant_frequency
from siprec_src.srs.server import SessionRecord, SrsServer
from siprec_src.synthetic import TONES, SyntheticLeg, play

pytestmark = pytest.mark.interop

CONFIG_FILE = Path(__file__).resolve().parents[2] / "configs" / "rtpengine-sidecar.toml"
TOKEN = tomllib.loads(CONFIG_FILE.read_text())["api"]["auth"]["tokens"][0]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONNECTOR = "recorder"

# What Kamailio would hand the controller: the SIP Call-ID ($ci), From-tag ($ft), To-tag ($tt).
CALL_ID = "a84b4c76e66710@pc33.example.com"
CALLER_TAG = "1928301774"
CALLEE_TAG = "a6c85cf"
SUBSCRIPTION_TAG = "siprec-src"
CALLER = {"aor": "sip:+15551230001@example.com", "name": "Alice"}
CALLEE = {"aor": "sip:+15557654321@example.com", "name": "Bob"}

RELAY_SECONDS = 0.2  # before the fork: the plain relayed call
RECORD_SECONDS = 1.5  # while recording
AFTER_SECONDS = 0.1  # after unsubscribe, and after delete
TOLERANCE = 2  # loopback UDP through a userspace relay and a worker: a couple of drops, never extras
STRAY_PACKETS = 5


def _sidecar_config_text(srs_uri: str) -> str:
    """configs/rtpengine-sidecar.toml with the API and SIP on free ports and the test's SRS."""
    text = CONFIG_FILE.read_text()
    for pattern, replacement in (
        (r"(?m)^port = 8080\b", "port = 0"),
        (r"(?m)^listen = \[.*\]$", 'listen = ["udp:127.0.0.1:0"]'),
        (r'(?m)^srs = \["sip:srs@127\.0\.0\.1:5080"\]$', f'srs = ["{srs_uri}"]'),
        (r'(?m)^level = "info"$', 'level = "warning"'),
    ):
        text, count = re.subn(pattern, replacement, text)
        assert count == 1, f"configs/rtpengine-sidecar.toml no longer has one line matching {pattern}"
    return text


def _hostport(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


def _address(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return (host, int(port))


class Phone(asyncio.DatagramProtocol):
    """One end of the relayed call: sends its leg's RTP to rtpengine, keeps what rtpengine relays."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received: list[tuple[RtpPacket, tuple[str, int]]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((RtpPacket.parse(data), addr))

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return (host, port)

    def send(self, packet: bytes, target: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(packet, target)

    def from_ssrc(self, ssrc: int) -> int:
        return sum(1 for packet, _ in self.received if packet.ssrc == ssrc)


async def _phone() -> Phone:
    loop = asyncio.get_running_loop()
    _, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    return phone


@asynccontextmanager
async def _sidecar(config_text: str) -> AsyncIterator[str]:
    """``siprec-src serve`` in process; yields its API URL; stops it and checks a clean exit."""
    stop = asyncio.Event()
    urls: list[str] = []
    task = asyncio.create_task(
        serve(parse_config(config_text, file=str(CONFIG_FILE)), stop=stop, ready=urls.append)
    )
    await _settle(lambda: bool(urls) or task.done(), 15)
    assert urls, f"serve exited with {task.result()} before listening"
    try:
        yield urls[0]
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 15) == 0


async def _settle(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def _api(
    http: aiohttp.ClientSession, method: str, url: str, body: dict[str, Any] | None = None, status: int = 200
) -> Any:
    async with http.request(method, url, json=body, headers=AUTH) as response:
        text = await response.text()
        assert response.status == status, text
        return json.loads(text) if text else None


async def _poll(
    http: aiohttp.ClientSession, url: str, done: Callable[[Any], bool], timeout: float = 5.0
) -> Any:
    """GET ``url`` until ``done(resource)``; the last resource."""
    deadline = time.monotonic() + timeout
    while True:
        resource = await _api(http, "GET", url)
        if done(resource) or time.monotonic() > deadline:
            return resource
        await asyncio.sleep(0.02)


def _wav(path: Path) -> tuple[np.ndarray[Any, Any], int]:
    with wave.open(str(path), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth()) == (1, 2)
        rate = reader.getframerate()
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    return samples, rate


def _stream_of(document: dict[str, Any], aor: str) -> dict[str, Any]:
    """The one recorded stream whose metadata says it carries ``aor``'s voice."""
    streams = [s for s in document["streams"] if [p["aor"] for p in s["voice_of"]] == [aor]]
    assert len(streams) == 1, document["streams"]
    stream: dict[str, Any] = streams[0]
    return stream


async def test_rtpengine_forks_a_relayed_call_to_the_sidecar_which_records_it(tmp_path: Path) -> None:
    with RtpEngine(log_level=6) as engine:
        async with (
            SrsServer([ListenSpec("udp", "127.0.0.1", 0)], tmp_path) as srs,
            _sidecar(_sidecar_config_text(srs.uri())) as api,
            aiohttp.ClientSession() as http,
            await AsyncNgClient.connect(engine.ng_address) as ng,
        ):
            record = await _run_recipe(engine, srs, api, http, ng)
        assert engine.process is not None and engine.process.poll() is None, engine.log_tail()
    _check_recording(record)


async def _run_recipe(
    engine: RtpEngine, srs: SrsServer, api: str, http: aiohttp.ClientSession, ng: AsyncNgClient
) -> SessionRecord:
    caller, callee, stray = await _phone(), await _phone(), await _phone()
    try:
        # The caller's voice is the inbound leg's tone (440 Hz), the callee's the outbound one.
        caller_leg, callee_leg = SyntheticLeg(Leg.INBOUND), SyntheticLeg(Leg.OUTBOUND)

        # 0. The call, anchored on rtpengine as rtpengine_manage() would do it: offer + answer.
        call = await ng.start_call(
            CALL_ID, caller.address, callee.address, caller_tag=CALLER_TAG, callee_tag=CALLEE_TAG
        )
        targets = {Leg.INBOUND: call.caller_target, Leg.OUTBOUND: call.callee_target}
        phones = {Leg.INBOUND: caller, Leg.OUTBOUND: callee}

        def through_rtpengine(leg: Leg, packet: bytes) -> None:
            phones[leg].send(packet, targets[leg])

        relayed = await play([caller_leg, callee_leg], through_rtpengine, RELAY_SECONDS)
        await _settle(lambda: callee.from_ssrc(caller_leg.ssrc) >= relayed - TOLERANCE)
        await _settle(lambda: caller.from_ssrc(callee_leg.ssrc) >= relayed - TOLERANCE)

        # 1. subscribe request: rtpengine offers one sendonly m-line per from-tag, in that order,
        #    each on the port it will send that leg's copy from.
        #    The controller names the subscription (to-tag) so it need not remember rtpengine's.
        offer_reply = await ng.request(
            subscribe_request(CALL_ID, [CALLER_TAG, CALLEE_TAG], to_tag=SUBSCRIPTION_TAG)
        )
        assert offer_reply["from-tags"] == [CALLER_TAG, CALLEE_TAG]
        assert offer_reply["to-tag"] == SUBSCRIPTION_TAG
        to_tag = SUBSCRIPTION_TAG
        offer = parse_sdp(str(offer_reply["sdp"]))
        assert [m.direction for m in offer] == ["sendonly", "sendonly"]
        assert [m.protocol for m in offer] == ["RTP/AVP", "RTP/AVP"]
        caller_copy_from, callee_copy_from = (m.endpoint for m in offer)
        assert all(
            engine.port_min <= port <= engine.port_max for _, port in (caller_copy_from, callee_copy_from)
        )

        # 2. The call on the sidecar, each tap pinned to the port rtpengine sends that copy from.
        opened = await _api(
            http,
            "POST",
            f"{api}/v1/calls",
            {
                "call_id": CALL_ID,
                "from": CALLER,
                "to": CALLEE,
                "codec": "PCMU",
                "legs": {
                    "inbound": {"source": _hostport(caller_copy_from)},
                    "outbound": {"source": _hostport(callee_copy_from)},
                },
            },
            status=201,
        )
        call_url = f"{api}/v1/calls/{CALL_ID}"
        legs = opened["legs"]
        assert legs["inbound"]["source"] == _hostport(caller_copy_from)
        assert legs["outbound"]["source"] == _hostport(callee_copy_from)
        taps = {leg: _address(legs[leg]["rtp"]) for leg in ("inbound", "outbound")}

        # A stray sender that gets to the tap first is refused, not latched.
        for _ in range(STRAY_PACKETS):
            stray.send(SyntheticLeg(Leg.OUTBOUND).next_packet(), taps["inbound"])
        seen = await _poll(http, call_url, lambda c: c["legs"]["inbound"]["rejected"] >= STRAY_PACKETS)
        assert (seen["legs"]["inbound"]["rejected"], seen["legs"]["inbound"]["packets"]) == (STRAY_PACKETS, 0)

        # 3. subscribe answer: recvonly, m-line i at tap i. From now on rtpengine sends the copies.
        answer_sdp, keys = subscribe_answer_sdp(offer, [taps["inbound"], taps["outbound"]])
        assert keys == ()
        await ng.request(subscribe_answer_request(CALL_ID, to_tag, answer_sdp))
        subscription = (await ng.query(CALL_ID))["tags"][to_tag]["medias"]
        assert [m["streams"][0]["endpoint"]["port"] for m in subscription] == [
            taps["inbound"][1],
            taps["outbound"][1],
        ]

        # 4. Record both tracks on the SRS of the connector.
        started = await _api(
            http,
            "POST",
            f"{call_url}/recordings",
            {"connector": CONNECTOR, "track": "both_tracks", "name": "rtpengine"},
            status=201,
        )
        recording_url = f"{call_url}/recordings/{started['sid']}"
        recording = await _poll(http, recording_url, lambda r: r["status"] != "starting")
        assert recording["status"] == "in-progress", recording

        # 5. The call goes on: each side talks through rtpengine, which copies each leg to its tap.
        before = (callee.from_ssrc(caller_leg.ssrc), caller.from_ssrc(callee_leg.ssrc))
        sent = await play([caller_leg, callee_leg], through_rtpengine, RECORD_SECONDS)
        (live,) = srs.sessions
        await _settle(
            lambda: (
                all(s.packets >= sent - TOLERANCE for s in live.stats().values()) and len(live.stats()) == 2
            )
        )
        await _settle(lambda: callee.from_ssrc(caller_leg.ssrc) >= before[0] + sent - TOLERANCE)
        await _settle(lambda: caller.from_ssrc(callee_leg.ssrc) >= before[1] + sent - TOLERANCE)
        assert callee.from_ssrc(caller_leg.ssrc) - before[0] <= sent
        assert {source for _, source in callee.received} == {call.callee_target}  # relayed, not copied

        tapped = await _api(http, "GET", call_url)
        for leg in ("inbound", "outbound"):
            assert sent - TOLERANCE <= tapped["legs"][leg]["packets"] <= sent, tapped["legs"]
            assert tapped["legs"][leg]["rejected"] == (STRAY_PACKETS if leg == "inbound" else 0)
        recording = await _api(http, "GET", recording_url)
        assert [(s["label"], s["leg"]) for s in recording["streams"]] == [("1", "inbound"), ("2", "outbound")]
        for stream in recording["streams"]:
            assert sent - TOLERANCE <= stream["packets"] <= sent, recording["streams"]

        # 6. Stop the recording (BYE to the SRS); the SRS finishes the files.
        stopped = await _api(http, "POST", recording_url, {"status": "stopped"})
        assert stopped["status"] == "stopped", stopped  # answered once the SRS took the BYE
        record = await srs.next_ended(timeout=10)
        assert record is live

        # 7. unsubscribe: the copies stop, the call does not.
        await ng.unsubscribe(CALL_ID, to_tag)
        tapped_before = await _api(http, "GET", call_url)
        before = (callee.from_ssrc(caller_leg.ssrc), caller.from_ssrc(callee_leg.ssrc))
        after = await play([caller_leg, callee_leg], through_rtpengine, AFTER_SECONDS)
        await _settle(lambda: callee.from_ssrc(caller_leg.ssrc) >= before[0] + after - TOLERANCE)
        await _settle(lambda: caller.from_ssrc(callee_leg.ssrc) >= before[1] + after - TOLERANCE)
        await asyncio.sleep(0.1)
        tapped_after = await _api(http, "GET", call_url)
        for leg in ("inbound", "outbound"):
            assert tapped_after["legs"][leg]["packets"] == tapped_before["legs"][leg]["packets"]

        # 8. End of call: DELETE on the sidecar closes the taps; delete on rtpengine forgets it.
        await _api(http, "DELETE", call_url, status=204)
        await _api(http, "GET", call_url, status=404)
        await ng.delete(CALL_ID)
        with pytest.raises(NgError, match="Unknown call-id"):
            await ng.query(CALL_ID)
        before = (callee.from_ssrc(caller_leg.ssrc), caller.from_ssrc(callee_leg.ssrc))
        await play([caller_leg, callee_leg], through_rtpengine, AFTER_SECONDS)
        await asyncio.sleep(0.2)
        assert (callee.from_ssrc(caller_leg.ssrc), caller.from_ssrc(callee_leg.ssrc)) == before
        return record
    finally:
        for phone in (caller, callee, stray):
            if phone.transport is not None:
                phone.transport.close()


def _check_recording(record: SessionRecord) -> None:
    document = json.loads(record.json_path.read_text())
    assert document["end_reason"] == "bye-from-src"
    assert len(document["streams"]) == 2
    sent = round(RECORD_SECONDS * 50)
    for party, leg in ((CALLER, Leg.INBOUND), (CALLEE, Leg.OUTBOUND)):
        stream = _stream_of(document, party["aor"])
        assert [p["name"] for p in stream["voice_of"]] == [party["name"]]
        samples, rate = _wav(record.directory / stream["file"])
        assert rate == 8000
        assert samples.size / rate == pytest.approx(RECORD_SECONDS, abs=0.1), stream["label"]
        assert dominant_frequency(samples, rate) == pytest.approx(TONES[leg], abs=5), stream["label"]
        stats = stream["stats"]
        assert sent - TOLERANCE <= stats["packets"] <= sent, stats
        assert stats["duplicates"] == 0
    assert {s["label"] for s in document["streams"]} == {"1", "2"}
    assert len(list(record.directory.glob("*.wav"))) == 2


def test_shipped_config_passes_check_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_main(argparse.Namespace(file=str(CONFIG_FILE))) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{CONFIG_FILE}: ok (1 connector"), out
    assert "media ports 20000-29999 (1 worker)" in out
    # The test above runs this file; what it swaps must still be a valid config.
    config = parse_config(_sidecar_config_text("sip:srs@127.0.0.1:5999"))
    assert config.engine.media.workers == 1
