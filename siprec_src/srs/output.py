"""What the reference SRS leaves on disk for each recording session, and how it is laid out.

    <out>/<session-id>/stream-<label>.wav    one mono 8 kHz WAV per answered m-line (the sinks write it)
    <out>/<session-id>/session.json          this module: the session as the SRS saw it

``session.json`` is written when the session starts, rewritten at every change (re-INVITE,
UPDATE) and finally when it ends, each time whole and by atomic rename, so a reader never sees
half a file. Its keys:

- ``session_id``, ``state`` (``active``/``ended``), ``started_at``, ``ended_at``,
  ``duration_s``, ``end_reason`` (``bye-from-src``, ``refresh-timeout``, ``shutdown``,
  ``no-ack``, ``dialog-failed``) and ``end_detail`` (the BYE's Reason header, or why we ended);
- ``sip``: Call-ID, From, To, Request-URI, the SRC's address and User-Agent, the session timer
  (interval and who refreshes) and how many refreshes were accepted;
- ``metadata``: the current view (every snapshot merged): participants with name and AOR and the
  labels of the streams each one sends and receives, streams by label with their senders,
  communication sessions, extension data;
- ``streams``: per label the WAV file name, the RTP port, codec and payload types, SRTP suite,
  paused or not, and ``voice_of``: the participants whose voice is in that file (RFC 7865
  ``participantstreamassoc`` send); plus the sink's statistics (``StreamStats``);
- ``snapshots``: every metadata document received, in order, with when and in which request;
- ``log``: started, paused/resumed, metadata updates, refreshes by the SRS, ended.

Times are ISO 8601 in UTC; the session logic keeps event-loop time and ``wall`` converts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from siprec_src.metadata.model import Participant, RecordingMetadata
from siprec_src.srs.jitter import StreamStats
from siprec_src.srs.session import SrsSession, StreamState

__all__ = ["SESSION_FILE", "session_document", "stream_file_name", "write_session_file"]

SESSION_FILE = "session.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

Wall = Callable[[float], datetime]


def stream_file_name(label: str) -> str:
    """``stream-<label>.wav``; characters a file name cannot safely hold become ``_``."""
    safe = _UNSAFE.sub("_", label).lstrip(".") or "_"
    return f"stream-{safe}.wav"


def write_session_file(directory: Path, document: Mapping[str, Any]) -> Path:
    """Write ``session.json`` in ``directory`` atomically (a temporary file, then rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SESSION_FILE
    temporary = directory / f".{SESSION_FILE}.tmp"
    temporary.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def session_document(session: SrsSession, stats: Mapping[str, StreamStats], wall: Wall) -> dict[str, Any]:
    """The content of ``session.json`` (see the module docstring)."""
    metadata = session.metadata or RecordingMetadata()
    ended = session.ended_at
    begun = session.started_at
    return {
        "session_id": session.session_id,
        "state": "active" if session.live else "ended",
        "started_at": _time(begun, wall),
        "ended_at": _time(ended, wall),
        "duration_s": None if begun is None or ended is None else round(ended - begun, 3),
        "end_reason": None if session.end_reason is None else str(session.end_reason),
        "end_detail": session.end_detail or None,
        "sip": {
            "call_id": session.call_id,
            "from": str(session.from_),
            "to": str(session.to),
            "request_uri": session.request_uri,
            "src_address": f"{session.source.transport}:{session.source.host}:{session.source.port}",
            "user_agent": session.user_agent,
            "session_timer": None
            if session.timer is None
            else {"interval_s": session.timer.interval, "refresher": str(session.timer.refresher)},
            "refreshes": session.refreshes,
        },
        "metadata": _metadata_view(metadata),
        "streams": [
            _stream(stream, metadata, stats.get(stream.label), wall) for stream in session.streams.values()
        ],
        "snapshots": [
            {
                "received_at": _time(snapshot.received_at, wall),
                "method": snapshot.method,
                "data_mode": snapshot.metadata.data_mode,
                "document": _jsonable(snapshot.metadata),
            }
            for snapshot in session.snapshots
        ],
        "log": [
            {"at": _time(entry.at, wall), "event": entry.event, "detail": entry.detail or None}
            for entry in session.log
        ],
    }


def _stream(
    stream: StreamState, metadata: RecordingMetadata, stats: StreamStats | None, wall: Wall
) -> dict[str, Any]:
    described = metadata.stream_by_label(stream.label)
    senders = metadata.senders(described.stream_id) if described else ()
    hearers = (
        tuple(
            person
            for assoc in metadata.participant_stream_assocs
            if described.stream_id in assoc.recv
            and (person := metadata.participant(assoc.participant_id)) is not None
        )
        if described
        else ()
    )
    return {
        "label": stream.label,
        "file": stream_file_name(stream.label),
        "port": stream.port,
        "codec": stream.codec,
        "payload_type": stream.payload_type,
        "clock_rate": stream.clock_rate,
        "telephone_event": stream.telephone_event,
        "payload_types": {str(pt): name for pt, name in sorted(stream.payload_types.items())},
        "srtp_suite": stream.srtp_suite,
        "paused": stream.paused,
        "opened_at": _time(stream.opened_at, wall),
        "closed_at": _time(stream.closed_at, wall),
        "metadata_stream_id": described.stream_id if described else None,
        "voice_of": [_person(p) for p in senders],
        "heard_by": [_person(p) for p in hearers],
        "stats": None if stats is None else _stats(stats, wall),
    }


def _stats(stats: StreamStats, wall: Wall) -> dict[str, Any]:
    values = _jsonable(stats)
    assert isinstance(values, dict)
    # Arrival times are in the event loop's clock, like every time the session keeps.
    values["first_arrival"] = _time(stats.first_arrival, wall)
    values["last_arrival"] = _time(stats.last_arrival, wall)
    values["duration_s"] = round(stats.samples_written / 8000, 3)
    return values


def _metadata_view(metadata: RecordingMetadata) -> dict[str, Any]:
    labels = {s.stream_id: s.label for s in metadata.streams}

    def named(ids: tuple[str, ...]) -> list[str]:
        return [labels.get(stream_id, stream_id) for stream_id in ids]

    participants = []
    for person in metadata.participants:
        assoc = metadata.stream_assoc(person.participant_id)
        participants.append(
            {
                **_person(person),
                "sends": named(assoc.send) if assoc else [],
                "receives": named(assoc.recv) if assoc else [],
            }
        )
    return {
        "data_mode": metadata.data_mode,
        "sessions": [
            {
                "id": s.session_id,
                "group_id": s.group_id,
                "sip_session_ids": list(s.sip_session_ids),
                "start_time": s.start_time.isoformat() if s.start_time else None,
                "end_time": s.end_time.isoformat() if s.end_time else None,
            }
            for s in metadata.sessions
        ],
        "participants": participants,
        "streams": [
            {
                "id": s.stream_id,
                "label": s.label,
                "senders": [_person(p) for p in metadata.senders(s.stream_id)],
            }
            for s in metadata.streams
        ],
        "extensions": [
            {"namespace": e.namespace, "parent": e.parent, "elements": [list(pair) for pair in e.elements]}
            for e in metadata.extensions
        ],
    }


def _person(person: Participant) -> dict[str, Any]:
    return {"id": person.participant_id, "aor": person.aor, "name": person.name}


def _time(at: float | None, wall: Wall) -> str | None:
    return None if at is None else wall(at).isoformat(timespec="milliseconds")


def _jsonable(value: object) -> object:
    """Dataclasses, enums, tuples and datetimes as JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return value
