"""The native ``/v1`` JSON API: calls, their recordings and WebSocket streams, participants,
status callbacks.

Every handler runs behind Bearer authentication (RFC 6750 §2.1) against the configured
tokens, compared in constant time; with no token configured the API is not enabled and
answers 404. Request bodies are checked against the OpenAPI document's schemas
(``openapi.check_body``), so an unknown field, a wrong type or a missing field is a 400 that
names the field. Errors always have one shape::

    {"error": {"status": 409, "code": "stream_limit", "message": "...", "field": "track"}}

``LocalProtocolError.code`` decides the status: ``no_such_*`` 404; duplicates, the stream
limit, a wrong state 409; the call limit, no free media port, shutting down 503; anything
else is the caller's mistake, 400.

A recording answers 201 at once with status ``starting``: the SRS's answer (and any failover)
is reported by status callbacks and by ``GET``, never waited for in the request. A WebSocket
stream (``/v1/calls/{call_id}/streams``, Twilio or Plivo wire format) does the same: 201 in
``starting``, then ``stream.started`` or ``stream.dropped``. Streams started through the other
shapes (TwiML, the Twilio Streams resource, Plivo XML) are listed and stopped here too; their
callbacks keep the shape that started them.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import time
import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web
from yarl import URL

from siprec_src.control.callbacks import Delivery, hmac_sha256_signature, request_url
from siprec_src.control.openapi import check_body
from siprec_src.control.sidecar import Notifier, Sidecar, StreamNotifier
from siprec_src.errors import ConfigError, LocalProtocolError
from siprec_src.recording.call import Party, Track, tap_srtp_keys
from siprec_src.recording.engine import Call, Recording, RecordingError
from siprec_src.recording.events import (
    AttemptFailed,
    AttemptStarted,
    RecordingEvent,
    RecordingFailed,
    RecordingPaused,
    RecordingResumed,
    RecordingStarted,
    RecordingStopped,
    SessionLost,
    SessionRecovered,
    StreamDropped,
    StreamEvent,
    StreamPlayed,
    StreamStarted,
    StreamStopped,
)
from siprec_src.recording.stream import Stream
from siprec_src.streams.options import (
    DEFAULT_STREAM_TIMEOUT,
    PlivoAudioTrack,
    PlivoContentType,
    PlivoStreamOptions,
    StreamOptions,
    TwilioStreamOptions,
    TwilioTrack,
    parse_extra_headers,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The two legs, named as the API names them. (``Leg`` lives in ``media``, which ``control``
# may not import; a track's legs are the same objects.)
LEGS = {"inbound": Track.INBOUND.legs[0], "outbound": Track.OUTBOUND.legs[0]}

_CONFLICT_CODES = frozenset({"stream_limit", "invalid_state", "call_closed", "bidirectional_in_use"})
# "No capacity now", not a bad request: 503 so clients retry later or elsewhere.
_UNAVAILABLE_CODES = frozenset({"call_limit", "shutting_down", "ports_exhausted", "media_unavailable"})
_STATUS_BY_CODE = {"unsupported_media_type": 415}


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The one error shape of the native API (and of the sidecar's own endpoints)."""
    body = {"error": {"status": status, "code": code, "message": message, "field": field}}
    return web.json_response(body, status=status, headers=headers)


def status_of(error: LocalProtocolError) -> int:
    """The HTTP status of a refused request, from the error's code."""
    code = error.code or ""
    if code.startswith("no_such_"):
        return 404
    if code.startswith("duplicate_") or code in _CONFLICT_CODES:
        return 409
    if code in _UNAVAILABLE_CODES:
        return 503
    return _STATUS_BY_CODE.get(code, 400)


def code_of(error: LocalProtocolError) -> str:
    return error.code or "invalid_request"


