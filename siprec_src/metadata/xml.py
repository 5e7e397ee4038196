"""Write recording metadata as RFC 7865 XML (``application/rs-metadata+xml``).

The document is written by the standard library's streaming XML writer
(``xml.sax.saxutils.XMLGenerator``), which escapes every text and attribute value (``&``,
``<``, ``>``, quotes): display names come from SIP headers that anyone can set, so nothing is
ever joined into XML by hand. It streams rather than building an ``ElementTree`` first because
one document goes into every recording's INVITE: the tree, its namespace pass and its
serializer cost about twice as much, for the same bytes. The layout (two-space indentation,
one element per line) is the one ``ElementTree.indent`` gives.

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

import io
import re
from datetime import UTC, datetime
from xml.sax.saxutils import XMLGenerator

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


_DECLARATION = "<?xml version='1.0' encoding='UTF-8'?>\n"


class _Writer:
    """One document, element by element, indented two spaces per level.

    ``XMLGenerator`` escapes text (``characters``) and attribute values (``startElement``);
    this class only decides where the elements and the line breaks go.
    """

    __slots__ = ("_childless", "_depth", "_out", "_times", "_xml")

    def __init__(self) -> None:
        self._out = io.StringIO()
        self._out.write(_DECLARATION)
        self._xml = XMLGenerator(self._out, "UTF-8", short_empty_elements=True)
        self._depth = 0
        self._childless = False  # the innermost open element has no child yet
        self._times: dict[datetime, str] = {}  # a snapshot stamps most blocks with one moment

    def _newline(self) -> None:
        self._childless = False
        self._xml.ignorableWhitespace("\n" + "  " * self._depth)

    def open(self, tag: str, attrs: dict[str, str]) -> None:
        """Start an element that may hold child elements."""
        if self._depth:  # the root element starts the line after the XML declaration
            self._newline()
        self._xml.startElement(tag, attrs)  # type: ignore[arg-type]
        self._depth += 1
        self._childless = True

    def close(self, tag: str) -> None:
        self._depth -= 1
        if self._childless:
            self._childless = False  # written as <tag .../>
        else:
            self._newline()
        self._xml.endElement(tag)

    def leaf(self, tag: str, text: str, attrs: dict[str, str] | None = None) -> None:
        """An element holding text only (``<tag/>`` when the text is empty)."""
        self._newline()
        self._xml.startElement(tag, attrs or {})  # type: ignore[arg-type]
        self._xml.characters(text)
        self._xml.endElement(tag)

    def time(self, tag: str, moment: datetime) -> None:
        text = self._times.get(moment)
        if text is None:
            text = self._times[moment] = format_time(moment)
        self.leaf(tag, text)

    def times(self, associate: datetime | None, disassociate: datetime | None) -> None:
        if associate is not None:
            self.time("associate-time", associate)
        if disassociate is not None:
            self.time("disassociate-time", disassociate)

    def document(self) -> bytes:
        # XML 1.0 §2.2 Char: the writer escapes markup characters but passes the others through,
        # so what XML cannot carry at all is replaced here, once for the whole text (the markup
        # itself is plain ASCII, and escaping neither makes nor hides such characters).
        return _clean(self._out.getvalue() + "\n").encode("utf-8")


def _extension(out: _Writer, ext: ExtensionData) -> None:
    if not ext.namespace or ext.namespace == RECORDING_NAMESPACE:
        raise LocalProtocolError(f"extension data needs a namespace of its own, not {ext.namespace!r}")
    if ext.namespace == PARAMS_NAMESPACE:
        out.open("parameters", {"xmlns": PARAMS_NAMESPACE})
        for name, value in ext.elements:
            out.leaf("param", value, {"name": name})
        out.close("parameters")
        return
    for local, _ in ext.elements:
        if not _NCNAME.match(local):
            # The reader's flattened names (outer/inner, element@attribute) are read-only.
            raise LocalProtocolError(f"extension element name {local!r} is not an XML name")
    for local, text in ext.elements:
        out.leaf(local, text, {"xmlns": ext.namespace})


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
    out = _Writer()

    def add_extensions(parent_id: str | None) -> None:
        for ext in extensions.get(parent_id, ()):
            _extension(out, ext)

    out.open("recording", {"xmlns": RECORDING_NAMESPACE})
    out.leaf("dataMode", metadata.data_mode)
    for group in metadata.groups:
        out.open("group", {"group_id": group.group_id})
        out.times(group.associate_time, None)
        add_extensions(group.group_id)
        out.close("group")
    for session in metadata.sessions:
        out.open("session", {"session_id": session.session_id})
        for sip_session_id in session.sip_session_ids:
            out.leaf("sipSessionID", sip_session_id)
        if session.group_id is not None:
            out.leaf("group-ref", session.group_id)
        if session.start_time is not None:
            out.time("start-time", session.start_time)
        if session.end_time is not None:
            # The schema registered with IANA (recording/1.xsd) names it stop-time.
            out.time("stop-time", session.end_time)
        add_extensions(session.session_id)
        out.close("session")
    for participant in metadata.participants:
        out.open("participant", {"participant_id": participant.participant_id})
        out.open("nameID", {"aor": participant.aor})
        if participant.name is not None and participant.name.strip():
            out.leaf("name", participant.name)
        out.close("nameID")
        add_extensions(participant.participant_id)
        out.close("participant")
    for stream in metadata.streams:
        out.open("stream", {"stream_id": stream.stream_id, "session_id": stream.session_id})
        out.leaf("label", stream.label)
        add_extensions(stream.stream_id)
        out.close("stream")
    for recording_assoc in metadata.session_recording_assocs:
        out.open("sessionrecordingassoc", {"session_id": recording_assoc.session_id})
        out.times(recording_assoc.associate_time, recording_assoc.disassociate_time)
        out.close("sessionrecordingassoc")
    for participant in metadata.participants:
        if participant.session_id is not None:
            attrs = {"participant_id": participant.participant_id, "session_id": participant.session_id}
            out.open("participantsessionassoc", attrs)
            out.times(participant.associate_time, participant.disassociate_time)
            out.close("participantsessionassoc")
    for stream_assoc in metadata.participant_stream_assocs:
        out.open("participantstreamassoc", {"participant_id": stream_assoc.participant_id})
        for stream_id in stream_assoc.send:
            out.leaf("send", stream_id)
        for stream_id in stream_assoc.recv:
            out.leaf("recv", stream_id)
        out.times(stream_assoc.associate_time, stream_assoc.disassociate_time)
        out.close("participantstreamassoc")
    add_extensions(None)
    out.close("recording")
    return out.document()
