"""RFC 7865 recording metadata: the model, the XML writer, and a tolerant reader.

- ``model``: frozen blocks (``RecordingMetadata`` and its parts), ``new_id``, the snapshot of a
  call (``for_call``), partial updates (``participant_joined``/``participant_left``/``stream_added``)
  and ``merge``;
- ``xml``: ``to_xml``, the RFC 7865 document an SRC sends;
- ``reader``: ``read_siprec_body`` and ``read_metadata``, which accept what SRCs in the field send
  and refuse the rest with ``MetadataError`` (a ``RemoteProtocolError`` with a status hint).

Sans-I/O like ``sip/``: no sockets, no clock; times and randomness are passed in.
"""

from __future__ import annotations

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
    for_call,
    merge,
    new_id,
    participant_joined,
    participant_left,
    stream_added,
)
from siprec_src.metadata.reader import MetadataError, read_metadata, read_siprec_body
from siprec_src.metadata.xml import CONTENT_TYPE, RECORDING_NAMESPACE, to_xml

__all__ = [
    "CONTENT_TYPE",
    "PARAMS_NAMESPACE",
    "RECORDING_NAMESPACE",
    "DataMode",
    "ExtensionData",
    "Group",
    "MetadataError",
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
    "read_metadata",
    "read_siprec_body",
    "stream_added",
    "to_xml",
]
