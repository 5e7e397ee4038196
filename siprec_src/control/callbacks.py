"""Status callbacks: what one delivery is (filled in by the API shape) and the queue that sends them.

The API shapes (native, Twilio, Telnyx) turn recording events into ``Delivery`` values (URL,
method, body, signature header); ``CallbackQueue`` sends them from a bounded queue with
retries and backoff, so a slow or dead callback server never delays media or signaling.

How the queue is built, and why:

- **One lane per URL, a small pool of senders.** Deliveries are grouped by their ``url``; each
  lane is a FIFO whose head is the only one of that URL in flight, so a recording's
  ``started`` can never arrive after its ``stopped`` (nor overtake it through a retry: the head
  keeps its place while it waits to retry). A fixed pool of sender tasks (8 by default) takes
  *lanes*, not deliveries, from one ready queue: different URLs go out in parallel. Waiting to
  retry holds no sender (a timer re-queues the lane), so backoff never starves the other URLs.
  We chose this over one task per host because callback URLs are many and short-lived (one per
  customer or per call), and a per-host task set would grow without bound; the pool bounds it.
- **A dead server never holds the pool.** Callback URLs usually name the call
  (``/cb?call=…``), so one dead server has as many lanes as it has live calls, and if each of
  its attempts held a sender for ``settings.timeout`` it would take the whole pool and every
  other server's callbacks would wait behind it (found by ``tests/robustness``: a call whose
  server was healthy got no callback for 12 s). So an attempt holds its sender for at most
  ``patience`` (0.5 s; healthy servers answer in milliseconds) and then finishes on its own,
  still bounded by ``settings.timeout``; and an *origin* (scheme, host, port) has at most
  ``concurrency`` attempts in flight, and one while it is *unresponsive* (its last attempt got no
  HTTP answer: timed out, or no connection), so a dead server costs one connection and, every
  ``settings.timeout``, ``patience`` of one sender. Lanes of an origin at its limit wait aside
  and are re-queued as its attempts end. Attempts in flight in all are bounded too
  (``_IN_FLIGHT_PER_SENDER`` per sender, the size of the connection pool), so the sockets that
  dead servers can hold stay bounded whatever the number of origins.
- **Bounded.** At most ``settings.queue_size`` deliveries are held (waiting, in flight or
  waiting to retry); ``submit`` refuses more at once and counts them in ``dropped``.
- **Retries.** 2xx is delivered. 5xx, 408, 429, connection errors and per-attempt timeouts are
  retried up to ``settings.retries`` times after ``settings.backoff`` · 2^n seconds, with
  ±50 % jitter; any other status (4xx, an unfollowed 3xx) gives up at once: the receiver said
  no and asking again will not change its mind. Redirects are not followed (the signature
  covers the URL).
- **Logs.** An undeliverable callback is logged once with its event, the URL without query or
  userinfo, and the last error; headers (signatures) and tokens are never logged.

Signatures:

- Twilio-shaped callbacks carry ``X-Twilio-Signature`` (``twilio_signature``, ``sign_twilio``):
  base64 HMAC-SHA1 keyed with the account auth token over the URL, then each POST parameter's
  name and value sorted by name. For a GET the URL already holds the parameters.
- Native JSON callbacks carry ``X-Siprec-Signature: t=<unix seconds>,v1=<hex>`` when
  ``settings.signing_secret`` is set: ``v1`` = hex HMAC-SHA256(secret, f"{t}.{body}") over the
  exact body bytes sent. The queue signs each attempt with a fresh ``t`` so a retry is not
  rejected as a replay; receivers verify with ``verify_hmac_sha256_signature`` (or the same
  three lines in any language) and reject a ``t`` older than a few minutes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from siprec_src.control.settings import CallbackSettings
from siprec_src.errors import LocalProtocolError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One HTTP request to make. ``form`` goes in the query string for GET, the body for POST;
    ``json`` (exclusive with ``form``) is always a POST body."""

    url: str
    method: str = "POST"
    form: tuple[tuple[str, str], ...] | None = None
    json: object | None = None
    headers: tuple[tuple[str, str], ...] = ()
    event: str = ""  # what it reports (for logs and metrics), e.g. "siprec-started"


# --- how a delivery goes on the wire (shared by the queue and the signers) ------------------------

