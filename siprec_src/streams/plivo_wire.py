"""Plivo AudioStream on the wire: the JSON text messages of one stream, sans-I/O.

What we send (Plivo, "Stream Event Protocol"):

- ``start`` — ``{"event": "start", "sequenceNumber": 1, "start": {callId, streamId, accountId,
  tracks, mediaFormat{encoding, sampleRate}}, "extra_headers": "k1=v1,k2=v2"}``;
- ``media`` — ``sequenceNumber``, ``streamId``, ``media.{track, timestamp, chunk, payload}`` and
  ``extra_headers``: ``track`` ``inbound`` or ``outbound``, ``chunk`` counting from 1 **per
  track**, ``timestamp`` the Unix time of the frame in milliseconds (a string), ``payload``
  base64 in the stream's ``contentType`` (L16 little-endian or µ-law);
- ``playedStream`` — ``streamId`` and ``name``: a ``checkpoint`` was reached (every audio
  queued before it has played);
- ``clearedAudio`` — ``streamId``: the queued audio was dropped after a ``clearAudio``.

Unlike Twilio, numbers are JSON numbers (``sequenceNumber``, ``chunk``, ``sampleRate``) except
``media.timestamp``, there is no ``connected`` message, and no ``stop`` message either: Plivo
ends a stream by closing the WebSocket and reports StopStream on the HTTP status callback.
``sequenceNumber`` is 1 for ``start`` and +1 for every message after it, acknowledgements
included. ``extra_headers`` is always present (``""`` when the request had none) so a
service reading it never finds it missing.

What a bidirectional server may send back (``decode_server_message``):

- ``playAudio`` — ``media.{contentType, sampleRate, payload}``: ``audio/x-l16`` at 8000 or
  16000, ``audio/x-mulaw`` at 8000 (Plivo's current reference), or the older ``raw`` (the
  stream's own encoding) and ``wav`` (a WAV file, also accepted as ``audio/wav``, whose header
  must agree with ``sampleRate``). ``sampleRate`` may be a number or a numeric string: Plivo's
  own examples write both. ``streamId`` is optional here (Plivo's example has none) and must be
  ours when present;
- ``checkpoint`` — ``streamId`` and ``name``;
- ``clearAudio`` — ``streamId``.

Anything else is a ``MalformedMessageError`` naming the JSON path at fault (``sendDTMF`` too:
we do not play digits into calls).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from siprec_src.errors import LocalProtocolError
from siprec_src.media.audio import AudioDecodeError, AudioFormat, Encoding, decode_wav
from siprec_src.media.g711 import Samples
from siprec_src.media.spec import Leg
from siprec_src.streams import JsonObject, MalformedMessageError, parse_json_object


class _Phase(Enum):
    NEW = "new"
    STARTED = "started"


def _dumps(message: Mapping[str, object]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


class PlivoStreamEncoder:
    """The messages of one stream: ``start``, then ``media``, ``played_stream`` and ``cleared_audio``.

    ``epoch_ms`` is the Unix time, in milliseconds, at which the stream started (given by the
    caller: nothing here reads a clock); media timestamps are ``epoch_ms`` plus the frame's time
    since the start. ``audio_format`` is the stream's ``contentType``.
    """

    def __init__(
        self,
        *,
        stream_id: str,
        call_id: str,
        account_id: str,
        tracks: Sequence[Leg],
        audio_format: AudioFormat,
        epoch_ms: int,
        extra_headers: str = "",
    ) -> None:
        if not tracks or len(set(tracks)) != len(tracks):
            raise LocalProtocolError(
                f"tracks {list(tracks)} must be inbound, outbound or both", field="tracks"
            )
        if audio_format.encoding is Encoding.PCMA:
            raise LocalProtocolError(
                "Plivo streams carry audio/x-l16 or audio/x-mulaw, not A-law", field="audio_format"
            )
        self.stream_id = stream_id
        self.call_id = call_id
        self.account_id = account_id
        self.tracks = tuple(Leg(track) for track in tracks)
        self.audio_format = audio_format
        self.epoch_ms = epoch_ms
        self.extra_headers = extra_headers
        self.sequence_number = 0  # of the last message sent
        self._phase = _Phase.NEW
        self._chunks = dict.fromkeys(self.tracks, 0)
        self._last_timestamp = dict.fromkeys(self.tracks, 0)

    def start(self) -> str:
        if self._phase is not _Phase.NEW:
            raise LocalProtocolError("the stream is already started", code="stream_state")
        self._phase = _Phase.STARTED
        self.sequence_number += 1
        return _dumps(
            {
                "event": "start",
                "sequenceNumber": self.sequence_number,
                "start": {
                    "callId": self.call_id,
                    "streamId": self.stream_id,
                    "accountId": self.account_id,
                    "tracks": [track.value for track in self.tracks],
                    "mediaFormat": {
                        "encoding": self.audio_format.encoding.value,
                        "sampleRate": self.audio_format.sample_rate,
                    },
                },
                "extra_headers": self.extra_headers,
            }
        )

    def media(self, track: Leg, frame: Samples | bytes, *, timestamp_ms: int) -> str:
        """One 20 ms frame of ``track``: int16 samples at the stream's rate, or bytes already in
        its encoding. ``timestamp_ms`` is the frame's time since the stream started."""
        self._expect_started("media")
        if track not in self._chunks:
            raise LocalProtocolError(
                f"this stream carries {[t.value for t in self.tracks]}, not {track.value}", field="track"
            )
        if timestamp_ms < self._last_timestamp[track]:
            raise LocalProtocolError(
                f"{track.value} timestamp {timestamp_ms} ms goes back from {self._last_timestamp[track]} ms",
                field="timestamp_ms",
            )
        payload = self._frame_bytes(frame)
        self._chunks[track] += 1
        self._last_timestamp[track] = timestamp_ms
        self.sequence_number += 1
        return _dumps(
            {
                "event": "media",
                "sequenceNumber": self.sequence_number,
                "streamId": self.stream_id,
                "media": {
                    "track": track.value,
                    "timestamp": str(self.epoch_ms + timestamp_ms),
                    "chunk": self._chunks[track],
                    "payload": base64.b64encode(payload).decode("ascii"),
                },
                "extra_headers": self.extra_headers,
            }
        )

    def played_stream(self, name: str) -> str:
        """The checkpoint ``name`` was reached: all audio queued before it has played."""
        self._expect_started("playedStream")
        self.sequence_number += 1
        return _dumps(
            {
                "event": "playedStream",
                "sequenceNumber": self.sequence_number,
                "streamId": self.stream_id,
                "name": name,
            }
        )

    def cleared_audio(self) -> str:
        """The audio queued by ``playAudio`` and not yet played was dropped."""
        self._expect_started("clearedAudio")
        self.sequence_number += 1
        return _dumps(
            {"event": "clearedAudio", "sequenceNumber": self.sequence_number, "streamId": self.stream_id}
        )

    def _frame_bytes(self, frame: Samples | bytes) -> bytes:
        fmt = self.audio_format
        if isinstance(frame, bytes):
            if len(frame) != fmt.bytes_per_frame:
                raise LocalProtocolError(
                    f"a 20 ms frame of {fmt.encoding.value} at {fmt.sample_rate} Hz is "
                    f"{fmt.bytes_per_frame} bytes, not {len(frame)}",
                    field="frame",
                )
            return frame
        if frame.dtype != np.int16 or frame.shape != (fmt.samples_per_frame,):
            raise LocalProtocolError(
                f"a 20 ms frame at {fmt.sample_rate} Hz is {fmt.samples_per_frame} int16 samples, "
                f"not {frame.shape} of {frame.dtype}",
                field="frame",
            )
        return fmt.encode(frame)

    def _expect_started(self, event: str) -> None:
        if self._phase is not _Phase.STARTED:
            raise LocalProtocolError(f"cannot send {event} before start", code="stream_state")


