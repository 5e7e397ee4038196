"""Recording metadata model and XML writer (siprec_src.metadata.model, siprec_src.metadata.xml).

Covers: IDs (base64 UUIDv4 from injected randomness), the two-party snapshot of ``for_call``,
the partial updates (participant joined/left, stream added) and ``merge``, ``problems()``,
the XML shape (default namespace, RFC 7865 §9 element order, RFC 3339 UTC times), escaping of
hostile display names and AORs, replacement of characters XML cannot carry, extension data
(our custom parameters and foreign namespaces), and a structural check of the output done
with a plain XML parser, independent of our reader. Reading back is in test_reader.py.
Does not cover: validation against the RFC 7865 XSD (no schema validator in the stdlib).
"""

from __future__ import annotations

import base64
import itertools
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from xml.etree import ElementTree as ET

import pytest

from siprec_src.errors import LocalProtocolError
from siprec_src.metadata.model import (
    PARAMS_NAMESPACE,
    ExtensionData,
    Participant,
    RecordingMetadata,
    Session,
    Stream,
    for_call,
    merge,
    new_id,
    participant_joined,
    participant_left,
    stream_added,
)
from siprec_src.metadata.xml import RECORDING_NAMESPACE, format_time, to_xml

NOW = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
NS = f"{{{RECORDING_NAMESPACE}}}"
# RFC 7865 §9: the order of the children of <recording>.
SCHEMA_ORDER = [
    "dataMode",
    "group",
    "session",
    "participant",
    "stream",
    "sessionrecordingassoc",
    "participantsessionassoc",
    "participantstreamassoc",
]


class FakeRandom:
    """Deterministic ``random_bytes``: each call returns the next counter value, so IDs differ."""

    def __init__(self) -> None:
        self.counter = itertools.count(1)

    def __call__(self, n: int) -> bytes:
        return next(self.counter).to_bytes(n, "big")


def two_party(**kwargs: object) -> RecordingMetadata:
    return for_call(
        "a84b4c76e66710@pc33.atlanta.example.com",
        [("sip:alice@atlanta.example.com", "Alice"), ("sip:bob@biloxi.example.com", None)],
        [("1", 0, [1]), ("2", 1, [0])],
        NOW,
        FakeRandom(),
        **kwargs,  # type: ignore[arg-type]
    )


def structure_problems(document: bytes) -> list[str]:
    """Check our XML output with the stdlib parser alone (our own output, so trusted input)."""
    root = ET.fromstring(document)
    found = []
    if root.tag != f"{NS}recording":
        found.append(f"root is {root.tag}")
    tags = [child.tag.removeprefix(NS) for child in root if child.tag.startswith(NS)]
    ranks = [SCHEMA_ORDER.index(tag) for tag in tags]
    if ranks != sorted(ranks):
        found.append(f"children out of RFC 7865 §9 order: {tags}")
    labels = [stream.findtext(f"{NS}label") for stream in root.iter(f"{NS}stream")]
    if len(labels) != len(set(labels)) or None in labels:
        found.append(f"stream labels not unique: {labels}")
    participants = {p.get("participant_id") for p in root.iter(f"{NS}participant")}
    streams = {s.get("stream_id") for s in root.iter(f"{NS}stream")}
    sessions = {s.get("session_id") for s in root.iter(f"{NS}session")}
    complete = root.findtext(f"{NS}dataMode") == "complete"
    for assoc in root.iter(f"{NS}participantstreamassoc"):
        if complete and assoc.get("participant_id") not in participants:
            found.append(f"participantstreamassoc of unknown participant {assoc.get('participant_id')}")
        for ref in [*assoc.iter(f"{NS}send"), *assoc.iter(f"{NS}recv")]:
            if complete and ref.text not in streams:
                found.append(f"participantstreamassoc refers to unknown stream {ref.text}")
    for assoc in root.iter(f"{NS}participantsessionassoc"):
        if assoc.get("participant_id") not in participants:
            found.append(f"participantsessionassoc of unknown participant {assoc.get('participant_id')}")
        if complete and assoc.get("session_id") not in sessions:
            found.append(f"participantsessionassoc of unknown session {assoc.get('session_id')}")
    for stream in root.iter(f"{NS}stream"):
        if complete and stream.get("session_id") not in sessions:
            found.append(f"stream in unknown session {stream.get('session_id')}")
    return found


# --- IDs -----------------------------------------------------------------------------------------


