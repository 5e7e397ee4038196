"""Read recording metadata as real SRCs send it: RFC 7865 and the drafts before it.

``read_siprec_body`` takes the Content-Type and body of a SIPREC INVITE (RFC 7866 §9.1) and
returns the SDP part and the metadata; ``read_metadata`` reads one metadata document. Both raise
``MetadataError`` (a ``RemoteProtocolError``) and nothing else, whatever the input.

What is tolerated, because SRCs in the field send it (the captures in ``fixtures/vendor-siprec``):

- namespaces: RFC 7865 ``urn:ietf:params:xml:ns:recording:1``, the pre-RFC
  ``urn:ietf:params:xml:ns:recording`` (Acme Packet, Avaya, Sonus), the early-draft
  ``urn:ietf:params:xml:ns:siprec`` with root ``<recording_metadata>`` (BroadWorks), and none;
  any prefix (Sonus writes ``tns:``);
- element names in any case (``dataMode`` / ``datamode``, ``nameID`` / ``nameid``);
- pre-RFC attributes ``id=`` for ``*_id=`` and ``session=`` for ``session_id=``; ``<send>`` and
  ``<recv>`` under ``<participant>`` (also BroadWorks' ``<send><id>..</id></send>``) instead of a
  ``<participantstreamassoc>``; ``<associate-time>`` under ``<participant>`` and ``<session>``
  (read as the participant's and the recording's association times); the BroadWorks ``<aor>``
  element and ``group=`` attribute;
- extension data anywhere: elements of other namespaces inside a block, and the pre-RFC
  ``<extensiondata>`` wrapper (with BroadWorks' ``parent=``). Nested elements are flattened to
  ``outer/inner`` names and attributes to ``element@attribute`` (see ``ExtensionData``);
- elements the model has no place for are ignored: ``<mode>`` (separate/mixed is already told by
  how many participants send a stream), ``<associate-time>`` under ``<stream>``, Intrado's
  ``<channel>`` and ``<role>``, BroadWorks' ``<recording>``/``<requestor>``/``<type>``;
- ``<end-time>`` as well as the schema's ``<stop-time>`` for the end of a session;
- times in any ``xs:dateTime`` form; one without an offset (Acme, Avaya) is read as UTC, the
  only reading that names one instant; one that does not parse is dropped (``None``): a bad
  timestamp is no reason to lose a recording;
- blank ``<name>`` elements (Intrado, Sonus) read as no name; AORs are kept as sent, scheme or not;
- a participant known only through a ``<participantsessionassoc>`` (a partial update) gets
  ``aor=""``, which ``merge`` treats as "unchanged";
- in the multipart body: the legacy type ``application/rs-metadata`` (Intrado, Procomm), any part
  marked ``Content-Disposition: recording-session`` when no part has a metadata type (one
  BroadWorks capture says ``application/ +xml``), and extra parts (Cisco's ``application/gtd``),
  which are ignored.

What is refused, with the status a UAS should answer:

- 415 (RFC 3261 §21.4.13): a body that is not multipart, or a multipart without a recording
  metadata part or without an SDP part: "not a SIPREC body" is a media-type verdict;
- 413: a metadata document over ``max_bytes`` (64 KiB by default: about 80 participants with a
  stream each; a two-party call's document is about 3 KiB);
- 400: malformed multipart framing, more than one SDP or metadata part, XML that is not
  well-formed, any ``<!DOCTYPE``/``<!ENTITY`` (no DTD is ever processed, so no entity expansion —
  the billion laughs — and no external entity can be reached), nesting deeper than ``MAX_DEPTH``,
  a root that is not a recording document, a ``dataMode`` other than complete/partial, a block
  without its ID, two blocks with one ID.

The XML is parsed with expat directly (``xml.parsers.expat``) so that the refusal of DTDs is
done by the parser itself, whatever the document's encoding, and not only by a byte search.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar, cast
from xml.etree import ElementTree as ET
from xml.parsers import expat

from siprec_src.errors import RemoteProtocolError
from siprec_src.metadata.model import (
    PARAMS_NAMESPACE,
    DataMode,
    ExtensionData,
    Group,
    Participant,
    ParticipantStreamAssoc,
    RecordingMetadata,
    Session,
    SessionRecordingAssoc,
    Stream,
)
from siprec_src.metadata.xml import RECORDING_NAMESPACE
from siprec_src.sip.multipart import BodyPart, MultipartError, decode_multipart, parse_content_type

__all__ = [
    "MAX_DEPTH",
    "MAX_METADATA_BYTES",
    "METADATA_CONTENT_TYPES",
    "RECORDING_NAMESPACES",
    "MetadataError",
    "parse_time",
    "read_metadata",
    "read_siprec_body",
]

MAX_METADATA_BYTES = 64 * 1024
# RFC 7865 documents are four levels deep; extension data adds a few.
MAX_DEPTH = 32

RECORDING_NAMESPACES = frozenset(
    {
        RECORDING_NAMESPACE,  # RFC 7865
        "urn:ietf:params:xml:ns:recording",  # pre-RFC drafts
        "urn:ietf:params:xml:ns:siprec",  # early drafts, root <recording_metadata> (BroadWorks)
        "",
    }
)
_ROOTS = ("recording", "recording_metadata")
# RFC 7866 §9.1 names application/rs-metadata+xml; application/rs-metadata is its draft name.
METADATA_CONTENT_TYPES = ("application/rs-metadata+xml", "application/rs-metadata")
_T = TypeVar("_T")


class MetadataError(RemoteProtocolError):
    """A SIPREC body or recording metadata document from the peer cannot be used."""


def read_siprec_body(
    content_type: str, body: bytes, *, max_metadata_bytes: int = MAX_METADATA_BYTES
) -> tuple[bytes, RecordingMetadata]:
    """Split a SIPREC INVITE body into (SDP bytes, metadata); ``content_type`` is the message's.

    Raises ``MetadataError`` (see the module docstring for the status hints).
    """
    try:
        media_type, _ = parse_content_type(content_type)
    except RemoteProtocolError as exc:
        raise MetadataError(f"not a SIPREC body: {exc.reason}") from exc
    if not media_type.startswith("multipart/"):
        raise MetadataError(
            f"no application/rs-metadata+xml part: the body is {media_type}, not a multipart/mixed "
            "SIPREC body (RFC 7866 §9.1)",
            status_hint=415,
        )
    try:
        parts = decode_multipart(content_type, body)
    except MultipartError as exc:
        raise MetadataError(f"not a SIPREC body: {exc.reason}", status_hint=exc.status_hint) from exc
    found = ", ".join(part.media_type for part in parts)
    metadata_parts = [part for part in parts if part.media_type in METADATA_CONTENT_TYPES]
    if not metadata_parts:
        # A part marked as the recording metadata whose Content-Type was mangled on the way.
        metadata_parts = [
            part
            for part in parts
            if _disposition(part) == "recording-session" and part.media_type != "application/sdp"
        ]
    sdp_parts = [part for part in parts if part.media_type == "application/sdp"]
    if not metadata_parts:
        raise MetadataError(
            f"no application/rs-metadata+xml part in the body (parts: {found})", status_hint=415
        )
    if not sdp_parts:
        raise MetadataError(f"no application/sdp part in the SIPREC body (parts: {found})", status_hint=415)
    if len(metadata_parts) > 1:
        raise MetadataError(f"{len(metadata_parts)} recording metadata parts in one body (parts: {found})")
    if len(sdp_parts) > 1:
        raise MetadataError(f"{len(sdp_parts)} application/sdp parts in one body (parts: {found})")
    return sdp_parts[0].body, read_metadata(metadata_parts[0].body, max_bytes=max_metadata_bytes)


def _disposition(part: BodyPart) -> str:
    return (part.header("Content-Disposition") or "").split(";", 1)[0].strip().lower()


def read_metadata(data: bytes, *, max_bytes: int = MAX_METADATA_BYTES) -> RecordingMetadata:
    """Read one recording metadata document (any dialect listed in the module docstring)."""
    return _Reader(_parse(data, max_bytes)).read()


def parse_time(text: str) -> datetime | None:
    """An ``xs:dateTime`` / RFC 3339 time as an aware UTC datetime; ``None`` if it does not parse.

    A time without an offset is read as UTC (see the module docstring).
    """
    try:
        moment = datetime.fromisoformat(text.strip())
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        # OverflowError: an instant outside years 1-9999 in UTC (0001-01-01T00:00:00+14:00).
        return None


# --- XML parsing -------------------------------------------------------------------------------


def _parse(data: bytes, max_bytes: int) -> ET.Element:
    if len(data) > max_bytes:
        raise MetadataError(
            f"recording metadata is {len(data)} bytes, more than the {max_bytes} accepted", status_hint=413
        )
    # Checked before parsing for a clear reason; the parser refuses them again below, which
    # also covers encodings (UTF-16...) in which these bytes do not appear as ASCII.
    lowered = data.lower()
    for marker in (b"<!doctype", b"<!entity"):
        if marker in lowered:
            raise MetadataError(_dtd_refusal(marker.decode("ascii")[2:].upper()))

    builder = ET.TreeBuilder()
    depth = 0

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise MetadataError(f"recording metadata nests elements deeper than {MAX_DEPTH} levels")
        builder.start(_clark(name), {_clark(key): value for key, value in attrs.items()})

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end(_clark(name))

    def refuse_doctype(*_: object) -> None:
        raise MetadataError(_dtd_refusal("DOCTYPE"))

    def refuse_entity(*_: object) -> None:
        raise MetadataError(_dtd_refusal("ENTITY"))

    # namespace_separator=" ": names arrive as "uri local", which _clark turns into "{uri}local".
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.buffer_text = True
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    parser.ExternalEntityRefHandler = cast(Callable[..., int], refuse_entity)
    try:
        parser.Parse(data, True)
        return builder.close()
    except expat.ExpatError as exc:
        reason = expat.ErrorString(exc.code) if exc.code is not None else str(exc)
        raise MetadataError(
            f"recording metadata is not well-formed XML: {reason} (line {exc.lineno}, column {exc.offset})"
        ) from exc
    except (ValueError, LookupError) as exc:
        # An encoding the codec lookup does not know (LookupError) or expat cannot use
        # ("multi-byte encodings are not supported", ValueError).
        raise MetadataError(f"recording metadata cannot be parsed: {exc}") from exc


def _dtd_refusal(what: str) -> str:
    return (
        f"recording metadata has a <!{what} declaration; DTDs and entities are refused "
        "(entity expansion bombs, external entities)"
    )


def _clark(name: str) -> str:
    uri, sep, local = name.rpartition(" ")
    return f"{{{uri}}}{local}" if sep else name


def _split(tag: str) -> tuple[str, str]:
    """(namespace, local name) of an element or attribute tag in ``{uri}local`` form."""
    if tag.startswith("{"):
        uri, _, local = tag[1:].partition("}")
        return uri, local
    return "", tag


def _text(element: ET.Element) -> str:
    return (element.text or "").strip()


# --- the document walk -------------------------------------------------------------------------


@dataclass
class _StreamAssoc:
    send: list[str] = field(default_factory=list)
    recv: list[str] = field(default_factory=list)
    associate_time: datetime | None = None
    disassociate_time: datetime | None = None


@dataclass
class _SessionAssoc:
    session_id: str
    associate_time: datetime | None = None
    disassociate_time: datetime | None = None


class _Reader:
    """One pass over the tree, collecting blocks by ID; ``read`` assembles the model."""

    def __init__(self, root: ET.Element) -> None:
        namespace, local = _split(root.tag)
        if namespace not in RECORDING_NAMESPACES or local not in _ROOTS:
            raise MetadataError(
                f"root element <{local}> (namespace {namespace!r}) is not recording metadata; "
                f'RFC 7865 §9 wants <recording xmlns="{RECORDING_NAMESPACE}">'
            )
        self.root = root
        self.namespace = namespace
        self.data_mode: DataMode = "complete"
        self.groups: dict[str, Group] = {}
        self.sessions: dict[str, Session] = {}
        self.participants: dict[str, Participant] = {}
        self.streams: dict[str, Stream] = {}
        self.stream_assocs: dict[str, _StreamAssoc] = {}
        self.session_assocs: dict[str, _SessionAssoc] = {}
        self.recording_assocs: dict[str, SessionRecordingAssoc] = {}
        # Pre-RFC <associate-time> under <session>: used when no <sessionrecordingassoc> says it.
        self.session_times: dict[str, datetime] = {}
        self.extensions: dict[tuple[str, str | None], list[tuple[str, str]]] = {}

    def read(self) -> RecordingMetadata:
        handlers: dict[str, Callable[[ET.Element], None]] = {
            "datamode": self._data_mode,
            "group": self._group,
            "session": self._session,
            "participant": self._participant,
            "stream": self._stream,
            "sessionrecordingassoc": self._session_recording_assoc,
            "participantsessionassoc": self._participant_session_assoc,
            "participantstreamassoc": self._participant_stream_assoc,
            "extensiondata": lambda element: self._extension_wrapper(element, None),
        }
        for child in self.root:
            namespace, local = _split(child.tag)
            if namespace != self.namespace:
                self._extension(child, None)
                continue
            handler = handlers.get(local.lower())
            if handler is not None:
                handler(child)
        return self._assemble()

    # Each block: its own children in the recording namespace, extensions in any other.

    def _children(self, element: ET.Element, parent_id: str) -> list[tuple[str, ET.Element]]:
        """The block's recording-namespace children as (lowercased local name, element)."""
        own = []
        for child in element:
            namespace, local = _split(child.tag)
            if namespace != self.namespace:
                self._extension(child, parent_id)
            elif local.lower() == "extensiondata":
                self._extension_wrapper(child, parent_id)
            else:
                own.append((local.lower(), child))
        return own

    def _id(self, element: ET.Element, name: str) -> str:
        value = (element.get(name) or element.get("id") or "").strip()
        if not value:
            raise MetadataError(f"<{_split(element.tag)[1]}> without {name} attribute (RFC 7865 §9)")
        return value

    def _data_mode(self, element: ET.Element) -> None:
        value = _text(element).lower()
        if value not in ("complete", "partial"):
            raise MetadataError(
                f"dataMode {_text(element)!r} is neither 'complete' nor 'partial' (RFC 7865 §6)"
            )
        self.data_mode = cast(DataMode, value)

    def _group(self, element: ET.Element) -> None:
        group_id = self._id(element, "group_id")
        associate_time = None
        for local, child in self._children(element, group_id):
            if local == "associate-time":
                associate_time = parse_time(_text(child))
        _store(self.groups, group_id, Group(group_id, associate_time), "group_id")

    def _session(self, element: ET.Element) -> None:
        session_id = self._id(element, "session_id")
        group_id = element.get("group")  # early drafts (BroadWorks)
        sip_session_ids: list[str] = []
        start_time = end_time = None
        for local, child in self._children(element, session_id):
            if local == "sipsessionid" and _text(child):
                sip_session_ids.append(_text(child))
            elif local == "group-ref" and group_id is None:
                group_id = _text(child) or None
            elif local == "start-time":
                start_time = parse_time(_text(child))
            elif local in ("stop-time", "end-time"):
                end_time = parse_time(_text(child))
            elif local == "associate-time" and (moment := parse_time(_text(child))) is not None:
                self.session_times[session_id] = moment
        session = Session(session_id, group_id, tuple(sip_session_ids), start_time, end_time)
        _store(self.sessions, session_id, session, "session_id")

    def _participant(self, element: ET.Element) -> None:
        participant_id = self._id(element, "participant_id")
        aor: str | None = None
        name: str | None = None
        associate_time = disassociate_time = None
        for local, child in self._children(element, participant_id):
            if local == "nameid" and aor is None:
                aor = (child.get("aor") or "").strip()
                names = [_text(n) for n in child if _split(n.tag)[1].lower() == "name"]
                name = next((n for n in names if n), None)
            elif local == "aor" and aor is None:  # early drafts (BroadWorks)
                aor = _text(child)
            elif local in ("send", "recv"):  # pre-RFC: the stream association inside the participant
                assoc = self.stream_assocs.setdefault(participant_id, _StreamAssoc())
                (assoc.send if local == "send" else assoc.recv).extend(_stream_refs(child))
            elif local == "associate-time":
                associate_time = parse_time(_text(child))
            elif local == "disassociate-time":
                disassociate_time = parse_time(_text(child))
        session_id = element.get("session")  # pre-RFC
        participant = Participant(
            participant_id,
            aor or "",
            name,
            associate_time,
            disassociate_time,
            session_id.strip() if session_id else None,
        )
        _store(self.participants, participant_id, participant, "participant_id")

    def _stream(self, element: ET.Element) -> None:
        stream_id = self._id(element, "stream_id")
        session_id = (element.get("session_id") or element.get("session") or "").strip()
        label = ""
        for local, child in self._children(element, stream_id):
            if local == "label":
                label = _text(child)
        _store(self.streams, stream_id, Stream(stream_id, session_id, label), "stream_id")

    def _session_recording_assoc(self, element: ET.Element) -> None:
        session_id = self._id(element, "session_id")
        times = self._times(element, session_id)
        self.recording_assocs[session_id] = SessionRecordingAssoc(session_id, *times)

    def _participant_session_assoc(self, element: ET.Element) -> None:
        participant_id = self._id(element, "participant_id")
        session_id = (element.get("session_id") or "").strip()
        times = self._times(element, participant_id)
        self.session_assocs.setdefault(participant_id, _SessionAssoc(session_id, *times))

    def _participant_stream_assoc(self, element: ET.Element) -> None:
        participant_id = self._id(element, "participant_id")
        assoc = self.stream_assocs.setdefault(participant_id, _StreamAssoc())
        children = self._children(element, participant_id)
        for local, child in children:
            if local in ("send", "recv"):
                (assoc.send if local == "send" else assoc.recv).extend(_stream_refs(child))
        assoc.associate_time, assoc.disassociate_time = _times(children)

    def _times(self, element: ET.Element, owner_id: str) -> tuple[datetime | None, datetime | None]:
        """(associate-time, disassociate-time) of an association; its extensions go to ``owner_id``."""
        return _times(self._children(element, owner_id))

    # Extension data.

    def _extension_wrapper(self, element: ET.Element, parent_id: str | None) -> None:
        """The pre-RFC ``<extensiondata>``: its children are the extension elements."""
        parent = element.get("parent")  # BroadWorks names the block it extends
        for child in element:
            self._extension(child, parent.strip() if parent else parent_id)

    def _extension(self, element: ET.Element, parent_id: str | None) -> None:
        namespace, local = _split(element.tag)
        pairs = self.extensions.setdefault((namespace, parent_id), [])
        if namespace == PARAMS_NAMESPACE:
            params = [element] if local == "param" else [c for c in element if _split(c.tag)[1] == "param"]
            pairs.extend((param.get("name", ""), param.text or "") for param in params)
        else:
            pairs.extend(_flatten(element, local))

    def _assemble(self) -> RecordingMetadata:
        participants = dict(self.participants)
        for participant_id, assoc in self.session_assocs.items():
            known = participants.get(participant_id) or Participant(participant_id, "")
            participants[participant_id] = Participant(
                participant_id,
                known.aor,
                known.name,
                assoc.associate_time or known.associate_time,
                assoc.disassociate_time or known.disassociate_time,
                assoc.session_id or known.session_id,
            )
        recording_assocs = dict(self.recording_assocs)
        for session_id, moment in self.session_times.items():
            recording_assocs.setdefault(session_id, SessionRecordingAssoc(session_id, moment))
        return RecordingMetadata(
            self.data_mode,
            groups=tuple(self.groups.values()),
            sessions=tuple(self.sessions.values()),
            participants=tuple(participants.values()),
            streams=tuple(self.streams.values()),
            participant_stream_assocs=tuple(
                ParticipantStreamAssoc(
                    pid, _unique(a.send), _unique(a.recv), a.associate_time, a.disassociate_time
                )
                for pid, a in self.stream_assocs.items()
            ),
            session_recording_assocs=tuple(recording_assocs.values()),
            extensions=tuple(
                ExtensionData(namespace, tuple(pairs), parent)
                for (namespace, parent), pairs in self.extensions.items()
            ),
        )


