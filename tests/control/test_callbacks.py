"""CallbackQueue against a real aiohttp server on 127.0.0.1, and the signing helpers against the
official ``twilio`` validator (test-only dependency).

Covered: GET/POST form/JSON on the wire, order per URL, retry rules (5xx/408/429/connection/
timeout retried, other 4xx not), backoff with jitter, a hanging server not delaying another URL,
a dead server with many URLs not holding the senders (attempts let go of their sender after the
patience, an unresponsive origin gets one attempt at a time, a slow origin never more attempts
than there are senders), bounded queue, close() flushing then cancelling, log redaction. Backoff
waits go through an injected ``sleep`` so no test sleeps for real beyond short per-attempt
timeouts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from siprec_src.control.callbacks import (
    CallbackQueue,
    Delivery,
    hmac_sha256_signature,
    request_body,
    request_url,
    sign_twilio,
    twilio_signature,
    verify_hmac_sha256_signature,
)
from siprec_src.control.settings import CallbackSettings

TOKEN = "12345"  # an auth token: the tests check it never reaches a log line


@dataclass
class Seen:
    method: str
    path: str
    url: str  # as the server reconstructs it (what a receiver validates signatures against)
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


MakeQueue = Callable[..., Awaitable[CallbackQueue]]


@dataclass
class CallbackServer:
    base: str
    seen: list[Seen] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    statuses: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to answer, in turn
    delays: dict[str, list[float]] = field(default_factory=dict)  # path -> seconds to wait, in turn
    in_flight: dict[str, int] = field(default_factory=dict)
    max_in_flight: dict[str, int] = field(default_factory=dict)
    max_in_flight_total: int = 0  # requests in flight at once, whatever their path

    def url(self, path: str) -> str:
        return self.base + path

    def on(self, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path == path]

    async def wait_for(self, path: str, count: int, timeout: float = 2.0) -> list[Seen]:
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: len(self.on(path)) >= count)
        return self.on(path)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.in_flight[path] = self.in_flight.get(path, 0) + 1
        self.max_in_flight[path] = max(self.max_in_flight.get(path, 0), self.in_flight[path])
        self.max_in_flight_total = max(self.max_in_flight_total, sum(self.in_flight.values()))
        try:
            body = await request.read()
            delays = self.delays.get(path)
            if delays:
                await asyncio.sleep(delays.pop(0))
            statuses = self.statuses.get(path)
            status = statuses.pop(0) if statuses else 200
            async with self.arrived:
                self.seen.append(
                    Seen(
                        method=request.method,
                        path=path,
                        url=str(request.url),
                        query=list(request.query.items()),
                        headers=dict(request.headers),
                        body=body,
                    )
                )
                self.arrived.notify_all()
            return web.Response(status=status, text="ok")
        finally:
            self.in_flight[path] -= 1


@pytest.fixture
async def server() -> AsyncIterator[CallbackServer]:
    state = CallbackServer(base="")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.base = f"http://{host}:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


class FakeSleep:
    """Records the backoff delays asked for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


@pytest.fixture
async def make_queue() -> AsyncIterator[MakeQueue]:
    made: list[CallbackQueue] = []

    async def make(
        settings: CallbackSettings | None = None, *, start: bool = True, **kw: object
    ) -> CallbackQueue:
        kw.setdefault("sleep", FakeSleep())
        queue = CallbackQueue(settings or CallbackSettings(timeout=1.0), **kw)  # type: ignore[arg-type]
        made.append(queue)
        if start:
            await queue.start()
        return queue

    yield make
    for queue in made:
        await queue.close(0.1)


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


# --- on the wire -------------------------------------------------------------------------------


async def test_get_appends_the_form_to_the_query_it_already_has(
    server: CallbackServer, make_queue: MakeQueue
) -> None:
    queue = await make_queue()
    form = (("CallSid", "CA1"), ("Status", "in progress"), ("Note", "a&b=c/é"))
    url = server.url("/status?account=AC1")
    assert queue.submit(Delivery(url=url, method="GET", form=form, headers=(("X-Custom", "v"),)))
    [seen] = await server.wait_for("/status", 1)
    assert seen.method == "GET"
    assert seen.query == [("account", "AC1"), *form]
    assert seen.body == b""
    assert seen.headers["X-Custom"] == "v"
    assert "Content-Type" not in seen.headers
    assert seen.url == request_url(Delivery(url=url, method="GET", form=form))
    await until(lambda: queue.delivered == 1)


