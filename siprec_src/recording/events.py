"""What a recording session tells the control layer (STYLE.md #3: a closed set, past tense).

Every event names the recording (``recording_id``) so one stream of events can serve many
recordings; the control layer turns them into status callbacks and API state.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RecordingEvent:
    recording_id: str


@dataclass(frozen=True, slots=True)
class AttemptStarted(RecordingEvent):
    """A SIPREC INVITE went to one SRS of the connector's list (1-based ``attempt``)."""

    srs: str
    attempt: int


@dataclass(frozen=True, slots=True)
class AttemptFailed(RecordingEvent):
    """That SRS did not take the session; ``status`` is its SIP status (408 for silence)."""

    srs: str
    attempt: int
    status: int
    reason: str
    retry_after: int | None = None


@dataclass(frozen=True, slots=True)
class RecordingStarted(RecordingEvent):
    """The first 2xx: the SRS accepted the session and media flows to it."""

    srs: str
    sip_call_id: str
    session_expires: int | None  # None: no session timer (disabled, or the SRS does not do it)
    refresher: str | None  # "uac" (we refresh) or "uas" (the SRS refreshes)


@dataclass(frozen=True, slots=True)
class SessionLost(RecordingEvent):
    """The SRS of the running session is gone (no answer to a re-INVITE within the attempt
    timeout, 408/481, a transport failure, no refresh from it): the media toward it stopped and
    a new session is being set up on the connector's SRSs (AttemptStarted/AttemptFailed follow,
    then SessionRecovered or RecordingFailed)."""

    srs: str
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class SessionRecovered(RecordingEvent):
    """A new session took the recording over after SessionLost, with the same metadata ids.

    ``interrupted_for``: seconds from the loss being detected to the new session's 2xx.
    """

    srs: str
    sip_call_id: str
    interrupted_for: float


@dataclass(frozen=True, slots=True)
class StreamRefused(RecordingEvent):
    """The SRS refused one offered stream (port 0); the recording goes on with the others."""

    label: str
    reason: str


@dataclass(frozen=True, slots=True)
class SessionRefreshed(RecordingEvent):
    session_expires: int
    by: str  # "src" when our re-INVITE refreshed it, "srs" when the SRS did


@dataclass(frozen=True, slots=True)
class MetadataUpdated(RecordingEvent):
    """A re-INVITE carrying new metadata (participants, streams) was accepted."""


@dataclass(frozen=True, slots=True)
class RecordingPaused(RecordingEvent):
    by: str  # "src" or "srs"


@dataclass(frozen=True, slots=True)
class RecordingResumed(RecordingEvent):
    by: str


@dataclass(frozen=True, slots=True)
class RecordingStopped(RecordingEvent):
    """The session ended normally; ``by`` is "src" (we sent BYE/CANCEL) or "srs" (its BYE)."""

    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class RecordingFailed(RecordingEvent):
    """The recording could not start, or broke; ``status`` is the deciding SIP status."""

    status: int
    reason: str


TERMINAL_EVENTS = (RecordingStopped, RecordingFailed)


# --- WebSocket streams (recording/stream.py) ---------------------------------------------------
# A separate family: a stream is not a SIPREC session, and the control layer turns these into
# the shapes' stream callbacks (Plivo StartStream/StopStream/DroppedStream/Played, Twilio
# stream-started/stream-stopped/stream-error).


@dataclass(frozen=True, slots=True)
class StreamEvent:
    stream_id: str  # the stream's sid: "MZ" + 32 hex (Twilio shape) or a UUID (Plivo shape)


@dataclass(frozen=True, slots=True)
class StreamStarted(StreamEvent):
    """The WebSocket is open, the start message is on its way and the call's audio flows."""


@dataclass(frozen=True, slots=True)
class StreamStopped(StreamEvent):
    """Ended on purpose: ``reason`` is "stopped" (by the API), "call ended" or "stream timeout"."""

    reason: str
    frames_dropped: int = 0  # media frames the full send queue had to drop, over the stream's life


@dataclass(frozen=True, slots=True)
class StreamDropped(StreamEvent):
    """Could not connect, or the connection broke (or the service broke the protocol).

    ``error`` starts with Plivo's words ("Could not establish connection with the remote
    service" / "Connection disconnected with the remote service") and says what happened.
    """

    error: str
    frames_dropped: int = 0


@dataclass(frozen=True, slots=True)
class StreamFramesDropped(StreamEvent):
    """The service reads slower than audio comes: the oldest queued frames were dropped.

    Reported at most once a second while it lasts; ``total`` counts every frame dropped so far.
    """

    total: int


@dataclass(frozen=True, slots=True)
class StreamPlayed(StreamEvent):
    """Bidirectional playback: the audio queued before mark/checkpoint ``name`` has been played;
    ``name`` None: everything queued has been played and nothing is left (Plivo's Played)."""

    name: str | None
