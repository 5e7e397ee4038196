"""Twilio Media Streams on the wire: the JSON text messages of one stream, sans-I/O.

What we send (Twilio, "Media Streams - WebSocket Messages"), in this order:

- ``connected`` — ``{"event": "connected", "protocol": "Call", "version": "1.0.0"}``, no sequence number;
- ``start`` — ``sequenceNumber`` "1", ``start.{streamSid, accountSid, callSid, tracks,
  customParameters, mediaFormat{encoding: "audio/x-mulaw", sampleRate: 8000, channels: 1}}``
  and ``streamSid``;
- ``media`` — ``media.{track, chunk, timestamp, payload}``: ``track`` ``inbound`` or
  ``outbound``, ``chunk`` counting from "1" **per track**, ``timestamp`` the presentation time in
  milliseconds since the stream started, ``payload`` base64 µ-law;
- ``mark`` — ``mark.name``: on a bidirectional stream, the echo of a server's mark once the
  audio queued before it has played (or was cleared);
- ``stop`` — ``stop.{accountSid, callSid}``.

Every message but ``connected`` carries ``sequenceNumber`` (a string, "1" for ``start``, +1 per
message) and ``streamSid``. Numbers are strings on this wire, as Twilio sends them; only
``mediaFormat`` holds JSON numbers.

What a bidirectional server may send back (``decode_server_message``): ``media`` with
``media.payload`` (base64 µ-law 8 kHz), ``mark`` with ``mark.name``, and ``clear``; each must name
our ``streamSid``. Anything else is a ``MalformedMessageError`` naming the JSON path at fault.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from siprec_src.errors import LocalProtocolError
from siprec_src.media.audio import PCMU_8K
from siprec_src.media.g711 import Samples, ulaw_decode
from siprec_src.media.spec import Leg
from siprec_src.streams import MalformedMessageError, parse_json_object

PROTOCOL = "Call"
VERSION = "1.0.0"


class _Phase(Enum):
    NEW = "new"
    CONNECTED = "connected"
    STARTED = "started"
    STOPPED = "stopped"


def _dumps(message: Mapping[str, object]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


class TwilioStreamEncoder:
    """The messages of one stream, in order: ``connected``, ``start``, then ``media`` and ``mark``,
    then ``stop``. Each method returns the JSON text of one WebSocket text message.

    Calling them out of that order, sending media of a track the stream does not carry, or a
    timestamp going back in time on a track is a ``LocalProtocolError``.
    """

    def __init__(
        self,
        *,
        stream_sid: str,
        account_sid: str,
        call_sid: str,
        tracks: Sequence[Leg],
        custom_parameters: Mapping[str, str] | None = None,
    ) -> None:
        if not tracks or len(set(tracks)) != len(tracks):
            raise LocalProtocolError(
                f"tracks {list(tracks)} must be inbound, outbound or both", field="tracks"
            )
        self.stream_sid = stream_sid
        self.account_sid = account_sid
        self.call_sid = call_sid
        self.tracks = tuple(Leg(track) for track in tracks)
        self.custom_parameters = dict(custom_parameters or {})
        self.sequence_number = 0  # of the last message sent
        self._phase = _Phase.NEW
        self._chunks = dict.fromkeys(self.tracks, 0)
        self._last_timestamp = dict.fromkeys(self.tracks, 0)

    def connected(self) -> str:
        self._expect(_Phase.NEW, "connected")
        self._phase = _Phase.CONNECTED
        return _dumps({"event": "connected", "protocol": PROTOCOL, "version": VERSION})

    def start(self) -> str:
        self._expect(_Phase.CONNECTED, "start")
        self._phase = _Phase.STARTED
        return self._message(
            "start",
            {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": [track.value for track in self.tracks],
                "customParameters": self.custom_parameters,
                "mediaFormat": {
                    "encoding": PCMU_8K.encoding.value,
                    "sampleRate": PCMU_8K.sample_rate,
                    "channels": 1,
                },
            },
        )

    def media(self, track: Leg, frame: Samples | bytes, *, timestamp_ms: int) -> str:
        """One 20 ms frame of ``track``: 160 int16 samples at 8 kHz, or 160 bytes of µ-law.

        ``timestamp_ms`` is when the frame's first sample was heard, in milliseconds since the
        stream started (from the RTP timestamps, so silence suppression and holds show as gaps).
        """
        self._expect(_Phase.STARTED, "media")
        if track not in self._chunks:
            raise LocalProtocolError(
                f"this stream carries {[t.value for t in self.tracks]}, not {track.value}", field="track"
            )
        if timestamp_ms < self._last_timestamp[track]:
            raise LocalProtocolError(
                f"{track.value} timestamp {timestamp_ms} ms goes back from {self._last_timestamp[track]} ms",
                field="timestamp_ms",
            )
        payload = _ulaw_frame(frame)
        self._chunks[track] += 1
        self._last_timestamp[track] = timestamp_ms
        return self._message(
            "media",
            {
                "track": track.value,
                "chunk": str(self._chunks[track]),
                "timestamp": str(timestamp_ms),
                "payload": base64.b64encode(payload).decode("ascii"),
            },
        )

    def mark(self, name: str) -> str:
        """Echo of the server's mark ``name``: the audio it queued before the mark has played."""
        self._expect(_Phase.STARTED, "mark")
        return self._message("mark", {"name": name})

    def stop(self) -> str:
        self._expect(_Phase.STARTED, "stop")
        self._phase = _Phase.STOPPED
        return self._message("stop", {"accountSid": self.account_sid, "callSid": self.call_sid})

    def _message(self, event: str, body: Mapping[str, object]) -> str:
        self.sequence_number += 1
        return _dumps(
            {
                "event": event,
                "sequenceNumber": str(self.sequence_number),
                event: body,
                "streamSid": self.stream_sid,
            }
        )

    def _expect(self, phase: _Phase, event: str) -> None:
        if self._phase is not phase:
            raise LocalProtocolError(
                f"cannot send {event} when the stream is {self._phase.value}: "
                "the order is connected, start, media/mark, stop",
                code="stream_state",
            )