def test_new_id_is_a_base64_version_4_uuid() -> None:
    value = new_id(lambda n: b"\xff" * n)
    raw = base64.b64decode(value, validate=True)
    assert len(value) == 24 and len(raw) == 16
    parsed = uuid.UUID(bytes=raw)
    assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_new_id_uses_the_injected_randomness_only() -> None:
    assert new_id(bytes) == new_id(bytes)
    assert new_id(bytes) != new_id(lambda n: b"\x01" * n)


def test_new_id_refuses_short_randomness() -> None:
    with pytest.raises(LocalProtocolError, match="16 bytes"):
        new_id(lambda n: b"\x00" * (n - 1))


# --- for_call --------------------------------------------------------------------------------------


def test_for_call_two_party_snapshot() -> None:
    md = two_party()
    assert md.data_mode == "complete"
    assert md.problems() == ()
    (group,) = md.groups
    (session,) = md.sessions
    assert session.group_id == group.group_id
    assert session.sip_session_ids == ("a84b4c76e66710@pc33.atlanta.example.com",)
    assert session.start_time == NOW and group.associate_time == NOW
    alice, bob = md.participants
    assert (alice.aor, alice.name, bob.aor, bob.name) == (
        "sip:alice@atlanta.example.com",
        "Alice",
        "sip:bob@biloxi.example.com",
        None,
    )
    assert {p.session_id for p in md.participants} == {session.session_id}
    one, two = md.streams
    assert (one.label, two.label) == ("1", "2")
    assert md.senders(one.stream_id) == (alice,) and md.senders(two.stream_id) == (bob,)
    alice_assoc = md.stream_assoc(alice.participant_id)
    assert alice_assoc is not None
    assert (alice_assoc.send, alice_assoc.recv) == ((one.stream_id,), (two.stream_id,))
    assert md.session_recording_assocs[0].session_id == session.session_id
    ids = [group.group_id, session.session_id, alice.participant_id, bob.participant_id]
    assert len({*ids, one.stream_id, two.stream_id}) == 6


def test_for_call_session_id_and_custom_parameters() -> None:
    md = two_party(sip_session_id="ab30317f1a784dc48ff824d0d3715d86", custom_parameters=[("X-Account", "42")])
    assert md.sessions[0].sip_session_ids == ("ab30317f1a784dc48ff824d0d3715d86",)
    assert md.extensions == (
        ExtensionData(PARAMS_NAMESPACE, (("X-Account", "42"),), md.sessions[0].session_id),
    )


@pytest.mark.parametrize(
    ("participants", "streams", "now", "match"),
    [
        ([("sip:a@x", None)], [("1", 0, [])], NOW.replace(tzinfo=None), "timezone-aware"),
        ([("sip:a@x", None)], [("1", 0, [1])], NOW, "participant index 1"),
        ([("sip:a@x", None)], [("1", 0, []), ("1", 0, [])], NOW, "duplicate stream label"),
        ([], [], NOW, "at least one participant"),
    ],
)
def test_for_call_refuses_bad_input(
    participants: list[tuple[str, str | None]],
    streams: list[tuple[str, int, list[int]]],
    now: datetime,
    match: str,
) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        for_call("call-1", participants, streams, now, FakeRandom())


# --- partial updates and merge ---------------------------------------------------------------------


def test_participant_left_holds_only_what_changed() -> None:
    snapshot = two_party()
    bob = snapshot.participants[1]
    later = NOW + timedelta(minutes=3)
    update = participant_left(snapshot, bob.participant_id, later)
    assert update.data_mode == "partial"
    assert update.participants == (replace(bob, disassociate_time=later),)
    assoc = update.participant_stream_assocs[0]
    assert assoc.participant_id == bob.participant_id and assoc.disassociate_time == later
    assert (update.groups, update.sessions, update.streams, update.session_recording_assocs) == (
        (),
        (),
        (),
        (),
    )
    document = to_xml(update)
    assert b"<dataMode>partial</dataMode>" in document
    assert b"<disassociate-time>2024-05-01T12:33:15.25Z</disassociate-time>" in document
    assert structure_problems(document) == []
    merged = merge(snapshot, update)
    assert merged.data_mode == "complete" and merged.problems() == ()
    assert merged.participants[1].disassociate_time == later
    assert merged.participants[0] == snapshot.participants[0]