JSON_CONTENT_TYPE = "application/json"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
SIPREC_SIGNATURE_HEADER = "X-Siprec-Signature"
_USER_AGENT = "siprec-src"
_MAX_RESPONSE_BYTES = 64 * 1024  # read (and discard) at most this much of an answer, so keep-alive works
_MAX_BACKOFF = 300.0  # seconds; a large ``retries`` must not park a delivery for hours
_RETRYABLE_STATUSES = frozenset({408, 429})  # and every 5xx
PATIENCE = 0.5  # seconds an attempt may hold a sender before it goes on without one
_IN_FLIGHT_PER_SENDER = 4  # attempts in flight (holding a sender or not) per sender, at most


def request_method(delivery: Delivery) -> str:
    """``POST`` for a JSON body (``Delivery`` says JSON is always a POST body), else the delivery's method."""
    return "POST" if delivery.json is not None else delivery.method.upper()


def request_url(delivery: Delivery) -> str:
    """The URL exactly as it is requested: percent-encoded, fragment dropped, and for a GET with
    ``form`` the form appended to the query string the URL already has (``&`` or ``?``).

    Signatures are computed over this string (without any ``user:password@``), so what is signed
    is byte for byte what the receiver sees in its request line.
    """
    url = URL(delivery.url).with_fragment(None)
    query = url.raw_query_string
    if request_method(delivery) == "GET" and delivery.form:
        extra = urlencode(delivery.form)
        query = f"{query}&{extra}" if query else extra
    # The request line always has a path: sign "http://host/", not "http://host".
    base = str(url.with_query(None).with_path(url.raw_path or "/", encoded=True))
    return f"{base}?{query}" if query else base