def _ulaw_frame(frame: Samples | bytes) -> bytes:
    if isinstance(frame, bytes):
        if len(frame) != PCMU_8K.bytes_per_frame:
            raise LocalProtocolError(
                f"a µ-law frame is {PCMU_8K.bytes_per_frame} bytes (20 ms at 8 kHz), not {len(frame)}",
                field="frame",
            )
        return frame
    if frame.dtype != np.int16 or frame.shape != (PCMU_8K.samples_per_frame,):
        raise LocalProtocolError(
            f"a frame is {PCMU_8K.samples_per_frame} int16 samples (20 ms at 8 kHz), "
            f"not {frame.shape} of {frame.dtype}",
            field="frame",
        )
    return PCMU_8K.encode(frame)


# --- what a bidirectional server sends ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaReceived:
    """Audio to play into the call: µ-law at 8 kHz, any length (not necessarily 20 ms)."""

    payload: bytes

    @property
    def samples(self) -> Samples:
        return ulaw_decode(self.payload)


@dataclass(frozen=True, slots=True)
class MarkReceived:
    """Echo ``name`` back (``TwilioStreamEncoder.mark``) once the audio queued before it has played."""

    name: str


@dataclass(frozen=True, slots=True)
class ClearReceived:
    """Drop the audio queued and not yet played; echo every mark still pending."""


ServerMessage = MediaReceived | MarkReceived | ClearReceived


def decode_server_message(text: str, *, stream_sid: str) -> ServerMessage:
    """What a bidirectional server's text message asks, or ``MalformedMessageError`` (with its
    ``field``) if it is not JSON, not a known event, lacks a field, or names another stream."""
    message = parse_json_object(text)
    event = message.text("event")
    if event not in ("media", "mark", "clear"):
        raise MalformedMessageError(
            f"{event!r} is not a message a server may send: media, mark or clear", field="event"
        )
    sid = message.text("streamSid")
    if sid != stream_sid:
        raise MalformedMessageError(f"{sid!r} is not this stream ({stream_sid!r})", field="streamSid")
    if event == "media":
        return MediaReceived(message.section("media").base64("payload"))
    if event == "mark":
        return MarkReceived(message.section("mark").text("name"))
    return ClearReceived()