def test_participant_joined_and_stream_added() -> None:
    rng = FakeRandom()
    snapshot = for_call(
        "call-2", [("sip:a@x", "A"), ("sip:b@y", "B")], [("1", 0, [1]), ("2", 1, [0])], NOW, rng
    )
    joined = participant_joined(snapshot, "sip:c@z", "Carol", NOW, rng, send_labels=["2"], recv_labels=["1"])
    (carol,) = joined.participants
    assert joined.data_mode == "partial" and carol.session_id == snapshot.sessions[0].session_id
    assert joined.participant_stream_assocs[0].send == (snapshot.streams[1].stream_id,)
    snapshot = merge(snapshot, joined)
    assert snapshot.problems() == ()
    assert [p.aor for p in snapshot.senders(snapshot.streams[1].stream_id)] == ["sip:b@y", "sip:c@z"]

    added = stream_added(
        snapshot, "3", carol.participant_id, [snapshot.participants[0].participant_id], NOW, rng
    )
    (stream,) = added.streams
    assert stream.label == "3"
    assocs = {a.participant_id: a for a in added.participant_stream_assocs}
    # Complete send/recv lists, not just the new stream (see stream_added's docstring).
    assert assocs[carol.participant_id].send == (snapshot.streams[1].stream_id, stream.stream_id)
    assert assocs[snapshot.participants[0].participant_id].recv == (
        snapshot.streams[1].stream_id,
        stream.stream_id,
    )
    assert structure_problems(to_xml(added)) == []
    snapshot = merge(snapshot, added)
    assert snapshot.problems() == () and snapshot.stream_by_label("3") == stream


def test_update_helpers_refuse_unknown_things() -> None:
    snapshot = two_party()
    with pytest.raises(LocalProtocolError, match="no participant"):
        participant_left(snapshot, "nobody", NOW)
    with pytest.raises(LocalProtocolError, match="no stream labelled"):
        participant_joined(snapshot, "sip:c@z", None, NOW, FakeRandom(), send_labels=["9"])
    with pytest.raises(LocalProtocolError, match="already has a stream"):
        stream_added(snapshot, "1", snapshot.participants[0].participant_id, [], NOW, FakeRandom())
    with pytest.raises(LocalProtocolError, match="sessions"):
        participant_joined(RecordingMetadata(), "sip:c@z", None, NOW, FakeRandom())


def test_merge_complete_replaces_and_unstated_aor_is_kept() -> None:
    snapshot = two_party()
    other = two_party(sip_session_id="x")
    assert merge(snapshot, other) is other
    bob = snapshot.participants[1]
    # A partial update that only carried Bob's <participantsessionassoc> (as read by the reader).
    update = RecordingMetadata(
        "partial", participants=(Participant(bob.participant_id, "", None, None, NOW),)
    )
    merged = merge(snapshot, update)
    assert (merged.participants[1].aor, merged.participants[1].name) == (bob.aor, bob.name)
    assert merged.participants[1].disassociate_time == NOW


# --- problems() --------------------------------------------------------------------------------------


def test_problems_finds_dangling_references_only_in_complete_documents() -> None:
    dangling = RecordingMetadata("complete", streams=(Stream("s1", "no-such-session", "1"),))
    assert any("unknown session" in p for p in dangling.problems())
    with pytest.raises(LocalProtocolError, match="unknown session"):
        to_xml(dangling)
    partial = RecordingMetadata("partial", streams=(Stream("s1", "sent-earlier", "1"),))
    assert partial.problems() == ()
    to_xml(partial)


def test_problems_finds_duplicates_and_orphan_extensions() -> None:
    md = RecordingMetadata(
        "partial",
        sessions=(Session("s"), Session("s")),
        streams=(Stream("a", "s", "1"), Stream("b", "s", "1")),
        extensions=(ExtensionData("urn:x", (("k", "v"),), "nowhere"),),
    )
    problems = md.problems()
    assert "duplicate session_id 's'" in problems
    assert "duplicate stream label '1'" in problems
    assert any("unknown parent 'nowhere'" in p for p in problems)


# --- XML -----------------------------------------------------------------------------------------------


