"""Write recording metadata as RFC 7865 XML (``application/rs-metadata+xml``).

The document is built with ``xml.etree.ElementTree``, which escapes every text and attribute
value (``&``, ``<``, ``>``, quotes): display names come from SIP headers that anyone can set,
so nothing is ever joined into XML by hand.

Shape (RFC 7865 §9 schema order; the recording namespace is the default namespace)::

    <?xml version='1.0' encoding='UTF-8'?>
    <recording xmlns="urn:ietf:params:xml:ns:recording:1">
      <dataMode>complete</dataMode>
      <group group_id="..."><associate-time>...</associate-time></group>
      <session session_id="...">
        <sipSessionID>...</sipSessionID><group-ref>...</group-ref>
        <start-time>...</start-time><stop-time>...</stop-time>
      </session>
      <participant participant_id="..."><nameID aor="..."><name>...</name></nameID></participant>
      <stream stream_id="..." session_id="..."><label>1</label></stream>
      <sessionrecordingassoc session_id="..."><associate-time>...</associate-time></sessionrecordingassoc>
      <participantsessionassoc participant_id="..." session_id="...">...</participantsessionassoc>
      <participantstreamassoc participant_id="...">
        <send>...</send><recv>...</recv><associate-time>...</associate-time>
      </participantstreamassoc>
    </recording>

Element order and names follow the schema registered with IANA (``recording/1.xsd``), e.g.
``<stop-time>`` for the end of a session. Times are RFC 3339 in UTC with ``Z`` (fractional
seconds only when not zero).

Extension data goes inside the block it belongs to, as elements of its own namespace, which is
what the ``xs:any namespace="##other"`` slots of the RFC 7865 schema allow (the ``<extensiondata>``
wrapper some SRCs send belongs to pre-RFC drafts and is not valid RFC 7865). Each extension
element declares its namespace itself, so no prefix needs registering. Our custom call parameters
(``PARAMS_NAMESPACE``) are written as::

    <parameters xmlns="urn:siprec-src:params"><param name="X-Customer-Id">42</param></parameters>

The name is an attribute, not the element name, because SIP header names may hold characters
(``!%*+`'~``) that XML names may not. Pairs of any other namespace are written as
``<local xmlns="namespace">text</local>``.

Characters XML 1.0 cannot carry at all (C0 controls other than tab, LF and CR; lone surrogates)
are replaced by U+FFFD rather than refused: a SIP display name may contain them, and refusing
would let a caller escape a compliance recording with one control character in its From header.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from xml.etree import ElementTree as ET

from siprec_src.errors import LocalProtocolError
from siprec_src.metadata.model import PARAMS_NAMESPACE, ExtensionData, RecordingMetadata

__all__ = ["CONTENT_TYPE", "RECORDING_NAMESPACE", "format_time", "to_xml"]

RECORDING_NAMESPACE = "urn:ietf:params:xml:ns:recording:1"
# RFC 7866 §9.1: the media type of the metadata part; the part also carries
# Content-Disposition: recording-session.
CONTENT_TYPE = "application/rs-metadata+xml"

# XML 1.0 §2.2 Char: everything outside these ranges cannot appear in a document, escaped or not.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# The ASCII subset of an XML NCName: what we accept as an extension element name.
_NCNAME = re.compile(r"[A-Za-z_][A-Za-z0-9._-]*\Z")


def format_time(moment: datetime) -> str:
    """RFC 3339 ``date-time`` in UTC with ``Z``; refuses naive datetimes (they name no instant)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise LocalProtocolError(f"metadata time {moment!r} has no timezone")
    t = moment.astimezone(UTC)
    text = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    if t.microsecond:
        text += f".{t.microsecond:06d}".rstrip("0")
    return text + "Z"


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


def _extension(parent: ET.Element, ext: ExtensionData) -> None:
    if not ext.namespace or ext.namespace == RECORDING_NAMESPACE:
        raise LocalProtocolError(f"extension data needs a namespace of its own, not {ext.namespace!r}")
    if ext.namespace == PARAMS_NAMESPACE:
        container = _child(parent, "parameters", xmlns=PARAMS_NAMESPACE)
        for name, value in ext.elements:
            _child(container, "param", value, name=name)
        return
    for local, text in ext.elements:
        if not _NCNAME.match(local):
            # The reader's flattened names (outer/inner, element@attribute) are read-only.
            raise LocalProtocolError(f"extension element name {local!r} is not an XML name")
        _child(parent, local, text, xmlns=ext.namespace)


def to_xml(metadata: RecordingMetadata) -> bytes:
    """Serialize ``metadata`` as an RFC 7865 document (UTF-8 bytes with an XML declaration).

    Raises ``LocalProtocolError`` if ``metadata.problems()`` finds anything (duplicate IDs or
    labels, dangling references in a complete document), for a naive datetime, or for an
    extension that cannot be written.
    """
    problems = metadata.problems()
    if problems:
        raise LocalProtocolError("refusing to write inconsistent recording metadata: " + "; ".join(problems))
    extensions: dict[str | None, list[ExtensionData]] = {}
    for ext in metadata.extensions:
        extensions.setdefault(ext.parent, []).append(ext)

    def add_extensions(element: ET.Element, parent_id: str | None) -> None:
        for ext in extensions.get(parent_id, ()):
            _extension(element, ext)

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
            # The schema registered with IANA (recording/1.xsd) names it stop-time.
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
