"""Security defaults (issue 9 §4): each default the sidecar ships with, proved on real sockets.

Each test starts from configuration text as an operator writes it (``parse_config``), so what is
proved is the shipped default, not a setting a test chose:

- **TLS is verified on every client path**: SIP over TLS toward an SRS, ``wss://`` streams,
  ``https://`` status callbacks. A peer whose certificate chains to a CA the machine does not
  trust is refused and nothing crosses; the same setup with that CA configured works, so the
  refusal is the verification and not a broken setup.
- **Secrets are never logged nor echoed**: the real ``serve`` runs in process at DEBUG, in text
  and in JSON log format (media in process, then in a worker process), through calls whose tap
  legs arrive as SRTP with keys the API caller gave, SRTP recordings toward an SRS over TLS,
  the Twilio and Telnyx shapes, WebSocket streams with a token in the URL, custom parameters
  and Plivo extra headers, status callbacks whose URL holds a password and a token and that fail
  (so they are logged), wrong credentials and a bad key. Then every byte logged (the log
  handler's output, the captured records), every error body, ``/metrics``, ``/healthz``,
  ``/openapi.json`` and the API's own answers are searched for each secret, and for the SRTP
  key material in base64 (whole and a 16-character prefix) and in hex.
- **No anonymous API**: with no credentials every route but ``/healthz``, ``/metrics`` and
  ``/openapi.json`` answers 401 or 404; a config file without credentials does not start.
- **Tap ports take only the expected or the latched source**, through the API, on real sockets.
- **Limits answer a clear error**: ``max_calls`` (503), 4 forked streams per call (409), the
  global ``max_streams`` (409), ``max_recordings`` (``Sidecar.record``), ``max_body_bytes``
  (413), ``rate_limit`` (429 with Retry-After), each naming the field or the limit.
- **Callbacks are signed**: a config that enables the native or Telnyx API without a
  signing secret does not start; native callbacks and Telnyx webhooks carry a valid
  ``X-Siprec-Signature``.
- **Unsolicited SIP** to the SRC creates nothing: OPTIONS 200, INVITE 403, others 405/481.

Not covered here: the token bucket's arithmetic on a fake clock and the per-shape 429 bodies
(tests/control/test_http.py), each config key's checks (tests/test_config.py).
Runtime: about 10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from siprec_src.app import API_CODECS, add_serve_arguments, serve, serve_main
from siprec_src.config import SidecarConfig, parse_config
from siprec_src.control.callbacks import CallbackQueue, Delivery, verify_hmac_sha256_signature
from siprec_src.control.http import build_app, register_callback_metrics
from siprec_src.control.metrics import Registry
from siprec_src.control.sidecar import Sidecar
from siprec_src.media.spec import Leg, SrtpKeys
from siprec_src.media.srtp import SrtpSender, generate_key_params
from siprec_src.recording.call import Party
from siprec_src.recording.engine import Engine, RecordingError
from siprec_src.recording.events import AttemptFailed
from siprec_src.signaling.transport import ListenSpec, TlsConfig
from siprec_src.synthetic import SyntheticLeg
from tests.control.serving import serve as serve_app
from tests.pki import Pki, make_pki
from tests.recording.minisrs import MiniSrs
from tests.recording.wsserver import WsServer

TOKEN = "sec-api-token-7Hq2Xk9d"
SIGNING_SECRET = "sec-signing-secret-Zr6Yp"
ALICE = {"aor": "sip:+15551230001@pbx.example.com", "name": "Alice"}
BOB = {"aor": "sip:agent-7@pbx.example.com", "name": "Agent 7"}
SUITE = "AES_CM_128_HMAC_SHA1_80"
TIMEOUT = 10.0

BASE = f"""
[api.auth]
tokens = ["{TOKEN}"]

[callbacks]
signing_secret = "{SIGNING_SECRET}"
timeout = 1
retries = 0

[sip]
listen = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]

