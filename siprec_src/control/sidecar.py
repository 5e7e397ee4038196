"""``Sidecar``: the state the API shapes share, around one recording ``Engine``.

Every API shape (native ``/v1``, Twilio ``/2010-04-01``, Telnyx ``/v2``) drives the same
calls and recordings; what differs is the request/response/callback format. A shape starts a
recording with ``Call.record`` and then ``watch``es it with a *notifier*: a function that
turns a recording event into a ``Delivery`` in its own callback format (or ``None``).

The sidecar also keeps what the engine does not: when each call and recording was created and
last changed (API resources show it), the codecs the API may name (given by the composition
root: ``control`` may not import ``sdp``), and whether it is shutting down (``/healthz`` says
503 and new calls are refused with ``code="shutting_down"``, so a load balancer drains it).
"""

from __future__ import annotations

import asyncio
import logging
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
from siprec_src.recording.events import TERMINAL_EVENTS, RecordingEvent, RecordingStarted

log = logging.getLogger(__name__)

Notifier = Callable[[Recording, RecordingEvent], Delivery | None]
Submit = Callable[[Delivery], bool]


@dataclass
class Sidecar:
    engine: Engine
    settings: ControlSettings = field(default_factory=ControlSettings)
    submit: Submit | None = None  # the callback queue's submit(); None: callbacks are not sent
    notifiers: dict[str, list[Notifier]] = field(default_factory=dict)  # sid -> notifiers
    listeners: list[Callable[[Recording, RecordingEvent], None]] = field(default_factory=list)
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

    def __post_init__(self) -> None:
        self.engine.on_event = self._on_event

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

    def _times(self, recording: Recording) -> _Times:
        times = self._recording_times.get(recording)
        if times is None:
            now = self.clock()
            times = self._recording_times[recording] = _Times(now, None, now)
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
