"""The sidecar's HTTP application: the API shapes, ``/healthz``, ``/metrics``, ``/openapi.json``.

``build_app`` mounts every API shape on one ``aiohttp`` application and adds what they share:

- a body limit (``max_body_bytes``): a larger body is a 413 JSON error, never read whole;
- a request rate limit per client (``rate_limit`` requests/s, ``rate_burst`` at once: a token
  bucket, ``RateLimiter``): over it, 429 with ``Retry-After`` in the shape's own error format
  (native, Twilio 20429, Telnyx 10011). ``/healthz`` is never limited (load balancers probe it);
- ``/metrics`` behind a Bearer token when ``[api.auth] metrics_token`` is set;
- one error shape for what the router and aiohttp raise (404, 405, 413...), and a last-resort
  handler that logs an unexpected exception and answers 500 (counted in
  ``siprec_http_unhandled_errors_total``, which the tests require to stay at 0);
- the metrics of the sidecar (``SidecarMetrics``): calls, recordings and streams now, packets
  and bytes forwarded, SRS attempt failures, SIP final responses to our INVITEs, recordings
  started/stopped/failed, WebSocket streams (live, started, ended by outcome, frames sent and
  dropped), HTTP requests.

Fork counters live in the media engine (and its worker processes); a scrape reads them
(``Engine.fork_stats``) and keeps a high-water mark per stream, so the exposed totals only
go up even while a stream's final counters travel back from its worker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from siprec_src.control import native, openapi, plivo, telnyx, twilio
from siprec_src.control.callbacks import CallbackQueue
from siprec_src.control.metrics import CONTENT_TYPE, Registry
from siprec_src.control.settings import ApiCredentials
from siprec_src.control.sidecar import Sidecar
from siprec_src.errors import LocalProtocolError
from siprec_src.recording.engine import Recording
from siprec_src.recording.events import (
    AttemptFailed,
    RecordingEvent,
    RecordingFailed,
    RecordingStarted,
    RecordingStopped,
    StreamDropped,
    StreamEvent,
    StreamStarted,
    StreamStopped,
)
from siprec_src.recording.stream import Stream

log = logging.getLogger(__name__)

# A recording that ended this long ago has its final fork counters back from the media side.
_RETIRE_AFTER = 5.0

_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}
# Probed by load balancers, often many per second from one address: never rate limited.
_UNLIMITED_PATHS = frozenset({"/healthz"})
# At most this many clients have a bucket; see RateLimiter.
MAX_RATE_CLIENTS = 10_000
# Error bodies an API shape made itself (Twilio's JSON, TwiML's XML) are passed through.
_OWN_FORMATS = ("application/json", "application/xml", "text/xml")


def build_app(
    sidecar: Sidecar, registry: Registry, *, clock: Callable[[], float] = time.monotonic
) -> web.Application:
    """The application for ``sidecar``; its metrics are registered in ``registry``.

    ``clock`` (monotonic seconds) drives the rate limiter's buckets: tests pass a fake one.
    """
    settings = sidecar.settings
    metrics = SidecarMetrics(sidecar, registry)
    max_body = settings.max_body_bytes
    limiter = RateLimiter(settings.rate_limit, settings.rate_burst, clock=clock)
    clients = ClientIdentity(settings.credentials)
    app = web.Application(
        client_max_size=max_body, middlewares=[_middleware(metrics, max_body, limiter, clients)]
    )
    app[METRICS] = metrics
    app[RATE_LIMITER] = limiter
    metrics_guard = _metrics_guard(settings.credentials)

    async def healthz(request: web.Request) -> web.StreamResponse:
        configured, alive = sidecar.engine.media.workers
        # A dead worker is not restarted: the sidecar still serves on the others ("degraded",
        # 200), but with none left it cannot fork anything and a load balancer must look away.
        status = "ok"
        if alive < configured:
            status = "degraded" if alive else "media_unavailable"
        if sidecar.shutting_down:
            status = "shutting_down"
        body = {
            "status": status,
            "calls": len(sidecar.engine.calls),
            "recordings": sidecar.live_recordings(),
            "media_workers": {"configured": configured, "alive": alive},
        }
        return web.json_response(body, status=200 if status in ("ok", "degraded") else 503)

    async def metrics_text(request: web.Request) -> web.StreamResponse:
        denied = metrics_guard(request)
        if denied is not None:
            return denied
        await metrics.collect()
        response = web.Response(body=registry.render().encode("utf-8"))
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    async def openapi_json(request: web.Request) -> web.StreamResponse:
        base = sidecar.settings.public_url or f"{request.scheme}://{request.host}"
        document = openapi.document(
            base,
            connectors=sidecar.engine.config.connectors,
            codecs=sidecar.codecs,
            metrics_auth=settings.credentials.metrics_token is not None,
        )
        return web.json_response(document)

    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/metrics", metrics_text, allow_head=False)
    app.router.add_get("/openapi.json", openapi_json, allow_head=False)
    native.add_routes(app, sidecar)
    plivo.add_routes(app, sidecar)  # Plivo XML documents, under /v1 with its Bearer tokens
    twilio.add_routes(app, sidecar)  # each shape authenticates its own requests
    telnyx.add_routes(app, sidecar)
    return app


def _middleware(
    metrics: SidecarMetrics, max_body: int, limiter: RateLimiter, clients: ClientIdentity
) -> Middleware:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        response: web.StreamResponse
        try:
            wait = 0.0 if request.path in _UNLIMITED_PATHS else limiter.acquire(clients.of(request))
            if wait > 0:
                response = too_many_requests(request.path, wait, limiter)
            else:
                response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400 or (exc.content_type in _OWN_FORMATS and exc.body):
                metrics.requests.labels(method=request.method, route=route, status=str(exc.status)).inc()
                raise  # a redirect, or an error body an API shape made in its own format
            response = _as_json(exc, max_body)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            metrics.unhandled.inc()
            response = native.error_response(500, "internal_error", "internal error (logged)")
        metrics.requests.labels(method=request.method, route=route, status=str(response.status)).inc()
        return response

    return errors


def _as_json(exc: web.HTTPException, max_body: int) -> web.Response:
    if exc.status == 413:
        message = f"the body is larger than {max_body} bytes (max_body_bytes)"
    else:
        message = exc.reason
    headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
    code = _ERROR_CODES.get(exc.status, "http_error")
    return native.error_response(exc.status, code, message, None, headers)


# --- request rate ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float  # clock time of the last refill


class RateLimiter:
    """Token buckets, one per client: ``rate`` requests per second on average, ``burst`` at once.

    A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; a request
    takes one, and a client with none left is answered 429 (RFC 6585 §4) with ``Retry-After``
    (RFC 9110 §10.2.3), the whole seconds until its next token. ``rate`` 0 (or less) turns the
    limiter off.

    Memory is bounded: at most ``max_clients`` buckets. A full bucket is the same as no
    bucket, so when the table is full the full buckets are forgotten first, then the
    least recently used, down to nine tenths of the bound (so the scan is not repeated on
    every new client of a flood from many addresses).
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_RATE_CLIENTS,
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def clients(self) -> int:
        """How many clients have a bucket now."""
        return len(self._buckets)

    def acquire(self, client: str) -> float:
        """0 when ``client`` may make a request now (a token is taken); else the seconds until
        it may (nothing is taken: a refused request costs the client nothing more)."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._forget(now)  # before adding: a new bucket is full and would go first
            bucket = self._buckets[client] = _Bucket(float(self.burst), now)
        else:
            self._buckets.move_to_end(client)
            self._refill(bucket, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _refill(self, bucket: _Bucket, now: float) -> None:
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
        bucket.updated = now

    def _forget(self, now: float) -> None:
        keep = max(0, self.max_clients * 9 // 10 - 1)  # and room for the one being added
        for client, bucket in list(self._buckets.items()):
            self._refill(bucket, now)
            if bucket.tokens >= self.burst:
                del self._buckets[client]
        while len(self._buckets) > keep:
            self._buckets.popitem(last=False)


class ClientIdentity:
    """Who a request counts against in the rate limiter.

    A request that presents one of the configured credentials counts against that credential,
    so clients behind one proxy or NAT do not share a budget; any other request (none, or a
    made-up one) counts against its remote address, so inventing credentials buys no fresh
    bucket (an IPv6 client by its /64). Forwarded-for headers are not believed: anyone can
    write them. The configured credentials are kept as SHA-256 digests of the
    ``Authorization`` value they make, looked up by the digest of what the request sent (no
    comparison that could leak timing).
    """

    def __init__(self, credentials: ApiCredentials) -> None:
        self._known: dict[bytes, str] = {}
        for index, token in enumerate(credentials.tokens):
            self._known[_digest("bearer", token)] = f"token {index}"
        if credentials.telnyx_api_key:
            self._known.setdefault(_digest("bearer", credentials.telnyx_api_key), "telnyx")
        if credentials.metrics_token:
            self._known.setdefault(_digest("bearer", credentials.metrics_token), "metrics")
        if credentials.twilio_account_sid and credentials.twilio_auth_token:
            pair = f"{credentials.twilio_account_sid}:{credentials.twilio_auth_token}".encode()
            self._known[_digest("basic", base64.b64encode(pair).decode("ascii"))] = "twilio"

    def of(self, request: web.Request) -> str:
        header = request.headers.get("Authorization")
        if header:
            scheme, _, credential = header.strip().partition(" ")
            known = self._known.get(_digest(scheme, credential.strip()))
            if known is not None:
                return f"credential:{known}"
        return f"address:{_network_of(request.remote)}"


def _network_of(remote: str | None) -> str:
    """An IPv4 address as is; an IPv6 one as its /64, which one host usually has whole
    (RFC 4291 §2.5.1 interface identifiers), so rotating addresses buys no fresh bucket."""
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return str(remote)  # a Unix socket, or no peer address at all
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:192.0.2.1 from a dual-stack socket
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _digest(scheme: str, credential: str) -> bytes:
    text = f"{scheme.lower()} {credential}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def too_many_requests(path: str, wait: float, limiter: RateLimiter) -> web.Response:
    """429 in the error format of the shape ``path`` belongs to, with ``Retry-After``."""
    retry_after = max(1, math.ceil(wait))
    message = (
        f"more than {limiter.rate:g} requests/s (burst {limiter.burst}) from this client "
        f"(rate_limit); retry after {retry_after} s"
    )
    headers = {"Retry-After": str(retry_after)}
    if path.startswith(f"/{twilio.API_VERSION}/"):
        # Twilio's own code for it: 20429 Too Many Requests.
        return twilio.TwilioApiError(429, 20429, message, headers=headers).response()
    if path.startswith("/v2/"):
        response = telnyx.TelnyxApiError(429, "10011", "Too many requests", message).response()
        response.headers.update(headers)
        return response
    return native.error_response(429, "rate_limited", message, None, headers)


# --- /metrics ------------------------------------------------------------------------------------


def _metrics_guard(credentials: ApiCredentials) -> Callable[[web.Request], web.Response | None]:
    """With a ``metrics_token``, ``/metrics`` wants it (or a native token) as a Bearer token."""
    accepted = [t.encode("utf-8") for t in (credentials.metrics_token, *credentials.tokens) if t]

    def guard(request: web.Request) -> web.Response | None:
        if credentials.metrics_token is None:
            return None
        scheme, _, credential = request.headers.get("Authorization", "").strip().partition(" ")
        given = credential.strip().encode("utf-8", "surrogateescape")
        matched = False
        for token in accepted:  # every one compared, in constant time each
            matched |= hmac.compare_digest(given, token)
        if scheme.lower() == "bearer" and given and matched:
            return None
        return native.error_response(
            401,
            "unauthorized",
            "/metrics needs Authorization: Bearer <metrics_token>",
            headers={"WWW-Authenticate": 'Bearer realm="siprec-src metrics"'},
        )

    return guard


class ForkStatsLike(Protocol):
    """What a scrape reads of ``media.events.ForkStats`` (control may not import media)."""

    @property
    def packets_sent(self) -> int: ...
    @property
    def octets_sent(self) -> int: ...
    @property
    def dropped_paused(self) -> int: ...
    @property
    def dropped_payload_type(self) -> int: ...
    @property
    def send_errors(self) -> int: ...


@dataclass(slots=True)
class _Fork:
    packets: int = 0
    octets: int = 0
    dropped_paused: int = 0
    dropped_payload_type: int = 0
    send_errors: int = 0

    def raise_to(self, other: _Fork) -> None:
        self.packets = max(self.packets, other.packets)
        self.octets = max(self.octets, other.octets)
        self.dropped_paused = max(self.dropped_paused, other.dropped_paused)
        self.dropped_payload_type = max(self.dropped_payload_type, other.dropped_payload_type)
        self.send_errors = max(self.send_errors, other.send_errors)

    def add(self, other: _Fork) -> None:
        self.packets += other.packets
        self.octets += other.octets
        self.dropped_paused += other.dropped_paused
        self.dropped_payload_type += other.dropped_payload_type
        self.send_errors += other.send_errors


class SidecarMetrics:
    """The sidecar's Prometheus metrics; event counters are fed by ``Sidecar.listeners``."""

    def __init__(self, sidecar: Sidecar, registry: Registry) -> None:
        self.sidecar = sidecar
        self.registry = registry
        engine = sidecar.engine
        registry.gauge("siprec_calls_active", "Calls open now.").set_function(lambda: len(engine.calls))
        registry.gauge(
            "siprec_recordings_active", "Recordings not ended (starting, in progress, paused)."
        ).set_function(sidecar.live_recordings)
        registry.gauge(
            "siprec_streams_active",
            "Forked streams in use: SIPREC streams of live recordings and legs of live WebSocket streams.",
        ).set_function(lambda: sum(call.active_streams for call in engine.calls.values()))
        registry.gauge("siprec_shutting_down", "1 while the sidecar drains for shutdown.").set_function(
            lambda: int(sidecar.shutting_down)
        )
        self.started = registry.counter("siprec_recordings_started_total", "Recordings an SRS accepted.")
        self.stopped = registry.counter(
            "siprec_recordings_stopped_total", "Recordings ended normally, by who ended them.", ("by",)
        )
        self.failed = registry.counter(
            "siprec_recordings_failed_total",
            "Recordings that failed, by deciding SIP status.",
            ("sip_status",),
        )
        self.attempt_failures = registry.counter(
            "siprec_srs_attempt_failures_total",
            "SRS attempts that did not take the recording (timeouts count as 408).",
            ("connector", "sip_status"),
        )
        self.invite_responses = registry.counter(
            "siprec_srs_invite_responses_total",
            "Final SIP status of each SIPREC INVITE (408: no answer, 503: unreachable).",
            ("sip_status",),
        )
        self.requests = registry.counter(
            "siprec_http_requests_total", "HTTP requests answered.", ("method", "route", "status")
        )
        self.unhandled = registry.counter(
            "siprec_http_unhandled_errors_total", "Requests that ended in an unexpected exception (500)."
        )
        forks = (
            ("siprec_fork_packets_total", "RTP packets forwarded to SRSs.", "packets"),
            ("siprec_fork_bytes_total", "RTP payload octets forwarded to SRSs.", "octets"),
        )
        for name, documentation, attribute in forks:
            registry.counter(name, documentation).set_function(self._total(attribute))
        dropped = registry.counter(
            "siprec_fork_dropped_packets_total",
            "Packets not forwarded: paused, payload type the SRS refused, send failed.",
            ("reason",),
        )
        for reason, attribute in (
            ("paused", "dropped_paused"),
            ("payload_type", "dropped_payload_type"),
            ("send_error", "send_errors"),
        ):
            dropped.labels(reason=reason).set_function(self._total(attribute))
        self._retired = _Fork()
        self._seen: dict[str, tuple[Recording, dict[str, _Fork]]] = {}
        self._ended: dict[str, float] = {}  # sid -> monotonic time it ended
        sidecar.listeners.append(self.on_event)
        # WebSocket streams: their counters live in the control process, read at scrape time.
        registry.gauge("siprec_websocket_streams_active", "WebSocket streams not ended.").set_function(
            sidecar.live_streams
        )
        self.streams_started = registry.counter(
            "siprec_websocket_streams_started_total", "WebSocket streams whose service took them."
        )
        self.streams_ended = registry.counter(
            "siprec_websocket_streams_ended_total",
            "WebSocket streams ended: stopped (on purpose) or dropped (failed to connect, broke).",
            ("outcome",),
        )
        self._live_streams: dict[str, Stream] = {}
        self._retired_frames = {"frames_sent": 0, "frames_dropped": 0}
        for name, documentation, attribute in (
            (
                "siprec_websocket_frames_sent_total",
                "20 ms media frames written to WebSockets.",
                "frames_sent",
            ),
            (
                "siprec_websocket_frames_dropped_total",
                "20 ms media frames dropped because a WebSocket's send queue was full.",
                "frames_dropped",
            ),
        ):
            registry.counter(name, documentation).set_function(self._stream_total(attribute))
        sidecar.stream_listeners.append(self.on_stream_event)

    def on_stream_event(self, stream: Stream, event: StreamEvent) -> None:
        if isinstance(event, StreamStarted):
            self.streams_started.inc()
        if isinstance(event, StreamStopped | StreamDropped):
            outcome = "stopped" if isinstance(event, StreamStopped) else "dropped"
            self.streams_ended.labels(outcome=outcome).inc()
            self._live_streams.pop(stream.sid, None)
            stats = stream.stats  # final: the stream released its forks and sender before this event
            self._retired_frames["frames_sent"] += stats.frames_sent
            self._retired_frames["frames_dropped"] += stats.frames_dropped
        else:
            self._live_streams[stream.sid] = stream

    def _stream_total(self, attribute: str) -> Callable[[], int]:
        def total() -> int:
            live = sum(int(getattr(s.stats, attribute)) for s in self._live_streams.values())
            return self._retired_frames[attribute] + live

        return total

    def on_event(self, recording: Recording, event: RecordingEvent) -> None:
        self._seen.setdefault(recording.sid, (recording, {}))
        if isinstance(event, AttemptFailed):
            status = str(event.status)
            self.attempt_failures.labels(connector=recording.connector.name, sip_status=status).inc()
            self.invite_responses.labels(sip_status=status).inc()
        elif isinstance(event, RecordingStarted):
            self.started.inc()
            self.invite_responses.labels(sip_status=str(recording.session.final_status or 200)).inc()
        elif isinstance(event, RecordingStopped | RecordingFailed):
            if isinstance(event, RecordingStopped):
                self.stopped.labels(by=event.by).inc()
            else:
                self.failed.labels(sip_status=str(event.status)).inc()
            now = time.monotonic()
            self._ended[recording.sid] = now
            self._retire(now)

    def _total(self, attribute: str) -> Callable[[], int]:
        def total() -> int:
            value: int = getattr(self._retired, attribute)
            for _, forks in self._seen.values():
                value += sum(getattr(fork, attribute) for fork in forks.values())
            return value

        return total

    async def collect(self) -> None:
        """Read every known recording's fork counters (called before each scrape)."""
        for recording, forks in list(self._seen.values()):
            try:
                stats = await self.sidecar.engine.fork_stats(recording)
            except LocalProtocolError:
                stats = {}
            _raise_to(forks, stats)
        self._retire(time.monotonic())

    def _retire(self, now: float) -> None:
        """Fold recordings that ended ``_RETIRE_AFTER`` ago into the totals and forget them.

        Runs at each scrape and each recording end (so memory stays bounded without scrapes).
        Synchronous: a concurrent scrape sees a recording retired once or not at all.
        """
        for sid, ended in list(self._ended.items()):
            if now - ended < _RETIRE_AFTER:
                continue
            del self._ended[sid]
            seen = self._seen.pop(sid, None)
            if seen is None:
                continue
            recording, forks = seen
            _raise_to(forks, recording.fork_stats)  # its final counters, back from the media side
            for fork in forks.values():
                self._retired.add(fork)


