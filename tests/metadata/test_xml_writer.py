"""The streaming RFC 7865 writer (siprec_src.metadata.xml.to_xml) against an ElementTree oracle.

``to_xml`` writes through ``xml.sax.saxutils.XMLGenerator`` rather than building an
``ElementTree``; this file checks that the documents say exactly what the tree-built ones said:
the same infoset (compared in canonical XML, C14N 2.0) for every block, extension, hostile and
unwritable character, and the same bytes for documents without empty elements (the layout is
``ElementTree.indent``'s). The oracle below is the tree-based writer the module had before.
Also: ``new_id`` sets the version and variant bits as ``uuid.UUID(version=4)`` does.
Runtime: well under a second.
"""

from __future__ import annotations

import base64
import random
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree as ET

import pytest

from siprec_src.metadata.model import (
    PARAMS_NAMESPACE,
    ExtensionData,
    Participant,
    RecordingMetadata,
    Session,
    SessionRecordingAssoc,
    for_call,
    new_id,
    participant_left,
)
from siprec_src.metadata.xml import RECORDING_NAMESPACE, format_time, to_xml

NOW = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(text: str) -> str:
    return _NOT_XML_CHAR.sub("\ufffd", text)


def _child(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {name: _clean(value) for name, value in attrs.items()})
    if text is not None:
        element.text = _clean(text)
    return element


def _times(parent: ET.Element, associate: datetime | None, disassociate: datetime | None) -> None:
    if associate is not None:
        _child(parent, "associate-time", format_time(associate))
    if disassociate is not None:
        _child(parent, "disassociate-time", format_time(disassociate))


def reference_xml(metadata: RecordingMetadata) -> bytes:
    """The document as the ElementTree-based writer built it (the oracle)."""
    extensions: dict[str | None, list[ExtensionData]] = {}
    for ext in metadata.extensions:
        extensions.setdefault(ext.parent, []).append(ext)

    def add_extensions(element: ET.Element, parent_id: str | None) -> None:
        for ext in extensions.get(parent_id, ()):
            if ext.namespace == PARAMS_NAMESPACE:
                container = _child(element, "parameters", xmlns=PARAMS_NAMESPACE)
                for name, value in ext.elements:
                    _child(container, "param", value, name=name)
            else:
                for local, text in ext.elements:
                    _child(element, local, text, xmlns=ext.namespace)

    root = ET.Element("recording", {"xmlns": RECORDING_NAMESPACE})
    _child(root, "dataMode", metadata.data_mode)
    for group in metadata.groups:
        element = _child(root, "group", group_id=group.group_id)
        _times(element, group.associate_time, None)
        add_extensions(element, group.group_id)
    for session in metadata.sessions:
        element = _child(root, "session", session_id=session.session_id)
        for sip_session_id in session.sip_session_ids:
            _child(element, "sipSessionID", sip_session_id)
        if session.group_id is not None:
            _child(element, "group-ref", session.group_id)
        if session.start_time is not None:
            _child(element, "start-time", format_time(session.start_time))
        if session.end_time is not None:
            _child(element, "stop-time", format_time(session.end_time))
        add_extensions(element, session.session_id)
    for participant in metadata.participants:
        element = _child(root, "participant", participant_id=participant.participant_id)
        name_id = _child(element, "nameID", aor=participant.aor)
        if participant.name is not None and participant.name.strip():
            _child(name_id, "name", participant.name)
        add_extensions(element, participant.participant_id)
    for stream in metadata.streams:
        element = _child(root, "stream", stream_id=stream.stream_id, session_id=stream.session_id)
        _child(element, "label", stream.label)
        add_extensions(element, stream.stream_id)
    for recording_assoc in metadata.session_recording_assocs:
        element = _child(root, "sessionrecordingassoc", session_id=recording_assoc.session_id)
        _times(element, recording_assoc.associate_time, recording_assoc.disassociate_time)
    for participant in metadata.participants:
        if participant.session_id is not None:
            element = _child(
                root,
                "participantsessionassoc",
                participant_id=participant.participant_id,
                session_id=participant.session_id,
            )
            _times(element, participant.associate_time, participant.disassociate_time)
    for stream_assoc in metadata.participant_stream_assocs:
        element = _child(root, "participantstreamassoc", participant_id=stream_assoc.participant_id)
        for stream_id in stream_assoc.send:
            _child(element, "send", stream_id)
        for stream_id in stream_assoc.recv:
            _child(element, "recv", stream_id)
        _times(element, stream_assoc.associate_time, stream_assoc.disassociate_time)
    add_extensions(root, None)
    ET.indent(root, space="  ")
    document: bytes = ET.tostring(root, encoding="UTF-8", xml_declaration=True)
    return document + b"\n"