# --- what a bidirectional server sends ------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class PlayAudioReceived:
    """Audio to play into the call, decoded: int16 ``samples`` (read-only) at ``sample_rate``.

    ``content_type`` is as the server wrote it. The audio may be of any length; resample it to
    the call's rate and cut it into frames before sending it on (``media.audio``).
    """

    content_type: str
    sample_rate: int
    samples: Samples


@dataclass(frozen=True, slots=True)
class CheckpointReceived:
    """Answer ``playedStream`` with ``name`` once the audio queued before it has played."""

    name: str


@dataclass(frozen=True, slots=True)
class ClearAudioReceived:
    """Drop the audio queued and not yet played, then answer ``clearedAudio``."""


ServerMessage = PlayAudioReceived | CheckpointReceived | ClearAudioReceived

_RAW_TYPES = {"audio/x-l16": Encoding.L16, "audio/x-mulaw": Encoding.PCMU}
_WAV_TYPES = ("wav", "audio/wav")
_CONTENT_TYPES = "audio/x-l16, audio/x-mulaw, raw, wav"


def decode_server_message(text: str, *, stream_id: str, stream_format: AudioFormat) -> ServerMessage:
    """What a bidirectional server's text message asks, or ``MalformedMessageError`` (with its
    ``field``). ``stream_format`` is the stream's ``contentType``, which ``raw`` audio is in."""
    message = parse_json_object(text)
    event = message.text("event")
    if event not in ("playAudio", "checkpoint", "clearAudio"):
        raise MalformedMessageError(
            f"{event!r} is not a message a server may send: playAudio, checkpoint or clearAudio",
            field="event",
        )
    if event == "playAudio":
        if message.has("streamId"):
            _check_stream_id(message, stream_id)
        return _play_audio(message.section("media"), stream_format)
    _check_stream_id(message, stream_id)
    if event == "checkpoint":
        return CheckpointReceived(message.text("name"))
    return ClearAudioReceived()


