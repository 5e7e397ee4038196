"""The sidecar's HTTP application: the OpenAPI document against the handlers, fuzzing, and
what every shape shares (/healthz, /metrics, /openapi.json, error bodies, the 500 handler,
the per-client request rate limit on a fake clock, the optional /metrics token).

The document and the handlers agree three ways: the routes are the same set; each operation
checks its body against the schema the document names for it; and the body checker accepts
exactly what an independent JSON Schema validator (jsonschema-rs) accepts. Then schemathesis
fuzzes every operation from the document (valid and invalid requests, path parameters
naming a real call and recording or random ones) on a real server: no 5xx, every response
documented and matching its schema, every schema-invalid request refused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import aiohttp
import jsonschema_rs
import pytest
import requests
import schemathesis
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siprec_src.control import http, native, openapi
from siprec_src.control.http import METRICS, RATE_LIMITER, ClientIdentity, RateLimiter, build_app
from siprec_src.control.metrics import Registry
from siprec_src.control.settings import ApiCredentials, ControlSettings
from siprec_src.control.sidecar import Sidecar
from siprec_src.media.spec import Leg
from siprec_src.recording.engine import Engine
from siprec_src.synthetic import SyntheticLeg
from tests.control.serving import serve
from tests.control.test_native import ALICE, BOB, TOKEN, Api, assert_error, running_api

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SERVED_OUTSIDE_V1 = {"/healthz", "/metrics", "/openapi.json"}


def _served(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/v1/") or path in SERVED_OUTSIDE_V1:
            routes.add((route.method, path))
    return routes


def _documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }


async def test_every_route_is_documented_and_every_documented_route_is_served() -> None:
    app = build_app(Sidecar(Engine()), Registry())
    served = _served(app)
    assert served == _documented(openapi.document())
    assert ("POST", "/v1/calls/{call_id}/recordings") in served  # the comparison is not vacuous
    # Every /v1 operation is behind the bearer scheme; the three others are open.
    for path, item in openapi.document()["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                assert ("security" in operation) == (path in SERVED_OUTSIDE_V1), (method, path)


def test_the_document_is_valid_openapi_3_1() -> None:
    schema = schemathesis.openapi.from_dict(openapi.document("http://127.0.0.1:8080"))
    schema.validate()
    broken = openapi.document()
    broken["paths"]["/v1/calls"]["post"]["responses"] = "none"
    with pytest.raises(Exception):  # noqa: B017 - proves validate() can fail
        schemathesis.openapi.from_dict(broken).validate()


async def test_each_operation_checks_its_body_with_the_schema_the_document_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    used: list[str] = []
    original = native.check_body

    def spy(schema: str, value: object) -> dict[str, Any]:
        used.append(schema)
        return original(schema, value)

    monkeypatch.setattr(native, "check_body", spy)
    document = openapi.document()
    async with running_api() as api:
        call = await api.new_call(call_id="c1")
        recording = await api.new_recording("c1", name="r1")
        assert call and recording
        for path, item in document["paths"].items():
            for method, operation in item.items():
                if method == "parameters" or "requestBody" not in operation:
                    continue
                ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                used.clear()
                concrete = path.replace("{call_id}", "c1").replace("{recording}", "r1")
                status, body, _ = await api.call(method.upper(), concrete, {"not-a-field": 1})
                assert status == 400 and body["error"]["code"] in ("unknown_field", "missing_field"), body
                assert used == [ref.rsplit("/", 1)[1]], (method, path)


# --- the checker and an independent JSON Schema validator ------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
_TEXT = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from("\n\r\t\x00\x7f\ufffe<> :.[]@+-0123456789"),
    max_size=20,
)
_VALID = {
    "CallCreate": {
        "call_id": "c-1",
        "from": {"aor": "sip:a@example.com", "name": "A"},
        "to": {"aor": "tel:+15551230002"},
        "codec": "PCMA",
        "sip_session_id": "ab" * 16,
        "legs": {"inbound": {"source": "192.0.2.1:4000"}, "outbound": {"source": "[2001:db8::1]:4002"}},
    },
    "ParticipantsUpdate": {"from": {"aor": "sip:a@b"}, "to": {"aor": "sip:c@d", "name": ""}},
    "RecordingCreate": {
        "connector": "main",
        "track": "inbound_track",
        "name": "r.1",
        "params": {"CustomerId": "42"},
        "params_in_metadata": True,
        "secure": False,
        "session_timeout": 90,
        "status_callback": "https://cb.example.com/x?y=1",
        "status_callback_method": "GET",
    },
    "RecordingUpdate": {"status": "paused"},
}


def _paths(value: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, (*prefix, key)))
    return found


def _replace(value: Any, path: tuple[str, ...], new: object, delete: bool) -> Any:
    if not path:
        return new
    copy = dict(value)
    if len(path) == 1 and delete:
        copy.pop(path[0], None)
    else:
        copy[path[0]] = _replace(copy.get(path[0], {}), path[1:], new, delete)
    return copy


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[str, object]:
    name = draw(st.sampled_from(sorted(_VALID)))
    body: object = _VALID[name]
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(body)[1:] or [()]  # a field, or the body itself once it is not an object
        path = draw(st.sampled_from(paths))
        new = draw(_TEXT | _TEXT | _JSON | st.integers(-5, 200) | st.floats(0, 100, allow_nan=False))
        body = _replace(body, path, new, delete=draw(st.booleans()) and bool(path))
    return name, body


_DOC = openapi.document()
_VALIDATORS = {
    name: jsonschema_rs.validator_for(
        {"$ref": f"#/components/schemas/{name}", "components": _DOC["components"]}
    )
    for name in _VALID
}


@settings(max_examples=1500, deadline=None, database=None, derandomize=True)
@given(_mutated())
def test_the_body_checker_accepts_exactly_what_json_schema_accepts(case: tuple[str, object]) -> None:
    name, body = case
    try:
        openapi.check_body(name, body)
        accepted = True
    except native.LocalProtocolError as exc:
        accepted = False
        assert exc.code in ("invalid_type", "missing_field", "unknown_field", "invalid_value")
        assert exc.field is None or exc.field.split(".")[0] in _VALID[name] or exc.code == "unknown_field"
    assert accepted == _VALIDATORS[name].is_valid(body), (name, body)


def test_the_checker_names_fields_and_takes_integral_floats_as_integers() -> None:
    body = openapi.check_body("RecordingCreate", {"connector": "main", "session_timeout": 120.0})
    assert body["session_timeout"] == 120 and isinstance(body["session_timeout"], int)
    with pytest.raises(native.LocalProtocolError) as caught:
        openapi.check_body("CallCreate", {"from": ALICE, "to": {**BOB, "aor": "sip:x@y\n"}})
    assert caught.value.field == "to.aor" and caught.value.code == "invalid_value"
    for valid in _VALID.values():  # the examples the property test starts from are valid
        assert valid


# --- what the shapes share -----------------------------------------------------------------------------


async def test_healthz_says_503_while_shutting_down_and_new_calls_are_refused() -> None:
    async with running_api() as api:
        await api.new_call()
        status, body, _ = await api.call("GET", "/healthz", token=None)
        assert status == 200 and body == {
            "status": "ok",
            "calls": 1,
            "recordings": 0,
            "media_workers": {"configured": 0, "alive": 0},  # in-process media
        }
        api.sidecar.shutting_down = True
        status, body, _ = await api.call("GET", "/healthz", token=None)
        assert status == 503 and body["status"] == "shutting_down"
        status, body, _ = await api.call("POST", "/v1/calls", {"from": ALICE, "to": BOB})
        assert_error(status, body, 503, "shutting_down")
        api.sidecar.shutting_down = False


async def test_metrics_are_prometheus_text() -> None:
    async with running_api() as api:
        call = await api.new_call()
        await api.new_recording(call["call_id"])
        status, raw, headers = await api.call("GET", "/metrics", token=None)
        assert status == 200 and headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = raw.decode()
        for family, kind in (
            ("siprec_calls_active", "gauge"),
            ("siprec_recordings_active", "gauge"),
            ("siprec_streams_active", "gauge"),
            ("siprec_fork_packets_total", "counter"),
            ("siprec_fork_bytes_total", "counter"),
            ("siprec_fork_dropped_packets_total", "counter"),
            ("siprec_recordings_started_total", "counter"),
            ("siprec_srs_invite_responses_total", "counter"),
            ("siprec_callbacks_total", "counter"),
            ("siprec_http_requests_total", "counter"),
        ):
            assert f"# TYPE {family} {kind}\n" in text, family
        assert "siprec_calls_active 1\n" in text and "siprec_streams_active 2\n" in text
        assert 'siprec_http_requests_total{method="POST",route="/v1/calls",status="201"} 1\n' in text


async def test_fork_totals_survive_the_end_of_their_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "_RETIRE_AFTER", 0.0)  # forget ended recordings at once
    async with running_api() as api:
        call = await api.new_call()
        recording = await api.new_recording(call["call_id"], track="inbound_track")
        await api.wait_status(call["call_id"], recording["sid"], "in-progress")
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            tap = call["legs"]["inbound"]["rtp"].rsplit(":", 1)
            leg = SyntheticLeg(Leg.INBOUND)
            for _ in range(30):
                sender.sendto(leg.next_packet(), (tap[0], int(tap[1])))
            async with asyncio.timeout(5):
                while not (api.srs.sinks and len(api.srs.sinks[0].packets) == 30):
                    await asyncio.sleep(0.01)
        finally:
            sender.close()
        scrapes = [(await api.call("GET", "/metrics", token=None))[1].decode()]
        status, _, _ = await api.call("DELETE", f"/v1/calls/{call['call_id']}")
        assert status == 204
        scrapes += [(await api.call("GET", "/metrics", token=None))[1].decode() for _ in range(2)]
        for text in scrapes:
            assert "siprec_fork_packets_total 30\n" in text and "siprec_fork_bytes_total 4800\n" in text
        assert not api.app[METRICS]._seen  # the ended recording is forgotten, its counts kept


async def test_openapi_json_names_the_server_and_the_configured_connectors() -> None:
    async with running_api() as api:
        status, body, _ = await api.call("GET", "/openapi.json", token=None)
        assert status == 200 and body["servers"] == [{"url": api.url}]
        schemas = body["components"]["schemas"]
        assert schemas["RecordingCreate"]["properties"]["connector"]["enum"] == ["main"]
        assert schemas["CallCreate"]["properties"]["codec"]["enum"] == ["PCMU", "PCMA"]


async def test_an_unexpected_exception_is_a_logged_500_with_the_error_shape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sidecar = Sidecar(Engine(), ControlSettings(credentials=ApiCredentials(tokens=(TOKEN,))))
    app = build_app(sidecar, Registry())

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{host}:{port}/broken") as response:
                body = await response.json()
            assert response.status == 500
            assert body == {
                "error": {
                    "status": 500,
                    "code": "internal_error",
                    "message": "internal error (logged)",
                    "field": None,
                }
            }
            async with session.get(f"http://{host}:{port}/nowhere") as response:
                assert response.status == 404 and (await response.json())["error"]["code"] == "not_found"
    finally:
        await runner.cleanup()
    assert app[METRICS].unhandled._only_child().value() == 1
    assert any("unhandled error on GET /broken" in r.getMessage() and r.exc_info for r in caplog.records)


# --- fuzzing from the document ----------------------------------------------------------------------


@contextmanager
def _api_in_a_thread() -> Iterator[Api]:
    """The API on its own event loop thread, so a synchronous client (schemathesis) can drive it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="api-under-fuzz", daemon=True)
    thread.start()
    # Fuzzed bodies name arbitrary callback URLs: never send them anywhere.
    manager = running_api(send_callbacks=False, max_calls=1000)
    try:
        api = asyncio.run_coroutine_threadsafe(manager.__aenter__(), loop).result(10)
        # The fuzzer sends as fast as it can: 429s would only make its statistics depend on speed.
        api.app[RATE_LIMITER].rate = 0
        try:
            yield api
        finally:
            asyncio.run_coroutine_threadsafe(manager.__aexit__(None, None, None), loop).result(20)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


