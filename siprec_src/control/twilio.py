"""The Twilio-shaped API: the Siprec and Streams resources, TwiML ``<Start>``/``<Stop>``/``<Connect>``
with ``<Siprec>`` and ``<Stream>``, status callbacks.

What a Twilio user already has keeps working when pointed at the sidecar (seeds 000, 001):

- ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}/Siprec.json`` (form: ``Name``,
  ``ConnectorName``, ``Track``, ``StatusCallback``, ``StatusCallbackMethod``,
  ``Parameter<N>.Name``/``Parameter<N>.Value`` for N = 1…99) starts a recording and answers
  201 with the Siprec resource. As on Twilio the start is asynchronous: the resource says
  ``in-progress`` at once, and a failure to reach the SRS arrives as a ``siprec-error`` callback.
- ``POST …/Calls/{CallSid}/Siprec/{Sid or Name}.json`` with ``Status=stopped`` stops it (BYE
  to the SRS, forks stopped; we wait for that, at most ``STOP_TIMEOUT``) and answers 200 with
  the resource, ``status`` ``stopped``. Stopping a stopped recording answers the same.
- ``POST …/Calls/{CallSid}/Streams.json`` (form: ``Url``, ``Name``, ``Track``,
  ``StatusCallback``, ``StatusCallbackMethod``, ``Parameter<N>.Name``/``Value``) starts a
  one-way WebSocket stream in the Twilio Media Streams format (201, the Stream resource,
  ``in-progress`` at once; a service that cannot be reached is a ``stream-error`` callback), and
  ``POST …/Streams/{Sid or Name}.json`` with ``Status=stopped`` stops it (200, ``stopped``).
- ``POST …/Calls/{CallSid}.json`` with ``Twiml=<Response>…</Response>`` (Twilio's "update a
  call") runs ``<Start><Siprec>``, ``<Stop><Siprec>``, ``<Start><Stream>``, ``<Stop><Stream>``
  and ``<Connect><Stream>`` (the bidirectional stream, which must come last: Twilio runs what
  follows it only once the stream ends) in document order and answers 200 with the call
  resource. Every ``<Stream>`` is checked before anything runs. Any other verb or noun is
  refused whole, before anything runs, with a 400 naming it; when an instruction fails midway,
  the recordings and streams this document started are stopped again (stops already done stay
  done), so a refused document starts nothing.

The CallSid is the sidecar's call id (calls are opened by the native API). Defaults follow the
seeds: ``ConnectorName`` ``Default``, ``Track`` ``both_tracks``, ``StatusCallbackMethod``
``POST``. Custom parameters become ``X-`` headers of the SIPREC INVITE. Resource ``status`` is
Twilio's two words: ``in-progress`` while starting or recording (or paused), ``stopped`` once
ended, failed included (the failure itself is told by the ``siprec-error`` callback).

Authentication is HTTP Basic with the configured AccountSid and AuthToken (401, code 20003,
otherwise); a path naming another account is not found (404, 20404), as on Twilio. Without
configured Twilio credentials every route answers 404: the shape is not enabled. Errors have
Twilio's JSON shape ``{"code", "message", "more_info", "status"}``; the code mapping is in
``docs/api-compat.md`` and ``_ERROR_CODES``.

Status callbacks (form fields ``AccountSid``, ``CallSid``, ``SiprecSid``, ``SiprecName``,
``SiprecEvent`` = ``siprec-started``/``siprec-stopped``/``siprec-error``, ``Timestamp``, and
for an error ``SiprecError``, ``SiprecErrorCode``) go by GET or POST per
``StatusCallbackMethod`` and are signed with ``X-Twilio-Signature`` (the auth token as key), so
``twilio.request_validator.RequestValidator`` accepts them. Streams send ``AccountSid``,
``CallSid``, ``StreamSid``, ``StreamName`` (the SID when unnamed), ``StreamEvent`` =
``stream-started``/``stream-stopped``/``stream-error``, ``Timestamp`` and, for an error,
``StreamError``, the same way.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime

from aiohttp import web
from yarl import URL

from siprec_src.control.callbacks import Delivery, sign_twilio
from siprec_src.control.sidecar import Notifier, Sidecar, StreamNotifier
from siprec_src.control.twiml import (
    Instruction,
    StartSiprec,
    StartStream,
    StopSiprec,
    StopStream,
    Unsupported,
    parse_twiml,
)
from siprec_src.errors import LocalProtocolError
from siprec_src.recording.engine import Call, Recording
from siprec_src.recording.events import (
    RecordingEvent,
    RecordingFailed,
    RecordingStarted,
    RecordingStopped,
    StreamDropped,
    StreamEvent,
    StreamStarted,
    StreamStopped,
)
from siprec_src.recording.stream import Stream
from siprec_src.streams.options import TwilioStreamOptions

__all__ = [
    "API_VERSION",
    "DEFAULT_CONNECTOR",
    "MAX_PARAMETERS",
    "STOP_TIMEOUT",
    "TwilioApi",
    "TwilioApiError",
    "add_routes",
]

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
DEFAULT_CONNECTOR = "Default"  # seed 000: connectorName defaults to "Default"
MAX_PARAMETERS = 99  # Parameter1 … Parameter99, as Twilio's helper libraries send them
STOP_TIMEOUT = 5.0  # seconds a stop may take (BYE sent, forks stopped) before we answer anyway
CALLBACK_METHODS = ("GET", "POST")

_CALL = f"/{API_VERSION}/Accounts/{{account_sid}}/Calls/{{call_sid}}"
_PARAMETER = re.compile(r"Parameter(\d+)\.(Name|Value)")

# LocalProtocolError.code -> (HTTP status, Twilio error code). Twilio's own code where it has
# one for the case (31940 connectorName, 31941 track, 21220 call state, 12100 TwiML parse
# failure, 32018 TwiML over 4000 characters, 11100 URL format); 12200 (schema validation) for
# valid TwiML that we do not run; Twilio's generic 400 "Bad Request" otherwise.
_ERROR_CODES: dict[str, tuple[int, int]] = {
    "no_such_call": (404, 20404),
    "no_such_recording": (404, 20404),
    "no_such_stream": (404, 20404),
    "unknown_connector": (400, 31940),
    "missing_connector": (400, 31940),
    "invalid_track": (400, 31941),
    "call_closed": (400, 21220),
    "invalid_state": (400, 21220),
    "invalid_twiml": (400, 12100),
    "twiml_too_large": (400, 32018),
    "unsupported_twiml": (400, 12200),
    "invalid_url": (400, 11100),
}
_BAD_REQUEST = (400, 400)


class TwilioApiError(Exception):
    """An answer in Twilio's error shape: ``{"code", "message", "more_info", "status"}``."""

    def __init__(self, status: int, code: int, message: str, *, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    @classmethod
    def from_local(cls, exc: LocalProtocolError) -> TwilioApiError:
        status, code = _ERROR_CODES.get(exc.code or "", _BAD_REQUEST)
        return cls(status, code, str(exc))

    def response(self) -> web.Response:
        body = {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }
        return web.json_response(body, status=self.status, headers=self.headers)


def add_routes(app: web.Application, sidecar: Sidecar) -> None:
    """Register the Twilio-shaped routes on ``app`` (they answer 404 without Twilio credentials)."""
    api = TwilioApi(sidecar)
    app.router.add_post(f"{_CALL}/Siprec.json", api.create_siprec)
    app.router.add_post(f"{_CALL}/Siprec/{{sid}}.json", api.update_siprec)
    app.router.add_post(f"{_CALL}/Streams.json", api.create_stream)
    app.router.add_post(f"{_CALL}/Streams/{{sid}}.json", api.update_stream)
    app.router.add_post(f"{_CALL}.json", api.update_call)


Action = Callable[[web.Request, Call], Awaitable[web.Response]]


class TwilioApi:
    """The request handlers; one per application, sharing the sidecar's calls."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar

    # --- routes ------------------------------------------------------------------------------

    async def create_siprec(self, request: web.Request) -> web.Response:
        return await self._serve(request, self._create_siprec)

    async def update_siprec(self, request: web.Request) -> web.Response:
        return await self._serve(request, self._update_siprec)

    async def update_call(self, request: web.Request) -> web.Response:
        return await self._serve(request, self._update_call)

    async def create_stream(self, request: web.Request) -> web.Response:
        return await self._serve(request, self._create_stream)

    async def update_stream(self, request: web.Request) -> web.Response:
        return await self._serve(request, self._update_stream)

    async def _serve(self, request: web.Request, action: Action) -> web.Response:
        try:
            self._authenticate(request)
            call = self.sidecar.call(request.match_info["call_sid"])
            return await action(request, call)
        except TwilioApiError as exc:
            return exc.response()
        except LocalProtocolError as exc:
            return TwilioApiError.from_local(exc).response()

    def _authenticate(self, request: web.Request) -> None:
        credentials = self.sidecar.settings.credentials
        account_sid, token = credentials.twilio_account_sid, credentials.twilio_auth_token
        if not account_sid or not token:
            raise _not_found(request)
        user, password = _basic_credentials(request.headers.get("Authorization", ""))
        # Both compared in constant time, and both always compared (no early exit on the user).
        good_user = hmac.compare_digest(user.encode("utf-8"), account_sid.encode("utf-8"))
        good_password = hmac.compare_digest(password.encode("utf-8"), token.encode("utf-8"))
        if not (good_user and good_password):
            raise TwilioApiError(
                401,
                20003,
                "Authenticate: the AccountSid or AuthToken was incorrect",
                headers={"WWW-Authenticate": 'Basic realm="Twilio API"'},
            )
        if request.match_info["account_sid"] != account_sid:
            raise _not_found(request)

    # --- the Siprec resource -------------------------------------------------------------------

    async def _create_siprec(self, request: web.Request, call: Call) -> web.Response:
        form = await request.post()
        recording = await self._start(
            call,
            name=_param(form, "Name"),
            connector_name=_param(form, "ConnectorName"),
            track=_param(form, "Track"),
            status_callback=_param(form, "StatusCallback"),
            status_callback_method=_param(form, "StatusCallbackMethod"),
            parameters=_parameters(form),
        )
        return web.json_response(self._siprec_resource(recording), status=201)

    async def _update_siprec(self, request: web.Request, call: Call) -> web.Response:
        _require_stopped(await request.post())
        recording = self.sidecar.find_recording(call, request.match_info["sid"])
        await self._stop(recording)
        return web.json_response(self._siprec_resource(recording))

    async def _start(
        self,
        call: Call,
        *,
        name: str | None,
        connector_name: str | None,
        track: str | None,
        status_callback: str | None,
        status_callback_method: str | None,
        parameters: Mapping[str, str],
    ) -> Recording:
        callback = _callback_url(status_callback, "StatusCallback")
        method = _callback_method(status_callback_method, "StatusCallbackMethod")
        recording = await self.sidecar.record(
            call,
            connector=connector_name or DEFAULT_CONNECTOR,
            track=track or "both_tracks",
            name=name,
            params=parameters,
        )
        self.sidecar.watch(recording, self._notifier(callback, method))
        return recording

    async def _stop(self, recording: Recording) -> None:
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await recording.stop()
        except TimeoutError:
            # The session is already ended on our side (BYE sent); only the media workers'
            # acknowledgement that the forks stopped is late.
            log.warning("recording %s: stop not confirmed within %.0f s", recording.sid, STOP_TIMEOUT)

    def _siprec_resource(self, recording: Recording) -> dict[str, object]:
        account_sid = self.sidecar.settings.credentials.twilio_account_sid
        call_sid = recording.call.call_id
        return {
            "account_sid": account_sid,
            "call_sid": call_sid,
            "sid": recording.sid,
            "name": recording.name,
            "status": _twilio_status(recording),
            "date_updated": format_datetime(self.sidecar.recording_times(recording)[2]),
            "uri": f"/{API_VERSION}/Accounts/{account_sid}/Calls/{call_sid}/Siprec/{recording.sid}.json",
        }

    # --- the Streams resource ----------------------------------------------------------------------

    async def _create_stream(self, request: web.Request, call: Call) -> web.Response:
        form = await request.post()
        url = _param(form, "Url")
        if url is None:
            raise TwilioApiError(*_BAD_REQUEST, "Missing required parameter Url in the post body")
        attributes = {"url": url}
        for name, attribute in (
            ("Name", "name"),
            ("Track", "track"),
            ("StatusCallback", "statusCallback"),
            ("StatusCallbackMethod", "statusCallbackMethod"),
        ):
            value = _param(form, name)
            if value is not None:
                attributes[attribute] = value
        parameters = tuple(_parameters(form).items())
        options = _stream_options(attributes, parameters, bidirectional=False, where="")
        stream = await self.sidecar.start_stream(call, options, account_sid=self._account_sid())
        self._watch_stream(stream, options)
        return web.json_response(self._stream_resource(stream), status=201)

    async def _update_stream(self, request: web.Request, call: Call) -> web.Response:
        _require_stopped(await request.post())
        stream = call.get_stream(request.match_info["sid"])
        await self.sidecar.stop_stream(stream)
        return web.json_response(self._stream_resource(stream))

    def _stream_resource(self, stream: Stream) -> dict[str, object]:
        account_sid = self._account_sid()
        call_sid = stream.call_id
        return {
            "account_sid": account_sid,
            "call_sid": call_sid,
            "sid": stream.sid,
            "name": stream.name,
            "status": "stopped" if stream.status.terminal else "in-progress",
            "date_updated": format_datetime(self.sidecar.stream_times(stream)[2]),
            "uri": f"/{API_VERSION}/Accounts/{account_sid}/Calls/{call_sid}/Streams/{stream.sid}.json",
        }

    def _watch_stream(self, stream: Stream, options: TwilioStreamOptions) -> None:
        if options.status_callback is not None:
            method = options.status_callback_method.value
            self.sidecar.watch_stream(stream, self._stream_notifier(options.status_callback, method))

    def _account_sid(self) -> str:
        return self.sidecar.settings.credentials.twilio_account_sid or ""

    # --- TwiML -----------------------------------------------------------------------------------

    async def _update_call(self, request: web.Request, call: Call) -> web.Response:
        form = await request.post()
        others = sorted(key for key in form if key != "Twiml")
        if others:
            raise TwilioApiError(
                *_BAD_REQUEST,
                f"siprec-src updates a call with Twiml only; {', '.join(others)} "
                f"{'is' if len(others) == 1 else 'are'} not supported",
            )
        twiml = _param(form, "Twiml")
        if twiml is None:
            raise TwilioApiError(*_BAD_REQUEST, "Missing required parameter Twiml in the post body")
        instructions = parse_twiml(twiml)
        streams: dict[int, TwilioStreamOptions] = {}  # index of a StartStream -> its stream
        for index, instruction in enumerate(instructions):
            if isinstance(instruction, Unsupported):
                raise TwilioApiError(
                    400,
                    _ERROR_CODES["unsupported_twiml"][1],
                    f"TwiML line {instruction.line}: {instruction.element} is not supported by "
                    "siprec-src (it runs <Start>/<Stop> with <Siprec> or <Stream>, and "
                    "<Connect><Stream>); nothing was executed",
                )
            if isinstance(instruction, StartStream):
                if instruction.bidirectional and index != len(instructions) - 1:
                    # Twilio runs what follows <Connect> only once its stream has ended.
                    raise TwilioApiError(
                        400,
                        _ERROR_CODES["unsupported_twiml"][1],
                        f"TwiML line {instruction.line}: instructions after <Connect><Stream> are not "
                        "supported (Twilio runs them only once the stream ends); nothing was executed",
                    )
                streams[index] = _stream_options(
                    dict(instruction.attributes),
                    instruction.parameters,
                    bidirectional=instruction.bidirectional,
                    where=f"TwiML line {instruction.line}, <Stream>: ",
                )
        await self._execute(call, instructions, streams)
        return web.json_response(self._call_resource(call))

    async def _execute(
        self, call: Call, instructions: tuple[Instruction, ...], streams: Mapping[int, TwilioStreamOptions]
    ) -> None:
        started: list[Recording] = []
        opened: list[tuple[Stream, TwilioStreamOptions]] = []
        try:
            for index, instruction in enumerate(instructions):
                if isinstance(instruction, StartSiprec):
                    started.append(await self._run_start(call, instruction))
                elif isinstance(instruction, StopSiprec):
                    await self._stop(self.sidecar.find_recording(call, instruction.name))
                elif isinstance(instruction, StartStream):
                    options = streams[index]
                    opened.append((await self._run_stream(call, instruction, options), options))
                elif isinstance(instruction, StopStream):
                    await self.sidecar.stop_stream(call.get_stream(instruction.name))
                else:  # refused before anything ran (see _update_call)
                    raise AssertionError(f"unexpected instruction {instruction!r}")
        except BaseException:
            await asyncio.gather(
                *(self._stop(r) for r in started),
                *(self.sidecar.stop_stream(s) for s, _ in opened),
                return_exceptions=True,
            )
            raise
        # Stream callbacks once the whole document ran: a refused one sends none.
        for stream, options in opened:
            self._watch_stream(stream, options)

    async def _run_stream(self, call: Call, instruction: StartStream, options: TwilioStreamOptions) -> Stream:
        try:
            return await self.sidecar.start_stream(call, options, account_sid=self._account_sid())
        except LocalProtocolError as exc:
            raise LocalProtocolError(
                f"TwiML line {instruction.line}, <Stream>: {exc}", field=exc.field, code=exc.code
            ) from exc

    async def _run_start(self, call: Call, instruction: StartSiprec) -> Recording:
        try:
            return await self._start(
                call,
                name=instruction.name,
                connector_name=instruction.connector_name,
                track=instruction.track,
                status_callback=instruction.status_callback,
                status_callback_method=instruction.status_callback_method,
                parameters=_unique_parameters(instruction.parameters, f"TwiML line {instruction.line}"),
            )
        except LocalProtocolError as exc:
            # Same code and status, and the message says which element of the document it was.
            raise LocalProtocolError(
                f"TwiML line {instruction.line}, <Siprec>: {exc}", field=exc.field, code=exc.code
            ) from exc

    def _call_resource(self, call: Call) -> dict[str, object]:
        account_sid = self.sidecar.settings.credentials.twilio_account_sid
        base = f"/{API_VERSION}/Accounts/{account_sid}/Calls/{call.call_id}"
        return {
            "sid": call.call_id,
            "account_sid": account_sid,
            "parent_call_sid": None,
            "status": "completed" if call.closed else "in-progress",
            "from": call.caller.aor,
            "to": call.callee.aor,
            "api_version": API_VERSION,
            "date_updated": format_datetime(_now()),
            "uri": f"{base}.json",
            "subresource_uris": {"siprec": f"{base}/Siprec.json", "streams": f"{base}/Streams.json"},
        }

    # --- status callbacks ------------------------------------------------------------------------

    def _notifier(self, callback: str | None, method: str) -> Notifier:
        return functools.partial(self._notify, callback, method)

    def _notify(
        self, callback: str | None, method: str, recording: Recording, event: RecordingEvent
    ) -> Delivery | None:
        if isinstance(event, RecordingStarted):
            kind = "siprec-started"
        elif isinstance(event, RecordingStopped):
            kind = "siprec-stopped"
        elif isinstance(event, RecordingFailed):
            kind = "siprec-error"
        else:
            return None  # failover attempts, refreshes, pauses: not Twilio callback events
        now = _now()
        credentials = self.sidecar.settings.credentials
        if callback is None or not credentials.twilio_account_sid or not credentials.twilio_auth_token:
            return None
        form = [
            ("AccountSid", credentials.twilio_account_sid),
            ("CallSid", recording.call.call_id),
            ("SiprecSid", recording.sid),
            ("SiprecName", recording.name or recording.sid),
            ("SiprecEvent", kind),
            ("Timestamp", now.isoformat(timespec="milliseconds").replace("+00:00", "Z")),
        ]
        if isinstance(event, RecordingFailed):
            # SiprecErrorCode is the SIP status that decided the failure (408: SRS silent,
            # 503: refused...): Twilio publishes no error codes for SRS failures to reuse.
            form += [("SiprecError", event.reason), ("SiprecErrorCode", str(event.status))]
        delivery = Delivery(url=callback, method=method, form=tuple(form), event=kind)
        return sign_twilio(delivery, credentials.twilio_auth_token)

    def _stream_notifier(self, callback: str, method: str) -> StreamNotifier:
        return functools.partial(self._notify_stream, callback, method)

    def _notify_stream(
        self, callback: str, method: str, stream: Stream, event: StreamEvent
    ) -> Delivery | None:
        if isinstance(event, StreamStarted):
            kind = "stream-started"
        elif isinstance(event, StreamStopped):
            kind = "stream-stopped"
        elif isinstance(event, StreamDropped):
            kind = "stream-error"
        else:
            return None  # dropped frames, playback marks: not Twilio callback events
        credentials = self.sidecar.settings.credentials
        if not credentials.twilio_account_sid or not credentials.twilio_auth_token:
            return None
        form = [
            ("AccountSid", credentials.twilio_account_sid),
            ("CallSid", stream.call_id),
            ("StreamSid", stream.sid),
            ("StreamName", stream.name or stream.sid),
            ("StreamEvent", kind),
            ("Timestamp", _now().isoformat(timespec="milliseconds").replace("+00:00", "Z")),
        ]
        if isinstance(event, StreamDropped):
            form.append(("StreamError", event.error))
        delivery = Delivery(url=callback, method=method, form=tuple(form), event=kind)
        return sign_twilio(delivery, credentials.twilio_auth_token)


# --- helpers --------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _not_found(request: web.Request) -> TwilioApiError:
    return TwilioApiError(404, 20404, f"The requested resource {request.path} was not found")


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    user, _, password = decoded.partition(":")
    return user, password


def _require_stopped(form: Mapping[str, object]) -> None:
    """The only update of a Siprec or Stream resource: ``Status=stopped``."""
    status = _param(form, "Status")
    if status is None:
        raise TwilioApiError(*_BAD_REQUEST, "Missing required parameter Status in the post body")
    if status != "stopped":
        raise TwilioApiError(*_BAD_REQUEST, f"Status must be 'stopped', not {status!r}")


def _param(form: Mapping[str, object], name: str) -> str | None:
    """A form field's text; ``None`` when absent or empty (Twilio treats both as unset)."""
    value = form.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TwilioApiError(*_BAD_REQUEST, f"{name} must be a form field, not a file")
    return value


def _parameters(form: Mapping[str, object]) -> dict[str, str]:
    """``Parameter<N>.Name``/``Parameter<N>.Value`` pairs, N = 1 … MAX_PARAMETERS, in N order."""
    numbers: set[int] = set()
    for key in form:
        match = _PARAMETER.fullmatch(key)
        if match is None:
            continue
        number = int(match.group(1))
        if not 1 <= number <= MAX_PARAMETERS:
            raise TwilioApiError(*_BAD_REQUEST, f"{key}: parameters are numbered 1 to {MAX_PARAMETERS}")
        numbers.add(number)
    pairs: list[tuple[str, str]] = []
    for number in sorted(numbers):
        name = _param(form, f"Parameter{number}.Name")
        if name is None:
            raise TwilioApiError(*_BAD_REQUEST, f"Parameter{number}.Value needs a Parameter{number}.Name")
        pairs.append((name, _param(form, f"Parameter{number}.Value") or ""))
    return _unique_parameters(tuple(pairs), "Parameters")


def _unique_parameters(pairs: tuple[tuple[str, str], ...], where: str) -> dict[str, str]:
    parameters: dict[str, str] = {}
    for name, value in pairs:
        if name in parameters:
            raise LocalProtocolError(
                f"{where}: parameter {name!r} is given twice", field="params", code="invalid_param"
            )
        parameters[name] = value
    return parameters


def _callback_url(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        url = URL(value)
    except (ValueError, TypeError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise LocalProtocolError(
            f"{name} {value!r} is not an absolute http(s) URL", field=name, code="invalid_url"
        )
    return value


def _callback_method(value: str | None, name: str) -> str:
    method = (value or "POST").upper()
    if method not in CALLBACK_METHODS:
        raise LocalProtocolError(
            f"{name} must be GET or POST, not {value!r}", field=name, code="invalid_callback_method"
        )
    return method


# The <Stream> attribute -> the REST parameter, for messages about a Streams.json request.
_REST_NAMES = {
    "url": "Url",
    "name": "Name",
    "track": "Track",
    "statusCallback": "StatusCallback",
    "statusCallbackMethod": "StatusCallbackMethod",
}


def _stream_options(
    attributes: Mapping[str, str],
    parameters: tuple[tuple[str, str], ...],
    *,
    bidirectional: bool,
    where: str,
) -> TwilioStreamOptions:
    """A Twilio stream from ``<Stream>`` attributes (or the REST parameters spelled as them);
    errors keep their code and say where (``where``: a TwiML line, or "" for REST)."""
    try:
        return TwilioStreamOptions.from_twiml(
            attributes,
            ({"name": name, "value": value} for name, value in parameters),
            bidirectional=bidirectional,
        )
    except LocalProtocolError as exc:
        message = str(exc)
        if not where and exc.field in _REST_NAMES:
            message = message.replace(exc.field, _REST_NAMES[exc.field], 1)
        raise LocalProtocolError(f"{where}{message}", field=exc.field, code=exc.code) from None


def _twilio_status(recording: Recording) -> str:
    return "stopped" if recording.session.state.terminal else "in-progress"