def _check_stream_id(message: JsonObject, stream_id: str) -> None:
    received = message.text("streamId")
    if received != stream_id:
        raise MalformedMessageError(f"{received!r} is not this stream ({stream_id!r})", field="streamId")


def _play_audio(media: JsonObject, stream_format: AudioFormat) -> PlayAudioReceived:
    content_type = media.text("contentType")
    sample_rate = media.integer("sampleRate")
    payload = media.base64("payload")
    if content_type in _WAV_TYPES:
        try:
            wav = decode_wav(payload)
        except AudioDecodeError as exc:
            raise MalformedMessageError(str(exc), field=media.path("payload")) from None
        if wav.sample_rate != sample_rate:
            raise MalformedMessageError(
                f"{sample_rate} does not match the WAV file's {wav.sample_rate} Hz",
                field=media.path("sampleRate"),
            )
        return PlayAudioReceived(content_type, sample_rate, _read_only(wav.samples))
    if content_type == "raw":
        encoding = stream_format.encoding
    elif content_type in _RAW_TYPES:
        encoding = _RAW_TYPES[content_type]
    else:
        raise MalformedMessageError(
            f"{content_type!r} is not one of {_CONTENT_TYPES}", field=media.path("contentType")
        )
    allowed = (8000, 16000) if encoding is Encoding.L16 else (8000,)
    if sample_rate not in allowed:
        raise MalformedMessageError(
            f"{sample_rate} is not allowed for {encoding.value}: {' or '.join(map(str, allowed))}",
            field=media.path("sampleRate"),
        )
    try:
        samples = AudioFormat(encoding, sample_rate).decode(payload)
    except AudioDecodeError as exc:
        raise MalformedMessageError(str(exc), field=media.path("payload")) from None
    return PlayAudioReceived(content_type, sample_rate, _read_only(samples))


def _read_only(samples: Samples) -> Samples:
    samples.flags.writeable = False
    return samples