FUZZ_CALL = "fuzz-call"
FUZZ_RECORDING = "fuzz-rec"


def _ensure_fuzz_call(session: requests.Session, url: str) -> None:
    """A call FUZZ_CALL with a live recording FUZZ_RECORDING and room for more streams."""
    answer = session.get(f"{url}/v1/calls/{FUZZ_CALL}", headers=AUTH, timeout=10)
    if answer.status_code == 200:
        live = [r for r in answer.json()["recordings"] if r["status"] not in ("stopped", "failed")]
        if any(r["name"] == FUZZ_RECORDING for r in live) and len(live) < 3:
            return
        session.delete(f"{url}/v1/calls/{FUZZ_CALL}", headers=AUTH, timeout=10)
    created = session.post(
        f"{url}/v1/calls", json={"call_id": FUZZ_CALL, "from": ALICE, "to": BOB}, headers=AUTH, timeout=10
    )
    assert created.status_code == 201, created.text
    started = session.post(
        f"{url}/v1/calls/{FUZZ_CALL}/recordings",
        json={"connector": "main", "name": FUZZ_RECORDING, "track": "inbound_track"},
        headers=AUTH,
        timeout=10,
    )
    assert started.status_code == 201, started.text


def test_fuzzing_the_native_api_from_its_document_finds_no_server_error() -> None:
    document = openapi.document(connectors=["main"], codecs=["PCMU", "PCMA"])
    schema = schemathesis.openapi.from_dict(document)
    calls = 0
    with _api_in_a_thread() as api, requests.Session() as session:
        statuses: dict[int, int] = {}
        for result in schema.get_all_operations():
            operation = result.ok()
            fixed = {
                name: value
                for name, value in (("call_id", FUZZ_CALL), ("recording", FUZZ_RECORDING))
                if f"{{{name}}}" in operation.path
            }
            modes = [schemathesis.GenerationMode.POSITIVE]
            if "requestBody" in operation.definition.raw:
                modes.append(schemathesis.GenerationMode.NEGATIVE)
            for mode in modes:
                strategy = operation.as_strategy(generation_mode=mode)
                if fixed:
                    strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed) | strategy

                @settings(
                    max_examples=40,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=strategy)
                def fuzz(case: schemathesis.Case) -> None:
                    nonlocal calls
                    _ensure_fuzz_call(session, api.url)
                    response = case.call(base_url=api.url, session=session, headers=AUTH, timeout=10)
                    calls += 1
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    assert response.status_code < 500, (
                        case.method,
                        case.formatted_path,
                        case.body,
                        response.text,
                    )
                    case.validate_response(
                        response,
                        # A schema-valid body may still name an unknown connector or a duplicate:
                        # 400/409 by design, which this check would call a rejection.
                        excluded_checks=[schemathesis.checks.positive_data_acceptance],
                        headers=AUTH,
                    )
                    if response.status_code == 201 and case.path == "/v1/calls":
                        created = response.json()["call_id"]
                        if created != FUZZ_CALL:
                            session.delete(f"{api.url}/v1/calls/{created}", headers=AUTH, timeout=10)

                fuzz()
        assert app_unhandled(api) == 0
    # The fuzzing reached past authentication and the body checks into the engine.
    assert calls > 300
    assert statuses.get(201, 0) > 10 and statuses.get(200, 0) > 10 and statuses.get(400, 0) > 20, statuses