def _raise_to(forks: dict[str, _Fork], stats: Mapping[str, ForkStatsLike]) -> None:
    for label, stat in stats.items():
        fresh = _Fork(
            stat.packets_sent,
            stat.octets_sent,
            stat.dropped_paused,
            stat.dropped_payload_type,
            stat.send_errors,
        )
        forks.setdefault(label, _Fork()).raise_to(fresh)


def register_callback_metrics(registry: Registry, queue: CallbackQueue) -> None:
    """Status callback delivery counters, read from the queue at scrape time."""
    outcomes = registry.counter(
        "siprec_callbacks_total",
        "Status callbacks by outcome: delivered, failed (gave up), dropped (queue full or closing).",
        ("outcome",),
    )
    outcomes.labels(outcome="delivered").set_function(lambda: queue.delivered)
    outcomes.labels(outcome="failed").set_function(lambda: queue.failed)
    outcomes.labels(outcome="dropped").set_function(lambda: queue.dropped)
    registry.counter("siprec_callback_retries_total", "Callback attempts after a first one.").set_function(
        lambda: queue.retried
    )
    registry.gauge("siprec_callbacks_pending", "Callbacks queued or in flight.").set_function(
        lambda: queue.pending
    )


METRICS = web.AppKey("metrics", SidecarMetrics)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