[media]
workers = 0
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA this machine does not trust, and a certificate for localhost / 127.0.0.1 from it."""
    return make_pki(tmp_path_factory.mktemp("security-pki"), "security")


def config_of(text: str) -> SidecarConfig:
    return parse_config(text, file="security.toml", environ={})


def tls_srs(pki: Pki) -> MiniSrs:
    return MiniSrs(listen=ListenSpec("tls", "127.0.0.1", 0), tls=TlsConfig(pki.server_cert, pki.server_key))


def server_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    return context


_HELD_PORTS: list[socket.socket] = []


def dead_port() -> int:
    """A loopback TCP port bound and never listened on, held until the test ends: connections
    to it are refused at once, and nobody can take it meanwhile (a port merely probed free was
    once given to the sidecar's own API by the kernel, which then logged the callback's URL)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _HELD_PORTS.append(sock)
    return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def _release_dead_ports() -> Iterator[None]:
    yield
    while _HELD_PORTS:
        _HELD_PORTS.pop().close()


async def settle(condition: Any, timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@dataclass
class Stack:
    """The sidecar's pieces as ``serve`` wires them, around one config, on loopback."""

    url: str
    sidecar: Sidecar
    engine: Engine
    http: aiohttp.ClientSession
    queue: CallbackQueue

    async def call(
        self, method: str, path: str, body: object = None, *, token: str | None = TOKEN, **kwargs: Any
    ) -> tuple[int, Any, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            kwargs["json"] = body
        async with asyncio.timeout(TIMEOUT):
            async with self.http.request(method, self.url + path, headers=headers, **kwargs) as response:
                raw = await response.read()
                parsed = json.loads(raw) if response.content_type == "application/json" else raw
                return response.status, parsed, response.headers


@asynccontextmanager
async def stack(config: SidecarConfig) -> AsyncIterator[Stack]:
    async with Engine(config.engine) as engine:
        queue = CallbackQueue(config.control.callbacks)
        await queue.start()
        sidecar = Sidecar(
            engine, config.control, submit=queue.submit, codecs=API_CODECS, streams=config.streams
        )
        registry = Registry()
        app = build_app(sidecar, registry)
        register_callback_metrics(registry, queue)
        runner, url = await serve_app(app)
        try:
            async with aiohttp.ClientSession() as http:
                yield Stack(url, sidecar, engine, http, queue)
        finally:
            await runner.cleanup()
            await queue.close(1.0)


# --- TLS is verified by default ---------------------------------------------------------------------


async def test_sip_over_tls_toward_an_srs_is_verified_by_default(pki: Pki) -> None:
    async with tls_srs(pki) as srs:
        connector = f'[connectors.srs]\nsrs = ["{srs.uri()}"]\nsecure = true\nattempt_timeout = 3\n'
        default = config_of(BASE + connector)
        assert default.engine.tls is None  # no [sip.tls]: the transport's TlsConfig() defaults
        assert TlsConfig().verify
        async with Engine(default.engine) as engine:
            call = await engine.open_call(caller=Party(ALICE["aor"]), callee=Party(BOB["aor"]), tap=False)
            recording = await call.record(connector="srs")
            with pytest.raises(RecordingError):
                await recording.wait_started(TIMEOUT)
            failures = [e for e in recording.events if isinstance(e, AttemptFailed)]
            assert failures and all("certificate verif" in e.reason for e in failures), failures
            await call.close()
        assert srs.invites == []  # nothing crossed an unverified connection

        trusting = config_of(BASE + f'[sip.tls]\nca = "{pki.ca}"\n' + connector)
        async with Engine(trusting.engine) as engine:
            call = await engine.open_call(caller=Party(ALICE["aor"]), callee=Party(BOB["aor"]), tap=False)
            recording = await call.record(connector="srs")
            await recording.wait_started(TIMEOUT)
            await call.close()
        assert len(srs.invites) == 1


async def test_wss_streams_are_verified_by_default(pki: Pki) -> None:
    async with WsServer(ssl_context=server_context(pki)) as service:
        outcomes = []
        for streams in ("", f'[streams]\nca = "{pki.ca}"\n'):
            async with stack(config_of(BASE + streams)) as api:
                status, call, _ = await api.call("POST", "/v1/calls", {"from": ALICE, "to": BOB})
                assert status == 201, call
                path = f"/v1/calls/{call['call_id']}/streams"
                status, stream, _ = await api.call("POST", path, {"url": service.url(host="localhost")})
                assert status == 201, stream
                async with asyncio.timeout(TIMEOUT):
                    while stream["status"] == "starting":
                        await asyncio.sleep(0.02)
                        _, stream, _ = await api.call("GET", f"{path}/{stream['sid']}")
                outcomes.append((stream["status"], stream["error"] or "", len(service.connections)))
    (refused, refusal, seen_then), (accepted, _, seen_after) = outcomes
    assert refused == "failed" and "CERTIFICATE_VERIFY_FAILED" in refusal
    assert seen_then == 0  # the service never got a WebSocket from the unverified attempt
    assert accepted == "in-progress" and seen_after == 1


async def test_https_callbacks_are_verified_by_default(pki: Pki) -> None:
    received: list[web.Request] = []

    async def receive(request: web.Request) -> web.Response:
        received.append(request)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/cb", receive)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(pki))
    await site.start()
    port = runner.addresses[0][1]
    settings = config_of(BASE).control.callbacks
    delivery = Delivery(f"https://localhost:{port}/cb", json={"event": "recording.started"}, event="x")
    try:
        default = CallbackQueue(settings)  # as serve builds it
        await default.start()
        assert default.submit(delivery)
        await default.close(TIMEOUT)
        assert (default.delivered, default.failed) == (0, 1) and received == []

        trusting_tls = ssl.create_default_context(cafile=pki.ca)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting_tls)) as session:
            trusting = CallbackQueue(settings, session=session)
            await trusting.start()
            assert trusting.submit(delivery)
            await trusting.close(TIMEOUT)
        assert (trusting.delivered, trusting.failed) == (1, 0) and len(received) == 1
        header = received[0].headers["X-Siprec-Signature"]  # and it is signed
        assert verify_hmac_sha256_signature(
            SIGNING_SECRET, header, b'{"event":"recording.started"}', now=time.time()
        )
    finally:
        await runner.cleanup()