def app_unhandled(api: Api) -> float:
    return api.app[METRICS].unhandled._only_child().value()


def test_ecma_and_python_read_the_patterns_alike() -> None:
    # A final newline must not slip through a pattern ending in $ (Python's $ would allow it).
    for name, bad in (("CallCreate", {"from": {"aor": "sip:a@b\n"}, "to": BOB}),):
        with pytest.raises(native.LocalProtocolError):
            openapi.check_body(name, bad)
        assert not _VALIDATORS[name].is_valid(bad)
    assert json.dumps(openapi.document())  # the document is plain JSON
    logging.getLogger(__name__).debug("patterns checked")


# --- request rate -------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_bucket_takes_a_burst_then_the_rate_on_a_fake_clock() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, 3, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    assert limiter.acquire("a") == pytest.approx(0.5)  # one token comes back in 1/2 s
    assert limiter.acquire("b") == 0.0  # another client, its own bucket
    clock.now += 0.25
    assert limiter.acquire("a") == pytest.approx(0.25)  # half a token: refused, nothing taken
    clock.now += 0.25
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") == pytest.approx(0.5)
    clock.now += 3600  # an idle hour refills the bucket to the burst, not beyond
    assert [limiter.acquire("a") > 0 for _ in range(4)] == [False, False, False, True]
    clock.now -= 10  # a clock that steps back gives nothing back
    assert limiter.acquire("a") > 0
    off = RateLimiter(0, 1, clock=clock)
    assert all(off.acquire("a") == 0.0 for _ in range(1000)) and off.clients == 0