async def test_post_form_is_urlencoded(server: CallbackServer, make_queue: MakeQueue) -> None:
    queue = await make_queue()
    form = (("RecordingSid", "RE1"), ("Status", "completed"), ("Text", "x y+z&é"))
    queue.submit(Delivery(url=server.url("/form?keep=1"), form=form, headers=(("X-A", "1"), ("X-B", "2"))))
    [seen] = await server.wait_for("/form", 1)
    assert seen.method == "POST"
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qsl(seen.body.decode("ascii")) == list(form)
    assert seen.query == [("keep", "1")]
    assert (seen.headers["X-A"], seen.headers["X-B"]) == ("1", "2")


async def test_post_json_is_json_and_signed_when_a_secret_is_set(
    server: CallbackServer, make_queue: MakeQueue
) -> None:
    queue = await make_queue(CallbackSettings(timeout=1.0, signing_secret="s3cret"))
    payload = {"event": "recording.started", "sid": "RE1", "who": "Zoë", "n": [1, 2]}
    queue.submit(Delivery(url=server.url("/native"), json=payload, event="recording.started"))
    [seen] = await server.wait_for("/native", 1)
    assert seen.method == "POST"
    assert seen.headers["Content-Type"] == "application/json"
    assert json.loads(seen.body) == payload
    header = seen.headers["X-Siprec-Signature"]
    assert verify_hmac_sha256_signature("s3cret", header, seen.body, now=time.time())
    assert not verify_hmac_sha256_signature("other", header, seen.body, now=time.time())
    assert not verify_hmac_sha256_signature("s3cret", header, seen.body + b" ", now=time.time())


async def test_json_without_a_secret_is_not_signed(server: CallbackServer, make_queue: MakeQueue) -> None:
    queue = await make_queue()
    queue.submit(Delivery(url=server.url("/plain"), json={"a": 1}))
    [seen] = await server.wait_for("/plain", 1)
    assert "X-Siprec-Signature" not in seen.headers


async def test_deliveries_to_one_url_keep_their_order(server: CallbackServer, make_queue: MakeQueue) -> None:
    queue = await make_queue(concurrency=8)
    # The first answers slowly: any parallel sending to the same URL would let later ones overtake it.
    server.delays["/ordered"] = [0.1, 0.02, 0, 0.03]
    server.statuses["/ordered"] = [200, 503, 200, 500]  # retries must not reorder either
    for n in range(12):
        assert queue.submit(Delivery(url=server.url("/ordered"), form=(("n", str(n)),), event=str(n)))
    seen = await server.wait_for("/ordered", 14)
    numbers = [dict(parse_qsl(s.body.decode()))["n"] for s in seen]
    assert numbers == ["0", "1", "1", "2", "2", *map(str, range(3, 12))]
    assert server.max_in_flight["/ordered"] == 1
    await until(lambda: queue.delivered == 12)
    assert queue.retried == 2


async def test_different_urls_go_out_in_parallel(server: CallbackServer, make_queue: MakeQueue) -> None:
    queue = await make_queue(concurrency=4)
    for n in range(4):
        server.delays[f"/p{n}"] = [0.2]
        queue.submit(Delivery(url=server.url(f"/p{n}")))
    started = time.monotonic()
    await until(lambda: queue.delivered == 4)
    assert time.monotonic() - started < 0.6  # four 0.2 s answers one after another take 0.8 s


