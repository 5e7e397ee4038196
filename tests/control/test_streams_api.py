"""WebSocket streams driven through the sidecar's API shapes, on real loopback sockets.

The whole HTTP application (``build_app``: native, Plivo XML, Twilio, Telnyx) runs on
127.0.0.1 with a real ``Engine``, the in-test SRS (``tests/recording/minisrs.py``) for the
SIPREC recordings streams share the call with, and WebSocket services from
``tests/recording/wsserver.py`` (plain, and TLS with a test CA that ``StreamSettings(ca=...)``
trusts). RTP is sent to the call's tap ports as a PBX would; status callbacks go through the
real ``CallbackQueue`` to a local receiver and their signatures are checked with the verifiers
the receivers would use (``verify_hmac_sha256_signature``, twilio's ``RequestValidator``).

Covers: the native ``/v1/calls/{id}/streams`` resource in both wire formats (start message,
media per track, stats, stop by name and by sid, signed POST and GET callbacks, ``wss://``
through the configured CA, the call resource and metrics); a service that closes
(``stream.dropped`` with the error); bidirectional audio from the service reaching the call's
``playback`` address, with ``stream.played``; every refusal (fifth stream mixing SIPREC and
WebSocket, duplicate names across kinds, bad URL scheme, bad extra headers, bidirectional with
the outbound track, no playback, a second bidirectional stream, fields of the other format,
unknown stream); TwiML ``<Start>/<Stop><Stream>`` and ``<Connect><Stream>`` written by
``twilio.twiml.voice_response`` and sent with the official client, the Twilio Streams REST
resource through the official client, Twilio stream callbacks (``stream-started``,
``stream-stopped``, ``stream-error``) and the TwiML refusals and roll-back. Plivo XML:
test_plivo.py. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import Connect, Start, Stop, VoiceResponse

from siprec_src.config import ConfigErrors, parse_config
from siprec_src.control.callbacks import CallbackQueue, verify_hmac_sha256_signature
from siprec_src.control.http import METRICS, build_app, register_callback_metrics
from siprec_src.control.metrics import Registry
from siprec_src.control.settings import ApiCredentials, CallbackSettings, ControlSettings
from siprec_src.control.sidecar import Sidecar, StreamSettings
from siprec_src.media.g711 import ulaw_decode, ulaw_encode
from siprec_src.media.rtp import RtpPacket
from siprec_src.media.spec import Leg
from siprec_src.recording.connector import connector_for
from siprec_src.recording.engine import Engine, EngineConfig
from siprec_src.sdp.siprec import PCMA, PCMU
from siprec_src.synthetic import SyntheticLeg
from tests.control.serving import serve
from tests.pki import make_pki
from tests.recording.minisrs import MiniSrs
from tests.recording.wsserver import WsServer

TOKEN = "stream-api-token-0123456789"
SECRET = "stream-callback-secret"
ACCOUNT = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "e" * 32
ALICE = {"aor": "sip:+15551230001@pbx.example.com", "name": "Alice"}
BOB = {"aor": "sip:agent-7@pbx.example.com", "name": "Agent 7"}
TIMEOUT = 5.0


# --- the world -----------------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    params: dict[str, str]  # the form fields of a POST, or the query of a GET

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Sink:
    """A local callback receiver: every request, in order."""

    url: str = ""
    received: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)

    async def next(self, timeout: float = TIMEOUT) -> Received:
        async with asyncio.timeout(timeout):
            return await self.received.get()

    def empty(self) -> bool:
        return self.received.empty()


@dataclass
class World:
    base: str
    http: aiohttp.ClientSession
    sidecar: Sidecar
    engine: Engine
    srs: MiniSrs
    ws: WsServer  # ws://
    wss: WsServer  # wss://, certificate from the test CA the sidecar's [streams] ca trusts
    sink: Sink
    app: web.Application
    registry: Registry

    async def native(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, Any]:
        sent = {"Authorization": f"Bearer {TOKEN}", **(headers or {})}
        kwargs: dict[str, Any] = {"headers": sent}
        if data is not None:
            kwargs["data"] = data
        elif body is not None:
            kwargs["json"] = body
        async with asyncio.timeout(TIMEOUT + 5):
            async with self.http.request(method, self.base + path, **kwargs) as response:
                raw = await response.read()
                parsed = json.loads(raw) if response.content_type == "application/json" else raw
                return response.status, parsed, response.headers

    async def new_call(self, call_id: str, **extra: Any) -> dict[str, Any]:
        status, body, _ = await self.native(
            "POST", "/v1/calls", {"call_id": call_id, "from": ALICE, "to": BOB, **extra}
        )
        assert status == 201, body
        return dict(body)

    async def new_stream(self, call_id: str, **body: Any) -> dict[str, Any]:
        status, answer, headers = await self.native("POST", f"/v1/calls/{call_id}/streams", body)
        assert status == 201, answer
        assert headers["Location"] == f"/v1/calls/{call_id}/streams/{answer['sid']}"
        return dict(answer)

    async def stream(self, call_id: str, sid_or_name: str) -> dict[str, Any]:
        status, body, _ = await self.native("GET", f"/v1/calls/{call_id}/streams/{sid_or_name}")
        assert status == 200, body
        return dict(body)

    async def wait_stream(self, call_id: str, sid: str, status: str) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            while (body := await self.stream(call_id, sid))["status"] != status:
                await asyncio.sleep(0.01)
        return body

    def twilio(self) -> Client:
        client = Client(ACCOUNT, AUTH_TOKEN, http_client=TwilioHttpClient(timeout=TIMEOUT))
        client.api.base_url = self.base
        return client

    async def run(self, function: Callable[[], Any]) -> Any:
        """A synchronous helper-library call, in a thread, bounded."""
        async with asyncio.timeout(TIMEOUT + 5):
            return await asyncio.to_thread(function)

    def metric(self, text: str, line: str) -> float:
        found = re.search(rf"^{re.escape(line)} (\S+)$", text, re.MULTILINE)
        assert found is not None, line
        return float(found[1])


@asynccontextmanager
async def callback_sink() -> AsyncIterator[Sink]:
    sink = Sink()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
            params = dict(parse_qsl(body.decode(), keep_blank_values=True))
        elif request.method == "GET":
            params = dict(request.query)
        else:
            params = {}
        sink.received.put_nowait(
            Received(request.method, str(request.url), dict(request.headers), body, params)
        )
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/cb", receive)
    runner, base = await serve(app)
    sink.url = f"{base}/cb?tenant=7"
    try:
        yield sink
    finally:
        await runner.cleanup()


@asynccontextmanager
async def world(*, signing_secret: str | None = SECRET) -> AsyncIterator[World]:
    with tempfile.TemporaryDirectory() as directory:
        pki = make_pki(Path(directory), "streams-api")
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(pki.server_cert, pki.server_key)
        async with (
            MiniSrs() as srs,
            WsServer() as ws,
            WsServer(ssl_context=server_tls) as wss,
            callback_sink() as sink,
        ):
            connectors = {"main": connector_for("main", [srs.uri()], attempt_timeout=3.0)}
            async with Engine(EngineConfig(connectors=connectors)) as engine:
                callbacks = CallbackSettings(signing_secret=signing_secret, timeout=2.0, retries=0)
                queue = CallbackQueue(callbacks)
                await queue.start()
                settings = ControlSettings(
                    credentials=ApiCredentials(
                        tokens=(TOKEN,), twilio_account_sid=ACCOUNT, twilio_auth_token=AUTH_TOKEN
                    ),
                    callbacks=callbacks,
                )
                sidecar = Sidecar(
                    engine,
                    settings,
                    submit=queue.submit,
                    codecs={"PCMU": PCMU, "PCMA": PCMA},
                    streams=StreamSettings(ca=pki.ca, connect_timeout=2.0),
                )
                registry = Registry()
                app = build_app(sidecar, registry)
                register_callback_metrics(registry, queue)
                runner, base = await serve(app)
                try:
                    async with aiohttp.ClientSession() as http:
                        yield World(base, http, sidecar, engine, srs, ws, wss, sink, app, registry)
                    # No request may end in an unexpected exception (the 500 handler is a last resort).
                    assert app[METRICS].unhandled._only_child().value() == 0
                finally:
                    await sidecar.shutdown()
                    await runner.cleanup()
                    await queue.close(1.0)


def taps(call: dict[str, Any]) -> dict[Leg, tuple[str, int]]:
    found = {}
    for leg in (Leg.INBOUND, Leg.OUTBOUND):
        host, _, port = call["legs"][leg.value]["rtp"].rpartition(":")
        found[leg] = (host, int(port))
    return found


async def send_rtp(call: dict[str, Any], legs: tuple[Leg, ...], packets: int) -> None:
    """``packets`` 20 ms G.711 packets per leg to the call's tap ports, as a PBX would (quickly:
    the stream places frames by their RTP timestamps, not by when they arrive)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sources = {leg: SyntheticLeg(leg, call["codec"]) for leg in legs}
    addresses = taps(call)
    try:
        for _ in range(packets):
            for leg, source in sources.items():
                sock.sendto(source.next_packet(), addresses[leg])
            await asyncio.sleep(0.002)
    finally:
        sock.close()