def request_body(delivery: Delivery) -> tuple[bytes, str] | None:
    """The body and its content type: compact UTF-8 JSON, a urlencoded form for a POST, or ``None``."""
    if delivery.json is not None:
        text = json.dumps(delivery.json, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8"), JSON_CONTENT_TYPE
    if request_method(delivery) == "POST" and delivery.form is not None:
        return urlencode(delivery.form).encode("ascii"), FORM_CONTENT_TYPE
    return None


def _without_userinfo(url: str) -> str:
    parsed = URL(url, encoded=True)
    if parsed.raw_user is None and parsed.raw_password is None:
        return url
    return str(parsed.with_user(None))


def _for_logs(url: str) -> str:
    """scheme://host[:port]/path only: the query and userinfo may carry tokens (never logged)."""
    try:
        parsed = URL(url)
        return str(parsed.with_user(None).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "<unparsable URL>"


# --- signatures ---------------------------------------------------------------------------------


def twilio_signature(auth_token: str, url: str, params: Sequence[tuple[str, str]] | None) -> str:
    """Twilio's ``X-Twilio-Signature``: base64(HMAC-SHA1(auth_token, url + name1value1 + name2value2…)).

    ``url`` is the full URL as requested (for a GET it already holds the query string and
    ``params`` is ``None``); ``params`` are the POST form fields, sorted by name with Python's
    code-point order (Twilio: "Unix-style case-sensitive sorting"). Repeated names are sorted by
    value, and identical pairs counted once, as the official validator does, so receivers using
    ``twilio.request_validator.RequestValidator`` accept it.
    """
    message = url
    if params:
        for name, value in sorted(set(params)):
            message += name + value
    digest = hmac.new(auth_token.encode("utf-8"), message.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def hmac_sha256_signature(secret: str, timestamp: int, body: bytes | str) -> str:
    """The ``X-Siprec-Signature`` header value of a native JSON callback: ``t=<unix>,v1=<hex>``.

    ``v1`` is hex(HMAC-SHA256(key=secret, msg=f"{t}.{body}")) over the exact body bytes. A receiver
    recomputes it from the raw body and ``t``, compares in constant time, and rejects a ``t`` too
    far from its clock (replays); ``verify_hmac_sha256_signature`` does all three.
    """
    raw = body.encode("utf-8") if isinstance(body, str) else body
    message = str(timestamp).encode("ascii") + b"." + raw
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_hmac_sha256_signature(
    secret: str, header: str, body: bytes | str, *, now: float, tolerance: float = 300.0
) -> bool:
    """True when ``header`` (an ``X-Siprec-Signature`` value) signs ``body`` and its ``t`` is
    within ``tolerance`` seconds of ``now``. Unknown ``key=value`` parts are ignored (future versions)."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance:
        return False
    expected = hmac_sha256_signature(secret, timestamp, body).rpartition("v1=")[2]
    # Bytes, not str: compare_digest refuses non-ASCII str, and the header comes from outside.
    return any(hmac.compare_digest(expected.encode(), c.encode("utf-8", "replace")) for c in candidates)


def sign_twilio(delivery: Delivery, auth_token: str) -> Delivery:
    """``delivery`` with an ``X-Twilio-Signature`` header over its URL and, for a POST, its form."""
    url = _without_userinfo(request_url(delivery))
    params = delivery.form if request_method(delivery) == "POST" and delivery.json is None else None
    signature = twilio_signature(auth_token, url, params)
    return replace(delivery, headers=(*delivery.headers, (TWILIO_SIGNATURE_HEADER, signature)))


# --- the queue ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Request:
    """A delivery prepared once at submit time: encoding errors surface there, not in a worker."""

    delivery: Delivery
    method: str
    url: URL
    body: bytes | None
    headers: tuple[tuple[str, str], ...]
    sign_native: bool  # add X-Siprec-Signature at each attempt (fresh ``t``)


@dataclass(slots=True)
class _Lane:
    """The deliveries waiting for one URL; the head is the one being sent (or waiting to retry)."""

    origin: str  # scheme://host:port: what the per-origin limits count
    pending: deque[_Request] = field(default_factory=deque)
    attempts: int = 0  # attempts made for the head


@dataclass(frozen=True, slots=True)
class _Outcome:
    delivered: bool
    retry: bool
    error: str
    answered: bool = True  # the server sent an HTTP answer (False: timeout, no connection)


Sleep = Callable[[float], Awaitable[object]]


class CallbackQueue:
    """Sends status callbacks in the background. See the module docstring for the design.

    Use: ``await queue.start()``; hand ``queue.submit`` to the ``Sidecar``; ``await queue.close(t)``
    at shutdown. Counters for metrics: ``delivered``, ``failed`` (gave up), ``dropped`` (not
    accepted: queue full or closing), ``retried`` (attempts after a first one); ``pending`` is
    how many are held now. All methods run on the event loop's thread.
    """

    def __init__(
        self,
        settings: CallbackSettings,
        *,
        session: aiohttp.ClientSession | None = None,
        sleep: Sleep = asyncio.sleep,
        concurrency: int = 8,
        patience: float = PATIENCE,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if concurrency < 1:
            raise LocalProtocolError("concurrency must be at least 1", field="concurrency")
        if patience <= 0:
            raise LocalProtocolError("patience must be positive", field="patience")
        self.settings = settings
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.retried = 0
        self._session = session
        self._own_session = session is None
        self._sleep = sleep
        self._concurrency = concurrency
        self._patience = patience
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._lanes: dict[str, _Lane] = {}
        self._ready: asyncio.Queue[str] = asyncio.Queue()  # URLs whose head may be sent now
        self._held = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._workers: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.Task[None]] = set()
        # Per origin: attempts in flight, lanes waiting for room, and whether it answers at all.
        self._in_flight: dict[str, int] = {}
        self._aside: dict[str, deque[str]] = {}
        self._unresponsive: set[str] = set()
        self._slots = asyncio.Semaphore(concurrency * _IN_FLIGHT_PER_SENDER)
        self._released: set[asyncio.Task[_Outcome]] = set()  # attempts that let their sender go
        self._started = False
        self._closing = False

    @property
    def pending(self) -> int:
        """Deliveries accepted and not finished (waiting, in flight or waiting to retry)."""
        return self._held

    async def start(self) -> None:
        if self._started:
            raise LocalProtocolError("the callback queue is already started")
        if self._closing:
            raise LocalProtocolError("the callback queue is closed")
        self._started = True
        if self._session is None:
            # As many connections as attempts may be in flight: a connection held by a dead
            # server's attempt must not make the next healthy attempt wait for the pool.
            connector = aiohttp.TCPConnector(limit=self._concurrency * _IN_FLIGHT_PER_SENDER)
            self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": _USER_AGENT})
        self._workers = [
            asyncio.create_task(self._work(), name=f"callback-sender-{n}") for n in range(self._concurrency)
        ]

    def submit(self, delivery: Delivery) -> bool:
        """Queue ``delivery``; never blocks, never raises.

        False when it was not accepted: the queue holds ``settings.queue_size`` already or is
        closing (counted in ``dropped``; the caller logs it), or its body cannot be encoded
        (counted in ``failed`` and logged here).
        """
        try:
            if self._closing or self._held >= self.settings.queue_size:
                self.dropped += 1
                return False
            try:
                request = self._prepare(delivery)
            except Exception as exc:
                self.failed += 1
                log.warning(
                    "status callback %s to %s cannot be sent: %s",
                    delivery.event,
                    _for_logs(delivery.url),
                    type(exc).__name__,
                )
                return False
            lane = self._lanes.get(delivery.url)
            if lane is None:
                lane = self._lanes[delivery.url] = _Lane(_origin(request.url))
                self._ready.put_nowait(delivery.url)
            # An existing lane is in flight, waiting to retry or already ready: its worker
            # re-queues the URL when the head is done, so order within the URL is kept.
            lane.pending.append(request)
            self._held += 1
            self._idle.clear()
            return True
        except Exception:  # never let a callback problem reach the recording code
            log.exception("status callback %s could not be queued", getattr(delivery, "event", "?"))
            return False

    async def close(self, timeout: float) -> None:
        """Stop accepting, give what is queued up to ``timeout`` seconds to go out, then cancel
        the rest (each one logged as undeliverable and counted in ``failed``)."""
        self._closing = True
        if self._started and self._held:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._idle.wait()
        tasks = [*self._workers, *self._timers, *self._released]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        self._timers.clear()
        self._released.clear()
        self._in_flight.clear()
        self._aside.clear()
        for lane in self._lanes.values():
            for request in lane.pending:
                self.failed += 1
                log.warning(
                    "status callback %s to %s undeliverable: still queued at shutdown",
                    request.delivery.event,
                    _for_logs(request.delivery.url),
                )
        self._lanes.clear()
        self._held = 0
        self._idle.set()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- internals --

    def _prepare(self, delivery: Delivery) -> _Request:
        if delivery.json is not None and delivery.form is not None:
            raise ValueError("a delivery has a form or a JSON body, not both")
        body = request_body(delivery)
        headers = list(delivery.headers)
        names = {name.lower() for name, _ in headers}
        if body is not None and "content-type" not in names:
            headers.append(("Content-Type", body[1]))
        sign_native = (
            self.settings.signing_secret is not None
            and body is not None
            and body[1] == JSON_CONTENT_TYPE
            and SIPREC_SIGNATURE_HEADER.lower() not in names
        )
        return _Request(
            delivery=delivery,
            method=request_method(delivery),
            url=URL(request_url(delivery), encoded=True),  # sent as signed, not re-encoded
            body=None if body is None else body[0],
            headers=tuple(headers),
            sign_native=sign_native,
        )

    async def _work(self) -> None:
        while True:
            key = await self._ready.get()
            await self._slots.acquire()
            lane = self._lanes[key]
            origin = lane.origin
            if self._in_flight.get(origin, 0) >= self._origin_limit(origin):
                # The origin has all the attempts it may have: wait aside until one ends.
                self._slots.release()
                self._aside.setdefault(origin, deque()).append(key)
                continue
            self._in_flight[origin] = self._in_flight.get(origin, 0) + 1
            attempt = asyncio.get_running_loop().create_task(self._attempt(lane.pending[0]))
            try:
                await asyncio.wait((attempt,), timeout=self._patience)
            except asyncio.CancelledError:
                attempt.cancel()
                raise
            if attempt.done():
                self._settle(key, lane, attempt)
            else:
                # A slow server: the attempt ends on its own (within settings.timeout), and
                # this sender serves the other lanes meanwhile.
                self._released.add(attempt)
                attempt.add_done_callback(functools.partial(self._settle, key, lane))

    def _origin_limit(self, origin: str) -> int:
        return 1 if origin in self._unresponsive else self._concurrency

    def _settle(self, key: str, lane: _Lane, attempt: asyncio.Task[_Outcome]) -> None:
        """An attempt ended: count it, then deliver, retry later or give up."""
        self._released.discard(attempt)
        if attempt.cancelled():
            return  # close() is cancelling everything and forgets the lanes itself
        origin = lane.origin
        self._slots.release()
        self._in_flight[origin] -= 1
        if not self._in_flight[origin]:
            del self._in_flight[origin]
        request = lane.pending[0]
        error = attempt.exception()
        if error is not None:  # a bug, not the server: give up on this one, keep the queue going
            log.error(
                "status callback %s failed unexpectedly",
                request.delivery.event,
                exc_info=(type(error), error, error.__traceback__),
            )
            outcome = _Outcome(delivered=False, retry=False, error=type(error).__name__)
        else:
            outcome = attempt.result()
        if outcome.answered:
            self._unresponsive.discard(origin)
        else:
            self._unresponsive.add(origin)
        lane.attempts += 1
        if outcome.delivered:
            self.delivered += 1
            self._finish(key, lane)
        elif outcome.retry and lane.attempts <= self.settings.retries:
            self.retried += 1
            delay = self._backoff(lane.attempts)
            timer = asyncio.get_running_loop().create_task(self._retry_later(key, delay))
            self._timers.add(timer)
            timer.add_done_callback(self._timers.discard)
        else:
            self.failed += 1
            log.warning(
                "status callback %s to %s undeliverable after %d attempt(s): %s",
                request.delivery.event,
                _for_logs(request.delivery.url),
                lane.attempts,
                outcome.error,
            )
            self._finish(key, lane)
        # Lanes that waited for room at this origin, as many as it has room for now.
        waiting = self._aside.get(origin)
        room = self._origin_limit(origin) - self._in_flight.get(origin, 0)
        while waiting and room > 0:
            self._ready.put_nowait(waiting.popleft())
            room -= 1
        if waiting is not None and not waiting:
            del self._aside[origin]

    def _finish(self, key: str, lane: _Lane) -> None:
        lane.pending.popleft()
        lane.attempts = 0
        self._held -= 1
        if lane.pending:
            self._ready.put_nowait(key)  # behind the URLs already waiting: fair between URLs
        else:
            del self._lanes[key]
        if self._held == 0:
            self._idle.set()

    def _backoff(self, retry: int) -> float:
        """Delay before retry number ``retry`` (1-based): backoff · 2^(retry-1), jittered ±50 %
        so callbacks that failed together do not all come back together."""
        base = min(self.settings.backoff * 2.0 ** (retry - 1), _MAX_BACKOFF)
        return base * (0.5 + self._rng.random())

    async def _retry_later(self, key: str, delay: float) -> None:
        await self._sleep(delay)
        self._ready.put_nowait(key)

    async def _attempt(self, request: _Request) -> _Outcome:
        assert self._session is not None  # start() made or was given one
        headers = request.headers
        if request.sign_native and self.settings.signing_secret is not None and request.body is not None:
            signature = hmac_sha256_signature(self.settings.signing_secret, int(self._clock()), request.body)
            headers = (*headers, (SIPREC_SIGNATURE_HEADER, signature))
        timeout = self.settings.timeout
        try:
            async with asyncio.timeout(timeout):
                async with self._session.request(
                    request.method,
                    request.url,
                    data=request.body,
                    headers=headers,
                    # A redirect would change the URL the signature covers: report it, don't follow.
                    allow_redirects=False,
                ) as response:
                    status = response.status
                    await _discard_body(response)
        except TimeoutError:
            return _Outcome(
                delivered=False, retry=True, error=f"no answer within {timeout:g} s", answered=False
            )
        except aiohttp.InvalidURL:
            return _Outcome(delivered=False, retry=False, error="invalid URL")
        except (aiohttp.ClientError, OSError) as exc:
            return _Outcome(delivered=False, retry=True, error=f"{type(exc).__name__}: {exc}", answered=False)
        if 200 <= status < 300:
            return _Outcome(delivered=True, retry=False, error="")
        retry = status >= 500 or status in _RETRYABLE_STATUSES
        return _Outcome(delivered=False, retry=retry, error=f"HTTP {status}")


def _origin(url: URL) -> str:
    """scheme://host:port of a request URL: what the per-origin limits count."""
    return f"{url.scheme}://{url.raw_host}:{url.port}"


async def _discard_body(response: aiohttp.ClientResponse) -> None:
    read = 0
    while read <= _MAX_RESPONSE_BYTES:
        chunk = await response.content.readany()
        if not chunk:
            return
        read += len(chunk)
    response.close()  # too long to drain: drop the connection instead of reading it all