# --- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
async def test_retryable_statuses_are_retried_then_delivered(
    server: CallbackServer, make_queue: MakeQueue, status: int
) -> None:
    sleep = FakeSleep()
    queue = await make_queue(
        CallbackSettings(timeout=1.0, retries=3, backoff=0.5), sleep=sleep, rng=random.Random(7)
    )
    server.statuses["/flaky"] = [status, status]
    queue.submit(Delivery(url=server.url("/flaky"), json={"k": "v"}))
    await until(lambda: queue.delivered == 1)
    assert len(server.on("/flaky")) == 3
    assert (queue.retried, queue.failed) == (2, 0)
    # backoff, then twice that, each jittered within ±50 %
    assert len(sleep.delays) == 2
    assert 0.25 <= sleep.delays[0] < 0.75
    assert 0.5 <= sleep.delays[1] < 1.5


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 301])
async def test_other_statuses_give_up_at_once(
    server: CallbackServer, make_queue: MakeQueue, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    sleep = FakeSleep()
    queue = await make_queue(CallbackSettings(timeout=1.0, retries=3), sleep=sleep)
    server.statuses["/no"] = [status]
    delivery = sign_twilio(
        Delivery(url=server.url("/no?token=tok-in-query"), form=(("a", "b"),), event="recording-completed"),
        TOKEN,
    )
    with caplog.at_level(logging.WARNING, logger="siprec_src.control.callbacks"):
        queue.submit(delivery)
        await until(lambda: queue.failed == 1)
    assert len(server.on("/no")) == 1
    assert (queue.retried, queue.delivered, sleep.delays) == (0, 0, [])
    [record] = caplog.records
    message = record.getMessage()
    assert "recording-completed" in message and "/no" in message and f"HTTP {status}" in message
    signature = dict(delivery.headers)["X-Twilio-Signature"]
    assert signature not in message and "tok-in-query" not in message and TOKEN not in message


async def test_retries_run_out(
    server: CallbackServer, make_queue: MakeQueue, caplog: pytest.LogCaptureFixture
) -> None:
    queue = await make_queue(CallbackSettings(timeout=1.0, retries=2))
    server.statuses["/down"] = [500, 500, 500, 500]
    with caplog.at_level(logging.WARNING, logger="siprec_src.control.callbacks"):
        queue.submit(Delivery(url=server.url("/down"), event="siprec-stopped"))
        await until(lambda: queue.failed == 1)
    assert len(server.on("/down")) == 3
    assert queue.retried == 2
    assert "after 3 attempt(s): HTTP 500" in caplog.records[-1].getMessage()


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there any more: connections are refused


async def test_connection_errors_are_retried_and_the_password_is_not_logged(
    make_queue: MakeQueue, caplog: pytest.LogCaptureFixture
) -> None:
    sleep = FakeSleep()
    queue = await make_queue(CallbackSettings(timeout=1.0, retries=2, backoff=0.1), sleep=sleep)
    url = f"http://user:pa55word@127.0.0.1:{closed_port()}/cb?secret=q"
    with caplog.at_level(logging.WARNING, logger="siprec_src.control.callbacks"):
        queue.submit(Delivery(url=url, event="siprec-failed"))
        await until(lambda: queue.failed == 1)
    assert (queue.retried, len(sleep.delays)) == (2, 2)
    message = caplog.records[-1].getMessage()
    assert "siprec-failed" in message and "/cb" in message and "Connect" in message
    assert "pa55word" not in message and "secret=q" not in message and "user" not in message


async def test_a_hanging_server_does_not_delay_another_url(
    server: CallbackServer, make_queue: MakeQueue
) -> None:
    queue = await make_queue(CallbackSettings(timeout=0.4, retries=0), concurrency=2)
    server.delays["/hang"] = [5.0]
    queue.submit(Delivery(url=server.url("/hang"), event="slow"))
    await until(lambda: server.in_flight.get("/hang") == 1, timeout=1.0)
    queue.submit(Delivery(url=server.url("/fast"), event="fast"))
    await server.wait_for("/fast", 1, timeout=0.35)
    assert server.in_flight["/hang"] == 1  # still hanging when the other arrived
    await until(lambda: queue.failed == 1, timeout=1.0)  # the per-attempt timeout ended it
    assert (queue.delivered, queue.failed) == (1, 1)


async def test_backoff_waits_hold_no_sender(server: CallbackServer, make_queue: MakeQueue) -> None:
    gate = asyncio.Event()

    async def gated_sleep(delay: float) -> None:
        await gate.wait()

    queue = await make_queue(CallbackSettings(timeout=1.0, retries=1), concurrency=1, sleep=gated_sleep)
    server.statuses["/retry"] = [500]
    queue.submit(Delivery(url=server.url("/retry")))
    await server.wait_for("/retry", 1)
    queue.submit(Delivery(url=server.url("/other")))
    await server.wait_for("/other", 1)  # the only sender was free while /retry waits to retry
    await until(lambda: queue.delivered == 1)
    assert len(server.on("/retry")) == 1
    gate.set()
    await until(lambda: queue.delivered == 2)


class BlackHole:
    """An origin that accepts connections and never answers; ``open`` counts those open now."""

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self.base = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> BlackHole:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        try:
            while await reader.read(65536):
                pass  # until the client gives up and closes
        finally:
            self.open -= 1
            writer.close()


async def test_a_dead_server_with_many_urls_does_not_hold_the_senders(
    server: CallbackServer, make_queue: MakeQueue
) -> None:
    # Callback URLs that name the call: one lane per call, all on one dead server. Before the
    # patience, two of them took both senders for the whole 5 s timeout.
    queue = await make_queue(CallbackSettings(timeout=5.0, retries=0), concurrency=2, patience=0.1)
    async with BlackHole() as hole:
        for n in range(6):
            queue.submit(Delivery(url=f"{hole.base}/cb?call={n}", event="dead"))
        await until(lambda: hole.accepted == 2, timeout=1.0)
        queue.submit(Delivery(url=server.url("/alive"), event="alive"))
        await server.wait_for("/alive", 1, timeout=1.0)  # not after the 5 s timeout
        await until(lambda: queue.delivered == 1, timeout=1.0)
        assert hole.accepted == 2  # the dead origin's attempts in flight: at most one per sender
        await queue.close(0)
    assert queue.failed == 6


async def test_an_unresponsive_origin_gets_one_attempt_at_a_time(make_queue: MakeQueue) -> None:
    queue = await make_queue(CallbackSettings(timeout=0.2, retries=2), concurrency=4, patience=0.05)
    async with BlackHole() as hole:
        for n in range(4):
            queue.submit(Delivery(url=f"{hole.base}/cb?call={n}"))
        await until(lambda: hole.open == 4, timeout=1.0)  # before any answer was missed: all four
        # The first four timed out (and the hole saw them closed): from now on, one at a time.
        await until(lambda: queue.retried >= 4 and hole.open <= 1, timeout=1.0)
        most = 0
        while queue.failed < 4:  # 8 more attempts, one at a time: about 1.6 s
            most = max(most, hole.open)
            await asyncio.sleep(0.005)
        assert most == 1
        assert hole.accepted == 12


async def test_a_slow_origin_never_has_more_attempts_than_senders(
    server: CallbackServer, make_queue: MakeQueue
) -> None:
    queue = await make_queue(CallbackSettings(timeout=2.0), concurrency=3, patience=0.02)
    for n in range(12):
        server.delays[f"/slow{n}"] = [0.15]
        queue.submit(Delivery(url=server.url(f"/slow{n}")))
    await until(lambda: queue.delivered == 12, timeout=3.0)
    # Each attempt let its sender go after 0.02 s, yet the origin never had more than three.
    assert server.max_in_flight_total == 3


# --- bounds and shutdown -----------------------------------------------------------------------


async def test_a_full_queue_refuses_and_counts(server: CallbackServer, make_queue: MakeQueue) -> None:
    queue = await make_queue(CallbackSettings(timeout=1.0, queue_size=3), start=False)
    accepted = [queue.submit(Delivery(url=server.url(f"/q{n % 2}"))) for n in range(5)]
    assert accepted == [True, True, True, False, False]
    assert (queue.dropped, queue.pending) == (2, 3)
    await queue.start()
    await until(lambda: queue.delivered == 3)
    assert queue.pending == 0
    assert queue.submit(Delivery(url=server.url("/q0")))  # room again


async def test_close_flushes_what_is_queued(server: CallbackServer, make_queue: MakeQueue) -> None:
    queue = await make_queue()
    for n in range(6):
        queue.submit(Delivery(url=server.url(f"/flush{n % 3}"), form=(("n", str(n)),)))
    server.delays["/flush0"] = [0.05, 0.05]
    await queue.close(2.0)
    assert queue.delivered == 6
    assert sum(len(server.on(f"/flush{n}")) for n in range(3)) == 6
    assert not queue.submit(Delivery(url=server.url("/late")))
    assert queue.dropped == 1


async def test_close_gives_up_after_its_timeout(
    server: CallbackServer, make_queue: MakeQueue, caplog: pytest.LogCaptureFixture
) -> None:
    queue = await make_queue(CallbackSettings(timeout=5.0))
    server.delays["/stuck"] = [5.0]
    queue.submit(Delivery(url=server.url("/stuck"), event="first"))
    queue.submit(Delivery(url=server.url("/stuck"), event="second"))
    queue.submit(Delivery(url=server.url("/fine"), event="third"))
    await server.wait_for("/fine", 1)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="siprec_src.control.callbacks"):
        await queue.close(0.2)
    assert 0.15 < time.monotonic() - started < 1.0
    assert (queue.delivered, queue.failed, queue.pending) == (1, 2, 0)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert all("shutdown" in m and "/stuck" in m for m in messages)
    assert "first" in messages[0] and "second" in messages[1]