def test_to_xml_shape() -> None:
    md = two_party(sip_session_id="ab30317f1a784dc48ff824d0d3715d86")
    document = to_xml(md)
    assert document.startswith(
        b"<?xml version='1.0' encoding='UTF-8'?>\n<recording xmlns=\"" + RECORDING_NAMESPACE.encode()
    )
    assert structure_problems(document) == []
    root = ET.fromstring(document)
    session = root.find(f"{NS}session")
    assert session is not None
    assert [child.tag.removeprefix(NS) for child in session] == ["sipSessionID", "group-ref", "start-time"]
    assert session.findtext(f"{NS}start-time") == "2024-05-01T12:30:15.25Z"
    participant = root.find(f"{NS}participant")
    assert participant is not None
    name_id = participant.find(f"{NS}nameID")
    assert name_id is not None and name_id.get("aor") == "sip:alice@atlanta.example.com"
    assert name_id.findtext(f"{NS}name") == "Alice"
    # Bob has no display name: no <name> element rather than an empty one.
    bob = root.findall(f"{NS}participant")[1].find(f"{NS}nameID")
    assert bob is not None and bob.find(f"{NS}name") is None
    assocs = root.findall(f"{NS}participantstreamassoc")
    assert [child.tag.removeprefix(NS) for child in assocs[0]] == ["send", "recv", "associate-time"]
    assert len(root.findall(f"{NS}participantsessionassoc")) == 2


def test_session_end_is_written_as_stop_time() -> None:
    ended = RecordingMetadata("partial", sessions=(Session("s", end_time=NOW),))
    session = ET.fromstring(to_xml(ended)).find(f"{NS}session")
    assert session is not None
    assert [child.tag.removeprefix(NS) for child in session] == ["stop-time"]


def test_hostile_display_name_and_aor_are_escaped() -> None:
    name = '"O\'Brien & Sons <sales>"'
    aor = 'sip:o\'brien&sons@example.com;x="<y>"'
    md = for_call("c", [(aor, name)], [("1", 0, [])], NOW, FakeRandom())
    document = to_xml(md)
    assert b"&amp; Sons &lt;sales&gt;" in document
    assert b"<sales>" not in document and b"&sons" not in document
    root = ET.fromstring(document)
    name_id = root.find(f"{NS}participant/{NS}nameID")
    assert name_id is not None
    assert name_id.get("aor") == aor
    assert name_id.findtext(f"{NS}name") == name


def test_characters_xml_cannot_carry_are_replaced_not_refused() -> None:
    md = for_call("c", [("sip:a@x", "evil\x01\x1bname\ud800")], [("1", 0, [])], NOW, FakeRandom())
    root = ET.fromstring(to_xml(md))
    assert root.findtext(f"{NS}participant/{NS}nameID/{NS}name") == "evil\ufffd\ufffdname\ufffd"


def test_extension_data_shapes() -> None:
    md = two_party(custom_parameters=[("X-Tenant!id", "a&b"), ("X-Empty", "")])
    session_id = md.sessions[0].session_id
    md = RecordingMetadata(
        md.data_mode,
        md.groups,
        md.sessions,
        md.participants,
        md.streams,
        md.participant_stream_assocs,
        md.session_recording_assocs,
        (*md.extensions, ExtensionData("http://example.com/cc", (("supervisor", "sip:sup@example.com"),))),
    )
    root = ET.fromstring(to_xml(md))
    session = next(s for s in root.iter(f"{NS}session") if s.get("session_id") == session_id)
    params = session.find(f"{{{PARAMS_NAMESPACE}}}parameters")
    assert params is not None
    assert [(p.get("name"), p.text or "") for p in params] == [("X-Tenant!id", "a&b"), ("X-Empty", "")]
    assert root.findtext("{http://example.com/cc}supervisor") == "sip:sup@example.com"


@pytest.mark.parametrize(
    ("extension", "match"),
    [
        (ExtensionData("urn:x", (("a/b", "v"),)), "not an XML name"),
        (ExtensionData(RECORDING_NAMESPACE, (("a", "v"),)), "namespace of its own"),
        (ExtensionData("", (("a", "v"),)), "namespace of its own"),
    ],
)
def test_unwritable_extensions_are_refused(extension: ExtensionData, match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        to_xml(RecordingMetadata("partial", extensions=(extension,)))


def test_format_time() -> None:
    assert format_time(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2024-01-02T03:04:05Z"
    minus6 = timezone(timedelta(hours=-6))
    assert format_time(datetime(2022, 7, 21, 12, 36, 6, 40000, tzinfo=minus6)) == "2022-07-21T18:36:06.04Z"
    assert format_time(datetime(5, 1, 1, tzinfo=UTC)) == "0005-01-01T00:00:00Z"
    with pytest.raises(LocalProtocolError, match="no timezone"):
        format_time(datetime(2024, 1, 1))