def add_routes(app: web.Application, sidecar: Sidecar) -> None:
    """Mount ``/v1`` on ``app``."""
    api = NativeApi(sidecar)
    routes: list[tuple[str, str, Handler]] = [
        ("POST", "/v1/calls", api.create_call),
        ("GET", "/v1/calls", api.list_calls),
        ("GET", "/v1/calls/{call_id}", api.get_call),
        ("DELETE", "/v1/calls/{call_id}", api.delete_call),
        ("PUT", "/v1/calls/{call_id}/participants", api.update_participants),
        ("POST", "/v1/calls/{call_id}/recordings", api.create_recording),
        ("GET", "/v1/calls/{call_id}/recordings", api.list_recordings),
        ("GET", "/v1/calls/{call_id}/recordings/{recording}", api.get_recording),
        ("POST", "/v1/calls/{call_id}/recordings/{recording}", api.update_recording),
        ("POST", "/v1/calls/{call_id}/streams", api.create_stream),
        ("GET", "/v1/calls/{call_id}/streams", api.list_streams),
        # Any segment names a stream (an unknown one is 404 no_such_stream); the body of an
        # update is checked before the lookup, as the document says it is.
        ("GET", "/v1/calls/{call_id}/streams/{stream:[^/]+}", api.get_stream),
        ("POST", "/v1/calls/{call_id}/streams/{stream:[^/]+}", api.update_stream),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, api.guarded(handler))