def canonical(document: bytes) -> str:
    return ET.canonicalize(document.decode("utf-8"))


def _random_bytes(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def two_party(name: str | None = "Alice", aor: str = "sip:alice@atlanta.example.com") -> RecordingMetadata:
    return for_call(
        "a84b4c76e66710@pc33.atlanta.example.com",
        [(aor, name), ("sip:bob@biloxi.example.com", "Bob")],
        [("1", 0, [1]), ("2", 1, [0])],
        NOW,
        _random_bytes(1),
    )


def test_a_usual_recording_is_written_byte_for_byte_as_before() -> None:
    md = two_party()
    assert to_xml(md) == reference_xml(md)


@pytest.mark.parametrize(
    ("name", "aor"),
    [
        ('"O\'Brien & Sons <sales>"', 'sip:o\'brien&sons@example.com;x="<y>"'),
        ("evil\x01\x1bname\ud800\ufffe", "sip:a\x00b@x"),
        ("tab\tand\nnew\r\nline", "sip:\u00e9t\u00e9@example.com"),
        (None, "sip:nameless@example.com"),
        ("   ", "sip:blank@example.com"),
    ],
)
def test_hostile_and_empty_values_give_the_same_document(name: str | None, aor: str) -> None:
    md = two_party(name, aor)
    document = to_xml(md)
    assert canonical(document) == canonical(reference_xml(md))


def test_extensions_partial_documents_and_ended_blocks_give_the_same_document() -> None:
    md = for_call(
        "c@x",
        [("sip:a@x", "A"), ("sip:b@x", None)],
        [("1", 0, [1]), ("2", 1, [0])],
        NOW,
        _random_bytes(2),
        sip_session_id="ab30317f1a784dc48ff824d0d3715d86",
        custom_parameters=[("X-Tenant!id", "a&b<c>"), ("X-Empty", "")],
    )
    group_id = md.groups[0].group_id
    stream_id = md.streams[0].stream_id
    md = RecordingMetadata(
        md.data_mode,
        md.groups,
        md.sessions,
        md.participants,
        md.streams,
        md.participant_stream_assocs,
        md.session_recording_assocs,
        (
            *md.extensions,
            ExtensionData("http://example.com/cc", (("supervisor", "sip:sup@example.com"), ("empty", ""))),
            ExtensionData("urn:x:group", (("note", "g"),), group_id),
            ExtensionData("urn:x:stream", (("codec", "PCMU"),), stream_id),
            ExtensionData(PARAMS_NAMESPACE, (), md.participants[0].participant_id),
        ),
    )
    ended = RecordingMetadata(
        "partial",
        sessions=(Session("s", end_time=NOW + timedelta(seconds=90)),),
        participants=(Participant("p", "", None, NOW, NOW + timedelta(seconds=5), "s"),),
        session_recording_assocs=(SessionRecordingAssoc("s", NOW, NOW + timedelta(microseconds=1)),),
    )
    left = participant_left(md, md.participants[1].participant_id, NOW + timedelta(minutes=1))
    for document in (md, ended, left):
        assert canonical(to_xml(document)) == canonical(reference_xml(document))


def test_elements_without_children_are_self_closed() -> None:
    md = two_party(name=None)
    document = to_xml(md).decode()
    assert '<nameID aor="sip:alice@atlanta.example.com"/>' in document
    assert ET.fromstring(document).find(f"{{{RECORDING_NAMESPACE}}}participant") is not None


def test_each_time_is_written_from_its_own_moment() -> None:
    # The writer formats each distinct moment once; two moments must stay two texts.
    later = NOW + timedelta(seconds=1)
    md = RecordingMetadata(
        "partial",
        session_recording_assocs=(
            SessionRecordingAssoc("s1", NOW, later),
            SessionRecordingAssoc("s2", later),
        ),
    )
    root = ET.fromstring(to_xml(md))
    times = [element.text for element in root.iter() if element.tag.endswith("-time")]
    assert times == [format_time(NOW), format_time(later), format_time(later)]


def test_new_id_sets_the_bits_uuid_sets() -> None:
    rng = random.Random(7)
    for _ in range(500):
        raw = rng.randbytes(16)
        expected = uuid.UUID(bytes=raw, version=4)
        value = new_id(lambda n, raw=raw: raw)  # type: ignore[misc]
        assert uuid.UUID(bytes=base64.b64decode(value)) == expected