async def test_close_without_start_reports_what_was_queued(make_queue: MakeQueue) -> None:
    queue = await make_queue(start=False)
    queue.submit(Delivery(url="http://127.0.0.1:9/never"))
    await queue.close(5.0)  # nothing could send it: no waiting
    assert queue.failed == 1


async def test_a_given_session_is_used_and_left_open(server: CallbackServer, make_queue: MakeQueue) -> None:
    async with aiohttp.ClientSession(headers={"User-Agent": "mine"}) as session:
        queue = await make_queue(session=session)
        queue.submit(Delivery(url=server.url("/session")))
        [seen] = await server.wait_for("/session", 1)
        await queue.close(1.0)
        assert seen.headers["User-Agent"] == "mine"
        assert not session.closed


async def test_submit_never_raises(make_queue: MakeQueue, caplog: pytest.LogCaptureFixture) -> None:
    queue = await make_queue(start=False)
    with caplog.at_level(logging.WARNING, logger="siprec_src.control.callbacks"):
        assert not queue.submit(Delivery(url="http://127.0.0.1/x", json={"bad": object()}))
        assert not queue.submit(Delivery(url="http://127.0.0.1/x", form=(("a", "b"),), json={"a": 1}))
        assert not queue.submit(Delivery(url="http://[::1/broken"))
    assert (queue.failed, queue.pending) == (3, 0)