def assert_error(status: int, body: Any, expected: int, code: str, field: str | None) -> None:
    assert status == expected, body
    assert body["error"]["code"] == code and body["error"]["field"] == field, body
    assert body["error"]["message"], body


def signed(received: Received) -> bool:
    """The native signature: over t.body for a POST, over the URL as requested for a GET."""
    header = received.headers["X-Siprec-Signature"]
    signed_bytes = received.body if received.method == "POST" else received.url.encode()
    return verify_hmac_sha256_signature(SECRET, header, signed_bytes, now=time.time())


def twilio_signed(received: Received) -> bool:
    signature = received.headers["X-Twilio-Signature"]
    params = received.params if received.method == "POST" else {}
    return bool(RequestValidator(AUTH_TOKEN).validate(received.url, params, signature))


# --- the native API ------------------------------------------------------------------------------


async def test_a_twilio_format_stream_end_to_end_with_signed_post_callbacks() -> None:
    async with world() as w:
        call = await w.new_call("call-1")
        stream = await w.new_stream(
            "call-1",
            url=w.ws.url("/media?tenant=7"),
            name="bot",
            track="both_tracks",
            parameters={"CustomerId": "42", "Agent": "O'Brien & Sons"},
            status_callback=w.sink.url,
        )
        sid = stream["sid"]
        assert re.fullmatch("MZ[0-9a-f]{32}", sid)
        assert stream["status"] == "starting" and stream["format"] == "twilio" and stream["name"] == "bot"
        assert stream["track"] == "both_tracks" and stream["content_type"] == "audio/x-mulaw;rate=8000"
        assert stream["bidirectional"] is False and stream["error"] is None

        started = await w.sink.next()
        assert started.method == "POST" and signed(started) and started.url.endswith("/cb?tenant=7")
        body = started.json()
        assert body.pop("timestamp").endswith("Z")
        assert body == {
            "event": "stream.started",
            "sid": sid,
            "call_id": "call-1",
            "name": "bot",
            "status": "in-progress",
            "format": "twilio",
            "url": w.ws.url("/media?tenant=7"),
        }

        connection = await w.ws.connection()
        assert connection.request.path_qs == "/media?tenant=7"
        await connection.wait_for(lambda: bool(connection.events("start")))
        start = connection.events("start")[0]["start"]
        assert start["streamSid"] == sid and start["callSid"] == "call-1"
        assert start["tracks"] == ["inbound", "outbound"]
        assert start["customParameters"] == {"CustomerId": "42", "Agent": "O'Brien & Sons"}

        await send_rtp(call, (Leg.INBOUND, Leg.OUTBOUND), 10)
        await connection.wait_for(lambda: len(connection.events("media")) == 20)
        tracks = [m["media"]["track"] for m in connection.events("media")]
        assert tracks.count("inbound") == 10 and tracks.count("outbound") == 10
        now = await w.stream("call-1", "bot")
        assert now["status"] == "in-progress" and now["started_at"] is not None
        assert now["stats"]["packets_received"] == 20 and now["stats"]["frames_sent"] == 20

        status, call_now, _ = await w.native("GET", "/v1/calls/call-1")
        assert status == 200 and [s["sid"] for s in call_now["streams"]] == [sid]
        assert call_now["playback"] is None

        status, stopped, _ = await w.native("POST", "/v1/calls/call-1/streams/bot", {"status": "stopped"})
        assert status == 200 and stopped["status"] == "stopped" and stopped["sid"] == sid, stopped
        await connection.wait_closed()
        assert connection.events("stop")[0]["stop"]["callSid"] == "call-1"
        assert connection.close_code == 1000
        ended = (await w.sink.next()).json()
        assert ended["event"] == "stream.stopped" and ended["status"] == "stopped"
        assert ended["reason"] == "stopped" and ended["frames_dropped"] == 0

        # Stopping again answers the same; the list keeps ended streams.
        status, again, _ = await w.native("POST", f"/v1/calls/call-1/streams/{sid}", {"status": "stopped"})
        assert status == 200 and again["status"] == "stopped"
        status, listed, _ = await w.native("GET", "/v1/calls/call-1/streams")
        assert status == 200 and [s["status"] for s in listed["streams"]] == ["stopped"]

        _, raw, _ = await w.native("GET", "/metrics")
        text = raw.decode()
        assert w.metric(text, "siprec_websocket_streams_started_total") == 1
        assert w.metric(text, 'siprec_websocket_streams_ended_total{outcome="stopped"}') == 1
        assert w.metric(text, "siprec_websocket_frames_sent_total") == 20
        assert w.metric(text, "siprec_websocket_streams_active") == 0