class NativeApi:
    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self._sources: weakref.WeakKeyDictionary[Call, dict[str, str]] = weakref.WeakKeyDictionary()
        self._suites: weakref.WeakKeyDictionary[Call, dict[str, str]] = weakref.WeakKeyDictionary()

    # --- authentication and errors ---------------------------------------------------------

    def guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            denied = self._authenticate(request)
            if denied is not None:
                return denied
            try:
                return await handler(request)
            except LocalProtocolError as exc:
                return error_response(status_of(exc), code_of(exc), str(exc), exc.field)
            except RecordingError as exc:
                # The SRS side failed (only when a handler waits for it): a bad gateway.
                return error_response(502, "srs_failed", f"{exc} (SIP {exc.status})")

        guarded.__name__ = handler.__name__
        return guarded

    def _authenticate(self, request: web.Request) -> web.Response | None:
        tokens = self.sidecar.settings.credentials.tokens
        if not tokens:
            return error_response(
                404, "not_enabled", "the native /v1 API is not enabled (no tokens configured)"
            )
        scheme, _, credential = request.headers.get("Authorization", "").strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return error_response(
                401,
                "unauthorized",
                "an Authorization: Bearer <token> header is required",
                headers={"WWW-Authenticate": 'Bearer realm="siprec-src"'},
            )
        given = credential.encode("utf-8", "surrogateescape")
        matched = False
        for token in tokens:  # every token compared, in constant time each (no early exit)
            matched |= hmac.compare_digest(given, token.encode("utf-8"))
        if not matched:
            return error_response(
                401,
                "unauthorized",
                "the Bearer token is not valid",
                headers={"WWW-Authenticate": 'Bearer realm="siprec-src", error="invalid_token"'},
            )
        return None

    async def json_body(self, request: web.Request, schema: str) -> dict[str, Any]:
        declared = request.headers.get("Content-Type")
        if declared is not None:
            media_type = declared.split(";", 1)[0].strip().lower()
            if media_type != "application/json" and not media_type.endswith("+json"):
                raise LocalProtocolError(
                    f"the body must be application/json, not {media_type or 'empty'}",
                    code="unsupported_media_type",
                )
        raw = await request.read()  # over max_body_bytes: HTTPRequestEntityTooLarge (413)
        try:
            value = json.loads(
                raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
            )
        except UnicodeDecodeError as exc:
            raise LocalProtocolError(
                f"the body is not UTF-8 (byte {exc.start})", code="invalid_json"
            ) from None
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise LocalProtocolError(f"the body is not JSON: {exc}", code="invalid_json") from None
        return check_body(schema, value)

    # --- calls --------------------------------------------------------------------------

    async def create_call(self, request: web.Request) -> web.StreamResponse:
        body = await self.json_body(request, "CallCreate")
        options: dict[str, Any] = {}
        if "codec" in body:
            codec = self.sidecar.codecs.get(body["codec"])
            if codec is None:
                offered = ", ".join(self.sidecar.codecs) or "only the default"
                raise LocalProtocolError(
                    f"codec {body['codec']} is not offered here ({offered})",
                    field="codec",
                    code="invalid_value",
                )
            options["codec"] = codec
        if "telephone_event" in body:
            codec = options.get("codec") or self.sidecar.codecs.get("PCMU")
            if codec is None:
                raise LocalProtocolError(
                    "telephone_event needs a codec this sidecar offers", field="telephone_event"
                )
            options["codec"] = codec.with_telephone_event(body["telephone_event"])
        sources: dict[str, str] = {}
        suites: dict[str, str] = {}
        for name, leg in LEGS.items():
            given = body.get("legs", {}).get(name, {})
            text = given.get("source")
            if text is not None:
                address = _address(text, f"legs.{name}.source")
                options.setdefault("sources", {})[leg] = address
                sources[name] = _format_address(address)
            if "srtp" in given:
                keys = tap_srtp_keys(
                    given["srtp"]["suite"], given["srtp"]["key"], field=f"legs.{name}.srtp.key"
                )
                options.setdefault("srtp", {})[leg] = keys
                suites[name] = keys.suite
        if "sip_session_id" in body:
            options["sip_session_id"] = body["sip_session_id"].lower()
        if "playback" in body:
            options["playback"] = _address(body["playback"], "playback")
        call = await self.sidecar.open_call(
            caller=_party(body["from"], "from"),
            callee=_party(body["to"], "to"),
            call_id=body.get("call_id"),
            **options,
        )
        self._sources[call] = sources
        self._suites[call] = suites
        location = f"/v1/calls/{quote(call.call_id)}"
        return web.json_response(await self._call(call), status=201, headers={"Location": location})

    async def list_calls(self, request: web.Request) -> web.StreamResponse:
        calls = [await self._call(call) for call in list(self.sidecar.engine.calls.values())]
        return web.json_response({"calls": calls})

    async def get_call(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(await self._call(self._find_call(request)))

    async def delete_call(self, request: web.Request) -> web.StreamResponse:
        call = self._find_call(request)
        await call.close()  # BYE to every SRS first, then the legs
        return web.Response(status=204)

    async def update_participants(self, request: web.Request) -> web.StreamResponse:
        call = self._find_call(request)
        body = await self.json_body(request, "ParticipantsUpdate")
        await call.update_participants(_party(body["from"], "from"), _party(body["to"], "to"))
        return web.json_response(await self._call(call))

    # --- recordings ------------------------------------------------------------------------

    async def create_recording(self, request: web.Request) -> web.StreamResponse:
        call = self._find_call(request)
        body = await self.json_body(request, "RecordingCreate")
        callback = body.get("status_callback")
        if callback is not None:
            _check_callback_url(callback)
        try:
            recording = await self.sidecar.record(
                call,
                connector=body["connector"],
                track=body.get("track", Track.BOTH.value),
                name=body.get("name"),
                params=body.get("params"),
                params_in_metadata=body.get("params_in_metadata", False),
                session_timeout=body.get("session_timeout"),
                secure=body.get("secure"),
            )
        except ConfigError as exc:  # the connector's SRS URIs cannot be made secure (or plain)
            raise LocalProtocolError(str(exc), field="secure", code="invalid_value") from None
        if callback is not None:
            self.sidecar.watch(
                recording, self._notifier(callback, body.get("status_callback_method", "POST"))
            )
        else:
            self.sidecar.recording_times(recording)  # created now
        location = f"/v1/calls/{quote(call.call_id)}/recordings/{recording.sid}"
        return web.json_response(await self._recording(recording), status=201, headers={"Location": location})

    async def list_recordings(self, request: web.Request) -> web.StreamResponse:
        call = self._find_call(request)
        recordings = [await self._recording(r) for r in list(call.recordings.values())]
        return web.json_response({"recordings": recordings})

    async def get_recording(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(await self._recording(self._find_recording(request)))

    async def update_recording(self, request: web.Request) -> web.StreamResponse:
        recording = self._find_recording(request)
        body = await self.json_body(request, "RecordingUpdate")
        status = body["status"]
        if status == "stopped":
            await recording.stop("stopped by the API")
        elif status == "paused":
            await recording.pause()
        else:
            await recording.resume()
        return web.json_response(await self._recording(recording))

    # --- WebSocket streams -----------------------------------------------------------------------

    async def create_stream(self, request: web.Request) -> web.StreamResponse:
        call = self._find_call(request)
        body = await self.json_body(request, "WebSocketStreamCreate")
        options = stream_options(body)
        callback = body.get("status_callback")
        notifier = None
        if callback is not None:
            _check_callback_url(callback)
            notifier = self._stream_notifier(callback, body.get("status_callback_method", "POST"))
        stream = await self.sidecar.start_stream(call, options, notifier=notifier)
        location = f"/v1/calls/{quote(call.call_id)}/streams/{stream.sid}"
        resource = stream_resource(self.sidecar, stream)
        return web.json_response(resource, status=201, headers={"Location": location})

    async def list_streams(self, request: web.Request) -> web.StreamResponse:
        call = self._find_call(request)
        streams = [stream_resource(self.sidecar, s) for s in list(call.streams.values())]
        return web.json_response({"streams": streams})

    async def get_stream(self, request: web.Request) -> web.StreamResponse:
        call = self._find_call(request)
        stream = call.get_stream(request.match_info["stream"])
        return web.json_response(stream_resource(self.sidecar, stream))

    async def update_stream(self, request: web.Request) -> web.StreamResponse:
        call = self._find_call(request)
        await self.json_body(request, "WebSocketStreamUpdate")  # "stopped" is the only change
        stream = call.get_stream(request.match_info["stream"])
        if not stream.status.terminal:
            await self.sidecar.stop_stream(stream)
        return web.json_response(stream_resource(self.sidecar, stream))

    # --- lookups and resources ------------------------------------------------------------------

    def _find_call(self, request: web.Request) -> Call:
        return self.sidecar.call(request.match_info["call_id"])

    def _find_recording(self, request: web.Request) -> Recording:
        call = self._find_call(request)
        return self.sidecar.find_recording(call, request.match_info["recording"])

    async def _call(self, call: Call) -> dict[str, Any]:
        engine = self.sidecar.engine
        sources = self._sources.get(call, {})
        suites = self._suites.get(call, {})
        legs: dict[str, Any] = {}
        for name, leg in LEGS.items():
            tap = call.taps.get(leg)
            host = engine.config.media_advertised or (tap[0] if tap else None)
            packets = octets = rejected = 0
            try:
                stats = await engine.media.leg_stats(call.call_id, leg)
            except LocalProtocolError:
                pass  # closed meanwhile
            else:
                packets, octets = stats.packets, stats.octets
                rejected = stats.rejected_source + stats.malformed + stats.srtp_failures
            legs[name] = {
                "rtp": _format_address((host, tap[1])) if tap and host else None,
                "source": sources.get(name),
                # the suite only: keys are never echoed (nor logged)
                "srtp": None if name not in suites else {"suite": suites[name]},
                "packets": packets,
                "bytes": octets,
                "rejected": rejected,
            }
        return {
            "call_id": call.call_id,
            "from": _party_resource(call.caller),
            "to": _party_resource(call.callee),
            "codec": call.codec.encoding,
            "sip_session_id": call.sip_session_id,
            "legs": legs,
            "playback": _format_address(call.playback) if isinstance(call.playback, tuple) else None,
            "recordings": [await self._recording(r) for r in list(call.recordings.values())],
            "streams": [stream_resource(self.sidecar, s) for s in list(call.streams.values())],
            "created_at": _timestamp(self.sidecar.created_at(call)),
        }

    async def _recording(self, recording: Recording) -> dict[str, Any]:
        stats = await self.sidecar.engine.fork_stats(recording)
        streams = []
        for label, leg, ssrc in recording.streams:
            stat = stats.get(label)
            remote = recording.remotes.get(label)
            streams.append(
                {
                    "label": label,
                    "leg": str(leg),
                    "ssrc": ssrc,
                    "remote": _format_address(remote) if remote else None,
                    "packets": stat.packets_sent if stat else 0,
                    "bytes": stat.octets_sent if stat else 0,
                    "dropped_paused": stat.dropped_paused if stat else 0,
                    "dropped_payload_type": stat.dropped_payload_type if stat else 0,
                    "send_errors": stat.send_errors if stat else 0,
                }
            )
        created, started, updated = self.sidecar.recording_times(recording)
        error = next((e for e in reversed(recording.events) if isinstance(e, RecordingFailed)), None)
        return {
            "sid": recording.sid,
            "call_id": recording.call.call_id,
            "name": recording.name,
            "connector": recording.connector.name,
            "track": str(recording.track),
            "status": recording.status,
            "srs": recording.srs,
            "streams": streams,
            "attempts": _attempts(recording),
            "recovering": recording.session.recovering,
            "interruptions": _interruptions(recording),
            "created_at": _timestamp(created),
            "started_at": _timestamp(started) if started else None,
            "updated_at": _timestamp(updated),
            "error": None if error is None else {"sip_status": error.status, "reason": error.reason},
        }

    # --- status callbacks -----------------------------------------------------------------------

    def _notifier(self, url: str, method: str) -> Notifier:
        def notify(recording: Recording, event: RecordingEvent) -> Delivery | None:
            body = callback_body(recording, event, self.sidecar.clock())
            return None if body is None else self._delivery(url, method, body)

        return notify

    def _stream_notifier(self, url: str, method: str) -> StreamNotifier:
        def notify(stream: Stream, event: StreamEvent) -> Delivery | None:
            body = stream_callback_body(stream, event, self.sidecar.clock())
            return None if body is None else self._delivery(url, method, body)

        return notify

    def _delivery(self, url: str, method: str, body: dict[str, Any]) -> Delivery:
        if method == "POST":
            # The callback queue signs JSON bodies itself (X-Siprec-Signature over t.body).
            return Delivery(url, json=body, event=str(body["event"]))
        form = tuple((key, _form_value(value)) for key, value in body.items() if value is not None)
        delivery = Delivery(url, method="GET", form=form, event=str(body["event"]))
        secret = self.sidecar.settings.callbacks.signing_secret
        if secret is None:
            return delivery
        # No body to sign: the signature covers the URL exactly as requested (query included).
        signature = hmac_sha256_signature(secret, int(time.time()), request_url(delivery))
        return Delivery(
            url,
            method="GET",
            form=form,
            event=delivery.event,
            headers=(("X-Siprec-Signature", signature),),
        )


def callback_body(recording: Recording, event: RecordingEvent, now: datetime) -> dict[str, Any] | None:
    """The native callback for ``event``, or ``None`` for events that have none."""
    body: dict[str, Any] = {
        "event": "",
        "sid": recording.sid,
        "call_id": recording.call.call_id,
        "name": recording.name,
        "status": "",
        "srs": recording.srs,
    }
    if isinstance(event, AttemptFailed):
        body.update(
            event="recording.attempt-failed",
            status="starting",
            srs=event.srs,
            attempt=event.attempt,
            sip_status=event.status,
            reason=event.reason,
        )
        if event.retry_after is not None:
            body["retry_after"] = event.retry_after
    elif isinstance(event, RecordingStarted):
        body.update(
            event="recording.started",
            status="in-progress",
            srs=event.srs,
            sip_status=recording.session.final_status or 200,
        )
    elif isinstance(event, SessionLost):
        # The media toward the lost SRS stopped; a new session is being set up (same metadata ids).
        body.update(
            event="recording.interrupted",
            status="in-progress",
            srs=event.srs,
            sip_status=event.status,
            reason=event.reason,
        )
    elif isinstance(event, SessionRecovered):
        body.update(
            event="recording.recovered",
            status="in-progress",
            srs=event.srs,
            interrupted_for=round(event.interrupted_for, 3),
        )
    elif isinstance(event, RecordingPaused):
        body.update(event="recording.paused", status="paused", by=event.by)
    elif isinstance(event, RecordingResumed):
        body.update(event="recording.resumed", status="in-progress", by=event.by)
    elif isinstance(event, RecordingStopped):
        body.update(event="recording.stopped", status="stopped", by=event.by, reason=event.reason)
    elif isinstance(event, RecordingFailed):
        body.update(event="recording.failed", status="failed", sip_status=event.status, reason=event.reason)
    else:
        return None
    body["timestamp"] = _timestamp(now)
    return body


def stream_callback_body(stream: Stream, event: StreamEvent, now: datetime) -> dict[str, Any] | None:
    """The native callback for a stream event, or ``None`` for events that have none."""
    body: dict[str, Any] = {
        "event": "",
        "sid": stream.sid,
        "call_id": stream.call_id,
        "name": stream.name,
        "status": str(stream.status),
        "format": stream.kind,
        "url": stream.url,
    }
    if isinstance(event, StreamStarted):
        body.update(event="stream.started", status="in-progress")
    elif isinstance(event, StreamStopped):
        body.update(
            event="stream.stopped", status="stopped", reason=event.reason, frames_dropped=event.frames_dropped
        )
    elif isinstance(event, StreamDropped):
        body.update(
            event="stream.dropped", status="failed", error=event.error, frames_dropped=event.frames_dropped
        )
    elif isinstance(event, StreamPlayed):
        body.update(event="stream.played", mark=event.name)
    else:
        return None  # StreamFramesDropped: counted in the resource's stats, not a callback
    body["timestamp"] = _timestamp(now)
    return body


def stream_resource(sidecar: Sidecar, stream: Stream) -> dict[str, Any]:
    """A stream as the native API shows it, whichever shape started it."""
    created, started, updated = sidecar.stream_times(stream)
    stats = stream.stats
    options = stream.options
    if isinstance(options, TwilioStreamOptions):
        track = options.track.value
    else:
        track = _TRACK_OF_PLIVO[options.audio_track]
    return {
        "sid": stream.sid,
        "call_id": stream.call_id,
        "name": stream.name,
        "url": stream.url,
        "format": stream.kind,
        "track": track,
        "bidirectional": stream.bidirectional,
        "content_type": _content_type(options),
        "status": str(stream.status),
        "stats": {
            "packets_received": stats.packets_received,
            "packets_late": stats.packets_late,
            "frames": stats.frames,
            "frames_sent": stats.frames_sent,
            "frames_dropped": stats.frames_dropped,
            "queued": stats.queued,
            "messages_sent": stats.messages_sent,
            "bytes_sent": stats.bytes_sent,
            "frames_played": stats.frames_played,
        },
        "error": stream.error,
        "created_at": _timestamp(created),
        "started_at": _timestamp(started) if started else None,
        "updated_at": _timestamp(updated),
    }


_TRACK_OF_PLIVO = {
    PlivoAudioTrack.INBOUND: "inbound_track",
    PlivoAudioTrack.OUTBOUND: "outbound_track",
    PlivoAudioTrack.BOTH: "both_tracks",
}
_PLIVO_TRACK = {track: plivo for plivo, track in _TRACK_OF_PLIVO.items()}
_TWILIO_ONLY = ("name", "parameters")
_PLIVO_ONLY = ("content_type", "extra_headers", "stream_timeout")
# The options' fields (as TwiML / Plivo XML spell them) -> the native body's.
_NATIVE_FIELDS = {
    "audioTrack": "track",
    "streamTimeout": "stream_timeout",
    "statusCallback": "status_callback",
    "statusCallbackUrl": "status_callback",
    "statusCallbackMethod": "status_callback_method",
    "contentType": "content_type",
    "extraHeaders": "extra_headers",
    "Parameter": "parameters",
    "Parameter.name": "parameters",
}


def _content_type(options: StreamOptions) -> str:
    if isinstance(options, PlivoStreamOptions):
        return options.content_type.value
    return "audio/x-mulaw;rate=8000"  # Twilio Media Streams: always µ-law at 8 kHz


def stream_options(body: dict[str, Any]) -> StreamOptions:
    """The stream a checked ``WebSocketStreamCreate`` body asks for; errors name its fields."""
    kind = body.get("format", "twilio")
    track = body.get("track", "inbound_track")
    wrong = _PLIVO_ONLY if kind == "twilio" else _TWILIO_ONLY
    for key in wrong:
        if key in body:
            other = "plivo" if kind == "twilio" else "twilio"
            raise LocalProtocolError(
                f"{key} is for format {other} streams, not {kind}", field=key, code="invalid_value"
            )
    try:
        if kind == "twilio":
            return TwilioStreamOptions(
                url=body["url"],
                name=body.get("name"),
                track=TwilioTrack(track),
                parameters=tuple(body.get("parameters", {}).items()),
                bidirectional=body.get("bidirectional", False),
            )
        return PlivoStreamOptions(
            url=body["url"],
            bidirectional=body.get("bidirectional", False),
            audio_track=_PLIVO_TRACK[track],
            stream_timeout=body.get("stream_timeout", DEFAULT_STREAM_TIMEOUT),
            content_type=PlivoContentType(body.get("content_type", PlivoContentType.L16_8K.value)),
            extra_headers=parse_extra_headers(body.get("extra_headers", "")),
        )
    except LocalProtocolError as exc:
        field = _NATIVE_FIELDS.get(exc.field or "", exc.field)
        message = str(exc)
        if exc.field and field:
            message = message.replace(exc.field, field, 1)  # "audioTrack both ..." -> "track both ..."
        raise LocalProtocolError(message, field=field, code=exc.code) from None


# --- helpers ------------------------------------------------------------------------------------


def _attempts(recording: Recording) -> list[dict[str, Any]]:
    attempts: dict[int, dict[str, Any]] = {}
    last = 0
    for event in recording.events:
        if isinstance(event, AttemptStarted | AttemptFailed):
            last = event.attempt
            entry = attempts.setdefault(
                event.attempt,
                {"attempt": event.attempt, "srs": event.srs, "sip_status": None, "reason": None},
            )
            if isinstance(event, AttemptFailed):
                entry.update(sip_status=event.status, reason=event.reason)
        elif isinstance(event, RecordingStarted | SessionRecovered) and last in attempts:
            attempts[last].update(sip_status=recording.session.final_status or 200, reason="OK")
    return [attempts[n] for n in sorted(attempts)]


def _interruptions(recording: Recording) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for event in recording.events:
        if isinstance(event, SessionLost):
            found.append(
                {
                    "srs": event.srs,
                    "sip_status": event.status,
                    "reason": event.reason,
                    "recovered_on": None,
                    "interrupted_for": None,
                }
            )
        elif isinstance(event, SessionRecovered) and found:
            found[-1].update(recovered_on=event.srs, interrupted_for=round(event.interrupted_for, 3))
    return found


def _party(body: dict[str, Any], field: str) -> Party:
    try:
        return Party(body["aor"], body.get("name"))
    except LocalProtocolError as exc:
        raise LocalProtocolError(str(exc), field=f"{field}.aor", code="invalid_party") from None


def _party_resource(party: Party) -> dict[str, Any]:
    return {"aor": party.aor, "name": party.name}


def _address(text: str, field: str) -> tuple[str, int]:
    host, _, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise LocalProtocolError(
            f"{field}: {host!r} is not an IP address", field=field, code="invalid_value"
        ) from None
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise LocalProtocolError(f"{field}: port {port} is not in 1-65535", field=field, code="invalid_value")
    return str(address), port


def _format_address(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_callback_url(text: str) -> None:
    try:
        url = URL(text)
        port = url.port
    except (ValueError, TypeError) as exc:
        raise LocalProtocolError(
            f"status_callback is not a URL: {exc}", field="status_callback", code="invalid_value"
        ) from None
    if url.scheme not in ("http", "https") or not url.host or port is None:
        raise LocalProtocolError(
            "status_callback must be an http:// or https:// URL with a host",
            field="status_callback",
            code="invalid_value",
        )


def _timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds: 2026-01-31T12:00:00.000Z."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _form_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"field {key!r} appears twice")
        result[key] = value
    return result


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON (RFC 8259 §6)")
