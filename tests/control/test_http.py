"""The sidecar's HTTP application: the OpenAPI document against the handlers, fuzzing, and
what every shape shares (/healthz, /metrics, /openapi.json, error bodies, the 500 handler).

The document and the handlers agree three ways: the routes are the same set; each operation
checks its body against the schema the document names for it; and the body checker accepts
exactly what an independent JSON Schema validator (jsonschema-rs) accepts. Then schemathesis
fuzzes every operation from the document (valid and invalid requests, path parameters
naming a real call and recording or random ones) on a real server: no 5xx, every response
documented and matching its schema, every schema-invalid request refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import jsonschema_rs
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siprec_src.control import http, native, openapi
from siprec_src.control.http import METRICS, build_app
from siprec_src.control.metrics import Registry
from siprec_src.control.settings import ApiCredentials, ControlSettings
from siprec_src.control.sidecar import Sidecar
from siprec_src.media.spec import Leg
from siprec_src.recording.engine import Engine
from siprec_src.synthetic import SyntheticLeg
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
        assert status == 200 and body == {"status": "ok", "calls": 1, "recordings": 0}
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