async def test_a_plivo_format_stream_over_wss_with_the_configured_ca_and_get_callbacks() -> None:
    async with world() as w:
        call = await w.new_call("call-2", codec="PCMA")
        stream = await w.new_stream(
            "call-2",
            url=w.wss.url(host="localhost"),
            format="plivo",
            content_type="audio/x-l16;rate=16000",
            extra_headers="tenant=7,plan=gold",
            status_callback=w.sink.url,
            status_callback_method="GET",
        )
        sid = stream["sid"]
        assert re.fullmatch("[0-9a-f-]{36}", sid) and stream["name"] is None
        assert stream["format"] == "plivo" and stream["track"] == "inbound_track"
        assert stream["content_type"] == "audio/x-l16;rate=16000"

        started = await w.sink.next()
        assert started.method == "GET" and signed(started)
        assert started.params["tenant"] == "7"  # the URL's own query is kept
        assert started.params["event"] == "stream.started" and started.params["sid"] == sid
        assert started.params["format"] == "plivo" and "name" not in started.params  # null: left out

        connection = await w.wss.connection()
        assert connection.request.secure
        await connection.wait_for(lambda: bool(connection.messages))
        start = connection.messages[0]
        assert start["event"] == "start" and start["extra_headers"] == "tenant=7,plan=gold"
        assert start["start"]["streamId"] == sid and start["start"]["callId"] == "call-2"
        assert start["start"]["mediaFormat"] == {"encoding": "audio/x-l16", "sampleRate": 16000}

        await send_rtp(call, (Leg.INBOUND,), 5)
        await connection.wait_for(lambda: len(connection.events("media")) == 5)
        payloads = [m["media"]["payload"] for m in connection.events("media")]
        assert all(len(p) == len("A" * 856) for p in payloads)  # 640 bytes of L16 in base64

        status, stopped, _ = await w.native("POST", f"/v1/calls/call-2/streams/{sid}", {"status": "stopped"})
        assert status == 200 and stopped["status"] == "stopped"
        await connection.wait_closed()
        assert not connection.events("stop")  # Plivo has no stop message: the close says it
        ended = await w.sink.next()
        assert ended.params["event"] == "stream.stopped" and ended.params["reason"] == "stopped"
        assert signed(ended)


