"""The Telnyx-shaped API: call-control ``siprec_start`` / ``siprec_stop`` and their webhooks (seed 002).

- ``POST /v2/calls/{call_control_id}/actions/siprec_start``, JSON body: ``connector_name``,
  ``siprec_track`` (default ``both_tracks``), ``include_metadata_custom_headers``, ``secure``
  (SRTP + TLS toward the SRS), ``session_timeout_secs`` (``Session-Expires``; 0 disables it,
  otherwise at least 90; absent: the connector's value, 1800 unless configured),
  ``client_state`` (valid base64, echoed in every later webhook of the call), ``command_id``.
  Answers 200 ``{"data": {"result": "ok"}}`` once the recording is started on our side (the
  SRS answers asynchronously: ``siprec.started`` or ``siprec.failed`` follows).
- ``POST /v2/calls/{call_control_id}/actions/siprec_stop``: ``client_state``, ``command_id``.
  Stops every recording this API started on the call (Telnyx has one SIPREC session per call and
  the command names none): BYE to the SRS, and the answer waits until the forks are stopped,
  at most ``STOP_TIMEOUT``.

``command_id``: as Telnyx does, a command with the ``command_id`` of an earlier *successful*
command on the same call is not run again; it gets the same answer. A refused command (4xx)
is not remembered, so the corrected request may reuse its id.

Our extensions, marked as ours in ``docs/api-compat.md``: ``webhook_url`` (where this call's
SIPREC webhooks go; Telnyx sends them to the connection's webhook URL, and the sidecar has no
connection objects; without it no webhook is sent) and ``custom_headers`` (``[{"name", "value"}]``
as Telnyx's ``dial`` takes them: the custom parameters that ``include_metadata_custom_headers``
puts in the metadata rather than in ``X-`` headers).

Authentication: ``Authorization: Bearer <telnyx_api_key>`` (401, code 10009, otherwise). Without
a configured key every route answers 404. Errors have Telnyx's shape ``{"errors": [{"code",
"title", "detail", "source": {"pointer"}}]}``: 422 for an invalid parameter, 404 for an unknown
call, 422 ``90018`` for a call that has ended.

Webhooks are Telnyx's JSON envelope ``{"data": {"record_type": "event", "event_type", "id",
"occurred_at", "payload": {...}}}`` with ``siprec.started``, ``siprec.stopped`` (payload adds
``hangup_cause``) and ``siprec.failed`` (adds ``failure_cause``). ``call_leg_id`` and
``call_session_id`` are the call control id (one leg per call here), ``connection_id`` is
``null`` (no connections). They carry our ``X-Siprec-Signature`` (HMAC-SHA256 keyed by
``[callbacks] signing_secret``, as native callbacks), not Telnyx's Ed25519 signature: a
self-hosted sidecar cannot have Telnyx's key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hmac
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TypeVar
from weakref import WeakKeyDictionary

from aiohttp import web
from yarl import URL

from siprec_src.control.callbacks import Delivery
from siprec_src.control.sidecar import Sidecar
from siprec_src.errors import ConfigError, LocalProtocolError
from siprec_src.recording.connector import MIN_SESSION_EXPIRES
from siprec_src.recording.engine import Call, Recording
from siprec_src.recording.events import RecordingEvent, RecordingFailed, RecordingStarted, RecordingStopped

__all__ = ["MAX_COMMAND_IDS", "STOP_TIMEOUT", "TelnyxApi", "TelnyxApiError", "add_routes"]

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0  # seconds a stop may take before we answer anyway
MAX_COMMAND_IDS = 1000  # per call: the oldest remembered command_id is forgotten beyond this
OK = {"data": {"result": "ok"}}
_ACTIONS = "/v2/calls/{call_control_id}/actions"
_T = TypeVar("_T")

# LocalProtocolError.code -> (HTTP status, Telnyx code, title). Titles are Telnyx's for the code.
_ERRORS: dict[str, tuple[int, str, str]] = {
    "no_such_call": (404, "10005", "Resource not found"),
    "call_closed": (422, "90018", "Call has already ended"),
    "unknown_connector": (422, "10017", "Associated resource does not exist"),
    "missing_parameter": (422, "10004", "Missing required parameter"),
    "invalid_url": (422, "10003", "Invalid URL"),
    "invalid_json": (400, "10023", "Invalid JSON"),
}
_INVALID = (422, "10015", "Bad Request")
# Where each engine field is in the request body (JSON pointer of Telnyx's ``source``).
_POINTERS = {
    "connector": "/connector_name",
    "track": "/siprec_track",
    "params": "/custom_headers",
    "session_timeout": "/session_timeout_secs",
    "secure": "/secure",
}


class TelnyxApiError(Exception):
    """An answer in Telnyx's error shape."""

    def __init__(self, status: int, code: str, title: str, detail: str, pointer: str | None = None):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.pointer = pointer

    @classmethod
    def invalid(cls, detail: str, pointer: str | None, kind: str | None = None) -> TelnyxApiError:
        status, code, title = _ERRORS.get(kind or "", _INVALID)
        return cls(status, code, title, detail, pointer)

    @classmethod
    def from_local(cls, exc: LocalProtocolError) -> TelnyxApiError:
        pointer = _POINTERS.get(exc.field or "", f"/{exc.field}" if exc.field else None)
        if exc.code in ("no_such_call", "call_closed"):
            pointer = None  # the path, not the body
        return cls.invalid(str(exc), pointer, exc.code)

    def response(self) -> web.Response:
        error: dict[str, object] = {"code": self.code, "title": self.title, "detail": self.detail}
        if self.pointer is not None:
            error["source"] = {"pointer": self.pointer}
        return web.json_response({"errors": [error]}, status=self.status)


