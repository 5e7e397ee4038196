"""``SessionRouter``: many recording sessions on one ``UserAgentCore``, still sans-I/O.

The core reports every event of every dialog in one stream; the router hands each to the
session that owns it (by request id for responses, by dialog id for requests from an SRS)
and merges the sessions' deadlines into one ``get_timer()`` with a heap, so a sidecar with
thousands of recordings costs O(log n) per timer, not a scan.

Requests no session owns are answered here: an SRC does not take calls, so an
out-of-dialog INVITE gets 403 (RFC 7866 §6.1: the SRS never initiates a recording session).
A dialog no session owns (a 2xx to the INVITE of a recording that already ended) gets BYE.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from siprec_src.errors import LocalProtocolError
from siprec_src.recording.events import RecordingEvent
from siprec_src.recording.session import ABANDONED_REASON, Action, RecordingSession
from siprec_src.sip.dialog import DialogId
from siprec_src.sip.useragent import (
    AckReceived,
    DialogEstablished,
    DialogTerminated,
    GlareBackoffStarted,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    TransportLost,
    UaEvent,
    UserAgentCore,
)


class SessionRouter:
    def __init__(self, core: UserAgentCore) -> None:
        self.core = core
        self.sessions: dict[str, RecordingSession] = {}
        self._by_request: dict[int, str] = {}
        self._by_dialog: dict[DialogId, str] = {}
        self._dialog_of: dict[str, DialogId] = {}
        self._requests_of: dict[str, list[int]] = {}
        self._timers: list[tuple[float, str]] = []
        self._armed: dict[str, float] = {}
        self._touched: dict[str, None] = {}  # ordered set of sessions with output to drain

    # --- sessions -----------------------------------------------------------------------------

    def add(self, session: RecordingSession) -> None:
        if session.recording_id in self.sessions:
            raise LocalProtocolError(f"recording {session.recording_id} already exists")
        self.sessions[session.recording_id] = session
        self._requests_of[session.recording_id] = []
        self.sync(session)

    def sync(self, session: RecordingSession) -> None:
        """Index what a session did since the last call (requests, dialog, deadline).

        Call after every method called on a session from outside the router.
        """
        rid = session.recording_id
        for request_id in session.drain_request_ids():
            self._by_request[request_id] = rid
            self._requests_of[rid].append(request_id)
        old = self._dialog_of.get(rid)
        if session.dialog_id != old:
            if old is not None:
                self._by_dialog.pop(old, None)
                del self._dialog_of[rid]
            if session.dialog_id is not None:
                self._by_dialog[session.dialog_id] = rid
                self._dialog_of[rid] = session.dialog_id
        when = session.get_timer()
        if when is None:
            self._armed.pop(rid, None)
        elif self._armed.get(rid) != when:
            self._armed[rid] = when
            heapq.heappush(self._timers, (when, rid))
        self._touched[rid] = None

    def drain(self) -> Iterator[tuple[RecordingSession, list[Action], list[RecordingEvent]]]:
        """Each touched session's actions and events, in order; finished sessions are dropped after."""
        while self._touched:
            rid = next(iter(self._touched))
            del self._touched[rid]
            session = self.sessions.get(rid)
            if session is None:
                continue
            actions: list[Action] = []
            while (action := session.next_action()) is not None:
                actions.append(action)
            events: list[RecordingEvent] = []
            while (event := session.next_event()) is not None:
                events.append(event)
            if session.state.terminal:
                self._forget(session)
            if actions or events:
                yield session, actions, events

    def _forget(self, session: RecordingSession) -> None:
        rid = session.recording_id
        self.sessions.pop(rid, None)
        self._armed.pop(rid, None)
        for request_id in self._requests_of.pop(rid, []):
            self._by_request.pop(request_id, None)
        dialog = self._dialog_of.pop(rid, None)
        if dialog is not None:
            self._by_dialog.pop(dialog, None)

    # --- events from the core -----------------------------------------------------------------

    def handle_ua_event(self, event: UaEvent, now: float) -> None:
        if isinstance(event, TransportLost):
            # Rare, and about a peer rather than a request: every session toward it checks.
            for each in list(self.sessions.values()):
                each.transport_failed(event.destination, now)
                self.sync(each)
            return
        session = self._owner(event)
        if session is None:
            self._unowned(event, now)
            return
        session.handle_ua_event(event, now)
        self.sync(session)

    def _owner(self, event: UaEvent) -> RecordingSession | None:
        rid: str | None = None
        if isinstance(event, ResponseReceived | RequestFailed | GlareBackoffStarted):
            rid = self._by_request.get(event.request_id)
        elif isinstance(event, DialogEstablished):
            if event.request_id is not None:
                rid = self._by_request.get(event.request_id)
        elif isinstance(event, RequestReceived):
            if event.dialog_id is not None:
                rid = self._by_dialog.get(event.dialog_id)
        elif isinstance(event, AckReceived | DialogTerminated):
            rid = self._by_dialog.get(event.dialog_id)
        return self.sessions.get(rid) if rid is not None else None

    def _unowned(self, event: UaEvent, now: float) -> None:
        if isinstance(event, DialogEstablished) and event.request_id is not None:
            # A 2xx to the INVITE of a recording that ended before any provisional came, so the
            # core could not CANCEL it (RFC 3261 §9.1): nobody records on that dialog.
            self.core.bye(event.dialog_id, now, reason=ABANDONED_REASON)
            return
        if not isinstance(event, RequestReceived):
            return
        if event.dialog_id is not None:
            # A dialog whose recording already ended (RFC 3261 §12.2.2).
            self.core.respond(event.server_id, 481, now)
        elif event.request.method == "INVITE":
            self.core.respond(
                event.server_id,
                403,
                now,
                headers=[("Warning", '399 siprec-src "this is a recording client; it takes no calls"')],
            )
        else:
            self.core.respond(
                event.server_id, 405, now, headers=[("Allow", ", ".join(self.core.config.allow))]
            )

    # --- timers ---------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        timers = self._timers
        while timers:
            when, rid = timers[0]
            if self._armed.get(rid) == when:
                return when
            heapq.heappop(timers)  # stale: the session re-armed or finished since
        return None

    def handle_timer(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, rid = heapq.heappop(timers)
            if self._armed.get(rid) != when:
                continue
            del self._armed[rid]
            session = self.sessions.get(rid)
            if session is not None:
                session.handle_timer(now)
                self.sync(session)
