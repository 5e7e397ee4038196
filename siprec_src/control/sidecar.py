"""``Sidecar``: the state the API shapes share, around one recording ``Engine``.

Every API shape (native ``/v1``, Twilio ``/2010-04-01``, Telnyx ``/v2``) drives the same
calls and recordings; what differs is the request/response/callback format. A shape starts a
recording with ``Call.record`` and then ``watch``es it with a *notifier*: a function that
turns a recording event into a ``Delivery`` in its own callback format (or ``None``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from siprec_src.control.callbacks import Delivery
from siprec_src.control.settings import ControlSettings
from siprec_src.errors import LocalProtocolError
from siprec_src.recording.engine import Call, Engine, Recording
from siprec_src.recording.events import RecordingEvent

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

    def __post_init__(self) -> None:
        self.engine.on_event = self._on_event

    def call(self, call_id: str) -> Call:
        """The open call ``call_id``; ``LocalProtocolError(code="no_such_call")`` otherwise."""
        return self.engine.call(call_id)

    def check_call_budget(self) -> None:
        if len(self.engine.calls) >= self.settings.max_calls:
            raise LocalProtocolError(
                f"the sidecar already has {len(self.engine.calls)} calls open (max_calls)",
                field="call_id",
                code="call_limit",
            )

    def watch(self, recording: Recording, notifier: Notifier) -> None:
        """Send ``notifier``'s deliveries for this recording's events, past ones included."""
        self.notifiers.setdefault(recording.sid, []).append(notifier)
        for event in list(recording.events):
            self._notify(notifier, recording, event)

    def _on_event(self, recording: Recording, event: RecordingEvent) -> None:
        for listener in self.listeners:
            try:
                listener(recording, event)
            except Exception:
                log.exception("recording event listener failed on %r", event)
        for notifier in self.notifiers.get(recording.sid, ()):
            self._notify(notifier, recording, event)
        if recording.session.state.terminal:
            self.notifiers.pop(recording.sid, None)

    def _notify(self, notifier: Notifier, recording: Recording, event: RecordingEvent) -> None:
        try:
            delivery = notifier(recording, event)
        except Exception:
            log.exception("status callback notifier failed on %r", event)
            return
        if delivery is not None and self.submit is not None and not self.submit(delivery):
            log.warning("status callback %s to %s dropped: the queue is full", delivery.event, delivery.url)