def add_routes(app: web.Application, sidecar: Sidecar) -> None:
    """Register the Telnyx-shaped routes on ``app`` (they answer 404 without a Telnyx API key)."""
    api = TelnyxApi(sidecar)
    app.router.add_post(f"{_ACTIONS}/siprec_start", api.siprec_start)
    app.router.add_post(f"{_ACTIONS}/siprec_stop", api.siprec_stop)


Command = Callable[[Call, Mapping[str, object]], Awaitable[None]]


class _CallState:
    """What the Telnyx shape remembers of one call (dropped with the call)."""

    def __init__(self) -> None:
        self.client_state: str | None = None
        self.recordings: list[Recording] = []  # started by siprec_start, oldest first
        self.commands: OrderedDict[str, asyncio.Future[None]] = OrderedDict()


class TelnyxApi:
    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self._calls: WeakKeyDictionary[Call, _CallState] = WeakKeyDictionary()

    async def siprec_start(self, request: web.Request) -> web.Response:
        return await self._serve(request, self._start)

    async def siprec_stop(self, request: web.Request) -> web.Response:
        return await self._serve(request, self._stop)

    async def _serve(self, request: web.Request, command: Command) -> web.Response:
        try:
            self._authenticate(request)
            call = self.sidecar.call(request.match_info["call_control_id"])
            body = await _json_body(request)
            await self._once(call, body, command)
            return web.json_response(OK)
        except TelnyxApiError as exc:
            return exc.response()
        except LocalProtocolError as exc:
            return TelnyxApiError.from_local(exc).response()

    def _authenticate(self, request: web.Request) -> None:
        key = self.sidecar.settings.credentials.telnyx_api_key
        if not key:
            raise TelnyxApiError(
                404, "10005", "Resource not found", "The requested resource or URL could not be found."
            )
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise TelnyxApiError(
                401,
                "10009",
                "Authentication failed",
                "The required authentication headers were either invalid or not included in the request.",
            )

    async def _once(self, call: Call, body: Mapping[str, object], command: Command) -> None:
        """Run ``command`` unless this call already ran one with the same ``command_id``."""
        command_id = _optional(body, "command_id", str)
        if command_id is None:
            await command(call, body)
            return
        state = self._state(call)
        earlier = state.commands.get(command_id)
        if earlier is not None:
            await asyncio.shield(earlier)  # still running: the same outcome as the first one
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.commands[command_id] = future
        while len(state.commands) > MAX_COMMAND_IDS:
            state.commands.popitem(last=False)
        try:
            await command(call, body)
        except BaseException as exc:
            # Refused or failed: not remembered (a corrected retry may reuse the id); whoever
            # waits on it meanwhile gets the same refusal.
            state.commands.pop(command_id, None)
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved, even when nobody waited
            raise
        future.set_result(None)

    def _state(self, call: Call) -> _CallState:
        state = self._calls.get(call)
        if state is None:
            state = self._calls[call] = _CallState()
        return state

    # --- the commands ------------------------------------------------------------------------------

    async def _start(self, call: Call, body: Mapping[str, object]) -> None:
        connector = _optional(body, "connector_name", str)
        if connector is None:
            raise TelnyxApiError.invalid("connector_name is required", "/connector_name", "missing_parameter")
        track = _optional(body, "siprec_track", str) or "both_tracks"
        in_metadata = _optional(body, "include_metadata_custom_headers", bool) or False
        secure = _optional(body, "secure", bool)
        timeout = _session_timeout(body)
        client_state = _client_state(body)
        webhook_url = _webhook_url(body)
        custom = _custom_headers(body)
        try:
            recording = await self.sidecar.record(
                call,
                connector=connector,
                track=track,
                params=custom,
                params_in_metadata=in_metadata,
                session_timeout=timeout,
                secure=secure,
            )
        except ConfigError as exc:  # ``secure`` asks for TLS the connector's URIs cannot do
            raise TelnyxApiError.invalid(str(exc), "/secure") from None
        state = self._state(call)
        if client_state is not None:
            state.client_state = client_state
        state.recordings.append(recording)
        if webhook_url is not None:
            self.sidecar.watch(recording, functools.partial(self._notify, webhook_url, state))

    async def _stop(self, call: Call, body: Mapping[str, object]) -> None:
        client_state = _client_state(body)
        state = self._state(call)
        live = [r for r in state.recordings if not r.session.state.terminal]
        if not live:
            raise TelnyxApiError.invalid(f"no SIPREC session is running on call {call.call_id}", None)
        if client_state is not None:
            state.client_state = client_state  # the siprec.stopped webhook carries the new state
        await asyncio.gather(*(_stop(r) for r in live))
        state.recordings = [r for r in state.recordings if not r.session.state.terminal]

    # --- webhooks ----------------------------------------------------------------------------------

    def _notify(
        self, webhook_url: str, state: _CallState, recording: Recording, event: RecordingEvent
    ) -> Delivery | None:
        call_control_id = recording.call.call_id
        payload: dict[str, object] = {
            "call_control_id": call_control_id,
            "call_leg_id": call_control_id,
            "call_session_id": call_control_id,
            "client_state": state.client_state,
            "connection_id": None,
        }
        if isinstance(event, RecordingStarted):
            event_type = "siprec.started"
        elif isinstance(event, RecordingStopped):
            event_type = "siprec.stopped"
            payload["hangup_cause"] = "normal_clearing"
        elif isinstance(event, RecordingFailed):
            event_type = "siprec.failed"
            payload["failure_cause"] = event.reason
        else:
            return None
        envelope = {
            "data": {
                "record_type": "event",
                "event_type": event_type,
                "id": str(uuid.uuid4()),
                "occurred_at": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
                "payload": payload,
            }
        }
        return Delivery(url=webhook_url, method="POST", json=envelope, event=event_type)