def test_the_rate_limiter_forgets_full_buckets_first_then_the_least_recent() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1.0, 2, clock=clock, max_clients=100)
    for n in range(60):
        limiter.acquire(f"idle-{n}")
    clock.now += 10  # the idle clients' buckets are full again: the same as no bucket
    assert limiter.acquire("busy") == 0.0 and limiter.acquire("busy") == 0.0
    for n in range(60):
        limiter.acquire(f"new-{n}")
    assert limiter.clients == 61  # busy and the 60 new ones; every idle one forgotten
    assert limiter.acquire("busy") > 0  # a flood of new clients did not reset the busy one
    crowded = RateLimiter(1.0, 1, clock=clock, max_clients=10)
    for n in range(25):
        assert crowded.acquire(f"c{n}") == 0.0
        assert crowded.clients <= 10
    assert crowded.acquire("c24") > 0  # the most recent clients are the ones kept


def test_a_client_is_its_credential_else_its_address_and_an_ipv6_host_its_64() -> None:
    identity = ClientIdentity(
        ApiCredentials(tokens=("tok-a", "tok-b"), twilio_account_sid="AC1", twilio_auth_token="tw")
    )

    def client(remote: str, authorization: str | None = None) -> str:
        transport = mock.Mock()
        transport.get_extra_info.return_value = (remote, 40000)
        headers = {"Authorization": authorization} if authorization else {}
        return identity.of(make_mocked_request("GET", "/v1/calls", headers=headers, transport=transport))

    assert client("192.0.2.1", "Bearer tok-a") == client("192.0.2.2", "bearer  tok-a ")
    assert client("192.0.2.1", "Bearer tok-a") != client("192.0.2.1", "Bearer tok-b")
    twilio = "Basic " + base64.b64encode(b"AC1:tw").decode()
    assert client("192.0.2.1", twilio) == client("198.51.100.7", twilio) == "credential:twilio"
    # Unknown credentials count against the address, as no credential does.
    assert (
        client("192.0.2.1", "Bearer guess-1") == client("192.0.2.1", "Bearer guess-2") == "address:192.0.2.1"
    )
    assert client("::ffff:192.0.2.1") == "address:192.0.2.1"
    assert client("2001:db8:1:2::5") == client("2001:db8:1:2:ffff::9") == "address:2001:db8:1:2::/64"
    assert client("2001:db8:1:3::5") != client("2001:db8:1:2::5")


TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "twilio-auth-token-for-rate"
TELNYX_KEY = "KEY-telnyx-for-rate"
OTHER_TOKEN = "another-native-token-0123"


async def test_over_the_rate_a_client_gets_429_in_its_shape_with_retry_after() -> None:
    clock = FakeClock()
    credentials = ApiCredentials(
        tokens=(TOKEN, OTHER_TOKEN),
        twilio_account_sid=TWILIO_SID,
        twilio_auth_token=TWILIO_TOKEN,
        telnyx_api_key=TELNYX_KEY,
    )
    sidecar = Sidecar(Engine(), ControlSettings(credentials=credentials, rate_limit=1.0, rate_burst=2))
    registry = Registry()
    app = build_app(sidecar, registry, clock=clock)
    runner, url = await serve(app)
    twilio_calls = f"{url}/2010-04-01/Accounts/{TWILIO_SID}/Calls/c1/Siprec.json"
    telnyx_start = f"{url}/v2/calls/c1/actions/siprec_start"
    basic = {"Authorization": "Basic " + base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()}
    try:
        async with aiohttp.ClientSession() as session:

            async def status(method: str, where: str, **kwargs: Any) -> int:
                async with session.request(method, where, **kwargs) as response:
                    await response.read()
                    return response.status

            async def refused(method: str, where: str, **kwargs: Any) -> tuple[dict[str, Any], str]:
                async with session.request(method, where, **kwargs) as response:
                    assert response.status == 429, await response.text()
                    assert response.content_type == "application/json"
                    return await response.json(), response.headers["Retry-After"]

            mine = {"Authorization": f"Bearer {TOKEN}"}
            assert [await status("GET", f"{url}/v1/calls", headers=mine) for _ in range(2)] == [200, 200]
            body, retry_after = await refused("GET", f"{url}/v1/calls", headers=mine)
            assert retry_after == "1"
            assert body["error"]["code"] == "rate_limited" and body["error"]["status"] == 429
            assert body["error"]["field"] is None and "rate_limit" in body["error"]["message"]
            # Another token is another client, though from the same address.
            other = {"Authorization": f"Bearer {OTHER_TOKEN}"}
            assert await status("GET", f"{url}/v1/calls", headers=other) == 200
            # No credential, or a made-up one: the address's bucket, shared; a fresh
            # credential buys no fresh budget.
            assert await status("GET", f"{url}/v1/calls") == 401
            assert await status("GET", f"{url}/v1/calls", headers={"Authorization": "Bearer x1"}) == 401
            await refused("GET", f"{url}/v1/calls", headers={"Authorization": "Bearer x2"})
            await refused("GET", f"{url}/openapi.json")
            # Load balancers probe /healthz: never limited.
            assert {await status("GET", f"{url}/healthz") for _ in range(5)} == {200}
            # The Twilio and Telnyx shapes answer in their own error format.
            for _ in range(2):
                assert await status("POST", twilio_calls, headers=basic, data={"ConnectorName": "x"}) == 404
            body, retry_after = await refused(
                "POST", twilio_calls, headers=basic, data={"ConnectorName": "x"}
            )
            assert body["code"] == 20429 and body["status"] == 429 and retry_after == "1"
            telnyx = {"Authorization": f"Bearer {TELNYX_KEY}"}
            for _ in range(2):
                assert await status("POST", telnyx_start, headers=telnyx, json={}) in (404, 422)
            body, _ = await refused("POST", telnyx_start, headers=telnyx, json={})
            assert body["errors"][0]["code"] == "10011" and body["errors"][0]["title"] == "Too many requests"
            # A second later the first client has one token again, and one only.
            clock.now += 1.0
            assert await status("GET", f"{url}/v1/calls", headers=mine) == 200
            await refused("GET", f"{url}/v1/calls", headers=mine)
    finally:
        await runner.cleanup()
    text = registry.render()
    assert 'siprec_http_requests_total{method="GET",route="/v1/calls",status="429"} 3\n' in text


