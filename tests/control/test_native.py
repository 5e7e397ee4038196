"""The native /v1 API on a real aiohttp server on loopback, a real Engine and an in-test SRS.

Covers: a call recorded end to end (tap ports → SRS, sequence of status callbacks with valid
signatures, pause/resume/stop, DELETE), the answer not waiting for the SRS, failover made
visible (attempt-failed callbacks, the attempts list), GET callbacks, participants updates,
and every refusal with its status, code and the field it names. Not covered here: the
OpenAPI document and the fuzzing (test_http.py), the process (tests/test_serve.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from siprec_src.control.callbacks import CallbackQueue, verify_hmac_sha256_signature
from siprec_src.control.http import METRICS, build_app, register_callback_metrics
from siprec_src.control.metrics import Registry
from siprec_src.control.settings import ApiCredentials, CallbackSettings, ControlSettings
from siprec_src.control.sidecar import Sidecar
from siprec_src.media.spec import Leg
from siprec_src.recording.connector import Connector, connector_for
from siprec_src.recording.engine import Engine, EngineConfig
from siprec_src.sdp.siprec import PCMA, PCMU
from siprec_src.synthetic import SyntheticLeg
from tests.recording.minisrs import MiniSrs

TOKEN = "test-token-0123456789"
SECRET = "callback-signing-secret"
ALICE = {"aor": "sip:+15551230001@pbx.example.com", "name": "Alice O'Brien"}
BOB = {"aor": "sip:agent-7@pbx.example.com", "name": "Agent 7"}


@dataclass
class Api:
    url: str
    session: aiohttp.ClientSession
    sidecar: Sidecar
    registry: Registry
    srs: MiniSrs
    app: web.Application

    async def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        token: str | None = TOKEN,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        kwargs: dict[str, Any] = {"headers": sent}
        if data is not None:
            kwargs["data"] = data
        elif body is not None:
            kwargs["json"] = body
        async with asyncio.timeout(10):
            async with self.session.request(method, self.url + path, **kwargs) as response:
                raw = await response.read()
                parsed = json.loads(raw) if raw and response.content_type == "application/json" else raw
                return response.status, parsed, response.headers

    async def new_call(self, **extra: Any) -> dict[str, Any]:
        status, body, _ = await self.call("POST", "/v1/calls", {"from": ALICE, "to": BOB, **extra})
        assert status == 201, body
        return dict(body)

    async def new_recording(self, call_id: str, **extra: Any) -> dict[str, Any]:
        status, body, _ = await self.call(
            "POST", f"/v1/calls/{call_id}/recordings", {"connector": "main", **extra}
        )
        assert status == 201, body
        return dict(body)

    async def wait_status(self, call_id: str, sid: str, status: str, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                code, body, _ = await self.call("GET", f"/v1/calls/{call_id}/recordings/{sid}")
                assert code == 200, body
                if body["status"] == status:
                    return dict(body)
                await asyncio.sleep(0.02)


@asynccontextmanager
async def running_api(
    *,
    tokens: tuple[str, ...] = (TOKEN,),
    secret: str | None = SECRET,
    max_body_bytes: int = 64 * 1024,
    max_calls: int = 100,
    connectors: Callable[[MiniSrs], dict[str, Connector]] | None = None,
    send_callbacks: bool = True,
) -> AsyncIterator[Api]:
    async with MiniSrs() as srs:
        chosen = (
            connectors(srs)
            if connectors
            else {"main": connector_for("main", [srs.uri()], attempt_timeout=3.0, session_expires=90)}
        )
        engine = Engine(EngineConfig(connectors=chosen))
        await engine.start()
        callbacks = CallbackSettings(signing_secret=secret, timeout=2.0, retries=1, backoff=0.05)
        queue = CallbackQueue(callbacks)
        await queue.start()
        settings = ControlSettings(
            credentials=ApiCredentials(tokens=tokens),
            max_body_bytes=max_body_bytes,
            max_calls=max_calls,
            callbacks=callbacks,
        )
        submit = queue.submit if send_callbacks else None
        sidecar = Sidecar(engine, settings, submit=submit, codecs={"PCMU": PCMU, "PCMA": PCMA})
        registry = Registry()
        app = build_app(sidecar, registry)
        register_callback_metrics(registry, queue)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        session = aiohttp.ClientSession()
        try:
            yield Api(f"http://{host}:{port}", session, sidecar, registry, srs, app)
            # No request may end in an unexpected exception (the 500 handler is a last resort).
            assert app[METRICS].unhandled._only_child().value() == 0
        finally:
            await session.close()
            await sidecar.shutdown()
            await runner.cleanup()
            await queue.close(1.0)
            await engine.close()


@dataclass
class Received:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class CallbackSink:
    url: str
    received: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)

    async def next(self, timeout: float = 5.0) -> Received:
        async with asyncio.timeout(timeout):
            return await self.received.get()

    async def until(self, event: str, timeout: float = 5.0) -> list[Received]:
        """Every callback up to and including the first ``event``."""
        seen: list[Received] = []
        async with asyncio.timeout(timeout):
            while True:
                item = await self.received.get()
                seen.append(item)
                if _event_of(item) == event:
                    return seen


def _event_of(item: Received) -> str:
    if item.method == "GET":
        return str(aiohttp.helpers.URL(item.url).query["event"])
    return str(item.json()["event"])


@asynccontextmanager
async def callback_sink() -> AsyncIterator[CallbackSink]:
    sink = CallbackSink("")

    async def handle(request: web.Request) -> web.Response:
        sink.received.put_nowait(
            Received(request.method, str(request.url), dict(request.headers), await request.read())
        )
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/cb", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    sink.url = f"http://{host}:{port}/cb?tenant=7"
    try:
        yield sink
    finally:
        await runner.cleanup()


def assert_error(status: int, body: Any, expected: int, code: str, field: str | None = None) -> None:
    assert status == expected, body
    error = body["error"]
    assert error["status"] == expected and error["code"] == code, body
    assert error["field"] == field, body
    assert error["message"], body


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _send_rtp(
    sock: socket.socket, taps: dict[Leg, tuple[str, int]], packets: int, codec: str = "PCMU"
) -> None:
    legs = {leg: SyntheticLeg(leg, codec) for leg in taps}
    for _ in range(packets):
        for leg, tap in taps.items():
            sock.sendto(legs[leg].next_packet(), tap)
        await asyncio.sleep(0.002)


async def _settle(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


# --- a call recorded end to end ------------------------------------------------------------------------


async def test_a_call_is_recorded_end_to_end_with_signed_callbacks() -> None:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    source = f"127.0.0.1:{sender.getsockname()[1]}"
    try:
        async with running_api() as api, callback_sink() as sink:
            call = await api.new_call(
                call_id="call-1",
                codec="PCMA",
                sip_session_id="AB" * 16,
                legs={"inbound": {"source": source}, "outbound": {"source": source}},
            )
            assert call["call_id"] == "call-1" and call["codec"] == "PCMA" and call["recordings"] == []
            assert call["from"] == ALICE and call["to"] == BOB
            assert call["sip_session_id"] == "ab" * 16
            taps = {leg: _address(call["legs"][leg.value]["rtp"]) for leg in (Leg.INBOUND, Leg.OUTBOUND)}
            assert call["legs"]["inbound"]["source"] == source

            recording = await api.new_recording(
                "call-1", name="rec-1", params={"CustomerId": "42"}, status_callback=sink.url
            )
            sid = recording["sid"]
            assert recording["name"] == "rec-1" and recording["track"] == "both_tracks"
            assert recording["connector"] == "main"
            assert [s["label"] for s in recording["streams"]] == ["1", "2"]

            first = await sink.until("recording.started")
            started = first[-1].json()
            assert started["sid"] == sid and started["call_id"] == "call-1" and started["name"] == "rec-1"
            assert started["status"] == "in-progress" and started["sip_status"] == 200
            assert started["srs"] == api.srs.uri()
            # The signature covers t and the exact body; the query string of the URL is kept.
            header = first[-1].headers["X-Siprec-Signature"]
            assert verify_hmac_sha256_signature(SECRET, header, first[-1].body, now=time.time())
            assert not verify_hmac_sha256_signature("another", header, first[-1].body, now=time.time())
            assert first[-1].url.endswith("/cb?tenant=7")
            (invite,) = api.srs.invites
            assert invite.headers.get("X-CustomerId") == "42"

            await _send_rtp(sender, taps, 50, "PCMA")
            await _settle(
                lambda: len(api.srs.sinks) == 2 and all(len(s.packets) >= 50 for s in api.srs.sinks)
            )
            # The packets went out as PCMA (payload type 8) and the API counts them.
            assert {p.payload_type for s in api.srs.sinks for p in s.packets} == {8}
            body = await api.wait_status("call-1", sid, "in-progress")
            assert [s["packets"] for s in body["streams"]] == [50, 50]
            assert all(s["remote"] and s["bytes"] == 50 * 160 for s in body["streams"])
            assert body["started_at"] is not None and body["attempts"][0]["sip_status"] == 200
            status, call_now, _ = await api.call("GET", "/v1/calls/call-1")
            assert (
                call_now["legs"]["inbound"]["packets"] == 50 and call_now["legs"]["inbound"]["rejected"] == 0
            )

            status, body, _ = await api.call(
                "POST", f"/v1/calls/call-1/recordings/{sid}", {"status": "paused"}
            )
            assert status == 200 and body["status"] == "paused", body
            paused = await sink.next()
            assert paused.json()["event"] == "recording.paused" and paused.json()["by"] == "src"
            status, body, _ = await api.call(
                "POST", "/v1/calls/call-1/recordings/rec-1", {"status": "in-progress"}
            )
            assert status == 200, body
            await api.wait_status("call-1", sid, "in-progress")
            assert (await sink.next()).json()["event"] == "recording.resumed"

            status, body, _ = await api.call(
                "POST", "/v1/calls/call-1/recordings/rec-1", {"status": "stopped"}
            )
            assert status == 200 and body["status"] == "stopped", body
            stopped = (await sink.next()).json()
            assert stopped["event"] == "recording.stopped" and stopped["reason"] == "stopped by the API"
            await _settle(lambda: api.srs.byes == 1)

            # A stopped recording cannot be paused; its name may be used again.
            status, body, _ = await api.call(
                "POST", f"/v1/calls/call-1/recordings/{sid}", {"status": "paused"}
            )
            assert_error(status, body, 409, "invalid_state", "status")
            again = await api.new_recording("call-1", name="rec-1", track="inbound_track")
            status, body, _ = await api.call("GET", "/v1/calls/call-1/recordings/rec-1")
            assert body["sid"] == again["sid"]  # the live one of that name
            status, body, _ = await api.call("GET", "/v1/calls/call-1/recordings")
            assert [r["sid"] for r in body["recordings"]] == [sid, again["sid"]]

            status, text, headers = await api.call("GET", "/metrics")
            assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
            metrics = text.decode()
            assert "siprec_recordings_started_total " in metrics
            assert "siprec_fork_packets_total 100\n" in metrics or "siprec_fork_packets_total 1" in metrics
            assert 'siprec_srs_invite_responses_total{sip_status="200"}' in metrics
            assert 'siprec_callbacks_total{outcome="delivered"}' in metrics

            status, body, _ = await api.call("DELETE", "/v1/calls/call-1")
            assert status == 204
            await _settle(lambda: api.srs.byes == 2)
            status, body, _ = await api.call("GET", "/v1/calls/call-1")
            assert_error(status, body, 404, "no_such_call", "call_id")
    finally:
        sender.close()


async def test_delete_ends_every_recording_with_bye_before_closing() -> None:
    async with running_api() as api, callback_sink() as sink:
        call = await api.new_call()
        recording = await api.new_recording(call["call_id"], status_callback=sink.url)
        await api.wait_status(call["call_id"], recording["sid"], "in-progress")
        status, _, _ = await api.call("DELETE", f"/v1/calls/{call['call_id']}")
        assert status == 204
        await _settle(lambda: api.srs.byes == 1)
        events = await sink.until("recording.stopped")
        assert events[-1].json()["reason"] == "call ended"
        status, body, _ = await api.call("GET", "/v1/calls")
        assert status == 200 and body == {"calls": []}


async def test_the_answer_does_not_wait_for_the_srs() -> None:
    def silent(srs: MiniSrs) -> dict[str, Connector]:
        srs.answer = False
        return {"main": connector_for("main", [srs.uri()], attempt_timeout=30.0)}

    async with running_api(connectors=silent) as api:
        call = await api.new_call()
        started = time.monotonic()
        recording = await api.new_recording(call["call_id"])
        assert time.monotonic() - started < 1.0
        assert recording["status"] == "starting" and recording["started_at"] is None
        await _settle(lambda: len(api.srs.invites) == 1)
        status, _, _ = await api.call("DELETE", f"/v1/calls/{call['call_id']}")  # CANCELs it
        assert status == 204


async def test_failover_is_visible_in_callbacks_and_attempts() -> None:
    silent = MiniSrs(answer=False)
    async with silent:

        def two(good: MiniSrs) -> dict[str, Connector]:
            return {"main": connector_for("main", [silent.uri(), good.uri()], attempt_timeout=0.3)}

        async with running_api(connectors=two) as api, callback_sink() as sink:
            call = await api.new_call()
            recording = await api.new_recording(call["call_id"], status_callback=sink.url)
            events = await sink.until("recording.started")
            failed = events[0].json()
            assert failed["event"] == "recording.attempt-failed"
            assert failed["srs"] == silent.uri() and failed["sip_status"] == 408 and failed["attempt"] == 1
            assert failed["status"] == "starting"
            assert events[-1].json()["srs"] == api.srs.uri()
            body = await api.wait_status(call["call_id"], recording["sid"], "in-progress")
            assert [(a["attempt"], a["sip_status"]) for a in body["attempts"]] == [(1, 408), (2, 200)]
            assert body["srs"] == api.srs.uri()
            metrics = (await api.call("GET", "/metrics"))[1].decode()
            assert 'siprec_srs_attempt_failures_total{connector="main",sip_status="408"} 1' in metrics


async def test_a_recording_the_srs_refuses_fails_with_its_status() -> None:
    def nowhere(srs: MiniSrs) -> dict[str, Connector]:
        # Nothing listens there: the attempt fails at once (ICMP) or times out.
        return {"main": connector_for("main", ["sip:srs@127.0.0.1:9;transport=tcp"], attempt_timeout=1.0)}

    async with running_api(connectors=nowhere) as api, callback_sink() as sink:
        call = await api.new_call()
        recording = await api.new_recording(call["call_id"], status_callback=sink.url)
        events = await sink.until("recording.failed")
        assert [_event_of(e) for e in events] == ["recording.attempt-failed", "recording.failed"]
        body = await api.wait_status(call["call_id"], recording["sid"], "failed")
        assert body["error"]["sip_status"] in (408, 503) and body["error"]["reason"]
        metrics = (await api.call("GET", "/metrics"))[1].decode()
        assert "siprec_recordings_failed_total{sip_status=" in metrics


async def test_get_callbacks_carry_the_event_in_the_query_and_are_signed() -> None:
    async with running_api() as api, callback_sink() as sink:
        call = await api.new_call()
        await api.new_recording(call["call_id"], status_callback=sink.url, status_callback_method="GET")
        received = (await sink.until("recording.started"))[-1]
        assert received.method == "GET" and received.body == b""
        query = aiohttp.helpers.URL(received.url).query
        assert query["tenant"] == "7" and query["status"] == "in-progress" and query["sip_status"] == "200"
        assert verify_hmac_sha256_signature(
            SECRET, received.headers["X-Siprec-Signature"], received.url, now=time.time()
        )


async def test_participants_update_reinvites_with_new_metadata() -> None:
    async with running_api() as api:
        call = await api.new_call()
        recording = await api.new_recording(call["call_id"])
        await api.wait_status(call["call_id"], recording["sid"], "in-progress")
        carol = {"aor": "sip:carol@example.org"}
        status, body, _ = await api.call(
            "PUT", f"/v1/calls/{call['call_id']}/participants", {"from": ALICE, "to": carol}
        )
        assert status == 200 and body["to"] == {"aor": carol["aor"], "name": None}, body
        await _settle(lambda: len(api.srs.invites) == 2)
        assert b"sip:carol@example.org" in api.srs.invites[1].body
        status, body, _ = await api.call("PUT", f"/v1/calls/{call['call_id']}/participants", {"from": ALICE})
        assert_error(status, body, 400, "missing_field", "to")


# --- refusals ---------------------------------------------------------------------------------------


async def test_authentication() -> None:
    async with running_api() as api:
        status, body, headers = await api.call("GET", "/v1/calls", token=None)
        assert_error(status, body, 401, "unauthorized")
        assert headers["WWW-Authenticate"].startswith("Bearer")
        status, body, headers = await api.call("GET", "/v1/calls", token="wrong")
        assert_error(status, body, 401, "unauthorized")
        assert 'error="invalid_token"' in headers["WWW-Authenticate"]
        status, body, _ = await api.call("GET", "/v1/calls", token=None, headers={"Authorization": TOKEN})
        assert_error(status, body, 401, "unauthorized")
        status, body, _ = await api.call("GET", "/v1/calls")
        assert status == 200
        # Unauthenticated requests never reach the body checks or the engine.
        status, body, _ = await api.call("POST", "/v1/calls", {"bad": 1}, token=None)
        assert status == 401 and not api.sidecar.engine.calls


async def test_without_tokens_the_native_api_is_not_enabled() -> None:
    async with running_api(tokens=()) as api:
        status, body, _ = await api.call("GET", "/v1/calls")
        assert_error(status, body, 404, "not_enabled")
        status, body, _ = await api.call("GET", "/healthz", token=None)
        assert status == 200 and body["status"] == "ok" and (body["calls"], body["recordings"]) == (0, 0)


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"from": ALICE}, "missing_field", "to"),
        ({"from": {"name": "x"}, "to": BOB}, "missing_field", "from.aor"),
        ({"from": ALICE, "to": BOB, "colour": "red"}, "unknown_field", "colour"),
        ({"from": {**ALICE, "nick": "al"}, "to": BOB}, "unknown_field", "from.nick"),
        ({"from": ALICE, "to": BOB, "legs": {"inbound": {"src": "x"}}}, "unknown_field", "legs.inbound.src"),
        (
            {"from": ALICE, "to": BOB, "legs": {"inbound": {"source": 5}}},
            "invalid_type",
            "legs.inbound.source",
        ),
        (
            {"from": ALICE, "to": BOB, "legs": {"outbound": {"source": "999.1.1.1:5"}}},
            "invalid_value",
            "legs.outbound.source",
        ),
        (
            {"from": ALICE, "to": BOB, "legs": {"inbound": {"source": "127.0.0.1:70000"}}},
            "invalid_value",
            "legs.inbound.source",
        ),
        ({"from": ALICE, "to": BOB, "legs": {"sideways": {}}}, "unknown_field", "legs.sideways"),
        ({"from": "sip:a@b", "to": BOB}, "invalid_type", "from"),
        ({"from": {"aor": "alice"}, "to": BOB}, "invalid_value", "from.aor"),
        ({"from": {"aor": "sip:a b@c"}, "to": BOB}, "invalid_value", "from.aor"),
        ({"from": {"aor": "sip:a@b", "name": "x\ny"}, "to": BOB}, "invalid_value", "from.name"),
        ({"from": ALICE, "to": BOB, "codec": "G729"}, "invalid_value", "codec"),
        ({"from": ALICE, "to": BOB, "call_id": "a/b"}, "invalid_value", "call_id"),
        ({"from": ALICE, "to": BOB, "call_id": 7}, "invalid_type", "call_id"),
        ({"from": ALICE, "to": BOB, "sip_session_id": "xyz"}, "invalid_value", "sip_session_id"),
        ([ALICE, BOB], "invalid_type", None),
    ],
)
async def test_call_bodies_are_checked_precisely(body: object, code: str, field: str | None) -> None:
    async with running_api() as api:
        status, answer, _ = await api.call("POST", "/v1/calls", body)
        assert_error(status, answer, 400, code, field)
        assert not api.sidecar.engine.calls


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({}, "missing_field", "connector"),
        ({"connector": "nope"}, "unknown_connector", "connector"),
        ({"connector": 5}, "invalid_type", "connector"),
        ({"connector": "main", "track": "left"}, "invalid_value", "track"),
        ({"connector": "main", "session_timeout": 30}, "invalid_value", "session_timeout"),
        ({"connector": "main", "session_timeout": 90.5}, "invalid_type", "session_timeout"),
        ({"connector": "main", "session_timeout": 89.0}, "invalid_value", "session_timeout"),
        ({"connector": "main", "session_timeout": True}, "invalid_type", "session_timeout"),
        ({"connector": "main", "colour": "red"}, "unknown_field", "colour"),
        ({"connector": "main", "name": "has space"}, "invalid_value", "name"),
        ({"connector": "main", "params": {"a b": "1"}}, "invalid_value", "params.a b"),
        ({"connector": "main", "params": {"Customer": 42}}, "invalid_type", "params.Customer"),
        ({"connector": "main", "params": {"Customer": "4\r\n2"}}, "invalid_value", "params.Customer"),
        ({"connector": "main", "secure": "yes"}, "invalid_type", "secure"),
        ({"connector": "main", "status_callback": "ftp://x/y"}, "invalid_value", "status_callback"),
        ({"connector": "main", "status_callback": "http://:99999/x"}, "invalid_value", "status_callback"),
        ({"connector": "main", "status_callback_method": "PUT"}, "invalid_value", "status_callback_method"),
    ],
)
async def test_recording_bodies_are_checked_precisely(body: object, code: str, field: str | None) -> None:
    async with running_api() as api:
        call = await api.new_call()
        status, answer, _ = await api.call("POST", f"/v1/calls/{call['call_id']}/recordings", body)
        assert_error(status, answer, 400, code, field)
        assert not api.srs.invites and not api.sidecar.engine.recordings


async def test_raw_bodies_that_are_not_json() -> None:
    async with running_api(max_body_bytes=32 * 1024) as api:
        cases: list[tuple[bytes, dict[str, str], int, str]] = [
            (b"{not json", {"Content-Type": "application/json"}, 400, "invalid_json"),
            (b"", {"Content-Type": "application/json"}, 400, "invalid_json"),
            (b'{"from": NaN}', {"Content-Type": "application/json"}, 400, "invalid_json"),
            (b'{"to": {}, "to": {}}', {"Content-Type": "application/json"}, 400, "invalid_json"),
            (b"\xff\xfe{}", {"Content-Type": "application/json"}, 400, "invalid_json"),
            (b"[" * 10000 + b"]" * 10000, {"Content-Type": "application/json"}, 400, "invalid_json"),
            (b"[" * 500 + b"]" * 500, {"Content-Type": "application/json"}, 400, "invalid_type"),
            (
                b"from=alice",
                {"Content-Type": "application/x-www-form-urlencoded"},
                415,
                "unsupported_media_type",
            ),
            (
                json.dumps({"from": ALICE, "to": {"aor": "sip:b@c", "name": "x" * 40000}}).encode(),
                {"Content-Type": "application/json"},
                413,
                "body_too_large",
            ),
            (
                json.dumps({"from": {"aor": "sip:a@b", "name": "\ud800"}, "to": BOB}).encode(),
                {"Content-Type": "application/json"},
                400,
                "invalid_value",
            ),
        ]
        for data, headers, expected, code in cases:
            status, body, _ = await api.call("POST", "/v1/calls", data=data, headers=headers)
            assert status == expected and body["error"]["code"] == code, (data[:40], body)
        assert not api.sidecar.engine.calls


async def test_conflicts_limits_and_unknown_resources() -> None:
    async with running_api(max_calls=2) as api:
        call = await api.new_call(call_id="c1")
        status, body, _ = await api.call("POST", "/v1/calls", {"from": ALICE, "to": BOB, "call_id": "c1"})
        assert_error(status, body, 409, "duplicate_call", "call_id")
        await api.new_call()
        status, body, _ = await api.call("POST", "/v1/calls", {"from": ALICE, "to": BOB})
        assert_error(status, body, 503, "call_limit", "call_id")

        path = f"/v1/calls/{call['call_id']}/recordings"
        await api.new_recording("c1", name="a")
        status, body, _ = await api.call("POST", path, {"connector": "main", "name": "a"})
        assert_error(status, body, 409, "duplicate_name", "name")
        await api.new_recording("c1", name="b")  # four streams now
        status, body, _ = await api.call("POST", path, {"connector": "main", "track": "inbound_track"})
        assert_error(status, body, 409, "stream_limit", "track")
        assert "limit is 4" in body["error"]["message"]

        status, body, _ = await api.call("GET", "/v1/calls/nope")
        assert_error(status, body, 404, "no_such_call", "call_id")
        status, body, _ = await api.call("POST", "/v1/calls/nope/recordings", {"connector": "main"})
        assert_error(status, body, 404, "no_such_call", "call_id")
        status, body, _ = await api.call("GET", "/v1/calls/c1/recordings/nope")
        assert_error(status, body, 404, "no_such_recording", "sid")
        status, body, _ = await api.call("POST", "/v1/calls/c1/recordings/nope", {"status": "stopped"})
        assert_error(status, body, 404, "no_such_recording", "sid")
        status, body, _ = await api.call("POST", "/v1/calls/c1/recordings/a", {"status": "done"})
        assert_error(status, body, 400, "invalid_value", "status")
        status, body, _ = await api.call("DELETE", "/v1/calls/nope")
        assert_error(status, body, 404, "no_such_call", "call_id")

        status, body, _ = await api.call("GET", "/v1/nothing")
        assert_error(status, body, 404, "not_found")
        status, body, headers = await api.call("PATCH", "/v1/calls")
        assert_error(status, body, 405, "method_not_allowed")
        assert set(headers["Allow"].split(",")) == {"GET", "POST"}


# --- tap legs that arrive as SRTP, and telephone-event ----------------------------------------------


async def test_a_tap_leg_that_arrives_as_srtp_is_unprotected_and_forked() -> None:
    from siprec_src.media.spec import SrtpKeys
    from siprec_src.media.srtp import SrtpSender, generate_key_params

    key = generate_key_params("AES_CM_128_HMAC_SHA1_80")
    async with running_api() as api:
        status, body, _ = await api.call(
            "POST",
            "/v1/calls",
            {
                "from": ALICE,
                "to": BOB,
                "telephone_event": 101,
                "legs": {"inbound": {"srtp": {"suite": "AES_CM_128_HMAC_SHA1_80", "key": key}}},
            },
        )
        assert status == 201, body
        assert body["legs"]["inbound"]["srtp"] == {"suite": "AES_CM_128_HMAC_SHA1_80"}
        assert body["legs"]["outbound"]["srtp"] is None
        assert key.split(":", 1)[1] not in json.dumps(body)  # keys are never echoed
        recording = await api.new_recording(body["call_id"], track="inbound_track")
        await api.wait_status(body["call_id"], recording["sid"], "in-progress")
        invite = api.srs.invites[-1]
        assert b"telephone-event/8000" in invite.body
        sender = SrtpSender(SrtpKeys("AES_CM_128_HMAC_SHA1_80", key))
        leg = SyntheticLeg(Leg.INBOUND)
        tap = _address(body["legs"]["inbound"]["rtp"])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            plain = [leg.next_packet() for _ in range(20)]
            for packet in plain:
                sock.sendto(sender.protect(packet), tap)
            sock.sendto(b"\x80\x00" + bytes(40), tap)  # not authenticated: refused, counted
            await _settle(lambda: len(api.srs.sinks[0].packets) >= 20)
        received = api.srs.sinks[0].packets
        assert [p.payload for p in received[:20]] == [p[12:] for p in plain]
        status, call, _ = await api.call("GET", f"/v1/calls/{body['call_id']}")
        assert call["legs"]["inbound"]["packets"] == 20 and call["legs"]["inbound"]["rejected"] == 1


@pytest.mark.parametrize(
    ("srtp", "field"),
    [
        ({"suite": "AES_CM_128_HMAC_SHA1_80", "key": "inline:c2hvcnQ="}, "legs.inbound.srtp.key"),
        ({"suite": "AES_CM_128_HMAC_SHA1_80", "key": "plain:abc"}, "legs.inbound.srtp.key"),
        ({"suite": "NULL_CIPHER", "key": "inline:abc"}, "legs.inbound.srtp.suite"),
        ({"suite": "AES_CM_128_HMAC_SHA1_80"}, "legs.inbound.srtp.key"),
    ],
)
async def test_bad_tap_srtp_keys_are_refused_naming_the_field(srtp: dict[str, str], field: str) -> None:
    async with running_api() as api:
        status, body, _ = await api.call(
            "POST", "/v1/calls", {"from": ALICE, "to": BOB, "legs": {"inbound": {"srtp": srtp}}}
        )
        assert status == 400 and body["error"]["field"] == field, body
        assert "c2hvcnQ" not in json.dumps(body)