async def test_a_service_that_closes_ends_the_stream_with_stream_dropped() -> None:
    async with world() as w:
        await w.new_call("call-3")
        stream = await w.new_stream("call-3", url=w.ws.url(), status_callback=w.sink.url)
        assert (await w.sink.next()).json()["event"] == "stream.started"
        connection = await w.ws.connection()
        await connection.ws.close(code=1011)
        dropped = (await w.sink.next()).json()
        assert dropped["event"] == "stream.dropped" and dropped["status"] == "failed"
        assert dropped["error"].startswith("Connection disconnected with the remote service")
        assert "code 1011" in dropped["error"]
        body = await w.wait_stream("call-3", stream["sid"], "failed")
        assert body["error"] == dropped["error"]

        # A service nobody answers on: dropped at once, Plivo's other wording.
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        refused = await w.new_stream("call-3", url=f"ws://127.0.0.1:{port}/", status_callback=w.sink.url)
        dropped = (await w.sink.next()).json()
        assert dropped["sid"] == refused["sid"] and dropped["event"] == "stream.dropped"
        assert dropped["error"].startswith("Could not establish connection with the remote service")
        _, raw, _ = await w.native("GET", "/metrics")
        assert w.metric(raw.decode(), 'siprec_websocket_streams_ended_total{outcome="dropped"}') == 2


