"""The recording metadata model of RFC 7865 §6 as frozen values, and the snapshots an SRC sends.

RFC 7865 describes a recording as a set of blocks tied together by IDs: a communication session
*group*, the communication *sessions* in it, the *participants*, the media *streams* (each named
by the SDP ``a=label`` of its m-line, RFC 4574), and associations saying which participant is in
which session and which participant sends and receives which stream. This module holds those
blocks, nothing about XML (``xml.py`` writes them, ``reader.py`` reads them).

Where the model folds RFC 7865's XML into fewer classes:

- ``Participant`` carries its participant/session association (RFC 7865 §6.7): ``session_id``,
  ``associate_time`` and ``disassociate_time`` become ``<participantsessionassoc>``.
- ``ExtensionData`` holds extension data (RFC 7865 §6.13): elements of another namespace inside a
  block, as (local name, text) pairs, attached to the block whose ID is ``parent`` (``None``: the
  ``<recording>`` element itself). Our own custom call parameters (the Telnyx
  ``include_metadata_custom_headers`` feature) use ``PARAMS_NAMESPACE``, where a pair is
  (parameter name, value); see ``xml.py`` for the XML shape.

Times are timezone-aware ``datetime`` values passed in by the caller; IDs come from ``new_id``
with randomness passed in by the caller. Nothing here reads the clock or the OS.

Snapshots (RFC 7865 §6, ``dataMode``): ``for_call`` builds the *complete* document of a new
recording; ``participant_joined``, ``participant_left`` and ``stream_added`` build *partial*
documents holding only the blocks that changed, which an SRC sends in a re-INVITE (RFC 7866
§7.1.2); ``merge`` folds a partial document into the snapshot, so the SRC always has the complete
document at hand for the next change or a snapshot request.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, TypeVar

from siprec_src.errors import LocalProtocolError

__all__ = [
    "PARAMS_NAMESPACE",
    "DataMode",
    "ExtensionData",
    "Group",
    "Participant",
    "ParticipantStreamAssoc",
    "RecordingMetadata",
    "Session",
    "SessionRecordingAssoc",
    "Stream",
    "for_call",
    "merge",
    "new_id",
    "participant_joined",
    "participant_left",
    "stream_added",
]

DataMode = Literal["complete", "partial"]

# Our namespace for custom call parameters carried as extension data (see xml.py for the shape).
PARAMS_NAMESPACE = "urn:siprec-src:params"

_ID_BYTES = 16

_T = TypeVar("_T")
_K = TypeVar("_K")


def new_id(random_bytes: Callable[[int], bytes]) -> str:
    """A metadata ID: a random (version 4) UUID, base64-encoded (RFC 7865 §6.11, RFC 4122 §4.4).

    ``random_bytes(n)`` must return ``n`` unpredictable bytes (``secrets.token_bytes`` or
    ``os.urandom``); passing it in keeps this module free of the OS and lets tests be exact.
    """
    raw = random_bytes(_ID_BYTES)
    if not isinstance(raw, bytes) or len(raw) != _ID_BYTES:
        raise LocalProtocolError(f"random_bytes({_ID_BYTES}) must return {_ID_BYTES} bytes")
    # RFC 4122 §4.4: set the version (0100 in the high nibble of octet 6) and the variant (10 in
    # the high bits of octet 8), so the ID is a well-formed UUID; as uuid.UUID(version=4) does,
    # without building the object (one ID per block, several per recording).
    octets = bytearray(raw)
    octets[6] = (octets[6] & 0x0F) | 0x40
    octets[8] = (octets[8] & 0x3F) | 0x80
    return binascii.b2a_base64(octets, newline=False).decode("ascii")


@dataclass(frozen=True, slots=True)
class Group:
    """A communication session group (RFC 7865 §6.3): sessions recorded together."""

    group_id: str
    associate_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """A communication session (RFC 7865 §6.4): the call being recorded.

    ``sip_session_ids`` are the ``<sipSessionID>`` values; RFC 7865 means the Session-ID of
    RFC 7989, and several SRCs send the Call-ID there instead (see ``for_call``).
    ``end_time`` is the schema's ``<stop-time>``.
    """

    session_id: str
    group_id: str | None = None
    sip_session_ids: tuple[str, ...] = ()
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Participant:
    """A participant (RFC 7865 §6.5) and its association with a session (RFC 7865 §6.7).

    ``aor`` is the first ``<nameID aor=..>`` as sent (not every SRC sends a URI with a
    scheme); ``name`` is its display name, ``None`` when absent (a blank name is not written).
    ``aor=""`` in a partial update means "not stated here": ``merge`` keeps the known one.
    """

    participant_id: str
    aor: str
    name: str | None = None
    associate_time: datetime | None = None
    disassociate_time: datetime | None = None
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class Stream:
    """A media stream (RFC 7865 §6.6); ``label`` is the ``a=label`` of its SDP m-line (RFC 4574)."""

    stream_id: str
    session_id: str
    label: str


@dataclass(frozen=True, slots=True)
class ParticipantStreamAssoc:
    """Which streams carry a participant's voice (``send``) and which it hears (``recv``), by stream ID.

    RFC 7865 §6.8. Two participants sending the same stream means a mixed stream.
    """

    participant_id: str
    send: tuple[str, ...] = ()
    recv: tuple[str, ...] = ()
    associate_time: datetime | None = None
    disassociate_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class SessionRecordingAssoc:
    """When a communication session started (and stopped) being recorded (RFC 7865 §6.9)."""

    session_id: str
    associate_time: datetime | None = None
    disassociate_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class ExtensionData:
    """Extension data (RFC 7865 §6.13): elements of ``namespace`` inside the block ``parent``.

    ``parent`` is the ID of a group, session, participant or stream in the same document, or
    ``None`` for the ``<recording>`` element. In ``PARAMS_NAMESPACE`` each pair is (parameter
    name, value). In any other namespace each pair is (local name, text) of one element; the
    reader writes nested elements as ``outer/inner`` and attributes as ``element@attribute``.
    """

    namespace: str
    elements: tuple[tuple[str, str], ...]
    parent: str | None = None


@dataclass(frozen=True, slots=True)
class RecordingMetadata:
    """One RFC 7865 metadata document: a complete snapshot or a partial update (RFC 7865 §6)."""

    data_mode: DataMode = "complete"
    groups: tuple[Group, ...] = ()
    sessions: tuple[Session, ...] = ()
    participants: tuple[Participant, ...] = ()
    streams: tuple[Stream, ...] = ()
    participant_stream_assocs: tuple[ParticipantStreamAssoc, ...] = ()
    session_recording_assocs: tuple[SessionRecordingAssoc, ...] = ()
    extensions: tuple[ExtensionData, ...] = ()

    def participant(self, participant_id: str) -> Participant | None:
        return next((p for p in self.participants if p.participant_id == participant_id), None)

    def stream(self, stream_id: str) -> Stream | None:
        return next((s for s in self.streams if s.stream_id == stream_id), None)

    def stream_by_label(self, label: str) -> Stream | None:
        return next((s for s in self.streams if s.label == label), None)

    def stream_assoc(self, participant_id: str) -> ParticipantStreamAssoc | None:
        return next((a for a in self.participant_stream_assocs if a.participant_id == participant_id), None)

    def senders(self, stream_id: str) -> tuple[Participant, ...]:
        """The participants whose voice is on ``stream_id``: one for a separate stream, several if mixed."""
        ids = [a.participant_id for a in self.participant_stream_assocs if stream_id in a.send]
        return tuple(p for pid in ids if (p := self.participant(pid)) is not None)

    def problems(self) -> tuple[str, ...]:
        """What makes this document inconsistent; empty when it is sound. ``to_xml`` refuses any.

        Always: IDs and labels present and unique, extension parents present in the document.
        Complete documents also: every reference (group-ref, session, participant, stream)
        resolves inside the document. A partial document may refer to blocks sent earlier.
        """
        found: list[str] = []
        if self.data_mode not in ("complete", "partial"):
            found.append(f"dataMode must be 'complete' or 'partial', not {self.data_mode!r}")
        kinds: list[tuple[str, list[str]]] = [
            ("group_id", [g.group_id for g in self.groups]),
            ("session_id", [s.session_id for s in self.sessions]),
            ("participant_id", [p.participant_id for p in self.participants]),
            ("stream_id", [s.stream_id for s in self.streams]),
            (
                "participantstreamassoc participant_id",
                [a.participant_id for a in self.participant_stream_assocs],
            ),
            ("sessionrecordingassoc session_id", [a.session_id for a in self.session_recording_assocs]),
        ]
        for what, ids in kinds:
            found.extend(_duplicates_or_empty(what, ids))
        # RFC 4574: a label names one m-line, so two streams with one label cannot be told apart.
        found.extend(_duplicates_or_empty("stream label", [s.label for s in self.streams]))
        element_ids = {g.group_id for g in self.groups} | {s.session_id for s in self.sessions}
        element_ids |= {p.participant_id for p in self.participants} | {s.stream_id for s in self.streams}
        for ext in self.extensions:
            if ext.parent is not None and ext.parent not in element_ids:
                found.append(f"extension data in {ext.namespace!r} refers to unknown parent {ext.parent!r}")
        if self.data_mode == "complete":
            found.extend(self._dangling_references())
        return tuple(found)

    def _dangling_references(self) -> list[str]:
        found: list[str] = []
        groups = {g.group_id for g in self.groups}
        sessions = {s.session_id for s in self.sessions}
        participants = {p.participant_id for p in self.participants}
        streams = {s.stream_id for s in self.streams}
        for s in self.sessions:
            if s.group_id is not None and s.group_id not in groups:
                found.append(f"session {s.session_id!r} refers to unknown group {s.group_id!r}")
        for p in self.participants:
            if p.session_id is not None and p.session_id not in sessions:
                found.append(f"participant {p.participant_id!r} refers to unknown session {p.session_id!r}")
        for st in self.streams:
            if st.session_id not in sessions:
                found.append(f"stream {st.stream_id!r} refers to unknown session {st.session_id!r}")
        for a in self.participant_stream_assocs:
            if a.participant_id not in participants:
                found.append(f"participantstreamassoc refers to unknown participant {a.participant_id!r}")
            for sid in (*a.send, *a.recv):
                if sid not in streams:
                    found.append(
                        f"participantstreamassoc of {a.participant_id!r} refers to unknown stream {sid!r}"
                    )
        for r in self.session_recording_assocs:
            if r.session_id not in sessions:
                found.append(f"sessionrecordingassoc refers to unknown session {r.session_id!r}")
        return found


def _duplicates_or_empty(what: str, values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    found: list[str] = []
    for value in values:
        if not value:
            found.append(f"empty {what}")
        elif value in seen:
            found.append(f"duplicate {what} {value!r}")
        seen.add(value)
    return found


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise LocalProtocolError("metadata times must be timezone-aware datetimes (RFC 3339 needs an offset)")


def for_call(
    call_id: str,
    participants: Sequence[tuple[str, str | None]],
    streams: Sequence[tuple[str, int, Sequence[int]]],
    now: datetime,
    random_bytes: Callable[[int], bytes],
    *,
    sip_session_id: str | None = None,
    custom_parameters: Sequence[tuple[str, str]] = (),
) -> RecordingMetadata:
    """The complete metadata of a new recording of one call (RFC 7865 §6, ``dataMode`` complete).

    ``participants`` are (AOR, display name or None); ``streams`` are (label, index of the
    participant whose voice it carries, indexes of the participants who hear it). For the usual
    two-party call: ``[(caller), (callee)]`` and ``[("1", 0, [1]), ("2", 1, [0])]``.

    ``sip_session_id`` is the call's Session-ID (RFC 7989) when it has one; otherwise the
    ``<sipSessionID>`` carries the Call-ID, as Connectel's SRC does, so the SRS can still tie the
    recording to the call. ``custom_parameters`` (name, value) become extension data of the
    session in ``PARAMS_NAMESPACE``. Every block is associated at ``now``.
    """
    _require_aware(now)
    if not call_id:
        raise LocalProtocolError("for_call needs the Call-ID of the recorded call")
    if not participants:
        raise LocalProtocolError("a recording needs at least one participant")
    group = Group(new_id(random_bytes), now)
    session = Session(
        new_id(random_bytes),
        group_id=group.group_id,
        sip_session_ids=(sip_session_id or call_id,),
        start_time=now,
    )
    people = tuple(
        Participant(new_id(random_bytes), aor, name, now, None, session.session_id)
        for aor, name in participants
    )
    media: list[Stream] = []
    sends: list[list[str]] = [[] for _ in people]
    recvs: list[list[str]] = [[] for _ in people]
    for label, sender, receivers in streams:
        stream = Stream(new_id(random_bytes), session.session_id, label)
        media.append(stream)
        for index in (sender, *receivers):
            if not 0 <= index < len(people):
                raise LocalProtocolError(
                    f"stream {label!r} refers to participant index {index}, not in the call"
                )
        sends[sender].append(stream.stream_id)
        for index in receivers:
            recvs[index].append(stream.stream_id)
    assocs = tuple(
        ParticipantStreamAssoc(p.participant_id, tuple(sends[i]), tuple(recvs[i]), now)
        for i, p in enumerate(people)
    )
    extensions: tuple[ExtensionData, ...] = ()
    if custom_parameters:
        extensions = (ExtensionData(PARAMS_NAMESPACE, tuple(custom_parameters), session.session_id),)
    metadata = RecordingMetadata(
        "complete",
        groups=(group,),
        sessions=(session,),
        participants=people,
        streams=tuple(media),
        participant_stream_assocs=assocs,
        session_recording_assocs=(SessionRecordingAssoc(session.session_id, now),),
        extensions=extensions,
    )
    _check(metadata)
    return metadata


def _check(metadata: RecordingMetadata) -> None:
    problems = metadata.problems()
    if problems:
        raise LocalProtocolError("inconsistent recording metadata: " + "; ".join(problems))


def _only_session(snapshot: RecordingMetadata) -> Session:
    if len(snapshot.sessions) != 1:
        raise LocalProtocolError(
            f"the snapshot has {len(snapshot.sessions)} sessions; "
            "these helpers update single-session recordings"
        )
    return snapshot.sessions[0]


def _stream_ids(snapshot: RecordingMetadata, labels: Sequence[str]) -> tuple[str, ...]:
    ids = []
    for label in labels:
        stream = snapshot.stream_by_label(label)
        if stream is None:
            raise LocalProtocolError(f"no stream labelled {label!r} in the recording")
        ids.append(stream.stream_id)
    return tuple(ids)


def participant_joined(
    snapshot: RecordingMetadata,
    aor: str,
    name: str | None,
    now: datetime,
    random_bytes: Callable[[int], bytes],
    *,
    send_labels: Sequence[str] = (),
    recv_labels: Sequence[str] = (),
) -> RecordingMetadata:
    """The partial update for a participant joining (a transfer target, a conference member).

    Holds the new participant (associated with the session at ``now``) and its stream
    association: ``send_labels`` are the streams its voice is on, ``recv_labels`` those it hears.
    The new participant's ID is ``update.participants[0].participant_id``.
    """
    _require_aware(now)
    session = _only_session(snapshot)
    person = Participant(new_id(random_bytes), aor, name, now, None, session.session_id)
    assoc = ParticipantStreamAssoc(
        person.participant_id, _stream_ids(snapshot, send_labels), _stream_ids(snapshot, recv_labels), now
    )
    return RecordingMetadata("partial", participants=(person,), participant_stream_assocs=(assoc,))


def participant_left(snapshot: RecordingMetadata, participant_id: str, now: datetime) -> RecordingMetadata:
    """The partial update for a participant leaving: its session and stream associations end at ``now``.

    RFC 7865 §6.7, §6.8: the disassociate-time says when the participant stopped being part of
    the session and of its streams; the blocks themselves stay, so the recording keeps its history.
    """
    _require_aware(now)
    person = snapshot.participant(participant_id)
    if person is None:
        raise LocalProtocolError(f"no participant {participant_id!r} in the recording")
    assocs: tuple[ParticipantStreamAssoc, ...] = ()
    assoc = snapshot.stream_assoc(participant_id)
    if assoc is not None:
        assocs = (replace(assoc, disassociate_time=now),)
    return RecordingMetadata(
        "partial", participants=(replace(person, disassociate_time=now),), participant_stream_assocs=assocs
    )


def stream_added(
    snapshot: RecordingMetadata,
    label: str,
    sender_id: str,
    receiver_ids: Sequence[str],
    now: datetime,
    random_bytes: Callable[[int], bytes],
) -> RecordingMetadata:
    """The partial update for a new stream (an m-line added in the re-INVITE) labelled ``label``.

    Holds the stream and the stream associations of its sender and receivers, each with its
    complete send/recv lists: whether an SRS reads a partial association as a replacement or as
    an addition, it ends up with the right lists.
    """
    _require_aware(now)
    session = _only_session(snapshot)
    if snapshot.stream_by_label(label) is not None:
        raise LocalProtocolError(f"the recording already has a stream labelled {label!r}")
    stream = Stream(new_id(random_bytes), session.session_id, label)
    changed: dict[str, ParticipantStreamAssoc] = {}
    for pid in (sender_id, *receiver_ids):
        if snapshot.participant(pid) is None:
            raise LocalProtocolError(f"no participant {pid!r} in the recording")
        changed[pid] = (
            changed.get(pid) or snapshot.stream_assoc(pid) or ParticipantStreamAssoc(pid, associate_time=now)
        )
    changed[sender_id] = replace(changed[sender_id], send=(*changed[sender_id].send, stream.stream_id))
    for pid in receiver_ids:
        changed[pid] = replace(changed[pid], recv=(*changed[pid].recv, stream.stream_id))
    return RecordingMetadata("partial", streams=(stream,), participant_stream_assocs=tuple(changed.values()))


def merge(snapshot: RecordingMetadata, update: RecordingMetadata) -> RecordingMetadata:
    """Fold ``update`` into ``snapshot``: the complete document after a change (RFC 7865 §6).

    A complete update replaces the snapshot. A partial one replaces each block whose ID it
    carries and appends the new ones, in order; extension data is replaced per (namespace, parent).
    """
    if update.data_mode == "complete":
        return update
    return RecordingMetadata(
        snapshot.data_mode,
        groups=_upsert(snapshot.groups, update.groups, lambda g: g.group_id),
        sessions=_upsert(snapshot.sessions, update.sessions, lambda s: s.session_id),
        participants=_upsert(
            snapshot.participants, _fill_unstated(snapshot, update.participants), lambda p: p.participant_id
        ),
        streams=_upsert(snapshot.streams, update.streams, lambda s: s.stream_id),
        participant_stream_assocs=_upsert(
            snapshot.participant_stream_assocs, update.participant_stream_assocs, lambda a: a.participant_id
        ),
        session_recording_assocs=_upsert(
            snapshot.session_recording_assocs, update.session_recording_assocs, lambda a: a.session_id
        ),
        extensions=_upsert(snapshot.extensions, update.extensions, lambda e: (e.namespace, e.parent)),
    )


def _fill_unstated(snapshot: RecordingMetadata, update: tuple[Participant, ...]) -> tuple[Participant, ...]:
    """A participant with ``aor=""`` in a partial update (only its session association was sent)
    keeps the AOR and name the snapshot knows."""
    filled = []
    for person in update:
        known = snapshot.participant(person.participant_id)
        if not person.aor and known is not None:
            person = replace(person, aor=known.aor, name=known.name)
        filled.append(person)
    return tuple(filled)


def _upsert(old: tuple[_T, ...], new: tuple[_T, ...], key: Callable[[_T], _K]) -> tuple[_T, ...]:
    replacements = {key(item): item for item in new}
    merged = [replacements.pop(key(item), item) for item in old]
    merged.extend(item for item in new if key(item) in replacements)
    return tuple(merged)