# --- secrets are never logged nor echoed ---------------------------------------------------------------

API_SECRET = "sec-api-token-Jc5Rt1"
TWILIO_SID = "AC" + "5" * 32
TWILIO_TOKEN = "sec-twilio-auth-token-Vb3Nn"
TELNYX_KEY = "sec-telnyx-key-Qm8Ww"
METRICS_TOKEN = "sec-metrics-token-Lw4Ee"
CALLBACK_SECRET = "sec-signing-secret-Gh2Aa"
SRS_PASSWORD = "sec-srs-digest-password-Kf1Oo"
CALLBACK_PASSWORD = "sec-callback-userinfo-Pa5Ss"
CALLBACK_TOKEN = "sec-callback-query-Tq3Dd"
STREAM_URL_TOKEN = "sec-stream-url-token-Ur2Ff"
STREAM_PARAMETER = "sec-stream-parameter-Sp7Gg"
PLIVO_HEADER = "secPlivoHeaderXh9Hh"  # Plivo extraHeaders values are [A-Za-z0-9]


def key_forms(key_params: str) -> list[str]:
    """How SRTP key material could show up: the base64 of key||salt, a prefix of it, its hex."""
    text = key_params.removeprefix("inline:").split("|")[0]
    return [text, text[:16], base64.b64decode(text).hex()]


def secrets_config(srs: MiniSrs, secure: MiniSrs, pki: Pki, log_format: str, workers: int) -> str:
    return f"""
[log]
level = "debug"
format = "{log_format}"

[api]
host = "127.0.0.1"
port = 0

[api.auth]
tokens = ["{API_SECRET}"]
twilio_account_sid = "{TWILIO_SID}"
twilio_auth_token = "{TWILIO_TOKEN}"
telnyx_api_key = "{TELNYX_KEY}"
metrics_token = "{METRICS_TOKEN}"

[callbacks]
signing_secret = "{CALLBACK_SECRET}"
timeout = 1
retries = 0

[sip]
listen = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]

[sip.tls]
ca = "{pki.ca}"

[media]
workers = {workers}

[connectors.plain]
srs = ["{srs.uri()}"]
attempt_timeout = 3

[connectors.secure]
srs = ["{secure.uri()}"]
secure = true
attempt_timeout = 3
username = "recorder"
password = "{SRS_PASSWORD}"
"""


