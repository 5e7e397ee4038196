"""``Sidecar``: the state the API shapes share, around one recording ``Engine``.

Every API shape (native ``/v1``, Twilio ``/2010-04-01``, Telnyx ``/v2``) drives the same
calls and recordings; what differs is the request/response/callback format. A shape starts a
recording with ``Call.record`` and then ``watch``es it with a *notifier*: a function that
turns a recording event into a ``Delivery`` in its own callback format (or ``None``).

WebSocket streams go the same way: a shape starts one with ``start_stream`` (the call's
``Call.stream`` with the sidecar's ``StreamSettings``: the CA that verifies ``wss://``
services, the send queue bound, the connect timeout) and passes a *stream notifier* that turns
a stream event into its own callback format. The engine's ``on_stream_event`` is hooked here,
as its ``on_event`` is; ``stream_listeners`` see every stream event (the metrics).

Sidecar-wide budgets, on top of the engine's 4 forked streams per call: ``max_calls`` (503
``call_limit``), ``max_streams`` live WebSocket streams (every shape starts them through
``start_stream``) and ``max_recordings`` live recordings (for shapes that start them through
``record``), both 409 ``stream_limit`` with the limit named in the message.

The sidecar also keeps what the engine does not: when each call, recording and stream was
created and last changed (API resources show it), the codecs the API may name (given by the
composition root: ``control`` may not import ``sdp``), and whether it is shutting down
(``/healthz`` says 503 and new calls are refused with ``code="shutting_down"``, so a load
balancer drains it).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from yarl import URL

from siprec_src.control.callbacks import Delivery
from siprec_src.control.settings import ControlSettings
from siprec_src.errors import LocalProtocolError
from siprec_src.recording.call import Party
from siprec_src.recording.engine import Call, Engine, Recording
from siprec_src.recording.events import (
    TERMINAL_EVENTS,
    RecordingEvent,
    RecordingStarted,
    StreamDropped,
    StreamEvent,
    StreamStarted,
    StreamStopped,
)
from siprec_src.recording.stream import DEFAULT_CONNECT_TIMEOUT, DEFAULT_QUEUE_FRAMES, Stream
from siprec_src.streams.options import StreamOptions

log = logging.getLogger(__name__)

Notifier = Callable[[Recording, RecordingEvent], Delivery | None]
StreamNotifier = Callable[[Stream, StreamEvent], Delivery | None]
Submit = Callable[[Delivery], bool]

STREAM_TERMINAL_EVENTS = (StreamStopped, StreamDropped)
STOP_TIMEOUT = 5.0  # seconds a stream's stop (forks, last messages, close) may take before we answer


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """How the sidecar's WebSocket streams connect and queue (``[streams]`` of the config).

    ``ca``: a PEM file of CA certificates trusted for ``wss://`` services *in addition to* the
    system's trust store (a private CA next to public services); ``None``: the system's only.
    ``queue_frames``: the bound of each stream's send queue, in 20 ms frames (oldest dropped
    when full); ``connect_timeout``: seconds for TCP, TLS and the WebSocket handshake together.
    """

    ca: str | None = None
    queue_frames: int = DEFAULT_QUEUE_FRAMES
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    def ssl_context(self) -> ssl.SSLContext | None:
        """The context that verifies ``wss://`` servers; ``None`` means aiohttp's default one."""
        if self.ca is None:
            return None
        context = ssl.create_default_context()  # the system's trust store, hostname checks on
        context.load_verify_locations(cafile=self.ca)
        return context


