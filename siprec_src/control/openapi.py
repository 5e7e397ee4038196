"""The native ``/v1`` API described as OpenAPI 3.1, and the checker of request bodies it implies.

It covers calls, SIPREC recordings, WebSocket streams (``/v1/calls/{call_id}/streams``) and
the Plivo XML endpoint (``/v1/calls/{call_id}/plivo-xml``, whose body is XML, or JSON holding
the XML: ``plivo.py``).

The document is written by hand (a Python dict) and is the single source of truth for what a
request body may hold: ``native.py`` validates every body with :func:`check_body` against the
schemas here, so the document and the handlers cannot drift apart. The checker implements
the subset of JSON Schema 2020-12 these schemas use (``type``, ``properties``, ``required``,
``additionalProperties``, ``propertyNames``, ``maxProperties``, ``enum``, ``const``,
``pattern``, ``minLength``, ``maxLength``, ``minimum``, ``maximum``, ``anyOf``, ``$ref``) and
names the offending field with a dotted path (``from.aor``, ``legs.inbound.source``).

Patterns are written so that ECMA-262 (what OpenAPI tools use) and Python's ``re`` read them
the same way: ASCII classes only (``[0-9]``, never ``\\d``), no ``\\s``; a final ``$`` is
checked as end of text (Python's ``$`` would also match before a final newline).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from functools import cache
from typing import Any

from siprec_src.errors import LocalProtocolError

# --- patterns shared by the schemas and the handlers --------------------------------------------

CALL_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$"
# RFC 3986 §3.1 scheme, then no space, control character, quote or angle bracket (they would
# break the metadata's <aor> or a SIP header).
# U+FFFE and U+FFFF are refused with the control characters: XML 1.0 (§2.2) cannot carry them
# and names and parameters go into the RFC 7865 metadata.
AOR = r'^[A-Za-z][A-Za-z0-9+.-]*:[^\x00-\x20\x7f<>"\uFFFE\uFFFF]+$'
DISPLAY_NAME = r"^[^\x00-\x1f\x7f\uFFFE\uFFFF]*$"
SIP_SESSION_ID = r"^[0-9A-Fa-f]{32}$"  # RFC 7989 §4: sess-uuid is 32 hex digits
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# IPv4 exactly; IPv6 loosely (the handler parses it with ``ipaddress``).
SOURCE = rf"^({_OCTET}(\.{_OCTET}){{3}}|\[[0-9A-Fa-f:.]{{2,45}}\]):{_PORT}$"
RECORDING_NAME = r"^[A-Za-z0-9_.:@+-]{1,64}$"  # recording.call.check_name
CONNECTOR_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # what config.py allows for [connectors.NAME]
PARAM_NAME = r"^[A-Za-z0-9_-]{1,64}$"  # becomes an X-NAME SIP header (a token, RFC 3261 §25.1)
ONE_LINE = r"^[^\x00-\x1f\x7f\uFFFE\uFFFF]*$"
HTTP_URL = r"^https?://[^\x00-\x20\x7f]+$"
WS_URL = r"^[Ww][Ss][Ss]?://[^\x00-\x20\x7f]+$"  # streams/options.check_stream_url decides the rest
STREAM_PARAMETER_NAME = r"^[^\x00-\x1f\x7f\uFFFE\uFFFF]+$"  # a JSON key of start.customParameters
# Plivo extraHeaders: key=value pairs of [A-Za-z0-9], comma separated (seed 004), 512 bytes at most.
EXTRA_HEADERS = r"^([A-Za-z0-9]+=[A-Za-z0-9]+(,[A-Za-z0-9]+=[A-Za-z0-9]+)*)?$"

TRACKS = ("inbound_track", "outbound_track", "both_tracks")
CODECS = ("PCMU", "PCMA")
TAP_SRTP_SUITES = (
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
    "AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM",
)
RECORDING_STATUSES = ("starting", "in-progress", "paused", "stopped", "failed")
CALLBACK_EVENTS = (
    "recording.attempt-failed",
    "recording.started",
    "recording.interrupted",
    "recording.recovered",
    "recording.paused",
    "recording.resumed",
    "recording.stopped",
    "recording.failed",
)
STREAM_FORMATS = ("twilio", "plivo")
STREAM_STATUSES = ("starting", "in-progress", "stopped", "failed")
PLIVO_CONTENT_TYPES = ("audio/x-l16;rate=8000", "audio/x-l16;rate=16000", "audio/x-mulaw;rate=8000")
STREAM_CALLBACK_EVENTS = ("stream.started", "stream.stopped", "stream.dropped", "stream.played")
MAX_SESSION_TIMEOUT = 86_400
MAX_STREAM_TIMEOUT = 2_147_483_647  # seconds; Plivo sets no maximum, a 32-bit integer does
MAX_STREAM_PARAMETERS = 99  # Twilio's Parameter1..99

# --- schemas ------------------------------------------------------------------------------------


def _string(pattern: str | None = None, *, max_length: int, error: str, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "maxLength": max_length, "x-error": error, **extra}
    if pattern is not None:
        schema["pattern"] = pattern
    return schema


def _object(properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = list(required)
    schema.update(extra)
    return schema


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


_PARTY_IN = _object(
    {
        "aor": _string(
            AOR,
            max_length=256,
            minLength=3,
            error="must be a URI with a scheme (sip:, sips:, tel:...) and no spaces, quotes or <>",
            description="The participant's address of record (RFC 7865 §6.5 <aor>).",
            examples=["sip:+15551230001@pbx.example.com"],
        ),
        "name": _string(
            DISPLAY_NAME,
            max_length=128,
            error="must be one line without control characters",
            description="Display name (RFC 7865 <name>).",
        ),
    },
    ("aor",),
)

_LEG_IN = _object(
    {
        "source": _string(
            SOURCE,
            max_length=64,
            error="must be IPv4:port or [IPv6]:port",
            description=(
                "The only address this leg's RTP is accepted from. Without it the first source "
                "is latched and every other one refused."
            ),
            examples=["192.0.2.10:40000"],
        ),
        "srtp": _object(
            {
                "suite": {
                    "type": "string",
                    "enum": list(TAP_SRTP_SUITES),
                    "x-error": f"must be one of {', '.join(TAP_SRTP_SUITES)}",
                },
                "key": _string(
                    r"^inline:",
                    max_length=256,
                    error="must be SDES key-params: inline:<base64 key||salt>[|lifetime]",
                    description="The key the copy of this leg is protected with (RFC 4568 key-params).",
                ),
            },
            ("suite", "key"),
            description=(
                "The leg arrives as SRTP (SDES): it is unprotected with this key before it is "
                "forked; packets that do not authenticate are counted as rejected and dropped."
            ),
        ),
    }
)

_SESSION_TIMEOUT = {
    "type": "integer",
    "anyOf": [{"const": 0}, {"minimum": 90, "maximum": MAX_SESSION_TIMEOUT}],
    "x-error": f"must be 0 (no session timer) or from 90 to {MAX_SESSION_TIMEOUT} seconds (RFC 4028 §4)",
    "description": "RFC 4028 Session-Expires toward the SRS; 0 disables the session timer.",
}

REQUEST_SCHEMAS: dict[str, dict[str, Any]] = {
    "PartyInput": _PARTY_IN,
    "LegInput": _LEG_IN,
    "CallCreate": _object(
        {
            "call_id": _string(
                CALL_ID,
                max_length=128,
                error="must be 1-128 letters, digits and _ . : @ + -, starting with a letter or digit",
                description="Your id for the call; generated (32 hex digits) when absent.",
            ),
            "from": _ref("PartyInput"),
            "to": _ref("PartyInput"),
            "codec": {
                "type": "string",
                "enum": list(CODECS),
                "x-error": f"must be one of {', '.join(CODECS)}",
                "description": "The codec of both legs (default PCMU).",
            },
            "sip_session_id": _string(
                SIP_SESSION_ID,
                max_length=32,
                error="must be an RFC 7989 Session-ID: 32 hexadecimal digits",
                description="The call's RFC 7989 Session-ID, written into the metadata.",
            ),
            "telephone_event": {
                "type": "integer",
                "minimum": 96,
                "maximum": 127,
                "x-error": "must be a dynamic RTP payload type, 96-127",
                "description": (
                    "The payload type of RFC 4733 telephone-event (DTMF) on the legs; offered to "
                    "the SRS and forked. Without it DTMF packets are not forked."
                ),
            },
            "legs": _object({"inbound": _ref("LegInput"), "outbound": _ref("LegInput")}),
            "playback": _string(
                SOURCE,
                max_length=64,
                error="must be IPv4:port or [IPv6]:port",
                description=(
                    "Where bidirectional WebSocket streams play their audio into the call: RTP "
                    "in the call's codec, sent from the media host (the PBX mixes or relays it "
                    "toward the far end). Without it a bidirectional stream is refused."
                ),
                examples=["192.0.2.10:40100"],
            ),
        },
        ("from", "to"),
    ),
    "ParticipantsUpdate": _object({"from": _ref("PartyInput"), "to": _ref("PartyInput")}, ("from", "to")),
    "RecordingCreate": _object(
        {
            "connector": _string(
                CONNECTOR_NAME,
                max_length=128,
                minLength=1,
                error="must be a connector name: letters, digits, _ . -, starting with a letter or digit",
                description="A connector of the configuration (its ordered SRS list).",
                examples=["main"],
            ),
            "track": {
                "type": "string",
                "enum": list(TRACKS),
                "default": "both_tracks",
                "x-error": f"must be one of {', '.join(TRACKS)}",
            },
            "name": _string(
                RECORDING_NAME,
                max_length=64,
                error="must be 1-64 letters, digits and _ . : @ + -",
                description="Unique among the call's live recordings; usable instead of the sid.",
            ),
            "params": {
                "type": "object",
                "maxProperties": 32,
                "propertyNames": {
                    "type": "string",
                    "pattern": PARAM_NAME,
                    "x-error": "must be 1-64 letters, digits, _ and -",
                },
                "additionalProperties": _string(
                    ONE_LINE, max_length=1024, error="must be one line without control characters"
                ),
                "x-error": "must be an object of at most 32 string values",
                "description": "Custom parameters: X-NAME headers on the INVITE, or metadata extensions.",
            },
            "params_in_metadata": {
                "type": "boolean",
                "x-error": "must be true or false",
                "description": "Put params in the RFC 7865 metadata instead of X- headers.",
            },
            "secure": {
                "type": "boolean",
                "x-error": "must be true or false",
                "description": "TLS and SRTP (SDES) toward the SRS; default: the connector's setting.",
            },
            "session_timeout": _SESSION_TIMEOUT,
            "status_callback": _string(
                HTTP_URL,
                max_length=2048,
                error="must be an http:// or https:// URL",
                description="Where recording events are sent.",
            ),
            "status_callback_method": {
                "type": "string",
                "enum": ["GET", "POST"],
                "default": "POST",
                "x-error": "must be GET or POST",
            },
        },
        ("connector",),
    ),
    "RecordingUpdate": _object(
        {
            "status": {
                "type": "string",
                "enum": ["stopped", "paused", "in-progress"],
                "x-error": "must be one of stopped, paused, in-progress",
            }
        },
        ("status",),
    ),
    "WebSocketStreamCreate": _object(
        {
            "url": _string(
                WS_URL,
                max_length=2048,
                error="must be a ws:// or wss:// URL",
                description="The WebSocket service; wss:// is verified (trust store and [streams] ca).",
                examples=["wss://bot.example.com/media"],
            ),
            "name": _string(
                RECORDING_NAME,
                max_length=64,
                error="must be 1-64 letters, digits and _ . : @ + -",
                description=(
                    "Unique among the call's live recordings and streams; usable instead of the "
                    "sid (twilio format only: Plivo streams have no name)."
                ),
            ),
            "track": {
                "type": "string",
                "enum": list(TRACKS),
                "default": "inbound_track",
                "x-error": f"must be one of {', '.join(TRACKS)}",
                "description": "What to stream; both_tracks counts 2 of the call's 4 forked streams.",
            },
            "format": {
                "type": "string",
                "enum": list(STREAM_FORMATS),
                "default": "twilio",
                "x-error": "must be twilio or plivo",
                "description": "The wire format: Twilio Media Streams or Plivo AudioStream messages.",
            },
            "parameters": {
                "type": "object",
                "maxProperties": MAX_STREAM_PARAMETERS,
                "propertyNames": {
                    "type": "string",
                    "pattern": STREAM_PARAMETER_NAME,
                    "maxLength": 256,
                    "x-error": "must be 1-256 characters without control characters",
                },
                "additionalProperties": _string(
                    ONE_LINE, max_length=1024, error="must be one line without control characters"
                ),
                "x-error": f"must be an object of at most {MAX_STREAM_PARAMETERS} string values",
                "description": "twilio format: the start message's customParameters.",
            },
            "content_type": {
                "type": "string",
                "enum": list(PLIVO_CONTENT_TYPES),
                "default": "audio/x-l16;rate=8000",
                "x-error": f"must be one of {', '.join(PLIVO_CONTENT_TYPES)}",
                "description": "plivo format: the audio of the media messages (Plivo contentType).",
            },
            "extra_headers": _string(
                EXTRA_HEADERS,
                max_length=512,
                error="must be key=value pairs of letters and digits, separated by commas (k1=v1,k2=v2)",
                description="plivo format: the start message's extra_headers (Plivo extraHeaders).",
            ),
            "stream_timeout": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_STREAM_TIMEOUT,
                "x-error": "must be a positive number of seconds",
                "description": "plivo format: stop streaming this long after it started (default 86400).",
            },
            "bidirectional": {
                "type": "boolean",
                "x-error": "must be true or false",
                "description": (
                    "The service may send audio back, played to the call's playback address "
                    "(inbound_track only, one per call)."
                ),
            },
            "status_callback": _string(
                HTTP_URL,
                max_length=2048,
                error="must be an http:// or https:// URL",
                description="Where stream events are sent.",
            ),
            "status_callback_method": {
                "type": "string",
                "enum": ["GET", "POST"],
                "default": "POST",
                "x-error": "must be GET or POST",
            },
        },
        ("url",),
    ),
    "WebSocketStreamUpdate": _object(
        {"status": {"type": "string", "enum": ["stopped"], "x-error": "must be stopped"}},
        ("status",),
    ),
    "PlivoXmlRequest": _object(
        {
            "xml": _string(
                None,
                max_length=1_048_576,
                error="must be a string",
                description="A Plivo XML document: <Response> with <Stream> elements.",
                examples=["<Response><Stream>wss://bot.example.com/audio</Stream></Response>"],
            )
        },
        ("xml",),
    ),
}

_INT = {"type": "integer", "minimum": 0}
_TIME = {"type": "string", "format": "date-time"}

RESPONSE_SCHEMAS: dict[str, dict[str, Any]] = {
    "Party": {
        "type": "object",
        "required": ["aor", "name"],
        "properties": {"aor": {"type": "string"}, "name": {"type": ["string", "null"]}},
    },
    "Leg": {
        "type": "object",
        "required": ["rtp", "source", "packets", "bytes", "rejected"],
        "properties": {
            "rtp": {"type": "string", "description": "Where to send this leg's RTP (ip:port; RTCP on +1)."},
            "source": {"type": ["string", "null"]},
            "packets": {**_INT, "description": "RTP packets accepted on the leg."},
            "bytes": {**_INT, "description": "Their octets."},
            "rejected": {**_INT, "description": "Packets refused: wrong source, not RTP."},
        },
    },
    "Stream": {
        "type": "object",
        "required": [
            "label",
            "leg",
            "ssrc",
            "remote",
            "packets",
            "bytes",
            "dropped_paused",
            "dropped_payload_type",
            "send_errors",
        ],
        "properties": {
            "label": {"type": "string", "description": "a=label of the m-line (RFC 7866 §7.1.1)."},
            "leg": {"type": "string", "enum": ["inbound", "outbound"]},
            "ssrc": {"type": "integer", "minimum": 0, "maximum": 4294967295},
            "remote": {"type": ["string", "null"], "description": "The SRS's RTP address (ip:port)."},
            "packets": {**_INT, "description": "RTP packets sent to the SRS."},
            "bytes": {**_INT, "description": "Payload octets sent (as in our RTCP SR)."},
            "dropped_paused": {**_INT, "description": "Packets not sent while paused."},
            "dropped_payload_type": {**_INT, "description": "Packets of a payload type the SRS refused."},
            "send_errors": {**_INT, "description": "Sends that failed (ICMP unreachable...)."},
        },
    },
    "Attempt": {
        "type": "object",
        "required": ["attempt", "srs", "sip_status", "reason"],
        "properties": {
            "attempt": {"type": "integer", "minimum": 1},
            "srs": {"type": "string"},
            "sip_status": {"type": ["integer", "null"]},
            "reason": {"type": ["string", "null"]},
        },
    },
    "Interruption": {
        "type": "object",
        "required": ["srs", "sip_status", "reason", "recovered_on", "interrupted_for"],
        "properties": {
            "srs": {"type": "string", "description": "The SRS whose session was lost."},
            "sip_status": {"type": "integer"},
            "reason": {"type": "string"},
            "recovered_on": {"type": ["string", "null"], "description": "The SRS that took it over."},
            "interrupted_for": {
                "type": ["number", "null"],
                "description": "Seconds from the loss being detected to the new session's 2xx.",
            },
        },
    },
    "Recording": {
        "type": "object",
        "required": [
            "sid",
            "call_id",
            "name",
            "connector",
            "track",
            "status",
            "srs",
            "streams",
            "attempts",
            "recovering",
            "interruptions",
            "created_at",
            "started_at",
            "updated_at",
            "error",
        ],
        "properties": {
            "sid": {"type": "string", "pattern": "^SR[0-9a-f]{32}$"},
            "call_id": {"type": "string"},
            "name": {"type": ["string", "null"]},
            "connector": {"type": "string"},
            "track": {"type": "string", "enum": list(TRACKS)},
            "status": {"type": "string", "enum": list(RECORDING_STATUSES)},
            "srs": {"type": ["string", "null"], "description": "The SRS that took (or is trying) it."},
            "streams": {"type": "array", "items": _ref("Stream")},
            "attempts": {"type": "array", "items": _ref("Attempt")},
            "recovering": {
                "type": "boolean",
                "description": "The SRS was lost mid-call and a new session is being set up.",
            },
            "interruptions": {"type": "array", "items": _ref("Interruption")},
            "created_at": _TIME,
            "started_at": {**_TIME, "type": ["string", "null"], "description": "When the SRS accepted."},
            "updated_at": _TIME,
            "error": {
                "type": ["object", "null"],
                "required": ["sip_status", "reason"],
                "properties": {"sip_status": {"type": "integer"}, "reason": {"type": "string"}},
            },
        },
    },
    "WebSocketStreamStats": {
        "type": "object",
        "required": [
            "packets_received",
            "packets_late",
            "frames",
            "frames_sent",
            "frames_dropped",
            "queued",
            "messages_sent",
            "bytes_sent",
            "frames_played",
        ],
        "properties": {
            "packets_received": {**_INT, "description": "RTP packets that reached the stream."},
            "packets_late": {**_INT, "description": "Reordered or duplicated packets dropped."},
            "frames": {**_INT, "description": "20 ms media frames made."},
            "frames_sent": {**_INT, "description": "Media messages written to the WebSocket."},
            "frames_dropped": {**_INT, "description": "Frames dropped because the send queue was full."},
            "queued": {**_INT, "description": "Frames not written yet."},
            "messages_sent": {**_INT, "description": "Every message written, media or not."},
            "bytes_sent": {**_INT, "description": "Their UTF-8 bytes."},
            "frames_played": {**_INT, "description": "Bidirectional: 20 ms RTP packets played to the call."},
        },
    },
    "WebSocketStream": {
        "type": "object",
        "required": [
            "sid",
            "call_id",
            "name",
            "url",
            "format",
            "track",
            "bidirectional",
            "content_type",
            "status",
            "stats",
            "error",
            "created_at",
            "started_at",
            "updated_at",
        ],
        "properties": {
            "sid": {"type": "string", "description": "MZ + 32 hex digits (twilio), a UUID (plivo)."},
            "call_id": {"type": "string"},
            "name": {"type": ["string", "null"]},
            "url": {"type": "string"},
            "format": {"type": "string", "enum": list(STREAM_FORMATS)},
            "track": {"type": "string", "enum": list(TRACKS)},
            "bidirectional": {"type": "boolean"},
            "content_type": {"type": "string", "description": "The audio of the media messages."},
            "status": {"type": "string", "enum": list(STREAM_STATUSES)},
            "stats": _ref("WebSocketStreamStats"),
            "error": {"type": ["string", "null"], "description": "Why it failed (Plivo's words first)."},
            "created_at": _TIME,
            "started_at": {**_TIME, "type": ["string", "null"], "description": "When streaming began."},
            "updated_at": _TIME,
        },
    },
    "WebSocketStreamList": {
        "type": "object",
        "required": ["streams"],
        "properties": {"streams": {"type": "array", "items": _ref("WebSocketStream")}},
    },
    "Call": {
        "type": "object",
        "required": [
            "call_id",
            "from",
            "to",
            "codec",
            "sip_session_id",
            "legs",
            "playback",
            "recordings",
            "streams",
            "created_at",
        ],
        "properties": {
            "call_id": {"type": "string"},
            "from": _ref("Party"),
            "to": _ref("Party"),
            "codec": {"type": "string"},
            "sip_session_id": {"type": ["string", "null"]},
            "legs": {
                "type": "object",
                "required": ["inbound", "outbound"],
                "properties": {"inbound": _ref("Leg"), "outbound": _ref("Leg")},
            },
            "playback": {"type": ["string", "null"], "description": "Where bidirectional streams play."},
            "recordings": {"type": "array", "items": _ref("Recording")},
            "streams": {"type": "array", "items": _ref("WebSocketStream")},
            "created_at": _TIME,
        },
    },
    "CallList": {
        "type": "object",
        "required": ["calls"],
        "properties": {"calls": {"type": "array", "items": _ref("Call")}},
    },
    "RecordingList": {
        "type": "object",
        "required": ["recordings"],
        "properties": {"recordings": {"type": "array", "items": _ref("Recording")}},
    },
    "Health": {
        "type": "object",
        "required": ["status", "calls", "recordings", "media_workers"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded", "media_unavailable", "shutting_down"]},
            "calls": _INT,
            "recordings": _INT,
            "media_workers": {
                "type": "object",
                "required": ["configured", "alive"],
                "properties": {"configured": _INT, "alive": _INT},
                "description": "Media worker processes; a dead one is not restarted.",
            },
        },
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["status", "code", "message", "field"],
                "properties": {
                    "status": {"type": "integer", "minimum": 400, "maximum": 599},
                    "code": {"type": "string", "description": "Stable, machine-readable kind."},
                    "message": {"type": "string"},
                    "field": {
                        "type": ["string", "null"],
                        "description": "The request field at fault, as a dotted path (from.aor).",
                    },
                },
            }
        },
    },
    "CallbackEvent": {
        "type": "object",
        "required": ["event", "sid", "call_id", "name", "status", "srs", "timestamp"],
        "properties": {
            "event": {"type": "string", "enum": list(CALLBACK_EVENTS)},
            "sid": {"type": "string"},
            "call_id": {"type": "string"},
            "name": {"type": ["string", "null"]},
            "status": {"type": "string", "enum": list(RECORDING_STATUSES)},
            "srs": {"type": ["string", "null"]},
            "reason": {"type": "string"},
            "sip_status": {"type": "integer"},
            "attempt": {"type": "integer"},
            "retry_after": {"type": "integer"},
            "by": {"type": "string", "enum": ["src", "srs"]},
            "interrupted_for": {
                "type": "number",
                "description": "recovered: seconds from the loss being detected to the new session.",
            },
            "timestamp": _TIME,
        },
    },
    "StreamCallbackEvent": {
        "type": "object",
        "required": ["event", "sid", "call_id", "name", "status", "format", "url", "timestamp"],
        "properties": {
            "event": {"type": "string", "enum": list(STREAM_CALLBACK_EVENTS)},
            "sid": {"type": "string"},
            "call_id": {"type": "string"},
            "name": {"type": ["string", "null"]},
            "status": {"type": "string", "enum": list(STREAM_STATUSES)},
            "format": {"type": "string", "enum": list(STREAM_FORMATS)},
            "url": {"type": "string"},
            "reason": {"type": "string", "description": "stopped: stopped, call ended, stream timeout."},
            "error": {"type": "string", "description": "dropped: what happened."},
            "frames_dropped": {**_INT, "description": "stopped, dropped: frames the full queue dropped."},
            "mark": {
                "type": ["string", "null"],
                "description": "played: the mark/checkpoint reached; null: everything queued was played.",
            },
            "timestamp": _TIME,
        },
    },
}

# --- paths --------------------------------------------------------------------------------------

_ERRORS = {
    400: "The request is invalid; `error.field` names the field.",
    401: "No or wrong Bearer token.",
    404: "No such call, recording or stream (or the native API is not enabled).",
    409: (
        "The request conflicts with the state: duplicate, wrong state, stream limit (4 forked "
        "streams per call, or max_recordings / max_streams live in the sidecar)."
    ),
    413: "The body is larger than max_body_bytes.",
    415: "The body is not application/json.",
    429: "More requests than rate_limit (per second) and rate_burst (at once) from this client.",
    503: "Call limit reached, no media port left, or shutting down.",
}
_RETRY_AFTER = {
    "Retry-After": {
        "schema": {"type": "integer", "minimum": 1},
        "description": "Seconds until this client may send a request again (RFC 9110 §10.2.3).",
    }
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _responses(ok: int, ok_schema: str | None, description: str, errors: tuple[int, ...]) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(ok): _json(_ref(ok_schema), description) if ok_schema else {"description": description}
    }
    for status in sorted({401, 404, 429, *errors}):
        response = _json(_ref("Error"), _ERRORS[status])
        if status == 401:
            response["headers"] = {
                "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer (RFC 6750 §3)."}
            }
        if status == 429:
            response["headers"] = _RETRY_AFTER
        responses[str(status)] = response
    return responses


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


_CALL_ID_PARAM = {
    "name": "call_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The call's id.",
}
_RECORDING_PARAM = {
    "name": "recording",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The recording's sid, or its name (the live recording of that name first).",
}
_STREAM_PARAM = {
    "name": "stream",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The stream's sid, or its name (the live stream of that name first).",
}
_BODY_ERRORS = (400, 413, 415)


def _callback(schema: str, summary: str) -> dict[str, Any]:
    return {
        "status": {
            "{$request.body#/status_callback}": {
                "post": {
                    "summary": summary,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref(schema)}},
                    },
                    "responses": {"200": {"description": "Any 2xx means delivered."}},
                }
            }
        }
    }


PATHS: dict[str, dict[str, Any]] = {
    "/v1/calls": {
        "post": {
            "operationId": "createCall",
            "summary": "Open a call: two tap ports the PBX sends copies of each leg's RTP to.",
            "requestBody": _body("CallCreate"),
            "responses": _responses(
                201, "Call", "The call, with its tap addresses.", (*_BODY_ERRORS, 409, 503)
            ),
        },
        "get": {
            "operationId": "listCalls",
            "summary": "Every open call.",
            "responses": _responses(200, "CallList", "The open calls.", ()),
        },
    },
    "/v1/calls/{call_id}": {
        "parameters": [_CALL_ID_PARAM],
        "get": {
            "operationId": "getCall",
            "summary": "One call.",
            "responses": _responses(200, "Call", "The call.", ()),
        },
        "delete": {
            "operationId": "deleteCall",
            "summary": "End the call: BYE to every SRS, RTCP BYE per stream, tap ports closed.",
            "responses": _responses(204, None, "The call is closed.", ()),
        },
    },
    "/v1/calls/{call_id}/participants": {
        "parameters": [_CALL_ID_PARAM],
        "put": {
            "operationId": "updateParticipants",
            "summary": "New parties (transfer): every live recording re-INVITEs its SRS with new metadata.",
            "requestBody": _body("ParticipantsUpdate"),
            "responses": _responses(200, "Call", "The call.", (*_BODY_ERRORS, 409)),
        },
    },
    "/v1/calls/{call_id}/recordings": {
        "parameters": [_CALL_ID_PARAM],
        "post": {
            "operationId": "createRecording",
            "summary": "Start a SIPREC recording toward a connector; answers before the SRS does.",
            "requestBody": _body("RecordingCreate"),
            "responses": _responses(
                201, "Recording", "The recording, status starting.", (*_BODY_ERRORS, 409, 503)
            ),
            "callbacks": _callback(
                "CallbackEvent", "A recording event (signed with X-Siprec-Signature when configured)."
            ),
        },
        "get": {
            "operationId": "listRecordings",
            "summary": "The call's recordings, ended ones included.",
            "responses": _responses(200, "RecordingList", "The recordings.", ()),
        },
    },
    "/v1/calls/{call_id}/recordings/{recording}": {
        "parameters": [_CALL_ID_PARAM, _RECORDING_PARAM],
        "get": {
            "operationId": "getRecording",
            "summary": "One recording, with live stream counters.",
            "responses": _responses(200, "Recording", "The recording.", ()),
        },
        "post": {
            "operationId": "updateRecording",
            "summary": "Pause (re-INVITE a=inactive), resume, or stop (BYE) a recording.",
            "requestBody": _body("RecordingUpdate"),
            "responses": _responses(200, "Recording", "The recording.", (*_BODY_ERRORS, 409)),
        },
    },
    "/v1/calls/{call_id}/streams": {
        "parameters": [_CALL_ID_PARAM],
        "post": {
            "operationId": "createStream",
            "summary": "Start a WebSocket stream of the call's audio; answers before the service does.",
            "requestBody": _body("WebSocketStreamCreate"),
            "responses": _responses(
                201, "WebSocketStream", "The stream, status starting.", (*_BODY_ERRORS, 409)
            ),
            "callbacks": _callback(
                "StreamCallbackEvent", "A stream event (signed with X-Siprec-Signature when configured)."
            ),
        },
        "get": {
            "operationId": "listStreams",
            "summary": "The call's WebSocket streams, ended ones included.",
            "responses": _responses(200, "WebSocketStreamList", "The streams.", ()),
        },
    },
    "/v1/calls/{call_id}/streams/{stream}": {
        "parameters": [_CALL_ID_PARAM, _STREAM_PARAM],
        "get": {
            "operationId": "getStream",
            "summary": "One WebSocket stream, with live counters.",
            "responses": _responses(200, "WebSocketStream", "The stream.", ()),
        },
        "post": {
            "operationId": "updateStream",
            "summary": "Stop a WebSocket stream (Twilio stop message, WebSocket closed).",
            "requestBody": _body("WebSocketStreamUpdate"),
            "responses": _responses(200, "WebSocketStream", "The stream, ended.", _BODY_ERRORS),
        },
    },
    "/v1/calls/{call_id}/plivo-xml": {
        "parameters": [_CALL_ID_PARAM],
        "post": {
            "operationId": "runPlivoXml",
            "summary": "Run a Plivo XML document: each <Stream> starts a WebSocket stream of the call.",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _ref("PlivoXmlRequest")},
                    "application/xml": {
                        "schema": {
                            "type": "string",
                            "description": "The document itself (also accepted as text/xml).",
                        }
                    },
                },
            },
            "responses": _responses(
                200,
                "WebSocketStreamList",
                "The streams the document started, each status starting.",
                (*_BODY_ERRORS, 409),
            ),
        },
    },
}

UNAUTHENTICATED_PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {
        "get": {
            "operationId": "health",
            "summary": "Liveness and load; 503 while shutting down.",
            "security": [],
            "responses": {
                "200": _json(_ref("Health"), "Serving (degraded: a media worker died, the others serve)."),
                "503": _json(_ref("Health"), "Shutting down, or no media worker left: send no new calls."),
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (text exposition format 0.0.4).",
            "security": [],
            "responses": {
                "200": {
                    "description": "The metrics.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "429": {**_json(_ref("Error"), _ERRORS[429]), "headers": _RETRY_AFTER},
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document.",
            "security": [],
            "responses": {
                "200": {
                    "description": "The OpenAPI document.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "429": {**_json(_ref("Error"), _ERRORS[429]), "headers": _RETRY_AFTER},
            },
        }
    },
}


def document(
    server_url: str | None = None,
    *,
    connectors: Iterable[str] | None = None,
    codecs: Iterable[str] | None = None,
    version: str = "0.1.0",
    metrics_auth: bool = False,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the native API (a fresh copy: callers may change it).

    With ``connectors`` (and ``codecs``), ``connector`` (and ``codec``) list what this sidecar
    is configured with as an ``enum``, so a client sees which names it will take. With
    ``metrics_auth`` (``[api.auth] metrics_token`` is set), ``/metrics`` is shown behind the
    Bearer scheme.
    """
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "siprec-src native API",
            "version": version,
            "description": (
                "Open calls whose legs a PBX copies to tap ports, and record them on SIPREC "
                "Session Recording Servers (RFC 7866). See docs/api.md."
            ),
        },
        "paths": {**PATHS, **UNAUTHENTICATED_PATHS},
        "components": {
            "schemas": {**REQUEST_SCHEMAS, **RESPONSE_SCHEMAS},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
    if server_url is not None:
        doc["servers"] = [{"url": server_url}]
    doc = copy.deepcopy(doc)
    schemas = doc["components"]["schemas"]
    if connectors is not None:
        schemas["RecordingCreate"]["properties"]["connector"]["enum"] = sorted(connectors)
    if codecs is not None:
        schemas["CallCreate"]["properties"]["codec"]["enum"] = [c for c in CODECS if c in set(codecs)]
    if metrics_auth:
        metrics = doc["paths"]["/metrics"]["get"]
        del metrics["security"]  # the document's default: Bearer
        metrics["responses"]["401"] = {
            **_json(_ref("Error"), "No or wrong Bearer token (metrics_token or an API token)."),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        }
    return doc


# --- the checker --------------------------------------------------------------------------------


def check_body(schema_name: str, value: object) -> dict[str, Any]:
    """``value`` (parsed JSON) if it matches ``REQUEST_SCHEMAS[schema_name]``; otherwise a
    ``LocalProtocolError`` with ``field`` (dotted path, ``None`` for the body itself) and
    ``code`` (``invalid_type``, ``missing_field``, ``unknown_field``, ``invalid_value``).

    As JSON Schema says, a number with a zero fraction is an integer: ``90.0`` is taken, and
    returned as ``90``.
    """
    checked = _check(REQUEST_SCHEMAS[schema_name], value, ())
    assert isinstance(checked, dict)
    return checked


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    return REQUEST_SCHEMAS[ref.rsplit("/", 1)[1]]


def _path(parts: tuple[str, ...]) -> str | None:
    return ".".join(parts) if parts else None


def _describe(parts: tuple[str, ...]) -> str:
    return ".".join(parts) if parts else "the body"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


_ARTICLES = {"integer": "an integer", "object": "an object", "array": "an array"}


def _problem(parts: tuple[str, ...], code: str, message: str) -> LocalProtocolError:
    return LocalProtocolError(message, field=_path(parts), code=code)


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    # ECMA-262's $ (no multiline flag) is the end of the text; Python's would also accept a
    # final newline before it.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _check(schema: dict[str, Any], value: object, parts: tuple[str, ...]) -> object:
    schema = _resolve(schema)
    where = _describe(parts)
    wanted = schema.get("type")
    if wanted == "integer" and isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema 2020-12 §6.1.1: 90.0 is the integer 90
    actual = _json_type(value)
    if wanted is not None and actual != wanted:
        article = _ARTICLES.get(wanted, f"a {wanted}")
        raise _problem(parts, "invalid_type", f"{where} must be {article}, not {actual}")
    error = schema.get("x-error", "is not allowed")
    if isinstance(value, str):
        _check_string(schema, value, parts, f"{where} {error}")
    elif isinstance(value, int) and not isinstance(value, bool):
        _check_number(schema, value, parts, f"{where} {error}")
    elif isinstance(value, dict):
        value = _check_object(schema, value, parts)
    if "enum" in schema and value not in schema["enum"]:
        raise _problem(parts, "invalid_value", f"{where} {error}, not {value!r}")
    alternatives = schema.get("anyOf")
    if alternatives is not None:
        for alternative in alternatives:
            try:
                _check(alternative, value, parts)
            except LocalProtocolError:
                continue
            break
        else:
            raise _problem(parts, "invalid_value", f"{where} {error}, not {value!r}")
    if "const" in schema and value != schema["const"]:
        raise _problem(parts, "invalid_value", f"{where} {error}")
    return value


def _check_string(schema: dict[str, Any], value: str, parts: tuple[str, ...], message: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape
        raise _problem(parts, "invalid_value", f"{_describe(parts)} must be valid Unicode text") from None
    if len(value) > schema.get("maxLength", len(value)) or len(value) < schema.get("minLength", 0):
        raise _problem(parts, "invalid_value", message)
    pattern = schema.get("pattern")
    if pattern is not None and not _compiled(pattern).search(value):
        raise _problem(parts, "invalid_value", message)


def _check_number(schema: dict[str, Any], value: int, parts: tuple[str, ...], message: str) -> None:
    if value < schema.get("minimum", value) or value > schema.get("maximum", value):
        raise _problem(parts, "invalid_value", f"{message}, not {value}")


def _check_object(schema: dict[str, Any], value: dict[str, Any], parts: tuple[str, ...]) -> dict[str, Any]:
    properties: dict[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    names = schema.get("propertyNames")
    limit = schema.get("maxProperties")
    if limit is not None and len(value) > limit:
        raise _problem(parts, "invalid_value", f"{_describe(parts)} has {len(value)} fields; at most {limit}")
    checked: dict[str, Any] = {}
    for key, item in value.items():
        if names is not None:
            _check(names, key, (*parts, key))
        if key in properties:
            checked[key] = _check(properties[key], item, (*parts, key))
        elif extra is False:
            allowed = ", ".join(properties) or "none"
            raise _problem(
                (*parts, key),
                "unknown_field",
                f"unknown field {key!r} in {_describe(parts)} (allowed: {allowed})",
            )
        elif isinstance(extra, dict):
            checked[key] = _check(extra, item, (*parts, key))
        else:
            checked[key] = item
    for key in schema.get("required", ()):
        if key not in value:
            raise _problem((*parts, key), "missing_field", f"{'.'.join((*parts, key))} is required")
    return checked