# --- /metrics behind a token ------------------------------------------------------------------------


async def test_metrics_token_guards_metrics_and_the_document_says_so() -> None:
    credentials = ApiCredentials(tokens=(TOKEN,), metrics_token="scraper-token-42")
    app = build_app(Sidecar(Engine(), ControlSettings(credentials=credentials)), Registry())
    runner, url = await serve(app)
    try:
        async with aiohttp.ClientSession() as session:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic c2NyYXBlcg=="}):
                async with session.get(f"{url}/metrics", headers=headers) as response:
                    body = await response.json()
                    assert response.status == 401 and body["error"]["code"] == "unauthorized"
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
            for token in ("scraper-token-42", TOKEN):
                async with session.get(
                    f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}
                ) as response:
                    assert response.status == 200 and "siprec_calls_active 0" in await response.text()
            async with session.get(f"{url}/healthz") as response:
                assert response.status == 200  # still open
            async with session.get(f"{url}/openapi.json") as response:
                document = await response.json()
    finally:
        await runner.cleanup()
    schemathesis.openapi.from_dict(document).validate()
    metrics = document["paths"]["/metrics"]["get"]
    assert "security" not in metrics and "401" in metrics["responses"]  # the default: Bearer
    assert openapi.document()["paths"]["/metrics"]["get"]["security"] == []  # open without the token
