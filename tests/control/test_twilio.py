"""The Twilio-shaped API end to end on loopback: the official helper library, TwiML, callbacks.

A real ``Engine`` records toward the in-test SRS (``tests/recording/minisrs.py``); the API is an
aiohttp server on 127.0.0.1 with only ``twilio.add_routes``; status callbacks go through the real
``CallbackQueue`` to a second local server, whose requests are checked with the official
``twilio.request_validator.RequestValidator``.

Covers: create and stop through ``twilio.rest.Client`` pointed at our base URL (resource fields,
X- headers from ``Parameter1``), stop by name and by SID, callbacks by POST and GET (signature
over a URL that already has a query), ``siprec-error`` with the SIP status for a silent SRS;
TwiML from ``VoiceResponse`` through ``calls(sid).update(twiml=...)``; unsupported verbs,
malformed and oversized TwiML refused with nothing started; a failing second ``<Siprec>`` rolls
the first back; each bad request's status and Twilio error body. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import Start, Stop, VoiceResponse

from siprec_src.control import twilio as twilio_api
from siprec_src.control.callbacks import CallbackQueue
from siprec_src.control.settings import ApiCredentials, CallbackSettings, ControlSettings
from siprec_src.control.sidecar import Sidecar
from siprec_src.recording.call import Party
from siprec_src.recording.connector import connector_for
from siprec_src.recording.engine import Call, Engine, EngineConfig
from tests.control.serving import serve
from tests.recording.minisrs import MiniSrs

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "f" * 32
CALL_ID = "CA" + "fedcba9876543210" * 2
TIMEOUT = 5.0


@dataclass
class Received:
    method: str
    url: str
    params: dict[str, str]
    signature: str | None


@dataclass
class World:
    engine: Engine
    srs: MiniSrs
    base: str  # http://127.0.0.1:port of the API
    callbacks: str  # http://127.0.0.1:port of the callback receiver
    call: Call
    http: aiohttp.ClientSession
    received: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)

    def client(self, token: str = TOKEN) -> Client:
        client = Client(ACCOUNT, token, http_client=TwilioHttpClient(timeout=TIMEOUT))
        client.api.base_url = self.base  # every v2010 request goes to our server
        return client

    async def run(self, function: Callable[[], Any]) -> Any:
        """A synchronous helper-library call, in a thread, bounded."""
        async with asyncio.timeout(TIMEOUT):
            return await asyncio.to_thread(function)

    async def post(
        self,
        path: str,
        data: dict[str, str] | None = None,
        *,
        auth: tuple[str, str] | None = (ACCOUNT, TOKEN),
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        headers = {"Authorization": aiohttp.encode_basic_auth(*auth)} if auth else {}
        async with self.http.post(self.base + path, data=data or {}, headers=headers) as response:
            return response.status, await response.json(), response.headers

    def path(self, suffix: str, call_id: str = CALL_ID, account: str = ACCOUNT) -> str:
        return f"/2010-04-01/Accounts/{account}/Calls/{call_id}{suffix}"

    async def callback(self) -> Received:
        async with asyncio.timeout(TIMEOUT):
            return await self.received.get()


@asynccontextmanager
async def world(credentials: ApiCredentials | None = None) -> AsyncIterator[World]:
    credentials = credentials or ApiCredentials(twilio_account_sid=ACCOUNT, twilio_auth_token=TOKEN)
    async with MiniSrs() as srs, MiniSrs(answer=False) as silent:
        connectors = {
            "Default": connector_for("Default", [srs.uri()]),
            "Gridspace_1": connector_for("Gridspace_1", [srs.uri()]),
            "silent": connector_for("silent", [silent.uri()], attempt_timeout=0.3),
        }
        async with Engine(EngineConfig(connectors=connectors)) as engine:
            queue = CallbackQueue(CallbackSettings(timeout=2.0, retries=0))
            await queue.start()
            sidecar = Sidecar(engine, ControlSettings(credentials=credentials), submit=queue.submit)
            app = web.Application()
            twilio_api.add_routes(app, sidecar)
            api_runner, base = await serve(app)

            received: asyncio.Queue[Received] = asyncio.Queue()

            async def receive(request: web.Request) -> web.Response:
                params = (
                    {k: str(v) for k, v in (await request.post()).items()} if request.method == "POST" else {}
                )
                received.put_nowait(
                    Received(
                        request.method, str(request.url), params, request.headers.get("X-Twilio-Signature")
                    )
                )
                return web.Response(text="ok")

            receiver = web.Application()
            receiver.router.add_route("*", "/cb", receive)
            cb_runner, cb_base = await serve(receiver)
            call = await engine.open_call(
                caller=Party("sip:+15551230000@example.com", "Caller"),
                callee=Party("sip:+15559870000@example.net"),
                call_id=CALL_ID,
            )
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http:
                    yield World(engine, srs, base, cb_base + "/cb", call, http, received)
            finally:
                await api_runner.cleanup()
                await queue.close(1.0)
                await cb_runner.cleanup()


def _valid(received: Received) -> bool:
    assert received.signature is not None
    return bool(RequestValidator(TOKEN).validate(received.url, received.params, received.signature))


async def _settle(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.01)


# --- the Siprec resource through the official helper library --------------------------------------


async def test_official_library_creates_and_stops_with_signed_post_callbacks() -> None:
    async with world() as w:
        client = w.client()
        siprec = await w.run(
            lambda: client.calls(CALL_ID).siprec.create(
                name="my_first_siprec",
                connector_name="Gridspace_1",
                track="inbound_track",
                status_callback=w.callbacks,
                parameter1_name="Custom1",
                parameter1_value="Bob",
            )
        )
        assert siprec.sid.startswith("SR") and len(siprec.sid) == 34
        assert (siprec.account_sid, siprec.call_sid, siprec.name) == (ACCOUNT, CALL_ID, "my_first_siprec")
        assert siprec.status == "in-progress"
        assert siprec.date_updated is not None and siprec.date_updated.tzinfo is not None
        assert siprec.uri == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL_ID}/Siprec/{siprec.sid}.json"

        started = await w.callback()
        assert started.method == "POST" and _valid(started)
        assert started.params.pop("Timestamp").endswith("Z")
        assert started.params == {
            "AccountSid": ACCOUNT,
            "CallSid": CALL_ID,
            "SiprecSid": siprec.sid,
            "SiprecName": "my_first_siprec",
            "SiprecEvent": "siprec-started",
        }
        (invite,) = w.srs.invites
        assert invite.headers.get("X-Custom1") == "Bob"
        assert invite.body.count(b"m=audio") == 1  # inbound_track: one stream

        stopped = await w.run(
            lambda: client.calls(CALL_ID).siprec("my_first_siprec").update(status="stopped")
        )
        assert (stopped.sid, stopped.status, stopped.name) == (siprec.sid, "stopped", "my_first_siprec")
        assert w.call.recordings[siprec.sid].status == "stopped"
        await _settle(lambda: w.srs.byes == 1)
        callback = await w.callback()
        assert callback.params["SiprecEvent"] == "siprec-stopped" and _valid(callback)

        # Stopping again answers the same resource (by SID this time).
        again = await w.run(lambda: client.calls(CALL_ID).siprec(siprec.sid).update(status="stopped"))
        assert again.status == "stopped"


async def test_defaults_follow_the_seed_and_get_callbacks_sign_the_full_url() -> None:
    async with world() as w:
        url = w.callbacks + "?tenant=a%20b&x=1"
        status, body, _ = await w.post(
            w.path("/Siprec.json"), {"StatusCallback": url, "StatusCallbackMethod": "GET"}
        )
        assert status == 201, body
        # No ConnectorName: the "Default" connector; no Track: both_tracks (two streams).
        recording = w.call.recordings[body["sid"]]
        assert recording.connector.name == "Default" and len(recording.streams) == 2
        assert body["name"] is None
        started = await w.callback()
        assert started.method == "GET" and started.params == {}
        assert "tenant=a%20b&x=1&AccountSid=" in started.url and _valid(started)
        query = dict(parse_qsl(started.url.partition("?")[2]))
        assert query["SiprecEvent"] == "siprec-started"
        assert query["SiprecName"] == body["sid"]  # unnamed: the SID stands for the name
        # A wrong token must not validate (the check above can fail).
        assert not RequestValidator("0" * 32).validate(started.url, {}, started.signature or "")


async def test_a_silent_srs_reports_siprec_error_with_the_sip_status() -> None:
    async with world() as w:
        status, body, _ = await w.post(
            w.path("/Siprec.json"),
            {"ConnectorName": "silent", "Name": "doomed", "StatusCallback": w.callbacks},
        )
        assert status == 201 and body["status"] == "in-progress"
        error = await w.callback()
        assert _valid(error)
        assert error.params["SiprecEvent"] == "siprec-error"
        assert error.params["SiprecErrorCode"] == "408"
        assert error.params["SiprecError"]
        status, body, _ = await w.post(w.path("/Siprec/doomed.json"), {"Status": "stopped"})
        assert (status, body["status"]) == (200, "stopped")


async def test_the_library_surfaces_our_twilio_errors() -> None:
    async with world() as w:
        client = w.client()
        with pytest.raises(TwilioRestException) as caught:
            await w.run(lambda: client.calls(CALL_ID).siprec.create(connector_name="nope"))
        assert (caught.value.status, caught.value.code) == (400, 31940)
        assert "unknown connector 'nope'" in caught.value.msg
        wrong = w.client(token="0" * 32)
        with pytest.raises(TwilioRestException) as caught:
            await w.run(wrong.calls(CALL_ID).siprec.create)
        assert (caught.value.status, caught.value.code) == (401, 20003)
        assert w.call.recordings == {}


# --- TwiML --------------------------------------------------------------------------------------------


async def test_twiml_from_voice_response_starts_and_stops() -> None:
    async with world() as w:
        client = w.client()
        response = VoiceResponse()
        start = Start()
        named = start.siprec(name="agent", connector_name="Gridspace_1", track="outbound_track")
        named.parameter(name="Custom2", value="Blah")
        start.siprec(connector_name="Default", track="inbound_track", status_callback=w.callbacks)
        response.append(start)
        call = await w.run(lambda: client.calls(CALL_ID).update(twiml=response))
        assert (call.sid, call.account_sid, call.status) == (CALL_ID, ACCOUNT, "in-progress")
        assert call.uri == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL_ID}.json"
        recordings = list(w.call.recordings.values())
        assert [(r.name, r.connector.name, str(r.track)) for r in recordings] == [
            ("agent", "Gridspace_1", "outbound_track"),
            (None, "Default", "inbound_track"),
        ]
        started = await w.callback()
        assert started.params["SiprecSid"] == recordings[1].sid and _valid(started)
        await _settle(lambda: len(w.srs.invites) == 2)
        assert w.srs.invites[0].headers.get("X-Custom2") == "Blah"

        stop = VoiceResponse()
        stop_verb = Stop()
        stop_verb.siprec(name="agent")
        stop.append(stop_verb)
        await w.run(lambda: client.calls(CALL_ID).update(twiml=stop))
        assert recordings[0].status == "stopped" and recordings[1].status == "in-progress"


async def test_unsupported_verbs_are_refused_whole_and_nothing_runs() -> None:
    async with world() as w:
        twiml = (
            '<Response>\n<Start><Siprec connectorName="Default"/></Start>\n<Say>Recording</Say>\n</Response>'
        )
        status, body, _ = await w.post(w.path(".json"), {"Twiml": twiml})
        assert status == 400
        assert body["code"] == 12200 and "line 3: <Say> is not supported" in body["message"]
        transcription = "<Response><Start><Transcription/></Start></Response>"
        status, body, _ = await w.post(w.path(".json"), {"Twiml": transcription})
        assert (status, body["code"]) == (400, 12200) and "<Start><Transcription>" in body["message"]
        assert w.call.recordings == {}


@pytest.mark.parametrize(
    ("form", "code", "words"),
    [
        ({"Twiml": "<Response><Start><Siprec></Start></Response>"}, 12100, "line 1: not well-formed"),
        ({"Twiml": "<Response>" + " " * 4000 + "</Response>"}, 32018, "more than the 4000"),
        ({"Twiml": '<Response><Start><Siprec trak="x"/></Start></Response>'}, 12100, "attribute 'trak'"),
        ({}, 400, "Missing required parameter Twiml"),
        ({"Url": "https://example.com/twiml"}, 400, "Url is not supported"),
        ({"Twiml": "<Response/>", "Status": "completed"}, 400, "Status is not supported"),
    ],
)
async def test_bad_call_updates(form: dict[str, str], code: int, words: str) -> None:
    async with world() as w:
        status, body, _ = await w.post(w.path(".json"), form)
        assert (status, body["code"]) == (400, code), body
        assert words in body["message"]


async def test_a_failing_instruction_rolls_back_what_the_document_started() -> None:
    async with world() as w:
        twiml = (
            "<Response><Start>\n"
            '<Siprec name="first" connectorName="Default" track="inbound_track"/>\n'
            '<Siprec name="second" connectorName="missing"/>\n'
            "</Start></Response>"
        )
        status, body, _ = await w.post(w.path(".json"), {"Twiml": twiml})
        assert (status, body["code"]) == (400, 31940)
        assert body["message"].startswith("TwiML line 3, <Siprec>: unknown connector 'missing'")
        (first,) = w.call.recordings.values()
        assert first.name == "first" and first.status == "stopped"
        # The name is free again: the same document without the bad element runs.
        ok = '<Response><Start><Siprec name="first" connectorName="Default"/></Start></Response>'
        status, _, _ = await w.post(w.path(".json"), {"Twiml": ok})
        assert status == 200


async def test_twiml_stop_of_an_unknown_name_is_not_found() -> None:
    async with world() as w:
        twiml = '<Response><Stop><Siprec name="ghost"/></Stop></Response>'
        status, body, _ = await w.post(w.path(".json"), {"Twiml": twiml})
        assert (status, body["code"]) == (404, 20404) and "'ghost'" in body["message"]


# --- bad requests: status and Twilio error body ----------------------------------------------------------


async def test_error_body_shape_and_authentication() -> None:
    async with world() as w:
        status, body, headers = await w.post(w.path("/Siprec.json"), auth=(ACCOUNT, "wrong"))
        assert status == 401
        assert body == {
            "code": 20003,
            "message": body["message"],
            "more_info": "https://www.twilio.com/docs/errors/20003",
            "status": 401,
        }
        assert body["message"].startswith("Authenticate")
        assert headers["WWW-Authenticate"] == 'Basic realm="Twilio API"'
        for auth in (None, ("AC" + "1" * 32, TOKEN)):
            status, body, _ = await w.post(w.path("/Siprec.json"), auth=auth)
            assert (status, body["code"]) == (401, 20003)
        # A malformed Basic header is refused the same way.
        raw = {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe").decode()}
        async with w.http.post(w.base + w.path("/Siprec.json"), headers=raw) as response:
            assert response.status == 401
        # Right credentials, another account in the path: not found, as on Twilio.
        other = w.path("/Siprec.json", account="AC" + "2" * 32)
        status, body, _ = await w.post(other)
        assert (status, body["code"], body["status"]) == (404, 20404, 404)
        assert other in body["message"]
        assert w.call.recordings == {}


async def test_routes_answer_404_when_twilio_credentials_are_not_configured() -> None:
    async with world(ApiCredentials(tokens=("native",))) as w:
        status, body, _ = await w.post(w.path("/Siprec.json"))
        assert (status, body["code"]) == (404, 20404)
        status, _, _ = await w.post(w.path(".json"), {"Twiml": "<Response/>"}, auth=None)
        assert status == 404


@pytest.mark.parametrize(
    ("form", "status", "code", "words"),
    [
        ({"ConnectorName": "nope"}, 400, 31940, "unknown connector 'nope'"),
        ({"Track": "sideways"}, 400, 31941, "track 'sideways' is not one of"),
        ({"Name": "has space"}, 400, 400, "name 'has space' must be"),
        ({"StatusCallback": "ftp://example.com/x"}, 400, 11100, "not an absolute http(s) URL"),
        ({"StatusCallback": "/relative"}, 400, 11100, "not an absolute http(s) URL"),
        ({"StatusCallbackMethod": "PUT"}, 400, 400, "must be GET or POST"),
        ({"Parameter1.Value": "v"}, 400, 400, "Parameter1.Value needs a Parameter1.Name"),
        ({"Parameter100.Name": "n"}, 400, 400, "numbered 1 to 99"),
        ({"Parameter1.Name": "bad name", "Parameter1.Value": "v"}, 400, 400, "must be a token"),
        ({"Parameter1.Name": "A", "Parameter2.Name": "A"}, 400, 400, "'A' is given twice"),
    ],
)
async def test_bad_create_requests(form: dict[str, str], status: int, code: int, words: str) -> None:
    async with world() as w:
        got, body, _ = await w.post(w.path("/Siprec.json"), form)
        assert (got, body["code"], body["status"]) == (status, code, status), body
        assert words in body["message"]
        assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
        assert w.call.recordings == {}


async def test_duplicate_name_fifth_stream_unknown_call_and_unknown_siprec() -> None:
    async with world() as w:
        ok, first, _ = await w.post(w.path("/Siprec.json"), {"Name": "a"})
        assert ok == 201
        status, body, _ = await w.post(w.path("/Siprec.json"), {"Name": "a", "Track": "inbound_track"})
        assert (status, body["code"]) == (400, 400) and "already has a recording named 'a'" in body["message"]
        ok, _, _ = await w.post(w.path("/Siprec.json"), {"Name": "b"})  # streams 3 and 4
        assert ok == 201
        status, body, _ = await w.post(w.path("/Siprec.json"), {"Track": "inbound_track"})  # the fifth
        assert (status, body["code"]) == (400, 400) and "the limit is 4 per call" in body["message"]

        status, body, _ = await w.post(w.path("/Siprec.json", call_id="CA" + "9" * 32))
        assert (status, body["code"]) == (404, 20404) and "no call" in body["message"]
        status, body, _ = await w.post(w.path("/Siprec/SR" + "0" * 32 + ".json"), {"Status": "stopped"})
        assert (status, body["code"]) == (404, 20404)
        for form, words in (({}, "Missing required parameter Status"), ({"Status": "paused"}, "'paused'")):
            status, body, _ = await w.post(w.path(f"/Siprec/{first['sid']}.json"), form)
            assert (status, body["code"]) == (400, 400) and words in body["message"]
        assert w.call.recordings[first["sid"]].status != "stopped"

        # A stopped recording frees its streams and its name.
        status, body, _ = await w.post(w.path("/Siprec/a.json"), {"Status": "stopped"})
        assert (status, body["status"], body["sid"]) == (200, "stopped", first["sid"])
        status, again, _ = await w.post(w.path("/Siprec.json"), {"Name": "a", "Track": "inbound_track"})
        assert status == 201 and again["sid"] != first["sid"]
        # The name now finds the live one, not the stopped one.
        status, body, _ = await w.post(w.path("/Siprec/a.json"), {"Status": "stopped"})
        assert (status, body["sid"]) == (200, again["sid"])


async def test_a_closed_call_is_gone() -> None:
    async with world() as w:
        await w.call.close()
        status, body, _ = await w.post(w.path("/Siprec.json"))
        assert (status, body["code"]) == (404, 20404)