@pytest.mark.parametrize(("log_format", "workers"), [("text", 0), ("json", 1)])
async def test_no_secret_is_logged_or_echoed(
    log_format: str,
    workers: int,
    pki: Pki,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    # The test's own WebSocket service logs its requests (URL token included) to aiohttp.access;
    # the sidecar's server logs to siprec_src.access (app.serve), which stays searched.
    monkeypatch.setattr(logging.getLogger("aiohttp.access"), "disabled", True)
    tap_keys = {Leg.INBOUND: generate_key_params(SUITE), Leg.OUTBOUND: generate_key_params(SUITE)}
    refusing = dead_port()
    dead = f"http://cbuser:{CALLBACK_PASSWORD}@127.0.0.1:{refusing}/cb?key={CALLBACK_TOKEN}"
    answers: list[bytes] = []  # error bodies, metrics and the other answers the API gave
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.bind(("127.0.0.1", 0))
    async with MiniSrs() as srs, tls_srs(pki) as secure_srs, WsServer() as service:
        config = config_of(secrets_config(srs, secure_srs, pki, log_format, workers))
        stop = asyncio.Event()
        urls: list[str] = []
        task = asyncio.create_task(serve(config, stop=stop, ready=urls.append))
        await settle(lambda: urls or task.done())
        url = urls[0]
        bearer = {"Authorization": f"Bearer {API_SECRET}"}
        basic = "Basic " + base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
        async with aiohttp.ClientSession() as http:

            async def ask(method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
                kwargs.setdefault("headers", bearer)
                async with asyncio.timeout(TIMEOUT):
                    async with http.request(method, url + path, **kwargs) as response:
                        body = await response.read()
                        if response.status >= 400:
                            answers.append(body)
                        return response.status, body

            legs: dict[str, dict[str, Any]] = {
                leg.value: {"srtp": {"suite": SUITE, "key": key}} for leg, key in tap_keys.items()
            }
            legs["inbound"]["source"] = f"127.0.0.1:{pbx.getsockname()[1]}"
            status, body = await ask("POST", "/v1/calls", json={"from": ALICE, "to": BOB, "legs": legs})
            assert status == 201, body
            call = json.loads(body)
            call_id = call["call_id"]
            assert call["legs"]["inbound"]["srtp"] == {"suite": SUITE}  # the suite, never the key
            recordings = f"/v1/calls/{call_id}/recordings"
            status, body = await ask(
                "POST", recordings, json={"connector": "secure", "name": "sec", "status_callback": dead}
            )
            assert status == 201, body
            sid = json.loads(body)["sid"]
            async with asyncio.timeout(TIMEOUT):
                while json.loads((await ask("GET", f"{recordings}/{sid}"))[1])["status"] != "in-progress":
                    await asyncio.sleep(0.02)

            # The PBX's copies arrive as SRTP with the keys the API caller gave; a few forged ones too.
            taps = {leg: call["legs"][leg.value]["rtp"].rsplit(":", 1) for leg in tap_keys}
            for leg, key in tap_keys.items():
                sender, synthetic = SrtpSender(SrtpKeys(SUITE, key)), SyntheticLeg(leg)
                host, port = taps[leg]
                for _ in range(20):
                    pbx.sendto(sender.protect(synthetic.next_packet()), (host, int(port)))
            forged = SrtpSender(SrtpKeys(SUITE, generate_key_params(SUITE)))
            for _ in range(3):
                pbx.sendto(
                    forged.protect(SyntheticLeg(Leg.INBOUND).next_packet()),
                    (taps[Leg.INBOUND][0], int(taps[Leg.INBOUND][1])),
                )
            await settle(
                lambda: len(secure_srs.sinks) == 2 and all(len(s.packets) == 20 for s in secure_srs.sinks)
            )

            twilio_path = f"/2010-04-01/Accounts/{TWILIO_SID}/Calls/{call_id}/Siprec.json"
            form = {"ConnectorName": "plain", "Track": "inbound_track", "StatusCallback": dead}
            status, body = await ask("POST", twilio_path, data=form, headers={"Authorization": basic})
            assert status == 201, body
            telnyx_path = f"/v2/calls/{call_id}/actions/siprec_start"
            start = {"connector_name": "plain", "siprec_track": "outbound_track", "webhook_url": dead}
            status, body = await ask(
                "POST", telnyx_path, json=start, headers={"Authorization": f"Bearer {TELNYX_KEY}"}
            )
            assert status == 200, body

            # WebSocket streams on a second call: a token in the URL, custom parameters, Plivo
            # extra headers, and one that cannot connect (its failure is logged).
            status, body = await ask("POST", "/v1/calls", json={"from": ALICE, "to": BOB})
            streams = f"/v1/calls/{json.loads(body)['call_id']}/streams"
            token_url = service.url(path=f"/media?token={STREAM_URL_TOKEN}")
            for stream in (
                {"url": token_url, "parameters": {"Auth": STREAM_PARAMETER}},
                {"url": token_url, "format": "plivo", "extra_headers": f"auth={PLIVO_HEADER}"},
                {"url": f"wss://127.0.0.1:{dead_port()}/x?token={STREAM_URL_TOKEN}"},
            ):
                status, body = await ask("POST", streams, json=stream)
                assert status == 201, body
            await settle(lambda: len(service.connections) == 2)
            connection = await service.connection(0)
            await connection.wait_for(lambda: bool(connection.events("start")))
            start_message = connection.events("start")[0]
            assert start_message["start"]["customParameters"] == {"Auth": STREAM_PARAMETER}  # it went out

            # Wrong credentials, a refused key, /metrics without its token: error bodies.
            assert (await ask("GET", "/v1/calls", headers={"Authorization": "Bearer nope"}))[0] == 401
            wrong = "Basic " + base64.b64encode(f"{TWILIO_SID}:nope".encode()).decode()
            assert (await ask("POST", twilio_path, data=form, headers={"Authorization": wrong}))[0] == 401
            assert (await ask("POST", telnyx_path, json=start, headers={"Authorization": "Bearer n"}))[
                0
            ] == 401
            near = tap_keys[Leg.INBOUND][:-3] + "!!!"  # one stray character in a real key
            short = tap_keys[Leg.INBOUND][:30]
            for key in (near, short):
                bad = {"from": ALICE, "to": BOB, "legs": {"inbound": {"srtp": {"suite": SUITE, "key": key}}}}
                status, body = await ask("POST", "/v1/calls", json=bad)
                assert status == 400 and json.loads(body)["error"]["field"] == "legs.inbound.srtp.key", body
            assert (await ask("GET", "/metrics", headers={}))[0] == 401
            metrics = await ask("GET", "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert metrics[0] == 200 and b"siprec_recordings_started_total 3" in metrics[1]
            answers.append(metrics[1])
            answers.append((await ask("GET", "/healthz", headers={}))[1])
            answers.append((await ask("GET", "/openapi.json", headers={}))[1])
            listed = (await ask("GET", "/v1/calls"))[1]  # shows stream URLs as given: not searched for them
            await settle(lambda: "undeliverable" in caplog.text)
            assert logging.getLogger().getEffectiveLevel() == logging.DEBUG  # serve set [log] level
            stop.set()
            assert await asyncio.wait_for(task, TIMEOUT) == 0
    pbx.close()

    offered = [
        key.decode()
        for invite in secure_srs.invites
        for key in re.findall(rb"inline:([A-Za-z0-9+/=]+)", bytes(invite.body))
    ]
    assert len(offered) >= 2  # our SRTP keys toward the SRS, one per suite per stream
    secrets = [
        API_SECRET,
        TWILIO_TOKEN,
        basic.split()[1],
        TELNYX_KEY,
        METRICS_TOKEN,
        CALLBACK_SECRET,
        SRS_PASSWORD,
        CALLBACK_PASSWORD,
        CALLBACK_TOKEN,
        STREAM_URL_TOKEN,
        STREAM_PARAMETER,
        PLIVO_HEADER,
    ]
    for key in (*tap_keys.values(), *offered, *(s.key for s in secure_srs.sinks if s.key)):
        secrets += key_forms(key)

    captured = capfd.readouterr()
    handler_output = captured.err + captured.out
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    records = "\n".join(formatter.format(record) for record in caplog.records)
    # The runs went through the paths that log: the failed callbacks (their URL without
    # userinfo and query), the access log; and the format is the one asked for.
    assert f"to http://127.0.0.1:{refusing}/cb undeliverable" in records
    assert "siprec_src.access" in records
    lines = [line for line in handler_output.splitlines() if line.strip()]
    assert len(lines) > 10
    if log_format == "json":
        assert all(isinstance(json.loads(line), dict) for line in lines if line.startswith("{"))
        assert sum(line.startswith("{") for line in lines) > 10
    for secret in secrets:
        assert secret not in handler_output, f"{secret!r} written to the log"
        assert secret not in records, f"{secret!r} in a log record"
        for answer in answers:
            assert secret.encode() not in answer, f"{secret!r} in an answer: {answer[:300]!r}"
        if secret not in (STREAM_URL_TOKEN,):
            assert secret.encode() not in listed, f"{secret!r} in GET /v1/calls"


# --- no anonymous API ---------------------------------------------------------------------------------


async def test_without_credentials_every_route_is_refused_and_a_config_does_not_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = build_app(Sidecar(Engine()), Registry())  # ControlSettings(): no credentials at all
    runner, url = await serve_app(app)
    seen: dict[int, int] = {}
    try:
        async with aiohttp.ClientSession() as http:
            for route in app.router.routes():
                resource = route.resource
                if resource is None or route.method == "HEAD":
                    continue
                concrete = re.sub(r"\{[^}]*\}", "x", resource.canonical)
                for headers in (
                    {},
                    {"Authorization": "Bearer guess"},
                    {"Authorization": "Basic Z3Vlc3M6eA=="},
                ):
                    async with http.request(
                        route.method, url + concrete, headers=headers, data=b"{}"
                    ) as response:
                        await response.read()
                        if concrete in ("/healthz", "/metrics", "/openapi.json"):
                            assert response.status == 200, concrete
                        else:
                            assert response.status in (401, 404), (route.method, concrete, response.status)
                            assert response.content_type == "application/json"
                            seen[response.status] = seen.get(response.status, 0) + 1
    finally:
        await runner.cleanup()
    assert seen.get(404, 0) > 20  # every shape is disabled: none answered as if enabled

    path = tmp_path / "anonymous.toml"
    path.write_text('[api]\nport = 0\n[connectors.main]\nsrs = ["sip:srs@127.0.0.1:5099"]\n')
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert serve_main(parser.parse_args(["--config", str(path)])) == 2
    err = capsys.readouterr().err
    assert "api.auth: no API credentials" in err and "not started" in err


# --- tap ports --------------------------------------------------------------------------------------------


async def test_tap_ports_take_only_the_expected_or_the_latched_source() -> None:
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.bind(("127.0.0.1", 0))
    intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    intruder.bind(("127.0.0.1", 0))
    injected = b"\x80\x00\x00\x01" + b"\x00" * 8 + b"\xee" * 160  # RTP, PT 0, a payload nobody sends
    try:
        async with MiniSrs() as srs:
            config = config_of(BASE + f'[connectors.main]\nsrs = ["{srs.uri()}"]\n')
            async with stack(config) as api:
                legs = {"inbound": {"source": f"127.0.0.1:{pbx.getsockname()[1]}"}}  # outbound: latched
                status, call, _ = await api.call(
                    "POST", "/v1/calls", {"from": ALICE, "to": BOB, "legs": legs}
                )
                assert status == 201, call
                path = f"/v1/calls/{call['call_id']}"
                status, recording, _ = await api.call("POST", f"{path}/recordings", {"connector": "main"})
                assert status == 201, recording
                sid = recording["sid"]
                async with asyncio.timeout(TIMEOUT):
                    while (await api.call("GET", f"{path}/recordings/{sid}"))[1]["status"] != "in-progress":
                        await asyncio.sleep(0.02)
                taps = {leg: call["legs"][leg]["rtp"].rsplit(":", 1) for leg in ("inbound", "outbound")}
                inbound = (taps["inbound"][0], int(taps["inbound"][1]))
                outbound = (taps["outbound"][0], int(taps["outbound"][1]))
                for _ in range(5):
                    intruder.sendto(injected, inbound)  # first, but not the expected source
                synthetic = {leg: SyntheticLeg(leg) for leg in (Leg.INBOUND, Leg.OUTBOUND)}
                for _ in range(10):
                    pbx.sendto(synthetic[Leg.INBOUND].next_packet(), inbound)
                    pbx.sendto(synthetic[Leg.OUTBOUND].next_packet(), outbound)

                async def legs_now() -> dict[str, Any]:
                    return dict((await api.call("GET", path))[1]["legs"])

                async with asyncio.timeout(TIMEOUT):
                    while (await legs_now())["outbound"]["packets"] < 10:  # the PBX is latched
                        await asyncio.sleep(0.02)
                for _ in range(5):
                    intruder.sendto(injected, outbound)
                    intruder.sendto(injected, inbound)
                async with asyncio.timeout(TIMEOUT):
                    while (await legs_now())["outbound"]["rejected"] < 5:
                        await asyncio.sleep(0.02)
                final = await legs_now()
                await settle(lambda: len(srs.sinks) == 2 and all(len(s.packets) >= 10 for s in srs.sinks))
                await asyncio.sleep(0.1)  # anything injected would have arrived by now
        assert final["inbound"]["packets"] == 10 and final["inbound"]["rejected"] == 10
        assert final["outbound"]["packets"] == 10 and final["outbound"]["rejected"] == 5
        assert [len(sink.packets) for sink in srs.sinks] == [10, 10]
        assert all(packet.payload != injected[12:] for sink in srs.sinks for packet in sink.packets)
    finally:
        pbx.close()
        intruder.close()


# --- limits -------------------------------------------------------------------------------------------------


async def test_each_limit_answers_a_clear_error_naming_it() -> None:
    async with MiniSrs() as srs, WsServer() as service:
        limits = "max_calls = 2\nmax_recordings = 3\nmax_streams = 1\nmax_body_bytes = 1024\n"
        config = config_of(BASE + f'[connectors.main]\nsrs = ["{srs.uri()}"]\n[api]\n{limits}')
        async with stack(config) as api:
            first = (await api.call("POST", "/v1/calls", {"from": ALICE, "to": BOB}))[1]["call_id"]
            second = (await api.call("POST", "/v1/calls", {"from": ALICE, "to": BOB}))[1]["call_id"]
            status, body, _ = await api.call("POST", "/v1/calls", {"from": ALICE, "to": BOB})
            assert status == 503 and body["error"]["code"] == "call_limit"
            assert "max_calls" in body["error"]["message"]

            recordings = f"/v1/calls/{first}/recordings"
            for name in ("a", "b"):
                status, body, _ = await api.call("POST", recordings, {"connector": "main", "name": name})
                assert status == 201, body
            status, body, _ = await api.call(
                "POST", recordings, {"connector": "main", "track": "inbound_track"}
            )
            assert status == 409 and body["error"]["code"] == "stream_limit"
            assert body["error"]["field"] == "track" and "4 per call" in body["error"]["message"]

            streams = f"/v1/calls/{second}/streams"
            status, body, _ = await api.call("POST", streams, {"url": service.url()})
            assert status == 201, body
            status, body, _ = await api.call("POST", streams, {"url": service.url(), "name": "two"})
            assert status == 409 and body["error"]["code"] == "stream_limit", body
            assert body["error"]["field"] is None and "max_streams = 1" in body["error"]["message"]

            status, body, _ = await api.call(
                "POST",
                "/v1/calls",
                data=b'{"pad": "' + b"x" * 2000 + b'"}',
                headers={"Content-Type": "application/json"},
            )
            assert status == 413 and body["error"]["code"] == "body_too_large"
            assert "max_body_bytes" in body["error"]["message"]

            # The sidecar-wide recording budget ([api] max_recordings): a third, then no fourth.
            one_leg = {"connector": "main", "track": "inbound_track"}
            status, body, _ = await api.call("POST", f"/v1/calls/{second}/recordings", one_leg)
            assert status == 201, body
            status, body, _ = await api.call("POST", f"/v1/calls/{second}/recordings", one_leg)
            assert status == 409 and body["error"]["code"] == "stream_limit", body
            assert body["error"]["field"] is None and "max_recordings = 3" in body["error"]["message"]

        rated = config_of(BASE + "[api]\nrate_limit = 0.01\nrate_burst = 2\n")  # 2, then one per 100 s
        async with stack(rated) as api:
            assert [(await api.call("GET", "/v1/calls"))[0] for _ in range(2)] == [200, 200]
            status, body, headers = await api.call("GET", "/v1/calls")
            assert status == 429 and body["error"]["code"] == "rate_limited"
            assert "rate_limit" in body["error"]["message"] and 90 <= int(headers["Retry-After"]) <= 100
            assert (await api.call("GET", "/healthz", token=None))[0] == 200


# --- callbacks are signed --------------------------------------------------------------------------------


async def test_callbacks_are_signed_or_the_sidecar_does_not_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "unsigned.toml"
    path.write_text(f'[api.auth]\ntokens = ["{TOKEN}"]\ntelnyx_api_key = "k"\n')
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert serve_main(parser.parse_args(["--config", str(path)])) == 2
    err = capsys.readouterr().err
    assert "callbacks.signing_secret: required with api.auth.tokens and api.auth.telnyx_api_key" in err

    received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def receive(request: web.Request) -> web.Response:
        received.put_nowait((request.headers.get("X-Siprec-Signature", ""), await request.read()))
        return web.Response(text="ok")

    sink = web.Application()
    sink.router.add_post("/cb", receive)
    sink_runner, sink_url = await serve_app(sink)
    try:
        async with MiniSrs() as srs:
            with_telnyx = BASE.replace(
                f'tokens = ["{TOKEN}"]', f'tokens = ["{TOKEN}"]\ntelnyx_api_key = "{TELNYX_KEY}"'
            )
            config = config_of(with_telnyx + f'[connectors.main]\nsrs = ["{srs.uri()}"]\n')
            async with stack(config) as api:
                call_id = (await api.call("POST", "/v1/calls", {"from": ALICE, "to": BOB}))[1]["call_id"]
                native = {"connector": "main", "track": "inbound_track", "status_callback": f"{sink_url}/cb"}
                assert (await api.call("POST", f"/v1/calls/{call_id}/recordings", native))[0] == 201
                telnyx = {
                    "connector_name": "main",
                    "siprec_track": "outbound_track",
                    "webhook_url": f"{sink_url}/cb",
                }
                status, body, _ = await api.call(
                    "POST", f"/v2/calls/{call_id}/actions/siprec_start", telnyx, token=TELNYX_KEY
                )
                assert status == 200, body
                deliveries = [await asyncio.wait_for(received.get(), TIMEOUT) for _ in range(2)]
    finally:
        await sink_runner.cleanup()
    kinds = set()
    for header, body in deliveries:
        assert verify_hmac_sha256_signature(SIGNING_SECRET, header, body, now=time.time()), body
        document = json.loads(body)
        kinds.add("telnyx" if "data" in document else "native")
    assert kinds == {"native", "telnyx"}


# --- unsolicited SIP -------------------------------------------------------------------------------------


async def test_unsolicited_sip_requests_to_the_src_create_nothing() -> None:
    async with stack(config_of(BASE)) as api:
        assert api.engine.ua is not None
        address = api.engine.ua.transport.local_address("udp")
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            peer.setblocking(False)
            port = peer.getsockname()[1]
            finals = {}
            for n, method in enumerate(("OPTIONS", "INVITE", "MESSAGE", "REGISTER", "BYE")):
                request = (
                    f"{method} sip:src@127.0.0.1 SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-probe-{n}\r\n"
                    f"Max-Forwards: 70\r\nFrom: <sip:probe@198.51.100.1>;tag=p{n}\r\n"
                    f"To: <sip:src@127.0.0.1>\r\nCall-ID: probe-{n}@198.51.100.1\r\n"
                    f"CSeq: 1 {method}\r\nContact: <sip:probe@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n"
                )
                peer.sendto(request.encode(), address)
                async with asyncio.timeout(TIMEOUT):
                    while True:
                        status = int((await loop.sock_recv(peer, 65535)).split(b" ", 2)[1])
                        if status >= 200:
                            finals[method] = status
                            break
    assert finals == {"OPTIONS": 200, "INVITE": 403, "MESSAGE": 405, "REGISTER": 405, "BYE": 481}
    assert api.engine.calls == {} and api.engine.recordings == {}