def _store(table: dict[str, _T], key: str, value: _T, what: str) -> None:
    if key in table:
        raise MetadataError(f"two blocks with {what} {key!r} in one metadata document")
    table[key] = value


def _times(children: list[tuple[str, ET.Element]]) -> tuple[datetime | None, datetime | None]:
    associate = disassociate = None
    for local, child in children:
        if local == "associate-time":
            associate = parse_time(_text(child))
        elif local == "disassociate-time":
            disassociate = parse_time(_text(child))
    return associate, disassociate


def _stream_refs(element: ET.Element) -> list[str]:
    """Stream IDs of a ``<send>``/``<recv>``: its text, or BroadWorks' ``<id>`` children."""
    ids = [_text(child) for child in element if _split(child.tag)[1].lower() == "id"]
    return [i for i in ids if i] if ids else ([_text(element)] if _text(element) else [])


def _flatten(element: ET.Element, path: str) -> list[tuple[str, str]]:
    pairs = [(f"{path}@{_split(name)[1]}", value) for name, value in element.attrib.items()]
    children = list(element)
    if not children:
        pairs.append((path, _text(element)))
    for child in children:
        pairs.extend(_flatten(child, f"{path}/{_split(child.tag)[1]}"))
    return pairs


def _unique(ids: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))
