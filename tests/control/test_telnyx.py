"""The Telnyx-shaped API end to end on loopback: siprec_start/siprec_stop, command_id, webhooks.

A real ``Engine`` records toward the in-test SRS; the API is an aiohttp server on 127.0.0.1 with
only ``telnyx.add_routes``; webhooks go through the real ``CallbackQueue`` to a local receiver.

Covers: a start with every seed field (track, Session-Expires from ``session_timeout_secs``,
custom headers into the metadata, ``client_state``) and its ``siprec.started`` envelope; a stop
whose new ``client_state`` reaches ``siprec.stopped``; ``session_timeout_secs`` 0 = no session
timer; ``command_id`` run once (sequential and concurrent repeats, a refused command's id
reusable); ``siprec.failed`` for a silent SRS; every refused request's status, Telnyx code
and JSON pointer. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from siprec_src.control import telnyx as telnyx_api
from siprec_src.control.callbacks import CallbackQueue
from siprec_src.control.settings import ApiCredentials, CallbackSettings, ControlSettings
from siprec_src.control.sidecar import Sidecar
from siprec_src.metadata.reader import read_siprec_body
from siprec_src.recording.call import Party
from siprec_src.recording.connector import connector_for
from siprec_src.recording.engine import Call, Engine, EngineConfig
from tests.control.serving import serve
from tests.recording.minisrs import MiniSrs

KEY = "KEY0123456789ABCDEF_test"
CALL_ID = "v3:9X2vxPDFY2RHSJ1EdMS0RHRksMTg7ldNxdjWbVr9zBjbGjGsSe-aiQ"
STATE = "aGF2ZSBhIG5pY2UgZGF5ID1d"  # the seed's client_state
TIMEOUT = 5.0


@dataclass
class World:
    engine: Engine
    srs: MiniSrs
    base: str
    webhooks: str
    call: Call
    http: aiohttp.ClientSession
    received: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    async def action(
        self,
        name: str,
        body: object = None,
        *,
        key: str | None = KEY,
        call_id: str = CALL_ID,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
        url = f"{self.base}/v2/calls/{call_id}/actions/{name}"
        async with self.http.post(url, data=data, headers=headers) as response:
            return response.status, await response.json()

    async def webhook(self) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            return await self.received.get()


@asynccontextmanager
async def world(credentials: ApiCredentials | None = None) -> AsyncIterator[World]:
    credentials = credentials or ApiCredentials(telnyx_api_key=KEY)
    async with MiniSrs() as srs, MiniSrs(answer=False) as silent:
        connectors = {
            "my-siprec-connector": connector_for("my-siprec-connector", [srs.uri()]),
            "silent": connector_for("silent", [silent.uri()], attempt_timeout=0.3),
        }
        async with Engine(EngineConfig(connectors=connectors)) as engine:
            queue = CallbackQueue(CallbackSettings(timeout=2.0, retries=0))
            await queue.start()
            sidecar = Sidecar(engine, ControlSettings(credentials=credentials), submit=queue.submit)
            app = web.Application()
            telnyx_api.add_routes(app, sidecar)
            api_runner, base = await serve(app)
            received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

            async def receive(request: web.Request) -> web.Response:
                assert request.method == "POST" and request.content_type == "application/json"
                received.put_nowait(await request.json())
                return web.Response(text="ok")

            receiver = web.Application()
            receiver.router.add_post("/hooks", receive)
            hook_runner, hook_base = await serve(receiver)
            call = await engine.open_call(
                caller=Party("sip:+15551230000@example.com"),
                callee=Party("sip:+15559870000@example.net"),
                call_id=CALL_ID,
            )
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http:
                    yield World(engine, srs, base, hook_base + "/hooks", call, http, received)
            finally:
                await api_runner.cleanup()
                await queue.close(1.0)
                await hook_runner.cleanup()


async def _settle(condition: Any) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.01)


def _check_envelope(hook: dict[str, Any], event_type: str) -> dict[str, Any]:
    data = hook["data"]
    assert set(data) == {"record_type", "event_type", "id", "occurred_at", "payload"}
    assert (data["record_type"], data["event_type"]) == ("event", event_type)
    assert len(data["id"]) == 36 and data["occurred_at"].endswith("Z")
    payload: dict[str, Any] = data["payload"]
    assert (payload["call_control_id"], payload["call_leg_id"], payload["call_session_id"]) == (CALL_ID,) * 3
    assert payload["connection_id"] is None
    return payload


async def test_start_with_every_field_then_stop_with_new_client_state() -> None:
    async with world() as w:
        status, body = await w.action(
            "siprec_start",
            {
                "connector_name": "my-siprec-connector",
                "siprec_track": "outbound_track",
                "include_metadata_custom_headers": True,
                "custom_headers": [{"name": "CustomerId", "value": "42"}],
                "session_timeout_secs": 120,
                "client_state": STATE,
                "command_id": "891510ac-f3e4-11e8-af5b-de00688a4901",
                "webhook_url": w.webhooks,
            },
        )
        assert (status, body) == (200, {"data": {"result": "ok"}})
        (recording,) = w.call.recordings.values()
        assert str(recording.track) == "outbound_track"
        payload = _check_envelope(await w.webhook(), "siprec.started")
        assert payload["client_state"] == STATE
        (invite,) = w.srs.invites
        assert invite.headers.get("Session-Expires") == "120;refresher=uac"
        assert invite.body.count(b"m=audio") == 1
        _, metadata = read_siprec_body(invite.content_type or "", invite.body)
        assert ("CustomerId", "42") in metadata.extensions[0].elements
        assert invite.headers.get("X-CustomerId") is None

        new_state = "c3RvcHBlZA=="  # "stopped"
        status, body = await w.action("siprec_stop", {"client_state": new_state})
        assert (status, body) == (200, {"data": {"result": "ok"}})
        assert recording.status == "stopped"
        await _settle(lambda: w.srs.byes == 1)
        payload = _check_envelope(await w.webhook(), "siprec.stopped")
        assert (payload["client_state"], payload["hangup_cause"]) == (new_state, "normal_clearing")

        # Nothing left to stop.
        status, body = await w.action("siprec_stop")
        assert status == 422 and body["errors"][0]["code"] == "10015"
        assert "no SIPREC session is running" in body["errors"][0]["detail"]


async def test_defaults_and_a_disabled_session_timer() -> None:
    async with world() as w:
        status, _ = await w.action("siprec_start", {"connector_name": "my-siprec-connector"})
        assert status == 200
        status, _ = await w.action(
            "siprec_start", {"connector_name": "my-siprec-connector", "session_timeout_secs": 0}
        )
        assert status == 200
        first, second = w.call.recordings.values()
        assert str(first.track) == "both_tracks"  # the seed's default: two streams
        await _settle(lambda: len(w.srs.invites) == 2)
        # Absent: the connector's value (1800 by default); 0: no session timer at all.
        assert w.srs.invites[0].headers.get("Session-Expires") == "1800;refresher=uac"
        assert w.srs.invites[1].headers.get("Session-Expires") is None
        # No webhook_url: no webhooks (Telnyx would use the connection's URL; we have none).
        status, _ = await w.action("siprec_stop")
        assert status == 200 and first.status == second.status == "stopped"
        assert w.received.empty()


async def test_a_repeated_command_id_runs_once() -> None:
    async with world() as w:
        start = {
            "connector_name": "my-siprec-connector",
            "siprec_track": "inbound_track",
            "command_id": "c-1",
        }
        for _ in range(2):
            status, body = await w.action("siprec_start", start)
            assert (status, body) == (200, {"data": {"result": "ok"}})
        assert len(w.call.recordings) == 1
        # Concurrent repeats of a new id: still one recording.
        again = {**start, "command_id": "c-2"}
        results = await asyncio.gather(*(w.action("siprec_start", again) for _ in range(3)))
        assert [status for status, _ in results] == [200, 200, 200]
        assert len(w.call.recordings) == 2
        # The id belongs to the call, whatever the command: a stop reusing it is not run.
        status, _ = await w.action("siprec_stop", {"command_id": "c-1"})
        assert status == 200
        assert all(r.status != "stopped" for r in w.call.recordings.values())
        # A refused command is not remembered: its corrected retry with the same id runs.
        status, body = await w.action("siprec_start", {**start, "command_id": "c-3", "siprec_track": "nope"})
        assert status == 422
        status, _ = await w.action("siprec_start", {**start, "command_id": "c-3"})
        assert status == 200 and len(w.call.recordings) == 3
        status, _ = await w.action("siprec_stop", {"command_id": "s-1"})
        assert status == 200 and all(r.status == "stopped" for r in w.call.recordings.values())


async def test_a_silent_srs_sends_siprec_failed() -> None:
    async with world() as w:
        status, _ = await w.action(
            "siprec_start", {"connector_name": "silent", "client_state": STATE, "webhook_url": w.webhooks}
        )
        assert status == 200
        payload = _check_envelope(await w.webhook(), "siprec.failed")
        assert payload["client_state"] == STATE
        assert "408" in payload["failure_cause"]


C = {"connector_name": "my-siprec-connector"}
T = "/session_timeout_secs"
BAD_STARTS = [
    # (body, status, code, pointer, words in the detail)
    ({"connector_name": "nope"}, 422, "10017", "/connector_name", "unknown connector 'nope'"),
    ({}, 422, "10004", "/connector_name", "connector_name is required"),
    ({"connector_name": 5}, 422, "10015", "/connector_name", "must be a string"),
    ({**C, "siprec_track": "left"}, 422, "10015", "/siprec_track", "left"),
    ({**C, "session_timeout_secs": 30}, 422, "10015", T, "at least 90, not 30"),
    ({**C, "session_timeout_secs": 89}, 422, "10015", T, "not 89"),
    ({**C, "session_timeout_secs": "90"}, 422, "10015", T, "integer"),
    ({**C, "session_timeout_secs": True}, 422, "10015", T, "integer"),
    ({**C, "session_timeout_secs": 90.5}, 422, "10015", T, "integer"),
    ({**C, "client_state": "not base64!"}, 422, "10015", "/client_state", "Base-64"),
    ({**C, "client_state": "abc"}, 422, "10015", "/client_state", "Base-64"),
    ({**C, "secure": "yes"}, 422, "10015", "/secure", "boolean"),
    (
        {**C, "include_metadata_custom_headers": 1},
        422,
        "10015",
        "/include_metadata_custom_headers",
        "boolean",
    ),
    ({**C, "webhook_url": "ftp://example.com"}, 422, "10003", "/webhook_url", "http(s)"),
    ({**C, "custom_headers": [{"name": 1}]}, 422, "10015", "/custom_headers/0", "name"),
    ({**C, "custom_headers": [{"name": "a b", "value": "v"}]}, 422, "10015", "/custom_headers", "token"),
    ({**C, "command_id": 7}, 422, "10015", "/command_id", "string"),
]


@pytest.mark.parametrize(("body", "status", "code", "pointer", "words"), BAD_STARTS)
async def test_bad_starts(body: dict[str, Any], status: int, code: str, pointer: str, words: str) -> None:
    async with world() as w:
        got, answer = await w.action("siprec_start", body)
        assert got == status, answer
        (error,) = answer["errors"]
        assert (error["code"], error["source"]) == (code, {"pointer": pointer})
        assert words in error["detail"] and error["title"]
        assert w.call.recordings == {}


async def test_bad_bodies_authentication_and_unknown_calls() -> None:
    async with world() as w:
        for raw in (b"{not json", b"[1, 2]", b'"text"'):
            status, body = await w.action("siprec_start", raw=raw)
            assert status == 400 and body["errors"][0]["code"] == "10023"
        for key in (None, "wrong"):
            status, body = await w.action("siprec_start", {"connector_name": "my-siprec-connector"}, key=key)
            assert status == 401
            assert body == {
                "errors": [
                    {
                        "code": "10009",
                        "title": "Authentication failed",
                        "detail": "The required authentication headers were either invalid "
                        "or not included in the request.",
                    }
                ]
            }
        status, body = await w.action(
            "siprec_start", {"connector_name": "my-siprec-connector"}, call_id="v3:nope"
        )
        assert status == 404 and body["errors"][0]["code"] == "10005"
        assert "no call 'v3:nope'" in body["errors"][0]["detail"]
        status, body = await w.action("siprec_stop", call_id="v3:nope")
        assert status == 404
        assert w.call.recordings == {}


async def test_the_fifth_stream_is_refused() -> None:
    async with world() as w:
        start = {"connector_name": "my-siprec-connector"}
        for _ in range(2):
            status, _ = await w.action("siprec_start", start)
            assert status == 200
        status, body = await w.action("siprec_start", {**start, "siprec_track": "inbound_track"})
        assert status == 422
        (error,) = body["errors"]
        assert error["code"] == "10015" and error["source"] == {"pointer": "/siprec_track"}
        assert "the limit is 4 per call" in error["detail"]
        assert len(w.call.recordings) == 2


async def test_a_closed_call_and_an_unconfigured_key() -> None:
    async with world() as w:
        await w.call.close()
        status, body = await w.action("siprec_start", {"connector_name": "my-siprec-connector"})
        assert status == 404 and body["errors"][0]["code"] == "10005"
    async with world(ApiCredentials(twilio_account_sid="AC" + "0" * 32, twilio_auth_token="t")) as w:
        status, body = await w.action("siprec_start", {"connector_name": "my-siprec-connector"})
        assert status == 404 and body["errors"][0]["code"] == "10005"
        assert w.call.recordings == {}