class RtpSink:
    """A UDP socket standing for the PBX's playback port."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.packets: list[RtpPacket] = []

    def drain(self) -> int:
        while True:
            try:
                self.packets.append(RtpPacket.parse(self.sock.recv(2048)))
            except BlockingIOError:
                return len(self.packets)


async def test_bidirectional_audio_reaches_the_playback_address_and_marks_are_reported() -> None:
    sink = RtpSink()
    try:
        async with world() as w:
            call = await w.new_call("call-4", playback=sink.address)
            assert call["playback"] == sink.address
            stream = await w.new_stream(
                "call-4", url=w.ws.url(), bidirectional=True, status_callback=w.sink.url
            )
            assert stream["bidirectional"] is True
            assert (await w.sink.next()).json()["event"] == "stream.started"
            connection = await w.ws.connection()
            await connection.wait_for(lambda: bool(connection.events("start")))
            # 200 ms of a 600 Hz tone in µ-law, as the service would send it
            samples = (np.sin(2 * np.pi * 600 * np.arange(1600) / 8000) * 8000).astype(np.int16)
            audio = ulaw_encode(samples).tobytes()
            payload = base64.b64encode(audio).decode()
            await connection.send(
                {"event": "media", "streamSid": stream["sid"], "media": {"payload": payload}}
            )
            await connection.send({"event": "mark", "streamSid": stream["sid"], "mark": {"name": "hello"}})
            await connection.wait_for(lambda: bool(connection.events("mark")))
            assert connection.events("mark")[0]["mark"]["name"] == "hello"
            async with asyncio.timeout(TIMEOUT):
                while sink.drain() < 10:
                    await asyncio.sleep(0.01)
            assert b"".join(p.payload for p in sink.packets) == audio  # µ-law call: as sent
            assert {p.payload_type for p in sink.packets} == {0}
            played = [(await w.sink.next()).json() for _ in range(2)]
            assert [(p["event"], p["mark"]) for p in played] == [
                ("stream.played", "hello"),
                ("stream.played", None),
            ]
            assert len(ulaw_decode(sink.packets[0].payload)) == 160
            body = await w.stream("call-4", stream["sid"])
            assert body["stats"]["frames_played"] == 10
    finally:
        sink.sock.close()


# --- refusals --------------------------------------------------------------------------------------


async def test_the_stream_budget_and_names_are_shared_with_siprec_recordings() -> None:
    async with world() as w:
        await w.new_call("call-5")
        status, recording, _ = await w.native(
            "POST", "/v1/calls/call-5/recordings", {"connector": "main", "name": "compliance"}
        )
        assert status == 201, recording  # both_tracks: 2 of the 4
        # A stream may not take the recording's name, nor a recording a stream's.
        status, body, _ = await w.native(
            "POST", "/v1/calls/call-5/streams", {"url": w.ws.url(), "name": "compliance"}
        )
        assert_error(status, body, 409, "duplicate_name", "name")
        assert "already has a recording named 'compliance'" in body["error"]["message"]
        await w.new_stream("call-5", url=w.ws.url(), name="bot", track="both_tracks")  # 4 of 4
        status, body, _ = await w.native(
            "POST",
            "/v1/calls/call-5/recordings",
            {"connector": "main", "name": "bot", "track": "inbound_track"},
        )
        assert_error(status, body, 409, "duplicate_name", "name")
        assert "already has a stream named 'bot'" in body["error"]["message"]
        # The fifth forked stream, whichever kind, is refused.
        status, body, _ = await w.native("POST", "/v1/calls/call-5/streams", {"url": w.ws.url()})
        assert_error(status, body, 409, "stream_limit", "track")
        assert "has 4 forked streams" in body["error"]["message"]
        status, body, _ = await w.native(
            "POST", "/v1/calls/call-5/recordings", {"connector": "main", "track": "outbound_track"}
        )
        assert_error(status, body, 409, "stream_limit", "track")
        # Stopping the stream gives its two back, and its name.
        status, _, _ = await w.native("POST", "/v1/calls/call-5/streams/bot", {"status": "stopped"})
        assert status == 200
        await w.new_stream("call-5", url=w.ws.url(), name="bot", format="twilio", track="both_tracks")
        await w.ws.connection(1)  # the second stream reached the service


@pytest.mark.parametrize(
    ("body", "status", "code", "field", "words"),
    [
        ({"url": "http://bot.example.com/media"}, 400, "invalid_value", "url", "ws:// or wss://"),
        ({"url": "ws://bot.example.com:99999/"}, 400, "invalid_url", "url", "not a valid URL"),
        (
            {"url": "ws://h/", "format": "plivo", "extra_headers": "a=1,b c=2"},
            400,
            "invalid_value",
            "extra_headers",
            "key=value",
        ),
        (
            {"url": "ws://h/", "format": "plivo", "extra_headers": "k=" + "v" * 511},
            400,
            "invalid_value",
            "extra_headers",
            "key=value",
        ),
        (
            {"url": "ws://h/", "bidirectional": True, "track": "outbound_track"},
            400,
            "invalid_track",
            "track",
            "inbound_track only",
        ),
        (
            {"url": "ws://h/", "format": "plivo", "bidirectional": True, "track": "both_tracks"},
            400,
            "invalid_track",
            "track",
            "bidirectional",
        ),
        ({"url": "ws://h/", "bidirectional": True}, 400, "no_playback", "bidirectional", "playback"),
        (
            {"url": "ws://h/", "content_type": "audio/x-mulaw;rate=8000"},
            400,
            "invalid_value",
            "content_type",
            "for format plivo",
        ),
        (
            {"url": "ws://h/", "format": "plivo", "name": "x"},
            400,
            "invalid_value",
            "name",
            "for format twilio",
        ),
        (
            {"url": "ws://h/", "format": "plivo", "stream_timeout": 0},
            400,
            "invalid_value",
            "stream_timeout",
            "positive",
        ),
        ({"url": "ws://h/", "track": "both"}, 400, "invalid_value", "track", "inbound_track"),
        (
            {"url": "ws://h/", "parameters": {"": "x"}},
            400,
            "invalid_value",
            "parameters.",
            "1-256 characters",
        ),
        ({"url": "ws://h/", "status_callback": "ftp://x/"}, 400, "invalid_value", "status_callback", "http"),
        ({"name": "x"}, 400, "missing_field", "url", "required"),
        ({"url": "ws://h/", "codec": "PCMU"}, 400, "unknown_field", "codec", "unknown field"),
    ],
)
async def test_bad_stream_requests_are_refused_naming_the_field(
    body: dict[str, Any], status: int, code: str, field: str, words: str
) -> None:
    async with world() as w:
        await w.new_call("call-6")
        answer_status, answer, _ = await w.native("POST", "/v1/calls/call-6/streams", body)
        assert_error(answer_status, answer, status, code, field)
        assert words in answer["error"]["message"], answer
        assert w.sidecar.call("call-6").streams == {}


async def test_one_bidirectional_stream_per_call_and_unknown_streams() -> None:
    async with world() as w:
        await w.new_call("call-7", playback="127.0.0.1:9")
        await w.new_stream("call-7", url=w.ws.url(), bidirectional=True)
        status, body, _ = await w.native(
            "POST", "/v1/calls/call-7/streams", {"url": w.ws.url(), "format": "plivo", "bidirectional": True}
        )
        assert_error(status, body, 409, "bidirectional_in_use", "bidirectional")
        status, body, _ = await w.native("GET", "/v1/calls/call-7/streams/MZnothing")
        assert_error(status, body, 404, "no_such_stream", "sid")
        status, body, _ = await w.native("POST", "/v1/calls/call-7/streams/MZnothing", {"status": "stopped"})
        assert_error(status, body, 404, "no_such_stream", "sid")
        status, body, _ = await w.native("POST", "/v1/calls/call-7/streams/MZnothing", {"status": "paused"})
        assert_error(status, body, 400, "invalid_value", "status")
        status, body, _ = await w.native("POST", "/v1/calls/nowhere/streams", {"url": w.ws.url()})
        assert_error(status, body, 404, "no_such_call", "call_id")
        # DELETE of the call ends its streams (the service sees the Twilio stop).
        status, _, _ = await w.native("DELETE", "/v1/calls/call-7")
        assert status == 204
        connection = await w.ws.connection()
        await connection.wait_closed()
        assert connection.events("stop")


# --- the Twilio shape: TwiML and the Streams resource ------------------------------------------------


async def test_twiml_start_and_stop_stream_from_the_helper_library_with_signed_callbacks() -> None:
    async with world() as w:
        call = await w.new_call(CALL_SID)
        client = w.twilio()
        response = VoiceResponse()
        start = Start()
        stream = start.stream(
            name="transcriber",
            url=w.ws.url("/twilio"),
            track="both_tracks",
            status_callback=w.sink.url,
            status_callback_method="POST",
        )
        stream.parameter(name="CustomerId", value="42")
        stream.parameter(name="Quote", value='"<&>"')
        response.append(start)
        updated = await w.run(lambda: client.calls(CALL_SID).update(twiml=response))
        assert updated.sid == CALL_SID and updated.status == "in-progress"

        started = await w.sink.next()
        assert started.method == "POST" and twilio_signed(started)
        sid = started.params["StreamSid"]
        assert started.params.pop("Timestamp").endswith("Z")
        assert started.params == {
            "AccountSid": ACCOUNT,
            "CallSid": CALL_SID,
            "StreamSid": sid,
            "StreamName": "transcriber",
            "StreamEvent": "stream-started",
        }
        connection = await w.ws.connection()
        await connection.wait_for(lambda: bool(connection.events("start")))
        begun = connection.events("start")[0]["start"]
        assert begun["accountSid"] == ACCOUNT and begun["callSid"] == CALL_SID and begun["streamSid"] == sid
        assert begun["customParameters"] == {"CustomerId": "42", "Quote": '"<&>"'}
        await send_rtp(call, (Leg.INBOUND, Leg.OUTBOUND), 3)
        await connection.wait_for(lambda: len(connection.events("media")) == 6)

        stop = VoiceResponse()
        stop_verb = Stop()
        stop_verb.stream(name="transcriber")
        stop.append(stop_verb)
        await w.run(lambda: client.calls(CALL_SID).update(twiml=stop))
        await connection.wait_closed()
        assert connection.events("stop")
        stopped = await w.sink.next()
        assert stopped.params["StreamEvent"] == "stream-stopped" and twilio_signed(stopped)
        assert (await w.stream(CALL_SID, sid))["status"] == "stopped"


async def test_connect_stream_is_bidirectional_and_must_come_last() -> None:
    sink = RtpSink()
    try:
        async with world() as w:
            await w.new_call(CALL_SID, playback=sink.address)
            response = VoiceResponse()
            connect = Connect()
            connect.stream(url=w.ws.url("/bot"), name="bot")
            response.append(connect)
            status, body = await twiml(w, str(response))
            assert status == 200, body
            stream = w.sidecar.call(CALL_SID).get_stream("bot")
            assert stream.bidirectional and stream.legs == (Leg.INBOUND,)
            await stream.wait_started(timeout=TIMEOUT)

            after = (
                '<Response><Connect><Stream url="ws://127.0.0.1:9/"/></Connect>'
                '<Start><Siprec connectorName="main"/></Start></Response>'
            )
            status, body = await twiml(w, after)
            assert (status, body["code"]) == (400, 12200) and "after <Connect><Stream>" in body["message"]
            outbound = (
                '<Response><Connect><Stream url="ws://127.0.0.1:9/" track="both_tracks"/>'
                "</Connect></Response>"
            )
            status, body = await twiml(w, outbound)
            assert (status, body["code"]) == (400, 31941) and "inbound_track only" in body["message"]
            action = '<Response><Connect action="https://x/"><Stream url="ws://h/"/></Connect></Response>'
            status, body = await twiml(w, action)
            assert (status, body["code"]) == (400, 12200) and "'action'" in body["message"]
            assert len(w.sidecar.call(CALL_SID).streams) == 1
    finally:
        sink.sock.close()


CALL_SID = "CA" + "fedcba9876543210" * 2


async def twiml(w: World, document: str) -> tuple[int, dict[str, Any]]:
    path = f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL_SID}.json"
    headers = {"Authorization": aiohttp.encode_basic_auth(ACCOUNT, AUTH_TOKEN)}
    async with w.http.post(w.base + path, data={"Twiml": document}, headers=headers) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("document", "code", "words"),
    [
        (
            '<Response><Start><Stream url="https://bot.example.com/"/></Start></Response>',
            11100,
            "ws:// or wss://",
        ),
        ('<Response><Start><Stream url="ws://h/" track="both"/></Start></Response>', 31941, "track 'both'"),
        (
            '<Response><Start><Stream url="ws://h/" audioFormat="x"/></Start></Response>',
            12200,
            "'audioFormat'",
        ),
        ('<Response><Start><Stream url="ws://h/" trak="x"/></Start></Response>', 12100, "'trak'"),
        ("<Response><Start><Stream/></Start></Response>", 12100, "needs the url"),
        ("<Response><Stop><Stream/></Stop></Response>", 12100, "needs the name of the stream"),
        ('<Response><Stop><Stream name="nobody"/></Stop></Response>', 20404, "no stream 'nobody'"),
        (
            '<Response><Start><Stream url="ws://h/"><Parameter name="a"/><Parameter name="a"/>'
            "</Stream></Start></Response>",
            400,
            "given twice",
        ),
        ("<Response><Connect><Room>r</Room></Connect></Response>", 12200, "<Connect><Room> is not supported"),
    ],
)
async def test_refused_stream_twiml_runs_nothing(document: str, code: int, words: str) -> None:
    async with world() as w:
        await w.new_call(CALL_SID)
        # The <Siprec> before it would run first; a refused document leaves nothing behind.
        text = document.replace(
            "<Response>", '<Response><Start><Siprec name="rec" connectorName="main"/></Start>', 1
        )
        status, body = await twiml(w, text)
        assert (status, body["code"]) == (404 if code == 20404 else 400, code), body
        assert words in body["message"], body
        call = w.sidecar.call(CALL_SID)
        assert all(r.session.state.terminal for r in call.recordings.values())
        assert call.streams == {} and w.ws.connections == []


async def test_a_failing_stream_rolls_back_what_the_document_started_and_sends_no_callback() -> None:
    async with world() as w:
        await w.new_call(CALL_SID)
        document = (
            f'<Response><Start><Stream name="first" url="{w.ws.url()}" statusCallback="{w.sink.url}"/>\n'
            f'<Siprec name="first" connectorName="main"/></Start></Response>'
        )
        status, body = await twiml(w, document)
        assert (
            status == 400
            and "TwiML line 2, <Siprec>" in body["message"]
            and "stream named 'first'" in body["message"]
        )
        stream = w.sidecar.call(CALL_SID).get_stream("first")
        await stream.wait_ended(timeout=TIMEOUT)
        assert stream.status in ("stopped", "failed") and w.sidecar.call(CALL_SID).recordings == {}
        await asyncio.sleep(0.2)
        assert w.sink.empty()  # the refused document's stream sent no callback


async def test_the_twilio_streams_resource_through_the_official_client() -> None:
    async with world() as w:
        await w.new_call(CALL_SID)
        client = w.twilio()
        created = await w.run(
            lambda: client.calls(CALL_SID).streams.create(
                url=w.ws.url("/rest"),
                name="rest-stream",
                track="inbound_track",
                status_callback=w.sink.url,
                status_callback_method="GET",
                parameter1_name="Customer",
                parameter1_value="42",
            )
        )
        assert created.sid.startswith("MZ") and created.name == "rest-stream"
        assert (created.account_sid, created.call_sid, created.status) == (ACCOUNT, CALL_SID, "in-progress")
        assert created.uri == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL_SID}/Streams/{created.sid}.json"
        started = await w.sink.next()
        assert started.method == "GET" and twilio_signed(started)
        assert (
            started.params["StreamEvent"] == "stream-started" and started.params["StreamSid"] == created.sid
        )
        connection = await w.ws.connection()
        await connection.wait_for(lambda: bool(connection.events("start")))
        assert connection.events("start")[0]["start"]["customParameters"] == {"Customer": "42"}

        stopped = await w.run(lambda: client.calls(CALL_SID).streams("rest-stream").update(status="stopped"))
        assert (stopped.sid, stopped.status) == (created.sid, "stopped")
        assert (await w.sink.next()).params["StreamEvent"] == "stream-stopped"

        # Refusals come back in Twilio's error shape through the library.
        with pytest.raises(TwilioRestException) as caught:
            await w.run(lambda: client.calls(CALL_SID).streams.create(url="http://not-a-websocket/"))
        assert caught.value.status == 400 and caught.value.code == 11100 and "Url" in caught.value.msg
        with pytest.raises(TwilioRestException) as caught:
            await w.run(lambda: client.calls(CALL_SID).streams("MZnothing").update(status="stopped"))
        assert caught.value.status == 404 and caught.value.code == 20404


async def test_twilio_stream_error_callback_says_why() -> None:
    async with world() as w:
        await w.new_call(CALL_SID)
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        document = (
            f'<Response><Start><Stream url="ws://127.0.0.1:{port}/" statusCallback="{w.sink.url}"/>'
            "</Start></Response>"
        )
        status, body = await twiml(w, document)
        assert status == 200, body
        error = await w.sink.next()
        assert twilio_signed(error) and error.params["StreamEvent"] == "stream-error"
        assert error.params["StreamError"].startswith(
            "Could not establish connection with the remote service"
        )
        assert error.params["StreamName"] == error.params["StreamSid"]  # unnamed: the SID


# --- configuration ---------------------------------------------------------------------------------


def test_the_streams_section_of_the_config(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, "config")
    auth = '[api.auth]\ntokens = ["t0123456789"]\n[callbacks]\nsigning_secret = "s1gning"\n'
    config = parse_config(
        auth + f'[streams]\nca = "{pki.ca}"\nqueue_frames = 50\nconnect_timeout = 2.5\n', file="x.toml"
    )
    assert config.streams == StreamSettings(ca=pki.ca, queue_frames=50, connect_timeout=2.5)
    context = config.streams.ssl_context()
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert parse_config(auth, file="x.toml").streams == StreamSettings()
    assert StreamSettings().ssl_context() is None  # aiohttp's default: the system trust store

    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    bad = auth + f'[streams]\nca = "{not_pem}"\nqueue_frames = 0\nconnect_timeout = 0\ncafile = "x"\n'
    with pytest.raises(ConfigErrors) as caught:
        parse_config(bad, file="x.toml")
    problems = {error.key: str(error) for error in caught.value.errors}
    assert set(problems) == {
        "streams.ca",
        "streams.queue_frames",
        "streams.connect_timeout",
        "streams.cafile",
    }
    assert "not a PEM file of CA certificates" in problems["streams.ca"]
    missing = auth + f'[streams]\nca = "{tmp_path / "absent.pem"}"\n'
    with pytest.raises(ConfigErrors, match="no such file"):
        parse_config(missing, file="x.toml")