# --- signatures --------------------------------------------------------------------------------

TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_PARAMS = (
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+12349013030"),
    ("Digits", "1234"),
    ("From", "+12349013030"),
    ("To", "+18005551212"),
)


def test_twilio_signature_matches_the_official_validator() -> None:
    validator = RequestValidator(TOKEN)
    ours = twilio_signature(TOKEN, TWILIO_URL, TWILIO_PARAMS)
    assert ours == validator.compute_signature(TWILIO_URL, dict(TWILIO_PARAMS))
    assert validator.validate(TWILIO_URL, dict(TWILIO_PARAMS), ours)
    # Order of the fields as given does not matter; names sort case-sensitively (Z before a).
    mixed = (("b", "2"), ("Z", "ü 3"), ("a", "1&x"), ("AccountSid", "AC"))
    assert twilio_signature(TOKEN, TWILIO_URL, mixed) == validator.compute_signature(TWILIO_URL, dict(mixed))
    assert twilio_signature(TOKEN, TWILIO_URL, mixed[::-1]) == twilio_signature(TOKEN, TWILIO_URL, mixed)
    # GET: the parameters are in the URL, nothing is appended.
    assert twilio_signature(TOKEN, TWILIO_URL, None) == validator.compute_signature(TWILIO_URL, {})
    assert twilio_signature(TOKEN, TWILIO_URL, ()) == validator.compute_signature(TWILIO_URL, {})
    assert twilio_signature("other", TWILIO_URL, TWILIO_PARAMS) != ours


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_signed_callbacks_validate_at_the_receiver(
    server: CallbackServer, make_queue: MakeQueue, method: str
) -> None:
    """End to end: what the receiver gets validates with Twilio's own library."""
    queue = await make_queue()
    form = (("RecordingSid", "RE1"), ("Status", "in-progress"), ("Note", "a b&c"))
    delivery = Delivery(url=server.url("/twilio?AccountSid=AC1"), method=method, form=form)
    queue.submit(sign_twilio(delivery, TOKEN))
    [seen] = await server.wait_for("/twilio", 1)
    params = dict(parse_qsl(seen.body.decode())) if method == "POST" else {}
    validator = RequestValidator(TOKEN)
    assert validator.validate(seen.url, params, seen.headers["X-Twilio-Signature"])
    assert not RequestValidator("wrong").validate(seen.url, params, seen.headers["X-Twilio-Signature"])