@dataclass
class Sidecar:
    engine: Engine
    settings: ControlSettings = field(default_factory=ControlSettings)
    submit: Submit | None = None  # the callback queue's submit(); None: callbacks are not sent
    notifiers: dict[str, list[Notifier]] = field(default_factory=dict)  # sid -> notifiers
    listeners: list[Callable[[Recording, RecordingEvent], None]] = field(default_factory=list)
    streams: StreamSettings = field(default_factory=StreamSettings)
    stream_notifiers: dict[str, list[StreamNotifier]] = field(default_factory=dict)  # sid -> notifiers
    stream_listeners: list[Callable[[Stream, StreamEvent], None]] = field(default_factory=list)
    # codec name ("PCMU") -> the engine's CodecSpec; set by the composition root (app.py)
    codecs: Mapping[str, Any] = field(default_factory=dict)
    shutting_down: bool = False
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _call_created: weakref.WeakKeyDictionary[Call, datetime] = field(
        default_factory=weakref.WeakKeyDictionary, repr=False
    )
    _recording_times: weakref.WeakKeyDictionary[Recording, _Times] = field(
        default_factory=weakref.WeakKeyDictionary, repr=False
    )
    _stream_times: weakref.WeakKeyDictionary[Stream, _Times] = field(
        default_factory=weakref.WeakKeyDictionary, repr=False
    )
    _stream_ssl: ssl.SSLContext | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.engine.on_event = self._on_event
        self.engine.on_stream_event = self._on_stream_event
        self._stream_ssl = self.streams.ssl_context()

    def call(self, call_id: str) -> Call:
        """The open call ``call_id``; ``LocalProtocolError(code="no_such_call")`` otherwise."""
        return self.engine.call(call_id)

    def check_call_budget(self) -> None:
        if self.shutting_down:
            raise LocalProtocolError(
                "the sidecar is shutting down and takes no new calls", field=None, code="shutting_down"
            )
        if len(self.engine.calls) >= self.settings.max_calls:
            raise LocalProtocolError(
                f"the sidecar already has {len(self.engine.calls)} calls open (max_calls)",
                field="call_id",
                code="call_limit",
            )

    def check_recording_budget(self) -> None:
        """Refuse a new recording when ``max_recordings`` are live across every call.

        The per-call limit (4 forked streams) bounds one call; this bounds the sidecar: each
        live recording holds a SIP dialog, fork sockets and SRTP sessions.
        """
        _check_budget(self.live_recordings(), self.settings.max_recordings, "recordings", "max_recordings")

    def check_stream_budget(self) -> None:
        """Refuse a new WebSocket stream when ``max_streams`` are live across every call."""
        _check_budget(self.live_streams(), self.settings.max_streams, "WebSocket streams", "max_streams")

    async def record(self, call: Call, **options: Any) -> Recording:
        """``Call.record`` within the sidecar's recording budget (``max_recordings``)."""
        self.check_recording_budget()
        return await call.record(**options)

    async def open_call(
        self, *, caller: Party, callee: Party, call_id: str | None = None, **options: Any
    ) -> Call:
        """``Engine.open_call`` within the call budget (and not while shutting down), timestamped."""
        self.check_call_budget()
        call = await self.engine.open_call(caller=caller, callee=callee, call_id=call_id, **options)
        self._call_created[call] = self.clock()
        return call

    def created_at(self, call: Call) -> datetime:
        """When the call was opened (first asked, for a call opened outside ``open_call``)."""
        return self._call_created.setdefault(call, self.clock())

    def recording_times(self, recording: Recording) -> tuple[datetime, datetime | None, datetime]:
        """(created, accepted by the SRS or ``None``, last changed) of a recording."""
        times = self._times(recording)
        return times.created, times.started, times.updated

    def find_recording(self, call: Call, sid_or_name: str) -> Recording:
        """By sid, else by name: the live recording of that name, else the latest one.

        Names are unique among *live* recordings only, so a name can come back after a stop.
        """
        found = call.recordings.get(sid_or_name)
        if found is not None:
            return found
        named = [r for r in call.recordings.values() if r.name == sid_or_name]
        live = [r for r in named if not r.session.state.terminal]
        if live or named:
            return (live or named)[-1]
        return call.recording(sid_or_name)  # raises no_such_recording

    def live_recordings(self) -> int:
        return sum(
            1
            for call in self.engine.calls.values()
            for recording in call.recordings.values()
            if not recording.session.state.terminal
        )

    # --- WebSocket streams ------------------------------------------------------------------------

    async def start_stream(
        self,
        call: Call,
        options: StreamOptions,
        *,
        notifier: StreamNotifier | None = None,
        account_sid: str = "",
    ) -> Stream:
        """``Call.stream`` with the sidecar's stream settings; ``notifier`` gets its events.

        Returns at once (the stream connects in the background): whether the service took it
        comes as a ``StreamStarted`` or ``StreamDropped`` event. Refused (409 ``stream_limit``)
        when the sidecar already has ``max_streams`` live.
        """
        self.check_stream_budget()
        stream = await call.stream(
            options,
            ssl=self._stream_ssl,
            account_sid=account_sid,
            call_sid=call.call_id,
            queue_frames=self.streams.queue_frames,
            connect_timeout=self.streams.connect_timeout,
        )
        self._times(stream)
        if notifier is not None:
            self.watch_stream(stream, notifier)
        return stream

    def stream_times(self, stream: Stream) -> tuple[datetime, datetime | None, datetime]:
        """(created, started or ``None``, last changed) of a stream."""
        times = self._times(stream)
        return times.created, times.started, times.updated

    def watch_stream(self, stream: Stream, notifier: StreamNotifier) -> None:
        """Send ``notifier``'s deliveries for this stream's events, past ones included."""
        self._times(stream)
        if not any(isinstance(event, STREAM_TERMINAL_EVENTS) for event in stream.events):
            self.stream_notifiers.setdefault(stream.sid, []).append(notifier)
        for event in list(stream.events):
            self._deliver(notifier, stream, event)

    async def stop_stream(self, stream: Stream, reason: str = "stopped") -> None:
        """Stop ``stream`` and wait until it ended, at most ``STOP_TIMEOUT`` (then answer anyway:
        its forks are stopping and it ends on its own)."""
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await stream.stop(reason)
        except TimeoutError:
            log.warning("stream %s: stop not confirmed within %.0f s", stream.sid, STOP_TIMEOUT)

    def live_streams(self) -> int:
        return sum(
            1
            for call in self.engine.calls.values()
            for stream in call.streams.values()
            if not stream.status.terminal
        )

    def _on_stream_event(self, stream: Stream, event: StreamEvent) -> None:
        times = self._times(stream)
        times.updated = self.clock()
        if isinstance(event, StreamStarted) and times.started is None:
            times.started = times.updated
        for listener in self.stream_listeners:
            try:
                listener(stream, event)
            except Exception:
                log.exception("stream event listener failed on %r", event)
        for notifier in self.stream_notifiers.get(stream.sid, ()):
            self._deliver(notifier, stream, event)
        if isinstance(event, STREAM_TERMINAL_EVENTS):
            self.stream_notifiers.pop(stream.sid, None)

    async def shutdown(self) -> None:
        """Refuse new calls, then close every call (BYE to every SRS, RTCP BYE per stream)."""
        self.shutting_down = True
        calls = list(self.engine.calls.values())
        results = await asyncio.gather(*(call.close() for call in calls), return_exceptions=True)
        for call, result in zip(calls, results, strict=True):
            if isinstance(result, BaseException):
                log.error("closing call %s failed: %r", call.call_id, result)

    def watch(self, recording: Recording, notifier: Notifier) -> None:
        """Send ``notifier``'s deliveries for this recording's events, past ones included."""
        self._times(recording)
        ended = any(isinstance(event, TERMINAL_EVENTS) for event in recording.events)
        if not ended:
            self.notifiers.setdefault(recording.sid, []).append(notifier)
        for event in list(recording.events):
            self._notify(notifier, recording, event)

    def _times(self, thing: Recording | Stream) -> _Times:
        table: weakref.WeakKeyDictionary[Any, _Times] = (
            self._stream_times if isinstance(thing, Stream) else self._recording_times
        )
        times = table.get(thing)
        if times is None:
            now = self.clock()
            times = table[thing] = _Times(now, None, now)
        return times

    def _on_event(self, recording: Recording, event: RecordingEvent) -> None:
        times = self._times(recording)
        times.updated = self.clock()
        if isinstance(event, RecordingStarted) and times.started is None:
            times.started = times.updated
        for listener in self.listeners:
            try:
                listener(recording, event)
            except Exception:
                log.exception("recording event listener failed on %r", event)
        for notifier in self.notifiers.get(recording.sid, ()):
            self._notify(notifier, recording, event)
        # Forget the notifiers after the terminal event itself, not as soon as the state is
        # terminal: one flush can bring AttemptFailed and RecordingFailed together.
        if isinstance(event, TERMINAL_EVENTS):
            self.notifiers.pop(recording.sid, None)

    def _notify(self, notifier: Notifier, recording: Recording, event: RecordingEvent) -> None:
        try:
            delivery = notifier(recording, event)
        except Exception:
            log.exception("status callback notifier failed on %r", event)
            return
        self._submit(delivery)

    def _deliver(self, notifier: StreamNotifier, stream: Stream, event: StreamEvent) -> None:
        try:
            delivery = notifier(stream, event)
        except Exception:
            log.exception("stream status callback notifier failed on %r", event)
            return
        self._submit(delivery)

    def _submit(self, delivery: Delivery | None) -> None:
        if delivery is not None and self.submit is not None and not self.submit(delivery):
            log.warning(
                "status callback %s to %s dropped: the queue is full or closing",
                delivery.event,
                _for_logs(delivery.url),
            )


def _for_logs(url: str) -> str:
    """scheme://host/path: a query string or userinfo may carry a token (never logged)."""
    try:
        return str(URL(url).with_user(None).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "<unparsable URL>"


@dataclass(slots=True)
class _Times:
    created: datetime
    started: datetime | None
    updated: datetime


def _check_budget(live: int, limit: int, what: str, key: str) -> None:
    if live >= limit:
        raise LocalProtocolError(
            f"the sidecar already has {live} {what} live ({key} = {limit})", field=None, code="stream_limit"
        )