# --- request body ------------------------------------------------------------------------------------


async def _json_body(request: web.Request) -> Mapping[str, object]:
    raw = await request.read()
    if not raw.strip():
        return {}  # every field is optional
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TelnyxApiError.invalid(f"the body is not valid JSON: {exc}", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise TelnyxApiError.invalid("the body must be a JSON object", None, "invalid_json")
    return body


def _optional(body: Mapping[str, object], key: str, kind: type[_T]) -> _T | None:
    """``body[key]`` if present and not null; 422 naming the field when it has another JSON type."""
    value = body.get(key)
    if value is None:
        return None
    # bool is an int in Python; JSON true is not a number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = {str: "a string", bool: "a boolean", int: "an integer", list: "an array"}
        raise TelnyxApiError.invalid(f"{key} must be {names.get(kind, kind.__name__)}", f"/{key}")
    return value


def _session_timeout(body: Mapping[str, object]) -> int | None:
    seconds = _optional(body, "session_timeout_secs", int)
    if seconds is not None and seconds != 0 and seconds < MIN_SESSION_EXPIRES:
        # Seed 002 and RFC 4028 §4: the minimum is 90 s; 0 turns the session timer off.
        raise TelnyxApiError.invalid(
            f"session_timeout_secs must be 0 (off) or at least {MIN_SESSION_EXPIRES}, not {seconds}",
            "/session_timeout_secs",
        )
    return seconds


def _client_state(body: Mapping[str, object]) -> str | None:
    state = _optional(body, "client_state", str)
    if state is None:
        return None
    try:
        base64.b64decode(state, validate=True)
    except (binascii.Error, ValueError):
        raise TelnyxApiError.invalid(
            "client_state must be a valid Base-64 encoded string", "/client_state"
        ) from None
    return state


def _webhook_url(body: Mapping[str, object]) -> str | None:
    value = _optional(body, "webhook_url", str)
    if value is None:
        return None
    try:
        url: URL | None = URL(value)
    except (ValueError, TypeError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host or len(value) > 2000:
        raise TelnyxApiError.invalid(
            f"webhook_url {value!r} is not an absolute http(s) URL of at most 2000 characters",
            "/webhook_url",
            "invalid_url",
        )
    return value


def _custom_headers(body: Mapping[str, object]) -> dict[str, str]:
    entries = _optional(body, "custom_headers", list) or []
    headers: dict[str, str] = {}
    for index, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        value = entry.get("value", "") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not isinstance(value, str):
            raise TelnyxApiError.invalid(
                'each custom header is {"name": string, "value": string}', f"/custom_headers/{index}"
            )
        headers[name] = value
    return headers


async def _stop(recording: Recording) -> None:
    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            await recording.stop()
    except TimeoutError:
        log.warning("recording %s: stop not confirmed within %.0f s", recording.sid, STOP_TIMEOUT)