def test_request_url_always_has_a_path() -> None:
    assert request_url(Delivery(url="http://example.com")) == "http://example.com/"
    assert request_url(Delivery(url="http://example.com?x=1", method="GET", form=(("a", "é"),))) == (
        "http://example.com/?x=1&a=%C3%A9"
    )
    assert request_url(Delivery(url="http://h/a b/%7e?", method="get", form=(("a", "1"),))) == (
        "http://h/a%20b/~?a=1"
    )


def test_signing_covers_the_url_without_userinfo() -> None:
    delivery = Delivery(url="https://u:p@example.com/cb?x=1#frag", method="GET", form=(("a", "1"),))
    assert request_url(delivery) == "https://u:p@example.com/cb?x=1&a=1"
    header = dict(sign_twilio(delivery, TOKEN).headers)["X-Twilio-Signature"]
    assert RequestValidator(TOKEN).validate("https://example.com/cb?x=1&a=1", {}, header)


def test_request_body_shapes() -> None:
    assert request_body(Delivery(url="http://h/", method="GET", form=(("a", "1"),))) is None
    assert request_body(Delivery(url="http://h/", form=(("a", "1 2"),))) == (
        b"a=1+2",
        "application/x-www-form-urlencoded",
    )
    assert request_body(Delivery(url="http://h/", method="GET", json={"a": "é"})) == (
        '{"a":"é"}'.encode(),
        "application/json",
    )
    assert request_body(Delivery(url="http://h/")) is None


def test_hmac_sha256_signature_format_and_verification() -> None:
    body = b'{"event":"recording.stopped"}'
    header = hmac_sha256_signature("k", 1_700_000_000, body)
    # Known answer, from: printf '%s' '1700000000.{"event":"recording.stopped"}' \
    #                       | openssl dgst -sha256 -hmac k
    assert header == "t=1700000000,v1=18958fbc6fdfc9a318b147dec5769c70f5ed96f6bc76f7e9c57ff78d8e6b0094"
    assert hmac_sha256_signature("k", 1_700_000_000, body.decode()) == header
    assert verify_hmac_sha256_signature("k", header, body, now=1_700_000_100)
    assert not verify_hmac_sha256_signature("k", header, body, now=1_700_000_400)  # too old: a replay
    assert not verify_hmac_sha256_signature(
        "k", header.replace("t=1700000000", "t=1700000001"), body, now=1.7e9
    )
    assert not verify_hmac_sha256_signature("k", "garbage", body, now=1.7e9)
    assert not verify_hmac_sha256_signature("k", "t=x,v1=00", body, now=1.7e9)
    assert not verify_hmac_sha256_signature("k", "t=1700000000", body, now=1.7e9)
    assert not verify_hmac_sha256_signature("k", "t=1700000000,v1=é", body, now=1.7e9)
    # Unknown parts (a future v2) are ignored; any matching v1 is enough.
    assert verify_hmac_sha256_signature("k", f"{header},v2=abc,v1=00", body, now=1.7e9)
